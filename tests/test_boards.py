"""Board table, CPU flags against the real arm-none-eabi-gcc, real-board builds and limits."""
from __future__ import annotations

import re
import subprocess
from pathlib import Path

import pytest

from mcugen.bench import elf_sizes, read_elf
from mcugen.boards import BOARDS, EMULATED_BOARDS, KIB, MIB, get_board
from mcugen.cmd_firmware import main as cli_main
from mcugen.options import parse_size
from mcugen.errors import LimitError, UnsupportedError
from mcugen.firmware import build_firmware

TINY = Path(__file__).parent / "fixtures" / "tiny_model"
REAL_BOARDS = ("stm32f746", "nrf52840")


def predefined_macros(flags) -> dict[str, str]:
    done = subprocess.run(
        ["arm-none-eabi-gcc", *flags, "-dM", "-E", "-x", "c", "/dev/null"],
        capture_output=True, text=True, check=True,
    )
    macros = {}
    for line in done.stdout.splitlines():
        parts = line.split(None, 2)
        macros[parts[1]] = parts[2] if len(parts) == 3 else ""
    return macros


def test_emulated_boards_and_machines():
    assert EMULATED_BOARDS == ("qemu-mps2-an386", "qemu-mps2-an500", "qemu-mps3-an547")
    assert [BOARDS[b].qemu_machine for b in EMULATED_BOARDS] == ["mps2-an386", "mps2-an500", "mps3-an547"]
    assert [BOARDS[b].cpu for b in EMULATED_BOARDS] == ["cortex-m4", "cortex-m7", "cortex-m55"]
    for name in REAL_BOARDS:
        assert not BOARDS[name].emulated and BOARDS[name].pyocd_target


@pytest.mark.parametrize(
    "board, fp_macro, mve",
    [
        ("qemu-mps2-an386", "4", None),   # single precision
        ("qemu-mps2-an500", "14", None),  # single + double precision
        ("qemu-mps3-an547", "14", "3"),   # MVE integer and floating point
        ("stm32f746", "4", None),
        ("nrf52840", "4", None),
    ],
)
def test_cpu_flags_select_the_fpu_and_mve(board, fp_macro, mve):
    macros = predefined_macros(BOARDS[board].cpu_flags)
    assert macros["__ARM_FP"] == fp_macro
    assert macros.get("__ARM_FEATURE_MVE") == mve
    assert "__ARM_PCS_VFP" in macros  # hard-float ABI
    assert "__thumb2__" in macros


def test_memory_maps_and_default_limits():
    stm = BOARDS["stm32f746"]
    assert (stm.flash.origin, stm.flash.length) == (0x08000000, 1 * MIB)
    # DTCM 64 KB + SRAM1 240 KB + SRAM2 16 KB, contiguous from 0x20000000
    assert (stm.ram.origin, stm.ram.length) == (0x20000000, (64 + 240 + 16) * KIB)
    nrf = BOARDS["nrf52840"]
    assert (nrf.flash.origin, nrf.flash.length, nrf.ram.origin, nrf.ram.length) == (0, MIB, 0x20000000, 256 * KIB)
    m55 = BOARDS["qemu-mps3-an547"]
    assert m55.vectors is not None and m55.vectors.origin == 0  # QEMU fetches SP/PC at 0
    for board in BOARDS.values():
        assert board.ram_limit == board.ram.length and board.flash_limit == board.flash.length
        assert board.stack_bytes < board.ram.length


# Vendor memory a stack guard must never cover: the firmware (or the SDK around it) reads it.
VENDOR_MEMORY = {
    "nrf52840": [(0x10000000, 0x10002000)],   # FICR + UICR
    "stm32f746": [(0x1FF00000, 0x20000000)],  # system memory, OTP, unique ID, flash size, option bytes
}


