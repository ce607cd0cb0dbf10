"""Fused row-streaming chains (inverted residuals, stem + first block): patterns, geometry, overlap rule.

A *chain* is up to three convolution stages run a few rows at a time by one C kernel
(`mcugen_chain_s8`), so that the tensors between the stages never exist in full:

    x -> [A: CONV_2D kxk] -> ring of A rows -> [B: DEPTHWISE or CONV_2D kxk] -> one pixel
      -> [C: CONV_2D 1x1] -> [ADD with x] -> y

- A (optional) reads the chain input x and writes its output rows into a ring buffer of
  `ring_rows` rows (row r in slot r % ring_rows). Without A, B reads x directly.
- B produces one output pixel (all channels) at a time; with C that pixel goes to a small
  pixel buffer and C (a 1x1 projection) turns it into the output pixel, else B writes it.
- ADD (optional): a residual with the chain input x (same shape as y); the final value of
  each element is the ADD of the stage's int8 value and x's element, read just before the
  element of y is written.
- FC (optional): a FULLY_CONNECTED reading the whole (flattened) result: each final pixel
  goes to a pixel buffer and is accumulated into one int32 per unit, in the same order as the
  FC's own loop over its input; the units are requantized and written at the end. The
  result tensor never exists.
Examples: MobileNet v2 block (A = 1x1 expand, B = 3x3 depthwise, C = 1x1 project, ADD when the
stride is 1 and the channels match), the stem fused with the first block (A = 3x3 stride-2
conv, B = depthwise, C = project), a ResNet basic block (A = 3x3, B = 3x3, ADD), MobileNet v1
(B = depthwise, C = pointwise).

Row schedule (the C kernel does exactly this, and `chain_head_overlap` models it):
for each output row oy of B: first compute every A row up to the last row B's window reads
for oy (rows not yet computed, in order), then compute the row's pixels left to right. Each
A row is computed once; B's window spans `(kernel_h - 1) * dilation_h + 1` rows, so a ring of
that many rows (at most A's height) always holds every row B reads.

The same integer arithmetic as the per-op kernels runs in another order, so outputs are
bit-exact with the layer-by-layer execution.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Mapping, Optional

from mcugen.ir import DType, Graph, Operator, OpType
from mcugen.geometry import same_padding

# Largest kernel height the chain kernel accepts (its row-pointer table has this many
# entries; templates/c/mcugen_kernels.c.j2 defines MCUGEN_CHAIN_MAX_KERNEL_H to the same value).
CHAIN_MAX_KERNEL_H = 16


@dataclass(frozen=True)
class FoldedPad:
    """Explicit zero-point padding a PAD operator added in front of a convolution (see passes)."""

    top: int
    bottom: int
    left: int
    right: int


@dataclass(frozen=True)
class Window:
    """Geometry of a sliding-window operator over NHWC rows, with the padding resolved."""

    in_h: int
    in_w: int
    in_c: int
    out_h: int
    out_w: int
    out_c: int
    kernel_h: int
    kernel_w: int
    stride_h: int
    stride_w: int
    dilation_h: int
    dilation_w: int
    pad_top: int
    pad_left: int

    @property
    def span_h(self) -> int:
        """Input rows one output row reads (the kernel's height with dilation)."""
        return (self.kernel_h - 1) * self.dilation_h + 1

    @property
    def in_row_bytes(self) -> int:
        return self.in_w * self.in_c

    @property
    def out_row_bytes(self) -> int:
        return self.out_w * self.out_c

    def first_row(self, oy: int) -> int:
        """First input row output row `oy` reads (clipped to the image)."""
        return max(0, oy * self.stride_h - self.pad_top)

    def last_row(self, oy: int) -> int:
        """Last input row output row `oy` reads (clipped to the image)."""
        return min(self.in_h - 1, oy * self.stride_h - self.pad_top + self.span_h - 1)


WINDOW_OPS = (OpType.CONV_2D, OpType.DEPTHWISE_CONV_2D, OpType.AVERAGE_POOL_2D, OpType.MAX_POOL_2D)


def window_of(g: Graph, op: Operator, pads: Mapping[int, FoldedPad]) -> Window:
    """The window geometry of a CONV_2D, DEPTHWISE_CONV_2D or pooling op (batch folded in rows
    by the caller). A PAD folded into the op (`pads[op.index]`) adds to its own padding."""
    x, o = g.t(op.inputs[0]), g.t(op.outputs[0])
    a = op.attrs
    if op.op in (OpType.CONV_2D, OpType.DEPTHWISE_CONV_2D):
        w = g.t(op.inputs[1])
        kh, kw, dh, dw = w.shape[1], w.shape[2], a.dilation_h, a.dilation_w
    else:
        kh, kw, dh, dw = a.filter_h, a.filter_w, 1, 1
    extra = pads.get(op.index, FoldedPad(0, 0, 0, 0))
    padded_h = x.shape[1] + extra.top + extra.bottom
    padded_w = x.shape[2] + extra.left + extra.right
    return Window(
        in_h=x.shape[1],
        in_w=x.shape[2],
        in_c=x.shape[3],
        out_h=o.shape[1],
        out_w=o.shape[2],
        out_c=o.shape[3],
        kernel_h=kh,
        kernel_w=kw,
        stride_h=a.stride_h,
        stride_w=a.stride_w,
        dilation_h=dh,
        dilation_w=dw,
        pad_top=extra.top + same_padding(padded_h, kh, a.stride_h, dh, o.shape[1], a.padding),
        pad_left=extra.left + same_padding(padded_w, kw, a.stride_w, dw, o.shape[2], a.padding),
    )


# ---- the overlap rule ------------------------------------------------------------------------


def head_overlap(out_bytes: int, events: list[tuple[int, Optional[int]]], floor: Optional[int] = None) -> int:
    """Bytes of the input an output may cover from below (a planner HEAD alias), from write events.

    Each event is `(end, frontier)`: while the kernel writes output bytes below `end` (relative
    to the output's start), every input byte it will still read lies at or above `frontier`
    (relative to the input's start; None: nothing is read any more). If the output starts `D`
    bytes below the input, every event needs `end - D <= frontier`, so the smallest safe shift
    is `D = max(end - frontier)` (and at least `floor` when given), and the output may reach
    `out_bytes - D` bytes into the input. Returns 0 when no overlap is safe.
    """
    shift = floor
    for end, frontier in events:
        if frontier is None:
            continue
        need = end - frontier
        shift = need if shift is None else max(shift, need)
    if shift is None:
        return out_bytes  # nothing is read while writing: anything the planner allows
    return max(0, out_bytes - shift)


def window_head_overlap(win: Window) -> int:
    """HEAD overlap for a per-op kernel that writes output rows top to bottom (batch 1).

    Rule: the conv, depthwise, pooling kernels compute output row `oy` pixel by pixel from input
    rows `first_row(oy)` and below-the-next-rows only; no later output row reads a lower input
    row. So while row `oy` is written, every input byte still to be read lies at or above
    `first_row(oy) * in_row_bytes`: the output may sit below the input and end inside the
    input rows already consumed. (A strided or 1x1 convolution consumes its input at least as
    fast as it writes, so the output can cover nearly all of its input.)
    """
    events = [((oy + 1) * win.out_row_bytes, win.first_row(oy) * win.in_row_bytes) for oy in range(win.out_h)]
    return head_overlap(win.out_h * win.out_row_bytes, events)


# ---- chains ----------------------------------------------------------------------------------


@dataclass(frozen=True)
class Stage:
    """One convolution of a chain: the operator, its geometry and whether it is depthwise."""

    op: int  # operator index in the graph
    window: Window
    depthwise: bool

    @property
    def depth_multiplier(self) -> int:
        return self.window.out_c // self.window.in_c if self.depthwise else 0


@dataclass(frozen=True)
class Chain:
    """A fused chain A? -> B -> C? -> ADD? (see the module docstring)."""

    a: Optional[Stage]
    b: Stage
    c: Optional[Stage]
    add: Optional[int]  # ADD operator index; its other operand is `input`
    input: int  # tensor index of x
    output: int  # tensor index of y (the last op's output)
    internal: tuple[int, ...]  # tensors between the stages, which no longer exist
    fc: Optional[int] = None  # FULLY_CONNECTED operator index reducing the result
    fc_units: int = 0

    @property
    def ops(self) -> tuple[int, ...]:
        ops = [s.op for s in (self.a, self.b, self.c) if s is not None]
        return tuple(ops + [i for i in (self.add, self.fc) if i is not None])

    @property
    def accumulator_bytes(self) -> int:
        return 4 * self.fc_units

    @property
    def final_pixel_bytes(self) -> int:
        return self.out_window.out_c if self.fc is not None else 0

    @property
    def ring_rows(self) -> int:
        return min(self.b.window.in_h, self.b.window.span_h) if self.a is not None else 0

    @property
    def ring_bytes(self) -> int:
        return self.ring_rows * self.a.window.out_row_bytes if self.a is not None else 0

    @property
    def pixel_bytes(self) -> int:
        return self.b.window.out_c if self.c is not None else 0

    @property
    def scratch_bytes(self) -> int:
        """FC accumulators (int32), then the ring, B's pixel and the final pixel."""
        return self.accumulator_bytes + self.ring_bytes + self.pixel_bytes + self.final_pixel_bytes

    @property
    def out_window(self) -> Window:
        return (self.c or self.b).window

    @property
    def in_row_bytes(self) -> int:
        return (self.a or self.b).window.in_row_bytes

    @property
    def out_bytes(self) -> int:
        if self.fc is not None:
            return self.fc_units
        w = self.out_window
        return self.b.window.out_h * w.out_row_bytes

    def describe(self, g: Graph) -> str:
        parts = []
        for stage in (self.a, self.b, self.c):
            if stage is not None:
                w = stage.window
                kind = "depthwise" if stage.depthwise else "conv"
                parts.append(f"{kind} {w.kernel_h}x{w.kernel_w}/{w.stride_h} (op {stage.op})")
        if self.add is not None:
            parts.append(f"add (op {self.add})")
        if self.fc is not None:
            parts.append(f"fully connected (op {self.fc})")
        return " -> ".join(parts)


def chain_head_overlap(chain: Chain) -> int:
    """HEAD overlap of a chain's output over its input x, from the kernel's row schedule.

    Rule: output row `oy` is written after the A rows it needs were computed (A reads x rows
    in order; the next A row to compute, `next_a`, reads x from row
    `next_a * stride - pad_top` on) or, without A, while B reads x from `b.first_row(oy)` on.
    With a residual, element e of x is read just before element e of y is written and the
    rows after `oy` are still needed, so y may not start above x (shift >= 0) and may not
    pass x row `oy + 1`. Everything below those frontiers is consumed and may be overwritten.
    """
    if chain.fc is not None:
        return chain.out_bytes  # the units are written after the last read of x
    b, out_row = chain.b.window, chain.out_window.out_row_bytes
    x_row = chain.in_row_bytes
    events: list[tuple[int, Optional[int]]] = []
    next_a = 0
    for oy in range(b.out_h):
        if chain.a is not None:
            next_a = max(next_a, b.last_row(oy) + 1)
            a = chain.a.window
            frontier = a.first_row(next_a) * x_row if next_a < a.out_h else None
        else:
            frontier = b.first_row(oy) * x_row
        if chain.add is not None:
            residual = (oy + 1) * x_row
            frontier = residual if frontier is None else min(frontier, residual)
        events.append(((oy + 1) * out_row, frontier))
    return head_overlap(chain.out_bytes, events, floor=0 if chain.add is not None else None)


def _consumers(g: Graph) -> dict[int, list[Operator]]:
    readers: dict[int, list[Operator]] = {}
    for op in g.operators:
        for i in set(op.inputs):
            if i >= 0:
                readers.setdefault(i, []).append(op)
    return readers


def _int8_batch1(g: Graph, tensor: int) -> bool:
    t = g.t(tensor)
    return t.dtype is DType.INT8 and t.quant is not None and len(t.shape) == 4 and t.shape[0] == 1 and not t.is_const


def _stage(g: Graph, op: Operator, pads: Mapping[int, FoldedPad]) -> Optional[Stage]:
    """A chain stage for a CONV_2D or DEPTHWISE_CONV_2D the chain kernel can run, else None."""
    if op.op not in (OpType.CONV_2D, OpType.DEPTHWISE_CONV_2D):
        return None
    if not (_int8_batch1(g, op.inputs[0]) and _int8_batch1(g, op.outputs[0])):
        return None
    w = g.t(op.inputs[1])
    if not w.is_const or w.dtype is not DType.INT8:
        return None
    win = window_of(g, op, pads)
    if win.kernel_h > CHAIN_MAX_KERNEL_H:
        return None
    depthwise = op.op is OpType.DEPTHWISE_CONV_2D
    if depthwise and win.out_c % win.in_c:
        return None
    return Stage(op=op.index, window=win, depthwise=depthwise)


def find_chains(g: Graph, pads: Mapping[int, FoldedPad]) -> list[Chain]:
    """Every chain the graph offers, matched left to right without sharing an operator.

    At each operator not yet taken: A = this CONV_2D, B = the only reader of A's output (a
    CONV_2D or DEPTHWISE_CONV_2D); or, without A, B = this op when it is a depthwise conv.
    Then C = the only reader of B's output if it is a 1x1 stride-1 CONV_2D, ADD = the only
    reader of the last output if its other operand is x with the same shape and x has no
    other readers, and FC = the only reader of the last output if it is a FULLY_CONNECTED
    over all of it (one batch). Intermediate tensors must have exactly one reader and not be
    graph outputs; a chain has at least two operators.
    """
    readers = _consumers(g)
    outputs = set(g.outputs)
    by_index = {op.index: op for op in g.operators}
    taken: set[int] = set()
    chains: list[Chain] = []

    def only_reader(tensor: int) -> Optional[Operator]:
        ops = readers.get(tensor, [])
        if len(ops) != 1 or tensor in outputs or ops[0].index in taken:
            return None
        return ops[0]

    for op in g.operators:
        if op.index in taken:
            continue
        first = _stage(g, op, pads)
        if first is None:
            continue
        a: Optional[Stage] = None
        b: Optional[Stage] = None
        nxt = only_reader(op.outputs[0])
        if nxt is not None and nxt.inputs[0] == op.outputs[0] and not first.depthwise:
            b = _stage(g, nxt, pads)
            if b is not None:
                a = first
        if b is None and first.depthwise:
            b = first  # B reads x directly
        if b is None:
            continue
        internal = [op.outputs[0]] if a is not None else []
        last = by_index[b.op].outputs[0]
        c = None
        nxt = only_reader(last)
        if nxt is not None and nxt.op is OpType.CONV_2D and nxt.inputs[0] == last:
            cand = _stage(g, nxt, pads)
            w = cand.window if cand is not None else None
            if w is not None and (w.kernel_h, w.kernel_w, w.stride_h, w.stride_w) == (1, 1, 1, 1) and w.pad_top == 0 and w.pad_left == 0:
                c = cand
                internal.append(last)
                last = nxt.outputs[0]
        x_index = by_index[(a or b).op].inputs[0]
        add = None
        nxt = only_reader(last)
        if nxt is not None and nxt.op is OpType.ADD:
            others = [i for i in nxt.inputs if i != last]
            x_readers = {r.index for r in readers.get(x_index, [])}
            if (
                len(others) == 1
                and others[0] == x_index
                and g.t(x_index).shape == g.t(last).shape
                and x_readers == {(a or b).op, nxt.index}
                and _int8_batch1(g, nxt.outputs[0])
                and g.t(nxt.outputs[0]).shape == g.t(last).shape
            ):
                add = nxt.index
                internal.append(last)
                last = nxt.outputs[0]
        fc, units = None, 0
        nxt = only_reader(last)
        if nxt is not None and nxt.op is OpType.FULLY_CONNECTED and nxt.inputs[0] == last:
            w, y = g.t(nxt.inputs[1]), g.t(nxt.outputs[0])
            if (
                w.is_const
                and w.dtype is DType.INT8
                and len(w.shape) == 2
                and w.shape[1] == g.t(last).size
                and y.dtype is DType.INT8
                and y.quant is not None
                and y.size == w.shape[0]
            ):
                fc, units = nxt.index, w.shape[0]
                internal.append(last)
                last = nxt.outputs[0]
        if len([i for i in (a, c, add, fc) if i is not None]) == 0:
            continue  # a single stage is not a fusion
        chain = Chain(a=a, b=b, c=c, add=add, input=x_index, output=last, internal=tuple(internal), fc=fc, fc_units=units)
        chains.append(chain)
        taken.update(chain.ops)
    return chains
