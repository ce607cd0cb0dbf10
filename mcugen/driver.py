"""Driver: the one place that orders the stages (read -> check -> lower/plan -> C -> build -> run)."""

from __future__ import annotations

import json
import os
import shutil
import subprocess
import tempfile
from dataclasses import dataclass, field
from pathlib import Path
from typing import Optional, Sequence

import numpy as np

from mcugen import codegen, outdir
from mcugen.errors import OutputError, ToolError
from mcugen.ir import DType, Graph, OpType
from mcugen.arena import plan_schedule
from mcugen.lower import Program, c_identifier, emit
from mcugen.options import DEFAULT_STRATEGY, CompileOptions
from mcugen.fold import fold_constants
from mcugen.passes import fold_pads
from mcugen.planner import PlanError, verify
from mcugen.schedule import ScheduleChoice, choose_schedule
from mcugen.stream_input import attach_writers, stream_inputs, stream_notes
from mcugen.supported import check_graph
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
    options: CompileOptions = field(default_factory=CompileOptions)
    schedule: Optional[ScheduleChoice] = None  # how the fused chains were chosen, with every step's cost
    kernel_plans: dict = field(default_factory=dict)  # layer index -> the kernel pass's plan for it

    @property
    def estimated_instructions(self) -> int:
        """Sum of the chosen steps' instruction estimates for the target (see mcugen.kernels.cost)."""
        if self.schedule is None:
            return 0
        return sum(self.schedule.step_cost(step.ops).instructions for step in self.program.schedule.steps)

    def numbers(self) -> dict:
        """The one set of numbers every command reports for this model and these options."""
        p = self.program
        return {
            "arena_bytes": p.arena_bytes,
            "scratch_bytes": p.scratch_bytes,
            "const_bytes": p.weight_bytes,
            "estimated_instructions": self.estimated_instructions,
        }


def check_graph_after_folding(graph: Graph) -> Graph:
    """Graph passes that come before the support check: constant subgraphs (shape arithmetic,
    size-1 transposes) evaluated at generation time; then every blocker is named at once."""
    folded = fold_constants(graph)
    check_graph(folded)
    return folded


def build(
    model_path: str | Path,
    name: Optional[str] = None,
    strategy: str = DEFAULT_STRATEGY,
    kernels: Optional[str] = None,
    target: str = "portable",
    cmsis_nn: Optional[str] = None,
    options: Optional[CompileOptions] = None,
) -> Generated:
    """The pipeline, in its one order; writes nothing:

    read -> constant folding -> check -> graph passes (PAD folding, chain candidates) -> kernel selection for the
    target, with each step's cost (`mcugen.schedule`) -> the schedule chosen by cost under the
    budget -> plan once (kernel scratch planned with the tensors) and verify -> lower -> kernel
    pass -> render.

    `options` (a CompileOptions) overrides the keyword arguments, which are kept for callers
    that only set a few: `kernels` None means mcugen's generic portable kernels (tests), "mcugen"
    kernels specialised for `target`, "cmsis-nn" calls to the CMSIS-NN checkout `cmsis_nn`.
    """
    opts = options or CompileOptions(name=name, strategy=strategy, kernels=kernels, target=target, cmsis_nn=cmsis_nn)
    graph = read_tflite(model_path)
    checked = check_graph_after_folding(graph)
    streamed = ()
    if opts.stream_inputs:
        checked, streamed = stream_inputs(checked)
    folded, pads = fold_pads(checked)
    cname = c_identifier(opts.name or graph.name)
    choice = choose_schedule(folded, pads, cname, graph.name, opts)
    planned = plan_schedule(folded, pads, choice.chains, choice.extra_scratch)
    verify(planned.bufs.buffers, planned.plan, planned.bufs.aliases)
    program = emit(planned, cname, graph.name, opts.strategy)
    if opts.kernels is None:
        program = attach_writers(program, checked, streamed)
        return Generated(graph=graph, program=program, files=codegen.render_model(program, graph), options=opts,
                         notes=stream_notes(checked, streamed, program),
                         schedule=choice)
    from mcugen.kernels import apply_kernels
    from mcugen.targets import get_target

    result = apply_kernels(program, opts.kernels, get_target(opts.kernel_target), opts.cmsis_nn,
                           flash_tight=choice.flash_tight)
    if result.program.arena_bytes != program.arena_bytes:
        raise PlanError(
            f"internal error: the kernel pass needed {result.program.arena_bytes - program.arena_bytes} bytes of scratch "
            f"that kernel selection did not state (layers {sorted(s.step for s in result.scratch)})"
        )
    program = attach_writers(result.program, checked, streamed)
    files = result.merged_files(codegen.render_model(program, graph))
    return Generated(graph=graph, program=program, files=files, cflags=result.cflags,
                     notes=_unspecialised_chain_notes(result.program, choice, opts) + stream_notes(checked, streamed, program),
                     options=opts, schedule=choice,
                     kernel_plans=dict(result.plans))


