"""Kernel benchmark (issue 6): instructions of mcugen's specialised kernels, the CMSIS-NN backend and
mcugen's portable C on the emulated Cortex-M4, M7 and M55, per layer type and per model.

For each model and board, three builds of the same plan (layer by layer, no fused chains)
with the board's compiler flags: `portable` (mcugen's generic portable C99 kernels),
`mcugen` (kernels specialised per layer for the board's target: Armv7E-M DSP on the M4/M7,
Helium on the M55) and `cmsis-nn` (Arm's CMSIS-NN, from the checkout given by --cmsis-nn or
CMSIS_NN_PATH, for every layer it covers). Each is built as firmware with per-layer markers
and run once in QEMU with the instruction-counting plugin on one seeded input; its outputs
are compared with tflite-runtime's reference kernels (BUILTIN_REF), and each backend also
runs on the host (portable target / CMSIS-NN's C paths) against the same oracle.

Reported: instructions per layer type (CONV_2D and DEPTHWISE by kernel size and stride, e.g.
"CONV_2D 1x1 s1", "DEPTHWISE 5x5 s2"; FULLY_CONNECTED, ADD, MEAN, SOFTMAX) with instructions
per MAC (per element for ADD/MEAN, per row element for SOFTMAX), then the same table in
estimated cycles (the plugin's Cortex-M4/M7 timing table, mcugen/cycles.py; none on the M55)
with cycles per MAC and per instruction, the whole model, and the flash taken by each part of
the generated model (code and constants of the model's objects in the linked image, from the
linker map: the invoke function, the layers, the weights, the kernel library; the CMSIS-NN
library's objects count as the kernel library of the cmsis-nn build). Then the goals.

Models: MobileNet v2 alpha 0.35 at 96x96 and alpha 1.0 at 224x224 (10 classes, int8, built
with `mcugen model mobilenet_v2` into --work and reused), or the .tflite files given; plus a
sweep of one-layer models (built with TensorFlow into --work and reused: pointwise 1x1 and
depthwise 3x3, 5x5 and 7x7, stride 1 and 2, SAME, RELU6) for the kernel sizes MobileNet v2
lacks.

Usage: python benchmarks/kernels.py [--quick] [--no-sweep] [--boards M4,M7,M55] [--work DIR]
                                    [--cmsis-nn PATH] [--json FILE] [MODEL.tflite ...]
  --quick     MobileNet v2 0.35/96 (and the sweep) only
  --no-sweep  leave out the one-layer sweep
This is a benchmark, not a test: the full run builds ~60 firmware images and takes minutes.
"""

from __future__ import annotations

import argparse
import json
import re
import subprocess
import sys
import tempfile
import time
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Optional

REPO = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(REPO))

from mcugen.oracle import oracles_for  # noqa: E402  (loads tflite-runtime before TensorFlow can be)

import numpy as np  # noqa: E402

from mcugen import bench, codegen, driver, firmware  # noqa: E402
from mcugen.boards import get_board  # noqa: E402
from mcugen.errors import McugenError  # noqa: E402
from mcugen.kernels import apply_kernels  # noqa: E402
from mcugen.kernels.cmsis_nn import ENV_VAR, cmsis_nn_path  # noqa: E402
from mcugen.lower import Layer, Program, lower  # noqa: E402
from mcugen.targets import EMULATE_DSP_MACRO, get_target, target_for_board  # noqa: E402
from mcugen.tflite_reader import read_tflite  # noqa: E402

BOARDS = {"M4": "qemu-mps2-an386", "M7": "qemu-mps2-an500", "M55": "qemu-mps3-an547"}
KINDS = ("portable", "mcugen", "cmsis-nn")
MOBILENETS = ((0.35, 96), (1.0, 224))
FLASH_SLACK = 16 * 1024
NAME = "net"


@dataclass
class Run:
    model: str
    board: str
    kind: str
    instructions: int
    cycles: Optional[int]  # estimated (mcugen/cycles.py); None without a timing table (M55)
    flash_parts: dict[str, list[int]]  # part -> [code bytes, constant bytes] in the linked image
    bit_exact: bool  # outputs equal tflite-runtime's reference kernels
    # type -> [instructions, MACs or elements, estimated cycles]
    by_type: dict[str, list[int]] = field(default_factory=dict)
    layers: list[int] = field(default_factory=list)
    layer_cycles: list[int] = field(default_factory=list)

    @property
    def flash_model(self) -> int:
        """Bytes of code + constants of the model's objects in the linked image."""
        return sum(code + const for code, const in self.flash_parts.values())


