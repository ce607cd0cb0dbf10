"""Sub-command `evaluate`: a classifier's accuracy from the float model to int8 to the generated C (host, emulated board)."""

from __future__ import annotations

import json
import sys
import tempfile
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Callable, Optional

import numpy as np

from mcugen.errors import DataError, ModelError, OutputError

DEFAULT_BOARD_COUNT = 20
HOST_CHUNK = 256  # images per run of the compiled model on the host (one process per chunk, for progress)

Build = Callable[[str], "object"]  # kernel target name -> driver.Generated


@dataclass
class Row:
    """Accuracy of one way of running the model, on `images` images (all, or the board's sample)."""

    key: str
    label: str
    top1: float
    top5: Optional[float]
    images: int
    predictions: list[int] = field(default_factory=list)

    def to_json(self) -> dict:
        d = {"name": self.label, "top1": self.top1, "images": self.images, "predictions": self.predictions}
        if self.top5 is not None:
            d["top5"] = self.top5
        return d


@dataclass
class Evaluation:
    model: str
    data: str
    class_names: tuple[str, ...]
    labels: np.ndarray
    rows: list[Row]
    int8_c_agreement: float  # share of images where the C on the host predicts what int8 TFLite predicts
    int8_c_bit_exact: bool  # every output byte equal
    board: Optional[str] = None
    board_sample: list[int] = field(default_factory=list)  # image indices run on the board
    board_host_agreement: Optional[float] = None
    board_host_bit_exact: Optional[bool] = None
    host_top1_on_sample: Optional[float] = None
    confusion: Optional[np.ndarray] = None  # rows: true class, columns: predicted (C on the host)
    preprocessing: dict = field(default_factory=dict)
    seconds: float = 0.0

    @property
    def agrees(self) -> bool:
        return self.int8_c_bit_exact and self.board_host_bit_exact is not False

    def to_json(self) -> dict:
        d = {
            "model": self.model,
            "data": self.data,
            "images": int(len(self.labels)),
            "classes": len(self.class_names),
            "class_names": list(self.class_names),
            "preprocessing": self.preprocessing,
            "labels": [int(v) for v in self.labels],
            "results": {row.key: row.to_json() for row in self.rows},
            "agreement": {"int8_vs_c": self.int8_c_agreement, "int8_vs_c_bit_exact": self.int8_c_bit_exact},
            "confusion_matrix": self.confusion.tolist() if self.confusion is not None else None,
            "confusion_matrix_of": "c_host",
            "seconds": round(self.seconds, 1),
        }
        if self.board is not None:
            d["board"] = {"name": self.board, "sample": self.board_sample,
                          "host_top1_on_sample": self.host_top1_on_sample}
            d["agreement"]["board_vs_host"] = self.board_host_agreement
            d["agreement"]["board_vs_host_bit_exact"] = self.board_host_bit_exact
        return d


# ---- metrics -------------------------------------------------------------------------------


def rankings(scores: np.ndarray) -> np.ndarray:
    """Class indices by decreasing score per image; ties keep the lower index first (as argmax)."""
    flat = np.asarray(scores).reshape(len(scores), -1).astype(np.float64)
    return np.argsort(-flat, axis=1, kind="stable")


def top_k(scores: np.ndarray, labels: np.ndarray, k: int) -> float:
    order = rankings(scores)[:, :k]
    return float(np.mean(np.any(order == labels[:, None], axis=1))) if len(labels) else 0.0


def confusion_matrix(labels: np.ndarray, predictions: np.ndarray, classes: int) -> np.ndarray:
    matrix = np.zeros((classes, classes), np.int64)
    np.add.at(matrix, (labels, predictions), 1)
    return matrix


def _row(key: str, label: str, scores: np.ndarray, labels: np.ndarray, classes: int) -> Row:
    predictions = rankings(scores)[:, 0]
    return Row(key, label, float(np.mean(predictions == labels)) if len(labels) else 0.0,
               top_k(scores, labels, 5) if classes > 5 else None, len(labels), [int(p) for p in predictions])


# ---- the model and its data ----------------------------------------------------------------


