"""Target boards: CPU flags, memory map, RAM/flash limits, QEMU machine or pyOCD target."""
from __future__ import annotations

from dataclasses import dataclass, replace

from mcugen.errors import UnsupportedError

KIB = 1024
MIB = 1024 * KIB


@dataclass(frozen=True)
class MemoryRegion:
    """One linker MEMORY region: `name` as in the linker script, `access` like "rx"."""

    name: str
    origin: int
    length: int
    access: str

    @property
    def end(self) -> int:
        return self.origin + self.length


@dataclass(frozen=True)
class Board:
    """A target: `flash` holds code, constants and the .data image, `ram` stack/.data/.bss.

    `vectors` is a separate region for the vector table when the boot address is not in
    `flash` (Cortex-M55 on QEMU boots from ITCM at 0). `qemu_machine` is None for real
    boards, which are built but never run here.
    """

    name: str
    description: str
    cpu: str
    cpu_flags: tuple[str, ...]
    flash: MemoryRegion
    ram: MemoryRegion
    stack_bytes: int
    vectors: MemoryRegion | None = None
    qemu_machine: str | None = None
    qemu_cpu: str | None = None
    pyocd_target: str | None = None
    pyocd_pack: str | None = None  # pyOCD does not know the target without this CMSIS pack installed

    @property
    def emulated(self) -> bool:
        return self.qemu_machine is not None

    @property
    def flash_limit(self) -> int:
        """Default for --flash-limit: bytes of text + rodata + .data image."""
        return self.flash.length

    @property
    def ram_limit(self) -> int:
        """Default for --ram-limit: bytes of stack + .data + .bss."""
        return self.ram.length

    @property
    def stack_guard_bytes(self) -> int:
        """Bytes of the no-access MPU region right below the stack on Armv7-M (a power of two,
        aligned to its size); 0 on Armv8-M, where MSPLIM checks the stack's end instead."""
        return 256 if self.cpu in ("cortex-m4", "cortex-m7") else 0

    @property
    def regions(self) -> tuple[MemoryRegion, ...]:
        extra = (self.vectors,) if self.vectors is not None else ()
        return extra + (self.flash, self.ram)


_M4F_FLAGS = ("-mcpu=cortex-m4", "-mthumb", "-mfloat-abi=hard", "-mfpu=fpv4-sp-d16")

