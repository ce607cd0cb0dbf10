"""Writes the small deterministic int8 per-op test models into tests/models/ops/ with their index.json.

Run with the repo's venv (TensorFlow 2.21, no Keras):

    .venv/bin/python tests/models/make_op_models.py            # (re)write tests/models/ops/
    .venv/bin/python tests/models/make_op_models.py --check    # regenerate in a temp dir, compare bytes
    .venv/bin/python tests/models/make_op_models.py --only conv2d_3x3_same_s1_relu

Every model is a tf.function over seeded constant weights, converted with
`tf.lite.TFLiteConverter.from_concrete_functions` and full-int8 post-training quantisation
from a seeded representative dataset. After conversion each file is checked: its operator
list must be exactly the one declared here and the target operator's options (padding,
strides, dilation, fused activation, depth multiplier, beta, axes...) must be the ones asked
for, read back from the flatbuffer. Then every oracle of mcugen.oracle that loads the model
runs it on a seeded input and their outputs must be equal.
"""

from __future__ import annotations

import argparse
import hashlib
import json
import os
import struct
import subprocess
import sys
import tempfile
import warnings
import zlib
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Callable

os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "3")
# oneDNN float kernels may round differently on other CPUs; the plain ones keep the bytes stable.
os.environ.setdefault("TF_ENABLE_ONEDNN_OPTS", "0")

import numpy as np  # noqa: E402

HERE = Path(__file__).resolve().parent
REPO_ROOT = HERE.parents[1]
OPS_DIR = HERE / "ops"
REPRESENTATIVE_SAMPLES = 32

sys.path.insert(0, str(REPO_ROOT))


@dataclass(frozen=True)
class InputSpec:
    """One graph input: its shape and the float range its representative samples are drawn from."""

    shape: tuple[int, ...]
    low: float = -1.0
    high: float = 1.0


# A builder takes a seeded generator (for the weights) and returns the float model as a Python
# function of tf tensors, returning one tensor or a tuple of them.
Builder = Callable[[np.random.Generator], Callable[..., Any]]


@dataclass(frozen=True)
class OpModel:
    """One test model: what it targets, how to build it and what the converter must produce."""

    name: str
    op: str  # the TFLite builtin this model exists to test
    inputs: tuple[InputSpec, ...]
    build: Builder
    ops: tuple[str, ...]  # the exact operator sequence the converted file must contain
    expect: dict[str, Any] = field(default_factory=dict)  # options of the first `op` in the file
    io_type: str = "int8"  # "int8", "uint8", "float32" (graph inputs and outputs)
    input_type: str | None = None  # overrides io_type for the inputs only
    output_type: str | None = None  # overrides io_type for the outputs only
    per_tensor_fc: bool = False  # ask the converter for per-tensor FULLY_CONNECTED weights
    per_tensor: bool = False  # ask the converter for per-tensor weights everywhere
    patch: Callable[[bytes], bytes] | None = None  # edit applied to the converted flatbuffer
    note: str = ""
    dynamic_batch: bool = False  # the function's batch dimension is None (shape arithmetic stays in the graph)
    quantization: str = "int8"  # "int8" (full integer), "16x8" (int16 activations) or "dynamic" (int8 weights only)
    dynamic_axes: tuple[int, ...] = ()  # input axes left unknown to the converter (with `patch` restoring the shapes)


# --------------------------------------------------------------------------- weights


def _weights(rng: np.random.Generator, shape: tuple[int, ...], fan_in: int) -> Any:
    import tensorflow as tf

    return tf.constant((rng.standard_normal(shape) / np.sqrt(fan_in)).astype(np.float32))


def _bias(rng: np.random.Generator, size: int) -> Any:
    import tensorflow as tf

    return tf.constant((0.2 * rng.standard_normal(size)).astype(np.float32))


def _activate(x: Any, activation: str) -> Any:
    import tensorflow as tf

    if activation == "RELU":
        return tf.nn.relu(x)
    if activation == "RELU6":
        return tf.nn.relu6(x)
    assert activation == "NONE", activation
    return x


# --------------------------------------------------------------------------- builders


def conv2d(
    kernel: tuple[int, int],
    out_channels: int,
    padding: str,
    strides: tuple[int, int] = (1, 1),
    dilation: tuple[int, int] = (1, 1),
    activation: str = "NONE",
    in_channels: int = 4,
) -> Builder:
    def build(rng: np.random.Generator) -> Callable[..., Any]:
        import tensorflow as tf

        w = _weights(rng, (*kernel, in_channels, out_channels), kernel[0] * kernel[1] * in_channels)
        b = _bias(rng, out_channels)

        def model(x: Any) -> Any:
            y = tf.nn.conv2d(x, w, strides=[1, *strides, 1], padding=padding, dilations=[1, *dilation, 1])
            return _activate(tf.nn.bias_add(y, b), activation)

        return model

    return build


def depthwise(
    kernel: tuple[int, int],
    multiplier: int,
    padding: str,
    strides: tuple[int, int] = (1, 1),
    dilation: tuple[int, int] = (1, 1),
    activation: str = "NONE",
    in_channels: int = 6,
) -> Builder:
    def build(rng: np.random.Generator) -> Callable[..., Any]:
        import tensorflow as tf

        w = _weights(rng, (*kernel, in_channels, multiplier), kernel[0] * kernel[1])
        b = _bias(rng, in_channels * multiplier)

        def model(x: Any) -> Any:
            # The raw op takes dilations directly (tf.nn.depthwise_conv2d would wrap a dilated
            # kernel in SPACE_TO_BATCH_ND / BATCH_TO_SPACE_ND).
            y = tf.raw_ops.DepthwiseConv2dNative(
                input=x, filter=w, strides=[1, *strides, 1], padding=padding, dilations=[1, *dilation, 1]
            )
            return _activate(tf.nn.bias_add(y, b), activation)

        return model

    return build


def fully_connected(in_features: int, out_features: int, bias: bool = True, activation: str = "NONE") -> Builder:
    def build(rng: np.random.Generator) -> Callable[..., Any]:
        import tensorflow as tf

        w = _weights(rng, (in_features, out_features), in_features)
        b = _bias(rng, out_features)

        def model(x: Any) -> Any:
            y = tf.matmul(x, w)
            if bias:
                y = y + b
            return _activate(y, activation)

        return model

    return build


def binary(kind: str, activation: str = "NONE", constant_shape: tuple[int, ...] | None = None) -> Builder:
    """ADD or MUL of two graph inputs, or of one input and a constant of `constant_shape`."""

    def build(rng: np.random.Generator) -> Callable[..., Any]:
        import tensorflow as tf

        fn = tf.add if kind == "ADD" else tf.multiply
        if constant_shape is not None:
            c = tf.constant(rng.uniform(-1.5, 1.5, constant_shape).astype(np.float32))
            return lambda x: _activate(fn(x, c), activation)
        return lambda x, y: _activate(fn(x, y), activation)

    return build


def mean(axes: tuple[int, ...], keepdims: bool) -> Builder:
    def build(rng: np.random.Generator) -> Callable[..., Any]:
        import tensorflow as tf

        return lambda x: tf.reduce_mean(x, axis=list(axes), keepdims=keepdims)

    return build


def reduce_sum(axes: tuple[int, ...], keepdims: bool) -> Builder:
    def build(rng: np.random.Generator) -> Callable[..., Any]:
        import tensorflow as tf

        return lambda x: tf.reduce_sum(x, axis=list(axes), keepdims=keepdims)

    return build


def transpose_then_means(perm: tuple[int, ...], axes: tuple[int, ...]) -> Builder:
    """TinyEngine's pattern: TRANSPOSE (e.g. to NCHW), then MEAN over one axis at a time."""

    def build(rng: np.random.Generator) -> Callable[..., Any]:
        import tensorflow as tf

        def f(x):
            y = tf.transpose(x, perm)
            for a in axes:
                y = tf.reduce_mean(y, axis=[a], keepdims=False)
            return y

        return f

    return build


def static_output_shape(shape: tuple[int, ...]) -> Callable[[bytes], bytes]:
    """Write the static shape of the (dynamic-batch) graph output into the flatbuffer, as a model
    exported with a fixed batch (TinyMaix's) has it; the converter leaves a [1, 1] placeholder."""

    def patch(model_bytes: bytes) -> bytes:
        import tflite

        data = bytearray(model_bytes)
        model = tflite.Model.GetRootAsModel(data, 0)
        sg = model.Subgraphs(0)
        t = sg.Tensors(int(sg.OutputsAsNumpy()[0]))
        assert t.ShapeLength() == len(shape)
        start = t._tab.Vector(t._tab.Offset(4))  # Tensor.shape is field 0
        for j, d in enumerate(shape):
            struct.pack_into("<i", data, start + 4 * j, d)
        return bytes(data)

    return patch