PORTABLE_CHAIN_KERNEL = "mcugen_chain_s8"


def _unspecialised_chain_notes(program: Program, choice: ScheduleChoice, opts: CompileOptions) -> tuple[str, ...]:
    """A fused chain the kernel pass has no kernel for runs the portable chain kernel, several
    times slower than its layers would run specialised one by one: say so (auto only fuses it
    when the RAM budget needs it), with what the layer-by-layer plan costs in arena."""
    slow = [l for l in program.layers if l.op == "CHAIN" and l.kernel == PORTABLE_CHAIN_KERNEL]
    if not slow:
        return ()
    layerwise = next(a for a in choice.alternatives if a.label == "layerwise")
    return tuple(
        f"note: layer {l.index} ({l.comment[0].split(': ', 1)[-1]}) has no {opts.kernels} kernel for "
        f"{opts.kernel_target} and runs the portable chain kernel, several times slower; --strategy layerwise avoids "
        f"it with an arena of {layerwise.arena_bytes:,} bytes instead of {program.arena_bytes:,}"
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


BUILD_INFO = "mcugen-build.json"  # in a generated folder: what building and benchmarking it needs


def build_info(gen: Generated) -> dict:
    """What a generated folder needs to be built and measured without repeating an option:
    its C name, the compiler flags (CMSIS-NN include paths), the options and the numbers."""
    return {
        "name": gen.program.name,
        "model": gen.program.model_comment,
        "options": gen.options.to_json(),
        "cflags": list(gen.cflags),
        "sources": codegen.model_sources(gen.files),
        **gen.numbers(),
    }


def folder_files(gen: Generated) -> dict[str, str]:
    """The files of a generated folder: the model library and its build info."""
    return {**gen.files, BUILD_INFO: json.dumps(build_info(gen), indent=2) + "\n"}


def read_build_info(folder: Path) -> Optional[dict]:
    """The build info of a folder `generate` wrote, None for a folder without one."""
    path = Path(folder) / BUILD_INFO
    if not path.is_file():
        return None
    try:
        info = json.loads(path.read_text())
    except (OSError, ValueError) as e:
        raise OutputError(f"{path}: unreadable ({e}); generate the folder again") from None
    if not isinstance(info, dict) or not isinstance(info.get("name"), str) or not isinstance(info.get("cflags"), list):
        raise OutputError(f"{path}: not an mcugen build info file; generate the folder again")
    return info


def generate(
    model_path: str | Path, out_dir: str | Path, name: Optional[str] = None, force: bool = False,
    strategy: str = DEFAULT_STRATEGY, kernels: Optional[str] = None, target: str = "portable",
    cmsis_nn: Optional[str] = None, options: Optional[CompileOptions] = None,
) -> Generated:
    gen = build(model_path, name, strategy, kernels=kernels, target=target, cmsis_nn=cmsis_nn, options=options)
    write_output_dir(Path(out_dir), folder_files(gen), force=force)
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
            elif t.dtype is DType.INT16:
                arrays.append(rng.integers(-32768, 32768, size=t.shape, dtype=np.int64).astype(np.int16))
            else:
                lo, hi = -1.0, 1.0
                for op in graph.operators:
                    if op.op is OpType.QUANTIZE and op.inputs[0] == i:
                        q = graph.t(op.outputs[0]).quant
                        qmin, qmax = {DType.UINT8: (0, 255), DType.INT16: (-32768, 32767)}.get(
                            graph.t(op.outputs[0]).dtype, (-128, 127))
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
    model_path: str | Path, inputs: list[list[np.ndarray]], extra_cflags: Sequence[str] = (), strategy: str = DEFAULT_STRATEGY
) -> list[list[np.ndarray]]:
    """Generate, compile with host gcc and run the model on each run's inputs; returns outputs."""
    gen = build(model_path, strategy=strategy)
    with tempfile.TemporaryDirectory(prefix="mcugen-host-") as tmp:
        exe = compile_host(gen, Path(tmp) / "build", extra_cflags)
        return run_host(exe, gen, inputs, Path(tmp) / "io")
