"""MobileNet v2 (Sandler et al. 2018) as a Keras-free tf.Module, plus a TF-free layer table.

Architecture (paper, Table 2), for an input of H x W x C and width multiplier alpha:

    stem        conv 3x3, stride 2, make_divisible(32 * alpha) channels, ReLU6
    block0      bottleneck t=1 (no expansion conv): depthwise 3x3 + ReLU6, linear 1x1 projection
    block1..16  bottlenecks (t, c, n, s) = (6,24,2,2) (6,32,3,2) (6,64,4,2) (6,96,3,1)
                (6,160,3,2) (6,320,1,1): 1x1 expansion + ReLU6, depthwise 3x3 (stride s on the
                first block of a group) + ReLU6, linear 1x1 projection, residual add when the
                stride is 1 and the input and output channel counts are equal
    head        conv 1x1 to 1280 channels (make_divisible(1280 * alpha) when alpha > 1), ReLU6
    pool        global average pool (MEAN over H and W)
    classifier  fully connected to `classes` logits; the exported model ends in a softmax

Every block's output channels are make_divisible(c * alpha, 8) (multiples of 8, never below 90%
of the unrounded value); the expansion width is t times the block's input channels. All
convolutions use SAME padding, so any resolution (square or not) works. Batch normalisation, if
used while training, is folded into the convolutions before export: the exported graph is only
convolution + bias (+ ReLU6).

Weights (`.npz`, float32, one kernel and one bias per layer):

    stem/kernel                [3, 3, C, c0]           stem/bias       [c0]
    block0/depthwise/kernel    [3, 3, c0, 1]           .../bias        [c0]
    block0/project/kernel      [1, 1, c0, c1]          .../bias        [c1]
    blockN/expand/kernel       [1, 1, cin, t*cin]      .../bias        [t*cin]   (N = 1..16)
    blockN/depthwise/kernel    [3, 3, t*cin, 1]        .../bias        [t*cin]
    blockN/project/kernel      [1, 1, t*cin, cout]     .../bias        [cout]
    head/kernel                [1, 1, c16, last]       head/bias       [last]
    classifier/kernel          [last, classes]         classifier/bias [classes]

Kernels use TensorFlow's layouts (HWIO for convolutions, HW-C-multiplier for depthwise). The layer
table (`layer_table`) needs no TensorFlow; the tf.Module (`build_mobilenet_v2`) imports it lazily.
"""

from __future__ import annotations

import enum
import functools
import math
import os
import sys
from dataclasses import dataclass
from pathlib import Path
from typing import Mapping, Optional

import numpy as np

from mcugen.errors import McugenError, ModelError, OutputError, ToolError, UnsupportedError

#: Paper Table 2 bottleneck groups: (expansion t, output channels c, repeats n, first stride s).
BOTTLENECKS: tuple[tuple[int, int, int, int], ...] = (
    (1, 16, 1, 1),
    (6, 24, 2, 2),
    (6, 32, 3, 2),
    (6, 64, 4, 2),
    (6, 96, 3, 1),
    (6, 160, 3, 2),
    (6, 320, 1, 1),
)
STEM_CHANNELS = 32
LAST_CHANNELS = 1280
MIN_RESOLUTION = 32
BN_EPSILON = 1e-3


