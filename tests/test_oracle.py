"""Tests of the oracles: agreement on every per-op model, exact stored outputs, selection, arena size."""

from __future__ import annotations

import sys
import types
from pathlib import Path

import numpy as np
import pytest

from mcugen import oracle
from mcugen.errors import McugenError, ToolError
from mcugen.oracle import oracles_for, tflm_arena_bytes

RANDOM_SEEDS = (0, 1, 2)
MAX_OP_MODEL_BYTES = 20_000


def random_inputs(signature: oracle.ModelSignature, seed: int) -> list[np.ndarray]:
    """Seeded inputs covering each input's whole range (floats a little beyond the calibrated [-1, 1])."""
    rng = np.random.default_rng(seed)
    inputs = []
    for spec in signature.inputs:
        if spec.dtype == np.float32:
            inputs.append(rng.uniform(-1.5, 1.5, spec.shape).astype(np.float32))
        else:
            info = np.iinfo(spec.dtype)
            inputs.append(rng.integers(info.min, info.max, spec.shape, dtype=spec.dtype, endpoint=True))
    return inputs


# --------------------------------------------------------------------------- per-op models


def test_op_models_are_indexed(op_models):
    names = {m.name for m in op_models}
    on_disk = {p.stem for p in op_models[0].path.parent.glob("*.tflite")}
    assert names == on_disk
    covered = {op for m in op_models for op in m.ops}
    for op in (
        "CONV_2D", "DEPTHWISE_CONV_2D", "FULLY_CONNECTED", "ADD", "MUL", "MEAN", "AVERAGE_POOL_2D",
        "MAX_POOL_2D", "SOFTMAX", "LOGISTIC", "RESHAPE", "PAD", "TRANSPOSE", "QUANTIZE", "DEQUANTIZE",
    ):  # fmt: skip
        assert op in covered, op


def test_op_model_file_matches_index(op_model):
    """The committed file has exactly the operators index.json lists, and is small."""
    import tflite

    data = op_model.path.read_bytes()
    assert len(data) < MAX_OP_MODEL_BYTES
    model = tflite.Model.GetRootAsModel(data, 0)
    subgraph = model.Subgraphs(0)
    names = []
    for i in range(subgraph.OperatorsLength()):
        code = model.OperatorCodes(subgraph.Operators(i).OpcodeIndex())
        names.append(tflite.opcode2name(max(code.BuiltinCode(), code.DeprecatedBuiltinCode())))
    assert tuple(names) == op_model.ops
    signature = oracle.read_signature(data, op_model.path)
    assert [(s.shape, s.dtype.name) for s in signature.inputs] == [(i.shape, i.dtype) for i in op_model.inputs]
    assert [(s.shape, s.dtype.name) for s in signature.outputs] == [(o.shape, o.dtype) for o in op_model.outputs]


def test_op_model_oracles_agree(op_model):
    """tflite-runtime (reference kernels) and TFLite Micro give identical outputs on 3 random inputs."""
    if op_model.refused:
        pytest.skip(f"{op_model.name} is a model mcugen refuses (its message is tested in test_ops_c.py)")
    if len(op_model.oracles) == 1:
        # one interpreter lacks the kernel (TFLite Micro: RELU_N1_TO_1, GATHER on int32;
        # tflite-runtime 2.14: DEPTH_TO_SPACE's int8 version): the other is the oracle
        pytest.skip(f"{op_model.name}: only {op_model.oracles[0]} loads it")
    oracles = oracles_for(op_model.path)
    assert [o.name for o in oracles] == ["tflite-runtime-ref", "tflite-micro"]
    assert tuple(o.name for o in oracles) == op_model.oracles
    for seed in RANDOM_SEEDS:
        inputs = random_inputs(oracles[0].signature, seed)
        reference, micro = (o.run(inputs) for o in oracles)
        assert len(reference) == len(micro) == len(op_model.outputs)
        for position, (a, b, info) in enumerate(zip(reference, micro, op_model.outputs)):
            assert a.shape == info.shape and a.dtype.name == info.dtype
            assert b.shape == a.shape and b.dtype == a.dtype
            assert np.array_equal(a, b), f"{op_model.name} output {position} differs for seed {seed}"


