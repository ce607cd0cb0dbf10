"""Validation: runs the generated C and the oracles on the same inputs and compares bit for bit."""

from __future__ import annotations

import tempfile
from dataclasses import dataclass, field
from pathlib import Path
from typing import Callable, Optional, Sequence

import numpy as np

from mcugen import driver
from mcugen.errors import DataError, McugenError
from mcugen.ir import DType, Graph
from mcugen.options import DEFAULT_STRATEGY, CompileOptions


@dataclass
class LayerMismatch:
    layer: int
    op: str
    tensor: int
    tensor_name: str
    max_abs_diff: int
    oracle: str


@dataclass
class ValidationReport:
    model: str
    target: str
    bit_exact: bool
    max_abs_diff: int
    runs: int
    oracles: list[str]
    per_run: list[dict] = field(default_factory=list)
    first_bad_layer: Optional[LayerMismatch] = None
    oracle_disagreements: list[dict] = field(default_factory=list)
    notes: list[str] = field(default_factory=list)  # the generator's notes (driver.Generated.notes)

    def to_json(self) -> dict:
        d = {
            "model": self.model,
            "target": self.target,
            "bit_exact": self.bit_exact,
            "max_abs_diff": self.max_abs_diff,
            "runs": self.runs,
            "oracles": self.oracles,
            "reference_oracle": self.oracles[0] if self.oracles else None,
            "per_run": self.per_run,
            "oracle_disagreements": self.oracle_disagreements,
            "notes": self.notes,
        }
        if self.first_bad_layer is not None:
            d["first_bad_layer"] = vars(self.first_bad_layer)
        return d


def diff(a: np.ndarray, b: np.ndarray) -> int:
    """Largest absolute difference; float outputs are compared by their bit patterns (in ulps)."""
    if a.shape != b.shape:
        return 2**31 - 1
    if a.dtype == np.float32 or b.dtype == np.float32:
        ia = np.asarray(a, np.float32).view(np.int32).astype(np.int64)
        ib = np.asarray(b, np.float32).view(np.int32).astype(np.int64)
        return int(np.abs(ia - ib).max()) if ia.size else 0
    return int(np.abs(a.astype(np.int64) - b.astype(np.int64)).max()) if a.size else 0


