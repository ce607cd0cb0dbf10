"""Graph and schedule rewrites before planning: PAD folding, the step schedule, liveness and aliasing rules.

Order (lowering calls them in this order):
1. `fold_pads`: tens1 -> PAD -> tens2 -> CONV becomes tens1 -> CONV with explicit padding.
2. `build_schedule`: one step per operator, except that a fused chain (see `mcugen.fusion`)
   is one step placed where its first operator was.
3. `schedule_buffers`: one planner `Buffer` per activation tensor (live from the step that
   writes it to the last step that reads it), one per step that needs scratch (ring buffers,
   pixel buffers, the depthwise channel plane), and the `Alias`es the rules below permit.

Each in-place or overlap rule is one function named `rule_*` whose docstring states the
kernel property it relies on. All of them require that the input dies at this step (its
last reader, not a graph output): an alias is a permission the planner may or may not use.
In the planner's words (see `mcugen.planner.AliasKind`): SAME is in place; HEAD lets the
output's last bytes lie over the input's first bytes, the rows a top-to-bottom kernel has
consumed by the time it writes there (what the issue calls the output overlapping its
input's consumed part).
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Mapping, Optional, Sequence

import numpy as np

from mcugen.fusion import (
    WINDOW_OPS,
    Chain,
    FoldedPad,
    Window,
    chain_head_overlap,
    window_head_overlap,
    window_of,
)
from mcugen.ir import DType, Graph, Operator, OpType
from mcugen.planner import Alias, AliasKind, Buffer

# ---- 1. PAD folding --------------------------------------------------------------------------


def _foldable_pad(g: Graph, pad: Operator, readers: Mapping[int, list[Operator]]) -> Optional[FoldedPad]:
    """The padding of a PAD that can move into its only reader, a convolution; else None."""
    x, y = g.t(pad.inputs[0]), g.t(pad.outputs[0])
    if x.is_const or x.dtype is not DType.INT8 or len(x.shape) != 4 or x.quant is None or y.quant is None:
        return None
    if len(pad.attrs.paddings) != 4 or len(y.shape) != 4:
        return None
    (n0, n1), (t, b), (l, r), (c0, c1) = pad.attrs.paddings
    if (n0, n1, c0, c1) != (0, 0, 0, 0) or min(t, b, l, r) < 0:
        return None
    if x.quant.zp != y.quant.zp or x.quant.s != y.quant.s:
        return None
    value = y.quant.zp
    if len(pad.inputs) > 2 and pad.inputs[2] >= 0 and g.t(pad.inputs[2]).is_const:
        value = int(np.asarray(g.t(pad.inputs[2]).data).reshape(-1)[0])
    if value != x.quant.zp:
        return None
    users = readers.get(pad.outputs[0], [])
    if len(users) != 1 or pad.outputs[0] in g.outputs:
        return None
    conv = users[0]
    if conv.op not in (OpType.CONV_2D, OpType.DEPTHWISE_CONV_2D) or conv.inputs[0] != pad.outputs[0]:
        return None
    if pad.outputs[0] in conv.inputs[1:]:
        return None
    return FoldedPad(top=t, bottom=b, left=l, right=r)


def fold_pads(g: Graph) -> tuple[Graph, dict[int, FoldedPad]]:
    """Fold zero-point PADs into the convolution reading them (a new Graph; `g` is unchanged).

        tens1 -> PAD(zero point) -> tens2 -> CONV_2D/DEPTHWISE(VALID or SAME)
        becomes tens1 -> CONV_2D/DEPTHWISE with pad_top/left += the PAD's before-padding

    Exact: the reference convolution skips taps outside the image, which is what a tap on a
    padded element does (it holds the zero point, so (value + input_offset) == 0). Only
    spatial padding, equal input/output quantization and one reader qualify. Returns the
    graph and, per convolution's operator index, the padding it absorbed.
    """
    readers: dict[int, list[Operator]] = {}
    for op in g.operators:
        for i in set(op.inputs):
            if i >= 0:
                readers.setdefault(i, []).append(op)
    pads: dict[int, FoldedPad] = {}
    rewired: dict[int, int] = {}  # conv operator index -> its new input tensor
    dropped: set[int] = set()
    for op in g.operators:
        if op.op is not OpType.PAD:
            continue
        fp = _foldable_pad(g, op, readers)
        if fp is None:
            continue
        conv = readers[op.outputs[0]][0]
        pads[conv.index] = fp
        rewired[conv.index] = op.inputs[0]
        dropped.add(op.index)
    if not dropped:
        return g, {}
    ops = []
    for op in g.operators:
        if op.index in dropped:
            continue
        if op.index in rewired:
            op = Operator(index=op.index, op=op.op, inputs=[rewired[op.index], *op.inputs[1:]], outputs=list(op.outputs), attrs=op.attrs)
        ops.append(op)
    return Graph(g.name, g.tensors, ops, list(g.inputs), list(g.outputs), g.description), pads


# ---- 2. the schedule -------------------------------------------------------------------------


@dataclass(frozen=True)
class Step:
    """One layer of the generated code: one operator, or a fused chain of them."""

    ops: tuple[int, ...]  # operator indices it executes (graph order)
    reads: tuple[int, ...]  # activation tensors it reads from the arena
    writes: tuple[int, ...]  # activation tensors it writes
    chain: Optional[Chain] = None


@dataclass(frozen=True)
class Schedule:
    graph: Graph  # after PAD folding; the steps' operator indices refer to it
    steps: tuple[Step, ...]
    pads: Mapping[int, FoldedPad]

    def op(self, index: int) -> Operator:
        for op in self.graph.operators:
            if op.index == index:
                return op
        raise KeyError(index)


def build_schedule(g: Graph, pads: Mapping[int, FoldedPad], chains: Sequence[Chain] = ()) -> Schedule:
    """Steps in graph order; a chain runs where its first operator was (its only arena
    input, x, is written before that; nothing outside the chain reads its inner tensors)."""
    first_of = {c.ops[0]: c for c in chains}
    in_chain = {i for c in chains for i in c.ops}
    steps = []
    for op in g.operators:
        if op.index in first_of:
            c = first_of[op.index]
            steps.append(Step(ops=c.ops, reads=(c.input,), writes=(c.output,), chain=c))
        elif op.index not in in_chain:
            reads = tuple(dict.fromkeys(i for i in op.inputs if i >= 0 and not g.t(i).is_const))
            steps.append(Step(ops=(op.index,), reads=reads, writes=tuple(op.outputs)))
    return Schedule(graph=g, steps=tuple(steps), pads=dict(pads))


# ---- 3. liveness and aliasing rules ----------------------------------------------------------


def tensor_buffer(index: int) -> str:
    return f"t{index}"


def scratch_buffer(step: int) -> str:
    return f"scratch{step}"


@dataclass(frozen=True)
class Liveness:
    first: Mapping[int, int]  # tensor -> step writing it (0 for graph inputs)
    last: Mapping[int, int]  # tensor -> last step reading it (the last step for graph outputs)


def liveness(s: Schedule) -> Liveness:
    g = s.graph
    n = len(s.steps)
    first: dict[int, int] = {i: 0 for i in g.inputs if not g.t(i).is_const}
    last: dict[int, int] = {i: 0 for i in first}
    for k, step in enumerate(s.steps):
        for i in step.reads:
            last[i] = max(last.get(i, 0), k)
        for i in step.writes:
            first.setdefault(i, k)
            last.setdefault(i, k)
    for i in g.outputs:
        if i in first:
            last[i] = max(n - 1, 0)
    return Liveness(first=first, last=last)


def _dies_at(s: Schedule, live: Liveness, tensor: int, k: int) -> bool:
    """The tensor's last reader is step k and nothing reads it after the model ran."""
    return live.last.get(tensor) == k and tensor not in s.graph.outputs


