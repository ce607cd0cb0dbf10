"""CONV_2D and 1x1 kernels: the im2col GEMM plan and its block cost, the thin and narrow DSP assembly, their selection.

The templates that print these plans: templates/c/fast/conv.c.j2 (macros gemm_conv, gemm_conv_mve,
thin_conv), called from layers.c.j2.
"""

from __future__ import annotations

import dataclasses
from dataclasses import dataclass
from typing import ClassVar, Optional, Sequence

import numpy as np

from mcugen.kernels import base as base_module
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
from mcugen.kernels.gemm_asm import RQ_E_BITS, dot_registers, gemm_dot_asm, gemm_dot_fits
from mcugen.kernels.thin_rebuild import (
    bias_with_e,
    doubled_pairs,
    int8_quads,
    thin_compact_words,
    thin_rebuild_asm,
    thin_rebuild_cost,
)
from mcugen.kernels.requant import (
    Requant,
    input_magnitude,
    k_follows_from_e,
    mve_table,
    plan_requant,
    rq_table,
    sxtb16_pairs,
    uniform_k,
    uniform_scale,
    uniform_shift,
    wrap32,
)
from mcugen.lower import Layer
from mcugen.targets import Isa


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
    rq_words: int = 4  # words per channel of the table: 4 (bias, M, K or shift, e), 3 (no e) or 2 (bias and e in one word, M: see rq_table_words)
    shared: bool = False  # later layers call this layer's code with their own weights and table (`share_gemm_code`)
    code_of: str = ""  # the earlier layer whose code this one calls (its own code is not emitted)
    dot_asm: tuple[tuple[str, ...], ...] = ()  # DSP, short form: the block's and the tail's channel loop in assembly (gemm_dot_asm)
    # the input channels are an argument of the code (its gather and channel loop), not constants:
    # 1x1 layers that differ only in them share the code (share_gemm_code)
    in_arg: bool = False
    # the output channels too (with in_arg): the stores by register offsets; 1x1 layers that differ
    # in them share the code
    out_arg: bool = False

    @property
    def dot_registers(self) -> tuple[str, tuple[str, ...]]:
        """dot_asm's weight pointer register and clobbers (gemm_asm.dot_registers)."""
        return dot_registers(self.full_unroll, self.in_arg, self.out_arg)

    def dot_lines(self, pixels: int) -> tuple[str, ...]:
        """The channel loop in assembly for the block of `pixels` (the block or the tail), or ()."""
        if not self.dot_asm:
            return ()
        return self.dot_asm[0] if pixels == self.block else self.dot_asm[1]

    @property
    def e_from_k(self) -> bool:
        """The short requantization's e is computed from K (three-word table)."""
        return self.rq_words == 3 and self.rq.fast

    @property
    def e_in_bias(self) -> bool:
        """The short requantization's e in the low RQ_E_BITS of the bias word, K from e (two-word table)."""
        return self.rq_words == 2


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
    out_stride: int = 1  # bytes between two output channels
    # in line, one shift E for every channel (requant.uniform_shift; 0: each channel's e): the
    # records scaled per channel by 2^(E - e + 1), K' = uniform_k, SMMLA for SMMLAR
    uniform: int = 0


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
    # requantized in place, then the stores one after the other (a store after a store pipelines)
    for c in range(0, n, 2):
        pair = c + 1 < n
        lines.append("ldm r10!, {r7, r11, r12, lr}" if pair else "ldm r10!, {r11, r12}")
        for j, (m, k) in enumerate((("r7", "r11"), ("r12", "lr")) if pair else (("r11", "r12"),)):
            a = acc[c + j]
            lines.append(f"smmlar {m}, {a}, {m}, {k}")
            if not sign_free:
                lines.append(f"add {m}, {m}, {a}, asr #31")
            lines.append(f"ssat {a}, #8, {m}, asr #{int(shifts[c + j])}")
    lines += [f"strb {acc[c]}, [r9, #{c}]" for c in range(n)]
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
    # the compact form (mcugen.kernels.thin_rebuild): `weights` holds int8 weights, the records
    # are rebuilt in scratch by this assembly at each call (k_odd = 2 zero_point + 1)
    rebuild: tuple[str, ...] = ()
    k_odd: int = 0
    compact_words: int = 0  # words per channel of the compact form
    shared: bool = False  # later layers call this layer's code with their own weights (share_thin_code)
    code_of: str = ""  # the earlier layer whose code this one calls (its own code is not emitted)

    @property
    def loop_last(self) -> Optional[int]:
        """The channel whose rebuilt e gets bit 31 (thin_loop_last), or None."""
        return thin_loop_last(self.v.out_c)


