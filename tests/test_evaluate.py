"""`mcugen evaluate` end to end (train -> model --weights -> evaluate, host gcc and QEMU), its bad
input, and `validate` on images and batches."""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest

from mcugen.cli import main as cli_main
from mcugen.validate import validate

REPO = Path(__file__).resolve().parents[1]
OPS = REPO / "tests" / "models" / "ops"
CHAIN = OPS / "chain_conv_dw_conv_add_mean_fc_softmax.tflite"  # [1,12,12,3] int8 -> 5 class scores


def _mcugen(*argv, timeout=900):
    r = subprocess.run([sys.executable, "-m", "mcugen", *map(str, argv)], capture_output=True, text=True,
                       timeout=timeout, cwd=REPO)
    assert "Traceback" not in r.stderr, r.stderr[-2000:]
    return r


def _digits_folder(root: Path) -> None:
    """scikit-learn's 1,797 8x8 digits as grey PNGs (0..255) in root/{train,test}/<digit>/, 80/20 seeded."""
    from PIL import Image
    from sklearn.datasets import load_digits

    digits = load_digits()
    order = np.random.default_rng(0).permutation(len(digits.images))
    cut = int(0.8 * len(order))
    for part, index in (("train", order[:cut]), ("test", order[cut:])):
        for i in index:
            folder = root / part / str(digits.target[i])
            folder.mkdir(parents=True, exist_ok=True)
            pixels = np.round(digits.images[i] * (255.0 / 16.0)).astype(np.uint8)
            Image.fromarray(pixels, "L").save(folder / f"{i:04d}.png")


@pytest.fixture(scope="module")
def digits(tmp_path_factory):
    """train (48x48 grey, 6 epochs) -> model --weights (no architecture flag): the folder, weights, model."""
    root = tmp_path_factory.mktemp("digits")
    _digits_folder(root)
    weights, model = root / "w.npz", root / "digits.tflite"
    r = _mcugen("train", root / "train", "--resolution", "48", "--channels", "1", "--epochs", "6",
                "--learning-rate", "3e-3", "-o", weights)
    assert r.returncode == 0, r.stderr[-2000:]
    assert "float accuracy on the 144 held-out images" in r.stdout, r.stdout  # 10% of 1,437 by default
    assert "\r" not in r.stderr  # not a terminal: plain lines, no progress bar
    r = _mcugen("model", "mobilenet_v2", "--weights", weights, "--calibration", root / "train", "--samples", "200",
                "-o", model)
    assert r.returncode == 0, r.stderr[-2000:]
    return root, weights, model


def test_weights_file_records_the_recipe(digits):
    from mcugen.quantize import reference_interpreter
    from mcugen.recipe import read_recipe

    root, weights, model = digits
    recipe = read_recipe(weights)
    assert (recipe.architecture, recipe.alpha, recipe.height, recipe.width, recipe.channels, recipe.classes) == \
        ("mobilenet_v2", 0.35, 48, 48, 1, 10)
    assert recipe.class_names == tuple(str(d) for d in range(10))
    assert recipe.scale == pytest.approx(1 / 127.5) and recipe.offset == -1.0
    # `model --weights` took the shape from the file: no --resolution/--channels/--classes were given
    details = reference_interpreter(model.read_bytes())
    assert list(details.get_input_details()[0]["shape"]) == [1, 48, 48, 1]
    assert list(details.get_output_details()[0]["shape"]) == [1, 10]


def _independent_int8_predictions(model: Path, folder: Path) -> tuple[np.ndarray, np.ndarray]:
    """Labels and int8 predictions computed here without mcugen: PIL, x/127.5-1, QUANTIZE, BUILTIN_REF."""
    from PIL import Image
    from tflite_runtime.interpreter import Interpreter, OpResolverType

    interpreter = Interpreter(model_path=str(model), experimental_op_resolver_type=OpResolverType.BUILTIN_REF)
    interpreter.allocate_tensors()
    inp, out = interpreter.get_input_details()[0], interpreter.get_output_details()[0]
    scale, zero_point = inp["quantization"]
    labels, predictions = [], []
    for class_dir in sorted(p for p in folder.iterdir() if p.is_dir()):
        for path in sorted(class_dir.glob("*.png")):
            with Image.open(path) as image:
                pixels = np.asarray(image.convert("L").resize((48, 48), Image.BILINEAR), np.float32)
            x = pixels * np.float32(1 / 127.5) - np.float32(1.0)
            ratio = x / np.float32(scale)
            q = np.clip(np.sign(ratio) * np.floor(np.abs(ratio) + np.float32(0.5)) + zero_point, -128, 127)
            interpreter.set_tensor(inp["index"], q.astype(np.int8).reshape(1, 48, 48, 1))
            interpreter.invoke()
            labels.append(int(class_dir.name))
            predictions.append(int(np.argmax(interpreter.get_tensor(out["index"])[0])))
    return np.asarray(labels), np.asarray(predictions)


