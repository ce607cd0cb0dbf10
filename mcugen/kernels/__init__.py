"""Kernel selection for a lowered Program: mcugen's own kernels per family, or calls to Arm's CMSIS-NN."""

from __future__ import annotations

from typing import Optional

from mcugen.kernels.base import KernelPassResult, ScratchBuffer, place_scratch
from mcugen.kernels.specializer import render_layers, specialize
from mcugen.lower import Program
from mcugen.targets import Target

__all__ = ["KERNELS", "KernelPassResult", "ScratchBuffer", "apply_kernels", "place_scratch", "render_layers", "specialize"]

KERNELS = ("mcugen", "cmsis-nn")


def apply_kernels(program: Program, kernels: str, target: Target, cmsis_nn: Optional[str] = None,
                  flash_tight: bool = False) -> KernelPassResult:
    """The kernel pass `kernels` names, run on a lowered Program for `target`:
    "mcugen" specialises layers (`mcugen.kernels.specializer`), "cmsis-nn" calls Arm's library
    (`mcugen.kernels.cmsis_nn`; `cmsis_nn` is its checkout, else $CMSIS_NN_PATH).
    `flash_tight`: mcugen's kernels take the smallest form of their constants everywhere."""
    if kernels == "mcugen":
        return specialize(program, target, flash_tight)
    if kernels == "cmsis-nn":
        from mcugen.kernels.cmsis_nn import to_cmsis_nn

        return to_cmsis_nn(program, target, cmsis_nn)
    from mcugen.errors import UnsupportedError

    raise UnsupportedError(f"unknown --kernels {kernels!r}; choose one of {', '.join(KERNELS)}")
