"""The `firmware`, `bench` and `flash` sub-commands: build, measure and run/flash firmware."""
from __future__ import annotations

import argparse
import importlib.util
import json
import random
import re
import shutil
import subprocess
import sys
import tempfile
from dataclasses import asdict
from pathlib import Path
from typing import Sequence

from mcugen import qemu
from mcugen.bench import BenchResult, bench_elf
from mcugen import outdir
from mcugen.boards import BOARDS, Board, get_board, with_origins
from mcugen.errors import McugenError, ModelError, OutputError, ToolError, UnsupportedError
from mcugen.firmware import MANIFEST, FirmwareBuild, ModelInterface, build_firmware

_SIZE = re.compile(r"^(0x[0-9a-fA-F]+|\d+)\s*([kKmM]i?[bB]?|[bB])?$")


def parse_size(text: str) -> int:
    """"327680", "0x50000", "320K", "320KiB", "1M" -> bytes (K = 1024)."""
    match = _SIZE.match(text.strip())
    if not match:
        raise argparse.ArgumentTypeError(f"{text!r} is not a size (examples: 262144, 256K, 1M)")
    value = int(match.group(1), 0)
    unit = (match.group(2) or "").lower()[:1]
    return value * {"k": 1024, "m": 1024 * 1024}.get(unit, 1)


def register(subparsers: argparse._SubParsersAction) -> None:
    """Adds `firmware`, `bench` and `flash`; each sets `func(args) -> int` (mcugen.cli calls args.func)."""
    boards = sorted(BOARDS)

    def add_common(p: argparse.ArgumentParser, *, board_required: bool = True) -> None:
        p.add_argument("--board", required=board_required, choices=boards, metavar="BOARD",
                       help="target board: " + ", ".join(boards))
        p.add_argument("--name", help="C name of the model (default: from the file name)")
        p.add_argument("--input", action="append", default=[], metavar="FILE",
                       help="input k as .npy or raw .bin (once per model input; default: seeded random bytes)")
        p.add_argument("--kernels", choices=("mcugen", "cmsis-nn"), default="mcugen",
                       help="mcugen: kernels specialised per layer for the board's CPU (default); cmsis-nn: Arm's CMSIS-NN")
        p.add_argument("--cmsis-nn", metavar="PATH", help="CMSIS-NN checkout for --kernels cmsis-nn (default: $CMSIS_NN_PATH)")

    p = subparsers.add_parser("firmware", help="generate a model and build firmware for a board")
    p.add_argument("model", type=Path, help=".tflite model, or a folder of generated C sources")
    p.add_argument("-o", "--out", type=Path, required=True, help="firmware project folder to create")
    add_common(p)
    p.add_argument("--profile", action="store_true", help="call per-layer markers (for `mcugen bench`)")
    p.add_argument("--semihosting", action="store_true",
                   help="real boards: print results through semihosting (needs a debugger attached)")
    p.add_argument("--ram-limit", type=parse_size, help="fail if RAM use exceeds this (default: the board's RAM)")
    p.add_argument("--flash-limit", type=parse_size, help="fail if flash use exceeds this (default: the board's flash)")
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
    p.add_argument("model", type=Path, help=".tflite model, or a folder of generated C sources")
    p.add_argument("-o", "--out", type=Path, help="keep the firmware project here (default: a temporary folder)")
    add_common(p)
    p.add_argument("--force", action="store_true",
                   help="with --out: replace files there that mcugen did not write as they are (a copy goes to OUT/.mcugen-backup/)")
    p.add_argument("--json", action="store_true", help="print one JSON object instead of the table")
    p.add_argument("--png", type=Path, metavar="FILE", help="draw instructions and MACs per layer into a PNG")
    p.add_argument("--timeout", type=float, default=qemu.DEFAULT_TIMEOUT_S, help="seconds (default %(default)s)")
    p.set_defaults(func=run_bench)

    p = subparsers.add_parser("flash", help="flash firmware with pyOCD (emulated boards: run it in QEMU)")
    p.add_argument("target_path", type=Path, metavar="DIR_OR_ELF", help="firmware project folder or its .elf")
    add_common(p, board_required=False)
    p.add_argument("--probe", choices=["pyocd"], default="pyocd", help="flashing tool (default: pyocd)")
    p.add_argument("--target", help="pyOCD target name (default: the board's)")
    p.add_argument("--semihosting", action="store_true",
                   help="after flashing, run the board under pyOCD and print its semihosting output "
                        "(build the firmware with `mcugen firmware --semihosting`)")
    p.add_argument("--timeout", type=float, default=qemu.DEFAULT_TIMEOUT_S, help="seconds (default %(default)s)")
    p.set_defaults(func=run_flash)


# --- helpers ------------------------------------------------------------------------------


