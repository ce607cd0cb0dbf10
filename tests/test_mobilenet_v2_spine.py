"""mcugen's own int8 MobileNet v2 (alpha 0.35/96 and 0.5/128) validates bit-exact through the C."""

from __future__ import annotations

import subprocess
import sys

import pytest

from mcugen.validate import validate


@pytest.mark.parametrize("alpha,resolution", [(0.35, 96), (0.5, 128)])
def test_mobilenet_v2_int8_bit_exact(tmp_path, alpha, resolution):
    model = tmp_path / f"mnv2_{alpha}_{resolution}.tflite"
    r = subprocess.run(
        [sys.executable, "-m", "mcugen", "model", "mobilenet_v2", "--alpha", str(alpha), "--resolution", str(resolution),
         "--classes", "10", "--samples", "8", "-o", str(model)],
        capture_output=True, text=True, timeout=600,
    )
    assert r.returncode == 0, r.stderr[-2000:]
    report = validate(model, count=2, seed=1)
    assert report.oracles == ["tflite-runtime-ref", "tflite-micro"]
    assert report.bit_exact, report.per_run
