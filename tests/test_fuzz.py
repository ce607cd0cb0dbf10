"""Fuzz test: mutated and hostile .tflite models end with exit 0 (validate: bit-exact) or one `mcugen: error:` line."""

from __future__ import annotations

import importlib.util
import math
import os
import subprocess
import sys
import time
from pathlib import Path

import pytest

from helpers import OPS_DIR, REPO

_spec = importlib.util.spec_from_file_location("mcugen_fuzz", REPO / "benchmarks" / "fuzz.py")
fuzz = importlib.util.module_from_spec(_spec)
sys.modules["mcugen_fuzz"] = fuzz
_spec.loader.exec_module(fuzz)

import tflite  # noqa: E402

from mcugen.errors import ModelError, UnsupportedError  # noqa: E402
from mcugen.tflite_reader import read_tflite_bytes, verify_flatbuffer  # noqa: E402

CASES = 150
SEED = 20261127
VALIDATE_MAX = 30
BUDGET_SECONDS = 90

CONV = OPS_DIR / "conv2d_3x3_same_s1_relu.tflite"
SOFTMAX = OPS_DIR / "softmax_beta1.tflite"
CHAIN = OPS_DIR / "chain_conv_dw_conv_add_mean_fc_softmax.tflite"


# Failures whose cause is reported (outside the reader and support checks) and pinned by a strict
# xfail test below: the campaign lists them but does not fail on them. When a fix lands, the xfail
# test turns XPASS (a failure), and its entry here goes too.
KNOWN_BUGS: dict = {}  # both reported bugs (c_comment_text '*\\', 0-d oracle inputs) are fixed and pinned below


def known_bug(r) -> str | None:
    return next((name for name, matches in KNOWN_BUGS.items() if matches(r)), None)


def test_fuzz_campaign(tmp_path):
    """~150 seeded cases over every mutator; every one must end cleanly (see fuzz.judge)."""
    fuzz._prewarm()
    t0 = time.monotonic()
    tally = fuzz.campaign(CASES, SEED, tmp_path, validate_max=VALIDATE_MAX, timeout=60)
    seconds = time.monotonic() - t0
    report = tally.report()
    print(report)
    print(f"seconds: {seconds:.1f}")
    assert tally.cases == CASES
    assert sum(tally.outcomes.values()) == CASES
    ok = sum(v for k, v in tally.outcomes.items() if k.startswith("ok"))
    rejected = sum(v for k, v in tally.outcomes.items() if k.startswith("rejected"))
    assert ok + rejected + len(tally.failures) == CASES
    assert {m for m, _ in tally.by_mutator} >= set(fuzz.MUTATORS), "every mutator must have run"
    unknown = [r for r in tally.failures if known_bug(r) is None]
    for r in tally.failures:
        if known_bug(r):
            print(f"known bug ({known_bug(r)}): case {r.case.index}")
    assert not unknown, report
    # The campaign exercises both ends: accepted models validated bit-exact and rejected ones.
    assert 0 < tally.validated <= VALIDATE_MAX
    validated_failures = sum(1 for r in tally.failures if any(c.command == "validate" for c in r.commands))
    assert tally.outcomes["ok+bit-exact"] == tally.validated - validated_failures
    assert rejected >= CASES // 3 and ok >= 10
    assert seconds < BUDGET_SECONDS * 3, f"campaign took {seconds:.0f} s"


# ---- the judge can fail -------------------------------------------------------------------


def _result(commands, stray=()):
    case = fuzz.Case(0, "x.tflite", ["test"], b"", "x.tflite")
    r = fuzz.CaseResult(case, commands=list(commands), stray_files=list(stray))
    fuzz.judge(r, None)
    return r


def _cmd(command, code, out="", err="", cls=None, tb=None):
    return fuzz.CommandResult(command, code, out, err, cls, tb)


def test_judge_accepts_clean_outcomes():
    err = "mcugen: error: m.tflite: tensor 3 ('x') has quantization scale nan; scales must be finite and positive\n"
    r = _result([_cmd("info", 2, err=err, cls="ModelError"), _cmd("generate", 2, err=err, cls="ModelError")])
    assert r.outcome == "rejected:ModelError" and not r.failed
    rep = '{"bit_exact": true, "max_abs_diff": 0, "oracles": ["tflite-runtime-ref"]}'
    r = _result([_cmd("info", 0, "x"), _cmd("generate", 0, "x"), _cmd("validate", 0, rep)])
    assert r.outcome == "ok+bit-exact"


