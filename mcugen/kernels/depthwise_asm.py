"""Armv7E-M assembly of the 3x3 depthwise rows (stride 1 and 2): the instructions, what encodes, what a row costs.

`mcugen.kernels.depthwise` chooses among these per layer and makes the plans that
templates/c/fast/depthwise.c.j2 prints.
"""

from __future__ import annotations

from typing import Optional, Sequence

from mcugen.kernels.base import ConvView
from mcugen.kernels.requant import Requant

DW_BLOCK = 4  # outputs of one channel per step of the DSP depthwise assembly
DW_RECORD = 10  # words per channel in the DSP depthwise stream: 6 weight pairs, bias, M, K, e


def dw_asm_block(n: int, stride: int, row_offsets: Sequence[int], step: int, out_stride: Optional[int],
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
                lines += dw_s1_macs(j, f"%[d{(j // 2) % 3}]", f"%[d{(j // 2 + 1) % 3}]", "%[wa]", add)
            else:
                lines.append(f"smlad %[a{j}], %[d{j % 3}], %[wa], {add}")
                lines.append(f"smlabt %[a{j}], %[d{(j + 1) % 3}], %[wc], %[a{j}]")
    lines += _dw_requant(n, "%[wa]", step, out_stride, post_store, sign_free)
    return tuple(lines)


def dw_s1_macs(j: int, lo: str, hi: str, wa: str, add: str) -> list[str]:
    """Stride 1, output j of a step, one kernel row: ring words lo = (c_x, c_x+1) and hi =
    (c_x+2, c_x+3) with x = j rounded down to even, weight pairs wa = (w0, w1), %[wc] = (w1, w2).
    The first SMLAxy adds to `add` (the bias holder in the first row)."""
    if j % 2 == 0:
        return [f"smlad %[a{j}], {lo}, {wa}, {add}", f"smlabt %[a{j}], {hi}, %[wc], %[a{j}]"]
    return [f"smlatb %[a{j}], {lo}, {wa}, {add}", f"smlad %[a{j}], {hi}, %[wc], %[a{j}]"]


def asm_clamp(reg: str, cond: str, bound: int) -> list[str]:
    """reg = bound where reg `cond` bound (lt: the lower bound, gt: the upper one), an IT block."""
    cmp = f"cmp {reg}, #{bound}" if bound >= 0 else f"cmn {reg}, #{-bound}"
    mov = f"mov{cond} {reg}, #{bound}" if bound >= 0 else f"mvn{cond} {reg}, #{-bound - 1}"
    return [cmp, f"it {cond}", mov]


def requant_lines(a: str, m: str, k: str, e: str, tmp: str, sign_free: bool, act_min: int = -128,
                  act_max: int = 127) -> list[str]:
    """The short requantization of accumulator register `a` in place: y = ssat8((SMMLAR(acc, M, K)
    [+ (acc >> 31)]) >> e), M, K, e in registers `m`, `k`, `e`, `tmp` a temporary (not with
    `sign_free`), then the activation's clamp where it is narrower than int8 (asm_clamp)."""
    lines = [f"smmlar {a}, {a}, {m}, {k}"] if sign_free else [f"smmlar {tmp}, {a}, {m}, {k}", f"add {a}, {tmp}, {a}, asr #31"]
    lines += [f"asr {a}, {a}, {e}", f"ssat {a}, #8, {a}"]
    if act_min > -128:
        lines += asm_clamp(a, "lt", act_min)
    if act_max < 127:
        lines += asm_clamp(a, "gt", act_max)
    return lines


def uniform_lines(lines: Sequence[str], top: int) -> tuple[str, ...]:
    """`lines` with every sign-free short requantization (requant_lines: SMMLAR a, a, M, K;
    ASR a, a, e; SSAT a, #8, a) in the form of one shift for every channel
    (requant.uniform_requant): SMMLA a, a, M, K'; SSAT a, #8, a, ASR #top, one instruction
    fewer per output. The records must hold the scaled weights and bias and K'."""
    out: list[str] = []
    i = 0
    while i < len(lines):
        x = lines[i]
        if x.startswith("smmlar "):
            a, src, m, k = (r.strip() for r in x[len("smmlar "):].split(","))
            assert src == a and lines[i + 1].startswith(f"asr {a}, {a}, ") and lines[i + 2] == f"ssat {a}, #8, {a}", \
                lines[i: i + 3]
            out += [f"smmla {a}, {a}, {m}, {k}", f"ssat {a}, #8, {a}, asr #{top}"]
            i += 3
        else:
            out.append(x)
            i += 1
    return tuple(out)


def requant_in_place(j: int, m: str, k: str, sign_free: bool) -> list[str]:
    """requant_lines for accumulator %[aj], e in %[d0], %[d1] a temporary, no clamp."""
    return requant_lines(f"%[a{j}]", m, k, "%[d0]", "%[d1]", sign_free)


def _dw_requant(n: int, wa: str, step: int, out_stride: Optional[int], post_store: bool, sign_free: bool) -> list[str]:
    """The short requantization of accumulators %[a0..] in place (requant_in_place, M and K from
    the record into wa/%[wc], e into %[d0]), then their stores one after the other (a store
    after a store pipelines: one cycle, not two; post-indexed by out_stride, or at immediate
    offsets and the output pointer moved when `step`; out_stride None: c_arg_stores)."""
    lines = [f"ldrd {wa}, %[wc], [%[w], #28]", "ldr %[d0], [%[w], #36]"]
    for j in range(n):
        lines += requant_in_place(j, wa, "%[wc]", sign_free)
    if out_stride is None:
        return lines + c_arg_stores(n, wa)
    for j in range(n):
        lines.append(f"strb %[a{j}], [%[o]], #{out_stride}" if post_store else f"strb %[a{j}], [%[o], #{j * out_stride}]")
    if not post_store and step:
        lines.append(f"add %[o], %[o], #{n * out_stride}")
    return lines


def c_arg_stores(n: int, tmp: str) -> list[str]:
    """The stores of `n` <= 6 outputs of one channel when the channel count C is an argument (in
    %[end], which the row then does not need: one store group per row, dw_c_arg_fits): output j
    at %[o] + j C by register offsets (C, 2C, 4C from %[o]; 3C and 5C from `tmp` = %[o] + C, free
    once M is used), then %[o] one byte on: one instruction more than the post-indexed stores and
    their rewind where n > 3, none otherwise."""
    assert 1 <= n <= 6
    lines = [f"add {tmp}, %[o], %[end]"] if n > 3 else []
    at = {0: "[%[o]]", 1: "[%[o], %[end]]", 2: "[%[o], %[end], lsl #1]", 3: f"[{tmp}, %[end], lsl #1]",
          4: "[%[o], %[end], lsl #2]", 5: f"[{tmp}, %[end], lsl #2]"}
    return lines + [f"strb %[a{j}], {at[j]}" for j in range(n)] + ["add %[o], %[o], #1"]


def dw_c_arg_fits(out_w: int, stride: int, rows: bool) -> bool:
    """Whether a 3x3 row kernel can take its channel count as an argument (in %[end]): one store
    group per row, no step loop reading %[end] (dw_asm_rows: fewer than DW_BLOCK outputs;
    dw_asm_cases: at most one step and no tail, or only the tail)."""
    if rows:
        return out_w < DW_BLOCK
    blocks, tail, _ = dw_cases_layout(out_w, stride)
    return (blocks == 1 and tail == 0) or blocks == 0


DW_ROWS_REGS = {"a0": "r0", "a1": "r1", "a2": "r2", "a3": "r3", "wc": "r4", "d0": "r5", "d1": "r6",
                "p0": "r8", "p1": "r9", "p2": "r10", "o": "r11", "w": "r12", "end": "lr"}  # + r7 (wa)
DW_LAST_CHANNEL = 1 << 31  # in the record's e: the channel loop of dw_asm_rows ends after it


def dw_asm_rows(out_w: int, out_c: int, plane_w: int, sign_free: bool = False, c_arg: bool = False) -> tuple[str, ...]:
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
    and 1 are done). Stores: post-indexed by out_c up to 255 channels, else immediate offsets;
    `c_arg` (dw_c_arg_fits): the channel count in %[end], c_arg_stores."""
    assert not c_arg or dw_c_arg_fits(out_w, 1, True)
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
                lines += dw_s1_macs(j, lo, hi, "r7", f"%[a{n - 1}]" if k == 0 and j < n - 1 else f"%[a{j}]")
        return lines + _dw_requant(n, "r7", step, None if c_arg else out_c, post, sign_free)

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
    if not c_arg:  # c_arg_stores leave %[o] on the next channel
        lines.append(f"sub %[o], %[o], #{out_moved - 1}" if out_moved > 1 else "add %[o], %[o], #1")
    if blocks:
        lines.append(f"add %[end], %[end], #{6 * plane_w}")
    lines.append(f"add %[w], %[w], #{4 * DW_RECORD}")
    lines.append("cmp %[d0], #0")  # e of the channel just done: negative on the last one
    lines.append("bge 2b")
    lines.append("pop {r7}")
    return tuple(lines)


def dw_s2_rows_fit(out_w: int, out_c: int, plane_w: int) -> bool:
    """dw_asm_rows_s2 applies: at most one step of DW_BLOCK outputs and a tail (no step loop, so
    that %[end] is free for the third ring word), stores post-indexed (out_c <= 255), the
    pointer steps and the output rewind within 4095."""
    return out_w < 2 * DW_BLOCK and out_c <= 255 and 6 * plane_w <= 4095 and out_w * out_c <= 4096


def dw_asm_rows_s2(out_w: int, out_c: int, plane_w: int, sign_free: bool = False) -> tuple[str, ...]:
    """Every channel of one output row of a stride-2 3x3 depthwise with at most DW_BLOCK + 3
    outputs (dw_s2_rows_fit), whatever ring slots the kernel rows sit in: like dw_asm_rows,
    %[p0..p2] at channel 0's three ring rows (the template's registers DW_ROWS_REGS, r7 the
    weight pair), one copy of the code instead of one per ring case. Output j reads words j and
    j + 1 of each row (columns 2j..2j+2): three data registers in turn, the third %[end] (no
    step loop here to need it). Per channel: a step of DW_BLOCK outputs where out_w allows,
    then the rest, at immediate offsets from the row pointers; the stores post-indexed by
    out_c; then every pointer to the next channel and the loop on unless the record's e had
    bit 31 set."""
    assert dw_s2_rows_fit(out_w, out_c, plane_w)
    data = ("%[d0]", "%[d1]", "%[end]")

    def block(n: int, first: int) -> list[str]:
        lines = [f"ldr %[a{n - 1}], [%[w], #24]"]  # the bias: every output starts from it
        for k in range(3):
            lines.append(f"ldrd r7, %[wc], [%[w], #{8 * k}]")
            lines.append(f"ldrd {data[0]}, {data[1]}, [%[p{k}], #{4 * first}]")
            for j in range(n):
                if j >= 1:  # word j + 1 into the register of word j - 2, no longer read
                    lines.append(f"ldr {data[(j + 1) % 3]}, [%[p{k}], #{4 * (first + j + 1)}]")
                add = f"%[a{n - 1}]" if k == 0 and j < n - 1 else f"%[a{j}]"
                lines += [f"smlad %[a{j}], {data[j % 3]}, r7, {add}", f"smlabt %[a{j}], {data[(j + 1) % 3]}, %[wc], %[a{j}]"]
        return lines + _dw_requant(n, "r7", 0, out_c, True, sign_free)

    blocks, tail = divmod(out_w, DW_BLOCK)
    lines = ["push {r7}", "2:"]
    if blocks:
        lines += block(DW_BLOCK, 0)
    if tail:
        lines += block(tail, blocks * DW_BLOCK)
    lines += [f"add %[p{k}], %[p{k}], #{6 * plane_w}" for k in range(3)]
    lines.append(f"sub %[o], %[o], #{out_w * out_c - 1}" if out_w * out_c > 1 else "add %[o], %[o], #1")
    lines += [f"add %[w], %[w], #{4 * DW_RECORD}", "cmp %[d0], #0", "bge 2b", "pop {r7}"]
    return tuple(lines)


DW_WIDE_BLOCK = 6  # outputs of one channel per step of dw_asm_cases
DW_CASES_REGS = {"a0": "r0", "a1": "r1", "a2": "r2", "a3": "r3", "a4": "r4", "a5": "r5", "wc": "r6", "d0": "r8",
                 "d1": "r9", "p": "r10", "o": "r11", "w": "r12", "end": "lr"}  # + r7 (wa)


def _dw_wide_block(n: int, offsets: Sequence[int], step: int, out_c: Optional[int], post: bool,
                   sign_free: bool) -> list[str]:
    """Stride 1: `n` (<= DW_WIDE_BLOCK) consecutive outputs of one channel, the kernel rows at
    byte `offsets` from %[p] (one pointer: the ring case is known), two data registers taking
    the row's words in turn (word w replaces word w - 2, dead by then); %[p] moves on `step`
    bytes with the first load of the row at offset 0."""
    last_word = (n - 1) // 2 + 1
    lines = [f"ldr %[a{n - 1}], [%[w], #24]"]  # the bias: every output starts from it
    moved = 0
    for ri, k in enumerate(sorted(range(3), key=lambda k: (offsets[k] != 0, k))):
        lines.append(f"ldrd r7, %[wc], [%[w], #{8 * k}]")
        if step and not moved and offsets[k] == 0:
            lines.append(f"ldrd %[d0], %[d1], [%[p]], #{step}")
            moved = step
        else:
            lines.append(f"ldrd %[d0], %[d1], [%[p], #{offsets[k] - moved}]")
        loaded = 2
        for j in range(n):
            while loaded <= min(j // 2 + 1, last_word):
                lines.append(f"ldr %[d{loaded % 2}], [%[p], #{offsets[k] + 4 * loaded - moved}]")
                loaded += 1
            add = f"%[a{n - 1}]" if ri == 0 and j < n - 1 else f"%[a{j}]"
            lines += dw_s1_macs(j, f"%[d{(j // 2) % 2}]", f"%[d{(j // 2 + 1) % 2}]", "r7", add)
    return lines + _dw_requant(n, "r7", step, out_c, post, sign_free)


def ring_case_offsets(plane_w: int) -> tuple[tuple[int, int, int], ...]:
    """Per ring case (the slot holding kernel row 0), the byte offsets of kernel rows 0, 1, 2
    from the channel's first ring row (3 rows of plane_w int16 per channel)."""
    return tuple(tuple(((c + k) % 3) * 2 * plane_w for k in range(3)) for c in range(3))


