"""Fused chains: pattern matching, ring-buffer row schedule, overlap rules at their limit, bit-exact C.

Graphs are built directly in the IR from seeded random geometries (odd sizes, SAME/VALID,
strides 1-2, dilation, depth multipliers, residuals, an FC tail), compiled with
-DMCUGEN_POISON (dead arena bytes overwritten at every layer boundary) and compared with
the bit-exact numpy emulator (itself pinned to tflite-runtime/TFLM in test_emulate.py).
"""

from __future__ import annotations

import math
import tempfile
from dataclasses import replace
from pathlib import Path

import numpy as np
import pytest

from mcugen import codegen, driver
from mcugen.emulate import emulate
from mcugen.fusion import CHAIN_MAX_KERNEL_H, Window, chain_head_overlap, find_chains, head_overlap, window_head_overlap
from mcugen.ir import (
    Activation,
    Conv2DAttrs,
    DepthwiseConv2DAttrs,
    DType,
    ElementwiseAttrs,
    FullyConnectedAttrs,
    Graph,
    Operator,
    OpType,
    Padding,
    Pool2DAttrs,
    Quant,
    Tensor,
)
from mcugen.arena import PlannedSchedule, plan_schedule
from mcugen.lower import emit, lower
from mcugen.passes import fold_pads, tensor_buffer
from mcugen.planner import Buffer, Plan, verify

POISON = ("-DMCUGEN_POISON",)

# ---- an IR factory -----------------------------------------------------------------------


class GraphBuilder:
    """Builds a valid int8 IR graph op by op, with seeded random weights and quantization."""

    def __init__(self, seed: int, name: str = "g"):
        self.rng = np.random.default_rng(seed)
        self.name = name
        self.tensors: list[Tensor] = []
        self.ops: list[Operator] = []
        self.inputs: list[int] = []

    def _tensor(self, shape, dtype=DType.INT8, quant=None, data=None, name=None) -> int:
        i = len(self.tensors)
        self.tensors.append(Tensor(i, name or f"t{i}", tuple(shape), dtype, quant, data))
        return i

    def _act_quant(self) -> Quant:
        scale = float(self.rng.uniform(0.02, 0.08))
        zp = int(self.rng.integers(-30, 30))
        return Quant(np.array([scale], np.float32), np.array([zp], np.int64))

    def input(self, shape) -> int:
        i = self._tensor(shape, quant=self._act_quant())
        self.inputs.append(i)
        return i

    def _add_op(self, kind, inputs, out_shape, attrs, quant=None) -> int:
        o = self._tensor(out_shape, quant=quant or self._act_quant())
        self.ops.append(Operator(len(self.ops), kind, list(inputs), [o], attrs))
        return o

    def _out_size(self, size, k, s, d, padding):
        eff = (k - 1) * d + 1
        return math.ceil(size / s) if padding is Padding.SAME else math.ceil((size - eff + 1) / s)

    def _weights(self, shape, axis, per_channel=True):
        data = self.rng.integers(-127, 128, size=shape).astype(np.int8)
        n = shape[axis] if per_channel else 1
        scales = self.rng.uniform(0.002, 0.02, size=n).astype(np.float32)
        return self._tensor(shape, quant=Quant(scales, np.zeros(n, np.int64), axis), data=data)

    def _bias(self, x: int, weights: int, n: int):
        """int32 bias whose scale is input scale x weight scale, as TFLite requires."""
        scales = (self.tensors[x].quant.scale[0] * np.broadcast_to(self.tensors[weights].quant.scale, (n,))).astype(np.float32)
        data = self.rng.integers(-3000, 3000, size=n).astype(np.int32)
        return self._tensor((n,), DType.INT32, Quant(scales, np.zeros(n, np.int64)), data)

    def conv(self, x, out_c, k=(1, 1), s=(1, 1), d=(1, 1), padding=Padding.SAME, act=Activation.RELU6, bias=True) -> int:
        n, h, w, c = self.tensors[x].shape
        oh, ow = self._out_size(h, k[0], s[0], d[0], padding), self._out_size(w, k[1], s[1], d[1], padding)
        wt = self._weights((out_c, k[0], k[1], c), 0)
        ins = [x, wt] + ([self._bias(x, wt, out_c)] if bias else [])
        return self._add_op(OpType.CONV_2D, ins, (n, oh, ow, out_c), Conv2DAttrs(s[0], s[1], d[0], d[1], padding, act))

    def dw(self, x, k=(3, 3), s=(1, 1), d=(1, 1), m=1, padding=Padding.SAME, act=Activation.RELU6) -> int:
        n, h, w, c = self.tensors[x].shape
        oh, ow = self._out_size(h, k[0], s[0], d[0], padding), self._out_size(w, k[1], s[1], d[1], padding)
        wt = self._weights((1, k[0], k[1], c * m), 3)
        attrs = DepthwiseConv2DAttrs(s[0], s[1], d[0], d[1], padding, act, m)
        return self._add_op(OpType.DEPTHWISE_CONV_2D, [x, wt, self._bias(x, wt, c * m)], (n, oh, ow, c * m), attrs)

    def add(self, a, b, act=Activation.NONE) -> int:
        return self._add_op(OpType.ADD, [a, b], self.tensors[a].shape, ElementwiseAttrs(act))

    def pool(self, x, kind, k=(3, 3), s=(2, 2), padding=Padding.SAME) -> int:
        n, h, w, c = self.tensors[x].shape
        oh, ow = self._out_size(h, k[0], s[0], 1, padding), self._out_size(w, k[1], s[1], 1, padding)
        attrs = Pool2DAttrs(k[0], k[1], s[0], s[1], padding, Activation.NONE)
        return self._add_op(kind, [x], (n, oh, ow, c), attrs, quant=self.tensors[x].quant)

    def fc(self, x, units) -> int:
        depth = self.tensors[x].size
        wt = self._weights((units, depth), 0)
        return self._add_op(OpType.FULLY_CONNECTED, [x, wt, self._bias(x, wt, units)], (1, units), FullyConnectedAttrs(Activation.NONE, False))

    def graph(self, outputs) -> Graph:
        return Graph(self.name, self.tensors, self.ops, list(self.inputs), list(outputs))


