"""Reader: translates a .tflite flatbuffer into the typed IR, validating every index it uses."""

from __future__ import annotations

import math
import re
from dataclasses import dataclass
from pathlib import Path
from typing import Optional

import numpy as np

from mcugen.errors import McugenError, ModelError, UnsupportedError
from mcugen.ir import (
    Activation,
    BlockAttrs,
    ConcatAttrs,
    Conv2DAttrs,
    DepthwiseConv2DAttrs,
    DType,
    ElementwiseAttrs,
    FullyConnectedAttrs,
    GatherAttrs,
    Graph,
    LeakyReluAttrs,
    MeanAttrs,
    NoAttrs,
    Operator,
    OpType,
    PackAttrs,
    PadAttrs,
    Padding,
    Pool2DAttrs,
    Quant,
    ResizeAttrs,
    SoftmaxAttrs,
    StridedSliceAttrs,
    Tensor,
    TransposeAttrs,
    TransposeConvAttrs,
)
from mcugen.ir import ArgMinMaxAttrs, SqueezeAttrs

MAX_RANK = 6
MAX_ELEMENTS = 2**31 - 1  # the generated C indexes with int32 arithmetic
MAX_FILE_BYTES = 2**31

_TENSOR_TYPES = {
    0: DType.FLOAT32,
    2: DType.INT32,
    3: DType.UINT8,
    4: DType.INT64,
    6: DType.BOOL,
    7: DType.INT16,
    9: DType.INT8,
}
_TENSOR_TYPE_NAMES = {
    1: "float16",
    5: "string",
    8: "complex64",
    10: "float64",
    11: "complex128",
    12: "uint64",
    13: "resource",
    14: "variant",
    15: "uint32",
    16: "uint16",
    17: "int4",
    18: "bfloat16",
}
_ZERO_POINT_RANGES = {DType.INT8: (-128, 127), DType.UINT8: (0, 255), DType.INT16: (-32768, 32767)}
_ACTIVATIONS = {0: Activation.NONE, 1: Activation.RELU, 2: Activation.RELU_N1_TO_1, 3: Activation.RELU6}
_PADDINGS = {0: Padding.SAME, 1: Padding.VALID}


class UnknownOp:
    """An operator the IR has no OpType for; kept so the support check can name it."""

    def __init__(self, name: str):
        self.name = name


def builtin_op_names() -> dict[int, str]:
    import tflite

    return {
        v: k for k, v in vars(tflite.BuiltinOperator).items() if not k.startswith("_") and isinstance(v, int)
    }


def read_tflite(path: str | Path) -> Graph:
    """Read and validate a .tflite file; raise ModelError (one line) on anything malformed."""
    p = Path(path)
    try:
        raw = p.read_bytes()
    except FileNotFoundError:
        raise ModelError(f"{p}: no such file") from None
    except IsADirectoryError:
        raise ModelError(f"{p}: is a directory, expected a .tflite file") from None
    except OSError as e:
        raise ModelError(f"{p}: cannot read ({e.strerror})") from None
    return read_tflite_bytes(raw, name=p.stem, where=str(p))


def read_tflite_bytes(raw: bytes, name: str = "model", where: str = "model") -> Graph:
    if len(raw) < 8 or raw[4:8] != b"TFL3":
        raise ModelError(f"{where}: not a TFLite flatbuffer (missing 'TFL3' identifier); expected a .tflite file")
    if len(raw) > MAX_FILE_BYTES:
        raise ModelError(f"{where}: file of {len(raw)} bytes exceeds the 2 GiB flatbuffer limit")
    problem = verify_flatbuffer(raw)
    if problem:
        raise ModelError(f"{where}: corrupt TFLite flatbuffer ({problem}); the file is truncated or damaged")
    try:
        return _Reader(raw, name, where).read()
    except McugenError:
        raise
    except Exception as e:  # flatbuffers raises anything on corrupt offsets
        raise ModelError(
            f"{where}: corrupt TFLite flatbuffer ({type(e).__name__} while parsing); the file is truncated or damaged"
        ) from None


# ---- structural verification ----------------------------------------------------------------
# Like FlatBuffers' Verifier (which TFLite runs before it reads a model, and TFLite Micro does
# not): every table, vtable, vector and string the schema reaches must lie inside the file, be
# aligned, and strings must be NUL-terminated. The schema is taken from the `tflite` package's
# generated accessors, so every table of the model is covered, including the parts mcugen itself
# never reads (other subgraphs, metadata, signatures) but the oracles and tools do.

