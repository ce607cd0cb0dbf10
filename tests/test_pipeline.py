"""The one compile pipeline: kernels chosen before planning, one set of numbers, the plan chosen for the board."""

from __future__ import annotations

import json
import os
import re
import shutil
from pathlib import Path

import pytest

from helpers import build_mobilenet, real_model
from mcugen import cli, driver
from mcugen.options import CompileOptions

M4 = "qemu-mps2-an386"
MODELS = ("person_detect.tflite", "mlperf_tiny_ic_resnet_quant.tflite", "mlperf_tiny_kws_ref_model.tflite",
          "mlperf_tiny_vww_96_int8.tflite")


def have_qemu() -> bool:
    return all(shutil.which(t) for t in ("qemu-system-arm", "arm-none-eabi-gcc", "make"))


needs_qemu = pytest.mark.skipif(not have_qemu(), reason="needs qemu-system-arm and arm-none-eabi-gcc (scripts/setup.sh)")


@pytest.fixture(scope="module")
def mobilenet(tmp_path_factory) -> Path:
    """MobileNet v2 0.35/96 with 10 classes: the main job's model."""
    return build_mobilenet(tmp_path_factory.mktemp("mnv2"), 96, 10)


def run_cli(capsys, *argv: str) -> tuple[int, str, str]:
    code = cli.main([str(a) for a in argv])
    out = capsys.readouterr()
    return code, out.out, out.err


def header_macro(folder: Path, name: str, macro: str) -> int:
    text = (folder / f"{name}.h").read_text()
    m = re.search(rf"^#define {name.upper()}_{macro} (\d+)", text, re.M)
    assert m, f"{macro} not in {name}.h"
    return int(m.group(1))


@pytest.mark.parametrize("strategy", ["auto", "fused", "layerwise"])
@pytest.mark.parametrize("model", MODELS + ("mobilenet",))
def test_plan_info_and_the_generated_header_state_the_same_numbers(model, strategy, capsys, tmp_path, request):
    """plan --json, info --json and the header generate writes give the same arena and constant
    bytes for the same options (the kernels' scratch is planned before, not added after)."""
    path = request.getfixturevalue("mobilenet") if model == "mobilenet" else real_model(model)
    opts = ["--board", M4, "--strategy", strategy]
    code, out, _ = run_cli(capsys, "plan", path, "--json", "--no-tflm", *opts)
    assert code == 0
    plan = json.loads(out)
    code, out, _ = run_cli(capsys, "info", path, "--json", *opts)
    assert code == 0
    info = json.loads(out)
    code, _, _ = run_cli(capsys, "generate", path, "-o", tmp_path / "gen", *opts)
    assert code == 0
    build = json.loads((tmp_path / "gen" / driver.BUILD_INFO).read_text())
    name = build["name"]
    for key, macro in (("arena_bytes", "ARENA_BYTES"), ("const_bytes", "CONST_BYTES")):
        assert plan[key] == info[key] == build[key] == header_macro(tmp_path / "gen", name, macro), key
    assert plan["estimated_instructions"] == info["estimated_instructions"] > 0
    assert plan["scratch_bytes"] == info["scratch_bytes"]
    chosen = [a for a in plan["alternatives"] if a["chosen"]]
    assert len(chosen) == 1 and chosen[0]["arena_bytes"] == plan["arena_bytes"]
    assert chosen[0]["const_bytes"] == plan["const_bytes"]
    assert chosen[0]["estimated_instructions"] == plan["estimated_instructions"]
    if strategy == "layerwise":
        assert not any(b["chosen"] == "fused" for b in plan["blocks"])


def test_auto_leaves_slow_chains_layer_by_layer():
    """ResNet-8's conv -> conv -> ADD chains have no specialised kernel (the portable chain
    kernel is several times slower): on a board with room, auto runs them layer by layer and
    says why; fused keeps them because they lower the arena."""
    path = real_model("mlperf_tiny_ic_resnet_quant.tflite")
    auto = driver.build(path, options=CompileOptions(board=M4))
    fused = driver.build(path, options=CompileOptions(board=M4, strategy="fused"))
    assert auto.schedule.blocks and all(b.chosen == "layerwise" for b in auto.schedule.blocks)
    assert all(b.reason.startswith("layer by layer") for b in auto.schedule.blocks)
    assert any("x the instructions" in b.reason for b in auto.schedule.blocks)
    assert any(b.chosen == "fused" for b in fused.schedule.blocks)
    assert fused.program.arena_bytes < auto.program.arena_bytes
    assert auto.estimated_instructions < fused.estimated_instructions / 2
    assert not auto.notes and fused.notes  # the note names the slow chains the user forced


