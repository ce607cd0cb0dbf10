"""DEPTHWISE_CONV_2D kernels (3x3, and kh x kw with kw odd): the ring-of-rows plans, their selection, the kh x kw assembly.

The templates that print these plans: templates/c/fast/depthwise.c.j2 (macro depthwise), called
from layers.c.j2 (the 3x3 int8 form's rebuild: records.c.j2). The 3x3 rows' assembly:
mcugen.kernels.depthwise_asm.
"""

from __future__ import annotations

import dataclasses
from dataclasses import dataclass
from typing import ClassVar, Optional

import numpy as np

from mcugen.kernels.base import (
    ASM_LINE_BYTES,
    ConvView,
    KernelContext,
    conv_view,
    group_by_key,
    larger_form_pays,
    own_and_call,
    placeholder_key,
    round_up,
    share_identical_code,
)
from mcugen.kernels.cost import family_estimate
from mcugen.kernels.conv import RQ_E_BITS, GemmConvPlan, ThinConvPlan, conv_plan, rq_e_packs, rq_table_packed
from mcugen.kernels.depthwise_asm import (
    DW_BLOCK,
    DW_LAST_CHANNEL,
    DW_RECORD,
    dw_asm_case_blocks,
    dw_asm_cases,
    dw_asm_rows,
    dw_asm_rows_s2,
    dw_c_arg_fits,
    dw_cases_fit,
    dw_cases_layout,
    dw_cases_step,
    dw_rows_fit,
    dw_s2_rows_fit,
    requant_in_place,
    row_costs,
    rq_lines,
)
from mcugen.kernels.requant import (
    ACC_LIMIT,
    Requant,
    input_magnitude,
    int16_pair,
    plan_requant,
    rq_table,
    uniform_requant,
    uniform_shift,
    wrap32,
)
from mcugen.kernels.thin_rebuild import bias_with_e
from mcugen.lower import Layer
from mcugen.targets import Isa


@dataclass(frozen=True)
class DepthwisePlan:
    """3x3 DEPTHWISE_CONV_2D (multiplier 1, stride 1 or 2, dilation 1), output row by output
    row: each input row is transposed once into a ring of three int16 rows per channel, then
    two outputs of a row come from six SMLAxy per kernel row (weights as int16 pairs (w0,w1),
    (w1,w2), doubled when the short requantization applies). Row order keeps it correct when
    the plan overlays the output on the input (in place or from below). Other kh x kw windows
    (kw odd; select_depthwise_k) use the same plan with a ring of kh rows (`ring`, `row_words`,
    `record`, `asm_k`, `int8_weights`)."""

    kind: ClassVar[str] = "depthwise"

    name: str
    index: int
    isa: str
    v: ConvView
    plane_h: int
    plane_w: int  # int16 elements per plane row (even)
    rq: Requant
    weights: str
    table: str
    scratch_bytes: int
    in_offset: int
    out_offset: int
    scratch_offset: int
    copy_rows: int  # input rows the kernel reads (from row 0)
    copy_cols: int  # input columns the kernel reads (from column 0)
    # DSP: per ring case (which slot holds kernel row 0), the assembly of a loop step of
    # DW_BLOCK outputs and of the row's last out_w % DW_BLOCK outputs; empty: C only
    asm_loop: tuple[tuple[str, ...], ...] = ()
    asm_tail: tuple[tuple[str, ...], ...] = ()
    asm_blocks: int = 0  # loop steps per row
    # DSP, stride 1: one assembly for every ring case, the three kernel rows through their own
    # pointers (post-incremented): a row's loop steps, its last out_w % DW_BLOCK outputs
    asm_rows: tuple[str, ...] = ()
    # DSP, stride 1 or 2: per ring case, every channel of a row through one pointer, six outputs
    # per step at stride 1, four at stride 2 (dw_asm_cases); taken over asm_rows and asm_loop
    # where it encodes and pays (dw_cases_pay)
    asm_cases: tuple[tuple[str, ...], ...] = ()
    # kernels other than 3x3 (kh x kw, kw odd; select_depthwise_k): ring rows = kh; per kernel
    # row the DSP's int32 words of weight pairs (dw_k_weights) or the others' kw int16 weights
    # (0: the 3x3 layout above); the words or weights per channel; the DSP assembly of one
    # channel's output row (dw_asm_k; empty: C only)
    ring: int = 3
    row_words: int = 0
    record: int = DW_RECORD
    asm_k: tuple[str, ...] = ()
    int8_weights: bool = False  # DSP kh x kw: the weight words hold int8 bytes (dw_k_weights)
    # DSP kh x kw in the compact form (dw_k_compact): how the kernel rebuilds each kernel row's
    # weight words in scratch after the ring from the int8 weights in flash (dw_k_rebuild); empty:
    # the records are in flash
    rebuild: tuple[tuple[str, int, int], ...] = ()
    # DSP 3x3: the int8 form in flash (`weights`: per channel 9 int8 weights and e or the
    # shift; `table`: bias and M), the records rebuilt in scratch after the ring at each call
    unpack: bool = False
    shared: bool = False  # later layers call this layer's code with their own constants (share_dw_code)
    code_of: str = ""  # the earlier layer whose code this one calls (its own code is not emitted)
    # DSP 3x3 int8 form: the channel count is an argument of the code (its loops, the ring's and the
    # records' offsets, the assembly's stores by register offsets), so that layers that differ in it
    # share one copy (share_dw_code)
    c_arg: bool = False

    @property
    def asm_regs(self) -> dict[str, str]:
        """The registers the kh x kw assembly pins its operands to (the template declares them)."""
        return DW_K_REGS

    @property
    def dw3_args(self) -> tuple[int, int]:
        """The int8 form's last two arguments of mcugen_dw3_records (dw3_rebuild_args)."""
        return dw3_rebuild_args(self.rq)



DW_CASES: Optional[bool] = None  # True/False: the six-output kernel wherever it encodes / nowhere; None: dw_cases_pay


def dw3_requant(v: ConvView) -> tuple[np.ndarray, np.ndarray, np.ndarray, Requant]:
    """A 3x3 depthwise layer's weights [C][9], folded bias, accumulator bound and requantization."""
    w = v.weights.reshape(9, v.out_c).T
    bias = v.bias + v.input_offset * w.sum(axis=1)
    acc_bound = np.abs(v.bias) + input_magnitude(v.input_offset) * np.abs(w).sum(axis=1)
    return w, bias, acc_bound, plan_requant(acc_bound, v.multiplier, v.shift, v.output_offset, v.act_min, v.act_max)


