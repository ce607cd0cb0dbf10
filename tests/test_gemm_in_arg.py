"""1x1 GEMM layers that differ only in their input channels share one copy of their code, the
channels an argument (GemmConvPlan.in_arg, conv.share_gemm_code): which layers share, the
assembly's frame, bit-exact on the host (C path) and the emulated M4."""

from __future__ import annotations

import re

import pytest

from test_fast_kernels import Builder, exact_on_host_and_m4, have_qemu, specialised  # noqa: I001

from mcugen.ir import Activation, Padding
from mcugen.kernels import conv as conv_module
from mcugen.kernels.gemm_asm import FRAME, dot_registers, gemm_dot_asm
from mcugen.kernels.requant import plan_requant

import numpy as np

# pairs of (h, w, out_c, activation, output zero point) x two input channel counts: blocks of 4
# with the group loop, blocks of 5 and a tail of 4, inputs doubled (many output channels), the
# sign correction (no activation) or not (ReLU at -128)
PAIRS = [
    ((6, 6, 24, Activation.NONE, 3), (96, 144)),
    ((3, 3, 56, Activation.NONE, -5), (192, 336)),
    ((3, 3, 96, Activation.RELU, -128), (40, 56)),
]


def shared_calls(text: str, kind: str, params: str, nargs: int) -> dict[str, list[tuple[int, ...]]]:
    """The layers whose `<kind>_run` (its parameters ending in `params`) other layers call, and
    per such owner the sorted trailing integer arguments of every call to it."""
    owners = re.findall(rf"static void (net_l\d+_{kind})_run\(.*{params}\)", text)
    args = ", ".join([r"(\d+)"] * nargs)
    out = {}
    for owner in owners:
        calls = re.findall(rf"{owner}_run\(input, output, scratch, \w+, \w+, {args}\);", text)
        out[owner] = sorted(tuple(int(x) for x in (c if isinstance(c, tuple) else (c,))) for c in calls)
    return out


def in_arg_graph(seed: int):
    b = Builder(seed)
    outs = []
    for (h, w, cout, act, zp), cins in PAIRS:
        for cin in cins:
            x = b.input((1, h, w, cin))
            q = b.act_quant(float(b.tensors[x].quant.s) * 1.3, zp)
            outs.append(b.conv(x, cout, (1, 1), (1, 1), (1, 1), Padding.SAME, act, q=q, per_channel=True))
    return b.graph(outs, name=f"inarg{seed}")


def test_the_frame_carries_the_row_length():
    """With len_arg the channel loop pushes r5 as a sixth frame word, reads the row's end from it
    instead of an immediate, and pops the larger frame; r5 is then an operand, not a clobber."""
    rq = plan_requant(np.full(8, 1000), np.full(8, 2**30), np.full(8, -8), 0, -128, 127)
    plain = gemm_dot_asm(4, 24, 4, False, 24, True, 4, rq)
    lines = gemm_dot_asm(4, 24, 4, False, 24, True, 4, rq, len_arg=True)
    assert "push {r0, r1, r2, r3, r4, r5}" in lines and f"ldr lr, [sp, #{4 * len(FRAME)}]" in lines
    assert "add lr, r12, lr" in lines and "add lr, r12, #96" not in lines and "add lr, r12, #96" in plain
    assert lines[-2] == f"add sp, sp, #{4 * (len(FRAME) + 1)}" and plain[-2] == f"add sp, sp, #{4 * len(FRAME)}"
    assert len(lines) == len(plain) + 1
    assert "r5" in dot_registers(False)[1] and "r5" not in dot_registers(False, True)[1]


