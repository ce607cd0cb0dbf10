"""Command-line interface: parses arguments, dispatches to commands, maps errors to exit codes."""

from __future__ import annotations

import argparse
import importlib
import json
import sys
import time
from pathlib import Path

from mcugen import __version__
from mcugen.errors import McugenError
from mcugen.options import add_compile_options, options_from_args

# Modules that add their own sub-commands through `register(subparsers)`.
COMMAND_MODULES = ("mcugen.cmd_model", "mcugen.demo", "mcugen.cmd_firmware", "mcugen.memory_report",
                   "mcugen.evaluate")


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

    gen = build(args.model, options=options_from_args(args))
    g, p = gen.graph, gen.program
    ops = Counter(op.op.value for op in g.operators)
    info = {
        "model": str(args.model),
        "name": p.name,
        "options": gen.options.to_json(),
        "operators": len(g.operators),
        "ops": dict(sorted(ops.items())),
        "tensors": len(g.tensors),
        "inputs": [{"shape": list(g.t(i).shape), "dtype": g.t(i).dtype.value} for i in g.inputs],
        "outputs": [{"shape": list(g.t(i).shape), "dtype": g.t(i).dtype.value} for i in g.outputs],
        "macs": g.macs(),
        **gen.numbers(),
        "weight_bytes": p.weight_bytes,
        "arena_lower_bound_bytes": p.plan.lower_bound_bytes,
        "layers": [
            {"index": op.index, "op": op.op.value, "output_shape": list(g.t(op.outputs[0]).shape), "macs": op_macs(g, op)}
            for op in g.operators
        ],
    }
    if args.json:
        print(json.dumps(info, indent=2))
        return 0
    o = gen.options
    print(f"model:        {info['model']}  (C name: {p.name})")
    print(f"operators:    {info['operators']}  " + ", ".join(f"{k} x{v}" for k, v in info["ops"].items()))
    print(f"tensors:      {info['tensors']}")
    for k, t in enumerate(info["inputs"]):
        print(f"input {k}:      {t['shape']} {t['dtype']}")
    for k, t in enumerate(info["outputs"]):
        print(f"output {k}:     {t['shape']} {t['dtype']}")
    print(f"MACs:         {info['macs']:,}")
    print(f"kernels:      {o.kernels or 'generic'} for {o.kernel_target}, --strategy {o.strategy}"
          + (f", board {o.board}" if o.board else ""))
    print(f"constants:    {info['const_bytes']:,} bytes (flash: weights, biases, requantization tables as generated)")
    print(f"arena:        {info['arena_bytes']:,} bytes (RAM, of which kernel scratch up to {info['scratch_bytes']:,}; "
          f"lower bound {info['arena_lower_bound_bytes']:,})")
    print(f"instructions: {info['estimated_instructions']:,} (estimated for {o.kernel_target}; `mcugen bench` counts them)")
    return 0


def cmd_generate(args) -> int:
    from mcugen.driver import generate

    opts = options_from_args(args)
    gen = generate(args.model, args.output, force=args.force, options=opts)
    if opts.target is None and opts.board is None and opts.kernels == "mcugen":
        print("note: no --target or --board given: emitted portable C kernels; for a Cortex-M4/M7 give --target "
              "armv7em-dsp, for a Cortex-M55 --target mve (several times fewer instructions)", file=sys.stderr)
    for note in gen.notes:
        print(note, file=sys.stderr)
    p = gen.program
    print(
        f"wrote {len(gen.files) + 1} files to {args.output}: {', '.join(sorted(gen.files))}, mcugen-build.json "
        f"(arena {p.arena_bytes:,} bytes, constants {p.weight_bytes:,} bytes, "
        f"~{gen.estimated_instructions:,} instructions on {opts.kernel_target})"
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
    opts = options_from_args(args)
    report = validate(
        args.model,
        options=opts,
        input_files=args.input or (),
        count=args.count,
        seed=args.seed,
        save_outputs=Path(args.save_outputs) if args.save_outputs else None,
        layers=args.layers,
        progress=progress,
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


class _Parser(argparse.ArgumentParser):
    """argparse with the one-line error every other bad input gets (exit 2, no usage dump)."""

    def error(self, message: str):
        print(f"mcugen: error: {message} (see {self.prog} -h)", file=sys.stderr)
        raise SystemExit(2)


def build_parser() -> argparse.ArgumentParser:
    parser = _Parser(
        prog="mcugen",
        description="int8 TFLite models to plain, bit-exact C for Cortex-M microcontrollers.",
    )
    parser.add_argument("--version", action="version", version=f"mcugen {__version__}")
    sub = parser.add_subparsers(dest="command", metavar="COMMAND")
    sub.required = True

    p = sub.add_parser("info", help="ops, tensors, MACs, constants, planned arena and estimated instructions of a model")
    p.add_argument("model", help="an int8 .tflite file")
    p.add_argument("--json", action="store_true", help="print one JSON object")
    add_compile_options(p)
    p.set_defaults(func=cmd_info)

    p = sub.add_parser("generate", help="generate the C model library")
    p.add_argument("model", help="an int8 .tflite file")
    p.add_argument("-o", "--output", required=True, help="output folder (created; replaced only if mcugen made it)")
    p.add_argument("--force", action="store_true",
                   help="write into a folder mcugen did not create, or replace generated files you edited (a copy goes to OUTPUT/.mcugen-backup/)")
    add_compile_options(p)
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
    p.add_argument("--poison", action="store_true",
                   help="host build that overwrites every dead arena byte between layers (-DMCUGEN_POISON)")
    p.add_argument("--quiet", action="store_true", help="no progress messages")
    add_compile_options(p, host_board=True)
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
