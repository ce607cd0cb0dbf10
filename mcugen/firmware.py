"""Firmware projects: model sources + board start-up + main.c/Makefile/CMake, built with arm-none-eabi-gcc."""
from __future__ import annotations

import dataclasses
import json
import re
import subprocess
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Sequence

import jinja2

from mcugen.bench import ElfSizes, elf_sizes, firmware_sources_dir
from mcugen.boards import Board
from mcugen import outdir
from mcugen.codegen import templates_dir
from mcugen.errors import LimitError, ModelError, OutputError, ToolError, UnsupportedError
from mcugen.qemu import require_tool

CROSS = "arm-none-eabi-"
MANIFEST = "mcugen_firmware.json"

_C_IDENTIFIER = re.compile(r"^[A-Za-z_][A-Za-z0-9_]*$")
_OVERFLOW = re.compile(r"region `([A-Za-z0-9_]+)' overflowed by (\d+) bytes")
_BOARD_SOURCES = ("mcugen_startup.c",)
_SEMIHOST_SOURCES = ("mcugen_semihost.c",)
_BOARD_HEADERS = ("mcugen_board.h", "mcugen_semihost.h")
_RTT_SOURCES = ("mcugen_rtt.c",)
_RTT_HEADERS = ("mcugen_rtt.h",)
SCRATCH_DIRS = ("build", "build-cmake")  # build outputs: emptied whenever the project is written again


@dataclass(frozen=True)
class ModelInterface:
    """What the firmware needs to know of a generated model (from the N.h macros)."""

    name: str
    input_bytes: tuple[int, ...]
    output_bytes: tuple[int, ...]
    num_layers: int
    arena_bytes: int
    const_bytes: int = 0  # weights, biases, requantization tables (flash)
    streamed: tuple[bool, ...] = ()  # per input: written with <name>_input_write() (--stream-inputs)

    @property
    def num_inputs(self) -> int:
        return len(self.input_bytes)

    @property
    def num_outputs(self) -> int:
        return len(self.output_bytes)


@dataclass(frozen=True)
class FirmwareBuild:
    """A built firmware project: paths of its outputs and the ELF's section sizes."""

    project_dir: Path
    name: str
    board: Board
    interface: ModelInterface
    elf: Path
    bin: Path
    hex: Path
    map: Path
    sizes: ElfSizes
    profile: bool
    semihosting: bool


def _macro_value(macros: dict[str, str], key: str, header: Path) -> int:
    if key not in macros:
        raise ModelError(f"{header}: missing #define {key} (see the generated C API contract)")
    text = macros[key].strip()
    while text.startswith("(") and text.endswith(")"):
        text = text[1:-1].strip()
    text = text.rstrip("uUlL")
    try:
        return int(text, 0)
    except ValueError:
        raise ModelError(f"{header}: #define {key} is {macros[key]!r}, not an integer literal") from None


def read_model_interface(model_dir: Path, name: str, cflags: Sequence[str] = ()) -> ModelInterface:
    """Reads the API macros of `model_dir`/`name`.h as the C preprocessor sees them with `cflags`."""
    header = Path(model_dir) / f"{name}.h"
    if not header.is_file():
        raise ModelError(f"{header} not found: expected the generated model's header there")
    done = subprocess.run(
        [require_tool(CROSS + "gcc"), "-E", "-dM", *[f for f in cflags if f.startswith(("-D", "-U"))],
         "-x", "c", str(header)],
        capture_output=True, text=True,
    )
    if done.returncode != 0:
        raise ModelError(f"{header} does not preprocess: {(done.stderr.splitlines() or ['?'])[0]}")
    macros = {}
    for line in done.stdout.splitlines():
        parts = line.split(None, 2)
        if len(parts) == 3 and parts[0] == "#define":
            macros[parts[1]] = parts[2]
    upper = name.upper()
    inputs = _macro_value(macros, f"{upper}_NUM_INPUTS", header)
    outputs = _macro_value(macros, f"{upper}_NUM_OUTPUTS", header)
    return ModelInterface(
        name=name,
        input_bytes=tuple(_macro_value(macros, f"{upper}_INPUT{k}_BYTES", header) for k in range(inputs)),
        output_bytes=tuple(_macro_value(macros, f"{upper}_OUTPUT{k}_BYTES", header) for k in range(outputs)),
        num_layers=_macro_value(macros, f"{upper}_NUM_LAYERS", header),
        arena_bytes=_macro_value(macros, f"{upper}_ARENA_BYTES", header),
        const_bytes=_macro_value(macros, f"{upper}_CONST_BYTES", header) if f"{upper}_CONST_BYTES" in macros else 0,
        streamed=tuple(f"{upper}_INPUT{k}_STREAMED" in macros for k in range(inputs)),
    )


