"""kh x kw depthwise kernels other than 3x3 (mcugen.kernels.depthwise.select_depthwise_k): the
weight pairs they read, bit-exact C on the host (the DSP code with its C99 stand-ins) and
assembly on the emulated Cortex-M4, and a mutated instruction caught on the M4."""

from __future__ import annotations

import dataclasses
import re
import shutil

import numpy as np
import pytest

from helpers import OPS_DIR

from mcugen.oracle import oracles_for  # noqa: I001  (loads tflite-runtime before TensorFlow can be)

from test_fast_kernels import (
    Builder,
    _compile_at,
    assert_equal_runs,
    dsp_plans,
    exact_on_host_and_m4,
    have_qemu,
    run_board,
    run_host,
    specialised,
)

from mcugen import driver
from mcugen.emulate import emulate
from mcugen.ir import Activation, Padding
from mcugen.kernels import depthwise as dw_module
from mcugen.kernels.depthwise import DW_BLOCK, dw_asm_k, dw_k_rebuild, dw_k_weights, rebuild_words
from mcugen.kernels.requant import wrap32
from mcugen.tflite_reader import read_tflite

# (h, w, channels, kernel (kh, kw), stride, padding) of depthwise layers for the assembly path:
# 5x5 and 7x7 (and 3x5, 5x3, 9x9, 1x3) at stride 1 and 2, SAME and VALID, every row length mod 4
# (and rows shorter than one step), odd and even left padding, channels not a multiple of 4,
# and more than 255 channels (stores by immediate offsets instead of post-indexed)
DW_K_CASES = [
    (6, 9, 4, (5, 5), 1, Padding.SAME), (7, 6, 6, (5, 5), 2, Padding.SAME), (9, 11, 5, (5, 5), 1, Padding.VALID),
    (11, 13, 8, (5, 5), 2, Padding.VALID), (5, 3, 4, (5, 5), 1, Padding.SAME), (8, 7, 12, (7, 7), 1, Padding.SAME),
    (9, 10, 3, (7, 7), 2, Padding.SAME), (10, 12, 8, (7, 7), 1, Padding.VALID), (13, 15, 4, (7, 7), 2, Padding.VALID),
    (4, 2, 4, (7, 7), 2, Padding.SAME), (5, 8, 8, (3, 5), 1, Padding.SAME), (6, 9, 4, (5, 3), 2, Padding.SAME),
    (10, 10, 4, (9, 9), 1, Padding.SAME), (4, 7, 4, (1, 3), 1, Padding.VALID),
    (5, 6, 260, (5, 5), 1, Padding.SAME), (6, 9, 264, (7, 7), 2, Padding.SAME),
]


def depthwise_k_graph(seed: int, cases=DW_K_CASES) -> Builder:
    """One depthwise branch per case, each with its own input and output, no activation and
    output scales large enough that every channel takes the short requantization; half of them
    with output zero point -128 (the requantization without its sign correction)."""
    b = Builder(seed)
    outs = []
    for n, (h, w, c, k, s, pad) in enumerate(cases):
        x = b.input((1, h, w, c))
        scale = float(b.tensors[x].quant.s * b.rng.uniform(1.0, 3.0) * k[0] * k[1] / 9)
        zp = -128 if n % 2 else 5
        outs.append(b.dw(x, k, (s, s), (1, 1), 1, pad, Activation.NONE, q=b.act_quant(scale, zp)))
    return b.graph(outs, name=f"dwk{seed}")


