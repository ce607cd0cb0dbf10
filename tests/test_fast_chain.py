"""Specialised fused chains (mcugen.kernels.chain ChainPlan, templates/c/fast/chain.c.j2): which chains
are replaced, bit-exact against the emulator on the host (DSP code through its C99 stand-ins and
the portable target, arena poisoned between layers) for adversarial quantizations, strides, paddings, residuals and a stem
convolution, correct with the output placed at the overlap rule's limit, and on the emulated
Cortex-M4/M7/M55 (MobileNet v2 included) with fewer instructions than the portable chain kernel."""

from __future__ import annotations

import subprocess
import tempfile
from pathlib import Path

import numpy as np
import pytest

from test_fast_kernels import Builder, assert_equal_runs, have_qemu, mobilenet, run_board, run_host  # noqa: F401,I001
from test_fusion import _limit_plan

from mcugen import codegen, driver
from mcugen.emulate import emulate
from mcugen.fusion import find_chains
from mcugen.ir import Activation, Graph, Padding
from mcugen.arena import plan_schedule
from mcugen.lower import emit, lower
from mcugen.passes import fold_pads
from mcugen.kernels import specialize
from mcugen.kernels import chain as chain_module
from mcugen.kernels.chain import ring_column_steps
from mcugen.kernels.depthwise_asm import DW_RECORD
from mcugen.boards import get_board
from mcugen.targets import get_target, target_for_board


def block(seed: int, *, h=9, w=7, cin=8, mid=16, stride=1, residual=True, stem=False, has_a=True,
          pad=Padding.SAME, out_c=None, acts=("NONE", "RELU", "RELU6")) -> Graph:
    """[A: 1x1 expand, or a 3x3 stride-2 stem] -> B: 3x3 depthwise -> C: 1x1 project [-> ADD];
    each activation drawn from `acts`."""
    rng = np.random.default_rng(77 + seed)
    b = Builder(seed)
    x = b.input((1, h, w, cin))
    act = lambda: Activation(rng.choice(list(acts)))  # noqa: E731
    y = x
    if stem:
        y = b.conv(y, mid, (3, 3), (2, 2), (1, 1), Padding.SAME, act(), per_channel=bool(rng.random() < 0.8))
    elif has_a:
        y = b.conv(y, mid, (1, 1), (1, 1), (1, 1), Padding.SAME, act(), per_channel=bool(rng.random() < 0.8),
                   with_bias=bool(rng.random() < 0.8))
    y = b.dw(y, (3, 3), (stride, stride), (1, 1), 1, pad, act(), per_channel=bool(rng.random() < 0.8))
    z = b.conv(y, out_c or cin, (1, 1), (1, 1), (1, 1), Padding.SAME, Activation.NONE, per_channel=bool(rng.random() < 0.8))
    if residual and b.tensors[z].shape == b.tensors[x].shape:
        z = b.add(*((z, x) if rng.random() < 0.5 else (x, z)), act())
    return b.graph([z], name=f"blk{seed}")


def generated(graph: Graph, program, target: str = "armv7em-dsp", flash_tight: bool = False):
    result = specialize(program, get_target(target), flash_tight)
    files = result.merged_files(codegen.render_model(result.program, graph))
    return driver.Generated(graph=graph, program=result.program, files=files), result


def chain_kernels(result) -> list[str]:
    return [name for name in result.choices.values() if name.endswith("_chain")]


def check_host(graph: Graph, program, runs: int = 2, seed: int = 0, target: str = "armv7em-dsp",
               flash_tight: bool = False) -> None:
    gen, result = generated(graph, program, target, flash_tight)
    assert chain_kernels(result), "the chain was not specialised"
    inputs = driver.random_inputs(graph, runs, seed=seed)
    assert_equal_runs(run_host(gen, inputs), [emulate(graph, r).outputs for r in inputs], graph.name)


