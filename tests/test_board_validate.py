"""validate --board and bench on the emulated Cortex-M cores (real arm-none-eabi-gcc and QEMU)."""

from __future__ import annotations

import json
import subprocess
import sys

import pytest

from helpers import OPS_DIR, SHARED_REAL, real_model, real_models
from mcugen.cli import main as cli_main
from mcugen.validate import validate
from mcugen.validate_board import runner_kwargs


@pytest.mark.parametrize("name", real_models() or ["(none)"])
def test_real_models_bit_exact_on_cortex_m4(name):
    if name == "(none)":
        pytest.skip(f"{SHARED_REAL} is absent")
    report = validate(real_model(name), count=1 if "224" in name else 2, seed=3, **runner_kwargs("qemu-mps2-an386"))
    assert report.target == "qemu-mps2-an386"
    assert report.bit_exact, report.per_run


@pytest.mark.parametrize("strategy", ["fused", "layerwise"])
@pytest.mark.parametrize("name", real_models() or ["(none)"])
def test_real_models_bit_exact_with_the_dsp_kernels_on_cortex_m4(name, strategy):
    """The kernels specialised for the Armv7E-M DSP (assembly included) on every real model, both
    memory plans: their quantization (zero points, shifts, channel counts) differs from ours."""
    if name == "(none)":
        pytest.skip(f"{SHARED_REAL} is absent")
    report = validate(real_model(name), count=1, seed=4, strategy=strategy, kernels="mcugen",
                      kernel_target="armv7em-dsp", **runner_kwargs("qemu-mps2-an386"))
    assert report.bit_exact, report.per_run


@pytest.mark.parametrize("board", ["qemu-mps2-an500", "qemu-mps3-an547"])
def test_small_models_bit_exact_on_m7_and_m55(board):
    for model in ("chain_conv_dw_conv_add_mean_fc_softmax.tflite", "quantize_dequantize_float_io.tflite",
                  "quantize_uint8_io.tflite"):
        path = OPS_DIR / model
        report = validate(path, count=2, seed=5, **runner_kwargs(board))
        assert report.bit_exact, (model, report.per_run)


def test_mobilenet_v2_on_cortex_m4_cli(tmp_path):
    model = tmp_path / "mnv2.tflite"
    r = subprocess.run(
        [sys.executable, "-m", "mcugen", "model", "mobilenet_v2", "--alpha", "0.35", "--resolution", "96",
         "--classes", "10", "--samples", "4", "-o", str(model)],
        capture_output=True, text=True, timeout=600,
    )
    assert r.returncode == 0, r.stderr[-1500:]
    r = subprocess.run(
        [sys.executable, "-m", "mcugen", "validate", str(model), "--board", "qemu-mps2-an386", "--count", "2", "--json"],
        capture_output=True, text=True, timeout=900,
    )
    assert r.returncode == 0, r.stderr[-1500:]
    rep = json.loads(r.stdout)
    assert rep["bit_exact"] and rep["target"] == "qemu-mps2-an386" and rep["runs"] == 2


def test_bench_json_is_repeatable_and_names_layers(capsys):
    path = real_model("mlperf_tiny_kws_ref_model.tflite")
    records = []
    for _ in range(2):
        assert cli_main(["bench", str(path), "--board", "qemu-mps2-an386", "--json"]) == 0
        records.append(json.loads(capsys.readouterr().out))
    a, b = records
    assert a["instructions"] == b["instructions"] > 0
    assert [l["instructions"] for l in a["layers"]] == [l["instructions"] for l in b["layers"]]
    # the layers come from a build with per-layer markers, each count with its markers' few instructions
    from mcugen.bench import LAYER_MARKER_INSTRUCTIONS

    assert sum(l["instructions"] for l in a["layers"]) <= a["instructions"] + LAYER_MARKER_INSTRUCTIONS * len(a["layers"])
    ops = [l["op"] for l in a["layers"]]
    assert ops[-1] == "SOFTMAX" and "FULLY_CONNECTED" in ops
    assert all(l["macs"] is not None for l in a["layers"])
    assert a["ram_bytes"] == b["ram_bytes"] and a["stack_bytes"] > 0 and a["arena_bytes"] > 0


