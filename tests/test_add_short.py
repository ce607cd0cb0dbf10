"""ADD's short form (AddPlan): its doubled-sum arithmetic, as the C prints it, against TFLite's
reference ADD for every pair of int8 inputs; and the generated kernel on the host and the M4."""

from __future__ import annotations

import numpy as np
import pytest

from mcugen.oracle import oracles_for  # noqa: F401,I001  (loads tflite-runtime before TensorFlow can be)

from test_fast_kernels import Builder, exact_on_host_and_m4, have_qemu, specialised

from mcugen import quant
from mcugen.ir import Activation
from mcugen.kernels.elementwise import AddPlan, add_plan, linear_add

XS = np.arange(-128, 128, dtype=np.int64)


def _smmlar(a, b, acc):
    return acc + ((a * b + (1 << 31)) >> 32)


def _short(acc2, m, k, e):
    return (_smmlar(acc2, m, k) + (acc2 >> 31)) >> e if e > 0 else _smmlar(acc2, m, k)


def _term(pl: AddPlan, n: int, x: np.ndarray) -> np.ndarray:
    """templates/c/fast/misc.c.j2 add_term, in numpy."""
    off, m, k, e = (pl.input1_offset, pl.m1, pl.k1_fold, pl.e1) if n == 1 else (pl.input2_offset, pl.m2, pl.k2_fold, pl.e2)
    if pl.shift_input(n):
        return x * (1 << pl.left_shift)
    u = x * (1 << (pl.left_shift + 1)) + off * (1 << (pl.left_shift + 1))
    assert np.all(np.abs(u) < 2**31)
    if e > 0:
        return ((_smmlar(u, m, k) + (u >> 31)) >> (e - 1)) & -2
    return 2 * _smmlar(u, m, k)


def _short_sum(pl: AddPlan, x1: np.ndarray, x2: np.ndarray) -> np.ndarray:
    sum2 = _term(pl, 1, x1) + _term(pl, 2, x2) + pl.sum_const
    assert np.all(np.abs(sum2) < 2**31)
    y = np.clip(_short(sum2, pl.mo, pl.ko, pl.eo), -128, 127)
    return np.clip(y, pl.act_min, pl.act_max)


def _tflite(p: quant.AddParams, off1, off2, zp, act_min, act_max, x1, x2):
    a = (x1 + off1) << p.left_shift
    b = (x2 + off2) << p.left_shift
    s = (quant.multiply_by_quantized_multiplier(a, p.input1_multiplier, p.input1_shift)
         + quant.multiply_by_quantized_multiplier(b, p.input2_multiplier, p.input2_shift))
    y = quant.multiply_by_quantized_multiplier(s, p.output_multiplier, p.output_shift) + zp
    return np.clip(y, act_min, act_max)


def _cases(seed: int, n: int):
    rng = np.random.default_rng(seed)
    for _ in range(n):
        s1, s2 = (float(np.exp(rng.uniform(-6, 1))) for _ in range(2))
        if rng.random() < 0.3:
            s2 = s1 * float(rng.choice([1.0, 0.5, 2.0, 0.999, 1.001]))
        so = max(s1, s2) * float(np.exp(rng.uniform(-0.5, 1.5)))
        zp1, zp2, zp = (int(rng.integers(-128, 128)) for _ in range(3))
        act_min, act_max = (-128, 127) if rng.random() < 0.5 else (zp, 127)
        yield s1, s2, so, -zp1, -zp2, zp, act_min, act_max


@pytest.mark.parametrize("seed", range(4))
def test_short_add_equals_tflite_for_every_input_pair(seed):
    """Every (x1, x2) in int8 x int8, scales of every order (equal scales: both inputs on the
    shift), zero points and clamps drawn at random: the short form where it applies equals
    TFLite's reference ADD exactly."""
    x1, x2 = np.meshgrid(XS, XS, indexing="ij")
    kinds = set()
    for s1, s2, so, off1, off2, zp, act_min, act_max in _cases(seed, 40):
        p = quant.add_params(s1, s2, so)
        pl = add_plan("t", 0, "dsp", 1, off1, off2, p.left_shift, p.input1_multiplier, p.input1_shift,
                      p.input2_multiplier, p.input2_shift, p.output_multiplier, p.output_shift, zp, act_min, act_max)
        if not pl.fast:
            continue
        kinds.add((pl.shift_input(1), pl.shift_input(2), pl.sum_const != 0))
        want = _tflite(p, off1, off2, zp, act_min, act_max, x1, x2)
        np.testing.assert_array_equal(_short_sum(pl, x1, x2), want, err_msg=f"scales {s1}, {s2}, {so}")
    # either input on the shift, its offset folded into the other's K or (a large e) added
    assert {(True, False, False), (False, True, False), (True, False, True), (False, True, True)} & kinds, kinds
    assert any(k[2] for k in kinds) and any(not k[2] for k in kinds), kinds


