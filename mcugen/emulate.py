"""Bit-exact numpy emulation of an mcugen graph, independent of the C path, for cross-checking.

Every operator is computed from the IR's tensors (shapes, scales, zero points, constant data)
with the integer arithmetic of :mod:`mcugen.quant`, exactly as TFLite's reference kernels do.
Parameters are derived here independently of the lowering, so the emulator and the generated C
cross-check each other.

Accumulations are vectorised: convolutions gather one strided view per filter tap and multiply
in float64 (exact, because every partial sum of int8 x int8 products stays far below 2**53),
then all requantisation happens on int64 arrays holding int32 values.

The reference kernels of tflite-runtime 2.14 and TFLite Micro agree on every supported op
except int8 LOGISTIC: tflite-runtime uses a float lookup table (``expf``), TFLite Micro the
gemmlowp fixed-point logistic; they differ by one LSB for a few input scales. ``flavor``
selects which one to reproduce.
"""

from __future__ import annotations

import enum
from dataclasses import dataclass, field
from typing import Callable, Optional

import numpy as np

from mcugen import quant
from mcugen.errors import McugenError, ModelError, UnsupportedError
from mcugen.ir import (
    Activation,
    Conv2DAttrs,
    DepthwiseConv2DAttrs,
    DType,
    ElementwiseAttrs,
    FullyConnectedAttrs,
    Graph,
    MeanAttrs,
    Operator,
    OpType,
    PadAttrs,
    Padding,
    Pool2DAttrs,
    SoftmaxAttrs,
    Tensor,
    TransposeAttrs,
)


class Flavor(enum.Enum):
    """Which reference to reproduce where tflite-runtime and TFLite Micro disagree (LOGISTIC)."""

    TFLM = "tflm"
    TFLITE = "tflite"


@dataclass
class EmulationResult:
    """Outputs in graph-output order; with keep_all, every activation tensor by tensor index."""

    outputs: list[np.ndarray]
    tensors: dict[int, np.ndarray] = field(default_factory=dict)


@dataclass(frozen=True)
class _Ctx:
    graph: Graph
    op: Operator
    flavor: Flavor

    def fail(self, message: str) -> UnsupportedError:
        return UnsupportedError(f"{self.op.describe()}: {message}")


# ---- small helpers --------------------------------------------------------------------------


def _quant_of(ctx: _Ctx, t: Tensor) -> tuple[float, int]:
    if t.quant is None:
        raise ctx.fail(f"tensor {t.index} ({t.name}) has no quantization parameters")
    return t.quant.s, t.quant.zp


def _require_dtype(ctx: _Ctx, t: Tensor, *allowed: DType) -> None:
    if t.dtype not in allowed:
        names = "/".join(d.value for d in allowed)
        raise ctx.fail(f"tensor {t.index} ({t.name}) is {t.dtype.value}; supported: {names}")


def _finish(ctx: _Ctx, acc: np.ndarray, out: Tensor, activation: Activation) -> np.ndarray:
    """Clamp to the fused activation range of `out` and cast to its dtype."""
    scale, zp = _quant_of(ctx, out)
    lo, hi = quant.activation_range(activation, scale, zp, out.dtype)
    return np.clip(acc, lo, hi).astype(out.dtype.numpy).reshape(out.shape)


def padding_before(in_size: int, filter_size: int, stride: int, dilation: int, out_size: int) -> int:
    """ComputePaddingWithOffset: max((out-1)*stride + effective_filter - in, 0) // 2 (top/left)."""
    effective = (filter_size - 1) * dilation + 1
    total = (out_size - 1) * stride + effective - in_size
    return max(total, 0) // 2


def output_size(padding: Padding, in_size: int, filter_size: int, stride: int, dilation: int) -> int:
    """ComputeOutSize for SAME / VALID."""
    effective = (filter_size - 1) * dilation + 1
    if padding is Padding.SAME:
        return (in_size + stride - 1) // stride
    return (in_size + stride - effective) // stride


def _check_spatial(ctx: _Ctx, padding: Padding, in_hw, filt_hw, strides, dilations, out_hw) -> None:
    for axis, (i, f, s, d, o) in enumerate(zip(in_hw, filt_hw, strides, dilations, out_hw)):
        expected = output_size(padding, i, f, s, d)
        if expected != o:
            raise ModelError(
                f"{ctx.op.describe()}: output {'height' if axis == 0 else 'width'} is {o}, "
                f"but {padding.value} padding gives {expected}"
            )


def _taps(
    x: np.ndarray,
    fill: float,
    filt_hw: tuple[int, int],
    strides: tuple[int, int],
    dilations: tuple[int, int],
    out_hw: tuple[int, int],
):
    """Yield (kh, kw, view) for every filter tap: `view` is x (NHWC) padded with `fill` as
    TFLite does (top/left = padding_before), sampled at the output positions, shape (N, OH, OW, C)."""
    n, h, w, c = x.shape
    (kh_n, kw_n), (sh, sw), (dh, dw), (oh, ow) = filt_hw, strides, dilations, out_hw
    top = padding_before(h, kh_n, sh, dh, oh)
    left = padding_before(w, kw_n, sw, dw, ow)
    need_h = (oh - 1) * sh + (kh_n - 1) * dh + 1
    need_w = (ow - 1) * sw + (kw_n - 1) * dw + 1
    bottom = max(0, need_h - h - top)
    right = max(0, need_w - w - left)
    if top or bottom or left or right:
        x = np.pad(x, ((0, 0), (top, bottom), (left, right), (0, 0)), constant_values=fill)
    for kh in range(kh_n):
        for kw in range(kw_n):
            y0, x0 = kh * dh, kw * dw
            yield kh, kw, x[:, y0 : y0 + (oh - 1) * sh + 1 : sh, x0 : x0 + (ow - 1) * sw + 1 : sw, :]


