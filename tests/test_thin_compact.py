"""The thin kernel's compact form (mcugen.kernels.thin_rebuild): int8 weights in flash, the records
rebuilt in scratch at each call; the records it makes, its assembly's register use, bit-exact
layers on the host (C path) and the emulated M4, and same-shaped layers sharing one copy."""

from __future__ import annotations

import re

import numpy as np
import pytest

from mcugen.oracle import oracles_for  # noqa: F401,I001  (loads tflite-runtime before TensorFlow can be)

from test_fast_kernels import THIN_CASES, Builder, dsp_plans, exact_on_host_and_m4, have_qemu, specialised

from mcugen.ir import Activation, Conv2DAttrs, OpType, Padding
from mcugen.kernels import conv as conv_module
from mcugen.kernels.conv import (
    narrow_compact_words,
    rebuild_narrow_records,
    rq_e_packs,
    thin_loop_last,
    thin_records,
)
from mcugen.kernels.requant import k_follows_from_e, plan_requant
from mcugen.kernels.thin_rebuild import (
    rebuild_inline_records,
    THIN_REBUILD_CLOBBERS,
    rebuild_records,
    thin_compact_words,
    thin_rebuild_asm,
    thin_rebuild_cost,
)


def test_the_rebuild_gives_back_the_records():
    """For 4, 8, 12 and 16 input channels, weights at the int8 extremes, biases at the edge of what
    the bias word holds with e, both output zero point signs: the compact form (e in the bias word)
    rebuilt, with the last channel's bit 31 set as the C sets it, equals thin_records."""
    rng = np.random.default_rng(3)
    for in_c in (4, 8, 12, 16):
        for out_c, zp in ((9, -128), (40, 17)):
            w = rng.integers(-128, 128, size=(out_c, in_c))
            w[0, :] = -128
            w[1, :] = 127
            bias = rng.integers(-2**20, 2**20, size=out_c)
            bias[2], bias[3] = -2**25 // 2, 2**25 // 2 - 1 - 127 * in_c * 128  # doubled: the word's limits
            m = rng.integers(2**30, 2**31 - 1, size=out_c)
            shift = -rng.integers(1, 12, size=out_c)
            rq = plan_requant(np.full(out_c, 1000), m, shift, zp, -128, 127)
            assert rq.fast and k_follows_from_e(rq)
            records = thin_records(w, bias, rq, True)
            assert rq_e_packs(records[:, 0], rq)
            assert (records[:, -1] < 0).sum() == 1, "bit 31 on the loop's last channel"
            packed = thin_compact_words(records, w)
            assert packed.shape == (out_c, 2 + in_c // 4)
            rebuilt = rebuild_records(packed, 2 * zp + 1, thin_loop_last(out_c))
            assert np.array_equal(rebuilt, records.astype(np.int64)), (in_c, out_c, zp)


def test_the_rebuild_assembly_keeps_its_registers():
    """Load- and store-multiples name ascending registers (the order memory has them in), only the
    declared clobbers and the r0/r1 write-back change, r7 (maybe the frame pointer) is untouched,
    and the per-channel instructions are what thin_rebuild_cost counts."""
    number = {f"r{n}": n for n in range(13)} | {"lr": 14}
    for in_c in (4, 8, 12, 16):
        lines = thin_rebuild_asm(in_c)
        body = [ln for ln in lines if not ln.endswith(":")]
        for ln in body:
            m = re.match(r"(ldm|stm) (r[01])!, \{(.*)\}", ln)
            if m:
                regs = [number[r.strip()] for r in m.group(3).split(",")]
                assert regs == sorted(regs) and 7 not in regs, ln
                if m.group(1) == "ldm":
                    assert set(regs) <= {number[r] for r in THIN_REBUILD_CLOBBERS}, ln
                continue
            op, dst = ln.split()[0], ln.split()[1].rstrip(",")
            if op not in ("cmp", "bne"):
                assert dst in THIN_REBUILD_CLOBBERS, ln
        assert len(body) <= thin_rebuild_cost(in_c, 1), (in_c, len(body))


# (h, w, in_c, out_c) of looped thin layers: every input width, channel counts with and without a
# tail past the loop's last step
LOOPED_CASES = [(2, 2, 8, 130), (1, 3, 12, 101), (2, 3, 16, 96), (1, 2, 4, 203), (3, 1, 8, 122)]


@pytest.fixture
def compact(monkeypatch):
    monkeypatch.setattr(conv_module, "THIN_COMPACT", True)


@pytest.mark.skipif(not have_qemu(), reason="needs qemu-system-arm and arm-none-eabi-gcc (scripts/setup.sh)")
def test_compact_thin_layers_bit_exact_on_the_host_and_the_m4(compact):
    from test_fast_kernels import thin_conv_graph

    gen, plans = dsp_plans(thin_conv_graph(5, THIN_CASES + LOOPED_CASES), "conv")
    looped = [pl for pl in plans if pl.code.looped]
    assert looped and all(pl.rebuild for pl in looped) and not any(pl.rebuild for pl in plans if not pl.code.looped)
    assert {pl.v.in_c for pl in looped} == {4, 8, 12, 16} and {pl.rq.sign_free for pl in looped} == {False, True}
    exact_on_host_and_m4(gen, 3, 6, "thin pointwise, compact form")


def test_the_compact_form_is_the_default_for_looped_layers():
    """By default (no flash pressure) a looped thin layer keeps 2 + in_c/4 words per channel in
    flash instead of 4 + in_c/2: its rebuild costs a few percent of the layer at most."""
    from test_fast_kernels import thin_conv_graph

    _, plans = dsp_plans(thin_conv_graph(5, [(12, 12, 16, 96), (6, 6, 8, 130)]), "conv")
    for pl in plans:
        assert pl.code.looped and pl.rebuild and pl.compact_words == 2 + pl.v.in_c // 4


def same_shape_graph(seed: int):
    """Two pairs of looped thin layers of one shape each, different weights and output scales."""
    b = Builder(seed)
    outs = []
    for n, (h, w, cin, cout) in enumerate([(3, 4, 16, 40), (2, 3, 8, 130)]):
        x = b.input((1, h, w, cin))
        for f in (0.8, 1.3):
            wt = b.weights((cout, 1, 1, cin), 0, True)
            q = b.act_quant(float(b.tensors[x].quant.s * f), -128 if n else 3)
            attrs = Conv2DAttrs(1, 1, 1, 1, Padding.SAME, Activation.NONE)
            outs.append(b.op(OpType.CONV_2D, [x, wt, b.bias(x, wt, cout)], (1, h, w, cout), attrs, q=q))
    return b.graph(outs, name=f"thinshare{seed}")


@pytest.mark.skipif(not have_qemu(), reason="needs qemu-system-arm and arm-none-eabi-gcc (scripts/setup.sh)")
def test_same_shaped_thin_layers_share_their_code(compact):
    gen, result = specialised(same_shape_graph(2), "armv7em-dsp")
    text = gen.files["net_layers.c"]
    plans = sorted(result.plans.values(), key=lambda pl: pl.index)
    assert [pl.kind for pl in plans] == ["thin_conv"] * 4
    assert all(pl.rebuild for pl in plans)
    for first, second in zip(plans[::2], plans[1::2]):
        assert f"static void {first.name}_run(" in text and f"static void {second.name}_run(" not in text
        assert f"{first.name}_run(input, output, scratch, {second.weights});" in text
    assert text.count('"sadd16 r') == sum(sum("sadd16" in ln for ln in thin_rebuild_asm(pl.v.in_c)) for pl in plans[::2]), \
        "one rebuild per shape"
    exact_on_host_and_m4(gen, 2, 4, "thin layers sharing code")


def test_chain_stage_records_rebuilt_from_their_compact_form():
    """The chains' stage A / C records in the compact form (e in the bias word, int8 weights four
    to a word): the in-line thin kernel's (4..16 inputs) and the narrow kernel's (passes of 8
    channels, a partial last pass) rebuilt as mcugen_thin_records / mcugen_narrow_records do equal
    the records the kernels read (thin_records, narrow_code's words, computed here again)."""
    from mcugen.kernels.requant import sxtb16_pairs, wrap32

    rng = np.random.default_rng(5)
    for in_c, out_c, zp in ((8, 48, -128), (16, 8, 3), (4, 20, 17), (48, 8, -7), (48, 16, 0), (40, 13, -128)):
        w = rng.integers(-128, 128, size=(out_c, in_c))
        w[0, :] = -128
        bias = rng.integers(-2**18, 2**18, size=out_c)
        m = rng.integers(2**30, 2**31 - 1, size=out_c)
        rq = plan_requant(np.full(out_c, 1000), m, -rng.integers(1, 12, size=out_c), zp, -128, 127)
        assert rq_e_packs(2 * bias, rq)
        if in_c <= 16:
            records = thin_records(w, bias, rq, False)
            packed = thin_compact_words(records, w, rq.e)
            assert packed.shape == (out_c, 2 + in_c // 4)
            assert np.array_equal(rebuild_inline_records(packed, 2 * zp + 1), records.astype(np.int64))
        words = []
        w2 = 2 * w.reshape(out_c, in_c // 4, 4)
        for first in range(0, out_c, 8):
            chans = list(range(first, min(first + 8, out_c)))
            words += [int(x) for x in wrap32(2 * bias[chans])]
            words += [int(x) for x in sxtb16_pairs(w2[chans]).transpose(1, 0, 2).reshape(-1)]
            for c in chans:
                words += [int(rq.multiplier[c]), int(rq.k[c])]
        compact = narrow_compact_words(w, bias, rq)
        assert compact.size == out_c * (2 + in_c // 4)
        got = rebuild_narrow_records(compact, in_c, out_c, 2 * zp + 1)
        assert np.array_equal(got, wrap32(np.array(words, np.int64))), (in_c, out_c)