def dw_cases_step(stride: int) -> int:
    """Outputs per step of dw_asm_cases: DW_WIDE_BLOCK on stride 1; on stride 2, where every
    output needs a new ring word, DW_BLOCK with a third data register (LDRD pairs)."""
    return DW_WIDE_BLOCK if stride == 1 else DW_BLOCK


def dw_cases_layout(out_w: int, stride: int) -> tuple[int, int, int]:
    """dw_asm_cases' row: (steps, tail outputs, bytes %[p] moves per step)."""
    n = dw_cases_step(stride)
    blocks, tail = divmod(out_w, n)
    return blocks, tail, 2 * stride * n


def _dw_case_block(n: int, stride: int, offsets: Sequence[int], step: int, out_c: Optional[int], post: bool,
                   sign_free: bool) -> list[str]:
    """One step of dw_asm_cases: stride 1 _dw_wide_block; stride 2 dw_asm_block with its ring
    pointer %[p], r7 for wa and a4 as its third data register."""
    if stride == 1:
        return _dw_wide_block(n, offsets, step, out_c, post, sign_free)
    lines = dw_asm_block(n, stride, offsets, step, out_c, post, sign_free)
    return [x.replace("%[r]", "%[p]").replace("%[wa]", "r7").replace("%[d2]", "%[a4]") for x in lines]


