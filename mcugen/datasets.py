"""Image data for training, calibration and evaluation: labelled folders, .npz/.npy arrays, preprocessing.

The one statement of mcugen's preprocessing (train, calibration in `model`/`quantize`, `evaluate`
and images given to `validate` all go through it):

1. an image file (PNG/JPEG/BMP) is converted to grey ("L", 1 channel) or RGB (3 channels) and
   resized bilinearly to the model's height x width (`read_image`); arrays (.npy/.npz) are taken
   as pixels, a grey channel repeated to 3 if needed, resized bilinearly (`conform_images`);
2. pixels (0..255) become x * scale + offset in float32 (`preprocess`; default x/127.5 - 1);
3. for an int8/uint8 model that float is quantized with the model's input scale and zero point,
   rounding half away from zero as TFLite's QUANTIZE kernel does (`mcugen.quantize.quantize_input`).

scale and offset are recorded in the weights file by `train` (mcugen.recipe) and read from it by
`model --weights`, `quantize` and `evaluate --float`.
"""

from __future__ import annotations

import os
from dataclasses import dataclass
from pathlib import Path
from typing import Optional

import numpy as np

from mcugen.errors import DataError

IMAGE_SUFFIXES = (".png", ".jpg", ".jpeg", ".bmp")
DEFAULT_SCALE = 1.0 / 127.5  # x * scale + offset maps pixels 0..255 to -1..1
DEFAULT_OFFSET = -1.0


@dataclass(frozen=True)
class LabelledImages:
    """Raw (not yet preprocessed) images N x H x W x C, float32, with integer labels."""

    images: np.ndarray
    labels: np.ndarray
    class_names: tuple[str, ...]

    @property
    def classes(self) -> int:
        return len(self.class_names)


def preprocess(images: np.ndarray, scale: float = DEFAULT_SCALE, offset: float = DEFAULT_OFFSET) -> np.ndarray:
    """x * scale + offset as float32 (the model's input convention, e.g. x/127.5 - 1)."""
    return (np.asarray(images, np.float32) * np.float32(scale) + np.float32(offset)).astype(np.float32)


def _image_files(folder: Path) -> list[Path]:
    return sorted(p for p in folder.rglob("*") if p.is_file() and p.suffix.lower() in IMAGE_SUFFIXES)


def _read_image(path: Path, height: int, width: int, channels: int) -> np.ndarray:
    from PIL import Image, UnidentifiedImageError

    if channels not in (1, 3):
        raise DataError(f"image {path}: images can feed models with 1 or 3 input channels, not {channels} "
                        "(use a .npy/.npz array instead)")
    try:
        with Image.open(path) as image:
            image = image.convert("L" if channels == 1 else "RGB")
            if image.size != (width, height):
                image = image.resize((width, height), Image.BILINEAR)
            pixels = np.asarray(image, np.float32)
    except (OSError, UnidentifiedImageError, ValueError) as exc:
        raise DataError(f"image {path} cannot be read ({exc})") from None
    except Exception as exc:  # Pillow's decoders raise other kinds on corrupt files (SyntaxError, ...)
        raise DataError(f"image {path} cannot be read ({type(exc).__name__}: {exc})") from None
    return pixels.reshape(height, width, channels)


def read_image(path: str | os.PathLike, height: int, width: int, channels: int) -> np.ndarray:
    """Raw pixels (float32 height x width x channels, 0..255) of one PNG/JPEG/BMP file (step 1)."""
    path = Path(path)
    if path.suffix.lower() not in IMAGE_SUFFIXES:
        raise DataError(f"image {path}: supported image files are {'/'.join(IMAGE_SUFFIXES)}")
    if not path.is_file():
        raise DataError(f"image {path} does not exist")
    return _read_image(path, height, width, channels)


def is_image_file(path: str | os.PathLike) -> bool:
    return Path(path).suffix.lower() in IMAGE_SUFFIXES