def _batch1_4d(g: Graph, tensor: int) -> bool:
    t = g.t(tensor)
    return len(t.shape) == 4 and t.shape[0] == 1


def rule_view(s: Schedule, live: Liveness, k: int, op: Operator) -> list[Alias]:
    """RESHAPE: the output is a view of the input (same bytes, no code), so it starts at the
    input's first byte (SAME)."""
    src, dst = op.inputs[0], op.outputs[0]
    if op.op is OpType.RESHAPE and _dies_at(s, live, src, k):
        return [Alias(tensor_buffer(src), tensor_buffer(dst), AliasKind.SAME)]
    return []


def rule_elementwise(s: Schedule, live: Liveness, k: int, op: Operator) -> list[Alias]:
    """ADD, SUB, MUL, MINIMUM, MAXIMUM and SQUARED_DIFFERENCE without broadcasting write over
    either operand (SAME): element i of the output is written after element i of both operands
    was read, and no later element reads an earlier one. Same shape and int8 everywhere."""
    if op.op not in (OpType.ADD, OpType.SUB, OpType.MUL, OpType.MINIMUM, OpType.MAXIMUM, OpType.SQUARED_DIFFERENCE):
        return []
    g = s.graph
    out = g.t(op.outputs[0])
    aliases = []
    for i in dict.fromkeys(op.inputs):
        t = g.t(i)
        if t.is_const or t.shape != out.shape or t.dtype is not DType.INT8 or out.dtype is not DType.INT8:
            continue
        if any(g.t(j).shape != out.shape for j in op.inputs):
            continue  # broadcasting: an element of the operand is read again later
        if _dies_at(s, live, i, k):
            aliases.append(Alias(tensor_buffer(i), tensor_buffer(op.outputs[0]), AliasKind.SAME))
    return aliases


