"""Support checks: what mcugen can generate. Each constraint's docstring is the user-facing message."""

from __future__ import annotations

import math
from dataclasses import dataclass
from typing import Callable, Optional

import numpy as np

from mcugen.errors import UnsupportedError, UnsupportedOpsError
from mcugen.geometry import INT16_MAX, INT32_MAX, broadcast_shape, out_size, window_problem
from mcugen.ir import Activation, DType, Graph, Operator, OpType, Tensor

INT8_ONLY = (DType.INT8,)
SUPPORTED_ACTIVATIONS = (Activation.NONE, Activation.RELU, Activation.RELU6, Activation.RELU_N1_TO_1)


def logistic_reference_gap(in_scale: float, in_zp: int, out_scale: float, out_zp: int) -> int:
    """Largest difference, over every int8 input, between the two TFLite int8 LOGISTIC kernels.

    They differ by one step for a few realistic quantizations (validate's business); for input
    scales of about 2 and more (an input range beyond +-256 for a function flat beyond +-8) the
    fixed-point kernel's input radius saturates early and they differ by up to 128 steps."""
    from mcugen import quant

    x = np.arange(-128, 128)
    with np.errstate(all="ignore"):
        table = np.asarray(quant.logistic_lut_tflite(in_scale, in_zp, out_scale, out_zp)).astype(np.int64)[x + 128]
        fixed = quant.logistic_int8_fixed_point(x.astype(np.int8), quant.logistic_params(in_scale, in_zp)).astype(np.int64)
    return int(np.abs(table - fixed).max())


# ---- constraints -----------------------------------------------------------------------
# A constraint takes (graph, op) and returns None when satisfied, or a short detail string
# naming what it saw. Its docstring states the rule and is printed after the detail.

Constraint = Callable[[Graph, Operator], Optional[str]]


def _ins(g: Graph, op: Operator) -> list[Optional[Tensor]]:
    return g.op_inputs(op)


def c_arity(g: Graph, op: Operator) -> Optional[str]:
    """the operator needs its required inputs and exactly one output"""
    need = {
        OpType.CONV_2D: 2,
        OpType.DEPTHWISE_CONV_2D: 2,
        OpType.FULLY_CONNECTED: 2,
        OpType.ADD: 2,
        OpType.SUB: 2,
        OpType.MUL: 2,
        OpType.MINIMUM: 2,
        OpType.MAXIMUM: 2,
        OpType.SQUARED_DIFFERENCE: 2,
        OpType.PRELU: 2,
        OpType.MEAN: 2,
        OpType.SUM: 2,
        OpType.REDUCE_MAX: 2,
        OpType.SLICE: 3,
        OpType.STRIDED_SLICE: 4,
        OpType.PAD: 2,
        OpType.PADV2: 3,
        OpType.TRANSPOSE: 2,
        OpType.RESIZE_NEAREST_NEIGHBOR: 2,
        OpType.RESIZE_BILINEAR: 2,
        OpType.TRANSPOSE_CONV: 3,
    }.get(op.op, 1)
    have = sum(1 for i in op.inputs[:need] if i >= 0)
    if have < need or len(op.outputs) != 1:
        return f"has {have} of {need} required inputs and {len(op.outputs)} outputs"
    # TFLite's kernels refuse more inputs than these, or (PAD) read a third one that mcugen would ignore
    most = {
        OpType.CONV_2D: 3, OpType.DEPTHWISE_CONV_2D: 3, OpType.FULLY_CONNECTED: 3, OpType.RESHAPE: 2,
        OpType.TRANSPOSE_CONV: 4,
    }.get(op.op, need)
    if len(op.inputs) > most:
        return f"has {len(op.inputs)} inputs where at most {most} are accepted"
    return None


def c_activation(g: Graph, op: Operator) -> Optional[str]:
    """fused activations supported: NONE, RELU, RELU6, RELU_N1_TO_1"""
    act = getattr(op.attrs, "activation", Activation.NONE)
    if act not in SUPPORTED_ACTIVATIONS:
        return "has an unsupported fused activation"
    bound = {Activation.RELU6: 6.0, Activation.RELU_N1_TO_1: 1.0}.get(act)
    o = g.t(op.outputs[0])
    if bound is not None and o.quant is not None:
        # TFLite quantizes the bound as int32(round(float(bound) / float(scale))): undefined
        # behaviour when that leaves the int32 range (e.g. a denormal output scale).
        with np.errstate(all="ignore"):
            steps = np.float32(bound) / np.float32(o.quant.s)
        if not np.isfinite(steps) or abs(float(steps)) >= 2.0**31:
            return f"puts its {act.value} bound {bound} at {float(steps)} steps of output scale {o.quant.s} (beyond int32)"
    return None


def c_int8_io(g: Graph, op: Operator) -> Optional[str]:
    """input 0 and the output must be int8, or both int16 for the operators with a 16x8 rule (int16 activations elsewhere and float ops are not supported)"""
    a = _ins(g, op)[0]
    o = g.t(op.outputs[0])
    if op.op in INT16_OPS and is_int16(g, op):
        return None  # a 16x8 layer: the int16 rules apply
    for what, t in (("input", a), ("output", o)):
        if t.dtype is not DType.INT8:
            return f"{what} tensor {t.index} is {t.dtype.value if t.dtype is not DType.OTHER else getattr(t, 'other_type', 'other')}"
        if t.quant is None:
            return f"{what} tensor {t.index} has no quantization parameters"
    return None


