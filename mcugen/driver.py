"""Driver: the one place that orders the stages (read -> check -> lower/plan -> C -> build -> run)."""

from __future__ import annotations

import os
import shutil
import subprocess
import tempfile
from dataclasses import dataclass
from pathlib import Path
from typing import Optional, Sequence

import numpy as np

from mcugen import codegen, outdir
from mcugen.errors import ToolError
from mcugen.ir import DType, Graph, OpType
from mcugen.lower import Program, lower
from mcugen.planner import verify
from mcugen.tflite_reader import read_tflite

MARKER = outdir.MANIFEST
HOST_CFLAGS = ("-std=c99", "-O2", "-Wall", "-Wextra", "-Werror")


@dataclass
class Generated:
    graph: Graph
    program: Program
    files: dict[str, str]
    cflags: tuple[str, ...] = ()  # what compiling the files needs (CMSIS-NN include paths)
    notes: tuple[str, ...] = ()  # one-line notes for the user (the CLI prints them on stderr)


def build(
    model_path: str | Path,
    name: Optional[str] = None,
    strategy: str = "fused",
    kernels: Optional[str] = None,
    target: str = "portable",
    cmsis_nn: Optional[str] = None,
) -> Generated:
    """Read, check, lower, plan (verified), choose the kernels and render a model; writes nothing.

    `strategy`: "fused" (default: row-streamed chains where they lower the peak) or "layerwise".
    `kernels`: None (mcugen's generic portable kernels), "mcugen" (kernels specialised per layer
    for `target`: portable, armv7em-dsp or mve) or "cmsis-nn" (calls to the CMSIS-NN checkout
    `cmsis_nn`, else $CMSIS_NN_PATH).
    """
    graph = read_tflite(model_path)
    if kernels is None:
        program = lower(graph, name, strategy=strategy)
        verify(program.buffers, program.plan, program.aliases)
        return Generated(graph=graph, program=program, files=codegen.render_model(program, graph))
    result = _lower_with_kernels(graph, name, strategy, kernels, target, cmsis_nn)
    files = result.merged_files(codegen.render_model(result.program, graph))
    notes = _unspecialised_chain_notes(graph, name, result.program, kernels, target, cmsis_nn)
    return Generated(graph=graph, program=result.program, files=files, cflags=result.cflags, notes=notes)


def _lower_with_kernels(graph: Graph, name: Optional[str], strategy: str, kernels: str, target: str,
                        cmsis_nn: Optional[str]):
    """Lower, plan (verified) and run the kernel pass. The pass names the scratch each of its
    layers needs: plan it with the tensors (keyed by the layer's output tensor, which survives a
    new choice of fused chains) and lower again, until every scratch buffer fits where the plan
    put it."""
    from mcugen.specialize import apply_kernels
    from mcugen.targets import get_target

    program = lower(graph, name, strategy=strategy)
    verify(program.buffers, program.plan, program.aliases)
    result = apply_kernels(program, kernels, get_target(target), cmsis_nn)
    needs: dict[int, int] = {}
    for _ in range(3):
        if result.program.arena_bytes <= program.arena_bytes:
            break
        by_step = {l.index: l.output for l in program.layers}
        for s in result.scratch:
            tensor = by_step[s.step]
            needs[tensor] = max(needs.get(tensor, 0), s.size)
        program = lower(graph, name, strategy=strategy, extra_scratch=needs)
        verify(program.buffers, program.plan, program.aliases)
        result = apply_kernels(program, kernels, get_target(target), cmsis_nn)
    return result


PORTABLE_CHAIN_KERNEL = "mcugen_chain_s8"


def _unspecialised_chain_notes(graph: Graph, name: Optional[str], program: Program, kernels: str,
                               target: str, cmsis_nn: Optional[str]) -> tuple[str, ...]:
    """A fused chain the kernel pass has no kernel for runs the portable chain kernel, several
    times slower than its layers would run specialised one by one: say so, with what the
    layer-by-layer plan would cost in arena, so that the choice is the user's."""
    slow = [l for l in program.layers if l.op == "CHAIN" and l.kernel == PORTABLE_CHAIN_KERNEL]
    if not slow:
        return ()
    layerwise = _lower_with_kernels(graph, name, "layerwise", kernels, target, cmsis_nn).program.arena_bytes
    return tuple(
        f"note: layer {l.index} ({l.comment[0].split(': ', 1)[-1]}) has no {kernels} kernel for {target} and runs "
        f"the portable chain kernel, several times slower; --strategy layerwise avoids it with an arena of "
        f"{layerwise:,} bytes instead of {program.arena_bytes:,}"
        for l in slow
    )


def check_output_dir(out_dir: Path, force: bool) -> None:
    """Refuses (OutputError) a folder that holds files mcugen did not write, unless `force`
    (mcugen.outdir, shared by every command that writes a folder)."""
    outdir.check(Path(out_dir), force)


def write_output_dir(out_dir: Path, files: dict[str, str], force: bool = False, binary: Optional[dict[str, bytes]] = None) -> None:
    """Writes `files` (and `binary`) into `out_dir` through mcugen.outdir: only files mcugen
    owns change, a generated file the user edited is refused (backed up under `force`).
    File names come from mcugen, never from the model."""
    outdir.write(Path(out_dir), {**files, **(binary or {})}, force=force)