def dw_asm_cases(out_w: int, out_c: int, plane_w: int, stride: int, sign_free: bool = False,
                 c_arg: bool = False) -> tuple[tuple[str, ...], ...]:
    """Every channel of one output row of a 3x3 depthwise (stride 1 or 2), one assembly per
    ring case (the slot of kernel row 0), so that one pointer %[p] reaches the three ring rows
    at immediate offsets and six accumulators fit: dw_cases_step outputs per step (a loop
    while %[p] != %[end] where a row has more than one step), then the row's last outputs; then
    %[p], %[o], %[w] move to the next channel and the channel loop goes on unless the record's
    e had bit 31 set. Registers DW_CASES_REGS, r7 (the weight pair) saved and restored here.
    Per output of a full step and kernel row: two SMLAxy and half a load (stride 1) against
    the four-output dw_asm_rows' weights, bias and requantization constants reloaded every
    four outputs. `c_arg` (dw_c_arg_fits): the channel count in %[end], c_arg_stores."""
    assert not c_arg or dw_c_arg_fits(out_w, stride, False)
    post = out_c <= 255
    stores = None if c_arg else out_c
    n = dw_cases_step(stride)
    blocks, tail, step = dw_cases_layout(out_w, stride)
    cases = []
    for offsets in ring_case_offsets(plane_w):
        lines = ["push {r7}", "2:"]
        if blocks == 1:
            lines += _dw_case_block(n, stride, offsets, step, stores, post, sign_free)
        elif blocks:
            lines.append("1:")
            lines += _dw_case_block(n, stride, offsets, step, stores, post, sign_free)
            lines += ["cmp %[p], %[end]", "bne 1b"]
        if tail:
            lines += _dw_case_block(tail, stride, offsets, 0, stores, post, sign_free)
        out_moved = out_w * out_c if post else blocks * n * out_c
        lines.append(f"add %[p], %[p], #{6 * plane_w - blocks * step}")
        if not c_arg:  # c_arg_stores leave %[o] on the next channel
            lines.append(f"sub %[o], %[o], #{out_moved - 1}" if out_moved > 1 else "add %[o], %[o], #1")
        if blocks > 1:
            lines.append(f"add %[end], %[end], #{6 * plane_w}")
        lines += [f"add %[w], %[w], #{4 * DW_RECORD}", "cmp %[d0], #0", "bge 2b", "pop {r7}"]
        cases.append(tuple(lines))
    return tuple(cases)