def _group_uniform(ctx: KernelContext, v: ConvView) -> bool:
    """Whether the 3x3 layer takes one shift for every channel: where it has one
    (uniform_shift) and so does, with the same E, every layer of its shapes but the channels,
    whose code it may share (share_dw_code: the shift is an immediate of that code)."""
    key = (v.in_h, v.in_w, v.out_h, v.out_w, v.sh, v.pad_t, v.pad_l, v.kh, v.kw)
    tops = set()
    for layer in ctx.p.layers:
        if layer.op == "DEPTHWISE_CONV_2D":
            u = conv_view(layer, ctx.consts)
            if (u.in_h, u.in_w, u.out_h, u.out_w, u.sh, u.pad_t, u.pad_l, u.kh, u.kw) == key \
                    and u.depth_multiplier == 1 and u.batches == 1:
                _, _, bound, rq = dw3_requant(u)
                tops.add(uniform_shift(rq, bound) if rq.fast and rq.clamp_is_int8 else 0)
    return len(tops) == 1 and 0 not in tops


def same_code_layers(ctx: KernelContext, v: ConvView) -> int:
    """How many 3x3 depthwise layers of the program have `v`'s shapes, stride and padding but
    for their channels: in the int8 form they share one copy of their code (share_dw_code, the
    channel count an argument where it differs), so each pays its share."""
    key = (v.in_h, v.in_w, v.out_h, v.out_w, v.sh, v.pad_t, v.pad_l, v.kh, v.kw)
    n = 0
    for layer in ctx.p.layers:
        if layer.op == "DEPTHWISE_CONV_2D":
            u = conv_view(layer, ctx.consts)
            n += (u.in_h, u.in_w, u.out_h, u.out_w, u.sh, u.pad_t, u.pad_l, u.kh, u.kw) == key
    return max(n, 1)


def dw_cases_pay(v: ConvView, plane_w: int, rq: Requant, cases: tuple[tuple[str, ...], ...], flash_tight: bool,
                 sharing: int = 1) -> bool:
    """Whether the six-output kernel (`cases`: dw_asm_cases, three copies of its code, one per
    ring case) replaces the four-output one (dw_asm_rows, one copy; stride 2:
    dw_asm_case_blocks' three copies in a C channel loop), by `larger_form_pays` on counts read
    off the assembly itself: instructions per channel row times rows and channels, and 4 bytes
    per instruction of code added, shared by `sharing` layers."""
    new = row_costs(cases[0], dw_cases_layout(v.out_w, v.sh)[0])
    new_code = 4 * sum(len(c) for c in cases)
    blocks4 = v.out_w // DW_BLOCK
    if v.sh == 1 and dw_rows_fit(v.out_w, v.out_c, plane_w):
        rows = rq_lines(dw_asm_rows(v.out_w, v.out_c, plane_w, rq.sign_free), rq)
        old, old_code = row_costs(rows, blocks4), 4 * len(rows)
    elif v.sh == 2 and DW_S2_ROWS and dw_s2_rows_fit(v.out_w, v.out_c, plane_w):
        rows = rq_lines(dw_asm_rows_s2(v.out_w, v.out_c, plane_w, rq.sign_free), rq)
        old, old_code = row_costs(rows, 0), 4 * len(rows)
    else:
        loops, tails = dw_asm_case_blocks(v, rq, plane_w)
        if not any(loops) and not any(tails):
            return True  # the C path: the assembly is faster anyway
        per_step = len(loops[0]) + 2 if loops[0] else 0  # + CMP, BNE
        old = blocks4 * per_step + len(tails[0]) + 4  # + the C loop per channel
        old_code = 4 * sum(len(x) + len(y) for x, y in zip(loops, tails))
    rows_channels = v.out_h * v.out_c
    added = max(0, new_code - old_code) // sharing
    return larger_form_pays((old - new) * rows_channels, old * rows_channels, added, flash_tight)


