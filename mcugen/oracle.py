"""Reference oracles: run a .tflite with TFLite's reference kernels or TFLite Micro for exact expected outputs."""

from __future__ import annotations

import contextlib
import ctypes
import importlib
import os
import re
import sys
import tempfile
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Callable, Iterator, Sequence

import numpy as np

from mcugen.errors import McugenError, ToolError

# Quieten TensorFlow's C++ logging before any TFLite extension is imported.
os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "2")

# tflite-runtime 2.14 loaded after TensorFlow in one process misreads some models (e.g. the
# signature defs of a two-input, two-output model: "vector::reserve"); loaded first, both work.
# So it is loaded now, while importing this module, unless TensorFlow already is.
_TENSORFLOW_FIRST = "tensorflow" in sys.modules and "tflite_runtime.interpreter" not in sys.modules
if not _TENSORFLOW_FIRST:
    try:
        import tflite_runtime.interpreter  # noqa: F401
    except ImportError:
        pass

ORACLE_TFLITE_RUNTIME_REF = "tflite-runtime-ref"
ORACLE_LITERT_REF = "litert-ref"
ORACLE_TFLITE_MICRO = "tflite-micro"

# TFLite TensorType enum value -> numpy dtype (only the types a model's inputs,
# outputs or intermediates can have in the models mcugen handles).
_TENSOR_TYPE_TO_DTYPE: dict[int, np.dtype] = {
    0: np.dtype(np.float32),
    1: np.dtype(np.float16),
    2: np.dtype(np.int32),
    3: np.dtype(np.uint8),
    4: np.dtype(np.int64),
    6: np.dtype(np.bool_),
    7: np.dtype(np.int16),
    9: np.dtype(np.int8),
    10: np.dtype(np.float64),
    15: np.dtype(np.uint32),
    16: np.dtype(np.uint16),
}

# RESHAPE, SQUEEZE, EXPAND_DIMS: outputs that may share their input's memory and bytes.
_VIEW_OPS = frozenset({22, 43, 70})
# ARG_MAX, ARG_MIN: TFLite Micro's kernel writes int32 indices only (an int64 output fails at Eval).
_ARG_OPS = frozenset({56, 79})
# SUM: tflite-runtime 2.14's reference int8 kernel is off by up to ~200 steps from the float
# definition on converter-made models, where TFLite Micro stays within 1 (README, "Supported
# operators"): TFLite Micro is the oracle for models with an int8 SUM.
_SUM = 74

_TFLM_ARENA_TOTAL_RE = re.compile(r"Arena allocation total (\d+) bytes")


@dataclass(frozen=True)
class TensorSignature:
    """Shape and dtype of one graph input or output, as stored in the flatbuffer."""

    tensor_index: int
    shape: tuple[int, ...]
    dtype: np.dtype


@dataclass(frozen=True)
class ModelSignature:
    """What an oracle needs to know about subgraph 0 of a model, read from the flatbuffer."""

    inputs: tuple[TensorSignature, ...]
    outputs: tuple[TensorSignature, ...]
    num_tensors: int
    activation_bytes: int  # sum of the sizes of all tensors without constant data
    producers: tuple[int, ...]  # per tensor: index of the operator writing it, -1 if none
    views: frozenset[int]  # tensors written by RESHAPE/SQUEEZE/EXPAND_DIMS (same bytes as their input)
    tflm_refusal: str = ""  # why TFLite Micro cannot run the model though it loads it ("" if it can)
    ref_refusal: str = ""  # why the reference kernels are no oracle for the model though they run it


def _first_line(text: str) -> str:
    """The first non-empty line of `text`, stripped (empty string if none)."""
    for line in str(text).splitlines():
        if line.strip():
            return line.strip()
    return ""


def _read_model_bytes(model_path: Path) -> bytes:
    try:
        return Path(model_path).read_bytes()
    except OSError as exc:
        raise ToolError(f"cannot read model {model_path}: {exc.strerror or exc}") from exc