def _bias(ctx: _Ctx, acc: np.ndarray, bias: Optional[Tensor], channels: int) -> np.ndarray:
    if bias is None:
        return acc
    if bias.data is None:
        raise ctx.fail("bias must be a constant tensor")
    _require_dtype(ctx, bias, DType.INT32)
    b = np.asarray(bias.data, dtype=np.int64).reshape(-1)
    if b.size != channels:
        raise ModelError(f"{ctx.op.describe()}: bias has {b.size} values for {channels} output channels")
    return quant.wrap_int32(acc + b)


def _channel_multipliers(
    ctx: _Ctx, input_scale: float, filt: Tensor, output_scale: float, channels: int
) -> tuple[np.ndarray, np.ndarray]:
    if filt.quant is None:
        raise ctx.fail("weights have no quantization parameters")
    scales = np.asarray(filt.quant.scale, dtype=np.float32).reshape(-1)
    if scales.size == 1:
        scales = np.repeat(scales, channels)
    if scales.size != channels:
        raise ModelError(f"{ctx.op.describe()}: {scales.size} weight scales for {channels} output channels")
    mult, shift = quant.conv_per_channel_multipliers(input_scale, scales, output_scale)
    return mult.astype(np.int64), shift.astype(np.int64)


def _const(ctx: _Ctx, t: Optional[Tensor], what: str) -> np.ndarray:
    if t is None or t.data is None:
        raise ctx.fail(f"{what} must be a constant tensor")
    return np.asarray(t.data)


# ---- operators --------------------------------------------------------------------------------


def _conv2d(ctx: _Ctx, vals: list[Optional[np.ndarray]]) -> np.ndarray:
    x_t, w_t, b_t = (ctx.graph.op_inputs(ctx.op) + [None])[:3]
    out = ctx.graph.op_outputs(ctx.op)[0]
    a: Conv2DAttrs = ctx.op.attrs
    for t in (x_t, out):
        _require_dtype(ctx, t, DType.INT8)
    _require_dtype(ctx, w_t, DType.INT8)
    w = _const(ctx, w_t, "CONV_2D weights").astype(np.float64)
    oc, kh, kw, ic = w.shape
    x = vals[0]
    n, h, wd, c = x.shape
    if c != ic:
        raise ModelError(f"{ctx.op.describe()}: input has {c} channels, weights expect {ic}")
    in_s, in_zp = _quant_of(ctx, x_t)
    out_s, _ = _quant_of(ctx, out)
    oh, ow = out.shape[1], out.shape[2]
    strides, dil = (a.stride_h, a.stride_w), (a.dilation_h, a.dilation_w)
    _check_spatial(ctx, a.padding, (h, wd), (kh, kw), strides, dil, (oh, ow))
    xs = x.astype(np.float64) - in_zp  # padded positions hold 0 = skipped by the reference
    if kh == 1 and kw == 1 and strides == (1, 1) and oh == h and ow == wd:
        cols = xs
    else:
        cols = np.concatenate([v for _, _, v in _taps(xs, 0.0, (kh, kw), strides, dil, (oh, ow))], axis=-1)
    acc = np.rint(cols.reshape(-1, kh * kw * ic) @ w.reshape(oc, kh * kw * ic).T).astype(np.int64)
    acc = _bias(ctx, acc, b_t, oc)
    mult, shift = _channel_multipliers(ctx, in_s, w_t, out_s, oc)
    acc = np.asarray(quant.multiply_by_quantized_multiplier(acc, mult, shift)) + out.quant.zp
    return _finish(ctx, acc, out, a.activation)


def _depthwise_conv2d(ctx: _Ctx, vals: list[Optional[np.ndarray]]) -> np.ndarray:
    x_t, w_t, b_t = (ctx.graph.op_inputs(ctx.op) + [None])[:3]
    out = ctx.graph.op_outputs(ctx.op)[0]
    a: DepthwiseConv2DAttrs = ctx.op.attrs
    for t in (x_t, out, w_t):
        _require_dtype(ctx, t, DType.INT8)
    w = _const(ctx, w_t, "DEPTHWISE_CONV_2D weights").astype(np.int64)
    _, kh, kw, oc = w.shape
    x = vals[0]
    n, h, wd, c = x.shape
    if oc % c != 0:
        raise ModelError(f"{ctx.op.describe()}: {oc} output channels is not a multiple of {c} input channels")
    multiplier = oc // c
    in_s, in_zp = _quant_of(ctx, x_t)
    out_s, _ = _quant_of(ctx, out)
    oh, ow = out.shape[1], out.shape[2]
    strides, dil = (a.stride_h, a.stride_w), (a.dilation_h, a.dilation_w)
    _check_spatial(ctx, a.padding, (h, wd), (kh, kw), strides, dil, (oh, ow))
    xs = x.astype(np.int64) - in_zp
    if multiplier > 1:
        xs = np.repeat(xs, multiplier, axis=-1)  # output channel = in_channel * multiplier + m
    acc = np.zeros((n, oh, ow, oc), dtype=np.int64)
    for i, j, view in _taps(xs, 0, (kh, kw), strides, dil, (oh, ow)):
        acc += view * w[0, i, j, :]
    acc = _bias(ctx, acc, b_t, oc)
    mult, shift = _channel_multipliers(ctx, in_s, w_t, out_s, oc)
    acc = np.asarray(quant.multiply_by_quantized_multiplier(acc, mult, shift)) + out.quant.zp
    return _finish(ctx, acc, out, a.activation)


