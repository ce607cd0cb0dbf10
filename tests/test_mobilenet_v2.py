"""MobileNet v2 builder: paper shapes/channels, MACs and parameters, batch-norm folding, weights, training."""

from __future__ import annotations

import argparse
import math

import numpy as np
import pytest

from mcugen.errors import McugenError, ModelError, UnsupportedError
from mcugen import mobilenet_v2 as mnv2

tf = mnv2.import_tensorflow()

# Sandler et al. 2018, Table 2: (t, c, n, s) after the 3x3 stride-2 stem of 32 channels,
# then a 1x1 conv to 1280, average pool and the classifier. Written out here, independently
# of the builder, so that the tests check the builder against the paper.
PAPER_TABLE2 = [(1, 16, 1, 1), (6, 24, 2, 2), (6, 32, 3, 2), (6, 64, 4, 2), (6, 96, 3, 1), (6, 160, 3, 2),
                (6, 320, 1, 1)]


def divisible8(v: float) -> int:
    """The usual MobileNet channel rounding: nearest multiple of 8, >= 8, not below 90% of v."""
    n = max(8, int(v + 4) // 8 * 8)
    return n + 8 if n < 0.9 * v else n


def paper_convs(alpha: float, h: int, w: int, cin: int = 3):
    """Expected (kind, out_h, out_w, kernel_shape) of every conv in order, from Table 2."""
    out = []
    c = divisible8(32 * alpha)
    h, w = math.ceil(h / 2), math.ceil(w / 2)
    out.append(("Conv2D", h, w, (3, 3, cin, c)))
    for t, ch, n, s in PAPER_TABLE2:
        target = divisible8(ch * alpha)
        for i in range(n):
            stride = s if i == 0 else 1
            if t > 1:
                out.append(("Conv2D", h, w, (1, 1, c, c * t)))
            h, w = math.ceil(h / stride), math.ceil(w / stride)
            out.append(("DepthwiseConv2dNative", h, w, (3, 3, c * t, 1)))
            out.append(("Conv2D", h, w, (1, 1, c * t, target)))
            c = target
    last = 1280 if alpha <= 1 else divisible8(1280 * alpha)
    out.append(("Conv2D", h, w, (1, 1, c, last)))
    return out, last


def paper_residuals() -> int:
    """Blocks with stride 1 and equal in/out channels: all repeats after the first of a group."""
    return sum(n - 1 for _, _, n, _ in PAPER_TABLE2)


def graph_convs(module):
    """(op type, out_h, out_w, kernel shape) of every convolution in the traced inference graph."""
    graph = module.serving_function().graph
    convs = []
    for op in graph.get_operations():
        if op.type in ("Conv2D", "DepthwiseConv2dNative"):
            _, oh, ow, _ = op.outputs[0].shape.as_list()
            convs.append((op.type, oh, ow, tuple(op.inputs[1].shape.as_list())))
    return graph, convs


@pytest.mark.parametrize("alpha", [0.35, 0.5, 0.75, 1.0])
@pytest.mark.parametrize("resolution", [96, 128, 160, 224])
def test_graph_matches_paper(alpha, resolution):
    module = mnv2.build_mobilenet_v2(alpha, resolution, classes=1000)
    graph, convs = graph_convs(module)
    expected, last = paper_convs(alpha, resolution, resolution)
    assert convs == expected
    # every conv output channel count equals the kernel's (depthwise: the input's)
    for op in graph.get_operations():
        if op.type == "Conv2D":
            assert op.outputs[0].shape[-1] == op.inputs[1].shape[-1]
    assert sum(op.type == "AddV2" for op in graph.get_operations()) == paper_residuals()
    assert sum(op.type == "Relu6" for op in graph.get_operations()) == 1 + 1 + 16 * 2 + 1  # stem, block0 dw, 16 x (expand, dw), head
    assert module.kernels["classifier"].shape == (last, 1000)
    assert module.serving_function().structured_outputs.shape == (1, 1000)
    # the TF-free table agrees with the built graph
    table = mnv2.layer_table(mnv2.MobileNetV2Config(alpha, resolution, resolution))
    assert [r.kernel_shape for r in table if r.kind in (mnv2.LayerKind.CONV, mnv2.LayerKind.DEPTHWISE)] == [
        e[3] for e in expected]


def test_known_channel_counts():
    # Spot values of the width rule (the 0.35 stem rounds 11.2 up to 16 by the 90% rule).
    assert [mnv2.make_divisible(v) for v in (11.2, 5.6, 8.4, 11.2, 22.4, 33.6, 56.0, 112.0)] == [
        16, 8, 8, 16, 24, 32, 56, 112]
    assert mnv2.MobileNetV2Config(1.4).last_channels == 1792
    assert mnv2.MobileNetV2Config(0.35).last_channels == 1280


def test_non_square_and_odd_resolution():
    module = mnv2.build_mobilenet_v2(0.35, 97, width=130, channels=1, classes=7)
    _, convs = graph_convs(module)
    expected, _ = paper_convs(0.35, 97, 130, cin=1)
    assert convs == expected
    assert convs[-1][1:3] == (4, 5)  # ceil(97/32), ceil(130/32)
    y = module(np.zeros((2, 97, 130, 1), np.float32)).numpy()
    assert y.shape == (2, 7) and np.allclose(y.sum(axis=1), 1.0, atol=1e-5)


def _graph_macs(module) -> int:
    macs = 0
    for op in module.serving_function().graph.get_operations():
        if op.type == "Conv2D":
            kh, kw, cin, _ = op.inputs[1].shape.as_list()
            macs += int(np.prod(op.outputs[0].shape.as_list())) * kh * kw * cin
        elif op.type == "DepthwiseConv2dNative":
            kh, kw, _, _ = op.inputs[1].shape.as_list()
            macs += int(np.prod(op.outputs[0].shape.as_list())) * kh * kw
        elif op.type == "MatMul":
            macs += int(np.prod(op.inputs[1].shape.as_list()))
    return macs


def test_macs_and_parameters_of_the_paper_model():
    module = mnv2.build_mobilenet_v2(1.0, 224, classes=1000)
    macs = _graph_macs(module)
    params = sum(int(np.prod(v.shape)) for v in module.trainable_variables)
    # Paper: 300M multiply-adds; 3.4M parameters, 3.47M in the reference implementation's table
    # (kernels + classifier); with batch norm folded every conv also has a bias (+17,056).
    assert abs(macs - 300e6) / 300e6 < 0.01, macs
    assert abs(params - 3.47e6) / 3.47e6 < 0.01, params
    assert params == mnv2.summarize(module.config).params
    assert macs == mnv2.summarize(module.config).macs


def test_batch_norm_folds_into_conv_and_bias():
    module = mnv2.build_mobilenet_v2(0.35, 64, classes=5, seed=3, batch_norm=True)
    rng = np.random.default_rng(0)
    for bn in module.bn.values():
        n = bn["gamma"].shape[0]
        bn["gamma"].assign(rng.uniform(0.5, 1.5, n).astype(np.float32))
        bn["beta"].assign(rng.normal(0, 0.2, n).astype(np.float32))
        bn["mean"].assign(rng.normal(0, 0.2, n).astype(np.float32))
        bn["variance"].assign(rng.uniform(0.5, 2.0, n).astype(np.float32))
    for bias in module.biases.values():
        bias.assign(rng.normal(0, 0.1, bias.shape[0]).astype(np.float32))
    x = rng.uniform(-1, 1, (3, 64, 64, 3)).astype(np.float32)
    folded = module.export_module()
    assert not folded.batch_norm and not folded.bn
    want = module.logits(x, training=False).numpy()
    got = folded.logits(x).numpy()
    assert np.abs(want).max() > 0.1  # not a trivially zero comparison
    np.testing.assert_allclose(got, want, rtol=1e-4, atol=1e-4 * np.abs(want).max())
    # the export graph has no batch-norm ops at all
    ops = {op.type for op in folded.serving_function().graph.get_operations()}
    assert not ops & {"FusedBatchNormV3", "Rsqrt"}, ops


def test_fresh_batch_norm_is_identity_at_inference():
    plain = mnv2.build_mobilenet_v2(0.35, 32, classes=4, seed=9)
    with_bn = mnv2.build_mobilenet_v2(0.35, 32, classes=4, seed=9, batch_norm=True)
    x = np.random.default_rng(1).uniform(-1, 1, (2, 32, 32, 3)).astype(np.float32)
    np.testing.assert_array_equal(plain.logits(x).numpy(), with_bn.logits(x).numpy())


def test_weights_roundtrip_and_names(tmp_path):
    module = mnv2.build_mobilenet_v2(0.5, 48, width=64, classes=3, seed=1)
    weights = module.folded_weights()
    config = module.config
    assert set(weights) == set(mnv2.weight_shapes(config))
    for name in ("stem/kernel", "block0/depthwise/kernel", "block0/project/bias", "block3/expand/kernel",
                 "block16/project/kernel", "head/kernel", "classifier/kernel", "classifier/bias"):
        assert name in weights
    assert "block0/expand/kernel" not in weights  # t = 1: no expansion
    assert len(weights) == 2 * (1 + 2 + 16 * 3 + 1 + 1)
    path = tmp_path / "w.npz"
    mnv2.save_weights(weights, path)
    loaded = mnv2.load_weights(path)
    again = mnv2.build_mobilenet_v2(0.5, 48, width=64, classes=3, seed=99, weights=loaded)
    x = np.random.default_rng(2).uniform(-1, 1, (2, 48, 64, 3)).astype(np.float32)
    np.testing.assert_array_equal(module(x).numpy(), again(x).numpy())
    other = mnv2.build_mobilenet_v2(0.5, 48, width=64, classes=3, seed=99)
    assert not np.array_equal(module(x).numpy(), other(x).numpy())
    # the same seed gives the same weights
    same = mnv2.build_mobilenet_v2(0.5, 48, width=64, classes=3, seed=1).folded_weights()
    assert all(np.array_equal(weights[k], same[k]) for k in weights)


def test_wrong_weights_are_one_line_errors(tmp_path):
    weights = mnv2.init_weights(mnv2.MobileNetV2Config(0.35, 96, 96, 3, 10))
    with pytest.raises(ModelError, match="block1/project/kernel has shape"):
        mnv2.build_mobilenet_v2(0.5, 96, classes=10, weights=weights)
    del weights["head/bias"]
    with pytest.raises(ModelError, match="lacks head/bias"):
        mnv2.build_mobilenet_v2(0.35, 96, classes=10, weights=weights)
    bad = tmp_path / "bad.npz"
    bad.write_bytes(b"not a zip")
    with pytest.raises(ModelError, match="not a readable .npz"):
        mnv2.load_weights(bad)
    with pytest.raises(McugenError, match="does not exist"):
        mnv2.load_weights(tmp_path / "missing.npz")


@pytest.mark.parametrize("kwargs, message", [
    (dict(alpha=0.0), "alpha 0.0 is not supported"),
    (dict(alpha=-1.0), "alpha -1.0"),
    (dict(alpha=float("nan")), "alpha nan"),
    (dict(height=31, width=96), "height 31"),
    (dict(height=96, width=16), "width 16"),
    (dict(channels=0), "channels 0"),
    (dict(classes=0), "classes 0"),
])
def test_bad_configuration(kwargs, message):
    with pytest.raises(UnsupportedError, match=message) as info:
        mnv2.MobileNetV2Config(**kwargs)
    assert "\n" not in str(info.value)


def test_layer_table_needs_no_tensorflow():
    import subprocess
    import sys

    code = ("import sys; from mcugen import mobilenet_v2 as m; "
            "t = m.format_table(m.MobileNetV2Config(0.35, 96, 96)); "
            "assert 'tensorflow' not in sys.modules; print(t.splitlines()[-1])")
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True).stdout
    assert out.strip() == "total: 65 layers, 1,670,088 parameters, 11,934,128 MACs"