def test_outputs_depend_on_inputs(op_models):
    """Guards the agreement test against a degenerate model: different inputs, different outputs."""
    path = _op_model_path(op_models, "chain_conv_dw_conv_add_mean_fc_softmax")
    for single in oracles_for(path):
        first, second = (single.run(random_inputs(single.signature, seed))[0] for seed in (0, 1))
        assert not np.array_equal(first, second)


def _op_model_path(op_models, name: str) -> Path:
    return next(m.path for m in op_models if m.name == name)


def test_run_all_tensors_agree_and_contain_outputs(op_models):
    path = _op_model_path(op_models, "chain_conv_dw_conv_add_mean_fc_softmax")
    reference, micro = oracles_for(path)
    inputs = random_inputs(reference.signature, 0)
    all_reference = reference.run_all_tensors(inputs)
    all_micro = micro.run_all_tensors(inputs)
    assert set(all_micro) == set(range(reference.signature.num_tensors))
    # tflite-runtime runs ADD in place: the conv output feeding it (tensor 12) is overwritten
    # by the ADD result (tensor 13) even with preserve_all_tensors, so it is left out.
    assert set(all_micro) - set(all_reference) == {12}
    for index in all_reference:
        assert np.array_equal(all_reference[index], all_micro[index]), f"tensor {index} differs"
    outputs = reference.run(inputs)
    for spec, expected in zip(reference.signature.outputs, outputs):
        assert np.array_equal(all_reference[spec.tensor_index], expected)
    for spec, given in zip(reference.signature.inputs, inputs):
        assert np.array_equal(all_reference[spec.tensor_index], given)


def test_multi_io_inputs_and_outputs_in_graph_order(op_models):
    """The converter reversed both orders; the oracles follow the graph, not the Python function."""
    path = _op_model_path(op_models, "two_inputs_two_outputs")
    oracles = oracles_for(path)
    shapes_in = [s.shape for s in oracles[0].signature.inputs]
    assert shapes_in == [(1, 10), (1, 8, 8, 3)]
    inputs = random_inputs(oracles[0].signature, 5)
    results = [o.run(inputs) for o in oracles]
    assert [r.shape for r in results[0]] == [(1, 4), (1, 2, 2, 8)]
    for a, b in zip(*results):
        assert np.array_equal(a, b)


def test_inputs_and_outputs_are_copies(op_models):
    path = _op_model_path(op_models, "add_same_relu")
    for single in oracles_for(path):
        inputs = random_inputs(single.signature, 3)
        kept = [x.copy() for x in inputs]
        first = single.run(inputs)
        assert all(np.array_equal(a, b) for a, b in zip(inputs, kept))  # inputs untouched
        expected = [y.copy() for y in first]
        first[0][...] = 0
        inputs[0][...] = 0
        again = single.run(kept)
        assert np.array_equal(again[0], expected[0]), single.name  # no state, no aliasing


def test_wrong_inputs_raise_tool_error(op_models):
    path = _op_model_path(op_models, "add_same_none")
    for single in oracles_for(path):
        good = random_inputs(single.signature, 0)
        with pytest.raises(ToolError, match="got 1 inputs .* which has 2"):
            single.run(good[:1])
        with pytest.raises(ToolError, match="expects int8"):
            single.run([good[0].astype(np.uint8), good[1]])
        with pytest.raises(ToolError, match=r"expects int8\[1, 4, 4, 8\]"):
            single.run([good[0].reshape(1, 16, 8), good[1]])


# --------------------------------------------------------------------------- real models

