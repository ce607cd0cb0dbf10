"""The reader's former false alarms: legal files it called corrupt, and symptoms it reported
instead of the real reason a model is refused."""

from __future__ import annotations

import importlib.util
import struct
import sys

import numpy as np
import tflite

from helpers import OPS_DIR, REPO
from mcugen.tflite_reader import read_tflite_bytes, verify_flatbuffer
from mcugen.validate import validate

_spec = importlib.util.spec_from_file_location("mcugen_fuzz", REPO / "benchmarks" / "fuzz.py")
fuzz = importlib.util.module_from_spec(_spec)
sys.modules.setdefault("mcugen_fuzz", fuzz)
_spec.loader.exec_module(fuzz)


def _zero_points_at_4_mod_8(model: bytes) -> bytes:
    """Every zero-point vector moved to the end of the file with its int64 elements at an
    offset that is 4 mod 8 (the length word 8-aligned), values unchanged."""
    p = fuzz.Patcher(model)
    slot = fuzz.fields_of(tflite.QuantizationParameters)["ZeroPoint"].slot
    for k in range(len(p.quantized_tensors())):
        q = fuzz.Patcher(bytes(p.buf)).quantized_tensors()[k][1]
        values = [int(v) for v in q.ZeroPointAsNumpy()]
        pos = p.field_pos(q._tab, slot)
        while len(p.buf) % 8:
            p.buf.append(0)
        start = len(p.buf)
        p.buf += struct.pack("<I", len(values)) + b"".join(struct.pack("<q", v) for v in values)
        struct.pack_into("<I", p.buf, pos, start - pos)
        assert (start + 4) % 8 == 4
    return bytes(p.buf)


def test_int64_zero_points_at_4_mod_8_are_read_and_exact(tmp_path):
    data = _zero_points_at_4_mod_8((OPS_DIR / "add_same_none.tflite").read_bytes())
    assert verify_flatbuffer(data) is None
    g = read_tflite_bytes(data, "m")
    orig = read_tflite_bytes((OPS_DIR / "add_same_none.tflite").read_bytes(), "m")
    for a, b in zip(g.tensors, orig.tensors):
        if b.quant is not None:
            assert np.array_equal(a.quant.zero_point, b.quant.zero_point)
    path = tmp_path / "zp_4mod8.tflite"
    path.write_bytes(data)
    report = validate(path, count=2, seed=1)  # both oracles load it too
    assert report.bit_exact and len(report.oracles) == 2, report.oracles


def _refusal(data: bytes) -> str:
    import pytest

    from mcugen.errors import UnsupportedError
    from mcugen.lower import lower

    g = read_tflite_bytes(data, "m")  # no ModelError: the file is legal
    with pytest.raises(UnsupportedError) as e:
        lower(g)
    return str(e.value)


def test_zero_size_tensor_leads_to_the_operator_message():
    """An LSTM's intermediates have shape [0]: the reader called that a bad shape, hiding the
    real reason (the recurrent operator). Here: a SOFTMAX made an SVDF, its output shape [0]."""
    model = (OPS_DIR / "chain_conv_dw_conv_add_mean_fc_softmax.tflite").read_bytes()
    p = fuzz.Patcher(model)
    g = read_tflite_bytes(model, "m")
    softmax = next(op for op in g.operators if op.op.value == "SOFTMAX")
    for i in range(p.model.OperatorCodesLength()):
        oc = p.model.OperatorCodes(i)
        if oc.BuiltinCode() == tflite.BuiltinOperator.SOFTMAX:
            for slot, fmt in ((4, "<b"), (10, "<i")):
                off = oc._tab.Offset(slot)
                if off:
                    struct.pack_into(fmt, p.buf, oc._tab.Pos + off, tflite.BuiltinOperator.SVDF)
    p.replace_vector(p.tensors()[softmax.outputs[0]]._tab, fuzz.fields_of(tflite.Tensor)["Shape"].slot, "i", [0])
    msg = _refusal(bytes(p.buf))
    assert f"operator {softmax.index} (SVDF) is refused" in msg and "recurrent" in msg, msg


def test_scale_zero_on_an_int16_tensor_leads_to_the_int16_message():
    """A 16x8 model's scale-0 constant was reported instead of its int16 activations. (Since
    16x8 CONV_2D is supported, the tensor zeroed is the output of its AVERAGE_POOL_2D, the
    operator mcugen has no int16 kernel for.)"""
    model = (OPS_DIR / "conv_pool_16x8.tflite").read_bytes()
    p = fuzz.Patcher(model)
    slot = fuzz.fields_of(tflite.QuantizationParameters)["Scale"].slot
    g = read_tflite_bytes(model, "m")
    pool = next(op for op in g.operators if op.op.value == "AVERAGE_POOL_2D")
    int16 = [t.index for t in g.tensors if t.dtype.value == "int16" and t.quant is not None and t.index in pool.outputs]
    assert int16
    p.set_element(p.tensors()[int16[0]].Quantization()._tab, slot, "f", 0, 0.0)
    msg = _refusal(bytes(p.buf))
    assert "int16" in msg and "scale" not in msg.split("rule:")[0], msg


def test_scale_zero_on_an_int8_tensor_is_still_a_model_error():
    import pytest

    from mcugen.errors import ModelError

    model = (OPS_DIR / "add_same_none.tflite").read_bytes()
    p = fuzz.Patcher(model)
    slot = fuzz.fields_of(tflite.QuantizationParameters)["Scale"].slot
    p.set_element(p.quantized_tensors()[0][1]._tab, slot, "f", 0, 0.0)
    with pytest.raises(ModelError, match="finite and positive"):
        read_tflite_bytes(bytes(p.buf), "m")


def test_dynamic_range_model_is_named():
    msg = _refusal((OPS_DIR / "dynamic_range_fully_connected.tflite").read_bytes())
    assert "dynamic-range quantized model (int8 weights, float activations)" in msg, msg
