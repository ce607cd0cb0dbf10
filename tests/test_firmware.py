"""Firmware build, QEMU runs, instruction counts and stack measurement on the 3 emulated boards.

Real toolchain and real QEMU throughout, against the hand-written fixture in
tests/fixtures/tiny_model (y = sat8(sat8(3 x) + 1) in two layers).
"""
from __future__ import annotations

import dataclasses
import re
import shutil
import subprocess
from pathlib import Path

import pytest

from mcugen.bench import bench_elf, elf_sizes, read_elf
from mcugen.boards import EMULATED_BOARDS, get_board
from mcugen.cmd_firmware import main as cli_main
from mcugen.errors import ToolError
from mcugen.firmware import build_firmware, read_model_interface
from mcugen.qemu import run_on_qemu, run_on_qemu_batch

pytestmark = pytest.mark.qemu

TINY = Path(__file__).parent / "fixtures" / "tiny_model"
EDGE_INPUT = bytes([0, 1, 2, 42, 43, 127, 128, 255])  # 43*3 saturates; 128 is -128


def expected_tiny(data: bytes) -> bytes:
    """The fixture's function, computed in Python."""
    def sat8(v: int) -> int:
        return max(-128, min(127, v))

    signed = [b - 256 if b > 127 else b for b in data]
    return bytes(sat8(sat8(3 * x) + 1) & 0xFF for x in signed)


@pytest.fixture(scope="module", params=EMULATED_BOARDS)
def profiled(request, tmp_path_factory):
    """The fixture built with per-layer markers, once per emulated board."""
    board = get_board(request.param)
    return build_firmware(TINY, "tiny", board, tmp_path_factory.mktemp(request.param) / "fw", profile=True)


def test_interface_read_from_header():
    interface = read_model_interface(TINY, "tiny")
    assert (interface.input_bytes, interface.output_bytes, interface.num_layers, interface.arena_bytes) == (
        (8,), (8,), 2, 16)
    assert read_model_interface(TINY, "tiny", ["-DTINY_DEEP_STACK_BYTES=64"]).num_layers == 3


def test_runs_bit_exact_on_each_board(profiled):
    inputs = [EDGE_INPUT, bytes(range(120, 128)), bytes(range(248, 256))]
    result = run_on_qemu_batch(profiled.elf, profiled.board, [[x] for x in inputs], timeout=60)
    assert result.exit_code == 0, result.stderr
    assert result.outputs == [[expected_tiny(x)] for x in inputs]
    assert expected_tiny(EDGE_INPUT) == bytes([1, 4, 7, 127, 127, 127, 0x81, 0xFE])
    assert "MCUGEN_RUNS=3" in result.stdout
    assert 0 < result.stack_bytes < 256
    # QEMU emulates no DWT cycle counter: the firmware notices instead of printing 0 cycles
    assert "MCUGEN_CYCLES=unavailable (no DWT cycle counter; QEMU has none)" in result.stdout


def test_instruction_counts_are_exact_and_repeatable(profiled):
    first = bench_elf(profiled.elf, profiled.board, [EDGE_INPUT])
    second = bench_elf(profiled.elf, profiled.board, [EDGE_INPUT])
    assert first == dataclasses.replace(second, wall_seconds=first.wall_seconds)
    assert first.outputs == [expected_tiny(EDGE_INPUT)]
    assert len(first.layers) == 2 and all(count > 0 for count in first.layers)
    assert sum(first.layers) <= first.instructions < first.total_instructions
    # 8 elements per layer: at least a load, an operation and a store each
    assert all(count >= 8 * 3 for count in first.layers)
    sizes = elf_sizes(profiled.elf)
    assert (first.text, first.rodata, first.data, first.bss, first.stack_reserved) == (
        sizes.text, sizes.rodata, sizes.data, sizes.bss, sizes.stack)


