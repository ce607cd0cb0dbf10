"""Example: train MobileNet v2 on scikit-learn's digits, quantize to int8, run it as generated C.

Offline and Keras-free. The 8x8 digits are scaled to 48x48 RGB, a MobileNet v2 (alpha 0.35)
is trained with a plain tf.GradientTape loop, quantized to full int8 with the TFLite converter,
then the test set is classified three ways: the float model, the int8 model on tflite-runtime's
reference kernels (BUILTIN_REF, mcugen's oracle), and mcugen's generated C compiled with the
host gcc. It prints one table and fails unless the last two agree on every test image (their
int8 outputs are also compared byte for byte).

    .venv/bin/python examples/digits_mobilenet_v2.py [--epochs 12] [--output-dir DIR]
"""

from __future__ import annotations

import argparse
import sys
import tempfile
import time
from pathlib import Path

import numpy as np

from mcugen import mobilenet_v2 as mnv2
from mcugen.datasets import conform_images, preprocess
from mcugen.quantize import QuantizeOptions, quantize_input, quantize_module, run_reference, write_model
from mcugen.recipe import Recipe, save_with_recipe
from mcugen.train import TrainOptions, predict_logits, train


def load_digits_images(resolution: int, seed: int):
    """scikit-learn's 1,797 digits as resolution^2 x 3 pixels 0..255, split 80/20 (seeded)."""
    from sklearn.datasets import load_digits

    digits = load_digits()
    pixels = conform_images(digits.images * (255.0 / 16.0), resolution, resolution, 3, "digits")
    order = np.random.default_rng(seed).permutation(len(pixels))
    cut = int(0.8 * len(pixels))
    train_idx, test_idx = order[:cut], order[cut:]
    return pixels[train_idx], digits.target[train_idx], pixels[test_idx], digits.target[test_idx]


def main(argv=None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--alpha", type=float, default=0.35)
    parser.add_argument("--resolution", type=int, default=48)
    parser.add_argument("--epochs", type=int, default=12)
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--output-dir", type=Path, help="keep digits.tflite and digits.npz here (default: temp)")
    args = parser.parse_args(argv)

    start = time.monotonic()
    x_train, y_train, x_test, y_test = load_digits_images(args.resolution, args.seed)
    x_train, x_test = preprocess(x_train), preprocess(x_test)  # x / 127.5 - 1

    module = mnv2.build_mobilenet_v2(args.alpha, args.resolution, classes=10, seed=args.seed, batch_norm=True)
    train(module, x_train, y_train, TrainOptions(epochs=args.epochs, batch_size=32, learning_rate=3e-3,
                                                 seed=args.seed))
    export = module.export_module()  # batch norm folded: conv + bias + ReLU6 only
    float_pred = np.argmax(predict_logits(export, x_test), axis=1)

    model = quantize_module(export, x_train[:200], QuantizeOptions(samples=200))
    x_int8 = quantize_input(model, x_test)
    ref_out = run_reference(model, x_int8)  # tflite-runtime 2.14, BUILTIN_REF
    ref_pred = np.argmax(ref_out, axis=1)

    with tempfile.TemporaryDirectory(prefix="mcugen-digits-") as tmp:
        folder = args.output_dir or Path(tmp)
        folder.mkdir(parents=True, exist_ok=True)
        model_path = write_model(model, folder / "digits.tflite")
        # with its recipe, so that `mcugen evaluate digits.tflite DATA --float digits.npz` needs no flag
        recipe = Recipe("mobilenet_v2", args.alpha, args.resolution, args.resolution, 3, 10,
                        tuple(str(d) for d in range(10)))
        save_with_recipe(export.folded_weights(), recipe, folder / "digits.npz")
        try:
            from mcugen.driver import compile_and_run_host
        except ImportError as exc:
            compile_and_run_host = None
            missing = str(exc)
        c_out = None
        if compile_and_run_host is not None:
            runs = compile_and_run_host(model_path, [[x[np.newaxis]] for x in x_int8])
            c_out = np.stack([run[0].reshape(-1) for run in runs])

    rows = [("float32 (TensorFlow)", float_pred), ("int8 tflite-runtime 2.14 BUILTIN_REF", ref_pred)]
    if c_out is not None:
        rows.append(("int8 mcugen C on the host (gcc)", np.argmax(c_out, axis=1)))
    print(f"MobileNet v2 alpha {args.alpha:g} {args.resolution}x{args.resolution}x3 on digits: "
          f"{len(y_train)} training / {len(y_test)} test images, {len(model):,}-byte int8 model")
    print(f"{'model':<40} {'test accuracy':>13}")
    for name, pred in rows:
        print(f"{name:<40} {np.mean(pred == y_test):>13.4f}")
    print(f"total time {time.monotonic() - start:.0f} s")

    if c_out is None:
        print(f"generated-C column missing: mcugen.driver.compile_and_run_host unavailable ({missing})",
              file=sys.stderr)
        return 1
    agree = np.argmax(c_out, axis=1) == ref_pred
    assert agree.all(), f"C and tflite-runtime disagree on {np.count_nonzero(~agree)} test images"
    assert np.array_equal(c_out, ref_out.reshape(len(ref_out), -1)), "C and tflite-runtime int8 outputs differ"
    print(f"generated C == tflite-runtime BUILTIN_REF on all {len(y_test)} test images (predictions and bytes)")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
