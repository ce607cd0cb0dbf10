"""Graph rewrites: SQUEEZE and EXPAND_DIMS become RESHAPE views; PACK on int8 activations a RESHAPE of each input plus one CONCATENATION.

SQUEEZE and EXPAND_DIMS only change a shape: TFLite's kernels copy the bytes (or share them),
which is what RESHAPE does, so each becomes a RESHAPE of its input (a view: no code where the
planner lets the output share the input's bytes).

PACK stacks N tensors of one shape S along a new axis a: the output's bytes are those of the
CONCATENATION along a of the inputs viewed as S[:a] + (1,) + S[a:]. TFLite's int8 PACK copies
the values without rescaling (its Prepare requires one quantization), as CONCATENATION does.
So each input gets a RESHAPE to that view (a new activation tensor) and the CONCATENATION
writes the PACK's output; it keeps the PACK's operator index, the RESHAPEs get new indices
after the graph's last one. A PACK of constant or shape-only data was already evaluated by
`mcugen.fold`; an operator these rewrites cannot take stays and is refused by the support check
with the reason the plan functions give.
"""

from __future__ import annotations

from typing import Optional

import numpy as np

from mcugen.ir import Activation, ConcatAttrs, DType, Graph, Operator, OpType, Tensor

VIEW_OPS = (OpType.SQUEEZE, OpType.EXPAND_DIMS)
MAX_PACK_INPUTS = 64  # as CONCATENATION (mcugen.supported.c_concat)


def _same_quantization(a: Tensor, b: Tensor) -> bool:
    if a.quant is None or b.quant is None:
        return a.quant is None and b.quant is None
    return (a.quant.s, a.quant.zp, a.quant.per_channel) == (b.quant.s, b.quant.zp, b.quant.per_channel)


def view_shape(g: Graph, op: Operator) -> tuple[Optional[tuple[int, ...]], str]:
    """The output shape a SQUEEZE or EXPAND_DIMS computes (None with the reason when it cannot be taken)."""
    if not op.inputs or op.inputs[0] < 0 or len(op.outputs) != 1:
        return None, f"has {len(op.inputs)} inputs and {len(op.outputs)} outputs"
    x, o = g.t(op.inputs[0]), g.t(op.outputs[0])
    shape = list(x.shape)
    rank = len(shape)
    if op.op is OpType.SQUEEZE:
        if len(op.inputs) != 1:
            return None, f"has {len(op.inputs)} inputs"
        dims = op.attrs.squeeze_dims
        if len(dims) > 8:
            return None, f"squeezes {len(dims)} axes (TFLite's kernel takes at most 8)"
        if not dims:
            drop = {d for d, n in enumerate(shape) if n == 1}
        else:
            if any(not -rank <= d < rank for d in dims):
                return None, f"squeezes axes {list(dims)} of a rank-{rank} tensor"
            drop = {d % rank for d in dims}
            if any(shape[d] != 1 for d in drop):
                return None, f"squeezes axes {list(dims)} of shape {shape}, not all of size 1"
        want = tuple(n for d, n in enumerate(shape) if d not in drop)
    else:
        if len(op.inputs) != 2 or op.inputs[1] < 0:
            return None, "lacks its axis input"
        a = g.t(op.inputs[1])
        if not a.is_const or a.dtype not in (DType.INT32, DType.INT64) or a.size != 1:
            return None, f"has an axis (tensor {a.index}) that is not one constant int32/int64 value"
        axis = int(np.asarray(a.data).reshape(-1)[0])
        if not -rank - 1 <= axis <= rank:
            return None, f"inserts axis {axis} into a rank-{rank} tensor"
        axis = axis + rank + 1 if axis < 0 else axis
        want = tuple(shape[:axis] + [1] + shape[axis:])
    if tuple(o.shape) != want or o.dtype is not x.dtype or not _same_quantization(x, o):
        return None, (f"has output tensor {o.index} of shape {list(o.shape)} ({o.dtype.value}) where {list(want)} "
                      f"({x.dtype.value}) with the input's quantization is expected")
    return want, ""