_KERNEL = re.compile(r"\((\d+)x(\d+) stride (\d+)x(\d+) dilation (\d+)x(\d+)")


def layer_type(layer: Layer) -> str:
    """"CONV_2D 1x1 s1", "DEPTHWISE 5x5 s2", "DEPTHWISE 3x3 s1 d2" (dilation), or the op."""
    head = layer.comment[0] if layer.comment else ""
    if layer.op not in ("CONV_2D", "DEPTHWISE_CONV_2D"):
        return layer.op
    name = "CONV_2D" if layer.op == "CONV_2D" else "DEPTHWISE"
    m = _KERNEL.search(head)
    if m is None:
        return f"{name} other"
    kh, kw, sh, sw, dh, dw = m.groups()
    stride = f"s{sh}" if sh == sw else f"s{sh}x{sw}"
    dilation = "" if (dh, dw) == ("1", "1") else (f" d{dh}" if dh == dw else f" d{dh}x{dw}")
    return f"{name} {kh}x{kw} {stride}{dilation}"


def work_units(layer: Layer, program: Program) -> int:
    """MACs; elements for ADD/MUL/MEAN (lowering's count), row elements for SOFTMAX."""
    if layer.op == "SOFTMAX":
        return max(program.tensors[layer.output].nbytes, 1) if layer.output in program.tensors else 1
    return max(layer.macs, 1)


_MAP_INPUT = re.compile(r"^\s+(?:(\S+)\s+)?0x[0-9a-f]+\s+0x([0-9a-f]+)\s+(\S+\.o)\s*$")


PARTS = ("invoke", "layers", "weights", "kernel library")


def model_part(obj: str, name: str = NAME) -> str:
    """Which part of the generated model an object file is: <name>.o the invoke function and
    its tables, <name>_layers.o the layer calls and parameters, <name>_weights.o the weights,
    anything else (mcugen_kernels.o, CMSIS-NN's objects) the kernel library."""
    stem = Path(obj).stem
    return {name: "invoke", f"{name}_layers": "layers", f"{name}_weights": "weights"}.get(stem, "kernel library")


def model_flash_parts(map_path: Path, prefix: str = "build/model/") -> dict[str, list[int]]:
    """Per model part, [code, constants]: bytes of .text* and of .rodata*/.data* input sections
    from the model's objects, as linked (sections --gc-sections dropped are listed before the
    memory map and are not counted)."""
    text = Path(map_path).read_text()
    start = text.find("Linker script and memory map")
    parts = {part: [0, 0] for part in PARTS}
    section = None
    for line in text[start:].splitlines():
        m = _MAP_INPUT.match(line)
        if m:
            name = m.group(1) or section
            if name and m.group(3).startswith(prefix) and name.startswith((".text", ".rodata", ".data")):
                parts[model_part(m.group(3))][0 if name.startswith(".text") else 1] += int(m.group(2), 16)
            section = None
            continue
        stripped = line.strip()
        section = stripped if stripped.startswith(".") and len(stripped.split()) == 1 else None
    return parts


def model_flash(map_path: Path, prefix: str = "build/model/") -> int:
    """Bytes of code + constants of the model's objects, as linked."""
    return sum(code + const for code, const in model_flash_parts(map_path, prefix).values())


def make_mobilenet(work: Path, alpha: float, resolution: int) -> Path:
    path = work / f"mobilenet_v2_{alpha:g}_{resolution}.tflite"
    if not path.exists():
        print(f"building {path.name} ...", flush=True)
        done = subprocess.run(
            [sys.executable, "-m", "mcugen", "model", "mobilenet_v2", "--alpha", str(alpha), "--resolution",
             str(resolution), "--samples", "8", "-o", str(path)],
            capture_output=True, text=True, cwd=REPO,
        )
        if done.returncode != 0:
            raise SystemExit(f"building {path.name} failed: {done.stderr.strip()[-500:]}")
    return path