def io_shapes(input_shape: tuple[int, ...], output_shape: tuple[int, ...]) -> Callable[[bytes], bytes]:
    """Rewrite the (static) shapes of graph input 0 and output 0, same ranks: how a TRANSPOSE of
    only size-1 axes is made (TensorFlow's converter turns such a transpose into a RESHAPE)."""

    def patch(model_bytes: bytes) -> bytes:
        import tflite

        data = bytearray(model_bytes)
        sg = tflite.Model.GetRootAsModel(data, 0).Subgraphs(0)
        for index, shape in ((int(sg.InputsAsNumpy()[0]), input_shape), (int(sg.OutputsAsNumpy()[0]), output_shape)):
            t = sg.Tensors(index)
            assert t.ShapeLength() == len(shape)
            start = t._tab.Vector(t._tab.Offset(4))
            for j, d in enumerate(shape):
                struct.pack_into("<i", data, start + 4 * j, d)
            if t._tab.Offset(16):  # shape_signature (field 6), when present
                sig = t._tab.Vector(t._tab.Offset(16))
                for j, d in enumerate(shape):
                    struct.pack_into("<i", data, sig + 4 * j, d)
        return bytes(data)

    return patch


def activation_op(kind: str) -> Builder:
    def build(rng: np.random.Generator) -> Callable[..., Any]:
        import tensorflow as tf

        return {
            "relu": tf.nn.relu,
            "relu_n1_to_1": lambda x: tf.clip_by_value(x, -1.0, 1.0),
            "leaky_relu": lambda x: tf.nn.leaky_relu(x, alpha=0.2),
        }[kind]

    return build


def depth_space(kind: str, block: int) -> Builder:
    def build(rng: np.random.Generator) -> Callable[..., Any]:
        import tensorflow as tf

        fn = tf.nn.depth_to_space if kind == "d2s" else tf.nn.space_to_depth
        return lambda x: fn(x, block)

    return build


def pad_value(paddings: tuple[tuple[int, int], ...], value: float) -> Builder:
    def build(rng: np.random.Generator) -> Callable[..., Any]:
        import tensorflow as tf

        return lambda x: tf.pad(x, paddings, constant_values=value)

    return build


def concat(axis: int) -> Builder:
    def build(rng: np.random.Generator) -> Callable[..., Any]:
        import tensorflow as tf

        return lambda *xs: tf.concat(list(xs), axis=axis)

    return build


def shape_reshape(gather: bool) -> Builder:
    """Flatten with a run-time batch: SHAPE -> STRIDED_SLICE (or GATHER) -> PACK -> RESHAPE."""

    def build(rng: np.random.Generator) -> Callable[..., Any]:
        import tensorflow as tf

        def f(x):
            n = tf.gather(tf.shape(x), 0) if gather else tf.shape(x)[0]
            return tf.reshape(x, tf.stack([n, -1]))

        return f

    return build


def resize(method: str, size: tuple[int, int], align_corners: bool, half_pixel_centers: bool) -> Builder:
    def build(rng: np.random.Generator) -> Callable[..., Any]:
        import tensorflow as tf

        fn = tf.compat.v1.image.resize_nearest_neighbor if method == "nearest" else tf.compat.v1.image.resize_bilinear
        return lambda x: fn(x, size, align_corners=align_corners, half_pixel_centers=half_pixel_centers)

    return build


def pool(kind: str, size: tuple[int, int], strides: tuple[int, int], padding: str) -> Builder:
    def build(rng: np.random.Generator) -> Callable[..., Any]:
        import tensorflow as tf

        fn = tf.nn.avg_pool2d if kind == "AVERAGE_POOL_2D" else tf.nn.max_pool2d
        return lambda x: fn(x, ksize=list(size), strides=list(strides), padding=padding)

    return build


def softmax(beta: float = 1.0) -> Builder:
    def build(rng: np.random.Generator) -> Callable[..., Any]:
        import tensorflow as tf

        if beta == 1.0:
            return lambda x: tf.nn.softmax(x)
        return lambda x: tf.nn.softmax(x * beta)

    return build


def set_softmax_beta(beta: float) -> Callable[[bytes], bytes]:
    """A patch overwriting the beta of every SOFTMAX in place (the converter only emits beta 1).

    The converter turns softmax(beta * x) into MUL + SOFTMAX(beta=1), so a SOFTMAX with another
    beta (valid TFLite, produced by other tools) is made by rewriting the 4-byte float field.
    """

    def patch(model_bytes: bytes) -> bytes:
        import tflite

        data = bytearray(model_bytes)
        model = tflite.Model.GetRootAsModel(data, 0)
        subgraph = model.Subgraphs(0)
        for i in range(subgraph.OperatorsLength()):
            op = subgraph.Operators(i)
            if _op_name(model, op) != "SOFTMAX":
                continue
            options = _options_table(op, tflite.SoftmaxOptions)
            field_offset = options._tab.Offset(4)  # vtable slot of `beta`
            if field_offset == 0:
                raise ModelCheckError("SOFTMAX options store no beta field to overwrite")
            struct.pack_into("<f", data, options._tab.Pos + field_offset, beta)
        return bytes(data)

    return patch


def logistic() -> Builder:
    def build(rng: np.random.Generator) -> Callable[..., Any]:
        import tensorflow as tf

        return lambda x: tf.sigmoid(x)

    return build


def reshape(shape: tuple[int, ...]) -> Builder:
    def build(rng: np.random.Generator) -> Callable[..., Any]:
        import tensorflow as tf

        return lambda x: tf.reshape(x, shape)

    return build


def pad(paddings: tuple[tuple[int, int], ...]) -> Builder:
    def build(rng: np.random.Generator) -> Callable[..., Any]:
        import tensorflow as tf

        return lambda x: tf.pad(x, [list(p) for p in paddings])

    return build


def transpose(perm: tuple[int, ...]) -> Builder:
    def build(rng: np.random.Generator) -> Callable[..., Any]:
        import tensorflow as tf

        return lambda x: tf.transpose(x, perm=list(perm))

    return build


def pad_then(kind: str, paddings: tuple[tuple[int, int], ...], strides: tuple[int, int]) -> Builder:
    """tf.pad, then a 3x3 VALID convolution (kind "CONV_2D") or depthwise convolution (RELU6)."""

    def build(rng: np.random.Generator) -> Callable[..., Any]:
        import tensorflow as tf

        cin = 6
        if kind == "CONV_2D":
            w, b = _weights(rng, (3, 3, cin, 8), 9 * cin), _bias(rng, 8)
        else:
            w, b = _weights(rng, (3, 3, cin, 1), 9), _bias(rng, cin)

        def model(x: Any) -> Any:
            padded = tf.pad(x, [list(p) for p in paddings])
            if kind == "CONV_2D":
                y = tf.nn.conv2d(padded, w, [1, *strides, 1], "VALID")
            else:
                y = tf.nn.depthwise_conv2d(padded, w, [1, *strides, 1], "VALID")
            return tf.nn.relu6(tf.nn.bias_add(y, b))

        return model

    return build


def chain() -> Builder:
    """conv 3x3 s2 RELU6 -> depthwise 3x3 RELU6 -> conv 1x1 -> ADD residual -> MEAN -> FC -> SOFTMAX."""

    def build(rng: np.random.Generator) -> Callable[..., Any]:
        import tensorflow as tf

        w1, b1 = _weights(rng, (3, 3, 3, 8), 27), _bias(rng, 8)
        wd, bd = _weights(rng, (3, 3, 8, 1), 9), _bias(rng, 8)
        w2, b2 = _weights(rng, (1, 1, 8, 8), 8), _bias(rng, 8)
        wf, bf = _weights(rng, (8, 5), 8), _bias(rng, 5)

        def model(x: Any) -> Any:
            a = tf.nn.relu6(tf.nn.bias_add(tf.nn.conv2d(x, w1, [1, 2, 2, 1], "SAME"), b1))
            d = tf.nn.relu6(tf.nn.bias_add(tf.nn.depthwise_conv2d(a, wd, [1, 1, 1, 1], "SAME"), bd))
            p = tf.nn.bias_add(tf.nn.conv2d(d, w2, [1, 1, 1, 1], "VALID"), b2)
            r = a + p
            m = tf.reduce_mean(r, axis=[1, 2])
            return tf.nn.softmax(tf.matmul(m, wf) + bf)

        return model

    return build


def two_in_two_out() -> Builder:
    """in0 -> conv 3x3 s2 RELU -> (max pool 2x2 -> out0, MEAN -> FC) ; in1 -> FC ; ADD -> out1."""

    def build(rng: np.random.Generator) -> Callable[..., Any]:
        import tensorflow as tf

        w1, b1 = _weights(rng, (3, 3, 3, 8), 27), _bias(rng, 8)
        wa, ba = _weights(rng, (8, 4), 8), _bias(rng, 4)
        wb, bb = _weights(rng, (10, 4), 10), _bias(rng, 4)

        def model(x0: Any, x1: Any) -> Any:
            a = tf.nn.relu(tf.nn.bias_add(tf.nn.conv2d(x0, w1, [1, 2, 2, 1], "SAME"), b1))
            out0 = tf.nn.max_pool2d(a, 2, 2, "VALID")
            m = tf.reduce_mean(a, axis=[1, 2])
            out1 = (tf.matmul(m, wa) + ba) + (tf.matmul(x1, wb) + bb)
            return out0, out1

        return model

    return build


