"""Lowering of the model I/O conversions, QUANTIZE and DEQUANTIZE (a mixin of lower._Lowerer), and the kernel call of a QUANTIZE that --stream-inputs moves into <name>_input_write()."""

from __future__ import annotations

from dataclasses import dataclass
from typing import Optional

import numpy as np

from mcugen import quant
from mcugen.ir import DType, Tensor
from mcugen.lower_ops import L


@dataclass(frozen=True)
class QuantizeCall:
    """How a QUANTIZE from `x` to the 8-bit `o` runs: which kernel of the "quantize" group,
    its parameter struct (None for the sign flip) and the signedness flags."""

    kernel: str
    params_type: Optional[str]
    params: list
    in_unsigned: int
    out_unsigned: int
    detail: str = ""


def quantize_call(x: Tensor, o: Tensor) -> QuantizeCall:
    """The kernel and parameters of QUANTIZE x -> o (float32, uint8 or int8 in; int8 or uint8 out;
    float32 to int16 for 16x8 models, whose kernel mcugen.lower_int16 names)."""
    qmin, qmax = {DType.UINT8: (0, 255), DType.INT16: (-32768, 32767)}.get(o.dtype, (-128, 127))
    out_u = 1 if o.dtype is DType.UINT8 else 0
    in_u = 1 if x.dtype is DType.UINT8 else 0
    if x.dtype is DType.FLOAT32:
        params = [
            L.ParamValue("size", x.size),
            L.ParamValue("scale", float(np.float32(o.quant.s)), "float"),
            L.ParamValue("input_zero_point", 0),
            L.ParamValue("output_zero_point", o.quant.zp),
            L.ParamValue("multiplier", 0),
            L.ParamValue("shift", 0),
            L.ParamValue("qmin", qmin),
            L.ParamValue("qmax", qmax),
        ]
        return QuantizeCall("mcugen_quantize_f32", "mcugen_quantize_params_t", params, in_u, out_u)
    if x.dtype is not o.dtype and x.quant.s == o.quant.s and o.quant.zp == x.quant.zp + (-128 if o.dtype is DType.INT8 else 128):
        # uint8 <-> int8 with scale ratio exactly 1: requantizing is x -/+ 128, i.e. x XOR 0x80.
        detail = f"{x.dtype.value} -> {o.dtype.value}, same scale, zero points {x.quant.zp} -> {o.quant.zp}: XOR 0x80"
        return QuantizeCall("mcugen_flip_sign_8", None, [], in_u, out_u, detail)
    m, s = quant.requantize_params(x.quant.s, o.quant.s)
    params = [
        L.ParamValue("size", x.size),
        L.ParamValue("scale", 1.0, "float"),
        L.ParamValue("input_zero_point", x.quant.zp),
        L.ParamValue("output_zero_point", o.quant.zp),
        L.ParamValue("multiplier", m),
        L.ParamValue("shift", s),
        L.ParamValue("qmin", qmin),
        L.ParamValue("qmax", qmax),
    ]
    return QuantizeCall("mcugen_requantize_8", "mcugen_quantize_params_t", params, in_u, out_u)


def dequantize_params(x: Tensor) -> list:
    """The mcugen_dequantize_params_t of DEQUANTIZE from `x` (int8, uint8 or int16) to float32."""
    return [
        L.ParamValue("size", x.size),
        L.ParamValue("scale", float(np.float32(x.quant.s)), "float"),
        L.ParamValue("zero_point", x.quant.zp),
    ]


class IoLowering:
    """`lower_quantize` and `lower_dequantize`; `self` is the `_Lowerer`."""

    def lower_quantize(self, op):
        x = self.g.op_inputs(op)[0]
        o = self.g.t(op.outputs[0])
        call = quantize_call(x, o)
        if call.detail:
            self._detail = call.detail
        src, dst = self.arena(x, True), self.arena(o, False)
        if call.kernel == "mcugen_quantize_f32":
            args = [L.ParamsArg(), src, dst, L.FlagArg("out_unsigned", call.out_unsigned)]
        elif call.kernel == "mcugen_flip_sign_8":
            args = [src, dst, L.SizeArg("size", x.size)]
        else:
            args = [L.ParamsArg(), src, L.FlagArg("in_unsigned", call.in_unsigned), dst, L.FlagArg("out_unsigned", call.out_unsigned)]
        return self.make(op, call.kernel, "quantize", call.params_type, call.params, args)

    def lower_dequantize(self, op):
        x = self.g.op_inputs(op)[0]
        o = self.g.t(op.outputs[0])
        params = dequantize_params(x)
        return self.make(
            op, "mcugen_dequantize_8", "dequantize", "mcugen_dequantize_params_t", params,
            [L.ParamsArg(), self.arena(x, True), L.FlagArg("in_unsigned", 1 if x.dtype is DType.UINT8 else 0), self.arena(o, False)],
        )
