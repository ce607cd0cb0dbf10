"""Lowering: turns each IR operator into a typed kernel call with its integer parameters."""

from __future__ import annotations

import re
from dataclasses import dataclass, field
from typing import Optional, Union

import numpy as np

from mcugen import quant
from mcugen.errors import UnsupportedError
from mcugen.ir import DType, Graph, Operator, OpType, Tensor, op_macs
from mcugen.planner import Alias, AliasKind, Buffer, Plan, plan_greedy
from mcugen.supported import check_graph, same_padding

C_KEYWORDS = {
    "auto", "break", "case", "char", "const", "continue", "default", "do", "double", "else", "enum",
    "extern", "float", "for", "goto", "if", "inline", "int", "long", "register", "restrict", "return",
    "short", "signed", "sizeof", "static", "struct", "switch", "typedef", "union", "unsigned", "void",
    "volatile", "while", "_Bool", "_Complex", "_Imaginary", "main",
}


def c_identifier(text: str, fallback: str = "model", max_len: int = 40) -> str:
    """A safe C identifier from untrusted text: [a-z0-9_], not starting with a digit, no keyword."""
    s = re.sub(r"[^A-Za-z0-9_]", "_", text or "").strip("_").lower()
    s = re.sub(r"_+", "_", s)[:max_len].strip("_")
    if not s:
        s = fallback
    if s[0].isdigit():
        s = f"m_{s}"
    if s in C_KEYWORDS or s.startswith("mcugen") or s.startswith("__"):
        s = f"m_{s}"
    return s


def c_comment_text(text: str, max_len: int = 80) -> str:
    """Untrusted text made safe inside a /* */ comment (no '*/', no newlines, printable ASCII)."""
    s = "".join(c if 32 <= ord(c) < 127 else "?" for c in text)
    s = s.replace("*/", "*_/").replace("/*", "/_*").replace("\\", "/")
    return s if len(s) <= max_len else s[: max_len - 3] + "..."


# ---- typed call arguments --------------------------------------------------------------


@dataclass(frozen=True)
class ArenaArg:
    offset: int
    ctype: str
    const: bool


@dataclass(frozen=True)
class ConstArg:
    cname: str


@dataclass(frozen=True)
class NullArg:
    pass


@dataclass(frozen=True)
class ParamsArg:
    pass


@dataclass(frozen=True)
class FlagArg:
    name: str
    value: int


@dataclass(frozen=True)
class SizeArg:
    name: str
    value: int


Arg = Union[ArenaArg, ConstArg, NullArg, ParamsArg, FlagArg, SizeArg]


@dataclass(frozen=True)
class ParamValue:
    """One field of a kernel's parameter struct: an int, a list of ints, or an exact float."""

    name: str
    value: Union[int, tuple[int, ...], float]
    kind: str = "int"  # int | ints | float | double


@dataclass
class ConstArray:
    cname: str
    ctype: str
    values: np.ndarray
    comment: str


@dataclass
class TensorPlacement:
    index: int
    name: str  # sanitized for comments
    shape: tuple[int, ...]
    dtype: DType
    offset: int
    nbytes: int


@dataclass
class Layer:
    index: int
    op: str
    kernel: Optional[str]  # None: nothing to do (in-place view)
    kernel_group: Optional[str]
    params_type: Optional[str]
    params: list[ParamValue]
    args: list[Arg]
    comment: list[str]
    macs: int
    output: int = -1  # tensor index of the layer's output


@dataclass
class Program:
    name: str
    model_comment: str
    layers: list[Layer]
    consts: list[ConstArray]
    tensors: dict[int, TensorPlacement]
    inputs: list[TensorPlacement]
    outputs: list[TensorPlacement]
    arena_bytes: int
    plan: Plan
    kernel_groups: list[str] = field(default_factory=list)

    @property
    def weight_bytes(self) -> int:
        return int(sum(c.values.nbytes for c in self.consts))


def _activation_range(t: Tensor, act) -> tuple[int, int]:
    return quant.activation_range(act, t.quant.s, t.quant.zp, t.dtype)


