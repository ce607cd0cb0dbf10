"""Compile options: the one set of options, with one set of defaults, for every command that turns a model into code."""

from __future__ import annotations

import argparse
import re
from dataclasses import dataclass
from typing import Optional

from mcugen.errors import UnsupportedError

KERNELS = ("mcugen", "cmsis-nn")
STRATEGIES = ("auto", "fused", "layerwise")
DEFAULT_STRATEGY = "auto"

STRATEGY_HELP = (
    "memory plan: auto (default: block by block, the fastest plan that fits the RAM and flash budget, "
    "else the smallest), fused (row-streamed chains wherever they lower the arena) or layerwise"
)

_SIZE = re.compile(r"^(0x[0-9a-fA-F]+|\d+)\s*([kKmM]i?[bB]?|[bB])?$")


def parse_size(text: str) -> int:
    """"327680", "0x50000", "320K", "320KiB", "1M" -> bytes (K = 1024)."""
    match = _SIZE.match(text.strip())
    if not match:
        raise argparse.ArgumentTypeError(f"{text!r} is not a size (examples: 262144, 256K, 1M)")
    value = int(match.group(1), 0)
    unit = (match.group(2) or "").lower()[:1]
    return value * {"k": 1024, "m": 1024 * 1024}.get(unit, 1)


@dataclass(frozen=True)
class Budget:
    """What the plan may use: `arena_bytes` of RAM for the arena (the RAM limit less the
    board's stack reserve) and `const_bytes` of flash for constants; None: no limit."""

    arena_bytes: Optional[int]
    const_bytes: Optional[int]
    source: str  # where the numbers come from, for messages ("board nrf52840", "--ram-limit", ...)


@dataclass(frozen=True)
class CompileOptions:
    """How a model becomes code. `board` (a board name) gives the kernel target and the memory
    budget; `target` overrides the board's target; `kernels` None means mcugen's generic
    (reference) kernels, which only tests and measurements ask for."""

    name: Optional[str] = None
    board: Optional[str] = None
    target: Optional[str] = None
    kernels: Optional[str] = "mcugen"
    cmsis_nn: Optional[str] = None
    strategy: str = DEFAULT_STRATEGY
    ram_limit: Optional[int] = None
    flash_limit: Optional[int] = None
    stream_inputs: bool = False  # inputs read only by a QUANTIZE are quantized in <name>_input_write(), never held whole
    fuse_all: bool = False  # with strategy "fused": every candidate chain, even one that does not lower the arena (tests, calibration)
    small_forms: bool = False  # every kernel takes the small form of its constants (the firmware was over the flash limit)

    def __post_init__(self) -> None:
        if self.strategy not in STRATEGIES:
            raise UnsupportedError(f"strategy {self.strategy!r} is not supported; choose one of {', '.join(STRATEGIES)}")
        if self.kernels is not None and self.kernels not in KERNELS:
            raise UnsupportedError(f"unknown --kernels {self.kernels!r}; choose one of {', '.join(KERNELS)}")

    def board_object(self):
        from mcugen.boards import get_board

        return get_board(self.board) if self.board and self.board != "host" else None

    @property
    def kernel_target(self) -> str:
        """The instruction set the kernels are specialised for: --target, else the board's, else portable."""
        if self.target:
            return self.target
        board = self.board_object()
        if board is not None:
            from mcugen.targets import target_for_board

            return target_for_board(board).name
        return "portable"

    def budget(self) -> Budget:
        board = self.board_object()
        ram = self.ram_limit if self.ram_limit is not None else (board.ram_limit if board else None)
        flash = self.flash_limit if self.flash_limit is not None else (board.flash_limit if board else None)
        stack = board.stack_bytes if board else 0
        parts = []
        if self.ram_limit is not None or self.flash_limit is not None:
            parts.append("--ram-limit/--flash-limit")
        if board is not None:
            parts.append(f"board {board.name}")
        return Budget(
            arena_bytes=None if ram is None else max(ram - stack, 0),
            const_bytes=flash,
            source=" and ".join(parts) or "no limit",
        )

    def to_json(self) -> dict:
        return {
            "board": self.board, "target": self.kernel_target, "kernels": self.kernels or "generic",
            "strategy": self.strategy, "ram_limit": self.ram_limit, "flash_limit": self.flash_limit,
            "small_forms": self.small_forms,
            "stream_inputs": self.stream_inputs,
        }


def add_compile_options(p: argparse.ArgumentParser, *, board_required: bool = False, host_board: bool = False,
                        name: bool = True, board: bool = True) -> None:
    """--board, --target, --kernels, --cmsis-nn, --strategy, --ram-limit, --flash-limit (and --name).
    `board=False`: the command defines its own --board (demo)."""
    from mcugen.boards import BOARDS
    from mcugen.targets import TARGETS

    boards = sorted(BOARDS) + (["host"] if host_board else [])
    if board:
        p.add_argument("--board", required=board_required, choices=boards, metavar="BOARD",
                       default="host" if host_board else None,
                       help="board: its CPU sets the kernel target, its RAM and flash the budget: " + ", ".join(boards)
                       + (" (default: host)" if host_board else ""))
    p.add_argument("--target", choices=sorted(TARGETS),
                   help="instruction set of the kernels: portable (C99), armv7em-dsp (Cortex-M4/M7/M33), mve "
                        "(Cortex-M55); default: the board's, else portable")
    p.add_argument("--kernels", choices=KERNELS, default="mcugen",
                   help="mcugen: kernels specialised per layer for the target (default); cmsis-nn: calls to Arm's CMSIS-NN")
    p.add_argument("--cmsis-nn", metavar="PATH", help="CMSIS-NN checkout for --kernels cmsis-nn (default: $CMSIS_NN_PATH)")
    p.add_argument("--strategy", choices=STRATEGIES, default=DEFAULT_STRATEGY, help=STRATEGY_HELP)
    p.add_argument("--ram-limit", type=parse_size, metavar="BYTES",
                   help="RAM the firmware may use (stack + data + arena; default: the board's RAM)")
    p.add_argument("--flash-limit", type=parse_size, metavar="BYTES",
                   help="flash the firmware may use (default: the board's flash); firmware, bench: if the "
                        "default build is over it, the model is generated again with the small forms of the "
                        "kernels' constants (a note says so)")
    p.add_argument("--stream-inputs", action="store_true",
                   help="a model input read only by a QUANTIZE (a float32 or uint8 image) is quantized as the "
                        "application writes it with <name>_input_write(), in pieces, and never held whole in the arena")
    if name:
        p.add_argument("--name", help="C name prefix of the model (default: from the file name, sanitised)")


def options_from_args(args: argparse.Namespace) -> CompileOptions:
    return CompileOptions(
        name=getattr(args, "name", None), board=getattr(args, "board", None), target=getattr(args, "target", None),
        kernels=args.kernels, cmsis_nn=args.cmsis_nn, strategy=args.strategy,
        ram_limit=args.ram_limit, flash_limit=args.flash_limit, stream_inputs=getattr(args, "stream_inputs", False),
    )