def pack_plan(g: Graph, op: Operator) -> tuple[Optional[tuple[int, tuple[int, ...]]], str]:
    """(the new axis, each input's view shape) of a PACK on int8 activations, or None with the reason."""
    ins = [g.t(i) if i >= 0 else None for i in op.inputs]
    if len(op.outputs) != 1 or not 1 <= len(ins) <= MAX_PACK_INPUTS or any(t is None for t in ins):
        return None, f"has {len(ins)} inputs and {len(op.outputs)} outputs (1 to {MAX_PACK_INPUTS} inputs, one output)"
    if op.attrs.values_count != len(ins):
        return None, f"has values_count {op.attrs.values_count} for {len(ins)} inputs"
    o = g.t(op.outputs[0])
    if o.dtype is not DType.INT8 or o.quant is None or o.quant.per_channel:
        return None, f"writes tensor {o.index} ({o.dtype.value}); only per-tensor int8 outputs are packed"
    shape = tuple(ins[0].shape)
    for t in ins:
        if t.is_const or t.dtype is not DType.INT8 or t.quant is None:
            return None, f"reads tensor {t.index} ({t.dtype.value}{', constant' if t.is_const else ''}); only int8 activations are packed"
        if tuple(t.shape) != shape:
            return None, f"packs tensors of shapes {list(shape)} and {list(t.shape)}"
        if (t.quant.s, t.quant.zp) != (o.quant.s, o.quant.zp) or t.quant.per_channel:
            return None, (f"has input tensor {t.index} with scale {t.quant.s}, zero point {t.quant.zp} but output scale "
                          f"{o.quant.s}, zero point {o.quant.zp}")
    rank = len(shape)
    if rank > 5:
        return None, f"packs rank-{rank} tensors (the output may have rank 6 at most)"
    axis = op.attrs.axis
    if not -rank - 1 <= axis <= rank:
        return None, f"packs along axis {axis} of a rank-{rank + 1} output"
    axis %= rank + 1
    view = shape[:axis] + (1,) + shape[axis:]
    want = shape[:axis] + (len(ins),) + shape[axis:]
    if tuple(o.shape) != want:
        return None, f"has output shape {list(o.shape)} where {list(want)} is expected"
    return (axis, view), ""


def views_and_packs(g: Graph) -> Graph:
    """A new Graph with every SQUEEZE / EXPAND_DIMS that `view_shape` takes as a RESHAPE and every
    PACK that `pack_plan` takes as RESHAPEs + CONCATENATION (`g` unchanged)."""
    if not any(op.op in VIEW_OPS or op.op is OpType.PACK for op in g.operators):
        return g
    tensors = list(g.tensors)
    ops: list[Operator] = []
    fresh = max(op.index for op in g.operators) + 1
    changed = False
    for op in g.operators:
        if op.op in VIEW_OPS and view_shape(g, op)[0] is not None:
            ops.append(Operator(index=op.index, op=OpType.RESHAPE, inputs=[op.inputs[0]], outputs=list(op.outputs)))
            changed = True
            continue
        plan = pack_plan(g, op)[0] if op.op is OpType.PACK else None
        if plan is None:
            ops.append(op)
            continue
        axis, view = plan
        viewed = []
        for k, i in enumerate(op.inputs):
            x = g.t(i)
            t = Tensor(len(tensors), f"{x.name}/pack{op.index}_view{k}", view, DType.INT8, quant=x.quant)
            tensors.append(t)
            viewed.append(t.index)
            ops.append(Operator(index=fresh, op=OpType.RESHAPE, inputs=[i], outputs=[t.index]))
            fresh += 1
        ops.append(Operator(index=op.index, op=OpType.CONCATENATION, inputs=viewed, outputs=list(op.outputs),
                            attrs=ConcatAttrs(axis=axis, activation=Activation.NONE)))
        changed = True
    if not changed:
        return g
    return Graph(g.name, tensors, ops, list(g.inputs), list(g.outputs), g.description)
