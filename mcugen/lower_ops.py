"""Lowering of the data-movement, table, two-operand, index (ARG_MAX/ARG_MIN) and TRANSPOSE_CONV operators added for published MCU models (a mixin of lower._Lowerer)."""

from __future__ import annotations

import numpy as np

from mcugen import quant
from mcugen.geometry import broadcast_strides
from mcugen.ir import Activation


class _FromLower:
    """The typed-argument classes of mcugen.lower, looked up when called (lower imports this module)."""

    def __getattr__(self, name: str):
        from mcugen import lower

        return getattr(lower, name)


L = _FromLower()


def reduction_block(shape: tuple[int, ...], axes: tuple[int, ...]) -> "tuple[int, int, int] | None":
    """(outer, reduce, inner) when the reduced axes of `shape`, ignoring axes of size 1, are
    adjacent: the input is then [outer, reduce, inner] and the output [outer, inner]; else None."""
    rank = len(shape)
    reduced = {a % rank for a in axes} if rank else set()
    marks = [d in reduced for d in range(rank) if shape[d] != 1]
    sizes = [shape[d] for d in range(rank) if shape[d] != 1]
    if True not in marks:
        return None
    first = marks.index(True)
    last = len(marks) - 1 - marks[::-1].index(True)
    if not all(marks[first:last + 1]):
        return None
    prod = lambda v: int(np.prod(v)) if v else 1  # noqa: E731
    return prod(sizes[:first]), prod(sizes[first:last + 1]), prod(sizes[last + 1:])