def test_weight_pairs_are_the_taps_each_output_reads():
    """Stride 1: an even output takes P_0..P_{m-1} and the top half of Q_m, an odd one the bottom
    half of P_0 and Q_1..Q_m; stride 2: P_0..P_{m-1}, Q_m. Rebuilt here from the words."""
    rng = np.random.default_rng(1)
    for kh, kw in ((5, 5), (7, 7), (3, 5), (1, 3), (9, 9)):
        w = rng.integers(-254, 255, size=(3, kh * kw))
        m = (kw - 1) // 2
        for s in (1, 2):
            words = dw_k_weights(w, kh, kw, s).reshape(3, kh, -1)
            assert words.shape[2] == (kw - 1 if s == 1 else m + 1)
            lo = ((words & 0xFFFF) ^ 0x8000) - 0x8000
            hi = (((words >> 16) & 0xFFFF) ^ 0x8000) - 0x8000
            taps = w.reshape(3, kh, kw)
            if s == 1:
                p = [(lo[..., 2 * t], hi[..., 2 * t]) for t in range(m)]
                q = [None] + [(lo[..., 2 * t - 1], hi[..., 2 * t - 1]) for t in range(1, m + 1)]
                even = [x for t in range(m) for x in p[t]] + [q[m][1]]
                odd = [p[0][0]] + [x for t in range(1, m + 1) for x in q[t]]
                for got in (even, odd):
                    assert np.array_equal(np.stack(got, axis=-1), taps)
            else:
                got = [x for t in range(m) for x in (lo[..., t], hi[..., t])] + [hi[..., m]]
                assert np.array_equal(np.stack(got, axis=-1), taps)
            assert np.array_equal(words, wrap32(words))
            # int8: bytes (a.lo, b.lo, a.hi, b.hi) of consecutive pairs a, b (what SXTB16 and
            # SXTB16 ROR 8 unpack), the same pairs in the same order, a zero pair to fill the last
            small = np.clip(w, -128, 127)
            packed = dw_k_weights(small, kh, kw, s, int8=True).reshape(3, kh, -1)
            byte = [((packed >> (8 * i)) & 0xFF ^ 0x80) - 0x80 for i in range(4)]
            unpacked = np.stack([np.stack([byte[0], byte[2]], -1), np.stack([byte[1], byte[3]], -1)], axis=3)
            unpacked = unpacked.reshape(3, kh, -1, 2)
            ref = dw_k_weights(small, kh, kw, s).reshape(3, kh, -1)
            n = ref.shape[2]
            assert packed.shape[2] == (n + 1) // 2
            assert np.array_equal(unpacked[:, :, :n, 0], ((ref & 0xFFFF) ^ 0x8000) - 0x8000)
            assert np.array_equal(unpacked[:, :, :n, 1], (((ref >> 16) & 0xFFFF) ^ 0x8000) - 0x8000)
            assert not unpacked[:, :, n:].any()


def test_every_case_takes_the_assembly_and_3x3_keeps_its_own():
    gen, plans = dsp_plans(depthwise_k_graph(3), "depthwise")
    assert len(plans) == len(DW_K_CASES)
    for pl, (h, w, c, k, s, pad) in zip(plans, DW_K_CASES):
        assert (pl.v.kh, pl.v.kw, pl.v.sh, pl.ring) == (*k, s, k[0]) and pl.row_words and pl.asm_k, (k, s)
    assert {pl.rq.sign_free for pl in plans} == {True, False}
    assert any(pl.asm_blocks == 0 for pl in plans) and {pl.v.out_w % DW_BLOCK for pl in plans} == {0, 1, 2, 3}
    assert {pl.v.sh for pl in plans if pl.v.out_c > 255} == {1, 2}
    # stride 2 saves r7 (four data registers), stride 1 does not touch it
    assert all(("push {r7}" in pl.asm_k) == (pl.v.sh == 2) for pl in plans)
    b = Builder(4)
    x = b.input((1, 6, 6, 8))
    _, (pl,) = dsp_plans(b.graph([b.dw(x, (3, 3), (1, 1), (1, 1), 1, Padding.SAME, Activation.NONE)]), "depthwise")
    assert pl.row_words == 0 and pl.ring == 3 and not pl.asm_k


