"""Sub-commands `model`, `train` and `quantize`: build, train and int8-quantize models without Keras."""

from __future__ import annotations

import argparse
import sys
import time
import warnings
from pathlib import Path

from mcugen.errors import McugenError, OutputError

ARCHITECTURES = ("mobilenet_v2",)


def _add_shape_options(parser: argparse.ArgumentParser, classes_default) -> None:
    parser.add_argument("--alpha", type=float, default=1.0, help="width multiplier (default 1.0)")
    parser.add_argument("--resolution", type=int, default=224, help="input height and width (default 224)")
    parser.add_argument("--height", type=int, help="input height (overrides --resolution)")
    parser.add_argument("--width", type=int, help="input width (overrides --resolution)")
    parser.add_argument("--channels", type=int, default=3, help="input channels (default 3)")
    parser.add_argument("--classes", type=int, default=classes_default,
                        help="number of classes" + (f" (default {classes_default})" if classes_default else
                                                    " (default: from the data)"))
    parser.add_argument("--weights", metavar="FILE.npz", help="start from these weights instead of a seeded init")
    parser.add_argument("--seed", type=int, default=0, help="seed of the initial weights and sampling (default 0)")


def _add_preprocess_options(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("--scale", type=float, default=1.0 / 127.5,
                        help="preprocessing x*scale+offset of raw pixels (default 1/127.5)")
    parser.add_argument("--offset", type=float, default=-1.0, help="preprocessing offset (default -1)")


def _add_quantize_options(parser: argparse.ArgumentParser) -> None:
    from mcugen.quantize import DEFAULT_SAMPLES, IO_TYPES

    parser.add_argument("--input-type", choices=IO_TYPES, default="int8", help="model input type (default int8)")
    parser.add_argument("--output-type", choices=IO_TYPES, default="int8", help="model output type (default int8)")
    parser.add_argument("--calibration", metavar="DIR|FILE.npy|FILE.npz",
                        help="calibration images (folder, .npy, or .npz 'x'); default: synthetic, with a warning")
    parser.add_argument("--samples", type=int, default=DEFAULT_SAMPLES,
                        help=f"calibration samples (default {DEFAULT_SAMPLES})")
    parser.add_argument("--per-tensor-dense", action="store_true",
                        help="quantize fully connected weights per tensor instead of per channel")
    _add_preprocess_options(parser)


def register(subparsers) -> None:
    """Add the `model`, `train` and `quantize` sub-commands to an argparse subparsers object."""
    model = subparsers.add_parser(
        "model", help="build a MobileNet v2 (seeded or given weights) and write it as a full-int8 .tflite",
        description="Build MobileNet v2 (Sandler et al. 2018) with tf.Module and quantize it to full int8.")
    model.add_argument("architecture", choices=ARCHITECTURES)
    _add_shape_options(model, 1000)
    _add_quantize_options(model)
    model.add_argument("--save-weights", metavar="FILE.npz", help="also write the (folded) float weights")
    model.add_argument("--summary", action="store_true",
                       help="print the layer table (channels, shapes, params, MACs); needs no TensorFlow")
    model.add_argument("-o", "--output", metavar="FILE.tflite", help="the int8 model to write")
    model.set_defaults(func=run_model)

    train = subparsers.add_parser(
        "train", help="train a MobileNet v2 on an image folder or .npz and save its weights (.npz)",
        description="Train with a plain tf.GradientTape loop (Adam, cosine decay, batch norm folded on save).")
    train.add_argument("data", help="folder with one sub-folder of images per class, or .npz with 'x' and 'y'")
    train.add_argument("--architecture", choices=ARCHITECTURES, default="mobilenet_v2")
    _add_shape_options(train, None)
    _add_preprocess_options(train)
    train.add_argument("--epochs", type=int, default=10, help="epochs (default 10)")
    train.add_argument("--batch-size", type=int, default=32, help="batch size (default 32)")
    train.add_argument("--learning-rate", type=float, default=1e-3, help="Adam learning rate (default 1e-3)")
    train.add_argument("--validation-split", type=float, default=0.0,
                       help="fraction held out to report accuracy (default 0)")
    train.add_argument("--no-progress", action="store_true", help="no progress bar")
    train.add_argument("-o", "--output", metavar="FILE.npz", required=True, help="weights file to write")
    train.set_defaults(func=run_train)

    quantize = subparsers.add_parser(
        "quantize", help="full-int8 post-training quantization of a TensorFlow SavedModel",
        description="Quantize any single-input SavedModel (loaded with tf.saved_model.load) to full int8.")
    quantize.add_argument("saved_model", help="SavedModel folder")
    quantize.add_argument("--signature", help="signature to convert (default serving_default)")
    _add_quantize_options(quantize)
    quantize.add_argument("--seed", type=int, default=0, help="seed of calibration sampling (default 0)")
    quantize.add_argument("-o", "--output", metavar="FILE.tflite", required=True, help="the int8 model to write")
    quantize.set_defaults(func=run_quantize)


def _config(args, classes):
    from mcugen.mobilenet_v2 import MobileNetV2Config

    height = args.height if args.height is not None else args.resolution
    width = args.width if args.width is not None else args.resolution
    return MobileNetV2Config(args.alpha, height, width, args.channels, classes)


def _check_output(path: str, suffix: str) -> Path:
    out = Path(path)
    if out.suffix != suffix:
        raise OutputError(f"output {out} must end in {suffix}")
    if not out.parent.is_dir():
        raise OutputError(f"cannot write {out}: folder {out.parent} does not exist")
    return out


def _quantize_options(args):
    from mcugen.quantize import QuantizeOptions

    return QuantizeOptions(input_type=args.input_type, output_type=args.output_type, samples=args.samples,
                           seed=args.seed, per_channel_dense=not args.per_tensor_dense)


def _report_warnings(caught) -> None:
    from mcugen.quantize import SyntheticCalibrationWarning

    for warning in caught:
        if issubclass(warning.category, SyntheticCalibrationWarning):
                print(f"mcugen: warning: {warning.message}", file=sys.stderr)


def _report_model(data: bytes, path: Path, seconds: float) -> None:
    from mcugen.quantize import operator_names

    ops = operator_names(data)
    kinds = ", ".join(f"{name} x{ops.count(name)}" for name in dict.fromkeys(ops))
    print(f"wrote {path} ({len(data):,} bytes, {len(ops)} operators: {kinds}) in {seconds:.1f} s")


def run_model(args) -> int:
    """`mcugen model mobilenet_v2 ...`: build (seeded or --weights), quantize, write the .tflite."""
    from mcugen import mobilenet_v2 as mnv2

    config = _config(args, args.classes)
    if args.summary:
        print(mnv2.format_table(config))
        if not args.output:
            return 0
    if not args.output:
        raise McugenError("mcugen model needs -o FILE.tflite (or --summary)")
    out = _check_output(args.output, ".tflite")
    save = _check_output(args.save_weights, ".npz") if args.save_weights else None
    options = _quantize_options(args)
    start = time.monotonic()
    weights = mnv2.check_weights(config, mnv2.load_weights(args.weights), args.weights) if args.weights else None
    from mcugen.datasets import load_calibration
    from mcugen.quantize import quantize_module, write_model

    calibration = load_calibration(args.calibration, config.height, config.width, config.channels, args.samples,
                                   args.scale, args.offset, args.seed)
    module = mnv2.build_mobilenet_v2(config.alpha, config.height, config.width, config.channels, config.classes,
                                     args.seed, weights)
    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always")
        data = quantize_module(module, calibration, options, args.scale, args.offset)
    _report_warnings(caught)
    write_model(data, out)
    if save is not None:
        mnv2.save_weights(module.folded_weights(), save)
    _report_model(data, out, time.monotonic() - start)
    return 0


def run_train(args) -> int:
    """`mcugen train DATA ...`: GradientTape training, batch norm folded into the saved weights."""
    from mcugen import mobilenet_v2 as mnv2
    from mcugen.datasets import load_labelled, preprocess
    from mcugen.train import TrainOptions, train

    out = _check_output(args.output, ".npz")
    probe = _config(args, args.classes or 1)  # validates alpha/resolution before any data is read
    options = TrainOptions(epochs=args.epochs, batch_size=args.batch_size, learning_rate=args.learning_rate,
                           seed=args.seed, validation_split=args.validation_split, progress=not args.no_progress)
    data = load_labelled(args.data, probe.height, probe.width, probe.channels)
    classes = args.classes or data.classes
    if classes < data.classes:
        raise McugenError(f"--classes {classes} is smaller than the {data.classes} classes found in {args.data}")
    config = _config(args, classes)
    weights = mnv2.check_weights(config, mnv2.load_weights(args.weights), args.weights) if args.weights else None
    module = mnv2.build_mobilenet_v2(config.alpha, config.height, config.width, config.channels, config.classes,
                                     args.seed, weights, batch_norm=True)
    result = train(module, preprocess(data.images, args.scale, args.offset), data.labels, options)
    mnv2.save_weights(module.folded_weights(), out)
    last = result.history[-1]
    val = f", validation accuracy {last.validation_accuracy:.4f}" if last.validation_accuracy is not None else ""
    print(f"wrote {out}: {config.classes} classes ({', '.join(data.class_names[:10])}"
          f"{', ...' if data.classes > 10 else ''}), {result.train_samples} training samples, "
          f"{len(result.history)} epochs in {result.seconds:.1f} s, final loss {last.loss:.4f}, "
          f"train accuracy {last.train_accuracy:.4f}{val}")
    return 0


def run_quantize(args) -> int:
    """`mcugen quantize SAVED_MODEL -o out.tflite`: full-int8 PTQ of a SavedModel."""
    from mcugen.datasets import load_calibration
    from mcugen.quantize import (calibration_or_synthetic, convert_concrete_function, input_shape,
                                 load_saved_model_function, single_sample_runs, write_model)

    out = _check_output(args.output, ".tflite")
    options = _quantize_options(args)
    start = time.monotonic()
    function, trackable = load_saved_model_function(args.saved_model, args.signature)
    shape = input_shape(function)
    calibration = None
    if args.calibration:
        if len(shape) != 4:
            raise McugenError(f"--calibration with images needs an NHWC model input, this one is {shape}")
        _, h, w, c = shape
        calibration = load_calibration(args.calibration, h, w, c, args.samples, args.scale, args.offset, args.seed)
    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always")
        images = calibration_or_synthetic(calibration, shape, options, args.scale, args.offset)
    _report_warnings(caught)
    data = convert_concrete_function(function, trackable, single_sample_runs(images), options)
    write_model(data, out)
    _report_model(data, out, time.monotonic() - start)
    return 0