_SCALAR_SIZES = {
    "Bool": 1, "Int8": 1, "Uint8": 1, "Int16": 2, "Uint16": 2, "Int32": 4, "Uint32": 4,
    "Int64": 8, "Uint64": 8, "Float32": 4, "Float64": 8,
}
_UNION_ENUMS = {"BuiltinOptions": "BuiltinOptions", "BuiltinOptions2": "BuiltinOptions2",
                "Details": "QuantizationDetails", "ArraySegments": "SparseIndexVector",
                "ArrayIndices": "SparseIndexVector"}
_MAX_DEPTH = 64
_MAX_TABLES = 1_000_000


@dataclass(frozen=True)
class _FieldSpec:
    """One field of a generated table class: its vtable slot and how to verify what it holds."""

    name: str
    slot: int
    kind: str  # scalar | string | table | table_vector | scalar_vector | union
    size: int = 0  # scalar size or vector element size
    cls: Optional[str] = None  # table class name (table, table_vector)


_SCHEMA_CACHE: dict[str, tuple[_FieldSpec, ...]] = {}


def _schema(cls_name: str) -> tuple[_FieldSpec, ...]:
    """The fields of tflite.<cls_name>, parsed once from its generated accessor methods."""
    if cls_name in _SCHEMA_CACHE:
        return _SCHEMA_CACHE[cls_name]
    import inspect

    import tflite

    cls = getattr(tflite, cls_name)
    specs: list[_FieldSpec] = []
    for mname, fn in vars(cls).items():
        if mname.startswith("_") or not callable(fn) or mname.endswith(("Length", "IsNone", "AsNumpy")):
            continue
        try:
            src = inspect.getsource(fn)
        except (OSError, TypeError):
            continue
        m = re.search(r"_tab\.Offset\((\d+)\)", src)
        if not m:
            continue
        slot = int(m.group(1))
        sub = re.search(r"from tflite\.(\w+) import", src)
        flags = re.search(r"number_types\.(\w+)Flags, (a|o) \+", src)
        if "_tab.Union(" in src:
            specs.append(_FieldSpec(mname, slot, "union"))
        elif "_tab.Vector(o)" in src and "Indirect(x)" in src and sub:
            specs.append(_FieldSpec(mname, slot, "table_vector", 4, sub.group(1)))
        elif "_tab.String(o + self._tab.Pos)" in src:
            specs.append(_FieldSpec(mname, slot, "string", 1))
        elif "Indirect(o + self._tab.Pos)" in src and sub:
            specs.append(_FieldSpec(mname, slot, "table", 4, sub.group(1)))
        elif flags and flags.group(2) == "a":
            specs.append(_FieldSpec(mname, slot, "scalar_vector", _SCALAR_SIZES[flags.group(1)]))
        elif flags and flags.group(2) == "o":
            specs.append(_FieldSpec(mname, slot, "scalar", _SCALAR_SIZES[flags.group(1)]))
        else:
            raise RuntimeError(f"tflite.{cls_name}.{mname}: accessor pattern not understood")
    _SCHEMA_CACHE[cls_name] = tuple(sorted(specs, key=lambda f: f.slot))
    return _SCHEMA_CACHE[cls_name]