def test_short_add_with_both_inputs_on_the_shift():
    """Equal input scales: both inputs take multiplier 1/2 with no shift, the constant of both
    offsets is added to the doubled sum."""
    p = quant.add_params(0.05, 0.05, 0.08)
    pl = add_plan("t", 0, "dsp", 1, 7, -3, p.left_shift, p.input1_multiplier, p.input1_shift,
                  p.input2_multiplier, p.input2_shift, p.output_multiplier, p.output_shift, -5, -128, 127)
    assert pl.fast and pl.shift_input(1) and pl.shift_input(2) and pl.sum_const == (7 - 3) << p.left_shift
    x1, x2 = np.meshgrid(XS, XS, indexing="ij")
    np.testing.assert_array_equal(_short_sum(pl, x1, x2), _tflite(p, 7, -3, -5, -128, 127, x1, x2))


def _linear(pl: AddPlan, x1: np.ndarray, x2: np.ndarray) -> np.ndarray:
    """templates/c/fast/misc.c.j2's one-rounding ADD (add_element, add_linear_fn), in numpy."""
    lin = pl.linear
    assert 128 * (abs(lin.a) + abs(lin.b)) + abs(lin.c) < 2**31  # no int32 step overflows
    return np.clip((x1 * lin.a + x2 * lin.b + lin.c) >> lin.shift, pl.act_min, pl.act_max)


@pytest.mark.parametrize("seed", range(4))
def test_linear_add_equals_tflite_for_every_input_pair(seed):
    """The one-rounding form, where the plan has one, equals TFLite's reference ADD (computed here
    with the general multiplier, not the plan's table) for all 65,536 input pairs; and the search
    finds one for nearly every drawn case, clamps included."""
    x1, x2 = np.meshgrid(XS, XS, indexing="ij")
    found = 0
    cases = list(_cases(100 + seed, 40))
    for s1, s2, so, off1, off2, zp, act_min, act_max in cases:
        p = quant.add_params(s1, s2, so)
        pl = add_plan("t", 0, "dsp", 1, off1, off2, p.left_shift, p.input1_multiplier, p.input1_shift,
                      p.input2_multiplier, p.input2_shift, p.output_multiplier, p.output_shift, zp, act_min, act_max)
        if pl.linear is None:
            continue
        found += 1
        want = _tflite(p, off1, off2, zp, act_min, act_max, x1, x2)
        np.testing.assert_array_equal(_linear(pl, x1, x2), want, err_msg=f"scales {s1}, {s2}, {so}")
        assert pl.shared_linear == (act_min == -128 and act_max == 127)
    assert found >= 0.9 * len(cases), f"{found} of {len(cases)}"


def test_linear_add_search_refuses_a_table_no_line_fits():
    """A table that is not an ADD (a product of the inputs) has no one-rounding form; nor has an
    ADD whose scales make exact ties on both sides of zero (the reference rounds them away from
    zero, one floor cannot), whose plan keeps the short form; nor slopes that overflow int32."""
    t = np.clip((XS[:, None] * XS[None, :]) >> 7, -128, 127)
    assert linear_add(t, -128, 127, 1.0, 1.0) is None
    p = quant.add_params(0.05, 0.03, 0.04)  # slopes 1.25 and 0.75: exact halves
    table = np.clip(quant.add_int8(XS[:, None], XS[None, :], 3, -9, p) + 4, -128, 127)
    assert linear_add(table, -128, 127, 1.25, 0.75, reach=64) is None
    pl = add_plan("t", 0, "dsp", 1, 3, -9, p.left_shift, p.input1_multiplier, p.input1_shift,
                  p.input2_multiplier, p.input2_shift, p.output_multiplier, p.output_shift, 4, -128, 127)
    assert pl.linear is None and pl.fast
    p = quant.add_params(0.0517, 0.0291, 0.0413)
    table = np.clip(quant.add_int8(XS[:, None], XS[None, :], 3, -9, p) + 4, -128, 127)
    lin = linear_add(table, -128, 127, 0.0517 / 0.0413, 0.0291 / 0.0413)
    assert lin is not None
    got = np.clip((XS[:, None] * lin.a + XS[None, :] * lin.b + lin.c) >> lin.shift, -128, 127)
    np.testing.assert_array_equal(got, table)
    assert linear_add(table, -128, 127, 2.0**40, 1.0) is None


@pytest.mark.skipif(not have_qemu(), reason="needs qemu-system-arm and arm-none-eabi-gcc (scripts/setup.sh)")
@pytest.mark.parametrize("act", [Activation.NONE, Activation.RELU])
def test_linear_add_kernel_bit_exact_on_the_host_and_the_m4(act):
    """ADDs of 1 to 9 elements and of 4 x 4 x 12 (every tail of the four-element step) run the
    shared one-rounding kernel (int8 clamp) or, where RELU clamps above -128, the per-layer loop;
    exact on the host's C path and on the emulated M4."""
    b = Builder(31)
    outs = []
    for shape in [(1, 1, 1, n) for n in range(1, 10)] + [(1, 4, 4, 12)]:
        x1, x2 = b.input(shape), b.input(shape)
        outs.append(b.add(x1, x2, act))
    gen, _ = specialised(b.graph(outs, name="adds"), "armv7em-dsp")
    src = gen.files["net_layers.c"]
    if act is Activation.NONE:
        assert src.count("    mcugen_add_linear_") == len(outs)
    else:
        assert "/* in one rounding (AddPlan.linear" in src  # the per-layer loop with RELU's clamp
    exact_on_host_and_m4(gen, 3, 7, "ADD in one rounding")
