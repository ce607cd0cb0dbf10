"""Fused chain kernels (conv A? -> 3x3 depthwise B -> 1x1 C [-> ADD]): the stages' plans and the chain's selection.

The templates that print these plans: templates/c/fast/chain.c.j2 (macro chain), called from
layers.c.j2; the rebuilds of the compact stage records: templates/c/fast/records.c.j2.
"""

from __future__ import annotations

import dataclasses
from dataclasses import dataclass
from typing import ClassVar, Optional

import numpy as np

from mcugen.kernels import base as base_module
from mcugen.kernels.base import (
    ASM_LINE_BYTES,
    ConvView,
    KernelContext,
    group_by_key,
    chain_stage_view,
    larger_form_pays,
    layer_params,
    round_up,
)
from mcugen.kernels.conv import (
    NarrowCode,
    ThinCode,
    narrow_code,
    narrow_compact_words,
    narrow_conv_fits,
    rq_e_packs,
    thin_records,
    thin_code,
    thin_loop_fits,
    thin_stride_fits,
)
from mcugen.kernels import depthwise as depthwise_module
from mcugen.kernels.depthwise import (DW_INT8_BYTES, dw3_int8_consts, dw3_rebuild_args, dw3_requant, scale_note,
                                      uniform_packs)
from mcugen.kernels.thin_rebuild import thin_compact_words, uniform_compact_words
from mcugen.kernels.depthwise_asm import DW_BLOCK, DW_LAST_CHANNEL, DW_RECORD, dw_s1_macs, requant_lines, rq_lines
from mcugen.kernels.elementwise import AddPlan, add_plan
from mcugen.kernels.requant import (
    RQ_E_BITS,
    Requant,
    int16_pair,
    input_magnitude,
    mve_table,
    plan_requant,
    rq_table,
    sxtb16_pairs,
    uniform_requant,
    wrap32,
)
from mcugen.lower import Layer
from mcugen.targets import Isa

CHAIN_MAX_PATCH = 128  # bytes of one input patch of a chain's stage A (two sit on the stack)

# Weights of conv stages A and C (DSP and portable targets): int16 pairs in SXTB16's order take
# 8 bytes per output channel and group of 4 taps; int8 words take 4 and cost two SXTB16 more per
# group and channel each time the stage runs (one load of a word instead of a load of two:
# 2 instructions, about 1 cycle on the M4). The int16 form is kept where it saves at least
# INSTRUCTIONS_PER_FLASH_BYTE instructions per inference per byte of flash it adds.
INT8_EXTRA_INSTRUCTIONS = 2  # per output channel, group of 4 taps and call of the stage


def int16_weights_pay(calls: int, flash_tight: bool) -> bool:
    """Whether a conv stage that runs `calls` times per inference (every output channel and group
    each time) keeps its weights as int16 pairs: not when the flash budget is tight, else when
    the instructions it saves per byte of flash it adds, INT8_EXTRA_INSTRUCTIONS * calls / 4,
    reach INSTRUCTIONS_PER_FLASH_BYTE."""
    return not flash_tight and INT8_EXTRA_INSTRUCTIONS * calls >= 4 * base_module.INSTRUCTIONS_PER_FLASH_BYTE


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
    int8_weights: bool = False  # conv stage, DSP/portable: int8 rows of `length` bytes, sign-extended as read (else int16 pairs)

    @property
    def doubled(self) -> bool:
        return self.scale == 2 if self.scale else self.rq.fast

    @property
    def groups(self) -> int:
        return self.length // 4


# DSP stage B on a channel-major ring: registers of ring_b_asm (r7 saved by the assembly and
# used for the weight pair wa)
RING_B_REGS = {"a0": "r0", "a1": "r1", "a2": "r2", "a3": "r3", "wc": "r4", "d0": "r5", "d1": "r6",
               "p0": "r8", "p1": "r9", "p2": "r10", "o": "r11", "w": "r12", "d2": "lr"}
RING_B_SLOTS = 3  # ring slots (rows of A's output) of a 3x3 stage B


