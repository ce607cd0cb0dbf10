"""Table tests of mcugen.quant: TFLite's integer arithmetic pinned at its edges.

Expected values are written by hand or computed here with exact Python integers / fractions by
independent reference implementations, never with the function under test.
"""

from __future__ import annotations

import math
from fractions import Fraction

import numpy as np
import pytest

from mcugen import quant
from mcugen.errors import UnsupportedError
from mcugen.ir import Activation, DType

I32_MIN = -(2**31)
I32_MAX = 2**31 - 1


# ---- independent exact references ---------------------------------------------------------


def ref_round_half_away(r: Fraction) -> int:
    """Round a Fraction to the nearest integer, ties away from zero."""
    magnitude = math.floor(abs(r) + Fraction(1, 2))
    return magnitude if r >= 0 else -magnitude


def ref_quantize_multiplier(real: float) -> tuple[int, int]:
    """QuantizeMultiplier from its definition: real = q * 2**shift, q in [1/2, 1), 31-bit q."""
    if real == 0:
        return 0, 0
    r = Fraction(real)
    sign = -1 if r < 0 else 1
    r = abs(r)
    shift = 0
    while r >= 1:
        r /= 2
        shift += 1
    while r < Fraction(1, 2):
        r *= 2
        shift -= 1
    q = ref_round_half_away(r * 2**31)
    if q == 2**31:
        q //= 2
        shift += 1
    if shift < -31:
        return 0, 0
    return sign * q, shift


def ref_srdhm(a: int, b: int) -> int:
    """SaturatingRoundingDoublingHighMul: a*b/2**31 rounded to nearest, ties toward +infinity."""
    if a == b == I32_MIN:
        return I32_MAX
    return math.floor(Fraction(a * b, 2**31) + Fraction(1, 2))


def ref_rdbpot(x: int, exponent: int) -> int:
    """RoundingDivideByPOT: x / 2**exponent, ties away from zero."""
    return ref_round_half_away(Fraction(x, 2**exponent))


def ref_wrap32(x: int) -> int:
    return (x + 2**31) % 2**32 - 2**31


def ref_mbqm(x: int, multiplier: int, shift: int) -> int:
    """Double-rounding MultiplyByQuantizedMultiplier from the two exact references."""
    left, right = max(shift, 0), max(-shift, 0)
    return ref_rdbpot(ref_srdhm(ref_wrap32(x * 2**left), multiplier), right)


# ---- quantize_multiplier ---------------------------------------------------------------------

QUANTIZE_MULTIPLIER_TABLE = [
    (0.0, (0, 0)),
    (0.5, (2**30, 0)),
    (1.0, (2**30, 1)),
    (0.75, (3 * 2**29, 0)),
    (3.0, (3 * 2**29, 2)),
    (2.0**40, (2**30, 41)),
    (-0.5, (-(2**30), 0)),
    # q * 2**31 rounds up to 2**31: halved, shift + 1.
    (1 - 2.0**-33, (2**30, 1)),
    (1 - 2.0**-31, (2**31 - 1, 0)),
    # exact ties: round half away from zero, both signs
    (0.5 + 2.0**-32, (2**30 + 1, 0)),
    (-(0.5 + 2.0**-32), (-(2**30 + 1), 0)),
    (0.5 + 2.0**-33, (2**30, 0)),
    # the smallest shifts kept, and the flush to (0, 0) below shift -31
    (2.0**-31, (2**30, -30)),
    (2.0**-32, (2**30, -31)),
    (2.0**-33, (0, 0)),
    (2.0**-32 * (1 - 2.0**-40), (2**30, -31)),  # rounds up into shift -31: kept
    (2.0**-32 * (1 - 2.0**-30), (0, 0)),  # stays at shift -32: flushed
    (1e-300, (0, 0)),
]


@pytest.mark.parametrize("real, expected", QUANTIZE_MULTIPLIER_TABLE)
def test_quantize_multiplier_table(real, expected):
    assert quant.quantize_multiplier(real) == expected
    assert ref_quantize_multiplier(real) == expected  # the reference agrees with the hand table


def test_quantize_multiplier_matches_exact_reference_on_random_reals():
    rng = np.random.default_rng(7)
    reals = np.concatenate([10.0 ** rng.uniform(-12, 6, 2000), -(10.0 ** rng.uniform(-5, 2, 200))])
    reals = np.concatenate([reals, reals.astype(np.float32).astype(np.float64)])
    for real in reals:
        assert quant.quantize_multiplier(float(real)) == ref_quantize_multiplier(float(real)), real


