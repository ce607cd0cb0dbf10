"""The `firmware`, `bench` and `flash` sub-commands: build, measure and run/flash firmware."""
from __future__ import annotations

import argparse
import dataclasses
import importlib.util
import json
import random
import re
import shutil
import subprocess
import sys
import tempfile
from dataclasses import dataclass
from pathlib import Path
from typing import Sequence

from mcugen import qemu
from mcugen.bench import BenchResult, bench_firmware
from mcugen import outdir
from mcugen.boards import BOARDS, Board, get_board, with_origins
from mcugen.errors import LimitError, McugenError, ModelError, OutputError, ToolError, UnsupportedError
from mcugen.firmware import MANIFEST, FirmwareBuild, ModelInterface, build_firmware
from mcugen.options import CompileOptions, add_compile_options, options_from_args, parse_size


def register(subparsers: argparse._SubParsersAction) -> None:
    """Adds `firmware`, `bench` and `flash`; each sets `func(args) -> int` (mcugen.cli calls args.func)."""
    boards = sorted(BOARDS)

    def add_input(p: argparse.ArgumentParser) -> None:
        p.add_argument("--input", action="append", default=[], metavar="FILE",
                       help="input k as .npy or raw .bin (once per model input; default: seeded random bytes)")

    p = subparsers.add_parser("firmware", help="generate a model and build firmware for a board")
    p.add_argument("model", type=Path, help=".tflite model, or a folder `mcugen generate` wrote")
    p.add_argument("-o", "--out", type=Path, required=True, help="firmware project folder to create")
    add_compile_options(p, board_required=True)
    add_input(p)
    p.add_argument("--profile", action="store_true", help="call per-layer markers (for `mcugen bench`)")
    p.add_argument("--semihosting", action="store_true",
                   help="real boards: print results through semihosting (needs a debugger attached)")
    p.add_argument("--stack", type=parse_size, help="stack to reserve (default: the board's)")
    p.add_argument("--flash-origin", type=parse_size, metavar="ADDR",
                   help="real boards: start of the application in flash, e.g. after a bootloader or the nRF "
                        "SoftDevice (0x27000); the region keeps its end")
    p.add_argument("--ram-origin", type=parse_size, metavar="ADDR",
                   help="real boards: start of the RAM the firmware may use (e.g. above the SoftDevice's)")
    p.add_argument("--force", action="store_true",
                   help="replace generated files you edited outside the USER CODE sections (a copy goes to DIR/.mcugen-backup/)")
    p.set_defaults(func=run_firmware)

    p = subparsers.add_parser("bench", help="count instructions per layer, stack and sizes on an emulated board")
    p.add_argument("model", type=Path, help=".tflite model, or a folder `mcugen generate` wrote")
    p.add_argument("-o", "--out", type=Path, help="keep the firmware project here (default: a temporary folder)")
    add_compile_options(p, board_required=True)
    add_input(p)
    p.add_argument("--force", action="store_true",
                   help="with --out: replace files there that mcugen did not write as they are (a copy goes to OUT/.mcugen-backup/)")
    p.add_argument("--json", action="store_true", help="print one JSON object instead of the table")
    p.add_argument("--png", type=Path, metavar="FILE", help="draw instructions and MACs per layer into a PNG")
    p.add_argument("--timeout", type=float, default=qemu.DEFAULT_TIMEOUT_S, help="seconds (default %(default)s)")
    p.set_defaults(func=run_bench)

    p = subparsers.add_parser("flash", help="flash firmware with pyOCD (emulated boards: run it in QEMU)")
    p.add_argument("target_path", type=Path, metavar="DIR_OR_ELF", help="firmware project folder or its .elf")
    p.add_argument("--board", choices=boards, metavar="BOARD", help="target board (default: the project's): " + ", ".join(boards))
    add_input(p)
    p.add_argument("--probe", choices=["pyocd"], default="pyocd", help="flashing tool (default: pyocd)")
    p.add_argument("--target", help="pyOCD target name (default: the board's)")
    p.add_argument("--semihosting", action="store_true",
                   help="after flashing, run the board under pyOCD and print its semihosting output "
                        "(build the firmware with `mcugen firmware --semihosting`)")
    p.add_argument("--timeout", type=float, default=qemu.DEFAULT_TIMEOUT_S, help="seconds (default %(default)s)")
    p.set_defaults(func=run_flash)


