"""Sub-commands `model`, `train` and `quantize`: build, train and int8-quantize models without Keras."""

from __future__ import annotations

import argparse
import sys
import time
import warnings
from pathlib import Path

from mcugen.errors import McugenError, OutputError

ARCHITECTURES = ("mobilenet_v2",)


DEFAULT_ALPHA = 0.35  # defaults that fit a microcontroller (MobileNet v2 0.35/96: ~0.6 MB int8 at 10 classes)
DEFAULT_RESOLUTION = 96
DEFAULT_CHANNELS = 3
DEFAULT_CLASSES = 10
DEFAULT_VALIDATION_SPLIT = 0.1


def _add_shape_options(parser: argparse.ArgumentParser, classes_default) -> None:
    recorded = " or the value recorded in --weights"
    parser.add_argument("--alpha", type=float, help=f"width multiplier (default {DEFAULT_ALPHA}{recorded})")
    parser.add_argument("--resolution", type=int,
                        help=f"input height and width (default {DEFAULT_RESOLUTION}{recorded})")
    parser.add_argument("--height", type=int, help="input height (overrides --resolution)")
    parser.add_argument("--width", type=int, help="input width (overrides --resolution)")
    parser.add_argument("--channels", type=int, help=f"input channels (default {DEFAULT_CHANNELS}{recorded})")
    parser.add_argument("--classes", type=int,
                        help="number of classes" + (f" (default {classes_default}{recorded})" if classes_default else
                                                    " (default: from the data)"))
    parser.add_argument("--weights", metavar="FILE.npz",
                        help="start from these weights instead of a seeded init; a file written by `mcugen train` "
                             "also gives the architecture and preprocessing")
    parser.add_argument("--seed", type=int, default=0, help="seed of the initial weights and sampling (default 0)")