def test_quantize_multiplier_rejects_non_finite():
    with pytest.raises(UnsupportedError):
        quant.quantize_multiplier(float("inf"))
    with pytest.raises(UnsupportedError):
        quant.quantize_multiplier(float("nan"))


# ---- gemmlowp primitives -------------------------------------------------------------------------

SRDHM_TABLE = [
    (I32_MIN, I32_MIN, I32_MAX),  # the one saturating case
    (I32_MIN, I32_MAX, -(2**31 - 1)),
    (I32_MAX, I32_MAX, 2**31 - 2),
    (I32_MAX, I32_MIN, -(2**31 - 1)),
    (1, 2**30, 1),  # +0.5 rounds up
    (-1, 2**30, 0),  # -0.5 rounds up too (toward +infinity), not away from zero
    (3, 2**30, 2),
    (-3, 2**30, -1),
    (2**30, 2**30, 2**29),
    (0, I32_MIN, 0),
]


@pytest.mark.parametrize("a, b, expected", SRDHM_TABLE)
def test_saturating_rounding_doubling_high_mul_table(a, b, expected):
    assert quant.saturating_rounding_doubling_high_mul(a, b) == expected
    assert ref_srdhm(a, b) == expected


RDBPOT_TABLE = [
    (5, 1, 3),
    (-5, 1, -3),
    (1, 1, 1),
    (-1, 1, -1),
    (2, 2, 1),
    (-2, 2, -1),
    (6, 2, 2),
    (-6, 2, -2),
    (7, 2, 2),
    (-7, 2, -2),
    (-9, 2, -2),
    (123, 0, 123),
    (-123, 0, -123),
    (I32_MIN, 31, -1),
    (I32_MAX, 31, 1),
    (2**30 - 1, 31, 0),
    (2**30, 31, 1),
    (-(2**30), 31, -1),
    (-(2**30) + 1, 31, 0),
]


@pytest.mark.parametrize("x, exponent, expected", RDBPOT_TABLE)
def test_rounding_divide_by_pot_table(x, exponent, expected):
    assert quant.rounding_divide_by_pot(x, exponent) == expected
    assert ref_rdbpot(x, exponent) == expected


def test_rounding_divide_by_pot_rejects_bad_exponent():
    with pytest.raises(ValueError):
        quant.rounding_divide_by_pot(5, 32)
    with pytest.raises(ValueError):
        quant.rounding_divide_by_pot(5, -1)


MBQM_TABLE = [
    (100, 2**30, -1, 25),
    # double rounding: 5 * 0.5 = 2.5 -> 3, then 3 / 2 = 1.5 -> 2 (single rounding of 1.25 gives 1)
    (5, 2**30, -1, 2),
    (-3, 2**30, -1, -1),
    (1, 2**30, 30, 2**29),
    # the left shift wraps as int32 arithmetic does: 3 * 2**30 -> -2**30
    (3, 2**30, 30, -(2**29)),
    (I32_MAX, I32_MAX, -31, 1),
    (2**30, 2**30, -31, 0),
    (-(2**30), I32_MAX, -31, 0),
    (1000, 0, 0, 0),
    (-1000, 2**31 - 1, 0, -1000),
]


@pytest.mark.parametrize("x, multiplier, shift, expected", MBQM_TABLE)
def test_multiply_by_quantized_multiplier_table(x, multiplier, shift, expected):
    assert quant.multiply_by_quantized_multiplier(x, multiplier, shift) == expected
    assert ref_mbqm(x, multiplier, shift) == expected


def test_multiply_by_quantized_multiplier_matches_reference_on_random_values():
    rng = np.random.default_rng(11)
    n = 3000
    multipliers = rng.integers(2**30, 2**31, n)
    shifts = rng.integers(-31, 8, n)
    xs = np.array([rng.integers(-(2 ** (31 - max(int(s), 0))), 2 ** (31 - max(int(s), 0))) for s in shifts])
    got = quant.multiply_by_quantized_multiplier(xs, multipliers, shifts)
    expected = [ref_mbqm(int(x), int(m), int(s)) for x, m, s in zip(xs, multipliers, shifts)]
    assert got.tolist() == expected