def read_signature(model_bytes: bytes, model_path: Path) -> ModelSignature:
    """Read the graph inputs/outputs and tensor sizes of subgraph 0 from the flatbuffer."""
    import tflite  # flatbuffer schema bindings

    try:
        model = tflite.Model.GetRootAsModel(model_bytes, 0)
        if model.SubgraphsLength() < 1:
            raise ValueError("no subgraph")
        subgraph = model.Subgraphs(0)

        def tensor_signature(index: int) -> TensorSignature:
            tensor = subgraph.Tensors(index)
            type_code = tensor.Type()
            if type_code not in _TENSOR_TYPE_TO_DTYPE:
                raise ValueError(f"tensor {index} has unsupported type code {type_code}")
            shape = tuple(int(d) for d in tensor.ShapeAsNumpy()) if tensor.ShapeLength() else ()
            return TensorSignature(index, shape, _TENSOR_TYPE_TO_DTYPE[type_code])

        inputs = tuple(tensor_signature(int(i)) for i in subgraph.InputsAsNumpy())
        outputs = tuple(tensor_signature(int(i)) for i in subgraph.OutputsAsNumpy())
        activation_bytes = 0
        for index in range(subgraph.TensorsLength()):
            tensor = subgraph.Tensors(index)
            buffer = model.Buffers(tensor.Buffer()) if tensor.Buffer() < model.BuffersLength() else None
            if buffer is not None and (buffer.DataLength() > 0 or buffer.Size() > 0):
                continue  # constant data lives in the flatbuffer, not in the arena
            itemsize = _TENSOR_TYPE_TO_DTYPE.get(tensor.Type(), np.dtype(np.int64)).itemsize
            elements = int(np.prod(tensor.ShapeAsNumpy())) if tensor.ShapeLength() else 1
            activation_bytes += max(elements, 1) * itemsize
        producers = [-1] * subgraph.TensorsLength()
        views = set()
        tflm_refusal = ref_refusal = ""
        for op_index in range(subgraph.OperatorsLength()):
            operator = subgraph.Operators(op_index)
            code = model.OperatorCodes(operator.OpcodeIndex())
            builtin = max(code.BuiltinCode(), code.DeprecatedBuiltinCode())
            if (builtin == _SUM and not ref_refusal and operator.InputsLength()
                    and subgraph.Tensors(int(operator.Inputs(0))).Type() == 9):  # int8
                ref_refusal = (f"operator {op_index} (SUM): the reference int8 SUM of tflite-runtime is off by up "
                               "to ~200 steps from the float definition, TFLite Micro's is not")
            for tensor_index in operator.OutputsAsNumpy() if operator.OutputsLength() else ():
                if 0 <= tensor_index < len(producers):
                    producers[int(tensor_index)] = op_index
                    if builtin in _VIEW_OPS:
                        views.add(int(tensor_index))
                    if builtin in _ARG_OPS and subgraph.Tensors(int(tensor_index)).Type() == 4 and not tflm_refusal:
                        tflm_refusal = (f"operator {op_index} (ARG_{'MAX' if builtin == 56 else 'MIN'}) writes int64 "
                                        "indices; its kernel supports int32 only")
        return ModelSignature(
            inputs, outputs, subgraph.TensorsLength(), activation_bytes, tuple(producers), frozenset(views), tflm_refusal,
            ref_refusal,
        )
    except Exception as exc:  # the flatbuffer library raises assorted errors on garbage
        reason = _first_line(str(exc)) or type(exc).__name__
        raise ToolError(f"cannot read {model_path} as a TFLite model: {reason}") from exc


@contextlib.contextmanager
def _captured_stderr() -> Iterator[Callable[[], str]]:
    """Redirect file descriptor 2 (where the C++ runtimes log) into a buffer for the duration.

    Yields a function returning what was written so far. The process's stderr is restored on exit.
    """
    libc = ctypes.CDLL(None)
    with tempfile.TemporaryFile(mode="w+b") as sink:
        libc.fflush(None)
        saved_fd = os.dup(2)
        os.dup2(sink.fileno(), 2)

        def read() -> str:
            libc.fflush(None)
            sink.seek(0)
            return sink.read().decode("utf-8", errors="replace")

        try:
            yield read
        finally:
            libc.fflush(None)
            os.dup2(saved_fd, 2)
            os.close(saved_fd)