# One-layer models for the kernel sizes and strides MobileNet v2 lacks: (name, kind, kernel,
# stride, input H x W x C, output channels). Depthwise layers have depth multiplier 1; the
# inputs are sized so that every stride-2 layer has the output of its stride-1 twin.
SWEEP = (
    ("sweep_conv_1x1_s1", "conv", 1, 1, (24, 24, 48), 48),
    ("sweep_dw_3x3_s1", "depthwise", 3, 1, (24, 24, 48), 48),
    ("sweep_dw_3x3_s2", "depthwise", 3, 2, (48, 48, 48), 48),
    ("sweep_dw_5x5_s1", "depthwise", 5, 1, (24, 24, 48), 48),
    ("sweep_dw_5x5_s2", "depthwise", 5, 2, (48, 48, 48), 48),
    ("sweep_dw_7x7_s1", "depthwise", 7, 1, (24, 24, 48), 48),
    ("sweep_dw_7x7_s2", "depthwise", 7, 2, (48, 48, 48), 48),
)


def make_sweep(work: Path) -> list[Path]:
    """The SWEEP models as int8 .tflite files in `work` (built once with TensorFlow, reused)."""
    paths = [work / f"{name}.tflite" for name, *_ in SWEEP]
    if all(p.exists() for p in paths):
        return paths
    from mcugen.quantize import QuantizeOptions, convert_concrete_function, import_tensorflow

    tf = import_tensorflow()
    for seed, ((name, kind, k, stride, (h, w, c), cout), path) in enumerate(zip(SWEEP, paths)):
        if path.exists():
            continue
        print(f"building {path.name} ...", flush=True)
        rng = np.random.default_rng(seed)
        module = tf.Module()
        shape = (k, k, c, 1) if kind == "depthwise" else (k, k, c, cout)
        module.w = tf.Variable(rng.normal(0.0, 0.5 / k, shape).astype(np.float32))
        module.b = tf.Variable(rng.normal(0.0, 0.1, (cout,)).astype(np.float32))

        @tf.function(input_signature=[tf.TensorSpec((1, h, w, c), tf.float32)])
        def layer(x, module=module, kind=kind, stride=stride):
            if kind == "depthwise":
                y = tf.nn.depthwise_conv2d(x, module.w, (1, stride, stride, 1), "SAME")
            else:
                y = tf.nn.conv2d(x, module.w, stride, "SAME")
            return tf.nn.relu6(y + module.b)

        calibration = [[rng.uniform(-1.0, 1.0, (1, h, w, c)).astype(np.float32)] for _ in range(16)]
        data = convert_concrete_function(layer.get_concrete_function(), module, calibration, QuantizeOptions())
        path.write_bytes(data)
    return paths


def program_files(graph, kind: str, target, cmsis: Optional[Path]) -> tuple[Program, dict[str, str], tuple[str, ...]]:
    program = lower(graph, NAME, strategy="layerwise")
    if kind == "portable":
        return program, codegen.render_model(program, graph), ()
    result = apply_kernels(program, kind, target, str(cmsis) if cmsis else None)
    return result.program, result.merged_files(codegen.render_model(result.program, graph)), result.cflags


def same(outputs: list[np.ndarray], reference: list[np.ndarray]) -> bool:
    return len(outputs) == len(reference) and all(
        a.shape == b.shape and np.array_equal(a, b.astype(a.dtype)) for a, b in zip(outputs, reference)
    )


def run_board(model: Path, graph, board_key: str, kind: str, work: Path, inputs, reference, cmsis) -> Run:
    board = get_board(BOARDS[board_key])
    target = target_for_board(board)
    program, files, cflags = program_files(graph, kind, target, cmsis)
    folder = work / model.stem / board_key / kind
    model_dir = folder / "model"
    model_dir.mkdir(parents=True, exist_ok=True)
    for old in model_dir.glob("*"):
        old.unlink()
    codegen.write_files(files, model_dir)
    fw = firmware.build_firmware(model_dir, NAME, board, folder / "fw", profile=True, extra_cflags=cflags)
    result = bench.bench_elf(fw.elf, board, [a.tobytes() for a in inputs])
    outputs = [
        np.frombuffer(data, dtype=graph.t(i).dtype.numpy).reshape(graph.t(i).shape)
        for data, i in zip(result.outputs, graph.outputs)
    ]
    run = Run(model.stem, board_key, kind, result.instructions, result.estimated_cycles,
              model_flash_parts(fw.map), same(outputs, reference))
    run.layers = list(result.layers)
    run.layer_cycles = list(result.layer_cycles)
    cycles = result.layer_cycles or [0] * len(result.layers)
    for layer, count, cyc in zip(program.layers, result.layers, cycles):
        entry = run.by_type.setdefault(layer_type(layer), [0, 0, 0])
        entry[0] += count
        entry[1] += work_units(layer, program)
        entry[2] += cyc
    return run