def random_block(seed: int) -> tuple[Graph, dict]:
    """One random chain-shaped graph: [A conv] -> B depthwise/conv -> [C 1x1] -> [ADD x] -> [FC]."""
    rng = np.random.default_rng(1000 + seed)
    gb = GraphBuilder(seed, f"block{seed}")
    h, w = int(rng.integers(3, 12)), int(rng.integers(3, 11))
    cin = int(rng.integers(1, 7))
    x = gb.input((1, h, w, cin))
    shape = {"h": h, "w": w, "cin": cin}
    has_a = bool(rng.random() < 0.8)
    stem = has_a and bool(rng.random() < 0.3)  # a strided kxk first conv, as a network's stem
    y = x
    if has_a:
        mid = int(rng.integers(2, 13))
        if stem:
            y = gb.conv(y, mid, k=(3, 3), s=(2, 2), padding=Padding(rng.choice(["SAME", "VALID"])) if min(h, w) >= 3 else Padding.SAME)
        else:
            y = gb.conv(y, mid)
    pad = Padding.SAME if rng.random() < 0.75 else Padding.VALID
    kb = int(rng.choice([1, 3, 5])) if pad is Padding.SAME else 3
    sb = int(rng.choice([1, 1, 2]))
    db = int(rng.choice([1, 1, 2])) if sb == 1 else 1
    depthwise = bool(rng.random() < 0.8) or not has_a
    hy, wy = gb.tensors[y].shape[1:3]
    if pad is Padding.VALID and min(hy, wy) < (kb - 1) * db + 1:
        pad = Padding.SAME
    if depthwise:
        m = int(rng.choice([1, 1, 2]))
        y = gb.dw(y, k=(kb, kb), s=(sb, sb), d=(db, db), m=m, padding=pad)
    else:
        y = gb.conv(y, int(rng.integers(2, 9)), k=(kb, kb), s=(sb, sb), d=(db, db), padding=pad)
    has_c = bool(rng.random() < 0.8) or not has_a
    if has_c:
        out_c = cin if rng.random() < 0.6 else int(rng.integers(1, 9))
        y = gb.conv(y, out_c, act=Activation.NONE, bias=bool(rng.random() < 0.9))
    residual = gb.tensors[y].shape == gb.tensors[x].shape and rng.random() < 0.8
    if residual:
        y = gb.add(*((y, x) if rng.random() < 0.5 else (x, y)), act=Activation.RELU if rng.random() < 0.3 else Activation.NONE)
    if rng.random() < 0.2:
        y = gb.fc(y, int(rng.integers(1, 6)))
    shape.update(has_a=has_a, stem=stem, depthwise=depthwise, has_c=has_c, residual=residual)
    return gb.graph([y]), shape


# ---- running a program ---------------------------------------------------------------------