THIN_LOOP_UNROLL = 4  # output channels per iteration of the looped thin kernel
_REG_NUMBER = {f"r{n}": n for n in range(13)} | {"lr": 14}


def thin_conv_asm(in_c: int, shifts: Sequence[int], looped: bool = False,
                  sign_free: bool = False, out_stride: int = 1,
                  truncating: bool = False) -> tuple[tuple[str, ...], tuple[str, ...]]:
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
    full iteration follow in line. `out_stride`: bytes between two output channels (a fused
    chain's channel-major ring: thin_stride_fits). `truncating`: SMMLA in place of SMMLAR (the
    records of one uniform shift, requant.uniform_shift; sign-free only)."""
    assert not truncating or (sign_free and not looped)
    nx = in_c // 2
    xs = THIN_X_REGS[:nx]
    tail = ["m", "k", "e"] if looped else ["m", "k"]
    words = ["b"] + [f"w{k}" for k in range(nx)] + tail

    def record_chunks(temps: Sequence[str]) -> list[list[str]]:
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
        return chunks

    free = [r for r in THIN_TEMPS if r not in xs]
    # r7 too (saved and restored here: PUSH and POP once per pixel) where the load-multiples
    # it saves per channel outnumber those two
    with_r7 = sorted(free + ["r7"], key=_REG_NUMBER.get)
    use_r7 = looped or (len(record_chunks(free)) - len(record_chunks(with_r7))) * len(shifts) > 2
    temps = with_r7 if use_r7 else sorted(free, key=_REG_NUMBER.get)
    chunks = record_chunks(temps)
    lines = ["push {r7}"] if use_r7 else []
    for g in range(in_c // 4):  # raw words into the odd x registers first (r2 is the pointer)
        lines.append(f"ldr {xs[2 * g + 1]}, [r2, #{4 * g}]")
    for g in range(in_c // 4):
        lines.append(f"sxtb16 {xs[2 * g]}, {xs[2 * g + 1]}")
        lines.append(f"sxtb16 {xs[2 * g + 1]}, {xs[2 * g + 1]}, ror #8")

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
        out.append(f"{'smmla' if truncating else 'smmlar'} {m}, {acc}, {m}, {kk}")
        if not sign_free:
            out.append(f"add {m}, {m}, {acc}, asr #31")
        if looped:
            out.append(f"asr {m}, {m}, {where['e']}")
            out.append(f"ssat {m}, #8, {m}")
            out.append(f"strb {m}, [r1], #{out_stride}")
        else:
            out.append(f"ssat {m}, #8, {m}, asr #{int(e)}")
            out.append(f"strb {m}, [r1, #{j * out_stride}]")
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
        if use_r7:
            lines.append("pop {r7}")
    clobbers = tuple(r for r in sorted(set(temps + list(xs)) - {"r2", "r7"}, key=_REG_NUMBER.get))
    return tuple(lines), clobbers


def thin_records(w: np.ndarray, bias: np.ndarray, rq: Requant, looped: bool, uniform: int = 0) -> np.ndarray:
    """The thin kernel's record stream, [out_c][words]: 2*bias', weight pairs x2 in the input
    registers' order ((t4g, t4g+2), (t4g+1, t4g+3)), M, K (and, looped, e with bit 31 on the
    loop's last channel). `uniform` E (in line): bias and weights x 2^(E - e + 1) instead of x2,
    and K' (requant.uniform_shift)."""
    out_c, in_c = w.shape
    scale = uniform_scale(rq, uniform)[:, None] if uniform else 2
    k = uniform_k(rq, uniform) if uniform else rq.k.astype(np.int64)
    g = (scale * np.asarray(w, np.int64)).reshape(out_c, in_c // 4, 4)
    pairs = sxtb16_pairs(g).reshape(out_c, -1)
    cols = [wrap32(scale * np.asarray(bias, np.int64)[:, None]), wrap32(pairs), rq.multiplier.astype(np.int64)[:, None],
            wrap32(k)[:, None]]
    if looped:
        e = rq.e.astype(np.int64).copy()
        last = thin_loop_last(out_c)
        if last is not None:
            e[last] |= 1 << 31
        cols.append(wrap32(e)[:, None])
    return np.concatenate(cols, axis=1)


def thin_loop_last(out_c: int) -> Optional[int]:
    """The looped thin kernel's last channel in the loop (THIN_LOOP_UNROLL per step; the rest in
    line after it), whose e has bit 31: None where no whole step fits."""
    full = out_c // THIN_LOOP_UNROLL * THIN_LOOP_UNROLL
    return full - 1 if full else None


def thin_conv_fits(in_c: int, out_c: int) -> bool:
    """Few enough input channels for a pixel in registers (in_c in 4, 8, 12, 16), few enough
    output channels for the code in line: at most THIN_MAX_INSTRUCTIONS per pixel."""
    if not thin_loop_fits(in_c):
        return False
    nx = in_c // 2
    temps = len(THIN_TEMPS) - nx
    per_channel = -(-(nx + 3 - temps) // (temps - 1)) + 1 if nx + 3 > temps else 1
    return out_c * (per_channel + nx + 4) + 3 * in_c // 4 <= THIN_MAX_INSTRUCTIONS


def thin_stride_fits(in_c: int, out_c: int, out_stride: int) -> bool:
    """The thin kernel's stores encode with `out_stride` bytes between output channels:
    immediate offsets up to 4095 in line, post-indexed steps up to 255 looped."""
    if thin_conv_fits(in_c, out_c):
        return (out_c - 1) * out_stride <= 4095
    return out_stride <= 255


def thin_loop_fits(in_c: int) -> bool:
    """A pixel's inputs fit the registers: 4, 8, 12 or 16 input channels."""
    return in_c % 4 == 0 and 4 <= in_c <= 16


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


# The GEMM kernel's requantization table: 4 words per channel (bias, M, K or shift, e); 3 where e
# is not stored (the exact general form never reads it); or, for the short form, 2: the bias
# shifted left by RQ_E_BITS with e in the bits freed, then M, where every bias fits, and K =
# (2 zero_point + 1) 2^(e-1) computed from e (AND, SUB, LSL, and ASR for the bias: against the
# two words the four-word row loads, E_UNPACK_INSTRUCTIONS more per channel and block of pixels;
# the three-word row: E_FROM_K_INSTRUCTIONS, its shift from K by RBIT + CLZ + 1). Four words are kept
# only where the instructions that saves per byte of flash reach INSTRUCTIONS_PER_FLASH_BYTE.
E_FROM_K_INSTRUCTIONS = 3
E_UNPACK_INSTRUCTIONS = 5  # measured on MobileNet v2: ~8 against four words, ~2.3 against three


def rq_table_words(rq: Requant, blocks: int, flash_tight: bool, bias: Optional[np.ndarray] = None) -> int:
    """Words per channel of a GEMM layer's table whose dot product runs `blocks` times per
    inference (each time every channel's requantization); `bias` (as the table holds it): the two-word
    form only where every value shifted by RQ_E_BITS fits int32 (else three)."""
    if not rq.fast:
        return 3
    small = 2 if bias is not None and rq_e_packs(bias, rq) else 3
    if flash_tight:
        return small
    extra = E_UNPACK_INSTRUCTIONS if small == 2 else E_FROM_K_INSTRUCTIONS
    return 4 if extra * blocks >= 4 * (4 - small) * base_module.INSTRUCTIONS_PER_FLASH_BYTE else small


def rq_e_packs(bias: np.ndarray, rq: Requant) -> bool:
    """Whether e can ride in the low RQ_E_BITS of each channel's bias word (the GEMM two-word row,
    the thin kernel's compact form, the 3x3 depthwise int8 form): every bias survives the shift by
    RQ_E_BITS and K follows from e (requant.k_follows_from_e: e in 1..31)."""
    b = wrap32(np.asarray(bias, np.int64))
    lim = 1 << (31 - RQ_E_BITS)
    return bool(k_follows_from_e(rq) and np.all((b >= -lim) & (b < lim)))


def rq_table_packed(bias: np.ndarray, rq: Requant) -> np.ndarray:
    """The two-word table: 2 zero_point + 1 (K's odd factor; a word, so that layers that share
    code need not print it), then per channel [bias * 2^RQ_E_BITS + e, M] (rq_e_packs must hold)."""
    rows = np.stack([bias_with_e(wrap32(np.asarray(bias, np.int64)), rq.e), rq.multiplier.astype(np.int64)], axis=1)
    return np.concatenate([[2 * rq.output_offset + 1], rows.reshape(-1)]).astype(np.int32)


def select_conv(ctx: KernelContext, layer: Layer) -> Optional[tuple[GemmConvPlan | ThinConvPlan, str]]:
    """CONV_2D, every target (batch 1): see `conv_plan`."""
    return conv_plan(ctx, conv_view(layer, ctx.consts), layer.index)


def conv_plan(ctx: KernelContext, v: ConvView, i: int) -> Optional[tuple[GemmConvPlan | ThinConvPlan, str]]:
    """The kernel for convolution `v` (layer `i`) and its scratch buffer's name: MVE the GEMM
    with 16 taps per instruction; DSP 1x1 layers whose short requantization is exact and clamps
    to int8 the thin kernel (4..16 input channels) or the narrow one (<= 16 output channels);
    otherwise the im2col GEMM in blocks of pixels (`_choose_block` states their cost)."""
    if v.batches != 1:
        return None
    pointwise = v.kh == 1 and v.kw == 1 and v.sh == 1 and v.sw == 1 and v.pad_t == 0 and v.pad_l == 0
    patch = v.kh * v.kw * v.in_c
    groups = round_up(patch, 4) // 4
    w = v.weights.reshape(v.out_c, patch)
    wpad = np.zeros((v.out_c, groups * 4), np.int64)
    wpad[:, :patch] = w
    sum_w = w.sum(axis=1)
    bias = v.bias + v.input_offset * sum_w
    acc_bound = np.abs(v.bias) + input_magnitude(v.input_offset) * np.abs(w).sum(axis=1)
    rq = plan_requant(acc_bound, v.multiplier, v.shift, v.output_offset, v.act_min, v.act_max)
    npix = v.out_h * v.out_w
    if ctx.t.isa is Isa.MVE:
        l16 = round_up(patch, 16)
        oc4 = round_up(v.out_c, 4)
        # rows of `patch` bytes (the loads are predicated, no padding to 16); channels
        # padded to 4 with zero rows, plus 16 bytes so that the last row's vector loads
        # stay inside the array
        wm = np.zeros(oc4 * patch + 16, np.int64)
        wm[: v.out_c * patch] = w.reshape(-1)
        weights = ctx.const(i, "fw", "int8_t", wm.astype(np.int8), f"weights [{oc4}][{patch}] (+16 bytes), channels padded to 4")
        table = ctx.const(i, "rq", "int32_t", mve_table(bias, v.multiplier, v.shift, oc4),
                          "per 4 channels: bias + input_offset*sum(w), multiplier, left, -right, mask")
        block = 2 if npix >= 2 else 1
        tail = npix % block
        scratch_bytes = 0 if pointwise else block * l16
        sname = ctx.scratch_for(i, scratch_bytes)
        return GemmConvPlan(
            name=f"{ctx.name}_l{i}_conv", index=i, isa=ctx.t.isa.value, pointwise=pointwise, v=v, groups=l16 // 4,
            block=block, tail=tail, npix=npix, rq=plan_requant(acc_bound, v.multiplier, v.shift, v.output_offset, v.act_min, v.act_max),
            weights=weights, table=table, scratch_bytes=scratch_bytes, in_offset=v.input.offset,
            out_offset=v.output.offset, scratch_offset=-1, word_taps=False, unroll=1, doubled=False,
        ), sname
    if (ctx.t.isa is Isa.DSP and pointwise and rq.fast and rq.clamp_is_int8
            and thin_loop_fits(v.in_c)):
        plan, scratch = _thin_conv(ctx, v, i, w, bias, rq, npix)
        return plan, ctx.scratch_for(i, scratch)  # no scratch: 4 bytes
    if (ctx.t.isa is Isa.DSP and pointwise and rq.fast and rq.clamp_is_int8
            and narrow_conv_fits(v.in_c, v.out_c)):
        code = narrow_code(ctx, v, i, "fw", w, bias, rq)
        return ThinConvPlan(
            name=f"{ctx.name}_l{i}_conv", index=i, isa=ctx.t.isa.value, v=v, npix=npix, rq=rq,
            weights=code.records, table=code.records, code=None, narrow=code,
        ), ctx.scratch_for(i, 0)
    full_unroll = groups <= FULL_UNROLL_GROUPS
    block, tail = _choose_block(npix, _BLOCKS_UNROLLED if full_unroll else _BLOCKS, groups)
    # Doubling the inputs as they are gathered costs 2 instructions per group and pixel and
    # saves one per output (the short requantization wants 2 * acc): worth it when the
    # layer has more output channels than twice its groups.
    doubled = rq.fast and 2 * groups < v.out_c
    weights = ctx.const(i, "fw", "int8_t", wpad.astype(np.int8), f"weights [{v.out_c}][{groups * 4}], rows padded to words")
    tbias = (2 if doubled else 1) * bias
    rq_words = rq_table_words(rq, npix // block + (1 if tail else 0), ctx.flash_tight, tbias)
    if rq_words == 2:
        table = ctx.const(i, "rq", "int32_t", rq_table_packed(tbias, rq),
                          f"2 * output zero point + 1, then per channel: (bias + input_offset*sum(w)){' x2' if doubled else ''} * 2^{RQ_E_BITS} + e, multiplier")
    else:
        table = ctx.const(i, "rq", "int32_t", rq_table(tbias, rq)[:, :rq_words],
                          f"per channel: bias + input_offset*sum(w){' (x2)' if doubled else ''}, multiplier, K or shift"
                          + (", e" if rq_words == 4 else ""))
    scratch_bytes = groups * block * 8 + groups * 4  # int16 pairs + a byte patch
    sname = ctx.scratch_for(i, scratch_bytes)
    dot_asm: tuple[tuple[str, ...], ...] = ()
    unroll = groups if full_unroll else _unroll(groups)
    if ctx.t.isa is Isa.DSP and rq.fast and all(gemm_dot_fits(n, v.out_c, full_unroll) for n in (block, tail) if n):
        dot_asm = tuple(gemm_dot_asm(n, groups, unroll, full_unroll, v.out_c, doubled, rq_words, rq) if n else ()
                        for n in (block, tail))
    return GemmConvPlan(
        name=f"{ctx.name}_l{i}_conv", index=i, isa=ctx.t.isa.value, pointwise=pointwise, v=v, groups=groups,
        block=block, tail=tail, npix=npix, rq=rq, weights=weights, table=table, scratch_bytes=scratch_bytes,
        in_offset=v.input.offset, out_offset=v.output.offset, scratch_offset=-1, word_taps=v.in_c % 4 == 0,
        unroll=unroll, doubled=doubled, full_unroll=full_unroll, rq_words=rq_words, dot_asm=dot_asm,
    ), sname


def thin_code(ctx: KernelContext, v: ConvView, i: int, role: str, w: np.ndarray, bias: np.ndarray, rq: Requant,
              out_stride: int = 1, uniform: bool = False) -> ThinCode:
    """The thin kernel for 1x1 convolution `v` (weights `w` [out_c][in_c], folded `bias`): its
    records as constant `role` and its assembly, channels in line where they fit, else looped;
    output channels `out_stride` bytes apart. `uniform`: in line with one shift for every
    channel where requant.uniform_shift finds one (code that does not depend on the channels'
    shifts, which layers of one shape can share)."""
    looped = not thin_conv_fits(v.in_c, v.out_c)
    top = 0
    if uniform and not looped:
        top = uniform_shift(rq, np.abs(v.bias) + input_magnitude(v.input_offset) * np.abs(np.asarray(w, np.int64)).sum(axis=1))
    records = thin_records(w, bias, rq, looped, top)
    scale = f"x2^(E-e+1) (E = {top})" if top else "x2"
    name = ctx.const(i, role, "int32_t", records.astype(np.int32),
                     f"per channel: (bias + input_offset*sum(w)) {scale}, weights {scale} as int16 pairs "
                     "(t4g,t4g+2),(t4g+1,t4g+3), multiplier, K" + (", e (bit 31: the loop's last channel)" if looped else ""))
    shifts = [top] * v.out_c if top else rq.e
    lines, clobbers = thin_conv_asm(v.in_c, shifts, looped, rq.sign_free, out_stride, truncating=bool(top))
    return ThinCode(records=name, record_words=records.shape[1], lines=lines, clobbers=clobbers,
                    shifts=tuple(int(e) for e in shifts), in_c=v.in_c, out_c=v.out_c, looped=looped,
                    out_stride=out_stride, uniform=top)


def narrow_code(ctx: KernelContext, v: ConvView, i: int, role: str, w: np.ndarray, bias: np.ndarray, rq: Requant) -> NarrowCode:
    """The narrow kernel for 1x1 convolution `v`: its records as constant `role` and one
    assembly pass per <= 8 output channels."""
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
    name = ctx.const(i, role, "int32_t", wrap32(np.array(words, np.int64)).astype(np.int32),
                     "per pass of <= 8 channels: (bias + input_offset*sum(w)) x2, per group of 4 inputs and "
                     "channel the weights x2 as int16 pairs (t0,t2),(t1,t3), per channel multiplier, K")
    return NarrowCode(records=name, passes=tuple(passes), shifts=tuple(int(e) for e in rq.e), in_c=v.in_c,
                      out_c=v.out_c, groups_per_step=unroll)


def narrow_compact_words(w: np.ndarray, bias: np.ndarray, rq: Requant) -> np.ndarray:
    """The narrow kernel's records (narrow_code) in the compact form that mcugen_narrow_records
    rebuilds: per pass of <= 8 channels the bias words (2*bias' * 2^RQ_E_BITS + e), per group of 4
    inputs and channel one word of the 4 int8 weights, per channel M (rq_e_packs must hold for
    2 * bias)."""
    out_c, in_c = w.shape
    quads = int8_quads(w)  # [channel][group]
    be = bias_with_e(wrap32(2 * np.asarray(bias, np.int64)), rq.e)
    words: list[int] = []
    for first in range(0, out_c, len(NARROW_ACC)):
        chans = list(range(first, min(first + len(NARROW_ACC), out_c)))
        words += [int(x) for x in be[chans]]
        words += [int(x) for x in quads[chans].T.reshape(-1)]  # [group][channel]
        words += [int(rq.multiplier[c]) for c in chans]
    return wrap32(np.array(words, np.int64))


def rebuild_narrow_records(compact: np.ndarray, in_c: int, out_c: int, k_odd: int) -> np.ndarray:
    """What mcugen_narrow_records makes of the compact form: narrow_code's record words."""
    c = [int(x) for x in np.asarray(compact, np.int64)]
    out: list[int] = []
    at = 0
    for first in range(0, out_c, len(NARROW_ACC)):
        n = min(len(NARROW_ACC), out_c - first)
        be = c[at:at + n]
        at += n
        out += [x >> RQ_E_BITS for x in be]
        lo, hi = doubled_pairs(np.array(c[at:at + n * (in_c // 4)], np.int64))
        out += [int(v) for v in np.stack([lo, hi], axis=1).reshape(-1)]
        at += n * (in_c // 4)
        for k in range(n):
            out += [c[at + k], (k_odd << ((be[k] & ((1 << RQ_E_BITS) - 1)) - 1)) & 0xFFFFFFFF]
        at += n
    return wrap32(np.array(out, np.int64))


THIN_COMPACT: Optional[bool] = None  # True/False: the thin kernel's compact form wherever it is exact / nowhere; None: per layer


def _thin_conv(ctx: KernelContext, v: ConvView, i: int, w: np.ndarray, bias: np.ndarray, rq: Requant,
               npix: int) -> tuple[ThinConvPlan, int]:
    """The thin kernel for a whole layer, and its scratch bytes. Looped, its records may be
    rebuilt in scratch from the compact form (int8 weights in flash; thin_rebuild) unless
    `larger_form_pays` for the rebuild's instructions against the bytes the records add."""
    looped = not thin_conv_fits(v.in_c, v.out_c)
    records = thin_records(w, bias, rq, True) if looped else None
    compact = looped and rq_e_packs(records[:, 0], rq)
    if compact and THIN_COMPACT is None:
        rebuild = thin_rebuild_cost(v.in_c, v.out_c)
        small = npix * v.out_c * (v.in_c // 2 + 6) + rebuild  # per pixel and channel: the SMLADs, load, requantization
        compact = not larger_form_pays(rebuild, small, 4 * (v.in_c // 4 + 2) * v.out_c, ctx.flash_tight)
    elif compact:
        compact = THIN_COMPACT
    if not compact:
        code = thin_code(ctx, v, i, "fw", w, bias, rq)
        return ThinConvPlan(
            name=f"{ctx.name}_l{i}_conv", index=i, isa=ctx.t.isa.value, v=v, npix=npix, rq=rq, weights=code.records,
            table=code.records, code=code,
        ), 0
    packed = thin_compact_words(records, w)
    name = ctx.const(i, "fp", "int32_t", packed.astype(np.int32),
                     f"per channel: (bias + input_offset*sum(w)) x2 * 2^{RQ_E_BITS} + e, the int8 weights 4 per word, "
                     "multiplier; the kernel rebuilds its records in scratch")
    lines, clobbers = thin_conv_asm(v.in_c, rq.e, True, rq.sign_free)
    code = ThinCode(records="(const int32_t *)scratch", record_words=records.shape[1], lines=lines, clobbers=clobbers,
                    shifts=tuple(int(e) for e in rq.e), in_c=v.in_c, out_c=v.out_c, looped=True)
    return ThinConvPlan(
        name=f"{ctx.name}_l{i}_conv", index=i, isa=ctx.t.isa.value, v=v, npix=npix, rq=rq, weights=name, table=name,
        code=code, rebuild=thin_rebuild_asm(v.in_c), k_odd=2 * rq.output_offset + 1, compact_words=packed.shape[1],
    ), 4 * records.shape[1] * v.out_c


def share_thin_code(plans: list, render) -> list:
    """Thin layers in the compact form that would print the same code share one copy
    (`base.share_identical_code`)."""
    return share_identical_code(plans, render, lambda pl: pl.kind == "thin_conv" and bool(pl.rebuild))


def _in_arg_candidate(pl) -> bool:
    """A DSP 1x1 GEMM layer whose channel loop is assembly with the group loop: its input channels
    can be an argument (GemmConvPlan.in_arg)."""
    return (pl.kind == "gemm_conv" and pl.isa == "dsp" and pl.pointwise and pl.word_taps and not pl.full_unroll
            and bool(pl.dot_asm))


def _with_args(pl, out_arg: bool = False):
    """`pl` with its input channels (and, `out_arg`, its output channels) arguments: the channel
    loops read them from their frame."""
    lines = tuple(gemm_dot_asm(n, pl.groups, pl.unroll, False, pl.v.out_c, pl.doubled, pl.rq_words, pl.rq, len_arg=True,
                               out_arg=out_arg) if n else () for n in (pl.block, pl.tail))
    return dataclasses.replace(pl, in_arg=True, out_arg=out_arg, dot_asm=lines)


SHARE_IN_ARG = True  # 1x1 GEMM layers that differ only in their input channels share code (share_gemm_code)
SHARE_OUT_ARG: Optional[bool] = None  # ... and in their output channels: True/False always / never; None: by cost
OUT_ARG_INSTRUCTIONS = 3  # per channel and block of pixels: the stores' offsets from the frame (gemm_dot_asm)


def _out_arg_pays(plans: list, members: list[int]) -> bool:
    """Whether layers that differ in their output channels share one copy of the code: the
    stores' offsets cost OUT_ARG_INSTRUCTIONS per channel and block of every member, against the
    copies of the channel loops (and gathers) the others no longer print; unless
    `larger_form_pays` for the copies."""
    if SHARE_OUT_ARG is not None:
        return SHARE_OUT_ARG
    cost = sum(OUT_ARG_INSTRUCTIONS * plans[n].v.out_c * (plans[n].npix // plans[n].block + (1 if plans[n].tail else 0))
               for n in members)
    copies = {(plans[n].v.out_c, plans[n].v.in_c) for n in members}
    saved = (len(copies) - 1) * ASM_LINE_BYTES * sum(len(lines) for lines in plans[members[0]].dot_asm)
    small = sum(plans[n].v.macs for n in members) + cost
    return not larger_form_pays(cost, small, saved, False)


def share_gemm_code(plans: list, render) -> list:
    """GEMM layers (DSP and portable targets) that would print the same code share one copy
    (`base.share_identical_code`). First, DSP 1x1 layers that would print the same code but for
    their input channels (and so their MACs) take them as an argument (`in_arg`: one more
    instruction per channel and block of pixels) and share one copy: the first such layer
    owns it; so do those that differ in their output channels too (`out_arg`, where
    `_out_arg_pays`)."""
    out = list(plans)
    both = {n: _with_args(pl, out_arg=True) for n, pl in enumerate(plans) if _in_arg_candidate(pl)}
    keys = {n: placeholder_key(var, render, groups=0, v=dataclasses.replace(var.v, in_c=0, out_c=0), scratch_bytes=0)
            for n, var in both.items()}
    for members in group_by_key(keys):
        outs = {plans[n].v.out_c for n in members}
        if len(outs) > 1 and not _out_arg_pays(plans, members):
            # share only within each output width (in_arg where their inputs differ)
            parts = [[n for n in members if plans[n].v.out_c == oc] for oc in sorted(outs)]
        else:
            parts = [members]
        for part in parts:
            out_arg = len({plans[n].v.out_c for n in part}) > 1
            if (len({plans[n].v.in_c for n in part}) < 2 and not out_arg) or not (SHARE_IN_ARG or out_arg):
                continue  # the same channels: share_identical_code below
            own_and_call(out, part, both if out_arg else {n: _with_args(plans[n]) for n in part})
    return share_identical_code(out, render, lambda pl: pl.kind == "gemm_conv" and pl.isa != "mve" and not pl.in_arg)
