"""Firmware measurements: ELF section sizes, exact instruction counts and estimated cycles (QEMU plugin), stack use."""
from __future__ import annotations

import atexit
import dataclasses
import hashlib
import os
import shutil
import struct
import subprocess
import tempfile
from dataclasses import dataclass, field
from pathlib import Path
from typing import Sequence

from mcugen.boards import Board
from mcugen.cycles import Timing, timing_for_cpu
from mcugen.errors import ToolError
from mcugen import qemu



def firmware_sources_dir() -> Path:
    """The static firmware sources: `firmware/` in a checkout, `mcugen/firmware_sources` in
    an installed package."""
    here = Path(__file__).resolve().parent
    for candidate in (here / "firmware_sources", here.parent / "firmware"):
        if (candidate / "common" / "mcugen_startup.c").is_file():
            return candidate
    raise ToolError(f"mcugen's firmware sources are missing (looked in {here / 'firmware_sources'} and {here.parent / 'firmware'})")


# Marker functions defined by templates/firmware/main.c.j2, in plugin marker order.
INVOKE_BEGIN, INVOKE_END, LAYER_BEGIN, LAYER_END = range(4)
MARKER_SYMBOLS = ("mcugen_invoke_begin", "mcugen_invoke_end", "mcugen_layer_begin", "mcugen_layer_end")

# ELF constants (System V ABI, ARM ELF).
_SHT_NOBITS = 8
_SHF_WRITE = 0x1
_SHF_ALLOC = 0x2
_SHF_EXECINSTR = 0x4
_STT_FUNC = 2


@dataclass(frozen=True)
class ElfSection:
    name: str
    kind: int  # sh_type
    flags: int
    address: int
    size: int


@dataclass(frozen=True)
class ElfSymbol:
    name: str
    value: int
    size: int
    kind: int  # STT_*


@dataclass(frozen=True)
class ElfImage:
    sections: tuple[ElfSection, ...]
    symbols: tuple[ElfSymbol, ...]

    def symbol(self, name: str) -> ElfSymbol | None:
        return next((s for s in self.symbols if s.name == name), None)


@dataclass(frozen=True)
class ElfSizes:
    """Bytes by kind: flash holds text + rodata + the .data image, RAM data + bss + stack."""

    text: int
    rodata: int
    data: int
    bss: int
    stack: int  # the reserved stack region (.stack)

    @property
    def flash(self) -> int:
        return self.text + self.rodata + self.data

    @property
    def ram(self) -> int:
        return self.data + self.bss + self.stack


def _read_cstring(table: bytes, offset: int) -> str:
    end = table.index(b"\0", offset)
    return table[offset:end].decode("ascii", errors="replace")


def read_elf(path: Path) -> ElfImage:
    """Section headers and symbols of a 32-bit little-endian ELF file (arm-none-eabi)."""
    blob = Path(path).read_bytes()
    if blob[:4] != b"\x7fELF" or blob[4] != 1 or blob[5] != 1:
        raise ToolError(f"{path} is not a 32-bit little-endian ELF file")
    (shoff,) = struct.unpack_from("<I", blob, 0x20)
    shentsize, shnum, shstrndx = struct.unpack_from("<HHH", blob, 0x2E)
    raw = []
    for i in range(shnum):
        raw.append(struct.unpack_from("<IIIIIIIIII", blob, shoff + i * shentsize))
    names = blob[raw[shstrndx][4] : raw[shstrndx][4] + raw[shstrndx][5]]
    sections = tuple(
        ElfSection(_read_cstring(names, h[0]), h[1], h[2], h[3], h[5]) for h in raw
    )
    symbols: list[ElfSymbol] = []
    for h in raw:
        if h[1] != 2:  # SHT_SYMTAB
            continue
        strtab = raw[h[6]]  # sh_link
        strings = blob[strtab[4] : strtab[4] + strtab[5]]
        for offset in range(h[4], h[4] + h[5], 16):
            st_name, st_value, st_size, st_info, _other, _shndx = struct.unpack_from("<IIIBBH", blob, offset)
            if st_name:
                symbols.append(ElfSymbol(_read_cstring(strings, st_name), st_value, st_size, st_info & 0xF))
    return ElfImage(sections, tuple(symbols))


