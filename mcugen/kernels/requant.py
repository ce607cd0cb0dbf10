"""Requantization: the short SMMLAR form where a bound on the accumulator proves it exact, and the kernels' tables."""

from __future__ import annotations

import dataclasses
from dataclasses import dataclass
from typing import Optional

import numpy as np


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
    # one shift for every channel (uniform_requant): e holds E everywhere, k holds K', the kernel
    # takes SMMLA instead of SMMLAR and the accumulators (weights, bias) are scaled per channel
    truncating: bool = False

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


RQ_E_BITS = 5  # e in 1..31 in the low bits of a bias word (the GEMM two-word table, the compact forms)


def k_follows_from_e(rq: Requant) -> bool:
    """Whether a short requantization's K is (2 zero_point + 1) 2^(e-1) for every channel, e in
    1..31: the compact forms store e and rebuild K from it (depthwise kh x kw, the thin kernel,
    the chains' stage B)."""
    e = rq.e.astype(np.int64)
    return bool(rq.fast and e.min() >= 1 and e.max() <= 31
                and np.array_equal(wrap32((2 * rq.output_offset + 1) << (e - 1)), rq.k.astype(np.int64)))


UNIFORM_MAX_STEP = 7  # d = E - e <= 7: the int8 weights times 2^(d+1) still fit int16 pairs
UNIFORM_PREFERRED = 12  # the E taken where it fits: layers whose shifts allow it agree, so their code can be one


def uniform_shift(rq: Requant, acc_bound: np.ndarray) -> int:
    """One right shift E for every channel of a sign-free short requantization, or 0 where none
    exists: each channel's accumulator scaled by 2^(d+1), d = E - e in 1..UNIFORM_MAX_STEP (its
    weights and bias; uniform_scale), and SMMLA (truncating) in place of
    SMMLAR with K' = uniform_k. Exact: for every integer a (the channel's accumulator),
    (SMMLA(2^(d+1) a, M, K') >> E) = floor((2^(d+1) a M + K' 2^32) / 2^(32+E)) and with
    K' = 2^(d-1) + K 2^d that is floor((2 a M + 2^31 + K 2^32) / 2^(32+e)) = SMMLAR(2a, M, K) >> e,
    the sign-free short form (Requant.sign_free; nested floors of divisions by powers of two are
    one floor). No overflow: 2^(d+1) |a| < 2^31 and |K'| < 2^31 are checked. The kernel then
    takes E as an immediate of SSAT, one instruction fewer than a shift by register, and
    channels whose shifts differed run the same code. E is the one closest to UNIFORM_PREFERRED
    (the lower of two) among those that fit (max(e) + 1 up to min(e) + UNIFORM_MAX_STEP, where
    the scaled accumulator does not overflow), so that layers of like shifts agree on it and can
    share that code."""
    if not rq.sign_free or rq.truncating:
        return 0
    e = rq.e.astype(np.int64)
    bound = np.asarray(acc_bound, np.int64)
    fits = [top for top in range(int(e.max()) + 1, min(int(e.min()) + UNIFORM_MAX_STEP, 31) + 1)
            if np.all((bound + 1) << (top - e + 1) < 2**31) and np.all(np.abs(uniform_k(rq, top)) < 2**31)]
    return min(fits, key=lambda top: (abs(top - UNIFORM_PREFERRED), top)) if fits else 0


def uniform_requant(rq: Requant, acc_bound: np.ndarray) -> tuple[Optional[Requant], Optional[np.ndarray]]:
    """The requantization with one shift for every channel (uniform_shift) as a Requant
    (`truncating`, e = E, k = K') and the per-channel factor of the weights and bias
    (uniform_scale); (None, None) where there is none."""
    top = uniform_shift(rq, acc_bound)
    if not top:
        return None, None
    return (dataclasses.replace(rq, k=uniform_k(rq, top).astype(np.int32), e=np.full_like(rq.e, top), truncating=True),
            uniform_scale(rq, top))


def uniform_scale(rq: Requant, top: int) -> np.ndarray:
    """Per channel 2^(d+1), d = top - e: the factor of its weights and bias (uniform_shift)."""
    return np.int64(1) << (top - rq.e.astype(np.int64) + 1)


def uniform_k(rq: Requant, top: int) -> np.ndarray:
    """Per channel K' = 2^(d-1) + K 2^d (uniform_shift), as int64."""
    d = top - rq.e.astype(np.int64)
    return (np.int64(1) << (d - 1)) + rq.k.astype(np.int64) * (np.int64(1) << d)


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
