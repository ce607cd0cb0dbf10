"""ADD, MEAN and SOFTMAX kernels: their plans and their selection.

The templates that print these plans: templates/c/fast/misc.c.j2 (macros add, mean, softmax), called
from layers.c.j2.
"""

from __future__ import annotations

import dataclasses
from dataclasses import dataclass
from typing import ClassVar, Optional

import numpy as np

from mcugen import quant
from mcugen.kernels.base import KernelContext, larger_form_pays, layer_params
from mcugen.kernels.requant import Requant, fast_requant_exact, input_magnitude, plan_requant
from mcugen.lower import ArenaArg, Layer
from mcugen.targets import Isa


XS = np.arange(-128, 128, dtype=np.int64)  # every int8 value


@dataclass(frozen=True)
class LinearAdd:
    """ADD in one rounding: y = clamp((x1 * a + x2 * b + c) >> shift) for int8 x1, x2, two
    multiply-accumulates and a saturating shift per element. Found by `linear_add` and checked
    there against TFLite's reference ADD for all 65,536 input pairs; no int32 step overflows
    (128 |a| + 128 |b| + |c| < 2**31)."""

    a: int
    b: int
    c: int
    shift: int


def linear_add(table: np.ndarray, lo: int, hi: int, slope1: float, slope2: float, reach: int = 4) -> Optional[LinearAdd]:
    """The one-rounding form of an ADD whose outputs for every pair (x1, x2) are `table[x1 + 128,
    x2 + 128]` (clamped to lo..hi), or None where none near the real slopes fits.

    For a shift s (the one keeping the products below 2**30, then up to two more bits of
    precision, then one less), the coefficients a, b are tried within `reach` of slope * 2**s;
    each pair then bounds c: y 2**s <= x1 a + x2 b + c where y > lo, x1 a + x2 b + c < (y + 1) 2**s
    where y < hi (the clamped ends bound one side only). The pairs separate, so the bounds over x2 are taken once
    per b and those over x1 per a; c is the middle of what is left, and the form is then evaluated
    on every pair against the table."""
    big = 1 << 62
    reach_all = abs(slope1) + abs(slope2)
    if not reach_all > 0:
        return None
    # the shift where the products stay below 2**30 first (layers of like scales then share one
    # kernel per shift), then up to the most the products leave room for (c is checked), then one less
    base = int(np.floor(np.log2(2**29 / (128 * reach_all))))
    t = np.asarray(table, np.int64)

    def near(v: float) -> list[int]:
        r = int(round(v))
        return [r + d for d in sorted(range(-reach, reach + 1), key=abs)]

    for shift in (base, base + 1, base + 2, base - 1):
        if shift < 1:
            continue
        low = np.where(t > lo, t << shift, -big)
        high = np.where(t < hi, (t + 1) << shift, big)
        for b in near(slope2 * 2**shift):
            g = XS * b
            low1 = (low - g[None, :]).max(axis=1)  # per x1: the largest lower bound over x2
            high1 = (high - g[None, :]).min(axis=1)
            for a in near(slope1 * 2**shift):
                c_lo = int((low1 - XS * a).max())
                c_hi = int((high1 - XS * a).min())
                if c_lo >= c_hi:
                    continue
                c = (c_lo + c_hi - 1) // 2 if c_hi - c_lo < big // 2 else c_lo if c_lo > -big // 2 else 0
                if 128 * (abs(a) + abs(b)) + abs(c) >= 2**31:
                    continue
                y = np.clip((XS[:, None] * a + XS[None, :] * b + c) >> shift, lo, hi)
                if np.array_equal(y, t):
                    return LinearAdd(a, b, c, shift)
    return None


@dataclass(frozen=True)
class AddPlan:
    """ADD of two int8 tensors of one shape (no broadcasting), element by element.

    `fast`: each of the three requantizations (both inputs, then the sum) takes the short form,
    proved exact from the bounds of its operand; otherwise the general formula."""

    kind: ClassVar[str] = "add"
    name: str
    index: int
    isa: str
    size: int
    input1_offset: int
    input2_offset: int
    left_shift: int
    fast: bool
    m1: int
    k1: int  # K or TFLite shift
    e1: int
    m2: int
    k2: int
    e2: int
    mo: int
    ko: int
    eo: int
    output_offset: int
    act_min: int
    act_max: int
    # the short form computes the doubled sum the output's SMMLAR takes in one pass (add_doubled_sum):
    k1_fold: int = 0  # K of input 1's SMMLAR with the other input's constant folded in
    k2_fold: int = 0
    sum_const: int = 0  # the constant added to the doubled sum where neither input takes an SMMLAR
    linear: Optional[LinearAdd] = None  # the one-rounding form where it fits every input pair

    @property
    def clamp_is_int8(self) -> bool:
        return self.act_min == -128 and self.act_max == 127

    @property
    def shared_linear(self) -> bool:
        """The one-rounding form with the int8 clamp: the layer calls the shared kernel of its shift."""
        return self.linear is not None and self.clamp_is_int8

    def shift_input(self, n: int) -> bool:
        """Input n (1 or 2) of the short form has multiplier 1/2 (2^30) and no shift: its term is
        (x + offset) << (left_shift - 1), a shift, no SMMLAR."""
        m, k, e = (self.m1, self.k1, self.e1) if n == 1 else (self.m2, self.k2, self.e2)
        return self.fast and m == 1 << 30 and k == 0 and e == 0 and self.left_shift >= 1


