"""One shift for every channel (mcugen.kernels.requant.uniform_shift): the scaled SMMLA form equals
TFLite's requantization for every accumulator, its compact records rebuild to what the kernel reads,
fused chains whose stage A rows then print the same function share it (share_a_rows), and the 3x3
depthwise kernels (every form: six or four outputs per step, row pointers, records in flash or
rebuilt from int8) and the chains' stage B run it, bit-exact on the host and the emulated M4."""

from __future__ import annotations

import dataclasses

import numpy as np
import pytest

from test_fast_chain import chain_kernels, generated
from test_fast_kernels import DW_ASM_CASES, Builder, assert_equal_runs, dsp_plans, exact_on_host_and_m4, have_qemu, \
    run_board, run_host

from mcugen import driver
from mcugen.emulate import emulate
from mcugen.ir import Activation, Padding
from mcugen.kernels import depthwise as dw_module
from mcugen.kernels.chain import ring_b_plane_w
from mcugen.kernels.conv import thin_records
from mcugen.kernels.requant import UNIFORM_MAX_STEP, plan_requant, uniform_k, uniform_scale, uniform_shift
from mcugen.kernels.thin_rebuild import rebuild_inline_records, uniform_compact_words
from mcugen.lower import lower
from mcugen.quant import multiply_by_quantized_multiplier


def _uniform_out(a: np.ndarray, m: int, k: int, scale: int, top: int) -> np.ndarray:
    """The kernel: ssat8(SMMLA(scale * a, M, K') >> E), in int64."""
    return np.clip(((a * scale * m + (k << 32)) >> 32) >> top, -128, 127)


@pytest.mark.parametrize("seed", range(6))
def test_the_uniform_form_equals_the_reference_for_every_accumulator(seed):
    rng = np.random.default_rng(seed)
    channels = 5
    zp = int(rng.choice([-128, -100, 0]))  # act_min = -128 >= zp only for zp = -128: sign-free needs act_min >= zp
    act_min = max(-128, zp)
    m = rng.integers(2**30, 2**31, channels)
    low = int(rng.integers(1, 12))
    e = low + rng.integers(0, UNIFORM_MAX_STEP, channels)  # spreads up to the limit
    e[0] = low
    e[1] = low + UNIFORM_MAX_STEP - 1
    bound = np.full(channels, int(rng.integers(1000, 60000)))
    rq = plan_requant(bound, m, -e, zp, act_min, 127)
    assert rq.sign_free
    top = uniform_shift(rq, bound)
    assert top == min(int(rq.e.min()) + UNIFORM_MAX_STEP, 31) and top > rq.e.max()
    scale, k = uniform_scale(rq, top), uniform_k(rq, top)
    a = np.arange(-int(bound[0]), int(bound[0]) + 1, dtype=np.int64)
    for c in range(channels):
        want = np.clip(multiply_by_quantized_multiplier(a, int(m[c]), int(-e[c])) + zp, act_min, 127)
        got = np.maximum(_uniform_out(a, int(m[c]), int(k[c]), int(scale[c]), top), act_min)
        assert np.array_equal(got, want), (seed, c)


def test_no_uniform_shift_where_it_would_not_be_exact_or_would_overflow():
    m = np.full(3, 2**30 + 12345)
    bound = np.full(3, 5000)
    # the sign correction is needed (outputs below the zero point): no form
    assert uniform_shift(plan_requant(bound, m, -np.array([5, 6, 7]), 0, -128, 127), bound) == 0
    # shifts further apart than UNIFORM_MAX_STEP + 1: the int8 weights would leave int16
    wide = np.array([3, 3 + UNIFORM_MAX_STEP + 1, 5])
    assert uniform_shift(plan_requant(bound, m, -wide, -128, -128, 127), bound) == 0
    within = np.array([3, 3 + UNIFORM_MAX_STEP - 1, 5])
    assert uniform_shift(plan_requant(bound, m, -within, -128, -128, 127), bound) == 3 + UNIFORM_MAX_STEP
    # a large accumulator bound lowers E until 2^(d+1) |acc| fits int32, and past max(e) there is none
    e = np.array([6, 7, 8])
    big = np.full(3, 2**23)
    top = uniform_shift(plan_requant(big, m, -e, -128, -128, 127), big)
    assert top == 12 and np.all((big + 1) << (top - e + 1) < 2**31)
    huge = np.full(3, 2**29)
    assert uniform_shift(plan_requant(huge, m, -e, -128, -128, 127), huge) == 0


