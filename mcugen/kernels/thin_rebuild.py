"""The thin kernel's compact form: int8 weights in flash, its records rebuilt in scratch at each call.

The looped thin kernel (mcugen.kernels.conv.thin_conv_asm) reads per output channel a record of
3 + in_c/2 + 1 words: 2*bias', the weights x2 as int16 pairs (t4g, t4g+2), (t4g+1, t4g+3), M, K, e.
Its compact form keeps per channel 2 + in_c/4 words in flash: 2*bias' shifted left by RQ_E_BITS with
e in the bits freed, the int8 weights four to a word (taps 4g..4g+3, low byte first), and M. The
rebuild makes each pair by SXTB16 (ROR 8) and SADD16, the bias by ASR, e by AND and K from e - 1:
K = (2 zero_point + 1) << (e - 1), where that is the layer's K (requant.k_follows_from_e); the C
around it then sets bit 31 of e of the loop's last channel (conv.thin_loop_last).
"""

from __future__ import annotations

from typing import Optional

import numpy as np

from mcugen.kernels.requant import RQ_E_BITS, wrap32

# instructions of thin_rebuild_asm per channel: the loads, stores and loop, and per group of four
# input channels (two SXTB16, two SADD16)
THIN_REBUILD_CHANNEL = 10
THIN_REBUILD_GROUP = 4


