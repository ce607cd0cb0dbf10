"""Fuzz campaign: mutated (broken, hostile) .tflite models through `mcugen info/generate/validate`, tallied.

Every case must end with exit 0 (validate: bit-exact) or exit 2 with exactly one
`mcugen: error: ...` line on stderr, no traceback, and nothing written outside the output folder.

Usage: python benchmarks/fuzz.py [--cases N] [--seed S] [--validate-max K] [--real] [--timeout T]
The mutators and the case runner are also used by tests/test_fuzz.py (a short campaign).
"""

from __future__ import annotations

import argparse
import contextlib
import inspect
import io
import math
import os
import pickle
import re
import resource
import select
import shutil
import signal
import struct
import sys
import tempfile
import time
import traceback
import warnings
from collections import Counter
from dataclasses import dataclass, field
from pathlib import Path
from typing import Callable, Optional

import numpy as np

REPO = Path(__file__).resolve().parents[1]
OPS_DIR = REPO / "tests" / "models" / "ops"
SHARED_REAL = REPO.parent / "shared" / "models" / "real"

if str(REPO) not in sys.path:
    sys.path.insert(0, str(REPO))

import tflite  # noqa: E402

# ---- flatbuffer patching -------------------------------------------------------------------
# The `tflite` package has no object API, so mutations patch the file's bytes: scalars and
# vector elements in place, and new vectors/strings appended at the end of the file (8-byte
# aligned) with the field's forward uoffset re-pointed at them. Field slots and scalar types
# are read from the generated accessor methods, not hard-coded.

_FLAG_FMT = {
    "Bool": "?",
    "Int8": "b",
    "Uint8": "B",
    "Int16": "h",
    "Uint16": "H",
    "Int32": "i",
    "Uint32": "I",
    "Int64": "q",
    "Uint64": "Q",
    "Float32": "f",
    "Float64": "d",
}


@dataclass(frozen=True)
class Field:
    """One field of a flatbuffer table: vtable slot and, for scalars, the struct format."""

    name: str
    slot: int
    fmt: Optional[str]  # None for offsets (tables, vectors, strings)


_FIELD_CACHE: dict[type, dict[str, Field]] = {}


def fields_of(cls) -> dict[str, Field]:
    """Fields of a generated table class, parsed from its accessors' source."""
    if cls in _FIELD_CACHE:
        return _FIELD_CACHE[cls]
    out: dict[str, Field] = {}
    for name, fn in vars(cls).items():
        if name.startswith("_") or not callable(fn):
            continue
        try:
            src = inspect.getsource(fn)
        except (OSError, TypeError):
            continue
        m = re.search(r"_tab\.Offset\((\d+)\)", src)
        if not m or name.endswith(("Length", "IsNone", "AsNumpy")):
            continue
        sig = inspect.signature(fn)
        if len(sig.parameters) != 1:  # vector element accessors take an index
            key = name
            if key not in out:
                out[key] = Field(name, int(m.group(1)), None)
            continue
        s = re.search(r"number_types\.(\w+)Flags, o \+ self\._tab\.Pos", src)
        out[name] = Field(name, int(m.group(1)), _FLAG_FMT.get(s.group(1)) if s else None)
    _FIELD_CACHE[cls] = out
    return out


def scalar_fields(cls) -> list[Field]:
    return [f for f in fields_of(cls).values() if f.fmt is not None]


class Patcher:
    """A mutable .tflite image with accessors into it (they share the bytearray)."""

    def __init__(self, data: bytes):
        self.buf = bytearray(data)
        self.model = tflite.Model.GetRootAsModel(self.buf, 0)

    # -- positions
    @staticmethod
    def field_pos(tab, slot: int) -> Optional[int]:
        o = tab.Offset(slot)
        return tab.Pos + o if o else None

    def u32(self, pos: int) -> int:
        return struct.unpack_from("<I", self.buf, pos)[0]

    def vector(self, tab, slot: int) -> Optional[tuple[int, int]]:
        """(absolute start of the elements, length) of a vector/string field, or None."""
        pos = self.field_pos(tab, slot)
        if pos is None:
            return None
        start = pos + self.u32(pos)
        return start + 4, self.u32(start)

    # -- writes
    def set_scalar(self, tab, slot: int, fmt: str, value) -> bool:
        pos = self.field_pos(tab, slot)
        if pos is None:
            return False
        struct.pack_into("<" + fmt, self.buf, pos, value)
        return True

    def set_element(self, tab, slot: int, fmt: str, j: int, value) -> bool:
        v = self.vector(tab, slot)
        if v is None or not 0 <= j < v[1]:
            return False
        struct.pack_into("<" + fmt, self.buf, v[0] + j * struct.calcsize(fmt), value)
        return True

    def set_length(self, tab, slot: int, n: int) -> bool:
        v = self.vector(tab, slot)
        if v is None:
            return False
        struct.pack_into("<I", self.buf, v[0] - 4, n & 0xFFFFFFFF)
        return True

    def _append_vector_bytes(self, pos: int, n: int, payload: bytes) -> None:
        # length word at an offset = 4 (mod 8) so the elements are 8-byte aligned
        while len(self.buf) % 8 != 4:
            self.buf.append(0)
        start = len(self.buf)
        self.buf += struct.pack("<I", n) + payload
        while len(self.buf) % 8:
            self.buf.append(0)
        struct.pack_into("<I", self.buf, pos, start - pos)

    def replace_vector(self, tab, slot: int, fmt: str, values) -> bool:
        pos = self.field_pos(tab, slot)
        if pos is None:
            return False
        payload = b"".join(struct.pack("<" + fmt, v) for v in values)
        self._append_vector_bytes(pos, len(values), payload)
        return True

    def replace_string(self, tab, slot: int, text: bytes) -> bool:
        pos = self.field_pos(tab, slot)
        if pos is None:
            return False
        self._append_vector_bytes(pos, len(text), bytes(text) + b"\0")
        return True

    # -- model parts
    def subgraph(self):
        return self.model.Subgraphs(0) if self.model.SubgraphsLength() else None

    def tensors(self) -> list:
        sg = self.subgraph()
        return [sg.Tensors(i) for i in range(sg.TensorsLength())] if sg else []

    def operators(self) -> list:
        sg = self.subgraph()
        return [sg.Operators(i) for i in range(sg.OperatorsLength())] if sg else []

    def quantized_tensors(self) -> list:
        out = []
        for t in self.tensors():
            q = t.Quantization()
            if q is not None and q.ScaleLength() > 0:
                out.append((t, q))
        return out


