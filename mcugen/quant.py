"""Exact TFLite integer arithmetic: multipliers, gemmlowp fixed point, per-op kernel parameters.

This module is the single source of truth for quantization arithmetic in mcugen. The lowering
(C kernel parameters) and the numpy emulator both take their numbers from here, and every
function reproduces TensorFlow Lite 2.14's reference kernels (and TFLite Micro, which shares
them) bit for bit, in the double-rounding configuration (``TFLITE_SINGLE_ROUNDING`` off):

* parameters are computed as the kernels' ``Prepare`` functions do, in double precision from
  the float32 scales stored in the model, in the same operation order;
* the per-element arithmetic (``SaturatingRoundingDoublingHighMul``, ``RoundingDivideByPOT``,
  the gemmlowp ``FixedPoint`` functions) is vectorized over numpy ``int64`` arrays holding
  int32 values; where C would wrap a 32-bit value this module calls :func:`wrap_int32`
  explicitly, and where gemmlowp saturates, it saturates.

Every element-wise function accepts Python ints or numpy arrays (broadcasting, so per-channel
multiplier / shift arrays work) and returns a Python ``int`` when all arguments are scalars.
"""

from __future__ import annotations

import ctypes
import ctypes.util
import math
from dataclasses import dataclass
from typing import Union

import numpy as np

from mcugen.errors import UnsupportedError
from mcugen.ir import Activation, DType

INT32_MIN = -(1 << 31)
INT32_MAX = (1 << 31) - 1

IntLike = Union[int, np.integer, np.ndarray]


# ---- helpers ---------------------------------------------------------------------------


def _i64(x: IntLike) -> np.ndarray:
    return np.asarray(x, dtype=np.int64)


def _finish(result: np.ndarray, *args: object) -> IntLike:
    """Return a Python int when every argument was a scalar, else the int64 array."""
    if all(np.ndim(a) == 0 for a in args):
        return int(result)
    return result


def wrap_int32(x: IntLike) -> np.ndarray:
    """Two's complement wrap of int64 values to the int32 range (what C int32 arithmetic does)."""
    x = _i64(x)
    return ((x + (1 << 31)) & 0xFFFFFFFF) - (1 << 31)


def _trunc_div_pot(x: np.ndarray, bits: int) -> np.ndarray:
    """C integer division of int64 `x` by 2**bits (rounds toward zero)."""
    return np.where(x >= 0, x >> bits, -((-x) >> bits))


def round_half_away_from_zero(x: Union[float, np.ndarray]) -> np.ndarray:
    """std::round / roundf / TfLiteRound for float32 or float64 input, returned as float64.

    Computed in float64, where adding 0.5 to a value of at most 53 significant bits below 2**52
    is exact, so values just under a half (e.g. 0.49999997f) do not round up by accident.
    """
    v = np.asarray(x, dtype=np.float64)
    return np.copysign(np.floor(np.abs(v) + 0.5), v)


def _round_half_away_scalar(v: float) -> int:
    """TfLiteRound(double) for a finite double, exactly (no float addition involved)."""
    a = abs(v)
    r = math.floor(a)
    if a - r >= 0.5:  # a - r is exact for doubles
        r += 1
    return r if v >= 0 else -r


def _clz32(x: np.ndarray) -> np.ndarray:
    """Count leading zeros of the uint32 bit pattern of each int32 value (32 for 0)."""
    u = (x & 0xFFFFFFFF).astype(np.float64)  # exact: < 2**32
    _, exponent = np.frexp(u)  # u = m * 2**e with m in [0.5, 1): bit length == e
    return (32 - exponent).astype(np.int64)


# ---- gemmlowp primitives -----------------------------------------------------------------


def saturating_rounding_doubling_high_mul(a: IntLike, b: IntLike) -> IntLike:
    """gemmlowp SaturatingRoundingDoublingHighMul for int32 (ARM VQRDMULH).

    (a*b + nudge) / 2**31 with C division (toward zero), nudge = 2**30 if a*b >= 0 else
    1 - 2**30; INT32_MIN * INT32_MIN saturates to INT32_MAX.
    """
    a64, b64 = _i64(a), _i64(b)
    ab = a64 * b64  # |ab| <= 2**62: fits int64
    nudge = np.where(ab >= 0, 1 << 30, 1 - (1 << 30))
    high = _trunc_div_pot(ab + nudge, 31)
    overflow = (a64 == b64) & (a64 == INT32_MIN)
    return _finish(np.where(overflow, INT32_MAX, high), a, b)


def rounding_divide_by_pot(x: IntLike, exponent: IntLike) -> IntLike:
    """gemmlowp RoundingDivideByPOT: arithmetic shift right by `exponent` (0..31), rounding to
    nearest with ties away from zero."""
    x64, e = _i64(x), _i64(exponent)
    if np.any(e < 0) or np.any(e > 31):
        raise ValueError(f"rounding_divide_by_pot exponent out of [0, 31]: {exponent}")
    mask = (np.int64(1) << e) - 1
    remainder = x64 & mask
    threshold = (mask >> 1) + (x64 < 0).astype(np.int64)
    result = (x64 >> e) + (remainder > threshold).astype(np.int64)
    return _finish(result, x, exponent)


