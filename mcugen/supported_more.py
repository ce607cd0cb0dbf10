"""Support rules of the later operators (MINIMUM/MAXIMUM/REDUCE_MAX quantization, SLICE/STRIDED_SLICE,
SPLIT/SPLIT_V/UNPACK, PRELU, HARD_SWISH, REDUCE_MAX, ARG_MAX/ARG_MIN, SQUEEZE/EXPAND_DIMS, PACK, TRANSPOSE_CONV), listed in mcugen.supported.CONSTRAINTS."""

from __future__ import annotations

from typing import Optional

import numpy as np

from mcugen.geometry import INT16_MAX, INT32_MAX, broadcast_shape, out_size, same_padding
from mcugen.ir import DType, Graph, Operator, OpType


def _supported():
    from mcugen import supported  # supported imports this module

    return supported


def c_same_quantization(g: Graph, op: Operator) -> Optional[str]:
    """MINIMUM/MAXIMUM/REDUCE_MAX: the data inputs and the output share one quantization (TFLite's int8 kernels compare the raw values and do not rescale)"""
    o = g.t(op.outputs[0])
    for t in g.op_inputs(op)[: 1 if op.op in (OpType.REDUCE_MAX, OpType.SLICE, OpType.STRIDED_SLICE) else 2]:
        if (float(np.float32(t.quant.s)), int(t.quant.zp)) != (float(np.float32(o.quant.s)), int(o.quant.zp)):
            return (
                f"has input tensor {t.index} with scale {t.quant.s}, zero point {t.quant.zp} but output scale "
                f"{o.quant.s}, zero point {o.quant.zp}"
            )
    return None


def slice_taken(g: Graph, op: Operator):
    """The input indices a SLICE / STRIDED_SLICE takes along each axis (None: not resolvable)."""
    from mcugen.fold import slice_index, strided_slice_index

    ins = g.op_inputs(op)
    x = ins[0]
    if any(t is None or not t.is_const for t in ins[1:]):
        return None
    if op.op is OpType.SLICE:
        return slice_index(x.shape, np.asarray(ins[1].data), np.asarray(ins[2].data))
    resolved = strided_slice_index(op.attrs, x.shape, *(np.asarray(t.data) for t in ins[1:4]))
    return None if resolved is None else resolved[0]


def c_slice(g: Graph, op: Operator) -> Optional[str]:
    """SLICE/STRIDED_SLICE on int8 or int16 activations: rank <= 6, constant begin/end/strides (or sizes), no ellipsis or new axes, the input's quantization on the output; on other data only on constant or shape-only inputs (evaluated at generation time)"""
    x, o = g.op_inputs(op)[0], g.t(op.outputs[0])
    if x is None or x.dtype not in (DType.INT8, DType.INT16) or x.is_const:
        return _supported().c_folded_only(g, op)
    if o.dtype is not x.dtype or x.quant is None or o.quant is None:
        return f"output tensor {o.index} is {o.dtype.value}"
    if len(x.shape) > 6:
        return f"has rank {len(x.shape)}"
    index = slice_taken(g, op)
    if index is None:
        return "has begin/end/strides that are not constant or that mcugen cannot resolve (ellipsis or new-axis masks)"
    count = 1
    for ix in index:
        count *= len(ix)
    if count != o.size:
        return f"takes {count} elements for an output of shape {list(o.shape)}"
    return c_same_quantization(g, op)


def c_split(g: Graph, op: Operator) -> Optional[str]:
    """SPLIT/SPLIT_V/UNPACK: an int8 activation of rank <= 6, a constant axis (and size_splits), outputs with the input's shape but along the axis (each becomes a SLICE, which needs the input's quantization on every output)"""
    from mcugen.split_ops import split_plan

    plan, reason = split_plan(g, op)
    return None if plan is not None else reason  # taken: mcugen.fold rewrites it into SLICEs


