"""Full-integer post-training quantization with the TFLite converter (no Keras).

Graphs reach the converter as concrete functions (`TFLiteConverter.from_concrete_functions`):
weights int8 per channel (convolutions, depthwise convolutions and, unless disabled, fully
connected layers), biases int32, activations int8; the model's input and output are int8 by
default, or uint8 / float32 (the converter then adds QUANTIZE / DEQUANTIZE at the edges).

Findings with TensorFlow 2.21 checked against tflite-runtime 2.14 (BUILTIN_REF), which is
mcugen's oracle:
- The produced op versions load in 2.14, including FULLY_CONNECTED with per-channel weight
  scales, and 2.14's reference kernel honours the per-channel scales (its outputs equal
  TF 2.21's own reference interpreter). `per_channel_dense=False` sets the converter flag
  `_experimental_disable_per_channel_quantization_for_dense_layers` for runtimes that lack it.
- A fully connected layer whose bias is all zero (e.g. a freshly initialised classifier) is
  emitted without a bias tensor (input index -1).
- The converter prints one line ("fully_quantize: 0, inference_type: 6, ...") on stderr from
  C++; `convert_concrete_function` redirects file descriptor 2 while converting to hide it.
- tflite-runtime 2.14 fails (std::bad_alloc) if its native library loads after TensorFlow's in
  one process; `import_tensorflow` therefore imports `tflite_runtime.interpreter` first.
- Conversion is deterministic: the same graph, weights and calibration data give the same bytes,
  also across processes.
"""

from __future__ import annotations

import contextlib
import os
import sys
import tempfile
import warnings
from dataclasses import dataclass
from pathlib import Path
from typing import Callable, Optional, Sequence

import numpy as np

from mcugen.errors import McugenError, ModelError, OutputError, ToolError
from mcugen.mobilenet_v2 import import_tensorflow

IO_TYPES = ("int8", "uint8", "float32")
DEFAULT_SAMPLES = 100


class SyntheticCalibrationWarning(UserWarning):
    """Calibration fell back to random data: the activation ranges will not match real inputs."""


@dataclass(frozen=True)
class QuantizeOptions:
    """How to quantize: I/O types, calibration sample count and seed, dense per-channel or not."""

    input_type: str = "int8"
    output_type: str = "int8"
    samples: int = DEFAULT_SAMPLES
    seed: int = 0
    per_channel_dense: bool = True

    def __post_init__(self) -> None:
        for name in ("input_type", "output_type"):
            if getattr(self, name) not in IO_TYPES:
                raise McugenError(f"{name.replace('_', ' ')} {getattr(self, name)!r} is not supported; "
                                  f"choose one of {', '.join(IO_TYPES)}")
        if self.samples < 1:
            raise McugenError(f"calibration needs at least 1 sample, {self.samples} requested")


def _tf_type(tf, name: str):
    return {"int8": tf.int8, "uint8": tf.uint8, "float32": tf.float32}[name]


def convert_concrete_function(function, trackable, calibration: Sequence[Sequence[np.ndarray]],
                              options: QuantizeOptions = QuantizeOptions()) -> bytes:
    """Full-int8 TFLite flatbuffer of `function`; `calibration` is a list of per-run input lists."""
    tf = import_tensorflow()
    if len(calibration) == 0:
        raise McugenError("calibration data set is empty")
    converter = tf.lite.TFLiteConverter.from_concrete_functions([function], trackable)
    converter.optimizations = [tf.lite.Optimize.DEFAULT]
    converter.target_spec.supported_ops = [tf.lite.OpsSet.TFLITE_BUILTINS_INT8]
    converter.inference_input_type = _tf_type(tf, options.input_type)
    converter.inference_output_type = _tf_type(tf, options.output_type)
    if not options.per_channel_dense:
        converter._experimental_disable_per_channel_quantization_for_dense_layers = True

    def representative_dataset():
        for run in calibration:
            yield [np.asarray(x, np.float32) for x in run]

    converter.representative_dataset = representative_dataset
    try:
        with _quiet_native_stderr():
            return bytes(converter.convert())
    except Exception as exc:  # the converter raises many kinds; report the first line only
        first = str(exc).strip().splitlines()[0] if str(exc).strip() else type(exc).__name__
        raise ModelError(f"TFLite conversion failed: {first}") from None