def _toy_data(n=48, size=32, seed=0):
    """Two classes that differ in brightness: learnable in a few steps."""
    rng = np.random.default_rng(seed)
    y = np.arange(n) % 2
    x = rng.uniform(0, 0.5, (n, size, size, 3)) + y[:, None, None, None] * 0.5
    return (x * 2 - 1).astype(np.float32), y


def test_training_reduces_loss_and_is_reproducible():
    from mcugen.train import TrainOptions, accuracy, train

    x, y = _toy_data()
    options = TrainOptions(epochs=15, batch_size=16, learning_rate=3e-3, seed=5, progress=False)
    runs = []
    for _ in range(2):
        module = mnv2.build_mobilenet_v2(0.35, 32, classes=2, seed=5, batch_norm=True)
        result = train(module, x, y, options)
        runs.append((result, module.folded_weights()))
    result, weights = runs[0]
    assert len(result.history) == 15
    assert result.history[-1].loss < result.history[0].loss
    assert all(np.array_equal(weights[k], runs[1][1][k]) for k in weights)
    assert [h.loss for h in result.history] == [h.loss for h in runs[1][0].history]
    trained = mnv2.build_mobilenet_v2(0.35, 32, classes=2, weights=weights)
    assert accuracy(trained, x, y) >= 0.9