def conv_then_pool() -> Builder:
    """A 3x3 SAME conv followed by a 2x2 average pool: a small body between QUANTIZE/DEQUANTIZE."""

    def build(rng: np.random.Generator) -> Callable[..., Any]:
        import tensorflow as tf

        w, b = _weights(rng, (3, 3, 3, 4), 27), _bias(rng, 4)

        def model(x: Any) -> Any:
            y = tf.nn.relu(tf.nn.bias_add(tf.nn.conv2d(x, w, [1, 1, 1, 1], "SAME"), b))
            return tf.nn.avg_pool2d(y, 2, 2, "VALID")

        return model

    return build


# --------------------------------------------------------------------------- the models


def _conv_models() -> list[OpModel]:
    specs = [
        # name, kernel, out, padding, strides, dilation, activation, input shape
        ("conv2d_3x3_same_s1_relu", (3, 3), 8, "SAME", (1, 1), (1, 1), "RELU", (1, 9, 7, 4)),
        ("conv2d_3x3_valid_s1_none", (3, 3), 8, "VALID", (1, 1), (1, 1), "NONE", (1, 9, 7, 4)),
        ("conv2d_3x3_same_s2_relu6", (3, 3), 8, "SAME", (2, 2), (1, 1), "RELU6", (1, 9, 7, 4)),
        ("conv2d_3x3_same_s2_even_relu6", (3, 3), 8, "SAME", (2, 2), (1, 1), "RELU6", (1, 8, 10, 4)),
        ("conv2d_3x3_valid_s2_none", (3, 3), 8, "VALID", (2, 2), (1, 1), "NONE", (1, 9, 7, 4)),
        ("conv2d_3x3_same_s1x2_relu", (3, 3), 8, "SAME", (1, 2), (1, 1), "RELU", (1, 7, 9, 4)),
        ("conv2d_3x3_same_dil2_relu", (3, 3), 8, "SAME", (1, 1), (2, 2), "RELU", (1, 9, 7, 4)),
        ("conv2d_3x3_valid_dil2_none", (3, 3), 8, "VALID", (1, 1), (2, 2), "NONE", (1, 9, 8, 4)),
        ("conv2d_1x1_valid_s1_none", (1, 1), 16, "VALID", (1, 1), (1, 1), "NONE", (1, 5, 6, 8)),
        ("conv2d_1x1_same_s2_relu", (1, 1), 8, "SAME", (2, 2), (1, 1), "RELU", (1, 7, 5, 8)),
        ("conv2d_5x3_same_s1_relu6", (5, 3), 8, "SAME", (1, 1), (1, 1), "RELU6", (1, 9, 7, 3)),
        ("conv2d_5x3_valid_s2_none", (5, 3), 8, "VALID", (2, 2), (1, 1), "NONE", (1, 11, 8, 3)),
        ("conv2d_3x3_same_s2_cin1_relu6", (3, 3), 8, "SAME", (2, 2), (1, 1), "RELU6", (1, 12, 10, 1)),
    ]
    models = []
    for name, kernel, out, padding, strides, dilation, activation, shape in specs:
        models.append(
            OpModel(
                name=name,
                op="CONV_2D",
                inputs=(InputSpec(shape),),
                build=conv2d(kernel, out, padding, strides, dilation, activation, in_channels=shape[3]),
                ops=("CONV_2D",),
                expect={
                    "padding": padding,
                    "stride_h": strides[0],
                    "stride_w": strides[1],
                    "dilation_h": dilation[0],
                    "dilation_w": dilation[1],
                    "activation": activation,
                    "kernel_hw": list(kernel),
                },
            )
        )
    models.append(
        OpModel(
            name="conv2d_3x3_same_s1_per_tensor_relu",
            op="CONV_2D",
            inputs=(InputSpec((1, 9, 7, 4)),),
            build=conv2d((3, 3), 8, "SAME", activation="RELU", in_channels=4),
            ops=("CONV_2D",),
            expect={"padding": "SAME", "activation": "RELU", "per_channel_weights": False},
            per_tensor=True,
            note="per-tensor weights (converter._experimental_disable_per_channel), as in older models",
        )
    )
    return models


def _depthwise_models() -> list[OpModel]:
    specs = [
        # name, kernel, multiplier, padding, strides, dilation, activation, input shape
        ("depthwise_3x3_same_s1_m1_relu6", (3, 3), 1, "SAME", (1, 1), (1, 1), "RELU6", (1, 9, 7, 6)),
        ("depthwise_3x3_valid_s1_m1_none", (3, 3), 1, "VALID", (1, 1), (1, 1), "NONE", (1, 9, 7, 6)),
        ("depthwise_3x3_same_s2_m1_relu6", (3, 3), 1, "SAME", (2, 2), (1, 1), "RELU6", (1, 9, 7, 6)),
        ("depthwise_3x3_same_s2_even_m1_relu6", (3, 3), 1, "SAME", (2, 2), (1, 1), "RELU6", (1, 8, 8, 6)),
        ("depthwise_3x3_valid_s2_m1_none", (3, 3), 1, "VALID", (2, 2), (1, 1), "NONE", (1, 10, 8, 6)),
        ("depthwise_3x3_same_s1_m2_none", (3, 3), 2, "SAME", (1, 1), (1, 1), "NONE", (1, 7, 6, 4)),
        ("depthwise_3x3_valid_s2_m2_relu", (3, 3), 2, "VALID", (2, 2), (1, 1), "RELU", (1, 9, 7, 4)),
        ("depthwise_3x3_same_dil2_m1_relu6", (3, 3), 1, "SAME", (1, 1), (2, 2), "RELU6", (1, 9, 7, 6)),
        ("depthwise_3x3_valid_dil2_m1_none", (3, 3), 1, "VALID", (1, 1), (2, 2), "NONE", (1, 9, 8, 6)),
        ("depthwise_5x3_same_s1_m1_none", (5, 3), 1, "SAME", (1, 1), (1, 1), "NONE", (1, 9, 7, 6)),
        # 5x5 and 7x7 (the DSP target's kh x kw ring kernel): both strides, SAME and VALID, odd
        # widths, channels not a multiple of 4, more than 255 channels (7x7 past 255 channels is
        # over the size limit of these files: tests/test_depthwise_k.py builds it)
        ("depthwise_5x5_same_s1_m1_relu6", (5, 5), 1, "SAME", (1, 1), (1, 1), "RELU6", (1, 11, 9, 6)),
        ("depthwise_5x5_valid_s2_m1_none", (5, 5), 1, "VALID", (2, 2), (1, 1), "NONE", (1, 13, 11, 5)),
        ("depthwise_5x5_same_s2_even_m1_relu6", (5, 5), 1, "SAME", (2, 2), (1, 1), "RELU6", (1, 12, 12, 12)),
        ("depthwise_5x5_same_s1_m1_c260_none", (5, 5), 1, "SAME", (1, 1), (1, 1), "NONE", (1, 5, 7, 260)),
        ("depthwise_7x7_same_s1_m1_relu6", (7, 7), 1, "SAME", (1, 1), (1, 1), "RELU6", (1, 10, 11, 8)),
        ("depthwise_7x7_valid_s1_m1_none", (7, 7), 1, "VALID", (1, 1), (1, 1), "NONE", (1, 12, 13, 6)),
        ("depthwise_7x7_same_s2_m1_relu6", (7, 7), 1, "SAME", (2, 2), (1, 1), "RELU6", (1, 15, 13, 7)),
        ("depthwise_7x7_valid_s2_m1_none", (7, 7), 1, "VALID", (2, 2), (1, 1), "NONE", (1, 16, 17, 4)),
    ]
    models = []
    for name, kernel, multiplier, padding, strides, dilation, activation, shape in specs:
        models.append(
            OpModel(
                name=name,
                op="DEPTHWISE_CONV_2D",
                inputs=(InputSpec(shape),),
                build=depthwise(kernel, multiplier, padding, strides, dilation, activation, in_channels=shape[3]),
                ops=("DEPTHWISE_CONV_2D",),
                expect={
                    "padding": padding,
                    "stride_h": strides[0],
                    "stride_w": strides[1],
                    "dilation_h": dilation[0],
                    "dilation_w": dilation[1],
                    "activation": activation,
                    "depth_multiplier": multiplier,
                    "kernel_hw": list(kernel),
                },
            )
        )
    models.append(
        OpModel(
            name="depthwise_3x3_same_s1_m1_per_tensor_relu6",
            op="DEPTHWISE_CONV_2D",
            inputs=(InputSpec((1, 9, 7, 6)),),
            build=depthwise((3, 3), 1, "SAME", activation="RELU6", in_channels=6),
            ops=("DEPTHWISE_CONV_2D",),
            expect={"padding": "SAME", "activation": "RELU6", "per_channel_weights": False},
            per_tensor=True,
            note="per-tensor weights (converter._experimental_disable_per_channel), as in older models",
        )
    )
    return models