class Oracle:
    """One reference interpreter loaded with one model.

    `run` executes the model once and returns the graph outputs; `run_all_tensors` returns
    every tensor (by TFLite tensor index) after one run. Inputs are given in graph-input order
    with exactly the model's shapes and dtypes; they and the outputs are copied, so callers
    may modify either freely.
    """

    name: str = "oracle"

    def __init__(self, model_path: Path, model_bytes: bytes, signature: ModelSignature):
        self.model_path = Path(model_path)
        self.signature = signature
        self._model_bytes = model_bytes

    def run(self, inputs: Sequence[np.ndarray]) -> list[np.ndarray]:
        raise NotImplementedError

    def run_all_tensors(self, inputs: Sequence[np.ndarray]) -> dict[int, np.ndarray]:
        raise NotImplementedError

    def __repr__(self) -> str:
        return f"<{type(self).__name__} {self.name} {self.model_path.name}>"

    def _checked_inputs(self, inputs: Sequence[np.ndarray]) -> list[np.ndarray]:
        """Copies of `inputs`, after checking their count, shapes and dtypes against the model."""
        expected = self.signature.inputs
        if len(inputs) != len(expected):
            raise ToolError(
                f"oracle {self.name}: got {len(inputs)} inputs for {self.model_path.name}, which has {len(expected)}"
            )
        checked = []
        for position, (array, spec) in enumerate(zip(inputs, expected)):
            array = np.asarray(array)
            if array.dtype != spec.dtype or tuple(array.shape) != spec.shape:
                raise ToolError(
                    f"oracle {self.name}: input {position} of {self.model_path.name} is "
                    f"{array.dtype}{list(array.shape)}, the model expects {spec.dtype}{list(spec.shape)}"
                )
            checked.append(np.array(array, copy=True, order="C"))  # keeps 0-d arrays 0-d
        return checked


def _reference_interpreter_api(module_name: str) -> tuple[Any, Any]:
    """(Interpreter class, OpResolverType enum) of a tflite-runtime-like module; ImportError if absent."""
    module = importlib.import_module(module_name)
    interpreter_class = getattr(module, "Interpreter", None)
    resolver_enum = getattr(module, "OpResolverType", None)
    if interpreter_class is None or resolver_enum is None or not hasattr(resolver_enum, "BUILTIN_REF"):
        raise ImportError(f"{module_name} has no Interpreter with OpResolverType.BUILTIN_REF")
    return interpreter_class, resolver_enum


# Reference-kernel interpreters in order of preference: (oracle name, module to import).
_REFERENCE_MODULES: tuple[tuple[str, str], ...] = (
    (ORACLE_TFLITE_RUNTIME_REF, "tflite_runtime.interpreter"),
    (ORACLE_LITERT_REF, "ai_edge_litert.interpreter"),
)


def reference_backend() -> tuple[str, Any, Any] | None:
    """The first importable reference-kernel interpreter: (oracle name, Interpreter, OpResolverType).

    tflite-runtime is preferred; ai-edge-litert is used only where tflite_runtime is not
    importable. None if neither is.
    """
    for oracle_name, module_name in _REFERENCE_MODULES:
        try:
            interpreter_class, resolver_enum = _reference_interpreter_api(module_name)
        except ImportError:
            continue
        return oracle_name, interpreter_class, resolver_enum
    return None