def c_int8_second_input(g: Graph, op: Operator) -> Optional[str]:
    """both operands must be int8 with quantization parameters"""
    b = _ins(g, op)[1]
    if is_int16(g, op) and b.dtype is DType.INT16 and b.quant is not None:
        return None
    if b.dtype is not DType.INT8 or b.quant is None:
        return f"input tensor {b.index} is {b.dtype.value}"
    return None


def c_rank4(g: Graph, op: Operator) -> Optional[str]:
    """input and output must be 4-D (NHWC)"""
    a = _ins(g, op)[0]
    o = g.t(op.outputs[0])
    if len(a.shape) != 4 or len(o.shape) != 4:
        return f"has input shape {list(a.shape)} and output shape {list(o.shape)}"
    return None


def _weights_problem(w: Optional[Tensor], rank: int, axis: int) -> Optional[str]:
    if w is None or not w.is_const:
        return "weights are not a constant tensor"
    if w.dtype is not DType.INT8 or w.quant is None:
        return f"weights tensor {w.index} is {w.dtype.value}, not quantized int8"
    if len(w.shape) != rank:
        return f"weights tensor {w.index} has shape {list(w.shape)}"
    if w.quant.per_channel and w.quant.axis != axis:
        return f"weights tensor {w.index} is quantized along axis {w.quant.axis}"
    if any(int(z) != 0 for z in w.quant.zero_point):
        return f"weights tensor {w.index} has a non-zero zero point"
    return None


def _omitted_bias(op: Operator) -> Optional[str]:
    if op.op in (OpType.CONV_2D, OpType.DEPTHWISE_CONV_2D) and len(op.inputs) > 2 and op.inputs[2] < 0:
        # tflite-runtime refuses this ("optional but was expected"); TFLite Micro crashes on it for
        # DEPTHWISE_CONV_2D. Without the third input at all, both run it without a bias.
        return "lists its bias input as omitted (-1); drop the input or give an int32 bias"
    return None


def _bias_problem(b: Optional[Tensor], n: int, x: Optional[Tensor] = None) -> Optional[str]:
    if b is None:
        return None
    if x is not None and x.dtype is DType.INT16:
        if b.size != n:
            return f"bias tensor {b.index} has {b.size} values for {n} output channels"
        return None  # the type: c_int16_bias
    if not b.is_const or b.dtype is not DType.INT32:
        return f"bias tensor {b.index} is not a constant int32 tensor"
    if b.size != n:
        return f"bias tensor {b.index} has {b.size} values for {n} output channels"
    return None


def c_conv(g: Graph, op: Operator) -> Optional[str]:
    """CONV_2D: constant int8 weights [out_ch, kh, kw, in_ch] (symmetric, per-tensor or per-output-channel), optional int32 bias, no grouped convolution, output shape as TFLite computes it"""
    x, w = _ins(g, op)[0], _ins(g, op)[1]
    b = _ins(g, op)[2] if len(op.inputs) > 2 else None
    o = g.t(op.outputs[0])
    p = _omitted_bias(op) or _weights_problem(w, 4, 0) or _bias_problem(b, w.shape[0], x)
    if p:
        return p
    if w.shape[3] != x.shape[3]:
        return f"weights have {w.shape[3]} input channels but the input has {x.shape[3]} (grouped convolution)"
    a = op.attrs
    exp = (
        x.shape[0],
        out_size(x.shape[1], w.shape[1], a.stride_h, a.dilation_h, a.padding),
        out_size(x.shape[2], w.shape[2], a.stride_w, a.dilation_w, a.padding),
        w.shape[0],
    )
    if tuple(o.shape) != exp or min(exp) <= 0:
        return f"has output shape {list(o.shape)} where {list(exp)} is expected"
    return window_problem(
        x.shape[1:3], w.shape[1:3], (a.stride_h, a.stride_w), (a.dilation_h, a.dilation_w), o.shape[1:3], a.padding, True
    )


def c_depthwise(g: Graph, op: Operator) -> Optional[str]:
    """DEPTHWISE_CONV_2D: constant int8 weights [1, kh, kw, in_ch*multiplier] (symmetric, per-tensor or per-channel), optional int32 bias, output shape as TFLite computes it"""
    x, w = _ins(g, op)[0], _ins(g, op)[1]
    b = _ins(g, op)[2] if len(op.inputs) > 2 else None
    o = g.t(op.outputs[0])
    p = _omitted_bias(op) or _weights_problem(w, 4, 3) or _bias_problem(b, w.shape[3], x)
    if p:
        return p
    if w.shape[0] != 1 or w.shape[3] % x.shape[3] != 0 or w.shape[3] != o.shape[3]:
        return f"weights shape {list(w.shape)} does not fit input channels {x.shape[3]} and output channels {o.shape[3]}"
    if op.attrs.depth_multiplier != w.shape[3] // x.shape[3]:
        # the reference kernels loop over the stored multiplier, not the one the shapes imply
        return f"has depth_multiplier {op.attrs.depth_multiplier} but {x.shape[3]} input and {w.shape[3]} output channels"
    a = op.attrs
    exp = (
        x.shape[0],
        out_size(x.shape[1], w.shape[1], a.stride_h, a.dilation_h, a.padding),
        out_size(x.shape[2], w.shape[2], a.stride_w, a.dilation_w, a.padding),
        w.shape[3],
    )
    if tuple(o.shape) != exp or min(exp) <= 0:
        return f"has output shape {list(o.shape)} where {list(exp)} is expected"
    if op.attrs.depth_multiplier > INT16_MAX:
        return f"has depth_multiplier {op.attrs.depth_multiplier}; TFLite's kernels hold it in 16 bits"
    return window_problem(
        x.shape[1:3], w.shape[1:3], (a.stride_h, a.stride_w), (a.dilation_h, a.dilation_w), o.shape[1:3], a.padding, True
    )