CASES = {
    "expand_s1_residual": dict(),
    "expand_s2": dict(stride=2, h=10, w=8),
    "expand_s2_odd": dict(stride=2, h=9, w=7, mid=12),
    "expand_valid": dict(pad=Padding.VALID, residual=False, out_c=12),
    "expand_narrow": dict(h=5, w=3, mid=8, cin=4),
    "expand_one_column": dict(h=6, w=1, mid=8, cin=4, residual=False),
    "patch_cin3": dict(cin=3, mid=8, residual=False, out_c=5),
    "stem": dict(stem=True, cin=3, h=13, w=11, mid=16, residual=False, out_c=8),
    "no_a": dict(has_a=False, cin=8, mid=8, h=7, w=6),
    "no_a_s2": dict(has_a=False, cin=12, stride=2, h=8, w=8, residual=False),
    "c_tail_channels": dict(mid=8, out_c=6, residual=False),
}


@pytest.mark.parametrize("target,seed", [("armv7em-dsp", 0), ("armv7em-dsp", 1), ("armv7em-dsp", 2), ("portable", 3)])
@pytest.mark.parametrize("case", sorted(CASES))
def test_chain_bit_exact_on_the_host(case, target, seed):
    graph = block(seed * 31 + len(case), **CASES[case])
    program = lower(graph, "net", strategy="fused", fusion="all")
    assert [l.op for l in program.layers] == ["CHAIN"], [l.op for l in program.layers]
    check_host(graph, program, seed=seed, target=target)


INT8_STAGE = "weights int8, sign-extended as they are read"


@pytest.mark.parametrize("target", ["armv7em-dsp", "portable"])
@pytest.mark.parametrize("case", sorted(CASES))
def test_chain_int8_weights_bit_exact_on_the_host(case, target):
    """flash_tight: stages A and C keep their weights as int8 and unpack them as they read them."""
    graph = block(5 + len(case), **CASES[case])
    program = lower(graph, "net", strategy="fused", fusion="all")
    gen, result = generated(graph, program, target, flash_tight=True)
    plan = next(iter(result.plans.values()))
    generic = [st for st, thin in ((plan.a, plan.a_thin), (plan.c, plan.c_thin or plan.c_narrow))
               if st is not None and thin is None]
    assert all(st.int8_weights for st in generic), case  # (the thin and narrow stages keep their records)
    assert (INT8_STAGE in gen.files["net_layers.c"]) == bool(generic)
    sizes = {c.cname: c.values.nbytes for c in result.program.consts}
    for st in generic:
        assert sizes[st.weights] == st.v.out_c * st.length, "int8: one byte per weight"
    check_host(graph, program, seed=4, target=target, flash_tight=True)