def select_depthwise(ctx: KernelContext, layer: Layer) -> Optional[tuple[DepthwisePlan | GemmConvPlan | ThinConvPlan, str]]:
    """DEPTHWISE_CONV_2D: on one input channel with a depth multiplier, the convolution kernel;
    3x3, multiplier 1, stride 1 or 2, batch 1: the ring of rows (DSP: in assembly where the
    short requantization applies and the offsets encode); otherwise None."""
    v = conv_view(layer, ctx.consts)
    if v.in_c == 1 and v.depth_multiplier > 1 and layer.kernel == "mcugen_depthwise_conv2d_s8":
        # one input channel (person_detect's first layer): the depthwise is a convolution with
        # depth_multiplier output channels, weights [1, kh, kw, M] read as [M, kh, kw, 1]; the
        # same window over the same rows, so the same overlap rules hold
        return conv_plan(ctx, dataclasses.replace(
            v, depthwise=False, depth_multiplier=1, weights=np.ascontiguousarray(v.weights.transpose(3, 1, 2, 0)),
        ), layer.index)
    if not (v.batches == 1 and v.kh == 3 and v.kw == 3 and v.dh == 1 and v.dw == 1 and v.depth_multiplier == 1
            and v.sh == v.sw and v.sh in (1, 2)):
        return select_depthwise_k(ctx, layer, v)
    w, bias, acc_bound, rq = dw3_requant(v)
    s = v.sh
    plane_h = (v.out_h - 1) * s + 3
    # columns read: two outputs at a time read words up to (x+1)*s + 3 (stride 1) / 2x*s+5
    # two outputs at a time read whole words: up to column out_w + 2 (stride 1) or
    # 2 * out_w + 1 (stride 2); the row length is even so that rows stay word aligned
    plane_w = round_up((v.out_w - 1) * s + 3 + s, 2)
    if ctx.t.isa is Isa.MVE:  # four outputs at a time read up to column (round_up(out_w, 4) - 1) * s + 2
        plane_w = max(plane_w, round_up((round_up(v.out_w, 4) - 1) * s + 3, 2))
    i = layer.index
    if ctx.t.isa is Isa.MVE:
        # the vector requantization is exact for any shift: no doubling, TFLite's shift
        rq = plan_requant(np.full(v.out_c, ACC_LIMIT), v.multiplier, v.shift, v.output_offset, v.act_min, v.act_max)
    scale = 2 if rq.fast else 1  # the short requantization wants a doubled accumulator
    if ctx.t.isa is Isa.DSP and rq.fast and rq.clamp_is_int8 and DW_UNIFORM and _group_uniform(ctx, v):
        rq, scale = uniform_requant(rq, acc_bound)  # one shift for every channel: weights and bias x 2^(E-e+1)
    asm_loop: tuple[tuple[str, ...], ...] = ()
    asm_tail: tuple[tuple[str, ...], ...] = ()
    asm_rows: tuple[str, ...] = ()
    asm_cases: tuple[tuple[str, ...], ...] = ()
    unpack = False
    if ctx.t.isa is Isa.DSP:
        # one record per channel: int16 pairs (w0, w1), (w1, w2) per kernel row (6 words),
        # then the requantization row (bias, M, K or shift, e)
        pairs = np.zeros((v.out_c, 6), np.int64)
        for r in range(3):
            w0, w1, w2 = (scale * w[:, 3 * r + k] for k in range(3))
            pairs[:, 2 * r] = int16_pair(w0, w1)
            pairs[:, 2 * r + 1] = int16_pair(w1, w2)
        records = np.concatenate([wrap32(pairs), rq_table(scale * bias, rq).astype(np.int64)], axis=1)
        unpack = dw_int8_form(ctx, v, rq, scale * bias, scale)
        if rq.fast and rq.clamp_is_int8 and dw_cases_fit(v.out_w, v.out_c, plane_w, v.sh) and DW_CASES is not False:
            candidate = tuple(rq_lines(x, rq) for x in dw_asm_cases(v.out_w, v.out_c, plane_w, v.sh, rq.sign_free))
            if DW_CASES or dw_cases_pay(v, plane_w, rq, candidate, ctx.flash_tight,
                                        same_code_layers(ctx, v) if unpack else 1):
                asm_cases = candidate
        cases = bool(asm_cases)
        rows = not cases and rq.fast and rq.clamp_is_int8 and (
            dw_rows_fit(v.out_w, v.out_c, plane_w) if v.sh == 1 else DW_S2_ROWS and dw_s2_rows_fit(v.out_w, v.out_c, plane_w))
        if rows:
            rows_code = dw_asm_rows if v.sh == 1 else dw_asm_rows_s2
            asm_rows = rq_lines(rows_code(v.out_w, v.out_c, plane_w, rq.sign_free), rq)
        if rows or cases:
            records[-1, 9] = int(wrap32(np.array([int(records[-1, 9]) | DW_LAST_CHANNEL]))[0])  # C masks it off
        if unpack:
            # flash: the int8 form (dw3_int8_consts); the kernel rebuilds the records above in
            # its scratch after the ring
            weights, table = dw3_int8_consts(ctx, i, "", w, scale * bias, rq, "", scale)
        else:
            weights = ctx.const(i, "fw", "int32_t", records.astype(np.int32),
                                f"per channel: weights {scale_note(scale, rq)} as int16 pairs (w0,w1),(w1,w2) for rows 0..2, then "
                                f"(bias + input_offset*sum(w)) {scale_note(scale, rq)}, multiplier, K or shift, e"
                                + (" (bit 31: the last channel)" if rows or cases else ""))
            table = weights
        if not rows and not cases:
            asm_loop, asm_tail = dw_asm_case_blocks(v, rq, plane_w)
    else:
        weights = ctx.const(i, "fw", "int16_t", (scale * w).astype(np.int16), f"weights x{scale} [channel][3x3]")
        table = ctx.const(i, "rq", "int32_t", rq_table(scale * bias, rq),
                          f"per channel: (bias + input_offset*sum(w)) x{scale}, multiplier, K or shift, e")
    scratch_bytes = v.out_c * 3 * plane_w * 2  # the ring: 3 rows per channel
    if unpack:
        scratch_bytes += 4 * DW_RECORD * v.out_c  # then the records rebuilt from the int8 form
    sname = ctx.scratch_for(i, scratch_bytes)
    copy_rows = min(v.in_h, plane_h - v.pad_t)
    copy_cols = min(v.in_w, (v.out_w - 1) * s + 3 - v.pad_l)
    return DepthwisePlan(
        name=f"{ctx.name}_l{i}_dw", index=i, isa=ctx.t.isa.value, v=v, plane_h=plane_h, plane_w=plane_w, rq=rq,
        weights=weights, table=table, scratch_bytes=scratch_bytes, in_offset=v.input.offset,
        out_offset=v.output.offset, scratch_offset=-1, copy_rows=copy_rows, copy_cols=copy_cols,
        asm_loop=asm_loop, asm_tail=asm_tail, asm_blocks=v.out_w // DW_BLOCK if asm_loop or asm_tail or asm_rows else 0,
        asm_rows=asm_rows, asm_cases=asm_cases, unpack=unpack,
    ), sname


DW_S2_ROWS = True  # DSP 3x3 stride 2 with at most DW_BLOCK + 3 outputs a row: one copy of the code (dw_asm_rows_s2)
DW_UNIFORM = True  # DSP 3x3: one shift for every channel where requant.uniform_requant finds one


def uniform_d(scale) -> np.ndarray:
    """d = E - e of each channel from its scale 2^(d+1) (requant.uniform_scale)."""
    return np.round(np.log2(np.asarray(scale, np.float64))).astype(np.int64) - 1


def uniform_packs(bias: np.ndarray) -> bool:
    """Whether the unscaled biases survive the shift by RQ_E_BITS (d in the bits freed)."""
    b = np.asarray(bias, np.int64)
    return bool(np.all(np.abs(b) < 1 << (31 - RQ_E_BITS - 1)))


def scale_note(scale, rq: Requant) -> str:
    """How a constant's comment names its factor: x2, x1, or per channel 2^(E-e+1)."""
    return f"x2^(E-e+1) (E = {int(rq.e[0])})" if rq.truncating else f"x{scale}"


DW_INT8_FORM: Optional[bool] = None  # DSP 3x3: the int8 form (True) or the records (False) everywhere; None: per layer
DW_INT8_BYTES = 17  # flash per channel of the 3x3 int8 form: 9 weights (int8), bias with e and M (int32)
DW3_W8_PAD = 3  # bytes after the last channel's weights: the rebuild reads each kernel row as a word


def dw3_rebuild_args(rq: Requant) -> tuple[int, int]:
    """mcugen_dw3_records' `k_odd` and `top`: 2 zero_point + 1 and 0 (the short form), (2
    zero_point + 1) 2^(E-1) and E (one shift E for every channel), 0 and 0 (the general form)."""
    if rq.truncating:
        top = int(rq.e[0])
        return (2 * rq.output_offset + 1) << (top - 1), top
    return (2 * rq.output_offset + 1 if rq.fast else 0), 0