# --- helpers ------------------------------------------------------------------------------


@dataclass
class Sources:
    """The generated C a firmware is built from: its folder, C name and compiler flags, and the
    Generated result when it was generated here (None for a folder `generate` wrote)."""

    folder: Path
    name: str
    cflags: tuple[str, ...]
    generated: object = None


def _sources_for(model: Path, opts: CompileOptions, gen_dir: Path) -> Sources:
    """Generate from a .tflite file into `gen_dir` with `opts`, or use a folder that
    `mcugen generate` wrote (its mcugen-build.json gives the name and the compiler flags)."""
    from mcugen import codegen, driver

    if model.is_dir():
        info = driver.read_build_info(model)
        if info is not None:
            if opts.name is not None and opts.name != info["name"]:
                raise ModelError(f"{model}: holds model {info['name']!r}, not --name {opts.name!r}")
            return Sources(model, info["name"], tuple(info["cflags"]))
        name = opts.name
        if name is None:
            headers = [h.stem for h in sorted(model.glob("*.h")) if (model / f"{h.stem}.c").is_file()
                       and h.stem != "mcugen_kernels"]
            if len(headers) != 1:
                raise ModelError(f"{model}: cannot tell which model to use ({headers or 'no <name>.h with <name>.c'}); "
                                 "give --name, or generate the folder with `mcugen generate`")
            name = headers[0]
        return Sources(model, name, ())
    if not model.is_file():
        raise ModelError(f"{model} not found")
    if model.suffix != ".tflite":
        raise UnsupportedError(f"{model}: expected a .tflite file or a folder of generated C sources")
    generated = driver.build(model, options=opts)
    gen_dir.mkdir(parents=True, exist_ok=True)
    codegen.write_files(driver.folder_files(generated), gen_dir)
    for note in generated.notes:
        print(note, file=sys.stderr)
    return Sources(gen_dir, generated.program.name, tuple(generated.cflags), generated)


def default_inputs(input_bytes: Sequence[int]) -> list[bytes]:
    """The input `bench` measures when none is given, and `demo` too (so that both print the
    same count for the same model): seeded random bytes (seed 0), one buffer per model input."""
    rng = random.Random(0)
    return [bytes(rng.randrange(256) for _ in range(n)) for n in input_bytes]


def _read_inputs(files: Sequence[Path | str], interface: ModelInterface) -> list[bytes]:
    """Inputs from .npy / raw files, or seeded random bytes (seed 0) when none are given."""
    if not files:
        return default_inputs(interface.input_bytes)
    if len(files) != interface.num_inputs:
        raise UnsupportedError(f"model {interface.name} has {interface.num_inputs} inputs, {len(files)} --input given")
    inputs = []
    for k, (file, expected) in enumerate(zip(files, interface.input_bytes)):
        path = Path(file)
        if not path.is_file():
            raise ModelError(f"input file {path} not found")
        if path.suffix == ".npy":
            import numpy as np

            array = np.load(path, allow_pickle=False)
            data = np.ascontiguousarray(array, dtype=array.dtype.newbyteorder("<")).tobytes()
        else:
            data = path.read_bytes()
        if len(data) != expected:
            raise UnsupportedError(f"{path}: {len(data)} bytes, but input {k} of {interface.name} takes {expected}")
        inputs.append(data)
    return inputs


def _print_sizes(build_sizes, board: Board, stack_bytes: int | None, ram_limit: int | None = None,
                 flash_limit: int | None = None) -> None:
    """The build's flash and RAM against the budget: --flash-limit / --ram-limit where given, else the board's."""
    s = build_sizes
    flash = f"{flash_limit} (--flash-limit)" if flash_limit is not None else f"{board.flash_limit} ({board.name})"
    ram = f"{ram_limit} (--ram-limit)" if ram_limit is not None else f"{board.ram_limit} ({board.name})"
    print(f"flash: {s.flash} bytes (text {s.text}, rodata {s.rodata}, data {s.data}) of {flash}")
    print(f"RAM:   {s.ram} bytes (data {s.data}, bss {s.bss}, stack {s.stack}) of {ram}")
    if stack_bytes is not None:
        print(f"stack used by invoke: {stack_bytes} bytes")


# --- handlers -----------------------------------------------------------------------------


