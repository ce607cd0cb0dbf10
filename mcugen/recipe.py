"""The recipe stored inside a weights file: architecture, input shape, classes and preprocessing.

`mcugen train` writes it into the `.npz` next to the arrays (one extra array, RECIPE_KEY, holding
UTF-8 JSON), so that `model --weights`, `quantize` and `evaluate --float` rebuild the same network
and feed it the same pixels without any flag being repeated.
"""

from __future__ import annotations

import json
import math
import os
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any, Mapping, Optional

import numpy as np

from mcugen.errors import ModelError, OutputError

RECIPE_KEY = "mcugen_recipe.json"
FORMAT = 1


@dataclass(frozen=True)
class Recipe:
    """What a weights file was trained as. Preprocessing: raw pixels 0..255 (images converted to
    grey or RGB, resized bilinearly to height x width) become x * scale + offset."""

    architecture: str
    alpha: float
    height: int
    width: int
    channels: int
    classes: int
    class_names: tuple[str, ...] = ()
    scale: float = 1.0 / 127.5
    offset: float = -1.0
    training: dict = field(default_factory=dict)  # epochs, samples, accuracy (informative only)

    def to_json(self) -> dict[str, Any]:
        d = asdict(self)
        d["class_names"] = list(self.class_names)
        return {"format": FORMAT, **d}

    @classmethod
    def from_json(cls, data: Mapping[str, Any], where: str) -> "Recipe":
        try:
            if data.get("format") != FORMAT:
                raise ValueError(f"format {data.get('format')!r}, this mcugen reads format {FORMAT}")
            recipe = cls(
                architecture=str(data["architecture"]),
                alpha=float(data["alpha"]),
                height=int(data["height"]),
                width=int(data["width"]),
                channels=int(data["channels"]),
                classes=int(data["classes"]),
                class_names=tuple(str(n) for n in data.get("class_names", ())),
                scale=float(data["scale"]),
                offset=float(data["offset"]),
                training=dict(data.get("training", {})),
            )
        except (KeyError, TypeError, ValueError, AttributeError) as exc:
            raise ModelError(f"weights {where}: the stored recipe cannot be read ({type(exc).__name__}: {exc})") from None
        if recipe.class_names and len(recipe.class_names) != recipe.classes:
            raise ModelError(f"weights {where}: the recipe names {len(recipe.class_names)} classes "
                             f"but records {recipe.classes}")
        if not (math.isfinite(recipe.scale) and math.isfinite(recipe.offset)) or recipe.scale == 0:
            raise ModelError(f"weights {where}: the recipe's preprocessing scale {recipe.scale} / offset "
                             f"{recipe.offset} is not usable")
        return recipe


def encode(recipe: Recipe) -> np.ndarray:
    """The recipe as the uint8 array stored under RECIPE_KEY."""
    return np.frombuffer(json.dumps(recipe.to_json(), sort_keys=True).encode("utf-8"), np.uint8).copy()


def read_recipe(path: str | os.PathLike) -> Optional[Recipe]:
    """The recipe of a weights `.npz`, or None when it has none (weights saved by other means)."""
    path = Path(path)
    try:
        with np.load(path, allow_pickle=False) as data:
            if RECIPE_KEY not in data.files:
                return None
            raw = data[RECIPE_KEY]
    except (OSError, ValueError) as exc:
        raise ModelError(f"weights file {path} is not a readable .npz archive ({exc})") from None
    try:
        return Recipe.from_json(json.loads(np.asarray(raw, np.uint8).tobytes().decode("utf-8")), str(path))
    except (UnicodeDecodeError, json.JSONDecodeError, AttributeError) as exc:
        raise ModelError(f"weights {path}: the stored recipe is not JSON ({exc})") from None


def save_with_recipe(weights: Mapping[str, np.ndarray], recipe: Recipe, path: str | os.PathLike) -> None:
    """Write the float weights and their recipe as one uncompressed `.npz`."""
    path = Path(path)
    if path.suffix != ".npz":
        raise OutputError(f"weights output {path} must end in .npz")
    if not path.parent.is_dir():
        raise OutputError(f"cannot write {path}: folder {path.parent} does not exist")
    arrays = {name: np.asarray(value, np.float32) for name, value in weights.items()}
    arrays[RECIPE_KEY] = encode(recipe)
    try:
        with open(path, "wb") as handle:
            np.savez(handle, **arrays)
    except OSError as exc:
        raise OutputError(f"cannot write {path} ({exc.strerror})") from None
