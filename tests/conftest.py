"""Shared pytest fixtures: repo paths, the real pretrained models, and the generated per-op models."""

from __future__ import annotations

import json
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import pytest

REPO_ROOT = Path(__file__).resolve().parents[1]
SHARED_MODELS_DIR = REPO_ROOT.parent / "shared" / "models" / "real"
OP_MODELS_DIR = REPO_ROOT / "tests" / "models" / "ops"
OP_MODELS_INDEX = OP_MODELS_DIR / "index.json"


@dataclass(frozen=True)
class TensorInfo:
    """A graph input or output of an op model, as listed in index.json."""

    name: str
    shape: tuple[int, ...]
    dtype: str  # "int8", "uint8" or "float32"


@dataclass(frozen=True)
class OpModelEntry:
    """One generated per-op test model (tests/models/ops/index.json)."""

    path: Path
    op: str  # the TFLite builtin it targets ("CHAIN" / "MULTI_IO" for the graph models)
    options: dict[str, Any]  # the target op's options read back from the file
    ops: tuple[str, ...]  # every operator in the file, in execution order
    inputs: tuple[TensorInfo, ...]
    outputs: tuple[TensorInfo, ...]
    oracles: tuple[str, ...]  # oracles that loaded it when it was generated
    refused: bool = False  # a model mcugen must refuse (16x8, dynamic-range): not run by the oracles

    @property
    def name(self) -> str:
        return self.path.stem


def _tensor_infos(items: list[dict[str, Any]]) -> tuple[TensorInfo, ...]:
    return tuple(TensorInfo(i["name"], tuple(i["shape"]), i["dtype"]) for i in items)


def load_op_models() -> list[OpModelEntry]:
    """The entries of tests/models/ops/index.json (empty if the index is missing)."""
    if not OP_MODELS_INDEX.is_file():
        return []
    index = json.loads(OP_MODELS_INDEX.read_text())
    return [
        OpModelEntry(
            path=OP_MODELS_DIR / m["file"],
            op=m["op"],
            options=m["options"],
            ops=tuple(m["ops"]),
            inputs=_tensor_infos(m["inputs"]),
            outputs=_tensor_infos(m["outputs"]),
            oracles=tuple(m["oracles"]),
            refused=bool(m.get("refused", False)),
        )
        for m in index["models"]
    ]


OP_MODELS: list[OpModelEntry] = load_op_models()


@pytest.fixture(scope="session")
def repo_root() -> Path:
    return REPO_ROOT


@pytest.fixture(scope="session")
def shared_models_dir() -> Path:
    """../shared/models/real relative to the repo root; skips the test if it is absent."""
    if not SHARED_MODELS_DIR.is_dir():
        pytest.skip(f"real pretrained models not available: {SHARED_MODELS_DIR} does not exist")
    return SHARED_MODELS_DIR


@pytest.fixture(scope="session")
def op_models() -> list[OpModelEntry]:
    """Every generated per-op model; fails (not skips) if the committed index is missing."""
    assert OP_MODELS, f"{OP_MODELS_INDEX} is missing: run tests/models/make_op_models.py"
    return OP_MODELS


def pytest_generate_tests(metafunc: pytest.Metafunc) -> None:
    """A test taking an `op_model` argument runs once per generated per-op model."""
    if "op_model" in metafunc.fixturenames:
        metafunc.parametrize("op_model", OP_MODELS, ids=[m.name for m in OP_MODELS])