@dataclass(frozen=True)
class ModelIO:
    height: int
    width: int
    channels: int
    classes: int


def _model_io(model: bytes, path: Path) -> ModelIO:
    from mcugen.quantize import reference_interpreter

    interpreter = reference_interpreter(model)
    inputs, outputs = interpreter.get_input_details(), interpreter.get_output_details()
    if len(inputs) != 1 or len(outputs) != 1:
        raise ModelError(f"{path}: evaluate needs a classifier with one input and one output, this model has "
                         f"{len(inputs)} inputs and {len(outputs)} outputs")
    shape = [int(d) for d in inputs[0]["shape"]]
    if len(shape) != 4 or shape[0] != 1:
        raise ModelError(f"{path}: evaluate needs an image input shaped [1, H, W, C], this one is {shape}")
    out = [int(d) for d in outputs[0]["shape"]]
    classes = int(np.prod(out))
    if out[0] != 1 or classes < 2:
        raise ModelError(f"{path}: evaluate needs one score per class in the output, this one is shaped {out}")
    return ModelIO(shape[1], shape[2], shape[3], classes)


def _float_recipe(float_model: Optional[str]):
    """The recipe of a `--float` weights file (None for a SavedModel or without --float)."""
    if float_model is None:
        return None
    path = Path(float_model)
    if path.is_dir():
        return None
    if not path.is_file():
        raise DataError(f"--float {path} does not exist (a SavedModel folder or a weights .npz from mcugen train)")
    if path.suffix != ".npz":
        raise DataError(f"--float {path}: give a SavedModel folder or a weights .npz written by mcugen train")
    from mcugen.recipe import read_recipe

    recipe = read_recipe(path)
    if recipe is None:
        raise DataError(f"--float {path} holds weights without a recorded architecture (not written by "
                        "`mcugen train` or `mcugen model --save-weights`); give a SavedModel instead")
    return recipe


def _float_scores(float_model: str, recipe, io: ModelIO, x: np.ndarray, progress: bool) -> np.ndarray:
    """Scores of the float model on preprocessed images `x` (N x H x W x C float32)."""
    from mcugen.progress import Progress

    if recipe is not None:
        from mcugen import mobilenet_v2 as mnv2
        from mcugen.train import predict_logits

        if recipe.classes != io.classes:
            raise ModelError(f"--float {float_model} has {recipe.classes} classes, the int8 model {io.classes}")
        if recipe.channels != io.channels:
            raise ModelError(f"--float {float_model} takes {recipe.channels} channels, the int8 model {io.channels}")
        weights = mnv2.load_weights(float_model)
        module = mnv2.build_mobilenet_v2(recipe.alpha, io.height, io.width, io.channels, recipe.classes,
                                         weights=weights)
        scores = []
        with Progress(len(x), "float model", "images", progress) as bar:
            for i in range(0, len(x), 64):
                scores.append(predict_logits(module, x[i:i + 64]))
                bar.update(len(scores[-1]))
        return np.concatenate(scores)
    from mcugen.mobilenet_v2 import import_tensorflow
    from mcugen.quantize import input_shape, load_saved_model_function

    tf = import_tensorflow()
    function, _ = load_saved_model_function(float_model)
    if tuple(input_shape(function)[1:]) != (io.height, io.width, io.channels):
        raise ModelError(f"--float {float_model} takes {tuple(input_shape(function)[1:])}, the int8 model "
                         f"{(io.height, io.width, io.channels)}")
    scores = []
    with Progress(len(x), "float model", "images", progress) as bar:
        for image in x:
            out = function(tf.constant(image[np.newaxis]))
            out = out[0] if isinstance(out, (list, tuple)) else out
            scores.append(np.asarray(out).reshape(-1))
            bar.update()
    return np.stack(scores)


def options_build(model_path: Path, options=None) -> Build:
    """`build(target)` with the compile options every command shares (mcugen.options): the host
    run gets them with target "portable", the board run with the board's target (or --target)."""
    import dataclasses

    from mcugen import driver
    from mcugen.options import CompileOptions

    opts = options or CompileOptions()

    def build(target: str):
        chosen = target if target == "portable" or opts.target is None else opts.target
        return driver.build(model_path, options=dataclasses.replace(opts, target=chosen))

    return build