def host_exact(graph, kind: str, cmsis, inputs, reference, work: Path) -> bool:
    program, files, cflags = program_files(graph, kind, get_target("portable"), cmsis)
    gen = driver.Generated(graph=graph, program=program, files=files)
    folder = Path(tempfile.mkdtemp(prefix=f"host-{kind}-", dir=work))
    exe = driver.compile_host(gen, folder / "build", extra_cflags=(f"-D{EMULATE_DSP_MACRO}", *cflags))
    return same(driver.run_host(exe, gen, [inputs], folder / "io")[0], reference)


def per_mac(entry: list[int]) -> str:
    return f"{entry[0]:>12,} {entry[0] / entry[1]:7.2f}"


def cycles_per_mac(entry: list[int]) -> str:
    return f"{entry[2]:>12,} {entry[2] / entry[1]:7.2f} {entry[2] / max(entry[0], 1):5.2f}"


def print_model(runs: list[Run], model: str, boards: list[str], kinds: list[str]) -> None:
    for board in boards:
        here = {r.kind: r for r in runs if r.model == model and r.board == board}
        if not here:
            continue
        print(f"\n{model} on {board} ({BOARDS[board]}): instructions and instructions per MAC "
              "(ADD, MEAN: per element; SOFTMAX: per input element)")
        header = f"  {'layer type':22s}" + "".join(f" {k:>20s}" for k in kinds if k in here)
        print(header)
        types = sorted({t for r in here.values() for t in r.by_type})
        for t in types:
            row = f"  {t:22s}"
            for k in kinds:
                if k in here:
                    e = here[k].by_type.get(t)
                    row += f" {per_mac(e) if e else '-':>20s}"
            print(row)
        row = f"  {'whole model':22s}"
        for k in kinds:
            if k in here:
                row += f" {here[k].instructions:>20,}"
        print(row)
        if all(r.cycles is not None for r in here.values()):
            print(f"  estimated cycles, cycles per MAC, cycles per instruction ({BOARDS[board]}'s timing table, "
                  "mcugen/cycles.py)")
            print(f"  {'layer type':22s}" + "".join(f" {k:>26s}" for k in kinds if k in here))
            for t in types:
                row = f"  {t:22s}"
                for k in kinds:
                    if k in here:
                        e = here[k].by_type.get(t)
                        row += f" {cycles_per_mac(e) if e else '-':>26s}"
                print(row)
            row = f"  {'whole model':22s}"
            for k in kinds:
                if k in here:
                    r = here[k]
                    row += f" {f'{r.cycles:,} {r.cycles / r.instructions:5.2f}':>26s}"
            print(row)
        print(f"  {'model flash (bytes)':22s}" + "".join(f" {'code + constants':>20s}" for k in kinds if k in here))
        for part in PARTS:
            row = f"  {'  ' + part:22s}"
            for k in kinds:
                if k in here:
                    code, const = here[k].flash_parts[part]
                    row += f" {f'{code:,} + {const:,}':>20s}"
            print(row)
        row = f"  {'  total':22s}"
        for k in kinds:
            if k in here:
                row += f" {here[k].flash_model:>20,}"
        print(row)
        row = f"  {'bit-exact vs tflite':22s}"
        for k in kinds:
            if k in here:
                row += f" {str(here[k].bit_exact):>20s}"
        print(row)
        if "mcugen" in here and "cmsis-nn" in here:
            m, c = here["mcugen"], here["cmsis-nn"]
            print(f"  mcugen / cmsis-nn: {m.instructions / c.instructions:.3f} in instructions"
                  + (f", {m.cycles / c.cycles:.3f} in estimated cycles" if m.cycles and c.cycles else "")
                  + (f"   mcugen / portable: {m.instructions / here['portable'].instructions:.3f}"
                     if "portable" in here else ""))