def test_multiply_by_quantized_multiplier_broadcasts_per_channel():
    x = np.array([[100, -100, 7], [-2**20, 2**20, 0]])
    multipliers = np.array([2**30, 1518500250, 2**31 - 1])
    shifts = np.array([-3, 2, -31])
    got = quant.multiply_by_quantized_multiplier(x, multipliers, shifts)
    assert got.shape == (2, 3)
    for i in range(2):
        for j in range(3):
            assert got[i, j] == ref_mbqm(int(x[i, j]), int(multipliers[j]), int(shifts[j]))


def test_scalar_arguments_give_python_ints():
    assert isinstance(quant.multiply_by_quantized_multiplier(5, 2**30, -1), int)
    assert isinstance(quant.rounding_divide_by_pot(5, 1), int)
    assert isinstance(quant.saturating_rounding_doubling_high_mul(5, 2**30), int)
    assert isinstance(quant.multiply_by_quantized_multiplier(np.array([5]), 2**30, -1), np.ndarray)


def test_greater_than_one_and_smaller_than_one_variants():
    assert quant.multiply_by_quantized_multiplier_greater_than_one(3, 2**30, 4) == ref_srdhm(3 * 16, 2**30)
    assert quant.multiply_by_quantized_multiplier_smaller_than_one_exp(-5, 2**30, -1) == ref_rdbpot(
        ref_srdhm(-5, 2**30), 1
    )


def test_saturating_rounding_multiply_by_pot():
    assert quant.saturating_rounding_multiply_by_pot(2**28, 2) == 2**30
    assert quant.saturating_rounding_multiply_by_pot(2**29, 2) == I32_MAX  # saturates
    assert quant.saturating_rounding_multiply_by_pot(-(2**29), 2) == I32_MIN
    assert quant.saturating_rounding_multiply_by_pot(-(2**29) + 1, 2) == -(2**31) + 4
    assert quant.saturating_rounding_multiply_by_pot(-6, -2) == -2
    assert quant.saturating_rounding_multiply_by_pot(9, 0) == 9


# ---- effective-scale helpers ------------------------------------------------------------------


def f32(x: float) -> Fraction:
    return Fraction(float(np.float32(x)))


def test_conv_per_channel_multipliers_use_double_products():
    mult, shift = quant.conv_per_channel_multipliers(0.5, np.array([0.25, 0.1], dtype=np.float32), 0.125)
    assert mult.dtype == np.int32 and shift.dtype == np.int32
    assert (int(mult[0]), int(shift[0])) == (2**30, 1)
    expected = ref_quantize_multiplier(float(f32(0.5) * f32(0.1) / f32(0.125)))
    assert (int(mult[1]), int(shift[1])) == expected


def test_fc_multiplier_uses_the_float32_product():
    a, b, o = 0.08144886791706085, 0.0006447036867029965, 0.0120766656473279
    product32 = np.float32(a) * np.float32(b)  # TFLite: float(input_scale * filter_scale)
    expected = ref_quantize_multiplier(float(Fraction(float(product32)) / f32(o)))
    assert quant.fc_multiplier(a, b, o) == expected == (1195192897, -7)
    # the double product (what CONV_2D uses) gives a different multiplier for these scales
    assert ref_quantize_multiplier(float(f32(a) * f32(b) / f32(o))) != expected


def test_add_params_by_hand():
    p = quant.add_params(0.5, 0.25, 1.0)
    assert p.left_shift == 20
    assert (p.input1_multiplier, p.input1_shift) == (2**30, 0)  # 0.5 / (2 * 0.5)
    assert (p.input2_multiplier, p.input2_shift) == (2**30, -1)  # 0.25 / 1.0
    assert (p.output_multiplier, p.output_shift) == (2**30, -19)  # 1.0 / (2**20 * 1.0)


def test_add_params_rejects_what_tflite_rejects():
    with pytest.raises(UnsupportedError):
        quant.add_params(1.0, 1.0, 2.0**-25)  # output rescale >= 1


def test_mul_and_requantize_params():
    assert quant.mul_params(0.5, 0.5, 0.125) == (2**30, 2)
    assert quant.mul_params(0.1, 0.2, 0.3) == ref_quantize_multiplier(float(f32(0.1) * f32(0.2) / f32(0.3)))
    assert quant.requantize_params(0.5, 0.25) == (2**30, 2)
    assert quant.requantize_params(0.1, 0.7) == ref_quantize_multiplier(float(f32(0.1) / f32(0.7)))