REAL_CASES = [
    ("person_detect.tflite", "person_detect_person_input_int8.npy", "person_detect_person_tflm_output_int8.npy"),
    ("person_detect.tflite", "person_detect_no_person_input_int8.npy", "person_detect_no_person_tflm_output_int8.npy"),
    (
        "tflm_xtensa_mobilenet_v2_quantized_1x3x224x224.tflite",
        "tflm_xtensa_mobilenet_v2_dog_input_int8.npy",
        "tflm_xtensa_mobilenet_v2_dog_tflm_output_int8.npy",
    ),
] + [
    (f"{stem}.tflite", f"ref/{stem}__rand_seed0_input0.npy", f"ref/{stem}__rand_seed0_tflm_output0.npy")
    for stem in (
        "mlperf_tiny_ad01_int8",
        "mlperf_tiny_ic_resnet_quant",
        "mlperf_tiny_kws_ref_model",
        "mlperf_tiny_str_ww_ref_model",
        "mlperf_tiny_vww_96_int8",
        "tflm_micro_speech_quantized",
    )
]


@pytest.mark.parametrize("model_file, input_file, expected_file", REAL_CASES, ids=[c[1] for c in REAL_CASES])
def test_real_model_gives_stored_output(shared_models_dir, model_file, input_file, expected_file):
    x = np.load(shared_models_dir / input_file)
    expected = np.load(shared_models_dir / expected_file)
    oracles = oracles_for(shared_models_dir / model_file)
    refused_by_tflite_runtime = model_file == "person_detect.tflite"
    expected_names = ["tflite-micro"] if refused_by_tflite_runtime else ["tflite-runtime-ref", "tflite-micro"]
    assert [o.name for o in oracles] == expected_names
    for single in oracles:
        (y,) = single.run([x])
        assert y.dtype == expected.dtype and y.shape == expected.shape
        assert np.array_equal(y, expected), f"{single.name} on {input_file}"


def test_real_model_known_values(shared_models_dir):
    """The values the upstream examples document, independent of the stored arrays."""
    (person_detect,) = oracles_for(shared_models_dir / "person_detect.tflite")
    person = person_detect.run([np.load(shared_models_dir / "person_detect_person_input_int8.npy")])[0]
    nobody = person_detect.run([np.load(shared_models_dir / "person_detect_no_person_input_int8.npy")])[0]
    assert person.tolist() == [[-113, 113]]
    assert nobody.tolist() == [[57, -57]]
    micro = oracles_for(shared_models_dir / "tflm_xtensa_mobilenet_v2_quantized_1x3x224x224.tflite")[-1]
    dog = micro.run([np.load(shared_models_dir / "tflm_xtensa_mobilenet_v2_dog_input_int8.npy")])[0]
    assert int(np.argmax(dog)) == 258
    assert list(np.argsort(-dog[0].astype(np.int32), kind="stable")[:5]) == [258, 259, 261, 203, 279]


def test_tflite_runtime_refuses_person_detect(shared_models_dir):
    """The reason oracles_for falls back: tflite-runtime rejects quantized_dimension=3 on a bias."""
    path = shared_models_dir / "person_detect.tflite"
    data = path.read_bytes()
    with pytest.raises(ToolError, match="quantized_dimension"):
        oracle.ReferenceKernelOracle(path, data, oracle.read_signature(data, path))


# --------------------------------------------------------------------------- selection logic


class _RefusingInterpreter:
    """Stands in for a reference interpreter that rejects every model."""

    def __init__(self, *args, **kwargs):
        raise ValueError("refused for the test")


class _ResolverTypes:
    BUILTIN_REF = object()


def test_micro_alone_when_reference_refuses(monkeypatch, op_models):
    path = _op_model_path(op_models, "conv2d_3x3_same_s1_relu")
    refusing = ("tflite-runtime-ref", _RefusingInterpreter, _ResolverTypes)
    monkeypatch.setattr(oracle, "reference_backend", lambda: refusing)
    oracles = oracles_for(path)
    assert [o.name for o in oracles] == ["tflite-micro"]
    assert oracles[0].run(random_inputs(oracles[0].signature, 0))[0].shape == (1, 9, 7, 8)


def _hide_tflite_runtime(monkeypatch):
    # A None entry in sys.modules makes `import` raise ImportError.
    monkeypatch.setitem(sys.modules, "tflite_runtime", None)
    monkeypatch.setitem(sys.modules, "tflite_runtime.interpreter", None)