def print_kernel_summary(runs: list[Run], boards: list[str], kinds: list[str]) -> None:
    """Per board, every CONV_2D / DEPTHWISE kernel size and stride over all models: instructions
    per MAC and estimated cycles per MAC of each backend."""
    for board in boards:
        here = [r for r in runs if r.board == board]
        totals: dict[tuple[str, str], list[int]] = {}
        for r in here:
            for t, v in r.by_type.items():
                if t.startswith(("CONV_2D", "DEPTHWISE")):
                    entry = totals.setdefault((t, r.kind), [0, 0, 0])
                    for i in range(3):
                        entry[i] += v[i]
        if not totals:
            continue
        present = [k for k in kinds if any(kind == k for _, kind in totals)]
        with_cycles = all(r.cycles is not None for r in here)
        what = "instructions/MAC" + (", estimated cycles/MAC" if with_cycles else "")
        print(f"\nKernels on {board} ({BOARDS[board]}), all models: {what}")
        print(f"  {'layer type':22s}" + "".join(f" {k:>16s}" for k in present))
        for t in sorted({t for t, _ in totals}, key=lambda t: (t.split()[0], t.split()[1:])):
            row = f"  {t:22s}"
            for k in present:
                e = totals.get((t, k))
                cell = "-" if e is None else (f"{e[0] / e[1]:.2f}" + (f" / {e[2] / e[1]:.2f}" if with_cycles else ""))
                row += f" {cell:>16s}"
            print(row)


def goals(runs: list[Run], host: dict, sizes: dict[str, int], primary: str) -> list[tuple[str, bool, str]]:
    out = []
    m4 = {r.kind: r for r in runs if r.model == primary and r.board == "M4"}
    if "mcugen" in m4 and "cmsis-nn" in m4:
        ratio = m4["mcugen"].instructions / m4["cmsis-nn"].instructions
        out.append((f"{primary} on the M4: mcugen <= 0.5 x cmsis-nn instructions", ratio <= 0.5,
                    f"{m4['mcugen'].instructions:,} / {m4['cmsis-nn'].instructions:,} = {ratio:.3f}"))
    if "mcugen" in m4 and "cmsis-nn" in m4 and m4["mcugen"].cycles and m4["cmsis-nn"].cycles:
        ratio = m4["mcugen"].cycles / m4["cmsis-nn"].cycles
        out.append((f"{primary} on the M4: mcugen <= 0.5 x cmsis-nn estimated cycles", ratio <= 0.5,
                    f"{m4['mcugen'].cycles:,} / {m4['cmsis-nn'].cycles:,} = {ratio:.3f}"))
    depthwise: dict[str, list[int]] = {}
    for r in runs:
        if r.board == "M4" and r.kind == "mcugen":
            for t, v in r.by_type.items():
                if t.startswith("DEPTHWISE ") and t.split()[1] in ("5x5", "7x7"):
                    entry = depthwise.setdefault(t, [0, 0])
                    entry[0] += v[0]
                    entry[1] += v[1]
    for t, (n, macs) in sorted(depthwise.items()):
        out.append((f"{t} on the M4 (all models): <= 2.5 instructions per MAC", n / macs <= 2.5,
                    f"{n:,} / {macs:,} MACs = {n / macs:.2f}"))
    if "mcugen" in m4:
        for t, limit in (("CONV_2D 1x1", 1.0), ("DEPTHWISE 3x3", 2.5)):
            n = sum(v[0] for k, v in m4["mcugen"].by_type.items() if k.startswith(t))
            macs = sum(v[1] for k, v in m4["mcugen"].by_type.items() if k.startswith(t))
            if macs:
                out.append((f"{primary} on the M4: {t} <= {limit} instructions per MAC", n / macs <= limit,
                            f"{n:,} / {macs:,} MACs = {n / macs:.2f}"))
    for r in runs:
        if r.kind == "mcugen" and not r.model.startswith("sweep_"):
            limit = sizes[r.model] + FLASH_SLACK
            out.append((f"{r.model} on the {r.board}: flash of the model <= .tflite + 16 KiB", r.flash_model <= limit,
                        f"{r.flash_model:,} <= {sizes[r.model]:,} + {FLASH_SLACK:,} = {limit:,}"))
    bad = [f"{r.model}/{r.board}/{r.kind}" for r in runs if r.kind != "portable" and not r.bit_exact]
    bad += [f"{m}/host/{k}" for (m, k), ok in host.items() if not ok]
    checked = len([r for r in runs if r.kind != "portable"]) + len(host)
    out.append(("bit-exact with tflite-runtime on the host and every emulated core, both backends", not bad and checked > 0,
                f"{checked} builds checked" + (f"; differ: {', '.join(bad)}" if bad else "")))
    return out