def ring_b_plane_w(b: ConvView) -> int:
    """Bytes of one channel's row in a ring slot: the input columns with their zero-point
    border, and the whole words the last block of DW_BLOCK outputs reads (stride 1: 8 bytes
    from column 4k, stride 2: 12 bytes from column 8k)."""
    blocks = -(-b.out_w // DW_BLOCK)
    read = DW_BLOCK * (blocks - 1) + 8 if b.sw == 1 else 2 * DW_BLOCK * (blocks - 1) + 12
    return round_up(max(read, b.pad_l + b.in_w, (b.out_w - 1) * b.sw + 3), 4)


def ring_b_fits(b: ConvView) -> bool:
    """The offsets of ring_b_asm encode: LDRD post-indexed by the row width (<= 1020, and the
    stride-2 word 2 at a negative offset down to -255), stores at j * channels (<= 4095)."""
    pw = ring_b_plane_w(b)
    return pw - 8 <= 255 and (DW_BLOCK - 1) * b.out_c <= 4095


def ring_b_asm(n: int, stride: int, plane_w: int, channels: int, sign_free: bool, act_min: int = -128,
               act_max: int = 127) -> tuple[str, ...]:
    """Armv7E-M assembly of `n` (<= DW_BLOCK) consecutive outputs of every channel of a 3x3
    depthwise row on the channel-major int8 ring (RING_B_REGS). %[p0..p2]: channel 0's ring
    rows of kernel rows 0..2 at the block's first column; each LDRD of a row's words moves its
    pointer on by `plane_w` to the next channel's row. Per kernel row: one LDRD of its weight
    pairs (the depthwise record, DW_RECORD words per channel), the ring words unpacked by
    SXTB16 (ROR 8) into the int16 pairs the layer-by-layer kernel reads from its int16 ring,
    two SMLAxy per output. Then the short requantization of each accumulator in place
    (ring_b_requant) and the n stores one after the other (pipelined), at %[o] + j * channels,
    %[o] one byte on; the channel loop ends after the record whose e has bit 31 set."""
    bias = f"%[a{n - 1}]"
    lines = ["push {r7}", "1:", f"ldr {bias}, [%[w], #24]"]
    for k in range(3):
        def add(j: int) -> str:
            return bias if k == 0 and j < n - 1 else f"%[a{j}]"

        lines.append(f"ldrd r7, %[wc], [%[w], #{8 * k}]")
        lines.append(f"ldrd %[d1], %[d2], [%[p{k}]], #{plane_w}")
        lines += ["sxtb16 %[d0], %[d1]", "sxtb16 %[d1], %[d1], ror #8"]  # pairs (c0, c1), (c2, c3)
        if stride == 1:
            for j in range(min(n, 2)):
                lines += dw_s1_macs(j, "%[d0]", "%[d1]", "r7", add(j))
            if n > 2:
                lines.append("sxtb16 %[d2], %[d2]")  # (c4, c5)
                for j in range(2, n):
                    lines += dw_s1_macs(j, "%[d1]", "%[d2]", "r7", add(j))
            continue
        # stride 2: output j reads pairs j and j + 1 (columns 2j .. 2j + 2)
        lines += [f"smlad %[a0], %[d0], r7, {add(0)}", "smlabt %[a0], %[d1], %[wc], %[a0]"]
        if n > 1:
            lines.append("sxtb16 %[d0], %[d2]")  # (c4, c5)
            lines += [f"smlad %[a1], %[d1], r7, {add(1)}", "smlabt %[a1], %[d0], %[wc], %[a1]"]
        if n > 2:
            lines.append("sxtb16 %[d2], %[d2], ror #8")  # (c6, c7)
            lines += [f"smlad %[a2], %[d0], r7, {add(2)}", "smlabt %[a2], %[d2], %[wc], %[a2]"]
        if n > 3:
            lines += [f"ldr %[d1], [%[p{k}], #-{plane_w - 8}]", "sxtb16 %[d1], %[d1]"]  # (c8, c9)
            lines += [f"smlad %[a3], %[d2], r7, {add(3)}", "smlabt %[a3], %[d1], %[wc], %[a3]"]
    lines += ring_b_requant(n, channels, sign_free, act_min, act_max)
    lines += ["add %[o], %[o], #1", f"add %[w], %[w], #{4 * DW_RECORD}", "cmp %[d0], #0", "bge 1b", "pop {r7}"]
    return tuple(lines)


def ring_b_requant(n: int, channels: int, sign_free: bool, act_min: int = -128, act_max: int = 127) -> list[str]:
    """The short requantization of accumulators %[a0..a(n-1)] in place, y = ssat8((SMMLAR(acc,
    M, K) [+ (acc >> 31)]) >> e) (M, K, e from the record at %[w] into r7, %[wc], %[d0]) and the
    activation's clamp where it is narrower than int8, then the n stores in a row (a store right
    after another takes one cycle on the M4, not two)."""
    lines = ["ldrd r7, %[wc], [%[w], #28]", "ldr %[d0], [%[w], #36]"]
    for j in range(n):
        lines += requant_lines(f"%[a{j}]", "r7", "%[wc]", "%[d0]", "%[d1]", sign_free, act_min, act_max)
    lines += [f"strb %[a{j}], [%[o], #{j * channels}]" for j in range(n)]
    return lines


def triple_asm(groups: int, stride: int, pairs: int, sign_free: bool, act_min: int = -128,
               act_max: int = 127) -> tuple[str, ...]:
    """Armv7E-M assembly of stage A on three unpacked patches (`a_triple`), every pair of output
    channels in one loop: %[w] (lr) the int16 weight pairs (per channel pair, channel a's
    `groups` pairs of words, then channel b's), %[x] (r12) the three pixels' int16 pairs (8 *
    groups bytes apart), on the stack the three output pointers, the first one's end and the
    table pointer (rows bias, M, K, e; the bias is the first group's SMLAD addend, so no
    copies). Per pair: the dot products as the C kernel's, then the short requantization of the
    six accumulators in place (M, K, e by one LDM per channel; the activation's clamp where it
    is narrower than int8), then the six stores one after
    the other (pipelined), `stride` bytes between two channels. Registers: r0-r2 channel a of
    pixels 0-2, r3-r5 channel b, r6-r11 weights and inputs, r7 saved by the assembly."""
    g8 = 8 * groups
    lines = ["push {r7}", "push {r0, r1, r2, r3, r4}", "1:", "ldr r6, [sp, #16]", "ldr r2, [r6, #0]", "ldr r5, [r6, #16]"]
    for g in range(groups):
        lines += [f"ldrd r7, r6, [lr, #{8 * g}]", f"ldrd r8, r9, [lr, #{g8 + 8 * g}]"]
        for p in range(3):
            first = g == 0
            lines += [f"ldrd r10, r11, [r12, #{g8 * p + 8 * g}]",
                      f"smlad r{p}, r10, r7, {'r2' if first else f'r{p}'}", f"smlad r{p}, r11, r6, r{p}",
                      f"smlad r{p + 3}, r10, r8, {'r5' if first else f'r{p + 3}'}", f"smlad r{p + 3}, r11, r9, r{p + 3}"]
    lines += [f"add lr, lr, #{2 * g8}", "ldr r11, [sp, #16]"]
    for half in range(2):
        lines.append("ldmia r11!, {r6, r7, r8, r9}")  # bias (dead), M, K, e
        for p in range(3 * half, 3 * half + 3):
            lines += requant_lines(f"r{p}", "r7", "r8", "r9", "r6", sign_free, act_min, act_max)
    lines += ["str r11, [sp, #16]", "ldm sp, {r6, r7, r8}"]
    post = 2 * stride <= 255
    for p, o in enumerate(("r6", "r7", "r8")):
        lines.append(f"strb r{p + 3}, [{o}, #{stride}]")
        lines.append(f"strb r{p}, [{o}], #{2 * stride}" if post else f"strb r{p}, [{o}]")
    if not post:
        lines += [f"add {o}, {o}, #{2 * stride}" for o in ("r6", "r7", "r8")]
    lines += ["stm sp, {r6, r7, r8}", "ldr r9, [sp, #12]", "cmp r6, r9", "bne 1b", "add sp, sp, #20", "pop {r7}"]
    return tuple(lines)


RING_COLUMN_STEPS = (2, -1, 2, 1)  # ring byte of column j + 1 minus that of column j, by j % 4 (bits 0 and 1 swapped)


def thin_row_asm(code: ThinCode, in_stride: int, unroll: int = 0) -> tuple[str, ...]:
    """Stage A's row on the ring by the thin kernel (in line, r7 unused) in one assembly loop over
    its pixels: r7 walks the input `in_stride` bytes a pixel (the pixel's loads read it instead of
    r2) up to the end in r3, r1 the pixel's ring column, moved on by RING_COLUMN_STEPS with the
    word of signed byte steps in r4 (ring_column_steps) rotated a byte per pixel; on the stack the
    record stream's start, the input's end and that word (pushed from r0, r3, r4).

    `unroll` (one shift for every channel, ThinCode.uniform: every channel's code the same but
    its store offset): the channels in a loop of `unroll` per step instead of all in line; the
    input pointer then waits on the stack (pushed from r2) while r7 holds the records' end, r1
    moves on unroll channels a step and back to the pixel's first one after the loop."""
    assert not code.looped and not any("r7" in x for x in code.lines)
    body = [x.replace("[r2, #", "[r7, #") for x in code.lines]
    if unroll:
        first = next(n for n, x in enumerate(body) if x.startswith("ldm r0!"))
        loads, channels = body[:first], body[first:]
        per = len(channels) // code.out_c
        assert code.uniform and code.out_c % unroll == 0 and len(channels) == per * code.out_c
        stride = code.out_stride
        return ("push {r7}", "push {r0, r2, r3, r4}", "1:", "ldr r7, [sp, #4]", *loads, "ldr r0, [sp]",
                f"add r7, r0, #{4 * code.record_words * code.out_c}", "2:", *channels[: per * unroll],
                f"add r1, r1, #{stride * unroll}", "cmp r0, r7", "bne 2b", f"sub r1, r1, #{stride * code.out_c}",
                "ldr r7, [sp, #4]", f"add r7, r7, #{in_stride}", "str r7, [sp, #4]", "ldr r2, [sp, #12]", "sxtb r3, r2",
                "add r1, r1, r3", "ror r2, r2, #8", "str r2, [sp, #12]", "ldr r3, [sp, #8]", "cmp r7, r3", "bne 1b",
                "add sp, sp, #16", "pop {r7}")
    lines = ["push {r7}", "mov r7, r2", "push {r0, r3, r4}", "1:", "ldr r0, [sp]", *body,
             f"add r7, r7, #{in_stride}", "ldr r2, [sp, #8]", "sxtb r3, r2", "add r1, r1, r3", "ror r2, r2, #8",
             "str r2, [sp, #8]", "ldr r3, [sp, #4]", "cmp r7, r3", "bne 1b", "add sp, sp, #12", "pop {r7}"]
    return tuple(lines)


CHAIN_A_ROW_LOOP: Optional[bool] = None  # True/False: stage A rows of one shift looped / in line; None: by cost
A_ROW_UNROLL = 16  # channels per step of a looped stage A row


def a_row_unroll(ctx: KernelContext, layer: Layer, code: ThinCode) -> int:
    """Channels per step of stage A's row loop (thin_row_asm), 0 for every channel in line:
    looped where one shift serves every channel (ThinCode.uniform), A_ROW_UNROLL divides the
    channels and `larger_form_pays` does not keep them in line, weighed over the pixels of every
    chain whose stage A is the same 1x1 (they share the row, share_a_rows): per pixel the loop
    costs 5 + 3 instructions per step more, and in line holds the other channels' code."""
    if not code.uniform or code.out_c % A_ROW_UNROLL or CHAIN_A_ROW_LOOP is False:
        return 0
    if CHAIN_A_ROW_LOOP:
        return A_ROW_UNROLL
    shape = _thin_a_shape(layer, ctx.consts)
    pixels = 0
    for other in ctx.p.layers:
        if _thin_a_shape(other, ctx.consts) == shape:
            a = chain_stage_view(other, ctx.consts, "a")
            pixels += a.out_h * a.out_w
    loads = next(n for n, x in enumerate(code.lines) if x.startswith("ldm r0!"))  # the pixel's input first
    per = (len(code.lines) - loads) // code.out_c  # lines of one channel
    gain = pixels * (5 + 3 * code.out_c // A_ROW_UNROLL)
    small = pixels * (per * code.out_c + 5 + 3 * code.out_c // A_ROW_UNROLL)
    added = ASM_LINE_BYTES * per * (code.out_c - A_ROW_UNROLL)
    return 0 if larger_form_pays(gain, small, added, ctx.flash_tight) else A_ROW_UNROLL


def ring_column_steps(first_column: int) -> int:
    """The word of thin_row_asm: byte k the step after the column (first_column + k) % 4."""
    word = 0
    for k in range(4):
        word |= (RING_COLUMN_STEPS[(first_column + k) % 4] & 0xFF) << (8 * k)
    return word


def triple_asm_fits(groups: int, stride: int) -> bool:
    """The immediates of triple_asm encode: LDRD offsets up to 1020, the store offset and the
    pointer steps within 4095."""
    return 3 * 8 * groups <= 1020 and 16 * groups <= 4095 and 2 * stride <= 4095


@dataclass(frozen=True)
class RingB:
    """DSP stage B of a chain on a channel-major ring: A writes each output pixel's channels
    `plane_w` bytes apart into ring slot r % 3 (without A, at stride 1, the input rows are
    transposed into it), a slot holding channels x plane_w bytes; columns 4k..4k+3 sit in word k
    in the order 4k, 4k+2, 4k+1, 4k+3, so that SXTB16 and SXTB16 ROR 8 of the word give the int16
    pairs (4k, 4k+1) and (4k+2, 4k+3) that the layer-by-layer row kernel reads from its int16
    ring; border columns and padding rows hold B's input zero point. B then runs like that
    kernel: per block of DW_BLOCK output pixels, every channel in one assembly loop (ring_b_asm),
    into a buffer of DW_BLOCK pixels that stage C reads pixel by pixel. No edge cases: every
    output reads the ring."""

    plane_w: int
    records: str  # per channel: 6 int16 weight pairs x2, bias x2, M, K, e (bit 31: the last channel)
    block: tuple[str, ...]  # assembly of DW_BLOCK outputs of every channel
    tail: tuple[str, ...]  # of the row's last out_w % DW_BLOCK outputs (empty: none)
    # the compact form (chain_b_compact): the 3x3 depthwise int8 form in flash (`w8`: 9 weights and
    # e per channel, `bm`: bias x2 and M), the records rebuilt at `records_at` in the chain's scratch
    # (after the ring and the pixels) at each call by mcugen_dw3_records; `records` is then the
    # expression of that address in stage B's function (from its `out`, the pixels)
    w8: str = ""
    bm: str = ""
    k_odd: int = 0
    records_at: int = 0
    top: int = 0  # one shift for every channel (mcugen_dw3_records' `top`, depthwise.dw3_rebuild_args)

    @property
    def regs(self) -> dict[str, str]:
        return RING_B_REGS

    def scratch_bytes(self, b: ConvView) -> int:
        return RING_B_SLOTS * b.out_c * self.plane_w + DW_BLOCK * b.out_c

    @property
    def compact(self) -> bool:
        return bool(self.w8)

    def scratch(self, b: ConvView) -> int:
        """The chain's scratch: the ring and the pixels (scratch_bytes), then the compact form's records."""
        return self.records_at + 4 * DW_RECORD * b.out_c if self.compact else self.scratch_bytes(b)


def ring_comment(lines: list[str], plan: "ChainPlan") -> list[str]:
    """The lowered chain's comment lines (mcugen.lower) for the kernel with stage B on the ring:
    B runs blocks of DW_BLOCK output pixels, every channel per step, and the scratch is the
    ring's slots, the pixels and (compact) B's, A's and C's rebuilt records, not the portable
    kernel's ring."""
    rb, c = plan.ring_b, plan.b.v.out_c
    slots = RING_B_SLOTS * c * rb.plane_w
    ring = (f"  ring: {RING_B_SLOTS} slots x {c} channels x {rb.plane_w} bytes = {slots} bytes of B's input, "
            f"channel-major, then {DW_BLOCK} pixels of B's output ({DW_BLOCK * c} bytes)"
            + (f", then B's records rebuilt from flash ({4 * DW_RECORD * c} bytes)" if rb.compact else "")
            + "".join(f", then {st}'s records rebuilt from flash ({4 * r.words} bytes)"
                      for r, st in ((plan.a_records, "A"), (plan.c_records, "C")) if r is not None))
    out = []
    for line in lines:
        if line.startswith("  B: ") and line.endswith(", one pixel at a time"):
            line = line[: -len(", one pixel at a time")] + f", blocks of {DW_BLOCK} output pixels, every channel per step"
        elif line.startswith(("  ring: ", "  pixel buffer: ")):
            line = ring
        out.append(line)
    return out


CHAIN_B_COMPACT: Optional[bool] = None  # True/False: stage B's compact form wherever it is exact / nowhere; None: per chain
CHAIN_B_REBUILD = 31  # instructions per channel of mcugen_dw3_records (its assembly loop, short requantization)


def chain_b_compact(ctx: KernelContext, v: ConvView, rq, bias: np.ndarray, scale=2) -> bool:
    """Whether stage B on the ring keeps the 3x3 depthwise int8 form in flash (DW_INT8_BYTES per
    channel instead of 40) and rebuilds its records in scratch at each call: where e rides in the
    doubled bias's word and K follows from it (`rq_e_packs`; one shift for every channel: where
    uniform_packs), unless `larger_form_pays` for the rebuild's instructions."""
    if not (uniform_packs(bias) if rq.truncating else rq_e_packs(2 * bias, rq)):
        return False
    if CHAIN_B_COMPACT is not None:
        return CHAIN_B_COMPACT
    rebuild = CHAIN_B_REBUILD * v.out_c
    return not larger_form_pays(rebuild, 3 * v.macs + rebuild, (4 * DW_RECORD - DW_INT8_BYTES) * v.out_c, ctx.flash_tight)


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
    Stack: two patches of A (<= 2 * CHAIN_MAX_PATCH bytes) when A is not a 1x1 on whole words.

    DSP chains whose B requantizes short (`ring_b`) keep the same order of reads and writes on
    another ring: A writes channel-major rows (RingB; without A, the input rows are transposed
    into it when first read), B runs every
    channel of a block of 4 pixels in assembly like the layer-by-layer row kernel, C reads the
    block pixel by pixel; A on patches (the stem) then takes three pixels per step (`a_triple`).
    The chain states its scratch (RingB.scratch_bytes) at `scratch_offset`."""

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
    ring_b: Optional[RingB] = None  # DSP: stage B on a channel-major ring (RingB), else pixel by pixel
    a_triple: bool = False  # DSP ring, A on patches: three pixels unpacked into int16 pairs, two channels per step
    a3_asm: tuple[str, ...] = ()  # a_triple with the short requantization: every channel pair in one assembly loop (triple_asm)
    a_row_asm: tuple[str, ...] = ()  # DSP ring, a_thin in line: the row's pixels in one assembly loop (thin_row_asm)
    a_row_steps: int = 0  # its word of ring column steps (ring_column_steps)
    a_row_fn: str = ""  # a_row_asm: the earlier chain whose row function this one calls (share_a_rows; "": its own)
    scratch_offset: int = -1  # ring_b: the arena offset of the chain's scratch (RingB.scratch_bytes)
    # ring_b: stage A's thin records / stage C's thin or narrow records kept compact in flash and
    # rebuilt in the chain's scratch after B's at each call (StageRecords)
    a_records: Optional["StageRecords"] = None
    c_records: Optional["StageRecords"] = None

    def scratch_bytes(self) -> int:
        """ring_b: the chain's scratch: the ring, the pixels, B's records, then A's and C's."""
        ends = [r.at + 4 * r.words for r in (self.a_records, self.c_records) if r is not None]
        return max([self.ring_b.scratch(self.b.v)] + ends)


@dataclass(frozen=True)
class StageRecords:
    """A chain stage's records in the compact form: `src` holds per channel the bias word with e
    (RQ_E_BITS) and the int8 weights four to a word (thin: per channel, then M; narrow: per pass,
    narrow_compact_words), which mcugen_thin_records / mcugen_narrow_records rebuild into `words`
    record words at byte `at` of the chain's scratch (K = k_odd << (e - 1))."""

    kind: str  # "thin" or "narrow"
    src: str
    at: int
    words: int
    in_c: int
    out_c: int
    k_odd: int  # uniform: (2 zero_point + 1) 2^(E - 1)
    arg: str  # the name the stage's function takes the records by
    uniform: bool = False  # thin, one shift E for every channel: d = E - e in the bias word (ThinCode.uniform)


CHAIN_A_UNIFORM = True  # stage A in line with one shift for every channel where exact (requant.uniform_shift)
CHAIN_RECORDS_COMPACT: Optional[bool] = None  # True/False: stages A and C compact wherever exact / nowhere; None: by cost
THIN_RECORDS_CHANNEL = 8  # instructions of mcugen_thin_records per channel, and per group of 4 inputs
THIN_RECORDS_GROUP = 6
NARROW_RECORDS_GROUP = 6  # of mcugen_narrow_records per group of 4 inputs and channel, and per channel
NARROW_RECORDS_CHANNEL = 8


def _compact_stage(ctx: KernelContext, i: int, role: str, code, w: np.ndarray, bias: np.ndarray, rq: Requant,
                   at: int, arg: str, uses: int) -> tuple[object, Optional[StageRecords]]:
    """Stage A's or C's code (ThinCode in line, or NarrowCode) with its records compact in flash
    (StageRecords at byte `at` of the scratch, read through the function argument `arg`) where
    exact (rq_e_packs) and `larger_form_pays` does not keep them: the rebuild runs once per call,
    the records are read `uses` times (pixels)."""
    narrow = isinstance(code, NarrowCode)
    if not narrow and code.looped:
        return code, None
    out_c, in_c = w.shape
    if not rq_e_packs(2 * np.asarray(bias, np.int64), rq):
        return code, None
    words = out_c * (3 + in_c // 2)  # per channel bias, in_c / 2 weight pairs, M, K (both kernels)
    uniform = 0 if narrow else code.uniform
    k_odd = 2 * rq.output_offset + 1
    if narrow:
        compact = narrow_compact_words(w, bias, rq)
        cost = out_c * (NARROW_RECORDS_CHANNEL + NARROW_RECORDS_GROUP * (in_c // 4))
    elif uniform:
        compact = uniform_compact_words(w, 2 * np.asarray(bias, np.int64), uniform - rq.e.astype(np.int64),
                                        rq.multiplier).reshape(-1)
        k_odd <<= uniform - 1
        cost = out_c * (THIN_RECORDS_CHANNEL + THIN_RECORDS_GROUP * (in_c // 4))
    else:
        compact = thin_compact_words(thin_records(w, bias, rq, False), w, rq.e).reshape(-1)
        cost = out_c * (THIN_RECORDS_CHANNEL + THIN_RECORDS_GROUP * (in_c // 4))
    if CHAIN_RECORDS_COMPACT is False:
        return code, None
    if CHAIN_RECORDS_COMPACT is None and larger_form_pays(cost, uses * out_c * in_c // 2 + cost,
                                                          4 * (words - compact.size), ctx.flash_tight):
        return code, None
    ctx.drop_consts({code.records})
    low = f"E - e (E = {uniform})" if uniform else "e"
    src = ctx.const(i, role + "c", "int32_t", compact.astype(np.int32),
                    f"the compact form of {role}'s records: per {'pass of <= 8 channels' if narrow else 'channel'} "
                    f"(bias + input_offset*sum(w)) x2 * 2^{RQ_E_BITS} + {low}, the int8 weights 4 per word, multiplier "
                    "(the chain rebuilds the records in its scratch)")
    rec = StageRecords("narrow" if narrow else "thin", src, at, words, in_c, out_c, k_odd, arg, bool(uniform))
    return dataclasses.replace(code, records=arg), rec


def patch_word_pieces(kh: int, kw: int, in_c: int, row_stride: int, groups: int) -> tuple[tuple[tuple[int, int, int], ...], ...]:
    """Stage A's patch (kernel rows of kw * in_c bytes one after the other, zeros after the
    last) read straight from the input inside it: per word of the patch, its pieces as
    (offset from the window's first byte, bytes, left shift in bits), runs of 1, 2 or 4 bytes of
    one kernel row (`row_stride` bytes apart) that the word takes, the zeros left out."""
    length, row = kh * kw * in_c, kw * in_c
    words = []
    for g in range(groups):
        pieces, b = [], 4 * g
        while b < min(4 * g + 4, length):
            ky, j = divmod(b, row)
            n = 1
            while b + n < min(4 * g + 4, length) and (b + n) // row == ky and n < 4:
                n += 1
            n = 2 if n == 3 else n  # loads of 1, 2 or 4 bytes (LDRB, LDRH, LDR)
            pieces.append((ky * row_stride + j, n, 8 * (b - 4 * g)))
            b += n
        words.append(tuple(pieces))
    return tuple(words)


def _conv_stage(ctx: KernelContext, v: ConvView, i: int, role: str, length: int, direct: bool, calls: int) -> ChainStage:
    """Conv stage A or C (`role`): weights over `length` bytes per output channel, and its table.
    `calls`: how often the stage runs per inference (`int16_weights_pay` weighs the two forms
    of the weights on the DSP and portable targets)."""
    patch = v.kh * v.kw * v.in_c
    w = np.zeros((v.out_c, length), np.int64)
    w[:, :patch] = v.weights.reshape(v.out_c, patch)
    bias = v.bias + v.input_offset * w.sum(axis=1)
    acc_bound = np.abs(v.bias) + input_magnitude(v.input_offset) * np.abs(w).sum(axis=1)
    rq = plan_requant(acc_bound, v.multiplier, v.shift, v.output_offset, v.act_min, v.act_max)
    if ctx.t.isa is Isa.MVE:
        # Helium: int8 rows for VMLADAVA (16 taps per instruction), plus 16 bytes so that the
        # last row's vector loads stay inside the array; the accumulator is not doubled
        scale = 1
        rows = np.zeros(v.out_c * length + 16, np.int64)
        rows[: v.out_c * length] = w.reshape(-1)
        weights = ctx.const(i, f"{role}_fw", "int8_t", rows.astype(np.int8),
                            f"stage {role.upper()} weights [{v.out_c}][{length}] (+16 bytes)")
    elif not int16_weights_pay(calls, ctx.flash_tight):
        # int8 rows, read a word at a time and unpacked with SXTB16 / SXTB16 ROR 8 like the
        # input; not doubled (int8 cannot hold 2*w): the requantization doubles the accumulator
        rows = ctx.const(i, f"{role}_fw", "int8_t", w.astype(np.int8),
                         f"stage {role.upper()} weights [{v.out_c}][{length}] int8 (sign-extended as read)")
        table = ctx.const(i, f"{role}_rq", "int32_t", rq_table(bias, rq),
                          f"stage {role.upper()} per channel: bias + input_offset*sum(w), multiplier, K or shift, e")
        return ChainStage(v=v, rq=rq, weights=rows, table=table, length=length, direct=direct, scale=1, int8_weights=True)
    else:
        scale = 2 if rq.fast else 1
        g = (scale * w).reshape(v.out_c, length // 4, 4)
        pairs = sxtb16_pairs(g)
        weights = ctx.const(i, f"{role}_fw", "int32_t", wrap32(pairs.reshape(-1)).astype(np.int32),
                            f"stage {role.upper()} weights x{scale} [{v.out_c}][{length // 4}] int16 pairs (taps 4g+0,4g+2), (4g+1,4g+3)")
    table = ctx.const(i, f"{role}_rq", "int32_t", rq_table(scale * bias, rq),
                      f"stage {role.upper()} per channel: (bias + input_offset*sum(w)) x{scale}, multiplier, K or shift, e")
    return ChainStage(v=v, rq=rq, weights=weights, table=table, length=length, direct=direct, scale=scale)


def _dw_stage(ctx: KernelContext, v: ConvView, i: int) -> ChainStage:
    """Depthwise stage B: per block of 4 channels, its taps' weights followed by its table."""
    w = v.weights.reshape(9, v.out_c)  # [tap][channel]
    bias = v.bias + v.input_offset * w.sum(axis=0)
    acc_bound = np.abs(v.bias) + input_magnitude(v.input_offset) * np.abs(w).sum(axis=0)
    rq = plan_requant(acc_bound, v.multiplier, v.shift, v.output_offset, v.act_min, v.act_max)
    x_lo = min(-(-v.pad_l // v.sw), v.out_w)
    x_hi = min((v.in_w - 3 + v.pad_l) // v.sw, v.out_w - 1)
    if ctx.t.isa is Isa.MVE:
        # Helium: per block of 4 channels, 9 taps x 4 int32 weights, then the vector
        # requantization's table (bias, multiplier, left, -right, mask; exact for any shift)
        taps = w.reshape(9, v.out_c // 4, 4).transpose(1, 0, 2).reshape(v.out_c // 4, 36)
        rqv = mve_table(bias, v.multiplier, v.shift, v.out_c).reshape(v.out_c // 4, 20)
        blocks = np.concatenate([taps, rqv.astype(np.int64)], axis=1)
        weights = ctx.const(i, "b_fw", "int32_t", blocks.reshape(-1).astype(np.int32),
                            "stage B per block of 4 channels: 9 taps x 4 weights, then bias + input_offset*sum(w), "
                            "multiplier, left, -right, mask")
        return ChainStage(v=v, rq=rq, weights=weights, table=weights, length=0, direct=False, x_lo=x_lo, x_hi=x_hi,
                          scale=1)
    scale = 2 if rq.fast else 1
    g = (scale * w).reshape(9, v.out_c // 4, 4).transpose(1, 0, 2)  # [block][tap][4 channels]
    pairs = sxtb16_pairs(g)
    rq_words = rq_table(scale * bias, rq).reshape(v.out_c // 4, 16)
    blocks = np.concatenate([wrap32(pairs.reshape(v.out_c // 4, 18)), rq_words.astype(np.int64)], axis=1)
    weights = ctx.const(i, "b_fw", "int32_t", blocks.reshape(-1).astype(np.int32),
                        f"stage B per block of 4 channels: 9 taps x int16 pairs (c0,c2), (c1,c3) of weights x{scale}, "
                        f"then per channel (bias + input_offset*sum(w)) x{scale}, multiplier, K or shift, e")
    table = weights  # one stream: a block's requantization follows its weights
    return ChainStage(v=v, rq=rq, weights=weights, table=table, length=0, direct=False, x_lo=x_lo, x_hi=x_hi)


CHAIN_SHARED_RING = True  # chains whose stage A is the same 1x1 take the widest of their rings (shared_plane_w)


def _thin_a_shape(layer: Layer, consts) -> Optional[tuple]:
    """A chain's stage A as the thin kernel sees it (1x1 without padding, its input and output
    channels and strides), or None."""
    p = layer_params(layer)
    if layer.op != "CHAIN" or not int(p["has_a"]) or int(p["fc.enabled"]) or not int(p["has_c"]):
        return None
    a = chain_stage_view(layer, consts, "a")
    if a.depthwise or (a.kh, a.kw, a.pad_t, a.pad_l) != (1, 1, 0, 0):
        return None
    return a.in_c, a.out_c, a.sh, a.sw


def shared_plane_w(ctx: KernelContext, layer: Layer, b: ConvView) -> int:
    """Stage B's ring row width: its own (ring_b_plane_w), or the widest of the model's chains
    whose stage A is the same 1x1 (the main job's 8 -> 48 expansions at 48 and 24 columns) where
    that still encodes (ring_b_fits): their stage A rows then store at the same offsets and
    print the same function, which share_a_rows lets them share; the ring takes
    RING_B_SLOTS x channels x the difference more scratch."""
    own = ring_b_plane_w(b)
    shape = _thin_a_shape(layer, ctx.consts)
    if not CHAIN_SHARED_RING or shape is None:
        return own
    widths = [own]
    for other in ctx.p.layers:
        if other.index != layer.index and _thin_a_shape(other, ctx.consts) == shape:
            ob = chain_stage_view(other, ctx.consts, "b")
            if ob.depthwise and ob.kh == 3 and ob.kw == 3 and ob.out_c == b.out_c and ring_b_fits(ob):
                widths.append(ring_b_plane_w(ob))
    wide = max(widths)
    return wide if wide - 8 <= 255 else own


def _ring_b_stage(ctx: KernelContext, v: ConvView, i: int, pw: int) -> Optional[tuple[ChainStage, RingB]]:
    """Stage B on the channel-major ring (RingB; DSP, short requantization, offsets that encode)
    with rows of `pw` bytes (at least ring_b_plane_w), or None: its records are the
    layer-by-layer 3x3 kernel's (DW_RECORD words per channel, weights and bias doubled)."""
    if not (ctx.t.isa is Isa.DSP and ring_b_fits(v)):
        return None
    w, bias, acc_bound, rq = dw3_requant(v)  # w: [channel][tap]
    if not rq.fast:
        return None
    scale = 2
    if depthwise_module.DW_UNIFORM and rq.clamp_is_int8:
        rq_u, scale_u = uniform_requant(rq, acc_bound)
        if rq_u is not None:  # one shift for every channel: each channel's weights and bias x 2^(E-e+1)
            rq, scale = rq_u, scale_u
    pairs = np.zeros((v.out_c, 6), np.int64)
    for r in range(3):
        w0, w1, w2 = (scale * w[:, 3 * r + k] for k in range(3))
        pairs[:, 2 * r] = int16_pair(w0, w1)
        pairs[:, 2 * r + 1] = int16_pair(w1, w2)
    records = np.concatenate([wrap32(pairs), rq_table(scale * bias, rq).astype(np.int64)], axis=1)
    records[-1, 9] = int(wrap32(np.array([int(records[-1, 9]) | DW_LAST_CHANNEL]))[0])  # the channel loop's end
    tail = v.out_w % DW_BLOCK
    extra: dict = {}
    if chain_b_compact(ctx, v, rq, bias, scale):
        name = w8, bm = dw3_int8_consts(ctx, i, "b_", w, scale * bias, rq, "stage B: ", scale)
        pixels_at = RING_B_SLOTS * v.out_c * pw
        at = round_up(pixels_at + DW_BLOCK * v.out_c, 4)
        k_odd, top = dw3_rebuild_args(rq)
        extra = dict(w8=w8, bm=bm, k_odd=k_odd, top=top, records_at=at, records=f"(out + {at - pixels_at})")
    else:
        name = ctx.const(i, "b_fw", "int32_t", records.astype(np.int32),
                         f"stage B per channel: weights {scale_note(scale, rq)} as int16 pairs (w0,w1),(w1,w2) for "
                         f"rows 0..2, then (bias + input_offset*sum(w)) {scale_note(scale, rq)}, multiplier, K or shift, "
                         "e (bit 31: the last channel)")
    ring = RingB(
        plane_w=pw, records=extra.pop("records", name), **extra,
        block=rq_lines(ring_b_asm(DW_BLOCK, v.sw, pw, v.out_c, rq.sign_free, rq.act_min, rq.act_max), rq)
        if v.out_w >= DW_BLOCK else (),
        tail=rq_lines(ring_b_asm(tail, v.sw, pw, v.out_c, rq.sign_free, rq.act_min, rq.act_max), rq) if tail else (),
    )
    stage = ChainStage(v=v, rq=rq, weights=name, table=name, length=0, direct=False, x_lo=0, x_hi=v.out_w - 1, scale=2)
    return stage, ring


def select_chain(ctx: KernelContext, layer: Layer) -> Optional[tuple[ChainPlan, None]]:
    """A fused CHAIN with every stage specialised (ChainPlan); None where a stage has no
    specialised form (the portable chain kernel stays)."""
    # every target: DSP (SMLAD family), MVE (Helium stages), portable (the DSP operations
    # written in C99)
    p = layer_params(layer)
    if int(p["fc.enabled"]) or not int(p["has_c"]):
        return None
    i = layer.index
    b = chain_stage_view(layer, ctx.consts, "b")
    c = chain_stage_view(layer, ctx.consts, "c")
    if not (b.depthwise and b.depth_multiplier == 1 and b.kh == 3 and b.kw == 3 and b.dh == 1 and b.dw == 1
            and b.out_c % 4 == 0 and 2 * b.out_c < 4096 and b.sh in (1, 2) and b.sw in (1, 2)):
        return None
    if not (not c.depthwise and c.kh == 1 and c.kw == 1 and c.sh == 1 and c.sw == 1 and c.pad_t == 0
            and c.pad_l == 0 and c.in_c == b.out_c and c.out_h == b.out_h and c.out_w == b.out_w):
        return None
    a_stage, patch_bytes, a_thin = None, 0, None
    # without A the input rows are transposed into the ring: worth it at stride 1 (each copied
    # element feeds 9 MACs), not at stride 2 (2.25)
    ring = _ring_b_stage(ctx, b, i, shared_plane_w(ctx, layer, b)) if int(p["has_a"]) or b.sw == 1 else None
    a_stride = ring[1].plane_w if ring else 1  # bytes between two output channels of stage A
    if int(p["has_a"]):
        a = chain_stage_view(layer, ctx.consts, "a")
        if a.depthwise:
            return None
        direct = a.kh == 1 and a.kw == 1 and a.pad_t == 0 and a.pad_l == 0 and a.in_c % 4 == 0
        length = a.in_c if direct else round_up(a.kh * a.kw * a.in_c, 4)
        if not direct:
            patch_bytes = length
            if length > CHAIN_MAX_PATCH:
                return None
        a_stage = _conv_stage(ctx, a, i, "a", length, direct, -(-a.out_h * a.out_w // 2))  # two pixels per call
        in_row = a.in_w * a.in_c
        if ctx.t.isa is Isa.DSP and direct and a_stage.rq.fast and a_stage.rq.clamp_is_int8 \
                and thin_loop_fits(a.in_c) and thin_stride_fits(a.in_c, a.out_c, a_stride):
            # the thin kernel's records replace stage A's weights and table
            ctx.drop_consts({a_stage.weights, a_stage.table})
            wa = a.weights.reshape(a.out_c, a.in_c)
            a_thin = thin_code(ctx, a, i, "a_thin", wa, a.bias + a.input_offset * wa.sum(axis=1), a_stage.rq,
                               a_stride, uniform=CHAIN_A_UNIFORM)
    else:
        in_row = b.in_w * b.in_c
    residual = None
    if int(p["residual.enabled"]):
        r = lambda k: int(p[f"residual.{k}"])  # noqa: E731
        residual = add_plan(
            f"{ctx.name}_l{i}_res", i, ctx.t.isa.value, c.out_c, r("value_offset"), r("residual_offset"),
            r("left_shift"), r("value_multiplier"), r("value_shift"), r("residual_multiplier"), r("residual_shift"),
            r("output_multiplier"), r("output_shift"), r("output_offset"), r("act_min"), r("act_max"),
        )
    c_stage = _conv_stage(ctx, c, i, "c", c.in_c, True, c.out_h * c.out_w)
    c_thin = None
    if ctx.t.isa is Isa.DSP and c_stage.rq.fast and c_stage.rq.clamp_is_int8 \
            and thin_loop_fits(c.in_c):
        ctx.drop_consts({c_stage.weights, c_stage.table})
        wc = c.weights.reshape(c.out_c, c.in_c)
        c_thin = thin_code(ctx, c, i, "c_thin", wc, c.bias + c.input_offset * wc.sum(axis=1), c_stage.rq)
    c_narrow = None
    if ctx.t.isa is Isa.DSP and c_thin is None and c_stage.rq.fast \
            and c_stage.rq.clamp_is_int8 and narrow_conv_fits(c.in_c, c.out_c):
        ctx.drop_consts({c_stage.weights, c_stage.table})
        wc = c.weights.reshape(c.out_c, c.in_c)
        c_narrow = narrow_code(ctx, c, i, "c_narrow", wc, c.bias + c.input_offset * wc.sum(axis=1), c_stage.rq)
    plan = ChainPlan(
        name=f"{ctx.name}_l{i}_chain", index=i, isa=ctx.t.isa.value, a=a_stage,
        b=ring[0] if ring else _dw_stage(ctx, b, i),
        c=c_stage, residual=residual, ring_rows=int(p["ring_rows"]), c_thin=c_thin, c_narrow=c_narrow,
        in_row=in_row, patch_bytes=patch_bytes,
        # two pixels per step share the weight and requantization loads
        a_pixels=2, a_thin=a_thin, ring_b=ring[1] if ring else None,
        # three unpacked patches per step: the LDRD offsets (pixels 8 * groups bytes apart) encode
        a_triple=bool(ring) and a_stage is not None and not a_stage.direct and not a_stage.int8_weights
        and a_stage.v.out_w >= 3 and 3 * 8 * a_stage.groups <= 1020,
    )
    if plan.a_thin is not None and plan.ring_b is not None and not plan.a_thin.looped \
            and not any("r7" in x for x in plan.a_thin.lines) and plan.a.v.sw * plan.a.v.in_c <= 4095:
        unroll = a_row_unroll(ctx, layer, plan.a_thin)
        plan = dataclasses.replace(plan, a_row_asm=thin_row_asm(plan.a_thin, plan.a.v.sw * plan.a.v.in_c, unroll),
                                   a_row_steps=ring_column_steps(plan.b.v.pad_l))
    if plan.a_triple and plan.a.rq.fast and plan.a.v.out_c >= 2 and triple_asm_fits(plan.a.groups, plan.ring_b.plane_w):
        rq = plan.a.rq
        plan = dataclasses.replace(plan, a3_asm=triple_asm(plan.a.groups, plan.ring_b.plane_w, plan.a.v.out_c // 2,
                                                           rq.sign_free, rq.act_min, rq.act_max))
    if ring:
        at = round_up(plan.ring_b.scratch(b), 4)
        if plan.a_thin is not None:
            wa = plan.a.v.weights.reshape(plan.a.v.out_c, plan.a.v.in_c)
            a_thin, a_rec = _compact_stage(ctx, i, "a_thin", plan.a_thin, wa,
                                           plan.a.v.bias + plan.a.v.input_offset * wa.sum(axis=1), plan.a.rq, at,
                                           "a_rec", plan.a.v.out_h * plan.a.v.out_w)
            plan = dataclasses.replace(plan, a_thin=a_thin, a_records=a_rec)
            at += 4 * a_rec.words if a_rec else 0
        if plan.c_thin is not None or plan.c_narrow is not None:
            wc = c.weights.reshape(c.out_c, c.in_c)
            code, c_rec = _compact_stage(ctx, i, "c_thin" if plan.c_thin else "c_narrow", plan.c_thin or plan.c_narrow,
                                         wc, c.bias + c.input_offset * wc.sum(axis=1), c_stage.rq, at, "c_rec",
                                         c.out_h * c.out_w)
            plan = dataclasses.replace(plan, c_records=c_rec, **{"c_thin" if plan.c_thin else "c_narrow": code})
        # the ring and the block of pixels take more than the portable kernel's ring of A rows:
        # the kernel states its scratch (the schedule plans it with the chain, keyed by its operators)
        return plan, ctx.scratch_for(i, plan.scratch_bytes())
    return plan, None


def share_a_rows(plans: list) -> list:
    """Chains whose stage A rows print the same function call the first one's (`a_row_fn`): the
    thin kernel in line on a ring of one row stride, with its records by argument (rebuilt from
    the compact form) and one shift for every channel (ThinCode.uniform: requant.uniform_shift
    picks the largest, so that chains of like shifts agree). The row function takes the row's
    input, its end, the first ring column and the word of column steps as arguments, so that
    nothing else of the chain is in it; one copy in flash, no instruction more."""
    keys = {n: repr((pl.a_thin, pl.a_row_asm, pl.a.v.sw * pl.a.v.in_c)) for n, pl in enumerate(plans)
            if isinstance(pl, ChainPlan) and pl.a_row_asm and pl.a_records is not None and pl.a_thin.uniform}
    out = list(plans)
    for first, *rest in group_by_key(keys):
        for n in rest:
            out[n] = dataclasses.replace(plans[n], a_row_fn=plans[first].name)
    return out