@pytest.mark.parametrize(
    "commands, stray, reason",
    [
        ([_cmd("info", None, tb="Traceback...\nIndexError: list index out of range")], (), "uncaught"),
        ([_cmd("info", 2, err="warning: x\nmcugen: error: y\n", cls="ModelError")], (), "not one"),
        ([_cmd("info", 2, err="mcugen: error: y\n", cls=None)], (), "without an McugenError"),
        ([_cmd("info", 0), _cmd("generate", 0), _cmd("validate", 1, "MISMATCH")], (), "MISMATCH"),
        ([_cmd("info", 0), _cmd("generate", 0), _cmd("validate", 0, '{"bit_exact": false}')], (), "report"),
        ([_cmd("info", 0), _cmd("generate", 0)], ("cwd/evil.c",), "outside"),
        ([_cmd("info", 0), _cmd("generate", 2, err="mcugen: error: x\n", cls="OutputError")], (), "disagree"),
        ([_cmd("info", 1)], (), "exit 1"),
        (
            [_cmd("info", 0), _cmd("generate", 0),
             _cmd("validate", 2, err="mcugen: error: host compilation of the generated C failed: x.c:1: error\n", cls="ToolError")],
            (),
            "generated C",
        ),
    ],
)
def test_judge_flags_failures(commands, stray, reason):
    r = _result(commands, stray)
    assert r.failed and reason in r.detail, r.detail


def test_known_bugs_match_only_their_own_symptom():
    other = _result([_cmd("info", None, tb="Traceback...\nIndexError: list index out of range")])
    assert other.failed and known_bug(other) is None
    err = "mcugen: error: host compilation of the generated C failed: m.c:1:71: error\n"
    other = _result([_cmd("info", 0), _cmd("generate", 0), _cmd("validate", 2, err=err, cls="ToolError")])
    assert other.failed and known_bug(other) is None


# ---- the structured mutations edit the flatbuffer properly -----------------------------------


def test_patcher_replaces_strings_and_vectors_in_a_valid_file():
    p = fuzz.Patcher(CONV.read_bytes())
    name = b"*/ \"q\" \n ../" + b"n" * 5000
    assert p.replace_string(p.tensors()[0]._tab, fuzz.fields_of(tflite.Tensor)["Name"].slot, name)
    t, q = p.quantized_tensors()[0]
    zp_slot = fuzz.fields_of(tflite.QuantizationParameters)["ZeroPoint"].slot
    assert p.replace_vector(q._tab, zp_slot, "q", [5])
    data = bytes(p.buf)
    assert verify_flatbuffer(data) is None
    g = read_tflite_bytes(data, "m")
    assert g.tensors[0].name == name.decode()
    assert g.tensors[fuzz._tensor_index(fuzz.Patcher(data), t)].quant.zp == 5


def _mutated(base: Path, fn) -> bytes:
    p = fuzz.Patcher(base.read_bytes())
    fn(p)
    return bytes(p.buf)


def _error(data: bytes) -> str:
    with pytest.raises((ModelError, UnsupportedError)) as e:
        read_tflite_bytes(data, "m", where="m.tflite")
    msg = str(e.value)
    assert "\n" not in msg
    return msg


def _quant(p, k=0):
    return p.quantized_tensors()[k]


@pytest.mark.parametrize("value", [math.nan, 0.0, -1.0, math.inf, -math.inf])
def test_bad_scale_names_the_tensor(value):
    def mutate(p):
        t, q = _quant(p)
        p.set_element(q._tab, fuzz.fields_of(tflite.QuantizationParameters)["Scale"].slot, "f", 0, value)

    msg = _error(_mutated(CONV, mutate))
    assert "tensor " in msg and "scale" in msg and "finite and positive" in msg