# ---- mutators ----------------------------------------------------------------------------
# A mutator takes (rng, Patcher) and returns a short description of what it did, or None
# when it does not apply to this model (the campaign then picks another one).

Mutator = Callable[[np.random.Generator, Patcher], Optional[str]]

HOSTILE_INT32 = (0, -1, -2, 2**31 - 1, -(2**31), 2**16, 2**30, 7, 1000)
HOSTILE_FLOATS = (math.nan, 0.0, -0.0, -1.0, math.inf, -math.inf, 1e-45, 3.0e38, 1e-30, 1e30)
HOSTILE_NAMES = (
    b"*/ int evil; /*",
    b"name with \"quotes\" and 'apostrophes'",
    b"line1\nline2\r\n#include <stdlib.h>\n",
    b"../../../../etc/passwd",
    b"..\\..\\windows",
    b"x" * 10000,
    b"trigraph ??/",
    b"\\",
    b"nul\0byte",
    b"\xff\xfe invalid utf-8 \xc3",
    b"%s%n%x",
    b"",
    "unicode \u202e reversed \u00e9\u4e2d".encode(),
    b"/* nested /* comment */",
    b"// line comment",
    b"star*\\back\\slash",
)
HOSTILE_FILENAMES = (
    'a"b*_c',
    "x y z",
    "1starts_with_digit",
    "int",
    "main",
    "mcugen_kernels",
    "__reserved",
    "n" * 200,
    "\u043c\u043e\u0434\u0435\u043b\u044c",
    "a'b;c",
    "...",
    "model.tflite",
    "line\nbreak",
    "star*\\back\\slash",  # a file name cannot hold '/', so no '*/' here; tensor names carry that
    "tab\there",
)


def _pick(rng: np.random.Generator, seq):
    return seq[int(rng.integers(len(seq)))] if len(seq) else None


def m_bitflip(rng, p: Patcher) -> Optional[str]:
    k = int(rng.integers(1, 9))
    where = []
    for _ in range(k):
        pos = int(rng.integers(len(p.buf)))
        bit = int(rng.integers(8))
        p.buf[pos] ^= 1 << bit
        where.append(f"{pos}.{bit}")
    return f"flipped bits {','.join(where)}"


def m_truncate(rng, p: Patcher) -> Optional[str]:
    n = int(rng.integers(0, len(p.buf)))
    del p.buf[n:]
    return f"truncated to {n} bytes"


def m_op_input(rng, p: Patcher) -> Optional[str]:
    ops = [o for o in p.operators() if o.InputsLength() > 0]
    if not ops:
        return None
    k = int(rng.integers(len(ops)))
    o = ops[k]
    j = int(rng.integers(o.InputsLength()))
    n = p.subgraph().TensorsLength()
    choice = int(rng.integers(3))
    if choice == 0:
        v = int(rng.integers(n))  # another existing tensor (swapped roles)
    elif choice == 1 and o.InputsLength() > 1:
        j2 = (j + 1) % o.InputsLength()  # swap two inputs of the operator
        a, b = int(o.Inputs(j)), int(o.Inputs(j2))
        slot = fields_of(tflite.Operator)["Inputs"].slot
        p.set_element(o._tab, slot, "i", j, b)
        p.set_element(o._tab, slot, "i", j2, a)
        return f"operator {_op_index(p, o)} inputs {j} and {j2} swapped"
    else:
        v = _pick(rng, (n, n + 5, -2, -1, 2**31 - 1, -(2**31)))
    p.set_element(o._tab, fields_of(tflite.Operator)["Inputs"].slot, "i", j, int(v))
    return f"operator {_op_index(p, o)} input {j} -> tensor {v}"


def m_op_arity(rng, p: Patcher) -> Optional[str]:
    """One input more (another tensor, or -1) or one fewer for an operator."""
    ops = p.operators()
    if not ops:
        return None
    k = int(rng.integers(len(ops)))
    o = ops[k]
    ins = [int(o.Inputs(j)) for j in range(o.InputsLength())]
    if ins and rng.random() < 0.4:
        ins = ins[:-1]
    else:
        n = p.subgraph().TensorsLength()
        ins = ins + [int(rng.integers(-1, n))]
    p.replace_vector(o._tab, fields_of(tflite.Operator)["Inputs"].slot, "i", ins)
    return f"operator {k} inputs -> {ins}"


def _op_index(p: Patcher, o) -> int:
    for i, x in enumerate(p.operators()):
        if x._tab.Pos == o._tab.Pos:
            return i
    return -1


def m_op_output(rng, p: Patcher) -> Optional[str]:
    ops = [o for o in p.operators() if o.OutputsLength() > 0]
    if not ops:
        return None
    o = _pick(rng, ops)
    n = p.subgraph().TensorsLength()
    v = int(rng.integers(n)) if rng.random() < 0.6 else _pick(rng, (n, -1, 2**31 - 1))
    p.set_element(o._tab, fields_of(tflite.Operator)["Outputs"].slot, "i", 0, int(v))
    return f"operator {_op_index(p, o)} output 0 -> tensor {v}"


def m_graph_io(rng, p: Patcher) -> Optional[str]:
    sg = p.subgraph()
    if sg is None:
        return None
    which = "Inputs" if rng.random() < 0.5 else "Outputs"
    length = sg.InputsLength() if which == "Inputs" else sg.OutputsLength()
    if length == 0:
        return None
    n = sg.TensorsLength()
    slot = fields_of(tflite.SubGraph)[which].slot
    r = rng.random()
    if r < 0.2:
        vals = [int(sg.Inputs(0) if which == "Inputs" else sg.Outputs(0))] * 2  # duplicate
        p.replace_vector(sg._tab, slot, "i", vals)
        return f"graph {which.lower()} -> {vals}"
    if r < 0.3:
        p.replace_vector(sg._tab, slot, "i", [])
        return f"graph {which.lower()} emptied"
    v = int(rng.integers(n)) if r < 0.8 else _pick(rng, (n, -1, 2**31 - 1))
    p.set_element(sg._tab, slot, "i", 0, v)
    return f"graph {which.lower()}[0] -> tensor {v}"


