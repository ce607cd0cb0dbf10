"""Constant folding: operators whose inputs are all constant or shape-only are evaluated at generation time.

Also: a TRANSPOSE that only moves axes of size 1 keeps every element where it is, so it
becomes a RESHAPE (a view, no code; see `transposes_as_views`); then SPLIT/SPLIT_V/UNPACK become
SLICEs (`mcugen.split_ops`), SQUEEZE/EXPAND_DIMS RESHAPEs and PACK on activations RESHAPEs and a
CONCATENATION (`mcugen.view_ops`).

A subgraph such as TinyMaix's SHAPE -> STRIDED_SLICE -> PACK -> RESHAPE computes a value that
depends only on the (static) tensor shapes. `fold_constants` evaluates, in graph order, every
operator whose inputs are all known: SHAPE (known from its input's shape, whatever the data),
STRIDED_SLICE, PACK, GATHER, and int32 ADD/MUL/RESHAPE/SQUEEZE/EXPAND_DIMS on known values. Each folded output
becomes a constant tensor and the operator is dropped; anything left is checked as usual
(`mcugen.supported` refuses a shape operator that still depends on run-time data).
"""

from __future__ import annotations

from dataclasses import replace
from typing import Callable, Optional

import numpy as np

from mcugen.ir import Activation, DType, Graph, Operator, OpType

Value = np.ndarray


def strided_slice_index(a, shape: tuple[int, ...], begin: Value, end: Value,
                        strides: Value) -> Optional[tuple[list[np.ndarray], tuple[int, ...]]]:
    """TFLite's StridedSlice (no ellipsis, no new axes): masks resolve begin and end per axis,
    negative indices count from the end, a shrink axis takes one element and is dropped.
    Returns the input indices taken along each axis and the shrunk axes (None: not resolvable)."""
    begin, end, strides = begin.reshape(-1), end.reshape(-1), strides.reshape(-1)
    ndim = len(shape)
    if a.ellipsis_mask or a.new_axis_mask or not (len(begin) == len(end) == len(strides) <= ndim):
        return None
    index = []
    for d in range(ndim):
        n = shape[d]
        if d >= len(begin):
            index.append(np.arange(n))
            continue
        s = int(strides[d])
        if s == 0:
            return None
        lo, hi = (0, n) if s > 0 else (-1, n - 1)
        b = int(begin[d])
        b = b + n if b < 0 else b
        b = (0 if s > 0 else n - 1) if a.begin_mask >> d & 1 else min(max(b, lo), hi)
        if a.shrink_axis_mask >> d & 1:
            if not 0 <= b < n:
                return None
            index.append(np.array([b]))
            continue
        e = int(end[d])
        if a.offset:
            e = int(begin[d]) + e
        e = e + n if e < 0 else e
        e = (n if s > 0 else -1) if a.end_mask >> d & 1 else min(max(e, lo), hi)
        index.append(np.arange(b, e, s))
    return index, tuple(d for d in range(min(ndim, len(begin))) if a.shrink_axis_mask >> d & 1)


def _strided_slice(op: Operator, vals: list[Value]) -> Optional[Value]:
    x = vals[0]
    resolved = strided_slice_index(op.attrs, x.shape, vals[1], vals[2], vals[3])
    if resolved is None:
        return None
    index, shrink = resolved
    out = x[np.ix_(*index)] if x.ndim else x
    return out.reshape(tuple(n for d, n in enumerate(out.shape) if d not in shrink))


def slice_index(shape: tuple[int, ...], begin: Value, size: Value) -> Optional[list[np.ndarray]]:
    """TFLite's SLICE: begin[d] >= 0, size[d] elements from it (-1: up to the end), within the axis."""
    begin, size = begin.reshape(-1), size.reshape(-1)
    if not len(begin) == len(size) == len(shape):
        return None
    index = []
    for b, s, n in zip(begin.tolist(), size.tolist(), shape):
        e = n if s == -1 else b + s
        if not 0 <= b <= e <= n:
            return None
        index.append(np.arange(b, e))
    return index


def _pack(op: Operator, vals: list[Value]) -> Optional[Value]:
    axis = op.attrs.axis
    rank = vals[0].ndim + 1
    if not -rank <= axis < rank or any(v.shape != vals[0].shape for v in vals):
        return None
    return np.stack(vals, axis=axis % rank)


def _gather(op: Operator, vals: list[Value]) -> Optional[Value]:
    params, idx = vals[0], vals[1].astype(np.int64)
    axis = op.attrs.axis % max(params.ndim, 1)
    if op.attrs.batch_dims or idx.size and (idx.min() < 0 or idx.max() >= params.shape[axis]):
        return None
    return np.take(params, idx, axis=axis)


