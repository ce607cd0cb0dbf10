"""Per-op test models of TRANSPOSE_CONV (tf.nn.conv2d_transpose), for make_op_models.py."""

from __future__ import annotations

import struct
from typing import Any, Callable

import numpy as np


def transpose_conv(kernel: tuple[int, int], in_channels: int, out_channels: int, padding: str,
                   strides: tuple[int, int], input_shape: tuple[int, ...], out_hw: tuple[int, int],
                   bias: bool, activation: str, activate: Callable[[Any, str], Any]):
    """tf.nn.conv2d_transpose of the input to [batch, *out_hw, out_channels] (then bias and the activation)."""

    def build(rng: np.random.Generator) -> Callable[..., Any]:
        import tensorflow as tf

        fan_in = kernel[0] * kernel[1] * in_channels
        w = tf.constant((rng.standard_normal((*kernel, out_channels, in_channels)) / np.sqrt(fan_in)).astype(np.float32))
        b = tf.constant((0.2 * rng.standard_normal(out_channels)).astype(np.float32))
        out_shape = [input_shape[0], *out_hw, out_channels]

        def model(x: Any) -> Any:
            y = tf.nn.conv2d_transpose(x, w, out_shape, strides=[1, *strides, 1], padding=padding)
            if bias:
                y = tf.nn.bias_add(y, b)
            return activate(y, activation)

        return model

    return build


def output_zero_point(zero_point: int) -> Callable[[bytes], bytes]:
    """Rewrite the graph output's zero point (int64, in place): with a RELU fused into the op and the
    converter's [0, max] output range the clamp never bites; at zero point 0 it clamps half the values."""

    def patch(model_bytes: bytes) -> bytes:
        import tflite

        data = bytearray(model_bytes)
        sg = tflite.Model.GetRootAsModel(data, 0).Subgraphs(0)
        q = sg.Tensors(int(sg.OutputsAsNumpy()[0])).Quantization()
        assert q.ZeroPointLength() == 1
        start = q._tab.Vector(q._tab.Offset(10))  # QuantizationParameters.zero_point is field 3
        struct.pack_into("<q", data, start, zero_point)
        return bytes(data)

    return patch


def transpose_conv_options(model: Any, subgraph: Any, op: Any, inputs: list[int], activation_names: dict) -> dict:
    """The options make_op_models.describe records for a TRANSPOSE_CONV (inputs: output_shape, weights, data, bias)."""
    import tflite

    table = op.BuiltinOptions()
    o = tflite.TransposeConvOptions()
    o.Init(table.Bytes, table.Pos)
    w = subgraph.Tensors(inputs[1])
    q = w.Quantization()
    return {
        "padding": {0: "SAME", 1: "VALID"}[o.Padding()],
        "stride_h": o.StrideH(),
        "stride_w": o.StrideW(),
        "activation": activation_names.get(o.FusedActivationFunction(), "OTHER"),
        "kernel_hw": [int(d) for d in w.ShapeAsNumpy()[1:3]],
        "per_channel_weights": q is not None and q.ScaleLength() > 1,
        "has_bias": len(inputs) > 3 and inputs[3] >= 0,
    }


def tconv_models(OpModel, InputSpec, activate) -> list:  # noqa: N803 (the classes of make_op_models)
    specs = [
        # name, kernel, in/out channels, padding, strides, input shape, output H x W, bias, activation
        ("transpose_conv_3x3_s2_same_bias", (3, 3), 4, 6, "SAME", (2, 2), (1, 5, 4, 4), (10, 8), True, "NONE"),
        ("transpose_conv_3x3_s2_same_odd_out", (3, 3), 4, 5, "SAME", (2, 2), (1, 5, 4, 4), (9, 7), True, "NONE"),
        ("transpose_conv_3x3_s1_valid_nobias", (3, 3), 4, 5, "VALID", (1, 1), (1, 5, 4, 4), (7, 6), False, "NONE"),
        ("transpose_conv_3x3_s1_same_c16", (3, 3), 16, 12, "SAME", (1, 1), (1, 6, 5, 16), (6, 5), True, "NONE"),
        ("transpose_conv_2x2_s2_valid_bias", (2, 2), 3, 6, "VALID", (2, 2), (1, 4, 5, 3), (8, 10), True, "NONE"),
        ("transpose_conv_2x2_s2_valid_nobias_batch2", (2, 2), 8, 3, "VALID", (2, 2), (2, 3, 4, 8), (6, 8), False, "NONE"),
        ("transpose_conv_4x4_s2_same_bias", (4, 4), 3, 7, "SAME", (2, 2), (1, 4, 5, 3), (8, 10), True, "NONE"),
        ("transpose_conv_4x4_s2_valid_nobias", (4, 4), 5, 6, "VALID", (2, 2), (1, 3, 3, 5), (8, 8), False, "NONE"),
        ("transpose_conv_3x3_s1x2_same_bias", (3, 3), 4, 6, "SAME", (1, 2), (1, 5, 4, 4), (5, 8), True, "NONE"),
        ("transpose_conv_3x3_s2_valid_relu", (3, 3), 4, 6, "VALID", (2, 2), (1, 4, 4, 4), (9, 9), True, "RELU"),
        ("transpose_conv_4x4_s2_same_relu6", (4, 4), 3, 7, "SAME", (2, 2), (1, 4, 5, 3), (8, 10), True, "RELU6"),
        ("transpose_conv_4x4_s2_same_c1_mask", (4, 4), 8, 1, "SAME", (2, 2), (1, 4, 4, 8), (8, 8), True, "NONE"),
    ]
    models = []
    for name, kernel, cin, cout, padding, strides, shape, out_hw, bias, act in specs:
        models.append(OpModel(
            name, "TRANSPOSE_CONV", (InputSpec(shape),),
            transpose_conv(kernel, cin, cout, padding, strides, shape, out_hw, bias, act, activate), ("TRANSPOSE_CONV",),
            {"padding": padding, "stride_h": strides[0], "stride_w": strides[1], "activation": act,
             "kernel_hw": list(kernel), "per_channel_weights": cout > 1, "has_bias": bias},
            note="a fused activation makes the operator version 4, which tflite-runtime 2.14 cannot load: TFLite Micro only"
            if act != "NONE" else "",
        ))
    models.append(OpModel(
        "transpose_conv_3x3_s2_same_per_tensor", "TRANSPOSE_CONV", (InputSpec((1, 4, 5, 4)),),
        transpose_conv((3, 3), 4, 6, "SAME", (2, 2), (1, 4, 5, 4), (8, 10), True, "NONE", activate), ("TRANSPOSE_CONV",),
        {"per_channel_weights": False, "has_bias": True}, per_tensor=True,
        note="per-tensor weights (converter._experimental_disable_per_channel)",
    ))
    models.append(OpModel(
        "transpose_conv_3x3_s2_same_relu_zp0", "TRANSPOSE_CONV", (InputSpec((1, 4, 4, 4)),),
        transpose_conv((3, 3), 4, 6, "SAME", (2, 2), (1, 4, 4, 4), (8, 8), True, "RELU", activate), ("TRANSPOSE_CONV",),
        {"activation": "RELU", "has_bias": True}, patch=output_zero_point(0),
        note="output zero point rewritten to 0 after conversion, so the fused RELU clamps (TFLite Micro only: version 4)",
    ))
    return models