def m_tensor_buffer(rng, p: Patcher) -> Optional[str]:
    ts = p.tensors()
    if not ts:
        return None
    i = int(rng.integers(len(ts)))
    nb = p.model.BuffersLength()
    v = int(rng.integers(nb)) if rng.random() < 0.6 else _pick(rng, (0, nb, nb + 100, 2**32 - 1, 2**31))
    f = fields_of(tflite.Tensor)["Buffer"]
    if not p.set_scalar(ts[i]._tab, f.slot, f.fmt, v):
        return None
    return f"tensor {i} buffer -> {v}"


def m_shape(rng, p: Patcher) -> Optional[str]:
    ts = [(i, t) for i, t in enumerate(p.tensors()) if t.ShapeLength() > 0]
    if not ts:
        return None
    i, t = _pick(rng, ts)
    slot = fields_of(tflite.Tensor)["Shape"].slot
    r = rng.random()
    if r < 0.7:
        j = int(rng.integers(t.ShapeLength()))
        v = _pick(rng, HOSTILE_INT32 + (2**31 - 1, -(2**31), 46341))
        p.set_element(t._tab, slot, "i", j, v)
        return f"tensor {i} shape[{j}] -> {v}"
    rank = _pick(rng, (0, 1, 5, 7, 9))
    dims = [int(d) for d in rng.integers(1, 4, size=rank)]
    if rank and rng.random() < 0.5:
        dims[0] = _pick(rng, (2**31 - 1, 65536 * 65536 % 2**31 + 3, 46341))
    p.replace_vector(t._tab, slot, "i", dims)
    return f"tensor {i} shape -> {dims}"


def m_scale(rng, p: Patcher) -> Optional[str]:
    qs = p.quantized_tensors()
    if not qs:
        return None
    t, q = _pick(rng, qs)
    j = int(rng.integers(q.ScaleLength()))
    v = _pick(rng, HOSTILE_FLOATS)
    p.set_element(q._tab, fields_of(tflite.QuantizationParameters)["Scale"].slot, "f", j, v)
    return f"tensor {_tensor_index(p, t)} scale[{j}] -> {v}"


def _tensor_index(p: Patcher, t) -> int:
    for i, x in enumerate(p.tensors()):
        if x._tab.Pos == t._tab.Pos:
            return i
    return -1


def m_zero_point(rng, p: Patcher) -> Optional[str]:
    qs = [(t, q) for t, q in p.quantized_tensors() if q.ZeroPointLength() > 0]
    if not qs:
        return None
    t, q = _pick(rng, qs)
    slot = fields_of(tflite.QuantizationParameters)["ZeroPoint"].slot
    n = q.ZeroPointLength()
    if rng.random() < 0.5:
        m = _pick(rng, (0, n + 1, max(n - 1, 0), 2 * n + 1, 2))
        vals = [int(q.ZeroPoint(0))] * m
        p.replace_vector(q._tab, slot, "q", vals)
        return f"tensor {_tensor_index(p, t)} zero points: {n} -> {m} entries"
    j = int(rng.integers(n))
    v = _pick(rng, (128, -129, 255, 256, -1000, 2**40, -(2**63), 127, -128))
    p.set_element(q._tab, slot, "q", j, v)
    return f"tensor {_tensor_index(p, t)} zero_point[{j}] -> {v}"


def m_scale_length(rng, p: Patcher) -> Optional[str]:
    qs = p.quantized_tensors()
    if not qs:
        return None
    t, q = _pick(rng, qs)
    n = q.ScaleLength()
    m = _pick(rng, (n + 1, max(n - 1, 0), 2, 3, 0))
    slot = fields_of(tflite.QuantizationParameters)["Scale"].slot
    p.replace_vector(q._tab, slot, "f", [float(q.Scale(0))] * m)
    return f"tensor {_tensor_index(p, t)} scales: {n} -> {m} entries"


def m_quant_axis(rng, p: Patcher) -> Optional[str]:
    f = fields_of(tflite.QuantizationParameters)["QuantizedDimension"]
    qs = [(t, q) for t, q in p.quantized_tensors() if p.field_pos(q._tab, f.slot) is not None]
    if not qs:
        return None
    t, q = _pick(rng, qs)
    v = _pick(rng, (-1, 1, 2, 3, 4, 7, 2**31 - 1))
    p.set_scalar(q._tab, f.slot, f.fmt, v)
    return f"tensor {_tensor_index(p, t)} quantized_dimension -> {v}"


def m_tensor_type(rng, p: Patcher) -> Optional[str]:
    ts = p.tensors()
    if not ts:
        return None
    i = int(rng.integers(len(ts)))
    f = fields_of(tflite.Tensor)["Type"]
    v = _pick(rng, (0, 1, 2, 3, 4, 5, 7, 9, 10, 17, 99, -1))
    if not p.set_scalar(ts[i]._tab, f.slot, f.fmt, v):
        return None  # a FLOAT32 tensor may omit the field (it is the default)
    return f"tensor {i} type -> {v}"


def m_hostile_name(rng, p: Patcher) -> Optional[str]:
    name = _pick(rng, HOSTILE_NAMES)
    r = rng.random()
    if r < 0.75:
        ts = p.tensors()
        if not ts:
            return None
        i = int(rng.integers(len(ts)))
        if not p.replace_string(ts[i]._tab, fields_of(tflite.Tensor)["Name"].slot, name):
            return None
        return f"tensor {i} name -> {name[:40]!r}"
    if r < 0.9:
        if not p.replace_string(p.model._tab, fields_of(tflite.Model)["Description"].slot, name):
            return None
        return f"model description -> {name[:40]!r}"
    sg = p.subgraph()
    if sg is None or not p.replace_string(sg._tab, fields_of(tflite.SubGraph)["Name"].slot, name):
        return None
    return f"subgraph name -> {name[:40]!r}"


SUPPORTED_CODES = {
    name: getattr(tflite.BuiltinOperator, name)
    for name in (
        "CONV_2D", "DEPTHWISE_CONV_2D", "FULLY_CONNECTED", "ADD", "MUL", "MEAN", "AVERAGE_POOL_2D",
        "MAX_POOL_2D", "SOFTMAX", "LOGISTIC", "RESHAPE", "PAD", "TRANSPOSE", "QUANTIZE", "DEQUANTIZE",
    )
}


