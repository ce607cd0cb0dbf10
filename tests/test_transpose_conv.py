"""TRANSPOSE_CONV: its per-op TF models bit-exact on the host (3 seeds, and under the sanitizers) and on the
emulated Cortex-M4 (DSP target), the padding and MAC count against a scatter done here, what the
support check refuses, and the layer's C comment (the models also run in test_ops_c.py, test_emulate.py
and test_oracle.py through index.json)."""

from __future__ import annotations

import dataclasses

import numpy as np
import pytest

from helpers import OPS_DIR, op_model_entries
from mcugen.errors import UnsupportedError
from mcugen.ir import OpType, Quant, op_macs
from mcugen.supported import check_graph, find_blockers
from mcugen.tflite_reader import read_tflite

TCONV = [e["file"] for e in op_model_entries() if e["op"] == "TRANSPOSE_CONV"]


def test_the_models_cover_the_cases():
    opts = [e["options"] for e in op_model_entries() if e["op"] == "TRANSPOSE_CONV"]
    assert {o["padding"] for o in opts} == {"SAME", "VALID"}
    assert {o["stride_h"] for o in opts} == {1, 2} and any(o["stride_h"] != o["stride_w"] for o in opts)
    assert {tuple(o["kernel_hw"]) for o in opts} >= {(2, 2), (3, 3), (4, 4)}
    assert {o["has_bias"] for o in opts} == {True, False}
    assert {o["per_channel_weights"] for o in opts} == {True, False}
    assert {o["activation"] for o in opts} >= {"NONE", "RELU", "RELU6"}
    channels = {read_tflite(OPS_DIR / f).t(read_tflite(OPS_DIR / f).outputs[0]).shape[3] for f in TCONV}
    assert any(c % 4 for c in channels)


def _scatter_macs(g, op) -> int:
    """The products TFLite's scatter keeps (inside the output), counted one by one."""
    from mcugen.supported_more import transpose_conv_pads

    w, x, o = g.t(op.inputs[1]), g.t(op.inputs[2]), g.t(op.outputs[0])
    pad_t, pad_l = transpose_conv_pads(op.attrs, o.shape, w.shape)
    count = 0
    for iy in range(x.shape[1]):
        for ix in range(x.shape[2]):
            for ky in range(w.shape[1]):
                for kx in range(w.shape[2]):
                    oy, ox = iy * op.attrs.stride_h - pad_t + ky, ix * op.attrs.stride_w - pad_l + kx
                    count += 0 <= oy < o.shape[1] and 0 <= ox < o.shape[2]
    return count * x.shape[0] * w.shape[0] * w.shape[3]


@pytest.mark.parametrize("name", TCONV)
def test_macs_count_the_products_in_the_output(name):
    g = read_tflite(OPS_DIR / name)
    op = g.operators[0]
    assert op.op is OpType.TRANSPOSE_CONV
    assert op_macs(g, op) == _scatter_macs(g, op) > 0


@pytest.mark.parametrize("seed", [1, 2, 3])
@pytest.mark.parametrize("name", TCONV)
def test_transpose_conv_bit_exact_on_the_host(name, seed):
    from mcugen.validate import validate

    report = validate(OPS_DIR / name, count=2, seed=seed)
    assert report.oracles and report.runs == 2
    assert report.bit_exact, f"max abs diff {report.max_abs_diff}: {report.per_run}"


@pytest.mark.parametrize("name", TCONV)
def test_transpose_conv_bit_exact_on_cortex_m4(name):
    from mcugen.validate import validate
    from mcugen.validate_board import runner_kwargs

    report = validate(OPS_DIR / name, count=2, seed=5, kernels="mcugen", kernel_target="armv7em-dsp",
                      **runner_kwargs("qemu-mps2-an386"))
    assert report.target == "qemu-mps2-an386" and report.oracles
    assert report.bit_exact, report.per_run


@pytest.mark.parametrize("name", ["transpose_conv_3x3_s2_same_bias.tflite", "transpose_conv_2x2_s2_valid_nobias_batch2.tflite",
                                  "transpose_conv_4x4_s2_same_relu6.tflite"])
def test_portable_transpose_conv_bit_exact_on_cortex_m4(name):
    from mcugen.validate import validate
    from mcugen.validate_board import runner_kwargs

    report = validate(OPS_DIR / name, count=2, seed=6, kernels="mcugen", kernel_target="portable",
                      **runner_kwargs("qemu-mps2-an386"))
    assert report.target == "qemu-mps2-an386" and report.oracles
    assert report.bit_exact, report.per_run