@contextlib.contextmanager
def _quiet_native_stderr():
    """Send file descriptor 2 to a temporary file meanwhile (the converter's C++ prints there)."""
    try:
        sys.stderr.flush()
        saved = os.dup(2)
    except (OSError, ValueError):  # no usable descriptor 2 (e.g. embedded interpreters)
        yield
        return
    with tempfile.TemporaryFile() as sink:
        os.dup2(sink.fileno(), 2)
        try:
            yield
        finally:
            os.dup2(saved, 2)
            os.close(saved)


def input_shape(function) -> tuple[int, ...]:
    """The shape of the only input of a concrete function (a McugenError if it has several)."""
    specs = [s for s in function.structured_input_signature[0]] + list(function.structured_input_signature[1].values())
    if len(specs) != 1:
        raise McugenError(f"calibration from images needs a model with one input, this one has {len(specs)}")
    return tuple(int(d) for d in specs[0].shape)


def single_sample_runs(images: np.ndarray) -> list[list[np.ndarray]]:
    """N x ... images -> N runs of one batch-1 input each (the representative-dataset format)."""
    return [[images[i:i + 1]] for i in range(len(images))]


def calibration_or_synthetic(images: Optional[np.ndarray], shape: Sequence[int], options: QuantizeOptions,
                             scale: float, offset: float) -> np.ndarray:
    """`images` (at most `options.samples`), or seeded random pixels with a SyntheticCalibrationWarning."""
    from mcugen.datasets import synthetic_inputs

    if images is not None:
        if len(images) == 0:
            raise McugenError("calibration data set is empty")
        if tuple(images.shape[1:]) != tuple(shape[1:]):
            raise McugenError(f"calibration images have shape {tuple(images.shape[1:])}, "
                              f"the model input needs {tuple(shape[1:])}")
        return images[: options.samples]
    warnings.warn(
        f"no calibration data given: calibrating on {options.samples} synthetic random images; the int8 "
        "activation ranges will not fit real inputs (pass --calibration DIR|FILE.npy|FILE.npz)",
        SyntheticCalibrationWarning, stacklevel=3,
    )
    return synthetic_inputs(options.samples, tuple(shape[1:]), scale, offset, options.seed)


def quantize_module(module, calibration: Optional[np.ndarray] = None, options: QuantizeOptions = QuantizeOptions(),
                    scale: float = 1.0 / 127.5, offset: float = -1.0) -> bytes:
    """Full-int8 `.tflite` bytes of a MobileNetV2 module (batch norm folded first, batch 1).

    `calibration` is preprocessed float32 N x H x W x C; None means synthetic random pixels
    preprocessed with `scale`/`offset` (and a SyntheticCalibrationWarning).
    """
    export = module.export_module()
    function = export.serving_function(batch=1)
    images = calibration_or_synthetic(calibration, input_shape(function), options, scale, offset)
    return convert_concrete_function(function, export, single_sample_runs(images), options)


def load_saved_model_function(path: str | os.PathLike, signature: Optional[str] = None):
    """(batch-1 concrete function, trackable) for a SavedModel's signature with one float input."""
    tf = import_tensorflow()
    path = Path(path)
    if not (path / "saved_model.pb").is_file():
        raise McugenError(f"{path} is not a TensorFlow SavedModel folder (no saved_model.pb)")
    try:
        loaded = tf.saved_model.load(str(path))
    except Exception as exc:
        raise ModelError(f"SavedModel {path} cannot be loaded: {str(exc).strip().splitlines()[0]}") from None
    signatures = dict(loaded.signatures)
    if not signatures:
        raise ModelError(f"SavedModel {path} has no signatures to convert")
    key = signature or ("serving_default" if "serving_default" in signatures else sorted(signatures)[0])
    if key not in signatures:
        raise McugenError(f"SavedModel {path} has no signature {key!r}; it has {', '.join(sorted(signatures))}")
    function = signatures[key]
    inputs = function.structured_input_signature[1]
    if len(inputs) != 1 or function.structured_input_signature[0]:
        raise McugenError(f"SavedModel {path} signature {key!r} has {len(inputs)} named inputs; "
                          "mcugen quantize supports exactly one")
    (name, spec), = inputs.items()
    if spec.dtype != tf.float32:
        raise McugenError(f"SavedModel {path} input {name!r} is {spec.dtype.name}; a float32 input is needed")
    dims = list(spec.shape)
    if not dims or any(d is None for d in dims[1:]):
        raise McugenError(f"SavedModel {path} input {name!r} has shape {spec.shape}; all but the batch "
                          "dimension must be fixed")
    shape = [1] + [int(d) for d in dims[1:]]
    output_names = sorted(function.structured_outputs)

    @tf.function(input_signature=[tf.TensorSpec(shape, tf.float32, name=name)])
    def batch1(x):
        outputs = function(**{name: x})
        return [outputs[k] for k in output_names] if len(output_names) > 1 else outputs[output_names[0]]

    return batch1.get_concrete_function(), loaded