def test_the_uniform_compact_records_rebuild_to_the_records():
    """mcugen_thin_records with `uniform` (its numpy twin): bias and pairs scaled by 2^d more, K' =
    (2 zp + 1) 2^(E-1) + 2^(d-1), equal to the records the kernel reads (thin_records)."""
    rng = np.random.default_rng(3)
    for in_c, out_c in ((8, 48), (4, 16), (16, 24)):
        w = rng.integers(-128, 128, size=(out_c, in_c))
        w[0, :] = -128
        w[1, :] = 127
        bias = rng.integers(-2**16, 2**16, size=out_c)
        bound = np.abs(bias) + 128 * np.abs(w).sum(axis=1)
        rq = plan_requant(bound, rng.integers(2**30, 2**31 - 1, size=out_c), -rng.integers(4, 9, size=out_c),
                          -128, -128, 127)
        top = uniform_shift(rq, bound)
        assert top
        records = thin_records(w, bias, rq, False, top)
        compact = uniform_compact_words(w, 2 * bias, top - rq.e.astype(np.int64), rq.multiplier)
        assert compact.shape == (out_c, 2 + in_c // 4)
        k = (2 * rq.output_offset + 1) << (top - 1)
        assert np.array_equal(rebuild_inline_records(compact, k, uniform=True), records.astype(np.int64)), (in_c, out_c)


def two_blocks(seed: int, *, h=8, w=8, cin=8, mid=48, first_stride=1):
    """Two inverted residual blocks (1x1 expand with ReLU6 -> 3x3 depthwise -> 1x1 project, then
    the ADD of both outputs) with the same scales: their chains' stage A rows (ReLU6: sign-free)
    take one shift; with `first_stride` 2 the first block's ring is wider than the second's
    (shared_plane_w widens the second's) and both print the same row function."""
    b = Builder(seed)
    q_mid = b.act_quant(6.0 / 255.0, -128)
    q_out = b.act_quant(0.05, 3)
    x = b.tensor((1, h, w, cin), q=q_out)  # the input at the blocks' output scale
    b.inputs.append(x)
    ys = []
    y = x
    for n in range(2):
        stride = first_stride if n == 0 else 1
        t = b.conv(y, mid, (1, 1), (1, 1), (1, 1), Padding.SAME, Activation.RELU6, per_channel=False, q=q_mid)
        wt, bias = b.ops[-1].inputs[1:3]
        if n == 0:
            w_quant, b_quant = b.tensors[wt].quant, b.tensors[bias].quant
        else:  # the first expansion's weight scales: the same shifts, so one uniform E
            b.tensors[wt] = dataclasses.replace(b.tensors[wt], quant=w_quant)
            b.tensors[bias] = dataclasses.replace(b.tensors[bias], quant=b_quant)
        t = b.dw(t, (3, 3), (stride, stride), (1, 1), 1, Padding.SAME, Activation.RELU6, per_channel=False, q=q_mid)
        z = b.conv(t, cin, (1, 1), (1, 1), (1, 1), Padding.SAME, Activation.NONE, q=q_out)
        ys.append(z)
        y = z
    out = b.add(ys[1], ys[0], Activation.NONE)
    return b.graph([out], name=f"twoblocks{seed}")


def _shared(seed: int, first_stride: int = 1):
    graph = two_blocks(seed, first_stride=first_stride, w=16 if first_stride == 2 else 8)
    program = lower(graph, "net", strategy="fused", fusion="all")
    gen, result = generated(graph, program, "armv7em-dsp")
    assert len(chain_kernels(result)) == 2
    plans = [p for p in result.plans.values() if type(p).__name__ == "ChainPlan"]
    assert all(p.a_thin is not None and p.a_thin.uniform for p in plans)
    assert all(p.b.rq.truncating and p.ring_b is not None for p in plans)  # stage B: one shift too
    first, second = plans
    assert first.ring_b.plane_w == second.ring_b.plane_w == ring_b_plane_w(first.b.v)
    if first_stride == 2:  # the second chain's own ring is narrower: widened to the first's
        assert ring_b_plane_w(second.b.v) < second.ring_b.plane_w
    text = gen.files["net_layers.c"]  # share_a_rows runs as the layers are printed
    assert f"static void {first.name}_a_row(" in text and f"static void {second.name}_a_row(" not in text
    assert text.count(f"{first.name}_a_row(input + row") == 2  # both chains call the one copy
    return graph, gen


@pytest.mark.parametrize("seed,first_stride", [(0, 1), (1, 1), (2, 2), (3, 2)])
def test_chains_share_their_stage_a_row_bit_exact_on_the_host(seed, first_stride):
    graph, gen = _shared(seed, first_stride)
    inputs = driver.random_inputs(graph, 2, seed=seed)
    assert_equal_runs(run_host(gen, inputs), [emulate(graph, r).outputs for r in inputs], graph.name)


@pytest.mark.skipif(not have_qemu(), reason="needs qemu-system-arm and arm-none-eabi-gcc (scripts/setup.sh)")
@pytest.mark.parametrize("first_stride", [1, 2])
def test_chains_share_their_stage_a_row_bit_exact_on_the_m4(first_stride):
    graph, gen = _shared(2, first_stride)
    inputs = driver.random_inputs(graph, 2, seed=5)
    assert_equal_runs(run_board(gen, "qemu-mps2-an386", inputs), [emulate(graph, r).outputs for r in inputs],
                      f"{graph.name} on the M4")


def uniform_dw_graph(seed: int):
    """One 3x3 depthwise branch per test_fast_kernels.DW_ASM_CASES entry with per-tensor weights
    and the output zero point -128 (sign-free): every layer has one shift for all its channels."""
    b = Builder(seed)
    outs = []
    for h, w, c, s, pad in DW_ASM_CASES:
        x = b.input((1, h, w, c))
        scale = float(b.tensors[x].quant.s * b.rng.uniform(0.5, 2.0))
        outs.append(b.dw(x, (3, 3), (s, s), (1, 1), 1, pad, Activation.NONE, per_channel=False,
                         q=b.act_quant(scale, -128)))
    return b.graph(outs, name=f"dwuni{seed}")


@pytest.mark.skipif(not have_qemu(), reason="needs qemu-system-arm and arm-none-eabi-gcc (scripts/setup.sh)")
@pytest.mark.parametrize("int8_form", [True, False], ids=["int8-form", "records"])
@pytest.mark.parametrize("cases", [True, False], ids=["six-per-step", "four-per-step"])
def test_uniform_depthwise_bit_exact_on_the_host_and_the_m4(int8_form, cases, monkeypatch):
    monkeypatch.setattr(dw_module, "DW_INT8_FORM", int8_form)
    monkeypatch.setattr(dw_module, "DW_CASES", cases)
    gen, plans = dsp_plans(uniform_dw_graph(7), "depthwise")
    assert plans and all(pl.rq.truncating and pl.unpack == int8_form for pl in plans)
    text = gen.files["net_layers.c"]
    assert '"smmla %[a' in text and '"smmlar %[a' not in text  # the row kernels' requantization
    if int8_form:
        assert all(pl.dw3_args[1] == int(pl.rq.e[0]) for pl in plans)
    for pl in plans:  # no shift by register left in the row kernels
        lines = [x for code in (pl.asm_cases or pl.asm_loop or (pl.asm_rows,)) for x in code] + list(pl.asm_rows)
        assert not any(x.startswith("asr %[a") for x in lines)
    exact_on_host_and_m4(gen, 2, 4, "uniform depthwise")


def test_uniform_only_where_every_layer_of_the_shape_has_it(monkeypatch):
    """A layer takes one shift only if every depthwise layer of its shapes (whose code it may
    share) takes the same one: with DW_UNIFORM off, none; a layer of one shape whose shifts are
    too far apart keeps the other of that shape on the shift by register."""
    monkeypatch.setattr(dw_module, "DW_UNIFORM", False)
    _, plans = dsp_plans(uniform_dw_graph(7), "depthwise")
    assert not any(pl.rq.truncating for pl in plans)
    monkeypatch.setattr(dw_module, "DW_UNIFORM", True)
    b = Builder(3)
    outs = []
    for n in range(2):
        x = b.input((1, 6, 6, 16))
        y = b.dw(x, (3, 3), (1, 1), (1, 1), 1, Padding.SAME, Activation.NONE, per_channel=n == 0,
                 q=b.act_quant(float(b.tensors[x].quant.s), -128))
        if n == 0:  # weight scales over five decades: shifts far further apart than UNIFORM_MAX_STEP
            wt, bias = b.ops[-1].inputs[1:3]
            scales = np.geomspace(1e-6, 1e-1, 16).astype(np.float32)
            b.tensors[wt] = dataclasses.replace(b.tensors[wt], quant=dataclasses.replace(b.tensors[wt].quant, scale=scales))
            bias_scales = (b.tensors[x].quant.scale[0] * scales).astype(np.float32)
            b.tensors[bias] = dataclasses.replace(b.tensors[bias], quant=dataclasses.replace(b.tensors[bias].quant,
                                                                                             scale=bias_scales))
        outs.append(y)
    graph = b.graph(outs, name="mixed")
    program = lower(graph, "net", strategy="layerwise")
    from mcugen.kernels.base import KernelContext
    from mcugen.kernels.depthwise import dw3_requant
    from mcugen.targets import get_target

    ctx = KernelContext(program, get_target("armv7em-dsp"))
    layers = [l for l in program.layers if l.op == "DEPTHWISE_CONV_2D"]
    views = [dw_module.conv_view(l, ctx.consts) for l in layers]
    own = [uniform_shift(dw3_requant(v)[3], dw3_requant(v)[2]) for v in views]
    plans = [dw_module.select_depthwise(ctx, l)[0] for l in layers]
    assert own[0] == 0 and own[1] > 0, own  # per-channel scales: shifts too far apart; per-tensor: one
    assert not any(pl.rq.truncating for pl in plans)