def _run_host(gen, xq: np.ndarray, progress: bool) -> np.ndarray:
    """All images through the generated C compiled for the host: one process per chunk of images."""
    from mcugen import driver
    from mcugen.progress import Progress

    outputs = []
    with tempfile.TemporaryDirectory(prefix="mcugen-evaluate-") as tmp:
        exe = driver.compile_host(gen, Path(tmp) / "build")
        with Progress(len(xq), "generated C on the host", "images", progress) as bar:
            for start in range(0, len(xq), HOST_CHUNK):
                runs = [[image[np.newaxis]] for image in xq[start:start + HOST_CHUNK]]
                outs = driver.run_host(exe, gen, runs, Path(tmp) / f"io{start}")
                outputs.extend(run[0].reshape(-1) for run in outs)
                bar.update(len(runs))
    return np.stack(outputs)


def _run_board(runner, build: Build, board_name: str, xq: np.ndarray) -> np.ndarray:
    from mcugen.boards import get_board
    from mcugen.targets import target_for_board

    gen = build(target_for_board(get_board(board_name)).name)
    with tempfile.TemporaryDirectory(prefix="mcugen-evaluate-board-") as tmp:
        outs = runner(gen, [[image[np.newaxis]] for image in xq], Path(tmp))
    return np.stack([run[0].reshape(-1) for run in outs])


def evaluate(model_path: str | Path, data: str | Path, *, float_model: Optional[str] = None,
             board: Optional[str] = None, count: int = DEFAULT_BOARD_COUNT, seed: int = 0,
             scale: Optional[float] = None, offset: Optional[float] = None, progress: bool = True,
             build: Optional[Build] = None, log: Callable[[str], None] = lambda s: None) -> Evaluation:
    """Top-1 (and top-5 above 5 classes) of the float model (if given), the int8 model on
    tflite-runtime's reference kernels, the generated C on the host and, if `board`, the C on
    that emulated board for a seeded sample of `count` images; with the int8/C agreement.

    `build(target)` generates the code (default: `options_build` with the default compile options)."""
    from mcugen.datasets import DEFAULT_OFFSET, DEFAULT_SCALE, load_evaluation, preprocess
    from mcugen.quantize import quantize_input, run_reference
    from mcugen.progress import track

    start = time.monotonic()
    model_path = Path(model_path)
    if not model_path.is_file():
        raise DataError(f"model {model_path} does not exist (expected an int8 .tflite)")
    runner = None
    if board is not None:
        from mcugen import validate_board

        if count < 1:
            raise DataError(f"--count {count}: the board needs at least one image")
        runner = validate_board.make_runner(board)  # before any work: unknown and real boards are refused
    model = model_path.read_bytes()
    io = _model_io(model, model_path)
    recipe = _float_recipe(float_model)
    if scale is None:
        scale = recipe.scale if recipe is not None else DEFAULT_SCALE
    if offset is None:
        offset = recipe.offset if recipe is not None else DEFAULT_OFFSET
    if recipe is not None and recipe.class_names and len(recipe.class_names) != io.classes:
        raise ModelError(f"--float {float_model} has {len(recipe.class_names)} classes, the int8 model {io.classes}")
    log(f"reading {data}")
    dataset = load_evaluation(data, io.height, io.width, io.channels, io.classes,
                              recipe.class_names if recipe is not None else ())
    labels = dataset.labels
    x = preprocess(dataset.images, scale, offset)
    xq = quantize_input(model, x)
    rows = []
    if float_model is not None:
        log("float model")
        scores = _float_scores(float_model, recipe, io, x, progress)
        rows.append(_row("float", f"float32 (TensorFlow, {Path(float_model).name})", scores, labels, io.classes))
    log("int8 model on tflite-runtime's reference kernels")
    reference = run_reference(model, xq, lambda items: track(items, len(xq), "int8 TFLite reference", "images",
                                                              progress))
    reference = reference.reshape(len(xq), -1)
    rows.append(_row("int8_reference", "int8 tflite-runtime BUILTIN_REF", reference, labels, io.classes))
    build = build or options_build(model_path)
    log("generating C and compiling it for the host")
    host = _run_host(build("portable"), xq, progress)
    rows.append(_row("c_host", "int8 mcugen C on the host (gcc)", host, labels, io.classes))
    int8_pred, host_pred = rankings(reference)[:, 0], rankings(host)[:, 0]
    result = Evaluation(
        model=str(model_path), data=str(data), class_names=dataset.class_names, labels=labels, rows=rows,
        int8_c_agreement=float(np.mean(int8_pred == host_pred)),
        int8_c_bit_exact=bool(np.array_equal(reference, host)),
        confusion=confusion_matrix(labels, host_pred, io.classes),
        preprocessing={"scale": scale, "offset": offset, "height": io.height, "width": io.width,
                       "channels": io.channels},
    )
    if board is not None:
        sample = np.sort(np.random.default_rng(seed).choice(len(xq), min(count, len(xq)), replace=False))
        log(f"building firmware and running {len(sample)} images on {board}")
        on_board = _run_board(runner, build, board, xq[sample])
        rows.append(_row("c_board", f"int8 mcugen C on {board}", on_board, labels[sample], io.classes))
        result.board = board
        result.board_sample = [int(i) for i in sample]
        result.board_host_agreement = float(np.mean(rankings(on_board)[:, 0] == host_pred[sample]))
        result.board_host_bit_exact = bool(np.array_equal(on_board, host[sample]))
        result.host_top1_on_sample = float(np.mean(host_pred[sample] == labels[sample]))
    result.seconds = time.monotonic() - start
    return result