def test_plugin_counts_equal_a_single_step_trace(tmp_path):
    """Independent check of the plugin: QEMU's own single-step execution trace (one line
    per executed instruction) must give the same numbers between the same markers."""
    board = get_board("qemu-mps2-an386")
    build = build_firmware(TINY, "tiny", board, tmp_path / "fw", profile=True, stack_bytes=1024)
    counted = bench_elf(build.elf, board, [EDGE_INPUT])
    addresses = {s.name: s.value & ~1 for s in read_elf(build.elf).symbols}
    work = tmp_path / "trace"
    work.mkdir()
    (work / "run0_input0.bin").write_bytes(EDGE_INPUT)
    subprocess.run(
        ["qemu-system-arm", "-M", board.qemu_machine, "-display", "none", "-monitor", "none",
         "-serial", "null", "-semihosting-config", "enable=on,target=native", "-singlestep",
         "-d", "exec,nochain", "-D", "trace.log", "-kernel", str(build.elf)],
        cwd=work, check=True, timeout=120, capture_output=True,
    )
    pcs = [int(m.group(1), 16) for m in re.finditer(r"\[[0-9a-f]+/([0-9a-f]+)/", (work / "trace.log").read_text())]
    assert len(pcs) == counted.total_instructions

    def positions(symbol):
        return [i for i, pc in enumerate(pcs) if pc == addresses[symbol]]

    (begin,), (end,) = positions("mcugen_invoke_begin"), positions("mcugen_invoke_end")
    assert end - begin == counted.instructions
    layers = [e - b for b, e in zip(positions("mcugen_layer_begin"), positions("mcugen_layer_end"))]
    assert layers == counted.layers


def test_stack_measurement_sees_a_deep_layer(tmp_path):
    deep = 6000
    board = get_board("qemu-mps2-an386")
    build = build_firmware(TINY, "tiny", board, tmp_path / "fw", profile=True,
                           extra_cflags=[f"-DTINY_DEEP_STACK_BYTES={deep}"])
    result = bench_elf(build.elf, board, [EDGE_INPUT])
    assert result.outputs == [expected_tiny(EDGE_INPUT)]  # the deep layer keeps outputs unchanged
    assert deep <= result.stack_bytes < deep + 256
    assert len(result.layers) == 3 and result.layers[2] > 2 * deep  # fills and reads back the array


@pytest.mark.parametrize("board_name, status, fault", [
    ("qemu-mps2-an386", 104, "MemManage"),   # MPU guard below RAM
    ("qemu-mps2-an500", 104, "MemManage"),
    ("qemu-mps3-an547", 106, "UsageFault"),  # MSPLIM stack-limit check
])
def test_stack_overflow_faults_instead_of_corrupting(board_name, status, fault, tmp_path):
    board = get_board(board_name)
    build = build_firmware(TINY, "tiny", board, tmp_path / "fw", stack_bytes=4096,
                           extra_cflags=["-DTINY_DEEP_STACK_BYTES=8000"])
    result = run_on_qemu(build.elf, board, [EDGE_INPUT], timeout=30)
    assert result.exit_code == status, result.stderr
    assert f"MCUGEN_FAULT={fault}" in result.stderr
    assert result.outputs == []


@pytest.mark.parametrize("board_name, status, fault", [
    ("qemu-mps2-an386", 104, "MemManage"),
    ("qemu-mps2-an500", 104, "MemManage"),
    ("qemu-mps3-an547", 106, "UsageFault"),
])
def test_stack_growing_frame_by_frame_meets_the_guard(board_name, status, fault, tmp_path):
    """A recursion that overflows the stack faults in the guard right below the stack (M4/M7:
    the MPU's MemManage at an address inside the 256-byte guard; M55: MSPLIM's UsageFault)."""
    board = get_board(board_name)
    build = build_firmware(TINY, "tiny", board, tmp_path / "fw", stack_bytes=4096,
                           extra_cflags=["-DTINY_RECURSE_BYTES=16000"])
    result = run_on_qemu(build.elf, board, [EDGE_INPUT], timeout=30)
    assert result.exit_code == status, result.stderr
    assert f"MCUGEN_FAULT={fault}" in result.stderr and result.outputs == []
    if fault == "MemManage":
        symbols = {s.name: s.value for s in read_elf(build.elf).symbols}
        address = int(re.search(r"mmfar=(0x[0-9a-f]+)", result.stderr).group(1), 16)
        assert symbols["__stack_guard__"] <= address < symbols["__stack_limit__"], result.stderr
    # the same recursion within the stack runs bit-exact
    ok = build_firmware(TINY, "tiny", board, tmp_path / "ok", stack_bytes=8192,
                        extra_cflags=["-DTINY_RECURSE_BYTES=2000"])
    fine = run_on_qemu(ok.elf, board, [EDGE_INPUT], timeout=30)
    assert fine.exit_code == 0 and fine.outputs == [expected_tiny(EDGE_INPUT)], fine.stderr


