"""Graph pass: a TRANSPOSE read only by a reduction moves after it, onto the smaller reduced tensor.

MCUNet's VWW ends in TRANSPOSE(NHWC -> NCHW), MEAN over W, MEAN over H: the transpose
copies every element of the last feature map to reduce it right after. A reduction computes
each output from the same input values whatever their layout, so MEAN(TRANSPOSE(x, p), A) equals
TRANSPOSE(MEAN(x, p[A]), p') with p' the order p leaves the kept axes in: same values, same
integer arithmetic per output, bit for bit. Repeated, the transpose sinks past a chain of
reductions and is left on a tensor where it often moves only size-1 axes (then
`mcugen.fold.transposes_as_views` makes it a RESHAPE: no code at all).
"""

from __future__ import annotations

from dataclasses import replace
from typing import Optional

import numpy as np

from mcugen.ir import DType, Graph, MeanAttrs, Operator, OpType, Tensor, TransposeAttrs

REDUCTIONS = (OpType.MEAN, OpType.SUM, OpType.REDUCE_MAX)


def sunk_perm(perm: tuple[int, ...], axes: tuple[int, ...], keep_dims: bool) -> tuple[tuple[int, ...], tuple[int, ...]]:
    """For REDUCE(TRANSPOSE(x, perm), axes): the axes to reduce x over, and the permutation
    that turns REDUCE(x, those axes) into the original result."""
    x_axes = tuple(sorted(perm[a] for a in axes))
    if keep_dims:
        return x_axes, tuple(perm)
    kept_x = [i for i in range(len(perm)) if i not in x_axes]  # x's axes in the reduced tensor, in order
    return x_axes, tuple(kept_x.index(perm[j]) for j in range(len(perm)) if j not in axes)


def _same_quant(a: Tensor, b: Tensor) -> bool:
    if a.quant is None or b.quant is None:
        return a.quant is None and b.quant is None
    return (a.quant.scale.size == 1 and b.quant.scale.size == 1 and a.quant.s == b.quant.s
            and int(a.quant.zero_point[0]) == int(b.quant.zero_point[0]))


def _sinkable(g: Graph, t: Operator, readers: dict[int, list[Operator]]) -> Optional[Operator]:
    """The reduction that is the only reader of TRANSPOSE t's output, if t can move after it."""
    if t.op is not OpType.TRANSPOSE or not t.inputs or t.inputs[0] < 0 or len(t.outputs) != 1:
        return None
    x, y = g.t(t.inputs[0]), g.t(t.outputs[0])
    if x.is_const or y.index in g.outputs or not isinstance(t.attrs, TransposeAttrs) or not _same_quant(x, y):
        return None
    if x.dtype not in (DType.INT8, DType.UINT8, DType.INT16) or len(readers.get(y.index, [])) != 1:
        return None
    r = readers[y.index][0]
    if r.op not in REDUCTIONS or not isinstance(r.attrs, MeanAttrs) or not r.inputs or r.inputs[0] != y.index:
        return None
    return r


def sink_transposes(g: Graph) -> Graph:
    """A new Graph in which every TRANSPOSE whose only reader is a MEAN, SUM or REDUCE_MAX comes
    after that reduction instead (`g` is unchanged if there is none)."""
    while True:
        readers: dict[int, list[Operator]] = {}
        for op in g.operators:
            for i in op.inputs:
                if i >= 0:
                    readers.setdefault(i, []).append(op)
        found = next(((t, r) for t in g.operators if (r := _sinkable(g, t, readers)) is not None), None)
        if found is None:
            return g
        t, r = found
        x, z = g.t(t.inputs[0]), g.t(r.outputs[0])
        x_axes, perm = sunk_perm(t.attrs.perm, r.attrs.axes, r.attrs.keep_dims)
        shape = tuple(1 if i in x_axes else n for i, n in enumerate(x.shape) if r.attrs.keep_dims or i not in x_axes)
        tensors = list(g.tensors)
        reduced = Tensor(len(tensors), f"{z.name}/before_transpose", shape, z.dtype, z.quant)
        axes = Tensor(len(tensors) + 1, f"{z.name}/axes", (len(x_axes),), DType.INT32,
                      data=np.array(x_axes, dtype=np.int32))
        order = Tensor(len(tensors) + 2, f"{z.name}/perm", (len(perm),), DType.INT32, data=np.array(perm, dtype=np.int32))
        tensors += [reduced, axes, order]
        new_r = replace(r, inputs=[x.index, axes.index] + list(r.inputs[2:]), outputs=[reduced.index],
                        attrs=MeanAttrs(x_axes, r.attrs.keep_dims))
        new_t = replace(t, inputs=[reduced.index, order.index], outputs=[z.index], attrs=TransposeAttrs(perm))
        ops = []
        for op in g.operators:
            if op is t:
                continue
            ops.extend([new_r, new_t] if op is r else [op])
        g = Graph(g.name, tensors, ops, list(g.inputs), list(g.outputs), g.description)