@pytest.mark.parametrize("board_name", sorted(BOARDS))
def test_stack_guard_covers_only_the_end_of_the_stack(board_name, tmp_path):
    """The guard as built: linker symbols of the ELF (what the start-up code programs into
    the MPU), and the compile definitions of the project (no fixed guard address left)."""
    board = get_board(board_name)
    build = build_firmware(TINY, "tiny", board, tmp_path / "fw")
    symbols = {s.name: s.value for s in read_elf(build.elf).symbols}
    base, size, limit = symbols["__stack_guard__"], symbols["__stack_guard_size__"], symbols["__stack_limit__"]
    makefile = (build.project_dir / "Makefile").read_text() + (build.project_dir / "CMakeLists.txt").read_text()
    assert "STACK_GUARD" not in makefile
    if board.cpu == "cortex-m55":
        assert size == 0 and board.stack_guard_bytes == 0  # Armv8-M: MSPLIM = __stack_limit__
        return
    assert size == board.stack_guard_bytes == 256
    assert size & (size - 1) == 0 and base % size == 0  # one MPU region: a power of two, aligned
    assert base + size == limit  # right at the stack's end, nothing between
    assert board.ram.origin <= base and limit + board.stack_bytes <= board.ram.end
    assert symbols["__stack_top__"] - limit == board.stack_bytes
    for start, end in VENDOR_MEMORY.get(board_name, []):
        assert base + size <= start or end <= base, f"guard 0x{base:x}+{size} covers vendor memory 0x{start:x}"


def test_unknown_board_is_a_one_line_error():
    with pytest.raises(UnsupportedError, match="unknown board 'esp32'.*nrf52840.*stm32f746"):
        get_board("esp32")


@pytest.mark.parametrize("text, value", [("262144", 262144), ("256K", 262144), ("256KiB", 262144),
                                          ("1M", 1048576), ("0x50000", 0x50000), ("12b", 12)])
def test_parse_size(text, value):
    assert parse_size(text) == value


@pytest.mark.parametrize("board_name", REAL_BOARDS)
def test_real_board_builds_within_its_limits(board_name, tmp_path):
    board = get_board(board_name)
    build = build_firmware(TINY, "tiny", board, tmp_path / "fw")
    assert build.elf.is_file() and build.bin.stat().st_size > 0 and build.hex.read_text().startswith(":")
    sizes = build.sizes
    assert sizes == elf_sizes(build.elf)
    assert sizes.stack == board.stack_bytes
    assert 16 <= sizes.bss  # the 16-byte arena at least
    assert sizes.data == 4  # tiny_fixture_increment, copied from flash at start-up
    assert 0 < sizes.flash <= board.flash_limit and 0 < sizes.ram <= board.ram_limit
    sections = {s.name: s for s in read_elf(build.elf).sections}
    assert sections[".vectors"].address == board.flash.origin
    assert board.ram.origin <= sections[".bss"].address < board.ram.end
    # without --semihosting a real board's firmware never executes a semihosting call
    assert "mcugen_sh_exit" not in {s.name for s in read_elf(build.elf).symbols}


@pytest.mark.parametrize("board_name", REAL_BOARDS)
def test_too_big_arena_names_needed_and_available_ram(board_name, tmp_path):
    """The planned arena plus the stack reserve is checked before anything is written or built."""
    board = get_board(board_name)
    with pytest.raises(LimitError) as raised:
        build_firmware(TINY, "tiny", board, tmp_path / "fw", extra_cflags=["-DTINY_ARENA_BYTES=400000"])
    message = str(raised.value)
    assert board_name in message and "RAM" in message and "\n" not in message
    assert f"needs at least {400000 + board.stack_bytes} bytes of RAM (arena 400000 + stack {board.stack_bytes})" in message
    assert f"but the limit is {board.ram_limit}" in message and "nothing was built" in message
    assert not (tmp_path / "fw").exists()


def test_too_big_ram_and_flash_are_both_reported(tmp_path):
    with pytest.raises(LimitError) as raised:
        build_firmware(TINY, "tiny", get_board("nrf52840"), tmp_path / "fw",
                       extra_cflags=["-DTINY_ARENA_BYTES=300000", "-DTINY_CONST_BYTES=1100000"])
    message = str(raised.value)
    assert "needs at least 316384 bytes of RAM (arena 300000 + stack 16384) but the limit is 262144" in message
    assert "needs at least 1100000 bytes of flash for constants but the limit is 1048576" in message
    assert not (tmp_path / "fw").exists()


def test_ram_limit_below_the_board_is_enforced(tmp_path):
    board = get_board("nrf52840")
    with pytest.raises(LimitError, match=r"needs at least 16400 bytes of RAM \(arena 16 \+ stack 16384\) but the limit is 8192"):
        build_firmware(TINY, "tiny", board, tmp_path / "fw", ram_limit=8192)


def test_limit_between_plan_and_linked_size_reports_the_breakdown(tmp_path):
    """The plan fits (arena + stack = the limit) but the linked image does not: the measured
    breakdown of the ELF names what is needed."""
    board = get_board("nrf52840")
    with pytest.raises(LimitError, match=r"needs \d+ bytes of RAM \(data 4 \+ bss \d+ \+ stack 16384\) but the limit is 16400"):
        build_firmware(TINY, "tiny", board, tmp_path / "fw", ram_limit=16400)