def _dsp_outputs(name: str, mutate=None):
    """The DSP kernel on the host (its C99 instruction equivalents, -DMCUGEN_POISON, sanitizers) for seeded
    inputs, and the last oracle's outputs; `mutate(plan)` alters the plan first."""
    import tempfile
    from pathlib import Path

    from mcugen import codegen, driver
    from mcugen.kernels import specialize
    from mcugen.lower import lower
    from mcugen.oracle import oracles_for
    from mcugen.targets import EMULATE_DSP_MACRO, get_target

    g = read_tflite(OPS_DIR / name)
    result = specialize(lower(g, "net", strategy="layerwise"), get_target("armv7em-dsp"))
    assert result.choices == {0: "net_l0_tconv"}
    if mutate is not None:
        result.plans[0] = mutate(result.plans[0])
        files = result.merged_files(codegen.render_model(result.program, g))
        from mcugen.kernels.specializer import render_layers

        files.update(render_layers(result.program, [result.plans[0]], get_target("armv7em-dsp")))
    else:
        files = result.merged_files(codegen.render_model(result.program, g))
    gen = driver.Generated(graph=g, program=result.program, files=files)
    runs = driver.random_inputs(g, 3, 4)
    with tempfile.TemporaryDirectory(prefix="mcugen-tconv-") as tmp:
        exe = driver.compile_host(gen, Path(tmp) / "build", (f"-D{EMULATE_DSP_MACRO}", "-DMCUGEN_POISON", *SAN))
        outs = driver.run_host(exe, gen, runs, Path(tmp) / "io")
    oracle = oracles_for(OPS_DIR / name)[-1]
    return outs, [oracle.run(r) for r in runs]


@pytest.mark.parametrize("name", TCONV)
def test_dsp_transpose_conv_on_the_host(name):
    outs, want = _dsp_outputs(name)
    for got, ref in zip(outs, want):
        for a, b in zip(got, ref):
            assert np.array_equal(a, b)


@pytest.mark.parametrize("field, delta", [("input_offset", 1), ("pad_t", 1), ("sw", 1)])
def test_dsp_transpose_conv_mutations_are_caught(field, delta):
    outs, want = _dsp_outputs("transpose_conv_3x3_s2_same_bias.tflite",
                              lambda pl: dataclasses.replace(pl, **{field: getattr(pl, field) + delta}))
    assert any(not np.array_equal(a, b) for got, ref in zip(outs, want) for a, b in zip(got, ref))


SAN = ("-fsanitize=address,undefined", "-fno-sanitize-recover=all", "-fno-omit-frame-pointer", "-g")


@pytest.mark.parametrize("name", ["transpose_conv_3x3_s1_same_c16.tflite", "transpose_conv_2x2_s2_valid_nobias_batch2.tflite",
                                  "transpose_conv_3x3_s2_same_relu_zp0.tflite"])
def test_transpose_conv_sanitized(name, tmp_path):
    from mcugen import driver
    from mcugen.oracle import oracles_for

    path = OPS_DIR / name
    gen = driver.build(path)
    exe = driver.compile_host(gen, tmp_path / "build", extra_cflags=SAN)
    runs = driver.random_inputs(gen.graph, 2, 11)
    outs = driver.run_host(exe, gen, runs, tmp_path / "io")  # a sanitizer report exits non-zero
    oracle = oracles_for(path)[-1]
    for r, arrays in enumerate(runs):
        for a, b in zip(outs[r], oracle.run(arrays)):
            assert np.array_equal(a, b)


def test_fused_relu_clamps_in_the_zero_point_model():
    """The patched model's RELU changes most outputs, so its exactness tests the clamp."""
    from mcugen.emulate import emulate
    from mcugen.ir import Activation

    g = read_tflite(OPS_DIR / "transpose_conv_3x3_s2_same_relu_zp0.tflite")
    x = [np.random.default_rng(0).integers(-128, 128, g.t(g.inputs[0]).shape, dtype=np.int8)]
    with_relu = emulate(g, x).outputs[0]
    g.operators[0].attrs = dataclasses.replace(g.operators[0].attrs, activation=Activation.NONE)
    assert (emulate(g, x).outputs[0] != with_relu).sum() > with_relu.size // 4


