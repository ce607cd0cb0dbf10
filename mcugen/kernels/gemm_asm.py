"""Armv7E-M assembly of the GEMM convolution's channel loop (dot products in line or in a group loop): the instructions and when they apply.

`mcugen.kernels.conv` decides per layer; templates/c/fast/conv.c.j2 (macro dot) prints the lines.
"""

from __future__ import annotations

from mcugen.kernels.depthwise_asm import requant_lines
from mcugen.kernels.requant import RQ_E_BITS, Requant
FRAME = ("q", "out", "end", "scratch", "kodd")  # the words the assembly keeps on the stack, in order


def gemm_dot_fits(pixels: int, out_c: int, full_unroll: bool) -> bool:
    """The registers hold the block (6 pixels in line, 5 with the group loop) and the stores of
    gemm_dot_asm encode (offsets up to 4095 after the first store's post-index, else register
    offsets from out_c in a MOVW)."""
    return 1 <= pixels <= (6 if full_unroll else 5) and out_c < 65536


def _stores(P: int, out_c: int, out_at: int = 0) -> list[str]:
    """The P outputs r0.. of a channel to pixels out_c bytes apart from [r8], r8 one byte on:
    immediate offsets, or (beyond 4095, or out_c an argument: the frame word at `out_at`) register
    offsets: out_c in r10 (also shifted by 1 and 2), 3 out_c in r11, 5 out_c in r9."""
    if not out_at and (P - 1) * out_c - 1 <= 4095:
        return ["strb r0, [r8], #1"] + [f"strb r{p}, [r8, #{p * out_c - 1}]" for p in range(1, P)]
    lines = [f"ldr r10, [sp, #{out_at}]" if out_at else f"movw r10, #{out_c}"]
    offsets = {1: "r10", 2: "r10, lsl #1", 4: "r10, lsl #2"}
    if P > 3:
        lines.append("add r11, r10, r10, lsl #1")
        offsets[3] = "r11"
    if P > 5:
        lines.append("add r9, r10, r10, lsl #2")
        offsets[5] = "r9"
    lines.append("strb r0, [r8]")
    lines += [f"strb r{p}, [r8, {offsets[p]}]" for p in range(1, P)]
    return lines + ["add r8, r8, #1"]


# registers: r0-r5 the accumulators; in line (no group loop) and with it
_REGS = {True: {"wh": "r6", "s": "r12", "w": "lr", "e": "r12"},
         False: {"wh": "r5", "s": "r6", "w": "r12", "wend": "lr", "e": "lr"}}


def dot_registers(full_unroll: bool, len_arg: bool = False, out_arg: bool = False) -> tuple[str, tuple[str, ...]]:
    """The register the C wrapper pins the weight pointer to, and the registers it declares
    clobbered (r0-r4 carry the frame in, and r5 with `len_arg`, r6 with `out_arg`; r7 the
    assembly saves)."""
    w = _REGS[full_unroll]["w"]
    args = {"r5"} if len_arg else set()
    args |= {"r6"} if out_arg else set()
    return w, tuple(r for r in ("r5", "r6", "r8", "r9", "r10", "r11", "r12", "lr") if r != w and r not in args)


def _group(P: int, R: dict, first: bool) -> list[str]:
    """One group of 4 taps for every pixel: the weight word unpacked into r7 / wh, the inputs by
    LDM (two pixels) or LDRD; `first`: a1.. start from a0 (the bias) as addend, a0 last."""
    s, wh = R["s"], R["wh"]
    lines = [f"ldr {wh}, [{R['w']}], #4", f"sxtb16 r7, {wh}", f"sxtb16 {wh}, {wh}, ror #8"]
    if first:
        lines += [f"ldmia {s}!, {{r8, r9, r10, r11}}", "smlad r1, r10, r7, r0", f"smlad r1, r11, {wh}, r1"]
        for p in range(2, P):
            lines += [f"ldrd r10, r11, [{s}], #8", f"smlad r{p}, r10, r7, r0", f"smlad r{p}, r11, {wh}, r{p}"]
        return lines + ["smlad r0, r8, r7, r0", f"smlad r0, r9, {wh}, r0"]
    for p in range(0, P - 1, 2):
        lines += [f"ldmia {s}!, {{r8, r9, r10, r11}}", f"smlad r{p}, r8, r7, r{p}", f"smlad r{p}, r9, {wh}, r{p}",
                  f"smlad r{p + 1}, r10, r7, r{p + 1}", f"smlad r{p + 1}, r11, {wh}, r{p + 1}"]
    if P % 2:
        lines += [f"ldrd r8, r9, [{s}], #8", f"smlad r{P - 1}, r8, r7, r{P - 1}", f"smlad r{P - 1}, r9, {wh}, r{P - 1}"]
    return lines


