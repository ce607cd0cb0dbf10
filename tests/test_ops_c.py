"""Per-op end-to-end: generated C compiled with -Werror on the host == the oracles, bit for bit."""

from __future__ import annotations

import numpy as np
import pytest

from helpers import OPS_DIR, op_model_entries
from mcugen import driver
from mcugen.errors import UnsupportedError
from mcugen.validate import validate

# Models mcugen must refuse, with what the message must name (the real reason).
REFUSED = {
    "conv_pool_16x8.tflite": "int16",
    "dynamic_range_fully_connected.tflite": "dynamic-range quantized model",
    "fc16x8_batch3_nobias_none.tflite": "int64 bias",
    "leaky_relu16x8.tflite": "no exact result",
}

ENTRIES = op_model_entries()


@pytest.mark.parametrize("entry", ENTRIES, ids=[e["file"] for e in ENTRIES])
def test_op_model_c_equals_oracles(entry):
    path = OPS_DIR / entry["file"]
    if entry["file"] in REFUSED:
        with pytest.raises(UnsupportedError, match=REFUSED[entry["file"]]):
            driver.build(path)
        return
    report = validate(path, count=4, seed=7)
    assert report.oracles, "no oracle loaded the model"
    assert report.runs == 4
    assert report.bit_exact, f"max abs diff {report.max_abs_diff}: {report.per_run}"


def test_every_supported_op_is_covered():
    from mcugen.supported import CONSTRAINTS

    covered = {op for e in ENTRIES if e["file"] not in REFUSED for op in e["ops"]}
    missing = {t.value for t in CONSTRAINTS} - covered
    assert not missing, f"ops without a per-op model: {missing}"


def test_mismatch_is_detected_and_layer_named(monkeypatch, tmp_path):
    """A deliberately wrong C build must fail validation and --layers must name the layer."""
    path = OPS_DIR / "chain_conv_dw_conv_add_mean_fc_softmax.tflite"
    real_compile = driver.compile_host

    def broken_compile(gen, build_dir, extra_cflags=()):
        # Corrupt the output zero point of the first layer's parameters (a CONV_2D).
        name = gen.program.name
        gen.files[f"{name}.c"] = gen.files[f"{name}.c"].replace(".output_offset = ", ".output_offset = 1 + ", 1)
        return real_compile(gen, build_dir, extra_cflags)

    monkeypatch.setattr(driver, "compile_host", broken_compile)
    report = validate(path, count=2, seed=1, layers=True)
    assert not report.bit_exact and report.max_abs_diff >= 1
    assert report.first_bad_layer is not None
    assert report.first_bad_layer.layer == 0


def test_random_inputs_are_seeded_and_cover_range():
    gen = driver.build(OPS_DIR / "conv2d_3x3_same_s1_relu.tflite")
    a = driver.random_inputs(gen.graph, 2, 5)
    b = driver.random_inputs(gen.graph, 2, 5)
    assert all(np.array_equal(x, y) for ra, rb in zip(a, b) for x, y in zip(ra, rb))
    assert a[0][0].min() < -100 and a[0][0].max() > 100



def test_logistic_follows_tflite_runtime_where_the_oracles_disagree(tmp_path):
    """At some input scales tflite-runtime (float table) and TFLite Micro (fixed point) differ by
    1 LSB on int8 LOGISTIC; the C follows tflite-runtime and validate names the disagreement."""
    from mcugen import quant
    from mcugen.tflite_reader import read_tflite

    src = OPS_DIR / "logistic.tflite"
    graph = read_tflite(src)
    x = graph.t(graph.inputs[0])
    rng = np.random.default_rng(3)
    every = np.arange(-128, 128)
    for _ in range(20000):
        scale = float(np.float32(10 ** rng.uniform(-3, -0.5)))
        table = quant.logistic_lut_tflite(scale, x.quant.zp, 1 / 256, -128)
        fixed = quant.logistic_int8_fixed_point(every, quant.logistic_params(scale, x.quant.zp))
        if not np.array_equal(table, fixed):
            break
    else:
        pytest.fail("no input scale where the two LOGISTIC implementations differ")
    raw = bytearray(src.read_bytes())
    old = np.float32(x.quant.s).tobytes()
    assert raw.count(old) == 1, "the input scale must be patchable in place"
    raw[raw.index(old) : raw.index(old) + 4] = np.float32(scale).tobytes()
    patched = tmp_path / "logistic_patched.tflite"
    patched.write_bytes(bytes(raw))
    assert read_tflite(patched).t(graph.inputs[0]).quant.s == np.float32(scale)
    report = validate(patched, count=6, seed=0)
    assert report.oracles == ["tflite-runtime-ref", "tflite-micro"]
    assert report.bit_exact and report.max_abs_diff == 0
    assert report.oracle_disagreements and all(d["oracle"] == "tflite-micro" for d in report.oracle_disagreements)
