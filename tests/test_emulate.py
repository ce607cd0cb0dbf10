"""The numpy emulator equals the reference oracles bit for bit: per-op models, real models,
models built here with TensorFlow, and factory-built graphs for the error paths."""

from __future__ import annotations

import os
from pathlib import Path

import numpy as np
import pytest

from conftest import SHARED_MODELS_DIR
from mcugen import quant
from mcugen.emulate import EmulationResult, Flavor, emulate, output_size, padding_before
from mcugen.errors import McugenError, UnsupportedError
from mcugen.ir import (
    Activation,
    DType,
    ElementwiseAttrs,
    Graph,
    NoAttrs,
    Operator,
    OpType,
    Padding,
    Quant,
    Tensor,
)
from mcugen.oracle import ORACLE_TFLITE_MICRO, oracles_for
from mcugen.tflite_reader import read_tflite

SEEDS = (0, 1, 2)


def flavor_of(oracle) -> Flavor:
    """TFLite Micro's LOGISTIC is fixed point; tflite-runtime's (and LiteRT's) is a float table."""
    return Flavor.TFLM if oracle.name == ORACLE_TFLITE_MICRO else Flavor.TFLITE


def random_inputs(graph: Graph, seed: int) -> list[np.ndarray]:
    rng = np.random.default_rng(seed)
    arrays = []
    for index in graph.inputs:
        t = graph.t(index)
        if t.dtype is DType.FLOAT32:
            arrays.append(rng.uniform(-4.0, 4.0, t.shape).astype(np.float32))
        else:
            info = np.iinfo(t.dtype.numpy)
            arrays.append(rng.integers(info.min, info.max + 1, t.shape).astype(t.dtype.numpy))
    return arrays


def assert_same(got: list[np.ndarray], expected: list[np.ndarray], what: str) -> None:
    assert len(got) == len(expected), what
    for position, (g, e) in enumerate(zip(got, expected)):
        assert g.dtype == e.dtype, f"{what}: output {position} dtype {g.dtype} != {e.dtype}"
        assert g.shape == e.shape, f"{what}: output {position} shape {g.shape} != {e.shape}"
        if not np.array_equal(g, e):
            diff = np.abs(g.astype(np.float64) - e.astype(np.float64))
            pytest.fail(f"{what}: output {position} differs in {int((diff > 0).sum())} values, max {diff.max()}")


def check_against_oracles(path: Path, seeds=SEEDS, intermediates: bool = True) -> int:
    """Emulator vs every oracle that loads `path` over seeded random inputs; returns the run count.

    Intermediate tensors are compared with TFLite Micro only: tflite-runtime runs ADD in place
    and overwrites the preserved input tensor with the result.
    """
    graph = read_tflite(path)
    oracles = oracles_for(path)
    assert oracles, f"no oracle loads {path.name}"
    runs = 0
    for seed in seeds:
        inputs = random_inputs(graph, seed)
        for oracle in oracles:
            got = emulate(graph, inputs, flavor=flavor_of(oracle)).outputs
            assert_same(got, oracle.run(inputs), f"{path.name} seed {seed} vs {oracle.name}")
            runs += 1
    if intermediates:
        micro = [o for o in oracles if o.name == ORACLE_TFLITE_MICRO]
        if micro:
            inputs = random_inputs(graph, seeds[0])
            mine = emulate(graph, inputs, keep_all=True, flavor=Flavor.TFLM).tensors
            theirs = micro[0].run_all_tensors(inputs)
            assert set(mine) <= set(theirs)
            for index, value in mine.items():
                expected = theirs[index].reshape(value.shape)
                assert np.array_equal(value, expected), f"{path.name}: tensor {index} ({graph.t(index).name}) differs"
    return runs


# ---- the per-op models (tests/models/ops) --------------------------------------------------------


def test_op_model_matches_oracles(op_model):
    if op_model.refused:
        pytest.skip(f"{op_model.name} is a model mcugen refuses (its message is tested in test_ops_c.py)")
    if any(t.dtype == "int16" for t in op_model.inputs + op_model.outputs) or "16x8" in op_model.name:
        pytest.skip(f"{op_model.name} has int16 activations: the NumPy emulator models int8 only "
                    "(test_int16.py checks the generated C against both oracles)")
    assert check_against_oracles(op_model.path) == len(SEEDS) * len(op_model.oracles)


# ---- the real pretrained models (../shared/models/real) ------------------------------------------