class OpsLowering:
    """RELU/RELU_N1_TO_1/LEAKY_RELU tables, DEPTH_TO_SPACE/SPACE_TO_DEPTH, PADV2, CONCATENATION and
    RESIZE: each `lower_<op>` returns one typed kernel call; `self` is the `_Lowerer`, whose
    helpers (make, arena, const_array, tp, g) they use."""

    # -- element-wise activations as operators: a 256-entry table in flash
    def _activation_table(self, op, table: np.ndarray, what: str):
        x = self.g.op_inputs(op)[0]
        o = self.g.t(op.outputs[0])
        args = [
            L.SizeArg("size", x.size),
            self.const_array(op.index, "table", "int8_t", np.asarray(table, np.int8), f"{what} table, indexed by input + 128"),
            self.arena(x, True),
            self.arena(o, False),
        ]
        self._detail = "256-entry table"
        return self.make(op, "mcugen_table_s8", "table", None, [], args)

    def _relu_x(self, op, lo: float, hi: float):
        x = self.g.op_inputs(op)[0]
        o = self.g.t(op.outputs[0])
        values = np.arange(-128, 128)
        return self._activation_table(op, quant.relu_x_int8(values, x.quant.s, x.quant.zp, o.quant.s, o.quant.zp, lo, hi), op.op.value)

    def lower_relu(self, op):
        return self._relu_x(op, 0.0, float("inf"))

    def lower_relu_n1_to_1(self, op):
        return self._relu_x(op, -1.0, 1.0)

    def lower_relu6(self, op):
        return self._relu_x(op, 0.0, 6.0)

    def lower_leaky_relu(self, op):
        x = self.g.op_inputs(op)[0]
        o = self.g.t(op.outputs[0])
        table = quant.leaky_relu_int8(np.arange(-128, 128), x.quant.s, x.quant.zp, o.quant.s, o.quant.zp, op.attrs.alpha)
        return self._activation_table(op, table, f"LEAKY_RELU alpha {op.attrs.alpha:g}")

    def lower_tanh(self, op):
        x = self.g.op_inputs(op)[0]
        o = self.g.t(op.outputs[0])
        return self._activation_table(op, quant.tanh_lut_tflite(x.quant.s, x.quant.zp, o.quant.s, o.quant.zp), "TANH")

    def lower_hard_swish(self, op):
        x = self.g.op_inputs(op)[0]
        o = self.g.t(op.outputs[0])
        return self._activation_table(op, quant.hard_swish_int8(x.quant.s, x.quant.zp, o.quant.s, o.quant.zp), "HARD_SWISH")

    # -- block rearrangements: a 6-D transpose of a view
    def _depth_space(self, op, to_space: bool):
        x = self.g.op_inputs(op)[0]
        o = self.g.t(op.outputs[0])
        b = op.attrs.block
        n, h, w, c = x.shape
        if to_space:
            # in as [n, h, w, b, b, c']; out [n, h, b, w, b, c'] = in permuted (0, 1, 3, 2, 4, 5)
            view = (n, h, w, b, b, c // (b * b))
            perm = (0, 1, 3, 2, 4, 5)
        else:
            # in as [n, h', b, w', b, c]; out [n, h', w', b, b, c] = in permuted (0, 1, 3, 2, 4, 5)
            view = (n, h // b, b, w // b, b, c)
            perm = (0, 1, 3, 2, 4, 5)
        strides = [1] * 6
        for d in range(4, -1, -1):
            strides[d] = strides[d + 1] * view[d + 1]
        params = [
            L.ParamValue("rank", 6),
            L.ParamValue("elem_size", 1),
            L.ParamValue("out_shape", tuple(view[p] for p in perm), "ints"),
            L.ParamValue("in_strides", tuple(strides[p] for p in perm), "ints"),
        ]
        self._detail = f"block {b}, as a 6-D transpose"
        return self.make(
            op, "mcugen_transpose", "transpose", "mcugen_transpose_params_t", params, [L.ParamsArg(), self.arena(x, True), self.arena(o, False)]
        )

    def lower_depth_to_space(self, op):
        return self._depth_space(op, True)

    def lower_space_to_depth(self, op):
        return self._depth_space(op, False)

    def lower_padv2(self, op):
        return self.lower_pad(op)

    # -- concatenation
    def lower_concatenation(self, op):
        """The output as `outer` rows; each row holds, input after input, a slab of each input's
        bytes (its size along the axis times everything after the axis)."""
        ins = self.g.op_inputs(op)
        o = self.g.t(op.outputs[0])
        axis = op.attrs.axis
        outer = int(np.prod(o.shape[:axis])) if axis else 1
        inner = int(np.prod(o.shape[axis + 1 :]))
        offsets = np.array([self.tp[t.index].offset for t in ins], dtype=np.int32)
        slabs = np.array([t.shape[axis] * inner for t in ins], dtype=np.int32)
        params = [L.ParamValue("inputs", len(ins)), L.ParamValue("outer", outer), L.ParamValue("row_bytes", o.shape[axis] * inner)]
        args = [
            L.ParamsArg(),
            L.ArenaArg(offset=0, ctype="int8_t", const=True),
            self.const_array(op.index, "offsets", "int32_t", offsets, "arena offset of each input"),
            self.const_array(op.index, "slabs", "int32_t", slabs, "bytes of each input per output row"),
            self.arena(o, False),
        ]
        self._detail = f"{len(ins)} inputs along axis {axis}"
        return self.make(op, "mcugen_concat_8", "concat", "mcugen_concat_params_t", params, args)

    # -- resizing
    def _resize(self, op, bilinear: bool):
        x = self.g.op_inputs(op)[0]
        o = self.g.t(op.outputs[0])
        a = op.attrs
        params = [
            L.ParamValue("batches", x.shape[0]),
            L.ParamValue("in_h", x.shape[1]),
            L.ParamValue("in_w", x.shape[2]),
            L.ParamValue("channels", x.shape[3]),
            L.ParamValue("out_h", o.shape[1]),
            L.ParamValue("out_w", o.shape[2]),
        ]
        self._detail = f"{x.shape[1]}x{x.shape[2]} -> {o.shape[1]}x{o.shape[2]}, align_corners {a.align_corners}, half_pixel_centers {a.half_pixel_centers}"
        if not bilinear:
            ys = quant.nearest_neighbor_indices(o.shape[1], x.shape[1], a.align_corners, a.half_pixel_centers)
            xs = quant.nearest_neighbor_indices(o.shape[2], x.shape[2], a.align_corners, a.half_pixel_centers)
            args = [
                L.ParamsArg(),
                self.const_array(op.index, "rows", "int32_t", ys.astype(np.int32), "input row of each output row"),
                self.const_array(op.index, "cols", "int32_t", xs.astype(np.int32), "input column of each output column"),
                self.arena(x, True),
                self.arena(o, False),
            ]
            return self.make(op, "mcugen_resize_nearest_s8", "resize_nearest", "mcugen_resize_params_t", params, args)
        # Per output row and column: lower index, upper index, 10-bit fraction (TFLite's integer bilinear).
        ys = np.stack(quant.bilinear_coordinates(o.shape[1], x.shape[1], a.align_corners, a.half_pixel_centers), axis=1)
        xs = np.stack(quant.bilinear_coordinates(o.shape[2], x.shape[2], a.align_corners, a.half_pixel_centers), axis=1)
        args = [
            L.ParamsArg(),
            self.const_array(op.index, "rows", "int32_t", ys.astype(np.int32).reshape(-1), "per output row: lower row, upper row, fraction (1/1024)"),
            self.const_array(op.index, "cols", "int32_t", xs.astype(np.int32).reshape(-1), "per output column: lower column, upper column, fraction (1/1024)"),
            self.arena(x, True),
            self.arena(o, False),
        ]
        return self.make(op, "mcugen_resize_bilinear_s8", "resize_bilinear", "mcugen_resize_params_t", params, args)

    def lower_resize_nearest_neighbor(self, op):
        return self._resize(op, False)

    def lower_resize_bilinear(self, op):
        return self._resize(op, True)

    # -- two-operand arithmetic beyond ADD/MUL: the broadcasting walk of mcugen_add_s8
    def _binary(self, op, kind: str, p=None):
        a, b = self.g.op_inputs(op)[:2]
        o = self.g.t(op.outputs[0])
        out4 = (1,) * (4 - len(o.shape)) + tuple(o.shape)

        def strides(t):
            return broadcast_strides(tuple(t.shape), tuple(o.shape))

        act = getattr(op.attrs, "activation", Activation.NONE)
        lo, hi = L._activation_range(o, act)
        q = [0] * 7 if p is None else [p.left_shift, p.input1_multiplier, p.input1_shift, p.input2_multiplier,
                                        p.input2_shift, p.output_multiplier, p.output_shift]
        names = ["left_shift", "input1_multiplier", "input1_shift", "input2_multiplier", "input2_shift",
                 "output_multiplier", "output_shift"]
        params = [
            L.ParamValue("out_shape", out4, "ints"),
            L.ParamValue("in1_strides", strides(a), "ints"),
            L.ParamValue("in2_strides", strides(b), "ints"),
            L.ParamValue("input1_offset", -a.quant.zp),
            L.ParamValue("input2_offset", -b.quant.zp),
            L.ParamValue("output_offset", o.quant.zp),
            *(L.ParamValue(n, v) for n, v in zip(names, q)),
            L.ParamValue("act_min", lo),
            L.ParamValue("act_max", hi),
        ]
        a_arg = self.arena(a, True) if not a.is_const else self.const_array(op.index, "operand1", "int8_t", a.data, "operand")
        b_arg = self.arena(b, True) if not b.is_const else self.const_array(op.index, "operand2", "int8_t", b.data, "operand")
        self._detail = act.value
        return self.make(op, f"mcugen_{kind}_s8", kind, "mcugen_eltwise_params_t", params,
                         [L.ParamsArg(), a_arg, b_arg, self.arena(o, False)])

    def lower_sub(self, op):
        a, b = self.g.op_inputs(op)[:2]
        return self._binary(op, "sub", quant.add_params(a.quant.s, b.quant.s, self.g.t(op.outputs[0]).quant.s))

    def lower_squared_difference(self, op):
        a, b = self.g.op_inputs(op)[:2]
        o = self.g.t(op.outputs[0])
        return self._binary(op, "squared_difference", quant.squared_difference_params(a.quant.s, b.quant.s, o.quant.s))

    def lower_prelu(self, op):
        x, alpha = self.g.op_inputs(op)[:2]
        return self._binary(op, "prelu", quant.prelu_params(x.quant.s, alpha.quant.s, self.g.t(op.outputs[0]).quant.s))

    def lower_minimum(self, op):
        return self._binary(op, "minimum")

    def lower_maximum(self, op):
        return self._binary(op, "maximum")

    # -- REDUCE_MAX over any axes: the 6-D odometer of MEAN's generic kernel
    def lower_reduce_max(self, op):
        self._detail = f"axes {list(op.attrs.axes)} keep_dims {op.attrs.keep_dims}"
        return self._reduction(op, "reduce_max", 0, 0)

    def _reduction(self, op, group: str, multiplier: int, shift: int):
        """MEAN ("reduce") or REDUCE_MAX ("reduce_max") over any axes. When the reduced axes form
        one block (size-1 axes aside), the input is an [outer, reduce, inner] view and the block
        kernel walks it with one pointer; otherwise the generic 6-D odometer kernel runs."""
        x = self.g.op_inputs(op)[0]
        o = self.g.t(op.outputs[0])
        axes = op.attrs.axes
        count = int(np.prod([x.shape[d] for d in axes])) if axes else 1
        tail = [
            L.ParamValue("count", count),
            L.ParamValue("input_zero_point", x.quant.zp),
            L.ParamValue("output_zero_point", o.quant.zp),
            L.ParamValue("multiplier", multiplier),
            L.ParamValue("shift", shift),
        ]
        args = [L.ParamsArg(), self.arena(x, True), self.arena(o, False)]
        block = reduction_block(tuple(x.shape), tuple(axes))
        if block is not None:
            outer, reduce, inner = block
            self._detail += f"; a [{outer}, {reduce}, {inner}] block"
            params = [L.ParamValue("outer", outer), L.ParamValue("reduce", reduce), L.ParamValue("inner", inner)] + tail
            return self.make(op, f"mcugen_{group}_block_s8", f"{group}_block", "mcugen_reduce_block_params_t", params, args)
        shape = (1,) * (6 - len(x.shape)) + tuple(x.shape)
        lead = 6 - len(x.shape)
        params = [
            L.ParamValue("in_shape", shape, "ints"),
            L.ParamValue("reduce", tuple(1 if d - lead in axes else 0 for d in range(6)), "ints"),
        ] + tail
        return self.make(op, f"mcugen_{group}_s8", group, "mcugen_reduce_params_t", params, args)

    # -- SLICE / STRIDED_SLICE on activations: a strided copy over a 6-D view
    def _slice(self, op):
        from mcugen.supported_more import slice_taken

        x = self.g.op_inputs(op)[0]
        index = slice_taken(self.g, op)
        rank = len(x.shape)
        elem = [int(np.prod(x.shape[d + 1:])) for d in range(rank)]
        base = sum(int(ix[0]) * elem[d] for d, ix in enumerate(index))
        steps = [(int(ix[1] - ix[0]) if len(ix) > 1 else 1) * elem[d] for d, ix in enumerate(index)]
        params = [
            L.ParamValue("out_shape", (1,) * (6 - rank) + tuple(len(ix) for ix in index), "ints"),
            L.ParamValue("step", (0,) * (6 - rank) + tuple(steps), "ints"),
            L.ParamValue("base", base),
        ]
        self._detail = "begin " + str([int(ix[0]) for ix in index]) + " step " + str(
            [int(ix[1] - ix[0]) if len(ix) > 1 else 1 for ix in index])
        return self.make(op, "mcugen_slice_8", "slice", "mcugen_slice_params_t", params,
                         [L.ParamsArg(), self.arena(x, True), self.arena(self.g.t(op.outputs[0]), False)])

    def lower_slice(self, op):
        return self._slice(op)

    def lower_strided_slice(self, op):
        return self._slice(op)

    # -- ARG_MAX / ARG_MIN: the first index of the extreme along one axis, as int32 or int64
    def _arg_min_max(self, op, find_min: bool):
        x = self.g.op_inputs(op)[0]
        o = self.g.t(op.outputs[0])
        axis = op.attrs.axis
        params = [
            L.ParamValue("outer", int(np.prod(x.shape[:axis])) if axis else 1),
            L.ParamValue("count", x.shape[axis]),
            L.ParamValue("inner", int(np.prod(x.shape[axis + 1:]))),
            L.ParamValue("find_min", int(find_min)),
        ]
        bits = 64 if o.dtype.itemsize == 8 else 32
        self._detail = f"axis {axis}, {o.dtype.value} indices, ties: the first"
        return self.make(op, f"mcugen_arg_min_max_s8_s{bits}", f"arg_min_max_s{bits}", "mcugen_arg_min_max_params_t", params,
                         [L.ParamsArg(), self.arena(x, True), self.arena(o, False)])

    def lower_arg_max(self, op):
        return self._arg_min_max(op, False)

    def lower_arg_min(self, op):
        return self._arg_min_max(op, True)

    # -- TRANSPOSE_CONV: a gather over the input pixels each output pixel receives
    def lower_transpose_conv(self, op):
        from mcugen.supported_more import transpose_conv_pads

        ins = self.g.op_inputs(op)
        w, x = ins[1], ins[2]
        b = ins[3] if len(ins) > 3 else None
        o = self.g.t(op.outputs[0])
        a = op.attrs
        out_c = o.shape[3]
        mult, shift = L.channel_multipliers(x, w, o, out_c)
        lo, hi = L._activation_range(o, a.activation)
        pad_t, pad_l = transpose_conv_pads(a, o.shape, w.shape)
        params = [
            L.ParamValue("batches", x.shape[0]),
            L.ParamValue("in_h", x.shape[1]),
            L.ParamValue("in_w", x.shape[2]),
            L.ParamValue("in_c", x.shape[3]),
            L.ParamValue("out_h", o.shape[1]),
            L.ParamValue("out_w", o.shape[2]),
            L.ParamValue("out_c", out_c),
            L.ParamValue("kernel_h", w.shape[1]),
            L.ParamValue("kernel_w", w.shape[2]),
            L.ParamValue("stride_h", a.stride_h),
            L.ParamValue("stride_w", a.stride_w),
            L.ParamValue("pad_top", pad_t),
            L.ParamValue("pad_left", pad_l),
            L.ParamValue("input_offset", -x.quant.zp),
            L.ParamValue("output_offset", o.quant.zp),
            L.ParamValue("act_min", lo),
            L.ParamValue("act_max", hi),
        ]
        args = [
            L.ParamsArg(),
            self.arena(x, True),
            self.const_array(op.index, "tconv_weights", "int8_t", w.data, f"weights {list(w.shape)}"),
            self.const_array(op.index, "bias", "int32_t", b.data, f"bias [{b.size}]") if b is not None else L.NullArg(),
            self.const_array(op.index, "multiplier", "int32_t", mult, "requantization multipliers per channel"),
            self.const_array(op.index, "shift", "int32_t", shift, "requantization shifts per channel"),
            self.arena(o, False),
        ]
        self._detail = (
            f"{w.shape[1]}x{w.shape[2]} stride {a.stride_h}x{a.stride_w} {a.padding.value} {a.activation.value}, "
            f"pad top {pad_t} left {pad_l}, {'bias' if b is not None else 'no bias'}, gathered per output pixel"
        )
        return self.make(op, "mcugen_transpose_conv_s8", "transpose_conv", "mcugen_transpose_conv_params_t", params, args)