@pytest.mark.skipif(not have_qemu(), reason="needs qemu-system-arm and arm-none-eabi-gcc (scripts/setup.sh)")
def test_layers_differing_in_input_channels_share_and_stay_exact_on_the_m4():
    gen, _ = specialised(in_arg_graph(3), "armv7em-dsp")
    text = gen.files["net_layers.c"]
    owners = shared_calls(text, "conv", "int32_t in_c", 1)
    assert list(owners.values()) == [sorted((c,) for c in cins) for _, cins in PAIRS], owners
    assert "add lr, r12, lr" in text
    exact_on_host_and_m4(gen, 2, 5, "1x1 layers sharing code, input channels an argument")


def test_without_the_argument_each_row_length_has_its_code(monkeypatch):
    monkeypatch.setattr(conv_module, "SHARE_IN_ARG", False)
    gen, _ = specialised(in_arg_graph(3), "armv7em-dsp")
    text = gen.files["net_layers.c"]
    assert "int32_t in_c" not in text and "add lr, r12, lr" not in text


# groups of (h, w, activation, output zero point) x (in_c, out_c) that differ in their output
# channels (and inputs): blocks of 4 with the group loop; blocks of 5 and a tail of 4, the output
# strides past what one register offset shifted covers
OUT_GROUPS = [
    ((6, 6, Activation.NONE, 3), ((96, 24), (144, 32), (144, 24))),
    ((3, 3, Activation.NONE, -5), ((192, 56), (336, 112))),
]


def out_arg_graph(seed: int):
    b = Builder(seed)
    outs = []
    for (h, w, act, zp), shapes in OUT_GROUPS:
        for cin, cout in shapes:
            x = b.input((1, h, w, cin))
            q = b.act_quant(float(b.tensors[x].quant.s) * 1.3, zp)
            outs.append(b.conv(x, cout, (1, 1), (1, 1), (1, 1), Padding.SAME, act, q=q, per_channel=True))
    return b.graph(outs, name=f"outarg{seed}")


def test_the_frame_carries_the_output_width():
    """With out_arg a seventh frame word (r6) holds the output channels: the stores take register
    offsets from it (three instructions more per channel), and r6 is an operand, not a clobber."""
    rq = plan_requant(np.full(8, 1000), np.full(8, 2**30), np.full(8, -8), 0, -128, 127)
    ins = gemm_dot_asm(5, 24, 4, False, 56, False, 2, rq, len_arg=True)
    both = gemm_dot_asm(5, 24, 4, False, 56, False, 2, rq, len_arg=True, out_arg=True)
    assert "push {r0, r1, r2, r3, r4, r5, r6}" in both and both[-2] == f"add sp, sp, #{4 * (len(FRAME) + 2)}"
    assert f"ldr r10, [sp, #{4 * (len(FRAME) + 1)}]" in both and "strb r4, [r8, r10, lsl #2]" in both
    assert not any("#55" in ln or "#111" in ln for ln in both) and "strb r1, [r8, #55]" in ins
    assert len(both) == len(ins) + 3
    assert "r6" in dot_registers(False, True)[1] and "r6" not in dot_registers(False, True, True)[1]


@pytest.mark.skipif(not have_qemu(), reason="needs qemu-system-arm and arm-none-eabi-gcc (scripts/setup.sh)")
def test_layers_differing_in_output_channels_share_and_stay_exact_on_the_m4():
    gen, _ = specialised(out_arg_graph(4), "armv7em-dsp")
    text = gen.files["net_layers.c"]
    owners = shared_calls(text, "conv", "int32_t in_c, int32_t out_c", 2)
    assert list(owners.values()) == [sorted(shapes) for _, shapes in OUT_GROUPS], owners
    exact_on_host_and_m4(gen, 2, 6, "1x1 layers sharing code, input and output channels arguments")


def test_without_the_output_argument_each_width_has_its_code(monkeypatch):
    monkeypatch.setattr(conv_module, "SHARE_OUT_ARG", False)
    gen, _ = specialised(out_arg_graph(4), "armv7em-dsp")
    text = gen.files["net_layers.c"]
    assert "int32_t out_c" not in text and "int32_t in_c" in text
