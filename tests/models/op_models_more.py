"""Per-op test models of the later operators (SUB, MINIMUM, MAXIMUM, SQUARED_DIFFERENCE, REDUCE_MAX, ...), for make_op_models.py."""

from __future__ import annotations

from typing import Any, Callable

import numpy as np


def two_operand(kind: str, activate: Callable[[Any, str], Any], activation: str = "NONE",
                constant: np.ndarray | None = None):
    """SUB / MINIMUM / MAXIMUM / SQUARED_DIFFERENCE of two graph inputs, or of one input and `constant`."""

    def build(rng: np.random.Generator) -> Callable[..., Any]:
        import tensorflow as tf

        fn = {"SUB": tf.subtract, "MINIMUM": tf.minimum, "MAXIMUM": tf.maximum,
              "SQUARED_DIFFERENCE": tf.math.squared_difference}[kind]
        if constant is not None:
            c = tf.constant(constant.astype(np.float32))
            return lambda x: activate(fn(x, c), activation)
        return lambda x, y: activate(fn(x, y), activation)

    return build


def reduce_max(axes: tuple[int, ...], keepdims: bool):
    def build(rng: np.random.Generator) -> Callable[..., Any]:
        import tensorflow as tf

        return lambda x: tf.reduce_max(x, axis=list(axes), keepdims=keepdims)

    return build


def slicing(fn: Callable[[Any], Any]):
    """A slice of the graph input written with Python indexing or tf.slice (`fn(tf, x)`)."""

    def build(rng: np.random.Generator) -> Callable[..., Any]:
        import tensorflow as tf

        return lambda x: fn(tf, x)

    return build


def prelu(alpha_shape: tuple[int, ...]):
    """relu(x) + relu(-x) * (-alpha), the pattern the converter turns into PRELU, alpha in (-0.6, 0.9)."""

    def build(rng: np.random.Generator) -> Callable[..., Any]:
        import tensorflow as tf

        neg_alpha = tf.constant(-rng.uniform(-0.6, 0.9, alpha_shape).astype(np.float32))
        return lambda x: tf.nn.relu(x) + tf.nn.relu(-x) * neg_alpha

    return build


