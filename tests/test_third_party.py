"""Published third-party int8 models (TinyEngine, TinyMaix) from $MCUGEN_THIRD_PARTY_MODELS:
bit-exact on the host against both oracles, and a fused arena no larger than the layer-by-layer
one nor half of TFLite Micro's. The files are never committed; unset, these tests skip."""

from __future__ import annotations

import pytest

from helpers import third_party_model
from mcugen import driver
from mcugen.oracle import tflm_arena_bytes
from mcugen.options import CompileOptions
from mcugen.validate import validate

MODELS = [
    "tinyengine_vww.tflite",
    "tinyengine_mcunetv2_large.tflite",
    "tinyengine_detection.tflite",
    "tinymaix_mbnet128_0.25_q.tflite",
]


@pytest.mark.parametrize("name", MODELS)
def test_third_party_bit_exact_on_host(name):
    path = third_party_model(name)
    report = validate(path, count=3, seed=0)
    assert report.oracles and report.runs == 3
    assert report.bit_exact, f"max abs diff {report.max_abs_diff}: {report.per_run}"


@pytest.mark.parametrize("name", MODELS)
def test_third_party_bit_exact_on_cortex_m4(name):
    """One seed on the emulated M4 with the kernels specialised for its DSP extension."""
    from mcugen.validate_board import runner_kwargs

    path = third_party_model(name)
    report = validate(path, count=1, seed=0, kernels="mcugen", kernel_target="armv7em-dsp",
                      **runner_kwargs("qemu-mps2-an386"))
    assert report.target == "qemu-mps2-an386"
    assert report.bit_exact, report.per_run


# detection's float32 input (1x128x160x3, 245,760 bytes) lives in the arena unless streamed, and
# in TFLite Micro's arena (386,264 bytes): half of that needs --stream-inputs.
FLOAT_INPUT = {"tinyengine_detection.tflite"}


@pytest.mark.parametrize("name", MODELS)
def test_third_party_ram(name):
    path = third_party_model(name)
    stream = name in FLOAT_INPUT
    gen = driver.build(path, options=CompileOptions(kernels=None, strategy="fused", stream_inputs=stream))
    fused = gen.program.arena_bytes
    layerwise = driver.build(path, options=CompileOptions(kernels=None, strategy="layerwise",
                                                          stream_inputs=stream)).program.arena_bytes
    tflm = tflm_arena_bytes(path)
    assert fused <= layerwise, (fused, layerwise)
    assert 2 * fused <= tflm, (fused, tflm)
    if stream:
        held = driver.build(path, options=CompileOptions(kernels=None, strategy="fused")).program.arena_bytes
        float_input = sum(gen.graph.t(i).nbytes for i in gen.graph.inputs)
        assert held >= float_input > fused, (held, float_input, fused)


@pytest.mark.parametrize("board", ["host", "qemu-mps2-an386"])
def test_detection_streamed_float_input_bit_exact(board):
    """The float32 input written a row at a time through detection_input_write() (host) or 256
    bytes at a time from the semihosting file (M4): the arena never holds it, outputs unchanged."""
    from mcugen.validate_board import runner_kwargs

    path = third_party_model("tinyengine_detection.tflite")
    board_kwargs = runner_kwargs(board) if board != "host" else {}
    target = "armv7em-dsp" if board != "host" else "portable"
    opts = CompileOptions(board=None if board == "host" else board, target=target, strategy="fused", stream_inputs=True)
    report = validate(path, count=3 if board == "host" else 1, seed=0, options=opts, **board_kwargs)
    assert report.bit_exact, report.per_run


@pytest.mark.parametrize("name", ["tflm_dtln_noise_suppression.tflite", "tflm_mnist_lstm_int8.tflite"])
def test_recurrent_models_get_the_real_message(name, capsys):
    """TFLite Micro's LSTM examples (their state tensors are read before any operator writes them):
    one line naming the recurrent operator, not the dataflow symptom."""
    from mcugen.cli import main as cli_main

    path = third_party_model(name)
    assert cli_main(["info", str(path)]) == 2
    err = capsys.readouterr().err
    assert "UNIDIRECTIONAL_SEQUENCE_LSTM" in err and "recurrent" in err and "before any operator writes" not in err, err


PREFIXES = ("tinyengine_", "tinymaix_", "openmv_", "tflm_", "st_")


def _folder_models() -> list[str]:
    import os
    from pathlib import Path

    folder = os.environ.get("MCUGEN_THIRD_PARTY_MODELS")
    if not folder or not Path(folder).is_dir():
        return ["(folder unset)"]
    return sorted(p.name for p in Path(folder).glob("*.tflite") if p.name.startswith(PREFIXES)) or ["(folder empty)"]


@pytest.mark.parametrize("name", _folder_models())
def test_every_model_in_the_folder_is_exact_or_refused_clearly(name, capsys):
    """Whatever the folder holds (TinyEngine, TinyMaix, OpenMV, TFLite Micro's examples, ST's zoo: files
    named by source prefix): `info` either accepts the model, and then the generated C is bit-exact on
    the host, or exits 2 with mcugen's error naming what blocks it, never a traceback."""
    from mcugen.cli import main as cli_main

    path = third_party_model(name)
    code = cli_main(["info", str(path)])
    err = capsys.readouterr().err
    if code == 2:
        assert err.startswith("mcugen: error: ") and "Traceback" not in err, err
        assert "operator" in err or "float" in err or "tensor" in err, err
        return
    assert code == 0, err
    report = validate(path, count=1, seed=0)
    assert report.bit_exact, report.per_run
