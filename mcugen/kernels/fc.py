"""FULLY_CONNECTED kernels: the plan (units per step, weight interleaving) and its selection.

The templates that print these plans: templates/c/fast/fc.c.j2 (macros fully_connected,
fully_connected_mve), called from layers.c.j2.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import ClassVar

import numpy as np

from mcugen.kernels.base import FcView, KernelContext, fc_view, round_up
from mcugen.kernels.requant import Requant, input_magnitude, mve_table, plan_requant, rq_table
from mcugen.lower import Layer
from mcugen.targets import Isa

FC_UNITS = 3  # fully connected units per step on the DSP target


@dataclass(frozen=True)
class FcPlan:
    """FULLY_CONNECTED: the input row unpacked once into int16 scratch, then `rows` units at a
    time, each a dot product over `groups` words of 4 weights."""

    kind: ClassVar[str] = "fc"

    name: str
    index: int
    isa: str
    v: FcView
    groups: int
    rows: int
    unroll: int
    rq: Requant
    weights: str
    table: str
    scratch_bytes: int
    in_offset: int
    out_offset: int
    scratch_offset: int
    # DSP: the input is not unpacked (no scratch); two units at a time sign-extend each input
    # word on the fly, weights row by row. Chosen for a classifier head of at most
    # DIRECT_UNITS units, where unpacking is not repaid and the unpacked row would take more
    # RAM than the layer's input and output together.
    direct: bool = False


DIRECT_UNITS = 4


def unpacked_scratch(depth: int) -> int:
    """Scratch of the unpacking FC: int16 pairs of the input row, plus a padded copy of it when
    depth is not a multiple of 4."""
    groups = round_up(depth, 4) // 4
    return groups * 8 + (groups * 4 if depth % 4 else 0)


def select_fc(ctx: KernelContext, layer: Layer) -> tuple[FcPlan, str]:
    """FULLY_CONNECTED, every target: MVE 4 units per step (16 weights per instruction), DSP
    FC_UNITS units interleaved word by word, portable rows padded to words."""
    v = fc_view(layer, ctx.consts)
    groups = round_up(v.depth, 4) // 4
    wpad = np.zeros((v.units, groups * 4), np.int64)
    wpad[:, : v.depth] = v.weights
    bias = v.bias + v.input_offset * v.weights.sum(axis=1)
    acc_bound = np.abs(v.bias) + input_magnitude(v.input_offset) * np.abs(v.weights).sum(axis=1)
    rq = plan_requant(acc_bound, v.multiplier, v.shift, v.output_offset, v.act_min, v.act_max)
    i = layer.index
    if ctx.t.isa is Isa.MVE:
        d16 = round_up(v.depth, 16)
        u4 = round_up(v.units, 4)
        wm = np.zeros(u4 * v.depth + 16, np.int64)
        wm[: v.units * v.depth] = v.weights.reshape(-1)
        weights = ctx.const(i, "fw", "int8_t", wm.astype(np.int8), f"weights [{u4}][{v.depth}] (+16 bytes), units padded to 4")
        table = ctx.const(i, "rq", "int32_t", mve_table(bias, v.multiplier, v.shift, u4),
                          "per 4 units: bias + input_offset*sum(w), multiplier, left, -right, mask")
        sname = ctx.scratch_for(i, 0)
        return FcPlan(
            name=f"{ctx.name}_l{i}_fc", index=i, isa=ctx.t.isa.value, v=v, groups=d16 // 4, rows=4, unroll=1, rq=rq,
            weights=weights, table=table, scratch_bytes=0, in_offset=v.input.offset,
            out_offset=v.output.offset, scratch_offset=-1,
        ), sname
    direct = ctx.t.isa is Isa.DSP and v.units <= DIRECT_UNITS and unpacked_scratch(v.depth) > v.depth + v.units
    if direct:
        packed = wpad.reshape(-1)
        comment = f"weights [{v.units}][{groups * 4}], rows padded to words (read directly, no unpacked input)"
    elif ctx.t.isa is Isa.DSP:
        # units 3k..3k+2 interleaved word by word ([k][group][unit][4 bytes]), then the rest;
        # three units keep the loop in 13 registers (r7 stays free for a frame pointer)
        u3 = v.units // FC_UNITS * FC_UNITS
        blocks = wpad[:u3].reshape(u3 // FC_UNITS, FC_UNITS, groups, 4).transpose(0, 2, 1, 3).reshape(-1)
        packed = np.concatenate([blocks, wpad[u3:].reshape(-1)])
        comment = f"weights of {v.units} units x {groups * 4}: {FC_UNITS} units interleaved word by word"
    else:
        packed = wpad.reshape(-1)
        comment = f"weights [{v.units}][{groups * 4}], rows padded to words"
    weights = ctx.const(i, "fw", "int8_t", packed.astype(np.int8), comment)
    table = ctx.const(i, "rq", "int32_t", rq_table(bias, rq), "per unit: bias + input_offset*sum(w), multiplier, K or shift, e")
    scratch_bytes = 0 if direct or ctx.t.isa is not Isa.DSP else unpacked_scratch(v.depth)
    sname = ctx.scratch_for(i, scratch_bytes)
    return FcPlan(
        name=f"{ctx.name}_l{i}_fc", index=i, isa=ctx.t.isa.value, v=v, groups=groups, rows=FC_UNITS,
        unroll=2 if groups % 2 == 0 else 1, rq=rq,
        weights=weights, table=table, scratch_bytes=scratch_bytes, in_offset=v.input.offset,
        out_offset=v.output.offset, scratch_offset=-1, direct=direct,
    ), sname