def run_program(graph: Graph, program, runs: list[list[np.ndarray]], cflags=POISON) -> list[list[np.ndarray]]:
    gen = driver.Generated(graph, program, codegen.render_model(program, graph))
    with tempfile.TemporaryDirectory(prefix="mcugen-fusion-") as tmp:
        exe = driver.compile_host(gen, Path(tmp) / "build", cflags)
        return driver.run_host(exe, gen, runs, Path(tmp) / "io")


def assert_matches_emulator(graph: Graph, program, count: int = 2, seed: int = 0, cflags=POISON) -> None:
    runs = driver.random_inputs(graph, count, seed)
    outs = run_program(graph, program, runs, cflags)
    for r, run in enumerate(runs):
        want = emulate(graph, run).outputs
        for got, exp in zip(outs[r], want):
            assert np.array_equal(got.reshape(-1), np.asarray(exp).reshape(-1)), f"run {r}: C differs from the emulator"


# ---- the row schedule and the overlap rule -------------------------------------------------------


def test_head_overlap_from_events():
    # Writes below 10 while reads start at 4: the output must start 6 bytes lower.
    assert head_overlap(10, [(10, 4)]) == 4
    # Nothing read while writing: any overlap the planner finds.
    assert head_overlap(10, [(10, None)]) == 10
    # A floor (the residual's element-wise order): never above the input's start.
    assert head_overlap(10, [(5, 100)], floor=0) == 10
    # More to write than already consumed at the end: no overlap at all.
    assert head_overlap(10, [(10, 0)]) == 0


@pytest.mark.parametrize(
    "win,expected",
    [
        # 3x3 stride 1 SAME on 8 rows of 4 bytes: output row r needs input rows from r - 1: lag 2 rows.
        (Window(8, 2, 2, 8, 2, 2, 3, 3, 1, 1, 1, 1, 1, 1), 32 - 8),
        # 1x1: output row r needs input row r: lag one output row.
        (Window(8, 2, 2, 8, 2, 2, 1, 1, 1, 1, 1, 1, 0, 0), 32 - 4),
        # 1x1 expanding 2 -> 8 channels: output rows 4x larger, the output ends one input row early.
        (Window(8, 1, 2, 8, 1, 8, 1, 1, 1, 1, 1, 1, 0, 0), 64 - 8 * 8 + 7 * 2),
        # 3x3 stride 2 SAME on an even input (pad_top 0): row r reads from row 2r, output rows half as big.
        (Window(8, 4, 1, 4, 2, 1, 3, 3, 2, 2, 1, 1, 0, 0), 8 - 2),
        # 5 rows, kernel 5 VALID: one output row that reads everything: no overlap.
        (Window(5, 1, 1, 1, 1, 1, 5, 1, 1, 1, 1, 1, 0, 0), 0),
    ],
)
def test_window_head_overlap_table(win, expected):
    assert window_head_overlap(win) == expected


def test_ring_rows_cover_the_window():
    g, _ = build_ir_block(k=5, s=1, dilation=2, h=12)
    (chain,) = find_chains(*fold_pads(g))
    # B reads (5 - 1) * 2 + 1 = 9 rows of A's output: the ring holds exactly those.
    assert chain.ring_rows == 9 and chain.ring_bytes == 9 * 7 * 6
    assert chain.scratch_bytes == chain.ring_bytes + 6  # plus B's output pixel for C


def build_ir_block(k=3, s=1, dilation=1, h=9, residual=True, cin=4, mid=6, seed=0) -> tuple[Graph, int]:
    gb = GraphBuilder(seed)
    x = gb.input((1, h, 7, cin))
    e = gb.conv(x, mid)
    d = gb.dw(e, k=(k, k), s=(s, s), d=(dilation, dilation))
    p = gb.conv(d, cin, act=Activation.NONE)
    y = gb.add(p, x) if residual and s == 1 else p
    return gb.graph([y]), y


def test_mobilenet_block_is_one_chain_with_its_residual():
    g, y = build_ir_block()
    chains = find_chains(*fold_pads(g))
    assert len(chains) == 1
    c = chains[0]
    assert c.a is not None and c.b.depthwise and c.c is not None and c.add == 3 and c.output == y
    assert c.ops == (0, 1, 2, 3)
    # With the residual, output element e is written just after input element e is read.
    assert chain_head_overlap(c) == g.t(c.input).nbytes


def test_no_chain_when_an_inner_tensor_has_two_readers():
    gb = GraphBuilder(1)
    x = gb.input((1, 6, 6, 3))
    e = gb.conv(x, 8)
    d = gb.dw(e)
    y = gb.add(d, e)  # e is read twice: A cannot stream it into a ring
    chains = find_chains(*fold_pads(gb.graph([y])))
    # Only the depthwise with the ADD on its own input remains fusable.
    assert [c.ops for c in chains] == [(1, 2)]


