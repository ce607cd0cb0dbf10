"""Lowering of 16x8 layers (int16 activations, int8 weights, int64 bias) to the portable int16 kernels (a mixin of lower._Lowerer)."""

from __future__ import annotations

import dataclasses

import numpy as np

from mcugen import quant, quant_int16
from mcugen.geometry import broadcast_strides
from mcugen.ir import DType, Graph, Operator
from mcugen.lower_ops import L


def uses_int16(g: Graph, op: Operator) -> bool:
    """The operator reads or writes an int16 activation (it takes its `lower_<op>_s16`)."""
    ts = [t for t in (*g.op_inputs(op), *g.op_outputs(op)) if t is not None and not t.is_const]
    return any(t.dtype is DType.INT16 for t in ts)


def _check_shifts(shift: np.ndarray) -> None:
    bad = [int(s) for s in np.asarray(shift).reshape(-1) if not -31 <= int(s) <= 7]
    if bad:
        raise ValueError(f"requantization shift {bad[0]} is outside TFLite's [-31, 7] for a 64-bit accumulator")


class Int16Lowering:
    """`lower_<op>_s16` for every operator mcugen runs on int16 activations; `self` is the
    `_Lowerer`. The layers keep the int8 lowering's parameter structs and call the kernels of
    templates/c/mcugen_kernels_int16.c.j2, which no kernel pass replaces (portable on every target)."""

    def _retarget(self, layer, kernel: str, group: str):
        return dataclasses.replace(layer, kernel=kernel, kernel_group=group)

    def _shifts_of(self, layer) -> np.ndarray:
        names = {a.cname for a in layer.args if isinstance(a, L.ConstArg)}
        return np.concatenate([c.values.reshape(-1) for c in self.consts if c.cname in names and c.cname.endswith("_shift")])

    # -- convolutions and FULLY_CONNECTED: the int8 parameters, an int64 bias, 64-bit requantization
    def lower_conv_2d_s16(self, op):
        layer = self._conv_common(op, depthwise=False)
        _check_shifts(self._shifts_of(layer))
        return self._retarget(layer, "mcugen_conv2d_s16", "conv_s16")

    def lower_depthwise_conv_2d_s16(self, op):
        layer = self._conv_common(op, depthwise=True)
        _check_shifts(self._shifts_of(layer))
        return self._retarget(layer, "mcugen_depthwise_conv2d_s16", "depthwise_s16")

    def lower_fully_connected_s16(self, op):
        layer = self.lower_fully_connected(op)
        _check_shifts(self._shifts_of(layer))
        return self._retarget(layer, "mcugen_fully_connected_s16", "fully_connected_s16")

    # -- ADD / SUB: TFLite's general int16 path (left shift 15)
    def _add_s16(self, op, subtract: int):
        a, b = self.g.op_inputs(op)[:2]
        o = self.g.t(op.outputs[0])
        out4 = (1,) * (4 - len(o.shape)) + tuple(o.shape)

        def strides(t):
            return broadcast_strides(tuple(t.shape), tuple(o.shape))

        p = quant.add_params(a.quant.s, b.quant.s, o.quant.s, left_shift=15)
        lo, hi = L._activation_range(o, op.attrs.activation)
        params = [
            L.ParamValue("out_shape", out4, "ints"),
            L.ParamValue("in1_strides", strides(a), "ints"),
            L.ParamValue("in2_strides", strides(b), "ints"),
            L.ParamValue("input1_offset", 0),
            L.ParamValue("input2_offset", 0),
            L.ParamValue("output_offset", 0),
            L.ParamValue("left_shift", p.left_shift),
            L.ParamValue("input1_multiplier", p.input1_multiplier),
            L.ParamValue("input1_shift", p.input1_shift),
            L.ParamValue("input2_multiplier", p.input2_multiplier),
            L.ParamValue("input2_shift", p.input2_shift),
            L.ParamValue("output_multiplier", p.output_multiplier),
            L.ParamValue("output_shift", p.output_shift),
            L.ParamValue("act_min", lo),
            L.ParamValue("act_max", hi),
        ]
        a_arg = self.arena(a, True) if not a.is_const else self.const_array(op.index, "operand1", "int16_t", a.data, "operand")
        b_arg = self.arena(b, True) if not b.is_const else self.const_array(op.index, "operand2", "int16_t", b.data, "operand")
        self._detail = f"int16, {op.attrs.activation.value}"
        return self.make(op, "mcugen_add_s16", "add_s16", "mcugen_eltwise_params_t", params,
                         [L.ParamsArg(), a_arg, b_arg, self.arena(o, False), L.FlagArg("subtract", subtract)])

    def lower_add_s16(self, op):
        return self._add_s16(op, 0)

    def lower_sub_s16(self, op):
        return self._add_s16(op, 1)

    # -- SOFTMAX: two 513-entry tables in flash (TFLite's LUTPopulate, computed here)
    def lower_softmax_s16(self, op):
        x = self.g.op_inputs(op)[0]
        o = self.g.t(op.outputs[0])
        depth = x.shape[-1] if x.shape else 1
        mult, shift = quant_int16.softmax_int16_multiplier(x.quant.s, op.attrs.beta)
        exp_table, reciprocal_table = quant_int16.softmax_int16_tables()
        params = [
            L.ParamValue("outer", x.size // depth),
            L.ParamValue("depth", depth),
            L.ParamValue("input_multiplier", mult),
            L.ParamValue("input_left_shift", shift),
        ]
        args = [
            L.ParamsArg(),
            self.const_array(op.index, "exp_table", "int16_t", exp_table, "exp on [-10, 0], 513 entries"),
            self.const_array(op.index, "reciprocal_table", "int16_t", reciprocal_table, "1 / (1 + x) on [0, 1], 513 entries"),
            self.arena(x, True),
            self.arena(o, False),
        ]
        self._detail = f"int16, beta {op.attrs.beta:g}"
        return self.make(op, "mcugen_softmax_s16", "softmax_s16", "mcugen_softmax_s16_params_t", params, args)

    # -- data movement and LEAKY_RELU
    def lower_pad_s16(self, op):
        return self._retarget(self.lower_pad(op), "mcugen_pad_s16", "pad_s16")

    def lower_slice_s16(self, op):
        return self._retarget(self._slice(op), "mcugen_slice_16", "slice_s16")

    def lower_strided_slice_s16(self, op):
        return self._retarget(self._slice(op), "mcugen_slice_16", "slice_s16")

    def lower_leaky_relu_s16(self, op):
        x = self.g.op_inputs(op)[0]
        o = self.g.t(op.outputs[0])
        m_id, s_id, m_a, s_a = quant.leaky_relu_multipliers(x.quant.s, o.quant.s, op.attrs.alpha)
        params = [
            L.ParamValue("size", x.size),
            L.ParamValue("identity_multiplier", m_id),
            L.ParamValue("identity_shift", s_id),
            L.ParamValue("alpha_multiplier", m_a),
            L.ParamValue("alpha_shift", s_a),
        ]
        self._detail = f"int16, alpha {op.attrs.alpha:g}"
        return self.make(op, "mcugen_leaky_relu_s16", "leaky_relu_s16", "mcugen_leaky_relu_params_t", params,
                         [L.ParamsArg(), self.arena(x, True), self.arena(o, False)])

    # -- QUANTIZE float32 -> int16 and DEQUANTIZE int16 -> float32: a 16x8 model's I/O
    def lower_quantize_s16(self, op):
        from mcugen.lower_io import quantize_call

        x = self.g.op_inputs(op)[0]
        o = self.g.t(op.outputs[0])
        self._detail = "float32 -> int16"
        return self.make(op, "mcugen_quantize_f32_s16", "quantize_s16", "mcugen_quantize_params_t", quantize_call(x, o).params,
                         [L.ParamsArg(), self.arena(x, True), self.arena(o, False)])

    def lower_dequantize_s16(self, op):
        from mcugen.lower_io import dequantize_params

        x = self.g.op_inputs(op)[0]
        o = self.g.t(op.outputs[0])
        params = dequantize_params(x)
        self._detail = "int16 -> float32"
        return self.make(op, "mcugen_dequantize_s16", "dequantize_s16", "mcugen_dequantize_params_t", params,
                         [L.ParamsArg(), self.arena(x, True), self.arena(o, False)])