def _environment() -> jinja2.Environment:
    return jinja2.Environment(
        loader=jinja2.FileSystemLoader(str(templates_dir() / "firmware")),
        undefined=jinja2.StrictUndefined,
        trim_blocks=True,
        lstrip_blocks=True,
        keep_trailing_newline=True,
        autoescape=False,
    )


def render_linker_script(board: Board, stack_bytes: int | None = None) -> str:
    """The board's linker script (templates/firmware/linker.ld.j2) from its memory map."""
    vectors = board.vectors if board.vectors is not None else board.flash
    return _environment().get_template("linker.ld.j2").render(
        board=board, regions=board.regions, vectors=vectors,
        stack_bytes=stack_bytes if stack_bytes is not None else board.stack_bytes,
        guard_bytes=board.stack_guard_bytes,
    )


def _byte_rows(data: bytes, per_row: int = 12) -> list[str]:
    """C initializer rows "0x01, 0x02, ..." for a built-in input."""
    return [
        " ".join(f"0x{b:02x}," for b in data[i : i + per_row]) for i in range(0, len(data), per_row)
    ]


def write_firmware_project(
    model_dir: Path,
    model_name: str,
    board: Board,
    out_dir: Path,
    *,
    profile: bool = False,
    extra_cflags: Sequence[str] = (),
    semihosting: bool | None = None,
    builtin_inputs: Sequence[bytes] | None = None,
    stack_bytes: int | None = None,
    force: bool = False,
) -> ModelInterface:
    """Writes a standalone firmware project (Makefile and CMake) into `out_dir`, through
    mcugen.outdir: only the files mcugen owns change, build outputs of an earlier project are
    removed, USER CODE sections of main.c survive, and a file the user edited elsewhere is
    refused (OutputError, nothing written) unless `force` (then a copy is kept).

    Emulated boards get a main.c that exchanges inputs/outputs with the host through
    semihosting files; real boards get one that runs the model on `builtin_inputs`
    (zeros by default), keeps the results in RAM and prints them over SEGGER RTT, or
    through semihosting if `semihosting`.
    """
    if not _C_IDENTIFIER.match(model_name):
        raise UnsupportedError(f"model name {model_name!r} is not a C identifier")
    model_dir = Path(model_dir)
    out_dir = Path(out_dir)
    if not (model_dir / f"{model_name}.c").is_file():
        raise ModelError(f"{model_dir / (model_name + '.c')} not found: expected the generated model there")
    if semihosting is None:
        semihosting = board.emulated
    if board.emulated and not semihosting:
        raise UnsupportedError(f"{board.name} firmware exchanges data with the host through semihosting; it cannot be turned off")
    interface = read_model_interface(model_dir, model_name, extra_cflags)
    if builtin_inputs is not None:
        if board.emulated:
            raise UnsupportedError(f"{board.name} reads its inputs from host files; built-in inputs are for real boards")
        sizes = [len(b) for b in builtin_inputs]
        if sizes != list(interface.input_bytes):
            raise UnsupportedError(
                f"built-in inputs have {sizes} bytes; model {model_name} wants {list(interface.input_bytes)}"
            )
    inputs = [bytes(b) for b in builtin_inputs] if builtin_inputs is not None else [
        bytes(n) for n in interface.input_bytes
    ]
    if out_dir.exists() and Path(model_dir).resolve() == out_dir.resolve():
        raise OutputError(f"the firmware project folder {out_dir} must differ from the model folder")

    files: dict[str, str | bytes] = {}
    model_files = sorted(p for p in model_dir.iterdir() if p.is_file() and p.suffix in (".c", ".h"))
    for path in model_files:
        files[f"model/{path.name}"] = path.read_bytes()
    rtt = not semihosting
    board_sources = _BOARD_SOURCES + (_SEMIHOST_SOURCES if semihosting else ()) + (_RTT_SOURCES if rtt else ())
    for file_name in board_sources + _BOARD_HEADERS + (_RTT_HEADERS if rtt else ()):
        files[f"board/{file_name}"] = (firmware_sources_dir() / "common" / file_name).read_bytes()

    env = _environment()
    linker_script = f"{board.name}.ld"
    files[f"board/{linker_script}"] = render_linker_script(board, stack_bytes)
    definitions = [f"MCUGEN_SEMIHOSTING={1 if semihosting else 0}"]
    if profile:
        definitions.append("MCUGEN_PROFILE")
    model_sources = [f"model/{p.name}" for p in model_files if p.suffix == ".c"]
    context = dict(
        name=model_name,
        upper=model_name.upper(),
        board=board,
        interface=interface,
        profile=profile,
        semihosting=semihosting,
        rtt=rtt,
        file_io=board.emulated,
        builtin_inputs=[_byte_rows(b) for b in inputs],
        builtin_from_user=builtin_inputs is not None,
        cpu_flags=list(board.cpu_flags),
        defines=[f"-D{d}" for d in definitions],
        board_definitions=definitions[:1],
        extra_cflags=list(extra_cflags),
        linker_script=linker_script,
        sources=["main.c"] + [f"board/{s}" for s in board_sources] + model_sources,
        board_sources=[f"board/{s}" for s in board_sources],
        model_sources=model_sources,
    )
    for template, target in (
        ("main.c.j2", "main.c"),
        ("Makefile.j2", "Makefile"),
        ("CMakeLists.txt.j2", "CMakeLists.txt"),
        ("arm-none-eabi.cmake.j2", "arm-none-eabi.cmake"),
    ):
        files[target] = env.get_template(template).render(**context)
    manifest = {
        "board": board.name,
        "name": model_name,
        "profile": profile,
        "semihosting": semihosting,
        "output": "semihosting" if semihosting else "rtt",
        "flash_origin": board.flash.origin,
        "ram_origin": board.ram.origin,
        "elf": f"build/{model_name}.elf",
        "sources": context["sources"],
        "stack_bytes": stack_bytes if stack_bytes is not None else board.stack_bytes,
        "stack_guard_bytes": board.stack_guard_bytes,
        "interface": asdict(interface),
    }
    files[MANIFEST] = json.dumps(manifest, indent=2) + "\n"
    outdir.write(out_dir, files, force=force, scratch=SCRATCH_DIRS)
    return interface