def test_auto_fuses_what_the_ram_budget_needs(capsys):
    """With a RAM limit the layer-by-layer arena does not fit, auto fuses slow chains until it
    does (most bytes per added instruction first); with a limit nothing meets, the table says so
    and generate refuses with the numbers."""
    path = real_model("mlperf_tiny_ic_resnet_quant.tflite")
    free = driver.build(path, options=CompileOptions(board="nrf52840"))
    fused = driver.build(path, options=CompileOptions(board="nrf52840", strategy="fused"))
    stack = 16 * 1024  # the nrf52840's stack reserve
    limit = stack + (free.program.arena_bytes + fused.program.arena_bytes) // 2
    tight = driver.build(path, options=CompileOptions(board="nrf52840", ram_limit=limit))
    assert tight.program.arena_bytes <= limit - stack < free.program.arena_bytes
    assert any(b.chosen == "fused" and "must fit" in b.reason for b in tight.schedule.blocks)
    code, out, _ = run_cli(capsys, "plan", path, "--no-tflm", "--board", "nrf52840", "--ram-limit", str(stack + 1000))
    assert code == 0
    assert re.search(r"chosen \*\s+[\d,]+\s+[\d,]+\s+[\d,]+\s+no", out), out


def test_flash_budget_prefers_the_smaller_constants(mobilenet):
    """Under a flash limit below what auto's plan stores, auto runs chains whose constants are
    larger fused than layer by layer one by one again, while the RAM allows."""
    free = driver.build(mobilenet, options=CompileOptions(board=M4))
    layerwise = driver.build(mobilenet, options=CompileOptions(board=M4, strategy="layerwise"))
    assert free.program.weight_bytes != layerwise.program.weight_bytes  # the choice matters here
    limit = min(free.program.weight_bytes, layerwise.program.weight_bytes) + abs(
        free.program.weight_bytes - layerwise.program.weight_bytes) // 2
    tight = driver.build(mobilenet, options=CompileOptions(board=M4, flash_limit=limit))
    assert tight.program.weight_bytes <= limit
    chosen = next(a for a in tight.schedule.alternatives if a.chosen)
    assert chosen.fits and chosen.const_bytes == tight.program.weight_bytes
    if free.program.weight_bytes > limit:
        assert any("flash" in b.reason for b in tight.schedule.blocks)


def test_every_command_takes_the_same_compile_options():
    parser = cli.build_parser()
    sub = next(a for a in parser._actions if a.dest == "command")
    for command in ("info", "plan", "generate", "validate", "firmware", "bench", "demo"):
        flags = {o for a in sub.choices[command]._actions for o in a.option_strings}
        for option in ("--target", "--kernels", "--cmsis-nn", "--strategy", "--ram-limit", "--flash-limit"):
            assert option in flags, (command, option)
        assert "--board" in flags, command
        strategy = next(a for a in sub.choices[command]._actions if "--strategy" in a.option_strings)
        assert strategy.default == "auto" and tuple(strategy.choices) == ("auto", "fused", "layerwise")


@needs_qemu
@pytest.mark.parametrize("strategy", ["auto", "fused", "layerwise"])
def test_bench_reports_the_planned_arena_and_an_estimate_within_ten_percent(strategy, capsys):
    path = real_model("person_detect.tflite")
    code, out, _ = run_cli(capsys, "plan", path, "--json", "--no-tflm", "--board", M4, "--strategy", strategy)
    plan = json.loads(out)
    code, out, _ = run_cli(capsys, "bench", path, "--board", M4, "--strategy", strategy, "--json")
    assert code == 0
    bench = json.loads(out)
    assert bench["arena_bytes"] == plan["arena_bytes"]
    assert bench["const_bytes"] == plan["const_bytes"]
    assert bench["estimated_instructions"] == plan["estimated_instructions"]
    assert 0.9 <= bench["estimate_ratio"] <= 1.1, bench["estimate_ratio"]