def m_opcode(rng, p: Patcher) -> Optional[str]:
    n = p.model.OperatorCodesLength()
    if n == 0:
        return None
    k = int(rng.integers(n))
    oc = p.model.OperatorCodes(k)
    v = _pick(rng, list(SUPPORTED_CODES.values()) + [32, 0, 255, 200, -1])
    fs = fields_of(tflite.OperatorCode)
    done = p.set_scalar(oc._tab, fs["BuiltinCode"].slot, fs["BuiltinCode"].fmt, v)
    if 0 <= v < 128 or v == -1:
        done |= p.set_scalar(oc._tab, fs["DeprecatedBuiltinCode"].slot, fs["DeprecatedBuiltinCode"].fmt, max(min(v, 127), -128))
    return f"opcode {k} -> builtin {v}" if done else None


def m_opcode_index(rng, p: Patcher) -> Optional[str]:
    ops = p.operators()
    if not ops:
        return None
    o = _pick(rng, ops)
    n = p.model.OperatorCodesLength()
    v = _pick(rng, (n, n + 1, 2**32 - 1, 0, max(n - 1, 0)))
    f = fields_of(tflite.Operator)["OpcodeIndex"]
    if not p.set_scalar(o._tab, f.slot, f.fmt, v):
        return None
    return f"operator {_op_index(p, o)} opcode_index -> {v}"


def _options_class(o):
    code = o.BuiltinOptionsType()
    for name, v in vars(tflite.BuiltinOptions).items():
        if v == code and not name.startswith("_") and name != "NONE":
            return getattr(tflite, name, None)
    return None


def m_options_field(rng, p: Patcher) -> Optional[str]:
    cands = []
    for o in p.operators():
        cls = _options_class(o)
        table = o.BuiltinOptions()
        if cls is None or table is None:
            continue
        opts = cls()
        opts.Init(table.Bytes, table.Pos)
        present = [f for f in scalar_fields(cls) if p.field_pos(opts._tab, f.slot) is not None]
        if present:
            cands.append((o, cls, opts, present))
    if not cands:
        return None
    o, cls, opts, present = _pick(rng, cands)
    f = _pick(rng, present)
    if f.fmt in ("f", "d"):
        v = _pick(rng, HOSTILE_FLOATS)
    elif f.fmt in ("b", "B", "?"):
        v = _pick(rng, (-1, 2, 5, 9, 127, -128)) if f.fmt == "b" else _pick(rng, (0, 1, 2, 255)) if f.fmt == "B" else True
    else:
        v = _pick(rng, HOSTILE_INT32)
        if f.fmt.isupper():
            v &= 0xFFFFFFFF
    p.set_scalar(opts._tab, f.slot, f.fmt, v)
    return f"operator {_op_index(p, o)} {cls.__name__}.{f.name} -> {v}"


def m_options_type(rng, p: Patcher) -> Optional[str]:
    ops = [o for o in p.operators() if o.BuiltinOptionsType() != 0]
    if not ops:
        return None
    o = _pick(rng, ops)
    v = _pick(rng, (0, 1, 2, 5, 8, 9, 11, 20, 27, 254))
    f = fields_of(tflite.Operator)["BuiltinOptionsType"]
    p.set_scalar(o._tab, f.slot, f.fmt, v)
    return f"operator {_op_index(p, o)} builtin_options_type -> {v}"


def m_buffer_length(rng, p: Patcher) -> Optional[str]:
    slot = fields_of(tflite.Buffer)["Data"].slot
    bufs = [(i, p.model.Buffers(i)) for i in range(p.model.BuffersLength())]
    bufs = [(i, b) for i, b in bufs if b.DataLength() > 0]
    if not bufs:
        return None
    i, b = _pick(rng, bufs)
    n = b.DataLength()
    v = _pick(rng, (0, n - 1, n + 1, n + 4096, 2**31, 2**32 - 1))
    p.set_length(b._tab, slot, v)
    return f"buffer {i} data length {n} -> {v}"


def m_vector_length(rng, p: Patcher) -> Optional[str]:
    sg = p.subgraph()
    if sg is None:
        return None
    which = _pick(rng, ("Tensors", "Operators", "Inputs", "Outputs"))
    table, slot = sg._tab, fields_of(tflite.SubGraph)[which].slot
    if rng.random() < 0.3:
        which = _pick(rng, ("Buffers", "OperatorCodes", "Subgraphs"))
        table, slot = p.model._tab, fields_of(tflite.Model)[which].slot
    v = p.vector(table, slot)
    if v is None:
        return None
    n = _pick(rng, (0, max(v[1] - 1, 0), v[1] + 1, v[1] + 1000, 2**31 - 1))
    p.set_length(table, slot, n)
    return f"{which} length {v[1]} -> {n}"


