"""Command-line interface: parses arguments, dispatches to commands, maps errors to exit codes."""

from __future__ import annotations

import argparse
import importlib
import json
import sys
import time
from pathlib import Path

from mcugen import __version__
from mcugen.boards import get_board
from mcugen.errors import McugenError

# Modules that add their own sub-commands through `register(subparsers)`.
COMMAND_MODULES = ("mcugen.cmd_model", "mcugen.demo", "mcugen.cmd_firmware", "mcugen.memory_report",
                   "mcugen.evaluate")
STRATEGY_HELP = "memory plan: fused (default; row-streamed chains where they lower the peak) or layerwise"


def _progress(quiet: bool):
    start = time.monotonic()

    def report(msg: str) -> None:
        if not quiet:
            print(f"[{time.monotonic() - start:6.1f}s] {msg}", file=sys.stderr, flush=True)

    return report


def cmd_info(args) -> int:
    from collections import Counter

    from mcugen.driver import build
    from mcugen.ir import op_macs

    gen = build(args.model, strategy=args.strategy)
    g, p = gen.graph, gen.program
    ops = Counter(op.op.value for op in g.operators)
    info = {
        "model": str(args.model),
        "name": p.name,
        "operators": len(g.operators),
        "ops": dict(sorted(ops.items())),
        "tensors": len(g.tensors),
        "inputs": [{"shape": list(g.t(i).shape), "dtype": g.t(i).dtype.value} for i in g.inputs],
        "outputs": [{"shape": list(g.t(i).shape), "dtype": g.t(i).dtype.value} for i in g.outputs],
        "macs": g.macs(),
        "weight_bytes": p.weight_bytes,
        "arena_bytes": p.arena_bytes,
        "arena_lower_bound_bytes": p.plan.lower_bound_bytes,
        "layers": [
            {"index": op.index, "op": op.op.value, "output_shape": list(g.t(op.outputs[0]).shape), "macs": op_macs(g, op)}
            for op in g.operators
        ],
    }
    if args.json:
        print(json.dumps(info, indent=2))
        return 0
    print(f"model:        {info['model']}  (C name: {p.name})")
    print(f"operators:    {info['operators']}  " + ", ".join(f"{k} x{v}" for k, v in info["ops"].items()))
    print(f"tensors:      {info['tensors']}")
    for k, t in enumerate(info["inputs"]):
        print(f"input {k}:      {t['shape']} {t['dtype']}")
    for k, t in enumerate(info["outputs"]):
        print(f"output {k}:     {t['shape']} {t['dtype']}")
    print(f"MACs:         {info['macs']:,}")
    print(f"weights:      {info['weight_bytes']:,} bytes (flash)")
    print(f"arena:        {info['arena_bytes']:,} bytes (RAM; lower bound {info['arena_lower_bound_bytes']:,})")
    return 0


def cmd_generate(args) -> int:
    from mcugen.driver import generate

    gen = generate(args.model, args.output, name=args.name, force=args.force, strategy=args.strategy,
                   kernels=args.kernels, target=args.target, cmsis_nn=args.cmsis_nn)
    for note in gen.notes:
        print(note, file=sys.stderr)
    p = gen.program
    print(
        f"wrote {len(gen.files)} files to {args.output}: {', '.join(sorted(gen.files))} "
        f"(arena {p.arena_bytes:,} bytes, weights {p.weight_bytes:,} bytes)"
    )
    return 0


def cmd_validate(args) -> int:
    from mcugen.validate import validate

    progress = _progress(args.quiet or args.json)
    kw = {}
    if args.board and args.board != "host":
        from mcugen import validate_board

        if args.poison:
            raise McugenError("--poison runs on the host; drop --board or --poison")
        kw = validate_board.runner_kwargs(args.board)
    elif args.poison:
        from mcugen.validate import poisoned_host_runner

        kw = {"runner": poisoned_host_runner, "target": "host (poisoned arena)"}
    from mcugen.targets import target_for_board

    on_board = bool(args.board and args.board != "host")
    report = validate(
        args.model,
        kernels=args.kernels,
        kernel_target=target_for_board(get_board(args.board)).name if on_board else "portable",
        cmsis_nn=args.cmsis_nn,
        input_files=args.input or (),
        count=args.count,
        seed=args.seed,
        save_outputs=Path(args.save_outputs) if args.save_outputs else None,
        layers=args.layers,
        progress=progress,
        strategy=args.strategy,
        **kw,
    )
    if args.json:
        print(json.dumps(report.to_json(), indent=2))
    else:
        for note in report.notes:
            print(note, file=sys.stderr)
        verdict = "BIT-EXACT" if report.bit_exact else f"MISMATCH (max abs diff {report.max_abs_diff})"
        print(f"{report.model} on {report.target}: {verdict} over {report.runs} runs against {', '.join(report.oracles)}")
        for d in report.oracle_disagreements:
            print(
                f"note: run {d['run']}: oracle {d['oracle']} disagrees with the reference {report.oracles[0]} "
                f"by up to {d['max_abs_diff_to_reference']} (the generated code follows the reference)"
            )
        if report.first_bad_layer is not None:
            b = report.first_bad_layer
            print(
                f"first differing layer: {b.layer} ({b.op}), tensor {b.tensor} '{b.tensor_name}', "
                f"max abs diff {b.max_abs_diff} vs {b.oracle}"
            )
        elif not report.bit_exact and not args.layers:
            print("rerun with --layers to find the first layer that differs")
    return 0 if report.bit_exact else 1