MEAN_TABLE = [
    # (in_scale, out_scale, count) -> (multiplier, shift): base (m, s) = QuantizeMultiplier(in/out),
    # k = min(floor(log2 count), 32, 31 + s), m' = (m << k) // count, s' = s - k
    (1.0, 1.0, 49, ((2**30 << 5) // 49, 1 - 5)),
    (1.0, 1.0, 1, (2**30, 1)),
    (1.0, 1.0, 64, (2**30, 1 - 6)),
    (1.0, 1.0, 2**40, ((2**30 << 32) // 2**40, 1 - 32)),  # k capped at 32
    (2.0**-30, 1.0, 4, (2**30, -31)),  # base (2**30, -29): k = 2
    (2.0**-30, 1.0, 8, (2**29, -31)),  # k capped at 31 + s = 2
]


@pytest.mark.parametrize("in_scale, out_scale, count, expected", MEAN_TABLE)
def test_mean_params_table(in_scale, out_scale, count, expected):
    p = quant.mean_params(in_scale, out_scale, count)
    assert (p.multiplier, p.shift) == expected
    assert p.count == count


def test_mean_of_constant_input_is_exact_with_equal_quantization():
    values = np.arange(-128, 128)
    for zp in (-128, -3, 0, 41):
        for count in list(range(1, 70)) + [196, 1000, 50176]:
            p = quant.mean_params(0.02, 0.02, count)
            got = quant.multiply_by_quantized_multiplier(count * (values - zp), p.multiplier, p.shift) + zp
            assert np.array_equal(got, values), (zp, count)


def test_softmax_params_by_hand():
    assert quant.softmax_params(2.0**-4, 1.0) == quant.SoftmaxParams(2**30, 23, -248)
    # beta * scale * 2**26 capped at 2**31 - 1: frexp gives (1 - 2**-31, 31)
    assert quant.softmax_params(1000.0, 1.0) == quant.SoftmaxParams(2**31 - 1, 31, 0)
    beta_half = quant.softmax_params(2.0**-4, 0.5)
    assert beta_half == quant.SoftmaxParams(2**30, 22, -496)


def test_logistic_params_by_hand():
    assert quant.logistic_params(2.0**-4, 3) == quant.LogisticParams(3, 120, 2**30, 24)
    real = f32(0.1) * 2**27
    q, e = math.frexp(float(real))
    expected_mult = ref_round_half_away(Fraction(q) * 2**31)
    radius = math.floor(Fraction(15 * 2**27, 2**e))
    assert quant.logistic_params(0.1, -7) == quant.LogisticParams(-7, radius, expected_mult, e)


def test_calculate_input_radius():
    assert quant.calculate_input_radius(5, 23) == 248
    assert quant.calculate_input_radius(5, 31) == 0
    assert quant.calculate_input_radius(4, 24, 31) == 120
    assert quant.calculate_input_radius(4, 0, 15) == 15 * 2**11


ACTIVATION_TABLE = [
    (Activation.NONE, 0.1, 3, DType.INT8, (-128, 127)),
    (Activation.RELU, 0.1, -5, DType.INT8, (-5, 127)),
    (Activation.RELU6, 4.0, 0, DType.INT8, (0, 2)),  # 6 / 4 = 1.5 rounds away from zero
    (Activation.RELU6, 6.0 / 255, -128, DType.INT8, (-128, 127)),
    (Activation.RELU6, 0.01, 0, DType.INT8, (0, 127)),  # 600 clamped
    (Activation.RELU_N1_TO_1, 2.0, 10, DType.INT8, (9, 11)),  # -0.5 -> -1, 0.5 -> 1
    (Activation.RELU_N1_TO_1, 0.5, 10, DType.INT8, (8, 12)),
    (Activation.RELU, 0.1, 0, DType.UINT8, (0, 255)),
    (Activation.RELU6, 0.1, 20, DType.UINT8, (20, 80)),
]


@pytest.mark.parametrize("act, scale, zp, dtype, expected", ACTIVATION_TABLE)
def test_activation_range_table(act, scale, zp, dtype, expected):
    assert quant.activation_range(act, scale, zp, dtype) == expected


def test_activation_range_rejects_unknown_activation():
    with pytest.raises(UnsupportedError):
        quant.activation_range(Activation.OTHER, 0.1, 0, DType.INT8)


def test_quantize_float_rounds_half_away_in_float32():
    values = np.array([0.5, -0.5, 1.5, 2.5, -2.5, 0.49999997, 127.5, -128.6, 1000.0, -1000.0], dtype=np.float32)
    got = quant.quantize_float(values, 1.0, 0, DType.INT8)
    assert got.dtype == np.int8
    assert got.tolist() == [1, -1, 2, 3, -3, 0, 127, -128, 127, -128]
    assert quant.quantize_float(np.array([1.25], np.float32), 0.5, 10, DType.UINT8).tolist() == [13]
    # The division is float32: here it is exactly -82.5 (-> -83); in double it is -82.4999982...
    v, s = -0.27760085463523865, 0.003364858916029334
    assert quant.quantize_float(np.array([v], np.float32), s, 0, DType.INT8).tolist() == [-83]


def test_dequantize_is_float32_of_double_product():
    q = np.array([-128, -1, 0, 3, 127], dtype=np.int8)
    got = quant.dequantize(q, 0.1, 5)
    assert got.dtype == np.float32
    expected = [np.float32(float(f32(0.1) * (int(v) - 5))) for v in q]
    assert got.tolist() == expected


# ---- gemmlowp fixed-point functions ---------------------------------------------------------


def to_raw(values: np.ndarray, integer_bits: int) -> np.ndarray:
    return np.round(np.asarray(values) * 2.0 ** (31 - integer_bits)).astype(np.int64)


@pytest.mark.parametrize("integer_bits", [1, 4, 5, 6])
def test_exp_on_negative_values_accuracy(integer_bits):
    xs = -np.linspace(0, 2**integer_bits - 0.01, 4001)
    got = quant.exp_on_negative_values(to_raw(xs, integer_bits), integer_bits) / 2.0**31
    assert np.max(np.abs(got - np.exp(xs))) < 5e-7  # gemmlowp: ~2e-7
    assert quant.exp_on_negative_values(np.array([0]), integer_bits)[0] == I32_MAX


def test_exp_on_negative_values_clamps_below_minus_32():
    raw = to_raw(np.array([-32.5, -40.0]), 6)
    assert quant.exp_on_negative_values(raw, 6).tolist() == [0, 0]


def test_one_over_one_plus_x_and_one_minus_x_over_one_plus_x():
    xs = np.linspace(0, 0.999, 999)
    raw = to_raw(xs, 0)
    assert np.max(np.abs(quant.one_over_one_plus_x_for_x_in_0_1(raw) / 2.0**31 - 1 / (1 + xs))) < 2e-8
    assert np.max(np.abs(quant.one_minus_x_over_one_plus_x_for_x_in_0_1(raw) / 2.0**31 - (1 - xs) / (1 + xs))) < 4e-8


def test_logistic_and_tanh_fixed_point():
    xs = np.linspace(-15.9, 15.9, 3001)
    raw = to_raw(xs, 4)
    logistic = quant.logistic_fixed_point(raw, 4) / 2.0**31
    assert np.max(np.abs(logistic - 1 / (1 + np.exp(-xs)))) < 2e-7
    assert quant.logistic_fixed_point(np.array([0]), 4)[0] == 2**30
    tanh = quant.tanh_fixed_point(raw, 4) / 2.0**31
    assert np.max(np.abs(tanh - np.tanh(xs))) < 3e-7
    assert quant.tanh_fixed_point(np.array([0]), 4)[0] == 0


def test_get_reciprocal():
    shifted_scale, bits = quant.get_reciprocal(np.array([2**19, 3 * 2**19, 10 * 2**19]), 12)
    assert bits.tolist() == [0, 1, 3]  # 1.0, 3.0 = 1.5 * 2, 10.0 = 1.25 * 8
    assert np.allclose(shifted_scale / 2.0**31, [1.0, 1 / 1.5, 1 / 1.25], atol=2e-8)


def test_softmax_int8_uniform_row():
    params = quant.softmax_params(0.1, 1.0)
    out = quant.softmax_int8(np.full((2, 10), 17, dtype=np.int8), params)
    assert out.dtype == np.int8
    # every probability is 1/10 = 25.6 / 256 -> 26 - 128
    assert out.tolist() == [[-102] * 10] * 2


def test_logistic_lut_and_fixed_point_agree_with_float_logistic():
    x = np.arange(-128, 128)
    for scale, zp in ((0.1, 0), (0.0235, -1), (0.05, 30)):
        table = quant.logistic_lut_tflite(scale, zp, 1 / 256, -128)
        fixed = quant.logistic_int8_fixed_point(x, quant.logistic_params(scale, zp))
        exact = np.clip(np.floor(256 / (1 + np.exp(-np.float32(scale) * (x - zp))) + 0.5) - 128, -128, 127)
        assert np.max(np.abs(table.astype(int) - exact)) <= 1
        assert np.max(np.abs(fixed.astype(int) - exact)) <= 1