@needs_qemu
@pytest.mark.parametrize("model", ["mlperf_tiny_ic_resnet_quant.tflite", "tflm_micro_speech_quantized.tflite"])
def test_default_options_run_within_five_percent_of_layer_by_layer(model, capsys):
    path = real_model(model)
    counts = {}
    for strategy in ("auto", "layerwise"):
        code, out, _ = run_cli(capsys, "bench", path, "--board", M4, "--strategy", strategy, "--json")
        assert code == 0
        counts[strategy] = json.loads(out)
    assert counts["auto"]["instructions"] <= 1.05 * counts["layerwise"]["instructions"], counts
    assert 0.9 <= counts["auto"]["estimate_ratio"] <= 1.1


@needs_qemu
def test_main_job_keeps_ram_within_a_fifth_of_tflite_micro(mobilenet, capsys):
    """MobileNet v2 0.35/96 with the default options on the M4: RAM (data + bss + measured
    stack) <= 20% of TFLite Micro's arena for the same file, estimate within 10%."""
    from mcugen.oracle import tflm_arena_bytes

    code, out, _ = run_cli(capsys, "bench", mobilenet, "--board", M4, "--json")
    assert code == 0
    bench = json.loads(out)
    assert bench["ram_bytes"] <= 0.20 * tflm_arena_bytes(mobilenet), bench["ram_bytes"]
    assert 0.9 <= bench["estimate_ratio"] <= 1.1, bench["estimate_ratio"]


@needs_qemu
@pytest.mark.parametrize("kernels", ["mcugen", "cmsis-nn"])
def test_bench_and_firmware_on_a_generated_folder_need_nothing_repeated(kernels, tmp_path, capsys):
    """A folder `generate` wrote carries its name and compiler flags (CMSIS-NN include paths):
    bench FOLDER and firmware FOLDER work without --name."""
    extra = []
    if kernels == "cmsis-nn":
        cmsis = os.environ.get("CMSIS_NN_PATH")
        if not cmsis:
            pytest.skip("CMSIS_NN_PATH is not set: no CMSIS-NN checkout (it is on no package registry)")
        extra = ["--kernels", "cmsis-nn", "--cmsis-nn", cmsis]
    path = real_model("mlperf_tiny_kws_ref_model.tflite")
    code, _, _ = run_cli(capsys, "generate", path, "-o", tmp_path / "gen", "--name", "kws", "--board", M4,
                         "--strategy", "layerwise", *extra)
    assert code == 0
    code, out, _ = run_cli(capsys, "bench", tmp_path / "gen", "--board", M4, "--json")
    assert code == 0, out
    bench = json.loads(out)
    assert bench["model"] == "kws" and bench["instructions"] > 0
    assert bench["arena_bytes"] == header_macro(tmp_path / "gen", "kws", "ARENA_BYTES")
    code, out, _ = run_cli(capsys, "firmware", tmp_path / "gen", "--board", M4, "-o", tmp_path / "fw")
    assert code == 0
    assert (tmp_path / "fw" / "build" / "kws.elf").is_file()


@needs_qemu
def test_bench_with_cmsis_nn_compares_like_with_like(capsys):
    cmsis = os.environ.get("CMSIS_NN_PATH")
    if not cmsis:
        pytest.skip("CMSIS_NN_PATH is not set: no CMSIS-NN checkout (it is on no package registry)")
    path = real_model("person_detect.tflite")
    code, out, _ = run_cli(capsys, "bench", path, "--board", M4, "--kernels", "cmsis-nn", "--cmsis-nn", cmsis)
    assert code == 0
    assert "CMSIS-NN has no fused-chain kernel" in out and "layer by layer with CMSIS-NN" in out
    code, out, _ = run_cli(capsys, "bench", path, "--board", M4, "--kernels", "cmsis-nn", "--cmsis-nn", cmsis, "--json")
    record = json.loads(out)
    assert "mcugen_chain_s8" not in json.dumps(record["layers"])
    assert all(l["op"] != "CHAIN" for l in record["layers"])


def test_a_damaged_build_info_is_one_line_and_exit_2(tmp_path, capsys):
    path = real_model("mlperf_tiny_kws_ref_model.tflite")
    assert run_cli(capsys, "generate", path, "-o", tmp_path / "gen", "--board", M4)[0] == 0
    (tmp_path / "gen" / driver.BUILD_INFO).write_text("{not json")
    code, out, err = run_cli(capsys, "bench", tmp_path / "gen", "--board", M4)
    assert code == 2 and len(err.strip().splitlines()) == 1 and "generate the folder again" in err, err