def test_instruction_count_per_step_is_within_the_budget():
    """The loop step's instructions per MAC (4 outputs of one channel, requantization included),
    the figure the kernel is built for: well under 2.5 for 5x5 and 7x7 at both strides."""
    for kh, s, bound in ((5, 1, 1.35), (5, 2, 1.5), (7, 1, 1.15), (7, 2, 1.25)):
        words = kh - 1 if s == 1 else (kh - 1) // 2 + 1
        lines = dw_asm_k(kh, kh, s, DW_BLOCK, 48, words, False)
        per_mac = sum(1 for ln in lines if not ln.endswith(":") and "push" not in ln and "pop" not in ln) / (DW_BLOCK * kh * kh)
        assert per_mac <= bound, (kh, s, per_mac)


@pytest.fixture(params=[False, True], ids=["int16-pairs", "int8-weights"])
def int8_weights(request, monkeypatch):
    """Both forms of the DSP kernel's weights (dw_k_weights), as the default of the selection."""
    monkeypatch.setattr(dw_module, "DW_K_INT8_WEIGHTS", request.param)
    return request.param


@pytest.fixture(params=[False, True], ids=["records-in-flash", "compact"])
def compact(request, monkeypatch):
    """Both places of the DSP kernel's records: flash, or rebuilt in scratch from the int8
    weights (dw_k_compact)."""
    monkeypatch.setattr(dw_module, "DW_K_COMPACT", request.param)
    return request.param


def test_the_rebuild_makes_the_records_weight_words():
    """The compact form's rebuild steps (dw_k_rebuild, computed on bytes as the C code does)
    give dw_k_weights' words for every kernel shape, stride and form, int8 extremes included."""
    rng = np.random.default_rng(2)
    for kh, kw in ((5, 5), (7, 7), (3, 5), (5, 3), (1, 3), (9, 9), (3, 7)):
        for s in (1, 2):
            for int8 in (False, True):
                w = rng.integers(-128, 128, size=(6, kh * kw))
                w[0], w[1] = -128, 127
                scale = 1 if int8 else 2
                want = dw_k_weights(scale * w, kh, kw, s, int8)
                steps = dw_k_rebuild(kw, s, int8)
                row_words = want.shape[1] // kh
                assert sorted({k for _, k, _ in steps} | {k + 1 for kind, k, _ in steps if kind == "pairs16"}) \
                    == list(range(row_words))
                got = rebuild_words(w, steps, kh, kw, row_words, scale)
                assert np.array_equal(got, want), (kh, kw, s, int8)


def test_depthwise_k_bit_exact_on_the_host(int8_weights, compact):
    graph = depthwise_k_graph(3)
    gen, plans = dsp_plans(graph, "depthwise")
    assert all(pl.int8_weights == int8_weights and bool(pl.rebuild) == compact for pl in plans)
    runs = driver.random_inputs(graph, 2, seed=4)
    assert_equal_runs(run_host(gen, runs), [emulate(graph, r).outputs for r in runs], "kh x kw depthwise (C path)")


@pytest.mark.skipif(not have_qemu(), reason="needs qemu-system-arm and arm-none-eabi-gcc (scripts/setup.sh)")
def test_depthwise_k_assembly_bit_exact_on_the_m4(int8_weights, compact):
    gen, plans = dsp_plans(depthwise_k_graph(3), "depthwise")
    assert all(pl.int8_weights == int8_weights and pl.asm_k and bool(pl.rebuild) == compact for pl in plans)
    assert all(("sxtb16" in " ".join(pl.asm_k)) == int8_weights for pl in plans)
    exact_on_host_and_m4(gen, 2, 4, "kh x kw depthwise")


def test_the_compact_form_is_the_default_where_it_is_exact():
    """By default every kh x kw layer on the assembly path keeps int8 weights in flash
    (kh*kw + 1 bytes and two words per channel) and its scratch holds the rebuilt records."""
    _, plans = dsp_plans(depthwise_k_graph(3), "depthwise")
    for pl in plans:
        assert pl.rebuild, pl.name
        ring = pl.v.out_c * pl.ring * pl.plane_w * 2
        assert pl.scratch_bytes == ring + 4 * pl.record * pl.v.out_c


