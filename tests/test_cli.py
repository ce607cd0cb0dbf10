"""CLI contract: commands, JSON, exit codes, one-line errors, output-folder safety, determinism."""

from __future__ import annotations

import json
import os
import shutil
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest

from helpers import OPS_DIR

CHAIN = OPS_DIR / "chain_conv_dw_conv_add_mean_fc_softmax.tflite"


def mcugen(*args, cwd=None):
    env = dict(os.environ, TF_CPP_MIN_LOG_LEVEL="3")
    return subprocess.run(
        [sys.executable, "-m", "mcugen", *map(str, args)], capture_output=True, text=True, cwd=cwd, env=env, timeout=600
    )


def assert_one_line_error(r):
    assert r.returncode == 2, (r.returncode, r.stdout, r.stderr)
    lines = [l for l in r.stderr.splitlines() if l.strip() and not l.startswith("[")]
    assert len(lines) == 1, r.stderr
    assert lines[0].startswith("mcugen: error: ")
    assert "Traceback" not in r.stderr


def test_info_json():
    r = mcugen("info", CHAIN, "--json")
    assert r.returncode == 0, r.stderr
    info = json.loads(r.stdout)
    assert info["macs"] > 0 and info["weight_bytes"] > 0 and info["arena_bytes"] >= info["arena_lower_bound_bytes"] > 0
    assert "SOFTMAX" in info["ops"] and len(info["layers"]) == info["operators"]


def test_validate_json_and_save_outputs(tmp_path):
    r = mcugen("validate", CHAIN, "--count", "2", "--seed", "3", "--json", "--save-outputs", tmp_path / "o")
    assert r.returncode == 0, r.stderr
    rep = json.loads(r.stdout)
    assert rep["bit_exact"] is True and rep["max_abs_diff"] == 0 and rep["runs"] == 2
    assert set(rep["oracles"]) == {"tflite-runtime-ref", "tflite-micro"}
    files = sorted(p.name for p in (tmp_path / "o").iterdir())
    assert files == ["run0_input0.npy", "run0_output0.npy", "run1_input0.npy", "run1_output0.npy"]
    # Saved outputs are what the C produced: check one independently against the oracle.
    from mcugen.oracle import oracles_for

    x = np.load(tmp_path / "o" / "run1_input0.npy")
    y = np.load(tmp_path / "o" / "run1_output0.npy")
    assert np.array_equal(oracles_for(CHAIN)[0].run([x])[0], y)


def test_validate_with_input_file(tmp_path):
    x = np.random.default_rng(0).integers(-128, 128, size=(1, 9, 7, 4)).astype(np.int8)
    np.save(tmp_path / "x.npy", x)
    r = mcugen("validate", OPS_DIR / "conv2d_3x3_same_s1_relu.tflite", "--input", tmp_path / "x.npy", "--json")
    assert r.returncode == 0, r.stderr
    assert json.loads(r.stdout)["runs"] == 1
    np.save(tmp_path / "bad.npy", np.zeros((3, 3), np.int8))
    r = mcugen("validate", OPS_DIR / "conv2d_3x3_same_s1_relu.tflite", "--input", tmp_path / "bad.npy")
    assert_one_line_error(r)
    assert "bad.npy" in r.stderr


def test_generate_is_deterministic_and_compiles_for_cortex_m4(tmp_path):
    a, b = tmp_path / "a", tmp_path / "b"
    assert mcugen("generate", CHAIN, "-o", a).returncode == 0
    assert mcugen("generate", CHAIN, "-o", b).returncode == 0
    names = sorted(p.name for p in a.iterdir())
    assert names == sorted(p.name for p in b.iterdir())
    for n in names:
        assert (a / n).read_bytes() == (b / n).read_bytes(), n
    src = [str(p) for p in a.glob("*.c")]
    assert len(src) == 4  # model, weights, kernels specialised per layer (default --kernels mcugen), portable kernels
    cc = shutil.which("arm-none-eabi-gcc")
    if cc is None:
        pytest.fail("arm-none-eabi-gcc missing: scripts/setup.sh installs it")
    flags = ["-std=c99", "-O2", "-Wall", "-Wextra", "-Werror", "-mcpu=cortex-m4", "-mthumb", "-mfloat-abi=hard", "-mfpu=fpv4-sp-d16"]
    for s in src:
        r = subprocess.run([cc, *flags, "-c", s, "-o", str(tmp_path / (Path(s).stem + ".o"))], capture_output=True, text=True)
        assert r.returncode == 0, r.stderr
    # Readable: every layer is commented with op, shapes and arena offsets; no malloc.
    c = (a / "chain_conv_dw_conv_add_mean_fc_softmax.c").read_text()
    assert "Layer 0: CONV_2D" in c and "@ arena[" in c
    assert "malloc" not in "".join((a / n).read_text() for n in names if n.endswith((".c", ".h")))


def test_generate_without_target_says_it_emits_portable_kernels(tmp_path):
    r = mcugen("generate", CHAIN, "-o", tmp_path / "a")
    assert r.returncode == 0
    notes = [l for l in r.stderr.splitlines() if "--target" in l]
    assert len(notes) == 1 and notes[0].startswith("note: no --target or --board given: emitted portable C kernels")
    r = mcugen("generate", CHAIN, "-o", tmp_path / "b", "--target", "armv7em-dsp")
    assert r.returncode == 0 and "portable" not in r.stderr
    r = mcugen("generate", CHAIN, "-o", tmp_path / "c", "--board", "nrf52840")
    assert r.returncode == 0 and "portable" not in r.stderr


