"""Memory planning: planner properties, liveness, dead-byte poisoning, plans bit-exact end to end, `mcugen plan`.

Every C run here is compiled with -DMCUGEN_POISON: at each layer boundary the generated code
overwrites every arena byte that holds no live data, so a plan or a kernel that reads a
byte it should not gives different outputs.
"""

from __future__ import annotations

import argparse
import json
import shutil
import subprocess
import tempfile
from pathlib import Path

import numpy as np
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from helpers import OPS_DIR, SHARED_REAL, build_mobilenet, op_model_entries, real_models
from mcugen import codegen, driver
from mcugen.errors import McugenError
from mcugen.arena import needed_aliases, plan_buffers
from mcugen.lower import lower
from mcugen.passes import Buffers, Liveness
from mcugen.planner import (
    Alias,
    AliasKind,
    Buffer,
    Plan,
    PlanError,
    alias_lower_bound,
    lower_bound,
    overlap_permitted,
    plan_greedy,
    plan_naive,
    verify,
)
from mcugen.tflite_reader import read_tflite

POISON = ("-DMCUGEN_POISON",)

# ---- planner properties over random live ranges ----------------------------------------------


@st.composite
def buffers_and_aliases(draw, with_aliases: bool = True):
    n = draw(st.integers(1, 10))
    buffers = []
    for i in range(n):
        first = draw(st.integers(0, 8))
        buffers.append(
            Buffer(
                name=f"b{i}",
                size=draw(st.integers(1, 96)),
                first=first,
                last=first + draw(st.integers(0, 4)),
                align=draw(st.sampled_from([1, 4, 16])),
            )
        )
    aliases = []
    if with_aliases:
        for _ in range(draw(st.integers(0, 4))):
            i, j = draw(st.integers(0, n - 1)), draw(st.integers(0, n - 1))
            if i == j or not buffers[i].live_with(buffers[j]):
                continue
            kind = draw(st.sampled_from(list(AliasKind)))
            overlap = 0 if kind is AliasKind.SAME else draw(st.integers(1, 96))
            aliases.append(Alias(buffers[i].name, buffers[j].name, kind, overlap))
    return buffers, aliases


def brute_force_ok(buffers, plan, aliases) -> bool:
    """Byte by byte, step by step: buffers live together share a byte only if an alias permits it."""
    if any(plan.offsets[b.name] % b.align or plan.offsets[b.name] + b.size > plan.arena_bytes for b in buffers):
        return False
    steps = range(max(b.last for b in buffers) + 1)
    for k in steps:
        owners: dict[int, list[Buffer]] = {}
        for b in buffers:
            if b.first <= k <= b.last:
                for byte in range(plan.offsets[b.name], plan.offsets[b.name] + b.size):
                    owners.setdefault(byte, []).append(b)
        for bs in owners.values():
            for x in range(len(bs)):
                for y in range(x + 1, len(bs)):
                    p, q = bs[x], bs[y]
                    op, oq = plan.offsets[p.name], plan.offsets[q.name]
                    if not any(
                        overlap_permitted(a, p, op, q, oq) if (a.a, a.b) == (p.name, q.name) else overlap_permitted(a, q, oq, p, op)
                        for a in aliases
                        if {a.a, a.b} == {p.name, q.name}
                    ):
                        return False
    return True


@settings(max_examples=120, deadline=None)
@given(buffers_and_aliases())
def test_greedy_plans_are_valid_and_above_the_bound(case):
    buffers, aliases = case
    plan = plan_greedy(buffers, aliases, iterations=30)
    verify(buffers, plan, aliases)
    assert brute_force_ok(buffers, plan, aliases)
    assert plan.arena_bytes >= alias_lower_bound(buffers, aliases) == plan.lower_bound_bytes
    assert plan.arena_bytes >= max(b.size for b in buffers)


@settings(max_examples=80, deadline=None)
@given(buffers_and_aliases(with_aliases=False))
def test_greedy_never_worse_than_the_no_reuse_baseline(case):
    buffers, _ = case
    greedy, naive = plan_greedy(buffers, iterations=30), plan_naive(buffers)
    assert lower_bound(buffers) <= greedy.arena_bytes <= naive.arena_bytes
    assert naive.arena_bytes >= sum(b.size for b in buffers)