def test_linker_overflow_is_measured_by_an_unconstrained_relink(tmp_path):
    """Constants within the plan's limit but a flash region too small for the linked image."""
    board = get_board("nrf52840")
    with pytest.raises(LimitError) as raised:
        build_firmware(TINY, "tiny", board, tmp_path / "fw", extra_cflags=["-DTINY_CONST_BYTES=1048000"])
    message = str(raised.value)
    assert re.search(r"needs (\d+) bytes of flash \(text \d+ \+ rodata (\d+) \+ data 4\) but the limit is 1048576", message), message
    # the re-link that measured the sizes stays inside the build folder
    assert not (tmp_path / "fw" / "board" / "measure-unlimited.ld").exists()


def test_semihosting_real_board_build_prints_results(tmp_path):
    build = build_firmware(TINY, "tiny", get_board("stm32f746"), tmp_path / "fw", semihosting=True,
                           builtin_inputs=[bytes(range(8))])
    main_c = (build.project_dir / "main.c").read_text()
    assert "MCUGEN_OUTPUT=" in main_c and "0x00, 0x01, 0x02" in main_c
    assert "mcugen_sh_exit" in {s.name for s in read_elf(build.elf).symbols}


def test_cli_firmware_limit_error_exits_2(tmp_path, capsys):
    code = cli_main(["firmware", str(TINY), "--name", "tiny", "--board", "nrf52840",
                     "--out", str(tmp_path / "fw"), "--ram-limit", "8K"])
    err = capsys.readouterr().err
    assert code == 2
    assert err.startswith("mcugen: error: model tiny on nrf52840 needs") and err.count("\n") == 1


def test_cli_flash_real_board_without_probe_exits_2(tmp_path, capsys):
    assert cli_main(["firmware", str(TINY), "--name", "tiny", "--board", "nrf52840",
                     "--out", str(tmp_path / "fw")]) == 0
    capsys.readouterr()
    code = cli_main(["flash", str(tmp_path / "fw"), "--probe", "pyocd", "--timeout", "60"])
    err = capsys.readouterr().err
    assert code == 2
    assert err.startswith("mcugen: error: ") and err.count("\n") == 1
    assert "pyOCD" in err


def test_cli_flash_with_semihosting_and_no_probe_exits_2(tmp_path, capsys):
    assert cli_main(["firmware", str(TINY), "--name", "tiny", "--board", "stm32f746", "--semihosting",
                     "--out", str(tmp_path / "fw")]) == 0
    capsys.readouterr()
    code = cli_main(["flash", str(tmp_path / "fw"), "--probe", "pyocd", "--semihosting", "--timeout", "60"])
    err = capsys.readouterr().err
    assert code == 2 and err.startswith("mcugen: error: ") and err.count("\n") == 1 and "pyOCD" in err


def _rtt_text(ram: bytes, ram_origin: int) -> str:
    """What a debug probe would read from RTT channel 0, found the way a probe finds it: the
    "SEGGER RTT" signature of the control block, then the up-buffer's descriptor."""
    import struct

    at = ram.find(b"SEGGER RTT\0")
    assert at >= 0, "no RTT control block in RAM"
    max_up, _max_down = struct.unpack_from("<ii", ram, at + 16)
    _name, buffer, size, write, read, _flags = struct.unpack_from("<6I", ram, at + 24)
    assert max_up >= 1 and 0 <= read <= write < size
    start = buffer - ram_origin
    return ram[start + read:start + write].decode()


