"""Per-op test models of ARG_MAX / ARG_MIN, SQUEEZE / EXPAND_DIMS and PACK on activations, for make_op_models.py."""

from __future__ import annotations

from typing import Any, Callable

import numpy as np


def tf_fn(fn: Callable[..., Any]):
    """A model written as `fn(tf, *inputs)`."""

    def build(rng: np.random.Generator) -> Callable[..., Any]:
        import tensorflow as tf

        return lambda *xs: fn(tf, *xs)

    return build


def classifier_argmax(in_features: int, classes: int):
    """An image classifier whose output is the class index: FULLY_CONNECTED scores of the
    flattened image, then their ARG_MAX."""

    def build(rng: np.random.Generator) -> Callable[..., Any]:
        import tensorflow as tf

        w = tf.constant((rng.standard_normal((in_features, classes)) / np.sqrt(in_features)).astype(np.float32))
        b = tf.constant((0.2 * rng.standard_normal(classes)).astype(np.float32))
        return lambda x: tf.math.argmax(tf.matmul(tf.reshape(x, (1, in_features)), w) + b, axis=-1, output_type=tf.int32)

    return build


def arg_pack_models(OpModel, InputSpec, io_shapes) -> list:  # noqa: N803 (the classes and io_shapes of make_op_models)
    models = []
    args = [
        # name, op, shape, axis, output type
        ("arg_max_last_axis_int32", "ARG_MAX", (1, 10), -1, "int32"),
        ("arg_max_middle_axis_int64", "ARG_MAX", (1, 5, 6, 7), 2, "int64"),
        ("arg_max_axis1_int32_rank3", "ARG_MAX", (2, 9, 4), 1, "int32"),
        ("arg_max_wide_ties_int32", "ARG_MAX", (2, 300), -1, "int32"),
        ("arg_min_last_axis_int32", "ARG_MIN", (2, 3, 9), -1, "int32"),
        ("arg_min_axis1_int64", "ARG_MIN", (1, 6, 4, 3), 1, "int64"),
        ("arg_max_rank1_scalar_int32", "ARG_MAX", (12,), 0, "int32"),  # a rank-0 output
    ]
    for name, op, shape, axis, out in args:
        fn = "argmax" if op == "ARG_MAX" else "argmin"
        models.append(OpModel(
            name, op, (InputSpec(shape, -1.0, 1.0),),
            tf_fn(lambda tf, x, fn=fn, axis=axis, out=out: getattr(tf.math, fn)(x, axis=axis, output_type=getattr(tf, out))),
            (op,), {"output_type": out}, output_type=out,
            note="ties (a wide axis of int8 values) take the first index" if "ties" in name else ""))
    models.append(OpModel("fc_arg_max_classifier", "ARG_MAX", (InputSpec((1, 6, 6, 3), -1.0, 1.0),), classifier_argmax(108, 5),
                          ("RESHAPE", "FULLY_CONNECTED", "ARG_MAX"), {"output_type": "int32"}, output_type="int32",
                          note="an image classifier whose output is the class index (mcugen evaluate reads it as the prediction)"))
    # The converter turns a SQUEEZE or EXPAND_DIMS of a static shape into a RESHAPE; with two axes
    # unknown (no RESHAPE can say that) it keeps the op, and the patch writes the static shapes back.
    views = [
        ("squeeze_axis_neg2", "SQUEEZE", (1, 4, 1, 6), (0, 3), (1, 4, 6), lambda tf, x: tf.squeeze(x, axis=[-2])),
        ("squeeze_three_axes_rank5", "SQUEEZE", (1, 3, 1, 5, 1), (1, 3), (3, 5), lambda tf, x: tf.squeeze(x, axis=[0, 2, -1])),
        ("expand_dims_axis_neg1", "EXPAND_DIMS", (1, 4, 6), (0, 2), (1, 4, 6, 1), lambda tf, x: tf.expand_dims(x, -1)),
        ("expand_dims_axis1_rank2", "EXPAND_DIMS", (3, 5), (0, 1), (3, 1, 5), lambda tf, x: tf.expand_dims(x, 1)),
    ]
    for name, op, shape, unknown, out_shape, fn in views:
        models.append(OpModel(name, op, (InputSpec(shape, -1.0, 1.0),), tf_fn(fn), (op,), {}, dynamic_axes=unknown,
                              patch=io_shapes(shape, out_shape)))
    packs = [
        ("pack_axis0_two", (3, 4), 2, 0),
        ("pack_axis_last_three", (2, 5), 3, -1),
        ("pack_axis1_rank4_two", (1, 3, 4, 2), 2, 1),
    ]
    for name, shape, n, axis in packs:
        models.append(OpModel(name, "PACK", tuple(InputSpec(shape, -1.0, 1.0) for _ in range(n)),
                              tf_fn(lambda tf, *xs, axis=axis: tf.stack(list(xs), axis=axis)), ("PACK",), {}))
    return models