@pytest.fixture(scope="module")
def host_report(digits):
    """`evaluate --float w.npz --json --png` on the 360 test images: (report, picture path)."""
    root, weights, model = digits
    png = root / "confusion.png"
    r = _mcugen("evaluate", model, root / "test", "--float", weights, "--json", "--png", png)
    assert r.returncode == 0, r.stderr[-2000:]
    return json.loads(r.stdout), png


def test_evaluate_float_int8_and_c_on_the_host(digits, host_report):
    root, weights, model = digits
    report, png = host_report
    results = report["results"]
    assert report["images"] == 360 and report["classes"] == 10
    float_, int8, c = results["float"], results["int8_reference"], results["c_host"]
    assert c["predictions"] == int8["predictions"]  # to the image
    assert report["agreement"] == {"int8_vs_c": 1.0, "int8_vs_c_bit_exact": True}
    assert abs(int8["top1"] - float_["top1"]) <= 0.02, (float_["top1"], int8["top1"])
    assert float_["top1"] > 0.85 and int8["top1"] > 0.85
    assert "top5" in int8 and int8["top5"] >= int8["top1"]
    # the same preprocessing as training, checked against a pipeline written here from scratch
    labels, predictions = _independent_int8_predictions(model, root / "test")
    np.testing.assert_array_equal(report["labels"], labels)
    np.testing.assert_array_equal(int8["predictions"], predictions)
    assert int8["top1"] == pytest.approx(np.mean(predictions == labels))
    matrix = np.asarray(report["confusion_matrix"])
    assert matrix.sum() == 360 and np.trace(matrix) == round(c["top1"] * 360)
    assert png.read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"


def test_evaluate_on_the_emulated_board_agrees_with_the_host(digits):
    root, _, model = digits
    r = _mcugen("evaluate", model, root / "test", "--board", "qemu-mps2-an386", "--count", "20", "--json")
    assert r.returncode == 0, r.stderr[-2000:]
    report = json.loads(r.stdout)
    sample = report["board"]["sample"]
    assert len(sample) == 20 and len(set(sample)) == 20
    host, board = report["results"]["c_host"]["predictions"], report["results"]["c_board"]["predictions"]
    assert board == [host[i] for i in sample]
    assert report["agreement"]["board_vs_host"] == 1.0 and report["agreement"]["board_vs_host_bit_exact"] is True


def test_evaluate_with_a_saved_model_as_the_float_model(digits, host_report, tmp_path):
    from mcugen import mobilenet_v2 as mnv2

    tf = mnv2.import_tensorflow()
    root, weights, model = digits
    module = mnv2.build_mobilenet_v2(0.35, 48, channels=1, classes=10, weights=mnv2.load_weights(weights))
    signature = tf.function(module.__call__, input_signature=[tf.TensorSpec([None, 48, 48, 1], tf.float32,
                                                                            name="images")])
    tf.saved_model.save(module, str(tmp_path / "saved"), signatures=signature.get_concrete_function())
    r = _mcugen("evaluate", model, root / "test", "--float", tmp_path / "saved", "--json", "--quiet")
    assert r.returncode == 0, r.stderr[-2000:]
    from_saved, from_weights = json.loads(r.stdout)["results"]["float"], host_report[0]["results"]["float"]
    same = np.mean(np.equal(from_saved["predictions"], from_weights["predictions"]))
    assert same >= 0.99 and abs(from_saved["top1"] - from_weights["top1"]) <= 0.01, (same, from_saved["top1"])


def test_quantize_reads_the_weights_file(digits, tmp_path):
    root, weights, model = digits
    out = tmp_path / "q.tflite"
    r = _mcugen("quantize", weights, "--calibration", root / "train", "--samples", "200", "-o", out)
    assert r.returncode == 0, r.stderr[-2000:]
    assert out.read_bytes() == model.read_bytes()  # the same recipe, calibration and converter: the same model


def test_validate_a_png_from_the_data_is_bit_exact(digits, tmp_path):
    root, _, model = digits
    image = sorted((root / "test" / "7").glob("*.png"))[0]
    report = validate(model, input_files=[str(image)], save_outputs=tmp_path)
    assert report.bit_exact and report.runs == 1


# ---- fast tests on a small 5-class model --------------------------------------------------------


def _chain_npz(path: Path, count: int = 12, labels=None) -> None:
    rng = np.random.default_rng(7)
    x = rng.integers(0, 256, (count, 12, 12, 3)).astype(np.uint8)
    y = np.asarray(labels if labels is not None else rng.integers(0, 5, count))
    np.savez(path, x=x, y=y)


