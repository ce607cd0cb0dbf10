"""16x8 models (int16 activations, int8 weights, int64 bias): the generated C equals both oracles
bit for bit on the host (3 seeds) and on the emulated Cortex-M4, the DSP and CMSIS-NN kernel
passes leave the int16 layers on the portable kernels, and the 16x8 cases where the oracles
disagree (or mcugen has no kernel) are refused in one line."""

from __future__ import annotations

import dataclasses
import subprocess
import sys

import numpy as np
import pytest

from helpers import OPS_DIR, REPO
from mcugen import driver
from mcugen.errors import UnsupportedError
from mcugen.ir import Quant
from mcugen.supported import check_graph
from mcugen.supported_int16 import leaky_relu_int16_gap
from mcugen.tflite_reader import read_tflite
from mcugen.validate import validate
from mcugen.validate_board import runner_kwargs

SUPPORTED = [
    "conv16x8_3x3_same_s1_relu", "conv16x8_5x3_valid_s2_none", "conv16x8_3x3_same_dil2_relu6",
    "depthwise16x8_3x3_same_s1_m1_relu6", "depthwise16x8_3x3_valid_s2_m2_none",
    "fc16x8_bias_relu", "add16x8_same_none", "add16x8_broadcast_relu", "sub16x8_broadcast_none",
    "softmax16x8", "softmax16x8_wide_range", "pad16x8", "strided_slice16x8", "leaky_relu16x8_same_scale",
    "chain16x8_float_io",
]

# What each refused 16x8 model's one-line message must name.
REFUSED = {
    "fc16x8_batch3_nobias_none": "has no bias",
    "leaky_relu16x8": "differ on 36 of the 65536 inputs",
    "conv_pool_16x8": "(AVERAGE_POOL_2D) input tensor",
}


@pytest.mark.parametrize("seed", [0, 1, 2])
@pytest.mark.parametrize("name", SUPPORTED)
def test_16x8_model_bit_exact_on_host(name, seed):
    report = validate(OPS_DIR / f"{name}.tflite", count=2, seed=seed)
    assert report.oracles == ["tflite-runtime-ref", "tflite-micro"]
    assert report.bit_exact, report.per_run
    assert not report.oracle_disagreements, report.oracle_disagreements


@pytest.mark.parametrize("name", ["conv16x8_3x3_same_s1_relu", "depthwise16x8_3x3_valid_s2_m2_none",
                                  "fc16x8_bias_relu", "add16x8_broadcast_relu", "sub16x8_broadcast_none",
                                  "softmax16x8_wide_range", "pad16x8", "strided_slice16x8",
                                  "leaky_relu16x8_same_scale", "chain16x8_float_io"])
def test_16x8_model_bit_exact_on_cortex_m4(name):
    report = validate(OPS_DIR / f"{name}.tflite", count=1, seed=3, kernels="mcugen", kernel_target="armv7em-dsp",
                      **runner_kwargs("qemu-mps2-an386"))
    assert report.target == "qemu-mps2-an386" and report.oracles
    assert report.bit_exact, report.per_run


@pytest.mark.parametrize("kernels", ["mcugen", "cmsis-nn"])
def test_kernel_passes_leave_int16_layers_portable(kernels, monkeypatch):
    if kernels == "cmsis-nn":
        import os

        if not os.environ.get("CMSIS_NN_PATH"):
            pytest.skip("CMSIS_NN_PATH is unset")
    path = OPS_DIR / "chain16x8_float_io.tflite"
    gen = driver.build(path, kernels=kernels, target="armv7em-dsp")
    calls = [layer.kernel for layer in gen.program.layers if layer.kernel]
    assert calls == ["mcugen_quantize_f32_s16", "mcugen_conv2d_s16", "mcugen_depthwise_conv2d_s16", "mcugen_add_s16",
                     "mcugen_fully_connected_s16", "mcugen_softmax_s16", "mcugen_dequantize_s16"], calls
    report = validate(path, count=2, seed=5, kernels=kernels, kernel_target="armv7em-dsp", generated=gen)
    assert report.bit_exact, report.per_run