@pytest.mark.parametrize("board_name", ["qemu-mps2-an386", "qemu-mps2-an500"])
def test_the_stack_guard_leaves_vendor_memory_readable(board_name, tmp_path):
    """Reads of the nRF52840's FICR/UICR (0x10000100) and the STM32F7's unique ID (0x1FF0F420)
    and system memory, added to main.c's USER CODE, run through with the same start-up code
    (QEMU maps these addresses; the old 256 MB guard below RAM made them MemManage faults)."""
    board = get_board(board_name)
    build = build_firmware(TINY, "tiny", board, tmp_path / "fw")
    main_c = build.project_dir / "main.c"
    reads = "".join(f"\n    mcugen_marker_sink += (int32_t)*(volatile const uint32_t *){a};"
                    for a in ("0x10000100u", "0x10001000u", "0x1FF0F420u", "0x1FFF0000u", "0x1FFFFFF0u"))
    main_c.write_text(main_c.read_text().replace("    /* USER CODE BEGIN setup */", "    /* USER CODE BEGIN setup */" + reads))
    subprocess.run(["make", "-C", str(build.project_dir)], check=True, capture_output=True)
    result = run_on_qemu(build.elf, board, [EDGE_INPUT], timeout=30)
    assert result.exit_code == 0 and "MCUGEN_FAULT" not in result.stderr, result.stderr
    assert result.outputs == [expected_tiny(EDGE_INPUT)]


@pytest.mark.parametrize("board_name", EMULATED_BOARDS)
def test_bad_access_ends_with_a_fault_status(board_name, tmp_path):
    board = get_board(board_name)
    build = build_firmware(TINY, "tiny", board, tmp_path / "fw", extra_cflags=["-DTINY_FAULT"])
    result = run_on_qemu(build.elf, board, [EDGE_INPUT], timeout=30)
    assert not result.timed_out and result.wall_seconds < 30
    assert result.exit_code == 106, result.stderr  # UsageFault: unaligned LDRD
    match = re.search(r"MCUGEN_FAULT=UsageFault exception=6 pc=(0x[0-9a-f]+) cfsr=0x01000000", result.stderr)
    assert match, result.stderr  # CFSR.UNALIGNED
    fault_pc = int(match.group(1), 16)
    owners = [s.name for s in read_elf(build.elf).symbols
              if s.size and (s.value & ~1) <= fault_pc < (s.value & ~1) + s.size]
    assert owners in (["make_fault"], ["tiny_invoke"])  # make_fault may be inlined


def test_missing_or_short_input_files_fail(profiled, tmp_path):
    elf, board = profiled.elf, profiled.board
    short = run_on_qemu(elf, board, [b"\x01\x02"], timeout=30)
    assert short.exit_code == 2 and "MCUGEN_ERROR: wrong size" in short.stderr
    work = tmp_path / "empty"
    work.mkdir()
    missing = run_on_qemu_batch(elf, board, [[]], workdir=work, timeout=30)
    assert missing.exit_code == 2 and "MCUGEN_ERROR: cannot open run0_input0.bin" in missing.stderr
    with pytest.raises(ToolError, match="exit status 2: MCUGEN_ERROR: wrong size"):
        bench_elf(elf, board, [b"\x01"])


def test_a_hanging_firmware_is_stopped_at_the_timeout(tmp_path):
    board = get_board("qemu-mps2-an386")
    build = build_firmware(TINY, "tiny", board, tmp_path / "fw", extra_cflags=["-DTINY_HANG"])
    result = run_on_qemu(build.elf, board, [EDGE_INPUT], timeout=1.0)
    assert result.timed_out and result.exit_code is None
    assert 1.0 <= result.wall_seconds < 10.0
    with pytest.raises(ToolError, match="did not finish within 1 s"):
        bench_elf(build.elf, board, [EDGE_INPUT], timeout=1.0)