def load_inputs(graph: Graph, files: Sequence[str]) -> list[list[np.ndarray]]:
    """Input files, one per model input, grouped into runs in order (k inputs per run).

    Each file is a `.npy` holding one sample (as many values as the input) or a batch of N
    samples shaped (N, *input_shape[1:]), which gives N runs; or an image (PNG/JPEG/BMP) for an
    NHWC input with 1 or 3 channels, read, resized and preprocessed as for training
    (mcugen.datasets, default x/127.5 - 1) and quantized with the input's scale and zero point.
    The files of one run must give the same number of samples.
    """
    k = len(graph.inputs)
    if len(files) % k:
        raise DataError(f"{len(files)} --input files for a model with {k} inputs; give a multiple of {k}")
    runs = []
    for r in range(len(files) // k):
        samples = [_load_input(graph, j, files[r * k + j]) for j in range(k)]
        counts = {len(s) for s in samples}
        if len(counts) > 1:
            raise DataError(f"--input {', '.join(files[r * k:(r + 1) * k])}: the files of one run hold "
                            f"{' and '.join(str(len(s)) for s in samples)} samples; they must match")
        runs.extend([list(group) for group in zip(*samples)])
    return runs


def _load_input(graph: Graph, j: int, path: str) -> list[np.ndarray]:
    """The samples (one, or a batch's N) one input file gives for model input j."""
    from mcugen.datasets import is_image_file

    t = graph.t(graph.inputs[j])
    if is_image_file(path):
        return [_load_image_input(graph, j, path)]
    try:
        a = np.load(path, allow_pickle=False)
    except FileNotFoundError:
        raise DataError(f"--input {path}: no such file") from None
    except Exception as e:
        raise DataError(f"--input {path}: not a readable .npy file ({type(e).__name__}); inputs are .npy "
                        "arrays or PNG/JPEG/BMP images") from None
    if not isinstance(a, np.ndarray) or not (np.issubdtype(a.dtype, np.number) or a.dtype == np.bool_):
        raise DataError(f"--input {path}: holds {getattr(a, 'dtype', type(a).__name__)}, not numbers")
    batch = len(t.shape) >= 1 and t.shape[0] == 1 and a.ndim == len(t.shape) and a.shape[0] >= 1 \
        and tuple(a.shape[1:]) == tuple(t.shape[1:])
    if a.size != t.size and not batch:
        raise DataError(
            f"--input {path}: has shape {list(a.shape)} ({a.size} values) but input {j} needs {list(t.shape)} "
            f"(one sample) or [N, {', '.join(str(d) for d in t.shape[1:])}] (a batch of N)"
        )
    if t.dtype in (DType.INT8, DType.UINT8, DType.INT16) and a.dtype != t.dtype.numpy:
        info = np.iinfo(t.dtype.numpy)
        if not np.issubdtype(a.dtype, np.integer) or a.min() < info.min or a.max() > info.max:
            raise DataError(f"--input {path}: dtype {a.dtype} does not fit input {j} of type {t.dtype.value}")
    if a.size == t.size:
        return [a.astype(t.dtype.numpy).reshape(t.shape)]
    return [sample[np.newaxis].astype(t.dtype.numpy) for sample in a]


def _load_image_input(graph: Graph, j: int, path: str) -> np.ndarray:
    from mcugen.datasets import preprocess, read_image
    from mcugen.quantize import quantize_values

    t = graph.t(graph.inputs[j])
    if len(t.shape) != 4 or t.shape[0] != 1 or t.shape[3] not in (1, 3):
        raise DataError(f"--input {path}: an image can feed an input shaped [1, H, W, 1 or 3]; input {j} is "
                        f"{list(t.shape)} (give a .npy)")
    if t.dtype not in (DType.INT8, DType.UINT8, DType.FLOAT32):
        raise DataError(f"--input {path}: input {j} is {t.dtype.value}; images feed int8, uint8 or float32 inputs")
    x = preprocess(read_image(path, t.shape[1], t.shape[2], t.shape[3]))[np.newaxis]
    if t.dtype is DType.FLOAT32:
        return x
    if t.quant is None or len(t.quant.scale) != 1:
        raise DataError(f"--input {path}: input {j} has no per-tensor quantization to convert the image with")
    return quantize_values(x, t.quant.s, t.quant.zp, t.dtype.numpy)


Runner = Callable[[driver.Generated, list[list[np.ndarray]], Path], list[list[np.ndarray]]]


def host_runner(gen: driver.Generated, runs: list[list[np.ndarray]], work: Path) -> list[list[np.ndarray]]:
    exe = driver.compile_host(gen, work / "build")
    return driver.run_host(exe, gen, runs, work / "io")


def poisoned_host_runner(gen: driver.Generated, runs: list[list[np.ndarray]], work: Path) -> list[list[np.ndarray]]:
    """Host build with -DMCUGEN_POISON: every dead arena byte is overwritten between layers."""
    exe = driver.compile_host(gen, work / "build", extra_cflags=("-DMCUGEN_POISON",))
    return driver.run_host(exe, gen, runs, work / "io")


def oracle_notes(oracles) -> list[str]:
    """Why an oracle that loads the model is not among `oracles` (from the model's signature)."""
    from mcugen.oracle import ORACLE_TFLITE_MICRO

    if not oracles:
        return []
    sig = oracles[0].signature
    names = {o.name for o in oracles}
    notes = []
    if sig.ref_refusal and not names - {ORACLE_TFLITE_MICRO}:
        notes.append(f"note: the reference kernels are not used as oracle: {sig.ref_refusal}")
    if sig.tflm_refusal and ORACLE_TFLITE_MICRO not in names:
        notes.append(f"note: {ORACLE_TFLITE_MICRO} is not used as oracle: {sig.tflm_refusal}")
    return notes


def validate(
    model_path: str | Path,
    *,
    input_files: Sequence[str] = (),
    count: int = 3,
    seed: int = 0,
    save_outputs: Optional[Path] = None,
    layers: bool = False,
    runner: Runner = host_runner,
    target: str = "host",
    strategy: str = DEFAULT_STRATEGY,
    kernels: Optional[str] = None,
    kernel_target: str = "portable",
    cmsis_nn: Optional[str] = None,
    options: Optional[CompileOptions] = None,
    generated: Optional[driver.Generated] = None,
    progress: Callable[[str], None] = lambda s: None,
) -> ValidationReport:
    """`generated`: the code already generated from `model_path` (then strategy and kernels are
    those it was generated with); otherwise it is generated here with `options` (a
    CompileOptions), or else with the keyword arguments."""
    from mcugen.oracle import oracles_for

    model_path = Path(model_path)
    progress("reading and generating")
    gen = generated or driver.build(model_path, strategy=strategy, kernels=kernels, target=kernel_target,
                                    cmsis_nn=cmsis_nn, options=options)
    if input_files:
        runs = load_inputs(gen.graph, input_files)
    else:
        if count < 1:
            raise DataError(f"--count {count}: need at least one run")
        runs = driver.random_inputs(gen.graph, count, seed)
    oracles = oracles_for(model_path)
    with tempfile.TemporaryDirectory(prefix="mcugen-validate-") as tmp:
        progress(f"compiling and running on {target}")
        outs = runner(gen, runs, Path(tmp))
    if save_outputs is not None:
        save_outputs.mkdir(parents=True, exist_ok=True)
        for r, (ins, os_) in enumerate(zip(runs, outs)):
            for k, a in enumerate(ins):
                np.save(save_outputs / f"run{r}_input{k}.npy", a)
            for k, a in enumerate(os_):
                np.save(save_outputs / f"run{r}_output{k}.npy", a)
    # The reference is the first oracle: tflite-runtime's reference kernels where they load the
    # model, else TFLite Micro. Every oracle must agree with the generated code, except where an
    # oracle disagrees with the reference itself (e.g. int8 LOGISTIC at ~0.1% of input scales,
    # a float table in tflite-runtime against fixed point in TFLite Micro): that is reported
    # in `oracle_disagreements` and does not count against the generated code.
    worst = 0
    per_run = []
    disagreements = []
    for r, arrays in enumerate(runs):
        entry = {"run": r}
        reference = None
        for o in oracles:
            progress(f"oracle {o.name}, run {r}")
            ref = o.run(arrays)
            d = max(diff(a, b) for a, b in zip(outs[r], ref))
            entry[o.name] = d
            if reference is None:
                reference = ref
                worst = max(worst, d)
                continue
            between = max(diff(a, b) for a, b in zip(reference, ref))
            if between:
                disagreements.append({"run": r, "oracle": o.name, "max_abs_diff_to_reference": between})
            else:
                worst = max(worst, d)
        per_run.append(entry)
    report = ValidationReport(
        model=str(model_path),
        target=target,
        bit_exact=worst == 0,
        max_abs_diff=worst,
        runs=len(runs),
        oracles=[o.name for o in oracles],
        per_run=per_run,
        oracle_disagreements=disagreements,
        notes=list(gen.notes) + oracle_notes(oracles),
    )
    if worst and layers:
        report.first_bad_layer = first_bad_layer(gen, runs, oracles, progress)
    return report


def first_bad_layer(gen: driver.Generated, runs, oracles, progress) -> Optional[LayerMismatch]:
    """Dump every layer's output from a host build and compare with the oracle's tensors."""
    oracle = oracles[0]
    with tempfile.TemporaryDirectory(prefix="mcugen-layers-") as tmp:
        exe = driver.compile_host(gen, Path(tmp) / "build", extra_cflags=("-DMCUGEN_PROFILE",))
        for arrays in runs:
            try:
                ref = oracle.run_all_tensors(arrays)
            except McugenError:
                continue
            driver.run_host(exe, gen, [arrays], Path(tmp) / "io")
            for layer in gen.program.layers:
                if layer.output not in ref:
                    continue  # e.g. a tensor a graph rewrite added (PACK's views): the model has no such tensor
                t = gen.graph.t(layer.output)
                got = np.frombuffer((Path(tmp) / "io" / f"layer_0_{layer.index}.bin").read_bytes(), dtype=t.dtype.numpy)
                want = np.asarray(ref[layer.output]).reshape(-1)
                d = diff(got, want.astype(got.dtype))
                if d:
                    return LayerMismatch(layer.index, layer.op, t.index, t.name, d, oracle.name)
    return None