def c_fully_connected(g: Graph, op: Operator) -> Optional[str]:
    """FULLY_CONNECTED: constant int8 weights [units, depth] (symmetric, per-tensor or per-unit), optional int32 bias, input size a multiple of depth"""
    x, w = _ins(g, op)[0], _ins(g, op)[1]
    b = _ins(g, op)[2] if len(op.inputs) > 2 else None
    o = g.t(op.outputs[0])
    p = _weights_problem(w, 2, 0) or _bias_problem(b, w.shape[0], x)
    if p:
        return p
    if x.size % w.shape[1] != 0:
        return f"input of {x.size} elements is not a multiple of the weights' depth {w.shape[1]}"
    if not w.quant.per_channel:
        # TFLite's GetQuantizedConvolutionMultipler (FULLY_CONNECTED Prepare, per-tensor weights):
        # the bias scale must be input scale * weight scale within 2% of the output scale.
        product = x.quant.s * w.quant.s  # in double, from the float32 scales
        bias_scale = b.quant.s if b is not None and b.quant is not None else 0.0
        if b is not None and abs(product - bias_scale) / o.quant.s > 0.02:
            return (
                f"bias tensor {b.index} has scale {bias_scale} but input scale x weight scale is {product} "
                f"(TFLite requires them within 2% of the output scale {o.quant.s})"
            )
    if o.size != (x.size // w.shape[1]) * w.shape[0] or o.shape[-1] != w.shape[0]:
        return f"has output shape {list(o.shape)} for {x.size // w.shape[1]} batches of {w.shape[0]} units"
    return None


def c_elementwise(g: Graph, op: Operator) -> Optional[str]:
    """ADD/SUB/MUL/MINIMUM/MAXIMUM/SQUARED_DIFFERENCE: two int8 operands of rank <= 4 that broadcast (NumPy rules) to the output shape"""
    a, b = _ins(g, op)[0], _ins(g, op)[1]
    o = g.t(op.outputs[0])
    if max(len(a.shape), len(b.shape), len(o.shape)) > 4:
        return f"has rank {max(len(a.shape), len(b.shape))}"
    bs = broadcast_shape(a.shape, b.shape)
    if bs is None or tuple(bs) != tuple((1,) * (len(bs) - len(o.shape)) + tuple(o.shape)):
        return f"shapes {list(a.shape)} and {list(b.shape)} do not broadcast to output {list(o.shape)}"
    if op.op is OpType.MUL:
        # TFLite's int8 MUL Prepare computes in1_scale * in2_scale / out_scale in float32; an
        # infinite result (e.g. a denormal output scale) gives it an undefined multiplier.
        with np.errstate(all="ignore"):
            m = np.float32(np.float32(a.quant.s) * np.float32(b.quant.s)) / np.float32(o.quant.s)
        if not np.isfinite(m):
            return f"has output scale {o.quant.s}: TFLite's float32 output multiplier overflows ({float(m)})"
    if op.op is OpType.SQUARED_DIFFERENCE:
        # TFLite's int8 SQUARED_DIFFERENCE Prepare: twice_max^2 / ((1 << 14) * output_scale) (the
        # product in float32) through QuantizeMultiplierSmallerThanOneExp, which aborts unless < 1.
        twice_max = 2.0 * max(a.quant.s, b.quant.s)
        with np.errstate(all="ignore"):
            denominator = float(np.float32(1 << 14) * np.float32(o.quant.s))
        m = twice_max * twice_max / denominator if denominator else math.inf
        if not 0.0 < m < 1.0:
            return (
                f"has output scale {o.quant.s} for input scales {a.quant.s} and {b.quant.s}: TFLite's output "
                f"multiplier {m} is outside (0, 1)"
            )
    if op.op in (OpType.ADD, OpType.SUB) and not is_int16(g, op):
        # TFLite's int8 ADD (and SUB) Prepare: twice_max / ((1 << 20) * output_scale), the product in float32;
        # it aborts the process (TFLITE_CHECK) unless the multiplier lies strictly within (0, 1).
        twice_max = 2.0 * max(a.quant.s, b.quant.s)
        with np.errstate(all="ignore"):
            denominator = float(np.float32(1 << 20) * np.float32(o.quant.s))
        m = twice_max / denominator if denominator else math.inf
        if not 0.0 < m < 1.0:
            return (
                f"has output scale {o.quant.s} for input scales {a.quant.s} and {b.quant.s}: TFLite's output "
                f"multiplier {m} is outside (0, 1)"
            )
    return None


def c_pool(g: Graph, op: Operator) -> Optional[str]:
    """pooling: input and output with the same quantization, output shape as TFLite computes it"""
    x = _ins(g, op)[0]
    o = g.t(op.outputs[0])
    a = op.attrs
    exp = (
        x.shape[0],
        out_size(x.shape[1], a.filter_h, a.stride_h, 1, a.padding),
        out_size(x.shape[2], a.filter_w, a.stride_w, 1, a.padding),
        x.shape[3],
    )
    if tuple(o.shape) != exp or min(exp) <= 0:
        return f"has output shape {list(o.shape)} where {list(exp)} is expected"
    if x.quant.s != o.quant.s or x.quant.zp != o.quant.zp:
        return "rescales (input and output quantization differ)"
    return window_problem(
        x.shape[1:3], (a.filter_h, a.filter_w), (a.stride_h, a.stride_w), (1, 1), o.shape[1:3], a.padding, False
    )


def c_mean(g: Graph, op: Operator) -> Optional[str]:
    """MEAN/SUM: an int8 input of rank <= 6 reduced over any axes, with or without keep_dims (SUM: TFLite Micro is the oracle, tflite-runtime's reference int8 SUM being off the float definition by up to ~200 steps)"""
    x = _ins(g, op)[0]
    o = g.t(op.outputs[0])
    if len(x.shape) > 6:
        return f"has rank {len(x.shape)}"
    axes = set(op.attrs.axes)
    if op.attrs.keep_dims:
        exp = tuple(1 if d in axes else n for d, n in enumerate(x.shape))
    else:
        exp = tuple(n for d, n in enumerate(x.shape) if d not in axes)
    if tuple(o.shape) != exp:
        return f"has output shape {list(o.shape)} where {list(exp)} is expected"
    count = 1
    for d in axes:
        count *= x.shape[d]
    if op.op is OpType.REDUCE_MAX:
        return None  # no sum: any count
    if count >= 2**23:
        return f"reduces {count} elements into each output; at most 2^23 keep the int32 sum exact"
    from mcugen.quant import mean_params

    try:
        mp = mean_params(x.quant.s, o.quant.s, count, op.op is OpType.MEAN) if x.quant and o.quant else None
    except (UnsupportedError, OverflowError, ZeroDivisionError):
        return f"has input scale {x.quant.s} and output scale {o.quant.s}, whose ratio TFLite cannot requantize"
    if mp is not None and mp.shift > 0 and count * 255 * (1 << mp.shift) >= 2**31:
        # TFLite multiplies the sum by 2^shift in int32 before the fixed-point multiply: past
        # 2^31 that overflows (undefined behaviour), so there is no exact result to match
        return (f"has input scale {x.quant.s} and output scale {o.quant.s}: TFLite's requantization shifts the "
                f"int32 sum left by {mp.shift} bits, which overflows")
    return None


RECURRENT = ("recurrent models are not supported: of the published MCU models mcugen was tried on (MLPerf Tiny, "
             "TFLite Micro's examples, TinyEngine, TinyMaix, OpenMV), only TFLite Micro's LSTM examples (mnist_lstm, "
             "dtln noise suppression) and its SVDF keyword benchmark (keyword_scrambled) use a recurrent operator; "
             "their int16 state needs a kernel family of its own")
# Operators mcugen recognises and refuses on purpose, with the reason (listed in the README).
REFUSED_OPS: dict[str, str] = {
    "UNIDIRECTIONAL_SEQUENCE_LSTM": RECURRENT,
    "SVDF": RECURRENT,
}


def c_softmax_logistic(g: Graph, op: Operator) -> Optional[str]:
    """SOFTMAX/LOGISTIC: int8 output quantized with scale 1/256 and zero point -128, same shape as the input"""
    x = _ins(g, op)[0]
    o = g.t(op.outputs[0])
    if tuple(x.shape) != tuple(o.shape):
        return f"maps shape {list(x.shape)} to {list(o.shape)}"
    if op.op is OpType.SOFTMAX and not x.shape:
        return "has a scalar (rank-0) input; TFLite's SOFTMAX needs at least one dimension"
    if x.dtype is DType.INT16:
        return None  # c_int16_softmax
    if abs(o.quant.s - 1.0 / 256) > 1e-9 or o.quant.zp != -128:
        return f"output has scale {o.quant.s} and zero point {o.quant.zp}"
    if op.op is OpType.LOGISTIC and x.dtype is DType.INT8:
        gap = logistic_reference_gap(x.quant.s, x.quant.zp, o.quant.s, o.quant.zp)
        if gap > 1:
            return (
                f"has input scale {x.quant.s}: tflite-runtime (float table) and TFLite Micro (fixed point) "
                f"disagree by up to {gap} steps there, so there is no exact result (input scales below 2 are fine)"
            )
    return None


def c_reshape(g: Graph, op: Operator) -> Optional[str]:
    """RESHAPE: the same number of elements and the same type and quantization in and out"""
    x = _ins(g, op)[0]
    o = g.t(op.outputs[0])
    if x.size != o.size or x.dtype is not o.dtype:
        return f"maps {list(x.shape)} {x.dtype.value} to {list(o.shape)} {o.dtype.value}"
    if len(op.inputs) > 1:
        # TFLite takes the new shape from this tensor when it is listed (TFLite Micro crashes on a -1
        # entry); mcugen uses the output tensor's shape, so the two must agree.
        if op.inputs[1] < 0:
            return "lists its shape input as omitted (-1)"
        s = g.t(op.inputs[1])
        if not s.is_const or s.dtype is not DType.INT32 or len(s.shape) != 1:
            return f"shape input tensor {s.index} is not a constant int32 vector"
        dims = [int(v) for v in s.data.reshape(-1)]
        known = 1
        for d in dims:
            known *= d if d != -1 else 1
        if dims.count(-1) == 1 and known > 0 and o.size % known == 0:
            dims = [o.size // known if d == -1 else d for d in dims]
        if tuple(dims) != tuple(o.shape):
            return f"shape input tensor {s.index} holds {[int(v) for v in s.data.reshape(-1)]} but the output shape is {list(o.shape)}"
    return None


def c_pad(g: Graph, op: Operator) -> Optional[str]:
    """PAD/PADV2: rank <= 4, constant paddings, output shape = input shape + paddings"""
    x = _ins(g, op)[0]
    o = g.t(op.outputs[0])
    if len(x.shape) > 4:
        return f"has rank {len(x.shape)}"
    exp = tuple(d + p0 + p1 for d, (p0, p1) in zip(x.shape, op.attrs.paddings))
    if tuple(o.shape) != exp:
        return f"has output shape {list(o.shape)} where {list(exp)} is expected"
    if x.quant.s != o.quant.s or x.quant.zp != o.quant.zp:
        return "rescales (input and output quantization differ)"
    return None


def c_transpose(g: Graph, op: Operator) -> Optional[str]:
    """TRANSPOSE: rank <= 6, output shape = permuted input shape"""
    x = _ins(g, op)[0]
    o = g.t(op.outputs[0])
    exp = tuple(x.shape[p] for p in op.attrs.perm)
    if tuple(o.shape) != exp or x.dtype is not o.dtype:
        return f"has output shape {list(o.shape)} where {list(exp)} is expected"
    return None


def c_quantize(g: Graph, op: Operator) -> Optional[str]:
    """QUANTIZE: float32, uint8 or int8 input to int8 or uint8 output, or float32 to symmetric int16 (a 16x8 model's input), same shape"""
    x = _ins(g, op)[0]
    o = g.t(op.outputs[0])
    eight = x.dtype in (DType.FLOAT32, DType.UINT8, DType.INT8) and o.dtype in (DType.INT8, DType.UINT8)
    sixteen = x.dtype is DType.FLOAT32 and o.dtype is DType.INT16
    if not (eight or sixteen):
        return f"converts {x.dtype.value} to {o.dtype.value}"
    if sixteen and o.quant is not None and (o.quant.per_channel or int(o.quant.zp) != 0):
        return f"quantizes to int16 with zero point {o.quant.zp}"
    if o.quant is None or (x.dtype is not DType.FLOAT32 and x.quant is None):
        return "lacks quantization parameters"
    if o.quant.per_channel:
        return "has per-channel output quantization"
    if tuple(x.shape) != tuple(o.shape):
        return f"maps shape {list(x.shape)} to {list(o.shape)}"
    return None


def c_dequantize(g: Graph, op: Operator) -> Optional[str]:
    """DEQUANTIZE: int8, uint8 or int16 input (per-tensor) to float32 output, same shape"""
    x = _ins(g, op)[0]
    o = g.t(op.outputs[0])
    if x.dtype not in (DType.INT8, DType.UINT8, DType.INT16) or o.dtype is not DType.FLOAT32:
        return f"converts {x.dtype.value} to {o.dtype.value}"
    if x.quant is None or x.quant.per_channel:
        return "input lacks per-tensor quantization parameters"
    if tuple(x.shape) != tuple(o.shape):
        return f"maps shape {list(x.shape)} to {list(o.shape)}"
    return None


def c_relu6_same_quant(g: Graph, op: Operator) -> Optional[str]:
    """RELU6: input and output with the same quantization (TFLite Micro's int8 RELU6 clamps in the input's scale and ignores the output's, tflite-runtime's rescales: only then do both give one result)"""
    x = _ins(g, op)[0]
    o = g.t(op.outputs[0])
    if (x.quant.s, x.quant.zp) != (o.quant.s, o.quant.zp):
        return (f"maps scale {x.quant.s:.6g}, zero point {x.quant.zp} to scale {o.quant.s:.6g}, zero point {o.quant.zp}: "
                "TFLite Micro and tflite-runtime disagree there (TFLite Micro ignores the output quantization)")
    return None


def c_unary_same_shape(g: Graph, op: Operator) -> Optional[str]:
    """RELU/RELU_N1_TO_1/LEAKY_RELU: per-tensor quantization, output shape = input shape (run as a 256-entry table)"""
    x = _ins(g, op)[0]
    o = g.t(op.outputs[0])
    if tuple(x.shape) != tuple(o.shape):
        return f"maps shape {list(x.shape)} to {list(o.shape)}"
    if x.quant.per_channel or o.quant.per_channel:
        return "has per-channel quantization"
    return None


def c_padv2_value(g: Graph, op: Operator) -> Optional[str]:
    """PADV2: the padding value is a constant int8 scalar (one element)"""
    v = _ins(g, op)[2]
    if not v.is_const or v.dtype is not DType.INT8 or v.size != 1:
        return f"pads with tensor {v.index} ({v.dtype.value}, {v.size} elements, {'constant' if v.is_const else 'computed'})"
    return None


def c_depth_space(g: Graph, op: Operator) -> Optional[str]:
    """DEPTH_TO_SPACE/SPACE_TO_DEPTH: block >= 1, the same quantization in and out, output shape as TFLite computes it"""
    x = _ins(g, op)[0]
    o = g.t(op.outputs[0])
    b = op.attrs.block
    n, h, w, c = x.shape
    if op.op is OpType.DEPTH_TO_SPACE:
        exp = (n, h * b, w * b, c // (b * b)) if c % (b * b) == 0 else None
    else:
        exp = (n, h // b, w // b, c * b * b) if h % b == 0 and w % b == 0 else None
    if exp is None or tuple(o.shape) != exp:
        return f"maps {list(x.shape)} to {list(o.shape)} with block {b}"
    if x.quant.s != o.quant.s or x.quant.zp != o.quant.zp:
        return "rescales (input and output quantization differ)"
    return None


def c_concat(g: Graph, op: Operator) -> Optional[str]:
    """CONCATENATION: 1 to 64 int8 activation inputs of rank <= 6 and the output with the same quantization (TFLite's int8 kernel does not rescale), shapes equal except along the axis, no fused activation"""
    ins = _ins(g, op)
    o = g.t(op.outputs[0])
    if not 1 <= len(ins) <= 64 or any(t is None for t in ins):
        return f"has {len(ins)} inputs"
    axis = op.attrs.axis
    if op.attrs.activation is not Activation.NONE:
        return f"has fused activation {op.attrs.activation.value}"
    for t in ins:
        if t.is_const:
            return f"reads constant tensor {t.index}"
        if t.dtype is not DType.INT8 or t.quant is None:
            return f"input tensor {t.index} is {t.dtype.value}"
        if t.quant.s != o.quant.s or t.quant.zp != o.quant.zp:
            return f"input tensor {t.index} has scale {t.quant.s} and zero point {t.quant.zp}, the output {o.quant.s} and {o.quant.zp}"
        if len(t.shape) != len(o.shape) or len(t.shape) > 6 or any(
            a != b for d, (a, b) in enumerate(zip(t.shape, o.shape)) if d != axis
        ):
            return f"input tensor {t.index} has shape {list(t.shape)} for output {list(o.shape)} along axis {axis}"
    if sum(t.shape[axis] for t in ins) != o.shape[axis]:
        return f"inputs add up to {sum(t.shape[axis] for t in ins)} along axis {axis}, the output has {o.shape[axis]}"
    return None


def c_resize(g: Graph, op: Operator) -> Optional[str]:
    """RESIZE_NEAREST_NEIGHBOR/RESIZE_BILINEAR: 4-D int8, a constant int32 size [2] equal to the output's H, W, same batch, channels and quantization in and out, not both align_corners and half_pixel_centers"""
    x = _ins(g, op)[0]
    size = _ins(g, op)[1]
    o = g.t(op.outputs[0])
    if size is None or not size.is_const or size.dtype is not DType.INT32 or size.size != 2:
        return "has a size input that is not a constant int32 pair"
    hw = [int(v) for v in np.asarray(size.data).reshape(-1)]
    if tuple(hw) != tuple(o.shape[1:3]) or o.shape[0] != x.shape[0] or o.shape[3] != x.shape[3]:
        return f"resizes {list(x.shape)} to {list(o.shape)} with size {hw}"
    if op.attrs.align_corners and op.attrs.half_pixel_centers:
        return "sets both align_corners and half_pixel_centers (TFLite refuses this)"
    if x.quant.s != o.quant.s or x.quant.zp != o.quant.zp:
        return "rescales (input and output quantization differ)"
    if max(o.shape[1:3]) * 1024 >= 2**31 or max(x.shape[1:3]) * 1024 >= 2**31:
        return "is too large for the kernels' 10-bit fixed-point coordinates"
    return None


def c_folded_only(g: Graph, op: Operator) -> Optional[str]:
    """only on constant or shape-only inputs: evaluated at generation time (mcugen.fold), never run"""
    data = [t.index for t in _ins(g, op) if t is not None and not t.is_const]
    return f"depends on run-time data (tensor {data[0]})" if data else "could not be evaluated at generation time"


from mcugen.supported_int16 import (  # noqa: E402
    INT16_OPS, c_int16, c_int16_add, c_int16_bias, c_int16_leaky_relu, c_int16_softmax, is_int16,
)
from mcugen.supported_more import (  # noqa: E402 (the later operators' rules; they import this module lazily)
    c_hard_swish,
    c_prelu,
    c_reduce_max,
    c_same_quantization,
    c_slice,
    c_split,
    c_transpose_conv,
    c_transpose_conv_io,
)
from mcugen.supported_more import c_arg_min_max, c_pack, c_view  # noqa: E402 (ARG_MAX/ARG_MIN, SQUEEZE/EXPAND_DIMS, PACK)

CONSTRAINTS: dict[OpType, list[Constraint]] = {
    OpType.CONV_2D: [c_arity, c_int8_io, c_rank4, c_int16, c_activation, c_conv, c_int16_bias],
    OpType.DEPTHWISE_CONV_2D: [c_arity, c_int8_io, c_rank4, c_int16, c_activation, c_depthwise, c_int16_bias],
    OpType.FULLY_CONNECTED: [c_arity, c_int8_io, c_int16, c_activation, c_fully_connected, c_int16_bias],
    OpType.ADD: [c_arity, c_int8_io, c_int8_second_input, c_int16, c_activation, c_elementwise, c_int16_add],
    OpType.MUL: [c_arity, c_int8_io, c_int8_second_input, c_activation, c_elementwise],
    OpType.SUB: [c_arity, c_int8_io, c_int8_second_input, c_int16, c_activation, c_elementwise, c_int16_add],
    OpType.MINIMUM: [c_arity, c_int8_io, c_int8_second_input, c_elementwise, c_same_quantization],
    OpType.MAXIMUM: [c_arity, c_int8_io, c_int8_second_input, c_elementwise, c_same_quantization],
    OpType.SQUARED_DIFFERENCE: [c_arity, c_int8_io, c_int8_second_input, c_elementwise],
    OpType.MEAN: [c_arity, c_int8_io, c_mean],
    OpType.SUM: [c_arity, c_int8_io, c_mean],
    OpType.REDUCE_MAX: [c_arity, c_int8_io, c_reduce_max, c_same_quantization],
    OpType.AVERAGE_POOL_2D: [c_arity, c_int8_io, c_rank4, c_activation, c_pool],
    OpType.MAX_POOL_2D: [c_arity, c_int8_io, c_rank4, c_activation, c_pool],
    OpType.SOFTMAX: [c_arity, c_int8_io, c_int16, c_softmax_logistic, c_int16_softmax],
    OpType.LOGISTIC: [c_arity, c_int8_io, c_softmax_logistic],
    OpType.RESHAPE: [c_arity, c_reshape],
    OpType.PAD: [c_arity, c_int8_io, c_int16, c_pad],
    OpType.TRANSPOSE: [c_arity, c_transpose],
    OpType.QUANTIZE: [c_arity, c_quantize],
    OpType.DEQUANTIZE: [c_arity, c_dequantize],
    OpType.CONCATENATION: [c_concat],
    OpType.PADV2: [c_arity, c_int8_io, c_pad, c_padv2_value],
    OpType.DEPTH_TO_SPACE: [c_arity, c_int8_io, c_rank4, c_depth_space],
    OpType.SPACE_TO_DEPTH: [c_arity, c_int8_io, c_rank4, c_depth_space],
    OpType.RELU: [c_arity, c_int8_io, c_unary_same_shape],
    OpType.RELU_N1_TO_1: [c_arity, c_int8_io, c_unary_same_shape],
    OpType.RELU6: [c_arity, c_int8_io, c_unary_same_shape, c_relu6_same_quant],
    OpType.LEAKY_RELU: [c_arity, c_int8_io, c_int16, c_unary_same_shape, c_int16_leaky_relu],
    OpType.TANH: [c_arity, c_int8_io, c_unary_same_shape],
    OpType.PRELU: [c_arity, c_int8_io, c_int8_second_input, c_prelu],
    OpType.HARD_SWISH: [c_arity, c_int8_io, c_unary_same_shape, c_hard_swish],
    OpType.RESIZE_NEAREST_NEIGHBOR: [c_arity, c_int8_io, c_rank4, c_resize],
    OpType.RESIZE_BILINEAR: [c_arity, c_int8_io, c_rank4, c_resize],
    OpType.SHAPE: [c_folded_only],
    OpType.STRIDED_SLICE: [c_arity, c_slice],
    OpType.SLICE: [c_arity, c_slice],
    OpType.SPLIT: [c_split],
    OpType.SPLIT_V: [c_split],
    OpType.UNPACK: [c_split],
    OpType.PACK: [c_pack],
    OpType.GATHER: [c_folded_only],
    OpType.ARG_MAX: [c_arg_min_max],
    OpType.ARG_MIN: [c_arg_min_max],
    OpType.SQUEEZE: [c_view],
    OpType.EXPAND_DIMS: [c_view],
    OpType.TRANSPOSE_CONV: [c_arity, c_transpose_conv_io, c_activation, c_transpose_conv],
}

GRAPH_IO_TYPES = (DType.INT8, DType.UINT8, DType.INT16, DType.FLOAT32)
GRAPH_OUTPUT_TYPES = GRAPH_IO_TYPES + (DType.INT32, DType.INT64)  # int32/int64: ARG_MAX/ARG_MIN indices
CONST_OPERAND_OPS = (OpType.ADD, OpType.SUB, OpType.MUL, OpType.MINIMUM, OpType.MAXIMUM, OpType.SQUARED_DIFFERENCE)  # the ops whose lowering takes constant operands


@dataclass(frozen=True)
class Blocker:
    """One thing mcugen cannot generate: where (an operator index, or None for the graph),
    the operator's name, what was seen, and the rule it breaks."""

    op_index: Optional[int]
    op_name: str
    detail: str
    rule: str


def _op_blocker(g: Graph, op: Operator) -> Optional[Blocker]:
    if op.op is None:
        name = getattr(op, "unknown_name", "?")
        if name in REFUSED_OPS:
            return Blocker(op.index, name, "is refused", REFUSED_OPS[name])
        return Blocker(op.index, name, "", "is not supported")
    empty = [t for t in (*_ins(g, op), *g.op_outputs(op)) if t is not None and t.size == 0]
    if empty:
        return Blocker(op.index, op.op.value, f"uses tensor {empty[0].index} of shape {list(empty[0].shape)}",
                       "every tensor an operator reads or writes must have at least one element")
    for c in CONSTRAINTS[op.op]:
        if c not in TYPE_CONSTRAINTS:
            zero = [t for t in (*_ins(g, op), *g.op_outputs(op))
                    if t is not None and t.quant is not None and np.any(t.quant.scale == 0)]
            if zero:
                return Blocker(op.index, op.op.value, f"uses tensor {zero[0].index} with quantization scale 0",
                               "quantized tensors need a positive scale")
        detail = c(g, op)
        if detail:
            return Blocker(op.index, op.op.value, detail, c.__doc__)
    x = g.op_inputs(op)[2 if op.op is OpType.TRANSPOSE_CONV else 0]  # the data input
    if op.op not in CONST_OPERAND_OPS and x is not None and x.is_const:
        return Blocker(op.index, op.op.value, f"reads constant tensor {x.index} as its data input",
                       "only the two-operand arithmetic operators (ADD, SUB, MUL, MINIMUM, MAXIMUM, SQUARED_DIFFERENCE) take a constant operand")
    return None


TYPE_CONSTRAINTS = (c_arity, c_int8_io, c_int8_second_input, c_rank4, c_transpose_conv_io)  # checked before any scale is used


def find_blockers(g: Graph) -> list[Blocker]:
    """Every operator (its first failing rule) and every graph property mcugen cannot generate."""
    blockers = [b for b in (_op_blocker(g, op) for op in g.operators) if b is not None]
    total = sum(t.nbytes for t in g.activation_tensors())
    if total > INT32_MAX:
        blockers.append(Blocker(None, "graph", f"the activation tensors total {total} bytes, more than 2^31-1",
                                "the generated C addresses its arena with 32-bit offsets"))
    for kind, idxs in (("input", g.inputs), ("output", g.outputs)):
        for i in idxs:
            t = g.t(i)
            if t.dtype not in (GRAPH_IO_TYPES if kind == "input" else GRAPH_OUTPUT_TYPES):
                blockers.append(Blocker(None, "graph", f"graph {kind} tensor {i} is {t.dtype.value}",
                                        "supported: int8, uint8, int16, float32 (outputs also int32, int64: ARG_MAX/ARG_MIN indices)"))
            elif t.is_const:
                blockers.append(Blocker(None, "graph", f"graph {kind} tensor {i} is a constant", "it must be computed"))
    return blockers


def _one_line(name: str, b: Blocker, supported: str) -> str:
    if b.op_index is None:
        return f"{name}: {b.detail}; {b.rule}"
    if b.rule == "is not supported":
        return f"{name}: operator {b.op_index} ({b.op_name}) is not supported; supported ops: {supported}"
    return f"{name}: operator {b.op_index} ({b.op_name}) {b.detail}; {b.rule}"


MAX_DETAILS = 3  # distinct details shown per group


def blocker_lines(name: str, blockers: list[Blocker]) -> list[str]:
    """The message for these blockers: the old one-line form for one blocker; else a summary
    line, then one line per group (same operator type and rule) listing its operator indices
    and up to MAX_DETAILS distinct details, then the supported ops if an unknown op appeared."""
    supported = ", ".join(t.value for t in CONSTRAINTS)
    if len(blockers) == 1:
        return [_one_line(name, blockers[0], supported)]
    groups: dict[tuple[str, str], list[Blocker]] = {}
    for b in blockers:
        groups.setdefault((b.op_name, b.rule), []).append(b)
    n_groups = f"{len(groups)} group" + ("s" if len(groups) > 1 else "")
    lines = [f"{name}: {len(blockers)} operators or properties mcugen cannot generate, in {n_groups}:"]
    unknown = False
    for (op_name, rule), bs in groups.items():
        if bs[0].op_index is None:
            lines.append("- " + "; ".join(b.detail for b in bs) + f"; {rule}")
            continue
        idx = ", ".join(str(b.op_index) for b in bs)
        where = f"operator {idx}" if len(bs) == 1 else f"{len(bs)} operators {idx}"
        if rule == "is not supported":
            unknown = True
            lines.append(f"- {where} ({op_name}): not supported")
            continue
        details = list(dict.fromkeys(b.detail for b in bs))
        shown = "; ".join(details[:MAX_DETAILS])
        if len(details) > MAX_DETAILS:
            shown += f" (and {len(details) - MAX_DETAILS} more variants)"
        lines.append(f"- {where} ({op_name}): {shown}; rule: {rule}")
    if unknown:
        lines.append(f"- supported ops: {supported}")
    return lines


def check_graph(g: Graph) -> None:
    """Raise UnsupportedError naming every blocker at once (one line per group; one line in all
    for a single blocker). A float model is named as such in one line."""
    if not g.operators:
        raise UnsupportedError(f"{g.name}: the model has no operators")
    float_ops = [
        op
        for op in g.operators
        if op.op not in (OpType.QUANTIZE, OpType.DEQUANTIZE)
        and any(t is not None and t.dtype is DType.FLOAT32 for t in g.op_inputs(op))
    ]
    if float_ops and len(float_ops) * 2 >= len(g.operators):
        op = float_ops[0]
        name = op.op.value if op.op else getattr(op, "unknown_name", "?")
        weights = [t for o in float_ops for t in g.op_inputs(o)
                   if t is not None and t.is_const and t.dtype in (DType.INT8, DType.UINT8)]
        if weights:
            raise UnsupportedError(
                f"{g.name}: operator {op.index} ({name}) computes in float32 with int8 weights (tensor {weights[0].index}): "
                "this is a dynamic-range quantized model (int8 weights, float activations); mcugen needs a "
                "full-integer int8 model (post-training quantization with a representative dataset and "
                "TFLITE_BUILTINS_INT8)"
            )
        raise UnsupportedError(
            f"{g.name}: operator {op.index} ({name}) computes in float32: this is a float model; "
            "mcugen needs a full-integer int8 model (quantize it with post-training int8 quantization)"
        )
    blockers = find_blockers(g)
    if not blockers:
        return
    lines = blocker_lines(g.name, blockers)
    if len(lines) == 1:
        raise UnsupportedError(lines[0])
    raise UnsupportedOpsError(lines)


def supported_ops_markdown() -> str:
    """The supported-operators table for the README, generated from the constraints."""
    lines = ["| operator | constraints |", "|---|---|"]
    for optype, cs in CONSTRAINTS.items():
        rules = "; ".join(c.__doc__.strip() for c in cs)
        lines.append(f"| {optype.value} | {rules} |")
    for name, why in REFUSED_OPS.items():
        lines.append(f"| {name} | refused: {why} |")
    return "\n".join(lines)