def test_evaluate_an_npz_text_and_json(tmp_path, capsys):
    data = tmp_path / "d.npz"
    _chain_npz(data)
    assert cli_main(["evaluate", str(CHAIN), str(data), "--json", "--quiet"]) == 0
    report = json.loads(capsys.readouterr().out)
    assert report["images"] == 12 and report["classes"] == 5
    assert "top5" not in report["results"]["c_host"]  # 5 classes: top-5 says nothing
    assert report["agreement"]["int8_vs_c_bit_exact"] is True
    assert cli_main(["evaluate", str(CHAIN), str(data), "--quiet"]) == 0
    out = capsys.readouterr().out
    assert "int8 mcugen C on the host (gcc)" in out and "agreement 1.0000 (12/12" in out


def _write_pngs(folder: Path, count: int = 2) -> None:
    from PIL import Image

    folder.mkdir(parents=True, exist_ok=True)
    for i in range(count):
        Image.fromarray(np.full((12, 12, 3), 30 * i, np.uint8)).save(folder / f"{i}.png")


def _class_folder(root: Path, classes: int) -> Path:
    for c in range(classes):
        _write_pngs(root / f"c{c}")
    return root


@pytest.mark.parametrize("case, message", [
    ("unreadable", "cannot be read"),
    ("empty_class", "holds no"),
    ("too_many_classes", "has 6 class folders but the model has 5 classes"),
    ("npz_label", "label 7 is out of range for a model with 5 classes"),
    ("not_a_recipe_class", "class folder 'cat' is not one of the model's"),
    ("missing", "does not exist"),
])
def test_evaluate_bad_data_is_one_line_exit_2(tmp_path, capsys, case, message):
    extra = []
    if case == "unreadable":
        data = _class_folder(tmp_path / "d", 5)
        (data / "c2" / "broken.png").write_bytes(b"\x89PNG\r\n\x1a\nnot really")
    elif case == "empty_class":
        data = _class_folder(tmp_path / "d", 5)
        (data / "c5").mkdir()
    elif case == "too_many_classes":
        data = _class_folder(tmp_path / "d", 6)
    elif case == "npz_label":
        data = tmp_path / "d.npz"
        _chain_npz(data, 3, [0, 7, 1])
    elif case == "not_a_recipe_class":
        from mcugen import mobilenet_v2 as mnv2
        from mcugen.recipe import Recipe, save_with_recipe

        config = mnv2.MobileNetV2Config(0.35, 32, 32, 3, 5)
        recipe = Recipe("mobilenet_v2", 0.35, 32, 32, 3, 5, ("a", "b", "c", "d", "e"))
        save_with_recipe(mnv2.init_weights(config), recipe, tmp_path / "w.npz")
        data = _class_folder(tmp_path / "d", 1)
        (data / "c0").rename(data / "cat")
        extra = ["--float", str(tmp_path / "w.npz")]
    else:
        data = tmp_path / "nothing"
    assert cli_main(["evaluate", str(CHAIN), str(data), "--quiet", *extra]) == 2
    err = capsys.readouterr().err
    assert err.startswith("mcugen: error: ") and err.count("\n") == 1 and message in err, err


@pytest.mark.parametrize("board, message", [("stm32f746", "validation runs on an emulated board"),
                                            ("nosuch", "invalid choice: 'nosuch'")])
def test_evaluate_refuses_boards_it_cannot_run_before_any_work(tmp_path, capsys, board, message):
    data = tmp_path / "d.npz"
    _chain_npz(data)
    try:
        code = cli_main(["evaluate", str(CHAIN), str(data), "--board", board])
    except SystemExit as exc:  # argparse refuses an unknown board while parsing
        code = exc.code
    assert code == 2
    err = capsys.readouterr().err
    assert err.startswith("mcugen: error: ") and err.count("\n") == 1 and message in err, err


def test_quantize_a_weights_file_without_recipe_gives_the_model_command(tmp_path, capsys):
    from mcugen import mobilenet_v2 as mnv2

    config = mnv2.MobileNetV2Config(0.35, 32, 32, 3, 5)
    mnv2.save_weights(mnv2.init_weights(config), tmp_path / "plain.npz")
    assert cli_main(["quantize", str(tmp_path / "plain.npz"), "-o", str(tmp_path / "m.tflite")]) == 2
    err = capsys.readouterr().err
    assert "mcugen model mobilenet_v2 --weights" in err and err.count("\n") == 1
    assert not (tmp_path / "m.tflite").exists()


