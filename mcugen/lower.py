"""Lowering: turns each IR operator into a typed kernel call with its integer parameters."""

from __future__ import annotations

import re
from dataclasses import dataclass, field
from typing import Optional, Union

import numpy as np

from mcugen import quant
from mcugen.errors import McugenError, UnsupportedError
from mcugen.fold import fold_constants
from mcugen.lower_int16 import Int16Lowering, uses_int16
from mcugen.lower_io import IoLowering
from mcugen.lower_ops import OpsLowering
from mcugen.fusion import Chain, Stage, find_chains, window_of
from mcugen.ir import DType, Graph, Operator, OpType, Tensor, op_macs
from mcugen.passes import Buffers, Schedule, Step, fold_pads, tensor_buffer
from mcugen.arena import PlannedSchedule, choose_chains, live_ranges, plan_schedule
from mcugen.planner import Alias, Buffer, Plan, verify
from mcugen.geometry import same_padding
from mcugen.supported import check_graph

# How the arena is planned: "layerwise" runs one operator at a time (with the in-place and
# overlap rules of mcugen.passes); "fused" also runs chains of convolutions a few rows at a
# time (mcugen.fusion), each chosen only where it lowers the planned arena.
STRATEGIES = ("layerwise", "fused")

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
    s = s.replace("\\", "/")  # first: a backslash must not turn into half of a '*/'
    s = s.replace("*/", "*_/").replace("/*", "/_*")
    s = s if len(s) <= max_len else s[: max_len - 3] + "..."
    assert "*/" not in s and "/*" not in s
    return s


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
class ScratchPlacement:
    step: int
    offset: int
    nbytes: int


@dataclass
class Layer:
    index: int  # position in the generated code (the schedule step)
    op: str  # the operator's type, or "CHAIN" for a fused chain
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
    strategy: str = "layerwise"
    schedule: Optional[Schedule] = None
    buffers: tuple[Buffer, ...] = ()  # what the plan places (verify(buffers, plan, aliases))
    aliases: tuple[Alias, ...] = ()
    scratch: dict[int, ScratchPlacement] = field(default_factory=dict)  # step -> its scratch
    # Per layer boundary (0: before layer 0, k: after layer k-1), the merged byte ranges
    # [start, end) of the arena that hold data still needed; everything else is dead.
    live_ranges: list[list[tuple[int, int]]] = field(default_factory=list)
    # --stream-inputs: the cases of <name>_input_write() (mcugen.stream_input.InputWriter)
    writers: list = field(default_factory=list)

    @property
    def weight_bytes(self) -> int:
        return int(sum(c.values.nbytes for c in self.consts))

    @property
    def scratch_bytes(self) -> int:
        """The largest scratch (ring and pixel buffers, depthwise planes) of one layer."""
        return max((sp.nbytes for sp in self.scratch.values()), default=0)


def channel_multipliers(x: Tensor, w: Tensor, o: Tensor, channels: int) -> tuple[np.ndarray, np.ndarray]:
    """Per output channel, the requantization multiplier and shift of a convolution-like layer
    (CONV_2D, DEPTHWISE_CONV_2D, TRANSPOSE_CONV) from x to o through weights w; per-tensor
    weights repeat their one scale."""
    filt_scales = np.broadcast_to(w.quant.scale.astype(np.float32), (channels,))
    return quant.conv_per_channel_multipliers(x.quant.s, filt_scales, o.quant.s)


def _activation_range(t: Tensor, act) -> tuple[int, int]:
    return quant.activation_range(act, t.quant.s, t.quant.zp, t.dtype)