def test_zero_point_out_of_range_and_wrong_length():
    slot = fuzz.fields_of(tflite.QuantizationParameters)["ZeroPoint"].slot
    msg = _error(_mutated(CONV, lambda p: p.set_element(_quant(p)[1]._tab, slot, "q", 0, 1000)))
    assert "zero point 1000 outside the int8 range" in msg
    per_channel = [(t, q) for t, q in fuzz.Patcher(CONV.read_bytes()).quantized_tensors() if q.ScaleLength() > 1]
    assert per_channel, "the conv model has per-channel weights"

    def wrong_length(p):
        t, q = [(t, q) for t, q in p.quantized_tensors() if q.ScaleLength() > 1][0]
        p.replace_vector(q._tab, slot, "q", [0] * (q.ScaleLength() + 1))

    msg = _error(_mutated(CONV, wrong_length))
    assert "scales but" in msg and "zero points" in msg


def test_absurd_shapes_are_rejected():
    slot = fuzz.fields_of(tflite.Tensor)["Shape"].slot
    for v, what in ((-1, "dynamic shape"), (2**31 - 1, "2^31-1")):
        msg = _error(_mutated(CONV, lambda p: p.set_element(p.tensors()[0]._tab, slot, "i", 1, v)))
        assert "tensor 0" in msg and what in msg, msg
    # A dimension of 0 is legal TFLite (an LSTM's intermediates have one): the support check
    # refuses the operator that would run on it.
    msg = _unsupported(_mutated(CONV, lambda p: p.set_element(p.tensors()[0]._tab, slot, "i", 1, 0)))
    assert "uses tensor 0 of shape [1, 0," in msg and "at least one element" in msg, msg
    msg = _error(_mutated(CONV, lambda p: p.replace_vector(p.tensors()[0]._tab, slot, "i", [1] * 7)))
    assert "rank 7" in msg


def test_operator_input_out_of_range_names_the_operator():
    slot = fuzz.fields_of(tflite.Operator)["Inputs"].slot
    msg = _error(_mutated(CONV, lambda p: p.set_element(p.operators()[0]._tab, slot, "i", 1, 2**31 - 1)))
    assert "operator 0 (CONV_2D) input refers to tensor 2147483647" in msg


def test_options_of_the_wrong_type_are_rejected():
    f = fuzz.fields_of(tflite.Operator)["BuiltinOptionsType"]
    add_options = tflite.BuiltinOptions.AddOptions
    msg = _error(_mutated(CONV, lambda p: p.set_scalar(p.operators()[0]._tab, f.slot, f.fmt, add_options)))
    assert "operator 0 (CONV_2D)" in msg and "AddOptions" in msg and "Conv2DOptions" in msg
    msg = _error(_mutated(SOFTMAX, lambda p: p.set_scalar(p.operators()[0]._tab, f.slot, f.fmt, 0)))
    assert "SOFTMAX" in msg and "no options" in msg


def test_structural_damage_is_caught_before_parsing():
    """Vectors running past the end: TFLite Micro would read out of bounds (it segfaulted in validate)."""
    sg_slot = fuzz.fields_of(tflite.Model)["Subgraphs"].slot
    data = _mutated(CHAIN, lambda p: p.set_length(p.model._tab, sg_slot, 1001))
    assert "run past the end" in verify_flatbuffer(data)
    assert "corrupt TFLite flatbuffer" in _error(data)

    def long_buffer(p):
        b = [p.model.Buffers(i) for i in range(p.model.BuffersLength()) if p.model.Buffers(i).DataLength() > 0][-1]
        p.set_length(b._tab, fuzz.fields_of(tflite.Buffer)["Data"].slot, 2**32 - 1)

    assert "corrupt TFLite flatbuffer" in _error(_mutated(SOFTMAX, long_buffer))
    # an empty subgraph vector is well formed: a plain one-line error
    data = _mutated(CHAIN, lambda p: p.replace_vector(p.model._tab, sg_slot, "I", []))
    assert "no subgraph" in _error(data)


def test_every_truncation_point_of_a_small_model_is_one_line_error():
    raw = SOFTMAX.read_bytes()
    for n in range(0, len(raw), 7):
        _error(raw[:n])


# ---- real processes: nothing but one line reaches the terminal ----------------------------------