def c_prelu(g: Graph, op: Operator) -> Optional[str]:
    """PRELU: rank <= 4, a per-tensor int8 alpha that broadcasts to the input's shape, output shape = input shape"""
    x, alpha = g.op_inputs(op)[0], g.op_inputs(op)[1]
    o = g.t(op.outputs[0])
    if max(len(x.shape), len(alpha.shape)) > 4:
        return f"has rank {max(len(x.shape), len(alpha.shape))}"
    if alpha.quant.per_channel:
        return f"has per-channel alpha quantization (tensor {alpha.index}); TFLite's kernel reads one scale"
    bs = broadcast_shape(x.shape, alpha.shape)
    if bs is None or tuple(bs) != tuple(x.shape) or tuple(o.shape) != tuple(x.shape):
        return f"has alpha shape {list(alpha.shape)} for input {list(x.shape)} and output {list(o.shape)}"
    return None


def c_hard_swish(g: Graph, op: Operator) -> Optional[str]:
    """HARD_SWISH: input scale / 128 / output scale below 1 (TFLite requires a right-shifting output multiplier)"""
    x, o = g.op_inputs(op)[0], g.t(op.outputs[0])
    hires = np.float32(np.float32(1.0 / 128.0) * np.float32(x.quant.s))
    with np.errstate(all="ignore"):
        m = float(np.float32(hires / np.float32(o.quant.s)))
    if not 0.0 < m < 1.0:
        return f"has input scale {x.quant.s} and output scale {o.quant.s} (output multiplier {m})"
    return None


def c_reduce_max(g: Graph, op: Operator) -> Optional[str]:
    """REDUCE_MAX: an int8 input of rank <= 6 reduced over any axes, with or without keep_dims"""
    return _supported().c_mean(g, op)


def c_arg_min_max(g: Graph, op: Operator) -> Optional[str]:
    """ARG_MAX/ARG_MIN: an int8 input of rank 1 to 6, one constant int32/int64 axis, an int32 or int64 output (the type its options name) of the input's shape without the axis (ties give the first index)"""
    ins = g.op_inputs(op)
    if len(ins) != 2 or any(t is None for t in ins) or len(op.outputs) != 1:
        return f"has {len(ins)} inputs and {len(op.outputs)} outputs (2 inputs and one output are needed)"
    x, axis_t, o = ins[0], ins[1], g.t(op.outputs[0])
    if x.dtype is not DType.INT8 or x.quant is None:
        return f"input tensor {x.index} is {x.dtype.value}"
    if not axis_t.is_const or axis_t.dtype not in (DType.INT32, DType.INT64) or axis_t.size != 1:
        return f"has an axis (tensor {axis_t.index}) that is not one constant int32/int64 value"
    if not 1 <= len(x.shape) <= 6:
        return f"has rank {len(x.shape)}"
    if o.dtype not in (DType.INT32, DType.INT64):
        return f"output tensor {o.index} is {o.dtype.value}"
    if op.attrs.output_type is not o.dtype:
        named = op.attrs.output_type.value if op.attrs.output_type is not None else "no type (no options)"
        return f"names {named} as its output type in its options but writes {o.dtype.value} tensor {o.index}"
    want = tuple(n for d, n in enumerate(x.shape) if d != op.attrs.axis)
    if tuple(o.shape) != want:
        return f"has output shape {list(o.shape)} where {list(want)} is expected"
    return None


def c_view(g: Graph, op: Operator) -> Optional[str]:
    """SQUEEZE/EXPAND_DIMS: the output shape TFLite computes (squeezed axes of size 1; one constant int32/int64 axis to insert), the same type and quantization in and out (each becomes a RESHAPE)"""
    from mcugen.view_ops import view_shape

    shape, reason = view_shape(g, op)
    return None if shape is not None else reason  # taken: mcugen.fold rewrites it into a RESHAPE


def c_pack(g: Graph, op: Operator) -> Optional[str]:
    """PACK on int8 activations: 1 to 64 inputs of one shape (rank <= 5) and the output with the same quantization (TFLite's int8 kernel does not rescale), output shape as TFLite computes it (each input becomes a RESHAPE, the PACK a CONCATENATION); on constant or shape-only inputs evaluated at generation time (mcugen.fold)"""
    from mcugen.view_ops import pack_plan

    if any(t is None or t.is_const or t.dtype is DType.INT32 for t in g.op_inputs(op)):
        return _supported().c_folded_only(g, op)
    plan, reason = pack_plan(g, op)
    return None if plan is not None else reason  # taken: mcugen.fold rewrites it