def run_firmware(args: argparse.Namespace) -> int:
    """A failed run removes the project folder it created (a folder that existed is kept)."""
    created = not args.out.exists()
    try:
        return _run_firmware(args)
    except McugenError:
        if created:
            shutil.rmtree(args.out, ignore_errors=True)
        raise


def _generate_and_build(args: argparse.Namespace, board: Board, out: Path, scratch: Path, force: bool,
                        builtin_from=None, **build_args) -> tuple[FirmwareBuild, Sources]:
    """Generates the model's C (from a .tflite; a folder of sources is used as it is) and builds
    the firmware project in `out`. Where that firmware is over the flash limit, with the fast
    forms of the kernels' constants, the model is generated again with the small forms
    (`CompileOptions.small_forms`: int8 weights sign-extended as they are read, the shorter
    tables) and built again, and a note says so; still over, the LimitError names both sizes.
    `builtin_from(src)`: the built-in inputs of a real board's firmware, read once the
    sources are known."""
    opts = options_from_args(args)
    attempts = [opts]
    if args.model.suffix == ".tflite" and opts.kernels == "mcugen":
        attempts.append(dataclasses.replace(opts, small_forms=True))
    first = None
    for n, attempt in enumerate(attempts):
        src = _sources_for(args.model, attempt, scratch / f"model{n}")
        builtin = builtin_from(src) if builtin_from else None
        try:
            build = build_firmware(src.folder, src.name, board, out, extra_cflags=src.cflags, builtin_inputs=builtin,
                                   force=force, **build_args)
        except LimitError as e:
            already_small = src.generated is not None and src.generated.schedule.flash_tight
            if e.flash is None or n + 1 == len(attempts) or already_small:
                raise LimitError(f"{e} (also with the small forms of every kernel's constants; with the fast ones: "
                                 f"{first})", e.flash) if first else e
            first = e.flash
            continue
        if first:
            print(f"note: with the fast forms of the kernels' constants the firmware {first}; "
                  f"built with the small forms (int8 weights sign-extended as read, shorter tables): "
                  f"{build.sizes.flash} bytes of flash", file=sys.stderr)
        return build, src
    raise AssertionError("unreachable")


def _run_firmware(args: argparse.Namespace) -> int:
    board = with_origins(get_board(args.board), args.flash_origin, args.ram_origin)
    out: Path = args.out
    outdir.check(out, args.force)  # before any work: a refused folder is left exactly as it was

    def builtin_from(src: Sources):
        if not args.input:
            return None
        if board.emulated:
            raise UnsupportedError("--input is for real boards (built-in input); emulated boards read inputs at run time")
        from mcugen.firmware import read_model_interface

        return _read_inputs(args.input, read_model_interface(src.folder, src.name))

    with tempfile.TemporaryDirectory(prefix="mcugen-firmware-") as scratch:
        build, src = _generate_and_build(
            args, board, out, Path(scratch), args.force, builtin_from=builtin_from, profile=args.profile,
            semihosting=True if args.semihosting else None,
            stack_bytes=args.stack, ram_limit=args.ram_limit, flash_limit=args.flash_limit,
        )
    print(f"{build.elf}")
    _print_sizes(build.sizes, board, None, args.ram_limit, args.flash_limit)
    if not board.emulated:
        output = "semihosting (mcugen flash --semihosting)" if build.semihosting else "SEGGER RTT (e.g. pyocd rtt)"
        print(f"results and the DWT cycle count are printed over {output}; flash with: mcugen flash {out}")
        pack = _pack_note(board)
        if pack:
            print(pack)
    return 0


def _pack_note(board: Board) -> str | None:
    if board.pyocd_pack is None:
        return None
    return (f"note: pyOCD knows target {board.pyocd_target} only from the CMSIS pack {board.pyocd_pack}; "
            f"install it once with: pyocd pack install {board.pyocd_target}")