class ReferenceKernelOracle(Oracle):
    """TFLite's own interpreter (tflite-runtime or ai-edge-litert) with the BUILTIN_REF kernels."""

    def __init__(
        self,
        model_path: Path,
        model_bytes: bytes,
        signature: ModelSignature,
        backend: tuple[str, Any, Any] | None = None,
    ):
        super().__init__(model_path, model_bytes, signature)
        if signature.ref_refusal:
            raise ToolError(f"the reference kernels are no oracle for {model_path.name}: {signature.ref_refusal}")
        backend = backend if backend is not None else reference_backend()
        if backend is None:
            raise ToolError("no reference-kernel interpreter: install tflite-runtime (or ai-edge-litert)")
        self.name, self._interpreter_class, self._resolver_enum = backend
        self._interpreters: dict[bool, Any] = {}
        self._interpreter(preserve_all_tensors=False)  # load now: refusal must surface here

    def _interpreter(self, preserve_all_tensors: bool) -> Any:
        if preserve_all_tensors not in self._interpreters:
            with _captured_stderr() as logged:
                try:
                    interpreter = self._interpreter_class(
                        model_content=self._model_bytes,
                        experimental_op_resolver_type=self._resolver_enum.BUILTIN_REF,
                        experimental_preserve_all_tensors=preserve_all_tensors,
                        num_threads=1,
                    )
                    interpreter.allocate_tensors()
                except Exception as exc:  # the runtimes raise ValueError/RuntimeError with C++ logs
                    reason = _first_line(str(exc)) or _first_line(logged()) or type(exc).__name__
                    if _TENSORFLOW_FIRST and self.name == ORACLE_TFLITE_RUNTIME_REF:
                        reason += " (TensorFlow was imported before tflite-runtime in this process, which breaks it)"
                    raise ToolError(f"{self.name} cannot load {self.model_path.name}: {reason}") from exc
            self._interpreters[preserve_all_tensors] = interpreter
        return self._interpreters[preserve_all_tensors]

    def _invoke(self, interpreter: Any, inputs: Sequence[np.ndarray]) -> None:
        arrays = self._checked_inputs(inputs)
        for array, spec in zip(arrays, self.signature.inputs):
            interpreter.set_tensor(spec.tensor_index, array)  # the interpreter keeps flatbuffer indices
        try:
            interpreter.invoke()
        except Exception as exc:
            raise ToolError(f"{self.name} failed to run {self.model_path.name}: {_first_line(str(exc))}") from exc

    def run(self, inputs: Sequence[np.ndarray]) -> list[np.ndarray]:
        interpreter = self._interpreter(preserve_all_tensors=False)
        self._invoke(interpreter, inputs)
        return [np.array(interpreter.get_tensor(spec.tensor_index), copy=True) for spec in self.signature.outputs]

    def run_all_tensors(self, inputs: Sequence[np.ndarray]) -> dict[int, np.ndarray]:
        """Every tensor whose value survives the run.

        Even with experimental_preserve_all_tensors, tflite-runtime 2.14 runs some ops in place
        (ADD writes its output over an input's buffer), so such an input tensor would read back
        as the op's output. Tensors whose memory is shared with a tensor written later are
        therefore left out (TFLite Micro's oracle gives them), unless that later tensor is a
        RESHAPE/SQUEEZE/EXPAND_DIMS output, which holds the same bytes.
        """
        interpreter = self._interpreter(preserve_all_tensors=True)
        self._invoke(interpreter, inputs)
        tensors: dict[int, np.ndarray] = {}
        spans: dict[int, tuple[int, int]] = {}
        for index in range(self.signature.num_tensors):
            try:
                view = interpreter.tensor(index)()
                tensors[index] = np.array(view, copy=True)
            except ValueError:
                continue  # a tensor without data (e.g. an omitted optional operand)
            if view.nbytes:
                start = view.__array_interface__["data"][0]
                spans[index] = (start, start + view.nbytes)
        producers = self.signature.producers
        for index, (start, end) in spans.items():
            for other, (other_start, other_end) in spans.items():
                if (
                    other != index
                    and start < other_end
                    and other_start < end
                    and producers[other] > producers[index]
                    and other not in self.signature.views
                ):
                    tensors.pop(index, None)  # overwritten in place by `other`
                    break
        return tensors