def _fully_connected_models() -> list[OpModel]:
    return [
        OpModel(
            "fully_connected_bias_none",
            "FULLY_CONNECTED",
            (InputSpec((1, 24)),),
            fully_connected(24, 10),
            ("FULLY_CONNECTED",),
            {"activation": "NONE", "has_bias": True, "per_channel_weights": False},
            per_tensor_fc=True,
        ),
        OpModel(
            "fully_connected_nobias_none",
            "FULLY_CONNECTED",
            (InputSpec((1, 24)),),
            fully_connected(24, 10, bias=False),
            ("FULLY_CONNECTED",),
            {"activation": "NONE", "has_bias": False, "per_channel_weights": False},
            per_tensor_fc=True,
        ),
        OpModel(
            "fully_connected_bias_relu",
            "FULLY_CONNECTED",
            (InputSpec((1, 24)),),
            fully_connected(24, 10, activation="RELU"),
            ("FULLY_CONNECTED",),
            {"activation": "RELU", "has_bias": True, "per_channel_weights": False},
            per_tensor_fc=True,
        ),
        OpModel(
            "fully_connected_batch3_bias_none",
            "FULLY_CONNECTED",
            (InputSpec((3, 24)),),
            fully_connected(24, 10),
            ("FULLY_CONNECTED",),
            {"activation": "NONE", "has_bias": True, "per_channel_weights": False},
            per_tensor_fc=True,
        ),
        OpModel(
            "fully_connected_per_channel_bias_none",
            "FULLY_CONNECTED",
            (InputSpec((1, 24)),),
            fully_connected(24, 10),
            ("FULLY_CONNECTED",),
            {"activation": "NONE", "has_bias": True, "per_channel_weights": True},
            note="TensorFlow 2.21's default quantisation of FULLY_CONNECTED weights: per channel",
        ),
        # classifier heads with few units on a long input (the DSP kernel reads the input
        # directly instead of unpacking it): an odd unit count and a depth not a multiple of 4
        OpModel("fully_connected_head3_depth1001", "FULLY_CONNECTED", (InputSpec((1, 1001)),), fully_connected(1001, 3),
                ("FULLY_CONNECTED",), {"activation": "NONE", "has_bias": True, "per_channel_weights": True}),
        OpModel("fully_connected_head4_depth500_relu", "FULLY_CONNECTED", (InputSpec((1, 500)),),
                fully_connected(500, 4, activation="RELU"), ("FULLY_CONNECTED",),
                {"activation": "RELU", "has_bias": True, "per_channel_weights": True}),
    ]


def _elementwise_models() -> list[OpModel]:
    big, small = (1, 4, 4, 8), (1, 1, 1, 8)
    two = (InputSpec(big, -1.0, 1.0), InputSpec(big, -3.0, 2.0))
    broadcast = (InputSpec(big, -1.0, 1.0), InputSpec(small, -2.0, 3.0))
    return [
        OpModel("add_same_none", "ADD", two, binary("ADD"), ("ADD",), {"activation": "NONE"}),
        OpModel("add_same_relu", "ADD", two, binary("ADD", "RELU"), ("ADD",), {"activation": "RELU"}),
        OpModel("add_broadcast_none", "ADD", broadcast, binary("ADD"), ("ADD",), {"activation": "NONE"}),
        OpModel(
            "add_const_broadcast_none",
            "ADD",
            (InputSpec(big),),
            binary("ADD", constant_shape=(8,)),
            ("ADD",),
            {"activation": "NONE"},
        ),
        OpModel("mul_same_none", "MUL", two, binary("MUL"), ("MUL",), {"activation": "NONE"}),
        OpModel("mul_broadcast_none", "MUL", broadcast, binary("MUL"), ("MUL",), {"activation": "NONE"}),
    ]


def _reduce_and_pool_models() -> list[OpModel]:
    models = [
        OpModel(
            "mean_hw_keepdims",
            "MEAN",
            (InputSpec((1, 5, 7, 8)),),
            mean((1, 2), True),
            ("MEAN",),
            {"keep_dims": True, "axes": [1, 2]},
        ),
        OpModel(
            "mean_hw_nokeepdims",
            "MEAN",
            (InputSpec((1, 5, 7, 8)),),
            mean((1, 2), False),
            ("MEAN",),
            {"keep_dims": False, "axes": [1, 2]},
        ),
        OpModel(
            "mean_c_keepdims",
            "MEAN",
            (InputSpec((1, 5, 7, 8)),),
            mean((3,), True),
            ("MEAN",),
            {"keep_dims": True, "axes": [3]},
        ),
        OpModel(
            "mean_w_nokeepdims",
            "MEAN",
            (InputSpec((1, 5, 7, 8)),),
            mean((2,), False),
            ("MEAN",),
            {"keep_dims": False, "axes": [2]},
        ),
    ]
    models += [
        OpModel("mean_hc_keepdims", "MEAN", (InputSpec((1, 5, 7, 8)),), mean((1, 3), True), ("MEAN",),
                {"keep_dims": True, "axes": [1, 3]}),
        OpModel("mean_nhwc_all_nokeepdims", "MEAN", (InputSpec((2, 3, 4, 5)),), mean((0, 1, 2, 3), False), ("MEAN",),
                {"keep_dims": False, "axes": [0, 1, 2, 3]}),
        OpModel("mean_rank3_last", "MEAN", (InputSpec((1, 6, 10)),), mean((2,), False), ("MEAN",),
                {"keep_dims": False, "axes": [2]}),
        OpModel("transpose_nchw_mean_w_then_h", "MEAN", (InputSpec((1, 3, 5, 16)),), transpose_then_means((0, 3, 1, 2), (3, 2)),
                ("TRANSPOSE", "MEAN", "MEAN"), {"keep_dims": False, "axes": [3]}),
        OpModel("mean_h_then_w_se", "MEAN", (InputSpec((1, 6, 4, 12)),), transpose_then_means((0, 1, 2, 3), (2, 1)),
                ("MEAN", "MEAN"), {"keep_dims": False, "axes": [2]},
                note="the squeeze-excite pattern of TinyEngine's mcunetv2: MEAN over W, then over H (no TRANSPOSE: identity perm is dropped)"),
        OpModel("transpose_unit_axes", "TRANSPOSE", (InputSpec((1, 2, 5, 8)),), transpose_then_means((0, 2, 1, 3), ()),
                ("TRANSPOSE",), {"perm": [0, 2, 1, 3]}, patch=io_shapes((1, 1, 5, 8), (1, 5, 1, 8)),
                note="[1, 2, 5, 8] converted, then patched to [1, 1, 5, 8] -> [1, 5, 1, 8] (the converter makes a "
                     "size-1 transpose a RESHAPE itself): moves only a size-1 axis, mcugen makes it a view"),
    ]
    pools = [
        ("2x2_s2_valid", (2, 2), (2, 2), "VALID"),
        ("3x3_s1_same", (3, 3), (1, 1), "SAME"),
        ("3x3_s2_same", (3, 3), (2, 2), "SAME"),
    ]
    for kind, prefix in (("AVERAGE_POOL_2D", "avgpool"), ("MAX_POOL_2D", "maxpool")):
        for suffix, size, strides, padding in pools:
            models.append(
                OpModel(
                    f"{prefix}_{suffix}",
                    kind,
                    (InputSpec((1, 9, 7, 8)),),
                    pool(kind, size, strides, padding),
                    (kind,),
                    {
                        "padding": padding,
                        "filter_h": size[0],
                        "filter_w": size[1],
                        "stride_h": strides[0],
                        "stride_w": strides[1],
                        "activation": "NONE",
                    },
                )
            )
    return models


def _activation_and_layout_models() -> list[OpModel]:
    return [
        OpModel(
            "softmax_beta1",
            "SOFTMAX",
            (InputSpec((1, 10), -4.0, 4.0),),
            softmax(),
            ("SOFTMAX",),
            {"beta": 1.0},
        ),
        OpModel(
            "softmax_beta0p5",
            "SOFTMAX",
            (InputSpec((1, 10), -4.0, 4.0),),
            softmax(),
            ("SOFTMAX",),
            {"beta": 0.5},
            patch=set_softmax_beta(0.5),
            note="beta written into the flatbuffer after conversion (the converter emits MUL + SOFTMAX(beta=1))",
        ),
        OpModel(
            "softmax_beta1_rank4",
            "SOFTMAX",
            (InputSpec((1, 2, 3, 10), -4.0, 4.0),),
            softmax(),
            ("SOFTMAX",),
            {"beta": 1.0},
        ),
        OpModel(
            "logistic",
            "LOGISTIC",
            (InputSpec((1, 40), -6.0, 6.0),),
            logistic(),
            ("LOGISTIC",),
            {},
        ),
        OpModel(
            "reshape_4d_to_2d",
            "RESHAPE",
            (InputSpec((1, 4, 4, 8)),),
            reshape((1, 128)),
            ("RESHAPE",),
            {"new_shape": [1, 128]},
        ),
        OpModel(
            "pad_hw",
            "PAD",
            (InputSpec((1, 5, 6, 8)),),
            pad(((0, 0), (1, 2), (2, 1), (0, 0))),
            ("PAD",),
            {"paddings": [[0, 0], [1, 2], [2, 1], [0, 0]]},
        ),
        OpModel(
            "pad_all_dims",
            "PAD",
            (InputSpec((1, 4, 3, 5)),),
            pad(((0, 1), (1, 0), (0, 2), (3, 1))),
            ("PAD",),
            {"paddings": [[0, 1], [1, 0], [0, 2], [3, 1]]},
        ),
        OpModel(
            "pad_then_conv2d_s2",
            "PAD",
            (InputSpec((1, 8, 8, 6)),),
            pad_then("CONV_2D", ((0, 0), (1, 1), (1, 1), (0, 0)), (2, 2)),
            ("PAD", "CONV_2D"),
            {"paddings": [[0, 0], [1, 1], [1, 1], [0, 0]]},
            note="PAD feeding a VALID stride-2 conv (not foldable into SAME): a PAD-folding case",
        ),
        OpModel(
            "pad_then_depthwise_s2",
            "PAD",
            (InputSpec((1, 8, 8, 6)),),
            pad_then("DEPTHWISE_CONV_2D", ((0, 0), (1, 1), (1, 1), (0, 0)), (2, 2)),
            ("PAD", "DEPTHWISE_CONV_2D"),
            {"paddings": [[0, 0], [1, 1], [1, 1], [0, 0]]},
            note="PAD feeding a VALID stride-2 depthwise conv (not foldable into SAME)",
        ),
        OpModel(
            "transpose_0312",
            "TRANSPOSE",
            (InputSpec((1, 4, 5, 6)),),
            transpose((0, 3, 1, 2)),
            ("TRANSPOSE",),
            {"perm": [0, 3, 1, 2]},
        ),
        OpModel(
            "transpose_0213",
            "TRANSPOSE",
            (InputSpec((1, 4, 5, 6)),),
            transpose((0, 2, 1, 3)),
            ("TRANSPOSE",),
            {"perm": [0, 2, 1, 3]},
        ),
    ]