def test_model_refuses_an_option_that_contradicts_the_recipe(tmp_path, capsys):
    from mcugen import mobilenet_v2 as mnv2
    from mcugen.recipe import Recipe, save_with_recipe

    config = mnv2.MobileNetV2Config(0.35, 40, 32, 3, 5)
    save_with_recipe(mnv2.init_weights(config), Recipe("mobilenet_v2", 0.35, 40, 32, 3, 5), tmp_path / "w.npz")
    assert mnv2.load_weights(tmp_path / "w.npz").keys() == mnv2.init_weights(config).keys()  # recipe skipped
    assert cli_main(["model", "mobilenet_v2", "--weights", str(tmp_path / "w.npz"), "--alpha", "1.0",
                     "-o", str(tmp_path / "m.tflite")]) == 2
    assert "--alpha 1 contradicts" in capsys.readouterr().err
    assert cli_main(["model", "mobilenet_v2", "--weights", str(tmp_path / "w.npz"), "--summary"]) == 0
    assert "MobileNet v2 alpha 0.35, input 40x32x3, 5 classes" in capsys.readouterr().out  # from the recipe


# ---- validate on images and batches ----------------------------------------------------------


def _expected_image_input(path: Path, shape, quantization, dtype) -> np.ndarray:
    """Written here independently: PIL (grey/RGB, bilinear), x/127.5-1, QUANTIZE's rounding."""
    from PIL import Image

    _, h, w, c = shape
    with Image.open(path) as image:
        pixels = np.asarray(image.convert("L" if c == 1 else "RGB").resize((w, h), Image.BILINEAR), np.float32)
    x = (pixels * np.float32(1 / 127.5) - np.float32(1.0)).reshape(1, h, w, c)
    if dtype == np.float32:
        return x
    scale, zero_point = quantization
    ratio = x / np.float32(scale)
    info = np.iinfo(dtype)
    q = np.sign(ratio) * np.floor(np.abs(ratio) + np.float32(0.5)) + zero_point
    return np.clip(q, info.min, info.max).astype(dtype)


@pytest.mark.parametrize("model", ["chain_conv_dw_conv_add_mean_fc_softmax", "conv2d_3x3_same_s2_cin1_relu6",
                                   "quantize_uint8_io", "quantize_float_input"])
def test_validate_on_an_image_is_bit_exact(tmp_path, model):
    from PIL import Image
    from tflite_runtime.interpreter import Interpreter

    path = OPS / f"{model}.tflite"
    detail = Interpreter(model_path=str(path)).get_input_details()[0]
    rng = np.random.default_rng(3)
    image = tmp_path / "photo.png"
    Image.fromarray(rng.integers(0, 256, (17, 23, 3)).astype(np.uint8)).save(image)  # resized to the input
    report = validate(path, input_files=[str(image)], save_outputs=tmp_path / "io")
    assert report.bit_exact and report.runs == 1, report.per_run
    got = np.load(tmp_path / "io" / "run0_input0.npy")
    want = _expected_image_input(image, detail["shape"], detail["quantization"], detail["dtype"])
    np.testing.assert_array_equal(got, want)


def test_validate_on_a_batch_is_bit_exact(tmp_path):
    rng = np.random.default_rng(4)
    batch = rng.integers(-128, 128, (6, 12, 12, 3)).astype(np.int8)
    np.save(tmp_path / "batch.npy", batch)
    report = validate(CHAIN, input_files=[str(tmp_path / "batch.npy")], save_outputs=tmp_path / "io")
    assert report.bit_exact and report.runs == 6, report.per_run
    for i in range(6):
        np.testing.assert_array_equal(np.load(tmp_path / "io" / f"run{i}_input0.npy"), batch[i:i + 1])


def test_validate_input_errors_are_one_line(tmp_path, capsys):
    np.save(tmp_path / "wrong.npy", np.zeros((6, 12, 11, 3), np.int8))
    (tmp_path / "bad.png").write_bytes(b"nope")
    for name, message in (("wrong.npy", "or [N, 12, 12, 3] (a batch of N)"), ("bad.png", "cannot be read")):
        assert cli_main(["validate", str(CHAIN), "--input", str(tmp_path / name), "--quiet"]) == 2
        err = capsys.readouterr().err
        assert message in err and err.count("\n") == 1, err


def test_progress_is_plain_lines_off_a_terminal():
    import io

    from mcugen.progress import Progress

    stream = io.StringIO()
    with Progress(4, "epoch 1/1", "batches", stream=stream, interval=0.0) as bar:
        for _ in range(4):
            bar.update(loss="0.5")
    lines = stream.getvalue().splitlines()
    assert lines[-1] == "epoch 1/1: 4/4 batches (100%), loss 0.5" and "\r" not in stream.getvalue()
    stream = io.StringIO()
    with Progress(4, "quiet", enabled=False, stream=stream, interval=0.0) as bar:
        bar.update()
    assert stream.getvalue() == ""