def _subprocess_models(tmp_path: Path) -> list[Path]:
    import numpy as np

    rng = np.random.default_rng(7)
    models = []
    for k, name in enumerate(("truncate", "bitflip", "hostile_name", "scale", "vector_length", "const_data")):
        case = fuzz.make_case(k, rng, [CONV, CHAIN, SOFTMAX], mutator=name)
        path = tmp_path / "models" / f"m{k}_{name}.tflite"
        path.parent.mkdir(parents=True, exist_ok=True)
        path.write_bytes(case.data)
        models.append(path)
    return models


def test_subprocess_runs_show_no_traceback(tmp_path):
    env = dict(os.environ, TF_CPP_MIN_LOG_LEVEL="3")
    cwd = tmp_path / "cwd"
    cwd.mkdir()
    ends = []
    for k, model in enumerate(_subprocess_models(tmp_path)):
        out = tmp_path / "out" / f"g{k}"
        for argv in (["info", str(model)], ["generate", str(model), "-o", str(out)]):
            r = subprocess.run(
                [sys.executable, "-m", "mcugen", *argv], capture_output=True, text=True, cwd=cwd, env=env, timeout=300
            )
            assert "Traceback" not in r.stderr + r.stdout, (model.name, r.stderr)
            assert r.returncode in (0, 2), (model.name, r.returncode, r.stderr)
            if r.returncode == 2:
                assert fuzz.ERROR_LINE.match(r.stderr), (model.name, r.stderr)
            else:
                assert not fuzz.unexpected_stderr(r.stderr), (model.name, r.stderr)
            ends.append(r.returncode)
    assert list(cwd.iterdir()) == []
    assert {p.name for p in (tmp_path / "out").iterdir()} <= {f"g{k}" for k in range(6)}
    assert 2 in ends


# ---- support checks for what the fuzzer found ------------------------------------------------


def _set_option(p, op_index: int, cls, field: str, value) -> None:
    o = p.operators()[op_index]
    table = o.BuiltinOptions()
    opts = cls()
    opts.Init(table.Bytes, table.Pos)
    f = fuzz.fields_of(cls)[field]
    assert p.set_scalar(opts._tab, f.slot, f.fmt, value), f"{cls.__name__}.{field} is not stored in the file"


def _unsupported(data: bytes) -> str:
    from mcugen.lower import lower

    g = read_tflite_bytes(data, "m", where="m.tflite")
    with pytest.raises(UnsupportedError) as e:
        lower(g)
    return str(e.value)


def test_empty_zero_point_vector_is_rejected():
    """TFLite Micro aborted (SIGABRT) or computed with a garbage zero point; mcugen assumed 0."""
    slot = fuzz.fields_of(tflite.QuantizationParameters)["ZeroPoint"].slot
    msg = _error(_mutated(OPS_DIR / "add_same_none.tflite", lambda p: p.replace_vector(_quant(p)[1]._tab, slot, "q", [])))
    assert "1 scales but 0 zero points" in msg


def test_depth_multiplier_must_match_the_shapes():
    """The reference kernels loop over the stored multiplier: validate found a mismatch of 46."""
    model = OPS_DIR / "depthwise_3x3_same_s2_m1_relu6.tflite"
    data = _mutated(model, lambda p: _set_option(p, 0, tflite.DepthwiseConv2DOptions, "DepthMultiplier", 0))
    assert "depth_multiplier 0" in _unsupported(data)


def test_window_parameters_beyond_tflite_int16_fields():
    """TFLite keeps padding in int16: a 2^30-wide SAME max-pool window was truncated to padding -1."""
    model = OPS_DIR / "maxpool_3x3_s1_same.tflite"
    data = _mutated(model, lambda p: _set_option(p, 0, tflite.Pool2DOptions, "FilterWidth", 2**30))
    assert "padding 536870911" in _unsupported(data)
    model = OPS_DIR / "conv2d_3x3_same_dil2_relu.tflite"
    data = _mutated(model, lambda p: _set_option(p, 0, tflite.Conv2DOptions, "DilationHFactor", 40000))
    assert "dilation 40000" in _unsupported(data)


def test_constant_data_input_is_rejected():
    """lower() crashed with KeyError: a MEAN reading the depthwise weights (a constant) as its input."""
    slot = fuzz.fields_of(tflite.Operator)["Inputs"].slot
    g = read_tflite_bytes(CHAIN.read_bytes(), "m")
    mean = next(op for op in g.operators if op.op.value == "MEAN")
    dw = next(op for op in g.operators if op.op.value == "DEPTHWISE_CONV_2D")
    data = _mutated(CHAIN, lambda p: p.set_element(p.operators()[mean.index]._tab, slot, "i", 0, dw.inputs[1]))
    assert f"reads constant tensor {dw.inputs[1]} as its data input" in _unsupported(data)