# ---- output ----------------------------------------------------------------------------------


def format_table(result: Evaluation) -> str:
    lines = [f"{result.model} on {result.data}: {len(result.labels)} images, {len(result.class_names)} classes"]
    top5 = any(row.top5 is not None for row in result.rows)
    lines.append(f"{'':<40} {'top-1':>7}" + (f" {'top-5':>7}" if top5 else "") + f" {'images':>7}")
    for row in result.rows:
        five = (f" {row.top5:>7.4f}" if row.top5 is not None else f" {'':>7}") if top5 else ""
        sample = f" (sample; the host: {result.host_top1_on_sample:.4f} on it)" if row.key == "c_board" else ""
        lines.append(f"{row.label:<40} {row.top1:>7.4f}{five} {row.images:>7}{sample}")
    n = len(result.labels)
    same = int(round(result.int8_c_agreement * n))
    exact = "outputs bit-exact" if result.int8_c_bit_exact else "OUTPUTS DIFFER"
    lines.append(f"int8 TFLite vs C on the host: agreement {result.int8_c_agreement:.4f} ({same}/{n} predictions; {exact})")
    if result.board is not None:
        k = len(result.board_sample)
        exact = "outputs bit-exact" if result.board_host_bit_exact else "OUTPUTS DIFFER"
        lines.append(f"C on {result.board} vs the host: agreement {result.board_host_agreement:.4f} "
                     f"({int(round(result.board_host_agreement * k))}/{k}; {exact})")
    if result.confusion is not None:
        lines.append("confusion matrix of the C on the host (rows: true class, columns: predicted):")
        names = [name[:6] for name in result.class_names]
        width = max(4, max(len(nm) for nm in names), len(str(int(result.confusion.max(initial=0)))))
        lines.append(" " * (width + 1) + " ".join(f"{nm:>{width}}" for nm in names))
        for name, counts in zip(names, result.confusion):
            lines.append(f"{name:>{width}} " + " ".join(f"{int(c):>{width}}" for c in counts))
    return "\n".join(lines)


