"""Kernel specialisation pass: replaces a lowered Program's generic kernel calls by per-layer kernels for a target.

    lower(graph) -> Program --specialize(program, target)--> KernelPassResult
        .program   the same model, its CONV_2D / DEPTHWISE_CONV_2D / FULLY_CONNECTED / ADD /
                   SOFTMAX / MEAN layers and fused CHAIN layers (conv -> 3x3 depthwise -> 1x1
                   [-> ADD], in the ring and scratch lowering planned for them) now calling
                   `<name>_l<i>_<kind>()`, their constants
                   repacked (weights reordered, bias folded with the input offset, one
                   requantization table per layer), the arena grown by the scratch they need
        .files     `<name>_layers.c` / `<name>_layers.h` (rendered from templates/c/fast/) and
                   a `mcugen_kernels.h` that declares both the portable and the specialised kernels
        .scratch   the scratch buffers, one per layer that needs one (name, bytes, step)

Python decides everything (which layers, block sizes, tables, exactness conditions); the
templates only print. Every specialised kernel is bit-exact with TFLite's reference kernels:
requantization takes the one-instruction SMMLAR route only when a bound on the accumulator,
computed here from the weights, proves the short formula equal to TFLite's double rounding
(`plan_requant`); otherwise the layer uses the exact general formula. Layers a target has no
specialised kernel for keep the portable kernel.
"""

from __future__ import annotations

import dataclasses
from dataclasses import dataclass, field
from typing import ClassVar, Optional, Sequence

import numpy as np

from mcugen import quant
from mcugen.lower import ArenaArg, ConstArg, ConstArray, Layer, NullArg, Program
from mcugen.targets import EMULATE_DSP_MACRO, Isa, Target

INT32_MIN = -(2**31)
INT32_MAX = 2**31 - 1
SCRATCH_ALIGN = 16


# ---- what a kernel pass returns ------------------------------------------------------------


@dataclass(frozen=True)
class ScratchBuffer:
    """Working memory a layer's kernel needs while it runs: `size` bytes, live only at `step`.

    The planner can place it like a tensor live on [step, step]; until lowering does, the
    pass puts every scratch buffer at one region after the planned tensors (`place_scratch`).
    """

    name: str
    size: int
    step: int


@dataclass
class KernelPassResult:
    """A Program whose layers call target kernels, plus the C files and flags they need."""

    program: Program
    files: dict[str, str]
    scratch: list[ScratchBuffer]
    cflags: tuple[str, ...] = ()
    choices: dict[int, str] = field(default_factory=dict)  # layer index -> kernel chosen

    def merged_files(self, rendered: dict[str, str]) -> dict[str, str]:
        """The model's files (codegen.render_model of `self.program`) with this pass's files.

        The portable kernels' header becomes `mcugen_portable.h`; the pass's `mcugen_kernels.h`
        includes it and the specialised kernels' header, so `<name>.c` is unchanged.
        """
        files = dict(rendered)
        if "mcugen_kernels.h" in self.files:
            files["mcugen_portable.h"] = files.pop("mcugen_kernels.h")
        files.update(self.files)
        return files


