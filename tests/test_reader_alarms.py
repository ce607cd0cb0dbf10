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
