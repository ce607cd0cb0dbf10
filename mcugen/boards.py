"""Target boards: CPU flags, memory map, RAM/flash limits, QEMU machine or pyOCD target."""
from __future__ import annotations

from dataclasses import dataclass

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
    def stack_guard(self) -> tuple[int, int] | None:
        """(base, log2 size) of the MPU no-access block right below RAM on Armv7-M, where
        the stack (at the bottom of RAM) would overflow into; None on Armv8-M (MSPLIM)."""
        size_log2 = 28
        if self.cpu not in ("cortex-m4", "cortex-m7"):
            return None
        if self.ram.origin < (1 << size_log2) or self.ram.origin % (1 << size_log2):
            return None
        return self.ram.origin - (1 << size_log2), size_log2

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
