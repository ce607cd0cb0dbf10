"""Graph folding before the support check: shape arithmetic evaluated at generation time, a
TRANSPOSE of size-1 axes as a view, refused operators named with their reason."""

from __future__ import annotations

from helpers import OPS_DIR
from mcugen import driver
from mcugen.fold import fold_constants, moves_only_unit_axes
from mcugen.ir import OpType
from mcugen.tflite_reader import read_tflite


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
    program = driver.build(OPS_DIR / "transpose_nchw_mean_w_then_h.tflite").program
    assert [l.op for l in program.layers] == ["TRANSPOSE", "MEAN", "MEAN"]
    assert [l.kernel for l in program.layers] == ["mcugen_transpose", "mcugen_reduce_block_s8", "mcugen_reduce_block_s8"]
