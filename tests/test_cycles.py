"""Estimated cycles: the plugin's classifier on known instructions, an assembly snippet with a
known instruction mix counted exactly on the emulated M4 and M7 (real QEMU, real plugin), and
`bench --json` on a real model."""
from __future__ import annotations

import json
import subprocess
from pathlib import Path

import pytest

from mcugen import cycles
from mcugen.bench import parse_icount_log, plugin_arguments, split_invocations
from mcugen.boards import get_board
from mcugen.qemu import run_qemu_process

SNIPPET = Path(__file__).parent / "fixtures" / "cycles_snippet" / "snippet.S"


def test_plugin_and_python_name_the_same_timing_fields():
    assert cycles.plugin_timing_fields() == cycles.TIMING_FIELDS
    for timing in cycles.TIMINGS.values():
        assert set(timing.cycles) == set(cycles.TIMING_FIELDS)
        assert timing.plugin_argument().count(":") == len(cycles.TIMING_FIELDS) - 1


# (QEMU's disassembly text, class, M4 cycles taken / not taken, M7 cycles taken)
KNOWN = [
    ("movs r0, #1", "alu", 1, 1, 1),
    ("lsls r0, r0, #2", "alu", 1, 1, 1),
    ("bics r0, r1", "alu", 1, 1, 1),  # "cs" is a condition, "bi" no mnemonic: flag-setting BIC
    ("teq r0, r1", "alu", 1, 1, 1),
    ("sxtb16 r0, r1, ror #8", "alu", 1, 1, 1),
    ("uqadd8 r0, r1, r2", "alu", 1, 1, 1),
    ("add.w r4, r2, r3", "alu", 1, 1, 1),
    ("addne r0, r0, #1", "alu", 1, 1, 1),
    ("smlad r0, r1, r2, r0", "mul", 1, 1, 1),
    ("smulls r0, r1, r2, r3", "mul", 1, 1, 1),
    ("mla r0, r1, r2, r3", "mla", 2, 2, 1),
    ("mls r0, r1, r2, r3", "mla", 2, 2, 1),  # not M + "ls"
    ("sdiv r0, r1, r2", "div", 7, 7, 7),
    ("ldr r0, [r1, #4]", "load_store", 2, 2, 1),
    ("ldr.w r3, [r2, #4]", "load_store", 2, 2, 1),
    ("strb r0, [r1], #1", "load_store", 2, 2, 1),
    ("ldrd r2, r3, [r0]", "load_store_pair", 3, 3, 1),
    ("push {r4, r5, r6, lr}", "multiple", 5, 5, 3),
    ("ldm.w r0!, {r1, r2, r3, r4}", "multiple", 5, 5, 3),
    ("ldmia r0!, {r1-r4}", "multiple", 5, 5, 3),
    ("pop {r4, r5, pc}", "multiple", 6, 6, 4),
    ("popne {r4, pc}", "multiple", 5, 3, 3),
    ("vpush {d8, d9}", "multiple", 5, 5, 3),
    ("beq #0x10", "branch", 3, 1, 2),
    ("bls #0x20", "branch", 3, 1, 2),  # B + LS, not BL + S
    ("cbz r0, #0x40", "branch", 3, 1, 2),
    ("bl #0x7c4", "branch", 3, 3, 2),
    ("bx lr", "branch", 3, 3, 2),
    ("b.w #0x414", "branch", 3, 3, 2),
    ("tbb [pc, r0]", "load_store", 4, 4, 2),
    ("ldr pc, [sp], #4", "load_store", 4, 4, 2),
    ("mov pc, lr", "alu", 3, 3, 2),
    ("vadd.f32 s1, s0, s0", "fp", 1, 1, 1),
    ("vmla.f32 s1, s0, s0", "fp_mac", 3, 3, 3),
    ("vdiv.f32 s0, s1, s2", "fp_div", 14, 14, 14),
    ("vldr s0, [r1]", "fp_load_store", 2, 2, 1),
    ("vldr d0, [r1]", "fp_load_store_pair", 3, 3, 1),
    ("ite eq", "it", 1, 1, 1),
    ("dsb sy", "system", 2, 2, 2),
    ("frobnicate r0", "unclassified", 1, 1, 1),
]


@pytest.mark.parametrize("text, cls, m4_taken, m4_not_taken, m7", KNOWN, ids=[k[0] for k in KNOWN])
def test_classifier_on_known_instructions(text, cls, m4_taken, m4_not_taken, m7):
    assert cycles.classify(text).cls == cls
    assert cycles.instruction_cycles(text, "cortex-m4", taken=True) == m4_taken
    assert cycles.instruction_cycles(text, "cortex-m4", taken=False) == m4_not_taken
    assert cycles.instruction_cycles(text, "cortex-m7", taken=True) == m7


def test_classifier_details():
    assert cycles.classify("ldmia r0!, {r1-r4}").words == 4
    assert cycles.classify("vpush {d8, d9}").words == 4  # two words per D register
    assert cycles.classify("pop {r4, r5, pc}").writes_pc and not cycles.classify("push {r4, lr}").writes_pc
    assert cycles.classify("bne #0x44").conditional and not cycles.classify("b #0x44").conditional
    assert cycles.classify("subseq r0, #1") == cycles.Classified("alu", 0, False, True)
    # a single load/store directly after another is pipelined on the M4; LDRD and PC loads are not
    assert cycles.instruction_cycles("str r2, [r1, #8]", after_load_store=True) == 1
    assert cycles.instruction_cycles("ldrd r2, r3, [r0]", after_load_store=True) == 3
    assert cycles.instruction_cycles("ldr pc, [sp], #4", after_load_store=True) == 4