def _first_error(log: str) -> str:
    for line in log.splitlines():
        if "error" in line.lower() or "undefined reference" in line:
            return line.strip()
    lines = [line for line in log.splitlines() if line.strip()]
    return lines[-1].strip() if lines else "no output"


def check_plan_fits(interface: "ModelInterface", board: Board, model_name: str, *, stack_bytes: int | None = None,
                    ram_limit: int | None = None, flash_limit: int | None = None) -> None:
    """Before anything is written or built: LimitError if the planned arena plus the stack
    reserve exceeds the RAM limit, or the model's constant data alone exceeds the flash limit."""
    ram_limit = board.ram_limit if ram_limit is None else ram_limit
    flash_limit = board.flash_limit if flash_limit is None else flash_limit
    stack = board.stack_bytes if stack_bytes is None else stack_bytes
    problems = []
    if interface.arena_bytes + stack > ram_limit:
        problems.append(
            f"needs at least {interface.arena_bytes + stack} bytes of RAM (arena {interface.arena_bytes} + "
            f"stack {stack}) but the limit is {ram_limit}"
        )
    flash = None
    if interface.const_bytes > flash_limit:
        flash = f"needs at least {interface.const_bytes} bytes of flash for constants but the limit is {flash_limit}"
        problems.append(flash)
    if problems:
        raise LimitError(f"model {model_name} on {board.name} " + "; and ".join(problems) + "; nothing was built", flash)


def check_limits(sizes: ElfSizes, board: Board, model_name: str, *, ram_limit: int | None = None,
                 flash_limit: int | None = None) -> None:
    """LimitError if the firmware's RAM or flash use exceeds the limits (board defaults),
    naming what is needed, of what, and what is available."""
    ram_limit = board.ram_limit if ram_limit is None else ram_limit
    flash_limit = board.flash_limit if flash_limit is None else flash_limit
    problems = []
    if sizes.ram > ram_limit:
        problems.append(
            f"needs {sizes.ram} bytes of RAM (data {sizes.data} + bss {sizes.bss} + stack {sizes.stack}) "
            f"but the limit is {ram_limit}"
        )
    flash = None
    if sizes.flash > flash_limit:
        flash = (f"needs {sizes.flash} bytes of flash (text {sizes.text} + rodata {sizes.rodata} + "
                 f"data {sizes.data}) but the limit is {flash_limit}")
        problems.append(flash)
    if problems:
        raise LimitError(f"model {model_name} on {board.name} " + "; and ".join(problems), flash)