def test_missing_qemu_is_a_one_line_tool_error(monkeypatch, profiled):
    monkeypatch.setenv("PATH", "/nonexistent")
    with pytest.raises(ToolError, match=r"^qemu-system-arm not found on PATH; run scripts/setup.sh"):
        run_on_qemu(profiled.elf, profiled.board, [EDGE_INPUT])
    with pytest.raises(ToolError, match=r"^arm-none-eabi-gcc not found on PATH; run scripts/setup.sh"):
        build_firmware(TINY, "tiny", profiled.board, Path("/nonexistent/never-written"))


def test_exported_makefile_and_cmake_projects_build_standalone(tmp_path):
    board = get_board("qemu-mps3-an547")
    build = build_firmware(TINY, "tiny", board, tmp_path / "fw")
    reference = elf_sizes(build.elf)
    project = tmp_path / "exported"
    shutil.copytree(build.project_dir, project, ignore=shutil.ignore_patterns("build"))

    subprocess.run(["make", "-j2"], cwd=project, check=True, capture_output=True)
    made = project / "build" / "tiny.elf"
    assert elf_sizes(made) == reference
    assert (project / "build" / "tiny.bin").read_bytes() == build.bin.read_bytes()

    cmake_build = tmp_path / "cmake-build"
    subprocess.run(["cmake", "-S", str(project), "-B", str(cmake_build)], check=True, capture_output=True)
    subprocess.run(["cmake", "--build", str(cmake_build), "-j2"], check=True, capture_output=True)
    cmade = cmake_build / "tiny.elf"
    assert (cmake_build / "tiny.hex").read_text().startswith(":")
    result = run_on_qemu(cmade, board, [EDGE_INPUT], timeout=30)
    assert result.exit_code == 0 and result.outputs == [expected_tiny(EDGE_INPUT)]


def test_project_folder_with_foreign_files_is_refused(tmp_path):
    (tmp_path / "notes.txt").write_text("mine")
    from mcugen.errors import OutputError

    with pytest.raises(OutputError, match="folder holds files mcugen did not write .notes.txt.; nothing was written"):
        build_firmware(TINY, "tiny", get_board("qemu-mps2-an386"), tmp_path)
    assert sorted(p.name for p in tmp_path.iterdir()) == ["notes.txt"]


def test_cli_bench_and_flash_on_an_emulated_board(tmp_path, capsys):
    out = tmp_path / "bench"
    assert cli_main(["bench", str(TINY), "--board", "qemu-mps2-an500", "--out", str(out),
                     "--png", str(tmp_path / "bench.png")]) == 0
    text = capsys.readouterr().out
    count = int(re.search(r"model tiny on qemu-mps2-an500: ([\d,]+) instructions per inference", text).group(1).replace(",", ""))
    assert count > 0 and re.search(r"^\s+1\s+\S+\s+\d+\s+\d+", text, re.MULTILINE)
    assert (tmp_path / "bench.png").read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"
    assert cli_main(["bench", str(TINY), "--board", "qemu-mps2-an500", "--json"]) == 0
    import json

    record = json.loads(capsys.readouterr().out)
    assert record["instructions"] == count
    assert [l["index"] for l in record["layers"]] == [0, 1] and all(l["instructions"] > 0 for l in record["layers"])
    assert record["ram_bytes"] >= record["stack_bytes"] > 0 and record["flash_bytes"] > 0

    raw = tmp_path / "x.bin"
    raw.write_bytes(EDGE_INPUT)
    assert cli_main(["flash", str(out / "build" / "tiny.elf"), "--input", str(raw)]) == 0
    assert f"output 0: {expected_tiny(EDGE_INPUT).hex()}" in capsys.readouterr().out


