"""TRANSPOSE_CONV kernel for the DSP target: the plan (taps gathered per output pixel, int16 pairs) and its selection.

The template that prints this plan: templates/c/fast/tconv.c.j2 (macro transpose_conv), called
from layers.c.j2.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import ClassVar, Optional

import numpy as np

from mcugen.kernels.base import KernelContext, layer_params, round_up
from mcugen.kernels.requant import Requant, input_magnitude, plan_requant, rq_table
from mcugen.lower import ArenaArg, ConstArg, Layer
from mcugen.targets import Isa


@dataclass(frozen=True)
class TransposeConvPlan:
    """TRANSPOSE_CONV as a gather: per output pixel, the input pixels of its `taps` at most valid
    filter taps are unpacked with the input offset added (SXTAB16) into int16 pairs in scratch,
    then every output channel is a dot product of those pairs with its weights (SXTB16 + SMLAD),
    `groups` words of 4 weights per tap (input channels padded with zero weights)."""

    kind: ClassVar[str] = "transpose_conv"

    name: str
    index: int
    isa: str
    batches: int
    in_h: int
    in_w: int
    in_c: int
    out_h: int
    out_w: int
    out_c: int
    kh: int
    kw: int
    sh: int
    sw: int
    pad_t: int
    pad_l: int
    input_offset: int
    groups: int
    taps: int  # most filter taps one output pixel gathers
    rq: Requant
    weights: str
    table: str
    scratch_bytes: int
    in_offset: int
    out_offset: int
    scratch_offset: int

    @property
    def offset_pair(self) -> int:
        """The input offset in both halfwords of a word (the SXTAB16 addend), as an unsigned 32-bit value."""
        o = self.input_offset & 0xFFFF
        return o | (o << 16)


def select_transpose_conv(ctx: KernelContext, layer: Layer) -> Optional[tuple[TransposeConvPlan, str]]:
    """TRANSPOSE_CONV on the DSP target (elsewhere the portable gather stays)."""
    if ctx.t.isa is not Isa.DSP:
        return None
    p = {k: int(v) for k, v in layer_params(layer).items()}
    a = layer.args
    w = np.asarray(ctx.consts[a[2].cname].values).astype(np.int64)  # [out_c, kh, kw, in_c]
    out_c, kh, kw, in_c = w.shape
    bias = np.zeros(out_c, np.int64) if not isinstance(a[3], ConstArg) else np.asarray(ctx.consts[a[3].cname].values).astype(np.int64).reshape(-1)
    mult = np.asarray(ctx.consts[a[4].cname].values).astype(np.int64).reshape(-1)
    shift = np.asarray(ctx.consts[a[5].cname].values).astype(np.int64).reshape(-1)
    groups = round_up(in_c, 4) // 4
    padded = np.zeros((out_c, kh, kw, groups * 4), np.int64)
    padded[..., :in_c] = w
    # any subset of taps sums to at most every weight's magnitude times the largest input
    acc_bound = np.abs(bias) + input_magnitude(p["input_offset"]) * np.abs(w).reshape(out_c, -1).sum(axis=1)
    rq = plan_requant(acc_bound, mult, shift, p["output_offset"], p["act_min"], p["act_max"])
    sh, sw = p["stride_h"], p["stride_w"]
    taps = -(-kh // sh) * -(-kw // sw)
    i = layer.index
    weights = ctx.const(i, "tw", "int8_t", padded.reshape(-1).astype(np.int8),
                        f"weights [{out_c}][{kh}][{kw}][{groups * 4}], input channels padded with zeros to words")
    table = ctx.const(i, "rq", "int32_t", rq_table(bias, rq), "per channel: bias, multiplier, K or shift, e")
    scratch_bytes = taps * groups * 8
    sname = ctx.scratch_for(i, scratch_bytes)
    input_arg, output_arg = a[1], a[6]
    assert isinstance(input_arg, ArenaArg) and isinstance(output_arg, ArenaArg)
    return TransposeConvPlan(
        name=f"{ctx.name}_l{i}_tconv", index=i, isa=ctx.t.isa.value, batches=p["batches"], in_h=p["in_h"], in_w=p["in_w"],
        in_c=in_c, out_h=p["out_h"], out_w=p["out_w"], out_c=out_c, kh=kh, kw=kw, sh=sh, sw=sw, pad_t=p["pad_top"],
        pad_l=p["pad_left"], input_offset=p["input_offset"], groups=groups, taps=taps, rq=rq, weights=weights, table=table,
        scratch_bytes=scratch_bytes, in_offset=input_arg.offset, out_offset=output_arg.offset, scratch_offset=-1,
    ), sname