def saturating_rounding_multiply_by_pot(x: IntLike, exponent: int) -> IntLike:
    """gemmlowp SaturatingRoundingMultiplyByPOT<exponent> on int32 raw values.

    exponent > 0: saturating left shift; exponent < 0: RoundingDivideByPOT(x, -exponent).
    """
    x64 = _i64(x)
    if exponent == 0:
        return _finish(x64, x)
    if exponent < 0:
        return rounding_divide_by_pot(x, -exponent)
    threshold = (1 << (31 - exponent)) - 1
    shifted = wrap_int32(x64 << exponent)
    result = np.where(x64 > threshold, INT32_MAX, np.where(x64 < -threshold, INT32_MIN, shifted))
    return _finish(result, x)


def multiply_by_quantized_multiplier(x: IntLike, multiplier: IntLike, shift: IntLike) -> IntLike:
    """TFLite MultiplyByQuantizedMultiplier(int32 x, int32 multiplier, int shift), double rounding.

    left = max(shift, 0), right = max(-shift, 0);
    RoundingDivideByPOT(SaturatingRoundingDoublingHighMul(x * 2**left, multiplier), right),
    where x * 2**left wraps as int32 arithmetic does. `multiplier`/`shift` may be per-channel
    arrays broadcasting against `x`.
    """
    x64, m, s = _i64(x), _i64(multiplier), _i64(shift)
    left = np.maximum(s, 0)
    right = np.maximum(-s, 0)
    shifted = wrap_int32(x64 << left)
    high = saturating_rounding_doubling_high_mul(shifted, m)
    return _finish(_i64(rounding_divide_by_pot(high, right)), x, multiplier, shift)


def multiply_by_quantized_multiplier_greater_than_one(
    x: IntLike, multiplier: IntLike, left_shift: IntLike
) -> IntLike:
    """SaturatingRoundingDoublingHighMul(x * 2**left_shift, multiplier) (int32 wrap on the shift)."""
    shifted = wrap_int32(_i64(x) << _i64(left_shift))
    return _finish(_i64(saturating_rounding_doubling_high_mul(shifted, multiplier)), x, multiplier, left_shift)


def multiply_by_quantized_multiplier_smaller_than_one_exp(
    x: IntLike, multiplier: IntLike, left_shift: IntLike
) -> IntLike:
    """RoundingDivideByPOT(SaturatingRoundingDoublingHighMul(x, multiplier), -left_shift)."""
    high = saturating_rounding_doubling_high_mul(_i64(x), multiplier)
    return _finish(_i64(rounding_divide_by_pot(high, -_i64(left_shift))), x, multiplier, left_shift)


# ---- multipliers ---------------------------------------------------------------------------


def quantize_multiplier(real: float) -> tuple[int, int]:
    """TFLite QuantizeMultiplier: real ~= multiplier * 2**(shift - 31), multiplier in [2**30, 2**31).

    q, shift = frexp(real); multiplier = round_half_away(q * 2**31); if that is 2**31 it is
    halved and shift incremented; shift < -31 flushes to (0, 0); real == 0 gives (0, 0).
    shift > 0 means a left shift. Negative reals give negative multipliers (as TFLite).
    """
    real = float(real)
    if not math.isfinite(real):
        raise UnsupportedError(f"quantization multiplier {real} is not finite")
    if real == 0.0:
        return 0, 0
    q, shift = math.frexp(real)
    q_fixed = _round_half_away_scalar(q * float(1 << 31))  # exact: scaling by a power of two
    if q_fixed == (1 << 31):
        q_fixed //= 2
        shift += 1
    if shift < -31:
        return 0, 0
    return int(q_fixed), int(shift)