class _Lowerer(Int16Lowering, OpsLowering, IoLowering):
    def __init__(
        self,
        schedule: Schedule,
        name: str,
        plan: Plan,
        placements: dict[int, TensorPlacement],
        bufs: Buffers,
        scratch: dict[int, ScratchPlacement],
    ):
        self.g = schedule.graph
        self.s = schedule
        self.name = name
        self.plan = plan
        self.tp = placements
        self.bufs = bufs
        self.scratch = scratch
        self.step = 0
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

    def layer(self, k: int, step: Step) -> Layer:
        self.step = k
        if step.chain is not None:
            return self.lower_chain(step.chain)
        op = self.s.op(step.ops[0])
        fn = getattr(self, f"lower_{op.op.value.lower()}")
        if uses_int16(self.g, op):
            fn = getattr(self, f"lower_{op.op.value.lower()}_s16", fn)  # 16x8 layers: mcugen.lower_int16
        layer = fn(op)
        x = [t for t in self.g.op_inputs(op) if t is not None and not t.is_const]
        o = self.g.t(op.outputs[0])
        head = f"Layer {k}: {op.op.value}"
        extra = getattr(self, "_detail", "")
        if extra:
            head += f" ({extra})"
            self._detail = ""
        if op.index != k:
            head += f", operator {op.index}"
        lines = [head]
        for i, t in enumerate(x):
            lines.append(f"  in{i}:  {self.where(t)}  '{c_comment_text(t.name, 60)}'")
        lines.append(f"  out:  {self.where(o)}  '{c_comment_text(o.name, 60)}'")
        lines += self.sharing_lines(x, o)
        if layer.macs:
            lines.append(f"  MACs: {layer.macs}")
        layer.comment = lines
        return layer

    def sharing_lines(self, inputs: list[Tensor], o: Tensor) -> list[str]:
        """Comment lines saying how the output shares bytes with an input, and the scratch."""
        lines = []
        po = self.tp[o.index]
        for t in inputs:
            pi = self.tp[t.index]
            lo, hi = max(pi.offset, po.offset), min(pi.offset + pi.nbytes, po.offset + po.nbytes)
            if hi > lo:
                how = "in place" if pi.offset == po.offset else f"{hi - lo} bytes overlap, output {po.offset - pi.offset:+d} bytes from the input"
                lines.append(f"  shares bytes with its input (consumed first): {how}")
        sp = self.scratch.get(self.step)
        if sp is not None:
            lines.append(f"  scratch: {sp.nbytes} bytes @ arena[{sp.offset}..{sp.offset + sp.nbytes})")
        return lines

    def scratch_arg(self) -> ArenaArg:
        return ArenaArg(offset=self.scratch[self.step].offset, ctype="int8_t", const=False)

    def make(self, op, kernel, group, ptype, params, args) -> Layer:
        return Layer(
            index=self.step,
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
        mult, shift = channel_multipliers(x, w, o, out_c)
        lo, hi = _activation_range(o, a.activation)
        win = window_of(self.g, op, self.s.pads)
        pad_t, pad_l = win.pad_top, win.pad_left
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
            self.const_array(op.index, "bias", b.dtype.ctype, b.data, f"bias [{b.size}]") if b is not None else NullArg(),
            self.const_array(op.index, "multiplier", "int32_t", mult, "requantization multipliers per channel"),
            self.const_array(op.index, "shift", "int32_t", shift, "requantization shifts per channel"),
            self.arena(o, False),
        ]
        self._detail = (
            f"{w.shape[1]}x{w.shape[2]} stride {a.stride_h}x{a.stride_w} dilation {a.dilation_h}x{a.dilation_w} "
            f"{a.padding.value} {a.activation.value}"
        )
        if op.index in self.s.pads:
            fp = self.s.pads[op.index]
            self._detail += f" with the PAD before it folded in (top {fp.top}, bottom {fp.bottom}, left {fp.left}, right {fp.right})"
        if depthwise:
            self._detail += f" depth multiplier {out_c // x.shape[3]}"
            in_place = self.bufs.memory[self.step].in_place_depthwise and self.tp[x.index].offset == self.tp[o.index].offset
            if in_place:
                self._detail += ", in place over its input channel by channel"
                return self.make(
                    op, "mcugen_depthwise_conv2d_inplace_s8", "depthwise_inplace", "mcugen_conv_params_t", params, args + [self.scratch_arg()]
                )
            return self.make(op, "mcugen_depthwise_conv2d_s8", "depthwise", "mcugen_conv_params_t", params, args)
        return self.make(op, "mcugen_conv2d_s8", "conv", "mcugen_conv_params_t", params, args)

    # -- fused chains
    def _stage_params(self, name: str, stage: Stage) -> tuple[list[ParamValue], list[Arg], Tensor, Tensor]:
        op = self.s.op(stage.op)
        ins = self.g.op_inputs(op)
        x, w = ins[0], ins[1]
        b = ins[2] if len(ins) > 2 else None
        o = self.g.t(op.outputs[0])
        win = stage.window
        mult, shift = channel_multipliers(x, w, o, win.out_c)
        lo, hi = _activation_range(o, op.attrs.activation)
        fields = [
            ("in_h", win.in_h), ("in_w", win.in_w), ("in_c", win.in_c),
            ("out_h", win.out_h), ("out_w", win.out_w), ("out_c", win.out_c),
            ("kernel_h", win.kernel_h), ("kernel_w", win.kernel_w),
            ("stride_h", win.stride_h), ("stride_w", win.stride_w),
            ("dilation_h", win.dilation_h), ("dilation_w", win.dilation_w),
            ("pad_top", win.pad_top), ("pad_left", win.pad_left),
            ("depth_multiplier", stage.depth_multiplier),
            ("input_offset", -x.quant.zp), ("output_offset", o.quant.zp),
            ("act_min", lo), ("act_max", hi),
        ]  # fmt: skip
        params = [ParamValue(f"{name}.{k}", int(v)) for k, v in fields]
        kind = "dw" if stage.depthwise else "conv"
        args = [
            self.const_array(op.index, f"{kind}_weights", "int8_t", w.data, f"weights {list(w.shape)} (chain stage {name.upper()})"),
            self.const_array(op.index, "bias", "int32_t", b.data, f"bias [{b.size}]") if b is not None else NullArg(),
            self.const_array(op.index, "multiplier", "int32_t", mult, "requantization multipliers per channel"),
            self.const_array(op.index, "shift", "int32_t", shift, "requantization shifts per channel"),
        ]
        return params, args, x, o

    def lower_chain(self, chain: Chain) -> Layer:
        g = self.g
        x, y = g.t(chain.input), g.t(chain.output)
        params = [
            ParamValue("has_a", int(chain.a is not None)),
            ParamValue("has_c", int(chain.c is not None)),
            ParamValue("ring_rows", chain.ring_rows),
        ]
        args: list[Arg] = [ParamsArg(), self.arena(x, True)]
        lines = [f"Layer {self.step}: CHAIN of operators {', '.join(str(i) for i in chain.ops)} fused, computed row by row"]
        value = None
        for name, stage in (("a", chain.a), ("b", chain.b), ("c", chain.c)):
            if stage is None:
                args += [NullArg()] * 4
                continue
            p, a, sx, so = self._stage_params(name, stage)
            params += p
            args += a
            value = so
            op = self.s.op(stage.op)
            win = stage.window
            role = {"a": "rows into the ring", "b": "one pixel at a time" if chain.c else "output rows", "c": "per pixel"}[name]
            lines.append(
                f"  {name.upper()}: operator {op.index} {op.op.value} {win.kernel_h}x{win.kernel_w} stride {win.stride_h}x{win.stride_w} "
                f"pad top {win.pad_top} left {win.pad_left} {op.attrs.activation.value}: "
                f"[{self.shape_str(sx)}] -> [{self.shape_str(so)}], {role}"
            )
        res = [ParamValue("residual.enabled", 0)]
        if chain.add is not None:
            add = self.s.op(chain.add)
            z = g.t(add.outputs[0])  # the chain's output, unless an FC follows
            p = quant.add_params(g.t(add.inputs[0]).quant.s, g.t(add.inputs[1]).quant.s, z.quant.s)
            residual_first = add.inputs[0] == chain.input
            r_mult, r_shift = (p.input1_multiplier, p.input1_shift) if residual_first else (p.input2_multiplier, p.input2_shift)
            v_mult, v_shift = (p.input2_multiplier, p.input2_shift) if residual_first else (p.input1_multiplier, p.input1_shift)
            lo, hi = _activation_range(z, add.attrs.activation)
            res = [
                ParamValue("residual.enabled", 1),
                ParamValue("residual.left_shift", p.left_shift),
                ParamValue("residual.value_offset", -value.quant.zp),
                ParamValue("residual.value_multiplier", v_mult),
                ParamValue("residual.value_shift", v_shift),
                ParamValue("residual.residual_offset", -x.quant.zp),
                ParamValue("residual.residual_multiplier", r_mult),
                ParamValue("residual.residual_shift", r_shift),
                ParamValue("residual.output_multiplier", p.output_multiplier),
                ParamValue("residual.output_shift", p.output_shift),
                ParamValue("residual.output_offset", z.quant.zp),
                ParamValue("residual.act_min", lo),
                ParamValue("residual.act_max", hi),
            ]
            lines.append(f"  ADD: operator {add.index} with the chain input (residual) {add.attrs.activation.value}")
        params += res
        if chain.fc is not None:
            fc = self.s.op(chain.fc)
            fins = self.g.op_inputs(fc)
            v, w = fins[0], fins[1]
            b = fins[2] if len(fins) > 2 else None
            if w.quant.per_channel:
                mult, shift = quant.conv_per_channel_multipliers(v.quant.s, w.quant.scale.astype(np.float32), y.quant.s)
            else:
                m, sh = quant.fc_multiplier(v.quant.s, w.quant.s, y.quant.s)
                mult, shift = np.array([m], np.int32), np.array([sh], np.int32)
            lo, hi = _activation_range(y, fc.attrs.activation)
            params += [
                ParamValue("fc.enabled", 1),
                ParamValue("fc.units", chain.fc_units),
                ParamValue("fc.depth", w.shape[1]),
                ParamValue("fc.per_channel", int(w.quant.per_channel)),
                ParamValue("fc.input_offset", -v.quant.zp),
                ParamValue("fc.output_offset", y.quant.zp),
                ParamValue("fc.act_min", lo),
                ParamValue("fc.act_max", hi),
            ]
            args += [
                self.const_array(fc.index, "fc_weights", "int8_t", w.data, f"weights {list(w.shape)} (chain's fully connected)"),
                self.const_array(fc.index, "bias", "int32_t", b.data, f"bias [{b.size}]") if b is not None else NullArg(),
                self.const_array(fc.index, "multiplier", "int32_t", np.asarray(mult, np.int32), "requantization multipliers"),
                self.const_array(fc.index, "shift", "int32_t", np.asarray(shift, np.int32), "requantization shifts"),
            ]
            lines.append(
                f"  FC: operator {fc.index} FULLY_CONNECTED {chain.fc_units} units over the {w.shape[1]} values, "
                f"accumulated pixel by pixel ({chain.accumulator_bytes} bytes of int32 accumulators)"
            )
        else:
            params.append(ParamValue("fc.enabled", 0))
            args += [NullArg()] * 4
        args += [self.scratch_arg(), self.arena(y, False)]
        if chain.a is not None:
            aw = chain.a.window
            lines.append(
                f"  ring: {chain.ring_rows} rows x {aw.out_w} x {aw.out_c} = {chain.ring_bytes} bytes of A's output"
                + (f", then a {chain.pixel_bytes}-byte pixel buffer" if chain.pixel_bytes else "")
            )
        elif chain.pixel_bytes:
            lines.append(f"  pixel buffer: {chain.pixel_bytes} bytes of B's output")
        lines.append(f"  tensors never stored: {', '.join('[' + self.shape_str(g.t(i)) + ']' for i in chain.internal)}")
        lines.append(f"  in0:  {self.where(x)}  '{c_comment_text(x.name, 60)}'")
        lines.append(f"  out:  {self.where(y)}  '{c_comment_text(y.name, 60)}'")
        lines += self.sharing_lines([x], y)
        macs = sum(op_macs(g, self.s.op(i)) for i in chain.ops)
        lines.append(f"  MACs: {macs}")
        layer = Layer(
            index=self.step,
            op="CHAIN",
            kernel="mcugen_chain_s8",
            kernel_group="chain",
            params_type="mcugen_chain_params_t",
            params=params,
            args=args,
            comment=lines,
            macs=macs,
            output=chain.output,
        )
        return layer

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
            self.const_array(op.index, "bias", b.dtype.ctype, b.data, f"bias [{b.size}]") if b is not None else NullArg(),
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

    def lower_sum(self, op):
        return self.lower_mean(op)

    def lower_mean(self, op):
        x = self.g.op_inputs(op)[0]
        o = self.g.t(op.outputs[0])
        axes = op.attrs.axes
        count = int(np.prod([x.shape[d] for d in axes])) if axes else 1
        mp = quant.mean_params(x.quant.s, o.quant.s, count, op.op is OpType.MEAN)  # SUM: without the 1/count
        self._detail = f"axes {list(axes)} keep_dims {op.attrs.keep_dims}"
        if len(x.shape) == 4 and tuple(axes) == (1, 2):
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
            return self.make(
                op, "mcugen_mean_hw_s8", "mean", "mcugen_mean_params_t", params, [ParamsArg(), self.arena(x, True), self.arena(o, False)]
            )
        # Any other axes: one block of reduced axes, or the generic reduction over a 6-D view.
        return self._reduction(op, "reduce", mp.multiplier, mp.shift)

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
        """LOGISTIC as a 256-entry table in flash, exactly tflite-runtime's reference kernel
        (its PopulateLookupTable: float32 arithmetic with the host's libm expf, computed here at
        generation time). TFLite Micro's fixed-point kernel differs by 1 LSB at ~0.1% of input
        scales; `validate` names such oracle disagreements (tflite-runtime is the reference)."""
        x = self.g.op_inputs(op)[0]
        o = self.g.t(op.outputs[0])
        table = quant.logistic_lut_tflite(x.quant.s, x.quant.zp, o.quant.s, o.quant.zp, x.dtype)
        args = [
            SizeArg("size", x.size),
            self.const_array(op.index, "logistic_table", "int8_t", np.asarray(table, np.int8), "LOGISTIC table, indexed by input + 128"),
            self.arena(x, True),
            self.arena(o, False),
        ]
        self._detail = "256-entry table"
        return self.make(op, "mcugen_table_s8", "table", None, [], args)

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