def test_training_reports_the_batch_norm_re_estimation_after_the_last_epoch(capsys):
    """The last epoch's line is printed before batch norm is re-estimated; the validation
    accuracy after it comes on a line of its own, last."""
    from mcugen.train import TrainOptions, train

    x, y = _toy_data(n=40)
    module = mnv2.build_mobilenet_v2(0.35, 32, classes=2, seed=2, batch_norm=True)
    result = train(module, x, y, TrainOptions(epochs=2, batch_size=8, seed=2, validation_split=0.2, progress=True))
    lines = [line for line in capsys.readouterr().err.splitlines() if line.startswith(("epoch 2/2: loss", "batch norm"))]
    assert len(lines) == 2 and lines[0].startswith("epoch 2/2:")
    assert lines[1] == (f"batch norm statistics re-estimated on 32 training images: validation accuracy "
                        f"{result.history[-1].validation_accuracy:.4f}")


def test_training_rejects_bad_input():
    from mcugen.train import TrainOptions, train

    module = mnv2.build_mobilenet_v2(0.35, 32, classes=2)
    x, y = _toy_data(8)
    with pytest.raises(McugenError, match="empty"):
        train(module, x[:0], y[:0], TrainOptions(progress=False))
    with pytest.raises(McugenError, match="labels"):
        train(module, x, y + 5, TrainOptions(progress=False))
    with pytest.raises(McugenError, match="shape"):
        train(module, x[:, :16], y, TrainOptions(progress=False))
    with pytest.raises(McugenError, match="epochs"):
        TrainOptions(epochs=0)