@pytest.mark.skipif(shutil.which("arm-none-eabi-gcc") is None, reason="needs arm-none-eabi-gcc (scripts/setup.sh)")
@pytest.mark.parametrize("flags", [("-O0",), ("-O2", "-fno-omit-frame-pointer"), ("-Os",), ("-O3",)])
def test_depthwise_k_code_compiles_at_any_optimization_level(tmp_path, flags, int8_weights):
    """13 registers pinned by the assembly, r7 saved inside it: r7 may stay a frame pointer."""
    graph = depthwise_k_graph(3)
    _compile_at(graph, tmp_path / graph.name, flags)


# One instruction of each kind of path (stride 1 loop step and tail, stride 2 loop step and
# tail, stores past 255 channels), changed in the generated C: the M4's outputs must then differ
# from the reference.
S1 = (6, 9, 4, (5, 5), 1, Padding.SAME)
S2 = (7, 10, 6, (7, 7), 2, Padding.SAME)
WIDE = (5, 6, 260, (5, 5), 1, Padding.SAME)
MUTATIONS = [
    # case, which block (0 the loop step, 1 the tail), pattern, replacement
    (S1, 0, r"smlatb (%\[a1\]), (%\[d0\]), (%\[wa\])", r"smlabb \1, \2, \3"),
    (S1, 1, r"smlad (%\[a0\]), (%\[d0\]), (%\[wa\])", r"smladx \1, \2, \3"),
    (S2, 0, r"ldr (%\[wa\]), \[%\[w\], #8\]", r"ldr \1, [%[w], #4]"),
    (S2, 1, r"smlad (%\[a0\]), (%\[d0\]), (%\[wa\])", r"smlabb \1, \2, \3"),
    (WIDE, 0, r"add %\[o\], %\[o\], #1040", r"add %[o], %[o], #780"),
    (WIDE, 1, r"strb (%\[a1\]), \[%\[o\], #260\]", r"strb \1, [%[o], #261]"),
]
# the int8 weights' unpacking (stride 1: the word of P_t and Q_t+1, stride 2: a stage's half)
MUTATIONS_INT8 = [
    (S1, 0, r"sxtb16 (%\[wc\]), (%\[wc\]), ror #8", r"sxtb16 \1, \2, ror #16"),
    (S1, 1, r"sxtb16 (%\[wa\]), (%\[wc\])\\n", r"sxtb16 \1, \2, ror #24\\n"),
    (S2, 0, r"sxtb16 (%\[wa\]), (%\[wa\]), ror #8", r"sxtb16 \1, \2"),
    (S2, 1, r"add (%\[a0\]), (%\[a0\]), (%\[a0\])", r"mov \1, \2"),
]


@pytest.mark.skipif(not have_qemu(), reason="needs qemu-system-arm and arm-none-eabi-gcc (scripts/setup.sh)")
@pytest.mark.parametrize("case,block,pattern,repl,int8", [(*m, False) for m in MUTATIONS] + [(*m, True) for m in MUTATIONS_INT8])
def test_a_mutated_instruction_is_caught_on_the_m4(case, block, pattern, repl, int8, monkeypatch):
    monkeypatch.setattr(dw_module, "DW_K_INT8_WEIGHTS", int8)
    graph = depthwise_k_graph(5, [case])
    gen, (pl,) = dsp_plans(graph, "depthwise")
    assert pl.asm_blocks and pl.v.out_w % DW_BLOCK, "the case must have both a loop step and a tail"
    layers = next(k for k in gen.files if k.endswith("_layers.c"))
    text = gen.files[layers]
    # the tail follows the loop's branch back; mutate the first match within the chosen block
    cut = text.index('"bne 1b\\n\\t"')
    head, tail = text[:cut], text[cut:]
    if block == 0:
        head, n = re.subn(pattern, repl, head, count=1)
    else:
        tail, n = re.subn(pattern, repl, tail, count=1)
    assert n == 1, f"{pattern} not found in block {block}"
    mutated = dataclasses.replace(gen, files={**gen.files, layers: head + tail})
    runs = driver.random_inputs(graph, 1, seed=6)
    want = [emulate(graph, r).outputs for r in runs]
    assert_equal_runs(run_board(gen, "qemu-mps2-an386", runs), want, "unmutated")
    got = run_board(mutated, "qemu-mps2-an386", runs)
    assert not np.array_equal(got[0][0], np.asarray(want[0][0]).reshape(got[0][0].shape)), \
        f"mutation {pattern} -> {repl} went unnoticed"