REAL_MODELS = [
    "mlperf_tiny_ad01_int8",
    "mlperf_tiny_ic_resnet_quant",
    "mlperf_tiny_kws_ref_model",
    "mlperf_tiny_str_ww_ref_model",
    "mlperf_tiny_vww_96_int8",
    "person_detect",
    "tflm_micro_speech_quantized",
    "tflm_xtensa_mobilenet_v2_quantized_1x3x224x224",
]


def real_path(stem: str) -> Path:
    path = SHARED_MODELS_DIR / f"{stem}.tflite"
    if not path.is_file():
        pytest.skip(f"real model not available: {path} does not exist (../shared/models/real)")
    return path


@pytest.mark.parametrize("stem", REAL_MODELS)
def test_real_model_matches_oracles(stem):
    path = real_path(stem)
    assert check_against_oracles(path) >= len(SEEDS)


@pytest.mark.parametrize("stem", [s for s in REAL_MODELS if s not in ("person_detect",) and "224" not in s])
def test_real_model_stored_reference(stem):
    path = real_path(stem)
    x = np.load(SHARED_MODELS_DIR / "ref" / f"{stem}__rand_seed0_input0.npy")
    expected = np.load(SHARED_MODELS_DIR / "ref" / f"{stem}__rand_seed0_tflm_output0.npy")
    (got,) = emulate(read_tflite(path), [x]).outputs
    assert got.dtype == expected.dtype
    assert np.array_equal(got.reshape(expected.shape), expected)


@pytest.mark.parametrize("image, expected", [("person", [-113, 113]), ("no_person", [57, -57])])
def test_person_detect_stored_images(image, expected):
    # tflite-runtime refuses this model (quantized_dimension=3 bias); the stored outputs are TFLite Micro's.
    path = real_path("person_detect")
    x = np.load(SHARED_MODELS_DIR / f"person_detect_{image}_input_int8.npy")
    stored = np.load(SHARED_MODELS_DIR / f"person_detect_{image}_tflm_output_int8.npy")
    (got,) = emulate(read_tflite(path), [x]).outputs
    assert got.reshape(-1).tolist() == expected == stored.reshape(-1).tolist()


def test_mobilenet_v2_dog_is_samoyed():
    path = real_path("tflm_xtensa_mobilenet_v2_quantized_1x3x224x224")
    x = np.load(SHARED_MODELS_DIR / "tflm_xtensa_mobilenet_v2_dog_input_int8.npy")
    stored = np.load(SHARED_MODELS_DIR / "tflm_xtensa_mobilenet_v2_dog_tflm_output_int8.npy")
    (got,) = emulate(read_tflite(path), [x]).outputs
    assert np.array_equal(got.reshape(stored.shape), stored)
    flat = got.reshape(-1).astype(np.int32)
    assert int(np.argmax(flat)) == 258
    assert list(np.argsort(-flat, kind="stable")[:5]) == [258, 259, 261, 203, 279]


# ---- models built here with TensorFlow (run even without tests/models/ops) -------------------------


@pytest.fixture(scope="module")
def tf_models(tmp_path_factory) -> dict[str, Path]:
    """A few small int8 models converted here with tf.function (no Keras)."""
    os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "3")
    tf = pytest.importorskip("tensorflow")
    out = tmp_path_factory.mktemp("emulate_models")
    rng = np.random.default_rng(42)

    def const(*shape, scale=0.4):
        return tf.constant(rng.normal(0.0, scale, shape).astype(np.float32))

    def convert(name, shapes, body, io_type=tf.int8):
        @tf.function(input_signature=[tf.TensorSpec(s, tf.float32) for s in shapes])
        def fn(*xs):
            return body(*xs)

        data_rng = np.random.default_rng(0)

        def representative():
            for _ in range(32):
                yield [data_rng.uniform(-3, 3, s).astype(np.float32) for s in shapes]

        converter = tf.lite.TFLiteConverter.from_concrete_functions([fn.get_concrete_function()], fn)
        converter.optimizations = [tf.lite.Optimize.DEFAULT]
        converter.representative_dataset = representative
        converter.target_spec.supported_ops = [tf.lite.OpsSet.TFLITE_BUILTINS_INT8]
        converter.inference_input_type = io_type
        converter.inference_output_type = io_type
        path = out / f"{name}.tflite"
        path.write_bytes(converter.convert())
        return path

    w1, w2, w3 = const(3, 3, 3, 8), const(3, 3, 8, 2), const(2 * 1 * 16, 10, scale=0.2)

    def cnn(x):
        y = tf.nn.relu6(tf.nn.conv2d(x, w1, strides=2, padding="SAME"))
        y = tf.nn.depthwise_conv2d(y, w2, strides=[1, 1, 1, 1], padding="VALID")
        y = tf.nn.max_pool2d(y, 2, 2, "VALID")
        return tf.nn.softmax(tf.matmul(tf.reshape(y, [1, -1]), w3))

    c1, c2 = const(1, 1, 1, 6), const(1, 1, 2, 1, 6)

    def elementwise(x):
        y = tf.nn.relu(x * c1)
        y5 = tf.reshape(y, [1, 2, 2, 5, 6]) + c2
        return tf.reduce_mean(y, axis=[0, 1, 2, 3], keepdims=True), tf.math.sigmoid(y5)

    return {
        "cnn": convert("cnn", [(1, 11, 9, 3)], cnn),
        "elementwise": convert("elementwise", [(1, 4, 5, 6)], elementwise),
        "sigmoid": convert("sigmoid", [(1, 256)], tf.math.sigmoid),
        "uint8_io": convert("uint8_io", [(1, 6, 6, 3)], lambda x: tf.nn.conv2d(x, w1, 1, "SAME"), io_type=tf.uint8),
    }