class _Verifier:
    def __init__(self, raw: bytes):
        self.raw = raw
        self.n = len(raw)
        self.tables = 0
        self.seen: set[tuple[int, Optional[str]]] = set()

    def u16(self, pos: int) -> int:
        return int.from_bytes(self.raw[pos : pos + 2], "little")

    def u32(self, pos: int) -> int:
        return int.from_bytes(self.raw[pos : pos + 4], "little")

    def check(self, ok: bool, what: str) -> None:
        if not ok:
            raise _Corrupt(what)

    def offset_target(self, pos: int, what: str) -> int:
        self.check(pos % 4 == 0 and pos + 4 <= self.n, f"{what}: offset field out of bounds")
        target = pos + self.u32(pos)
        self.check(target < self.n, f"{what}: points beyond the end of the file")
        return target

    def vector(self, pos: int, elem: int, what: str, align: int) -> tuple[int, int]:
        start = self.offset_target(pos, what)
        self.check(start % 4 == 0 and start + 4 <= self.n, f"{what}: vector header out of bounds")
        count = self.u32(start)
        self.check(start + 4 + count * elem <= self.n, f"{what}: {count} elements run past the end of the file")
        # At most 4-byte alignment is required: tflite-runtime and TFLite Micro read an int64
        # vector (a zero-point list) whose elements start at 4 mod 8, which real models contain.
        self.check((start + 4) % min(max(align, 1), 4) == 0 or count == 0, f"{what}: misaligned vector")
        return start + 4, count

    def table(self, pos: int, cls: Optional[str], what: str, depth: int) -> None:
        if (pos, cls) in self.seen:
            return
        self.seen.add((pos, cls))
        self.tables += 1
        self.check(self.tables <= _MAX_TABLES, "too many tables")
        self.check(depth <= _MAX_DEPTH, f"{what}: nested too deeply")
        self.check(pos % 4 == 0 and pos + 4 <= self.n, f"{what}: table out of bounds")
        soff = int.from_bytes(self.raw[pos : pos + 4], "little", signed=True)
        vt = pos - soff
        self.check(0 <= vt and vt % 2 == 0 and vt + 4 <= self.n, f"{what}: vtable out of bounds")
        vsize, tsize = self.u16(vt), self.u16(vt + 2)
        self.check(vsize >= 4 and vsize % 2 == 0 and vt + vsize <= self.n, f"{what}: vtable size {vsize} invalid")
        self.check(tsize >= 4 and pos + tsize <= self.n, f"{what}: table size {tsize} out of bounds")
        if cls is None:
            return

        def field_pos(slot: int) -> Optional[int]:
            if slot >= vsize:
                return None
            voff = self.u16(vt + slot)
            return pos + voff if voff else None

        for f in _schema(cls):
            fp = field_pos(f.slot)
            if fp is None:
                continue
            fwhat = f"{what}.{f.name}"
            if f.kind == "scalar":
                self.check(fp + f.size <= pos + tsize and fp % f.size == 0, f"{fwhat}: field out of bounds")
            elif f.kind == "string":
                start, count = self.vector(fp, 1, fwhat, 1)
                self.check(start + count < self.n and self.raw[start + count] == 0, f"{fwhat}: string not terminated")
            elif f.kind == "scalar_vector":
                self.vector(fp, f.size, fwhat, f.size)
            elif f.kind == "table":
                self.table(self.offset_target(fp, fwhat), f.cls, fwhat, depth + 1)
            elif f.kind == "table_vector":
                start, count = self.vector(fp, 4, fwhat, 4)
                for k in range(count):
                    self.table(self.offset_target(start + 4 * k, f"{fwhat}[{k}]"), f.cls, f"{fwhat}[{k}]", depth + 1)
            elif f.kind == "union":
                tp = field_pos(f.slot - 2)
                utype = self.raw[tp] if tp is not None and tp < self.n else 0
                if utype == 0:
                    continue
                self.table(self.offset_target(fp, fwhat), _union_class(f.name, utype), fwhat, depth + 1)


class _Corrupt(Exception):
    pass


def _union_class(field_name: str, utype: int) -> Optional[str]:
    import tflite

    enum = getattr(tflite, _UNION_ENUMS.get(field_name, ""), None)
    if enum is None:
        return None
    for k, v in vars(enum).items():
        if v == utype and not k.startswith("_") and isinstance(getattr(tflite, k, None), type):
            return k
    return None


def verify_flatbuffer(raw: bytes) -> Optional[str]:
    """None if every table/vector/string of the model lies inside the file; else what is wrong."""
    v = _Verifier(raw)
    try:
        v.table(v.offset_target(0, "root"), "Model", "model", 0)
    except _Corrupt as e:
        return str(e)
    return None