def main(argv=None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("models", nargs="*", help=".tflite files (default: MobileNet v2 0.35/96 and 1.0/224)")
    ap.add_argument("--quick", action="store_true", help="MobileNet v2 0.35/96 (and the sweep) only")
    ap.add_argument("--no-sweep", action="store_true", help="leave out the one-layer kernel sweep")
    ap.add_argument("--boards", default="M4,M7,M55", help="comma-separated of M4, M7, M55")
    ap.add_argument("--work", help="keep models and builds here (default: a temporary folder)")
    ap.add_argument("--cmsis-nn", help=f"CMSIS-NN checkout (default: ${ENV_VAR})")
    ap.add_argument("--json", help="also write the measurements to this file")
    args = ap.parse_args(argv)
    boards = [b.strip() for b in args.boards.split(",") if b.strip()]
    for b in boards:
        if b not in BOARDS:
            ap.error(f"unknown board {b!r}; choose from {', '.join(BOARDS)}")
    try:
        cmsis = cmsis_nn_path(args.cmsis_nn)
        kinds = list(KINDS)
    except McugenError as e:
        print(f"note: {e}; measuring without the cmsis-nn backend", file=sys.stderr)
        cmsis, kinds = None, [k for k in KINDS if k != "cmsis-nn"]
    work = Path(args.work) if args.work else Path(tempfile.mkdtemp(prefix="mcugen-kernels-"))
    work.mkdir(parents=True, exist_ok=True)
    models = [Path(m) for m in args.models]
    if not models:
        models = [make_mobilenet(work, a, r) for a, r in (MOBILENETS[:1] if args.quick else MOBILENETS)]
    if not args.no_sweep:
        models += make_sweep(work)
    runs: list[Run] = []
    host: dict[tuple[str, str], bool] = {}
    sizes = {m.stem: m.stat().st_size for m in models}
    start = time.monotonic()
    for model in models:
        graph = read_tflite(model)
        inputs = driver.random_inputs(graph, 1, seed=6)[0]
        oracle = oracles_for(model)[0]
        reference = [np.asarray(a) for a in oracle.run(inputs)]
        for kind in kinds:
            if kind != "portable":
                host[(model.stem, kind)] = host_exact(graph, kind, cmsis, inputs, reference, work)
            for board in boards:
                t = time.monotonic()
                run = run_board(model, graph, board, kind, work, inputs, reference, cmsis)
                runs.append(run)
                print(f"[{time.monotonic() - start:6.0f}s] {model.stem} {board} {kind}: {run.instructions:,} instructions, "
                      f"bit-exact {run.bit_exact} ({time.monotonic() - t:.0f}s)", flush=True)
    for model in models:
        print_model(runs, model.stem, boards, kinds)
    print_kernel_summary(runs, boards, kinds)
    primary = models[0].stem
    print("\nGoals:")
    results = goals(runs, host, sizes, primary)
    for text, ok, detail in results:
        print(f"  [{'PASS' if ok else 'FAIL'}] {text}: {detail}")
    if args.json:
        Path(args.json).write_text(json.dumps({
            "runs": [asdict(r) for r in runs],
            "host_bit_exact": {f"{m}/{k}": ok for (m, k), ok in host.items()},
            "model_bytes": sizes,
            "goals": [{"goal": t, "pass": ok, "detail": d} for t, ok, d in results],
        }, indent=2))
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
