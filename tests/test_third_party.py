"""Published third-party int8 models (TinyEngine, TinyMaix) from $MCUGEN_THIRD_PARTY_MODELS:
bit-exact on the host against both oracles, and a fused arena no larger than the layer-by-layer
one nor half of TFLite Micro's. The files are never committed; unset, these tests skip."""

from __future__ import annotations

import pytest

from helpers import third_party_model
from mcugen import driver
from mcugen.oracle import tflm_arena_bytes
from mcugen.validate import validate

MODELS = [
    "tinyengine_vww.tflite",
    "tinyengine_mcunetv2_large.tflite",
    "tinyengine_detection.tflite",
    "tinymaix_mbnet128_0.25_q.tflite",
]


@pytest.mark.parametrize("name", MODELS)
def test_third_party_bit_exact_on_host(name):
    path = third_party_model(name)
    report = validate(path, count=3, seed=0)
    assert report.oracles and report.runs == 3
    assert report.bit_exact, f"max abs diff {report.max_abs_diff}: {report.per_run}"


@pytest.mark.parametrize("name", MODELS)
def test_third_party_bit_exact_on_cortex_m4(name):
    """One seed on the emulated M4 with the kernels specialised for its DSP extension."""
    from mcugen.validate_board import runner_kwargs

    path = third_party_model(name)
    report = validate(path, count=1, seed=0, kernels="mcugen", kernel_target="armv7em-dsp",
                      **runner_kwargs("qemu-mps2-an386"))
    assert report.target == "qemu-mps2-an386"
    assert report.bit_exact, report.per_run


# detection's float32 input (1x128x160x3, 245,760 bytes) lives in the arena, and so it does in
# TFLite Micro's (386,264 bytes): half of that is out of reach while inputs live in the arena.
FLOAT_INPUT_BOUND = {"tinyengine_detection.tflite"}


@pytest.mark.parametrize("name", MODELS)
def test_third_party_ram(name):
    path = third_party_model(name)
    gen = driver.build(path, strategy="fused")
    fused = gen.program.arena_bytes
    layerwise = driver.build(path, strategy="layerwise").program.arena_bytes
    tflm = tflm_arena_bytes(path)
    assert fused <= layerwise, (fused, layerwise)
    if name in FLOAT_INPUT_BOUND:
        float_input = sum(gen.graph.t(i).nbytes for i in gen.graph.inputs)
        assert fused == float_input and 2 * float_input > tflm, (fused, float_input, tflm)
        pytest.xfail(f"the float32 input alone ({float_input} bytes) is more than half of TFLite Micro's arena ({tflm})")
    assert 2 * fused <= tflm, (fused, tflm)


def test_shape_subgraph_is_folded():
    """TinyMaix's SHAPE -> STRIDED_SLICE -> PACK -> RESHAPE is evaluated at generation time."""
    from mcugen.fold import fold_constants
    from mcugen.ir import OpType
    from mcugen.tflite_reader import read_tflite

    g = read_tflite(third_party_model("tinymaix_mbnet128_0.25_q.tflite"))
    ops = [op.op for op in g.operators]
    assert OpType.SHAPE in ops and OpType.STRIDED_SLICE in ops and OpType.PACK in ops
    folded = fold_constants(g)
    left = [op.op for op in folded.operators]
    assert not {OpType.SHAPE, OpType.STRIDED_SLICE, OpType.PACK} & set(left)
    reshape = next(op for op in folded.operators if op.op is OpType.RESHAPE and len(op.inputs) > 1)
    shape = folded.t(reshape.inputs[1])
    assert shape.is_const and [int(v) for v in shape.data] == list(folded.t(reshape.outputs[0]).shape)