def _add_preprocess_options(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("--scale", type=float,
                        help="preprocessing x*scale+offset of raw pixels (default 1/127.5, or as recorded in the weights)")
    parser.add_argument("--offset", type=float, help="preprocessing offset (default -1, or as recorded in the weights)")


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
    _add_shape_options(model, DEFAULT_CLASSES)
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
    train.add_argument("--validation-split", type=float,
                       help=f"fraction held out to report float accuracy (default {DEFAULT_VALIDATION_SPLIT}; "
                            "0 trains on everything)")
    train.add_argument("--no-progress", action="store_true",
                       help="no progress output (default: a bar on a terminal, a line every 10 s otherwise)")
    train.add_argument("-o", "--output", metavar="FILE.npz", required=True, help="weights file to write")
    train.set_defaults(func=run_train)

    quantize = subparsers.add_parser(
        "quantize", help="full-int8 post-training quantization of a TensorFlow SavedModel or trained weights",
        description="Quantize any single-input SavedModel (loaded with tf.saved_model.load), or a weights file "
                    "written by `mcugen train` (its recorded architecture and preprocessing), to full int8.")
    quantize.add_argument("saved_model", help="SavedModel folder, or a weights .npz written by `mcugen train`")
    quantize.add_argument("--signature", help="signature to convert (default serving_default)")
    _add_quantize_options(quantize)
    quantize.add_argument("--seed", type=int, default=0, help="seed of calibration sampling (default 0)")
    quantize.add_argument("-o", "--output", metavar="FILE.tflite", required=True, help="the int8 model to write")
    quantize.set_defaults(func=run_quantize)


def _config(args, classes):
    from mcugen.mobilenet_v2 import MobileNetV2Config

    resolution = args.resolution if args.resolution is not None else DEFAULT_RESOLUTION
    height = args.height if args.height is not None else resolution
    width = args.width if args.width is not None else resolution
    alpha = args.alpha if args.alpha is not None else DEFAULT_ALPHA
    channels = args.channels if args.channels is not None else DEFAULT_CHANNELS
    return MobileNetV2Config(alpha, height, width, channels, classes)


def _apply_recipe(args, recipe, where: str) -> None:
    """Fill the options the user left out from a weights file's recipe; a given option that
    contradicts the weights (alpha, channels, classes) is an error, as the arrays cannot fit it."""
    for name in ("alpha", "channels", "classes"):
        given, recorded = getattr(args, name, None), getattr(recipe, name)
        if given is not None and given != recorded:
            raise McugenError(f"--{name} {given:g} contradicts {where}, trained with {name} {recorded:g}; "
                              f"drop --{name} (the weights file records the architecture)")
        setattr(args, name, recorded)
    if args.resolution is None:
        if args.height is None:
            args.height = recipe.height
        if args.width is None:
            args.width = recipe.width
    for name in ("scale", "offset"):
        if getattr(args, name, None) is None:
            setattr(args, name, getattr(recipe, name))


def _default_preprocessing(args) -> None:
    from mcugen.datasets import DEFAULT_OFFSET, DEFAULT_SCALE

    if args.scale is None:
        args.scale = DEFAULT_SCALE
    if args.offset is None:
        args.offset = DEFAULT_OFFSET


def _weights_and_recipe(args):
    """(weights arrays or None, recipe or None) of --weights; the recipe fills unset options."""
    from mcugen import mobilenet_v2 as mnv2
    from mcugen.recipe import read_recipe

    if not args.weights:
        _default_preprocessing(args)
        return None, None
    weights = mnv2.load_weights(args.weights)
    recipe = read_recipe(args.weights)
    if recipe is not None:
        if recipe.architecture not in ARCHITECTURES:
            raise McugenError(f"weights {args.weights} hold a {recipe.architecture}; this mcugen builds "
                              f"{', '.join(ARCHITECTURES)}")
        _apply_recipe(args, recipe, args.weights)
    _default_preprocessing(args)
    return weights, recipe


def _recipe_for(config, scale: float, offset: float, class_names=(), training=None):
    from mcugen.recipe import Recipe

    names = tuple(class_names)
    if names and len(names) < config.classes:
        names = names + tuple(str(i) for i in range(len(names), config.classes))
    return Recipe("mobilenet_v2", config.alpha, config.height, config.width, config.channels, config.classes,
                  names[:config.classes], scale, offset, dict(training or {}))


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

    weights, recipe = _weights_and_recipe(args)
    config = _config(args, args.classes if args.classes is not None else DEFAULT_CLASSES)
    if args.summary:
        print(mnv2.format_table(config))
        if not args.output:
            return 0
    if not args.output:
        raise McugenError("mcugen model needs -o FILE.tflite (or --summary)")
    out = _check_output(args.output, ".tflite")
    save = _check_output(args.save_weights, ".npz") if args.save_weights else None
    if weights is not None:
        weights = mnv2.check_weights(config, weights, args.weights)
    start = time.monotonic()
    module = _quantize_to(config, weights, args, out)
    if save is not None:
        from mcugen.recipe import save_with_recipe

        names = recipe.class_names if recipe is not None else ()
        save_with_recipe(module.folded_weights(), _recipe_for(config, args.scale, args.offset, names), save)
    _report_model(out.read_bytes(), out, time.monotonic() - start)
    return 0


def _quantize_to(config, weights, args, out: Path):
    """Build MobileNet v2 (`weights` or seeded), calibrate on --calibration, write the int8 model."""
    from mcugen import mobilenet_v2 as mnv2
    from mcugen.datasets import load_calibration
    from mcugen.quantize import quantize_module, write_model

    options = _quantize_options(args)
    calibration = load_calibration(args.calibration, config.height, config.width, config.channels, args.samples,
                                   args.scale, args.offset, args.seed)
    module = mnv2.build_mobilenet_v2(config.alpha, config.height, config.width, config.channels, config.classes,
                                     args.seed, weights)
    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always")
        data = quantize_module(module, calibration, options, args.scale, args.offset)
    _report_warnings(caught)
    write_model(data, out)
    return module


def run_train(args) -> int:
    """`mcugen train DATA ...`: GradientTape training, batch norm folded into the saved weights."""
    from mcugen import mobilenet_v2 as mnv2
    from mcugen.datasets import load_labelled, preprocess
    from mcugen.recipe import save_with_recipe
    from mcugen.train import TrainOptions, train

    out = _check_output(args.output, ".npz")
    weights, _ = _weights_and_recipe(args)
    probe = _config(args, args.classes or 1)  # validates alpha/resolution before any data is read
    data = load_labelled(args.data, probe.height, probe.width, probe.channels)
    split = args.validation_split
    if split is None:
        # the default hold-out, unless the data set is too small to spare a tenth of it
        split = DEFAULT_VALIDATION_SPLIT if len(data.images) >= 20 else 0.0
    options = TrainOptions(epochs=args.epochs, batch_size=args.batch_size, learning_rate=args.learning_rate,
                           seed=args.seed, validation_split=split, progress=not args.no_progress)
    classes = args.classes or data.classes
    if classes < data.classes:
        raise McugenError(f"--classes {classes} is smaller than the {data.classes} classes found in {args.data}")
    config = _config(args, classes)
    if weights is not None:
        weights = mnv2.check_weights(config, weights, args.weights)
    module = mnv2.build_mobilenet_v2(config.alpha, config.height, config.width, config.channels, config.classes,
                                     args.seed, weights, batch_norm=True)
    result = train(module, preprocess(data.images, args.scale, args.offset), data.labels, options)
    last = result.history[-1]
    training = {"epochs": len(result.history), "train_samples": result.train_samples,
                "validation_samples": result.validation_samples, "final_loss": round(last.loss, 6),
                "train_accuracy": round(last.train_accuracy, 6)}
    if last.validation_accuracy is not None:
        training["validation_accuracy"] = round(last.validation_accuracy, 6)
    save_with_recipe(module.folded_weights(), _recipe_for(config, args.scale, args.offset, data.class_names, training),
                     out)
    print(f"wrote {out}: MobileNet v2 alpha {config.alpha:g} {config.height}x{config.width}x{config.channels}, "
          f"{config.classes} classes ({', '.join(data.class_names[:10])}"
          f"{', ...' if data.classes > 10 else ''}), {result.train_samples} training samples, "
          f"{len(result.history)} epochs in {result.seconds:.1f} s, final loss {last.loss:.4f}, "
          f"train accuracy {last.train_accuracy:.4f}")
    if last.validation_accuracy is not None:
        print(f"float accuracy on the {result.validation_samples} held-out images: {last.validation_accuracy:.4f} "
              f"(int8 and C: mcugen evaluate MODEL.tflite DATA --float {out})")
    else:
        print("no validation split (--validation-split 0 or fewer than 20 images): no held-out accuracy")
    return 0


def run_quantize(args) -> int:
    """`mcugen quantize SAVED_MODEL -o out.tflite`: full-int8 PTQ of a SavedModel."""
    from mcugen.datasets import DEFAULT_OFFSET, DEFAULT_SCALE, load_calibration
    from mcugen.quantize import (calibration_or_synthetic, convert_concrete_function, input_shape,
                                 load_saved_model_function, single_sample_runs, write_model)

    out = _check_output(args.output, ".tflite")
    source = Path(args.saved_model)
    if source.is_file():
        return _quantize_weights_file(args, source, out)
    if args.scale is None:
        args.scale = DEFAULT_SCALE
    if args.offset is None:
        args.offset = DEFAULT_OFFSET
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


def _quantize_weights_file(args, source: Path, out: Path) -> int:
    """`mcugen quantize w.npz`: a weights file written by `mcugen train` holds its recipe, so it is
    built and quantized as `mcugen model mobilenet_v2 --weights w.npz` would; other files get a hint."""
    from mcugen import mobilenet_v2 as mnv2
    from mcugen.recipe import read_recipe

    if source.suffix != ".npz":
        raise McugenError(f"{source} is neither a TensorFlow SavedModel folder nor a weights .npz "
                          "written by `mcugen train`")
    recipe = read_recipe(source)
    if recipe is None:
        raise McugenError(f"{source} is a weights file without a recorded architecture (not written by "
                          f"`mcugen train`): quantize it with `mcugen model mobilenet_v2 --weights {source} "
                          "--alpha A --resolution R --channels C --classes K`")
    if args.signature:
        raise McugenError(f"--signature applies to SavedModels; {source} is a weights file")
    args.weights = str(source)
    args.alpha = args.resolution = args.height = args.width = args.channels = args.classes = None
    weights, _ = _weights_and_recipe(args)
    config = _config(args, args.classes)
    weights = mnv2.check_weights(config, weights, args.weights)
    start = time.monotonic()
    _quantize_to(config, weights, args, out)
    _report_model(out.read_bytes(), out, time.monotonic() - start)
    return 0