def test_activations_beyond_2gib_are_rejected():
    slot = fuzz.fields_of(tflite.Tensor)["Shape"].slot

    def huge(p):
        for t in p.tensors():
            if t.ShapeLength() == 4:
                p.replace_vector(t._tab, slot, "i", [1, 32768, 32768, 1])

    assert "more than 2^31-1" in _unsupported(_mutated(OPS_DIR / "transpose_0213.tflite", huge))


def test_activation_bound_beyond_int32_is_rejected_without_a_warning():
    """A denormal output scale put RELU6's bound at inf steps: numpy warned on stderr, then lower() failed."""
    model = OPS_DIR / "depthwise_3x3_same_s1_m1_relu6.tflite"
    g = read_tflite_bytes(model.read_bytes(), "m")
    out = g.operators[0].outputs[0]
    slot = fuzz.fields_of(tflite.QuantizationParameters)["Scale"].slot
    data = _mutated(model, lambda p: p.set_element(p.tensors()[out].Quantization()._tab, slot, "f", 0, 1e-45))
    import warnings

    with warnings.catch_warnings():
        warnings.simplefilter("error")
        msg = _unsupported(data)
    assert "RELU6 bound 6.0 at inf steps" in msg


def test_fully_connected_bias_scale_must_match_like_tflite():
    """mcugen generated code for FULLY_CONNECTED models both oracles refuse in Prepare (scale_diff check)."""
    model = OPS_DIR / "fully_connected_bias_none.tflite"
    g = read_tflite_bytes(model.read_bytes(), "m")
    fc = g.operators[0]
    slot = fuzz.fields_of(tflite.QuantizationParameters)["Scale"].slot
    data = _mutated(model, lambda p: p.set_element(p.tensors()[fc.inputs[2]].Quantization()._tab, slot, "f", 0, 0.5))
    assert f"bias tensor {fc.inputs[2]} has scale 0.5 but input scale x weight scale" in _unsupported(data)


def test_unknown_tensor_type_code_is_rejected():
    """TFLite refuses unknown type codes at load; mcugen accepted one on the (ignored) RESHAPE shape tensor."""
    f = fuzz.fields_of(tflite.Tensor)["Type"]
    model = OPS_DIR / "reshape_4d_to_2d.tflite"
    g = read_tflite_bytes(model.read_bytes(), "m")
    k = g.operators[0].inputs[1]
    msg = _error(_mutated(model, lambda p: p.set_scalar(p.tensors()[k]._tab, f.slot, f.fmt, -1)))
    assert f"tensor {k}" in msg and "unknown type code -1" in msg


def test_omitted_conv_bias_is_rejected():
    """A depthwise bias input of -1: tflite-runtime refuses it and TFLite Micro segfaulted in validate."""
    slot = fuzz.fields_of(tflite.Operator)["Inputs"].slot
    g = read_tflite_bytes(CHAIN.read_bytes(), "m")
    for op in g.operators:
        if op.op.value in ("CONV_2D", "DEPTHWISE_CONV_2D"):
            data = _mutated(CHAIN, lambda p: p.set_element(p.operators()[op.index]._tab, slot, "i", 2, -1))
            assert f"operator {op.index} ({op.op.value}) lists its bias input as omitted" in _unsupported(data)


def test_reshape_shape_input_must_agree_with_the_output():
    """RESHAPE's shape input -1 segfaulted TFLite Micro; the data tensor as shape made tflite-runtime fail at run time."""
    slot = fuzz.fields_of(tflite.Operator)["Inputs"].slot
    model = OPS_DIR / "reshape_4d_to_2d.tflite"
    g = read_tflite_bytes(model.read_bytes(), "m")
    x = g.operators[0].inputs[0]
    msg = _unsupported(_mutated(model, lambda p: p.set_element(p.operators()[0]._tab, slot, "i", 1, -1)))
    assert "lists its shape input as omitted (-1)" in msg
    msg = _unsupported(_mutated(model, lambda p: p.set_element(p.operators()[0]._tab, slot, "i", 1, x)))
    assert f"shape input tensor {x} is not a constant int32 vector" in msg
    k = g.operators[0].inputs[1]
    b = fuzz.Patcher(model.read_bytes()).tensors()[k].Buffer()

    def wrong_shape(p):
        start, n = p.vector(p.model.Buffers(b)._tab, fuzz.fields_of(tflite.Buffer)["Data"].slot)
        p.buf[start : start + 4] = (7).to_bytes(4, "little")

    assert f"shape input tensor {k} holds [7," in _unsupported(_mutated(model, wrong_shape))


