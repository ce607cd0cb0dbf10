"""Full-int8 PTQ of MobileNet v2 (alpha 0.35, 96x96): tflite-runtime 2.14 BUILTIN_REF, I/O types, calibration."""

from __future__ import annotations

import argparse
import hashlib
import subprocess
import sys
import warnings

import numpy as np
import pytest

from mcugen import mobilenet_v2 as mnv2
from mcugen.datasets import DataError, load_calibration
from mcugen.errors import McugenError
from mcugen.quantize import (IO_TYPES, QuantizeOptions, SyntheticCalibrationWarning, operator_names, quantize_input,
                             quantize_module, reference_interpreter, run_reference)

tf = mnv2.import_tensorflow()

# The operators mcugen generates code for (issue 3's list).
MCUGEN_OPS = {"CONV_2D", "DEPTHWISE_CONV_2D", "FULLY_CONNECTED", "ADD", "MUL", "MEAN", "AVERAGE_POOL_2D",
              "MAX_POOL_2D", "SOFTMAX", "LOGISTIC", "RESHAPE", "PAD", "TRANSPOSE", "QUANTIZE", "DEQUANTIZE"}
ALPHA, RES, CLASSES = 0.35, 96, 10


@pytest.fixture(scope="module")
def module():
    return mnv2.build_mobilenet_v2(ALPHA, RES, classes=CLASSES, seed=0)


@pytest.fixture(scope="module")
def pixels():
    """Eight seeded 'images' of raw pixels 0..255 (uint8), the calibration set of these tests."""
    return np.random.default_rng(0).integers(0, 256, (8, RES, RES, 3)).astype(np.uint8)


@pytest.fixture(scope="module")
def calibration_npy(tmp_path_factory, pixels):
    path = tmp_path_factory.mktemp("cal") / "cal.npy"
    np.save(path, pixels)
    return path


@pytest.fixture(scope="module")
def models(module, calibration_npy):
    """The int8, uint8 and float32-I/O models, calibrated on the same .npy."""
    images = load_calibration(calibration_npy, RES, RES, 3, samples=100)
    return {t: quantize_module(module, images, QuantizeOptions(input_type=t, output_type=t)) for t in IO_TYPES}


@pytest.fixture(scope="module")
def test_inputs():
    return np.random.default_rng(1).uniform(-1, 1, (4, RES, RES, 3)).astype(np.float32)


def _tensor_details(model):
    return reference_interpreter(model).get_tensor_details()


def test_int8_model_runs_in_tflite_runtime_reference_kernels(models, module, test_inputs):
    model = models["int8"]
    interpreter = reference_interpreter(model)  # tflite-runtime 2.14, OpResolverType.BUILTIN_REF
    assert interpreter.get_input_details()[0]["dtype"] == np.int8
    assert interpreter.get_output_details()[0]["dtype"] == np.int8
    assert list(interpreter.get_input_details()[0]["shape"]) == [1, RES, RES, 3]
    ops = operator_names(model)
    assert set(ops) <= MCUGEN_OPS, set(ops) - MCUGEN_OPS
    assert {name: ops.count(name) for name in set(ops)} == {
        "CONV_2D": 35, "DEPTHWISE_CONV_2D": 17, "ADD": 10, "MEAN": 1, "FULLY_CONNECTED": 1, "SOFTMAX": 1}
    # weights int8 per output channel, biases int32, activations int8
    conv_weights = [t for t in _tensor_details(model) if t["dtype"] == np.int8 and len(t["shape"]) == 4
                    and len(t["quantization_parameters"]["scales"]) > 1]
    assert len(conv_weights) == 35 + 17
    for t in conv_weights:
        axis = t["quantization_parameters"]["quantized_dimension"]
        assert len(t["quantization_parameters"]["scales"]) == t["shape"][axis]
    assert sum(t["dtype"] == np.int32 and len(t["shape"]) == 1 and t["name"] != "Mean/reduction_indices"
               for t in _tensor_details(model)) >= 35 + 17
    # the int8 model approximates the float model
    out = run_reference(model, quantize_input(model, test_inputs))
    scale, zero_point = interpreter.get_output_details()[0]["quantization"]
    probs = (out.astype(np.float32) - zero_point) * scale
    want = module(test_inputs).numpy()
    assert np.abs(probs - want).max() < 0.1
    assert np.abs(probs - want).mean() < 0.02