def draw_confusion(result: Evaluation, path: Path) -> None:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    matrix = result.confusion
    classes = len(result.class_names)
    size = min(12.0, max(4.0, 0.45 * classes + 2))
    fig, ax = plt.subplots(figsize=(size, size), dpi=110)
    ax.imshow(matrix, cmap="Blues")
    if classes <= 30:
        ax.set_xticks(range(classes), result.class_names, rotation=90, fontsize=8)
        ax.set_yticks(range(classes), result.class_names, fontsize=8)
        for i in range(classes):
            for j in range(classes):
                if matrix[i, j]:
                    color = "white" if matrix[i, j] > matrix.max() / 2 else "black"
                    ax.text(j, i, str(int(matrix[i, j])), ha="center", va="center", fontsize=7, color=color)
    ax.set_xlabel("predicted (generated C on the host)")
    ax.set_ylabel("true class")
    top1 = next(row.top1 for row in result.rows if row.key == "c_host")
    ax.set_title(f"{Path(result.model).name}: top-1 {top1:.4f} on {len(result.labels)} images", fontsize=9)
    fig.tight_layout()
    try:
        fig.savefig(path)
    except OSError as exc:
        raise OutputError(f"{path}: cannot write the picture ({exc.strerror})") from None
    finally:
        plt.close(fig)


def run_evaluate(args) -> int:
    """`mcugen evaluate MODEL DATA`: exit 0 when the C equals int8 TFLite on every image, 1 if not."""
    png = Path(args.png) if args.png else None
    if png is not None:
        if png.suffix.lower() != ".png":
            raise OutputError(f"--png {png}: the picture's file name must end in .png")
        if not png.parent.is_dir():
            raise OutputError(f"--png {png}: folder {png.parent} does not exist")
    board = args.board if args.board and args.board != "host" else None
    start = time.monotonic()

    def log(message: str) -> None:
        if not args.quiet:
            print(f"[{time.monotonic() - start:6.1f}s] {message}", file=sys.stderr, flush=True)

    from mcugen.options import options_from_args

    result = evaluate(args.model, args.data, float_model=args.float, board=board, count=args.count,
                      seed=args.seed, scale=args.scale, offset=args.offset, progress=not args.quiet, log=log,
                      build=options_build(Path(args.model), options_from_args(args)))
    if png is not None:
        draw_confusion(result, png)
    if args.json:
        print(json.dumps(result.to_json(), indent=2))
    else:
        print(format_table(result))
        if png is not None:
            print(f"picture: {png}")
    return 0 if result.agrees else 1


def register(subparsers) -> None:
    p = subparsers.add_parser(
        "evaluate", help="top-1/top-5 of the float model, int8 TFLite, the generated C on the host and on a board",
        description="Accuracy of a classifier at every step to the chip: the float model (--float), the int8 "
                    ".tflite on tflite-runtime's reference kernels (BUILTIN_REF, what mcugen is bit-exact with), "
                    "the generated C compiled for the host, and on an emulated board (--board) for a sample. "
                    "Exit 0 when the C on the host (and the board) equals int8 TFLite byte for byte, 1 if not.")
    p.add_argument("model", help="an int8 .tflite classifier (one image input, one score per class)")
    p.add_argument("data", help="folder with one sub-folder of images per class, or .npz with 'x' (pixels) and 'y'")
    p.add_argument("--float", metavar="WEIGHTS.npz|SAVED_MODEL",
                   help="the float model: weights written by `mcugen train` (also gives the preprocessing and "
                        "class names) or a SavedModel folder")
    from mcugen.options import add_compile_options

    add_compile_options(p, host_board=True, name=False)  # --board: also run a sample on that emulated board
    p.add_argument("--count", type=int, default=DEFAULT_BOARD_COUNT,
                   help=f"images run on the board (a seeded sample; default {DEFAULT_BOARD_COUNT})")
    p.add_argument("--seed", type=int, default=0, help="seed of the board's sample (default 0)")
    p.add_argument("--scale", type=float,
                   help="preprocessing x*scale+offset of raw pixels (default: from --float's weights, else 1/127.5)")
    p.add_argument("--offset", type=float, help="preprocessing offset (default: from --float's weights, else -1)")
    p.add_argument("--json", action="store_true", help="print one JSON object (results, agreement, confusion matrix)")
    p.add_argument("--png", metavar="FILE.png", help="draw the confusion matrix into FILE.png")
    p.add_argument("--quiet", action="store_true", help="no progress output")
    p.set_defaults(func=run_evaluate)

