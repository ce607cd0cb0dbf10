"""Test helpers: paths to the repo, the per-op models and the shared real models."""

from __future__ import annotations

import json
from pathlib import Path

import pytest

REPO = Path(__file__).resolve().parent.parent
OPS_DIR = REPO / "tests" / "models" / "ops"
SHARED_REAL = REPO.parent / "shared" / "models" / "real"


def op_model_entries() -> list[dict]:
    return json.loads((OPS_DIR / "index.json").read_text())["models"]


def real_model(name: str) -> Path:
    path = SHARED_REAL / name
    if not path.is_file():
        pytest.skip(f"{path} is absent: the shared real models (../shared/models/real) are not laid out here")
    return path


def real_models() -> list[str]:
    if not SHARED_REAL.is_dir():
        return []
    return sorted(p.name for p in SHARED_REAL.glob("*.tflite"))


def third_party_model(name: str) -> Path:
    """A third-party model from the folder named by $MCUGEN_THIRD_PARTY_MODELS (never committed)."""
    import os

    folder = os.environ.get("MCUGEN_THIRD_PARTY_MODELS")
    if not folder:
        pytest.skip("MCUGEN_THIRD_PARTY_MODELS is unset: no folder of third-party models (TinyEngine, TinyMaix, OpenMV, TFLite Micro examples) to test")
    path = Path(folder) / name
    if not path.is_file():
        pytest.skip(f"{path} is absent from $MCUGEN_THIRD_PARTY_MODELS")
    return path


def build_mobilenet(folder: Path, resolution: int, classes: int, alpha: float = 0.35) -> Path:
    """MobileNet v2 built and quantized to int8 by `mcugen model` (seeded, 4 calibration samples)."""
    import subprocess
    import sys

    path = Path(folder) / f"mnv2_{alpha:g}_{resolution}_{classes}.tflite"
    done = subprocess.run(
        [sys.executable, "-m", "mcugen", "model", "mobilenet_v2", "--alpha", str(alpha), "--resolution",
         str(resolution), "--classes", str(classes), "--samples", "4", "-o", str(path)],
        capture_output=True, text=True, timeout=900, cwd=REPO,
    )
    assert done.returncode == 0, done.stderr[-2000:]
    return path


def fast_forms_rule(monkeypatch, per_byte: int = 16) -> None:
    """Kernel selection keeps a larger, faster form where it saves `per_byte` instructions per
    byte (the default, 64, leaves the small test layers on their small forms): for tests of the
    larger forms' code itself."""
    from mcugen.kernels import base

    monkeypatch.setattr(base, "INSTRUCTIONS_PER_FLASH_BYTE", per_byte)