def _fully_connected(ctx: _Ctx, vals: list[Optional[np.ndarray]]) -> np.ndarray:
    x_t, w_t, b_t = (ctx.graph.op_inputs(ctx.op) + [None])[:3]
    out = ctx.graph.op_outputs(ctx.op)[0]
    a: FullyConnectedAttrs = ctx.op.attrs
    for t in (x_t, out, w_t):
        _require_dtype(ctx, t, DType.INT8)
    w = _const(ctx, w_t, "FULLY_CONNECTED weights").astype(np.float64)
    if w.ndim != 2:
        raise ModelError(f"{ctx.op.describe()}: weights must be 2-D, got shape {w.shape}")
    oc, depth = w.shape
    x = vals[0]
    if x.size % depth != 0:
        raise ModelError(f"{ctx.op.describe()}: input of {x.size} values is not a multiple of depth {depth}")
    in_s, in_zp = _quant_of(ctx, x_t)
    out_s, _ = _quant_of(ctx, out)
    w_zp = int(w_t.quant.zero_point.reshape(-1)[0]) if w_t.quant is not None else 0
    xs = x.astype(np.float64).reshape(-1, depth) - in_zp
    acc = np.rint(xs @ (w - w_zp).T).astype(np.int64)
    acc = _bias(ctx, acc, b_t, oc)
    if w_t.quant is not None and w_t.quant.per_channel:
        mult, shift = _channel_multipliers(ctx, in_s, w_t, out_s, oc)
    else:
        m, s = quant.fc_multiplier(in_s, w_t.quant.s, out_s)
        mult, shift = np.int64(m), np.int64(s)
    acc = np.asarray(quant.multiply_by_quantized_multiplier(acc, mult, shift)) + out.quant.zp
    if acc.size != out.size:
        raise ModelError(f"{ctx.op.describe()}: computes {acc.size} values for an output of shape {out.shape}")
    return _finish(ctx, acc, out, a.activation)


def _broadcast_pair(ctx: _Ctx, x1: np.ndarray, x2: np.ndarray, out: Tensor) -> tuple[np.ndarray, np.ndarray]:
    try:
        shape = np.broadcast_shapes(x1.shape, x2.shape)
    except ValueError as exc:
        raise ModelError(f"{ctx.op.describe()}: shapes {x1.shape} and {x2.shape} do not broadcast") from exc
    if int(np.prod(shape)) != out.size:
        raise ModelError(f"{ctx.op.describe()}: broadcast shape {shape} does not match output {out.shape}")
    return x1.astype(np.int64), x2.astype(np.int64)


def _add(ctx: _Ctx, vals: list[Optional[np.ndarray]]) -> np.ndarray:
    t1, t2 = ctx.graph.op_inputs(ctx.op)[:2]
    out = ctx.graph.op_outputs(ctx.op)[0]
    for t in (t1, t2, out):
        _require_dtype(ctx, t, DType.INT8)
    a: ElementwiseAttrs = ctx.op.attrs
    (s1, z1), (s2, z2), (so, zo) = _quant_of(ctx, t1), _quant_of(ctx, t2), _quant_of(ctx, out)
    p = quant.add_params(s1, s2, so)
    x1, x2 = _broadcast_pair(ctx, vals[0], vals[1], out)
    return _finish(ctx, quant.add_int8(x1, x2, -z1, -z2, p) + zo, out, a.activation)


def _sub_or_squared_difference(ctx: _Ctx, vals: list[Optional[np.ndarray]]) -> np.ndarray:
    """SUB (ADD's arithmetic, the scaled second operand subtracted) and SQUARED_DIFFERENCE (left
    shift 7, the difference squared in int32, then the output multiplier)."""
    t1, t2 = ctx.graph.op_inputs(ctx.op)[:2]
    out = ctx.graph.op_outputs(ctx.op)[0]
    for t in (t1, t2, out):
        _require_dtype(ctx, t, DType.INT8)
    (s1, z1), (s2, z2), (so, zo) = _quant_of(ctx, t1), _quant_of(ctx, t2), _quant_of(ctx, out)
    squared = ctx.op.op is OpType.SQUARED_DIFFERENCE
    p = quant.squared_difference_params(s1, s2, so) if squared else quant.add_params(s1, s2, so)
    x1, x2 = _broadcast_pair(ctx, vals[0], vals[1], out)
    scaled1 = quant.multiply_by_quantized_multiplier_smaller_than_one_exp(
        quant.wrap_int32((x1 - z1) << p.left_shift), p.input1_multiplier, p.input1_shift)
    scaled2 = quant.multiply_by_quantized_multiplier_smaller_than_one_exp(
        quant.wrap_int32((x2 - z2) << p.left_shift), p.input2_multiplier, p.input2_shift)
    raw = quant.wrap_int32(np.asarray(scaled1) - np.asarray(scaled2))
    if squared:
        raw = quant.wrap_int32(raw * raw)
    acc = np.asarray(quant.multiply_by_quantized_multiplier_smaller_than_one_exp(raw, p.output_multiplier, p.output_shift))
    return _finish(ctx, acc + zo, out, ctx.op.attrs.activation)