def lower(
    graph: Graph,
    name: Optional[str] = None,
    strategy: str = "fused",
    fusion: str = "auto",
    extra_scratch: Optional[dict[int, int]] = None,
) -> Program:
    """Check support, fold PADs, choose the schedule, plan the arena and lower every step.

    `strategy` is one of STRATEGIES. With "fused", `fusion` says which chains: "auto" (only
    those that lower the arena, see `choose_chains`) or "all" (every chain found; for tests
    and measurements). `extra_scratch` (output tensor index -> bytes) plans the scratch a
    kernel pass needs with the tensors (see `passes.schedule_buffers`). Pure: returns a new Program.
    """
    if strategy not in STRATEGIES:
        raise McugenError(f"strategy {strategy!r} is not supported; choose one of {', '.join(STRATEGIES)}")
    if fusion not in ("auto", "all"):
        raise McugenError(f"fusion {fusion!r} is not supported; choose auto or all")
    graph = fold_constants(graph)
    check_graph(graph)
    folded, pads = fold_pads(graph)
    candidates = find_chains(folded, pads) if strategy == "fused" else []
    if candidates and fusion == "auto":
        planned = choose_chains(folded, pads, candidates, extra_scratch)
    else:
        planned = plan_schedule(folded, pads, candidates, extra_scratch)
    verify(planned.bufs.buffers, planned.plan, planned.bufs.aliases)
    return emit(planned, c_identifier(name or graph.name), graph.name, strategy)


