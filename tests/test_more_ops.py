"""The later operators (SUB, MINIMUM, MAXIMUM, SQUARED_DIFFERENCE, REDUCE_MAX, SLICE, STRIDED_SLICE, SPLIT,
SPLIT_V, UNPACK, TANH, HARD_SWISH, PRELU): what the support check refuses, and their per-op models under
-fsanitize=address,undefined (the models are also run by test_ops_c.py, test_emulate.py, test_oracle.py
and test_new_ops_m4.py)."""

from __future__ import annotations

import dataclasses

import numpy as np
import pytest

from helpers import OPS_DIR, op_model_entries
from mcugen.errors import UnsupportedError
from mcugen.ir import OpType, Quant
from mcugen.supported import check_graph, find_blockers
from mcugen.tflite_reader import read_tflite


def _with_output_quant(name: str, scale: float, zp: int):
    g = read_tflite(OPS_DIR / name)
    out = g.outputs[0]
    t = g.t(out)
    q = Quant(np.asarray([scale], np.float32), np.asarray([zp], np.int64))
    g.tensors[out] = dataclasses.replace(t, quant=q)
    return g


@pytest.mark.parametrize("name", ["minimum_same.tflite", "maximum_broadcast.tflite"])
def test_min_max_need_one_shared_quantization(name):
    g = read_tflite(OPS_DIR / name)
    assert g.operators[0].op in (OpType.MINIMUM, OpType.MAXIMUM)
    assert find_blockers(g) == []
    o = g.t(g.outputs[0]).quant
    g = _with_output_quant(name, o.s * 2.0, int(o.zero_point[0]))
    blockers = find_blockers(g)
    assert len(blockers) == 1 and "zero point" in blockers[0].detail and "do not rescale" in blockers[0].rule
    with pytest.raises(UnsupportedError, match="share one quantization"):
        check_graph(g)


def test_squared_difference_output_multiplier_must_be_below_one():
    # an output scale so small that TFLite's Prepare would abort (multiplier >= 1): refused
    g = _with_output_quant("squared_difference_same_none.tflite", 1e-9, 0)
    blockers = find_blockers(g)
    assert len(blockers) == 1 and "outside (0, 1)" in blockers[0].detail


def test_sub_output_multiplier_must_be_below_one():
    g = _with_output_quant("sub_same_none.tflite", 1e-9, 0)
    blockers = find_blockers(g)
    assert len(blockers) == 1 and "outside (0, 1)" in blockers[0].detail


def test_reduce_max_needs_the_input_quantization_on_its_output():
    name = "reduce_max_3_nokeep_rank4.tflite"
    g = read_tflite(OPS_DIR / name)
    assert g.operators[0].op is OpType.REDUCE_MAX and find_blockers(g) == []
    o = g.t(g.outputs[0]).quant
    g = _with_output_quant(name, o.s, int(o.zero_point[0]) + 1)
    blockers = find_blockers(g)
    assert len(blockers) == 1 and "zero point" in blockers[0].detail and "do not rescale" in blockers[0].rule


def test_relu6_needs_one_quantization_in_and_out():
    """TFLite Micro's int8 RELU6 clamps in the input's scale and ignores the output's; tflite-runtime
    rescales. With one quantization both agree (relu6_same_scale); otherwise mcugen refuses."""
    check_graph(read_tflite(OPS_DIR / "relu6_same_scale.tflite"))
    g = _with_output_quant("relu6_same_scale.tflite", 0.05, -128)
    relu6 = next(op for op in g.operators if op.op is OpType.RELU6)
    relu6_out = relu6.outputs[0]
    t = g.t(relu6_out)
    g.tensors[relu6_out] = dataclasses.replace(t, quant=Quant(np.asarray([0.05], np.float32), np.asarray([-128], np.int64)))
    with pytest.raises(UnsupportedError, match="RELU6.*TFLite Micro ignores the output quantization"):
        check_graph(g)


def test_sum_is_checked_against_tflite_micro_and_says_why():
    """tflite-runtime's reference int8 SUM is off the float definition (by up to ~200 steps on
    converter models) where TFLite Micro is within 1: TFLite Micro is the oracle, and validate says why."""
    from mcugen.oracle import oracles_for
    from mcugen.validate import validate

    path = OPS_DIR / "sum_c_nokeepdims.tflite"
    assert [o.name for o in oracles_for(path)] == ["tflite-micro"]
    report = validate(path, count=2, seed=3)
    assert report.bit_exact and report.oracles == ["tflite-micro"]
    assert any("reference kernels are not used" in n and "SUM" in n for n in report.notes), report.notes


def test_split_becomes_one_slice_per_output_and_a_bad_split_is_refused():
    from mcugen.fold import fold_constants

    g = read_tflite(OPS_DIR / "split_v_axis1_sizes.tflite")
    assert [op.op for op in g.operators] == [OpType.SPLIT_V] and find_blockers(g) == []
    folded = fold_constants(g)
    assert [op.op for op in folded.operators] == [OpType.SLICE] * 3
    assert len({op.index for op in folded.operators}) == 3
    # an output whose shape is not a block of the input along the axis: refused, naming it
    out = g.operators[0].outputs[1]
    g.tensors[out] = dataclasses.replace(g.t(out), shape=(1, 3, 4, 3))
    blockers = find_blockers(g)
    assert len(blockers) == 1 and f"output tensor {out}" in blockers[0].detail and "SPLIT/SPLIT_V/UNPACK" in blockers[0].rule
    assert [op.op for op in fold_constants(g).operators] == [OpType.SPLIT_V]


SAN = ("-fsanitize=address,undefined", "-fno-sanitize-recover=all", "-fno-omit-frame-pointer", "-g")
LATER_OPS = ("SUB", "MINIMUM", "MAXIMUM", "SQUARED_DIFFERENCE", "REDUCE_MAX", "SLICE", "STRIDED_SLICE", "SPLIT",
             "SPLIT_V", "UNPACK", "TANH", "HARD_SWISH", "PRELU", "RELU6", "SUM")
LATER = [e["file"] for e in op_model_entries() if e["op"] in LATER_OPS]


def test_every_later_op_has_models():
    assert {e["op"] for e in op_model_entries() if e["file"] in LATER} == set(LATER_OPS)


@pytest.mark.parametrize("name", LATER)
def test_later_op_models_sanitized(name, tmp_path):
    from mcugen import driver
    from mcugen.oracle import oracles_for

    path = OPS_DIR / name
    gen = driver.build(path)
    exe = driver.compile_host(gen, tmp_path / "build", extra_cflags=SAN)
    runs = driver.random_inputs(gen.graph, 2, 11)
    outs = driver.run_host(exe, gen, runs, tmp_path / "io")  # a sanitizer report exits non-zero -> ToolError
    oracle = oracles_for(path)[0]
    for r, arrays in enumerate(runs):
        for a, b in zip(outs[r], oracle.run(arrays)):
            assert np.array_equal(a, b)


def test_unpack_whose_num_is_not_its_output_count_is_refused():
    # TFLite Micro writes `num` outputs (none for num <= 0); found by the fuzz campaign (UnpackOptions.Num -> -2)
    g = read_tflite(OPS_DIR / "unpack_axis1.tflite")
    assert find_blockers(g) == []
    op = g.operators[0]
    op.attrs = dataclasses.replace(op.attrs, values_count=-2)
    blockers = find_blockers(g)
    assert len(blockers) == 1 and f"has num -2 for {len(op.outputs)} outputs" in blockers[0].detail
