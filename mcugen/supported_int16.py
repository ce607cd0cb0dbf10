"""Support rules of 16x8 models (int16 activations, int8 weights, int64 bias), listed in mcugen.supported.CONSTRAINTS."""

from __future__ import annotations

import math
from typing import Optional

import numpy as np

from mcugen.ir import DType, Graph, Operator, OpType

# The operators mcugen runs on int16 activations (QUANTIZE/DEQUANTIZE have their own type rules).
INT16_OPS = (
    OpType.CONV_2D, OpType.DEPTHWISE_CONV_2D, OpType.FULLY_CONNECTED, OpType.ADD, OpType.SUB, OpType.SOFTMAX,
    OpType.PAD, OpType.LEAKY_RELU,
)
INT16_OP_NAMES = ", ".join(t.value for t in INT16_OPS) + ", SLICE, STRIDED_SLICE, RESHAPE, TRANSPOSE"


def is_int16(g: Graph, op: Operator) -> bool:
    """The operator reads int16 activations and writes int16 ones (a 16x8 layer)."""
    x = g.op_inputs(op)[0]
    o = g.t(op.outputs[0])
    return x is not None and x.dtype is DType.INT16 and o.dtype is DType.INT16


def _is_pot(scale: float) -> bool:
    """TFLite's CheckedLog2: log2(scale) within 1e-3 of an integer."""
    s = float(np.float32(scale))
    if not (math.isfinite(s) and s > 0.0):
        return False
    lg = math.log2(s)
    return abs(lg - round(lg)) < 1e-3


def c_int16(g: Graph, op: Operator) -> Optional[str]:
    """int16 activations (16x8): symmetric per-tensor quantization (zero point 0) on every int16 input and output"""
    if not is_int16(g, op):
        return None
    n = 2 if op.op in (OpType.ADD, OpType.SUB) else 1
    for t in (*g.op_inputs(op)[:n], g.t(op.outputs[0])):
        if t.dtype is not DType.INT16 or t.quant is None:
            return f"mixes int16 with tensor {t.index} of type {t.dtype.value}"
        if t.quant.per_channel or int(t.quant.zp) != 0:
            return f"int16 tensor {t.index} has zero point {t.quant.zp}{' (per channel)' if t.quant.per_channel else ''}"
    return None


def c_int16_bias(g: Graph, op: Operator) -> Optional[str]:
    """16x8 CONV_2D/DEPTHWISE_CONV_2D/FULLY_CONNECTED: a constant int64 bias (without one, or with an int32 one, tflite-runtime and TFLite Micro accumulate differently); per-channel requantization shifts within TFLite's [-31, 7]"""
    if not is_int16(g, op):
        return None
    ins = g.op_inputs(op)
    x, w = ins[0], ins[1]
    b = ins[2] if len(ins) > 2 else None
    o = g.t(op.outputs[0])
    if b is None or not b.is_const or b.dtype is not DType.INT64:
        return "has no bias" if b is None else f"has bias tensor {b.index} of type {b.dtype.value}"
    from mcugen import quant

    n = o.shape[-1]
    if op.op is OpType.FULLY_CONNECTED and not w.quant.per_channel:
        shifts = [quant.fc_multiplier(x.quant.s, w.quant.s, o.quant.s)[1]]
    else:
        shifts = quant.conv_per_channel_multipliers(
            x.quant.s, np.broadcast_to(w.quant.scale.astype(np.float32), (n,)), o.quant.s)[1]
    bad = [int(s) for s in np.asarray(shifts).reshape(-1) if not -31 <= int(s) <= 7]
    if bad:
        return f"needs a requantization shift of {bad[0]}"
    return None


def c_int16_add(g: Graph, op: Operator) -> Optional[str]:
    """16x8 ADD/SUB: pot_scale_int16 false or a scale that is not a power of two (TFLite Micro has only the general path); output multiplier below 1"""
    if not is_int16(g, op):
        return None
    a, b = g.op_inputs(op)[:2]
    o = g.t(op.outputs[0])
    if op.attrs.pot_scale_int16 and all(_is_pot(t.quant.s) for t in (a, b, o)):
        return ("sets pot_scale_int16 with power-of-two scales: tflite-runtime takes its power-of-two path there "
                "and TFLite Micro its general one, so there is no exact result to match")
    twice_max = 2.0 * max(a.quant.s, b.quant.s)
    m = twice_max / ((1 << 15) * float(np.float32(o.quant.s)))
    if not 0.0 < m < 1.0:
        return f"has output scale {o.quant.s} for input scales {a.quant.s} and {b.quant.s} (output multiplier {m})"
    return None


def c_int16_softmax(g: Graph, op: Operator) -> Optional[str]:
    """16x8 SOFTMAX: output scale 1/32768, zero point 0"""
    if not is_int16(g, op):
        return None
    o = g.t(op.outputs[0])
    if abs(o.quant.s - 1.0 / 32768) > 0.001 / 32768 or o.quant.zp != 0:
        return f"output has scale {o.quant.s} and zero point {o.quant.zp}"
    return None


def leaky_relu_int16_gap(in_scale: float, out_scale: float, alpha: float) -> int:
    """On how many of the 65536 int16 inputs tflite-runtime's LEAKY_RELU (multipliers computed
    in float32) and TFLite Micro's (computed in double, as its build does) differ."""
    from mcugen import quant

    f = np.float32
    x = np.arange(-32768, 32768, dtype=np.int64)

    def run(identity: float, negative: float) -> np.ndarray:
        m_id, s_id = quant.quantize_multiplier(identity)
        m_a, s_a = quant.quantize_multiplier(negative)
        pos = np.asarray(quant.multiply_by_quantized_multiplier(x, m_id, s_id), dtype=np.int64)
        neg = np.asarray(quant.multiply_by_quantized_multiplier(x, m_a, s_a), dtype=np.int64)
        return np.clip(np.where(x >= 0, pos, neg), -32768, 32767)

    s_in, s_out, a = f(in_scale), f(out_scale), f(alpha)
    runtime = run(float(s_in / s_out), float(f(s_in * a) / s_out))
    micro = run(float(s_in) / float(s_out), float(s_in) * float(a) / float(s_out))
    return int(np.count_nonzero(runtime != micro))


def c_int16_leaky_relu(g: Graph, op: Operator) -> Optional[str]:
    """16x8 LEAKY_RELU: only where tflite-runtime (multipliers in float32) and TFLite Micro (in double) agree on every int16 input"""
    if not is_int16(g, op):
        return None
    x, o = g.op_inputs(op)[0], g.t(op.outputs[0])
    gap = leaky_relu_int16_gap(x.quant.s, o.quant.s, op.attrs.alpha)
    if gap:
        return (f"has input scale {x.quant.s}, output scale {o.quant.s} and alpha {op.attrs.alpha:g}, where the two "
                f"oracles' int16 results differ on {gap} of the 65536 inputs, so there is no exact result")
    return None