def emit(planned: PlannedSchedule, cname: str, model_name: str, strategy: str) -> Program:
    """Lower every step of a planned schedule into a typed kernel call (any verified plan)."""
    schedule, bufs, plan = planned.schedule, planned.bufs, planned.plan
    folded = schedule.graph
    placements = {}
    scratch = {}
    for b in bufs.buffers:
        if b.name.startswith("scratch"):
            k = int(b.name[len("scratch") :])
            scratch[k] = ScratchPlacement(step=k, offset=plan.offsets[b.name], nbytes=b.size)
            continue
        i = int(b.name[1:])
        t = folded.t(i)
        placements[i] = TensorPlacement(
            index=i, name=c_comment_text(t.name, 60), shape=tuple(t.shape), dtype=t.dtype, offset=plan.offsets[b.name], nbytes=t.nbytes
        )
    lw = _Lowerer(schedule, cname, plan, placements, bufs, scratch)
    layers = []
    for k, step in enumerate(schedule.steps):
        try:
            layers.append(lw.layer(k, step))
        except (ValueError, OverflowError) as e:
            raise UnsupportedError(f"{model_name}: operator {step.ops[0]} cannot be lowered: {e}") from None
    groups = sorted({l.kernel_group for l in layers if l.kernel_group})
    inputs = {tensor_buffer(i) for i in folded.inputs}
    outputs = {tensor_buffer(i) for i in folded.outputs}
    return Program(
        name=cname,
        model_comment=c_comment_text(model_name, 60),
        layers=layers,
        consts=lw.consts,
        tensors=placements,
        inputs=[placements[i] for i in folded.inputs],
        outputs=[placements[i] for i in folded.outputs],
        arena_bytes=plan.arena_bytes,
        plan=plan,
        kernel_groups=groups,
        strategy=strategy,
        schedule=schedule,
        buffers=bufs.buffers,
        aliases=bufs.aliases,
        scratch=scratch,
        live_ranges=live_ranges(bufs, plan, len(schedule.steps), inputs, outputs),
    )