def transpose_conv_pads(attrs, out_shape, w_shape) -> tuple[int, int]:
    """TRANSPOSE_CONV's top and left padding as TFLite's Eval computes it: ComputePaddingHeightWidth
    run on the output's height and width as if they were a convolution's input (dilation 1)."""
    pads = []
    for size, k, stride in ((out_shape[1], w_shape[1], attrs.stride_h), (out_shape[2], w_shape[2], attrs.stride_w)):
        conv_out = out_size(size, k, stride, 1, attrs.padding)
        pads.append(same_padding(size, k, stride, 1, conv_out, attrs.padding))
    return pads[0], pads[1]


def c_transpose_conv_io(g: Graph, op: Operator) -> Optional[str]:
    """TRANSPOSE_CONV: the data input (input 2) and the output are 4-D int8 with per-tensor quantization"""
    x, o = g.op_inputs(op)[2], g.t(op.outputs[0])
    for what, t in (("data input", x), ("output", o)):
        if t.dtype is not DType.INT8 or t.quant is None:
            return f"{what} tensor {t.index} is {t.dtype.value}" + ("" if t.quant is not None else " without quantization")
        if t.quant.per_channel:
            return f"{what} tensor {t.index} has per-channel quantization"
        if len(t.shape) != 4:
            return f"{what} tensor {t.index} has shape {list(t.shape)}"
    if x.is_const:
        return f"reads constant tensor {x.index} as its data input"
    return None


def transpose_conv_bound(w: np.ndarray, bias: Optional[np.ndarray]) -> int:
    """The largest |int32 accumulator| any output channel can reach: every weight of the channel
    times the largest |input - zero point| (255), plus |bias|."""
    total = np.abs(w.astype(np.int64)).reshape(w.shape[0], -1).sum(axis=1) * 255
    if bias is not None:
        total = total + np.abs(np.asarray(bias, np.int64).reshape(-1))
    return int(total.max()) if total.size else 0


def c_transpose_conv(g: Graph, op: Operator) -> Optional[str]:
    """TRANSPOSE_CONV: a constant int32 output_shape [4] equal to the output's shape, constant int8 weights [out_ch, kh, kw, in_ch] (symmetric, per-tensor or per-output-channel), optional int32 bias, stride and padding within 16 bits, an int32 accumulator that cannot overflow"""
    s = _supported()
    ins = g.op_inputs(op)
    shape_t, w, x = ins[0], ins[1], ins[2]
    b = ins[3] if len(ins) > 3 else None
    o = g.t(op.outputs[0])
    if not shape_t.is_const or shape_t.dtype is not DType.INT32 or shape_t.size != 4:
        return f"has output_shape tensor {shape_t.index} that is not a constant int32 vector of 4 values"
    wanted = [int(v) for v in np.asarray(shape_t.data).reshape(-1)]
    if wanted != list(o.shape):
        return f"asks for output shape {wanted} but its output tensor has shape {list(o.shape)}"
    p = s._weights_problem(w, 4, 0) or s._bias_problem(b, w.shape[0])
    if p:
        return p
    if w.quant.per_channel and w.quant.scale.size != w.shape[0]:
        return f"weights tensor {w.index} has {w.quant.scale.size} scales for {w.shape[0]} output channels"
    if w.shape[3] != x.shape[3] or w.shape[0] != o.shape[3] or x.shape[0] != o.shape[0]:
        return f"weights shape {list(w.shape)} does not fit input {list(x.shape)} and output {list(o.shape)}"
    a = op.attrs
    pad_t, pad_l = transpose_conv_pads(a, o.shape, w.shape)
    if max(a.stride_h, a.stride_w, pad_t, pad_l) > INT16_MAX:
        return f"has stride {a.stride_h}x{a.stride_w} and padding {pad_t}, {pad_l}; TFLite's kernels hold them in 16 bits"
    if max(x.shape[1] * a.stride_h, x.shape[2] * a.stride_w) + max(w.shape[1], w.shape[2]) > INT32_MAX:
        return "has a window that overflows 32-bit size arithmetic"
    bound = transpose_conv_bound(np.asarray(w.data), None if b is None else b.data)
    if bound > INT32_MAX:
        return f"could accumulate {bound} in an int32 (its weights' magnitudes times 255 plus the bias)"
    return None