def gemm_dot_asm(pixels: int, groups: int, unroll: int, full_unroll: bool, out_c: int, doubled: bool, rq_words: int,
                 rq: Requant, len_arg: bool = False, out_arg: bool = False) -> tuple[str, ...]:
    """Every output channel of a block of `pixels` in one loop: per channel the bias from the
    table (the two-word row: shifted down by RQ_E_BITS) as the first group's SMLAD addend, the
    `groups` groups of 4 taps (in line, or `unroll` per iteration of a loop; one word of int8
    weights, SXTB16 / SXTB16 ROR 8, the pre-unpacked inputs by LDM, two SMLAD per pixel: the C
    kernel's instructions), then M, K, e from the row (two-word: e from the bias word and K =
    (2 zero_point + 1) 2^(e - 1); three-word: e from K by RBIT and CLZ), the short
    requantization of the accumulators in place (doubled here unless the inputs were), the
    activation's clamp where narrower than int8, and the stores one after the other.
    Registers (_REGS): r0-r5 accumulators, r7 / wh the weight pairs (r7 saved by the
    assembly), r8-r11 inputs, s the scratch, w the weights (rows follow each other), wend the
    end of a row; table, output, its end, scratch and 2 zero_point + 1 on the stack (FRAME,
    pushed from r0-r4). `len_arg` (with the loop): the row's length in bytes is not a constant but
    a sixth word of the frame, pushed from r5, so that layers that differ only in it share the
    code (one more instruction per channel). `out_arg` (with `len_arg`): the output channels too,
    a seventh word pushed from r6, the stores by register offsets (three more instructions per
    channel and block)."""
    assert rq.fast and gemm_dot_fits(pixels, out_c, full_unroll) and rq_words in (2, 3, 4)
    assert not (len_arg and full_unroll) and (len_arg or not out_arg)
    P, R = pixels, _REGS[full_unroll]
    frame = len(FRAME) + (1 if len_arg else 0) + (1 if out_arg else 0)
    lines = ["push {r7}", f"push {{{', '.join(f'r{r}' for r in range(frame))}}}", "2:",
             "ldr r8, [sp]", f"ldr {R['s']}, [sp, #12]", "ldr r0, [r8]"]
    if rq_words == 2:
        lines.append(f"asr r0, r0, #{RQ_E_BITS}")
    if full_unroll:
        for g in range(groups):
            lines += _group(P, R, g == 0 and P >= 2)
    else:
        if len_arg:
            lines += [f"ldr {R['wend']}, [sp, #{4 * len(FRAME)}]", f"add {R['wend']}, {R['w']}, {R['wend']}"]
        else:
            lines.append(f"add {R['wend']}, {R['w']}, #{4 * groups}")
        peel = P >= 2 and groups > unroll  # the first iteration's groups, the first one from a0
        if peel:
            for u in range(unroll):
                lines += _group(P, R, u == 0)
        else:
            lines += [f"mov r{p}, r0" for p in range(1, P)]
        lines.append("1:")
        for u in range(unroll):
            lines += _group(P, R, False)
        lines += [f"cmp {R['w']}, {R['wend']}", "bne 1b"]
    # M in r10, K in r11, e in R["e"]; r9 a temporary
    e = R["e"]
    lines.append("ldr r8, [sp]")
    if rq_words == 4:
        lines += ["ldmia r8!, {r9, r10, r11}", f"ldr {e}, [r8], #4"]
    elif rq_words == 3:
        lines += ["ldmia r8!, {r9, r10, r11}", f"rbit {e}, r11", f"clz {e}, {e}", f"add {e}, {e}, #1"]
    else:
        lines += ["ldmia r8!, {r9, r10}", f"and {e}, r9, #{(1 << RQ_E_BITS) - 1}", "ldr r11, [sp, #16]",
                  f"sub r9, {e}, #1", "lsl r11, r11, r9"]
    lines.append("str r8, [sp]")
    for p in range(P):
        a = f"r{p}"
        if not doubled:
            lines.append(f"add {a}, {a}, {a}")
        lines += requant_lines(a, "r10", "r11", e, "r9", rq.sign_free, rq.act_min, rq.act_max)
    lines.append("ldr r8, [sp, #4]")
    lines += _stores(P, out_c, 4 * (frame - 1) if out_arg else 0)
    lines += ["str r8, [sp, #4]", "ldr r9, [sp, #8]", "cmp r8, r9", "bne 2b", f"add sp, sp, #{4 * frame}", "pop {r7}"]
    return tuple(lines)