def load_image_folder(folder: str | os.PathLike, height: int, width: int, channels: int) -> LabelledImages:
    """A labelled folder: one sub-folder per class (sorted by name), PNG/JPEG/BMP images inside."""
    folder = Path(folder)
    if not folder.is_dir():
        raise DataError(f"data folder {folder} does not exist")
    class_dirs = sorted(p for p in folder.iterdir() if p.is_dir())
    if not class_dirs:
        raise DataError(f"data folder {folder} has no class sub-folders (expected one per class)")
    images, labels = [], []
    for label, class_dir in enumerate(class_dirs):
        files = _image_files(class_dir)
        if not files:
            raise DataError(f"class folder {class_dir} holds no {'/'.join(IMAGE_SUFFIXES)} images")
        for path in files:
            images.append(_read_image(path, height, width, channels))
            labels.append(label)
    return LabelledImages(np.stack(images), np.asarray(labels, np.int64), tuple(p.name for p in class_dirs))


def resize_images(images: np.ndarray, height: int, width: int) -> np.ndarray:
    """Bilinear resize of N x h x w x C float images to N x height x width x C."""
    from PIL import Image

    images = np.asarray(images, np.float32)
    if images.shape[1:3] == (height, width):
        return images
    out = np.empty((images.shape[0], height, width, images.shape[3]), np.float32)
    for n in range(images.shape[0]):
        for c in range(images.shape[3]):
            plane = Image.fromarray(np.ascontiguousarray(images[n, :, :, c]), mode="F")
            out[n, :, :, c] = np.asarray(plane.resize((width, height), Image.BILINEAR), np.float32)
    return out


def conform_images(images: np.ndarray, height: int, width: int, channels: int, where: str) -> np.ndarray:
    """N x H x W (x C) numbers -> float32 N x height x width x channels (adds/repeats a grey channel)."""
    images = np.asarray(images)
    if images.ndim == 3:
        images = images[..., np.newaxis]
    if images.ndim != 4 or images.shape[0] == 0:
        raise DataError(f"{where}: expected images shaped N x H x W x C with N >= 1, got {images.shape}")
    if not (np.issubdtype(images.dtype, np.number) and not np.iscomplexobj(images)):
        raise DataError(f"{where}: images must be real numbers, got dtype {images.dtype}")
    if images.shape[3] != channels:
        if images.shape[3] == 1:
            images = np.repeat(images, channels, axis=3)
        else:
            raise DataError(f"{where}: images have {images.shape[3]} channels, the model takes {channels}")
    images = images.astype(np.float32)
    if not np.all(np.isfinite(images)):
        raise DataError(f"{where}: images contain NaN or infinite values")
    return resize_images(images, height, width)


def load_array_file(path: str | os.PathLike) -> tuple[np.ndarray, Optional[np.ndarray]]:
    """`.npy` (images only) or `.npz` with `x` (images) and optionally `y` (integer labels)."""
    path = Path(path)
    if not path.is_file():
        raise DataError(f"array file {path} does not exist")
    try:
        if path.suffix == ".npy":
            return np.load(path, allow_pickle=False), None
        if path.suffix == ".npz":
            with np.load(path, allow_pickle=False) as data:
                if "x" not in data.files:
                    raise DataError(f"array file {path} has no array named 'x' (has {', '.join(data.files) or 'none'})")
                return data["x"], (data["y"] if "y" in data.files else None)
    except (OSError, ValueError) as exc:
        raise DataError(f"array file {path} cannot be read ({exc})") from None
    raise DataError(f"data file {path}: supported are image folders, .npy and .npz files")


def load_labelled(source: str | os.PathLike, height: int, width: int, channels: int) -> LabelledImages:
    """Training data from a labelled image folder or a `.npz` with `x` and `y` (labels 0..K-1)."""
    source = Path(source)
    if not source.exists():
        raise DataError(f"training data {source} does not exist (expected a folder with one sub-folder per "
                        "class, or a .npz with 'x' and 'y')")
    if source.is_dir():
        return load_image_folder(source, height, width, channels)
    x, y = load_array_file(source)
    if y is None:
        raise DataError(f"array file {source} has no labels: training needs a .npz with 'x' and 'y'")
    images = conform_images(x, height, width, channels, str(source))
    y = np.asarray(y)
    if y.ndim != 1 or len(y) != len(images) or not np.issubdtype(y.dtype, np.integer) or y.min() < 0:
        raise DataError(f"array file {source}: 'y' must hold {len(images)} integer labels >= 0, "
                        f"got shape {y.shape} dtype {y.dtype}")
    classes = int(y.max()) + 1
    return LabelledImages(images, y.astype(np.int64), tuple(str(i) for i in range(classes)))