def _bench(args: argparse.Namespace, folder: Path, force: bool = False) -> tuple[FirmwareBuild, BenchResult, Sources]:
    board = get_board(args.board)
    if not board.emulated:
        raise UnsupportedError(f"bench runs on emulated boards ({', '.join(b for b in BOARDS if BOARDS[b].emulated)}), not {board.name}")
    outdir.check(folder, force)  # before any work: a refused folder is left exactly as it was
    with tempfile.TemporaryDirectory(prefix="mcugen-bench-model-") as scratch:
        # `folder` gets the firmware exactly as `firmware` builds it (its flash and instructions
        # are the ones reported); the per-layer counts come from a copy with the markers
        build, src = _generate_and_build(args, board, folder, Path(scratch), force,
                                         ram_limit=args.ram_limit, flash_limit=args.flash_limit)
        profiled = build_firmware(src.folder, src.name, board, Path(scratch) / "profiled", extra_cflags=src.cflags,
                                  profile=True)
        inputs = _read_inputs(args.input, build.interface)
        return build, bench_firmware(build.elf, profiled.elf, board, inputs, timeout=args.timeout), src


def record_stack_bytes(build: FirmwareBuild, stack_bytes: int) -> bool:
    """Writes the measured stack use of <name>_invoke() into the project's model header as
    <NAME>_STACK_BYTES (replacing its "not measured" line); False if the header has no such
    line (sources not generated by this mcugen) or the user changed it."""
    rel = f"model/{build.name}.h"
    header = build.project_dir / rel
    if not header.is_file():
        return False
    text = header.read_text()
    upper = build.name.upper()
    pattern = re.compile(rf"^/\* {upper}_STACK_BYTES: .*\*/$|^#define {upper}_STACK_BYTES .*$", re.MULTILINE)
    if not pattern.search(text):
        return False
    line = (f"#define {upper}_STACK_BYTES {stack_bytes} /* stack used by {build.name}_invoke(), measured by "
            f"mcugen bench on {build.board.name} ({build.board.cpu}) */")
    outdir.update(build.project_dir, {rel: pattern.sub(line, text, count=1)})
    return f"#define {upper}_STACK_BYTES {stack_bytes} " in header.read_text()


def bench_record(build: FirmwareBuild, result: BenchResult, program=None) -> dict:
    """The `bench --json` object: totals, sizes and one entry per generated layer.
    `estimated_cycles` (whole and per layer) come from the timing table of the board's core
    (mcugen/cycles.py, named by `cycles_timing`); null where there is none (Cortex-M55)."""
    layers = []
    for i, count in enumerate(result.layers):
        layer = program.layers[i] if program is not None and i < len(program.layers) else None
        layers.append({
            "index": i,
            "op": layer.op if layer is not None else None,
            "macs": layer.macs if layer is not None else None,
            "instructions": count,
            "estimated_cycles": result.layer_cycles[i] if i < len(result.layer_cycles) else None,
        })
    return {
        "model": build.name,
        "board": result.board,
        "instructions": result.instructions,
        "estimated_cycles": result.estimated_cycles,
        "cycles_timing": result.timing,
        "unclassified_instructions": result.unclassified,
        "layers": layers,
        "flash_bytes": result.text + result.rodata + result.data,
        "ram_bytes": result.data + result.bss + result.stack_bytes,
        "stack_bytes": result.stack_bytes,
        "stack_reserved_bytes": result.stack_reserved,
        "arena_bytes": build.interface.arena_bytes,
        "text": result.text,
        "rodata": result.rodata,
        "data": result.data,
        "bss": result.bss,
    }


def _draw_png(record: dict, path: Path) -> None:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    idx = [l["index"] for l in record["layers"]]
    fig, ax = plt.subplots(figsize=(max(6, len(idx) * 0.18), 4))
    ax.bar(idx, [l["instructions"] for l in record["layers"]], color="tab:blue", label="instructions")
    ax.set_xlabel("layer")
    ax.set_ylabel("instructions")
    ax.set_title(f"{record['model']} on {record['board']}: {record['instructions']:,} instructions", fontsize=9)
    if any(l["macs"] for l in record["layers"]):
        ax2 = ax.twinx()
        ax2.plot(idx, [l["macs"] or 0 for l in record["layers"]], "o-", color="tab:orange", ms=3, label="MACs")
        ax2.set_ylabel("MACs")
    fig.tight_layout()
    fig.savefig(path, dpi=110)
    plt.close(fig)