def elf_sizes(path: Path) -> ElfSizes:
    """Sizes of the allocated sections of a firmware ELF, by kind."""
    text = rodata = data = bss = stack = 0
    for section in read_elf(path).sections:
        if not section.flags & _SHF_ALLOC or section.size == 0:
            continue
        if section.name == ".stack":
            stack += section.size
        elif section.kind == _SHT_NOBITS:
            bss += section.size
        elif section.flags & _SHF_EXECINSTR:
            text += section.size
        elif section.flags & _SHF_WRITE:
            data += section.size
        else:
            rodata += section.size
    return ElfSizes(text=text, rodata=rodata, data=data, bss=bss, stack=stack)


# --- the instruction-counting plugin ---------------------------------------------------

_plugin_cache: dict[Path, Path] = {}


def _default_plugin_dir() -> Path:
    """MCUGEN_CACHE_DIR if set, else a private temporary folder removed at exit."""
    configured = os.environ.get("MCUGEN_CACHE_DIR")
    if configured:
        return Path(configured) / "qemu_plugin"
    folder = Path(tempfile.mkdtemp(prefix="mcugen-plugin-"))
    atexit.register(shutil.rmtree, folder, ignore_errors=True)
    return folder


_default_dir: Path | None = None


def build_icount_plugin(cache_dir: Path | None = None) -> Path:
    """Compiles firmware/qemu_plugin/mcugen_icount.c with the host gcc (once per source
    version and folder) and returns the shared library's path."""
    global _default_dir
    if cache_dir is None:
        if _default_dir is None:
            _default_dir = _default_plugin_dir()
        cache_dir = _default_dir
    plugin_source = firmware_sources_dir() / "qemu_plugin" / "mcugen_icount.c"
    source = plugin_source.read_bytes()
    digest = hashlib.sha256(source).hexdigest()[:16]
    library = Path(cache_dir) / f"mcugen_icount-{digest}.so"
    if library.exists():
        return library
    compiler = qemu.require_tool("gcc")
    library.parent.mkdir(parents=True, exist_ok=True)
    partial = library.with_suffix(f".{os.getpid()}.tmp")
    done = subprocess.run(
        [compiler, "-std=c11", "-O2", "-Wall", "-Wextra", "-Werror", "-shared", "-fPIC",
         "-fvisibility=hidden", "-o", str(partial), str(plugin_source)],
        capture_output=True, text=True,
    )
    if done.returncode != 0:
        first = (done.stderr.strip().splitlines() or ["no output"])[0]
        raise ToolError(f"building the QEMU instruction-count plugin failed: {first}")
    partial.replace(library)
    return library


# --- benchmarks -------------------------------------------------------------------------


@dataclass(frozen=True)
class BenchResult:
    """Measurements of one inference on an emulated board.

    `instructions`: executed from the entry of mcugen_invoke_begin to the entry of
    mcugen_invoke_end (the model's N_invoke() plus a call/return and a few marker
    instructions). `layers[i]`: from the entry of mcugen_layer_begin(i) to the entry of
    mcugen_layer_end(i), so each includes about 5 instructions of marker overhead; empty
    unless the firmware was built with profile=True (bench_firmware: from that build, the rest
    from the one without markers). `total_instructions`: the whole run,
    boot and semihosting file I/O included. Sizes are in bytes.

    `estimated_cycles` / `layer_cycles` / `total_cycles`: the same windows in cycles
    estimated from the timing table `timing` (mcugen/cycles.py) of the board's core; None /
    empty when there is no table for it (Cortex-M55). `unclassified`: executed instructions
    (whole run) the plugin's classifier did not know, charged one cycle each.
    """

    board: str
    instructions: int
    layers: list[int]
    total_instructions: int
    stack_bytes: int
    text: int
    rodata: int
    data: int
    bss: int
    stack_reserved: int
    outputs: list[bytes]
    wall_seconds: float
    estimated_cycles: int | None = None
    layer_cycles: list[int] = field(default_factory=list)
    total_cycles: int | None = None
    timing: str | None = None  # the core whose timing table gave the cycles
    unclassified: int = 0

    @property
    def flash(self) -> int:
        return self.text + self.rodata + self.data

    @property
    def ram(self) -> int:
        return self.data + self.bss + self.stack_reserved