class _Lowerer:
    def __init__(self, graph: Graph, name: str, plan: Plan, placements: dict[int, TensorPlacement]):
        self.g = graph
        self.name = name
        self.plan = plan
        self.tp = placements
        self.consts: list[ConstArray] = []
        self.const_names: dict[tuple[int, str], str] = {}

    # -- helpers
    def arena(self, t: Tensor, const: bool) -> ArenaArg:
        return ArenaArg(offset=self.tp[t.index].offset, ctype=t.dtype.ctype, const=const)

    def const_array(self, layer: int, role: str, ctype: str, values: np.ndarray, comment: str) -> ConstArg:
        cname = f"{self.name}_l{layer}_{role}"
        self.consts.append(ConstArray(cname=cname, ctype=ctype, values=np.ascontiguousarray(values), comment=comment))
        return ConstArg(cname)

    def shape_str(self, t: Tensor) -> str:
        return "x".join(str(d) for d in t.shape) if t.shape else "scalar"

    def where(self, t: Tensor) -> str:
        p = self.tp[t.index]
        return f"[{self.shape_str(t)}] {t.dtype.value} @ arena[{p.offset}..{p.offset + p.nbytes})"

    def layer(self, op: Operator) -> Layer:
        fn = getattr(self, f"lower_{op.op.value.lower()}")
        layer = fn(op)
        x = [t for t in self.g.op_inputs(op) if t is not None and not t.is_const]
        o = self.g.t(op.outputs[0])
        head = f"Layer {op.index}: {op.op.value}"
        extra = getattr(self, "_detail", "")
        if extra:
            head += f" ({extra})"
            self._detail = ""
        lines = [head]
        for i, t in enumerate(x):
            lines.append(f"  in{i}:  {self.where(t)}  '{c_comment_text(t.name, 60)}'")
        lines.append(f"  out:  {self.where(o)}  '{c_comment_text(o.name, 60)}'")
        if layer.macs:
            lines.append(f"  MACs: {layer.macs}")
        layer.comment = lines
        return layer

    def make(self, op, kernel, group, ptype, params, args) -> Layer:
        return Layer(
            index=op.index,
            op=op.op.value,
            kernel=kernel,
            kernel_group=group,
            params_type=ptype,
            params=params,
            args=args,
            comment=[],
            macs=op_macs(self.g, op),
            output=op.outputs[0],
        )

    # -- convolutions
    def _conv_common(self, op: Operator, depthwise: bool) -> Layer:
        ins = self.g.op_inputs(op)
        x, w = ins[0], ins[1]
        b = ins[2] if len(ins) > 2 else None
        o = self.g.t(op.outputs[0])
        a = op.attrs
        out_c = o.shape[3]
        filt_scales = np.broadcast_to(w.quant.scale.astype(np.float32), (out_c,))
        mult, shift = quant.conv_per_channel_multipliers(x.quant.s, filt_scales, o.quant.s)
        lo, hi = _activation_range(o, a.activation)
        pad_t = same_padding(x.shape[1], w.shape[1], a.stride_h, a.dilation_h, o.shape[1], a.padding)
        pad_l = same_padding(x.shape[2], w.shape[2], a.stride_w, a.dilation_w, o.shape[2], a.padding)
        params = [
            ParamValue("batches", x.shape[0]),
            ParamValue("in_h", x.shape[1]),
            ParamValue("in_w", x.shape[2]),
            ParamValue("in_c", x.shape[3]),
            ParamValue("out_h", o.shape[1]),
            ParamValue("out_w", o.shape[2]),
            ParamValue("out_c", out_c),
            ParamValue("kernel_h", w.shape[1]),
            ParamValue("kernel_w", w.shape[2]),
            ParamValue("stride_h", a.stride_h),
            ParamValue("stride_w", a.stride_w),
            ParamValue("dilation_h", a.dilation_h),
            ParamValue("dilation_w", a.dilation_w),
            ParamValue("pad_top", pad_t),
            ParamValue("pad_left", pad_l),
            ParamValue("depth_multiplier", out_c // x.shape[3] if depthwise else 1),
            ParamValue("input_offset", -x.quant.zp),
            ParamValue("output_offset", o.quant.zp),
            ParamValue("act_min", lo),
            ParamValue("act_max", hi),
        ]
        kind = "dw" if depthwise else "conv"
        args = [
            ParamsArg(),
            self.arena(x, True),
            self.const_array(op.index, f"{kind}_weights", "int8_t", w.data, f"weights {list(w.shape)}"),
            self.const_array(op.index, "bias", "int32_t", b.data, f"bias [{b.size}]") if b is not None else NullArg(),
            self.const_array(op.index, "multiplier", "int32_t", mult, "requantization multipliers per channel"),
            self.const_array(op.index, "shift", "int32_t", shift, "requantization shifts per channel"),
            self.arena(o, False),
        ]
        self._detail = (
            f"{w.shape[1]}x{w.shape[2]} stride {a.stride_h}x{a.stride_w} dilation {a.dilation_h}x{a.dilation_w} "
            f"{a.padding.value} {a.activation.value}"
        )
        if depthwise:
            self._detail += f" depth multiplier {out_c // x.shape[3]}"
            return self.make(op, "mcugen_depthwise_conv2d_s8", "depthwise", "mcugen_conv_params_t", params, args)
        return self.make(op, "mcugen_conv2d_s8", "conv", "mcugen_conv_params_t", params, args)

    def lower_conv_2d(self, op):
        return self._conv_common(op, depthwise=False)

    def lower_depthwise_conv_2d(self, op):
        return self._conv_common(op, depthwise=True)

    def lower_fully_connected(self, op):
        ins = self.g.op_inputs(op)
        x, w = ins[0], ins[1]
        b = ins[2] if len(ins) > 2 else None
        o = self.g.t(op.outputs[0])
        units, depth = w.shape
        if w.quant.per_channel:
            mult, shift = quant.conv_per_channel_multipliers(x.quant.s, w.quant.scale.astype(np.float32), o.quant.s)
        else:
            m, s = quant.fc_multiplier(x.quant.s, w.quant.s, o.quant.s)
            mult, shift = np.array([m], np.int32), np.array([s], np.int32)
        lo, hi = _activation_range(o, op.attrs.activation)
        params = [
            ParamValue("batches", x.size // depth),
            ParamValue("depth", depth),
            ParamValue("units", units),
            ParamValue("per_channel", 1 if w.quant.per_channel else 0),
            ParamValue("input_offset", -x.quant.zp),
            ParamValue("output_offset", o.quant.zp),
            ParamValue("act_min", lo),
            ParamValue("act_max", hi),
        ]
        args = [
            ParamsArg(),
            self.arena(x, True),
            self.const_array(op.index, "fc_weights", "int8_t", w.data, f"weights {list(w.shape)}"),
            self.const_array(op.index, "bias", "int32_t", b.data, f"bias [{b.size}]") if b is not None else NullArg(),
            self.const_array(op.index, "multiplier", "int32_t", np.asarray(mult, np.int32), "requantization multipliers"),
            self.const_array(op.index, "shift", "int32_t", np.asarray(shift, np.int32), "requantization shifts"),
            self.arena(o, False),
        ]
        self._detail = f"{units} units, depth {depth}, {op.attrs.activation.value}"
        return self.make(op, "mcugen_fully_connected_s8", "fully_connected", "mcugen_fc_params_t", params, args)

    # -- element-wise
    def _eltwise(self, op, is_add: bool):
        ins = self.g.op_inputs(op)
        a, b = ins[0], ins[1]
        o = self.g.t(op.outputs[0])
        out4 = (1,) * (4 - len(o.shape)) + tuple(o.shape)

        def strides(t):
            s4 = (1,) * (4 - len(t.shape)) + tuple(t.shape)
            st = [0, 0, 0, 0]
            acc = 1
            for d in range(3, -1, -1):
                st[d] = 0 if s4[d] == 1 and out4[d] != 1 else acc
                acc *= s4[d]
            return tuple(st)

        lo, hi = _activation_range(o, op.attrs.activation)
        if is_add:
            p = quant.add_params(a.quant.s, b.quant.s, o.quant.s)
            q = [
                ParamValue("left_shift", p.left_shift),
                ParamValue("input1_multiplier", p.input1_multiplier),
                ParamValue("input1_shift", p.input1_shift),
                ParamValue("input2_multiplier", p.input2_multiplier),
                ParamValue("input2_shift", p.input2_shift),
                ParamValue("output_multiplier", p.output_multiplier),
                ParamValue("output_shift", p.output_shift),
            ]
        else:
            m, s = quant.mul_params(a.quant.s, b.quant.s, o.quant.s)
            q = [
                ParamValue("left_shift", 0),
                ParamValue("input1_multiplier", 0),
                ParamValue("input1_shift", 0),
                ParamValue("input2_multiplier", 0),
                ParamValue("input2_shift", 0),
                ParamValue("output_multiplier", m),
                ParamValue("output_shift", s),
            ]
        params = [
            ParamValue("out_shape", out4, "ints"),
            ParamValue("in1_strides", strides(a), "ints"),
            ParamValue("in2_strides", strides(b), "ints"),
            ParamValue("input1_offset", -a.quant.zp),
            ParamValue("input2_offset", -b.quant.zp),
            ParamValue("output_offset", o.quant.zp),
            *q,
            ParamValue("act_min", lo),
            ParamValue("act_max", hi),
        ]
        a_arg = self.arena(a, True) if not a.is_const else self.const_array(op.index, "operand1", "int8_t", a.data, "operand")
        b_arg = self.arena(b, True) if not b.is_const else self.const_array(op.index, "operand2", "int8_t", b.data, "operand")
        args = [ParamsArg(), a_arg, b_arg, self.arena(o, False)]
        self._detail = op.attrs.activation.value
        if is_add:
            return self.make(op, "mcugen_add_s8", "add", "mcugen_eltwise_params_t", params, args)
        return self.make(op, "mcugen_mul_s8", "mul", "mcugen_eltwise_params_t", params, args)

    def lower_add(self, op):
        return self._eltwise(op, True)

    def lower_mul(self, op):
        return self._eltwise(op, False)

    # -- pooling and reductions
    def _pool(self, op, is_avg: bool):
        x = self.g.op_inputs(op)[0]
        o = self.g.t(op.outputs[0])
        a = op.attrs
        lo, hi = _activation_range(o, a.activation)
        params = [
            ParamValue("batches", x.shape[0]),
            ParamValue("in_h", x.shape[1]),
            ParamValue("in_w", x.shape[2]),
            ParamValue("channels", x.shape[3]),
            ParamValue("out_h", o.shape[1]),
            ParamValue("out_w", o.shape[2]),
            ParamValue("filter_h", a.filter_h),
            ParamValue("filter_w", a.filter_w),
            ParamValue("stride_h", a.stride_h),
            ParamValue("stride_w", a.stride_w),
            ParamValue("pad_top", same_padding(x.shape[1], a.filter_h, a.stride_h, 1, o.shape[1], a.padding)),
            ParamValue("pad_left", same_padding(x.shape[2], a.filter_w, a.stride_w, 1, o.shape[2], a.padding)),
            ParamValue("act_min", lo),
            ParamValue("act_max", hi),
        ]
        args = [ParamsArg(), self.arena(x, True), self.arena(o, False)]
        self._detail = f"{a.filter_h}x{a.filter_w} stride {a.stride_h}x{a.stride_w} {a.padding.value} {a.activation.value}"
        if is_avg:
            return self.make(op, "mcugen_avgpool_s8", "avgpool", "mcugen_pool_params_t", params, args)
        return self.make(op, "mcugen_maxpool_s8", "maxpool", "mcugen_pool_params_t", params, args)

    def lower_average_pool_2d(self, op):
        return self._pool(op, True)

    def lower_max_pool_2d(self, op):
        return self._pool(op, False)

    def lower_mean(self, op):
        x = self.g.op_inputs(op)[0]
        o = self.g.t(op.outputs[0])
        mp = quant.mean_params(x.quant.s, o.quant.s, x.shape[1] * x.shape[2])
        params = [
            ParamValue("batches", x.shape[0]),
            ParamValue("in_h", x.shape[1]),
            ParamValue("in_w", x.shape[2]),
            ParamValue("channels", x.shape[3]),
            ParamValue("input_zero_point", x.quant.zp),
            ParamValue("output_zero_point", o.quant.zp),
            ParamValue("multiplier", mp.multiplier),
            ParamValue("shift", mp.shift),
        ]
        self._detail = f"axes {list(op.attrs.axes)} keep_dims {op.attrs.keep_dims}"
        return self.make(
            op, "mcugen_mean_hw_s8", "mean", "mcugen_mean_params_t", params, [ParamsArg(), self.arena(x, True), self.arena(o, False)]
        )

    def lower_softmax(self, op):
        x = self.g.op_inputs(op)[0]
        o = self.g.t(op.outputs[0])
        sp = quant.softmax_params(x.quant.s, op.attrs.beta)
        depth = x.shape[-1] if x.shape else 1
        params = [
            ParamValue("outer", x.size // depth),
            ParamValue("depth", depth),
            ParamValue("input_multiplier", sp.input_multiplier),
            ParamValue("input_left_shift", sp.input_left_shift),
            ParamValue("diff_min", sp.diff_min),
        ]
        self._detail = f"beta {op.attrs.beta:g}"
        return self.make(
            op, "mcugen_softmax_s8", "softmax", "mcugen_softmax_params_t", params, [ParamsArg(), self.arena(x, True), self.arena(o, False)]
        )

    def lower_logistic(self, op):
        x = self.g.op_inputs(op)[0]
        o = self.g.t(op.outputs[0])
        lp = quant.logistic_params(x.quant.s, x.quant.zp)
        params = [
            ParamValue("size", x.size),
            ParamValue("input_zero_point", lp.input_zero_point),
            ParamValue("input_range_radius", lp.input_range_radius),
            ParamValue("input_multiplier", lp.input_multiplier),
            ParamValue("input_left_shift", lp.input_left_shift),
        ]
        return self.make(
            op, "mcugen_logistic_s8", "logistic", "mcugen_logistic_params_t", params, [ParamsArg(), self.arena(x, True), self.arena(o, False)]
        )

    # -- data movement
    def lower_reshape(self, op):
        x = self.g.op_inputs(op)[0]
        o = self.g.t(op.outputs[0])
        if self.tp[x.index].offset == self.tp[o.index].offset:
            self._detail = "in place: a view of its input, no code"
            return self.make(op, None, None, None, [], [])
        return self.make(op, "mcugen_copy", "copy", None, [], [self.arena(x, True), self.arena(o, False), SizeArg("bytes", o.nbytes)])

    def lower_pad(self, op):
        x = self.g.op_inputs(op)[0]
        o = self.g.t(op.outputs[0])
        r = len(x.shape)
        pads = ((0, 0),) * (4 - r) + tuple(op.attrs.paddings)
        in4 = (1,) * (4 - r) + tuple(x.shape)
        out4 = (1,) * (4 - r) + tuple(o.shape)
        ins = self.g.op_inputs(op)
        pad_value = o.quant.zp
        if len(ins) > 2 and ins[2] is not None and ins[2].is_const:
            pad_value = int(np.asarray(ins[2].data).reshape(-1)[0])
        params = [
            ParamValue("in_shape", in4, "ints"),
            ParamValue("out_shape", out4, "ints"),
            ParamValue("before", tuple(p[0] for p in pads), "ints"),
            ParamValue("pad_value", pad_value),
        ]
        self._detail = f"paddings {[list(p) for p in op.attrs.paddings]}"
        return self.make(op, "mcugen_pad_s8", "pad", "mcugen_pad_params_t", params, [ParamsArg(), self.arena(x, True), self.arena(o, False)])

    def lower_transpose(self, op):
        x = self.g.op_inputs(op)[0]
        o = self.g.t(op.outputs[0])
        perm = op.attrs.perm
        r = len(x.shape)
        in_strides = [1] * r
        for d in range(r - 2, -1, -1):
            in_strides[d] = in_strides[d + 1] * x.shape[d + 1]
        params = [
            ParamValue("rank", r),
            ParamValue("elem_size", x.dtype.itemsize),
            ParamValue("out_shape", tuple(o.shape) + (1,) * (6 - r), "ints"),
            ParamValue("in_strides", tuple(in_strides[p] for p in perm) + (0,) * (6 - r), "ints"),
        ]
        self._detail = f"perm {list(perm)}"
        return self.make(
            op, "mcugen_transpose", "transpose", "mcugen_transpose_params_t", params, [ParamsArg(), self.arena(x, True), self.arena(o, False)]
        )

    def lower_quantize(self, op):
        x = self.g.op_inputs(op)[0]
        o = self.g.t(op.outputs[0])
        qmin, qmax = (0, 255) if o.dtype is DType.UINT8 else (-128, 127)
        out_u = FlagArg("out_unsigned", 1 if o.dtype is DType.UINT8 else 0)
        if x.dtype is DType.FLOAT32:
            params = [
                ParamValue("size", x.size),
                ParamValue("scale", float(np.float32(o.quant.s)), "float"),
                ParamValue("input_zero_point", 0),
                ParamValue("output_zero_point", o.quant.zp),
                ParamValue("multiplier", 0),
                ParamValue("shift", 0),
                ParamValue("qmin", qmin),
                ParamValue("qmax", qmax),
            ]
            return self.make(
                op, "mcugen_quantize_f32", "quantize", "mcugen_quantize_params_t", params,
                [ParamsArg(), self.arena(x, True), self.arena(o, False), out_u],
            )
        m, s = quant.requantize_params(x.quant.s, o.quant.s)
        params = [
            ParamValue("size", x.size),
            ParamValue("scale", 1.0, "float"),
            ParamValue("input_zero_point", x.quant.zp),
            ParamValue("output_zero_point", o.quant.zp),
            ParamValue("multiplier", m),
            ParamValue("shift", s),
            ParamValue("qmin", qmin),
            ParamValue("qmax", qmax),
        ]
        return self.make(
            op, "mcugen_requantize_8", "quantize", "mcugen_quantize_params_t", params,
            [ParamsArg(), self.arena(x, True), FlagArg("in_unsigned", 1 if x.dtype is DType.UINT8 else 0), self.arena(o, False), out_u],
        )

    def lower_dequantize(self, op):
        x = self.g.op_inputs(op)[0]
        o = self.g.t(op.outputs[0])
        params = [
            ParamValue("size", x.size),
            ParamValue("scale", float(np.float32(x.quant.s)), "double"),
            ParamValue("zero_point", x.quant.zp),
        ]
        return self.make(
            op, "mcugen_dequantize_8", "dequantize", "mcugen_dequantize_params_t", params,
            [ParamsArg(), self.arena(x, True), FlagArg("in_unsigned", 1 if x.dtype is DType.UINT8 else 0), self.arena(o, False)],
        )


# ---- live ranges and planning -----------------------------------------------------------


def live_buffers(g: Graph) -> tuple[list[Buffer], list[Alias]]:
    """One Buffer per activation tensor: live from the op that writes it to the last op that reads it.

    Graph inputs are live from step 0, graph outputs until the last step. Aliases: a RESHAPE's
    output may be a view of its input when the RESHAPE is the input's last reader.
    """
    n = len(g.operators)
    first: dict[int, int] = {i: 0 for i in g.inputs}
    last: dict[int, int] = {i: 0 for i in g.inputs}
    for op in g.operators:
        for i in op.inputs:
            if i >= 0 and not g.t(i).is_const:
                last[i] = max(last.get(i, 0), op.index)
        for i in op.outputs:
            first[i] = op.index
            last.setdefault(i, op.index)
    for i in g.outputs:
        last[i] = n - 1
    buffers = [
        Buffer(name=f"t{i}", size=max(g.t(i).nbytes, 1), first=first[i], last=max(last[i], first[i]))
        for i in sorted(first)
        if not g.t(i).is_const
    ]
    aliases = []
    for op in g.operators:
        if op.op is OpType.RESHAPE:
            src, dst = op.inputs[0], op.outputs[0]
            if not g.t(src).is_const and last.get(src) == op.index and src not in g.outputs:
                aliases.append(Alias(a=f"t{src}", b=f"t{dst}", kind=AliasKind.SAME))
    return buffers, aliases


def lower(graph: Graph, name: Optional[str] = None) -> Program:
    """Check support, plan the arena and lower every operator. Pure: returns a new Program."""
    check_graph(graph)
    cname = c_identifier(name or graph.name)
    buffers, aliases = live_buffers(graph)
    plan = plan_greedy(buffers, aliases)
    placements = {}
    for b in buffers:
        i = int(b.name[1:])
        t = graph.t(i)
        placements[i] = TensorPlacement(
            index=i, name=c_comment_text(t.name, 60), shape=tuple(t.shape), dtype=t.dtype, offset=plan.offsets[b.name], nbytes=t.nbytes
        )
    lw = _Lowerer(graph, cname, plan, placements)
    layers = []
    for op in graph.operators:
        try:
            layers.append(lw.layer(op))
        except (ValueError, OverflowError) as e:
            raise UnsupportedError(f"{graph.name}: operator {op.index} ({op.op.value}) cannot be lowered: {e}") from None
    groups = sorted({l.kernel_group for l in layers if l.kernel_group})
    return Program(
        name=cname,
        model_comment=c_comment_text(graph.name, 60),
        layers=layers,
        consts=lw.consts,
        tensors=placements,
        inputs=[placements[i] for i in graph.inputs],
        outputs=[placements[i] for i in graph.outputs],
        arena_bytes=plan.arena_bytes,
        plan=plan,
        kernel_groups=groups,
    )