def test_uint8_and_float32_io_compute_the_same_as_int8(models, test_inputs):
    x8 = quantize_input(models["int8"], test_inputs)
    out8 = run_reference(models["int8"], x8).astype(np.int32)
    assert set(operator_names(models["uint8"])) - set(operator_names(models["int8"])) == {"QUANTIZE"}
    assert set(operator_names(models["float32"])) - set(operator_names(models["int8"])) == {"QUANTIZE", "DEQUANTIZE"}
    # uint8: the same integers shifted by 128 at both ends
    xu = quantize_input(models["uint8"], test_inputs)
    assert xu.dtype == np.uint8
    np.testing.assert_array_equal(xu.astype(np.int32) - 128, x8)
    np.testing.assert_array_equal(run_reference(models["uint8"], xu).astype(np.int32) - 128, out8)
    # float32: the QUANTIZE / DEQUANTIZE edges reproduce the int8 model exactly
    outf = run_reference(models["float32"], test_inputs)
    assert outf.dtype == np.float32
    scale, zero_point = reference_interpreter(models["int8"]).get_output_details()[0]["quantization"]
    np.testing.assert_array_equal(outf, (out8 - zero_point).astype(np.float32) * np.float32(scale))


def test_calibration_from_a_folder_equals_the_same_images_as_npy_and_npz(tmp_path, module, pixels, models):
    from PIL import Image

    folder = tmp_path / "images"
    (folder / "sub").mkdir(parents=True)
    for i, image in enumerate(pixels):  # names sort in index order; one in a sub-folder
        target = folder / "sub" if i == 7 else folder
        Image.fromarray(image).save(target / f"{i:02d}.png")
    np.savez(tmp_path / "cal.npz", x=pixels, y=np.zeros(len(pixels), np.int64))
    from_folder = load_calibration(folder, RES, RES, 3, samples=100)
    from_npz = load_calibration(tmp_path / "cal.npz", RES, RES, 3, samples=100)
    np.testing.assert_array_equal(from_folder, from_npz)
    assert from_folder.min() == -1.0 and from_folder.max() == 1.0
    assert quantize_module(module, from_folder) == models["int8"]


def test_calibration_options_change_the_model(module, calibration_npy, models):
    half = load_calibration(calibration_npy, RES, RES, 3, samples=100, scale=1 / 255.0, offset=0.0)
    assert half.min() == 0.0 and half.max() == 1.0
    model = quantize_module(module, half)
    assert model != models["int8"]
    in_scale, in_zero = reference_interpreter(model).get_input_details()[0]["quantization"]
    assert in_zero == -128 and abs(in_scale - 1 / 255.0) < 1e-6  # input range 0..1
    subset = load_calibration(calibration_npy, RES, RES, 3, samples=3, seed=4)
    assert subset.shape == (3, RES, RES, 3)
    assert not np.array_equal(subset, load_calibration(calibration_npy, RES, RES, 3, samples=3, seed=5))


def test_synthetic_calibration_warns(module):
    with pytest.warns(SyntheticCalibrationWarning, match="synthetic random images"):
        model = quantize_module(module, None, QuantizeOptions(samples=4))
    assert reference_interpreter(model).get_input_details()[0]["dtype"] == np.int8


def test_conversion_is_deterministic_across_processes(models, calibration_npy):
    code = (
        "import hashlib, sys\n"
        "from mcugen import mobilenet_v2 as m\n"
        "from mcugen.datasets import load_calibration\n"
        "from mcugen.quantize import quantize_module\n"
        f"mod = m.build_mobilenet_v2({ALPHA}, {RES}, classes={CLASSES}, seed=0)\n"
        f"cal = load_calibration(sys.argv[1], {RES}, {RES}, 3, samples=100)\n"
        "print(hashlib.sha256(quantize_module(mod, cal)).hexdigest())\n"
    )
    done = subprocess.run([sys.executable, "-c", code, str(calibration_npy)], capture_output=True, text=True,
                          timeout=300)
    assert done.returncode == 0, done.stderr[-2000:]
    assert done.stdout.strip() == hashlib.sha256(models["int8"]).hexdigest()


def test_other_seed_other_bytes(calibration_npy, models):
    other = mnv2.build_mobilenet_v2(ALPHA, RES, classes=CLASSES, seed=1)
    assert quantize_module(other, load_calibration(calibration_npy, RES, RES, 3)) != models["int8"]