def quantize_saved_model(path: str | os.PathLike, calibration: Optional[np.ndarray] = None,
                         options: QuantizeOptions = QuantizeOptions(), signature: Optional[str] = None,
                         scale: float = 1.0 / 127.5, offset: float = -1.0) -> bytes:
    """Full-int8 `.tflite` bytes of any single-input SavedModel (batch fixed to 1)."""
    function, trackable = load_saved_model_function(path, signature)
    images = calibration_or_synthetic(calibration, input_shape(function), options, scale, offset)
    return convert_concrete_function(function, trackable, single_sample_runs(images), options)


def write_model(data: bytes, path: str | os.PathLike) -> Path:
    """Write `.tflite` bytes to `path` (its folder must exist)."""
    path = Path(path)
    if not path.parent.is_dir():
        raise OutputError(f"cannot write {path}: folder {path.parent} does not exist")
    if path.is_dir():
        raise OutputError(f"cannot write {path}: it is a folder")
    path.write_bytes(data)
    return path


def reference_interpreter(model: bytes):
    """A tflite-runtime 2.14 Interpreter on the reference kernels (mcugen's oracle), tensors allocated."""
    try:
        from tflite_runtime.interpreter import Interpreter, OpResolverType
    except ImportError as exc:
        raise McugenError(f"tflite-runtime is needed to check the model ({exc})") from None
    try:
        interpreter = Interpreter(model_content=model, experimental_op_resolver_type=OpResolverType.BUILTIN_REF)
        interpreter.allocate_tensors()
    except (MemoryError, RuntimeError, ValueError) as exc:
        raise ToolError(f"tflite-runtime cannot load the model ({exc}); if TensorFlow was imported before "
                        "tflite_runtime in this process, import tflite_runtime.interpreter first") from None
    return interpreter


def operator_names(model: bytes) -> list[str]:
    """Builtin operator names of `model` in execution order, as tflite-runtime 2.14 reads them."""
    return [op["op_name"] for op in reference_interpreter(model)._get_ops_details()]


def run_reference(model: bytes, inputs: np.ndarray, progress: Optional[Callable] = None) -> np.ndarray:
    """Run `inputs` (N x ..., already in the model's input type) one by one; stacked outputs."""
    interpreter = reference_interpreter(model)
    input_index = interpreter.get_input_details()[0]["index"]
    output_index = interpreter.get_output_details()[0]["index"]
    outputs = []
    for x in (progress(inputs) if progress else inputs):
        interpreter.set_tensor(input_index, x[np.newaxis])
        interpreter.invoke()
        outputs.append(interpreter.get_tensor(output_index)[0].copy())
    return np.stack(outputs)


def quantize_input(model: bytes, images: np.ndarray) -> np.ndarray:
    """Float preprocessed images -> the model's input type using its input quantization."""
    details = reference_interpreter(model).get_input_details()[0]
    scale, zero_point = details["quantization"]
    return quantize_values(images, scale, zero_point, details["dtype"])


def quantize_values(images: np.ndarray, scale: float, zero_point: int, dtype) -> np.ndarray:
    """Float values -> `dtype` (int8/uint8) as TFLite's QUANTIZE kernel computes it; float32 stays float."""
    dtype = np.dtype(dtype)
    if dtype == np.float32:
        return np.asarray(images, np.float32)
    info = np.iinfo(dtype)
    ratio = images.astype(np.float32) / np.float32(scale)  # float32 division, like the QUANTIZE kernel
    q = np.sign(ratio) * np.floor(np.abs(ratio) + np.float32(0.5)) + zero_point  # half away from zero
    return np.clip(q, info.min, info.max).astype(dtype)