def _sources_for(model: Path, name: str | None, gen_dir: Path, generated_out: list | None = None,
                 board: Board | None = None, kernels: str | None = None, cmsis_nn: str | None = None) -> tuple[Path, str]:
    """(folder of generated C sources, model name): generate from a .tflite file into
    `gen_dir` (a scratch folder: the project gets its copy through mcugen.outdir), or use a
    folder that already holds <name>.h / <name>.c."""
    if model.is_dir():
        if name is None:
            headers = [h.stem for h in sorted(model.glob("*.h")) if (model / f"{h.stem}.c").is_file()
                       and h.stem != "mcugen_kernels"]
            if len(headers) != 1:
                raise ModelError(f"{model}: cannot tell which model to use ({headers or 'no <name>.h with <name>.c'}); give --name")
            name = headers[0]
        return model, name
    if not model.is_file():
        raise ModelError(f"{model} not found")
    if model.suffix != ".tflite":
        raise UnsupportedError(f"{model}: expected a .tflite file or a folder of generated C sources")
    try:
        from mcugen import driver  # the code generator (lead's module)
    except ImportError as missing:
        raise ToolError(f"the code generator is not available in this checkout ({missing})") from None
    from mcugen.targets import target_for_board

    target = target_for_board(board).name if board is not None else "portable"
    generated = driver.build(model, name, kernels=kernels, target=target, cmsis_nn=cmsis_nn)
    from mcugen.codegen import write_files

    gen_dir.mkdir(parents=True, exist_ok=True)
    write_files(generated.files, gen_dir)
    for note in generated.notes:
        print(note, file=sys.stderr)
    if generated_out is not None:
        generated_out.append(generated)
    return gen_dir, generated.program.name


def _read_inputs(files: Sequence[Path | str], interface: ModelInterface) -> list[bytes]:
    """Inputs from .npy / raw files, or seeded random bytes (seed 0) when none are given."""
    if not files:
        rng = random.Random(0)
        return [bytes(rng.randrange(256) for _ in range(n)) for n in interface.input_bytes]
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


def _print_sizes(build_sizes, board: Board, stack_bytes: int | None) -> None:
    s = build_sizes
    print(f"flash: {s.flash} bytes (text {s.text}, rodata {s.rodata}, data {s.data}) of {board.flash_limit}")
    print(f"RAM:   {s.ram} bytes (data {s.data}, bss {s.bss}, stack {s.stack}) of {board.ram_limit}")
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


def _run_firmware(args: argparse.Namespace) -> int:
    board = with_origins(get_board(args.board), args.flash_origin, args.ram_origin)
    out: Path = args.out
    outdir.check(out, args.force)  # before any work: a refused folder is left exactly as it was
    generated: list = []
    with tempfile.TemporaryDirectory(prefix="mcugen-firmware-") as scratch:
        model_dir, name = _sources_for(args.model, args.name, Path(scratch) / "model", generated, board,
                                       args.kernels, args.cmsis_nn)
        builtin = None
        if args.input:
            if board.emulated:
                raise UnsupportedError("--input is for real boards (built-in input); emulated boards read inputs at run time")
            from mcugen.firmware import read_model_interface

            builtin = _read_inputs(args.input, read_model_interface(model_dir, name))
        build = build_firmware(
            model_dir, name, board, out, profile=args.profile, extra_cflags=generated[0].cflags if generated else (),
            semihosting=True if args.semihosting else None, builtin_inputs=builtin,
            stack_bytes=args.stack, ram_limit=args.ram_limit, flash_limit=args.flash_limit, force=args.force,
        )
    print(f"{build.elf}")
    _print_sizes(build.sizes, board, None)
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


def _bench(args: argparse.Namespace, folder: Path, generated: list, force: bool = False) -> tuple[FirmwareBuild, BenchResult]:
    board = get_board(args.board)
    if not board.emulated:
        raise UnsupportedError(f"bench runs on emulated boards ({', '.join(b for b in BOARDS if BOARDS[b].emulated)}), not {board.name}")
    outdir.check(folder, force)  # before any work: a refused folder is left exactly as it was
    with tempfile.TemporaryDirectory(prefix="mcugen-bench-model-") as scratch:
        model_dir, name = _sources_for(args.model, args.name, Path(scratch) / "model", generated, board,
                                       args.kernels, args.cmsis_nn)
        build = build_firmware(model_dir, name, board, folder, profile=True,
                               extra_cflags=generated[0].cflags if generated else (), force=force)
    inputs = _read_inputs(args.input, build.interface)
    return build, bench_elf(build.elf, board, inputs, timeout=args.timeout)


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
    """The `bench --json` object: totals, sizes and one entry per generated layer."""
    layers = []
    for i, count in enumerate(result.layers):
        layer = program.layers[i] if program is not None and i < len(program.layers) else None
        layers.append({
            "index": i,
            "op": layer.op if layer is not None else None,
            "macs": layer.macs if layer is not None else None,
            "instructions": count,
        })
    return {
        "model": build.name,
        "board": result.board,
        "instructions": result.instructions,
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


def run_bench(args: argparse.Namespace) -> int:
    generated: list = []
    if args.out is not None:
        created = not args.out.exists()
        try:
            build, result = _bench(args, args.out, generated, args.force)
        except McugenError:
            if created:
                shutil.rmtree(args.out, ignore_errors=True)
            raise
        record_stack_bytes(build, result.stack_bytes)
    else:
        with tempfile.TemporaryDirectory(prefix="mcugen-bench-") as scratch:
            build, result = _bench(args, Path(scratch) / "firmware", generated)
    program = generated[0].program if generated else None
    record = bench_record(build, result, program)
    if args.png is not None:
        _draw_png(record, args.png)
    if args.json:
        print(json.dumps(record, indent=2))
        return 0
    print(f"model {build.name} on {result.board}: {result.instructions:,} instructions per inference")
    if record["layers"]:
        print("layer  op                   MACs  instructions  instr/MAC  share")
        for l in record["layers"]:
            ipm = f"{l['instructions'] / l['macs']:9.2f}" if l["macs"] else "        -"
            print(f"{l['index']:5d}  {(l['op'] or '?'):18s} {l['macs'] or 0:>8}  {l['instructions']:12d}  {ipm}  "
                  f"{100.0 * l['instructions'] / max(1, result.instructions):5.1f}%")
    _print_sizes(build.sizes, build.board, result.stack_bytes)
    return 0


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