def test_int16_weights_only_where_they_pay(monkeypatch):
    from helpers import fast_forms_rule

    fast_forms_rule(monkeypatch)  # the int16 stem and its triple where they pay
    from mcugen.kernels.base import INSTRUCTIONS_PER_FLASH_BYTE
    from mcugen.kernels.chain import INT8_EXTRA_INSTRUCTIONS, int16_weights_pay

    calls = -(-4 * INSTRUCTIONS_PER_FLASH_BYTE // INT8_EXTRA_INSTRUCTIONS)  # the fewest calls at which int16 pays
    assert int16_weights_pay(calls, False) and not int16_weights_pay(calls - 1, False)
    assert not int16_weights_pay(10**6, True)
    # a chain whose stage C runs on few pixels keeps C's weights int8 by default, A (more pixels) int16
    graph = block(2, h=8, w=8, cin=24, mid=48, stride=2, residual=False, out_c=24)
    gen, result = generated(graph, lower(graph, "net", strategy="fused", fusion="all"))
    plan = next(iter(result.plans.values()))
    assert plan.c.v.out_h * plan.c.v.out_w < calls <= -(-plan.a.v.out_h * plan.a.v.out_w // 2)
    assert plan.c.int8_weights and not plan.a.int8_weights
    check_host(graph, lower(graph, "net", strategy="fused", fusion="all"))


def test_only_supported_chains_are_replaced():
    """Every target replaces the portable chain kernel (MVE: Helium stages; portable: the DSP
    operations in C99), but not for a depthwise whose channels are not a
    multiple of 4, nor a chain closed by a FULLY_CONNECTED; the replaced chain's constants are
    repacked."""
    graph = block(1)
    program = lower(graph, "net", strategy="fused", fusion="all")
    for target in ("portable", "mve"):
        _, result = generated(graph, program, target)
        assert chain_kernels(result) == ["net_l0_chain"]
    gen, result = generated(graph, program)
    assert chain_kernels(result) == ["net_l0_chain"]
    layer = result.program.layers[0]
    assert layer.kernel == "net_l0_chain" and len(layer.args) == 3
    assert not any(c.cname.startswith("net_op") for c in result.program.consts if c.cname.endswith("weights"))
    plan = next(iter(result.plans.values()))
    if plan.ring_b is None:
        assert result.program.arena_bytes == program.arena_bytes, "the chain needs no scratch beyond the plan's"
    else:  # planned without the schedule's extra scratch: the ring goes after the plan (see test_ring_scratch_...)
        assert result.program.arena_bytes == -(-program.arena_bytes // 16) * 16 + plan.scratch_bytes()
    odd = block(2, mid=10)
    _, result = generated(odd, lower(odd, "net", strategy="fused", fusion="all"))
    assert not chain_kernels(result)
    b = Builder(3)
    x = b.input((1, 6, 5, 8))
    y = b.conv(b.dw(b.conv(x, 8, (1, 1), (1, 1), (1, 1), Padding.SAME, Activation.RELU), (3, 3), (1, 1), (1, 1), 1,
                    Padding.SAME, Activation.RELU), 8, (1, 1), (1, 1), (1, 1), Padding.SAME, Activation.NONE)
    fc_graph = b.graph([b.fc(y, 3, per_channel=False)], name="fc")
    fused = lower(fc_graph, "net", strategy="fused", fusion="all")
    assert any(l.op == "CHAIN" for l in fused.layers)
    _, result = generated(fc_graph, fused)
    assert not chain_kernels(result)
    assert any(l.kernel == "mcugen_chain_s8" for l in result.program.layers)


@pytest.mark.parametrize("stride,residual", [(1, True), (1, False), (2, False)])
def test_output_at_the_overlap_limit(stride, residual):
    """The chain's output placed exactly as far into its input as the planner's rule allows."""
    graph = block(5 + stride, stride=stride, residual=residual, h=10, w=7, cin=8, mid=12)
    folded, pads = fold_pads(graph)
    planned = plan_schedule(folded, pads, find_chains(folded, pads))
    assert len(planned.schedule.steps) == 1
    program = emit(_limit_plan(planned, 0), "net", graph.name, "fused")
    check_host(graph, program, runs=3, seed=stride)


def test_stem_chain_at_the_overlap_limit():
    graph = block(9, stem=True, cin=3, h=13, w=9, mid=8, residual=False, out_c=4)
    folded, pads = fold_pads(graph)
    planned = plan_schedule(folded, pads, find_chains(folded, pads))
    program = emit(_limit_plan(planned, 0), "net", graph.name, "fused")
    check_host(graph, program, runs=3, seed=4)


# Stage B on the channel-major ring (ChainPlan.ring_b: DSP, a stage A, B's requantization short
# and clamped to int8): widths with whole blocks of 4 outputs and tails of 1-3, both strides,
# SAME and VALID, the stem, a residual
RING_CASES = {
    "s1_residual": dict(h=6, w=9, mid=12),
    "s1_blocks": dict(h=5, w=8, mid=8, cin=4, residual=False, out_c=12),
    "s1_tail3": dict(h=4, w=11, mid=16, cin=12),
    "s1_one_column": dict(h=6, w=1, mid=8, cin=4, residual=False),
    "s2_tail2": dict(stride=2, h=10, w=12, mid=12, residual=False),
    "s2_blocks": dict(stride=2, h=9, w=16, mid=8, residual=False),
    "s2_tail3": dict(stride=2, h=9, w=13, mid=12),
    "valid_s1": dict(pad=Padding.VALID, residual=False, out_c=12, w=10),
    "valid_s2": dict(pad=Padding.VALID, stride=2, residual=False, h=11, w=11),
    "stem": dict(stem=True, cin=3, h=13, w=19, mid=16, residual=False, out_c=8),
    "stem_tail2": dict(stem=True, cin=3, h=17, w=15, mid=8, residual=False, out_c=4),
    "stem_wide": dict(stem=True, cin=3, h=5, w=270, mid=8, residual=False, out_c=4),  # ring rows > 127 bytes
    "patch_cin3": dict(cin=3, mid=8, residual=False, out_c=5, w=6),
    "s1_relu_clamp": dict(h=6, w=10, mid=12, acts=("RELU", "RELU6")),
    "no_a_residual": dict(has_a=False, cin=8, mid=8, h=7, w=9),
    "no_a_tail1": dict(has_a=False, cin=12, mid=12, h=5, w=13, residual=False, out_c=8),
    "s2_relu_clamp": dict(stride=2, h=9, w=11, mid=8, residual=False, acts=("RELU", "RELU6")),
}


def gen_files(graph: Graph, program) -> dict:
    """The generated files of `program` for the DSP target."""
    return generated(graph, program)[0].files


def ring_block(case: str) -> Graph:
    """The first of a few seeded graphs of `case` whose chain takes the ring (the quantization
    is drawn adversarially: not every draw proves the short requantization)."""
    kw = dict(acts=("NONE",), **RING_CASES[case]) if "acts" not in RING_CASES[case] else RING_CASES[case]
    for seed in range(24):
        graph = block(100 + seed, **kw)
        _, result = generated(graph, lower(graph, "net", strategy="fused", fusion="all"))
        plan = next(iter(result.plans.values()))
        if plan.ring_b is not None and ("clamp" not in case or not plan.b.rq.clamp_is_int8):
            return graph
    raise AssertionError(f"{case}: no draw takes stage B on the ring")


@pytest.fixture(params=[True, False], ids=["b-compact", "b-records-in-flash"])
def b_compact(request, monkeypatch):
    """Both places of stage B's records: rebuilt in scratch from the int8 form, or in flash."""
    monkeypatch.setattr(chain_module, "CHAIN_B_COMPACT", request.param)
    return request.param


@pytest.mark.parametrize("case", sorted(RING_CASES))
def test_ring_chain_bit_exact_on_the_host(case, b_compact):
    """The ring's C99 stand-in (the assembly's twin) and stage A's strided stores."""
    graph = ring_block(case)
    check_host(graph, lower(graph, "net", strategy="fused", fusion="all"), runs=2, seed=7)


def test_ring_only_where_it_applies(monkeypatch):
    """The ring takes a DSP chain with a stage A, or without one at stride 1 (the input rows
    transposed into it); without A at stride 2, or on the portable and MVE targets, stage B
    stays pixel by pixel; the ring's scratch is what RingB states."""
    from helpers import fast_forms_rule

    fast_forms_rule(monkeypatch)  # the int16 stem and its triple where they pay
    graph = ring_block("s1_residual")
    program = lower(graph, "net", strategy="fused", fusion="all")
    _, result = generated(graph, program)
    plan = next(iter(result.plans.values()))
    assert plan.ring_b is not None and plan.a_thin is not None and plan.a_thin.out_stride == plan.ring_b.plane_w
    assert plan.a_row_asm and plan.a_row_steps == ring_column_steps(plan.b.v.pad_l)  # the row in one loop
    assert plan.ring_b.compact, "by default stage B's records are rebuilt from the int8 form"
    # the invoke comment says what this kernel does and holds, not the portable kernel's ring
    text = next(v for k, v in gen_files(graph, program).items() if k == "net.c")
    c, pw = plan.b.v.out_c, plan.ring_b.plane_w
    assert f"ring: 3 slots x {c} channels x {pw} bytes = {3 * c * pw} bytes of B's input" in text
    assert f"then B's records rebuilt from flash ({40 * c} bytes)" in text and "one pixel at a time" not in text
    assert "blocks of 4 output pixels, every channel per step" in text
    assert [s.size for s in result.scratch] == [plan.scratch_bytes()]
    assert plan.scratch_bytes() >= plan.ring_b.scratch_bytes(plan.b.v) + 4 * DW_RECORD * plan.b.v.out_c
    for target in ("portable", "mve"):
        _, result = generated(graph, program, target)
        assert next(iter(result.plans.values())).ring_b is None
    for case in ("stem", "stem_tail2", "stem_wide"):  # stage A on patches: three pixels per step
        graph = ring_block(case)
        _, result = generated(graph, lower(graph, "net", strategy="fused", fusion="all"))
        plan = next(iter(result.plans.values()))
        assert plan.a_triple, case
        # in one assembly loop where its requantization is short: with the sign correction (no
        # activation) and without it (ReLU), the clamp of a narrower activation, ring rows of any width
        assert bool(plan.a3_asm) == plan.a.rq.fast, case
        assert any(x.startswith(("movlt", "mvnlt", "movgt", "mvngt")) for x in plan.a3_asm) == (not plan.a.rq.clamp_is_int8), case
        if plan.a3_asm:
            assert any("asr #31" in x for x in plan.a3_asm) == (not plan.a.rq.sign_free), case
            assert any(x.startswith("strb r0, [r6], #") for x in plan.a3_asm) == (2 * plan.ring_b.plane_w <= 255), case
    for seed in range(6):
        graph = block(seed, acts=("NONE",), **CASES["no_a_s2"])
        _, result = generated(graph, lower(graph, "net", strategy="fused", fusion="all"))
        assert next(iter(result.plans.values())).ring_b is None


def test_ring_scratch_is_planned_with_the_chain():
    """The schedule plans the scratch the ring states with the chain (keyed by its operators),
    so the kernel pass adds no region after the plan: the arena is the plan's."""
    from mcugen.options import CompileOptions
    from mcugen.schedule import choose_schedule

    graph = ring_block("s2_tail2")
    folded, pads = fold_pads(graph)
    opts = CompileOptions(board="qemu-mps2-an386", strategy="fused", fuse_all=True)
    choice = choose_schedule(folded, pads, "net", graph.name, opts)
    assert len(choice.chains) == 1 and tuple(choice.chains[0].ops) in choice.extra_scratch
    planned = plan_schedule(folded, pads, choice.chains, choice.extra_scratch)
    program = emit(planned, "net", graph.name, "fused")
    gen, result = generated(graph, program)
    plan = next(iter(result.plans.values()))
    assert plan.ring_b is not None
    assert result.program.arena_bytes == program.arena_bytes
    assert plan.scratch_offset == program.plan.offsets["scratch0"]
    inputs = driver.random_inputs(graph, 2, seed=3)
    assert_equal_runs(run_host(gen, inputs), [emulate(graph, r).outputs for r in inputs], graph.name)


@pytest.mark.skipif(not have_qemu(), reason="needs qemu-system-arm and arm-none-eabi-gcc (scripts/setup.sh)")
def test_ring_chains_bit_exact_on_the_m4(b_compact):
    """The ring's assembly (every block and tail width, both strides) on the emulated M4."""
    for case in sorted(RING_CASES):
        graph = ring_block(case)
        gen, result = generated(graph, lower(graph, "net", strategy="fused", fusion="all"))
        plan = next(iter(result.plans.values()))
        assert plan.ring_b is not None and plan.ring_b.compact == b_compact
        inputs = driver.random_inputs(graph, 2, seed=8)
        assert_equal_runs(run_board(gen, "qemu-mps2-an386", inputs), [emulate(graph, r).outputs for r in inputs],
                          f"{case} on the M4")


@pytest.mark.skipif(not have_qemu(), reason="needs qemu-system-arm and arm-none-eabi-gcc (scripts/setup.sh)")
def test_stem_triple_assembly_with_relu_on_the_m4(monkeypatch):
    """Stage A's three-pixel assembly (triple_asm) after a ReLU: no sign correction, with the
    clamp of an activation narrower than int8 (both bounds) and without it, on the emulated M4."""
    from helpers import fast_forms_rule

    fast_forms_rule(monkeypatch)  # the int16 stem and its triple where they pay
    seen = set()
    for seed, clamp in ((105, True), (110, True), (125, False)):
        graph = block(seed, stem=True, cin=3, h=15, w=21, mid=12, residual=False, out_c=4, acts=("RELU", "RELU6"))
        gen, result = generated(graph, lower(graph, "net", strategy="fused", fusion="all"))
        plan = next(iter(result.plans.values()))
        rq = plan.a.rq
        assert plan.a3_asm and rq.sign_free and rq.clamp_is_int8 == (not clamp) and rq.act_max - rq.act_min > 5, seed
        assert not any("asr #31" in x for x in plan.a3_asm)
        seen.update(x.split()[0] for x in plan.a3_asm if x.startswith(("movlt", "mvnlt", "movgt", "mvngt")))
        inputs = driver.random_inputs(graph, 2, seed=4)
        assert_equal_runs(run_board(gen, "qemu-mps2-an386", inputs), [emulate(graph, r).outputs for r in inputs],
                          f"seed {seed} on the M4")
    assert {"mvnlt", "movgt"} <= seen or {"movlt", "movgt"} <= seen, seen


@pytest.mark.skipif(not have_qemu(), reason="needs qemu-system-arm and arm-none-eabi-gcc (scripts/setup.sh)")
@pytest.mark.parametrize("board", ["qemu-mps2-an386", "qemu-mps2-an500", "qemu-mps3-an547"])
def test_chains_bit_exact_on_the_emulated_cores(board):
    for case in ("expand_s1_residual", "expand_s2_odd", "stem", "no_a", "c_tail_channels", "patch_cin3"):
        graph = block(3, **CASES[case])
        target = target_for_board(get_board(board)).name
        gen, result = generated(graph, lower(graph, "net", strategy="fused", fusion="all"), target)
        assert chain_kernels(result)
        inputs = driver.random_inputs(graph, 2, seed=6)
        assert_equal_runs(run_board(gen, board, inputs), [emulate(graph, r).outputs for r in inputs], f"{case} on {board}")


@pytest.mark.skipif(not have_qemu(), reason="needs qemu-system-arm and arm-none-eabi-gcc (scripts/setup.sh)")
def test_chain_int8_weights_bit_exact_on_the_m4():
    """The int8 stage weights on the emulated M4: stage A's two-pixel assembly (and the C path
    when A reads a patch), the C path's four channels per step, its loop over groups and its tail
    channels."""
    cases = [("expand_s1_residual", {}), ("expand_s2_odd", {}), ("c_tail_channels", {}), ("patch_cin3", {}),
             ("wide", dict(h=6, w=5, cin=24, mid=52, out_c=23, residual=False)),  # A: 6 groups, C: 13 groups
             ("odd_width", dict(h=5, w=5, cin=20, mid=20, out_c=20))]
    for n, (case, extra) in enumerate(cases):
        graph = block(11 + n, **{**CASES.get(case, {}), **extra})
        gen, result = generated(graph, lower(graph, "net", strategy="fused", fusion="all"), "armv7em-dsp", flash_tight=True)
        assert chain_kernels(result)
        assert INT8_STAGE in gen.files["net_layers.c"], case
        inputs = driver.random_inputs(graph, 2, seed=8)
        want = [emulate(graph, r).outputs for r in inputs]
        assert_equal_runs(run_board(gen, "qemu-mps2-an386", inputs), want, f"{case} (int8 stage weights) on the M4")


def thin_chain(seed: int, stride: int, h: int, w: int, cin: int, mid: int, out_c: int, residual: bool = False) -> Graph:
    """1x1 expand -> 3x3 depthwise -> 1x1 project, no activations and output scales that keep
    every channel in the short requantization: stages A and C take the thin DSP kernel."""
    b = Builder(seed)
    x = b.input((1, h, w, cin))
    near = lambda t: b.act_quant(float(b.tensors[t].quant.s * b.rng.uniform(0.5, 2.0)))  # noqa: E731
    y = b.conv(x, mid, (1, 1), (1, 1), (1, 1), Padding.SAME, Activation.NONE, q=near(x))
    y = b.dw(y, (3, 3), (stride, stride), (1, 1), 1, Padding.SAME, Activation.NONE, q=near(y))
    z = b.conv(y, out_c, (1, 1), (1, 1), (1, 1), Padding.SAME, Activation.NONE, q=near(y))
    if residual:
        z = b.add(z, x, Activation.NONE)
    return b.graph([z], name=f"thinchain{seed}")


def test_a_chain_without_a_specialised_kernel_is_named_with_its_cost(tmp_path, capsys):
    """A fused chain the kernel pass cannot specialise (ResNet-8's conv -> conv -> ADD) runs the
    portable chain kernel: with --strategy fused, `generate` says so on stderr, with the arena
    layer by layer; chains it does specialise (MobileNet's), the layerwise plan and the default
    (auto, which leaves such chains layer by layer) say nothing."""
    from helpers import OPS_DIR, SHARED_REAL, real_model
    from mcugen.cli import main as cli_main

    if not SHARED_REAL.is_dir():
        pytest.skip(f"{SHARED_REAL} is absent")
    resnet = real_model("mlperf_tiny_ic_resnet_quant.tflite")
    assert cli_main(["generate", str(resnet), "-o", str(tmp_path / "a"), "--kernels", "mcugen", "--target", "armv7em-dsp",
                     "--strategy", "fused"]) == 0
    err = capsys.readouterr().err.strip().splitlines()
    assert err and all(line.startswith("note: layer ") and "runs the portable chain kernel" in line
                       and "--strategy layerwise avoids it with an arena of 35,088 bytes instead of 26,112" in line
                       for line in err), err
    gen = driver.build(resnet, strategy="layerwise", kernels="mcugen", target="armv7em-dsp")
    assert gen.notes == () and gen.program.arena_bytes == 35_088
    assert driver.build(resnet, kernels="mcugen", target="armv7em-dsp").notes == ()
    chained = driver.build(OPS_DIR / "chain_conv_dw_conv_add_mean_fc_softmax.tflite", kernels="mcugen", target="armv7em-dsp")
    assert any(l.op == "CHAIN" for l in chained.program.layers) and chained.notes == ()


@pytest.mark.skipif(not have_qemu(), reason="needs qemu-system-arm and arm-none-eabi-gcc (scripts/setup.sh)")
@pytest.mark.parametrize("compact", [True, False], ids=["records-rebuilt", "records-in-flash"])
def test_thin_chain_stages_bit_exact_on_the_m4(compact, monkeypatch):
    # stage C with few output channels takes the narrow kernel; with a residual ADD both write a
    # pixel on the stack first; stage A's and C's records compact in flash and rebuilt in the
    # chain's scratch (mcugen_thin_records, mcugen_narrow_records) or kept as they are read
    monkeypatch.setattr(chain_module, "CHAIN_RECORDS_COMPACT", compact)
    cases = [(1, 7, 6, 8, 16, 8, False), (2, 8, 9, 4, 12, 16, False), (1, 5, 3, 16, 8, 4, False),
             (1, 4, 3, 16, 100, 8, False), (2, 5, 6, 8, 40, 16, False), (1, 5, 4, 8, 48, 8, False),
             (2, 6, 5, 8, 24, 11, False), (1, 6, 5, 8, 48, 8, True), (1, 5, 7, 8, 16, 8, True)]
    for seed, (stride, h, w, cin, mid, out_c, residual) in enumerate(cases):
        graph = thin_chain(seed, stride, h, w, cin, mid, out_c, residual)
        program = lower(graph, "net", strategy="fused", fusion="all")
        gen, result = generated(graph, program, "armv7em-dsp")
        assert chain_kernels(result)
        text = gen.files["net_layers.c"]
        assert "Row `row` of stage A into `slot`: 1x1 on" in text or "A row of stage A into a ring slot: 1x1 on" in text, \
            "thin stage A not taken"
        assert ("its inputs in registers, every output channel in line" in text) == (mid <= 16), "thin stage C"
        assert ("channels per pass accumulating in registers" in text) == (mid > 16 and mid * out_c <= 1024)
        assert ("then the ADD with the residual, element by element" in text) == residual
        plan = next(iter(result.plans.values()))
        if plan.ring_b is not None:
            a_inline = plan.a_thin is not None and not plan.a_thin.looped  # looped: its own compact form
            c_inline = plan.c_narrow is not None or (plan.c_thin is not None and not plan.c_thin.looped)
            assert (plan.a_records is not None) == (compact and a_inline)
            assert (plan.c_records is not None) == (compact and c_inline)
            assert ("mcugen_thin_records(" in text) == (compact and (a_inline or plan.c_thin is not None))
        inputs = driver.random_inputs(graph, 2, seed=6)
        want = [emulate(graph, r).outputs for r in inputs]
        assert_equal_runs(run_host(gen, inputs), want, f"{graph.name} on the host")
        assert_equal_runs(run_board(gen, "qemu-mps2-an386", inputs), want, f"{graph.name} on the M4")


@pytest.mark.skipif(not have_qemu(), reason="needs qemu-system-arm and arm-none-eabi-gcc (scripts/setup.sh)")
@pytest.mark.parametrize("board", ["qemu-mps2-an386", "qemu-mps3-an547"])
def test_mobilenet_v2_fused_bit_exact_and_fast(mobilenet, board):
    """MobileNet v2's fused chains on the M4 and M55: bit-exact with tflite-runtime, and the
    specialised chains take under 3.5 instructions per MAC (the portable chain kernel about 20)."""
    from mcugen.oracle import oracles_for
    from mcugen.validate_board import measure

    gen = driver.build(mobilenet, strategy="fused", kernels="mcugen", target=target_for_board(get_board(board)).name)
    graph = gen.graph
    assert any(l.kernel.endswith("_chain") for l in gen.program.layers if l.kernel)
    inputs = driver.random_inputs(graph, 1, seed=9)
    oracle = oracles_for(mobilenet)[0]
    assert_equal_runs(run_board(gen, board, inputs), [oracle.run(r) for r in inputs], f"fused MobileNet v2 on {board}")
    m = measure(mobilenet, board, strategy="fused", kernels="mcugen")
    chains = [(l.index, m.layers[l.index], l.macs) for l in gen.program.layers if l.op == "CHAIN"]
    assert chains
    for index, instructions, macs in chains:
        assert instructions < 3.5 * macs, (index, instructions, macs)


@pytest.mark.skipif(subprocess.run(["which", "arm-none-eabi-gcc"], capture_output=True).returncode != 0,
                    reason="needs arm-none-eabi-gcc (scripts/setup.sh)")
@pytest.mark.parametrize("flags", [("-O0",), ("-O2", "-fno-omit-frame-pointer"), ("-Os",), ("-O3",)])
def test_chain_code_compiles_at_any_optimization_level(flags):
    for graph in (block(4, stem=True, cin=3, h=13, w=11, mid=16, residual=False, out_c=8), thin_chain(0, 1, 7, 6, 8, 16, 8),
                  block(12, h=6, w=5, cin=24, mid=52, out_c=23, residual=False)):
        _compile_chain_at(graph, flags)


def _compile_chain_at(graph: Graph, flags) -> None:
    for target, cpu, tight in (("armv7em-dsp", ("-mcpu=cortex-m4", "-mfpu=fpv4-sp-d16"), False),
                               ("armv7em-dsp", ("-mcpu=cortex-m4", "-mfpu=fpv4-sp-d16"), True),
                               ("mve", ("-mcpu=cortex-m55",), False)):
        gen, _ = generated(graph, lower(graph, "net", strategy="fused", fusion="all"), target, flash_tight=tight)
        with tempfile.TemporaryDirectory() as tmp:
            folder = Path(tmp)
            codegen.write_files(gen.files, folder)
            src = folder / "net_layers.c"
            done = subprocess.run(
                ["arm-none-eabi-gcc", "-std=c99", "-Wall", "-Wextra", "-Werror", "-mthumb", "-mfloat-abi=hard",
                 *cpu, *flags, "-c", str(src), "-o", str(folder / "l.o")],
                capture_output=True, text=True,
            )
            assert done.returncode == 0, f"{target} {flags}: {done.stderr[:600]}"
