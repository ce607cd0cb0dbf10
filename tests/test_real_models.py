"""Every real pretrained model in ../shared/models/real validates bit-exact through the generated C."""

from __future__ import annotations

import numpy as np
import pytest

from helpers import SHARED_REAL, real_model, real_models
from mcugen import driver
from mcugen.validate import validate


@pytest.mark.parametrize("name", real_models() or ["(none)"])
def test_real_model_bit_exact_on_host(name):
    if name == "(none)":
        pytest.skip(f"{SHARED_REAL} is absent: no real models to validate")
    path = real_model(name)
    count = 1 if "224" in name else 3
    report = validate(path, count=count, seed=0)
    assert report.oracles
    assert report.bit_exact, f"{name}: max abs diff {report.max_abs_diff} {report.per_run}"


@pytest.mark.parametrize(
    "image,expected", [("person", [-113, 113]), ("no_person", [57, -57])]
)
def test_person_detect_stored_images(image, expected):
    path = real_model("person_detect.tflite")
    x = np.load(SHARED_REAL / f"person_detect_{image}_input_int8.npy")
    stored = np.load(SHARED_REAL / f"person_detect_{image}_tflm_output_int8.npy")
    (out,) = driver.compile_and_run_host(path, [[x]])[0]
    assert out.reshape(-1).tolist() == expected
    assert np.array_equal(out.reshape(-1), stored.reshape(-1))


def test_mobilenet_v2_dog_is_samoyed():
    path = real_model("tflm_xtensa_mobilenet_v2_quantized_1x3x224x224.tflite")
    x = np.load(SHARED_REAL / "tflm_xtensa_mobilenet_v2_dog_input_int8.npy")
    stored = np.load(SHARED_REAL / "tflm_xtensa_mobilenet_v2_dog_tflm_output_int8.npy")
    (out,) = driver.compile_and_run_host(path, [[x]])[0]
    assert int(np.argmax(out)) == 258
    assert list(np.argsort(-out.reshape(-1).astype(np.int32), kind="stable")[:5]) == [258, 259, 261, 203, 279]
    assert np.array_equal(out.reshape(-1), stored.reshape(-1))


@pytest.mark.parametrize("name", [n for n in real_models() if "224" not in n] or ["(none)"])
def test_real_model_stored_reference(name):
    if name == "(none)":
        pytest.skip("no real models")
    stem = name[: -len(".tflite")]
    inp = SHARED_REAL / "ref" / f"{stem}__rand_seed0_input0.npy"
    ref = SHARED_REAL / "ref" / f"{stem}__rand_seed0_tflm_output0.npy"
    if not inp.exists():
        pytest.skip(f"{name}: no stored reference input")
    (out,) = driver.compile_and_run_host(real_model(name), [[np.load(inp)]])[0]
    assert np.array_equal(out.reshape(-1), np.load(ref).reshape(-1))