def test_per_tensor_dense_option(module, calibration_npy):
    model = quantize_module(module, load_calibration(calibration_npy, RES, RES, 3),
                            QuantizeOptions(per_channel_dense=False))
    dense = [t for t in _tensor_details(model) if t["dtype"] == np.int8 and list(t["shape"]) == [CLASSES, 1280]]
    assert len(dense) == 1 and len(dense[0]["quantization_parameters"]["scales"]) == 1
    run_reference(model, np.zeros((1, RES, RES, 3), np.int8))


def _parser():
    from mcugen import cmd_model

    parser = argparse.ArgumentParser(prog="mcugen")
    cmd_model.register(parser.add_subparsers(dest="command", required=True))
    return parser


def test_quantize_command_on_a_saved_model(tmp_path, module, calibration_npy, models, test_inputs, capsys):
    saved = tmp_path / "saved"
    signature = tf.function(module.__call__, input_signature=[tf.TensorSpec([None, RES, RES, 3], tf.float32,
                                                                            name="images")])
    tf.saved_model.save(module, str(saved), signatures=signature.get_concrete_function())
    out = tmp_path / "sm.tflite"
    args = _parser().parse_args(["quantize", str(saved), "--calibration", str(calibration_npy), "-o", str(out)])
    assert args.func(args) == 0
    assert "wrote" in capsys.readouterr().out
    model = out.read_bytes()
    assert list(reference_interpreter(model).get_input_details()[0]["shape"]) == [1, RES, RES, 3]
    x = quantize_input(models["int8"], test_inputs)
    np.testing.assert_array_equal(run_reference(model, x), run_reference(models["int8"], x))


def test_model_command_writes_weights_and_warns_without_calibration(tmp_path, capsys):
    out, weights = tmp_path / "m.tflite", tmp_path / "w.npz"
    args = _parser().parse_args(["model", "mobilenet_v2", "--alpha", "0.35", "--height", "40", "--width", "56",
                                 "--channels", "1", "--classes", "4", "--samples", "2", "--input-type", "uint8",
                                 "--output-type", "float32", "--save-weights", str(weights), "-o", str(out)])
    with warnings.catch_warnings():
        warnings.simplefilter("error")  # the command reports the warning itself instead
        assert args.func(args) == 0
    captured = capsys.readouterr()
    assert "mcugen: warning: no calibration data given" in captured.err
    interpreter = reference_interpreter(out.read_bytes())
    assert list(interpreter.get_input_details()[0]["shape"]) == [1, 40, 56, 1]
    assert interpreter.get_input_details()[0]["dtype"] == np.uint8
    assert interpreter.get_output_details()[0]["dtype"] == np.float32
    assert mnv2.load_weights(weights)["stem/kernel"].shape == (3, 3, 1, 16)


def test_bad_options_and_data(tmp_path, module):
    with pytest.raises(McugenError, match="input type 'int16' is not supported"):
        QuantizeOptions(input_type="int16")
    with pytest.raises(McugenError, match="at least 1 sample"):
        QuantizeOptions(samples=0)
    np.save(tmp_path / "two.npy", np.zeros((3, RES, RES, 2), np.uint8))
    with pytest.raises(DataError, match="2 channels"):
        load_calibration(tmp_path / "two.npy", RES, RES, 3)
    np.save(tmp_path / "none.npy", np.zeros((0, RES, RES, 3), np.uint8))
    with pytest.raises(DataError, match="N >= 1"):
        load_calibration(tmp_path / "none.npy", RES, RES, 3)
    np.savez(tmp_path / "nox.npz", images=np.zeros((1, RES, RES, 3)))
    with pytest.raises(DataError, match="no array named 'x'"):
        load_calibration(tmp_path / "nox.npz", RES, RES, 3)
    (tmp_path / "empty").mkdir()
    with pytest.raises(DataError, match="holds no"):
        load_calibration(tmp_path / "empty", RES, RES, 3)
    (tmp_path / "broken").mkdir()
    (tmp_path / "broken" / "a.png").write_bytes(b"not a png")
    with pytest.raises(DataError, match="cannot be read"):
        load_calibration(tmp_path / "broken", RES, RES, 3)
    with pytest.raises(McugenError, match="shape"):
        quantize_module(module, np.zeros((2, 32, 32, 3), np.float32))