def m_const_data(rng, p: Patcher) -> Optional[str]:
    """Random or extreme bytes in a constant tensor (weights, bias, paddings, axes, perm)."""
    cands = []
    for i, t in enumerate(p.tensors()):
        b = t.Buffer()
        if 0 < b < p.model.BuffersLength() and p.model.Buffers(b).DataLength() > 0:
            cands.append((i, t, p.model.Buffers(b)))
    if not cands:
        return None
    i, t, b = _pick(rng, cands)
    start, n = p.vector(b._tab, fields_of(tflite.Buffer)["Data"].slot)
    r = rng.random()
    if r < 0.4:
        p.buf[start : start + n] = rng.integers(0, 256, size=n, dtype=np.uint8).tobytes()
        return f"tensor {i} constant data randomised ({n} bytes)"
    itemsize = {0: 4, 2: 4, 4: 8, 7: 2}.get(t.Type(), 1)
    fill = _pick(rng, (0x00, 0xFF, 0x7F, 0x80))
    if itemsize > 1 and rng.random() < 0.5:
        pattern = _pick(rng, (b"\xff\xff\xff\x7f", b"\x00\x00\x00\x80", b"\xff\xff\xff\xff"))[:itemsize]
        pattern = pattern + b"\x00" * (itemsize - len(pattern))
        p.buf[start : start + n] = (pattern * (n // itemsize + 1))[:n]
        return f"tensor {i} constant data -> repeated {pattern.hex()}"
    p.buf[start : start + n] = bytes([fill]) * n
    return f"tensor {i} constant data -> all 0x{fill:02x}"


def m_extreme_scale(rng, p: Patcher) -> Optional[str]:
    """A finite positive but extreme scale: valid for the reader, stresses multiplier maths."""
    qs = p.quantized_tensors()
    if not qs:
        return None
    t, q = _pick(rng, qs)
    v = _pick(rng, (1e-38, 1e-20, 1e-9, 1e-5, 0.5, 1.0, 2.0, 1e3, 1e9, 1e20, 3e38))
    slot = fields_of(tflite.QuantizationParameters)["Scale"].slot
    for j in range(q.ScaleLength()):
        p.set_element(q._tab, slot, "f", j, v)
    return f"tensor {_tensor_index(p, t)} every scale -> {v}"


def m_signature_metadata(rng, p: Patcher) -> Optional[str]:
    """Parts mcugen ignores but the interpreters read: signature tensor maps and metadata entries."""
    m = p.model
    r = rng.random()
    if r < 0.5 and m.MetadataLength():
        k = int(rng.integers(m.MetadataLength()))
        md = m.Metadata(k)
        if rng.random() < 0.5:
            name = _pick(rng, (b"OfflineMemoryAllocation", b"min_runtime_version", b"*/", b""))
            if p.replace_string(md._tab, fields_of(tflite.Metadata)["Name"].slot, name):
                return f"metadata {k} name -> {name!r}"
        f = fields_of(tflite.Metadata)["Buffer"]
        v = _pick(rng, (0, m.BuffersLength(), 2**32 - 1, 1))
        if p.set_scalar(md._tab, f.slot, f.fmt, v):
            return f"metadata {k} buffer -> {v}"
        return None
    if m.SignatureDefsLength():
        sd = m.SignatureDefs(0)
        maps = [sd.Inputs(i) for i in range(sd.InputsLength())] + [sd.Outputs(i) for i in range(sd.OutputsLength())]
        f = fields_of(tflite.TensorMap)["TensorIndex"]
        v = _pick(rng, (2**32 - 1, 2**31, 1000, 1))
        present = [t for t in maps if p.field_pos(t._tab, f.slot) is not None]
        if present and rng.random() < 0.7:
            p.set_scalar(_pick(rng, present)._tab, f.slot, f.fmt, v)
            return f"signature tensor index -> {v}"
        fs = fields_of(tflite.SignatureDef)["SubgraphIndex"]
        if p.set_scalar(sd._tab, fs.slot, fs.fmt, v):
            return f"signature subgraph index -> {v}"
        slot = fields_of(tflite.SignatureDef)["SignatureKey"].slot
        if p.replace_string(sd._tab, slot, _pick(rng, HOSTILE_NAMES)):
            return "signature key -> hostile"
    return None


MUTATORS: dict[str, Mutator] = {
    "bitflip": m_bitflip,
    "truncate": m_truncate,
    "op_input": m_op_input,
    "op_output": m_op_output,
    "op_arity": m_op_arity,
    "graph_io": m_graph_io,
    "tensor_buffer": m_tensor_buffer,
    "shape": m_shape,
    "scale": m_scale,
    "extreme_scale": m_extreme_scale,
    "scale_length": m_scale_length,
    "zero_point": m_zero_point,
    "quant_axis": m_quant_axis,
    "tensor_type": m_tensor_type,
    "hostile_name": m_hostile_name,
    "opcode": m_opcode,
    "opcode_index": m_opcode_index,
    "options_field": m_options_field,
    "options_type": m_options_type,
    "buffer_length": m_buffer_length,
    "vector_length": m_vector_length,
    "const_data": m_const_data,
    "signature_metadata": m_signature_metadata,
}


@dataclass
class Case:
    index: int
    base: str  # base model file name
    mutations: list[str]  # "<mutator>: <what it did>"
    data: bytes
    file_name: str  # the mutated model's file name (may be hostile)


def make_case(index: int, rng: np.random.Generator, bases: list[Path], mutator: Optional[str] = None) -> Case:
    """Mutate a random base model with one mutator (or 2-3 with probability 0.2)."""
    for _ in range(100):
        base = _pick(rng, bases)
        p = Patcher(base.read_bytes())
        names = [mutator] if mutator else (
            [_pick(rng, list(MUTATORS))] if rng.random() < 0.8 else [_pick(rng, list(MUTATORS)) for _ in range(int(rng.integers(2, 4)))]
        )
        done = []
        for name in names:
            try:
                what = MUTATORS[name](rng, p)
            except Exception as e:  # accessors may fail on an already-broken image: mutation stops here
                what = None if not done else f"(stopped: {type(e).__name__})"
            if what:
                done.append(f"{name}: {what}")
        if not done:
            continue
        stem = base.stem
        if rng.random() < 0.1:
            stem = _pick(rng, HOSTILE_FILENAMES)
            done.append(f"file_name: {stem!r}")
        return Case(index, base.name, done, bytes(p.buf), f"{stem}.tflite")
    raise RuntimeError(f"no mutator applied to any base model after 100 tries (mutator={mutator})")


def sweep_input_cases(bases: list[Path]):
    """Every single re-wiring of one operator input to another tensor (or -1), for each base model."""
    slot = fields_of(tflite.Operator)["Inputs"].slot
    k = 0
    for base in bases:
        raw = base.read_bytes()
        p0 = Patcher(raw)
        n = p0.subgraph().TensorsLength()
        for oi, o in enumerate(p0.operators()):
            for j in range(o.InputsLength()):
                for v in range(-1, n):
                    if v == o.Inputs(j):
                        continue
                    p = Patcher(raw)
                    p.set_element(p.operators()[oi]._tab, slot, "i", j, v)
                    yield Case(k, base.name, [f"sweep_input: operator {oi} input {j} -> tensor {v}"], bytes(p.buf), base.name)
                    k += 1


SWEEP_SHAPES = ([], [1], [0], [3], [1, 1, 1, 1], [2, 1, 1, 1], [1, 2, 2, 3], [1, 1, 1, 1, 1], [1, 1, 1, 1, 1, 1])


def sweep_shape_cases(bases: list[Path]):
    """Each tensor's shape replaced by each of SWEEP_SHAPES, then every activation tensor's at once."""
    slot = fields_of(tflite.Tensor)["Shape"].slot
    k = 0
    for base in bases:
        raw = base.read_bytes()
        n = len(Patcher(raw).tensors())
        for i in list(range(n)) + [None]:
            for shape in SWEEP_SHAPES:
                p = Patcher(raw)
                if i is None:
                    for t in p.tensors():
                        b = t.Buffer()
                        if b == 0 or p.model.Buffers(b).DataLength() == 0:
                            p.replace_vector(t._tab, slot, "i", shape)
                    what = f"every activation tensor's shape -> {shape}"
                else:
                    if not p.replace_vector(p.tensors()[i]._tab, slot, "i", shape):
                        continue
                    what = f"tensor {i} shape -> {shape}"
                yield Case(k, base.name, [f"sweep_shape: {what}"], bytes(p.buf), base.name)
                k += 1


SWEEPS = {"inputs": sweep_input_cases, "shapes": sweep_shape_cases}


# ---- running a case in a forked child ---------------------------------------------------------


@dataclass
class CommandResult:
    command: str  # info / generate / validate
    exit_code: Optional[int]  # None: the child died or raised
    stdout: str
    stderr: str
    error_class: Optional[str] = None  # McugenError subclass that main() mapped to exit 2
    traceback: Optional[str] = None  # an exception escaped main()
    seconds: float = 0.0


@dataclass
class CaseResult:
    case: Case
    commands: list[CommandResult] = field(default_factory=list)
    outcome: str = ""  # "ok", "ok+validated", "rejected:<Class>" or "FAIL:<reason>"
    detail: str = ""
    stray_files: list[str] = field(default_factory=list)

    @property
    def failed(self) -> bool:
        return self.outcome.startswith("FAIL")


def _run_cli(argv: list[str]) -> CommandResult:
    """Run mcugen.cli.main in this process with stdout/stderr captured; record the error class."""
    from mcugen import cli
    from mcugen.errors import McugenError

    seen: dict[str, str] = {}
    originals = {n: getattr(cli, n) for n in ("cmd_info", "cmd_generate", "cmd_validate")}

    def wrap(fn):
        def inner(args):
            try:
                return fn(args)
            except McugenError as e:
                seen["class"] = type(e).__name__
                raise

        return inner

    for n, fn in originals.items():
        setattr(cli, n, wrap(fn))
    out, err = io.StringIO(), io.StringIO()
    t0 = time.monotonic()
    tb = None
    code: Optional[int] = None
    try:
        with contextlib.redirect_stdout(out), contextlib.redirect_stderr(err):
            code = cli.main(argv)
    except SystemExit as e:  # argparse
        code = e.code if isinstance(e.code, int) else 2
    except BaseException:
        tb = traceback.format_exc()
    finally:
        for n, fn in originals.items():
            setattr(cli, n, fn)
    return CommandResult(argv[0], code, out.getvalue(), err.getvalue(), seen.get("class"), tb, time.monotonic() - t0)


def _show_warning(message, category, filename, lineno, file=None, line=None) -> None:
    sys.stderr.write(warnings.formatwarning(message, category, filename, lineno, line))


def _child(case_dir: Path, model: Path, do_validate: bool, wfd: int) -> None:
    # Warnings reach stderr as they would from the command line (pytest records them instead).
    warnings.resetwarnings()
    warnings.simplefilter("default")
    warnings.showwarning = _show_warning
    os.chdir(case_dir / "cwd")
    tempfile.tempdir = str(case_dir / "tmp")
    os.environ["TMPDIR"] = str(case_dir / "tmp")
    try:
        resource.setrlimit(resource.RLIMIT_AS, (6 << 30, 6 << 30))
    except (ValueError, OSError):
        pass
    results = []

    def send():
        data = pickle.dumps(results)
        os.write(wfd, struct.pack("<Q", len(data)))
        view = memoryview(data)
        while view:
            k = os.write(wfd, view[:65536])
            view = view[k:]

    out_dir = case_dir / "out" / "gen"
    plan = [["info", str(model)], ["generate", str(model), "-o", str(out_dir)]]
    for argv in plan:
        results.append(_run_cli(argv))
        send()
    if do_validate and all(r.exit_code == 0 for r in results):
        results.append(_run_cli(["validate", str(model), "--count", "1", "--quiet", "--json"]))
        send()


def run_case(case: Case, work: Path, do_validate: bool, timeout: float = 120.0) -> CaseResult:
    """Run info, generate (and validate if asked and both succeeded) in a forked child; judge it."""
    case_dir = work / f"case{case.index:05d}"
    for sub in ("cwd", "tmp", "out", "model"):
        (case_dir / sub).mkdir(parents=True, exist_ok=True)
    model = case_dir / "model" / case.file_name
    model.write_bytes(case.data)
    res = CaseResult(case)
    rfd, wfd = os.pipe()
    sys.stdout.flush()
    sys.stderr.flush()
    pid = os.fork()
    if pid == 0:  # child
        os.close(rfd)
        code = 0
        try:
            _child(case_dir, model, do_validate, wfd)
        except BaseException:
            code = 3
        finally:
            os._exit(code)
    os.close(wfd)
    chunks = bytearray()
    deadline = time.monotonic() + timeout
    timed_out = False
    while True:
        left = deadline - time.monotonic()
        if left <= 0:
            timed_out = True
            os.kill(pid, signal.SIGKILL)
            break
        r, _, _ = select.select([rfd], [], [], min(left, 1.0))
        if r:
            data = os.read(rfd, 1 << 16)
            if not data:
                break
            chunks += data
    os.close(rfd)
    _, status = os.waitpid(pid, 0)
    # the last complete message is the full list so far
    results = []
    pos = 0
    while pos + 8 <= len(chunks):
        (n,) = struct.unpack_from("<Q", chunks, pos)
        if pos + 8 + n > len(chunks):
            break
        results = pickle.loads(bytes(chunks[pos + 8 : pos + 8 + n]))
        pos += 8 + n
    res.commands = results
    died = None
    if timed_out:
        died = f"timeout after {timeout:.0f} s"
    elif os.WIFSIGNALED(status):
        died = f"child killed by signal {os.WTERMSIG(status)}"
    elif os.WEXITSTATUS(status) != 0:
        died = f"child exited with {os.WEXITSTATUS(status)}"
    res.stray_files = _stray_files(case_dir, model)
    judge(res, died)
    shutil.rmtree(case_dir, ignore_errors=True)  # the model bytes stay in res.case.data
    return res


def _stray_files(case_dir: Path, model: Path) -> list[str]:
    stray = []
    for sub in ("cwd", "tmp"):
        stray += [str(p.relative_to(case_dir)) for p in (case_dir / sub).rglob("*")]
    stray += [str(p.relative_to(case_dir)) for p in (case_dir / "out").iterdir() if p.name != "gen"]
    stray += [str(p.relative_to(case_dir)) for p in (case_dir / "model").iterdir() if p != model]
    return stray


# validate's exit-2 messages that blame mcugen's own output, not the model or the oracles
GENERATED_C_FAILURES = ("host compilation of the generated C failed", "the compiled model exited with status", "the compiled model did not finish")
# One error line; a model with several blockers adds one "- " line per group (mcugen.supported).
ERROR_LINE = re.compile(r"^mcugen: error: [^\n]+\n(- [^\n]+\n)*$|^mcugen: error: [^\n]+$")


def unexpected_stderr(stderr: str) -> list[str]:
    """Lines a successful run printed on stderr other than `note: ...` lines (advice such as the
    portable-kernels note of `generate`): a successful run prints nothing else there."""
    return [line for line in stderr.strip().splitlines() if line and not line.startswith("note: ")]


def judge(res: CaseResult, died: Optional[str]) -> None:
    """Set res.outcome: every command must exit 0, or 2 with exactly one error line and no traceback."""
    fails = []
    if died:
        next_cmd = ["info", "generate", "validate"][len(res.commands)] if len(res.commands) < 3 else "?"
        fails.append(f"{died} (during {next_cmd})")
    rejected = None
    for c in res.commands:
        if c.traceback:
            last = c.traceback.strip().splitlines()[-1]
            fails.append(f"{c.command}: uncaught exception: {last}")
            continue
        if "Traceback" in c.stderr or "Traceback" in c.stdout:
            fails.append(f"{c.command}: traceback printed")
        if c.exit_code == 0:
            if unexpected_stderr(c.stderr):
                fails.append(f"{c.command}: exit 0 but stderr {c.stderr.strip()[:100]!r}")
            if c.command == "validate":
                try:
                    import json

                    rep = json.loads(c.stdout)
                    if rep.get("bit_exact") is not True or rep.get("max_abs_diff") != 0 or not rep.get("oracles"):
                        fails.append(f"validate: exit 0 but report {c.stdout[:200]!r}")
                except ValueError:
                    fails.append(f"validate: exit 0 but no JSON report: {c.stdout[:100]!r}")
        elif c.exit_code == 2:
            if c.command == "validate" and any(k in c.stderr for k in GENERATED_C_FAILURES):
                fails.append(f"validate: the generated C of an accepted model failed: {c.stderr.strip()[:300]}")
            if not ERROR_LINE.match(c.stderr):
                fails.append(f"{c.command}: exit 2 but stderr is not one 'mcugen: error:' line: {c.stderr[:200]!r}")
            if c.error_class is None:
                fails.append(f"{c.command}: exit 2 without an McugenError")
            rejected = rejected or (c.command, c.error_class, c.stderr.strip())
        elif c.exit_code == 1 and c.command == "validate":
            fails.append(f"validate: MISMATCH (exit 1): {c.stdout.strip()[:300]}")
        else:
            fails.append(f"{c.command}: exit {c.exit_code}: {c.stderr.strip()[:200]!r}")
    codes = [c.exit_code for c in res.commands[:2]]
    if len(codes) == 2 and codes[0] != codes[1] and not fails:
        fails.append(f"info and generate disagree: exits {codes}: {res.commands[0].stderr.strip()[:80]!r} vs {res.commands[1].stderr.strip()[:80]!r}")
    if res.stray_files:
        fails.append(f"wrote outside the output folder: {res.stray_files[:5]}")
    gen = [c for c in res.commands if c.command == "generate"]
    if gen and gen[0].exit_code != 0 and len(res.stray_files) == 0:
        pass
    if fails:
        res.outcome = "FAIL:" + fails[0].split(":")[0]
        res.detail = " | ".join(fails)
    elif rejected:
        res.outcome = f"rejected:{rejected[1]}"
        res.detail = f"{rejected[0]}: {rejected[2]}"
    else:
        validated = any(c.command == "validate" for c in res.commands)
        res.outcome = "ok+bit-exact" if validated else "ok"


def error_kind(res: CaseResult) -> str:
    """A coarse bucket for an exit-2 message, for the tally."""
    msg = res.detail.lower()
    for key, kind in (
        ("corrupt tflite flatbuffer", "corrupt flatbuffer"),
        ("not a tflite flatbuffer", "not TFLite"),
        ("no oracle can run", "oracle refused"),
        ("refers to", "bad index"),
        ("quantization parameters", "quantization"),
        ("scale", "quantization"),
        ("zero point", "quantization"),
        ("quantized_dimension", "quantization"),
        ("shape", "shape"),
        ("rank", "shape"),
        ("elements", "shape"),
        ("before any operator writes", "dataflow"),
        ("already a constant", "dataflow"),
        ("never written", "dataflow"),
        ("buffer", "buffer"),
        ("options", "options"),
        ("is not supported", "unsupported op"),
        ("required inputs", "arity"),
        ("float32", "dtype"),
        (" is int", "dtype"),
        (" is uint", "dtype"),
    ):
        if key in msg:
            return kind
    return "other"


# ---- campaign -----------------------------------------------------------------------------


def base_models(real: bool = False, real_dir: Path = SHARED_REAL) -> list[Path]:
    bases = sorted(OPS_DIR.glob("*.tflite"))
    if real and real_dir.is_dir():
        bases += sorted(p for p in real_dir.glob("*.tflite") if p.stat().st_size < 1_000_000)
    return bases


@dataclass
class Tally:
    cases: int = 0
    outcomes: Counter = field(default_factory=Counter)
    rejected_kinds: Counter = field(default_factory=Counter)
    by_mutator: Counter = field(default_factory=Counter)
    validated: int = 0
    failures: list[CaseResult] = field(default_factory=list)
    examples: dict = field(default_factory=dict)  # error kind -> one message
    oracle_refusals: list[CaseResult] = field(default_factory=list)  # mcugen generated, the oracles refused

    def add(self, r: CaseResult) -> None:
        self.cases += 1
        self.outcomes[r.outcome] += 1
        if r.outcome.startswith("rejected"):
            kind = error_kind(r)
            self.rejected_kinds[kind] += 1
            self.examples.setdefault(kind, r.detail[:160])
            if r.commands and r.commands[-1].command == "validate" and r.commands[-1].exit_code == 2:
                self.oracle_refusals.append(r)
        for m in r.case.mutations:
            self.by_mutator[(m.split(":")[0], r.outcome.split(":")[0])] += 1
        if any(c.command == "validate" for c in r.commands):
            self.validated += 1
        if r.failed:
            self.failures.append(r)

    def report(self) -> str:
        lines = [f"cases: {self.cases}"]
        ok = sum(v for k, v in self.outcomes.items() if k.startswith("ok"))
        rej = sum(v for k, v in self.outcomes.items() if k.startswith("rejected"))
        lines.append(f"exit 0 (accepted): {ok}  [validated bit-exact: {self.outcomes.get('ok+bit-exact', 0)} of {self.validated} validated]")
        lines.append(f"exit 2 (one-line error): {rej}")
        for k, v in sorted(self.outcomes.items()):
            if k.startswith("rejected"):
                lines.append(f"    {k}: {v}")
        lines.append("  by error kind:")
        for k, v in self.rejected_kinds.most_common():
            lines.append(f"    {k}: {v}   e.g. {self.examples[k]}")
        lines.append(f"generated by mcugen but refused by every oracle (validate exit 2): {len(self.oracle_refusals)}")
        for r in self.oracle_refusals[:20]:
            lines.append(f"    case {r.case.index} base={r.case.base} {r.case.mutations}: {r.detail[:300]}")
        lines.append(f"FAILURES: {len(self.failures)}")
        for k, v in sorted(self.outcomes.items()):
            if k.startswith("FAIL"):
                lines.append(f"    {k}: {v}")
        muts = sorted({m for m, _ in self.by_mutator})
        lines.append("per mutator (ok / rejected / FAIL):")
        for m in muts:
            lines.append(
                f"    {m:14s} {self.by_mutator[(m, 'ok')] + self.by_mutator[(m, 'ok+bit-exact')]:4d} / "
                f"{self.by_mutator[(m, 'rejected')]:4d} / {self.by_mutator[(m, 'FAIL')]:4d}"
            )
        for r in self.failures[:50]:
            lines.append(f"  FAIL case {r.case.index} base={r.case.base} {r.case.mutations}: {r.detail[:400]}")
        return "\n".join(lines)


def campaign(
    cases: int,
    seed: int,
    work: Path,
    validate_max: int = 40,
    real: bool = False,
    timeout: float = 120.0,
    on_result: Optional[Callable[[CaseResult], None]] = None,
    time_budget: Optional[float] = None,
    real_dir: Path = SHARED_REAL,
) -> Tally:
    """Run `cases` seeded cases; validate up to `validate_max` of those mcugen accepted."""
    rng = np.random.default_rng(seed)
    bases = base_models(real, real_dir)
    tally = Tally()
    # Each mutator gets a turn in order first, so short campaigns still cover them all.
    names = list(MUTATORS)
    t0 = time.monotonic()
    for k in range(cases):
        if time_budget is not None and time.monotonic() - t0 > time_budget:
            break
        case = make_case(k, rng, bases, mutator=names[k] if k < len(names) else None)
        r = run_case(case, work, do_validate=tally.validated < validate_max, timeout=timeout)
        tally.add(r)
        if on_result:
            on_result(r)
    return tally


def _prewarm() -> None:
    """Import what the children need once, so every fork starts warm."""
    import mcugen.cli  # noqa: F401
    import mcugen.driver  # noqa: F401
    import mcugen.oracle  # noqa: F401
    import mcugen.validate  # noqa: F401


def main(argv=None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--cases", type=int, default=1000)
    ap.add_argument("--seed", type=int, default=0)
    ap.add_argument("--validate-max", type=int, default=200, help="validate at most this many accepted cases")
    ap.add_argument("--real", action="store_true", help="also mutate the shared real models under 1 MB")
    ap.add_argument("--real-dir", type=Path, default=SHARED_REAL, help=f"where the real models are (default {SHARED_REAL})")
    ap.add_argument("--timeout", type=float, default=120.0, help="seconds per case")
    ap.add_argument("--keep", metavar="DIR", help="keep failing cases' models in DIR")
    ap.add_argument(
        "--sweep", choices=sorted(SWEEPS),
        help="instead of random cases, a systematic sweep: every one-input re-wiring (inputs) or shape replacement (shapes) of every base model",
    )
    ap.add_argument("--verbose", action="store_true")
    args = ap.parse_args(argv)
    os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "3")
    _prewarm()
    keep = Path(args.keep) if args.keep else None
    t0 = time.monotonic()

    done = Counter()

    def on_result(r: CaseResult) -> None:
        done["cases"] += 1
        done["failures"] += r.failed
        if done["cases"] % 250 == 0:
            print(f"[{time.monotonic() - t0:6.0f}s] {done['cases']} cases, {done['failures']} failures", file=sys.stderr, flush=True)
        if args.verbose or r.failed:
            print(f"case {r.case.index}: {r.outcome} {r.case.base} {r.case.mutations} {r.detail[:300]}", flush=True)
        if r.failed and keep:
            keep.mkdir(parents=True, exist_ok=True)
            (keep / f"case{r.case.index:05d}_{Path(r.case.base).stem}.tflite").write_bytes(r.case.data)

    with tempfile.TemporaryDirectory(prefix="mcugen-fuzz-") as tmp:
        if args.sweep:
            tally = Tally()
            for case in SWEEPS[args.sweep](base_models(args.real, args.real_dir)):
                r = run_case(case, Path(tmp), do_validate=tally.validated < args.validate_max, timeout=args.timeout)
                tally.add(r)
                on_result(r)
            print(tally.report())
            print(f"seconds: {time.monotonic() - t0:.1f}")
            return 1 if tally.failures else 0
        tally = campaign(
            args.cases, args.seed, Path(tmp), args.validate_max, args.real, args.timeout, on_result, real_dir=args.real_dir
        )
    print(tally.report())
    print(f"seconds: {time.monotonic() - t0:.1f}")
    return 1 if tally.failures else 0


if __name__ == "__main__":
    raise SystemExit(main())