def add_kernel_options(p: argparse.ArgumentParser, with_target: bool = False) -> None:
    """--kernels, --cmsis-nn (and --target for commands that have no board)."""
    from mcugen.specialize import KERNELS
    from mcugen.targets import TARGETS

    p.add_argument("--kernels", choices=KERNELS, default="mcugen",
                   help="mcugen: kernels specialised per layer for the target (default); cmsis-nn: calls to Arm's CMSIS-NN")
    p.add_argument("--cmsis-nn", metavar="PATH", help="CMSIS-NN checkout for --kernels cmsis-nn (default: $CMSIS_NN_PATH)")
    if with_target:
        p.add_argument("--target", choices=sorted(TARGETS), default="portable",
                       help="instruction set of the kernels: portable (C99, default), armv7em-dsp (Cortex-M4/M7/M33), mve (Cortex-M55)")


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog="mcugen",
        description="int8 TFLite models to plain, bit-exact C for Cortex-M microcontrollers.",
    )
    parser.add_argument("--version", action="version", version=f"mcugen {__version__}")
    sub = parser.add_subparsers(dest="command", metavar="COMMAND")
    sub.required = True

    p = sub.add_parser("info", help="ops, tensors, MACs, weight bytes and planned arena of a model")
    p.add_argument("model", help="an int8 .tflite file")
    p.add_argument("--json", action="store_true", help="print one JSON object")
    p.add_argument("--strategy", choices=("fused", "layerwise"), default="fused", help=STRATEGY_HELP)
    p.set_defaults(func=cmd_info)

    p = sub.add_parser("generate", help="generate the C model library")
    p.add_argument("model", help="an int8 .tflite file")
    p.add_argument("-o", "--output", required=True, help="output folder (created; replaced only if mcugen made it)")
    p.add_argument("--name", help="C name prefix (default: from the file name, sanitised)")
    p.add_argument("--force", action="store_true", help="overwrite an existing folder mcugen did not create")
    p.add_argument("--strategy", choices=("fused", "layerwise"), default="fused", help=STRATEGY_HELP)
    add_kernel_options(p, with_target=True)
    p.set_defaults(func=cmd_generate)

    p = sub.add_parser("validate", help="generate, compile, run and compare with tflite-runtime bit for bit")
    p.add_argument("model", help="an int8 .tflite file")
    p.add_argument("--input", nargs="+", metavar="FILE",
                   help="inputs, one file per model input per run: .npy with one sample or a batch (N, *shape[1:]) "
                        "giving N runs, or a PNG/JPEG/BMP image (resized, x/127.5-1, quantized with the input's scale)")
    p.add_argument("--count", type=int, default=3, help="number of seeded random runs (default 3)")
    p.add_argument("--seed", type=int, default=0, help="random seed (default 0)")
    p.add_argument("--save-outputs", metavar="DIR", help="write run<i>_input<k>.npy and run<i>_output<k>.npy")
    p.add_argument("--json", action="store_true", help="print one JSON object")
    p.add_argument("--layers", action="store_true", help="on a mismatch, name the first layer that differs")
    p.add_argument("--board", default="host", help="where to run: host (default), qemu-mps2-an386 (M4), qemu-mps2-an500 (M7), qemu-mps3-an547 (M55)")
    p.add_argument("--strategy", choices=("fused", "layerwise"), default="fused", help=STRATEGY_HELP)
    p.add_argument("--poison", action="store_true",
                   help="host build that overwrites every dead arena byte between layers (-DMCUGEN_POISON)")
    p.add_argument("--quiet", action="store_true", help="no progress messages")
    add_kernel_options(p)
    p.set_defaults(func=cmd_validate)

    for modname in COMMAND_MODULES:
        importlib.import_module(modname).register(sub)
    return parser


def main(argv=None) -> int:
    parser = build_parser()
    args = parser.parse_args(argv)
    try:
        return int(args.func(args) or 0)
    except McugenError as e:
        print(f"mcugen: error: {e}", file=sys.stderr)
        return e.exit_code
    except KeyboardInterrupt:
        print("mcugen: interrupted", file=sys.stderr)
        return 130
    except MemoryError:
        print("mcugen: error: out of memory while processing the model", file=sys.stderr)
        return 2
    except RecursionError:
        print("mcugen: error: the model is nested too deeply to process", file=sys.stderr)
        return 2


if __name__ == "__main__":
    raise SystemExit(main())