def rule_unary(s: Schedule, live: Liveness, k: int, op: Operator) -> list[Alias]:
    """QUANTIZE (to 8 bits), LOGISTIC and the activation operators (RELU, RELU_N1_TO_1, RELU6, LEAKY_RELU, TANH, HARD_SWISH:
    table kernels) read element i, then write element i, in order, and the
    output element is no larger than the input element: output byte i*out_size lies at or
    below input element i, already read. So the output may start where the input starts."""
    if op.op not in (OpType.QUANTIZE, OpType.LOGISTIC, OpType.RELU, OpType.RELU_N1_TO_1, OpType.RELU6, OpType.LEAKY_RELU,
                     OpType.TANH, OpType.HARD_SWISH):
        return []
    g = s.graph
    src, dst = op.inputs[0], op.outputs[0]
    x, y = g.t(src), g.t(dst)
    if x.size != y.size or y.dtype.itemsize > x.dtype.itemsize or not _dies_at(s, live, src, k):
        return []
    return [Alias(tensor_buffer(src), tensor_buffer(dst), AliasKind.SAME)]


def window_rows_overlap(s: Schedule, op: Operator) -> int:
    """HEAD overlap bytes for a conv, depthwise or pooling op, PAD as a 1-row window (batch 1)."""
    g = s.graph
    if not (_batch1_4d(g, op.inputs[0]) and _batch1_4d(g, op.outputs[0])):
        return 0
    if g.t(op.inputs[0]).dtype.itemsize != 1 or g.t(op.outputs[0]).dtype.itemsize != 1:
        return 0
    if op.op in WINDOW_OPS:
        return window_head_overlap(window_of(g, op, s.pads))
    if op.op is OpType.PAD:
        (n0, _), (top, _), _, _ = op.attrs.paddings
        if n0 != 0:
            return 0
        x, y = g.t(op.inputs[0]), g.t(op.outputs[0])
        # The PAD kernel writes output row r (input row r - top, or padding) top to bottom.
        win = Window(x.shape[1], x.shape[2], x.shape[3], y.shape[1], y.shape[2], y.shape[3], 1, 1, 1, 1, 1, 1, top, 0)
        return window_head_overlap(win)
    return 0


def rule_window(s: Schedule, live: Liveness, k: int, op: Operator) -> list[Alias]:
    """CONV_2D, DEPTHWISE_CONV_2D, pooling and PAD write output rows top to bottom, and output
    row r only reads input rows from r * stride - pad_top on: the output may sit below the
    input and end inside the rows already consumed (HEAD, overlap from the row frontier, see
    `mcugen.fusion.window_head_overlap`). Strided and 1x1 convolutions consume their input at
    least as fast as they write, so they overlap it almost entirely."""
    src = op.inputs[0]
    if not _dies_at(s, live, src, k):
        return []
    overlap = window_rows_overlap(s, op)
    if overlap <= 0:
        return []
    return [Alias(tensor_buffer(src), tensor_buffer(op.outputs[0]), AliasKind.HEAD, overlap)]


def depthwise_plane_bytes(s: Schedule, op: Operator) -> int:
    """Scratch of the in-place depthwise kernel (one input channel plane), 0 if not eligible."""
    g = s.graph
    if op.op is not OpType.DEPTHWISE_CONV_2D or not (_batch1_4d(g, op.inputs[0]) and _batch1_4d(g, op.outputs[0])):
        return 0
    x, y = g.t(op.inputs[0]), g.t(op.outputs[0])
    if x.shape[3] != y.shape[3] or x.dtype is not DType.INT8 or y.dtype is not DType.INT8:
        return 0  # depth multiplier 1 only
    return x.shape[1] * x.shape[2]