def _quantize_models() -> list[OpModel]:
    body = ("CONV_2D", "AVERAGE_POOL_2D")
    shape = (InputSpec((1, 6, 6, 3)),)
    return [
        OpModel(
            "quantize_float_input",
            "QUANTIZE",
            shape,
            conv_then_pool(),
            ("QUANTIZE", *body),
            {"input_dtype": "float32", "output_dtype": "int8"},
            input_type="float32",
        ),
        OpModel(
            "dequantize_float_output",
            "DEQUANTIZE",
            shape,
            conv_then_pool(),
            (*body, "DEQUANTIZE"),
            {"input_dtype": "int8", "output_dtype": "float32"},
            output_type="float32",
        ),
        OpModel(
            "quantize_dequantize_float_io",
            "QUANTIZE",
            shape,
            conv_then_pool(),
            ("QUANTIZE", *body, "DEQUANTIZE"),
            {"input_dtype": "float32", "output_dtype": "int8"},
            io_type="float32",
        ),
        OpModel(
            "quantize_uint8_io",
            "QUANTIZE",
            shape,
            conv_then_pool(),
            ("QUANTIZE", *body, "QUANTIZE"),
            {"input_dtype": "uint8", "output_dtype": "int8"},
            io_type="uint8",
        ),
        OpModel(
            "quantize_uint8_input_64x64",
            "QUANTIZE",
            (InputSpec((1, 64, 64, 3)),),
            conv_then_pool(),
            ("QUANTIZE", *body),
            {"input_dtype": "uint8", "output_dtype": "int8"},
            input_type="uint8",
            note="a camera-sized uint8 input: its QUANTIZE (scale ratio 1) is measured in instructions per element on the M4",
        ),
    ]


def _shape_and_resize_models() -> list[OpModel]:
    models = [
        OpModel("shape_slice_pack_reshape", "SHAPE", (InputSpec((1, 4, 3, 5)),), shape_reshape(False),
                ("SHAPE", "STRIDED_SLICE", "PACK", "RESHAPE"), {}, dynamic_batch=True, patch=static_output_shape((1, 60)),
                note="a flatten with a run-time batch; mcugen folds the shape arithmetic at generation time"),
        OpModel("shape_gather_pack_reshape", "GATHER", (InputSpec((1, 4, 3, 5)),), shape_reshape(True),
                ("SHAPE", "GATHER", "PACK", "RESHAPE"), {}, dynamic_batch=True, patch=static_output_shape((1, 60))),
    ]
    for method, op in (("nearest", "RESIZE_NEAREST_NEIGHBOR"), ("bilinear", "RESIZE_BILINEAR")):
        for tag, size, ac, hp in (
            ("2x", (8, 10), False, False),
            ("up_align_corners", (7, 9), True, False),
            ("up_half_pixel", (7, 13), False, True),
            ("down_half_pixel", (3, 4), False, True),
        ):
            models.append(OpModel(f"resize_{method}_{tag}", op, (InputSpec((1, 4, 5, 6)),), resize(method, size, ac, hp), (op,),
                                  {"align_corners": ac, "half_pixel_centers": hp}))
    return models


def _concat_models() -> list[OpModel]:
    return [
        OpModel("depth_to_space_b2", "DEPTH_TO_SPACE", (InputSpec((1, 3, 4, 12)),), depth_space("d2s", 2), ("DEPTH_TO_SPACE",), {}),
        OpModel("space_to_depth_b2", "SPACE_TO_DEPTH", (InputSpec((1, 6, 4, 3)),), depth_space("s2d", 2), ("SPACE_TO_DEPTH",), {}),
        OpModel("padv2_value", "PADV2", (InputSpec((1, 4, 5, 3)),), pad_value(((0, 0), (1, 2), (2, 0), (0, 1)), 0.7), ("PADV2",), {}),
        OpModel("relu_op", "RELU", (InputSpec((1, 5, 6, 7), -1.0, 3.0),), activation_op("relu"), ("RELU",), {}),
        OpModel("relu_n1_to_1_op", "RELU_N1_TO_1", (InputSpec((1, 5, 6, 7), -2.0, 2.0),), activation_op("relu_n1_to_1"),
                ("RELU_N1_TO_1",), {}),
        OpModel("leaky_relu_op", "LEAKY_RELU", (InputSpec((1, 5, 6, 7), -3.0, 1.0),), activation_op("leaky_relu"),
                ("LEAKY_RELU",), {}),
        OpModel("concat_axis3_same_range", "CONCATENATION", (InputSpec((1, 4, 5, 3)), InputSpec((1, 4, 5, 6))), concat(3),
                ("CONCATENATION",), {"axis": 3}),
        OpModel("concat_axis1_three_ranges", "CONCATENATION",
                (InputSpec((1, 2, 5, 4), -1.0, 1.0), InputSpec((1, 3, 5, 4), -4.0, 4.0), InputSpec((1, 1, 5, 4), 0.0, 0.5)),
                concat(1), ("CONCATENATION",), {"axis": 1},
                note="inputs drawn from different ranges: the converter gives them the output's quantization"),
        OpModel("concat_rank2_axis_neg1", "CONCATENATION", (InputSpec((3, 7)), InputSpec((3, 2))), concat(-1),
                ("CONCATENATION",), {"axis": -1}),
    ]


def _refused_models() -> list[OpModel]:
    """Models mcugen refuses, to check that the message names the real reason."""
    return [
        OpModel("conv_pool_16x8", "CONV_2D", (InputSpec((1, 6, 6, 3)),), conv_then_pool(), ("CONV_2D", "AVERAGE_POOL_2D"),
                {}, io_type="int16", quantization="16x8",
                note="refused: int16 activations (16x8 quantization); the message must say so"),
        OpModel("dynamic_range_fully_connected", "FULLY_CONNECTED", (InputSpec((1, 256)),), fully_connected(256, 16),
                ("FULLY_CONNECTED",), {}, io_type="float32", quantization="dynamic",
                note="refused: dynamic-range quantization (int8 weights, float activations); the message must say so"),
    ]


def _graph_models() -> list[OpModel]:
    return [
        OpModel(
            "chain_conv_dw_conv_add_mean_fc_softmax",
            "CHAIN",
            (InputSpec((1, 12, 12, 3)),),
            chain(),
            ("CONV_2D", "DEPTHWISE_CONV_2D", "CONV_2D", "ADD", "MEAN", "FULLY_CONNECTED", "SOFTMAX"),
            {},
            per_tensor_fc=True,
        ),
        OpModel(
            "two_inputs_two_outputs",
            "MULTI_IO",
            (InputSpec((1, 8, 8, 3)), InputSpec((1, 10), -2.0, 2.0)),
            two_in_two_out(),
            ("CONV_2D", "MAX_POOL_2D", "MEAN", "FULLY_CONNECTED", "FULLY_CONNECTED", "ADD"),
            {},
            per_tensor_fc=True,
        ),
    ]


def _arg_pack_options(model: Any, subgraph: Any, op: Any, name: str, inputs: list[int], outputs: list[int]) -> dict[str, Any]:
    """The options of ARG_MAX / ARG_MIN (axis, output type), PACK (axis, count), SQUEEZE, EXPAND_DIMS."""
    import tflite

    if name in ("ARG_MAX", "ARG_MIN"):
        axis = _const_data(model, subgraph, inputs[1])
        return {"axis": None if axis is None else int(axis.reshape(-1)[0]),
                "output_type": _DTYPE_NAMES.get(subgraph.Tensors(outputs[0]).Type(), "other")}
    if name == "PACK":
        o = _options_table(op, tflite.PackOptions)
        return {"axis": int(o.Axis()), "values_count": int(o.ValuesCount())}
    if name == "SQUEEZE":
        o = _options_table(op, tflite.SqueezeOptions)
        return {"squeeze_dims": [int(d) for d in o.SqueezeDimsAsNumpy()] if o.SqueezeDimsLength() else []}
    axis = _const_data(model, subgraph, inputs[1])
    return {"axis": None if axis is None else int(axis.reshape(-1)[0])}