def generate(
    model_path: str | Path, out_dir: str | Path, name: Optional[str] = None, force: bool = False, strategy: str = "fused",
    kernels: Optional[str] = None, target: str = "portable", cmsis_nn: Optional[str] = None,
) -> Generated:
    gen = build(model_path, name, strategy, kernels=kernels, target=target, cmsis_nn=cmsis_nn)
    write_output_dir(Path(out_dir), gen.files, force=force)
    return gen


# ---- host build and run ------------------------------------------------------------------


def host_cc() -> str:
    cc = os.environ.get("CC", "gcc")
    if shutil.which(cc) is None:
        raise ToolError(f"host C compiler '{cc}' not found; run scripts/setup.sh (installs gcc)")
    return cc


def compile_host(gen: Generated, build_dir: Path, extra_cflags: Sequence[str] = ()) -> Path:
    """Write the model library plus a host harness into build_dir and compile it with -Werror."""
    build_dir.mkdir(parents=True, exist_ok=True)
    codegen.write_files(gen.files, build_dir)
    (build_dir / "host_main.c").write_text(codegen.render_host_main(gen.program))
    sources = [str(build_dir / n) for n in codegen.model_sources(gen.files)] + [str(build_dir / "host_main.c")]
    exe = build_dir / "model_host"
    cmd = [host_cc(), *HOST_CFLAGS, *gen.cflags, *extra_cflags, "-o", str(exe), *sources, "-lm"]
    r = subprocess.run(cmd, capture_output=True, text=True)
    if r.returncode != 0:
        first = (r.stderr.strip().splitlines() or ["?"])[0]
        raise ToolError(f"host compilation of the generated C failed: {first}")
    return exe


def input_specs(graph: Graph) -> list[tuple[tuple[int, ...], DType]]:
    return [(tuple(graph.t(i).shape), graph.t(i).dtype) for i in graph.inputs]


def random_inputs(graph: Graph, count: int, seed: int) -> list[list[np.ndarray]]:
    """Seeded random inputs covering each input's full range (float inputs: the range the
    first QUANTIZE reading them can represent, widened by 10% to exercise saturation)."""
    rng = np.random.default_rng(seed)
    runs = []
    for _ in range(count):
        arrays = []
        for i in graph.inputs:
            t = graph.t(i)
            if t.dtype is DType.INT8:
                arrays.append(rng.integers(-128, 128, size=t.shape, dtype=np.int64).astype(np.int8))
            elif t.dtype is DType.UINT8:
                arrays.append(rng.integers(0, 256, size=t.shape, dtype=np.int64).astype(np.uint8))
            else:
                lo, hi = -1.0, 1.0
                for op in graph.operators:
                    if op.op is OpType.QUANTIZE and op.inputs[0] == i:
                        q = graph.t(op.outputs[0]).quant
                        qmin, qmax = (0, 255) if graph.t(op.outputs[0]).dtype is DType.UINT8 else (-128, 127)
                        lo, hi = (qmin - q.zp) * q.s * 1.1, (qmax - q.zp) * q.s * 1.1
                        break
                arrays.append(rng.uniform(lo, hi, size=t.shape).astype(np.float32))
        runs.append(arrays)
    return runs


def run_host(exe: Path, gen: Generated, runs: list[list[np.ndarray]], work_dir: Path, timeout: float = 600) -> list[list[np.ndarray]]:
    work_dir.mkdir(parents=True, exist_ok=True)
    g = gen.graph
    for r, arrays in enumerate(runs):
        if len(arrays) != len(g.inputs):
            raise ToolError(f"run {r}: {len(arrays)} input arrays for a model with {len(g.inputs)} inputs")
        for k, a in enumerate(arrays):
            t = g.t(g.inputs[k])
            a = np.ascontiguousarray(np.asarray(a).astype(t.dtype.numpy, copy=False).reshape(t.shape))
            (work_dir / f"in_{r}_{k}.bin").write_bytes(a.tobytes())
    try:
        p = subprocess.run([str(exe), str(work_dir), str(len(runs))], capture_output=True, text=True, timeout=timeout)
    except subprocess.TimeoutExpired:
        raise ToolError(f"the compiled model did not finish within {timeout:.0f} s") from None
    if p.returncode != 0:
        raise ToolError(f"the compiled model exited with status {p.returncode}: {p.stderr.strip()[:200]}")
    outs = []
    for r in range(len(runs)):
        arrays = []
        for k, i in enumerate(g.outputs):
            t = g.t(i)
            data = (work_dir / f"out_{r}_{k}.bin").read_bytes()
            arrays.append(np.frombuffer(data, dtype=t.dtype.numpy).reshape(t.shape).copy())
        outs.append(arrays)
    return outs


def compile_and_run_host(
    model_path: str | Path, inputs: list[list[np.ndarray]], extra_cflags: Sequence[str] = (), strategy: str = "fused"
) -> list[list[np.ndarray]]:
    """Generate, compile with host gcc and run the model on each run's inputs; returns outputs."""
    gen = build(model_path, strategy=strategy)
    with tempfile.TemporaryDirectory(prefix="mcugen-host-") as tmp:
        exe = compile_host(gen, Path(tmp) / "build", extra_cflags)
        return run_host(exe, gen, inputs, Path(tmp) / "io")