def test_kernel_too_tall_for_the_chain_stays_layer_by_layer():
    gb = GraphBuilder(2)
    x = gb.input((1, 20, 3, 2))
    d = gb.dw(x, k=(CHAIN_MAX_KERNEL_H + 1, 1), padding=Padding.SAME)
    y = gb.conv(d, 2)
    assert find_chains(*fold_pads(gb.graph([y]))) == []


# ---- bit-exact C for random chains ---------------------------------------------------------------

SEEDS = list(range(14))


@pytest.mark.parametrize("seed", SEEDS)
def test_random_chain_bit_exact_fused_and_layerwise(seed):
    g, shape = random_block(seed)
    fused = lower(g, strategy="fused", fusion="all")
    chains = [l for l in fused.layers if l.op == "CHAIN"]
    expect_chain = shape["has_a"] or shape["has_c"] or shape["residual"]
    assert len(chains) == int(expect_chain), shape
    layerwise = lower(g, strategy="layerwise")
    assert all(l.op != "CHAIN" for l in layerwise.layers)
    for program in (fused, layerwise):
        verify(program.buffers, program.plan, program.aliases)
        assert_matches_emulator(g, program, count=2, seed=seed)


def _limit_plan(planned: PlannedSchedule, step: int, extra: int = 0) -> PlannedSchedule:
    """A plan placing step `step`'s output exactly at its alias's limit (alignment 1), every
    other buffer at its own bytes; `extra` > 0 moves it further into the input (forbidden)."""
    bufs = planned.bufs
    aliases = [a for a in bufs.aliases if a.b in {tensor_buffer(i) for i in planned.schedule.steps[step].writes}]
    assert aliases, "the step has no alias"
    al = aliases[0]
    by_name = {b.name: b for b in bufs.buffers}
    a, b = by_name[al.a], by_name[al.b]
    loose = tuple(Buffer(x.name, x.size, x.first, x.last, align=1 if x.name in (al.a, al.b) else x.align) for x in bufs.buffers)
    offsets, top = {}, 0
    for x in loose:
        if x.name in (al.a, al.b):
            continue
        offsets[x.name] = -(-top // 16) * 16
        top = offsets[x.name] + x.size
    base = -(-top // 16) * 16 + b.size + 64  # room below the input for the output
    offsets[al.a] = base
    shift = (al.overlap - b.size) if al.kind.value == "head" else 0
    offsets[al.b] = base + shift + extra
    arena = -(-max(base + a.size, offsets[al.b] + b.size) // 16) * 16
    plan = Plan(offsets, arena, planned.plan.lower_bound_bytes, "limit")
    new_bufs = replace(bufs, buffers=loose)
    if extra == 0:
        verify(loose, plan, bufs.aliases)
    return PlannedSchedule(planned.schedule, new_bufs, plan)


def _limit_cases():
    """(name, graph, chains) whose only step with an alias is the last one."""
    cases = []
    for k, s, d, pad in [(3, 1, 1, "SAME"), (3, 2, 1, "SAME"), (5, 1, 1, "SAME"), (3, 1, 2, "SAME"), (3, 2, 1, "VALID"), (1, 1, 1, "SAME")]:
        gb = GraphBuilder(k * 100 + s * 10 + d)
        x = gb.input((1, 11, 5, 3))
        y = gb.conv(x, 4, k=(k, k), s=(s, s), d=(d, d), padding=Padding(pad))
        cases.append((f"conv{k}x{k}s{s}d{d}{pad}", gb.graph([y]), False))
        gb = GraphBuilder(k * 100 + s * 10 + d + 1)
        x = gb.input((1, 10, 6, 4))
        y = gb.dw(x, k=(k, k), s=(s, s), d=(d, d), padding=Padding(pad), m=1 if s == 2 else 2)
        cases.append((f"dw{k}x{k}s{s}d{d}{pad}", gb.graph([y]), False))
    for kind in (OpType.AVERAGE_POOL_2D, OpType.MAX_POOL_2D):
        gb = GraphBuilder(7)
        x = gb.input((1, 9, 7, 5))
        y = gb.pool(x, kind)
        cases.append((kind.value, gb.graph([y]), False))
    for s in (1, 2):
        for residual in (True, False):
            g, _ = build_ir_block(s=s, residual=residual, h=10, seed=s)
            cases.append((f"block_s{s}_{'res' if residual else 'nores'}", g, True))
    gb = GraphBuilder(11)
    x = gb.input((1, 13, 9, 3))
    y = gb.dw(gb.conv(x, 8, k=(3, 3), s=(2, 2)))
    y = gb.conv(y, 4, act=Activation.NONE)
    cases.append(("stem_block", gb.graph([y]), True))
    return cases


LIMIT_CASES = _limit_cases()


@pytest.mark.parametrize("name,graph,fused", LIMIT_CASES, ids=[c[0] for c in LIMIT_CASES])
def test_overlap_rule_at_its_limit_is_bit_exact(name, graph, fused):
    """The output placed exactly as far into its input as the rule allows (no alignment slack)."""
    folded, pads = fold_pads(graph)
    chains = find_chains(folded, pads) if fused else []
    planned = plan_schedule(folded, pads, chains)
    step = len(planned.schedule.steps) - 1
    program = emit(_limit_plan(planned, step), "limit", name, "fused" if fused else "layerwise")
    assert_matches_emulator(graph, program, count=2, seed=3)


def test_overlap_beyond_the_limit_is_caught():
    """Teeth: the same placements one output row further into the input corrupt the output of
    a kernel that still reads those rows, so the at-limit tests would notice a wrong rule."""
    caught = []
    for name, graph, fused in LIMIT_CASES:
        if not name.startswith(("conv3x3s1", "dw3x3s1", "block_s2_nores")):
            continue
        folded, pads = fold_pads(graph)
        planned = plan_schedule(folded, pads, find_chains(folded, pads) if fused else [])
        step = len(planned.schedule.steps) - 1
        out = graph.t(graph.outputs[0])
        row = out.shape[2] * out.shape[3]
        program = emit(_limit_plan(planned, step, extra=2 * row), "beyond", name, "x")
        runs = driver.random_inputs(graph, 1, 5)
        got = run_program(graph, program, runs, cflags=())[0][0]
        caught.append(not np.array_equal(got.reshape(-1), np.asarray(emulate(graph, runs[0]).outputs[0]).reshape(-1)))
    assert len(caught) == 5 and all(caught)


def test_in_place_depthwise_kernel_is_used_and_exact():
    gb = GraphBuilder(21)
    x = gb.input((1, 6, 5, 32))  # wide channels: the 30-byte plane beats two 160-byte rows
    y = gb.dw(x)
    y = gb.conv(y, 8)
    g = gb.graph([y])
    program = lower(g, strategy="layerwise")
    kernels = [l.kernel for l in program.layers]
    assert kernels[0] == "mcugen_depthwise_conv2d_inplace_s8"
    assert program.tensors[x].offset == program.tensors[program.layers[0].output].offset
    assert program.scratch[0].nbytes == 6 * 5
    assert_matches_emulator(g, program)


def test_pad_folded_into_the_convolution(tmp_path):
    from helpers import OPS_DIR
    from mcugen.tflite_reader import read_tflite

    for name in ("pad_then_conv2d_s2.tflite", "pad_then_depthwise_s2.tflite"):
        g = read_tflite(OPS_DIR / name)
        program = lower(g, strategy="layerwise")
        assert len(program.layers) == 1 and "PAD before it folded in" in program.layers[0].comment[0]
        runs = driver.random_inputs(g, 2, 4)
        from mcugen.oracle import oracles_for

        ref = oracles_for(OPS_DIR / name)[0]
        outs = run_program(g, program, runs)
        for r, run in enumerate(runs):
            assert np.array_equal(outs[r][0], ref.run(run)[0])


def test_chain_kernel_clean_under_sanitizers():
    """ASan + UBSan over chains with every stage (A, B, C, residual, FC) and a strided stem."""
    gb = GraphBuilder(31)
    x = gb.input((1, 11, 9, 3))
    s = gb.dw(gb.conv(x, 8, k=(3, 3), s=(2, 2)), d=(2, 2))
    s = gb.conv(s, 4, act=Activation.NONE)
    e = gb.dw(gb.conv(s, 12), k=(5, 5), m=2)
    y = gb.add(gb.conv(e, 4, act=Activation.NONE), s)
    g = gb.graph([gb.fc(y, 5)])
    program = lower(g, strategy="fused", fusion="all")
    assert [l.op for l in program.layers] == ["CHAIN", "CHAIN"]
    flags = POISON + ("-fsanitize=address,undefined", "-fno-sanitize-recover=all", "-g")
    assert_matches_emulator(g, program, count=2, seed=8, cflags=flags)