def test_generate_refuses_foreign_folder_and_keeps_old_output_on_failure(tmp_path):
    foreign = tmp_path / "mine"
    foreign.mkdir()
    (foreign / "notes.txt").write_text("keep me")
    r = mcugen("generate", CHAIN, "-o", foreign)
    assert_one_line_error(r)
    assert "--force" in r.stderr and (foreign / "notes.txt").read_text() == "keep me"
    out = tmp_path / "out"
    assert mcugen("generate", CHAIN, "-o", out).returncode == 0
    before = {p.name: p.read_bytes() for p in out.iterdir()}
    bad = tmp_path / "bad.tflite"
    bad.write_bytes(CHAIN.read_bytes()[:500])
    assert_one_line_error(mcugen("generate", bad, "-o", out))
    assert {p.name: p.read_bytes() for p in out.iterdir()} == before
    assert sorted(p.name for p in tmp_path.iterdir()) == ["bad.tflite", "mine", "out"]


@pytest.mark.parametrize(
    "payload,needle",
    [
        (b"", "not a TFLite"),
        (b"not a model at all", "not a TFLite"),
        ("truncated", "corrupt"),
    ],
)
def test_bad_files_exit_2(tmp_path, payload, needle):
    f = tmp_path / "m.tflite"
    f.write_bytes(CHAIN.read_bytes()[:700] if payload == "truncated" else payload)
    for cmd in ("info", "validate"):
        r = mcugen(cmd, f)
        assert_one_line_error(r)
        assert needle in r.stderr


def test_missing_file_exit_2(tmp_path):
    r = mcugen("info", tmp_path / "nope.tflite")
    assert_one_line_error(r)
    assert "no such file" in r.stderr


@pytest.fixture(scope="module")
def tf_models(tmp_path_factory):
    """A float model and an int8 model with an unsupported op (CONCATENATION), built with TF."""
    d = tmp_path_factory.mktemp("tfmodels")
    script = r'''
import os, sys
os.environ["TF_CPP_MIN_LOG_LEVEL"] = "3"
import numpy as np, tensorflow as tf
d = sys.argv[1]
class M(tf.Module):
    def __init__(self):
        self.w = tf.Variable(tf.random.stateless_normal([3, 3, 4, 8], seed=[1, 2]))
    @tf.function(input_signature=[tf.TensorSpec([1, 8, 8, 4], tf.float32)])
    def __call__(self, x):
        y = tf.nn.relu(tf.nn.conv2d(x, self.w, 1, "SAME"))
        return tf.concat([y, y * 0.5 + 1.0], axis=3)
m = M()
fn = m.__call__.get_concrete_function()
conv = tf.lite.TFLiteConverter.from_concrete_functions([fn], m)
open(os.path.join(d, "float.tflite"), "wb").write(conv.convert())
conv = tf.lite.TFLiteConverter.from_concrete_functions([fn], m)
conv.optimizations = [tf.lite.Optimize.DEFAULT]
rng = np.random.default_rng(0)
conv.representative_dataset = lambda: ([rng.uniform(-1, 1, (1, 8, 8, 4)).astype(np.float32)] for _ in range(8))
conv.target_spec.supported_ops = [tf.lite.OpsSet.TFLITE_BUILTINS_INT8]
conv.inference_input_type = tf.int8
conv.inference_output_type = tf.int8
open(os.path.join(d, "concat_int8.tflite"), "wb").write(conv.convert())
'''
    r = subprocess.run([sys.executable, "-c", script, str(d)], capture_output=True, text=True, timeout=600)
    assert r.returncode == 0, r.stderr[-2000:]
    return d


def test_float_model_refused(tf_models):
    r = mcugen("info", tf_models / "float.tflite")
    assert_one_line_error(r)
    assert "float" in r.stderr and "int8" in r.stderr


def test_unsupported_op_refused_before_writing(tmp_path):
    """The chain model with its SOFTMAX turned into BUCKETIZE (a builtin mcugen does not know).
    (CONCATENATION, the op this test used before, is supported since issue 12.)"""
    import struct

    import tflite

    data = bytearray(CHAIN.read_bytes())
    m = tflite.Model.GetRootAsModel(data, 0)
    for i in range(m.OperatorCodesLength()):
        oc = m.OperatorCodes(i)
        if oc.BuiltinCode() == tflite.BuiltinOperator.SOFTMAX:
            # deprecated_builtin_code says "look at builtin_code" (127) for codes above 127
            for slot, fmt, code in ((4, "<b", 127), (10, "<i", tflite.BuiltinOperator.BUCKETIZE)):
                if oc._tab.Offset(slot):
                    struct.pack_into(fmt, data, oc._tab.Pos + oc._tab.Offset(slot), code)
    model = tmp_path / "bucketize.tflite"
    model.write_bytes(bytes(data))
    out = tmp_path / "out"
    r = mcugen("generate", model, "-o", out)
    assert_one_line_error(r)
    assert "BUCKETIZE" in r.stderr and "supported ops:" in r.stderr and "operator" in r.stderr
    assert not out.exists()


def test_validate_poisoned_and_layerwise():
    for extra in (["--poison"], ["--strategy", "layerwise"]):
        r = mcugen("validate", CHAIN, "--count", "2", "--json", *extra)
        assert r.returncode == 0, r.stderr
        assert json.loads(r.stdout)["bit_exact"] is True


def test_plan_json_fields():
    r = mcugen("plan", CHAIN, "--json")
    assert r.returncode == 0, r.stderr
    plan = json.loads(r.stdout)
    for key in ("peak_bytes", "arena_bytes", "scratch_bytes", "tflm_arena_bytes", "ratio_to_tflm"):
        assert key in plan, key
    assert plan["arena_bytes"] >= plan["peak_bytes"] > 0
    assert abs(plan["ratio_to_tflm"] - plan["arena_bytes"] / plan["tflm_arena_bytes"]) < 0.01