def load_calibration(source: Optional[str | os.PathLike], height: int, width: int, channels: int,
                     samples: int = 100, scale: float = DEFAULT_SCALE, offset: float = DEFAULT_OFFSET,
                     seed: int = 0) -> Optional[np.ndarray]:
    """Preprocessed calibration images (at most `samples`, a seeded choice), or None without `source`.

    `source` is a folder of images (searched recursively; labels ignored), a `.npy` or a `.npz`
    (its `x`). Every sample becomes x * scale + offset, whatever its origin.
    """
    if samples < 1:
        raise DataError(f"calibration needs at least 1 sample, {samples} requested")
    if source is None:
        return None
    source = Path(source)
    if not source.exists():
        raise DataError(f"calibration data {source} does not exist (expected an image folder, .npy or .npz)")
    rng = np.random.default_rng(seed)
    if source.is_dir():
        files = _image_files(source)
        if not files:
            raise DataError(f"calibration folder {source} holds no {'/'.join(IMAGE_SUFFIXES)} images")
        if len(files) > samples:
            files = [files[i] for i in sorted(rng.choice(len(files), samples, replace=False))]
        raw = np.stack([_read_image(p, height, width, channels) for p in files])
    else:
        x, _ = load_array_file(source)
        x = np.asarray(x)
        if x.ndim in (3, 4) and len(x) > samples:
            x = x[np.sort(rng.choice(len(x), samples, replace=False))]
        raw = conform_images(x, height, width, channels, f"calibration {source}")
    return preprocess(raw, scale, offset)


def synthetic_inputs(count: int, shape: tuple[int, ...], scale: float = DEFAULT_SCALE,
                     offset: float = DEFAULT_OFFSET, seed: int = 0) -> np.ndarray:
    """`count` samples of `shape`: seeded uniform random pixels 0..255, preprocessed (a stand-in for data)."""
    rng = np.random.default_rng(seed)
    raw = rng.integers(0, 256, (count, *shape)).astype(np.float32)
    return preprocess(raw, scale, offset)


def load_evaluation(source: str | os.PathLike, height: int, width: int, channels: int, classes: int,
                    class_names: tuple[str, ...] = ()) -> LabelledImages:
    """Labelled test data for a model with `classes` outputs, labels mapped to the model's classes.

    A folder's sub-folders are matched to `class_names` by name when the model's names are
    known (a test folder may hold a subset); without names there must be exactly `classes`
    sub-folders, taken in sorted order as `train` does. A `.npz` needs `y` in 0..classes-1.
    """
    source = Path(source)
    if not source.exists():
        raise DataError(f"test data {source} does not exist (expected a folder with one sub-folder per class, "
                        "or a .npz with 'x' and 'y')")
    if not source.is_dir():
        data = load_labelled(source, height, width, channels)
        if data.classes > classes:
            raise DataError(f"test data {source}: label {data.classes - 1} is out of range for a model with "
                            f"{classes} classes (0..{classes - 1})")
        names = class_names or tuple(str(i) for i in range(classes))
        return LabelledImages(data.images, data.labels, names)
    data = load_image_folder(source, height, width, channels)
    if class_names:
        unknown = [n for n in data.class_names if n not in class_names]
        if unknown:
            shown = ", ".join(class_names[:10]) + (", ..." if len(class_names) > 10 else "")
            raise DataError(f"test folder {source}: class folder {unknown[0]!r} is not one of the model's "
                            f"{len(class_names)} classes ({shown})")
        mapping = np.asarray([class_names.index(n) for n in data.class_names], np.int64)
        return LabelledImages(data.images, mapping[data.labels], tuple(class_names))
    if data.classes != classes:
        raise DataError(f"test folder {source} has {data.classes} class folders but the model has {classes} "
                        "classes; give the weights file (--float) so classes are matched by name, or one "
                        "folder per class")
    return data