def test_litert_used_only_without_tflite_runtime(monkeypatch, op_models):
    from tflite_runtime.interpreter import Interpreter, OpResolverType

    fake_package = types.ModuleType("ai_edge_litert")
    fake_interpreter = types.ModuleType("ai_edge_litert.interpreter")
    fake_interpreter.Interpreter = Interpreter
    fake_interpreter.OpResolverType = OpResolverType
    fake_package.interpreter = fake_interpreter
    monkeypatch.setitem(sys.modules, "ai_edge_litert", fake_package)
    monkeypatch.setitem(sys.modules, "ai_edge_litert.interpreter", fake_interpreter)

    assert oracle.reference_backend()[0] == "tflite-runtime-ref"  # both importable: tflite-runtime wins
    _hide_tflite_runtime(monkeypatch)
    assert oracle.reference_backend()[0] == "litert-ref"

    path = _op_model_path(op_models, "depthwise_3x3_same_s1_m2_none")
    oracles = oracles_for(path)
    assert [o.name for o in oracles] == ["litert-ref", "tflite-micro"]
    inputs = random_inputs(oracles[0].signature, 1)
    assert np.array_equal(oracles[0].run(inputs)[0], oracles[1].run(inputs)[0])


def test_micro_alone_when_no_reference_interpreter_installed(monkeypatch, op_models):
    _hide_tflite_runtime(monkeypatch)
    monkeypatch.setitem(sys.modules, "ai_edge_litert", None)
    monkeypatch.setitem(sys.modules, "ai_edge_litert.interpreter", None)
    assert oracle.reference_backend() is None
    assert [o.name for o in oracles_for(_op_model_path(op_models, "logistic"))] == ["tflite-micro"]


def test_module_without_builtin_ref_is_not_a_backend(monkeypatch):
    _hide_tflite_runtime(monkeypatch)
    fake = types.ModuleType("ai_edge_litert.interpreter")
    fake.Interpreter = object  # no OpResolverType
    monkeypatch.setitem(sys.modules, "ai_edge_litert", types.ModuleType("ai_edge_litert"))
    monkeypatch.setitem(sys.modules, "ai_edge_litert.interpreter", fake)
    assert oracle.reference_backend() is None


def _with_custom_op(source: Path, destination: Path) -> Path:
    """A copy of `source` whose operator is turned into an unknown CUSTOM op (both runtimes refuse it)."""
    import flatbuffers
    from tflite_micro.tensorflow.lite.micro.python import schema_py_generated as schema

    model = schema.ModelT.InitFromObj(schema.Model.GetRootAsModel(source.read_bytes(), 0))
    model.operatorCodes[0].builtinCode = schema.BuiltinOperator.CUSTOM
    model.operatorCodes[0].deprecatedBuiltinCode = schema.BuiltinOperator.CUSTOM
    model.operatorCodes[0].customCode = "McugenNoSuchOp"
    builder = flatbuffers.Builder(1024)
    builder.Finish(model.Pack(builder), file_identifier=b"TFL3")
    destination.write_bytes(bytes(builder.Output()))
    return destination


def test_tool_error_when_no_oracle_loads(tmp_path, op_models):
    path = _with_custom_op(_op_model_path(op_models, "logistic"), tmp_path / "custom.tflite")
    with pytest.raises(ToolError) as caught:
        oracles_for(path)
    message = str(caught.value)
    assert "\n" not in message
    assert message.startswith("no oracle can run custom.tflite")
    assert "tflite-runtime-ref cannot load" in message and "tflite-micro cannot load" in message
    assert "McugenNoSuchOp" in message


def test_tool_error_on_unreadable_files(tmp_path):
    with pytest.raises(ToolError, match="cannot read"):
        oracles_for(tmp_path / "missing.tflite")
    garbage = tmp_path / "garbage.tflite"
    garbage.write_bytes(b"\x00not a flatbuffer\x00" * 3)
    with pytest.raises(McugenError):
        oracles_for(garbage)


# --------------------------------------------------------------------------- arena size