@dataclass(frozen=True)
class MarkerEvent:
    marker: int
    count: int
    cycles: int = 0


@dataclass(frozen=True)
class Window:
    """One invoke_begin ... invoke_end window: instructions and estimated cycles, per layer too."""

    instructions: int
    cycles: int
    layers: list[int]
    layer_cycles: list[int]


@dataclass(frozen=True)
class IcountLog:
    events: list[MarkerEvent]
    total: int | None
    total_cycles: int | None
    unclassified: int
    unclassified_names: tuple[str, ...]


def parse_icount_log(text: str) -> IcountLog:
    """A plugin log: events ("<marker> <count> <cycles>"), "total <count> <cycles>" and
    "unclassified <count> <mnemonic> ..."."""
    events: list[MarkerEvent] = []
    total = total_cycles = None
    unclassified, names = 0, ()
    for line in text.splitlines():
        fields = line.split()
        if not fields:
            continue
        if fields[0] == "total":
            total, total_cycles = int(fields[1]), int(fields[2])
        elif fields[0] == "unclassified":
            unclassified, names = int(fields[1]), tuple(fields[2:])
        else:
            events.append(MarkerEvent(int(fields[0]), int(fields[1]), int(fields[2])))
    return IcountLog(events, total, total_cycles, unclassified, names)


def split_invocations(events: Sequence[MarkerEvent]) -> list[Window]:
    """Instructions and cycles (whole and per layer) of each invoke_begin ... invoke_end window."""
    windows: list[Window] = []
    begin: MarkerEvent | None = None
    layer_start: MarkerEvent | None = None
    layers: list[int] = []
    layer_cycles: list[int] = []
    for event in events:
        if event.marker == INVOKE_BEGIN:
            if begin is not None:
                raise ToolError("instruction-count log: invoke began twice without ending")
            begin, layers, layer_cycles, layer_start = event, [], [], None
        elif event.marker == INVOKE_END:
            if begin is None or layer_start is not None:
                raise ToolError("instruction-count log: invoke ended without beginning, or inside a layer")
            windows.append(Window(event.count - begin.count, event.cycles - begin.cycles, layers, layer_cycles))
            begin = None
        elif event.marker == LAYER_BEGIN:
            if begin is None or layer_start is not None:
                raise ToolError("instruction-count log: layer began outside invoke, or inside a layer")
            layer_start = event
        elif event.marker == LAYER_END:
            if layer_start is None:
                raise ToolError("instruction-count log: layer ended without beginning")
            layers.append(event.count - layer_start.count)
            layer_cycles.append(event.cycles - layer_start.cycles)
            layer_start = None
    if begin is not None:
        raise ToolError("instruction-count log: the last invoke never ended")
    return windows


def plugin_arguments(elf: Path, log: Path, timing: Timing | None = None) -> str:
    """The -plugin option value: library, log file, the marker addresses found in `elf` and
    the timing table to estimate cycles with (none: no estimate)."""
    image = read_elf(elf)
    parts = [str(build_icount_plugin()), "out=" + str(log)]
    if timing is not None:
        parts.append(timing.plugin_argument())
    for index, name in enumerate(MARKER_SYMBOLS):
        symbol = image.symbol(name)
        if symbol is None:
            if index in (INVOKE_BEGIN, INVOKE_END):
                raise ToolError(f"{elf} has no symbol {name}: it was not built by mcugen's firmware builder")
            continue
        parts.append(f"m{index}=0x{symbol.value & ~1:x}")
    return ",".join(part.replace(",", ",,") for part in parts)