def dw3_int8_consts(ctx: KernelContext, i: int, prefix: str, w: np.ndarray, tbias: np.ndarray, rq: Requant,
                    what: str, scale=2) -> tuple[str, str]:
    """The constants of the 3x3 depthwise int8 form (`<prefix>w8`, `<prefix>bm`), which
    mcugen_dw3_records rebuilds into DW_RECORD-word records: short requantization, the 9 int8
    weights per channel (DW3_W8_PAD bytes of padding at the end) and per channel the table's bias
    `tbias` shifted left by RQ_E_BITS with e in the bits freed (K follows from e), then M
    (`rq_e_packs` must hold); the general form, 9 weights and the shift per channel, bias and M.
    One shift for every channel (rq.truncating, the weights and `tbias` scaled by `scale` =
    2^(d+1)): the bias word holds the unscaled bias * 2^RQ_E_BITS + d (uniform_packs)."""
    if rq.truncating:
        w8 = np.concatenate([w.reshape(-1), np.zeros(DW3_W8_PAD)])
        packed = np.stack([bias_with_e(np.asarray(tbias, np.int64) // scale, uniform_d(scale)),
                           rq.multiplier.astype(np.int64)], axis=1)
        bias_note = f"(bias + input_offset*sum(w)) * 2^{RQ_E_BITS} + d (d = E - e, E = {int(rq.e[0])}; the rebuild scales by 2^(d+1))"
        w8_note = f"weights [3x3] per channel ({DW3_W8_PAD} bytes of padding at the end)"
        weights = ctx.const(i, prefix + "w8", "int8_t", w8.astype(np.int8),
                            f"{what}{w8_note} (the kernel rebuilds its {DW_RECORD}-word records in scratch)")
        table = ctx.const(i, prefix + "bm", "int32_t", wrap32(packed).astype(np.int32),
                          f"{what}per channel: {bias_note}, multiplier")
        return weights, table
    if rq.fast:
        w8 = np.concatenate([w.reshape(-1), np.zeros(DW3_W8_PAD)])
        packed = rq_table_packed(tbias, rq)[1:].reshape(-1, 2)
        bias_note = f"* 2^{RQ_E_BITS} + e"
        w8_note = f"weights [3x3] per channel ({DW3_W8_PAD} bytes of padding at the end)"
    else:
        w8 = np.concatenate([w, rq.shift[:, None]], axis=1).reshape(-1)
        packed = np.stack([wrap32(np.asarray(tbias, np.int64)), rq.multiplier.astype(np.int64)], axis=1)
        bias_note = ""
        w8_note = "per channel: weights [3x3], then the shift"
    scale = "x2" if rq.fast else ""
    weights = ctx.const(i, prefix + "w8", "int8_t", w8.astype(np.int8),
                        f"{what}{w8_note} (the kernel rebuilds its {DW_RECORD}-word records in scratch)")
    table = ctx.const(i, prefix + "bm", "int32_t", packed.astype(np.int32),
                      f"{what}per channel: (bias + input_offset*sum(w)) {scale} {bias_note}, multiplier".replace("  ", " "))
    return weights, table


def dw_int8_form(ctx: KernelContext, v: ConvView, rq: Requant, tbias: np.ndarray, scale=2) -> bool:
    """DSP 3x3: whether the layer keeps its weights int8 in flash (DW_INT8_BYTES per channel)
    and rebuilds its DW_RECORD-word records in scratch at each call, rather than keeping the
    records in flash. The rebuild costs instructions per channel (the "/u8" row of the cost
    table, per output channel), the records 4 * DW_RECORD - DW_INT8_BYTES bytes per channel more:
    the int8 form unless `larger_form_pays`. Only where the rebuild is exact: short form, e rides
    in the table's bias `tbias` and K follows from it (`rq_e_packs`); general form, the shift fits
    int8. No estimate: the int8 form. DW_INT8_FORM forces either form where it is exact. One
    shift for every channel: where uniform_packs."""
    if rq.truncating:
        if not uniform_packs(np.asarray(tbias, np.int64) // scale):
            return False
    elif rq.fast and not rq_e_packs(tbias, rq):
        return False
    if not rq.fast and np.abs(rq.shift).max() > 127:
        return False
    if DW_INT8_FORM is not None:
        return DW_INT8_FORM
    out = v.out_h * v.out_w * v.out_c
    fam = f"depthwise/3x3/s{v.sh}"
    small = family_estimate(ctx.t.isa.value, fam + "/u8", [v.macs, out, v.out_c, 1])
    large = family_estimate(ctx.t.isa.value, fam, [v.macs, out, v.in_h * v.in_w * v.in_c, 1])
    if small is None or large is None:
        return True
    return not larger_form_pays(small - large, small, (4 * DW_RECORD - DW_INT8_BYTES) * v.out_c, ctx.flash_tight)


SHARE_C_ARG: Optional[bool] = None  # 3x3 layers that differ in their channels share code: True/False always / never; None: by cost
C_ARG_INSTRUCTIONS = 1  # per channel and output row whose store group has more than 3 outputs (c_arg_stores)


def _c_arg_candidate(pl) -> bool:
    """A DSP 3x3 layer in the int8 form whose row kernel can take its channel count as an argument."""
    return (pl.kind == "depthwise" and pl.isa == "dsp" and pl.unpack and not pl.row_words
            and bool(pl.asm_cases or (pl.asm_rows and pl.v.sh == 1)) and pl.v.out_c % 4 == 0
            and dw_c_arg_fits(pl.v.out_w, pl.v.sh, not pl.asm_cases))


def _with_c_arg(pl):
    """`pl` with its channel count an argument: the row kernel's stores by register offsets."""
    v = pl.v
    if pl.asm_cases:
        cases = dw_asm_cases(v.out_w, v.out_c, pl.plane_w, v.sh, pl.rq.sign_free, c_arg=True)
        return dataclasses.replace(pl, c_arg=True, asm_cases=tuple(rq_lines(x, pl.rq) for x in cases))
    return dataclasses.replace(pl, c_arg=True, asm_rows=rq_lines(dw_asm_rows(v.out_w, v.out_c, pl.plane_w,
                                                                             pl.rq.sign_free, c_arg=True), pl.rq))


def _c_arg_pays(plans: list, members: list[int]) -> bool:
    """Whether layers that differ in their channel count share one copy of the code: the stores
    cost C_ARG_INSTRUCTIONS per channel and output row (where a store group has more than three
    outputs) in every member, against the copies of the row kernel the others no longer print;
    unless `larger_form_pays` for the copies."""
    if SHARE_C_ARG is not None:
        return SHARE_C_ARG
    cost = 0
    for n in members:
        v = plans[n].v
        group = min(v.out_w, dw_cases_step(v.sh)) if plans[n].asm_cases else v.out_w
        cost += C_ARG_INSTRUCTIONS * v.out_c * v.out_h * (1 if group > 3 else 0)
    copies = len({plans[n].v.out_c for n in members}) - 1
    first = plans[members[0]]
    lines = sum(len(c) for c in first.asm_cases) if first.asm_cases else len(first.asm_rows)
    small = sum(2 * plans[n].v.macs for n in members) + cost
    return not larger_form_pays(cost, small, copies * ASM_LINE_BYTES * lines, False)


def share_dw_code(plans: list, render) -> list:
    """3x3 DSP depthwise layers in the int8 form that would print the same code share one copy
    (`base.share_identical_code`); first, those that would print the same code but for their
    channel count take it as an argument (`c_arg`) where `_c_arg_pays`, the first such layer
    owning the code."""
    out = list(plans)
    variants = {n: _with_c_arg(pl) for n, pl in enumerate(plans) if _c_arg_candidate(pl)}
    keys = {n: placeholder_key(var, render, scratch_bytes=0, v=dataclasses.replace(var.v, out_c=0, in_c=0))
            for n, var in variants.items()}
    for members in group_by_key(keys):
        if len({plans[n].v.out_c for n in members}) > 1 and _c_arg_pays(plans, members):
            own_and_call(out, members, variants)  # else the same channels (below), or the copies pay
    return share_identical_code(out, render, lambda pl: pl.kind == "depthwise" and pl.unpack and not pl.c_arg)


# ---- kh x kw (kw odd, not 3x3): the ring of kh rows, one assembly for every ring case -------------

DW_K_MAX = 9  # the largest kernel height and width of the general ring kernel
# DSP: the kh x kw kernel's weights as int8 bytes (True) or int16 pairs (False) everywhere; None:
# per layer (dw_k_int8_weights)
DW_K_INT8_WEIGHTS: Optional[bool] = None
DW_K_REGS = {"a0": "r0", "a1": "r1", "a2": "r2", "a3": "r3", "wa": "r4", "wc": "r5", "d0": "r6", "d1": "r8",
             "t": "r9", "b": "r10", "p": "r11", "w": "r12", "o": "lr"}  # + r7 (stride 2: d2, saved here)


def dw_k_weights(w: np.ndarray, kh: int, kw: int, stride: int, int8: bool = False) -> np.ndarray:
    """Per channel (rows of `w`, [C][kh*kw]) and kernel row, the weight pairs the row kernel
    reads, as int32 words; with m = (kw - 1) / 2, P_t = (w[2t], w[2t+1]) and Q_t = (w[2t-1], w[2t])
    (low half first), in the order the kernel uses them: stride 1: P_0, Q_1, P_1, Q_2, ...,
    P_{m-1}, Q_m (an even output takes P_0..P_{m-1} and the top of Q_m, an odd one the bottom of
    P_0 and Q_1..Q_m); stride 2: P_0..P_{m-1}, Q_m. int16 pairs: one pair per word (stride 1:
    kw - 1 words, stride 2: m + 1). `int8`: two pairs per word as bytes (a.lo, b.lo, a.hi, b.hi),
    which SXTB16 and SXTB16 ROR 8 turn into pairs a and b (stride 1: m words, stride 2:
    ceil((m + 1) / 2), a missing last pair zero); `w` must then fit int8."""
    m = (kw - 1) // 2
    cols = []
    for r in range(kh):
        row = [w[:, r * kw + c] for c in range(kw)]
        pair = {("P", t): (row[2 * t], row[2 * t + 1]) for t in range(m)}
        pair.update({("Q", t): (row[2 * t - 1], row[2 * t]) for t in range(1, m + 1)})
        if stride == 1:
            order = [pair[x] for t in range(m) for x in (("P", t), ("Q", t + 1))]
        else:
            order = [pair[("P", t)] for t in range(m)] + [pair[("Q", m)]]
        if not int8:
            cols += [int16_pair(lo, hi) for lo, hi in order]
            continue
        zero = np.zeros_like(row[0])
        if len(order) % 2:
            order.append((zero, zero))
        for (alo, ahi), (blo, bhi) in zip(order[0::2], order[1::2]):
            assert max(np.abs(x).max() for x in (alo, ahi, blo, bhi)) <= 128
            cols.append((alo & 0xFF) | ((blo & 0xFF) << 8) | ((ahi & 0xFF) << 16) | ((bhi & 0xFF) << 24))
    return wrap32(np.stack(cols, axis=1))


def dw_k_block(n: int, kh: int, kw: int, stride: int, row_words: int, out_c: int, sign_free: bool,
               int8: bool = False) -> list[str]:
    """Armv7E-M instructions for `n` (<= DW_BLOCK) consecutive outputs of one channel of a
    kh x kw depthwise row (registers DW_K_REGS by operand name, r7 literally). %[t]: kh + 1 words,
    the byte offsets of kernel rows 0..kh-1 in the channel's ring (then the step loop's end);
    %[b]: the channel's ring at the block's first column; %[w]: the channel's record
    (dw_k_weights per kernel row, then bias, M, K, e); %[o]: the first output. Per kernel row:
    %[p] = %[b] + its offset, then by stages t = 0..m (m = (kw - 1) / 2) every output takes one
    SMLAxy. Stride 1: stage t reads ring words t and t + 1 (two data registers) and the weight
    pairs P_t (even outputs) and Q_t (odd ones), one LDRD (P_t, Q_t+1) per stage. Stride 2:
    output j reads words j + t (four data registers, d2 = r7, d3 = wc) and one weight word per
    stage. The first SMLAxy of each output in row 0 adds the bias held in the last accumulator.
    `int8` (dw_k_weights' bytes): stride 1 loads stage t's word (P_t, Q_t+1) into %[wc] once the
    odd outputs are done with Q_t and unpacks it with SXTB16 (ROR 8); stride 2 loads the word of
    stage t and unpacks its half; weights and bias are not doubled, the accumulators are before
    the requantization."""
    m = (kw - 1) // 2
    rq_at = 4 * kh * row_words
    bias = f"%[a{n - 1}]"
    lines = [f"ldr {bias}, [%[w], #{rq_at}]"]
    started: set[int] = set()  # outputs whose accumulator holds its first product

    def mac(op: str, j: int, d: str, wreg: str) -> None:
        add = bias if j not in started and j < n - 1 else f"%[a{j}]"
        started.add(j)
        lines.append(f"{op} %[a{j}], {d}, {wreg}, {add}")

    for k in range(kh):
        lines += [f"ldr %[p], [%[t], #{4 * k}]", "add %[p], %[p], %[b]"]
        rw = 4 * k * row_words

        if stride == 1:
            d = ("%[d0]", "%[d1]")
            two = n > 2  # outputs 2 and 3 read the next word
            if int8:
                lines += [f"ldr %[wc], [%[w], #{rw}]", "sxtb16 %[wa], %[wc]", "sxtb16 %[wc], %[wc], ror #8"]
            else:
                lines.append(f"ldrd %[wa], %[wc], [%[w], #{rw}]")
            lines.append(f"ldrd {d[0]}, {d[1]}, [%[p]]" if two else f"ldr {d[0]}, [%[p]]")
            for j in range(n):
                mac("smlad" if j % 2 == 0 else "smlatb", j, d[(j // 2) % 2], "%[wa]")
            for t in range(1, m + 1):
                lines.append(f"ldr {d[(t + 1) % 2]}, [%[p], #{4 * (t + 1)}]" if two else f"ldr {d[t % 2]}, [%[p], #{4 * t}]")
                for j in range(1, n, 2):
                    mac("smlad", j, d[(t + j // 2) % 2], "%[wc]")
                if t < m and int8:
                    lines += [f"ldr %[wc], [%[w], #{rw + 4 * t}]", "sxtb16 %[wa], %[wc]", "sxtb16 %[wc], %[wc], ror #8"]
                elif t < m:
                    lines.append(f"ldrd %[wa], %[wc], [%[w], #{rw + 8 * t}]")
                for j in range(0, n, 2):
                    mac("smlad" if t < m else "smlabt", j, d[(t + j // 2) % 2], "%[wa]" if t < m else "%[wc]")
        else:
            d = ("%[d0]", "%[d1]", "r7", "%[wc]")
            i = 0
            while i < n:
                if i + 1 < n:
                    lines.append(f"ldrd {d[i]}, {d[i + 1]}, [%[p], #{4 * i}]" if i else f"ldrd {d[i]}, {d[i + 1]}, [%[p]]")
                    i += 2
                else:
                    lines.append(f"ldr {d[i]}, [%[p], #{4 * i}]" if i else f"ldr {d[i]}, [%[p]]")
                    i += 1
            for t in range(m + 1):
                if t:
                    lines.append(f"ldr {d[(t + n - 1) % 4]}, [%[p], #{4 * (t + n - 1)}]")
                if int8:
                    lines += [f"ldr %[wa], [%[w], #{rw + 4 * (t // 2)}]", "sxtb16 %[wa], %[wa]" + (", ror #8" if t % 2 else "")]
                else:
                    lines.append(f"ldr %[wa], [%[w], #{rw + 4 * t}]")
                for j in range(n):
                    mac("smlad" if t < m else "smlabt", j, d[(j + t) % 4], "%[wa]")
    # the short requantization in place, y = ssat8((SMMLAR(acc, M, K) [+ (acc >> 31)]) >> e),
    # then the stores one after the other (a store after a store pipelines)
    lines += [f"ldrd %[wa], %[wc], [%[w], #{rq_at + 4}]", f"ldr %[d0], [%[w], #{rq_at + 12}]"]
    post = out_c <= 255
    for j in range(n):
        if int8:
            lines.append(f"add %[a{j}], %[a{j}], %[a{j}]")  # the doubled accumulator
        lines += requant_in_place(j, "%[wa]", "%[wc]", sign_free)
    for j in range(n):
        lines.append(f"strb %[a{j}], [%[o]], #{out_c}" if post else f"strb %[a{j}], [%[o], #{j * out_c}]")
    if not post:
        lines.append(f"add %[o], %[o], #{n * out_c}")
    return lines


def dw_asm_k(kh: int, kw: int, stride: int, out_w: int, out_c: int, row_words: int, sign_free: bool,
             int8: bool = False) -> tuple[str, ...]:
    """One channel's output row: the loop of DW_BLOCK outputs per step (%[b] moves on
    DW_BLOCK * stride columns; it runs until %[b] equals %[t][kh]), then the row's last
    out_w % DW_BLOCK outputs. Stride 2 saves r7 (maybe the frame pointer) around its use."""
    blocks, tail = divmod(out_w, DW_BLOCK)
    lines = ["push {r7}"] if stride == 2 else []
    if blocks:
        lines.append("1:")
        lines += dw_k_block(DW_BLOCK, kh, kw, stride, row_words, out_c, sign_free, int8)
        lines += [f"add %[b], %[b], #{2 * DW_BLOCK * stride}", f"ldr %[p], [%[t], #{4 * kh}]", "cmp %[b], %[p]", "bne 1b"]
    if tail:
        lines += dw_k_block(tail, kh, kw, stride, row_words, out_c, sign_free, int8)
    if stride == 2:
        lines.append("pop {r7}")
    return tuple(lines)


def dw_k_fits(kh: int, row_words: int, out_c: int) -> bool:
    """The immediates of dw_k_block encode: record offsets within LDRD's 1020 bytes, stores
    post-indexed up to 255 channels, else immediate offsets (and the pointer step) to 4095."""
    return 4 * (kh * row_words + 3) <= 1020 and (out_c <= 255 or DW_BLOCK * out_c <= 4095)


def dw_k_int8_weights(ctx: KernelContext, v: ConvView) -> bool:
    """DSP kh x kw: whether the layer keeps its weights int8 (two pairs per word, unpacked by
    SXTB16) rather than as int16 pairs: unless `larger_form_pays` for the estimated instructions
    the pairs save (the "/i8" rows of the cost table against the family's) and the bytes they add.
    No estimate for either form: the int8 one."""
    kh, kw, s = v.kh, v.kw, v.sh
    m = (kw - 1) // 2
    words16 = kw - 1 if s == 1 else m + 1
    words8 = m if s == 1 else (m + 2) // 2
    fam = f"depthwise/{kh}x{kw}/s{s}"
    x = [v.macs, v.out_h * v.out_w * v.out_c, v.in_h * v.in_w * v.in_c, 1]
    small = family_estimate(ctx.t.isa.value, fam + "/i8", x)
    large = family_estimate(ctx.t.isa.value, fam, x)
    if small is None or large is None:
        return True
    return not larger_form_pays(small - large, small, 4 * kh * (words16 - words8) * v.out_c, ctx.flash_tight)


# DSP kh x kw: the compact form (True: int8 weights in flash, the records rebuilt in scratch at
# each call) or the records in flash (False) wherever the compact form is exact; None: dw_k_compact
DW_K_COMPACT: Optional[bool] = None
DW_K_REBUILD_WORD = 4  # instructions the rebuild spends per weight word (a load, two to three ALU, a store)
DW_K_REBUILD_CHANNEL = 14  # ... and per channel (bias, M, K, e, the loop)


def dw_k_rebuild(kw: int, stride: int, int8: bool) -> tuple[tuple[str, int, int], ...]:
    """How the compact form's rebuild makes the weight words of one kernel row (dw_k_weights, in
    record order) from the row's int8 weights w[0..kw-1] in flash: per step (kind, word, byte
    offset of the four bytes x it loads; a channel's weights come first, so the last row's last
    load may run up to two bytes past them). Kinds: "pq8": the bytes (x0, x1, x1, x2) (an int8
    word of P_t, Q_t+1; stride 2 also P_m-1, Q_m); "perm8": (x0, x2, x1, x3) (stride 2, P_t and
    P_t+1); "qz8": (x0, 0, x1, 0) (stride 2, Q_m and the zero pair); "pair16": the int16 pair
    (x0, x1); "pairs16": the pairs (x0, x1) and (x1, x2), two words. int16 pairs are doubled where
    the record's are (the template's)."""
    m = (kw - 1) // 2
    if int8 and stride == 1:
        return tuple(("pq8", u, 2 * u) for u in range(m))
    if int8:
        steps = []
        for u in range((m + 2) // 2):
            if 2 * u + 1 < m:
                steps.append(("perm8", u, 4 * u))
            elif 2 * u + 1 == m:
                steps.append(("pq8", u, 2 * m - 2))
            else:
                steps.append(("qz8", u, 2 * m - 1))
        return tuple(steps)
    if stride == 1:
        return tuple(("pairs16", t, t) for t in range(0, kw - 1, 2))
    return tuple(("pair16", t, 2 * t) for t in range(m)) + (("pair16", m, 2 * m - 1),)


def rebuild_words(weights: np.ndarray, steps: tuple[tuple[str, int, int], ...], kh: int, kw: int,
                  row_words: int, scale: int) -> np.ndarray:
    """What dw_k_rebuild's steps make of int8 weights [C][kh*kw], row by row (as the C code
    computes it, on bytes): the weight words per channel [C][kh*row_words], int32 wrapped."""
    b = np.concatenate([weights.astype(np.int64) & 0xFF, np.zeros((weights.shape[0], 4), np.int64)], axis=1)
    s8 = ((b ^ 0x80) - 0x80) * scale & 0xFFFF
    out = np.zeros((weights.shape[0], kh * row_words), np.int64)
    for r in range(kh):
        for kind, k, o in steps:
            k, o = k + r * row_words, o + r * kw
            x0, x1, x2, x3 = b[:, o], b[:, o + 1], b[:, o + 2], b[:, o + 3]
            if kind == "pq8":
                out[:, k] = x0 | x1 << 8 | x1 << 16 | x2 << 24
            elif kind == "perm8":
                out[:, k] = x0 | x2 << 8 | x1 << 16 | x3 << 24
            elif kind == "qz8":
                out[:, k] = x0 | x1 << 16
            else:
                out[:, k] = s8[:, o] | s8[:, o + 1] << 16
                if kind == "pairs16":
                    out[:, k + 1] = s8[:, o + 1] | s8[:, o + 2] << 16
    return wrap32(out)


def dw_k_compact(ctx: KernelContext, v: ConvView, rq: Requant, record: int, row_words: int, small: Optional[float],
                 tbias: np.ndarray) -> bool:
    """DSP kh x kw with the assembly: whether the layer keeps its weights as int8 in flash
    (kh*kw weights per channel, the bias word with e and M as words) and rebuilds its `record`-word records
    in scratch after the ring at each call (dw_k_rebuild), rather than keeping the records in
    flash: unless `larger_form_pays` for the rebuild's instructions (DW_K_REBUILD_WORD per weight
    word, DW_K_REBUILD_CHANNEL per channel) against the bytes the records add. Only where the
    rebuild is exact: e rides in the table's bias word `tbias` and K = (2 zero_point + 1) 2^(e-1)
    (rq_e_packs, as the 3x3 int8 form's)."""
    if not rq_e_packs(tbias, rq):
        return False
    if DW_K_COMPACT is not None:
        return DW_K_COMPACT
    rebuild = v.out_c * (DW_K_REBUILD_WORD * v.kh * row_words + DW_K_REBUILD_CHANNEL)
    added = v.out_c * (4 * record - (v.kh * v.kw + 8))
    return not larger_form_pays(rebuild, small if small is not None else 2 * v.macs, added, ctx.flash_tight)


def select_depthwise_k(ctx: KernelContext, layer: Layer, v: ConvView,
                       int8_weights: Optional[bool] = None) -> Optional[tuple[DepthwisePlan, str]]:
    """kh x kw DEPTHWISE_CONV_2D other than 3x3 (kw odd, both up to DW_K_MAX, multiplier 1,
    stride 1 or 2 both ways, dilation 1, batch 1): a ring of kh transposed int16 rows per
    channel. DSP: weights as int16 pairs, or `int8_weights` as bytes unpacked by SXTB16 (half
    the flash, a few more instructions; else DW_K_INT8_WEIGHTS, else per layer by
    dw_k_int8_weights), see dw_k_weights; the row in
    assembly (dw_asm_k) where the short requantization applies and the offsets encode, else in
    C. Helium and portable C: _select_depthwise_k_c. Otherwise None."""
    if not (v.batches == 1 and v.kw % 2 == 1 and 3 <= v.kw <= DW_K_MAX and 1 <= v.kh <= DW_K_MAX
            and v.dh == 1 and v.dw == 1 and v.depth_multiplier == 1 and v.sh == v.sw and v.sh in (1, 2)):
        return None
    kh, kw, s = v.kh, v.kw, v.sh
    m = (kw - 1) // 2
    w = v.weights.reshape(kh * kw, v.out_c).T  # [C][kh*kw]
    bias = v.bias + v.input_offset * w.sum(axis=1)
    acc_bound = np.abs(v.bias) + input_magnitude(v.input_offset) * np.abs(w).sum(axis=1)
    rq = plan_requant(acc_bound, v.multiplier, v.shift, v.output_offset, v.act_min, v.act_max)
    if ctx.t.isa is not Isa.DSP:
        return _select_depthwise_k_c(ctx, layer, v, w, bias, rq)
    if int8_weights is None:
        int8_weights = DW_K_INT8_WEIGHTS
    int8 = dw_k_int8_weights(ctx, v) if int8_weights is None else int8_weights
    # the short requantization wants a doubled accumulator: doubled weights and bias (int16
    # pairs), or (int8) the accumulator doubled before it
    scale = 2 if rq.fast and not int8 else 1
    pairs = dw_k_weights(scale * w, kh, kw, s, int8)
    row_words = pairs.shape[1] // kh
    records = np.concatenate([pairs, rq_table(scale * bias, rq).astype(np.int64)], axis=1)
    # stride 1: output x reads ring words x//2 .. x//2 + m; stride 2: words x .. x + m (whole
    # words, so the rows are an even number of columns and stay word aligned)
    plane_w = 2 * ((v.out_w - 1) // 2) + 2 * m + 2 if s == 1 else 2 * (v.out_w + m)
    plane_h = (v.out_h - 1) * s + kh
    asm: tuple[str, ...] = ()
    if rq.fast and rq.clamp_is_int8 and dw_k_fits(kh, row_words, v.out_c):
        asm = dw_asm_k(kh, kw, s, v.out_w, v.out_c, row_words, rq.sign_free, int8)
    i = layer.index
    names = "P0, Q1, P1, Q2, ..., Qm" if s == 1 else "P0, P1, ..., Qm"
    form = "int8 bytes (a.lo, b.lo, a.hi, b.hi) of two pairs a, b per word" if int8 else f"x{scale} int16 pairs"
    scratch_bytes = v.out_c * kh * plane_w * 2  # the ring: kh rows per channel
    x = [v.macs, v.out_h * v.out_w * v.out_c, v.in_h * v.in_w * v.in_c, 1]
    rebuild: tuple[tuple[str, int, int], ...] = ()
    tbias = records[:, kh * row_words]
    if asm and dw_k_compact(ctx, v, rq, records.shape[1], row_words,
                            family_estimate(ctx.t.isa.value, f"depthwise/{kh}x{kw}/s{s}" + ("/i8" if int8 else ""), x),
                            tbias):
        # flash: per channel the kh*kw int8 weights, then the bias word with e and M; the kernel
        # rebuilds the records in its scratch after the ring
        rebuild = dw_k_rebuild(kw, s, int8)
        weights = ctx.const(i, "w8", "int8_t", np.concatenate([w.reshape(-1), np.zeros(4)]).astype(np.int8),
                            f"per channel: weights [{kh}x{kw}] (the kernel rebuilds its {records.shape[1]}-word "
                            f"records in scratch; 4 bytes of padding at the end for its word loads)")
        table = ctx.const(i, "bm", "int32_t", rq_table_packed(tbias, rq)[1:].astype(np.int32),
                          f"per channel: (bias + input_offset*sum(w)) x{scale} * 2^{RQ_E_BITS} + e, multiplier")
        scratch_bytes += 4 * records.shape[1] * v.out_c
    else:
        weights = table = ctx.const(
            i, "fw", "int32_t", records.astype(np.int32),
            f"per channel: weights as {form} per kernel row ({names}; P_t = (w2t, w2t+1), "
            f"Q_t = (w2t-1, w2t)), then (bias + input_offset*sum(w)) x{scale}, multiplier, K or shift, e")
    sname = ctx.scratch_for(i, scratch_bytes)
    return DepthwisePlan(
        name=f"{ctx.name}_l{i}_dw", index=i, isa=ctx.t.isa.value, v=v, plane_h=plane_h, plane_w=plane_w, rq=rq,
        weights=weights, table=table, scratch_bytes=scratch_bytes, in_offset=v.input.offset,
        out_offset=v.output.offset, scratch_offset=-1, copy_rows=min(v.in_h, plane_h - v.pad_t),
        copy_cols=min(v.in_w, (v.out_w - 1) * s + kw - v.pad_l), asm_blocks=v.out_w // DW_BLOCK,
        ring=kh, row_words=row_words, record=records.shape[1], asm_k=asm, int8_weights=int8, rebuild=rebuild,
    ), sname


def _select_depthwise_k_c(ctx: KernelContext, layer: Layer, v: ConvView, w: np.ndarray, bias: np.ndarray,
                          rq: Requant) -> tuple[DepthwisePlan, str]:
    """The kh x kw ring kernel for Helium (four outputs of a channel per step, one VLDRH and one
    VMLA per tap, the exact vector requantization) and portable C (one output at a time):
    weights int16 [C][kh*kw], the requantization table apart."""
    kh, kw, s = v.kh, v.kw, v.sh
    plane_w = round_up((v.out_w - 1) * s + kw, 2)
    if ctx.t.isa is Isa.MVE:  # four outputs at a time read up to column (round_up(out_w, 4) - 1) * s + kw - 1
        plane_w = max(plane_w, round_up((round_up(v.out_w, 4) - 1) * s + kw, 2))
        rq = plan_requant(np.full(v.out_c, ACC_LIMIT), v.multiplier, v.shift, v.output_offset, v.act_min, v.act_max)
    scale = 2 if rq.fast else 1
    i = layer.index
    weights = ctx.const(i, "fw", "int16_t", (scale * w).astype(np.int16), f"weights x{scale} [channel][{kh}x{kw}]")
    table = ctx.const(i, "rq", "int32_t", rq_table(scale * bias, rq),
                      f"per channel: (bias + input_offset*sum(w)) x{scale}, multiplier, K or shift, e")
    plane_h = (v.out_h - 1) * s + kh
    scratch_bytes = v.out_c * kh * plane_w * 2
    sname = ctx.scratch_for(i, scratch_bytes)
    return DepthwisePlan(
        name=f"{ctx.name}_l{i}_dw", index=i, isa=ctx.t.isa.value, v=v, plane_h=plane_h, plane_w=plane_w, rq=rq,
        weights=weights, table=table, scratch_bytes=scratch_bytes, in_offset=v.input.offset,
        out_offset=v.output.offset, scratch_offset=-1, copy_rows=min(v.in_h, plane_h - v.pad_t),
        copy_cols=min(v.in_w, (v.out_w - 1) * s + kw - v.pad_l), ring=kh, row_words=kw, record=kh * kw,
    ), sname