@settings(max_examples=150, deadline=None)
@given(buffers_and_aliases(), st.data())
def test_verifier_agrees_with_brute_force_on_random_offsets(case, data):
    """Any placement, good or bad: verify raises exactly when two live buffers share a byte
    without a permitting alias (or a buffer is misaligned or outside the arena)."""
    buffers, aliases = case
    offsets = {b.name: data.draw(st.integers(0, 12)) * b.align for b in buffers}
    arena = max(offsets[b.name] + b.size for b in buffers)
    arena = -(-arena // 16) * 16
    plan = Plan(offsets, arena, 0, "random")
    ok = brute_force_ok(buffers, plan, aliases)
    if ok:
        verify(buffers, plan, aliases)
    else:
        with pytest.raises(PlanError):
            verify(buffers, plan, aliases)


def test_alias_lower_bound_counts_shared_bytes_once():
    a = Buffer("a", 100, 0, 1)
    b = Buffer("b", 60, 1, 2)
    assert alias_lower_bound([a, b]) == lower_bound([a, b]) == 160
    assert alias_lower_bound([a, b], [Alias("a", "b", AliasKind.SAME)]) == 100
    assert alias_lower_bound([a, b], [Alias("a", "b", AliasKind.HEAD, 40)]) == 120
    # Two aliases for one pair do not count twice.
    assert alias_lower_bound([a, b], [Alias("a", "b", AliasKind.HEAD, 40), Alias("a", "b", AliasKind.SAME)]) == 100


def test_needed_aliases_keep_only_the_tight_steps():
    """A chain of in-place layers where only the middle step is near the peak: only its alias
    is needed; the plan with it alone reaches the bound where the glued chain drifts."""
    bufs = [
        Buffer("t0", 96, 0, 0),
        Buffer("t1", 96, 0, 1),
        Buffer("t2", 4992, 1, 2),
        Buffer("t3", 4992, 2, 3),
        Buffer("t4", 96, 3, 4),
        Buffer("t5", 96, 4, 4),
    ]
    # Live bytes per step: 192, 5088, 9984, 5088, 192; with every overlap: at most 5088.
    aliases = (
        Alias("t0", "t1", AliasKind.HEAD, 80),
        Alias("t1", "t2", AliasKind.HEAD, 80),
        Alias("t2", "t3", AliasKind.HEAD, 4896),
        Alias("t3", "t4", AliasKind.HEAD, 80),
        Alias("t4", "t5", AliasKind.HEAD, 80),
    )
    kept = needed_aliases(tuple(bufs), aliases)
    assert kept == (Alias("t2", "t3", AliasKind.HEAD, 4896),)
    fake = Buffers(tuple(bufs), aliases, (), Liveness({}, {}))
    plan = plan_buffers(fake)
    verify(bufs, plan, aliases)
    assert plan.arena_bytes <= plan_greedy(bufs, aliases).arena_bytes
    assert plan.arena_bytes == -(-alias_lower_bound(bufs, kept) // 16) * 16


# ---- liveness tables and the poison mode ---------------------------------------------------------


CHAIN = OPS_DIR / "chain_conv_dw_conv_add_mean_fc_softmax.tflite"


def _run(graph, program, runs, cflags):
    gen = driver.Generated(graph, program, codegen.render_model(program, graph))
    with tempfile.TemporaryDirectory(prefix="mcugen-memory-") as tmp:
        exe = driver.compile_host(gen, Path(tmp) / "b", cflags)
        return driver.run_host(exe, gen, runs, Path(tmp) / "io")


def test_live_ranges_follow_the_buffers():
    g = read_tflite(CHAIN)
    p = lower(g, strategy="layerwise")
    assert len(p.live_ranges) == len(p.layers) + 1
    t_in, t_out = p.inputs[0], p.outputs[0]
    assert p.live_ranges[0] == [(t_in.offset, t_in.offset + t_in.nbytes)]
    assert p.live_ranges[-1] == [(t_out.offset, t_out.offset + t_out.nbytes)]
    # After layer 0 (the conv): its output is live (read by the depthwise and the ADD).
    conv_out = p.tensors[p.layers[0].output]
    assert any(lo <= conv_out.offset and conv_out.offset + conv_out.nbytes <= hi for lo, hi in p.live_ranges[1])
    # The generated C carries the table.
    c = codegen.render_model(p, g)[f"{p.name}.c"]
    assert "#ifdef MCUGEN_POISON" in c and f"{p.name}_live_ranges" in c and "MCUGEN_POISON_AT(1);" in c


def test_poison_catches_a_tensor_declared_dead_too_early():
    """Teeth: drop the conv output from the live table after layer 1 (it is still read by the
    ADD at layer 3): only the poisoned build changes the outputs."""
    g = read_tflite(CHAIN)
    p = lower(g, strategy="layerwise")
    conv_out = p.tensors[p.layers[0].output]
    keep = (conv_out.offset, conv_out.offset + conv_out.nbytes)
    damaged = [list(r) for r in p.live_ranges]
    damaged[2] = [
        piece
        for lo, hi in damaged[2]
        for piece in ((lo, min(hi, keep[0])), (max(lo, keep[1]), hi))
        if piece[1] > piece[0]
    ]
    assert damaged[2] != p.live_ranges[2]
    bad = p.__class__(**{**vars(p), "live_ranges": damaged})
    runs = driver.random_inputs(g, 2, 1)
    from mcugen.oracle import oracles_for

    ref = [oracles_for(CHAIN)[0].run(r)[0] for r in runs]
    plain = _run(g, bad, runs, ())
    poisoned = _run(g, bad, runs, POISON)
    assert all(np.array_equal(plain[r][0], ref[r]) for r in range(2))
    assert not all(np.array_equal(poisoned[r][0], ref[r]) for r in range(2))


# ---- plans bit-exact end to end ------------------------------------------------------------------


def _shares_bytes(p) -> bool:
    for layer in p.layers:
        out = p.tensors[layer.output]
        for i in p.schedule.steps[layer.index].reads:
            t = p.tensors[i]
            if max(t.offset, out.offset) < min(t.offset + t.nbytes, out.offset + out.nbytes):
                return True
    return False


OP_ENTRIES = [e for e in op_model_entries() if not e.get("refused")]  # refused: the dynamic-range model and the 16x8 cases mcugen refuses


@pytest.mark.parametrize("entry", OP_ENTRIES, ids=[e["file"] for e in OP_ENTRIES])
def test_op_model_poisoned_plan_bit_exact(entry):
    """Every op model whose plan lets an output share its input's bytes (45 of them),
    poisoned, against the oracles."""
    from mcugen.oracle import oracles_for

    path = OPS_DIR / entry["file"]
    g = read_tflite(path)
    p = lower(g)
    verify(p.buffers, p.plan, p.aliases)
    if not _shares_bytes(p):
        pytest.skip("no output shares bytes with an input in this plan")
    runs = driver.random_inputs(g, 2, 11)
    outs = _run(g, p, runs, POISON)
    oracle = oracles_for(path)[0]
    for r, run in enumerate(runs):
        for got, want in zip(outs[r], oracle.run(run)):
            assert np.array_equal(got, want), f"run {r}"


REAL = real_models()


@pytest.mark.parametrize("name", REAL or ["(none)"])
def test_real_model_fused_plan_poisoned_bit_exact(name):
    if name == "(none)":
        pytest.skip(f"{SHARED_REAL} is absent: no real models")
    from mcugen.oracle import oracles_for

    path = SHARED_REAL / name
    g = read_tflite(path)
    p = lower(g, strategy="fused")
    verify(p.buffers, p.plan, p.aliases)
    runs = driver.random_inputs(g, 1 if "224" in name else 2, 2)
    outs = _run(g, p, runs, POISON)
    oracle = oracles_for(path)[0]
    for r, run in enumerate(runs):
        for got, want in zip(outs[r], oracle.run(run)):
            assert np.array_equal(got, want), f"run {r}"


@pytest.fixture(scope="module")
def small_mobilenet(tmp_path_factory) -> Path:
    """MobileNet v2 alpha 0.35 at 48x48, 10 classes, int8, built by `mcugen model` (~8 s)."""
    return build_mobilenet(tmp_path_factory.mktemp("mnv2"), 48, 10)


def test_mobilenet_v2_plans_bit_exact_and_small(small_mobilenet):
    from mcugen.oracle import oracles_for, tflm_arena_bytes

    g = read_tflite(small_mobilenet)
    tflm = tflm_arena_bytes(small_mobilenet)
    oracle = oracles_for(small_mobilenet)[0]
    runs = driver.random_inputs(g, 2, 9)
    arenas = {}
    for strategy in ("layerwise", "fused"):
        p = lower(g, strategy=strategy)
        verify(p.buffers, p.plan, p.aliases)
        arenas[strategy] = p.arena_bytes
        outs = _run(g, p, runs, POISON)
        for r, run in enumerate(runs):
            assert np.array_equal(outs[r][0], oracle.run(run)[0]), f"{strategy} run {r}"
        if strategy == "fused":
            chains = [l for l in p.layers if l.op == "CHAIN"]
            assert chains and chains[0].comment[0].startswith("Layer 0: CHAIN of operators 0, 1, 2")  # stem + first block
            assert p.arena_bytes <= 1.1 * p.plan.lower_bound_bytes  # greedy, within 10% of the bound
    assert arenas["fused"] < arenas["layerwise"] < tflm
    assert arenas["fused"] <= 0.2 * tflm


def test_unknown_strategy_is_refused():
    g = read_tflite(CHAIN)
    with pytest.raises(McugenError, match="strategy 'tiles'"):
        lower(g, strategy="tiles")


# ---- on the emulated Cortex-M4 -------------------------------------------------------------------


def _have_board_tools() -> bool:
    return all(shutil.which(t) for t in ("arm-none-eabi-gcc", "qemu-system-arm", "make"))


@pytest.mark.skipif(not _have_board_tools(), reason="arm-none-eabi-gcc, make or qemu-system-arm not installed")
def test_mobilenet_v2_on_the_emulated_m4_poisoned(small_mobilenet, tmp_path):
    """Both plans, poisoned, on qemu-mps2-an386: outputs equal the oracle's; the fused plan
    needs less RAM (static RAM + stack high-water mark) and at most 10% more instructions."""
    try:
        from mcugen.bench import bench_elf
        from mcugen.boards import get_board
        from mcugen.firmware import build_firmware
    except ImportError as e:
        pytest.skip(f"firmware support not available: {e}")
    from mcugen.oracle import oracles_for

    g = read_tflite(small_mobilenet)
    board = get_board("qemu-mps2-an386")
    inputs = driver.random_inputs(g, 1, 4)[0]
    want = oracles_for(small_mobilenet)[0].run(inputs)[0]
    measured = {}
    for strategy in ("layerwise", "fused"):
        p = lower(g, strategy=strategy)
        src = tmp_path / strategy / "src"
        codegen.write_files(codegen.render_model(p, g), src)
        fw = build_firmware(src, p.name, board, tmp_path / strategy / "fw", extra_cflags=POISON)
        r = bench_elf(fw.elf, board, [a.tobytes() for a in inputs])
        got = np.frombuffer(r.outputs[0], dtype=np.int8).reshape(want.shape)
        assert np.array_equal(got, want), strategy
        measured[strategy] = (r.data + r.bss + r.stack_bytes, r.instructions, p.arena_bytes)
    (ram_l, instr_l, arena_l), (ram_f, instr_f, arena_f) = measured["layerwise"], measured["fused"]
    assert ram_f < ram_l and ram_f >= arena_f
    # Poisoning costs instructions in both builds alike; the plans' kernels differ by the chains.
    assert instr_f <= 1.10 * instr_l


@pytest.mark.skipif(not shutil.which("arm-none-eabi-gcc"), reason="arm-none-eabi-gcc not installed")
def test_only_the_arena_is_ram_everything_constant_is_flash(small_mobilenet, tmp_path):
    """Compiled for the Cortex-M4, the model library's writable sections hold the arena and
    nothing else; weights, biases, multipliers, shifts and layer parameters are read-only."""
    from mcugen.bench import read_elf

    g = read_tflite(small_mobilenet)
    p = lower(g, strategy="fused")
    files = codegen.render_model(p, g)
    codegen.write_files(files, tmp_path)
    writable = readonly = 0
    for name in codegen.model_sources(files):
        obj = tmp_path / (name + ".o")
        subprocess.run(
            ["arm-none-eabi-gcc", "-std=c99", "-O2", "-mcpu=cortex-m4", "-mthumb", "-c", str(tmp_path / name), "-o", str(obj)],
            check=True, capture_output=True,
        )
        for sec in read_elf(obj).sections:
            if sec.flags & 0x2 and sec.size:  # SHF_ALLOC
                if sec.flags & 0x1:  # SHF_WRITE
                    writable += sec.size
                elif not sec.flags & 0x4:  # not code
                    readonly += sec.size
    assert writable == p.arena_bytes
    assert readonly >= p.weight_bytes


# ---- the plan command -------------------------------------------------------------------------------


def _plan_cli(*args):
    from mcugen import memory_report

    parser = argparse.ArgumentParser()
    memory_report.register(parser.add_subparsers())
    ns = parser.parse_args(["plan", *map(str, args)])
    return ns.func(ns)


def test_plan_command_json_and_png(capsys, tmp_path):
    png = tmp_path / "plan.png"
    assert _plan_cli(CHAIN, "--json", "--png", png, "--strategy", "fused") == 0
    report = json.loads(capsys.readouterr().out)
    for key in ("peak_bytes", "arena_bytes", "scratch_bytes", "tflm_arena_bytes", "ratio_to_tflm", "layers"):
        assert key in report
    assert report["arena_bytes"] >= report["peak_bytes"] > 0
    assert report["ratio_to_tflm"] == pytest.approx(report["arena_bytes"] / report["tflm_arena_bytes"])
    assert report["peak_bytes"] == max(s["live_bytes"] for s in report["layers"])
    from PIL import Image

    with Image.open(png) as im:
        assert im.format == "PNG" and im.size[0] > 400 and im.size[1] > 300


def test_plan_command_text_names_the_peak(capsys):
    assert _plan_cli(CHAIN, "--strategy", "layerwise", "--no-tflm") == 0
    out = capsys.readouterr().out
    assert "<- peak" in out and "arena:" in out and "peak:" in out


def test_plan_command_refuses_a_picture_that_is_not_png(tmp_path):
    with pytest.raises(McugenError, match=r"\.png"):
        _plan_cli(CHAIN, "--no-tflm", "--png", tmp_path / "plan.jpg")
    assert not (tmp_path / "plan.jpg").exists()