class _Reader:
    def __init__(self, raw: bytes, name: str, where: str):
        import tflite

        self.tfl = tflite
        self.raw = raw
        self.buf = bytearray(raw)
        self.name = name
        self.where = where
        self.model = tflite.Model.GetRootAsModel(self.buf, 0)
        self.op_names = builtin_op_names()

    def fail(self, msg: str) -> ModelError:
        return ModelError(f"{self.where}: {msg}")

    def read(self) -> Graph:
        m = self.model
        if m.SubgraphsLength() < 1:
            raise self.fail("the model has no subgraph")
        if m.SubgraphsLength() > 1:
            raise UnsupportedError(
                f"{self.where}: the model has {m.SubgraphsLength()} subgraphs (control flow); only single-subgraph models are supported"
            )
        sg = m.Subgraphs(0)
        n_tensors = sg.TensorsLength()
        n_buffers = m.BuffersLength()
        tensors = [self.read_tensor(sg.Tensors(i), i, n_buffers) for i in range(n_tensors)]
        inputs = self.index_list(sg.InputsAsNumpy() if sg.InputsLength() else [], n_tensors, "graph input")
        outputs = self.index_list(sg.OutputsAsNumpy() if sg.OutputsLength() else [], n_tensors, "graph output")
        if not inputs:
            raise self.fail("the model has no inputs")
        if not outputs:
            raise self.fail("the model has no outputs")
        operators = [self.read_operator(sg.Operators(i), i, tensors) for i in range(sg.OperatorsLength())]
        desc = m.Description()
        graph = Graph(
            name=self.name,
            tensors=tensors,
            operators=operators,
            inputs=inputs,
            outputs=outputs,
            description=desc.decode("utf-8", "replace") if desc else "",
        )
        self.check_dataflow(graph)
        return graph

    def index_list(self, values, n: int, what: str) -> list[int]:
        out = []
        for v in values:
            v = int(v)
            if v < 0 or v >= n:
                raise self.fail(f"{what} refers to tensor {v}, but the model has {n} tensors")
            out.append(v)
        return out

    # ---- tensors --------------------------------------------------------------------

    def read_tensor(self, t, index: int, n_buffers: int) -> Tensor:
        raw_name = t.Name()
        name = raw_name.decode("utf-8", "replace") if raw_name else f"tensor_{index}"
        label = f"tensor {index} ('{_short(name)}')"
        ttype = t.Type()
        if ttype not in _TENSOR_TYPES and ttype not in _TENSOR_TYPE_NAMES:
            raise self.fail(f"{label} has unknown type code {ttype}; the TFLite schema defines codes 0-18")
        if ttype not in _TENSOR_TYPES:
            tname = _TENSOR_TYPE_NAMES[ttype]
            dtype = DType.OTHER
            other_type = tname
        else:
            dtype = _TENSOR_TYPES[ttype]
            other_type = None
        shape = tuple(int(d) for d in (t.ShapeAsNumpy() if t.ShapeLength() else []))
        if len(shape) > MAX_RANK:
            raise self.fail(f"{label} has rank {len(shape)}; at most {MAX_RANK} is supported")
        # Like TFLite Micro, the static `shape` is what counts; a shape_signature of -1 (a
        # dynamic batch) is accepted where `shape` itself gives the size.
        if any(d < 0 for d in shape):
            raise self.fail(
                f"{label} has a dynamic shape {list(shape)}; only static shapes are supported (fix the batch size before converting)"
            )
        # A dimension of 0 is legal TFLite (an LSTM's unused intermediates have shape [0]); the
        # support check refuses an operator mcugen would run on such a tensor.
        n = 1
        for d in shape:
            n *= d
            if n > MAX_ELEMENTS:
                raise self.fail(f"{label} has shape {list(shape)}: more than 2^31-1 elements")
        if n * dtype.itemsize > MAX_ELEMENTS:
            raise self.fail(f"{label} has {n * dtype.itemsize} bytes: more than 2^31-1")
        quant = self.read_quant(t.Quantization(), label, shape, dtype)
        if t.Sparsity() is not None:
            raise self.fail(f"{label} is sparse; sparse tensors are not supported")
        data = None
        b = t.Buffer()
        if b < 0 or b >= max(n_buffers, 1):
            raise self.fail(f"{label} refers to buffer {b}, but the model has {n_buffers} buffers")
        if b > 0:
            data = self.read_buffer(b, label, shape, dtype, other_type)
        tensor = Tensor(
            index=index, name=name, shape=shape, dtype=dtype, quant=quant, data=data, is_variable=bool(t.IsVariable())
        )
        tensor.other_type = other_type  # type: ignore[attr-defined]
        return tensor

    def read_buffer(self, b: int, label: str, shape, dtype: DType, other_type) -> Optional[np.ndarray]:
        buf = self.model.Buffers(b)
        offset, size = buf.Offset(), buf.Size()
        if offset > 1:
            if offset + size > len(self.raw):
                raise self.fail(f"{label}: buffer {b} lies beyond the end of the file")
            blob = self.raw[offset : offset + size]
        elif buf.DataLength() > 0:
            blob = buf.DataAsNumpy().tobytes()
        else:
            return None
        if other_type is not None:
            return np.frombuffer(blob, dtype=np.uint8).copy()
        n = 1
        for d in shape:
            n *= d
        need = n * dtype.itemsize
        if len(blob) != need:
            raise self.fail(
                f"{label}: buffer {b} holds {len(blob)} bytes but shape {list(shape)} of {dtype.value} needs {need}"
            )
        return np.frombuffer(blob, dtype=dtype.numpy.newbyteorder("<")).astype(dtype.numpy).reshape(shape)

    def read_quant(self, q, label: str, shape, dtype: DType) -> Optional[Quant]:
        if q is None or q.ScaleLength() == 0:
            return None
        scale = q.ScaleAsNumpy().astype(np.float32)
        zp = q.ZeroPointAsNumpy().astype(np.int64) if q.ZeroPointLength() else np.zeros(0, np.int64)
        axis = int(q.QuantizedDimension())
        # A scale of 0 on a tensor that is not 8-bit is left to the support check (a 16x8 model's
        # int16/int64 constants have one; the real reason to refuse is the int16 activations).
        ok = np.isfinite(scale) & ((scale > 0) | ((scale == 0) & (dtype not in (DType.INT8, DType.UINT8))))
        if not np.all(ok):
            bad = scale[~(np.isfinite(scale) & (scale > 0))][0]
            raise self.fail(f"{label} has quantization scale {bad}; scales must be finite and positive")
        if zp.size != scale.size:  # as TFLite requires (TFLite Micro does not check, and misreads)
            raise self.fail(f"{label} has {scale.size} scales but {zp.size} zero points; they must match")
        zp_range = _ZERO_POINT_RANGES.get(dtype)
        if zp_range is not None and zp.size and (zp.min() < zp_range[0] or zp.max() > zp_range[1]):
            bad = int(zp[(zp < zp_range[0]) | (zp > zp_range[1])][0])
            raise self.fail(
                f"{label} has zero point {bad} outside the {dtype.value} range [{zp_range[0]}, {zp_range[1]}]"
            )
        if zp.size == 1 and scale.size > 1:
            zp = np.repeat(zp, scale.size)
        if scale.size > 1:
            rank = len(shape)
            if rank == 1 and scale.size == shape[0]:
                # Accept what TFLite Micro accepts: a rank-1 per-channel tensor (e.g. a depthwise
                # bias) may carry the filter's quantized_dimension (person_detect.tflite has 3).
                axis = 0
            elif axis < 0 or axis >= rank:
                raise self.fail(f"{label} has quantized_dimension {axis} but rank {rank}")
            if shape[axis] != scale.size:
                raise self.fail(
                    f"{label} has {scale.size} scales on axis {axis} of size {shape[axis]}; they must match"
                )
        else:
            axis = 0
        return Quant(scale=scale, zero_point=zp, axis=axis)

    # ---- operators ------------------------------------------------------------------

    def read_operator(self, o, index: int, tensors: list[Tensor]) -> Operator:
        m = self.model
        oc_index = o.OpcodeIndex()
        if oc_index < 0 or oc_index >= m.OperatorCodesLength():
            raise self.fail(f"operator {index} refers to opcode {oc_index}, but the model has {m.OperatorCodesLength()}")
        oc = m.OperatorCodes(oc_index)
        code = max(int(oc.BuiltinCode()), int(oc.DeprecatedBuiltinCode()))
        opname = self.op_names.get(code, f"BUILTIN_{code}")
        if opname == "CUSTOM":
            cc = oc.CustomCode()
            opname = f"CUSTOM({cc.decode('utf-8', 'replace') if cc else '?'})"
        n = len(tensors)
        ins = [int(v) for v in (o.InputsAsNumpy() if o.InputsLength() else [])]
        outs = [int(v) for v in (o.OutputsAsNumpy() if o.OutputsLength() else [])]
        for v in ins:
            if v < -1 or v >= n:
                raise self.fail(f"operator {index} ({opname}) input refers to tensor {v}, but the model has {n} tensors")
        for v in outs:
            if v < 0 or v >= n:
                raise self.fail(f"operator {index} ({opname}) output refers to tensor {v}, but the model has {n} tensors")
        try:
            optype = OpType(opname)
        except ValueError:
            op = Operator(index=index, op=None, inputs=ins, outputs=outs)  # type: ignore[arg-type]
            op.unknown_name = opname  # type: ignore[attr-defined]
            return op
        attrs = self.read_attrs(o, optype, index, ins, tensors)
        return Operator(index=index, op=optype, inputs=ins, outputs=outs, attrs=attrs)

    def _options(self, o, cls, label: str):
        """The operator's builtin options as `cls`, None if absent; a table of another type is an error
        (TFLite would silently fall back to zeroed defaults for it)."""
        table = o.BuiltinOptions()
        otype = int(o.BuiltinOptionsType())
        if table is None or otype == 0:
            return None
        want = getattr(self.tfl.BuiltinOptions, cls.__name__)
        if otype != want:
            names = {v: k for k, v in vars(self.tfl.BuiltinOptions).items() if isinstance(v, int)}
            raise self.fail(
                f"{label} carries builtin options of type {names.get(otype, otype)}; expected {cls.__name__}"
            )
        opts = cls()
        opts.Init(table.Bytes, table.Pos)
        return opts

    def read_attrs(self, o, optype: OpType, index: int, ins: list[int], tensors: list[Tensor]):
        tfl = self.tfl
        label = f"operator {index} ({optype.value})"

        def act(code):
            return _ACTIVATIONS.get(int(code), Activation.OTHER)

        def pad(code):
            if int(code) not in _PADDINGS:
                raise self.fail(f"{label} has unknown padding code {code}")
            return _PADDINGS[int(code)]

        def positive(v, what):
            v = int(v)
            if v <= 0:
                raise self.fail(f"{label} has {what} {v}; it must be positive")
            return v

        if optype in (OpType.CONV_2D, OpType.DEPTHWISE_CONV_2D):
            depthwise = optype is OpType.DEPTHWISE_CONV_2D
            opt = self._options(o, tfl.DepthwiseConv2DOptions if depthwise else tfl.Conv2DOptions, label)
            if opt is None:
                raise self.fail(f"{label} has no options")
            window = dict(
                stride_h=positive(opt.StrideH(), "stride_h"),
                stride_w=positive(opt.StrideW(), "stride_w"),
                dilation_h=positive(opt.DilationHFactor(), "dilation_h"),
                dilation_w=positive(opt.DilationWFactor(), "dilation_w"),
                padding=pad(opt.Padding()),
                activation=act(opt.FusedActivationFunction()),
            )
            if depthwise:
                return DepthwiseConv2DAttrs(**window, depth_multiplier=int(opt.DepthMultiplier()))
            return Conv2DAttrs(**window)
        if optype is OpType.FULLY_CONNECTED:
            opt = self._options(o, tfl.FullyConnectedOptions, label)
            if opt is None:
                return FullyConnectedAttrs(activation=Activation.NONE, keep_num_dims=False)
            if int(opt.WeightsFormat()) != 0:
                raise self.fail(f"{label} uses shuffled weights; only the DEFAULT weights format is supported")
            return FullyConnectedAttrs(activation=act(opt.FusedActivationFunction()), keep_num_dims=bool(opt.KeepNumDims()))
        if optype in (OpType.ADD, OpType.SUB, OpType.MUL):
            cls = {OpType.ADD: tfl.AddOptions, OpType.SUB: tfl.SubOptions, OpType.MUL: tfl.MulOptions}[optype]
            opt = self._options(o, cls, label)
            pot = bool(opt.PotScaleInt16()) if opt is not None and hasattr(opt, "PotScaleInt16") else True
            return ElementwiseAttrs(activation=act(opt.FusedActivationFunction()) if opt else Activation.NONE,
                                    pot_scale_int16=pot)
        if optype in (OpType.MINIMUM, OpType.MAXIMUM, OpType.SQUARED_DIFFERENCE):
            return ElementwiseAttrs(activation=Activation.NONE)
        if optype in (OpType.AVERAGE_POOL_2D, OpType.MAX_POOL_2D):
            opt = self._options(o, tfl.Pool2DOptions, label)
            if opt is None:
                raise self.fail(f"{label} has no options")
            return Pool2DAttrs(
                filter_h=positive(opt.FilterHeight(), "filter_height"),
                filter_w=positive(opt.FilterWidth(), "filter_width"),
                stride_h=positive(opt.StrideH(), "stride_h"),
                stride_w=positive(opt.StrideW(), "stride_w"),
                padding=pad(opt.Padding()),
                activation=act(opt.FusedActivationFunction()),
            )
        if optype is OpType.SOFTMAX:
            opt = self._options(o, tfl.SoftmaxOptions, label)
            if opt is None:  # TFLite would run it with beta 0
                raise self.fail(f"{label} has no options (beta)")
            beta = float(opt.Beta())
            if not math.isfinite(beta) or beta <= 0:
                raise self.fail(f"{label} has beta {beta}; it must be finite and positive")
            return SoftmaxAttrs(beta=beta)
        if optype in (OpType.MEAN, OpType.SUM, OpType.REDUCE_MAX):
            opt = self._options(o, tfl.ReducerOptions, label)
            axes_t = self.const_input(ins, 1, tensors, label, "axes")
            rank = len(self.input_tensor(ins, 0, tensors, label).shape)
            axes = []
            for a in np.asarray(axes_t).reshape(-1).tolist():
                a = int(a)
                if a < -rank or a >= rank:
                    raise self.fail(f"{label} reduces axis {a} of a rank-{rank} tensor")
                a = a % rank
                if a not in axes:
                    axes.append(a)
            return MeanAttrs(axes=tuple(sorted(axes)), keep_dims=bool(opt.KeepDims()) if opt else False)
        if optype in (OpType.DEPTH_TO_SPACE, OpType.SPACE_TO_DEPTH):
            cls = tfl.DepthToSpaceOptions if optype is OpType.DEPTH_TO_SPACE else tfl.SpaceToDepthOptions
            opt = self._options(o, cls, label)
            return BlockAttrs(block=positive(opt.BlockSize() if opt else 0, "block size"))
        if optype in (OpType.PAD, OpType.PADV2):
            p = np.asarray(self.const_input(ins, 1, tensors, label, "paddings")).astype(np.int64)
            rank = len(self.input_tensor(ins, 0, tensors, label).shape)
            if p.shape != (rank, 2):
                raise self.fail(f"{label} has paddings of shape {list(p.shape)}; expected [{rank}, 2]")
            if np.any(p < 0) or np.any(p > MAX_ELEMENTS):
                raise self.fail(f"{label} has paddings {p.tolist()}; they must be non-negative")
            return PadAttrs(paddings=tuple((int(a), int(b)) for a, b in p))
        if optype is OpType.TRANSPOSE:
            perm = [int(v) for v in np.asarray(self.const_input(ins, 1, tensors, label, "perm")).reshape(-1)]
            rank = len(self.input_tensor(ins, 0, tensors, label).shape)
            if sorted(perm) != list(range(rank)):
                raise self.fail(f"{label} has perm {perm}; expected a permutation of 0..{rank - 1}")
            return TransposeAttrs(perm=tuple(perm))
        if optype is OpType.LEAKY_RELU:
            opt = self._options(o, tfl.LeakyReluOptions, label)
            alpha = float(np.float32(opt.Alpha())) if opt else 0.0
            if not math.isfinite(alpha):
                raise self.fail(f"{label} has alpha {alpha}; it must be finite")
            return LeakyReluAttrs(alpha=alpha)
        if optype is OpType.CONCATENATION:
            opt = self._options(o, tfl.ConcatenationOptions, label)
            rank = len(self.input_tensor(ins, 0, tensors, label).shape)
            axis = int(opt.Axis()) if opt else 0
            if not -rank <= axis < max(rank, 1):
                raise self.fail(f"{label} concatenates along axis {axis} of a rank-{rank} tensor")
            return ConcatAttrs(axis=axis % max(rank, 1), activation=act(opt.FusedActivationFunction()) if opt else Activation.NONE)
        if optype in (OpType.RESIZE_NEAREST_NEIGHBOR, OpType.RESIZE_BILINEAR):
            cls = tfl.ResizeNearestNeighborOptions if optype is OpType.RESIZE_NEAREST_NEIGHBOR else tfl.ResizeBilinearOptions
            opt = self._options(o, cls, label)
            if opt is None:
                return ResizeAttrs(False, False)
            return ResizeAttrs(bool(opt.AlignCorners()), bool(opt.HalfPixelCenters()))
        if optype is OpType.STRIDED_SLICE:
            opt = self._options(o, tfl.StridedSliceOptions, label)
            if opt is None:
                return StridedSliceAttrs(0, 0, 0, 0, 0, False)
            return StridedSliceAttrs(
                int(opt.BeginMask()), int(opt.EndMask()), int(opt.EllipsisMask()), int(opt.NewAxisMask()),
                int(opt.ShrinkAxisMask()), bool(opt.Offset()),
            )
        if optype is OpType.UNPACK:
            opt = self._options(o, tfl.UnpackOptions, label)
            return PackAttrs(axis=int(opt.Axis()) if opt else 0, values_count=int(opt.Num()) if opt else int(o.OutputsLength()))
        if optype is OpType.PACK:
            opt = self._options(o, tfl.PackOptions, label)
            return PackAttrs(axis=int(opt.Axis()) if opt else 0, values_count=int(opt.ValuesCount()) if opt else len(ins))
        if optype is OpType.TRANSPOSE_CONV:
            opt = self._options(o, tfl.TransposeConvOptions, label)
            if opt is None:
                raise self.fail(f"{label} has no options")
            return TransposeConvAttrs(
                stride_h=positive(opt.StrideH(), "stride_h"),
                stride_w=positive(opt.StrideW(), "stride_w"),
                padding=pad(opt.Padding()),
                activation=act(opt.FusedActivationFunction()),
            )
        if optype is OpType.GATHER:
            opt = self._options(o, tfl.GatherOptions, label)
            return GatherAttrs(axis=int(opt.Axis()) if opt else 0, batch_dims=int(opt.BatchDims()) if opt else 0)
        if optype in (OpType.ARG_MAX, OpType.ARG_MIN):
            axis_t = np.asarray(self.const_input(ins, 1, tensors, label, "axis")).reshape(-1)
            rank = len(self.input_tensor(ins, 0, tensors, label).shape)
            if axis_t.size != 1 or not -rank <= int(axis_t[0]) < rank:
                raise self.fail(f"{label} has axis {axis_t.tolist()} for a rank-{rank} input; expected one axis in [{-rank}, {rank})")
            opt = self._options(o, tfl.ArgMaxOptions if optype is OpType.ARG_MAX else tfl.ArgMinOptions, label)
            index_type = _TENSOR_TYPES.get(int(opt.OutputType()), DType.OTHER) if opt is not None else None
            return ArgMinMaxAttrs(axis=int(axis_t[0]) % rank, output_type=index_type)
        if optype is OpType.SQUEEZE:
            opt = self._options(o, tfl.SqueezeOptions, label)
            dims = opt.SqueezeDimsAsNumpy() if opt is not None and opt.SqueezeDimsLength() else []
            return SqueezeAttrs(squeeze_dims=tuple(int(d) for d in dims))
        return NoAttrs()

    def input_tensor(self, ins, k, tensors, label) -> Tensor:
        if len(ins) <= k or ins[k] < 0:
            raise self.fail(f"{label} lacks input {k}")
        return tensors[ins[k]]

    def const_input(self, ins, k, tensors, label, what):
        t = self.input_tensor(ins, k, tensors, label)
        if t.data is None:
            raise self.fail(f"{label}: {what} (input {k}, tensor {t.index}) must be a constant tensor")
        return t.data

    def check_dataflow(self, g: Graph) -> None:
        """Every tensor an operator reads is constant, a graph input, or written by an earlier operator.
        Variable tensors (a recurrent operator's state) and the reads of operators the support check
        refuses anyway are left to that check, so that its message names the real blocker."""
        from mcugen.supported import REFUSED_OPS

        ready = set(g.inputs) | {t.index for t in g.tensors if t.is_const or t.is_variable}
        written: set[int] = set()
        for op in g.operators:
            name = op.op.value if op.op is not None else getattr(op, "unknown_name", "?")
            refused = op.op is None or op.op.value in REFUSED_OPS
            for i in op.inputs:
                if i >= 0 and i not in ready and not refused:
                    raise self.fail(
                        f"operator {op.index} ({name}) reads tensor {i} ('{_short(g.tensors[i].name)}') before any operator writes it"
                    )
            for i in op.outputs:
                if i in written or g.tensors[i].is_const or i in g.inputs:
                    raise self.fail(
                        f"operator {op.index} ({name}) writes tensor {i} ('{_short(g.tensors[i].name)}'), which is already a constant, an input or another operator's output"
                    )
                written.add(i)
                ready.add(i)
        for i in g.outputs:
            if i not in ready:
                raise self.fail(f"graph output tensor {i} is never written")


def _short(name: str, limit: int = 60) -> str:
    """A printable, bounded form of a model-supplied name for error messages."""
    clean = "".join(c if c.isprintable() and c not in "\r\n" else "?" for c in name)
    return clean if len(clean) <= limit else clean[: limit - 3] + "..."