def _prelu(ctx: _Ctx, vals: list[Optional[np.ndarray]]) -> np.ndarray:
    """PRELU int8: x - zp rescaled by s_in/s_out where >= 0, times (alpha - zp_alpha) and rescaled by
    s_in*s_alpha/s_out where < 0 (MultiplyByQuantizedMultiplier), plus the output zero point."""
    t1, t2 = ctx.graph.op_inputs(ctx.op)[:2]
    out = ctx.graph.op_outputs(ctx.op)[0]
    for t in (t1, t2, out):
        _require_dtype(ctx, t, DType.INT8)
    (s1, z1), (s2, z2), (so, zo) = _quant_of(ctx, t1), _quant_of(ctx, t2), _quant_of(ctx, out)
    p = quant.prelu_params(s1, s2, so)
    x, alpha = _broadcast_pair(ctx, vals[0], vals[1], out)
    xs, alpha = np.broadcast_arrays(x - z1, alpha - z2)
    pos = np.asarray(quant.multiply_by_quantized_multiplier(xs, p.input1_multiplier, p.input1_shift))
    neg = np.asarray(quant.multiply_by_quantized_multiplier(quant.wrap_int32(xs * alpha), p.input2_multiplier, p.input2_shift))
    return _finish(ctx, np.where(xs >= 0, pos, neg) + zo, out, Activation.NONE)


def _minimum_maximum(ctx: _Ctx, vals: list[Optional[np.ndarray]]) -> np.ndarray:
    """MINIMUM/MAXIMUM int8: the smaller/larger raw value (one shared quantization, no rescale)."""
    t1, t2 = ctx.graph.op_inputs(ctx.op)[:2]
    out = ctx.graph.op_outputs(ctx.op)[0]
    for t in (t1, t2, out):
        _require_dtype(ctx, t, DType.INT8)
    x1, x2 = _broadcast_pair(ctx, vals[0], vals[1], out)
    fn = np.minimum if ctx.op.op is OpType.MINIMUM else np.maximum
    return fn(x1, x2).reshape(out.shape).astype(np.int8)


def _slice(ctx: _Ctx, vals: list[Optional[np.ndarray]]) -> np.ndarray:
    """SLICE / STRIDED_SLICE on int8: numpy fancy indexing with the resolved per-axis indices."""
    from mcugen.supported_more import slice_taken

    x_t = ctx.graph.op_inputs(ctx.op)[0]
    out = ctx.graph.op_outputs(ctx.op)[0]
    for t in (x_t, out):
        _require_dtype(ctx, t, DType.INT8)
    index = slice_taken(ctx.graph, ctx.op)
    if index is None:
        raise ctx.fail("has begin/end/strides that cannot be resolved")
    return np.asarray(vals[0])[np.ix_(*index)].reshape(out.shape).astype(np.int8)


def _mul(ctx: _Ctx, vals: list[Optional[np.ndarray]]) -> np.ndarray:
    t1, t2 = ctx.graph.op_inputs(ctx.op)[:2]
    out = ctx.graph.op_outputs(ctx.op)[0]
    for t in (t1, t2, out):
        _require_dtype(ctx, t, DType.INT8)
    a: ElementwiseAttrs = ctx.op.attrs
    (s1, z1), (s2, z2), (so, zo) = _quant_of(ctx, t1), _quant_of(ctx, t2), _quant_of(ctx, out)
    mult, shift = quant.mul_params(s1, s2, so)
    x1, x2 = _broadcast_pair(ctx, vals[0], vals[1], out)
    product = quant.wrap_int32((x1 - z1) * (x2 - z2))
    acc = np.asarray(quant.multiply_by_quantized_multiplier(product, mult, shift))
    return _finish(ctx, acc + zo, out, a.activation)


def _mean(ctx: _Ctx, vals: list[Optional[np.ndarray]]) -> np.ndarray:
    """MEAN (QuantizedMeanOrSum) and REDUCE_MAX over the resolved axes."""
    x_t = ctx.graph.op_inputs(ctx.op)[0]
    out = ctx.graph.op_outputs(ctx.op)[0]
    for t in (x_t, out):
        _require_dtype(ctx, t, DType.INT8)
    a: MeanAttrs = ctx.op.attrs
    x = vals[0].astype(np.int64)
    axes: list[int] = []
    for axis in a.axes:
        resolved = axis + x.ndim if axis < 0 else axis
        if not 0 <= resolved < x.ndim:
            raise ModelError(f"{ctx.op.describe()}: axis {axis} is out of range for rank {x.ndim}")
        if resolved not in axes:
            axes.append(resolved)
    if ctx.op.op is OpType.REDUCE_MAX:  # the largest raw value (one shared quantization, no rescale)
        return (x.max(axis=tuple(axes)) if axes else x).reshape(out.shape).astype(np.int8)
    count = int(np.prod([x.shape[i] for i in axes])) if axes else 1
    (si, zi), (so, zo) = _quant_of(ctx, x_t), _quant_of(ctx, out)
    p = quant.mean_params(si, so, count, ctx.op.op is OpType.MEAN)  # SUM: without the 1/count
    total = x.sum(axis=tuple(axes)) if axes else x
    shifted = quant.wrap_int32(total - zi * count)
    acc = np.asarray(quant.multiply_by_quantized_multiplier(shifted, p.multiplier, p.shift)) + zo
    if acc.size != out.size:
        raise ModelError(f"{ctx.op.describe()}: reduces to {acc.size} values for an output of shape {out.shape}")
    return _finish(ctx, acc, out, Activation.NONE)