def _arg_pack_models() -> list[OpModel]:
    """ARG_MAX/ARG_MIN, SQUEEZE/EXPAND_DIMS and PACK on activations (tests/models/op_models_arg_pack.py)."""
    sys.path.insert(0, str(HERE))
    from op_models_arg_pack import arg_pack_models

    return arg_pack_models(OpModel, InputSpec, io_shapes)


def _more_models() -> list[OpModel]:
    """The models of the later operators (tests/models/op_models_more.py: this file is long enough)."""
    sys.path.insert(0, str(HERE))
    from op_models_more import more_models

    return more_models(OpModel, InputSpec, _activate)


def _tconv_models() -> list[OpModel]:
    """The TRANSPOSE_CONV models (tests/models/op_models_tconv.py)."""
    sys.path.insert(0, str(HERE))
    from op_models_tconv import tconv_models

    return tconv_models(OpModel, InputSpec, _activate)


def all_models() -> list[OpModel]:
    return (
        _conv_models()
        + _depthwise_models()
        + _fully_connected_models()
        + _elementwise_models()
        + _reduce_and_pool_models()
        + _activation_and_layout_models()
        + _quantize_models()
        + _shape_and_resize_models()
        + _concat_models()
        + _more_models()
        + _refused_models()
        + _graph_models()
        + _int16_models()
        + _arg_pack_models()
        + _tconv_models()
    )


# What TensorFlow 2.21's converter would not produce from TF ops (checked when these models
# were written; recorded in index.json).
CONVERTER_LIMITS = [
    "SOFTMAX with beta != 1: softmax(beta * x) converts to MUL + SOFTMAX(beta=1); softmax_beta0p5 "
    "has its beta rewritten in the flatbuffer after conversion",
    "FULLY_CONNECTED weights are per channel by default; per-tensor weights need "
    "converter._experimental_disable_per_channel_quantization_for_dense_layers = True "
    "(tflite-runtime 2.14 and TFLite Micro load both)",
    "tf.pad followed by a VALID convolution is folded into one SAME CONV_2D when the padding "
    "equals SAME's; PAD stays a separate op only when it differs (pad_then_conv2d_s2, "
    "pad_then_depthwise_s2 pad 1 on every side before a stride-2 VALID kernel)",
    "softmax over a non-last axis becomes TRANSPOSE + SOFTMAX + TRANSPOSE",
    "with two inputs and two outputs the converter reverses both orders in the graph "
    "(see two_inputs_two_outputs: inputs and outputs are listed in graph order)",
]


# --------------------------------------------------------------------------- conversion


def _seed(name: str) -> int:
    return zlib.crc32(name.encode("utf-8"))


def _tf_dtype(name: str) -> Any:
    import tensorflow as tf

    return {"int8": tf.int8, "uint8": tf.uint8, "float32": tf.float32, "int16": tf.int16}[name]


def convert(model: OpModel) -> bytes:
    """The model converted to a full-int8 .tflite flatbuffer (deterministic for a given TF build)."""
    import tensorflow as tf

    weights_rng = np.random.default_rng(_seed(model.name))
    fn = model.build(weights_rng)
    signature = [
        tf.TensorSpec(tuple(None if a in model.dynamic_axes else d for a, d in enumerate(
            (None, *spec.shape[1:]) if model.dynamic_batch else spec.shape)), tf.float32, name=f"input{i}")
        for i, spec in enumerate(model.inputs)
    ]
    module = tf.Module()
    module.f = tf.function(fn, input_signature=signature, autograph=False)
    concrete = module.f.get_concrete_function()

    data_rng = np.random.default_rng(_seed(model.name) + 1)
    # Samples are keyed by input name: the converter may order the graph inputs differently
    # from the function's arguments (it reverses them for two inputs).
    samples = [
        {
            f"input{i}": data_rng.uniform(spec.low, spec.high, spec.shape).astype(np.float32)
            for i, spec in enumerate(model.inputs)
        }
        for _ in range(REPRESENTATIVE_SAMPLES)
    ]

    converter = tf.lite.TFLiteConverter.from_concrete_functions([concrete], module)
    converter.optimizations = [tf.lite.Optimize.DEFAULT]
    converter.representative_dataset = lambda: iter(samples)
    converter.target_spec.supported_ops = [tf.lite.OpsSet.TFLITE_BUILTINS_INT8]
    converter.inference_input_type = _tf_dtype(model.input_type or model.io_type)
    # int32/int64 outputs (ARG_MAX indices) are the model's own: the converter keeps them
    out_type = model.output_type if model.output_type not in ("int32", "int64") else None
    converter.inference_output_type = _tf_dtype(out_type or model.io_type)
    if model.quantization == "16x8":
        converter.target_spec.supported_ops = [tf.lite.OpsSet.EXPERIMENTAL_TFLITE_BUILTINS_ACTIVATIONS_INT16_WEIGHTS_INT8]
    elif model.quantization == "dynamic":
        converter.representative_dataset = None
        converter.target_spec.supported_ops = [tf.lite.OpsSet.TFLITE_BUILTINS]
        converter.inference_input_type = converter.inference_output_type = tf.float32
    if model.per_tensor_fc:
        converter._experimental_disable_per_channel_quantization_for_dense_layers = True
    if model.per_tensor:
        converter._experimental_disable_per_channel = True
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")  # tf.lite.Interpreter's deprecation notice during calibration
        model_bytes = bytes(converter.convert())
    return model.patch(model_bytes) if model.patch else model_bytes


# --------------------------------------------------------------------------- inspection

_ACTIVATION_NAMES = {0: "NONE", 1: "RELU", 2: "RELU_N1_TO_1", 3: "RELU6", 4: "TANH", 5: "SIGN_BIT"}
_PADDING_NAMES = {0: "SAME", 1: "VALID"}
_DTYPE_NAMES = {0: "float32", 2: "int32", 3: "uint8", 4: "int64", 7: "int16", 9: "int8"}


@dataclass
class OpRecord:
    """One operator read back from a flatbuffer: its builtin name and decoded options."""

    name: str
    options: dict[str, Any]


def _op_name(model: Any, op: Any) -> str:
    import tflite

    code = model.OperatorCodes(op.OpcodeIndex())
    builtin = max(code.BuiltinCode(), code.DeprecatedBuiltinCode())
    return tflite.opcode2name(builtin)


def _const_data(model: Any, subgraph: Any, tensor_index: int) -> np.ndarray | None:
    tensor = subgraph.Tensors(tensor_index)
    buffer = model.Buffers(tensor.Buffer())
    if buffer.DataLength() == 0:
        return None
    dtype = {2: np.int32, 4: np.int64, 9: np.int8, 0: np.float32}[tensor.Type()]
    return np.frombuffer(buffer.DataAsNumpy().tobytes(), dtype=dtype).reshape(tensor.ShapeAsNumpy())


def _options_table(op: Any, options_class: Any) -> Any:
    table = op.BuiltinOptions()
    options = options_class()
    options.Init(table.Bytes, table.Pos)
    return options


def _weights_per_channel(subgraph: Any, tensor_index: int) -> bool:
    quantization = subgraph.Tensors(tensor_index).Quantization()
    return quantization is not None and quantization.ScaleLength() > 1