@pytest.mark.parametrize("name", ["cnn", "elementwise", "uint8_io"])
def test_tf_built_model_matches_oracles(tf_models, name):
    assert check_against_oracles(tf_models[name]) >= len(SEEDS)


def patched_quant(path: Path, out: Path, tensor_index: int, scale: float, zero_point=None) -> Path:
    """Copy of a model with one tensor's float32 scale (and int64 zero point) overwritten in place.

    The vectors are located through the flatbuffer tables (QuantizationParameters fields
    scale = vtable slot 8, zero_point = slot 10), so only that tensor changes.
    """
    import tflite  # flatbuffer schema bindings, only to find byte offsets

    raw = bytearray(path.read_bytes())
    qp = tflite.Model.GetRootAs(raw, 0).Subgraphs(0).Tensors(tensor_index).Quantization()
    for slot, value in ((8, np.float32(scale)), (10, None if zero_point is None else np.int64(zero_point))):
        if value is None:
            continue
        field = qp._tab.Offset(slot)
        assert field, "the tensor has no such quantization vector"
        at = qp._tab.Vector(field)
        raw[at : at + value.nbytes] = value.tobytes()
    out.write_bytes(bytes(raw))
    patched = read_tflite(out).t(tensor_index)
    assert patched.quant.s == float(np.float32(scale))
    if zero_point is not None:
        assert patched.quant.zp == zero_point
    return out


def test_logistic_flavors_follow_their_oracles(tf_models, tmp_path):
    """tflite-runtime's int8 LOGISTIC (float table) and TFLite Micro's (gemmlowp fixed point)
    differ by one LSB for some input scales; each flavor reproduces its own oracle."""
    path = tf_models["sigmoid"]
    graph = read_tflite(path)
    assert [op.op for op in graph.operators] == [OpType.LOGISTIC]
    zp = graph.t(graph.inputs[0]).quant.zp
    every_value = np.arange(-128, 128)
    rng = np.random.default_rng(3)
    for _ in range(20000):
        scale = float(np.float32(10 ** rng.uniform(-3, -0.5)))
        table = quant.logistic_lut_tflite(scale, zp, 1 / 256, -128)
        fixed = quant.logistic_int8_fixed_point(every_value, quant.logistic_params(scale, zp))
        if not np.array_equal(table, fixed):
            break
    else:
        pytest.fail("no input scale found where the two LOGISTIC implementations differ")
    patched = patched_quant(path, tmp_path / "sigmoid_patched.tflite", graph.inputs[0], scale)
    x = [every_value.astype(np.int8).reshape(1, 256)]
    results = {}
    for oracle in oracles_for(patched):
        flavor = flavor_of(oracle)
        got = emulate(read_tflite(patched), x, flavor=flavor).outputs
        assert_same(got, oracle.run(x), f"LOGISTIC scale {scale} vs {oracle.name}")
        results[flavor] = got[0]
    assert set(results) == {Flavor.TFLM, Flavor.TFLITE}
    assert not np.array_equal(results[Flavor.TFLM], results[Flavor.TFLITE])