def test_bench_measures_the_firmware_as_built_without_markers(tmp_path, capsys):
    """bench reports the flash and instructions of the firmware `firmware` builds (no per-layer
    markers: their calls are code and instructions a user's firmware does not have); its layers
    come from a build with the markers."""
    import json

    assert cli_main(["bench", str(TINY), "--board", "qemu-mps2-an386", "-o", str(tmp_path / "b"), "--json"]) == 0
    record = json.loads(capsys.readouterr().out)
    assert cli_main(["firmware", str(TINY), "--board", "qemu-mps2-an386", "--out", str(tmp_path / "fw")]) == 0
    printed = int(re.search(r"flash: (\d+) bytes", capsys.readouterr().out).group(1))
    plain = elf_sizes(tmp_path / "fw" / "build" / "tiny.elf")
    assert record["flash_bytes"] == printed == plain.text + plain.rodata + plain.data
    assert elf_sizes(tmp_path / "b" / "build" / "tiny.elf") == plain
    assert read_elf(tmp_path / "b" / "build" / "tiny.elf").symbol("mcugen_layer_begin") is None
    profiled = build_firmware(TINY, "tiny", get_board("qemu-mps2-an386"), tmp_path / "p", profile=True)
    with_markers = elf_sizes(profiled.elf)
    assert with_markers.text > plain.text
    from mcugen.cmd_firmware import default_inputs

    result = bench_elf(profiled.elf, profiled.board, default_inputs(profiled.interface.input_bytes))
    assert record["instructions"] < result.instructions and len(record["layers"]) == len(result.layers) == 2
    assert [l["instructions"] for l in record["layers"]] == result.layers


def test_cli_reads_npy_inputs(tmp_path, capsys):
    import numpy as np

    assert cli_main(["firmware", str(TINY), "--board", "qemu-mps2-an386", "--out", str(tmp_path / "fw")]) == 0
    np.save(tmp_path / "in.npy", np.array([[0, 1, 2, 42, 43, 127, -128, -1]], dtype=np.int8))
    capsys.readouterr()
    assert cli_main(["flash", str(tmp_path / "fw"), "--input", str(tmp_path / "in.npy")]) == 0
    assert f"output 0: {expected_tiny(EDGE_INPUT).hex()}" in capsys.readouterr().out
    np.save(tmp_path / "bad.npy", np.zeros(9, dtype=np.int8))
    assert cli_main(["flash", str(tmp_path / "fw"), "--input", str(tmp_path / "bad.npy")]) == 2


# --- the code generator's output on the emulated boards ---------------------------------------


@pytest.fixture(scope="module")
def generated_models(tmp_path_factory, shared_models_dir):
    """micro_speech and person_detect generated once by mcugen's driver."""
    from mcugen.driver import generate

    root = tmp_path_factory.mktemp("generated")
    generate(shared_models_dir / "tflm_micro_speech_quantized.tflite", root / "speech", name="speech")
    generate(shared_models_dir / "person_detect.tflite", root / "person", name="person")
    return root


@pytest.mark.parametrize("board_name", EMULATED_BOARDS)
def test_generated_model_is_bit_exact_with_tflm_on_each_board(board_name, generated_models, shared_models_dir, tmp_path):
    import numpy as np

    board = get_board(board_name)
    build = build_firmware(generated_models / "speech", "speech", board, tmp_path / "fw", profile=True)
    ref = shared_models_dir / "ref"
    x = np.load(ref / "tflm_micro_speech_quantized__rand_seed0_input0.npy")
    expected = np.load(ref / "tflm_micro_speech_quantized__rand_seed0_tflm_output0.npy")
    result = bench_elf(build.elf, board, [x.tobytes()])
    assert result.outputs == [expected.tobytes()]
    assert len(result.layers) == build.interface.num_layers
    assert 0 < sum(result.layers) <= result.instructions
    assert 0 < result.stack_bytes < board.stack_bytes


def test_generated_person_detect_batch_on_m4(generated_models, shared_models_dir, tmp_path):
    import numpy as np

    board = get_board("qemu-mps2-an386")
    build = build_firmware(generated_models / "person", "person", board, tmp_path / "fw")
    runs, expected = [], []
    for image in ("person", "no_person"):
        runs.append([np.load(shared_models_dir / f"person_detect_{image}_input_int8.npy").tobytes()])
        expected.append([np.load(shared_models_dir / f"person_detect_{image}_tflm_output_int8.npy").tobytes()])
    result = run_on_qemu_batch(build.elf, board, runs, timeout=120)
    assert result.exit_code == 0, result.stderr
    assert result.outputs == expected
    assert [list(np.frombuffer(o[0], np.int8)) for o in result.outputs] == [[-113, 113], [57, -57]]