def dw_cases_fit(out_w: int, out_c: int, plane_w: int, stride: int) -> bool:
    """The immediates of dw_asm_cases encode: ring offsets within LDRD's 1020 bytes, the
    pointer steps and the output rewind within 4095, stores post-indexed up to 255 bytes or at
    offsets up to 4095."""
    blocks, _, step = dw_cases_layout(out_w, stride)
    n = dw_cases_step(stride)
    post = out_c <= 255
    out_moved = out_w * out_c if post else blocks * n * out_c
    return (4 * plane_w + 4 * (n + 1) <= 1020 and 6 * plane_w <= 4095 and out_moved <= 4096
            and (post or n * out_c <= 4095) and 6 * plane_w - blocks * step >= 0)


def row_costs(lines: Sequence[str], steps: int) -> int:
    """Instructions one channel's row executes: each line once, but the step loop (from label
    1 to its BNE) `steps` times; labels, PUSH and POP (outside the channel loop) excluded."""
    once = [x for x in lines if not x.endswith(":") and not x.startswith(("push", "pop"))]
    if "1:" not in lines:
        return len(once)
    start, stop = lines.index("1:"), lines.index("bne 1b")
    return len(once) + (steps - 1) * (stop - start)


def dw_rows_fit(out_w: int, out_c: int, plane_w: int) -> bool:
    """The immediates of dw_asm_rows encode: pointer steps and the output rewind within 4095."""
    post = out_c <= 255
    out_moved = out_w * out_c if post else (out_w // DW_BLOCK) * DW_BLOCK * out_c
    return 6 * plane_w <= 4095 and out_moved <= 4096 and (post or DW_BLOCK * out_c <= 4095)


def _dw_words(j: int, stride: int) -> tuple[int, int]:
    return (j // 2, j // 2 + 1) if stride == 1 else (j, j + 1)


def dw_asm_case_blocks(v: ConvView, rq: Requant, plane_w: int) -> tuple[tuple[tuple[str, ...], ...], tuple[tuple[str, ...], ...]]:
    """The four-output DSP depthwise assembly for the three ring cases (run in a C channel loop),
    or nothing where the C path must do: the general requantization or a narrower activation
    range (no single SSAT), or offsets the load/store encodings cannot reach (ring rows within
    LDRD's 1020 bytes, post-indexed STRB up to 255 bytes, else immediate offsets up to 4095)."""
    c = v.out_c
    post = c <= 255
    if not (rq.fast and rq.clamp_is_int8) or 4 * plane_w + 4 * (DW_BLOCK + 1) > 1020 \
            or (not post and DW_BLOCK * c > 4095):
        return (), ()
    step = 4 * v.sh * DW_BLOCK // 2
    tail = v.out_w % DW_BLOCK
    loops, tails = [], []
    for offsets in ring_case_offsets(plane_w):
        loops.append(dw_asm_block(DW_BLOCK, v.sh, offsets, step, c, post, rq.sign_free) if v.out_w >= DW_BLOCK else ())
        tails.append(dw_asm_block(tail, v.sh, offsets, 0, c, post, rq.sign_free) if tail else ())
    return tuple(rq_lines(x, rq) for x in loops), tuple(rq_lines(x, rq) for x in tails)


def rq_lines(lines: Sequence[str], rq: Requant) -> tuple[str, ...]:
    """`lines` as `rq` wants them: uniform_lines where it has one shift for every channel."""
    return uniform_lines(lines, int(rq.e[0])) if rq.truncating else tuple(lines)