def _print_bench_table(record: dict) -> None:
    """The `bench` table: instructions and estimated cycles, whole and per layer."""
    total, cycles = record["instructions"], record["estimated_cycles"]
    if cycles is None:
        print(f"model {record['model']} on {record['board']}: {total:,} instructions per inference "
              f"(no timing table for this core: no cycle estimate)")
    else:
        print(f"model {record['model']} on {record['board']}: {total:,} instructions per inference, "
              f"{cycles:,} estimated cycles ({cycles / max(1, total):.2f} per instruction; "
              f"{record['cycles_timing']} timing table, zero wait states: mcugen/cycles.py)")
    if record.get("estimated_instructions"):
        print(f"estimate before building: {record['estimated_instructions']:,} instructions "
              f"({record['estimate_ratio']:.3f} of the count; mcugen/kernels/cost.py)")
    if record["layers"]:
        # share: of the estimated cycles (of the instructions without a timing table)
        print("layer  op                   MACs  instructions  instr/MAC   est.cycles  cyc/MAC  cyc/instr  share")
        for l in record["layers"]:
            macs, n, c = l["macs"], l["instructions"], l["estimated_cycles"]
            ipm = f"{n / macs:9.2f}" if macs else "        -"
            if c is None:
                cyc, share = f"{'-':>11s}  {'-':>7s}  {'-':>9s}", n / max(1, total)
            else:
                cpm = f"{c / macs:7.2f}" if macs else "      -"
                cyc, share = f"{c:11d}  {cpm}  {c / max(1, n):9.2f}", c / max(1, cycles)
            print(f"{l['index']:5d}  {(l['op'] or '?'):18s} {macs or 0:>8}  {n:12d}  {ipm}  {cyc}  {100.0 * share:5.1f}%")
    if record.get("unclassified_instructions"):
        print(f"note: {record['unclassified_instructions']:,} executed instructions were not classified "
              f"(charged 1 cycle each)", file=sys.stderr)


def run_bench(args: argparse.Namespace) -> int:
    if args.out is not None:
        created = not args.out.exists()
        try:
            build, result, src = _bench(args, args.out, args.force)
        except McugenError:
            if created:
                shutil.rmtree(args.out, ignore_errors=True)
            raise
        record_stack_bytes(build, result.stack_bytes)
    else:
        with tempfile.TemporaryDirectory(prefix="mcugen-bench-") as scratch:
            build, result, src = _bench(args, Path(scratch) / "firmware")
    gen = src.generated
    record = bench_record(build, result, gen.program if gen is not None else None)
    if gen is not None:
        record.update({k: v for k, v in gen.numbers().items() if k != "arena_bytes"})
        record["options"] = gen.options.to_json()
        if record["estimated_instructions"]:
            record["estimate_ratio"] = round(record["estimated_instructions"] / max(result.instructions, 1), 4)
        record["notes"] = list(_like_with_like(gen))
    if args.png is not None:
        _draw_png(record, args.png)
    if args.json:
        print(json.dumps(record, indent=2))
        return 0
    for note in record.get("notes", []):
        print(note)
    _print_bench_table(record)
    _print_sizes(build.sizes, build.board, result.stack_bytes, getattr(args, "ram_limit", None),
                 getattr(args, "flash_limit", None))
    return 0


def _like_with_like(gen) -> tuple[str, ...]:
    """With --kernels cmsis-nn: which blocks run layer by layer because CMSIS-NN has no fused
    chain kernel, so that its count compares with mcugen's like with like."""
    if gen.options.kernels != "cmsis-nn" or gen.schedule is None or not gen.schedule.blocks:
        return ()
    blocks = gen.schedule.blocks
    fused = [b for b in blocks if b.chosen == "fused"]
    return (f"note: CMSIS-NN has no fused-chain kernel: {len(blocks) - len(fused)} of {len(blocks)} fusable blocks run "
            f"layer by layer with CMSIS-NN's kernels" + (f"; {len(fused)} run mcugen's portable chain kernel "
                                                        f"(--strategy {gen.options.strategy}, for RAM)" if fused else "")
            + "; compare with `mcugen bench --kernels mcugen --strategy layerwise` for the same plan",)


def _locate_firmware(path: Path, board_name: str | None) -> tuple[Path, Board, dict]:
    """(ELF, board, manifest) for a project folder or an ELF inside one."""
    manifest_path = None
    if path.is_dir():
        manifest_path = path / MANIFEST
    elif path.is_file():
        for parent in (path.parent, path.parent.parent):
            if (parent / MANIFEST).exists():
                manifest_path = parent / MANIFEST
                break
    else:
        raise OutputError(f"{path} not found")
    manifest = json.loads(manifest_path.read_text()) if manifest_path and manifest_path.exists() else {}
    if path.is_dir():
        if not manifest:
            raise OutputError(f"{path} is not an mcugen firmware project (no {MANIFEST})")
        elf = path / manifest["elf"]
    else:
        elf = path
    name = board_name or manifest.get("board")
    if name is None:
        raise UnsupportedError(f"cannot tell the board of {path}; give --board")
    if not elf.is_file():
        raise OutputError(f"{elf} not found: build the project first (make)")
    return elf, get_board(name), manifest