def test_tflm_arena_bytes_is_the_minimum_that_loads_and_runs(op_models):
    """On a small conv model: the returned size loads and runs, one byte less does not load."""
    from tflite_micro.python.tflite_micro import runtime

    path = _op_model_path(op_models, "conv2d_3x3_same_s1_relu")
    need = tflm_arena_bytes(path)
    assert isinstance(need, int)
    # input 1x9x7x4 and output 1x9x7x8 int8 are live together, plus TFLite Micro's own structures
    assert need >= 9 * 7 * 4 + 9 * 7 * 8
    assert need < 16_384
    data = path.read_bytes()
    (reference,) = [o for o in oracles_for(path) if o.name == "tflite-runtime-ref"]
    inputs = random_inputs(reference.signature, 0)
    with oracle._captured_stderr():
        interpreter = runtime.Interpreter.from_bytes(data, arena_size=need)
        with pytest.raises(RuntimeError):
            runtime.Interpreter.from_bytes(data, arena_size=need - 1)
    interpreter.set_input(inputs[0], 0)
    interpreter.invoke()
    assert np.array_equal(interpreter.get_output(0), reference.run(inputs)[0])


# Measured with tflite_micro==0.dev20261023182759 (requirements.lock): the minimum arena with
# which its interpreter loads each model. A tflite-micro upgrade may move these by a few bytes.
REAL_ARENA_BYTES = {
    "person_detect.tflite": 85_264,
    "mlperf_tiny_vww_96_int8.tflite": 103_672,
    "mlperf_tiny_ad01_int8.tflite": 4_632,
    "mlperf_tiny_ic_resnet_quant.tflite": 55_984,
    "mlperf_tiny_kws_ref_model.tflite": 24_272,
    "mlperf_tiny_str_ww_ref_model.tflite": 16_640,
    "tflm_micro_speech_quantized.tflite": 7_584,
    "tflm_xtensa_mobilenet_v2_quantized_1x3x224x224.tflite": 2_607_160,
}


@pytest.mark.parametrize("model_file", sorted(REAL_ARENA_BYTES))
def test_tflm_arena_bytes_real_models(shared_models_dir, model_file):
    assert tflm_arena_bytes(shared_models_dir / model_file) == REAL_ARENA_BYTES[model_file]


def test_run_all_tensors_real_model(shared_models_dir):
    """ResNet-8: every tensor both oracles give is equal; only inputs of the in-place ADDs are missing."""
    import tflite

    path = shared_models_dir / "mlperf_tiny_ic_resnet_quant.tflite"
    reference, micro = oracles_for(path)
    x = np.load(shared_models_dir / "ref" / "mlperf_tiny_ic_resnet_quant__rand_seed0_input0.npy")
    all_reference = reference.run_all_tensors([x])
    all_micro = micro.run_all_tensors([x])
    assert set(all_micro) == set(range(micro.signature.num_tensors))
    missing = set(all_micro) - set(all_reference)
    model = tflite.Model.GetRootAsModel(path.read_bytes(), 0)
    subgraph = model.Subgraphs(0)
    add_inputs = set()
    for i in range(subgraph.OperatorsLength()):
        op = subgraph.Operators(i)
        code = model.OperatorCodes(op.OpcodeIndex())
        if tflite.opcode2name(max(code.BuiltinCode(), code.DeprecatedBuiltinCode())) == "ADD":
            add_inputs.update(int(t) for t in op.InputsAsNumpy())
    assert missing and missing <= add_inputs
    for index, value in all_reference.items():
        assert np.array_equal(value, all_micro[index]), f"tensor {index} differs"


def test_tflite_runtime_loaded_before_tensorflow(op_models):
    """Importing mcugen.oracle loads tflite-runtime, so a later `import tensorflow` does not break it."""
    import subprocess

    path = _op_model_path(op_models, "two_inputs_two_outputs")
    script = (
        "import mcugen.oracle as o, tensorflow, sys\n"
        f"print(','.join(x.name for x in o.oracles_for({str(path)!r})))\n"
    )
    result = subprocess.run([sys.executable, "-c", script], capture_output=True, text=True, timeout=120)
    assert result.returncode == 0, result.stderr[-2000:]
    assert result.stdout.strip().splitlines()[-1] == "tflite-runtime-ref,tflite-micro"