def _snippet_elf(tmp_path: Path) -> Path:
    elf = tmp_path / "snippet.elf"
    subprocess.run(
        ["arm-none-eabi-gcc", "-mcpu=cortex-m4", "-mthumb", "-mfloat-abi=hard", "-mfpu=fpv4-sp-d16",
         "-nostdlib", "-Wl,-Ttext=0", "-Wl,--entry=reset", "-o", str(elf), str(SNIPPET)],
        check=True, capture_output=True, text=True,
    )
    return elf


# The snippet's mix between mcugen_invoke_begin and mcugen_invoke_end, executed in this order,
# by hand from the tables: (instruction, executions, Cortex-M4 cycles, Cortex-M7 cycles).
SNIPPET_BY_HAND = [
    ("movs r0, #0", 1, 1, 1),
    ("ldr r2, [r1]", 1, 2, 1),        # after an ALU op: not pipelined
    ("ldr r3, [r1, #4]", 1, 1, 1),    # right after a load: pipelined
    ("str r2, [r1, #8]", 1, 1, 1),    # pipelined
    ("add.w r4, r2, r3", 1, 1, 1),
    ("ldrd r4, r5, [r1]", 1, 3, 1),
    ("mla r6, r4, r5, r6", 1, 2, 1),
    ("mul.w r7, r4, r5", 1, 1, 1),
    ("smlad r6, r4, r5, r6", 1, 1, 1),
    ("push {r4, r5, r6, r7}", 1, 5, 3),  # M4 1 + 4; M7 1 + 4/2
    ("pop {r4, r5, r6, r7}", 1, 5, 3),
    ("udiv r2, r2, r5", 1, 7, 7),
    ("movs r0, #3", 1, 1, 1),
    ("ldmia.w r1, {r2, r3}", 3, 3 * 3, 3 * 2),
    ("subs r0, #1", 3, 3 * 1, 3 * 1),
    ("bne 1b", 3, 3 + 3 + 1, 2 + 2 + 1),  # taken twice, not taken once
    ("cbz r0, 2f", 1, 3, 2),              # r0 == 0: taken
    ("bl func", 1, 3, 2),
    ("vldr s0, [r1]", 1, 2, 1),
    ("vadd.f32 s1, s0, s0", 1, 1, 1),
    ("vmla.f32 s1, s0, s0", 1, 3, 3),
    ("bx lr", 1, 3, 2),
    ("b.w mcugen_invoke_end", 1, 3, 2),
]


@pytest.mark.qemu
@pytest.mark.parametrize("board_name, column", [("qemu-mps2-an386", 2), ("qemu-mps2-an500", 3)])
def test_snippet_cycles_equal_the_hand_computation(board_name, column, tmp_path):
    board = get_board(board_name)
    timing = cycles.timing_for_cpu(board.cpu)
    elf = _snippet_elf(tmp_path)
    log = tmp_path / "icount.log"
    exit_code, _, err, _ = run_qemu_process(elf, board, tmp_path, timeout=60,
                                            extra_args=("-plugin", plugin_arguments(elf, log, timing)))
    assert exit_code == 0, err
    counted = parse_icount_log(log.read_text())
    (window,) = split_invocations(counted.events)
    assert window.instructions == sum(row[1] for row in SNIPPET_BY_HAND) == 29
    expected = sum(row[column] for row in SNIPPET_BY_HAND)
    assert expected == {2: 68, 3: 50}[column]
    assert window.cycles == expected
    assert counted.unclassified == 0, counted.unclassified_names
    assert counted.total_cycles > window.cycles


@pytest.mark.qemu
def test_snippet_without_a_timing_table_counts_no_cycles(tmp_path):
    board = get_board("qemu-mps2-an386")
    elf = _snippet_elf(tmp_path)
    log = tmp_path / "icount.log"
    exit_code, _, err, _ = run_qemu_process(elf, board, tmp_path, timeout=60,
                                            extra_args=("-plugin", plugin_arguments(elf, log, None)))
    assert exit_code == 0, err
    counted = parse_icount_log(log.read_text())
    (window,) = split_invocations(counted.events)
    assert (window.instructions, window.cycles, counted.total_cycles) == (29, 0, 0)


@pytest.mark.qemu
def test_bench_json_estimates_cycles_on_a_real_model_repeatably(shared_models_dir, capsys):
    from mcugen.cmd_firmware import main as cli_main

    model = shared_models_dir / "mlperf_tiny_kws_ref_model.tflite"
    records = []
    for _ in range(2):
        assert cli_main(["bench", str(model), "--board", "qemu-mps2-an386", "--json"]) == 0
        records.append(json.loads(capsys.readouterr().out))
    first, second = records
    assert first["cycles_timing"] == "cortex-m4"
    assert first["estimated_cycles"] >= first["instructions"] > 0
    assert first["unclassified_instructions"] == 0
    assert all(l["estimated_cycles"] >= l["instructions"] > 0 for l in first["layers"])
    from mcugen.bench import LAYER_MARKER_CYCLES  # the layers: from a build with per-layer markers

    assert sum(l["estimated_cycles"] for l in first["layers"]) <= first["estimated_cycles"] + LAYER_MARKER_CYCLES * len(first["layers"])
    keys = ("instructions", "estimated_cycles")
    assert [first[k] for k in keys] == [second[k] for k in keys]
    assert [[l[k] for k in keys] for l in first["layers"]] == [[l[k] for k in keys] for l in second["layers"]]
