"""Graph rewrite: SPLIT, SPLIT_V and UNPACK on int8 activations become one SLICE per output.

Each output of a split is a contiguous block of the input along one axis (UNPACK: one element
of it, the axis dropped), which is what SLICE takes; TFLite's int8 kernels copy the values
without rescaling, as SLICE does. The rewrite keeps the rest of the pipeline single-output: the
first SLICE keeps the operator's index, the others get new indices after the graph's last one,
and each reads two new int32 constants (begin, size). An operator the rewrite cannot take stays
and is refused by the support check with the reason `split_plan` gives.
"""

from __future__ import annotations

from typing import Optional

import numpy as np

from mcugen.ir import DType, Graph, Operator, OpType, Tensor

SPLIT_OPS = (OpType.SPLIT, OpType.SPLIT_V, OpType.UNPACK)


def _const_ints(g: Graph, i: int) -> Optional[np.ndarray]:
    if i < 0 or not g.t(i).is_const:
        return None
    return np.asarray(g.t(i).data).reshape(-1).astype(np.int64)


def split_plan(g: Graph, op: Operator) -> tuple[Optional[tuple[int, int, list[int]]], str]:
    """(data input, axis, sizes along the axis per output) or None with the reason."""
    if op.op is OpType.SPLIT:
        data, axis_t = (op.inputs[1] if len(op.inputs) > 1 else -1), _const_ints(g, op.inputs[0] if op.inputs else -1)
    elif op.op is OpType.SPLIT_V:
        data = op.inputs[0] if op.inputs else -1
        axis_t = _const_ints(g, op.inputs[2]) if len(op.inputs) > 2 else None
    else:
        data, axis_t = (op.inputs[0] if op.inputs else -1), np.asarray([op.attrs.axis])
    if data < 0:
        return None, "lacks its data input"
    x = g.t(data)
    outs = [g.t(i) for i in op.outputs]
    if x.is_const or x.dtype is not DType.INT8 or x.quant is None:
        return None, f"reads tensor {x.index} ({x.dtype.value}{', constant' if x.is_const else ''}); only int8 activations are split"
    if len(x.shape) > 6:
        return None, f"has rank {len(x.shape)}"
    if axis_t is None or axis_t.size != 1:
        return None, "has an axis that is not one constant value"
    rank = len(x.shape)
    axis = int(axis_t[0])
    if not -rank <= axis < rank:
        return None, f"splits axis {axis} of a rank-{rank} tensor"
    axis %= rank
    n, count = x.shape[axis], len(outs)
    if count == 0:
        return None, "has no outputs"
    if op.op is OpType.SPLIT:
        if n % count:
            return None, f"splits {n} elements into {count} equal parts"
        sizes = [n // count] * count
    elif op.op is OpType.UNPACK:
        sizes = [1] * count
        if n != count:
            return None, f"unpacks {n} elements into {count} outputs"
        if op.attrs.values_count != count:
            # TFLite Micro's kernel writes `num` outputs (none for num <= 0), whatever the graph lists
            return None, f"has num {op.attrs.values_count} for {count} outputs"
    else:
        sizes = _const_ints(g, op.inputs[1]) if len(op.inputs) > 1 else None
        if sizes is None or sizes.size != count or np.sum(sizes == -1) > 1:
            return None, "has size_splits that are not constant, one per output, with at most one -1"
        sizes = [int(s) for s in sizes]
        if -1 in sizes:
            sizes[sizes.index(-1)] = n - (sum(sizes) + 1)
        if sum(sizes) != n or min(sizes) < 0:
            return None, f"has size_splits {sizes} for {n} elements"
    for o, size in zip(outs, sizes):
        want = list(x.shape)
        if op.op is OpType.UNPACK:
            del want[axis]
        else:
            want[axis] = size
        if list(o.shape) != want or o.dtype is not DType.INT8 or o.quant is None:
            return None, f"has output tensor {o.index} of shape {list(o.shape)} ({o.dtype.value}) where int8 {want} is expected"
    return (data, axis, sizes), ""


def splits_as_slices(g: Graph) -> Graph:
    """A new Graph with every SPLIT / SPLIT_V / UNPACK that `split_plan` takes as SLICEs (`g` unchanged)."""
    if not any(op.op in SPLIT_OPS for op in g.operators):
        return g
    tensors = list(g.tensors)
    ops: list[Operator] = []
    fresh = max(op.index for op in g.operators) + 1
    for op in g.operators:
        plan = split_plan(g, op)[0] if op.op in SPLIT_OPS else None
        if plan is None:
            ops.append(op)
            continue
        data, axis, sizes = plan
        shape = g.t(data).shape
        start = 0
        for k, (out, size) in enumerate(zip(op.outputs, sizes)):
            begin = [0] * len(shape)
            begin[axis] = start
            extent = list(shape)
            extent[axis] = size
            start += size
            consts = []
            for role, values in (("begin", begin), ("size", extent)):
                t = Tensor(len(tensors), f"{op.op.value.lower()}_{op.index}/{role}{k}", (len(shape),), DType.INT32,
                           data=np.asarray(values, np.int32))
                tensors.append(t)
                consts.append(t.index)
            index = op.index if k == 0 else fresh
            fresh += k > 0
            ops.append(Operator(index=index, op=OpType.SLICE, inputs=[data, *consts], outputs=[out]))
    return Graph(g.name, tensors, ops, list(g.inputs), list(g.outputs), g.description)
