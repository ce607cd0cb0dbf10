"""Generated C under -fsanitize=address,undefined: no report on the real models and MobileNet v2."""

from __future__ import annotations

import subprocess
import sys

import numpy as np
import pytest

from helpers import real_model, real_models
from mcugen import driver
from mcugen.oracle import oracles_for

SAN = ("-fsanitize=address,undefined", "-fno-sanitize-recover=all", "-fno-omit-frame-pointer", "-g")


def _run_sanitized(path, tmp_path, count):
    gen = driver.build(path)
    exe = driver.compile_host(gen, tmp_path / "build", extra_cflags=SAN)
    runs = driver.random_inputs(gen.graph, count, 11)
    outs = driver.run_host(exe, gen, runs, tmp_path / "io")  # a sanitizer report exits non-zero -> ToolError
    oracle = oracles_for(path)[0]
    for r, arrays in enumerate(runs):
        for a, b in zip(outs[r], oracle.run(arrays)):
            assert np.array_equal(a, b)


@pytest.mark.parametrize("name", real_models() or ["(none)"])
def test_real_models_sanitized(name, tmp_path):
    if name == "(none)":
        pytest.skip("../shared/models/real is absent")
    _run_sanitized(real_model(name), tmp_path, 1)


def test_mobilenet_v2_sanitized(tmp_path):
    model = tmp_path / "mnv2.tflite"
    r = subprocess.run(
        [sys.executable, "-m", "mcugen", "model", "mobilenet_v2", "--alpha", "0.35", "--resolution", "96",
         "--classes", "10", "--samples", "4", "-o", str(model)],
        capture_output=True, text=True, timeout=600,
    )
    assert r.returncode == 0, r.stderr[-1500:]
    _run_sanitized(model, tmp_path, 2)


def test_sanitizer_catches_a_planted_overflow(tmp_path):
    """The harness really reports sanitizer findings: an out-of-bounds write must fail the run."""
    from mcugen.errors import ToolError
    from helpers import OPS_DIR

    gen = driver.build(OPS_DIR / "conv2d_3x3_same_s1_relu.tflite")
    name = gen.program.name
    gen.files[f"{name}.c"] = gen.files[f"{name}.c"].replace(
        "    return 0;\n}",
        f"    {{ volatile size_t past_end = sizeof {name}_arena; {name}_arena[past_end] = 1; }}\n    return 0;\n}}",
    )
    exe = driver.compile_host(gen, tmp_path / "build", extra_cflags=SAN)
    with pytest.raises(ToolError, match="exited with status"):
        driver.run_host(exe, gen, driver.random_inputs(gen.graph, 1, 0), tmp_path / "io")
