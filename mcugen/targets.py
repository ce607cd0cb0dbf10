"""Target descriptions for kernel selection: instruction set (portable C99, Armv7E-M DSP, MVE) and compiler flags."""

from __future__ import annotations

import enum
from dataclasses import dataclass

from mcugen.errors import UnsupportedError


class Isa(enum.Enum):
    """The instructions the specialised kernels may use."""

    PORTABLE = "portable"  # C99 only: any CPU, the host included
    DSP = "dsp"  # Armv7E-M / Armv8-M Mainline DSP extension: SMLAD, SXTB16, ... (ACLE, arm_acle.h)
    MVE = "mve"  # Armv8.1-M M-profile Vector Extension (Helium), integer (arm_mve.h)


@dataclass(frozen=True)
class Target:
    """What the generated kernels are specialised for.

    `cflags`: the compiler flags of a reference core of this target (arm-none-eabi-gcc), used
    when the caller gives no board; `cpus`: the -mcpu names whose boards select this target;
    `feature_macro`: the predefined macro the generated C checks so that code for one target
    cannot be compiled silently for another (None: no check).
    """

    name: str
    isa: Isa
    description: str
    cflags: tuple[str, ...]
    cpus: tuple[str, ...]
    feature_macro: str | None


TARGETS: dict[str, Target] = {
    t.name: t
    for t in (
        Target(
            name="portable",
            isa=Isa.PORTABLE,
            description="portable C99: specialised loops with constants, for any CPU and the host",
            cflags=(),
            cpus=(),
            feature_macro=None,
        ),
        Target(
            name="armv7em-dsp",
            isa=Isa.DSP,
            description="Armv7E-M DSP (Cortex-M4/M7/M33/M35P): two 16-bit multiply-accumulates per SMLAD, ACLE intrinsics",
            cflags=("-mcpu=cortex-m4", "-mthumb", "-mfloat-abi=hard", "-mfpu=fpv4-sp-d16"),
            cpus=("cortex-m4", "cortex-m7", "cortex-m33", "cortex-m35p"),
            feature_macro="__ARM_FEATURE_DSP",
        ),
        Target(
            name="mve",
            isa=Isa.MVE,
            description="Armv8.1-M MVE/Helium (Cortex-M55/M85): 128-bit integer vectors, arm_mve.h intrinsics",
            cflags=("-mcpu=cortex-m55", "-mthumb", "-mfloat-abi=hard"),
            cpus=("cortex-m55", "cortex-m85"),
            feature_macro="__ARM_FEATURE_MVE",
        ),
    )
}

# Defined when compiling DSP-target kernels on a machine without the DSP extension (tests on
# the host): the generated C then uses C99 equivalents of the few DSP instructions it needs.
EMULATE_DSP_MACRO = "MCUGEN_EMULATE_DSP"


def get_target(name: str) -> Target:
    """The target called `name`; UnsupportedError listing the known targets otherwise."""
    try:
        return TARGETS[name]
    except KeyError:
        raise UnsupportedError(f"unknown kernel target {name!r}; supported targets: {', '.join(TARGETS)}") from None


def target_for_cpu(cpu: str) -> Target:
    """The fastest target a core supports: DSP for Cortex-M4/M7/M33, MVE for Cortex-M55/M85,
    portable C otherwise (Cortex-M0/M3, the host)."""
    for t in TARGETS.values():
        if cpu in t.cpus:
            return t
    return TARGETS["portable"]


def target_for_board(board) -> Target:
    """The target of a `mcugen.boards.Board` (by its CPU)."""
    return target_for_cpu(board.cpu)