def test_two_subgraphs_are_unsupported():
    """A well-formed model with a second subgraph (control flow) is refused as unsupported, not read partially."""
    import flatbuffers

    b = flatbuffers.Builder(256)
    subgraphs = []
    for _ in range(2):
        tflite.SubGraphStart(b)
        subgraphs.append(tflite.SubGraphEnd(b))
    tflite.ModelStartSubgraphsVector(b, 2)
    for sg in reversed(subgraphs):
        b.PrependUOffsetTRelative(sg)
    vec = b.EndVector()
    tflite.BufferStart(b)
    buf = tflite.BufferEnd(b)
    tflite.ModelStartBuffersVector(b, 1)
    b.PrependUOffsetTRelative(buf)
    bufs = b.EndVector()
    tflite.ModelStart(b)
    tflite.ModelAddVersion(b, 3)
    tflite.ModelAddSubgraphs(b, vec)
    tflite.ModelAddBuffers(b, bufs)
    b.Finish(tflite.ModelEnd(b), file_identifier=b"TFL3")
    data = bytes(b.Output())
    assert verify_flatbuffer(data) is None
    with pytest.raises(UnsupportedError, match="has 2 subgraphs"):
        read_tflite_bytes(data, "m", where="m.tflite")


def test_add_output_multiplier_outside_0_1_is_rejected():
    """An ADD output scale of 3e38 made tflite-runtime abort (SIGABRT) inside validate: 2^20 * scale is inf in float32."""
    model = OPS_DIR / "add_same_none.tflite"
    g = read_tflite_bytes(model.read_bytes(), "m")
    out = g.operators[0].outputs[0]
    slot = fuzz.fields_of(tflite.QuantizationParameters)["Scale"].slot
    for scale in (3e38, 1e-12):
        data = _mutated(model, lambda p: p.set_element(p.tensors()[out].Quantization()._tab, slot, "f", 0, scale))
        assert "TFLite's output multiplier" in _unsupported(data)


def test_model_and_tensor_names_with_star_backslash_compile(tmp_path):
    from mcugen.cli import main

    name = "star*\\back\\slash"
    slot = fuzz.fields_of(tflite.Tensor)["Name"].slot
    model = tmp_path / f"{name}.tflite"
    model.write_bytes(_mutated(OPS_DIR / "add_same_none.tflite", lambda p: [
        p.replace_string(t._tab, slot, name.encode()) for t in p.tensors()
    ]))
    assert main(["generate", str(model), "-o", str(tmp_path / "out")]) == 0
    for c in sorted((tmp_path / "out").glob("*.c")):
        r = subprocess.run(["gcc", "-std=c99", "-Wall", "-Wextra", "-Werror", "-c", str(c), "-o", os.devnull],
                           capture_output=True, text=True)
        assert r.returncode == 0, (c.name, r.stderr[:300])


def test_extra_operator_inputs_are_rejected():
    """TFLite's PAD reads a third input as the pad value; mcugen would pad with the zero point instead."""
    model = OPS_DIR / "pad_hw.tflite"
    g = read_tflite_bytes(model.read_bytes(), "m")
    ins = list(g.operators[0].inputs) + [g.operators[0].inputs[1]]
    slot = fuzz.fields_of(tflite.Operator)["Inputs"].slot
    data = _mutated(model, lambda p: p.replace_vector(p.operators()[0]._tab, slot, "i", ins))
    assert "has 3 inputs where at most 2 are accepted" in _unsupported(data)