class TflmOracle(Oracle):
    """TFLite Micro's Python interpreter (the `tflite-micro` package), reference kernels."""

    name = ORACLE_TFLITE_MICRO

    def __init__(self, model_path: Path, model_bytes: bytes, signature: ModelSignature):
        super().__init__(model_path, model_bytes, signature)
        if signature.tflm_refusal:
            raise ToolError(f"{ORACLE_TFLITE_MICRO} cannot run {model_path.name}: {signature.tflm_refusal}")
        self._interpreters: dict[bool, Any] = {}
        self._interpreter(preserve_all_tensors=False)  # load now: refusal must surface here

    @staticmethod
    def _runtime() -> Any:
        try:
            from tflite_micro.python.tflite_micro import runtime
        except ImportError as exc:
            raise ToolError(f"tflite-micro is not importable: {exc}") from exc
        return runtime

    def _interpreter(self, preserve_all_tensors: bool) -> Any:
        if preserve_all_tensors not in self._interpreters:
            runtime = self._runtime()
            config = (
                runtime.InterpreterConfig.kPreserveAllTensors
                if preserve_all_tensors
                else runtime.InterpreterConfig.kAllocationRecording
            )
            self._interpreters[preserve_all_tensors] = _load_tflm(
                runtime, self._model_bytes, _generous_arena(self.signature), config, self.model_path
            )
        return self._interpreters[preserve_all_tensors]

    def _invoke(self, interpreter: Any, inputs: Sequence[np.ndarray]) -> None:
        arrays = self._checked_inputs(inputs)
        with _captured_stderr() as logged:
            try:
                interpreter.reset()
                for position, array in enumerate(arrays):
                    interpreter.set_input(array, position)
                interpreter.invoke()
            except Exception as exc:
                reason = _first_line(logged()) or _first_line(str(exc))
                raise ToolError(f"{self.name} failed to run {self.model_path.name}: {reason}") from exc

    def run(self, inputs: Sequence[np.ndarray]) -> list[np.ndarray]:
        interpreter = self._interpreter(preserve_all_tensors=False)
        self._invoke(interpreter, inputs)
        count = len(self.signature.outputs)
        return [np.array(interpreter.get_output(position), copy=True) for position in range(count)]

    def run_all_tensors(self, inputs: Sequence[np.ndarray]) -> dict[int, np.ndarray]:
        interpreter = self._interpreter(preserve_all_tensors=True)
        self._invoke(interpreter, inputs)
        tensors: dict[int, np.ndarray] = {}
        # GetTensor does no bounds check (an index past the end crashes the process), so only
        # indices below the flatbuffer's tensor count are asked for.
        for index in range(self.signature.num_tensors):
            try:
                details = interpreter.GetTensor(index, 0)
            except (RuntimeError, ValueError):
                continue
            tensors[index] = np.array(details["tensor_data"], copy=True)
        return tensors


def _generous_arena(signature: ModelSignature) -> int:
    """An arena well above TFLite Micro's need (untouched pages of it cost no memory).

    Twice every activation at once covers the no-reuse planner of kPreserveAllTensors; the rest
    covers persistent data (per-tensor and per-channel structures, kernels' buffers). A multiple
    of 4096 so the arena's end is aligned like its start.
    """
    return _round_up(2 * signature.activation_bytes + 512 * signature.num_tensors + (4 << 20), 4096)


def _load_tflm(runtime: Any, model_bytes: bytes, arena_size: int, config: Any, model_path: Path) -> Any:
    with _captured_stderr() as logged:
        try:
            return runtime.Interpreter.from_bytes(model_bytes, arena_size=arena_size, intrepreter_config=config)
        except Exception as exc:
            reason = _first_line(logged()) or _first_line(str(exc)) or type(exc).__name__
            raise ToolError(f"{ORACLE_TFLITE_MICRO} cannot load {Path(model_path).name}: {reason}") from exc