def place_scratch(program: Program, needs: Sequence[ScratchBuffer]) -> tuple[Program, dict[str, int]]:
    """Arena offsets of the scratch buffers, and the Program with its arena grown to hold them.

    A buffer the plan already placed at least as large (lowering planned the step's scratch
    with the tensors) keeps that offset. The others share one region after the planned
    tensors: each is live only during its own layer, so one region as large as the largest of
    them serves all.
    """
    offsets: dict[str, int] = {}
    planned = {b.name: b.size for b in program.buffers}
    base = -(-program.arena_bytes // SCRATCH_ALIGN) * SCRATCH_ALIGN
    top = program.arena_bytes
    for s in needs:
        if s.name in program.plan.offsets and planned.get(s.name, 0) >= s.size:
            offsets[s.name] = program.plan.offsets[s.name]
        else:
            offsets[s.name] = base
            top = max(top, base + s.size)
    return dataclasses.replace(program, arena_bytes=top), offsets


# ---- views of the lowered layers -----------------------------------------------------------


def _params(layer: Layer) -> dict:
    return {p.name: p.value for p in layer.params}


def _const(consts: dict[str, ConstArray], arg) -> Optional[np.ndarray]:
    if isinstance(arg, ConstArg):
        return consts[arg.cname].values
    if isinstance(arg, NullArg):
        return None
    raise TypeError(f"expected a constant argument, got {arg!r}")


@dataclass(frozen=True)
class ConvView:
    """A CONV_2D or DEPTHWISE_CONV_2D layer's shapes and integer parameters (from lowering)."""

    layer: Layer
    depthwise: bool
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
    dh: int
    dw: int
    pad_t: int
    pad_l: int
    depth_multiplier: int
    input_offset: int
    output_offset: int
    act_min: int
    act_max: int
    input: ArenaArg
    output: ArenaArg
    weights: np.ndarray  # conv: [out_c, kh, kw, in_c]; depthwise: [1, kh, kw, out_c]
    bias: np.ndarray  # int64 [out_c] (zeros if the model has none)
    multiplier: np.ndarray  # int64 [out_c]
    shift: np.ndarray  # int64 [out_c]

    @property
    def macs(self) -> int:
        per = self.kh * self.kw * (1 if self.depthwise else self.in_c)
        return self.batches * self.out_h * self.out_w * self.out_c * per


def conv_view(layer: Layer, consts: dict[str, ConstArray]) -> ConvView:
    p = _params(layer)
    a = layer.args
    out_c = int(p["out_c"])
    bias = _const(consts, a[3])
    return ConvView(
        layer=layer,
        depthwise=layer.kernel in ("mcugen_depthwise_conv2d_s8", "mcugen_depthwise_conv2d_inplace_s8"),
        batches=int(p["batches"]),
        in_h=int(p["in_h"]),
        in_w=int(p["in_w"]),
        in_c=int(p["in_c"]),
        out_h=int(p["out_h"]),
        out_w=int(p["out_w"]),
        out_c=out_c,
        kh=int(p["kernel_h"]),
        kw=int(p["kernel_w"]),
        sh=int(p["stride_h"]),
        sw=int(p["stride_w"]),
        dh=int(p["dilation_h"]),
        dw=int(p["dilation_w"]),
        pad_t=int(p["pad_top"]),
        pad_l=int(p["pad_left"]),
        depth_multiplier=int(p["depth_multiplier"]),
        input_offset=int(p["input_offset"]),
        output_offset=int(p["output_offset"]),
        act_min=int(p["act_min"]),
        act_max=int(p["act_max"]),
        input=a[1],
        output=a[6],
        weights=np.asarray(_const(consts, a[2])).astype(np.int64),
        bias=np.zeros(out_c, np.int64) if bias is None else np.asarray(bias).astype(np.int64).reshape(-1),
        multiplier=np.broadcast_to(np.asarray(_const(consts, a[4])).astype(np.int64).reshape(-1), (out_c,)).copy(),
        shift=np.broadcast_to(np.asarray(_const(consts, a[5])).astype(np.int64).reshape(-1), (out_c,)).copy(),
    )


def chain_stage_view(layer: Layer, consts: dict[str, ConstArray], stage: str) -> ConvView:
    """Stage `stage` ("a", "b" or "c") of a lowered CHAIN layer as a ConvView (batch 1)."""
    p = _params(layer)
    first = {"a": 2, "b": 6, "c": 10}[stage]
    a = layer.args
    g = lambda k: int(p[f"{stage}.{k}"])  # noqa: E731
    out_c = g("out_c")
    bias = _const(consts, a[first + 1])
    return ConvView(
        layer=layer, depthwise=g("depth_multiplier") > 0, batches=1,
        in_h=g("in_h"), in_w=g("in_w"), in_c=g("in_c"), out_h=g("out_h"), out_w=g("out_w"), out_c=out_c,
        kh=g("kernel_h"), kw=g("kernel_w"), sh=g("stride_h"), sw=g("stride_w"), dh=g("dilation_h"), dw=g("dilation_w"),
        pad_t=g("pad_top"), pad_l=g("pad_left"), depth_multiplier=g("depth_multiplier"),
        input_offset=g("input_offset"), output_offset=g("output_offset"), act_min=g("act_min"), act_max=g("act_max"),
        input=a[1], output=a[19],
        weights=np.asarray(_const(consts, a[first])).astype(np.int64),
        bias=np.zeros(out_c, np.int64) if bias is None else np.asarray(bias).astype(np.int64).reshape(-1),
        multiplier=np.broadcast_to(np.asarray(_const(consts, a[first + 2])).astype(np.int64).reshape(-1), (out_c,)).copy(),
        shift=np.broadcast_to(np.asarray(_const(consts, a[first + 3])).astype(np.int64).reshape(-1), (out_c,)).copy(),
    )


@dataclass(frozen=True)
class FcView:
    """A FULLY_CONNECTED layer: `batches` rows of `depth` inputs times [units, depth] weights."""

    layer: Layer
    batches: int
    depth: int
    units: int
    input_offset: int
    output_offset: int
    act_min: int
    act_max: int
    input: ArenaArg
    output: ArenaArg
    weights: np.ndarray  # [units, depth]
    bias: np.ndarray  # int64 [units]
    multiplier: np.ndarray  # int64 [units]
    shift: np.ndarray  # int64 [units]


def fc_view(layer: Layer, consts: dict[str, ConstArray]) -> FcView:
    p = _params(layer)
    a = layer.args
    units = int(p["units"])
    bias = _const(consts, a[3])
    return FcView(
        layer=layer,
        batches=int(p["batches"]),
        depth=int(p["depth"]),
        units=units,
        input_offset=int(p["input_offset"]),
        output_offset=int(p["output_offset"]),
        act_min=int(p["act_min"]),
        act_max=int(p["act_max"]),
        input=a[1],
        output=a[6],
        weights=np.asarray(_const(consts, a[2])).astype(np.int64).reshape(units, -1),
        bias=np.zeros(units, np.int64) if bias is None else np.asarray(bias).astype(np.int64).reshape(-1),
        multiplier=np.broadcast_to(np.asarray(_const(consts, a[4])).astype(np.int64).reshape(-1), (units,)).copy(),
        shift=np.broadcast_to(np.asarray(_const(consts, a[5])).astype(np.int64).reshape(-1), (units,)).copy(),
    )


# ---- requantization ----------------------------------------------------------------------------


@dataclass(frozen=True)
class Requant:
    """Per-channel requantization of an int32 accumulator to the int8 output.

    `fast`: every channel has a right shift e >= 1 and |accumulator| < `acc_limit`, so that
        y = ((SMMLAR(2*acc, M, K) + (acc >> 31)) >> e), K = 2**(e-1) + zero_point * 2**e
    equals TFLite's RoundingDivideByPOT(SaturatingRoundingDoublingHighMul(acc, M), e) + zero
    point exactly (see `fast_requant_exact` for the proof). Otherwise the kernel uses the
    general formula (`shift` as TFLite stores it) and `k`/`e` are unused.
    """

    fast: bool
    multiplier: np.ndarray  # int32 [C]
    shift: np.ndarray  # int32 [C] TFLite's shift (>0 left, <=0 right)
    k: np.ndarray  # int32 [C]
    e: np.ndarray  # int32 [C]
    act_min: int
    act_max: int
    output_offset: int

    @property
    def clamp_is_int8(self) -> bool:
        """The activation range is the whole int8 range: one SSAT clamps."""
        return self.act_min == -128 and self.act_max == 127

    @property
    def sign_free(self) -> bool:
        """The short form may drop its sign correction (acc >> 31): true when the activation's
        lower bound is at or above the output zero point (a ReLU / ReLU6 output, zero point
        -128). Proof: for acc < 0 and M > 0, SMMLAR(2*acc, M, 0) = floor((2*acc*M + 2**31) /
        2**32) <= 0, so with or without the -1 the shifted value is <= K >> e = zero_point
        (K = 2**(e-1) + zero_point * 2**e), and the clamp lifts both to act_min; for acc >= 0
        the correction is 0. TFLite's value for acc < 0 is <= zero_point as well."""
        return self.fast and self.act_min >= self.output_offset


ACC_LIMIT = 2**30  # |acc| below this: 2*acc fits int32, and x + K cannot overflow (with K small)


def fast_requant_exact(acc_bound: np.ndarray, multiplier: np.ndarray, shift: np.ndarray, zero_point: int,
                       allow_zero_shift: bool = False) -> bool:
    """Whether the short requantization is exact for every |acc| <= acc_bound[c].

    Proof sketch (a = acc, M = multiplier > 0, e = -shift >= 1):
    - SRDHM(a, M) = floor((a*M + 2**30) / 2**31) for every int32 a when M > 0 (the C division
      toward zero of (a*M + 1 - 2**30) for a*M < 0 equals this floor), and that is
      floor((2a*M + 2**31) / 2**32) = SMMULR(2a, M) when 2a fits int32 (|a| < 2**30).
      SMMLAR(2a, M, K) = K + SMMULR(2a, M) exactly (K enters above the 32 product bits).
    - RDBPOT(x, e) = floor((x + 2**(e-1) - [x < 0]) / 2**e) (ties away from zero), and
      [x < 0] may be replaced by [a < 0]: x < 0 implies a < 0, and when a < 0 but x = 0 both
      give 0 because 2**(e-1) - 1 < 2**e. Adding zp * 2**e inside the floor adds zp outside.
    - No int32 overflow: |x| <= |a| + 1, so |x + K - 1| <= bound + 1 + |K| + 1 < 2**31.
    - `allow_zero_shift`: e = 0 is exact too as y = SMMLAR(2a, M, zero_point) (RoundingDivideByPOT
      by 2**0 is the identity, and no sign correction applies); the caller must emit that form.
    """
    m = np.asarray(multiplier, np.int64)
    s = np.asarray(shift, np.int64)
    if np.any(m < 0) or np.any(s > (0 if allow_zero_shift else -1)) or np.any(s < -31):
        return False
    e = -s
    k = np.where(e > 0, np.int64(1) << np.maximum(e - 1, 0), 0) + np.int64(zero_point) * (np.int64(1) << e)
    b = np.asarray(acc_bound, np.int64)
    return bool(np.all(b < ACC_LIMIT) and np.all(b + 2 + np.abs(k) < 2**31))


def plan_requant(acc_bound: np.ndarray, multiplier: np.ndarray, shift: np.ndarray, zero_point: int, act_min: int, act_max: int) -> Requant:
    m = np.asarray(multiplier, np.int64)
    s = np.asarray(shift, np.int64)
    fast = fast_requant_exact(acc_bound, m, s, zero_point)
    if fast:
        e = -s
        k = (np.int64(1) << (e - 1)) + np.int64(zero_point) * (np.int64(1) << e)
    else:
        e = np.zeros_like(s)
        k = np.zeros_like(s)
    return Requant(
        fast=fast,
        multiplier=m.astype(np.int32),
        shift=s.astype(np.int32),
        k=k.astype(np.int32),
        e=e.astype(np.int32),
        act_min=act_min,
        act_max=act_max,
        output_offset=zero_point,
    )


def input_magnitude(input_offset: int) -> int:
    """max |x + input_offset| over int8 x."""
    return max(abs(-128 + input_offset), abs(127 + input_offset))


def wrap32(values: np.ndarray) -> np.ndarray:
    """int64 values wrapped to int32 as two's complement arithmetic does."""
    v = np.asarray(values, np.int64)
    return (((v + 2**31) % 2**32) - 2**31).astype(np.int64)


def int16_pair(lo, hi):
    """The word holding two int16 values: `lo` in bits 0..15, `hi` in bits 16..31 (int64 out)."""
    return (np.asarray(lo, np.int64) & 0xFFFF) | ((np.asarray(hi, np.int64) & 0xFFFF) << 16)


def sxtb16_pairs(g: np.ndarray) -> np.ndarray:
    """[..., 4] int values -> [..., 2] words in SXTB16's order: (v0, v2), (v1, v3), the pairs
    SXTB16 and SXTB16 ROR 8 make of the 4 bytes they sit against."""
    return np.stack([int16_pair(g[..., 0], g[..., 2]), int16_pair(g[..., 1], g[..., 3])], axis=-1)


def rq_table(bias: np.ndarray, rq: Requant) -> np.ndarray:
    """The per-channel table the kernels read with one load-multiple: [bias, M, K or shift, e]."""
    third = rq.k if rq.fast else rq.shift
    return np.stack([wrap32(bias), rq.multiplier.astype(np.int64), third.astype(np.int64), rq.e.astype(np.int64)], axis=1).astype(np.int32)


def mve_table(bias: np.ndarray, multiplier: np.ndarray, shift: np.ndarray, channels_padded: int) -> np.ndarray:
    """The MVE kernels' table, per block of 4 channels (padded with zeros): bias[4], M[4],
    left shift[4], -right shift[4], mask[4] (-1 where the right shift is > 0), so that one
    vector load fetches each. The vector requantization is TFLite's for any multiplier:
    x = VQRDMULH(acc << left, M); x += (x >> 31) & mask; VRSHL(x, -right) (rounds half up,
    which with the -1 for negative x is RoundingDivideByPOT's half away from zero)."""
    n = len(bias)
    cols = np.zeros((5, channels_padded), np.int64)
    s = np.asarray(shift, np.int64)
    cols[0, :n] = wrap32(bias)
    cols[1, :n] = multiplier
    cols[2, :n] = np.maximum(s, 0)
    cols[3, :n] = -np.maximum(-s, 0)
    cols[4, :n] = np.where(s < 0, -1, 0)
    return cols.reshape(5, channels_padded // 4, 4).transpose(1, 0, 2).reshape(-1).astype(np.int32)


# ---- kernel plans (what the templates print) ------------------------------------------------


@dataclass(frozen=True)
class GemmConvPlan:
    """CONV_2D as blocks of P output pixels: gather their input patches (im2col) into int16
    scratch, then one dot product per output channel and pixel over `groups` words of 4 taps.

    `pointwise`: 1x1, stride 1, no padding: a block's patches are consecutive input pixels.
    `patch` = kh*kw*in_c taps, padded to `groups`*4 with zero weights.
    """

    kind: ClassVar[str] = "gemm_conv"

    name: str
    index: int
    isa: str
    pointwise: bool
    v: ConvView
    groups: int
    block: int  # P, pixels per block in the main loop
    tail: int  # pixels in the last, smaller block (0: none)
    npix: int
    rq: Requant
    weights: str
    table: str
    scratch_bytes: int
    in_offset: int
    out_offset: int
    scratch_offset: int
    word_taps: bool  # in_c % 4 == 0: the gather copies whole words per tap
    unroll: int  # groups per iteration of the dot product loop
    doubled: bool  # the gather doubles the inputs (and the table the bias): 2*acc for free
    full_unroll: bool = False  # the dot product has no loop (DSP: every group in line)


@dataclass(frozen=True)
class DepthwisePlan:
    """3x3 DEPTHWISE_CONV_2D (multiplier 1, stride 1 or 2, dilation 1), output row by output
    row: each input row is transposed once into a ring of three int16 rows per channel, then
    two outputs of a row come from six SMLAxy per kernel row (weights as int16 pairs (w0,w1),
    (w1,w2), doubled when the short requantization applies). Row order keeps it correct when
    the plan overlays the output on the input (in place or from below)."""

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


DW_BLOCK = 4  # outputs of one channel per step of the DSP depthwise assembly
DW_RECORD = 10  # words per channel in the DSP depthwise stream: 6 weight pairs, bias, M, K, e


def dw_asm_block(n: int, stride: int, row_offsets: Sequence[int], step: int, out_stride: int,
                 post_store: bool, sign_free: bool = False) -> tuple[str, ...]:
    """Armv7E-M instructions for `n` consecutive outputs of one channel of a 3x3 depthwise row.

    Registers (asm operand names): %[r] the channel's ring at the block's first column (words of
    int16 column pairs), %[w] the channel's record (6 weight pairs (w0,w1),(w1,w2) per kernel
    row, then bias, M, K, e; everything doubled for the short requantization), %[o] the first
    output; %[a0..a3] accumulators, %[wa] %[wc] weight pairs, %[d0..d2] ring words.
    `row_offsets[k]`: byte offset of kernel row k's ring row from %[r]. `step` > 0: %[r] moves
    on by `step` bytes (post-indexed on the first load). Output j's accumulator starts from the
    last one's (which holds the bias) so that no copies are needed. Stride 1: output j reads
    words j//2 and j//2 + 1; stride 2: words j and j + 1 (its third column is the next word's
    bottom half)."""
    words = (n - 1) // 2 + 2 if stride == 1 else n + 1
    first_use = [min(j for j in range(n) if w in _dw_words(j, stride)) for w in range(words)]
    last_use = [max(j for j in range(n) if w in _dw_words(j, stride)) for w in range(words)]
    bias = f"%[a{n - 1}]"
    lines = [f"ldr {bias}, [%[w], #24]"]
    order = sorted(range(3), key=lambda k: (row_offsets[k] != 0, k))  # the row at offset 0 first
    moved = 0
    for row_index, k in enumerate(order):
        lines.append(f"ldrd %[wa], %[wc], [%[w], #{8 * k}]")
        loaded: set[int] = set()
        for j in range(n):
            for w in sorted(_dw_words(j, stride)):
                if w in loaded:
                    continue
                pair = w + 1 < words and w + 1 not in loaded and (w - 2 < 0 or last_use[w - 2] < j) \
                    and first_use[w + 1] <= j + 1
                addr = row_offsets[k] + 4 * w - moved
                regs = f"%[d{w % 3}], %[d{(w + 1) % 3}]" if pair else f"%[d{w % 3}]"
                op = "ldrd" if pair else "ldr"
                if step and not moved and row_index == 0 and w == 0 and addr == 0:
                    lines.append(f"{op} {regs}, [%[r]], #{step}")
                    moved = step
                else:
                    lines.append(f"{op} {regs}, [%[r], #{addr}]")
                loaded.update((w, w + 1) if pair else (w,))
            add = bias if row_index == 0 and j < n - 1 else f"%[a{j}]"
            if stride == 1:
                lines += _dw_s1_macs(j, f"%[d{(j // 2) % 3}]", f"%[d{(j // 2 + 1) % 3}]", "%[wa]", add)
            else:
                lines.append(f"smlad %[a{j}], %[d{j % 3}], %[wa], {add}")
                lines.append(f"smlabt %[a{j}], %[d{(j + 1) % 3}], %[wc], %[a{j}]")
    lines += _dw_requant(n, "%[wa]", step, out_stride, post_store, sign_free)
    return tuple(lines)


def _dw_s1_macs(j: int, lo: str, hi: str, wa: str, add: str) -> list[str]:
    """Stride 1, output j of a step, one kernel row: ring words lo = (c_x, c_x+1) and hi =
    (c_x+2, c_x+3) with x = j rounded down to even, weight pairs wa = (w0, w1), %[wc] = (w1, w2).
    The first SMLAxy adds to `add` (the bias holder in the first row)."""
    if j % 2 == 0:
        return [f"smlad %[a{j}], {lo}, {wa}, {add}", f"smlabt %[a{j}], {hi}, %[wc], %[a{j}]"]
    return [f"smlatb %[a{j}], {lo}, {wa}, {add}", f"smlad %[a{j}], {hi}, %[wc], %[a{j}]"]


def _dw_requant(n: int, wa: str, step: int, out_stride: int, post_store: bool, sign_free: bool) -> list[str]:
    """The short requantization of accumulators %[a0..] and their stores (post-indexed by
    out_stride, or at immediate offsets and the output pointer moved when `step`):
    y = ssat8((SMMLAR(acc, M, K) [+ (acc >> 31)]) >> e), M and K from the record into wa/%[wc],
    e into %[d0], y in %[d1]."""
    lines = [f"ldrd {wa}, %[wc], [%[w], #28]", "ldr %[d0], [%[w], #36]"]
    for j in range(n):
        lines.append(f"smmlar %[d1], %[a{j}], {wa}, %[wc]")
        if not sign_free:
            lines.append(f"add %[d1], %[d1], %[a{j}], asr #31")
        lines += ["asr %[d1], %[d1], %[d0]", "ssat %[d1], #8, %[d1]"]
        lines.append(f"strb %[d1], [%[o]], #{out_stride}" if post_store else f"strb %[d1], [%[o], #{j * out_stride}]")
    if not post_store and step:
        lines.append(f"add %[o], %[o], #{n * out_stride}")
    return lines


DW_ROWS_REGS = {"a0": "r0", "a1": "r1", "a2": "r2", "a3": "r3", "wc": "r4", "d0": "r5", "d1": "r6",
                "p0": "r8", "p1": "r9", "p2": "r10", "o": "r11", "w": "r12", "end": "lr"}  # + r7 (wa)
DW_LAST_CHANNEL = 1 << 31  # in the record's e: the channel loop of dw_asm_rows ends after it


def dw_asm_rows(out_w: int, out_c: int, plane_w: int, sign_free: bool = False) -> tuple[str, ...]:
    """Every channel of one output row of a stride-1 3x3 depthwise in Armv7E-M assembly, whatever
    ring slots the kernel rows sit in. %[p0..p2] point at channel 0's three ring rows (words of
    int16 column pairs) and move on 8 bytes per loop step of DW_BLOCK outputs (post-indexed
    LDRD); the step loop runs while %[p0] != %[end]; then the row's last out_w % DW_BLOCK
    outputs; then every pointer moves to the next channel (its ring rows, output byte, record)
    and the channel loop goes on unless the record's e had bit 31 set (the last channel; register
    shifts read only its low byte). Fourteen registers: r7 carries the weight pair wa, saved and
    restored here (it may be the frame pointer), every operand is pinned (DW_ROWS_REGS). Record
    at %[w] (DW_RECORD words): 6 weight pairs, bias, M, K, e (doubled). Output j reads words j//2
    and j//2 + 1 of each row; two data registers suffice (word 2 replaces word 0 once outputs 0
    and 1 are done). Stores: post-indexed by out_c up to 255 channels, else immediate offsets."""
    post = out_c <= 255

    def block(n: int, step: int) -> list[str]:
        lines = [f"ldr %[a{n - 1}], [%[w], #24]"]  # the bias: every output starts from it
        for k in range(3):
            lines.append(f"ldrd r7, %[wc], [%[w], #{8 * k}]")
            lines.append(f"ldrd %[d0], %[d1], [%[p{k}]], #{step}" if step else f"ldrd %[d0], %[d1], [%[p{k}]]")
            for j in range(n):
                if j == 2:  # word 2 into d0: outputs 0 and 1 no longer need word 0
                    lines.append(f"ldr %[d0], [%[p{k}]]" if step else f"ldr %[d0], [%[p{k}], #8]")
                lo, hi = ("%[d0]", "%[d1]") if j < 2 else ("%[d1]", "%[d0]")
                lines += _dw_s1_macs(j, lo, hi, "r7", f"%[a{n - 1}]" if k == 0 and j < n - 1 else f"%[a{j}]")
        return lines + _dw_requant(n, "r7", step, out_c, post, sign_free)

    blocks, tail = divmod(out_w, DW_BLOCK)
    lines = ["push {r7}", "2:"]
    if blocks:
        lines.append("1:")
        lines.extend(block(DW_BLOCK, 4 * DW_BLOCK // 2))
        lines.extend(["cmp %[p0], %[end]", "bne 1b"])
    if tail:
        lines.extend(block(tail, 0))
    # on to the next channel: its ring rows (3 * plane_w int16 further), output byte, record
    moved = 8 * blocks
    ring_step = 6 * plane_w - moved
    out_moved = out_w * out_c if post else blocks * DW_BLOCK * out_c
    for k in range(3):
        lines.append(f"add %[p{k}], %[p{k}], #{ring_step}")
    lines.append(f"sub %[o], %[o], #{out_moved - 1}" if out_moved > 1 else "add %[o], %[o], #1")
    if blocks:
        lines.append(f"add %[end], %[end], #{6 * plane_w}")
    lines.append(f"add %[w], %[w], #{4 * DW_RECORD}")
    lines.append("cmp %[d0], #0")  # e of the channel just done: negative on the last one
    lines.append("bge 2b")
    lines.append("pop {r7}")
    return tuple(lines)


def dw_rows_fit(out_w: int, out_c: int, plane_w: int) -> bool:
    """The immediates of dw_asm_rows encode: pointer steps and the output rewind within 4095."""
    post = out_c <= 255
    out_moved = out_w * out_c if post else (out_w // DW_BLOCK) * DW_BLOCK * out_c
    return 6 * plane_w <= 4095 and out_moved <= 4096 and (post or DW_BLOCK * out_c <= 4095)


def _dw_words(j: int, stride: int) -> tuple[int, int]:
    return (j // 2, j // 2 + 1) if stride == 1 else (j, j + 1)


THIN_X_REGS = ("r2", "r3", "r4", "r5", "r6", "r8", "r9", "r10")  # a pixel's input, int16 pairs
THIN_TEMPS = ("r2", "r3", "r4", "r5", "r6", "r8", "r9", "r10", "r11", "r12", "lr")  # those not holding inputs
THIN_MAX_INSTRUCTIONS = 640  # per pixel, all channels in line: bounds the code of one layer (~2.3 KB)


@dataclass(frozen=True)
class ThinCode:
    """One pixel of a pointwise convolution with few input channels on the Armv7E-M DSP: a pixel's
    inputs stay in registers as int16 pairs (in_c / 2 of them) and every output channel is one
    straight run of assembly: load-multiple of its record (bias, weight pairs, M, K), in_c / 2
    SMLAD, then SMMLAR, the sign correction, SSAT with the channel's shift as an immediate, STRB.
    No scratch, no loop over channels, no per-channel shift register."""

    records: str  # per channel: (bias + input_offset*sum(w)) x2, in_c/2 weight pairs x2, M, K
    record_words: int
    lines: tuple[str, ...]  # the assembly of one pixel (thin_conv_asm)
    clobbers: tuple[str, ...]
    shifts: tuple[int, ...]  # per channel right shift e (the C path's)
    in_c: int
    out_c: int
    looped: bool = False  # THIN_LOOP_UNROLL channels per iteration (else every channel in line)


NARROW_ACC = ("r0", "r1", "r2", "r3", "r4", "r5", "r6", "r8")  # up to 8 output channels per pass
NARROW_MAX_WEIGHTS = 1024  # in_c * out_c: its weights are stored unpacked (2 bytes each)


@dataclass(frozen=True)
class NarrowCode:
    """One pixel of a pointwise convolution with few output channels (<= 16) and more input
    channels than the thin kernel holds, on the Armv7E-M DSP: up to 8 output channels per pass
    accumulate in registers while the input streams through once (each word of 4 inputs
    unpacked once, then per channel one LDRD of its two weight pairs, stored unpacked, and 2
    SMLAD); then per channel SMMLAR, the sign correction, SSAT with the shift as an immediate,
    STRB. `passes[p]` is pass p's (first channel, channels, word offset in the records, lines)."""

    records: str
    passes: tuple[tuple[int, int, int, tuple[str, ...]], ...]
    shifts: tuple[int, ...]
    in_c: int
    out_c: int
    groups_per_step: int


def narrow_conv_fits(in_c: int, out_c: int) -> bool:
    return in_c % 4 == 0 and in_c > 16 and 2 <= out_c <= 2 * len(NARROW_ACC) and in_c * out_c <= NARROW_MAX_WEIGHTS


def narrow_conv_asm(groups: int, shifts: Sequence[int], unroll: int, sign_free: bool = False) -> tuple[str, ...]:
    """One pass of the narrow kernel for len(shifts) <= 8 channels (see NarrowCode). On entry r0:
    the pass's first output byte, r1: the end of the pixel's input, r9: the pixel's input, r10:
    the pass's records (biases, then per group and channel 2 weight pairs, then per channel M,
    K); r7 is saved and used, r0/r1 go to the stack while r0.. hold the accumulators."""
    n = len(shifts)
    acc = NARROW_ACC[:n]
    lines = ["push {r7}", "push {r0, r1}", f"ldm r10!, {{{', '.join(acc)}}}"]
    looped = groups > unroll
    if looped:
        lines.append("1:")
    for _ in range(unroll if looped else groups):
        lines += ["ldr r12, [r9], #4", "sxtb16 r11, r12", "sxtb16 r12, r12, ror #8"]
        for a in acc:
            lines += ["ldrd lr, r7, [r10], #8", f"smlad {a}, r11, lr, {a}", f"smlad {a}, r12, r7, {a}"]
    if looped:
        lines += ["ldr r11, [sp, #4]", "cmp r9, r11", "bne 1b"]
    lines.append("pop {r9, r11}")  # r9: the output
    for c in range(0, n, 2):
        pair = c + 1 < n
        lines.append("ldm r10!, {r7, r11, r12, lr}" if pair else "ldm r10!, {r11, r12}")
        for j, (m, k) in enumerate((("r7", "r11"), ("r12", "lr")) if pair else (("r11", "r12"),)):
            a = acc[c + j]
            lines.append(f"smmlar {m}, {a}, {m}, {k}")
            if not sign_free:
                lines.append(f"add {m}, {m}, {a}, asr #31")
            lines += [f"ssat {m}, #8, {m}, asr #{int(shifts[c + j])}", f"strb {m}, [r9, #{c + j}]"]
    lines.append("pop {r7}")
    return tuple(lines)


@dataclass(frozen=True)
class ThinConvPlan:
    """Pointwise CONV_2D with 4..16 input channels on the DSP, pixel by pixel (`code`)."""

    kind: ClassVar[str] = "thin_conv"

    name: str
    index: int
    isa: str
    v: ConvView
    npix: int
    rq: Requant
    weights: str
    table: str
    code: Optional[ThinCode]
    scratch_offset: int = -1
    narrow: Optional[NarrowCode] = None  # few output channels instead: the narrow kernel


THIN_LOOP_UNROLL = 4  # output channels per iteration of the looped thin kernel
_REG_NUMBER = {f"r{n}": n for n in range(13)} | {"lr": 14}


def thin_conv_asm(in_c: int, shifts: Sequence[int], looped: bool = False,
                  sign_free: bool = False) -> tuple[tuple[str, ...], tuple[str, ...]]:
    """The assembly of one pixel of a thin pointwise convolution and the registers it clobbers.

    r0: the record stream, r1: the pixel's output, r2: its input. Input word g (taps 4g..4g+3)
    becomes x[2g] = SXTB16 = (t4g, t4g+2) and x[2g+1] = SXTB16 ROR 8 = (t4g+1, t4g+3); the
    record's weight pairs follow that order. Each channel's record is loaded with as few LDM as
    the registers left allow (ascending registers take ascending words); its accumulator is the
    register the bias lands in.

    In line (`looped` False): every channel written out, record (2*bias', in_c/2 weight pairs, M,
    K), the channel's shift an immediate of SSAT, the store at its offset. Looped: THIN_LOOP_UNROLL
    channels per iteration, r7 saved on the stack and used too, the record also carries the shift
    e (bit 31 set on the loop's last channel: register shifts read only the low byte, and the
    loop ends when the loaded e is negative), stores post-indexed; the channels past the last
    full iteration follow in line."""
    nx = in_c // 2
    xs = THIN_X_REGS[:nx]
    temps = sorted([r for r in THIN_TEMPS if r not in xs] + (["r7"] if looped else []), key=_REG_NUMBER.get)
    lines = ["push {r7}"] if looped else []
    for g in range(in_c // 4):  # raw words into the odd x registers first (r2 is the pointer)
        lines.append(f"ldr {xs[2 * g + 1]}, [r2, #{4 * g}]")
    for g in range(in_c // 4):
        lines.append(f"sxtb16 {xs[2 * g]}, {xs[2 * g + 1]}")
        lines.append(f"sxtb16 {xs[2 * g + 1]}, {xs[2 * g + 1]}, ror #8")
    tail = ["m", "k", "e"] if looped else ["m", "k"]
    words = ["b"] + [f"w{k}" for k in range(nx)] + tail
    # chunks of the record: the first fills temps from the accumulator on, the next ones the
    # temps after it; the requantization words always arrive together
    chunks: list[list[str]] = []
    rest = list(words)
    cap = len(temps)
    while rest:
        take = rest[:cap]
        if "m" in take and tail[-1] not in take:
            take = take[: take.index("m")]
        chunks.append(take)
        rest = rest[len(take):]
        cap = len(temps) - 1

    def channel(j: int, e: int) -> list[str]:
        out: list[str] = []
        where: dict[str, str] = {}
        for n, chunk in enumerate(chunks):
            regs = temps[: len(chunk)] if n == 0 else temps[1: 1 + len(chunk)]
            out.append(f"ldm r0!, {{{', '.join(regs)}}}")
            where.update(zip(chunk, regs))
            for name in chunk:
                if name.startswith("w"):
                    out.append(f"smlad {where['b']}, {xs[int(name[1:])]}, {where[name]}, {where['b']}")
        acc, m, kk = where["b"], where["m"], where["k"]
        out.append(f"smmlar {m}, {acc}, {m}, {kk}")
        if not sign_free:
            out.append(f"add {m}, {m}, {acc}, asr #31")
        if looped:
            out.append(f"asr {m}, {m}, {where['e']}")
            out.append(f"ssat {m}, #8, {m}")
            out.append(f"strb {m}, [r1], #1")
        else:
            out.append(f"ssat {m}, #8, {m}, asr #{int(e)}")
            out.append(f"strb {m}, [r1, #{j}]")
        return out

    if looped:
        full = len(shifts) // THIN_LOOP_UNROLL * THIN_LOOP_UNROLL
        if full:
            lines.append("1:")
            for j in range(THIN_LOOP_UNROLL):
                lines.extend(channel(j, 0))
            e_reg = temps[1: 1 + len(chunks[-1])][-1] if len(chunks) > 1 else temps[len(chunks[0]) - 1]
            lines.append(f"cmp {e_reg}, #0")
            lines.append("bge 1b")
        for j in range(full, len(shifts)):
            lines.extend(channel(j, 0))
        lines.append("pop {r7}")
    else:
        for j, e in enumerate(shifts):
            lines.extend(channel(j, e))
    clobbers = tuple(r for r in sorted(set(temps + list(xs)) - {"r2", "r7"}, key=_REG_NUMBER.get))
    return tuple(lines), clobbers


def thin_records(w: np.ndarray, bias: np.ndarray, rq: Requant, looped: bool) -> np.ndarray:
    """The thin kernel's record stream, [out_c][words]: 2*bias', weight pairs x2 in the input
    registers' order ((t4g, t4g+2), (t4g+1, t4g+3)), M, K (and, looped, e with bit 31 on the
    loop's last channel)."""
    out_c, in_c = w.shape
    g = (2 * np.asarray(w, np.int64)).reshape(out_c, in_c // 4, 4)
    pairs = sxtb16_pairs(g).reshape(out_c, -1)
    cols = [wrap32(2 * np.asarray(bias, np.int64))[:, None], wrap32(pairs), rq.multiplier.astype(np.int64)[:, None],
            rq.k.astype(np.int64)[:, None]]
    if looped:
        e = rq.e.astype(np.int64).copy()
        full = out_c // THIN_LOOP_UNROLL * THIN_LOOP_UNROLL
        if full:
            e[full - 1] |= 1 << 31
        cols.append(wrap32(e)[:, None])
    return np.concatenate(cols, axis=1)


def thin_conv_fits(in_c: int, out_c: int) -> bool:
    """Few enough input channels for a pixel in registers (in_c in 4, 8, 12, 16), few enough
    output channels for the code in line: at most THIN_MAX_INSTRUCTIONS per pixel."""
    if not thin_loop_fits(in_c):
        return False
    nx = in_c // 2
    temps = len(THIN_TEMPS) - nx
    per_channel = -(-(nx + 3 - temps) // (temps - 1)) + 1 if nx + 3 > temps else 1
    return out_c * (per_channel + nx + 4) + 3 * in_c // 4 <= THIN_MAX_INSTRUCTIONS


def thin_loop_fits(in_c: int) -> bool:
    """A pixel's inputs fit the registers: 4, 8, 12 or 16 input channels."""
    return in_c % 4 == 0 and 4 <= in_c <= 16


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

    @property
    def clamp_is_int8(self) -> bool:
        return self.act_min == -128 and self.act_max == 127


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
    table: str


@dataclass(frozen=True)
class ChainStage:
    """One convolution stage of a specialised chain: its view, the requantization, and the
    weights as int16 pairs (doubled when the short requantization applies) in flash.

    Conv stages (A, C): per output channel, `groups` pairs of words (taps 4g+{0,2}, 4g+{1,3}) over
    the `length` bytes of a pixel or patch (zero weights past the real taps). Depthwise stage B:
    per block of 4 channels, per tap, the words (c0, c2) and (c1, c3)."""

    v: ConvView
    rq: Requant
    weights: str
    table: str
    length: int  # bytes of the vector each output reads (conv: in_c or the padded patch)
    direct: bool  # conv A: 1x1 on words of the input pixel, no patch copy
    x_lo: int = 0  # depthwise B: output columns x_lo..x_hi read no column outside the input
    x_hi: int = -1
    scale: int = 0  # weights and bias x2 (the short requantization's doubled accumulator); 0: as rq.fast

    @property
    def doubled(self) -> bool:
        return self.scale == 2 if self.scale else self.rq.fast

    @property
    def groups(self) -> int:
        return self.length // 4


@dataclass(frozen=True)
class ChainPlan:
    """A fused chain A? -> 3x3 depthwise B -> 1x1 C [-> residual ADD], computed as the portable
    mcugen_chain_s8 does (same ring of A's int8 rows, same pixel buffer, same order of rows and
    pixels, so the same overlaps of output and input stay correct) with stages specialised, bias
    folded with the input offset and TFLite's requantization (short form where proved exact):
    A takes two pixels per step (assembly: x two output channels; C: x four), C one pixel x four
    channels, both SMLAD over int16 weight pairs stored in SXTB16's order; B takes four channels
    per step from one word of a ring row per tap (SMLABB/SMLATT; interior taps in assembly).
    MVE target: A and C one output channel per step, 16 taps per VMLADAVA; B four channels in
    the lanes with the exact vector requantization. Portable target: the DSP form in C99.
    Stack: two patches of A (<= 2 * CHAIN_MAX_PATCH bytes) when A is not a 1x1 on whole words."""

    kind: ClassVar[str] = "chain"
    name: str
    index: int
    isa: str
    a: Optional[ChainStage]
    b: ChainStage
    c: ChainStage
    residual: Optional["AddPlan"]
    ring_rows: int
    in_row: int  # bytes of one input row of the chain
    patch_bytes: int  # bytes of one patch of A (0: A reads the input directly)
    a_pixels: int = 1  # pixels of A per step (2: weight and requantization loads shared by two patches)
    a_thin: Optional[ThinCode] = None  # DSP: stage A (1x1, 4..16 input channels) pixel by pixel in registers
    c_thin: Optional[ThinCode] = None  # DSP: stage C likewise (into a pixel on the stack when an ADD follows)
    c_narrow: Optional["NarrowCode"] = None  # DSP: stage C with few output channels (likewise)


def _round_up(x: int, m: int) -> int:
    return -(-x // m) * m


def _unroll(groups: int) -> int:
    """Groups of 4 taps per loop iteration: the largest of 4, 2, 1 dividing `groups`."""
    return next(u for u in (4, 2, 1) if groups % u == 0)


# Pixels per block of the conv kernels. The dot product loop keeps P accumulators, four input
# registers, two weight registers and three pointers: P <= 4 fits in 13 registers, leaving r7
# to a frame pointer (-O0, -fno-omit-frame-pointer). Without the loop (few groups, fully
# unrolled: no end pointer) P = 5 fits in 13 too. One pixel more (5 with the loop, 6 without)
# takes r7 as well: the assembly saves and restores it (R7_BLOCK_COST instructions per block).
_BLOCKS = (5, 4, 3, 2, 1)
_BLOCKS_UNROLLED = (6, 5, 4, 3, 2, 1)
R7_BLOCK_COST = 2
R7_MIN_SAVING = 0.05
FULL_UNROLL_GROUPS = 8  # groups of 4 taps up to which the dot product is fully unrolled
FC_UNITS = 3  # fully connected units per step on the DSP target
CHAIN_MAX_PATCH = 128  # bytes of one input patch of a chain's stage A (two sit on the stack)


def _choose_block(npix: int, blocks: Sequence[int] = _BLOCKS, groups: int = 1) -> tuple[int, int]:
    """(P, tail): the main block size and the last block's size (0 when P divides npix), the
    cheapest in instructions per output channel. The largest block of the list needs r7 and
    larger code (its own dot product function); it is taken only where it saves at least
    R7_MIN_SAVING of the dot product's instructions (flash is part of the budget too)."""

    def cost(p: int) -> int:
        # per group: unpack one weight word (3), load the inputs (a load-multiple per two
        # pixels), 2 SMLAD per pixel; per block: saving r7 where it is needed
        return groups * (3 + (p + 1) // 2 + 2 * p) + (R7_BLOCK_COST if p == blocks[0] else 0)

    def best(candidates: Sequence[int]) -> tuple[int, int, int]:
        found = None
        for p in candidates:
            if p > npix:
                continue
            tail = npix % p
            total = (npix // p) * cost(p) + (cost(tail) if tail else 0)
            if found is None or total < found[0]:
                found = (total, p, tail)
        return found

    plain = best(blocks[1:])
    wide = best(blocks)
    chosen = wide if plain is None or wide[0] <= (1 - R7_MIN_SAVING) * plain[0] else plain
    return chosen[1], chosen[2]


def _add_plan(name: str, index: int, isa: str, size: int, off1: int, off2: int, ls: int, m1: int, s1: int,
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
    return AddPlan(
        name=name, index=index, isa=isa, size=size, input1_offset=off1, input2_offset=off2, left_shift=ls, fast=fast,
        m1=m1, k1=k1, e1=e1, m2=m2, k2=k2, e2=e2, mo=mo, ko=ko, eo=eo, output_offset=zp, act_min=act_min, act_max=act_max,
    )


class _Specializer:
    def __init__(self, program: Program, target: Target):
        self.p = program
        self.t = target
        self.name = program.name
        self.consts = {c.cname: c for c in program.consts}
        self.new_consts: list[ConstArray] = []
        self.scratch: list[ScratchBuffer] = []
        self.choices: dict[int, str] = {}

    def const(self, layer: int, role: str, ctype: str, values: np.ndarray, comment: str) -> str:
        cname = f"{self.name}_l{layer}_{role}"
        self.new_consts.append(ConstArray(cname=cname, ctype=ctype, values=np.ascontiguousarray(values), comment=comment))
        return cname

    def scratch_for(self, layer: int, size: int) -> str:
        name = f"scratch{layer}"
        self.scratch.append(ScratchBuffer(name=name, size=max(int(size), 4), step=layer))
        return name

    # -- CONV_2D
    def conv(self, layer: Layer):
        return self._conv_plan(conv_view(layer, self.consts), layer.index)

    def _conv_plan(self, v: ConvView, i: int):
        if v.batches != 1:
            return None
        pointwise = v.kh == 1 and v.kw == 1 and v.sh == 1 and v.sw == 1 and v.pad_t == 0 and v.pad_l == 0
        patch = v.kh * v.kw * v.in_c
        groups = _round_up(patch, 4) // 4
        w = v.weights.reshape(v.out_c, patch)
        wpad = np.zeros((v.out_c, groups * 4), np.int64)
        wpad[:, :patch] = w
        sum_w = w.sum(axis=1)
        bias = v.bias + v.input_offset * sum_w
        acc_bound = np.abs(v.bias) + input_magnitude(v.input_offset) * np.abs(w).sum(axis=1)
        rq = plan_requant(acc_bound, v.multiplier, v.shift, v.output_offset, v.act_min, v.act_max)
        npix = v.out_h * v.out_w
        if self.t.isa is Isa.MVE:
            l16 = _round_up(patch, 16)
            oc4 = _round_up(v.out_c, 4)
            # rows of `patch` bytes (the loads are predicated, no padding to 16); channels
            # padded to 4 with zero rows, plus 16 bytes so that the last row's vector loads
            # stay inside the array
            wm = np.zeros(oc4 * patch + 16, np.int64)
            wm[: v.out_c * patch] = w.reshape(-1)
            weights = self.const(i, "fw", "int8_t", wm.astype(np.int8), f"weights [{oc4}][{patch}] (+16 bytes), channels padded to 4")
            table = self.const(i, "rq", "int32_t", mve_table(bias, v.multiplier, v.shift, oc4),
                               "per 4 channels: bias + input_offset*sum(w), multiplier, left, -right, mask")
            block = 2 if npix >= 2 else 1
            tail = npix % block
            scratch_bytes = 0 if pointwise else block * l16
            sname = self.scratch_for(i, scratch_bytes)
            return GemmConvPlan(
                name=f"{self.name}_l{i}_conv", index=i, isa=self.t.isa.value, pointwise=pointwise, v=v, groups=l16 // 4,
                block=block, tail=tail, npix=npix, rq=plan_requant(acc_bound, v.multiplier, v.shift, v.output_offset, v.act_min, v.act_max),
                weights=weights, table=table, scratch_bytes=scratch_bytes, in_offset=v.input.offset,
                out_offset=v.output.offset, scratch_offset=-1, word_taps=False, unroll=1, doubled=False,
            ), sname
        if (self.t.isa is Isa.DSP and pointwise and rq.fast and rq.clamp_is_int8
                and thin_loop_fits(v.in_c)):
            return self._thin_conv(v, i, w, bias, rq, npix), self.scratch_for(i, 0)  # no scratch (4 bytes)
        if (self.t.isa is Isa.DSP and pointwise and rq.fast and rq.clamp_is_int8
                and narrow_conv_fits(v.in_c, v.out_c)):
            code = self._narrow_code(v, i, "fw", w, bias, rq)
            return ThinConvPlan(
                name=f"{self.name}_l{i}_conv", index=i, isa=self.t.isa.value, v=v, npix=npix, rq=rq,
                weights=code.records, table=code.records, code=None, narrow=code,
            ), self.scratch_for(i, 0)
        full_unroll = groups <= FULL_UNROLL_GROUPS
        block, tail = _choose_block(npix, _BLOCKS_UNROLLED if full_unroll else _BLOCKS, groups)
        # Doubling the inputs as they are gathered costs 2 instructions per group and pixel and
        # saves one per output (the short requantization wants 2 * acc): worth it when the
        # layer has more output channels than twice its groups.
        doubled = rq.fast and 2 * groups < v.out_c
        weights = self.const(i, "fw", "int8_t", wpad.astype(np.int8), f"weights [{v.out_c}][{groups * 4}], rows padded to words")
        table = self.const(i, "rq", "int32_t", rq_table((2 if doubled else 1) * bias, rq),
                           f"per channel: bias + input_offset*sum(w){' (x2)' if doubled else ''}, multiplier, K or shift, e")
        scratch_bytes = groups * block * 8 + groups * 4  # int16 pairs + a byte patch
        sname = self.scratch_for(i, scratch_bytes)
        return GemmConvPlan(
            name=f"{self.name}_l{i}_conv", index=i, isa=self.t.isa.value, pointwise=pointwise, v=v, groups=groups,
            block=block, tail=tail, npix=npix, rq=rq, weights=weights, table=table, scratch_bytes=scratch_bytes,
            in_offset=v.input.offset, out_offset=v.output.offset, scratch_offset=-1, word_taps=v.in_c % 4 == 0,
            unroll=groups if full_unroll else _unroll(groups), doubled=doubled, full_unroll=full_unroll,
        ), sname

    def _thin_code(self, v: ConvView, i: int, role: str, w: np.ndarray, bias: np.ndarray, rq: Requant) -> ThinCode:
        looped = not thin_conv_fits(v.in_c, v.out_c)
        records = thin_records(w, bias, rq, looped)
        name = self.const(i, role, "int32_t", records.astype(np.int32),
                          "per channel: (bias + input_offset*sum(w)) x2, weights x2 as int16 pairs "
                          "(t4g,t4g+2),(t4g+1,t4g+3), multiplier, K" + (", e (bit 31: the loop's last channel)" if looped else ""))
        lines, clobbers = thin_conv_asm(v.in_c, rq.e, looped, rq.sign_free)
        return ThinCode(records=name, record_words=records.shape[1], lines=lines, clobbers=clobbers,
                        shifts=tuple(int(e) for e in rq.e), in_c=v.in_c, out_c=v.out_c, looped=looped)

    def _narrow_code(self, v: ConvView, i: int, role: str, w: np.ndarray, bias: np.ndarray, rq: Requant) -> NarrowCode:
        groups = v.in_c // 4
        unroll = next(u for u in (4, 3, 2, 1) if groups % u == 0)
        w2 = 2 * np.asarray(w, np.int64).reshape(v.out_c, groups, 4)
        words, passes = [], []
        for first in range(0, v.out_c, len(NARROW_ACC)):
            chans = list(range(first, min(first + len(NARROW_ACC), v.out_c)))
            start = len(words)
            words += [int(x) for x in wrap32(2 * np.asarray(bias, np.int64)[chans])]
            words += [int(x) for x in sxtb16_pairs(w2[chans]).transpose(1, 0, 2).reshape(-1)]  # [group][channel][2]
            for c in chans:
                words += [int(rq.multiplier[c]), int(rq.k[c])]
            passes.append((first, len(chans), start,
                           narrow_conv_asm(groups, [int(rq.e[c]) for c in chans], unroll, rq.sign_free)))
        name = self.const(i, role, "int32_t", wrap32(np.array(words, np.int64)).astype(np.int32),
                          "per pass of <= 8 channels: (bias + input_offset*sum(w)) x2, per group of 4 inputs and "
                          "channel the weights x2 as int16 pairs (t0,t2),(t1,t3), per channel multiplier, K")
        return NarrowCode(records=name, passes=tuple(passes), shifts=tuple(int(e) for e in rq.e), in_c=v.in_c,
                          out_c=v.out_c, groups_per_step=unroll)

    def _thin_conv(self, v: ConvView, i: int, w: np.ndarray, bias: np.ndarray, rq: Requant, npix: int) -> ThinConvPlan:
        code = self._thin_code(v, i, "fw", w, bias, rq)
        return ThinConvPlan(
            name=f"{self.name}_l{i}_conv", index=i, isa=self.t.isa.value, v=v, npix=npix, rq=rq, weights=code.records,
            table=code.records, code=code,
        )

    # -- DEPTHWISE_CONV_2D
    def depthwise(self, layer: Layer):
        v = conv_view(layer, self.consts)
        if v.in_c == 1 and v.depth_multiplier > 1 and layer.kernel == "mcugen_depthwise_conv2d_s8":
            # one input channel (person_detect's first layer): the depthwise is a convolution with
            # depth_multiplier output channels, weights [1, kh, kw, M] read as [M, kh, kw, 1]; the
            # same window over the same rows, so the same overlap rules hold
            return self._conv_plan(dataclasses.replace(
                v, depthwise=False, depth_multiplier=1, weights=np.ascontiguousarray(v.weights.transpose(3, 1, 2, 0)),
            ), layer.index)
        if not (v.batches == 1 and v.kh == 3 and v.kw == 3 and v.dh == 1 and v.dw == 1 and v.depth_multiplier == 1
                and v.sh == v.sw and v.sh in (1, 2)):
            return None
        w = v.weights.reshape(9, v.out_c).T  # [C][9]
        sum_w = w.sum(axis=1)
        bias = v.bias + v.input_offset * sum_w
        acc_bound = np.abs(v.bias) + input_magnitude(v.input_offset) * np.abs(w).sum(axis=1)
        rq = plan_requant(acc_bound, v.multiplier, v.shift, v.output_offset, v.act_min, v.act_max)
        s = v.sh
        plane_h = (v.out_h - 1) * s + 3
        # columns read: two outputs at a time read words up to (x+1)*s + 3 (stride 1) / 2x*s+5
        # two outputs at a time read whole words: up to column out_w + 2 (stride 1) or
        # 2 * out_w + 1 (stride 2); the row length is even so that rows stay word aligned
        plane_w = _round_up((v.out_w - 1) * s + 3 + s, 2)
        if self.t.isa is Isa.MVE:  # four outputs at a time read up to column (round_up(out_w, 4) - 1) * s + 2
            plane_w = max(plane_w, _round_up((_round_up(v.out_w, 4) - 1) * s + 3, 2))
        i = layer.index
        if self.t.isa is Isa.MVE:
            # the vector requantization is exact for any shift: no doubling, TFLite's shift
            rq = plan_requant(np.full(v.out_c, ACC_LIMIT), v.multiplier, v.shift, v.output_offset, v.act_min, v.act_max)
        scale = 2 if rq.fast else 1  # the short requantization wants a doubled accumulator
        asm_loop: tuple[tuple[str, ...], ...] = ()
        asm_tail: tuple[tuple[str, ...], ...] = ()
        asm_rows: tuple[str, ...] = ()
        if self.t.isa is Isa.DSP:
            # one record per channel: int16 pairs (w0, w1), (w1, w2) per kernel row (6 words),
            # then the requantization row (bias, M, K or shift, e)
            pairs = np.zeros((v.out_c, 6), np.int64)
            for r in range(3):
                w0, w1, w2 = (scale * w[:, 3 * r + k] for k in range(3))
                pairs[:, 2 * r] = int16_pair(w0, w1)
                pairs[:, 2 * r + 1] = int16_pair(w1, w2)
            records = np.concatenate([wrap32(pairs), rq_table(scale * bias, rq).astype(np.int64)], axis=1)
            rows = v.sh == 1 and rq.fast and rq.clamp_is_int8 and dw_rows_fit(v.out_w, v.out_c, plane_w)
            if rows:
                asm_rows = dw_asm_rows(v.out_w, v.out_c, plane_w, rq.sign_free)
                records[-1, 9] = int(wrap32(np.array([int(records[-1, 9]) | DW_LAST_CHANNEL]))[0])  # C masks it off
            weights = self.const(i, "fw", "int32_t", records.astype(np.int32),
                                 f"per channel: weights x{scale} as int16 pairs (w0,w1),(w1,w2) for rows 0..2, then "
                                 f"(bias + input_offset*sum(w)) x{scale}, multiplier, K or shift, e"
                                 + (" (bit 31: the last channel)" if rows else ""))
            table = weights
            if not rows:
                asm_loop, asm_tail = self._dw_asm(v, rq, plane_w)
        else:
            weights = self.const(i, "fw", "int16_t", (scale * w).astype(np.int16), f"weights x{scale} [channel][3x3]")
            table = self.const(i, "rq", "int32_t", rq_table(scale * bias, rq),
                               f"per channel: (bias + input_offset*sum(w)) x{scale}, multiplier, K or shift, e")
        scratch_bytes = v.out_c * 3 * plane_w * 2  # the ring: 3 rows per channel
        sname = self.scratch_for(i, scratch_bytes)
        copy_rows = min(v.in_h, plane_h - v.pad_t)
        copy_cols = min(v.in_w, (v.out_w - 1) * s + 3 - v.pad_l)
        return DepthwisePlan(
            name=f"{self.name}_l{i}_dw", index=i, isa=self.t.isa.value, v=v, plane_h=plane_h, plane_w=plane_w, rq=rq,
            weights=weights, table=table, scratch_bytes=scratch_bytes, in_offset=v.input.offset,
            out_offset=v.output.offset, scratch_offset=-1, copy_rows=copy_rows, copy_cols=copy_cols,
            asm_loop=asm_loop, asm_tail=asm_tail, asm_blocks=v.out_w // DW_BLOCK if asm_loop or asm_tail or asm_rows else 0,
            asm_rows=asm_rows,
        ), sname

    @staticmethod
    def _dw_asm(v: ConvView, rq: Requant, plane_w: int) -> tuple[tuple[tuple[str, ...], ...], tuple[tuple[str, ...], ...]]:
        """The DSP depthwise assembly for the three ring cases, or nothing where the C path must
        do: the general requantization or a narrower activation range (no single SSAT), or
        offsets the load/store encodings cannot reach (ring rows within LDRD's 1020 bytes,
        post-indexed STRB up to 255 bytes, else immediate offsets up to 4095)."""
        c = v.out_c
        post = c <= 255
        if not (rq.fast and rq.clamp_is_int8) or 4 * plane_w + 4 * (DW_BLOCK + 1) > 1020 \
                or (not post and DW_BLOCK * c > 4095):
            return (), ()
        step = 4 * v.sh * DW_BLOCK // 2
        tail = v.out_w % DW_BLOCK
        loops, tails = [], []
        for rows in ((0, plane_w, 2 * plane_w), (plane_w, 2 * plane_w, 0), (2 * plane_w, 0, plane_w)):
            offsets = tuple(2 * r for r in rows)  # bytes
            loops.append(dw_asm_block(DW_BLOCK, v.sh, offsets, step, c, post, rq.sign_free) if v.out_w >= DW_BLOCK else ())
            tails.append(dw_asm_block(tail, v.sh, offsets, 0, c, post, rq.sign_free) if tail else ())
        return tuple(loops), tuple(tails)

    # -- CHAIN (fused A? -> depthwise B -> 1x1 C [-> ADD])
    def _chain_conv_stage(self, v: ConvView, i: int, role: str, length: int, direct: bool) -> ChainStage:
        patch = v.kh * v.kw * v.in_c
        w = np.zeros((v.out_c, length), np.int64)
        w[:, :patch] = v.weights.reshape(v.out_c, patch)
        bias = v.bias + v.input_offset * w.sum(axis=1)
        acc_bound = np.abs(v.bias) + input_magnitude(v.input_offset) * np.abs(w).sum(axis=1)
        rq = plan_requant(acc_bound, v.multiplier, v.shift, v.output_offset, v.act_min, v.act_max)
        if self.t.isa is Isa.MVE:
            # Helium: int8 rows for VMLADAVA (16 taps per instruction), plus 16 bytes so that the
            # last row's vector loads stay inside the array; the accumulator is not doubled
            scale = 1
            rows = np.zeros(v.out_c * length + 16, np.int64)
            rows[: v.out_c * length] = w.reshape(-1)
            weights = self.const(i, f"{role}_fw", "int8_t", rows.astype(np.int8),
                                 f"stage {role.upper()} weights [{v.out_c}][{length}] (+16 bytes)")
        else:
            scale = 2 if rq.fast else 1
            g = (scale * w).reshape(v.out_c, length // 4, 4)
            pairs = sxtb16_pairs(g)
            weights = self.const(i, f"{role}_fw", "int32_t", wrap32(pairs.reshape(-1)).astype(np.int32),
                                 f"stage {role.upper()} weights x{scale} [{v.out_c}][{length // 4}] int16 pairs (taps 4g+0,4g+2), (4g+1,4g+3)")
        table = self.const(i, f"{role}_rq", "int32_t", rq_table(scale * bias, rq),
                           f"stage {role.upper()} per channel: (bias + input_offset*sum(w)) x{scale}, multiplier, K or shift, e")
        return ChainStage(v=v, rq=rq, weights=weights, table=table, length=length, direct=direct, scale=scale)

    def _chain_dw_stage(self, v: ConvView, i: int) -> ChainStage:
        w = v.weights.reshape(9, v.out_c)  # [tap][channel]
        bias = v.bias + v.input_offset * w.sum(axis=0)
        acc_bound = np.abs(v.bias) + input_magnitude(v.input_offset) * np.abs(w).sum(axis=0)
        rq = plan_requant(acc_bound, v.multiplier, v.shift, v.output_offset, v.act_min, v.act_max)
        x_lo = min(-(-v.pad_l // v.sw), v.out_w)
        x_hi = min((v.in_w - 3 + v.pad_l) // v.sw, v.out_w - 1)
        if self.t.isa is Isa.MVE:
            # Helium: per block of 4 channels, 9 taps x 4 int32 weights, then the vector
            # requantization's table (bias, multiplier, left, -right, mask; exact for any shift)
            taps = w.reshape(9, v.out_c // 4, 4).transpose(1, 0, 2).reshape(v.out_c // 4, 36)
            rqv = mve_table(bias, v.multiplier, v.shift, v.out_c).reshape(v.out_c // 4, 20)
            blocks = np.concatenate([taps, rqv.astype(np.int64)], axis=1)
            weights = self.const(i, "b_fw", "int32_t", blocks.reshape(-1).astype(np.int32),
                                 "stage B per block of 4 channels: 9 taps x 4 weights, then bias + input_offset*sum(w), "
                                 "multiplier, left, -right, mask")
            return ChainStage(v=v, rq=rq, weights=weights, table=weights, length=0, direct=False, x_lo=x_lo, x_hi=x_hi,
                              scale=1)
        scale = 2 if rq.fast else 1
        g = (scale * w).reshape(9, v.out_c // 4, 4).transpose(1, 0, 2)  # [block][tap][4 channels]
        pairs = sxtb16_pairs(g)
        rq_words = rq_table(scale * bias, rq).reshape(v.out_c // 4, 16)
        blocks = np.concatenate([wrap32(pairs.reshape(v.out_c // 4, 18)), rq_words.astype(np.int64)], axis=1)
        weights = self.const(i, "b_fw", "int32_t", blocks.reshape(-1).astype(np.int32),
                             f"stage B per block of 4 channels: 9 taps x int16 pairs (c0,c2), (c1,c3) of weights x{scale}, "
                             f"then per channel (bias + input_offset*sum(w)) x{scale}, multiplier, K or shift, e")
        table = weights  # one stream: a block's requantization follows its weights
        return ChainStage(v=v, rq=rq, weights=weights, table=table, length=0, direct=False, x_lo=x_lo, x_hi=x_hi)

    def chain(self, layer: Layer):
        # every target: DSP (SMLAD family), MVE (Helium stages), portable (the DSP operations
        # written in C99)
        p = _params(layer)
        if int(p["fc.enabled"]) or not int(p["has_c"]):
            return None
        i = layer.index
        b = chain_stage_view(layer, self.consts, "b")
        c = chain_stage_view(layer, self.consts, "c")
        if not (b.depthwise and b.depth_multiplier == 1 and b.kh == 3 and b.kw == 3 and b.dh == 1 and b.dw == 1
                and b.out_c % 4 == 0 and 2 * b.out_c < 4096 and b.sh in (1, 2) and b.sw in (1, 2)):
            return None
        if not (not c.depthwise and c.kh == 1 and c.kw == 1 and c.sh == 1 and c.sw == 1 and c.pad_t == 0
                and c.pad_l == 0 and c.in_c == b.out_c and c.out_h == b.out_h and c.out_w == b.out_w):
            return None
        a_stage, patch_bytes, a_thin = None, 0, None
        if int(p["has_a"]):
            a = chain_stage_view(layer, self.consts, "a")
            if a.depthwise:
                return None
            direct = a.kh == 1 and a.kw == 1 and a.pad_t == 0 and a.pad_l == 0 and a.in_c % 4 == 0
            length = a.in_c if direct else _round_up(a.kh * a.kw * a.in_c, 4)
            if not direct:
                patch_bytes = length
                if length > CHAIN_MAX_PATCH:
                    return None
            a_stage = self._chain_conv_stage(a, i, "a", length, direct)
            in_row = a.in_w * a.in_c
            if self.t.isa is Isa.DSP and direct and a_stage.rq.fast and a_stage.rq.clamp_is_int8 \
                    and thin_loop_fits(a.in_c):
                # the thin kernel's records replace stage A's weights and table
                dropped = {a_stage.weights, a_stage.table}
                self.new_consts = [c for c in self.new_consts if c.cname not in dropped]
                wa = a.weights.reshape(a.out_c, a.in_c)
                a_thin = self._thin_code(a, i, "a_thin", wa, a.bias + a.input_offset * wa.sum(axis=1), a_stage.rq)
        else:
            in_row = b.in_w * b.in_c
        residual = None
        if int(p["residual.enabled"]):
            r = lambda k: int(p[f"residual.{k}"])  # noqa: E731
            residual = _add_plan(
                f"{self.name}_l{i}_res", i, self.t.isa.value, c.out_c, r("value_offset"), r("residual_offset"),
                r("left_shift"), r("value_multiplier"), r("value_shift"), r("residual_multiplier"), r("residual_shift"),
                r("output_multiplier"), r("output_shift"), r("output_offset"), r("act_min"), r("act_max"),
            )
        c_stage = self._chain_conv_stage(c, i, "c", c.in_c, True)
        c_thin = None
        if self.t.isa is Isa.DSP and c_stage.rq.fast and c_stage.rq.clamp_is_int8 \
                and thin_loop_fits(c.in_c):
            dropped = {c_stage.weights, c_stage.table}
            self.new_consts = [k for k in self.new_consts if k.cname not in dropped]
            wc = c.weights.reshape(c.out_c, c.in_c)
            c_thin = self._thin_code(c, i, "c_thin", wc, c.bias + c.input_offset * wc.sum(axis=1), c_stage.rq)
        c_narrow = None
        if self.t.isa is Isa.DSP and c_thin is None and c_stage.rq.fast \
                and c_stage.rq.clamp_is_int8 and narrow_conv_fits(c.in_c, c.out_c):
            dropped = {c_stage.weights, c_stage.table}
            self.new_consts = [k for k in self.new_consts if k.cname not in dropped]
            wc = c.weights.reshape(c.out_c, c.in_c)
            c_narrow = self._narrow_code(c, i, "c_narrow", wc, c.bias + c.input_offset * wc.sum(axis=1), c_stage.rq)
        return ChainPlan(
            name=f"{self.name}_l{i}_chain", index=i, isa=self.t.isa.value, a=a_stage, b=self._chain_dw_stage(b, i),
            c=c_stage, residual=residual, ring_rows=int(p["ring_rows"]), c_thin=c_thin, c_narrow=c_narrow,
            in_row=in_row, patch_bytes=patch_bytes,
            # two pixels per step share the weight and requantization loads
            a_pixels=2, a_thin=a_thin,
        ), None

    # -- FULLY_CONNECTED
    def fully_connected(self, layer: Layer):
        v = fc_view(layer, self.consts)
        groups = _round_up(v.depth, 4) // 4
        wpad = np.zeros((v.units, groups * 4), np.int64)
        wpad[:, : v.depth] = v.weights
        bias = v.bias + v.input_offset * v.weights.sum(axis=1)
        acc_bound = np.abs(v.bias) + input_magnitude(v.input_offset) * np.abs(v.weights).sum(axis=1)
        rq = plan_requant(acc_bound, v.multiplier, v.shift, v.output_offset, v.act_min, v.act_max)
        i = layer.index
        if self.t.isa is Isa.MVE:
            d16 = _round_up(v.depth, 16)
            u4 = _round_up(v.units, 4)
            wm = np.zeros(u4 * v.depth + 16, np.int64)
            wm[: v.units * v.depth] = v.weights.reshape(-1)
            weights = self.const(i, "fw", "int8_t", wm.astype(np.int8), f"weights [{u4}][{v.depth}] (+16 bytes), units padded to 4")
            table = self.const(i, "rq", "int32_t", mve_table(bias, v.multiplier, v.shift, u4),
                               "per 4 units: bias + input_offset*sum(w), multiplier, left, -right, mask")
            sname = self.scratch_for(i, 0)
            return FcPlan(
                name=f"{self.name}_l{i}_fc", index=i, isa=self.t.isa.value, v=v, groups=d16 // 4, rows=4, unroll=1, rq=rq,
                weights=weights, table=table, scratch_bytes=0, in_offset=v.input.offset,
                out_offset=v.output.offset, scratch_offset=-1,
            ), sname
        if self.t.isa is Isa.DSP:
            # units 3k..3k+2 interleaved word by word ([k][group][unit][4 bytes]), then the rest;
            # three units keep the loop in 13 registers (r7 stays free for a frame pointer)
            u3 = v.units // FC_UNITS * FC_UNITS
            blocks = wpad[:u3].reshape(u3 // FC_UNITS, FC_UNITS, groups, 4).transpose(0, 2, 1, 3).reshape(-1)
            packed = np.concatenate([blocks, wpad[u3:].reshape(-1)])
            comment = f"weights of {v.units} units x {groups * 4}: {FC_UNITS} units interleaved word by word"
        else:
            packed = wpad.reshape(-1)
            comment = f"weights [{v.units}][{groups * 4}], rows padded to words"
        weights = self.const(i, "fw", "int8_t", packed.astype(np.int8), comment)
        table = self.const(i, "rq", "int32_t", rq_table(bias, rq), "per unit: bias + input_offset*sum(w), multiplier, K or shift, e")
        scratch_bytes = groups * 8 + groups * 4
        sname = self.scratch_for(i, scratch_bytes)
        return FcPlan(
            name=f"{self.name}_l{i}_fc", index=i, isa=self.t.isa.value, v=v, groups=groups, rows=FC_UNITS,
            unroll=2 if groups % 2 == 0 else 1, rq=rq,
            weights=weights, table=table, scratch_bytes=scratch_bytes, in_offset=v.input.offset,
            out_offset=v.output.offset, scratch_offset=-1,
        ), sname

    # -- ADD
    def add(self, layer: Layer):
        p = _params(layer)
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
        return _add_plan(
            f"{self.name}_l{layer.index}_add", layer.index, self.t.isa.value, int(np.prod(shape)),
            int(p["input1_offset"]), int(p["input2_offset"]), int(p["left_shift"]),
            *(int(p[k]) for k in ("input1_multiplier", "input1_shift", "input2_multiplier", "input2_shift",
                                   "output_multiplier", "output_shift", "output_offset", "act_min", "act_max")),
        ), None

    # -- MEAN over H and W
    def mean(self, layer: Layer):
        p = _params(layer)
        count = int(p["in_h"]) * int(p["in_w"])
        channels = int(p["channels"])
        zp_in = int(p["input_zero_point"])
        bound = np.array([count * input_magnitude(-zp_in)])
        rq = plan_requant(bound, np.array([int(p["multiplier"])]), np.array([int(p["shift"])]),
                          int(p["output_zero_point"]), -128, 127)
        simd = self.t.isa in (Isa.DSP, Isa.MVE) and channels % 4 == 0 and count <= 256
        return MeanPlan(
            name=f"{self.name}_l{layer.index}_mean", index=layer.index, isa=self.t.isa.value,
            batches=int(p["batches"]), count=count, channels=channels, input_zero_point=zp_in, simd=simd, rq=rq,
        ), None

    # -- SOFTMAX
    def softmax(self, layer: Layer):
        p = _params(layer)
        params = quant.SoftmaxParams(int(p["input_multiplier"]), int(p["input_left_shift"]), int(p["diff_min"]))
        diff = -np.arange(256, dtype=np.int64)  # table index d: input - max = -d
        scaled = np.asarray(quant.multiply_by_quantized_multiplier_greater_than_one(
            diff, params.input_multiplier, params.input_left_shift), np.int64)
        exps = np.asarray(quant.exp_on_negative_values(scaled, quant.SOFTMAX_SCALED_DIFF_INTEGER_BITS), np.int64)
        exps = np.where(diff >= params.diff_min, exps, 0)
        table = self.const(layer.index, "exp", "int32_t", exps.astype(np.int32),
                           "exp(input - row max) in Q0.31 for input - max = 0, -1, ..., -255 (0: skipped)")
        return SoftmaxPlan(
            name=f"{self.name}_l{layer.index}_softmax", index=layer.index, isa=self.t.isa.value,
            outer=int(p["outer"]), depth=int(p["depth"]), table=table,
        ), None

    def run(self) -> KernelPassResult:
        dispatch = {
            "mcugen_conv2d_s8": self.conv,
            "mcugen_depthwise_conv2d_s8": self.depthwise,
            "mcugen_depthwise_conv2d_inplace_s8": self.depthwise,
            "mcugen_fully_connected_s8": self.fully_connected,
            "mcugen_add_s8": self.add,
            "mcugen_mean_hw_s8": self.mean,
            "mcugen_softmax_s8": self.softmax,
            "mcugen_chain_s8": self.chain,
        }
        pending = []
        for layer in self.p.layers:
            fn = dispatch.get(layer.kernel or "")
            made = fn(layer) if fn else None
            if made is None:
                continue
            pending.append(made)
        program, offsets = place_scratch(self.p, self.scratch)
        plans = [dataclasses.replace(plan, scratch_offset=offsets[sname]) if sname else plan for plan, sname in pending]
        by_index = {pl.index: pl for pl in plans}
        layers = []
        replaced_consts: set[str] = set()
        for layer in program.layers:
            pl = by_index.get(layer.index)
            if pl is None:
                layers.append(layer)
                continue
            replaced_consts.update(a.cname for a in layer.args if isinstance(a, ConstArg))
            self.choices[layer.index] = pl.name
            if pl.kind in ("gemm_conv", "thin_conv", "depthwise", "fc"):
                args = [layer.args[1], layer.args[6], ArenaArg(offset=pl.scratch_offset, ctype="uint32_t", const=False)]
            elif pl.kind == "add":
                args = list(layer.args[1:4])
            elif pl.kind == "chain":
                args = [layer.args[1], layer.args[19], layer.args[18]]  # input, output, the chain's scratch
            else:
                args = list(layer.args[1:3])
            layers.append(dataclasses.replace(
                layer, kernel=pl.name, kernel_group=None, params_type=None, params=[], args=args,
            ))
        still_used = {a.cname for l in layers for a in l.args if isinstance(a, ConstArg)}
        consts = [c for c in program.consts if c.cname not in replaced_consts or c.cname in still_used] + self.new_consts
        program = dataclasses.replace(
            program, layers=layers, consts=consts,
            kernel_groups=sorted({l.kernel_group for l in layers if l.kernel_group}),
        )
        files = render_layers(program, plans, self.t) if plans else {}
        return KernelPassResult(program=program, files=files, scratch=list(self.scratch), choices=dict(self.choices))


def specialize(program: Program, target: Target) -> KernelPassResult:
    """Replace the layers `target` has specialised kernels for; see the module docstring."""
    return _Specializer(program, target).run()


def _plan_parts(pl) -> list:
    """A plan and, for a chain, its stages (each with its own constants)."""
    if pl.kind == "chain":
        return [pl] + [st for st in (pl.a, pl.b, pl.c, pl.a_thin, pl.c_thin, pl.c_narrow) if st is not None]
    return [pl]


def render_layers(program: Program, plans: list, target: Target) -> dict[str, str]:
    from mcugen import __version__, codegen

    env = codegen.environment()
    ctx = dict(
        p=program, plans=plans, target=target, isa=target.isa.value, version=__version__,
        emulate_macro=EMULATE_DSP_MACRO, narrow_acc=NARROW_ACC, dw_rows_regs=DW_ROWS_REGS, dw_block=DW_BLOCK, dw_record=DW_RECORD, ldm4="{%[x0], %[x1], %[x2], %[x3]}", ldm_units="{" + ", ".join(f"%[w{r}]" for r in range(FC_UNITS)) + "}", plan_consts={getattr(x, a) for pl in plans for x in _plan_parts(pl) for a in ("weights", "table", "records") if hasattr(x, a)},
    )
    return {
        f"{program.name}_layers.h": env.get_template("c/fast/layers.h.j2").render(ctx),
        f"{program.name}_layers.c": env.get_template("c/fast/layers.c.j2").render(ctx),
        "mcugen_kernels.h": env.get_template("c/fast/kernels.h.j2").render(ctx),
    }


# ---- the one entry point for the driver -------------------------------------------------------

KERNELS = ("mcugen", "cmsis-nn")


def apply_kernels(program: Program, kernels: str, target: Target, cmsis_nn: Optional[str] = None) -> KernelPassResult:
    """The kernel pass `kernels` names, run on a lowered Program for `target`:
    "mcugen" specialises layers (this module), "cmsis-nn" calls Arm's library
    (`mcugen.backend_cmsis_nn`; `cmsis_nn` is its checkout, else $CMSIS_NN_PATH)."""
    if kernels == "mcugen":
        return specialize(program, target)
    if kernels == "cmsis-nn":
        from mcugen.backend_cmsis_nn import to_cmsis_nn

        return to_cmsis_nn(program, target, cmsis_nn)
    from mcugen.errors import UnsupportedError

    raise UnsupportedError(f"unknown --kernels {kernels!r}; choose one of {', '.join(KERNELS)}")