@pytest.mark.qemu
def test_real_board_firmware_prints_results_over_rtt(tmp_path):
    """The nRF52840 firmware, unchanged, on the emulated Cortex-M4 (mps2-an386 has memory at
    0 and 0x20000000 too; the firmware touches no nRF peripheral): once it sleeps, QEMU's
    monitor saves its RAM and the RTT channel holds the outputs, status, cycle line and stack."""
    import time

    board = get_board("nrf52840")
    data = bytes([0, 1, 2, 42, 43, 127, 128, 255])
    expected = bytes([1, 4, 7, 127, 127, 127, 0x81, 0xFE])
    build = build_firmware(TINY, "tiny", board, tmp_path / "fw", builtin_inputs=[data])
    dump = tmp_path / "ram.bin"
    qemu = subprocess.Popen(
        ["qemu-system-arm", "-M", "mps2-an386", "-display", "none", "-serial", "null", "-monitor", "stdio",
         "-kernel", str(build.elf)],
        stdin=subprocess.PIPE, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL, text=True, cwd=tmp_path)
    text = ""
    try:
        for _ in range(40):
            time.sleep(0.25)
            qemu.stdin.write(f"pmemsave 0x{board.ram.origin:x} 0x10000 {dump.name}\n")  # relative: '/' is division
            qemu.stdin.flush()
            time.sleep(0.25)
            if dump.is_file() and b"SEGGER RTT\0" in dump.read_bytes():
                text = _rtt_text(dump.read_bytes(), board.ram.origin)
                if "MCUGEN_STACK_BYTES=" in text and text.endswith("\n"):
                    break
        qemu.stdin.write("quit\n")
        qemu.stdin.flush()
        qemu.wait(timeout=10)
    finally:
        if qemu.poll() is None:
            qemu.kill()
    lines = text.splitlines()
    assert f"MCUGEN_OUTPUT={expected.hex()}" in lines, text
    assert "MCUGEN_STATUS=0" in lines
    # QEMU has no DWT (it reads as zero): the firmware says so instead of printing 0 cycles
    assert "MCUGEN_CYCLES=unavailable (no DWT cycle counter; QEMU has none)" in lines
    assert 0 <= int(next(l for l in lines if l.startswith("MCUGEN_STACK_BYTES=")).split("=")[1]) < 256
    assert any(l.startswith("MCUGEN_CHECKSUM=") for l in lines)


def test_flash_and_ram_origins_move_the_application(tmp_path):
    from mcugen.boards import with_origins

    board = with_origins(get_board("nrf52840"), 0x27000, 0x20006000)  # behind an S140 SoftDevice
    assert (board.flash.origin, board.flash.end, board.ram.origin, board.ram.end) == (
        0x27000, MIB, 0x20006000, 0x20000000 + 256 * KIB)
    build = build_firmware(TINY, "tiny", board, tmp_path / "fw")
    sections = {s.name: s for s in read_elf(build.elf).sections}
    symbols = {s.name: s.value for s in read_elf(build.elf).symbols}
    assert sections[".vectors"].address == 0x27000
    assert all(s.address >= 0x27000 for s in sections.values() if s.name in (".text", ".rodata"))
    assert symbols["__stack_guard__"] == 0x20006000 and symbols["__stack_limit__"] == 0x20006100
    assert 0x20006000 <= sections[".bss"].address < board.ram.end
    for bad, message in [((0x27001, None), "not a multiple of 0x200"), ((None, 0x30000000), "outside nrf52840's RAM"),
                         ((0x100000, None), "outside nrf52840's FLASH")]:
        with pytest.raises(UnsupportedError, match=message):
            with_origins(get_board("nrf52840"), *bad)
    with pytest.raises(UnsupportedError, match="for real boards"):
        with_origins(get_board("qemu-mps2-an386"), 0x1000)
    out = tmp_path / "cli"
    assert cli_main(["firmware", str(TINY), "--board", "nrf52840", "-o", str(out),
                     "--flash-origin", "0x27000", "--ram-origin", "0x20006000"]) == 0
    import json

    manifest = json.loads((out / "mcugen_firmware.json").read_text())
    assert (manifest["flash_origin"], manifest["ram_origin"]) == (0x27000, 0x20006000)
    assert cli_main(["firmware", str(TINY), "--board", "nrf52840", "-o", str(tmp_path / "bad"),
                     "--flash-origin", "0x27001"]) == 2
    assert not (tmp_path / "bad").exists()


def test_pyocd_pack_named_exactly_for_targets_pyocd_does_not_have_built_in(capsys, tmp_path):
    """pyOCD's own target list decides: a board whose target is not built in names its pack."""
    pytest.importorskip("pyocd")
    import sys

    listed = subprocess.run([sys.executable, "-m", "pyocd", "list", "--targets"], capture_output=True, text=True,
                            timeout=300).stdout
    builtin = {line.split()[0] for line in listed.splitlines() if line.strip().endswith("builtin")}
    for name in REAL_BOARDS:
        board = get_board(name)
        assert (board.pyocd_target in builtin) == (board.pyocd_pack is None), name
    assert cli_main(["firmware", str(TINY), "--board", "stm32f746", "-o", str(tmp_path / "fw")]) == 0
    out = capsys.readouterr().out
    assert "pyocd pack install stm32f746zgtx" in out and "Keil.STM32F7xx_DFP" in out