LAYER_MARKER_INSTRUCTIONS = 8  # at most, in each layer's count: the begin marker's body, the end marker's call
LAYER_MARKER_CYCLES = 16  # ... and their cycles (a call and a return are taken branches)


def bench_firmware(
    elf: Path,
    profiled_elf: Path,
    board: Board,
    inputs: Sequence[bytes],
    *,
    timeout: float = qemu.DEFAULT_TIMEOUT_S,
) -> BenchResult:
    """Measures the firmware as it ships (`elf`, built without per-layer markers: the flash,
    instructions, cycles, stack and outputs a user's board sees, the numbers `firmware` prints)
    and takes the per-layer counts from the same sources built with the markers
    (`profiled_elf`, profile=True), whose calls add code to invoke and instructions to each
    layer (at most LAYER_MARKER_INSTRUCTIONS each: the layers may add up to a little more than the
    whole). ToolError if the two builds' outputs differ."""
    plain = bench_elf(elf, board, inputs, timeout=timeout)
    profiled = bench_elf(profiled_elf, board, inputs, timeout=timeout)
    if plain.outputs != profiled.outputs:
        raise ToolError(f"{Path(elf).name}: the outputs with and without the per-layer markers differ")
    return dataclasses.replace(plain, layers=profiled.layers, layer_cycles=profiled.layer_cycles)


def bench_elf(
    elf: Path,
    board: Board,
    inputs: Sequence[bytes],
    *,
    timeout: float = qemu.DEFAULT_TIMEOUT_S,
    workdir: Path | None = None,
) -> BenchResult:
    """Runs `elf` once on `inputs` in QEMU with the instruction-count plugin; exact,
    repeatable counts, and cycles estimated from the timing table of the board's core.
    Raises ToolError if the firmware does not exit with status 0."""
    timing = timing_for_cpu(board.cpu)
    with tempfile.TemporaryDirectory(prefix="mcugen-bench-") as scratch:
        folder = Path(workdir) if workdir is not None else Path(scratch)
        folder.mkdir(parents=True, exist_ok=True)
        log = folder / "icount.log"
        log.unlink(missing_ok=True)
        result = qemu.run_on_qemu(
            elf, board, inputs, timeout=timeout, workdir=folder,
            extra_args=("-plugin", plugin_arguments(elf, log.resolve(), timing)),
        )
        if result.exit_code != 0:
            raise ToolError(
                f"{Path(elf).name} on {board.name} failed: {qemu.describe_failure(result.exit_code, result.stderr, timeout)}"
            )
        if not log.exists():
            raise ToolError(f"QEMU wrote no instruction-count log; its output: {result.stderr.strip()[:200]}")
        counted = parse_icount_log(log.read_text())
    windows = split_invocations(counted.events)
    if len(windows) != 1 or counted.total is None:
        raise ToolError(f"instruction-count log has {len(windows)} inferences (expected 1) or no total")
    if result.stack_bytes is None:
        raise ToolError("the firmware printed no MCUGEN_STACK_BYTES line")
    window = windows[0]
    sizes = elf_sizes(elf)
    return BenchResult(
        board=board.name,
        instructions=window.instructions,
        layers=window.layers,
        total_instructions=counted.total,
        stack_bytes=result.stack_bytes,
        text=sizes.text,
        rodata=sizes.rodata,
        data=sizes.data,
        bss=sizes.bss,
        stack_reserved=sizes.stack,
        outputs=result.outputs,
        wall_seconds=result.wall_seconds,
        estimated_cycles=window.cycles if timing is not None else None,
        layer_cycles=window.layer_cycles if timing is not None else [],
        total_cycles=counted.total_cycles if timing is not None else None,
        timing=timing.core if timing is not None else None,
        unclassified=counted.unclassified,
    )
