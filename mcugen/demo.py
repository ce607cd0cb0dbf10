"""The main job: build MobileNet v2, quantize, generate C, run it and compare with the oracle."""

from __future__ import annotations

import dataclasses
import json
import sys
import tempfile
import time
import warnings
from dataclasses import dataclass, field
from pathlib import Path

from mcugen.errors import McugenError
from mcugen.options import CompileOptions, add_compile_options, options_from_args

DEFAULT_ALPHA = 0.35
DEFAULT_RESOLUTION = 96
DEFAULT_CLASSES = 10


@dataclass
class DemoReport:
    model: str
    board: str
    macs: int = 0
    flash_bytes: int = 0
    weight_bytes: int = 0
    arena_bytes: int = 0
    ram_bytes: int = 0
    max_abs_diff: int = -1
    bit_exact: bool = False
    runs: int = 0
    oracles: list[str] = field(default_factory=list)
    instructions: int = 0
    stages: dict[str, float] = field(default_factory=dict)


class _Stages:
    def __init__(self, report: DemoReport, quiet: bool):
        self.report = report
        self.quiet = quiet
        self.t0 = time.monotonic()

    def run(self, name: str, fn):
        if not self.quiet:
            print(f"[{time.monotonic() - self.t0:6.1f}s] {name} ...", file=sys.stderr, flush=True)
        start = time.monotonic()
        result = fn()
        self.report.stages[name] = round(time.monotonic() - start, 2)
        return result


def run_demo(out_dir: Path, *, alpha: float = DEFAULT_ALPHA, resolution: int = DEFAULT_RESOLUTION,
             classes: int = DEFAULT_CLASSES, board: str = "qemu-mps2-an386", count: int = 2, seed: int = 0,
             force: bool = False, quiet: bool = False, options=None) -> DemoReport:
    """`options`: the CompileOptions to generate with (the board's kernels and budget by default)."""
    from mcugen import driver
    from mcugen.validate import validate

    out_dir = Path(out_dir)
    driver.check_output_dir(out_dir, force)
    report = DemoReport(model=f"MobileNet v2 alpha {alpha} {resolution}x{resolution}, {classes} classes", board=board)
    st = _Stages(report, quiet)

    def build_and_quantize() -> bytes:
        from mcugen import mobilenet_v2 as mnv2
        from mcugen.datasets import load_calibration
        from mcugen.quantize import QuantizeOptions, quantize_module

        calibration = load_calibration(None, resolution, resolution, 3, 32, 1 / 127.5, -1.0, seed)
        module = mnv2.build_mobilenet_v2(alpha, resolution, resolution, 3, classes, seed, None)
        with warnings.catch_warnings():
            warnings.simplefilter("ignore")  # synthetic calibration is the demo's stated choice
            return quantize_module(module, calibration, QuantizeOptions(samples=32), 1 / 127.5, -1.0)

    tflite = st.run("build + quantize MobileNet v2 (tf.Module, int8 PTQ)", build_and_quantize)
    with tempfile.TemporaryDirectory(prefix="mcugen-demo-") as tmp:
        model_path = Path(tmp) / "mobilenet_v2.tflite"
        model_path.write_bytes(tflite)
        kw: dict = {}
        if board != "host":
            from mcugen import validate_board

            kw = validate_board.runner_kwargs(board)
        opts = dataclasses.replace(options or CompileOptions(), name="mobilenet_v2", board=board)
        # Generated once; validation and measurement use these very files.
        gen = st.run("generate C", lambda: driver.build(model_path, options=opts))
        report.macs = gen.graph.macs()
        report.weight_bytes = gen.program.weight_bytes
        report.arena_bytes = gen.program.arena_bytes
        rep = st.run(
            f"compile, run on {board}, compare with the oracles",
            lambda: validate(model_path, count=count, seed=seed, generated=gen, **kw),
        )
        report.max_abs_diff = rep.max_abs_diff
        report.bit_exact = rep.bit_exact
        report.runs = rep.runs
        report.oracles = rep.oracles
        if board != "host":
            bench = st.run(f"measure on {board}", lambda: validate_board.measure(model_path, board, generated=gen))
            report.instructions = bench.instructions
            report.flash_bytes = bench.flash_bytes
            report.ram_bytes = bench.ram_bytes
        files = dict(gen.files)
        files["report.json"] = json.dumps(vars(report), indent=2) + "\n"
        driver.write_output_dir(out_dir, files, force=force, binary={"mobilenet_v2.tflite": tflite})
    return report


def format_report(r: DemoReport, out_dir: Path) -> str:
    lines = [
        f"mcugen main job: {r.model}",
        f"  MACs                 {r.macs:,}",
        f"  weights (flash)      {r.weight_bytes:,} bytes",
        f"  RAM plan (arena)     {r.arena_bytes:,} bytes",
    ]
    if r.board != "host":
        lines += [
            f"  firmware flash       {r.flash_bytes:,} bytes",
            f"  firmware RAM         {r.ram_bytes:,} bytes (static + measured stack)",
            f"  instructions         {r.instructions:,} on {r.board}",
        ]
    verdict = "bit-exact" if r.bit_exact else "MISMATCH"
    lines.append(f"  max abs difference   {r.max_abs_diff} ({verdict}, {r.runs} runs on {r.board} vs {', '.join(r.oracles)})")
    lines.append("  time per stage       " + "; ".join(f"{k}: {v:.1f} s" for k, v in r.stages.items()))
    lines.append(f"  output               {out_dir}/ (C library, the .tflite, report.json)")
    return "\n".join(lines)


def register(subparsers) -> None:
    p = subparsers.add_parser("demo", help="the main job: MobileNet v2 -> int8 -> C -> run -> bit-exact check")
    p.add_argument("-o", "--output", default="mcugen-demo", help="output folder (default mcugen-demo)")
    p.add_argument("--alpha", type=float, default=DEFAULT_ALPHA, help=f"width multiplier (default {DEFAULT_ALPHA})")
    p.add_argument("--resolution", type=int, default=DEFAULT_RESOLUTION, help=f"input size (default {DEFAULT_RESOLUTION})")
    p.add_argument("--classes", type=int, default=DEFAULT_CLASSES, help=f"classes (default {DEFAULT_CLASSES})")
    p.add_argument("--board", default="qemu-mps2-an386",
                   help="where to run the generated code: qemu-mps2-an386 (Cortex-M4, default), qemu-mps2-an500, qemu-mps3-an547, host")
    p.add_argument("--count", type=int, default=2, help="random inputs to compare (default 2)")
    p.add_argument("--force", action="store_true", help="overwrite an output folder mcugen did not create")
    p.add_argument("--quiet", action="store_true", help="no progress messages")
    add_compile_options(p, board=False, name=False)
    p.set_defaults(func=_cmd)


def _cmd(args) -> int:
    if args.alpha <= 0 or args.resolution < 32 or args.classes < 1 or args.count < 1:
        raise McugenError("demo: need --alpha > 0, --resolution >= 32, --classes >= 1 and --count >= 1")
    report = run_demo(Path(args.output), alpha=args.alpha, resolution=args.resolution, classes=args.classes,
                      board=args.board, count=args.count, force=args.force, quiet=args.quiet,
                      options=options_from_args(args))
    print(format_report(report, Path(args.output)))
    return 0 if report.bit_exact else 1