def oracles_for(model_path: str | os.PathLike[str]) -> list[Oracle]:
    """Every oracle that loads the model: the reference-kernel interpreter, then TFLite Micro.

    A model one interpreter refuses is served by the others (e.g. tflite-runtime refuses
    `quantized_dimension=3` on rank-1 bias tensors, TFLite Micro accepts it). Raises ToolError
    if none loads it, naming each one's reason.
    """
    model_path = Path(model_path)
    model_bytes = _read_model_bytes(model_path)
    signature = read_signature(model_bytes, model_path)
    oracles: list[Oracle] = []
    refusals: list[str] = []
    backend = reference_backend()
    if backend is None:
        refusals.append("no reference-kernel interpreter installed (tflite-runtime or ai-edge-litert)")
    else:
        try:
            oracles.append(ReferenceKernelOracle(model_path, model_bytes, signature, backend))
        except McugenError as exc:
            refusals.append(str(exc))
    try:
        oracles.append(TflmOracle(model_path, model_bytes, signature))
    except McugenError as exc:
        refusals.append(str(exc))
    if not oracles:
        raise ToolError(f"no oracle can run {model_path.name}: " + "; ".join(refusals))
    return oracles


def _tflm_loads(runtime: Any, model_bytes: bytes, arena_size: int) -> bool:
    """Whether TFLite Micro's AllocateTensors succeeds for the model with an arena of `arena_size` bytes."""
    with _captured_stderr():
        try:
            runtime.Interpreter.from_bytes(model_bytes, arena_size=arena_size)
        except Exception:
            return False
    return True


def _round_up(value: int, multiple: int) -> int:
    return -(-value // multiple) * multiple


def tflm_arena_bytes(model_path: str | os.PathLike[str]) -> int:
    """TFLite Micro's tensor-arena need for the model: the smallest arena it loads with, in bytes.

    Method (the tflite-micro Python interpreter has no "arena used" API, only a
    RecordingMicroAllocator that prints its allocations):
    1. load the model with a generous arena and parse "Arena allocation total N bytes" from
       `print_allocations()` (head = planned activations and scratch, tail = persistent data);
    2. N is only an estimate: temporary allocations made while preparing kernels (e.g. 992
       bytes for one FULLY_CONNECTED of the MLPerf Tiny autoencoder) are freed before the
       report, and alignment padding of persistent objects depends on where the arena ends
       (up to 8 bytes either way). So the exact minimum is searched: grow an upper bracket
       above N until loading succeeds, lower one below N until it fails, then bisect on
       "AllocateTensors succeeds with an arena of this many bytes" (about 20 loads, each a
       few milliseconds; TFLite Micro allocates nothing more during Invoke).
    The arena start is 16-byte aligned (malloc's alignment), as TFLite Micro expects. The
    count includes the recording allocator's own bookkeeping objects, so a plain
    MicroInterpreter needs a few dozen bytes less.
    """
    model_path = Path(model_path)
    model_bytes = _read_model_bytes(model_path)
    signature = read_signature(model_bytes, model_path)
    runtime = TflmOracle._runtime()
    config = runtime.InterpreterConfig.kAllocationRecording
    generous = _generous_arena(signature)
    interpreter = _load_tflm(runtime, model_bytes, generous, config, model_path)
    with _captured_stderr() as logged:
        interpreter.print_allocations()
        report = logged()
    match = _TFLM_ARENA_TOTAL_RE.search(report)
    if match is None:
        raise ToolError(f"tflite-micro printed no arena total for {model_path.name}: {_first_line(report)!r}")
    estimate = int(match.group(1))

    step = 64
    high = estimate
    while not _tflm_loads(runtime, model_bytes, high):
        if high >= generous:
            raise ToolError(f"tflite-micro cannot load {model_path.name} even with a {generous}-byte arena")
        high = min(high + step, generous)
        step *= 2
    step = 64
    low = max(estimate - step, 0)
    while low > 0 and _tflm_loads(runtime, model_bytes, low):
        high = low
        step *= 2
        low = max(low - step, 0)
    # invariant: an arena of `high` bytes suffices, one of `low` bytes does not (or low == 0)
    while high - low > 1:
        middle = (low + high) // 2
        if _tflm_loads(runtime, model_bytes, middle):
            high = middle
        else:
            low = middle
    return high