def _pool_setup(ctx: _Ctx, vals):
    x_t = ctx.graph.op_inputs(ctx.op)[0]
    out = ctx.graph.op_outputs(ctx.op)[0]
    for t in (x_t, out):
        _require_dtype(ctx, t, DType.INT8)
    a: Pool2DAttrs = ctx.op.attrs
    x = vals[0]
    if x.ndim != 4:
        raise ModelError(f"{ctx.op.describe()}: input must be 4-D NHWC, got shape {x.shape}")
    oh, ow = out.shape[1], out.shape[2]
    geometry = ((a.filter_h, a.filter_w), (a.stride_h, a.stride_w), (1, 1), (oh, ow))
    _check_spatial(ctx, a.padding, x.shape[1:3], *geometry[:3], (oh, ow))
    return x, out, a, geometry


def _average_pool2d(ctx: _Ctx, vals: list[Optional[np.ndarray]]) -> np.ndarray:
    x, out, a, geometry = _pool_setup(ctx, vals)
    xs = x.astype(np.int64)
    valid = np.ones(xs.shape[:3] + (1,), dtype=np.int64)
    acc = np.zeros((x.shape[0],) + geometry[3] + (x.shape[3],), dtype=np.int64)
    count = np.zeros(acc.shape[:3] + (1,), dtype=np.int64)
    for (_, _, view), (_, _, ones) in zip(_taps(xs, 0, *geometry), _taps(valid, 0, *geometry)):
        acc += view
        count += ones
    if np.any(count == 0):
        raise ctx.fail("a pooling window lies entirely in the padding")
    half = count // 2
    # Rounding division of the reference: ties away from zero, C division toward zero.
    rounded = np.where(acc > 0, (acc + half) // count, -((-acc + half) // count))
    return _finish(ctx, rounded, out, a.activation)


def _max_pool2d(ctx: _Ctx, vals: list[Optional[np.ndarray]]) -> np.ndarray:
    x, out, a, geometry = _pool_setup(ctx, vals)
    lowest = np.iinfo(np.int64).min
    result = None
    for _, _, view in _taps(x.astype(np.int64), lowest, *geometry):
        result = view.copy() if result is None else np.maximum(result, view)
    return _finish(ctx, result, out, a.activation)


def _softmax(ctx: _Ctx, vals: list[Optional[np.ndarray]]) -> np.ndarray:
    x_t = ctx.graph.op_inputs(ctx.op)[0]
    out = ctx.graph.op_outputs(ctx.op)[0]
    for t in (x_t, out):
        _require_dtype(ctx, t, DType.INT8)
    a: SoftmaxAttrs = ctx.op.attrs
    out_s, out_zp = _quant_of(ctx, out)
    if out_zp != -128 or abs(out_s - 1.0 / 256) > 0.001 / 256:
        raise ctx.fail(f"int8 output must have scale 1/256 and zero point -128, got {out_s}, {out_zp}")
    p = quant.softmax_params(_quant_of(ctx, x_t)[0], a.beta)
    return quant.softmax_int8(vals[0], p).reshape(out.shape)


def _logistic(ctx: _Ctx, vals: list[Optional[np.ndarray]]) -> np.ndarray:
    x_t = ctx.graph.op_inputs(ctx.op)[0]
    out = ctx.graph.op_outputs(ctx.op)[0]
    for t in (x_t, out):
        _require_dtype(ctx, t, DType.INT8)
    (in_s, in_zp), (out_s, out_zp) = _quant_of(ctx, x_t), _quant_of(ctx, out)
    if out_zp != -128 or out_s != np.float32(1.0 / 256):
        raise ctx.fail(f"int8 output must have scale 1/256 and zero point -128, got {out_s}, {out_zp}")
    if ctx.flavor is Flavor.TFLITE:
        table = quant.logistic_lut_tflite(in_s, in_zp, out_s, out_zp)
        return table[vals[0].astype(np.int64) + 128].reshape(out.shape)
    return quant.logistic_int8_fixed_point(vals[0], quant.logistic_params(in_s, in_zp)).reshape(out.shape)


def _reshape(ctx: _Ctx, vals: list[Optional[np.ndarray]]) -> np.ndarray:
    out = ctx.graph.op_outputs(ctx.op)[0]
    if vals[0].size != out.size:
        raise ModelError(f"{ctx.op.describe()}: cannot reshape {vals[0].shape} to {out.shape}")
    return vals[0].reshape(out.shape).astype(out.dtype.numpy)


def _pad(ctx: _Ctx, vals: list[Optional[np.ndarray]]) -> np.ndarray:
    ins = ctx.graph.op_inputs(ctx.op)
    out = ctx.graph.op_outputs(ctx.op)[0]
    _require_dtype(ctx, ins[0], DType.INT8)
    a: PadAttrs = ctx.op.attrs
    x = vals[0]
    if len(a.paddings) != x.ndim:
        raise ModelError(f"{ctx.op.describe()}: {len(a.paddings)} paddings for a rank-{x.ndim} input")
    if len(ins) > 2 and ins[2] is not None:
        pad_value = int(np.asarray(vals[2]).reshape(-1)[0])
    else:
        pad_value = _quant_of(ctx, out)[1]
    result = np.pad(x, [tuple(p) for p in a.paddings], constant_values=pad_value)
    if result.shape != tuple(out.shape):
        raise ModelError(f"{ctx.op.describe()}: padding gives {result.shape}, output is {out.shape}")
    return result.astype(out.dtype.numpy)


def _transpose(ctx: _Ctx, vals: list[Optional[np.ndarray]]) -> np.ndarray:
    out = ctx.graph.op_outputs(ctx.op)[0]
    a: TransposeAttrs = ctx.op.attrs
    result = np.transpose(vals[0], a.perm)
    if result.shape != tuple(out.shape):
        raise ModelError(f"{ctx.op.describe()}: transpose gives {result.shape}, output is {out.shape}")
    return np.ascontiguousarray(result)


def _quantize(ctx: _Ctx, vals: list[Optional[np.ndarray]]) -> np.ndarray:
    x_t = ctx.graph.op_inputs(ctx.op)[0]
    out = ctx.graph.op_outputs(ctx.op)[0]
    _require_dtype(ctx, out, DType.INT8, DType.UINT8)
    out_s, out_zp = _quant_of(ctx, out)
    if x_t.dtype is DType.FLOAT32:
        return quant.quantize_float(vals[0], out_s, out_zp, out.dtype).reshape(out.shape)
    _require_dtype(ctx, x_t, DType.INT8, DType.UINT8)
    in_s, in_zp = _quant_of(ctx, x_t)
    mult, shift = quant.requantize_params(in_s, out_s)
    acc = np.asarray(quant.multiply_by_quantized_multiplier(vals[0].astype(np.int64) - in_zp, mult, shift))
    return _finish(ctx, acc + out_zp, out, Activation.NONE)


def _dequantize(ctx: _Ctx, vals: list[Optional[np.ndarray]]) -> np.ndarray:
    x_t = ctx.graph.op_inputs(ctx.op)[0]
    out = ctx.graph.op_outputs(ctx.op)[0]
    _require_dtype(ctx, x_t, DType.INT8, DType.UINT8)
    _require_dtype(ctx, out, DType.FLOAT32)
    in_s, in_zp = _quant_of(ctx, x_t)
    return quant.dequantize(vals[0], in_s, in_zp).reshape(out.shape)


RELU_BOUNDS = {OpType.RELU: (0.0, float("inf")), OpType.RELU_N1_TO_1: (-1.0, 1.0), OpType.RELU6: (0.0, 6.0)}


def _activation_op(ctx: _Ctx, vals: list[Optional[np.ndarray]]) -> np.ndarray:
    """RELU, RELU_N1_TO_1, LEAKY_RELU, TANH on the whole tensor (quant.relu_x_int8 / leaky_relu_int8 / tanh_lut_tflite)."""
    x_t = ctx.graph.op_inputs(ctx.op)[0]
    out = ctx.graph.op_outputs(ctx.op)[0]
    for t in (x_t, out):
        _require_dtype(ctx, t, DType.INT8)
    (si, zi), (so, zo) = _quant_of(ctx, x_t), _quant_of(ctx, out)
    if ctx.op.op is OpType.LEAKY_RELU:
        return quant.leaky_relu_int8(vals[0], si, zi, so, zo, ctx.op.attrs.alpha)
    if ctx.op.op is OpType.TANH:  # tflite-runtime's float table, looked up per element
        return quant.tanh_lut_tflite(si, zi, so, zo)[np.asarray(vals[0]).astype(np.int64) + 128]
    if ctx.op.op is OpType.HARD_SWISH:  # the reference's int16 fixed point, evaluated per input value
        return quant.hard_swish_int8(si, zi, so, zo)[np.asarray(vals[0]).astype(np.int64) + 128]
    lo, hi = RELU_BOUNDS[ctx.op.op]
    return quant.relu_x_int8(vals[0], si, zi, so, zo, lo, hi)


def _depth_space(ctx: _Ctx, vals: list[Optional[np.ndarray]]) -> np.ndarray:
    """DEPTH_TO_SPACE: out[n, h*b+i, w*b+j, c] = in[n, h, w, (i*b+j)*C' + c]; SPACE_TO_DEPTH its inverse."""
    x = np.asarray(vals[0])
    out = ctx.graph.op_outputs(ctx.op)[0]
    b = ctx.op.attrs.block
    n, h, w, c = x.shape
    if ctx.op.op is OpType.DEPTH_TO_SPACE:
        y = np.empty((n, h * b, w * b, c // (b * b)), dtype=x.dtype)
        cc = c // (b * b)
        for i in range(b):
            for j in range(b):
                y[:, i::b, j::b, :] = x[:, :, :, (i * b + j) * cc:(i * b + j + 1) * cc]
    else:
        y = np.empty((n, h // b, w // b, c * b * b), dtype=x.dtype)
        for i in range(b):
            for j in range(b):
                y[:, :, :, (i * b + j) * c:(i * b + j + 1) * c] = x[:, i::b, j::b, :]
    if y.shape != tuple(out.shape):
        raise ModelError(f"{ctx.op.describe()}: gives {y.shape}, output is {out.shape}")
    return y


def _concatenation(ctx: _Ctx, vals: list[Optional[np.ndarray]]) -> np.ndarray:
    """CONCATENATION int8: the inputs side by side along the axis (same quantization, no rescale)."""
    out = ctx.graph.op_outputs(ctx.op)[0]
    for t in (*ctx.graph.op_inputs(ctx.op), out):
        _require_dtype(ctx, t, DType.INT8)
    return np.concatenate([np.asarray(v) for v in vals], axis=ctx.op.attrs.axis).astype(np.int8)


def _arg_min_max(ctx: _Ctx, vals: list[Optional[np.ndarray]]) -> np.ndarray:
    """ARG_MAX / ARG_MIN on int8: the first index of the extreme raw value along the axis."""
    x_t = ctx.graph.op_inputs(ctx.op)[0]
    out = ctx.graph.op_outputs(ctx.op)[0]
    _require_dtype(ctx, x_t, DType.INT8)
    _require_dtype(ctx, out, DType.INT32, DType.INT64)
    fn = np.argmax if ctx.op.op is OpType.ARG_MAX else np.argmin  # both return the first on ties
    return fn(np.asarray(vals[0]), axis=ctx.op.attrs.axis).astype(out.dtype.numpy).reshape(out.shape)


def _resize(ctx: _Ctx, vals: list[Optional[np.ndarray]]) -> np.ndarray:
    """RESIZE_NEAREST_NEIGHBOR (a gather) and RESIZE_BILINEAR (ResizeBilinearInteger: four
    10-bit weights per tap, products summed in int64, rounded half away from zero by 2^20)."""
    x_t = ctx.graph.op_inputs(ctx.op)[0]
    out = ctx.graph.op_outputs(ctx.op)[0]
    for t in (x_t, out):
        _require_dtype(ctx, t, DType.INT8)
    a = ctx.op.attrs
    x = vals[0].astype(np.int64)
    _, in_h, in_w, _ = x.shape
    _, out_h, out_w, _ = out.shape
    if ctx.op.op is OpType.RESIZE_NEAREST_NEIGHBOR:
        ys = quant.nearest_neighbor_indices(out_h, in_h, a.align_corners, a.half_pixel_centers)
        xs = quant.nearest_neighbor_indices(out_w, in_w, a.align_corners, a.half_pixel_centers)
        return x[:, ys][:, :, xs].astype(np.int8)
    y0, y1, fy = quant.bilinear_coordinates(out_h, in_h, a.align_corners, a.half_pixel_centers)
    x0, x1, fx = quant.bilinear_coordinates(out_w, in_w, a.align_corners, a.half_pixel_centers)
    one = 1 << 10
    wy0, wy1 = (one - fy)[None, :, None, None], fy[None, :, None, None]
    wx0, wx1 = (one - fx)[None, None, :, None], fx[None, None, :, None]
    total = (
        x[:, y0][:, :, x0] * wy0 * wx0 + x[:, y1][:, :, x0] * wy1 * wx0
        + x[:, y0][:, :, x1] * wy0 * wx1 + x[:, y1][:, :, x1] * wy1 * wx1
    )
    rounded = total + np.where(total > 0, 1 << 19, -(1 << 19))
    q = np.where(rounded >= 0, rounded // (1 << 20), -((-rounded) // (1 << 20)))
    return q.astype(np.int8)


def _transpose_conv(ctx: _Ctx, vals: list[Optional[np.ndarray]]) -> np.ndarray:
    """TFLite's scatter: every input pixel times every filter tap is added at output position
    input * stride - padding + tap (dropped outside the output), then bias and requantization."""
    from mcugen.supported_more import transpose_conv_pads

    ins = ctx.graph.op_inputs(ctx.op)
    w_t, x_t = ins[1], ins[2]
    b_t = ins[3] if len(ins) > 3 else None
    out = ctx.graph.op_outputs(ctx.op)[0]
    a = ctx.op.attrs
    for t in (x_t, out, w_t):
        _require_dtype(ctx, t, DType.INT8)
    w = _const(ctx, w_t, "TRANSPOSE_CONV weights").astype(np.int64)
    oc, kh, kw, ic = w.shape
    x = vals[2]
    n, h, wd, c = x.shape
    if c != ic:
        raise ModelError(f"{ctx.op.describe()}: input has {c} channels, weights expect {ic}")
    in_s, in_zp = _quant_of(ctx, x_t)
    out_s, _ = _quant_of(ctx, out)
    oh, ow = out.shape[1], out.shape[2]
    pad_t, pad_l = transpose_conv_pads(a, out.shape, w.shape)
    xs = x.astype(np.int64) - in_zp
    top, left = kh + pad_t, kw + pad_l  # a margin so that dropped positions land outside [0, oh) x [0, ow)
    acc = np.zeros((n, top + oh + kh + h * a.stride_h, left + ow + kw + wd * a.stride_w, oc), dtype=np.int64)
    for ky in range(kh):
        for kx in range(kw):
            contrib = xs @ w[:, ky, kx, :].T  # (n, h, wd, oc)
            y0, x0 = top - pad_t + ky, left - pad_l + kx
            acc[:, y0 : y0 + (h - 1) * a.stride_h + 1 : a.stride_h, x0 : x0 + (wd - 1) * a.stride_w + 1 : a.stride_w, :] += contrib
    acc = quant.wrap_int32(acc[:, top : top + oh, left : left + ow, :])
    acc = _bias(ctx, acc, b_t, oc)
    mult, shift = _channel_multipliers(ctx, in_s, w_t, out_s, oc)
    acc = np.asarray(quant.multiply_by_quantized_multiplier(acc, mult, shift)) + out.quant.zp
    return _finish(ctx, acc, out, a.activation)


_KERNELS: dict[OpType, Callable[[_Ctx, list[Optional[np.ndarray]]], np.ndarray]] = {
    OpType.CONV_2D: _conv2d,
    OpType.DEPTHWISE_CONV_2D: _depthwise_conv2d,
    OpType.FULLY_CONNECTED: _fully_connected,
    OpType.ADD: _add,
    OpType.MUL: _mul,
    OpType.SLICE: _slice,
    OpType.STRIDED_SLICE: _slice,
    OpType.SUB: _sub_or_squared_difference,
    OpType.SQUARED_DIFFERENCE: _sub_or_squared_difference,
    OpType.MINIMUM: _minimum_maximum,
    OpType.PRELU: _prelu,
    OpType.MAXIMUM: _minimum_maximum,
    OpType.MEAN: _mean,
    OpType.SUM: _mean,
    OpType.REDUCE_MAX: _mean,
    OpType.AVERAGE_POOL_2D: _average_pool2d,
    OpType.MAX_POOL_2D: _max_pool2d,
    OpType.SOFTMAX: _softmax,
    OpType.LOGISTIC: _logistic,
    OpType.RESHAPE: _reshape,
    OpType.PAD: _pad,
    OpType.TRANSPOSE: _transpose,
    OpType.QUANTIZE: _quantize,
    OpType.DEQUANTIZE: _dequantize,
    OpType.CONCATENATION: _concatenation,
    OpType.PADV2: _pad,
    OpType.DEPTH_TO_SPACE: _depth_space,
    OpType.SPACE_TO_DEPTH: _depth_space,
    OpType.RELU: _activation_op,
    OpType.RELU_N1_TO_1: _activation_op,
    OpType.RELU6: _activation_op,
    OpType.LEAKY_RELU: _activation_op,
    OpType.TANH: _activation_op,
    OpType.HARD_SWISH: _activation_op,
    OpType.RESIZE_NEAREST_NEIGHBOR: _resize,
    OpType.RESIZE_BILINEAR: _resize,
    OpType.ARG_MAX: _arg_min_max,
    OpType.ARG_MIN: _arg_min_max,
    OpType.TRANSPOSE_CONV: _transpose_conv,
}


# ---- driver -----------------------------------------------------------------------------------


def _prepare_input(t: Tensor, value: np.ndarray, position: int) -> np.ndarray:
    arr = np.asarray(value)
    want = t.dtype.numpy
    if arr.size != t.size:
        raise McugenError(f"input {position} ({t.name}) has {arr.size} values, the model expects shape {t.shape}")
    if arr.dtype != want:
        if arr.dtype.kind in "iu" and want.kind in "iu":
            info = np.iinfo(want)
            if arr.size and (arr.min() < info.min or arr.max() > info.max):
                raise McugenError(f"input {position} ({t.name}) has values outside the {want} range")
        elif not (arr.dtype.kind == "f" and want.kind == "f"):
            raise McugenError(f"input {position} ({t.name}) is {arr.dtype}, the model expects {want}")
    return arr.astype(want).reshape(t.shape)


def emulate(
    graph: Graph, inputs: list[np.ndarray], *, keep_all: bool = False, flavor: Flavor = Flavor.TFLM
) -> EmulationResult:
    """Run `graph` on `inputs` (one array per graph input, in order) with bit-exact integer math."""
    if len(inputs) != len(graph.inputs):
        raise McugenError(f"the model has {len(graph.inputs)} inputs, {len(inputs)} were given")
    from mcugen.fold import fold_constants

    model_tensors = len(graph.tensors)  # the graph rewrites (PACK) add tensors the model does not have
    graph = fold_constants(graph)
    values: dict[int, np.ndarray] = {}
    for position, (index, value) in enumerate(zip(graph.inputs, inputs)):
        values[index] = _prepare_input(graph.t(index), value, position)

    last_use: dict[int, int] = {}
    for i, op in enumerate(graph.operators):
        for index in op.inputs:
            if index >= 0:
                last_use[index] = i
    keep = set(graph.outputs)

    for i, op in enumerate(graph.operators):
        kernel = _KERNELS.get(op.op)
        if kernel is None:
            raise UnsupportedError(f"{op.describe()}: the emulator does not support this operator")
        args: list[Optional[np.ndarray]] = []
        for index in op.inputs:
            if index < 0:
                args.append(None)
                continue
            t = graph.t(index)
            if index in values:
                args.append(values[index])
            elif t.data is not None:
                args.append(np.asarray(t.data))
            else:
                raise ModelError(f"{op.describe()}: input tensor {index} ({t.name}) is read before it is written")
        ctx = _Ctx(graph, op, flavor)
        if len(op.outputs) != 1:
            raise ctx.fail(f"expected one output, got {len(op.outputs)}")
        values[op.outputs[0]] = kernel(ctx, args)
        if not keep_all:
            for index in op.inputs:
                if index >= 0 and last_use.get(index) == i and index not in keep and index in values:
                    del values[index]

    missing = [index for index in graph.outputs if index not in values and graph.t(index).data is None]
    if missing:
        raise ModelError(f"graph outputs {missing} are never written")
    outputs = [values[index] if index in values else np.asarray(graph.t(index).data) for index in graph.outputs]
    tensors = {index: v for index, v in values.items()
               if graph.t(index).data is None and index < model_tensors} if keep_all else {}
    return EmulationResult(outputs, tensors)