def test_requantize_with_different_scales(tf_models, tmp_path):
    """uint8 -> int8 QUANTIZE with a rescale (not just the zero-point shift of 128)."""
    path = tf_models["uint8_io"]
    graph = read_tflite(path)
    first = graph.operators[0]
    assert first.op is OpType.QUANTIZE
    target = graph.t(first.outputs[0])
    patched = patched_quant(path, tmp_path / "requant.tflite", target.index, target.quant.s * 1.37, target.quant.zp + 9)
    assert check_against_oracles(patched, intermediates=False) >= len(SEEDS)


# ---- factory-built graphs: geometry helpers and error paths ------------------------------------------


def test_same_padding_geometry():
    # (in, filter, stride, dilation) -> out, top/left padding, as ComputePaddingHeightWidth
    assert output_size(Padding.SAME, 9, 3, 2, 1) == 5
    assert padding_before(9, 3, 2, 1, 5) == 1
    assert output_size(Padding.SAME, 8, 3, 2, 1) == 4
    assert padding_before(8, 3, 2, 1, 4) == 0  # the odd total padding goes to the bottom
    assert padding_before(224, 3, 2, 1, 112) == 0
    assert padding_before(9, 3, 1, 2, 9) == 2
    assert output_size(Padding.VALID, 9, 3, 2, 1) == 4
    assert padding_before(9, 3, 2, 1, 4) == 0
    assert output_size(Padding.VALID, 9, 3, 1, 2) == 5


def q(scale: float, zp: int) -> Quant:
    return Quant(np.array([scale], dtype=np.float32), np.array([zp], dtype=np.int64))


def add_graph(dtype: DType = DType.INT8) -> Graph:
    tensors = [
        Tensor(0, "a", (1, 4), dtype, q(0.1, 0)),
        Tensor(1, "b", (1, 4), dtype, q(0.2, 3)),
        Tensor(2, "sum", (1, 4), dtype, q(0.3, -2)),
    ]
    op = Operator(0, OpType.ADD, [0, 1], [2], ElementwiseAttrs(Activation.RELU))
    return Graph("add", tensors, [op], [0, 1], [2])


def test_factory_add_by_hand():
    a = np.array([[10, -10, 127, -128]], dtype=np.int8)
    b = np.array([[3, 23, -128, 127]], dtype=np.int8)
    result = emulate(add_graph(), [a, b], keep_all=True)
    assert isinstance(result, EmulationResult)
    # real sums 1.0, -1.0+4.0, 12.7-26.2, -12.8+24.8 over scale 0.3, zp -2, RELU clamps at -2
    expected = np.clip(np.floor(np.array([1.0, 3.0, -13.5, 12.0]) / 0.3 + 0.5) - 2, -2, 127)
    assert result.outputs[0].tolist() == [expected.astype(int).tolist()]
    assert set(result.tensors) == {0, 1, 2}


def test_wrong_input_count_and_shape_are_user_errors():
    g = add_graph()
    a = np.zeros((1, 4), np.int8)
    with pytest.raises(McugenError, match="2 inputs"):
        emulate(g, [a])
    with pytest.raises(McugenError, match="values"):
        emulate(g, [a, np.zeros((1, 5), np.int8)])
    with pytest.raises(McugenError, match="range"):
        emulate(g, [a, np.full((1, 4), 300, np.int32)])


def test_unsupported_dtype_and_operator_are_reported():
    g = add_graph(DType.INT16)
    with pytest.raises(UnsupportedError, match="operator 0 \\(ADD\\)"):
        emulate(g, [np.zeros((1, 4), np.int16)] * 2)
    g = add_graph()
    g.operators[0] = Operator(0, OpType.LOGISTIC, [0], [2], NoAttrs())
    with pytest.raises(UnsupportedError, match="scale 1/256"):
        emulate(g, [np.zeros((1, 4), np.int8)] * 2)


def test_mean_with_equal_input_and_output_quantization(tf_models, tmp_path):
    """Equal input/output quantization still takes the multiplier path (no truncating division)."""
    path = tf_models["elementwise"]
    graph = read_tflite(path)
    mean = next(op for op in graph.operators if op.op is OpType.MEAN)
    x, y = graph.t(mean.inputs[0]), graph.t(mean.outputs[0])
    patched = patched_quant(path, tmp_path / "mean_equal_quant.tflite", y.index, x.quant.s, x.quant.zp)
    assert check_against_oracles(patched) >= len(SEEDS)