def int8_quads(w: np.ndarray) -> np.ndarray:
    """Int8 weights [rows][4k] as words of four, low byte first: [rows][k]."""
    rows, n = w.shape
    b = (np.asarray(w, np.int64) & 0xFF).reshape(rows, n // 4, 4)
    return b[..., 0] | b[..., 1] << 8 | b[..., 2] << 16 | b[..., 3] << 24


def bias_with_e(bias: np.ndarray, e: np.ndarray) -> np.ndarray:
    """Bias words shifted left by RQ_E_BITS with e in the bits freed (conv.rq_e_packs must hold)."""
    return np.asarray(bias, np.int64) * (1 << RQ_E_BITS) + (np.asarray(e, np.int64) & ((1 << RQ_E_BITS) - 1))


def doubled_pairs(words: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """What SXTB16 and SXTB16 ROR 8 make of words of four int8 weights, each pair doubled (SADD16):
    the int16 pairs (t0, t2) and (t1, t3) as unsigned words."""
    x = np.asarray(words, np.int64) & 0xFFFFFFFF
    out = []
    for sh in (0, 8):  # bytes sh/8 and sh/8 + 2
        lo = (((x >> sh) & 0xFF) ^ 0x80) - 0x80
        hi = (((x >> (sh + 16)) & 0xFF) ^ 0x80) - 0x80
        out.append((2 * lo) & 0xFFFF | ((2 * hi) & 0xFFFF) << 16)
    return out[0], out[1]


def thin_compact_words(records: np.ndarray, w: np.ndarray, e: Optional[np.ndarray] = None) -> np.ndarray:
    """The compact form [out_c][2 + in_c/4] of the thin records `records` (thin_records) for int8
    weights `w` [out_c][in_c]: looped (e None), the records end in M, K, e (bit 31 on the loop's
    last channel); in line, in M, K, and `e` is the requantization's. The biases must survive the
    shift by RQ_E_BITS (conv.rq_e_packs)."""
    m_at = -3 if e is None else -2
    if e is None:
        e = records[:, -1].astype(np.int64) & 0xFF
    return wrap32(np.concatenate([bias_with_e(records[:, 0], e)[:, None], int8_quads(w),
                                  records[:, m_at:m_at + 1].astype(np.int64)], axis=1))


def rebuild_inline_records(compact: np.ndarray, k_odd: int, uniform: bool = False) -> np.ndarray:
    """What mcugen_thin_records makes of the in-line thin kernel's compact form: the records
    (2*bias', the weight pairs x2, M, K). `uniform` (one shift E for every channel,
    requant.uniform_shift): the low bits hold d = E - e instead of e, bias and pairs are
    scaled by 2^d more, and K' = k + 2^(d-1) with `k_odd` = (2 zero_point + 1) 2^(E-1)."""
    if not uniform:
        return rebuild_records(compact, k_odd, None)[:, :-1]
    out_c, n = compact.shape
    signed = np.asarray(compact, np.int64)
    d = (signed[:, 0] & ((1 << RQ_E_BITS) - 1))[:, None]
    cols = [(signed[:, :1] >> RQ_E_BITS) << d]
    for g in range(1, n - 1):
        for p in doubled_pairs(signed[:, g] & 0xFFFFFFFF):
            lo = ((p & 0xFFFF) ^ 0x8000) - 0x8000
            hi = ((p >> 16) ^ 0x8000) - 0x8000
            cols.append(((lo[:, None] << d) & 0xFFFF) | ((hi[:, None] << d) & 0xFFFF) << 16)
    cols += [signed[:, -1:], k_odd + (np.int64(1) << (d - 1))]
    return wrap32(np.concatenate(cols, axis=1))


def uniform_compact_words(w: np.ndarray, bias2: np.ndarray, d: np.ndarray, m: np.ndarray) -> np.ndarray:
    """The in-line thin kernel's compact form with one shift for every channel
    (rebuild_inline_records with `uniform`): per channel 2*bias' * 2^RQ_E_BITS + d, the int8
    weights four to a word, M."""
    return wrap32(np.concatenate([bias_with_e(bias2, d)[:, None], int8_quads(w),
                                  np.asarray(m, np.int64)[:, None]], axis=1))


def rebuild_records(compact: np.ndarray, k_odd: int, last: Optional[int]) -> np.ndarray:
    """What the rebuild makes of the compact form (as the C fallback computes it), with bit 31
    of channel `last`'s e set as the C around the rebuild sets it (conv.thin_loop_last): the records."""
    out_c, n = compact.shape
    c = compact.astype(np.int64) & 0xFFFFFFFF
    signed = np.asarray(compact, np.int64)
    cols = [(signed[:, :1] >> RQ_E_BITS)]
    for g in range(1, n - 1):
        cols += [p[:, None] for p in doubled_pairs(c[:, g])]
    e = c[:, 0] & ((1 << RQ_E_BITS) - 1)
    e_word = e.copy()
    if last is not None:
        e_word[last] |= 1 << 31
    cols += [c[:, -1:], ((k_odd << (e - 1)) & 0xFFFFFFFF)[:, None], e_word[:, None]]
    return wrap32(np.concatenate(cols, axis=1))


def thin_rebuild_asm(in_c: int) -> tuple[str, ...]:
    """The rebuild loop, Armv7E-M: r0 the compact form, r1 the records (scratch), r2 their end,
    r3 2 zero_point + 1; r4-r6 and r8-r12 clobbered, r7 untouched. Per channel in chunks of at most
    two groups: a load-multiple of the chunk's words (the first also takes the bias word, which
    gives e by AND and the bias by ASR; the last also M), the pairs in place by SXTB16 and SADD16 in
    ascending registers, K = r3 << (e - 1), a store-multiple."""
    groups = in_c // 4
    assert 1 <= groups <= 4, in_c
    chunks = [tuple(range(g, min(g + 2, groups))) for g in range(0, groups, 2)]
    lines = ["1:"]
    for n, chunk in enumerate(chunks):
        first, last = n == 0, n == len(chunks) - 1
        lead = ["r4"] if first else []
        src = ["r5", "r6"][:len(chunk)] if first else ["r4", "r5"][:len(chunk)]
        tail = ["r10"] if last else []
        lines.append(f"ldm r0!, {{{', '.join(lead + src + tail)}}}")
        if first:
            lines += [f"and r12, r4, #{(1 << RQ_E_BITS) - 1}", f"asr r4, r4, #{RQ_E_BITS}"]
        if len(chunk) == 2:
            a, b = src
            out = [a, b, "r8", "r9"]
            lines += [f"sxtb16 r8, {b}", f"sxtb16 r9, {b}, ror #8", f"sxtb16 {b}, {a}, ror #8", f"sxtb16 {a}, {a}"]
        else:
            (a,) = src
            b = "r6" if first else "r5"
            out = [a, b]
            lines += [f"sxtb16 {b}, {a}, ror #8", f"sxtb16 {a}, {a}"]
        lines += [f"sadd16 {r}, {r}, {r}" for r in out]
        if last:
            lines += ["sub r11, r12, #1", "lsl r11, r3, r11"]
        lines.append(f"stm r1!, {{{', '.join(lead + out + (['r10', 'r11', 'r12'] if last else []))}}}")
    lines += ["cmp r1, r2", "bne 1b"]
    return tuple(lines)


THIN_REBUILD_CLOBBERS = ("r4", "r5", "r6", "r8", "r9", "r10", "r11", "r12")


def thin_rebuild_cost(in_c: int, out_c: int) -> int:
    """Instructions of the rebuild per call."""
    return out_c * (THIN_REBUILD_CHANNEL + THIN_REBUILD_GROUP * (in_c // 4))