BOARDS: dict[str, Board] = {
    board.name: board
    for board in (
        Board(
            name="qemu-mps2-an386",
            description="QEMU mps2-an386, Cortex-M4F, 4 MB SSRAM1 at 0 as flash, 4 MB SSRAM2/3 as RAM",
            cpu="cortex-m4",
            cpu_flags=_M4F_FLAGS,
            flash=MemoryRegion("FLASH", 0x00000000, 4 * MIB, "rx"),
            ram=MemoryRegion("RAM", 0x20000000, 4 * MIB, "rwx"),
            stack_bytes=64 * KIB,
            qemu_machine="mps2-an386",
        ),
        Board(
            name="qemu-mps2-an500",
            description="QEMU mps2-an500, Cortex-M7 (double-precision FPU), 4 MB SSRAM1 as flash, 4 MB RAM",
            cpu="cortex-m7",
            cpu_flags=("-mcpu=cortex-m7", "-mthumb", "-mfloat-abi=hard", "-mfpu=fpv5-d16"),
            flash=MemoryRegion("FLASH", 0x00000000, 4 * MIB, "rx"),
            ram=MemoryRegion("RAM", 0x20000000, 4 * MIB, "rwx"),
            stack_bytes=64 * KIB,
            qemu_machine="mps2-an500",
        ),
        Board(
            name="qemu-mps3-an547",
            description=(
                "QEMU mps3-an547, Cortex-M55 with MVE (integer and float), vector table in ITCM at 0, "
                "8 MB QSPI at 0x28000000 as flash, 4 MB SRAM at 0x21000000 as RAM"
            ),
            cpu="cortex-m55",
            # gcc 12.2: -mcpu=cortex-m55 alone enables MVE (int + float, __ARM_FEATURE_MVE == 3)
            # and the double-precision FPU; -mfpu is left at its default, "auto".
            cpu_flags=("-mcpu=cortex-m55", "-mthumb", "-mfloat-abi=hard"),
            vectors=MemoryRegion("ITCM", 0x00000000, 512 * KIB, "rx"),
            flash=MemoryRegion("QSPI", 0x28000000, 8 * MIB, "rx"),
            ram=MemoryRegion("SRAM", 0x21000000, 4 * MIB, "rwx"),
            stack_bytes=64 * KIB,
            qemu_machine="mps3-an547",
        ),
        Board(
            name="stm32f746",
            description=(
                "STM32F746 (Cortex-M7, single-precision FPU): 1 MB flash at 0x08000000, 320 KB "
                "contiguous RAM at 0x20000000 (DTCM 64 KB + SRAM1 240 KB + SRAM2 16 KB)"
            ),
            cpu="cortex-m7",
            cpu_flags=("-mcpu=cortex-m7", "-mthumb", "-mfloat-abi=hard", "-mfpu=fpv5-sp-d16"),
            flash=MemoryRegion("FLASH", 0x08000000, 1 * MIB, "rx"),
            ram=MemoryRegion("RAM", 0x20000000, 320 * KIB, "rwx"),
            stack_bytes=16 * KIB,
            pyocd_target="stm32f746zgtx",
            pyocd_pack="Keil.STM32F7xx_DFP",
        ),
        Board(
            name="nrf52840",
            description="nRF52840 (Cortex-M4F): 1 MB flash at 0, 256 KB RAM at 0x20000000",
            cpu="cortex-m4",
            cpu_flags=_M4F_FLAGS,
            flash=MemoryRegion("FLASH", 0x00000000, 1 * MIB, "rx"),
            ram=MemoryRegion("RAM", 0x20000000, 256 * KIB, "rwx"),
            stack_bytes=16 * KIB,
            pyocd_target="nrf52840",
        ),
    )
}

EMULATED_BOARDS: tuple[str, ...] = tuple(name for name, board in BOARDS.items() if board.emulated)


def get_board(name: str) -> Board:
    """The board called `name`; UnsupportedError listing the known boards otherwise."""
    try:
        return BOARDS[name]
    except KeyError:
        raise UnsupportedError(
            f"unknown board {name!r}; supported boards: {', '.join(sorted(BOARDS))}"
        ) from None


def with_origins(board: Board, flash_origin: int | None = None, ram_origin: int | None = None) -> Board:
    """`board` with its flash and/or RAM starting later (the end stays), for an application
    behind a bootloader or the nRF SoftDevice. Real boards only: QEMU boots from the
    emulated board's own memory map."""
    if flash_origin is None and ram_origin is None:
        return board
    if board.emulated:
        raise UnsupportedError(
            f"--flash-origin/--ram-origin are for real boards; {board.name} is emulated and boots from its own memory map"
        )
    changes = {}
    for option, origin, region, align in (("--flash-origin", flash_origin, board.flash, 0x200),
                                          ("--ram-origin", ram_origin, board.ram, 8)):
        if origin is None:
            continue
        if not region.origin <= origin < region.end:
            raise UnsupportedError(
                f"{option} 0x{origin:08x} is outside {board.name}'s {region.name} "
                f"(0x{region.origin:08x}-0x{region.end - 1:08x})"
            )
        if origin % align:
            raise UnsupportedError(f"{option} 0x{origin:08x} is not a multiple of 0x{align:x}"
                                   + (" (the vector table's alignment)" if align == 0x200 else ""))
        changes["flash" if region is board.flash else "ram"] = MemoryRegion(
            region.name, origin, region.end - origin, region.access)
    flash, ram = changes.get("flash", board.flash), changes.get("ram", board.ram)
    return replace(
        board, **changes,
        description=f"{board.description}; application at 0x{flash.origin:08x} ({flash.length // KIB} KB flash), "
                    f"RAM from 0x{ram.origin:08x} ({ram.length // KIB} KB)",
    )
