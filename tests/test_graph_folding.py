"""Graph folding before the support check: shape arithmetic evaluated at generation time, a
TRANSPOSE of size-1 axes as a view, a TRANSPOSE read by a reduction moved after it, refused operators named with their reason."""

from __future__ import annotations

import numpy as np
import pytest

from helpers import OPS_DIR
from mcugen import driver
from mcugen.fold import fold_constants, moves_only_unit_axes
from mcugen.ir import OpType
from mcugen.tflite_reader import read_tflite
from mcugen.transpose_sink import sunk_perm


def test_shape_subgraph_becomes_a_constant_shape():
    g = read_tflite(OPS_DIR / "shape_slice_pack_reshape.tflite")
    assert [op.op for op in g.operators] == [OpType.SHAPE, OpType.STRIDED_SLICE, OpType.PACK, OpType.RESHAPE]
    folded = fold_constants(g)
    assert [op.op for op in folded.operators] == [OpType.RESHAPE]
    shape = folded.t(folded.operators[0].inputs[1])
    assert shape.is_const and shape.data.tolist() == [1, -1]
    assert not g.t(g.operators[0].outputs[0]).is_const  # the original graph is unchanged


def test_gather_on_a_shape_folds():
    folded = fold_constants(read_tflite(OPS_DIR / "shape_gather_pack_reshape.tflite"))
    assert [op.op for op in folded.operators] == [OpType.RESHAPE]


def test_unit_axis_transpose_is_a_view():
    assert moves_only_unit_axes((1, 1, 5, 8), (0, 2, 1, 3))
    assert not moves_only_unit_axes((1, 2, 5, 8), (0, 2, 1, 3))
    program = driver.build(OPS_DIR / "transpose_unit_axes.tflite").program
    (layer,) = program.layers
    assert layer.op == "RESHAPE" and layer.kernel is None  # in place: no code
    assert program.live_ranges == [[(0, 40)], [(0, 40)]]  # one 40-byte buffer, shared


def test_real_transpose_stays():
    program = driver.build(OPS_DIR / "transpose_0213.tflite").program
    assert [(l.op, l.kernel) for l in program.layers] == [("TRANSPOSE", "mcugen_transpose")]


def test_transpose_before_reductions_sinks_and_becomes_a_view():
    """MCUNet VWW's tail, TRANSPOSE to NCHW then MEAN over W then H: the means run on the NHWC
    tensor (over W, then H) and the transpose, left on [1, C], is a view."""
    g = read_tflite(OPS_DIR / "transpose_nchw_mean_w_then_h.tflite")
    folded = fold_constants(g)
    assert [op.op for op in folded.operators] == [OpType.MEAN, OpType.MEAN, OpType.RESHAPE]
    assert [op.attrs.axes for op in folded.operators[:2]] == [(2,), (1,)]
    assert folded.t(folded.operators[0].inputs[0]).index == g.inputs[0]
    assert [op.op for op in g.operators] == [OpType.TRANSPOSE, OpType.MEAN, OpType.MEAN]  # unchanged
    program = driver.build(OPS_DIR / "transpose_nchw_mean_w_then_h.tflite").program
    assert [(l.op, l.kernel) for l in program.layers] == [
        ("MEAN", "mcugen_reduce_block_s8"), ("MEAN", "mcugen_reduce_block_s8"), ("RESHAPE", None)]


@pytest.mark.parametrize("keep_dims", [False, True])
def test_sunk_permutation_gives_the_same_reduction(keep_dims):
    rng = np.random.default_rng(0)
    for _ in range(200):
        rank = int(rng.integers(1, 6))
        shape = tuple(int(n) for n in rng.integers(1, 5, size=rank))
        perm = tuple(int(p) for p in rng.permutation(rank))
        axes = tuple(sorted(int(a) for a in rng.choice(rank, size=int(rng.integers(1, rank + 1)), replace=False)))
        x = rng.integers(-128, 128, size=shape)
        x_axes, after = sunk_perm(perm, axes, keep_dims)
        want = np.sum(np.transpose(x, perm), axis=axes, keepdims=keep_dims)
        got = np.transpose(np.sum(x, axis=x_axes, keepdims=keep_dims), after)
        assert got.shape == want.shape and np.array_equal(got, want), (shape, perm, axes)