def more_models(OpModel, InputSpec, activate) -> list:  # noqa: N803 (the classes of make_op_models)
    big, small = (1, 4, 4, 8), (1, 1, 1, 8)
    two = (InputSpec(big, -1.0, 1.0), InputSpec(big, -3.0, 2.0))
    broadcast = (InputSpec(big, -1.0, 1.0), InputSpec(small, -2.0, 3.0))
    # zero points at the ends of the range: an all-positive and an all-negative input
    ends = (InputSpec((2, 3, 5), 0.0, 2.0), InputSpec((3, 1), -4.0, 0.0))
    rank2 = (InputSpec((3, 6), -1.0, 1.0), InputSpec((1, 6), -1.0, 1.0))
    models = []
    for kind, tag in (("SUB", "sub"), ("SQUARED_DIFFERENCE", "squared_difference")):
        acts = ("NONE", "RELU") if kind == "SUB" else ("NONE",)
        expect = (lambda a: {"activation": a}) if kind == "SUB" else (lambda a: {})
        models += [
            OpModel(f"{tag}_same_{acts[0].lower()}", kind, two, two_operand(kind, activate), (kind,), expect("NONE")),
            OpModel(f"{tag}_broadcast_{acts[-1].lower()}", kind, broadcast, two_operand(kind, activate, acts[-1]),
                    (kind,), expect(acts[-1])),
            OpModel(f"{tag}_rank3_range_ends", kind, ends, two_operand(kind, activate), (kind,), expect("NONE")),
            OpModel(f"{tag}_const_rank2", kind, (InputSpec((3, 6), -1.0, 1.0),),
                    two_operand(kind, activate, constant=np.linspace(-1.2, 0.8, 6)), (kind,), expect("NONE")),
        ]
    for kind, tag in (("MINIMUM", "minimum"), ("MAXIMUM", "maximum")):
        models += [
            OpModel(f"{tag}_same", kind, two, two_operand(kind, activate), (kind,), {}),
            OpModel(f"{tag}_broadcast", kind, broadcast, two_operand(kind, activate), (kind,), {}),
            OpModel(f"{tag}_rank2_broadcast", kind, rank2, two_operand(kind, activate), (kind,), {}),
            OpModel(f"{tag}_const", kind, (InputSpec(big, -1.0, 1.0),),
                    two_operand(kind, activate, constant=np.full((8,), 0.3)), (kind,), {}),
        ]
    for axes, keep, shape in (((1, 2), True, (1, 5, 6, 8)), ((3,), False, (1, 5, 6, 8)), ((0, 2), False, (2, 3, 7)),
                              ((1,), True, (4, 9)), ((0, 1, 2, 3), False, (1, 3, 4, 5))):
        name = f"reduce_max_{''.join(map(str, axes))}_{'keep' if keep else 'nokeep'}_rank{len(shape)}"
        models.append(OpModel(name, "REDUCE_MAX", (InputSpec(shape, -0.5, 2.0),), reduce_max(axes, keep), ("REDUCE_MAX",),
                              {"keep_dims": keep, "axes": list(axes)}))
    slices = [
        ("slice_rank4", "SLICE", (1, 6, 7, 8), lambda tf, x: tf.slice(x, [0, 1, 2, 3], [1, 3, -1, 4])),
        ("slice_rank2", "SLICE", (5, 9), lambda tf, x: tf.slice(x, [1, 2], [3, 5])),
        ("strided_slice_step2_3", "STRIDED_SLICE", (1, 7, 8, 9), lambda tf, x: x[:, 1:6:2, ::3, 2:7]),
        ("strided_slice_negative_step", "STRIDED_SLICE", (1, 5, 6, 4), lambda tf, x: x[:, ::-1, 1:5, ::-2]),
        ("strided_slice_shrink_axis", "STRIDED_SLICE", (1, 5, 6, 4), lambda tf, x: x[:, 2, :, 1:3:1]),
        ("strided_slice_rank3_negative_begin", "STRIDED_SLICE", (6, 5, 4), lambda tf, x: x[-3:, :-1:2, 1:]),
    ]
    for name, kind, shape, fn in slices:
        models.append(OpModel(name, kind, (InputSpec(shape, -1.0, 1.0),), slicing(fn), (kind,), {}))
    splits = [
        ("split_axis2_three", "SPLIT", (1, 4, 6, 5), lambda tf, x: tuple(tf.split(x, 3, axis=2))),
        ("split_axis_last_two_rank2", "SPLIT", (6, 8), lambda tf, x: tuple(tf.split(x, 2, axis=-1))),
        ("split_v_axis1_sizes", "SPLIT_V", (1, 7, 4, 3), lambda tf, x: tuple(tf.split(x, [2, 4, 1], axis=1))),
        ("split_v_axis3_inferred", "SPLIT_V", (1, 3, 4, 9), lambda tf, x: tuple(tf.split(x, [5, -1], axis=3))),
        ("unpack_axis1", "UNPACK", (2, 3, 5), lambda tf, x: tuple(tf.unstack(x, axis=1))),
        ("unpack_axis0_rank4", "UNPACK", (3, 2, 4, 2), lambda tf, x: tuple(tf.unstack(x, axis=0))),
    ]
    for name, kind, shape, fn in splits:
        models.append(OpModel(name, kind, (InputSpec(shape, -1.0, 1.0),), slicing(fn), (kind,), {}))
    for name, shape, low, high in (("tanh_op", (1, 6, 5, 8), -3.0, 3.0), ("tanh_skewed_range", (4, 33), -0.5, 4.0)):
        models.append(OpModel(name, "TANH", (InputSpec(shape, low, high),), slicing(lambda tf, x: tf.math.tanh(x)),
                              ("TANH",), {}))
    for name, shape, low, high in (("hard_swish_op", (1, 6, 5, 8), -4.0, 4.0), ("hard_swish_wide_range", (3, 47), -20.0, 60.0),
                                   ("hard_swish_positive", (2, 40), 0.0, 5.0), ("hard_swish_small_range", (2, 64), -0.5, 0.5)):
        models.append(OpModel(name, "HARD_SWISH", (InputSpec(shape, low, high),),
                              slicing(lambda tf, x: x * tf.nn.relu6(x + 3.0) / 6.0), ("HARD_SWISH",), {}))
    for name, shape, alpha_shape, low, high in (("prelu_channel_alpha", (1, 5, 4, 8), (1, 1, 8), -2.0, 1.0),
                                                ("prelu_full_alpha", (1, 4, 3, 6), (4, 3, 6), -1.0, 3.0)):
        models.append(OpModel(name, "PRELU", (InputSpec(shape, low, high),), prelu(alpha_shape), ("PRELU",), {}))
    # SUM over any axes (TFLite Micro is the oracle: tflite-runtime's reference int8 SUM is off)
    for name, shape, axes, keep, low, high in (
            ("sum_hw_keepdims", (1, 6, 5, 8), [1, 2], True, -1.0, 1.0),
            ("sum_c_nokeepdims", (1, 4, 5, 12), [3], False, -1.0, 1.0),
            ("sum_h_positive_range", (1, 5, 6, 7), [1], True, 0.0, 3.0),
            ("sum_rank2_last", (3, 40), [1], False, -2.0, 1.0)):
        models.append(OpModel(name, "SUM", (InputSpec(shape, low, high),),
                              slicing(lambda tf, x, axes=axes, keep=keep: tf.reduce_sum(x, axis=axes, keepdims=keep)),
                              ("SUM",), {}))
    # RELU6 as its own operator: an input already in [0, 6] keeps one quantization, where both
    # oracles agree (with a wider input the converter narrows the output scale, which TFLite
    # Micro ignores: the oracles disagree and this generator refuses to write such a model).
    models.append(OpModel("relu6_same_scale", "RELU6", (InputSpec((1, 6, 5, 4), 0.0, 6.0),),
                          slicing(lambda tf, x: tf.reshape(tf.nn.relu6(x), [1, 30, 4])), ("RELU6", "RESHAPE"), {}))
    return models