def test_layer_comment_names_the_op_shapes_and_arena():
    from mcugen import driver

    gen = driver.build(OPS_DIR / "transpose_conv_4x4_s2_same_bias.tflite")
    text = "\n".join(gen.files[k] for k in gen.files if k.endswith(".c"))
    assert "Layer 0: TRANSPOSE_CONV (4x4 stride 2x2 SAME NONE, pad top 1 left 1, bias" in text
    assert "in0:  [1x4x5x3] int8 @ arena[" in text and "out:  [1x8x10x7] int8 @ arena[" in text
    assert "mcugen_transpose_conv_s8(" in text and "malloc" not in text


def test_omitted_bias_runs_without_one():
    from mcugen.emulate import emulate

    g = read_tflite(OPS_DIR / "transpose_conv_3x3_s1_valid_nobias.tflite")
    x = [np.random.default_rng(1).integers(-128, 128, g.t(g.inputs[0]).shape, dtype=np.int8)]
    want = emulate(g, x).outputs[0]
    g.operators[0].inputs.append(-1)
    assert find_blockers(g) == []
    assert np.array_equal(emulate(g, x).outputs[0], want)


def _blocker(g):
    blockers = find_blockers(g)
    assert len(blockers) == 1, blockers
    with pytest.raises(UnsupportedError):
        check_graph(g)
    return blockers[0]


def test_output_shape_must_be_the_outputs():
    g = read_tflite(OPS_DIR / "transpose_conv_3x3_s2_same_bias.tflite")
    s = g.t(g.operators[0].inputs[0])
    g.tensors[s.index] = dataclasses.replace(s, data=np.asarray([1, 9, 8, 6], np.int32))
    b = _blocker(g)
    assert "asks for output shape [1, 9, 8, 6]" in b.detail and "output_shape [4]" in b.rule
    g.tensors[s.index] = dataclasses.replace(s, data=None)
    assert "not a constant int32 vector" in _blocker(g).detail


def test_weights_must_be_constant_int8_with_a_scale_per_channel():
    g = read_tflite(OPS_DIR / "transpose_conv_3x3_s2_same_bias.tflite")
    w = g.t(g.operators[0].inputs[1])
    g.tensors[w.index] = dataclasses.replace(w, quant=Quant(w.quant.scale[:3], w.quant.zero_point[:3], 0))
    assert "3 scales for 6 output channels" in _blocker(g).detail
    g.tensors[w.index] = dataclasses.replace(w, data=None)
    assert "not a constant tensor" in _blocker(g).detail


def test_accumulator_that_could_overflow_is_refused():
    g = read_tflite(OPS_DIR / "transpose_conv_3x3_s1_same_c16.tflite")
    w = g.t(g.operators[0].inputs[1])
    big = np.full((w.shape[0], 80, 80, w.shape[3]), 127, np.int8)  # 102,400 taps x 127 x 255 > 2^31
    g.tensors[w.index] = dataclasses.replace(w, shape=big.shape, data=big)
    b = _blocker(g)
    assert "could accumulate" in b.detail and "cannot overflow" in b.rule
    g.tensors[w.index] = dataclasses.replace(w, shape=big.shape, data=big // 4)  # 25,600 x 31 x 255 < 2^31
    assert find_blockers(g) == []


def test_data_input_types_are_checked_first():
    g = read_tflite(OPS_DIR / "transpose_conv_3x3_s2_same_bias.tflite")
    x = g.t(g.operators[0].inputs[2])
    g.tensors[x.index] = dataclasses.replace(x, quant=Quant(np.asarray([0.1, 0.2], np.float32), np.zeros(2, np.int64), 3))
    assert "per-channel quantization" in _blocker(g).detail


def test_estimate_is_close_to_the_measured_count():
    """The cost model's TRANSPOSE_CONV row against `mcugen bench` on the emulated M4."""
    import json
    import subprocess
    import sys

    from helpers import REPO

    done = subprocess.run([sys.executable, "-m", "mcugen", "bench", str(OPS_DIR / "transpose_conv_3x3_s1_same_c16.tflite"),
                           "--board", "qemu-mps2-an386", "--json"], capture_output=True, text=True, timeout=600, cwd=REPO)
    assert done.returncode == 0, done.stderr[-2000:]
    report = json.loads(done.stdout)
    layer = next(l for l in report["layers"] if l["op"] == "TRANSPOSE_CONV")
    assert 0.9 <= report["estimated_instructions"] / layer["instructions"] <= 1.1, (report["estimated_instructions"], layer)