def _int_arith(op: Operator, vals: list[Value]) -> Optional[Value]:
    if any(v.dtype != np.int32 for v in vals) or getattr(op.attrs, "activation", Activation.NONE) is not Activation.NONE:
        return None
    a, b = vals[0].astype(np.int64), vals[1].astype(np.int64)
    r = a + b if op.op is OpType.ADD else a * b
    return ((r + 2**31) % 2**32 - 2**31).astype(np.int32)


def _reshape(op: Operator, vals: list[Value]) -> Optional[Value]:
    return vals[0]  # the output tensor's shape is applied by the caller


FOLDERS: dict[OpType, Callable[[Operator, list[Value]], Optional[Value]]] = {
    OpType.STRIDED_SLICE: _strided_slice,
    OpType.PACK: _pack,
    OpType.GATHER: _gather,
    OpType.ADD: _int_arith,
    OpType.MUL: _int_arith,
    OpType.RESHAPE: _reshape,
    OpType.SQUEEZE: _reshape,
    OpType.EXPAND_DIMS: _reshape,
}


def _arity(op: Operator) -> tuple[int, ...]:
    """The input counts TFLite's kernels accept for each foldable operator."""
    if op.op is OpType.PACK:
        return (op.attrs.values_count,) if op.attrs.values_count >= 1 else ()
    return {OpType.STRIDED_SLICE: (4,), OpType.GATHER: (2,), OpType.ADD: (2,), OpType.MUL: (2,), OpType.RESHAPE: (1, 2),
            OpType.SQUEEZE: (1,), OpType.EXPAND_DIMS: (2,)}[op.op]


def _evaluate(g: Graph, op: Operator, known: dict[int, Value]) -> Optional[Value]:
    if op.op is OpType.SHAPE:
        if len(op.inputs) != 1 or op.inputs[0] < 0:
            return None
        return np.asarray(g.t(op.inputs[0]).shape, dtype=np.int32)
    fn = FOLDERS.get(op.op)
    if fn is None or any(i < 0 or i not in known for i in op.inputs) or len(op.inputs) not in _arity(op):
        return None  # TFLite refuses an operator with another number of inputs: so does the check
    int32_only = (OpType.ADD, OpType.MUL, OpType.RESHAPE, OpType.SQUEEZE, OpType.EXPAND_DIMS)
    if op.op in int32_only and g.t(op.inputs[0]).dtype is not DType.INT32:
        return None  # quantized arithmetic on constants stays an operator (it is cheap and exact there)
    try:
        return fn(op, [known[i] for i in op.inputs])
    except (ValueError, IndexError, TypeError):
        return None


def fold_constants(g: Graph) -> Graph:
    """A new Graph with every foldable operator evaluated into a constant tensor (`g` unchanged).

    An output is folded only when its value has the element type and shape the model declares
    for that tensor (so the folded constant is exactly what the interpreters compute), and
    never when it is a graph output."""
    known: dict[int, Value] = {t.index: np.asarray(t.data) for t in g.tensors if t.is_const}
    tensors = list(g.tensors)
    kept = []
    for op in g.operators:
        value = None
        if op.op is not None and len(op.outputs) == 1 and op.outputs[0] not in g.outputs:
            value = _evaluate(g, op, known)
        out = g.t(op.outputs[0]) if op.outputs else None
        if value is not None and out is not None:
            value = np.asarray(value)
            if value.dtype != out.dtype.numpy or value.size != out.size:
                value = None
        if value is None:
            kept.append(op)
            continue
        value = value.reshape(out.shape)
        known[out.index] = value
        tensors[out.index] = replace(out, data=value)
    if len(kept) != len(g.operators):
        g = Graph(g.name, tensors, kept, list(g.inputs), list(g.outputs), g.description)
    from mcugen.split_ops import splits_as_slices
    from mcugen.transpose_sink import sink_transposes
    from mcugen.view_ops import views_and_packs

    return views_and_packs(splits_as_slices(transposes_as_views(sink_transposes(g))))


def moves_only_unit_axes(shape: tuple[int, ...], perm: tuple[int, ...]) -> bool:
    """Whether transposing `shape` by `perm` keeps the order of the axes larger than 1."""
    big = [p for p in perm if shape[p] != 1]
    return big == sorted(big)


def transposes_as_views(g: Graph) -> Graph:
    """Each TRANSPOSE that only moves size-1 axes becomes a RESHAPE of its input (same bytes in
    the same order); the planner then lets it share its input's bytes like any RESHAPE."""
    ops = []
    changed = False
    for op in g.operators:
        if op.op is OpType.TRANSPOSE and op.inputs and op.inputs[0] >= 0:
            x = g.t(op.inputs[0])
            if not x.is_const and moves_only_unit_axes(x.shape, op.attrs.perm):
                op = Operator(index=op.index, op=OpType.RESHAPE, inputs=[op.inputs[0]], outputs=list(op.outputs))
                changed = True
        ops.append(op)
    if not changed:
        return g
    return Graph(g.name, g.tensors, ops, list(g.inputs), list(g.outputs), g.description)