def make_divisible(value: float, divisor: int = 8) -> int:
    """Round `value` to the nearest multiple of `divisor` (>= divisor), never below 90% of it."""
    rounded = max(divisor, int(value + divisor / 2) // divisor * divisor)
    if rounded < 0.9 * value:
        rounded += divisor
    return rounded


class LayerKind(enum.Enum):
    """What a row of the layer table computes."""

    CONV = "conv"  # 2-D convolution + bias (+ ReLU6)
    DEPTHWISE = "depthwise"  # depthwise convolution (multiplier 1) + bias + ReLU6
    ADD = "add"  # residual addition of `source` and `residual`
    MEAN = "mean"  # global average pool over H and W
    DENSE = "dense"  # fully connected classifier
    SOFTMAX = "softmax"


@dataclass(frozen=True)
class MobileNetV2Config:
    """Hyper-parameters of one MobileNet v2 instance; validated on construction."""

    alpha: float = 1.0
    height: int = 224
    width: int = 224
    channels: int = 3
    classes: int = 1000

    def __post_init__(self) -> None:
        if not (isinstance(self.alpha, (int, float)) and math.isfinite(self.alpha) and self.alpha > 0):
            raise UnsupportedError(f"MobileNet v2 alpha {self.alpha} is not supported: it must be a number > 0")
        for name in ("height", "width"):
            value = getattr(self, name)
            if int(value) != value or value < MIN_RESOLUTION:
                raise UnsupportedError(
                    f"MobileNet v2 input {name} {value} is not supported: it must be an integer >= {MIN_RESOLUTION}"
                )
        if int(self.channels) != self.channels or self.channels < 1:
            raise UnsupportedError(f"MobileNet v2 input channels {self.channels} is not supported: it must be >= 1")
        if int(self.classes) != self.classes or self.classes < 1:
            raise UnsupportedError(f"MobileNet v2 classes {self.classes} is not supported: it must be >= 1")

    @property
    def last_channels(self) -> int:
        return make_divisible(LAST_CHANNELS * self.alpha) if self.alpha > 1.0 else LAST_CHANNELS


@dataclass(frozen=True)
class LayerSpec:
    """One row of the layer table: shapes are (height, width, channels) without the batch."""

    name: str
    kind: LayerKind
    source: str  # name of the layer whose output feeds this one ("input" for the stem)
    input_shape: tuple[int, ...]
    output_shape: tuple[int, ...]
    kernel_shape: Optional[tuple[int, ...]] = None  # TF layout of `<name>/kernel`, if any
    stride: int = 1
    relu6: bool = False
    residual: Optional[str] = None  # ADD only: the other addend

    @property
    def params(self) -> int:
        """Weights + biases of this layer (batch norm folded)."""
        if self.kernel_shape is None:
            return 0
        return int(np.prod(self.kernel_shape)) + self.output_shape[-1]

    @property
    def macs(self) -> int:
        """Multiply-accumulates of this layer (convolutions and the classifier only)."""
        if self.kind is LayerKind.CONV:
            kh, kw, cin, cout = self.kernel_shape
            return self.output_shape[0] * self.output_shape[1] * kh * kw * cin * cout
        if self.kind is LayerKind.DEPTHWISE:
            kh, kw, chans, _ = self.kernel_shape
            return self.output_shape[0] * self.output_shape[1] * kh * kw * chans
        if self.kind is LayerKind.DENSE:
            return self.kernel_shape[0] * self.kernel_shape[1]
        return 0


def _same_out(size: int, stride: int) -> int:
    return -(-size // stride)


def layer_table(config: MobileNetV2Config) -> list[LayerSpec]:
    """Every layer of MobileNet v2 for `config`, in execution order (no TensorFlow needed)."""
    rows: list[LayerSpec] = []
    h, w = config.height, config.width
    cin = config.channels
    stem = make_divisible(STEM_CHANNELS * config.alpha)
    h, w = _same_out(h, 2), _same_out(w, 2)
    rows.append(
        LayerSpec("stem", LayerKind.CONV, "input", (config.height, config.width, cin), (h, w, stem),
                  (3, 3, cin, stem), 2, True)
    )
    prev, cin = "stem", stem
    index = 0
    for t, c, n, s in BOTTLENECKS:
        cout = make_divisible(c * config.alpha)
        for repeat in range(n):
            stride = s if repeat == 0 else 1
            block = f"block{index}"
            block_input = prev
            hidden = cin * t
            if t != 1:
                rows.append(LayerSpec(f"{block}/expand", LayerKind.CONV, prev, (h, w, cin), (h, w, hidden),
                                      (1, 1, cin, hidden), 1, True))
                prev = f"{block}/expand"
            ho, wo = _same_out(h, stride), _same_out(w, stride)
            rows.append(LayerSpec(f"{block}/depthwise", LayerKind.DEPTHWISE, prev, (h, w, hidden), (ho, wo, hidden),
                                  (3, 3, hidden, 1), stride, True))
            rows.append(LayerSpec(f"{block}/project", LayerKind.CONV, f"{block}/depthwise", (ho, wo, hidden),
                                  (ho, wo, cout), (1, 1, hidden, cout), 1, False))
            prev = f"{block}/project"
            if stride == 1 and cin == cout:
                rows.append(LayerSpec(f"{block}/add", LayerKind.ADD, prev, (ho, wo, cout), (ho, wo, cout),
                                      residual=block_input))
                prev = f"{block}/add"
            h, w, cin = ho, wo, cout
            index += 1
    last = config.last_channels
    rows.append(LayerSpec("head", LayerKind.CONV, prev, (h, w, cin), (h, w, last), (1, 1, cin, last), 1, True))
    rows.append(LayerSpec("pool", LayerKind.MEAN, "head", (h, w, last), (last,)))
    rows.append(LayerSpec("classifier", LayerKind.DENSE, "pool", (last,), (config.classes,),
                          (last, config.classes)))
    rows.append(LayerSpec("softmax", LayerKind.SOFTMAX, "classifier", (config.classes,), (config.classes,)))
    return rows


def weight_shapes(config: MobileNetV2Config) -> dict[str, tuple[int, ...]]:
    """Name -> shape of every array in a weights file for `config` (see the module docstring)."""
    shapes: dict[str, tuple[int, ...]] = {}
    for row in layer_table(config):
        if row.kernel_shape is not None:
            shapes[f"{row.name}/kernel"] = row.kernel_shape
            shapes[f"{row.name}/bias"] = (row.output_shape[-1],)
    return shapes


@dataclass(frozen=True)
class ModelSummary:
    """Totals of a layer table."""

    layers: int
    params: int
    macs: int
    largest_activation: int  # elements of the largest single layer output


def summarize(config: MobileNetV2Config) -> ModelSummary:
    rows = layer_table(config)
    return ModelSummary(
        layers=len(rows),
        params=sum(r.params for r in rows),
        macs=sum(r.macs for r in rows),
        largest_activation=max(int(np.prod(r.output_shape)) for r in rows),
    )


def format_table(config: MobileNetV2Config) -> str:
    """The layer table as aligned text, one line per layer, with totals."""
    rows = layer_table(config)
    lines = [
        f"MobileNet v2 alpha {config.alpha:g}, input {config.height}x{config.width}x{config.channels}, "
        f"{config.classes} classes",
        f"{'layer':<20} {'kind':<9} {'stride':>6} {'input':>14} {'output':>14} {'params':>10} {'MACs':>12}",
    ]
    for r in rows:
        lines.append(
            f"{r.name:<20} {r.kind.value:<9} {r.stride:>6} {'x'.join(map(str, r.input_shape)):>14} "
            f"{'x'.join(map(str, r.output_shape)):>14} {r.params:>10,} {r.macs:>12,}"
        )
    total = summarize(config)
    lines.append(f"total: {total.layers} layers, {total.params:,} parameters, {total.macs:,} MACs")
    return "\n".join(lines)


# --------------------------------------------------------------------------------------------
# Initial weights and weights files (numpy only)


def init_weights(config: MobileNetV2Config, seed: int = 0) -> dict[str, np.ndarray]:
    """Seeded initial weights: He-normal for ReLU6 layers, LeCun-normal for linear ones, zero biases."""
    rng = np.random.default_rng(seed)
    weights: dict[str, np.ndarray] = {}
    for row in layer_table(config):
        if row.kernel_shape is None:
            continue
        shape = row.kernel_shape
        fan_in = shape[0] if row.kind is LayerKind.DENSE else shape[0] * shape[1] * (
            1 if row.kind is LayerKind.DEPTHWISE else shape[2])
        gain = 2.0 if row.relu6 else 1.0
        weights[f"{row.name}/kernel"] = (rng.standard_normal(shape) * math.sqrt(gain / fan_in)).astype(np.float32)
        weights[f"{row.name}/bias"] = np.zeros(row.output_shape[-1], np.float32)
    return weights


def check_weights(config: MobileNetV2Config, weights: Mapping[str, np.ndarray], where: str) -> dict[str, np.ndarray]:
    """Return `weights` as float32 arrays after checking names and shapes against `config`."""
    expected = weight_shapes(config)
    missing = [n for n in expected if n not in weights]
    extra = sorted(set(weights) - set(expected))
    if missing or extra:
        what = f"lacks {missing[0]}" if missing else f"has unknown array {extra[0]}"
        raise ModelError(f"weights {where} {what} ({len(missing)} missing, {len(extra)} unknown); "
                         f"expected the {len(expected)} arrays of MobileNet v2 alpha {config.alpha:g}")
    checked: dict[str, np.ndarray] = {}
    for name, shape in expected.items():
        array = np.asarray(weights[name])
        if tuple(array.shape) != shape:
            raise ModelError(
                f"weights {where}: {name} has shape {tuple(array.shape)}, but alpha {config.alpha:g} with "
                f"{config.channels} input channels and {config.classes} classes needs {shape}"
            )
        if not np.issubdtype(array.dtype, np.floating) or not np.all(np.isfinite(array)):
            raise ModelError(f"weights {where}: {name} must hold finite floating-point values")
        checked[name] = array.astype(np.float32)
    return checked


def load_weights(path: str | os.PathLike) -> dict[str, np.ndarray]:
    """Read a weights `.npz` into name -> array (no shape checks; see `check_weights`); the
    recipe `mcugen train` stores beside the arrays is skipped (see mcugen.recipe.read_recipe)."""
    from mcugen.recipe import RECIPE_KEY

    path = Path(path)
    if not path.is_file():
        raise McugenError(f"weights file {path} does not exist")
    try:
        with np.load(path, allow_pickle=False) as data:
            return {name: data[name] for name in data.files if name != RECIPE_KEY}
    except (OSError, ValueError) as exc:
        raise ModelError(f"weights file {path} is not a readable .npz archive ({exc})") from None


def save_weights(weights: Mapping[str, np.ndarray], path: str | os.PathLike) -> None:
    """Write name -> array as an uncompressed `.npz` (the format `load_weights` reads)."""
    path = Path(path)
    if path.suffix != ".npz":
        raise OutputError(f"weights output {path} must end in .npz")
    if not path.parent.is_dir():
        raise OutputError(f"cannot write {path}: folder {path.parent} does not exist")
    with open(path, "wb") as handle:
        np.savez(handle, **{name: np.asarray(value, np.float32) for name, value in weights.items()})


# --------------------------------------------------------------------------------------------
# TensorFlow part (imported lazily)


def import_tensorflow():
    """Import TensorFlow quietly (no Keras is ever imported); a ToolError if it is missing."""
    os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "2")
    os.environ.setdefault("TF_ENABLE_ONEDNN_OPTS", "0")  # quiet start-up, reproducible float results
    if "tensorflow" not in sys.modules:
        # tflite-runtime 2.14 (the oracle) fails with std::bad_alloc when its native library is
        # loaded after TensorFlow's in the same process; loaded first, both work.
        try:
            import tflite_runtime.interpreter  # noqa: F401
        except ImportError:
            pass
    try:
        import tensorflow as tf
    except ImportError as exc:  # pragma: no cover - depends on the installation
        raise ToolError(f"TensorFlow is needed for this command but cannot be imported ({exc}); "
                        "install the 'model' extra (tensorflow-cpu)") from None
    return tf


@functools.lru_cache(maxsize=None)
def _module_class():
    tf = import_tensorflow()

    class MobileNetV2(tf.Module):
        """MobileNet v2 with tf.Variables named like the weights file; optional batch norm for training.

        `logits(x, training)` is the float graph without the softmax; `__call__(x)` adds it.
        With `batch_norm=True` every convolution is followed by batch normalisation (batch
        statistics when `training`, moving averages otherwise); `folded_weights()` folds it
        away, giving the weights of the conv + bias graph that is exported.
        """

        def __init__(self, config: MobileNetV2Config, weights: Mapping[str, np.ndarray],
                     batch_norm: bool = False, bn_momentum: float = 0.9):
            super().__init__(name="mobilenet_v2")
            self.config = config
            self.table = tuple(layer_table(config))
            self.batch_norm = bool(batch_norm)
            # a variable, so that `train` can switch to a cumulative average after tracing
            self.bn_momentum = tf.Variable(float(bn_momentum), trainable=False, name="bn_momentum")
            weights = check_weights(config, weights, "given to the builder")
            self.kernels = {}
            self.biases = {}
            self.bn = {}
            with tf.name_scope("mobilenet_v2"):
                for row in self.table:
                    if row.kernel_shape is None:
                        continue
                    self.kernels[row.name] = tf.Variable(weights[f"{row.name}/kernel"], name=f"{row.name}/kernel")
                    self.biases[row.name] = tf.Variable(weights[f"{row.name}/bias"], name=f"{row.name}/bias")
                    if self.batch_norm and row.kind is not LayerKind.DENSE:
                        chans = row.output_shape[-1]
                        self.bn[row.name] = {
                            "gamma": tf.Variable(np.ones(chans, np.float32), name=f"{row.name}/bn/gamma"),
                            "beta": tf.Variable(np.zeros(chans, np.float32), name=f"{row.name}/bn/beta"),
                            "mean": tf.Variable(np.zeros(chans, np.float32), trainable=False,
                                                name=f"{row.name}/bn/moving_mean"),
                            # 1 - eps makes a fresh batch norm the exact identity at inference.
                            "variance": tf.Variable(np.full(chans, 1.0 - BN_EPSILON, np.float32), trainable=False,
                                                    name=f"{row.name}/bn/moving_variance"),
                        }

        def _normalize(self, name, y, training):
            bn = self.bn[name]
            if training:
                mean, variance = tf.nn.moments(y, axes=[0, 1, 2])
                m = self.bn_momentum
                bn["mean"].assign(m * bn["mean"] + (1.0 - m) * mean)
                bn["variance"].assign(m * bn["variance"] + (1.0 - m) * variance)
            else:
                mean, variance = bn["mean"], bn["variance"]
            return tf.nn.batch_normalization(y, mean, variance, bn["beta"], bn["gamma"], BN_EPSILON)

        def logits(self, x, training=False):
            """Float forward pass up to the classifier (no softmax); x is NHWC float32."""
            outputs = {"input": x}
            y = x
            for row in self.table:
                y = outputs[row.source]
                if row.kind is LayerKind.CONV or row.kind is LayerKind.DEPTHWISE:
                    kernel = self.kernels[row.name]
                    if row.kind is LayerKind.CONV:
                        y = tf.nn.conv2d(y, kernel, row.stride, "SAME")
                    else:
                        y = tf.nn.depthwise_conv2d(y, kernel, [1, row.stride, row.stride, 1], "SAME")
                    y = tf.nn.bias_add(y, self.biases[row.name])
                    if self.batch_norm:
                        y = self._normalize(row.name, y, training)
                    if row.relu6:
                        y = tf.nn.relu6(y)
                elif row.kind is LayerKind.ADD:
                    y = tf.add(y, outputs[row.residual])
                elif row.kind is LayerKind.MEAN:
                    y = tf.reduce_mean(y, axis=[1, 2])
                elif row.kind is LayerKind.DENSE:
                    y = tf.nn.bias_add(tf.matmul(y, self.kernels[row.name]), self.biases[row.name])
                elif row.kind is LayerKind.SOFTMAX:
                    break
                outputs[row.name] = y
            return y

        def __call__(self, x):
            """Class probabilities (softmax of the logits), inference mode."""
            return tf.nn.softmax(self.logits(x, training=False))

        def folded_weights(self) -> dict[str, np.ndarray]:
            """Weights of the export graph: batch norm (if any) folded into kernel and bias."""
            folded: dict[str, np.ndarray] = {}
            for row in self.table:
                if row.kernel_shape is None:
                    continue
                kernel = self.kernels[row.name].numpy().astype(np.float64)
                bias = self.biases[row.name].numpy().astype(np.float64)
                if row.name in self.bn:
                    bn = self.bn[row.name]
                    scale = bn["gamma"].numpy() / np.sqrt(bn["variance"].numpy().astype(np.float64) + BN_EPSILON)
                    if row.kind is LayerKind.DEPTHWISE:
                        kernel = kernel * scale.reshape(1, 1, -1, 1)
                    else:
                        kernel = kernel * scale.reshape(1, 1, 1, -1)
                    bias = bn["beta"].numpy() + (bias - bn["mean"].numpy()) * scale
                folded[f"{row.name}/kernel"] = kernel.astype(np.float32)
                folded[f"{row.name}/bias"] = bias.astype(np.float32)
            return folded

        def export_module(self):
            """A batch-norm-free MobileNetV2 computing the same inference function (self if none)."""
            if not self.batch_norm:
                return self
            return type(self)(self.config, self.folded_weights(), batch_norm=False)

        def recalibrate_batch_norm(self, batches) -> None:
            """Set the moving statistics to the average of the batch statistics over `batches`."""
            if not self.batch_norm:
                return
            forward = tf.function(lambda x: self.logits(x, training=True))
            saved = float(self.bn_momentum.numpy())
            for i, x in enumerate(batches):
                self.bn_momentum.assign(i / (i + 1.0))  # running mean of the batch statistics
                forward(tf.constant(x))
            self.bn_momentum.assign(saved)

        def serving_function(self, batch: int = 1):
            """Concrete function x[batch,H,W,C] float32 -> probabilities, for the TFLite converter."""
            c = self.config
            spec = tf.TensorSpec([batch, c.height, c.width, c.channels], tf.float32, name="input")
            return tf.function(self.__call__, input_signature=[spec]).get_concrete_function()

    MobileNetV2.__module__ = __name__
    return MobileNetV2


def __getattr__(name: str):
    # `MobileNetV2` is defined on first use so that importing this module does not import TF.
    if name == "MobileNetV2":
        return _module_class()
    raise AttributeError(f"module {__name__!r} has no attribute {name!r}")


def build_mobilenet_v2(alpha: float = 1.0, height: int = 224, width: Optional[int] = None, channels: int = 3,
                       classes: int = 1000, seed: int = 0, weights: Optional[Mapping[str, np.ndarray]] = None,
                       batch_norm: bool = False):
    """A MobileNetV2 tf.Module: seeded He-initialised weights, or `weights` (checked) if given."""
    config = MobileNetV2Config(alpha, height, height if width is None else width, channels, classes)
    if weights is None:
        weights = init_weights(config, seed)
    else:
        weights = check_weights(config, weights, "given")
    return _module_class()(config, weights, batch_norm=batch_norm)