# ---- models made by TensorFlow (tests/models/make_op_models.py), against tflite-runtime -----------

TF_MODELS = sorted(p.name for p in OPS_DIR.glob("depthwise_[57]x[57]_*.tflite"))


def test_tf_models_take_the_kh_x_kw_kernel():
    assert len(TF_MODELS) >= 8
    for name in TF_MODELS:
        graph = read_tflite(OPS_DIR / name)
        _, (pl,) = dsp_plans(graph, "depthwise")
        assert pl.row_words and pl.ring == pl.v.kh and pl.v.kh in (5, 7), name
        assert pl.asm_k, f"{name}: the assembly path was refused (requantization {pl.rq.fast}, clamp {pl.rq.clamp_is_int8})"


@pytest.mark.skipif(not have_qemu(), reason="needs qemu-system-arm and arm-none-eabi-gcc (scripts/setup.sh)")
def test_tf_models_bit_exact_with_tflite_on_the_host_and_the_m4(int8_weights):
    for name in TF_MODELS:
        path = OPS_DIR / name
        graph = read_tflite(path)
        gen, _ = specialised(graph, "armv7em-dsp")
        runs = driver.random_inputs(graph, 2, seed=12)
        oracle = oracles_for(path)[0]
        want = [oracle.run(r) for r in runs]
        assert_equal_runs(run_host(gen, runs), want, f"{name} on the host (C path) vs {oracle.name}")
        assert_equal_runs(run_board(gen, "qemu-mps2-an386", runs), want, f"{name} on the M4 vs {oracle.name}")


# ---- Helium (the M55) and portable C --------------------------------------------------------------


def test_depthwise_k_portable_bit_exact_on_the_host():
    graph = depthwise_k_graph(7)
    gen, result = specialised(graph, "portable")
    assert all(pl.row_words == pl.v.kw and pl.ring == pl.v.kh for pl in result.plans.values())
    assert len(result.plans) == len(DW_K_CASES)
    runs = driver.random_inputs(graph, 2, seed=8)
    assert_equal_runs(run_host(gen, runs), [emulate(graph, r).outputs for r in runs], "kh x kw depthwise (portable)")


@pytest.mark.skipif(not have_qemu(), reason="needs qemu-system-arm and arm-none-eabi-gcc (scripts/setup.sh)")
def test_depthwise_k_helium_bit_exact_on_the_m55():
    graph = depthwise_k_graph(7)
    gen, result = specialised(graph, "mve")
    assert len(result.plans) == len(DW_K_CASES) and all(pl.isa == "mve" and pl.row_words for pl in result.plans.values())
    runs = driver.random_inputs(graph, 2, seed=8)
    assert_equal_runs(run_board(gen, "qemu-mps3-an547", runs), [emulate(graph, r).outputs for r in runs],
                      "kh x kw depthwise on the M55")
    for name in TF_MODELS:
        path = OPS_DIR / name
        g = read_tflite(path)
        gen, _ = specialised(g, "mve")
        runs = driver.random_inputs(g, 2, seed=12)
        oracle = oracles_for(path)[0]
        assert_equal_runs(run_board(gen, "qemu-mps3-an547", runs), [oracle.run(r) for r in runs], f"{name} on the M55")