def add_doubled_sum(plan: "AddPlan") -> tuple[int, int, int]:
    """(k1_fold, k2_fold, sum_const) of the short form's doubled sum 2 (rq1 + rq2), computed as
    D1 + D2 [+ sum_const]: an input on the shift gives D = x << left_shift, its constant
    offset << left_shift (even) going into the other input's K where that leaves room (times 2^e:
    ((t + c 2^e) >> (e - 1)) & -2 = ((t >> (e - 1)) & -2) + 2c for even 2c, and 2 (t + c) = 2t + 2c
    for e = 0), else into sum_const; an input on an SMMLAR gives D = ((t + sign) >> (e - 1)) & -2
    (e >= 1) or 2t (e = 0), t = SMMLAR((x << (left_shift + 1)) + (offset << (left_shift + 1)), M, K).
    The values are those of the two-step form, so its proof of exactness holds."""
    c = sum(o << plan.left_shift for n, o in ((1, plan.input1_offset), (2, plan.input2_offset)) if plan.shift_input(n))
    ks = {1: plan.k1, 2: plan.k2}
    for n, off, m, k, e in ((1, plan.input1_offset, plan.m1, plan.k1, plan.e1), (2, plan.input2_offset, plan.m2, plan.k2, plan.e2)):
        if plan.shift_input(n) or not c:
            continue
        folded = k + (c // 2) * (1 << e)  # c is even: left_shift >= 1
        u = input_magnitude(off) << (plan.left_shift + 1)
        if abs(folded) + ((u * m) >> 32) + 2 < 2**31:  # room for the product and the sign
            ks[n] = folded
            return ks[1], ks[2], 0
    return ks[1], ks[2], c


@dataclass(frozen=True)
class MeanPlan:
    """MEAN over height and width: per channel, the sum of `count` pixels, requantized. The DSP
    form sums four channels at a time in int16 lanes (SXTAB16), exact for count <= 256."""

    kind: ClassVar[str] = "mean"
    name: str
    index: int
    isa: str
    batches: int
    count: int
    channels: int
    input_zero_point: int
    simd: bool
    rq: Requant


@dataclass(frozen=True)
class SoftmaxPlan:
    """SOFTMAX over the last axis of int8 data, TFLite's reference arithmetic with the
    exponentials of the 256 possible differences (input - row max) taken from a table computed
    here with the same fixed-point functions (0 where the reference skips the element)."""

    kind: ClassVar[str] = "softmax"
    name: str
    index: int
    isa: str
    outer: int
    depth: int
    table: str  # "": each exponential computed where it is used (softmax_table_pays)
    input_multiplier: int = 0
    input_left_shift: int = 0
    diff_min: int = 0


def add_plan(name: str, index: int, isa: str, size: int, off1: int, off2: int, ls: int, m1: int, s1: int,
             m2: int, s2: int, mo: int, so: int, zp: int, act_min: int, act_max: int) -> "AddPlan":
    """ADD's arithmetic, in the short form where each of its three requantizations is proved exact."""
    b1 = input_magnitude(off1) << ls
    b2 = input_magnitude(off2) << ls
    fast = (
        fast_requant_exact(np.array([b1]), np.array([m1]), np.array([s1]), 0, allow_zero_shift=True)
        and fast_requant_exact(np.array([b2]), np.array([m2]), np.array([s2]), 0, allow_zero_shift=True)
    )
    if fast:
        bs = (b1 * m1 >> 31 >> -s1) + 1 + (b2 * m2 >> 31 >> -s2) + 1
        fast = fast_requant_exact(np.array([bs]), np.array([mo]), np.array([so]), zp, allow_zero_shift=True)

    def short(shift: int, zero_point: int) -> tuple[int, int]:
        e = -shift
        return ((1 << (e - 1)) if e > 0 else 0) + zero_point * (1 << e), e

    if fast:
        (k1, e1), (k2, e2), (ko, eo) = short(s1, 0), short(s2, 0), short(so, zp)
    else:
        k1, e1, k2, e2, ko, eo = s1, 0, s2, 0, so, 0
    plan = AddPlan(
        name=name, index=index, isa=isa, size=size, input1_offset=off1, input2_offset=off2, left_shift=ls, fast=fast,
        m1=m1, k1=k1, e1=e1, m2=m2, k2=k2, e2=e2, mo=mo, ko=ko, eo=eo, output_offset=zp, act_min=act_min, act_max=act_max,
    )
    if fast:
        k1f, k2f, const = add_doubled_sum(plan)
        plan = dataclasses.replace(plan, k1_fold=k1f, k2_fold=k2f, sum_const=const)
    params = quant.AddParams(ls, m1, s1, m2, s2, mo, so)
    table = np.clip(quant.add_int8(XS[:, None], XS[None, :], off1, off2, params) + zp, act_min, act_max)
    scale_out = mo / 2**31 * 2.0**so
    slope1, slope2 = (2.0**ls * m / 2**31 * 2.0**sh * scale_out for m, sh in ((m1, s1), (m2, s2)))
    return dataclasses.replace(plan, linear=linear_add(table, act_min, act_max, slope1, slope2))


def select_add(ctx: KernelContext, layer: Layer) -> Optional[tuple[AddPlan, None]]:
    """ADD of two arena tensors of one shape, every target; None for a constant operand or broadcasting."""
    p = layer_params(layer)
    a = layer.args
    if not all(isinstance(x, ArenaArg) for x in a[1:4]):
        return None  # a constant operand: keep the portable kernel
    shape = tuple(int(x) for x in p["out_shape"])
    dense, acc = [], 1
    for d in range(3, -1, -1):
        dense.insert(0, acc)
        acc *= shape[d]
    if tuple(p["in1_strides"]) != tuple(dense) or tuple(p["in2_strides"]) != tuple(dense):
        return None  # broadcasting
    return add_plan(
        f"{ctx.name}_l{layer.index}_add", layer.index, ctx.t.isa.value, int(np.prod(shape)),
        int(p["input1_offset"]), int(p["input2_offset"]), int(p["left_shift"]),
        *(int(p[k]) for k in ("input1_multiplier", "input1_shift", "input2_multiplier", "input2_shift",
                               "output_multiplier", "output_shift", "output_offset", "act_min", "act_max")),
    ), None


def select_mean(ctx: KernelContext, layer: Layer) -> tuple[MeanPlan, None]:
    """MEAN over height and width, every target (DSP and MVE: four channels at a time where exact)."""
    p = layer_params(layer)
    count = int(p["in_h"]) * int(p["in_w"])
    channels = int(p["channels"])
    zp_in = int(p["input_zero_point"])
    bound = np.array([count * input_magnitude(-zp_in)])
    rq = plan_requant(bound, np.array([int(p["multiplier"])]), np.array([int(p["shift"])]),
                      int(p["output_zero_point"]), -128, 127)
    simd = ctx.t.isa in (Isa.DSP, Isa.MVE) and channels % 4 == 0 and count <= 256
    return MeanPlan(
        name=f"{ctx.name}_l{layer.index}_mean", index=layer.index, isa=ctx.t.isa.value,
        batches=int(p["batches"]), count=count, channels=channels, input_zero_point=zp_in, simd=simd, rq=rq,
    ), None


def select_softmax(ctx: KernelContext, layer: Layer) -> tuple[SoftmaxPlan, None]:
    """SOFTMAX, every target: the exponential of each of the 256 differences from a table made here."""
    p = layer_params(layer)
    params = quant.SoftmaxParams(int(p["input_multiplier"]), int(p["input_left_shift"]), int(p["diff_min"]))
    diff = -np.arange(256, dtype=np.int64)  # table index d: input - max = -d
    scaled = np.asarray(quant.multiply_by_quantized_multiplier_greater_than_one(
        diff, params.input_multiplier, params.input_left_shift), np.int64)
    exps = np.asarray(quant.exp_on_negative_values(scaled, quant.SOFTMAX_SCALED_DIFF_INTEGER_BITS), np.int64)
    exps = np.where(diff >= params.diff_min, exps, 0)
    outer, depth = int(p["outer"]), int(p["depth"])
    table = ""
    if softmax_table_pays(outer * depth, ctx.flash_tight):
        table = ctx.const(layer.index, "exp", "int32_t", exps.astype(np.int32),
                          "exp(input - row max) in Q0.31 for input - max = 0, -1, ..., -255 (0: skipped)")
    return SoftmaxPlan(
        name=f"{ctx.name}_l{layer.index}_softmax", index=layer.index, isa=ctx.t.isa.value,
        outer=outer, depth=depth, table=table, input_multiplier=params.input_multiplier,
        input_left_shift=params.input_left_shift, diff_min=params.diff_min,
    ), None


SOFTMAX_EXP_INSTRUCTIONS = 220  # measured about, one exponential computed (the softmax's _exp, Cortex-M4)
SOFTMAX_EXP_CODE = 250  # bytes of that function (and its SRDHM, out of line), measured about
SOFTMAX_TABLE: Optional[bool] = None  # True/False: the table always / never; None: softmax_table_pays


def softmax_table_pays(elements: int, flash_tight: bool) -> bool:
    """Whether SOFTMAX keeps its 256 exponentials as a table in flash (1 KB) rather than computing
    each where it is used (twice per element, SOFTMAX_EXP_INSTRUCTIONS each): `larger_form_pays`."""
    if SOFTMAX_TABLE is not None:
        return SOFTMAX_TABLE
    gain = 2 * elements * SOFTMAX_EXP_INSTRUCTIONS
    return larger_form_pays(gain, gain + 40 * elements, 4 * 256 - SOFTMAX_EXP_CODE, flash_tight)