def describe(model_bytes: bytes) -> list[OpRecord]:
    """The operators of subgraph 0 in execution order, with the options mcugen cares about."""
    import tflite

    model = tflite.Model.GetRootAsModel(model_bytes, 0)
    subgraph = model.Subgraphs(0)
    records = []
    for i in range(subgraph.OperatorsLength()):
        op = subgraph.Operators(i)
        name = _op_name(model, op)
        inputs = [int(t) for t in op.InputsAsNumpy()]
        outputs = [int(t) for t in op.OutputsAsNumpy()]
        opts: dict[str, Any] = {}
        if name in ("CONV_2D", "DEPTHWISE_CONV_2D"):
            cls = tflite.Conv2DOptions if name == "CONV_2D" else tflite.DepthwiseConv2DOptions
            o = _options_table(op, cls)
            opts = {
                "padding": _PADDING_NAMES[o.Padding()],
                "stride_h": o.StrideH(),
                "stride_w": o.StrideW(),
                "dilation_h": o.DilationHFactor(),
                "dilation_w": o.DilationWFactor(),
                "activation": _ACTIVATION_NAMES[o.FusedActivationFunction()],
                "kernel_hw": [int(d) for d in subgraph.Tensors(inputs[1]).ShapeAsNumpy()[1:3]],
                "per_channel_weights": _weights_per_channel(subgraph, inputs[1]),
            }
            if name == "DEPTHWISE_CONV_2D":
                opts["depth_multiplier"] = o.DepthMultiplier()
        elif name == "TRANSPOSE_CONV":
            sys.path.insert(0, str(HERE))
            from op_models_tconv import transpose_conv_options

            opts = transpose_conv_options(model, subgraph, op, inputs, _ACTIVATION_NAMES)
        elif name == "FULLY_CONNECTED":
            o = _options_table(op, tflite.FullyConnectedOptions)
            opts = {
                "activation": _ACTIVATION_NAMES[o.FusedActivationFunction()],
                "keep_num_dims": bool(o.KeepNumDims()),
                "has_bias": len(inputs) > 2 and inputs[2] >= 0,
                "per_channel_weights": _weights_per_channel(subgraph, inputs[1]),
                "weights_shape": [int(d) for d in subgraph.Tensors(inputs[1]).ShapeAsNumpy()],
            }
        elif name in ("AVERAGE_POOL_2D", "MAX_POOL_2D"):
            o = _options_table(op, tflite.Pool2DOptions)
            opts = {
                "padding": _PADDING_NAMES[o.Padding()],
                "filter_h": o.FilterHeight(),
                "filter_w": o.FilterWidth(),
                "stride_h": o.StrideH(),
                "stride_w": o.StrideW(),
                "activation": _ACTIVATION_NAMES[o.FusedActivationFunction()],
            }
        elif name in ("ADD", "SUB", "MUL"):
            cls = {"ADD": tflite.AddOptions, "SUB": tflite.SubOptions, "MUL": tflite.MulOptions}[name]
            o = _options_table(op, cls)
            opts = {"activation": _ACTIVATION_NAMES[o.FusedActivationFunction()]}
        elif name == "SOFTMAX":
            opts = {"beta": float(_options_table(op, tflite.SoftmaxOptions).Beta())}
        elif name in ("MEAN", "SUM", "REDUCE_MAX"):
            axes = _const_data(model, subgraph, inputs[1])
            opts = {
                "keep_dims": bool(_options_table(op, tflite.ReducerOptions).KeepDims()),
                "axes": None if axes is None else [int(a) for a in axes.reshape(-1)],
            }
        elif name == "PAD":
            paddings = _const_data(model, subgraph, inputs[1])
            opts = {"paddings": None if paddings is None else paddings.astype(int).tolist()}
        elif name == "TRANSPOSE":
            perm = _const_data(model, subgraph, inputs[1])
            opts = {"perm": None if perm is None else [int(p) for p in perm.reshape(-1)]}
        elif name == "CONCATENATION":
            o = _options_table(op, tflite.ConcatenationOptions)
            opts = {"axis": int(o.Axis()), "activation": _ACTIVATION_NAMES.get(o.FusedActivationFunction(), "OTHER")}
        elif name in ("RESIZE_NEAREST_NEIGHBOR", "RESIZE_BILINEAR"):
            cls = tflite.ResizeNearestNeighborOptions if name == "RESIZE_NEAREST_NEIGHBOR" else tflite.ResizeBilinearOptions
            o = _options_table(op, cls)
            opts = {"align_corners": bool(o.AlignCorners()), "half_pixel_centers": bool(o.HalfPixelCenters())}
        elif name == "RESHAPE":
            opts = {"new_shape": [int(d) for d in subgraph.Tensors(outputs[0]).ShapeAsNumpy()]}
        elif name in ("QUANTIZE", "DEQUANTIZE"):
            opts = {
                "input_dtype": _DTYPE_NAMES.get(subgraph.Tensors(inputs[0]).Type(), "other"),
                "output_dtype": _DTYPE_NAMES.get(subgraph.Tensors(outputs[0]).Type(), "other"),
            }
        elif name in ("ARG_MAX", "ARG_MIN", "PACK", "SQUEEZE", "EXPAND_DIMS"):
            opts = _arg_pack_options(model, subgraph, op, name, inputs, outputs)
        records.append(OpRecord(name, opts))
    return records


def _io(model_bytes: bytes) -> tuple[list[dict[str, Any]], list[dict[str, Any]]]:
    import tflite

    model = tflite.Model.GetRootAsModel(model_bytes, 0)
    subgraph = model.Subgraphs(0)

    def entry(index: int) -> dict[str, Any]:
        tensor = subgraph.Tensors(index)
        return {
            "name": tensor.Name().decode("utf-8"),
            "shape": [int(d) for d in tensor.ShapeAsNumpy()],
            "dtype": _DTYPE_NAMES.get(tensor.Type(), "other"),
        }

    return [entry(int(i)) for i in subgraph.InputsAsNumpy()], [entry(int(i)) for i in subgraph.OutputsAsNumpy()]


class ModelCheckError(Exception):
    """The converter did not produce what a model declares."""


def check(model: OpModel, model_bytes: bytes) -> OpRecord:
    """Raise ModelCheckError unless the file has exactly the declared ops and the asked options."""
    records = describe(model_bytes)
    found = tuple(r.name for r in records)
    if found != model.ops:
        raise ModelCheckError(f"{model.name}: converter produced ops {list(found)}, expected {list(model.ops)}")
    inputs, outputs = _io(model_bytes)
    want_in = model.input_type or model.io_type
    want_out = model.output_type or model.io_type
    if any(i["dtype"] != want_in for i in inputs) or any(o["dtype"] != want_out for o in outputs):
        raise ModelCheckError(f"{model.name}: graph io dtypes {inputs} -> {outputs}, expected {want_in} -> {want_out}")
    if len(inputs) != len(model.inputs):
        raise ModelCheckError(f"{model.name}: {len(inputs)} graph inputs, expected {len(model.inputs)}")
    if model.op in found:
        target = records[found.index(model.op)]
        for key, value in model.expect.items():
            if target.options.get(key) != value:
                raise ModelCheckError(
                    f"{model.name}: {model.op} option {key}={target.options.get(key)!r}, expected {value!r}"
                )
        return target
    return OpRecord(model.op, {})


def _oracle_check(path: Path) -> tuple[list[str], bool]:
    """Names of the oracles that load the model, and whether all agree on one seeded input.

    Must run in a process where TensorFlow was not imported before tflite-runtime: then
    tflite-runtime 2.14 fails to read some models' signature defs ("vector::reserve", seen
    with two inputs and two outputs).
    """
    from mcugen.oracle import oracles_for

    oracles = oracles_for(path)
    rng = np.random.default_rng(0)
    inputs = []
    for spec in oracles[0].signature.inputs:
        if spec.dtype == np.float32:
            inputs.append(rng.uniform(-1.0, 1.0, spec.shape).astype(np.float32))
        else:
            info = np.iinfo(spec.dtype)
            inputs.append(rng.integers(info.min, info.max + 1, spec.shape, dtype=spec.dtype))
    results = [oracle.run(inputs) for oracle in oracles]
    agree = all(
        len(r) == len(results[0]) and all(np.array_equal(a, b) for a, b in zip(r, results[0])) for r in results[1:]
    )
    return [o.name for o in oracles], agree


# --------------------------------------------------------------------------- driver


def oracle_report(paths: list[Path]) -> dict[str, dict[str, Any]]:
    """Run `_oracle_check` on each file in a fresh interpreter process (no TensorFlow loaded)."""
    command = [sys.executable, str(Path(__file__).resolve()), "--oracle-report", *map(str, paths)]
    result = subprocess.run(command, capture_output=True, text=True, check=False)
    if result.returncode != 0:
        raise ModelCheckError(f"oracle check failed: {result.stderr.strip().splitlines()[-1:]}")
    return json.loads(result.stdout)


def _print_oracle_report(paths: list[str]) -> int:
    report = {}
    for name in paths:
        oracle_names, agree = _oracle_check(Path(name))
        report[Path(name).name] = {"oracles": oracle_names, "agree": agree}
    print(json.dumps(report))
    return 0


def generate(out_dir: Path, only: set[str] | None = None) -> list[dict[str, Any]]:
    """Convert, check and write every model (or those in `only`); returns the index entries."""
    out_dir.mkdir(parents=True, exist_ok=True)
    converted = []
    for model in all_models():
        if only and model.name not in only:
            continue
        model_bytes = convert(model)
        target = check(model, model_bytes)
        path = out_dir / f"{model.name}.tflite"
        path.write_bytes(model_bytes)
        converted.append((model, model_bytes, target, path))
    # Refused models (16x8, dynamic-range) are not run: mcugen only has to name why it refuses them.
    checked = [path for model, _, _, path in converted if not _is_refused(model)]
    report = oracle_report(checked) if checked else {}
    entries = []
    for model, model_bytes, target, path in converted:
        if _is_refused(model):
            report[path.name] = {"oracles": [], "agree": True}
        oracle_names, agree = report[path.name]["oracles"], report[path.name]["agree"]
        if not agree:
            raise ModelCheckError(f"{model.name}: oracles {oracle_names} disagree on a seeded input")
        inputs, outputs = _io(model_bytes)
        entry = {
            "file": path.name,
            "op": model.op,
            "options": target.options,
            "ops": list(model.ops),
            "inputs": inputs,
            "outputs": outputs,
            "oracles": oracle_names,
            "bytes": len(model_bytes),
            "sha256": hashlib.sha256(model_bytes).hexdigest(),
        }
        if model.note:
            entry["note"] = model.note
        if _is_refused(model):
            entry["refused"] = True  # mcugen must refuse it and say why (tests/test_ops_c.py)
        entries.append(entry)
        print(f"{model.name:44s} {len(model_bytes):6d} B  {' '.join(model.ops)}  [{', '.join(oracle_names)}]")
    return entries