def test_validate_a_scalar_input_model(tmp_path):
    from mcugen.cli import main

    slot = fuzz.fields_of(tflite.Tensor)["Shape"].slot
    model = tmp_path / "scalar_add.tflite"
    model.write_bytes(_mutated(OPS_DIR / "add_same_none.tflite", lambda p: p.replace_vector(p.tensors()[0]._tab, slot, "i", [])))
    assert main(["validate", str(model), "--count", "1", "--quiet"]) in (0, 2)


def test_scalar_softmax_is_rejected():
    """tflite-runtime refuses a rank-0 SOFTMAX (the shape sweep found mcugen generating one)."""
    slot = fuzz.fields_of(tflite.Tensor)["Shape"].slot
    model = OPS_DIR / "softmax_beta1.tflite"
    g = read_tflite_bytes(model.read_bytes(), "m")
    op = g.operators[0]
    data = _mutated(model, lambda p: [p.replace_vector(p.tensors()[i]._tab, slot, "i", []) for i in (op.inputs[0], op.outputs[0])])
    assert "scalar (rank-0) input" in _unsupported(data)


def test_logistic_where_the_two_references_disagree_is_rejected():
    """Input scale 1000 on LOGISTIC: validate reported MISMATCH vs tflite-runtime (0 vs -128 at the zero point)."""
    from mcugen.supported import logistic_reference_gap

    model = OPS_DIR / "logistic.tflite"
    g = read_tflite_bytes(model.read_bytes(), "m")
    x = g.operators[0].inputs[0]
    slot = fuzz.fields_of(tflite.QuantizationParameters)["Scale"].slot
    assert logistic_reference_gap(g.t(x).quant.s, g.t(x).quant.zp, 1 / 256, -128) == 0
    assert logistic_reference_gap(1000.0, 0, 1 / 256, -128) == 128
    data = _mutated(model, lambda p: p.set_element(p.tensors()[x].Quantization()._tab, slot, "f", 0, 1000.0))
    assert "disagree by up to 128 steps" in _unsupported(data)


def test_mul_multiplier_overflowing_float32_is_rejected():
    """MUL output scale 1e-45: TFLite's float32 multiplier is inf; tflite-runtime gave -1 everywhere (MISMATCH)."""
    model = OPS_DIR / "mul_same_none.tflite"
    g = read_tflite_bytes(model.read_bytes(), "m")
    out = g.operators[0].outputs[0]
    slot = fuzz.fields_of(tflite.QuantizationParameters)["Scale"].slot
    data = _mutated(model, lambda p: p.set_element(p.tensors()[out].Quantization()._tab, slot, "f", 0, 1e-45))
    assert "float32 output multiplier overflows" in _unsupported(data)


def test_logistic_with_a_wrong_output_scale_is_rejected_without_a_warning():
    """The LOGISTIC reference comparison ran on a 1e-30 output scale and numpy warned on stderr."""
    import warnings

    model = OPS_DIR / "logistic.tflite"
    out = read_tflite_bytes(model.read_bytes(), "m").operators[0].outputs[0]
    slot = fuzz.fields_of(tflite.QuantizationParameters)["Scale"].slot
    data = _mutated(model, lambda p: p.set_element(p.tensors()[out].Quantization()._tab, slot, "f", 0, 1e-30))
    with warnings.catch_warnings():
        warnings.simplefilter("error")
        assert "output has scale" in _unsupported(data)


def test_mean_whose_requantization_overflows_is_refused(tmp_path):
    """Found by the campaign (MEAN with its input scale set to 1e30): TFLite shifts the int32 sum
    left by 104 bits (undefined), and the generated code differed by 135. It is refused now."""
    from mcugen.cli import main as cli_main

    p = fuzz.Patcher((OPS_DIR / "mean_hw_nokeepdims.tflite").read_bytes())
    t, q = next((t, q) for t, q in p.quantized_tensors() if fuzz._tensor_index(p, t) == 0)
    p.set_element(q._tab, fuzz.fields_of(tflite.QuantizationParameters)["Scale"].slot, "f", 0, 1e30)
    model = tmp_path / "mean_scale_1e30.tflite"
    model.write_bytes(bytes(p.buf))
    assert cli_main(["info", str(model)]) == 2
    model.write_bytes((OPS_DIR / "mean_hw_nokeepdims.tflite").read_bytes())
    assert cli_main(["info", str(model)]) == 0