def _parser():
    from mcugen import cmd_model

    parser = argparse.ArgumentParser(prog="mcugen")
    cmd_model.register(parser.add_subparsers(dest="command", required=True))
    return parser


def _write_png_folder(root, classes=2, per_class=4, size=(20, 24), seed=0):
    from PIL import Image

    rng = np.random.default_rng(seed)
    for c in range(classes):
        d = root / f"class_{c}"
        d.mkdir(parents=True)
        for i in range(per_class):
            base = 40 + 160 * c
            pixels = np.clip(rng.normal(base, 20, (*size, 3)), 0, 255).astype(np.uint8)
            Image.fromarray(pixels).save(d / f"img{i}.{'png' if i % 2 else 'bmp'}")


def test_cli_train_on_a_folder_then_model_from_weights(tmp_path, capsys):
    _write_png_folder(tmp_path / "data")
    parser = _parser()
    weights = tmp_path / "w.npz"
    args = parser.parse_args(["train", str(tmp_path / "data"), "--alpha", "0.35", "--resolution", "32",
                              "--epochs", "2", "--batch-size", "4", "--no-progress", "-o", str(weights)])
    assert args.func(args) == 0
    assert "2 classes (class_0, class_1)" in capsys.readouterr().out
    loaded = mnv2.load_weights(weights)
    assert loaded["classifier/kernel"].shape == (1280, 2)
    out = tmp_path / "m.tflite"
    args = parser.parse_args(["model", "mobilenet_v2", "--alpha", "0.35", "--resolution", "32", "--classes", "2",
                              "--weights", str(weights), "--calibration", str(tmp_path / "data"),
                              "--samples", "3", "-o", str(out)])
    assert args.func(args) == 0
    assert out.read_bytes()[4:8] == b"TFL3"
    assert "FULLY_CONNECTED x1" in capsys.readouterr().out