def write_index(out_dir: Path, entries: list[dict[str, Any]]) -> None:
    import tensorflow as tf

    header = {
        "generator": "tests/models/make_op_models.py",
        "tensorflow": tf.__version__,
        "converter_limits": CONVERTER_LIMITS,
    }
    # One model per line: readable, and a regenerated model shows as a one-line diff.
    lines = [json.dumps(header, sort_keys=True)[:-1] + ', "models": [']
    lines += [" " + json.dumps(entry, sort_keys=True) + "," for entry in entries]
    lines[-1] = lines[-1].rstrip(",")
    lines.append("]}")
    text = "\n".join(lines) + "\n"
    json.loads(text)  # stays valid JSON
    (out_dir / "index.json").write_text(text)


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--out", type=Path, default=OPS_DIR, help="output folder (default: tests/models/ops)")
    parser.add_argument("--only", nargs="*", help="generate only these model names (no index.json)")
    parser.add_argument("--check", action="store_true", help="regenerate into a temp dir and compare with --out")
    parser.add_argument("--oracle-report", nargs="+", metavar="FILE", help=argparse.SUPPRESS)
    args = parser.parse_args(argv)
    if args.oracle_report:
        return _print_oracle_report(args.oracle_report)
    try:
        if args.check:
            with tempfile.TemporaryDirectory() as tmp:
                entries = generate(Path(tmp))
                write_index(Path(tmp), entries)
                names = sorted(p.name for p in Path(tmp).iterdir())
                committed = sorted(p.name for p in args.out.iterdir() if p.suffix in (".tflite", ".json"))
                differ = [
                    n
                    for n in names
                    if not (args.out / n).is_file() or (args.out / n).read_bytes() != (Path(tmp) / n).read_bytes()
                ]
                extra = sorted(set(committed) - set(names))
                if differ or extra:
                    print(f"differ from {args.out}: {differ}; not generated any more: {extra}")
                    return 1
                print(f"all {len(names)} files identical to {args.out}")
                return 0
        entries = generate(args.out, set(args.only) if args.only else None)
        if not args.only:
            write_index(args.out, entries)
    except ModelCheckError as exc:
        print(f"error: {exc}", file=sys.stderr)
        return 1
    return 0



# --------------------------------------------------------------------------- 16x8 models (int16 activations)


def _is_refused(model: OpModel) -> bool:
    """Models mcugen must refuse: dynamic-range ones, and those whose note says so."""
    return model.quantization == "dynamic" or model.note.startswith("refused")


def chain16x8() -> Builder:
    """CONV_2D -> DEPTHWISE_CONV_2D -> ADD (residual) -> RESHAPE -> FULLY_CONNECTED -> SOFTMAX."""

    def build(rng: np.random.Generator) -> Callable[..., Any]:
        import tensorflow as tf

        w1, b1 = _weights(rng, (3, 3, 3, 6), 27), _bias(rng, 6)
        w2, b2 = _weights(rng, (3, 3, 6, 1), 9), _bias(rng, 6)
        w3, b3 = _weights(rng, (4 * 4 * 6, 5), 96), _bias(rng, 5)

        def model(x: Any) -> Any:
            y = tf.nn.relu(tf.nn.bias_add(tf.nn.conv2d(x, w1, [1, 2, 2, 1], "SAME"), b1))
            z = tf.nn.bias_add(tf.nn.depthwise_conv2d(y, w2, [1, 1, 1, 1], "SAME"), b2)
            r = tf.reshape(y + z, [1, 4 * 4 * 6])
            return tf.nn.softmax(tf.matmul(r, w3) + b3)

        return model

    return build


def sixteen_by_eight(fn: Callable[..., Any]) -> Builder:
    """A weightless model written as `fn(tf, *inputs)`."""

    def build(rng: np.random.Generator) -> Callable[..., Any]:
        import tensorflow as tf

        return lambda *xs: fn(tf, *xs)

    return build


def _int16_models() -> list[OpModel]:
    """16x8 models (int16 activations, int8 weights, int64 bias) that mcugen generates."""
    q = {"quantization": "16x8", "io_type": "int16"}
    return [
        OpModel("conv16x8_3x3_same_s1_relu", "CONV_2D", (InputSpec((1, 9, 7, 4)),),
                conv2d((3, 3), 8, "SAME", activation="RELU"), ("CONV_2D",), {"padding": "SAME", "activation": "RELU"}, **q),
        OpModel("conv16x8_5x3_valid_s2_none", "CONV_2D", (InputSpec((1, 11, 8, 3), -2.0, 3.0),),
                conv2d((5, 3), 8, "VALID", strides=(2, 2), in_channels=3), ("CONV_2D",), {"stride_h": 2}, **q),
        OpModel("conv16x8_3x3_same_dil2_relu6", "CONV_2D", (InputSpec((1, 9, 7, 4)),),
                conv2d((3, 3), 8, "SAME", dilation=(2, 2), activation="RELU6"), ("CONV_2D",), {"dilation_h": 2}, **q),
        OpModel("depthwise16x8_3x3_same_s1_m1_relu6", "DEPTHWISE_CONV_2D", (InputSpec((1, 9, 7, 6)),),
                depthwise((3, 3), 1, "SAME", activation="RELU6"), ("DEPTHWISE_CONV_2D",), {"depth_multiplier": 1}, **q),
        OpModel("depthwise16x8_3x3_valid_s2_m2_none", "DEPTHWISE_CONV_2D", (InputSpec((1, 9, 7, 4), -1.0, 2.0),),
                depthwise((3, 3), 2, "VALID", strides=(2, 2), in_channels=4), ("DEPTHWISE_CONV_2D",),
                {"depth_multiplier": 2}, **q),
        OpModel("fc16x8_bias_relu", "FULLY_CONNECTED", (InputSpec((1, 32)),),
                fully_connected(32, 16, activation="RELU"), ("FULLY_CONNECTED",), {}, **q),
        OpModel("fc16x8_batch3_nobias_none", "FULLY_CONNECTED", (InputSpec((3, 24), -3.0, 1.0),),
                fully_connected(24, 10, bias=False), ("FULLY_CONNECTED",), {}, **q,
                note="refused: a 16x8 FULLY_CONNECTED without bias, where tflite-runtime and TFLite Micro differ by 1"),
        OpModel("add16x8_same_none", "ADD", (InputSpec((1, 5, 6, 8)), InputSpec((1, 5, 6, 8), -3.0, 2.0)),
                binary("ADD"), ("ADD",), {}, **q),
        OpModel("add16x8_broadcast_relu", "ADD", (InputSpec((1, 5, 6, 8), -2.0, 2.0), InputSpec((1, 1, 6, 8), -0.5, 0.25)),
                binary("ADD", "RELU"), ("ADD",), {}, **q),
        OpModel("softmax16x8", "SOFTMAX", (InputSpec((2, 10), -4.0, 4.0),), softmax(), ("SOFTMAX",), {}, **q),
        OpModel("softmax16x8_wide_range", "SOFTMAX", (InputSpec((3, 33), -30.0, 12.0),), softmax(), ("SOFTMAX",), {}, **q),
        OpModel("sub16x8_broadcast_none", "SUB", (InputSpec((1, 4, 5, 8)), InputSpec((1, 1, 5, 8), -2.0, 0.5)),
                sixteen_by_eight(lambda tf, x, y: x - y), ("SUB",), {}, **q),
        OpModel("pad16x8", "PAD", (InputSpec((1, 5, 6, 4)),), pad(((0, 0), (1, 2), (0, 3), (0, 0))), ("PAD",), {}, **q),
        OpModel("strided_slice16x8", "STRIDED_SLICE", (InputSpec((1, 7, 8, 6)),),
                sixteen_by_eight(lambda tf, x: x[:, 1:6:2, ::3, 1:5]), ("STRIDED_SLICE",), {}, **q),
        OpModel("leaky_relu16x8_same_scale", "LEAKY_RELU", (InputSpec((1, 6, 5, 8), -1.0, 2.0),),
                sixteen_by_eight(lambda tf, x: tf.nn.leaky_relu(x, alpha=0.25)), ("LEAKY_RELU",), {}, **q,
                note="input and output share the scale (the positive range is the larger): both oracles agree"),
        OpModel("leaky_relu16x8", "LEAKY_RELU", (InputSpec((1, 6, 5, 8), -2.0, 2.0),),
                sixteen_by_eight(lambda tf, x: tf.nn.leaky_relu(x, alpha=0.25)), ("LEAKY_RELU",), {}, **q,
                note="refused: tflite-runtime and TFLite Micro round its multipliers differently (36 of 65536 inputs)"),
        OpModel("chain16x8_float_io", "CHAIN", (InputSpec((1, 8, 8, 3)),), chain16x8(),
                ("QUANTIZE", "CONV_2D", "DEPTHWISE_CONV_2D", "ADD", "RESHAPE", "FULLY_CONNECTED", "SOFTMAX", "DEQUANTIZE"),
                {}, quantization="16x8", io_type="float32"),
    ]


if __name__ == "__main__":
    sys.exit(main())
