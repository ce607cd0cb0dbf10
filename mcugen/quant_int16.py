"""Integer parameters of the 16x8 (int16 activation) kernels: SOFTMAX's tables and multiplier (LEAKY_RELU's are mcugen.quant.leaky_relu_multipliers)."""

from __future__ import annotations

from typing import Callable

import numpy as np

from mcugen import quant

F = np.float32


def _round(x: np.float32) -> np.float32:
    """TfLiteRound on a float (half away from zero), kept in float32."""
    return F(quant.round_half_away_from_zero(x))


def lut_populate_int16(input_scale: np.float32, input_zp: int, output_scale: np.float32, output_zp: int,
                       transform: Callable[[np.float32], np.float32]) -> np.ndarray:
    """TFLite's LUTPopulate<int16_t> (float version): 512 samples of `transform` over the input
    range, each biased by half the interpolation error at the segment's midpoint, plus the last
    value; every operation in float32 as the C++ does it."""
    lo, hi = -32768, 32767
    input_min = F(F(input_scale) * F(lo - input_zp))
    input_max = F(F(input_scale) * F(hi - input_zp))
    output_min = F(F(output_scale) * F(lo - output_zp))
    output_max = F(F(output_scale) * F(hi - output_zp))
    steps = 512
    step = F(F(input_max - input_min) / F(steps))
    half_step = F(step / F(2))
    scaling_inv = F(F(65536) / F(output_max - output_min))
    lut = np.zeros(steps + 1, dtype=np.int16)
    with np.errstate(over="ignore"):
        for i in range(steps):
            x = F(input_min + F(F(i) * step))
            val = transform(x)
            val_mid = transform(F(x + half_step))
            val_next = transform(F(input_min + F(F(i + 1) * step)))
            sample = _round(F(val * scaling_inv))
            interp = _round(F(F(F(val_next * scaling_inv) + sample) / F(2)))
            mid = _round(F(val_mid * scaling_inv))
            bias = _round(F(F(interp - mid) / F(2)))
            lut[i] = int(min(max(F(sample - bias), F(lo)), F(hi)))
        last = _round(F(transform(input_max) * scaling_inv))
        lut[steps] = int(min(max(last, F(lo)), F(hi)))
    return lut


def _expf(x: np.float32) -> np.float32:
    return F(quant._expf(np.array([x], dtype=np.float32))[0])


def _one_over_one_plus(x: np.float32) -> np.float32:
    return F(F(1) / F(F(1) + x))


def softmax_int16_tables() -> tuple[np.ndarray, np.ndarray]:
    """SOFTMAX int16's two 513-entry tables: exp on [-10, 0] and 1 / (1 + x) on [0, 1]."""
    span = F(65535)  # int16 max - int16 min, as the float the C++ divides by
    exp_table = lut_populate_int16(F(F(10) / span), 32767, F(F(2) / span), 0, _expf)
    reciprocal_table = lut_populate_int16(F(F(1) / span), -32768, F(F(2) / span), 0, _one_over_one_plus)
    return exp_table, reciprocal_table


def softmax_int16_multiplier(input_scale: float, beta: float) -> tuple[int, int]:
    """QuantizeMultiplier(double(input_scale) * double(beta) / (10 / 65535)): the input difference
    scaled so that [-65535, 0] is [-10, 0]."""
    return quant.quantize_multiplier(float(F(input_scale)) * float(F(beta)) / (10.0 / 65535.0))