def _measure_without_limits(out_dir: Path, board: Board) -> ElfSizes | None:
    """Links the compiled objects again with every region made 256 MB long (into build/,
    outside the exported project files) to learn the sizes a failed link would have had."""
    manifest = json.loads((out_dir / MANIFEST).read_text())
    roomy = dataclasses.replace(
        board,
        flash=dataclasses.replace(board.flash, length=1 << 28),
        ram=dataclasses.replace(board.ram, length=1 << 28),
        vectors=None if board.vectors is None else dataclasses.replace(board.vectors, length=1 << 28),
    )
    build_dir = out_dir / "build"
    script = build_dir / "measure-unlimited.ld"
    script.write_text(render_linker_script(roomy, manifest["stack_bytes"]))
    objects = [str(build_dir / (source[:-2] + ".o")) for source in manifest["sources"]]
    elf = build_dir / "measure-unlimited.elf"
    done = subprocess.run(
        [require_tool(CROSS + "gcc"), *board.cpu_flags, "-nostartfiles", "-T", str(script),
         "-Wl,--gc-sections", "--specs=nano.specs", "--specs=nosys.specs", *objects, "-o", str(elf)],
        capture_output=True, text=True,
    )
    return elf_sizes(elf) if done.returncode == 0 else None


def _raise_for_overflow(log: str, board: Board, model_name: str) -> None:
    """LimitError from the linker's "region `X' overflowed by N bytes" lines, if any."""
    by_name = {region.name: region for region in board.regions}
    problems = []
    flash = None
    for region_name, excess in dict(_OVERFLOW.findall(log)).items():
        region = by_name.get(region_name)
        if region is None:
            continue
        kind = "RAM" if region is board.ram else "flash"
        problems.append(
            f"needs {region.length + int(excess)} bytes of {kind} (region {region_name}) "
            f"but {board.name} has {region.length}"
        )
        if kind == "flash":
            flash = problems[-1]
    if problems:
        raise LimitError(f"model {model_name} does not fit {board.name}: " + "; ".join(problems), flash)


def build_firmware(
    model_dir: Path,
    model_name: str,
    board: Board,
    out_dir: Path,
    *,
    profile: bool = False,
    extra_cflags: Sequence[str] = (),
    semihosting: bool | None = None,
    builtin_inputs: Sequence[bytes] | None = None,
    stack_bytes: int | None = None,
    ram_limit: int | None = None,
    flash_limit: int | None = None,
    jobs: int = 2,
    force: bool = False,
) -> FirmwareBuild:
    """Writes the firmware project into `out_dir` and builds it with its own Makefile:
    build/<name>.elf, .bin, .hex and .map. LimitError if it does not fit the board or
    the given limits; ToolError if the toolchain is missing or the build fails."""
    for tool in ("gcc", "objcopy"):
        require_tool(CROSS + tool)
    make = require_tool("make")
    out_dir = Path(out_dir)
    check_plan_fits(read_model_interface(model_dir, model_name, extra_cflags), board, model_name,
                    stack_bytes=stack_bytes, ram_limit=ram_limit, flash_limit=flash_limit)
    interface = write_firmware_project(
        model_dir, model_name, board, out_dir, profile=profile, extra_cflags=extra_cflags,
        semihosting=semihosting, builtin_inputs=builtin_inputs, stack_bytes=stack_bytes, force=force,
    )
    build_dir = out_dir / "build"
    build_dir.mkdir(exist_ok=True)
    done = subprocess.run(
        [make, "-C", str(out_dir), f"-j{max(1, jobs)}", "--no-print-directory", f"CROSS={CROSS}"],
        capture_output=True, text=True,
    )
    log = done.stdout + done.stderr
    (build_dir / "build.log").write_text(log)
    if done.returncode != 0:
        if _OVERFLOW.search(log):
            measured = _measure_without_limits(out_dir, board)
            if measured is not None:
                check_limits(measured, board, model_name, ram_limit=ram_limit, flash_limit=flash_limit)
            _raise_for_overflow(log, board, model_name)
        raise ToolError(
            f"building firmware for {board.name} failed: {_first_error(done.stderr or log)} "
            f"(full log: {build_dir / 'build.log'})"
        )
    elf = build_dir / f"{model_name}.elf"
    sizes = elf_sizes(elf)
    check_limits(sizes, board, model_name, ram_limit=ram_limit, flash_limit=flash_limit)
    return FirmwareBuild(
        project_dir=out_dir,
        name=model_name,
        board=board,
        interface=interface,
        elf=elf,
        bin=build_dir / f"{model_name}.bin",
        hex=build_dir / f"{model_name}.hex",
        map=build_dir / f"{model_name}.map",
        sizes=sizes,
        profile=profile,
        semihosting=bool(semihosting if semihosting is not None else board.emulated),
    )