def rule_depthwise_in_place(s: Schedule, live: Liveness, k: int, op: Operator) -> tuple[list[Alias], int]:
    """DEPTHWISE_CONV_2D with depth multiplier 1 writes over its input (SAME) with the in-place
    kernel: channel by channel, it copies input channel c (an H x W plane) to scratch, then
    writes output channel c; output element (y, x, c) lies at index (y * out_w + x) * C + c,
    an element of channel c, whose input is in the plane. Chosen instead of the HEAD rule when
    the plane is smaller than the rows the HEAD rule keeps. Returns (aliases, scratch bytes)."""
    src = op.inputs[0]
    plane = depthwise_plane_bytes(s, op)
    if not plane or not _dies_at(s, live, src, k):
        return [], 0
    out_bytes = s.graph.t(op.outputs[0]).nbytes
    head_lag = out_bytes - window_rows_overlap(s, op)
    if plane >= head_lag:
        return [], 0
    return [Alias(tensor_buffer(src), tensor_buffer(op.outputs[0]), AliasKind.SAME)], plane


def rule_chain(s: Schedule, live: Liveness, k: int, chain: Chain) -> list[Alias]:
    """A fused chain's output overlaps its input x from below by the bytes x has been consumed
    when each output row is written (HEAD, `mcugen.fusion.chain_head_overlap`); with a
    residual the overlap can be all of x, i.e. the block runs in place."""
    if not _dies_at(s, live, chain.input, k):
        return []
    overlap = chain_head_overlap(chain)
    if overlap <= 0:
        return []
    return [Alias(tensor_buffer(chain.input), tensor_buffer(chain.output), AliasKind.HEAD, overlap)]


@dataclass(frozen=True)
class StepMemory:
    scratch: int  # bytes of scratch the step's kernel needs (0: none)
    aliases: tuple[Alias, ...]
    in_place_depthwise: bool = False  # the SAME depthwise rule was applied


def step_memory(s: Schedule, live: Liveness, k: int) -> StepMemory:
    """The scratch and the aliases of step k (every rule that applies)."""
    step = s.steps[k]
    if step.chain is not None:
        return StepMemory(step.chain.scratch_bytes, tuple(rule_chain(s, live, k, step.chain)))
    op = s.op(step.ops[0])
    inplace, plane = rule_depthwise_in_place(s, live, k, op)
    if inplace:
        return StepMemory(plane, tuple(inplace), in_place_depthwise=True)
    aliases = rule_view(s, live, k, op) + rule_elementwise(s, live, k, op) + rule_unary(s, live, k, op) + rule_window(s, live, k, op)
    return StepMemory(0, tuple(aliases))


@dataclass(frozen=True)
class Buffers:
    buffers: tuple[Buffer, ...]
    aliases: tuple[Alias, ...]
    memory: tuple[StepMemory, ...]  # per step
    live: Liveness


def schedule_buffers(s: Schedule, extra_scratch: Optional[Mapping[int, int]] = None) -> Buffers:
    """Planner buffers (tensors and step scratch) and aliases for a schedule.

    `extra_scratch` maps an output tensor index to the bytes of scratch that a later kernel
    pass needs at the (unfused) step writing that tensor; it is keyed by tensor, not step, so
    that it survives a different choice of fused chains. A fused chain's kernel states its own
    under the tuple of the chain's operators. A step's scratch is the larger need.
    """
    g = s.graph
    live = liveness(s)
    buffers = [
        Buffer(name=tensor_buffer(i), size=max(g.t(i).nbytes, 1), first=live.first[i], last=max(live.last[i], live.first[i]))
        for i in sorted(live.first)
        if not g.t(i).is_const
    ]
    memory = tuple(step_memory(s, live, k) for k in range(len(s.steps)))
    for k, m in enumerate(memory):
        size = m.scratch
        step = s.steps[k]
        if extra_scratch:
            key = tuple(step.chain.ops) if step.chain is not None else s.op(step.ops[0]).outputs[0]
            size = max(size, int(extra_scratch.get(key, 0)))
        if size:
            buffers.append(Buffer(name=scratch_buffer(k), size=size, first=k, last=k))
    aliases = tuple(a for m in memory for a in m.aliases)
    return Buffers(tuple(buffers), aliases, memory, live)