@pytest.mark.parametrize("argv, message", [
    (["model", "mobilenet_v2", "--alpha", "0", "-o", "{tmp}/m.tflite"], "alpha 0.0 is not supported"),
    (["model", "mobilenet_v2", "--resolution", "16", "-o", "{tmp}/m.tflite"], "height 16"),
    (["model", "mobilenet_v2", "-o", "{tmp}/nowhere/m.tflite"], "does not exist"),
    (["model", "mobilenet_v2", "--resolution", "32", "--calibration", "{tmp}/none", "-o", "{tmp}/m.tflite"],
     "does not exist"),
    (["model", "mobilenet_v2"], "needs -o"),
    (["train", "{tmp}/missing", "-o", "{tmp}/w.npz"], "does not exist"),
    (["train", "{tmp}/empty", "-o", "{tmp}/w.npz"], "no class sub-folders"),
    (["train", "{tmp}/emptyclass", "-o", "{tmp}/w.npz"], "holds no"),
    (["train", "{tmp}/data.npy", "-o", "{tmp}/w.npz"], "no labels"),
    (["train", "{tmp}/data.npz", "--alpha", "-2", "-o", "{tmp}/w.npz"], "alpha -2.0"),
    (["train", "{tmp}/data.npz", "-o", "{tmp}/w.tflite"], "must end in .npz"),
    (["quantize", "{tmp}/empty", "-o", "{tmp}/m.tflite"], "not a TensorFlow SavedModel"),
])
def test_cli_bad_input_is_a_one_line_error(tmp_path, argv, message):
    (tmp_path / "empty").mkdir()
    (tmp_path / "emptyclass" / "a").mkdir(parents=True)
    np.save(tmp_path / "data.npy", np.zeros((2, 32, 32, 3), np.uint8))
    np.savez(tmp_path / "data.npz", x=np.zeros((2, 32, 32, 3), np.uint8), y=np.array([0, 1]))
    args = _parser().parse_args([a.replace("{tmp}", str(tmp_path)) for a in argv])
    with pytest.raises(McugenError, match=message) as info:
        args.func(args)
    assert "\n" not in str(info.value)
    assert not list(tmp_path.glob("*.tflite")) and not list(tmp_path.glob("w.*"))


def test_cli_summary_prints_the_table(capsys):
    args = _parser().parse_args(["model", "mobilenet_v2", "--alpha", "0.35", "--resolution", "96", "--summary"])
    assert args.func(args) == 0
    out = capsys.readouterr().out
    assert "block16/project" in out and "3x3x336" in out and "10,666,928 MACs" in out  # 10 classes by default


def test_cli_defaults_fit_a_microcontroller(capsys):
    args = _parser().parse_args(["model", "mobilenet_v2", "--summary"])
    assert args.func(args) == 0
    assert capsys.readouterr().out.startswith("MobileNet v2 alpha 0.35, input 96x96x3, 10 classes")