def test_demo_measurement_and_bench_print_the_same_numbers(capsys):
    """`demo` measures through validate_board.measure, `bench` through the CLI: with no input given
    both run the same default input, so they print the same instruction count and flash."""
    from mcugen.validate_board import measure

    path = OPS_DIR / "chain_conv_dw_conv_add_mean_fc_softmax.tflite"
    m = measure(path, "qemu-mps2-an386")
    assert cli_main(["bench", str(path), "--board", "qemu-mps2-an386", "--json"]) == 0
    record = json.loads(capsys.readouterr().out)
    assert m.instructions == record["instructions"] > 0
    assert m.flash_bytes == record["flash_bytes"] and m.arena_bytes == record["arena_bytes"]


def test_validate_refuses_real_board():
    r = subprocess.run(
        [sys.executable, "-m", "mcugen", "validate", str(OPS_DIR / "logistic.tflite"), "--board", "stm32f746"],
        capture_output=True, text=True, timeout=300,
    )
    assert r.returncode == 2 and "emulated" in r.stderr and "Traceback" not in r.stderr


def test_plan_that_does_not_fit_is_refused_before_building(tmp_path, capsys):
    path = real_model("person_detect.tflite")
    out = tmp_path / "fw"
    assert cli_main(["firmware", str(path), "--board", "nrf52840", "-o", str(out), "--ram-limit", "40K"]) == 2
    err = capsys.readouterr().err.strip().splitlines()
    assert len(err) == 1 and "needs at least" in err[0] and "40960" in err[0] and "nothing was built" in err[0]
    assert not out.exists()
    assert cli_main(["firmware", str(path), "--board", "nrf52840", "-o", str(out), "--flash-limit", "100K"]) == 2
    assert "flash" in capsys.readouterr().err and not out.exists()
    assert cli_main(["firmware", str(path), "--board", "stm32f746", "-o", str(out)]) == 0
    assert (out / "build" / "person_detect.elf").is_file() and (out / "build" / "person_detect.hex").is_file()


def test_flash_limit_between_the_two_forms_builds_the_small_forms(tmp_path, capsys):
    """A flash limit the default build exceeds, by its code too (which the constants-only check
    before building cannot see): bench generates the model again with the kernels' small forms,
    says so, and measures that build, within the limit; below what even those need, one line
    naming both sizes and exit 2."""
    path = real_model("mlperf_tiny_kws_ref_model.tflite")
    assert cli_main(["bench", str(path), "--board", "qemu-mps2-an386", "-o", str(tmp_path / "a"), "--json"]) == 0
    default = json.loads(capsys.readouterr().out)["flash_bytes"]
    # what the small forms need: the build a limit one byte below the default makes
    assert cli_main(["bench", str(path), "--board", "qemu-mps2-an386", "-o", str(tmp_path / "s"), "--json",
                     "--flash-limit", str(default - 1)]) == 0
    smallest = json.loads(capsys.readouterr().out)["flash_bytes"]
    assert smallest < default
    limit = (smallest + default) // 2
    assert cli_main(["bench", str(path), "--board", "qemu-mps2-an386", "-o", str(tmp_path / "b"), "--json",
                     "--flash-limit", str(limit)]) == 0
    captured = capsys.readouterr()
    small = json.loads(captured.out)["flash_bytes"]
    assert small <= limit < default and json.loads(captured.out)["options"]["small_forms"] is True
    assert f"needs {default} bytes of flash" in captured.err and "small forms" in captured.err
    # the table's size lines name the budget the build was held to
    assert cli_main(["bench", str(path), "--board", "qemu-mps2-an386", "-o", str(tmp_path / "b"), "--force",
                     "--flash-limit", str(limit)]) == 0
    lines = capsys.readouterr().out.splitlines()
    assert any(ln.startswith(f"flash: {small} bytes") and ln.endswith(f"of {limit} (--flash-limit)") for ln in lines)
    assert any(ln.startswith("RAM: ") and ln.endswith("(qemu-mps2-an386)") for ln in lines)
    assert cli_main(["bench", str(path), "--board", "qemu-mps2-an386", "-o", str(tmp_path / "c"),
                     "--flash-limit", str(small - 1)]) == 2
    err = capsys.readouterr().err.strip().splitlines()
    assert len(err) == 1 and f"needs {small} bytes of flash" in err[0] and "also with the small forms" in err[0]
    assert f"needs {default} bytes of flash" in err[0] and "Traceback" not in err[0]