def _pyocd_command() -> list[str]:
    if importlib.util.find_spec("pyocd") is not None:
        return [sys.executable, "-m", "pyocd"]
    found = shutil.which("pyocd")
    if found is None:
        raise ToolError("pyOCD is not installed; run scripts/setup.sh (or pip install pyocd)")
    return [found]


def run_flash(args: argparse.Namespace) -> int:
    elf, board, manifest = _locate_firmware(args.target_path, args.board)
    if board.emulated:
        interface = ModelInterface(**{k: tuple(v) if isinstance(v, list) else v
                                      for k, v in manifest["interface"].items()}) if manifest else None
        if interface is None:
            raise UnsupportedError(f"{elf}: running it in QEMU needs its project's {MANIFEST}")
        inputs = _read_inputs(args.input, interface)
        result = qemu.run_on_qemu(elf, board, inputs, timeout=args.timeout)
        if result.exit_code != 0:
            raise ToolError(f"{elf.name} on {board.name}: {qemu.describe_failure(result.exit_code, result.stderr, args.timeout)}")
        for k, output in enumerate(result.outputs):
            print(f"output {k}: {output.hex()}")
        print(f"stack used by invoke: {result.stack_bytes} bytes; QEMU run {result.wall_seconds:.2f} s")
        return 0
    target = args.target or board.pyocd_target
    if target is None:
        raise UnsupportedError(f"no pyOCD target known for {board.name}; give --target")
    image = elf.with_suffix(".hex") if elf.with_suffix(".hex").is_file() else elf
    command = _pyocd_command() + ["flash", "--no-wait", "--target", target, str(image)]
    try:
        done = subprocess.run(command, capture_output=True, text=True, timeout=args.timeout)
    except subprocess.TimeoutExpired:
        raise ToolError(f"pyOCD did not finish flashing within {args.timeout:g} s") from None
    if done.returncode != 0:
        lines = [line.strip() for line in (done.stderr + done.stdout).splitlines() if line.strip()]
        pack = _pack_note(board) if target == board.pyocd_target else None
        hint = f" ({pack[len('note: '):]})" if pack else ""
        raise ToolError(f"pyOCD could not flash {image.name} to {target}: {lines[-1] if lines else 'no output'}{hint}")
    print(f"flashed {image} to {target}")
    if manifest.get("output") == "rtt" and not args.semihosting:
        print(f"the firmware prints its results and DWT cycle count over SEGGER RTT: pyocd rtt --target {target}")
    if args.semihosting:
        command = _pyocd_command() + ["run", "--no-wait", "--target", target, "-O", "enable_semihosting=true",
                                      "-O", "semihost_console_type=console", "--timelimit", f"{args.timeout:g}"]
        try:
            done = subprocess.run(command, capture_output=True, text=True, timeout=args.timeout + 30)
        except subprocess.TimeoutExpired:
            raise ToolError(f"pyOCD did not return the board's output within {args.timeout:g} s") from None
        if done.returncode != 0:
            lines = [line.strip() for line in (done.stderr + done.stdout).splitlines() if line.strip()]
            raise ToolError(f"pyOCD could not run {image.name} on {target}: {lines[-1] if lines else 'no output'}")
        sys.stdout.write(done.stdout)
    return 0


def main(argv: Sequence[str] | None = None) -> int:
    """Entry point with only these three sub-commands (mcugen.cli registers the same ones):
    parses `argv`, runs the handler, turns an McugenError into one line and exit code 2."""
    parser = argparse.ArgumentParser(prog="mcugen")
    register(parser.add_subparsers(dest="command", required=True))
    args = parser.parse_args(None if argv is None else list(argv))
    try:
        return int(args.func(args) or 0)
    except McugenError as error:
        print(f"mcugen: error: {error}", file=sys.stderr)
        return error.exit_code


if __name__ == "__main__":
    raise SystemExit(main())