@pytest.mark.parametrize("name", sorted(REFUSED))
def test_unsupported_16x8_case_is_refused_in_one_line(name, tmp_path):
    with pytest.raises(UnsupportedError) as info:
        driver.build(OPS_DIR / f"{name}.tflite")
    msg = str(info.value)
    assert "\n" not in msg and REFUSED[name] in msg, msg
    p = subprocess.run([sys.executable, "-m", "mcugen", "generate", str(OPS_DIR / f"{name}.tflite"), "-o", str(tmp_path / "out")],
                       capture_output=True, text=True, cwd=REPO)
    assert p.returncode == 2 and "Traceback" not in p.stderr
    assert len(p.stderr.strip().splitlines()) == 1 and REFUSED[name] in p.stderr, p.stderr
    assert not (tmp_path / "out").exists()


def test_leaky_relu_refusal_counts_the_oracles_real_disagreement():
    """The refusal's count (inputs where the oracles differ) is what the two oracles really do."""
    from mcugen.oracle import oracles_for

    path = OPS_DIR / "leaky_relu16x8.tflite"
    g = read_tflite(path)
    op = g.operators[0]
    x, o = g.t(op.inputs[0]), g.t(op.outputs[0])
    predicted = leaky_relu_int16_gap(x.quant.s, o.quant.s, op.attrs.alpha)
    values = np.arange(-32768, 32768, dtype=np.int64)
    values = np.concatenate([values, np.zeros((-len(values)) % x.size, np.int64)])
    runtime, micro = oracles_for(path)
    differ = 0
    for chunk in values.reshape(-1, x.size):
        a = [chunk.astype(np.int16).reshape(x.shape)]
        differ += int(np.count_nonzero(runtime.run(a)[0] != micro.run(a)[0]))
    assert predicted == differ == 36


def test_add_on_tflite_power_of_two_path_is_refused():
    """pot_scale_int16 with power-of-two scales: tflite-runtime's POT path, TFLite Micro's general one."""
    g = read_tflite(OPS_DIR / "add16x8_same_none.tflite")
    op = g.operators[0]
    op.attrs = dataclasses.replace(op.attrs, pot_scale_int16=True)
    for i in (*op.inputs, *op.outputs):
        g.t(i).quant = Quant(np.array([2.0 ** -12], np.float32), np.array([0], np.int64))
    with pytest.raises(UnsupportedError, match="power-of-two path"):
        check_graph(g)
    op.attrs = dataclasses.replace(op.attrs, pot_scale_int16=False)
    check_graph(g)  # the general path both oracles take


SAN = ("-fsanitize=address,undefined", "-fno-sanitize-recover=all", "-fno-omit-frame-pointer", "-g")


@pytest.mark.parametrize("name", ["chain16x8_float_io", "softmax16x8_wide_range", "conv16x8_3x3_same_dil2_relu6",
                                  "depthwise16x8_3x3_valid_s2_m2_none", "add16x8_broadcast_relu", "pad16x8",
                                  "leaky_relu16x8_same_scale"])
def test_16x8_kernels_sanitized(name, tmp_path):
    """The int16 kernels under -fsanitize=address,undefined (no report) still equal the reference."""
    from mcugen.oracle import oracles_for

    path = OPS_DIR / f"{name}.tflite"
    gen = driver.build(path)
    exe = driver.compile_host(gen, tmp_path / "build", extra_cflags=SAN)
    runs = driver.random_inputs(gen.graph, 2, 13)
    outs = driver.run_host(exe, gen, runs, tmp_path / "io")  # a sanitizer report exits non-zero -> ToolError
    oracle = oracles_for(path)[0]
    for got, run in zip(outs, runs):
        for a, b in zip(got, oracle.run(run)):
            assert np.array_equal(a, b)


def test_16x8_mismatch_is_detected_and_layer_named(monkeypatch):
    """A deliberately wrong int16 layer fails validation and --layers names it (layer 1, the CONV_2D)."""
    path = OPS_DIR / "chain16x8_float_io.tflite"
    real_compile = driver.compile_host

    def broken_compile(gen, build_dir, extra_cflags=()):
        name = gen.program.name
        text = gen.files[f"{name}.c"]
        at = text.index(f"{name}_l1_params = {{")
        gen.files[f"{name}.c"] = text[:at] + text[at:].replace(".act_max = ", ".act_max = 0 * ", 1)
        return real_compile(gen, build_dir, extra_cflags)

    monkeypatch.setattr(driver, "compile_host", broken_compile)
    report = validate(path, count=2, seed=1, layers=True)
    assert not report.bit_exact
    assert report.first_bad_layer is not None and report.first_bad_layer.layer == 1
    assert report.first_bad_layer.op == "CONV_2D"