def quantize_multiplier_array(reals: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """quantize_multiplier over an array; returns (int32 multipliers, int32 shifts)."""
    pairs = [quantize_multiplier(float(r)) for r in np.asarray(reals, dtype=np.float64).ravel()]
    mult = np.array([p[0] for p in pairs], dtype=np.int32).reshape(np.shape(reals))
    shift = np.array([p[1] for p in pairs], dtype=np.int32).reshape(np.shape(reals))
    return mult, shift


def _f32(x: float) -> float:
    """The float32 value TFLite stores, as a Python (double) float."""
    return float(np.float32(x))


def _smaller_than_one_exp(real: float, what: str) -> tuple[int, int]:
    """QuantizeMultiplierSmallerThanOneExp: requires 0 < real < 1 (TFLite aborts otherwise)."""
    if not 0.0 < real < 1.0:
        raise UnsupportedError(f"{what} rescale factor {real!r} is outside (0, 1), which TFLite rejects")
    mult, shift = quantize_multiplier(real)
    return mult, shift


def conv_per_channel_multipliers(
    input_scale: float, filter_scales: np.ndarray, output_scale: float
) -> tuple[np.ndarray, np.ndarray]:
    """PopulateConvolutionQuantizationParams (CONV_2D, DEPTHWISE_CONV_2D, per-channel FC).

    effective = double(input_scale) * double(filter_scale[c]) / double(output_scale), one
    QuantizeMultiplier per channel. Per-tensor weights pass a single scale (it is broadcast by
    the caller to the channel count if needed).
    """
    in_s, out_s = _f32(input_scale), _f32(output_scale)
    reals = [in_s * _f32(f) / out_s for f in np.asarray(filter_scales, dtype=np.float32).ravel()]
    return quantize_multiplier_array(np.array(reals, dtype=np.float64))


def fc_multiplier(input_scale: float, filter_scale: float, output_scale: float) -> tuple[int, int]:
    """FULLY_CONNECTED with per-tensor weights (GetQuantizedConvolutionMultipler).

    Note the float32 product: double(float32(input_scale * filter_scale)) / double(output_scale).
    """
    product = float(np.float32(input_scale) * np.float32(filter_scale))
    return quantize_multiplier(product / _f32(output_scale))


def requantize_params(input_scale: float, output_scale: float) -> tuple[int, int]:
    """QUANTIZE int8/uint8 -> int8/uint8: QuantizeMultiplier(double(in) / double(out))."""
    return quantize_multiplier(_f32(input_scale) / _f32(output_scale))


@dataclass(frozen=True)
class AddParams:
    """ADD int8 parameters (TFLite add.cc Prepare, left_shift 20)."""

    left_shift: int
    input1_multiplier: int
    input1_shift: int
    input2_multiplier: int
    input2_shift: int
    output_multiplier: int
    output_shift: int


def add_params(input1_scale: float, input2_scale: float, output_scale: float, left_shift: int = 20) -> AddParams:
    """twice_max = 2 * double(max(s1, s2)); in_i = s_i / twice_max; out = twice_max / (2**20 * s_out),
    each through QuantizeMultiplierSmallerThanOneExp (shifts <= 0)."""
    s1, s2, so = _f32(input1_scale), _f32(input2_scale), _f32(output_scale)
    twice_max = 2.0 * max(s1, s2)
    m1, sh1 = _smaller_than_one_exp(s1 / twice_max, "ADD input 1")
    m2, sh2 = _smaller_than_one_exp(s2 / twice_max, "ADD input 2")
    mo, sho = _smaller_than_one_exp(twice_max / (float(1 << left_shift) * so), "ADD output")
    return AddParams(left_shift, m1, sh1, m2, sh2, mo, sho)


def add_int8(x1: IntLike, x2: IntLike, offset1: int, offset2: int, p: AddParams) -> np.ndarray:
    """TFLite's reference int8 ADD before the output offset and the clamp: each input plus its
    offset, shifted left by p.left_shift and scaled by its multiplier, the sum scaled by the
    output multiplier (every step int32 as the reference computes it)."""
    shifted1 = wrap_int32((_i64(x1) + offset1) << p.left_shift)
    shifted2 = wrap_int32((_i64(x2) + offset2) << p.left_shift)
    scaled1 = multiply_by_quantized_multiplier_smaller_than_one_exp(shifted1, p.input1_multiplier, p.input1_shift)
    scaled2 = multiply_by_quantized_multiplier_smaller_than_one_exp(shifted2, p.input2_multiplier, p.input2_shift)
    raw_sum = wrap_int32(np.asarray(scaled1) + np.asarray(scaled2))
    return np.asarray(multiply_by_quantized_multiplier_smaller_than_one_exp(raw_sum, p.output_multiplier, p.output_shift))


def squared_difference_params(input1_scale: float, input2_scale: float, output_scale: float) -> AddParams:
    """SQUARED_DIFFERENCE int8 (TFLite squared_difference.cc Prepare, left shift 7): the inputs as
    for ADD; out = twice_max^2 / (2**14 * s_out), all through QuantizeMultiplierSmallerThanOneExp."""
    s1, s2, so = _f32(input1_scale), _f32(input2_scale), _f32(output_scale)
    twice_max = 2.0 * max(s1, s2)
    m1, sh1 = _smaller_than_one_exp(s1 / twice_max, "SQUARED_DIFFERENCE input 1")
    m2, sh2 = _smaller_than_one_exp(s2 / twice_max, "SQUARED_DIFFERENCE input 2")
    mo, sho = _smaller_than_one_exp(twice_max * twice_max / (float(1 << 14) * so), "SQUARED_DIFFERENCE output")
    return AddParams(7, m1, sh1, m2, sh2, mo, sho)


def prelu_params(input_scale: float, alpha_scale: float, output_scale: float) -> AddParams:
    """PRELU int8 as tflite-runtime's Prepare computes it: s_in / s_out and s_in * s_alpha / s_out
    in float32 (then widened), each through QuantizeMultiplier; carried in ADD's fields
    (input1: x >= 0, input2: x < 0)."""
    f = np.float32
    m1, s1 = quantize_multiplier(float(f(f(input_scale) / f(output_scale))))
    m2, s2 = quantize_multiplier(float(f(f(f(input_scale) * f(alpha_scale)) / f(output_scale))))
    return AddParams(0, m1, s1, m2, s2, 0, 0)


def mul_params(input1_scale: float, input2_scale: float, output_scale: float) -> tuple[int, int]:
    """MUL int8: QuantizeMultiplier(double(s1) * double(s2) / double(s_out))."""
    return quantize_multiplier(_f32(input1_scale) * _f32(input2_scale) / _f32(output_scale))


@dataclass(frozen=True)
class MeanParams:
    """MEAN int8 (reference QuantizedMeanOrSum): out = MBQM(sum - zp_in * count, multiplier, shift) + zp_out."""

    multiplier: int
    shift: int
    count: int


def mean_params(input_scale: float, output_scale: float, count: int, fold: bool = True) -> MeanParams:
    """QuantizeMultiplier(double(in)/double(out)) -> (m, s), then fold 1/count in:

    k = min(floor(log2(count)), 32, 31 + s); m' = (int64(m) << k) / count (C division);
    s' = s - k. `count` is the number of input elements reduced into each output element.
    `fold` False: SUM (QuantizedMeanOrSum with compute_sum), (m, s) as they are.
    """
    if count <= 0:
        raise UnsupportedError(f"MEAN over {count} elements is not supported")
    mult, shift = quantize_multiplier(_f32(input_scale) / _f32(output_scale))
    if not fold:
        return MeanParams(int(mult), int(shift), int(count))
    k = count.bit_length() - 1  # 63 - CountLeadingZeros(uint64(count))
    k = min(k, 32)
    k = min(k, 31 + shift)
    folded = (mult << k) // count if mult >= 0 else -((-mult << k) // count)
    return MeanParams(int(folded), int(shift - k), int(count))


@dataclass(frozen=True)
class SoftmaxParams:
    """SOFTMAX int8 reference parameters (PreprocessSoftmaxScaling, kScaledDiffIntegerBits=5)."""

    input_multiplier: int
    input_left_shift: int
    diff_min: int


SOFTMAX_SCALED_DIFF_INTEGER_BITS = 5
SOFTMAX_ACCUMULATION_INTEGER_BITS = 12


def calculate_input_radius(input_integer_bits: int, input_left_shift: int, total_signed_bits: int = 31) -> int:
    """CalculateInputRadius: floor((2**iib - 1) * 2**(tsb - iib) / 2**left_shift), in double."""
    if not 0 <= input_left_shift <= 62:
        raise UnsupportedError(f"input left shift {input_left_shift} is outside what TFLite can compute")
    value = 1.0 * ((1 << input_integer_bits) - 1) * float(1 << (total_signed_bits - input_integer_bits))
    value = value / float(1 << input_left_shift)
    return int(math.floor(value))


def softmax_params(input_scale: float, beta: float) -> SoftmaxParams:
    """real = min(double(beta) * double(input_scale) * 2**26, 2**31 - 1);
    (multiplier, left_shift) = QuantizeMultiplierGreaterThanOne(real);
    diff_min = -CalculateInputRadius(5, left_shift)."""
    bits = SOFTMAX_SCALED_DIFF_INTEGER_BITS
    real = min(_f32(beta) * _f32(input_scale) * float(1 << (31 - bits)), float((1 << 31) - 1))
    if not real > 1.0:
        raise UnsupportedError(
            f"SOFTMAX input scale {input_scale} with beta {beta} is too small for TFLite's int8 kernel"
        )
    mult, left_shift = quantize_multiplier(real)
    radius = calculate_input_radius(bits, left_shift)
    return SoftmaxParams(mult, left_shift, -radius)


@dataclass(frozen=True)
class LogisticParams:
    """LOGISTIC int8 fixed-point parameters (TFLite Micro CalculateArithmeticOpDataLogistic)."""

    input_zero_point: int
    input_range_radius: int
    input_multiplier: int
    input_left_shift: int


LOGISTIC_INPUT_INTEGER_BITS = 4


def logistic_params(input_scale: float, input_zp: int) -> LogisticParams:
    """real = double(input_scale) * 2**27; (q, left_shift) = frexp(real);
    multiplier = int32(round_half_away(q * 2**31)) (2**31 wraps to INT32_MIN as on x86, not halved);
    radius = CalculateInputRadius(4, left_shift, 31)."""
    real = _f32(input_scale) * float(1 << (31 - LOGISTIC_INPUT_INTEGER_BITS))
    q, left_shift = math.frexp(real)
    mult = int(wrap_int32(_round_half_away_scalar(q * float(1 << 31))))
    radius = calculate_input_radius(LOGISTIC_INPUT_INTEGER_BITS, left_shift, 31)
    return LogisticParams(int(input_zp), radius, mult, int(left_shift))


# ---- activation ranges, quantize / dequantize --------------------------------------------------


def dtype_range(dtype: DType) -> tuple[int, int]:
    if dtype is DType.INT8:
        return -128, 127
    if dtype is DType.UINT8:
        return 0, 255
    if dtype is DType.INT16:
        return -32768, 32767
    if dtype is DType.INT32:
        return INT32_MIN, INT32_MAX
    raise UnsupportedError(f"no integer range for type {dtype.value}")


def _quantize_activation_bound(real: float, scale: float, zero_point: int) -> int:
    """kernel_util Quantize(): zero_point + int(roundf(float(real) / float(scale)))."""
    tmp = np.float32(real) / np.float32(scale)
    return int(zero_point) + int(round_half_away_from_zero(tmp))


def activation_range(act: Activation, scale: float, zero_point: int, dtype: DType) -> tuple[int, int]:
    """CalculateActivationRangeQuantized: clamp bounds for a fused activation on the output."""
    qmin, qmax = dtype_range(dtype)
    if act is Activation.NONE:
        return qmin, qmax
    if act is Activation.RELU:
        return max(qmin, _quantize_activation_bound(0.0, scale, zero_point)), qmax
    if act is Activation.RELU6:
        return (
            max(qmin, _quantize_activation_bound(0.0, scale, zero_point)),
            min(qmax, _quantize_activation_bound(6.0, scale, zero_point)),
        )
    if act is Activation.RELU_N1_TO_1:
        return (
            max(qmin, _quantize_activation_bound(-1.0, scale, zero_point)),
            min(qmax, _quantize_activation_bound(1.0, scale, zero_point)),
        )
    raise UnsupportedError(f"fused activation {act.value} is not supported")


def quantize_float(values: np.ndarray, scale: float, zero_point: int, dtype: DType) -> np.ndarray:
    """reference_ops::AffineQuantize: clamp(int32(roundf(val / float(scale))) + zp).

    The division is in float32; a quotient whose rounded value does not fit int32 (or NaN)
    becomes INT32_MIN, which is what the x86-64 conversion (cvttss2si) yields.
    """
    qmin, qmax = dtype_range(dtype)
    v = np.asarray(values, dtype=np.float32)
    with np.errstate(divide="ignore", invalid="ignore", over="ignore"):
        quotient = v / np.float32(scale)
    rounded = round_half_away_from_zero(quotient)
    ok = np.isfinite(rounded) & (rounded >= INT32_MIN) & (rounded <= INT32_MAX)
    as_int = np.where(ok, np.where(ok, rounded, 0).astype(np.int64), INT32_MIN)
    unclamped = wrap_int32(as_int + int(zero_point))
    return np.clip(unclamped, qmin, qmax).astype(dtype.numpy)


def dequantize(values: np.ndarray, scale: float, zero_point: int) -> np.ndarray:
    """reference_ops::Dequantize: float32(double(scale) * (q - zero_point))."""
    diff = np.asarray(values, dtype=np.int64) - int(zero_point)
    return (np.float64(_f32(scale)) * diff.astype(np.float64)).astype(np.float32)


# ---- gemmlowp FixedPoint math (int32 raw values held in int64 arrays) ------------------------


def _add(a: np.ndarray, b: np.ndarray) -> np.ndarray:
    """gemmlowp Add on int32 (wraps)."""
    return wrap_int32(_i64(a) + _i64(b))


def _sub(a: np.ndarray, b: np.ndarray) -> np.ndarray:
    return wrap_int32(_i64(a) - _i64(b))


def _mul(a: np.ndarray, b: np.ndarray) -> np.ndarray:
    """FixedPoint operator*: SaturatingRoundingDoublingHighMul (integer bits add up)."""
    return _i64(saturating_rounding_doubling_high_mul(_i64(a), _i64(b)))


def _fp_one(integer_bits: int) -> int:
    """FixedPoint<int32, integer_bits>::One()."""
    return INT32_MAX if integer_bits == 0 else 1 << (31 - integer_bits)


def rescale(x: IntLike, src_integer_bits: int, dst_integer_bits: int) -> np.ndarray:
    """gemmlowp Rescale<dst>(FixedPoint<src>): SaturatingRoundingMultiplyByPOT<src - dst>."""
    return _i64(saturating_rounding_multiply_by_pot(_i64(x), src_integer_bits - dst_integer_bits))


def rounding_half_sum(a: IntLike, b: IntLike) -> np.ndarray:
    """gemmlowp RoundingHalfSum for int32: (a + b + sign) / 2 in int64 with C division."""
    s = _i64(a) + _i64(b)
    sign = np.where(s >= 0, 1, -1)
    t = s + sign
    return np.where(t >= 0, t // 2, -((-t) // 2))


def exp_on_interval_between_negative_one_quarter_and_0_excl(a: IntLike) -> np.ndarray:
    """exp(x) for x in [-1/4, 0), Q0.31 in and out (Taylor expansion around -1/8)."""
    a = _i64(a)
    constant_term = 1895147668  # exp(-1/8)
    constant_1_over_3 = 715827883
    x = _add(a, 1 << 28)  # + 1/8
    x2 = _mul(x, x)
    x3 = _mul(x2, x)
    x4 = _mul(x2, x2)
    x4_over_4 = _i64(saturating_rounding_multiply_by_pot(x4, -2))
    inner = _add(_mul(_add(x4_over_4, x3), constant_1_over_3), x2)
    x4_over_24_plus_x3_over_6_plus_x2_over_2 = _i64(saturating_rounding_multiply_by_pot(inner, -1))
    return _add(constant_term, _mul(constant_term, _add(x, x4_over_24_plus_x3_over_6_plus_x2_over_2)))


_EXP_BARREL = ((-2, 1672461947), (-1, 1302514674), (0, 790015084), (1, 290630308), (2, 39332535), (3, 720401), (4, 242))


def exp_on_negative_values(a: IntLike, integer_bits: int) -> np.ndarray:
    """gemmlowp exp_on_negative_values: exp(a) for a <= 0 in Q(integer_bits), result in Q0.31."""
    a = _i64(a)
    fractional_bits = 31 - integer_bits
    one_quarter = 1 << (fractional_bits - 2)
    mask = one_quarter - 1
    a_mod_quarter_minus_one_quarter = _sub(a & mask, one_quarter)
    result = exp_on_interval_between_negative_one_quarter_and_0_excl(
        rescale(a_mod_quarter_minus_one_quarter, integer_bits, 0)
    )
    remainder = _sub(a_mod_quarter_minus_one_quarter, a)
    for exponent, multiplier in _EXP_BARREL:
        if integer_bits > exponent:
            bit = 1 << (fractional_bits + exponent)
            result = np.where((remainder & bit) != 0, _mul(result, multiplier), result)
    if integer_bits > 5:
        clamp = -(1 << (36 - integer_bits))  # -32.0 in Q(integer_bits)
        result = np.where(a < clamp, 0, result)
    return np.where(a == 0, _fp_one(0), result)


def _newton_raphson_reciprocal_half(half_denominator: np.ndarray) -> np.ndarray:
    """Shared Newton-Raphson loop of the two gemmlowp divisions; returns x in Q2.29."""
    constant_48_over_17 = 1515870810
    constant_neg_32_over_17 = -1010580540
    one_f2 = _fp_one(2)
    x = _add(constant_48_over_17, _mul(half_denominator, constant_neg_32_over_17))
    for _ in range(3):
        half_denominator_times_x = _mul(half_denominator, x)
        one_minus_half_denominator_times_x = _sub(one_f2, half_denominator_times_x)
        x = _add(x, rescale(_mul(x, one_minus_half_denominator_times_x), 4, 2))
    return x


def one_over_one_plus_x_for_x_in_0_1(a: IntLike) -> np.ndarray:
    """gemmlowp: 1 / (1 + a) for a in [0, 1), Q0.31 in and out."""
    half_denominator = rounding_half_sum(_i64(a), INT32_MAX)
    x = _newton_raphson_reciprocal_half(half_denominator)
    return rescale(x, 1, 0)  # Rescale<0>(ExactMulByPot<-1>(x)): raw stays, Q1 -> Q0


def one_minus_x_over_one_plus_x_for_x_in_0_1(a: IntLike) -> np.ndarray:
    """gemmlowp: (1 - a) / (1 + a) for a in [0, 1), Q0.31 in and out."""
    half_denominator = rounding_half_sum(_i64(a), INT32_MAX)
    x = _newton_raphson_reciprocal_half(half_denominator)
    return rescale(_sub(x, _fp_one(2)), 2, 0)


def logistic_fixed_point(a: IntLike, integer_bits: int) -> np.ndarray:
    """gemmlowp logistic(FixedPoint<int32, integer_bits>) -> Q0.31."""
    a = _i64(a)
    positive = a > 0
    abs_input = np.where(positive, a, wrap_int32(-a))
    result_if_positive = one_over_one_plus_x_for_x_in_0_1(exp_on_negative_values(wrap_int32(-abs_input), integer_bits))
    result_if_negative = _sub(_fp_one(0), result_if_positive)
    return np.where(a == 0, 1 << 30, np.where(positive, result_if_positive, result_if_negative))


def tanh_fixed_point(a: IntLike, integer_bits: int) -> np.ndarray:
    """gemmlowp tanh(FixedPoint<int32, integer_bits>) -> Q0.31."""
    a = _i64(a)
    negative = a < 0
    n = np.where(negative, a, wrap_int32(-a))
    # neg_tanh_on_negative_values: ExactMulByPot<1> keeps the raw value, one more integer bit.
    t = one_minus_x_over_one_plus_x_for_x_in_0_1(exp_on_negative_values(n, integer_bits + 1))
    return np.where(a == 0, 0, np.where(negative, wrap_int32(-t), t))


def get_reciprocal(x: IntLike, x_integer_digits: int) -> tuple[np.ndarray, np.ndarray]:
    """TFLite GetReciprocal: (Q0.31 value of 1/(x scaled into [1, 2)), num_bits_over_unit)."""
    x = _i64(x)
    headroom_plus_one = _clz32(x)
    num_bits_over_unit = x_integer_digits - headroom_plus_one
    shifted = ((x & 0xFFFFFFFF) << headroom_plus_one) & 0xFFFFFFFF
    shifted_sum_minus_one = wrap_int32(shifted - (1 << 31))
    return one_over_one_plus_x_for_x_in_0_1(shifted_sum_minus_one), num_bits_over_unit


# ---- per-op element-wise integer kernels shared by the emulator ------------------------------


def softmax_int8(x: np.ndarray, params: SoftmaxParams) -> np.ndarray:
    """reference_ops::Softmax int8 -> int8 over the last axis (the non-LUT reference path)."""
    x = np.asarray(x, dtype=np.int64)
    diff = x - x.max(axis=-1, keepdims=True)
    valid = diff >= params.diff_min
    diff_rescaled = _i64(
        multiply_by_quantized_multiplier_greater_than_one(diff, params.input_multiplier, params.input_left_shift)
    )
    exps = exp_on_negative_values(diff_rescaled, SOFTMAX_SCALED_DIFF_INTEGER_BITS)
    exps_accum = rescale(exps, 0, SOFTMAX_ACCUMULATION_INTEGER_BITS)
    sum_of_exps = wrap_int32(np.where(valid, exps_accum, 0).sum(axis=-1, keepdims=True))
    shifted_scale, num_bits_over_unit = get_reciprocal(sum_of_exps, SOFTMAX_ACCUMULATION_INTEGER_BITS)
    exponent = num_bits_over_unit + 31 - 8
    if np.any(exponent < 0) or np.any(exponent > 31):
        raise UnsupportedError("SOFTMAX reciprocal exponent out of range (TFLite would abort)")
    unsat = _i64(rounding_divide_by_pot(_mul(shifted_scale, exps), exponent))
    out = np.clip(unsat - 128, -128, 127)
    return np.where(valid, out, -128).astype(np.int8)


def logistic_int8_fixed_point(x: np.ndarray, params: LogisticParams) -> np.ndarray:
    """reference_integer_ops::Logistic int8 (TFLite Micro): output scale 1/256, zero point -128."""
    inp = np.asarray(x, dtype=np.int64) - params.input_zero_point
    in_q4 = _i64(multiply_by_quantized_multiplier(inp, params.input_multiplier, params.input_left_shift))
    out_q0 = logistic_fixed_point(in_q4, LOGISTIC_INPUT_INTEGER_BITS)
    out = np.clip(_i64(rounding_divide_by_pot(out_q0, 31 - 8)) - 128, -128, 127)
    out = np.where(inp <= -params.input_range_radius, -128, np.where(inp >= params.input_range_radius, 127, out))
    return out.astype(np.int8)


_expf_fn = None


def _expf(values: np.ndarray) -> np.ndarray:
    """C expf from the system libm (the function tflite-runtime calls), element by element."""
    global _expf_fn
    if _expf_fn is None:
        libm = ctypes.CDLL(ctypes.util.find_library("m") or "libm.so.6")
        fn = libm.expf
        fn.restype = ctypes.c_float
        fn.argtypes = [ctypes.c_float]
        _expf_fn = fn
    flat = np.asarray(values, dtype=np.float32).ravel()
    return np.array([_expf_fn(float(v)) for v in flat], dtype=np.float32).reshape(np.shape(values))


def logistic_lut_tflite(
    input_scale: float, input_zp: int, output_scale: float, output_zp: int, dtype: DType = DType.INT8
) -> np.ndarray:
    """The 256-entry LOGISTIC table of TFLite's kReference int8/uint8 kernel (PopulateLookupTable).

    For each q: d = float(scale) * float(q - zp); y = 1.0f / (1.0f + expf(-d));
    out = clamp(int(roundf(y * (1.0f / out_scale)) + out_zp)), all in float32, expf from libm.
    Returned indexed by q - qmin (entry 0 is q = -128 for int8).
    """
    qmin, qmax = dtype_range(dtype)
    q = np.arange(qmin, qmax + 1, dtype=np.int64)
    dequantized = np.float32(input_scale) * (q - int(input_zp)).astype(np.float32)
    transformed = np.float32(1.0) / (np.float32(1.0) + _expf(-dequantized))
    inverse_scale = np.float32(1.0) / np.float32(output_scale)
    rescaled = round_half_away_from_zero(transformed * inverse_scale).astype(np.float32)
    quantized = (rescaled + np.float32(output_zp)).astype(np.float64)
    as_int = np.trunc(quantized).astype(np.int64)
    return np.clip(as_int, qmin, qmax).astype(dtype.numpy)


_tanhf_fn = None


def tanh_lut_tflite(input_scale: float, input_zp: int, output_scale: float, output_zp: int) -> np.ndarray:
    """The 256-entry int8 TANH table of TFLite's kReference kernel (PopulateLookupTable, as for
    LOGISTIC): y = tanhf(float(scale) * float(q - zp)) from the system libm, then
    clamp(int(roundf(y / out_scale) + out_zp)), in float32. Indexed by q + 128."""
    global _tanhf_fn
    if _tanhf_fn is None:
        libm = ctypes.CDLL(ctypes.util.find_library("m") or "libm.so.6")
        _tanhf_fn = libm.tanhf
        _tanhf_fn.restype = ctypes.c_float
        _tanhf_fn.argtypes = [ctypes.c_float]
    q = np.arange(-128, 128, dtype=np.int64)
    dequantized = np.float32(input_scale) * (q - int(input_zp)).astype(np.float32)
    transformed = np.array([_tanhf_fn(float(v)) for v in dequantized], dtype=np.float32)
    inverse_scale = np.float32(1.0) / np.float32(output_scale)
    rescaled = round_half_away_from_zero(transformed * inverse_scale).astype(np.float32)
    as_int = np.trunc((rescaled + np.float32(output_zp)).astype(np.float64)).astype(np.int64)
    return np.clip(as_int, -128, 127).astype(np.int8)


def _srdhm16(a: int, b: int) -> int:
    """gemmlowp SaturatingRoundingDoublingHighMul on int16 (nudge, then C division by 2^15)."""
    if a == b == -32768:
        return 32767
    ab = a * b
    nudge = (1 << 14) if ab >= 0 else 1 - (1 << 14)
    return _cdiv(ab + nudge, 1 << 15)


def _cdiv(n: int, d: int) -> int:
    """C integer division (truncation toward zero), d > 0."""
    return n // d if n >= 0 else -((-n) // d)


def _rdbp16(x: int, exponent: int) -> int:
    """gemmlowp RoundingDivideByPOT on an int16 value (half away from zero)."""
    mask = (1 << exponent) - 1
    threshold = (mask >> 1) + (1 if x < 0 else 0)
    return (x >> exponent) + (1 if (x & mask) > threshold else 0)


def _sat16(v: int) -> int:
    return max(-32768, min(32767, v))


def _int16_multiplier(real: float) -> tuple[int, int]:
    """QuantizeMultiplier, then DownScaleInt32ToInt16Multiplier ((m + 2^15) >> 16, 32767 at the top)."""
    m, e = quantize_multiplier(real)
    return (32767 if m >= INT32_MAX - (1 << 15) else (m + (1 << 15)) >> 16), e


def hard_swish_int8(input_scale: float, input_zp: int, output_scale: float, output_zp: int) -> np.ndarray:
    """The 256-entry int8 HARD_SWISH table of TFLite's reference kernel (reference_ops::HardSwish
    with HardSwishPrepare's parameters, float32 scales), evaluated at generation time. Indexed by q + 128."""
    f = np.float32
    hires = f(f(1.0) / f(128.0)) * f(input_scale)
    out_m, out_e = _int16_multiplier(float(f(hires / f(output_scale))))
    if out_e > 0:
        raise UnsupportedError(f"HARD_SWISH output multiplier exponent {out_e} > 0, which TFLite rejects")
    rel_m, rel_e = _int16_multiplier(float(f(hires / f(f(3.0) / f(32768.0)))))
    table = []
    for q in range(-128, 128):
        hi = (q - int(input_zp)) * 128
        pre_out = _srdhm16(hi, out_m)
        r = hi
        if rel_e > 0:
            r = _sat16(r * (1 << (rel_e - 1)))
        r = _srdhm16(r, rel_m)
        if rel_e > 0:
            r = _sat16(r * 2)
        if rel_e < 0:
            r = _rdbp16(r, -rel_e)
        r = (r + (1 << 15)) >> 1
        # SaturatingDoublingHighMul: the product doubled, truncated toward zero
        p = 32767 if r == pre_out == -32768 else _cdiv(r * pre_out, 1 << 15)
        out = _rdbp16(p, -out_e) + int(output_zp)
        table.append(max(-128, min(127, out)))
    return np.asarray(table, np.int8)


# ---- RESIZE coordinates (computed at generation time; the kernels only gather) ------------


def nearest_neighbor_indices(out_size: int, in_size: int, align_corners: bool, half_pixel_centers: bool) -> np.ndarray:
    """Input index of every output index, as TFLite's GetNearestNeighbor (float32 arithmetic:
    scale = in/out, or (in-1)/(out-1) with align_corners; floor, or round half away from zero
    with align_corners; clamped to [0, in-1] with half-pixel centres, to in-1 otherwise)."""
    f = np.float32
    if align_corners and out_size > 1:
        scale = f(in_size - 1) / f(out_size - 1)
    else:
        scale = f(in_size) / f(out_size)
    offset = f(0.5) if half_pixel_centers else f(0.0)
    pos = (np.arange(out_size).astype(np.float32) + offset) * scale
    pos = pos.astype(np.float32)
    if align_corners:
        idx = np.where(pos >= 0, np.floor(pos + f(0.5)), np.ceil(pos - f(0.5)))  # std::round
    else:
        idx = np.floor(pos)
    idx = np.minimum(idx.astype(np.int64), in_size - 1)
    if half_pixel_centers:
        idx = np.maximum(idx, 0)
    return idx


def bilinear_coordinates(out_size: int, in_size: int, align_corners: bool, half_pixel_centers: bool) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """(lower, upper, frac) per output index, as TFLite's ResizeBilinearInteger (10-bit fixed
    point): scale_10 = round-half-up((1 << 10) * in / out) (in-1, out-1 with align_corners);
    scaled = i * scale_10 (+ scale_10 / 2 - 512 with half-pixel centres); lower =
    max(scaled / 1024, 0), upper = min(ceil(scaled / 1024), in - 1), frac = scaled - 1024 * lower
    (C division; `frac` may be negative near the top edge with half-pixel centres)."""

    def cdiv(a, b):
        return np.where(a >= 0, a // b, -((-a) // b))

    if align_corners and out_size > 1:
        scale_10 = ((1 << 10) * (in_size - 1) + (out_size - 1) // 2) // (out_size - 1)
    else:
        scale_10 = ((1 << 10) * in_size + out_size // 2) // out_size
    i = np.arange(out_size, dtype=np.int64)
    scaled = i * scale_10 + (scale_10 // 2 - (1 << 9) if half_pixel_centers else 0)
    lower = np.maximum(cdiv(scaled, 1 << 10), 0)
    upper = np.minimum(cdiv(scaled + (1 << 10) - 1, 1 << 10), in_size - 1)
    return lower, upper, scaled - (1 << 10) * lower


# ---- element-wise activations as their own operators (int8 -> int8, computed per input value) ----


def relu_x_int8(x: np.ndarray, in_scale: float, in_zp: int, out_scale: float, out_zp: int,
                act_min: float, act_max: float) -> np.ndarray:
    """TFLite's quantized RELU / RELU6 / RELU_N1_TO_1 (ReluPrepare + QuantizedReluX): the
    multiplier from float(in_scale / out_scale) (a float32 division), the bounds
    zp_out + roundf(bound / out_scale) limited to int8 (no upper bound for RELU):
    out = clamp(zp_out + MBQM(x - zp_in, m, s), lo, hi)."""
    f = np.float32
    mult, shift = quantize_multiplier(float(f(in_scale) / f(out_scale)))
    lo = max(-128, out_zp + int(round_half_away_from_zero(f(act_min) / f(out_scale))))
    hi = 127 if math.isinf(act_max) else min(127, out_zp + int(round_half_away_from_zero(f(act_max) / f(out_scale))))
    v = np.asarray(x, dtype=np.int64) - in_zp
    out = out_zp + np.asarray(multiply_by_quantized_multiplier(v, mult, shift), dtype=np.int64)
    return np.minimum(np.maximum(out, lo), hi).astype(np.int8)


def leaky_relu_multipliers(in_scale: float, out_scale: float, alpha: float) -> tuple[int, int, int, int]:
    """TFLite's QuantizeLeakyRelu (int8 and int16): identity multiplier float(in/out), alpha
    multiplier float(in * alpha / out), float32 arithmetic, each through QuantizeMultiplier."""
    f = np.float32
    m_id, s_id = quantize_multiplier(float(f(in_scale) / f(out_scale)))
    m_a, s_a = quantize_multiplier(float(f(f(in_scale) * f(alpha)) / f(out_scale)))
    return m_id, s_id, m_a, s_a


def leaky_relu_int8(x: np.ndarray, in_scale: float, in_zp: int, out_scale: float, out_zp: int, alpha: float) -> np.ndarray:
    """TFLite's QuantizeLeakyRelu (leaky_relu_multipliers); a non-negative x - zp_in takes the
    identity multiplier, a negative one alpha's; clamped to int8."""
    m_id, s_id, m_a, s_a = leaky_relu_multipliers(in_scale, out_scale, alpha)
    v = np.asarray(x, dtype=np.int64) - in_zp
    pos = np.asarray(multiply_by_quantized_multiplier(v, m_id, s_id), dtype=np.int64)
    neg = np.asarray(multiply_by_quantized_multiplier(v, m_a, s_a), dtype=np.int64)
    return np.clip(out_zp + np.where(v >= 0, pos, neg), -128, 127).astype(np.int8)
