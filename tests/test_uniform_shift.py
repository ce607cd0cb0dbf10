"""One shift for every channel (mcugen.kernels.requant.uniform_shift): the scaled SMMLA form equals
TFLite's requantization for every accumulator, its compact records rebuild to what the kernel reads,
and fused chains whose stage A rows then print the same function share it (share_a_rows), bit-exact
on the host and the emulated M4."""

from __future__ import annotations

import dataclasses

import numpy as np
import pytest

from test_fast_chain import chain_kernels, generated
from test_fast_kernels import Builder, assert_equal_runs, have_qemu, run_board, run_host

from mcugen import driver
from mcugen.emulate import emulate
from mcugen.ir import Activation, Padding
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
        t = b.dw(t, (3, 3), (stride, stride), (1, 1), 1, Padding.SAME, Activation.RELU6, q=q_mid)
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
