"""3x3 depthwise layers (DSP, int8 form) that differ only in their channel count share one copy of
their code, the count an argument (DepthwisePlan.c_arg, depthwise.share_dw_code): the stores'
assembly, which layers share, bit-exact on the host (C path) and the emulated M4."""

from __future__ import annotations

import re

import pytest

from test_fast_kernels import Builder, exact_on_host_and_m4, have_qemu, specialised  # noqa: I001
from test_gemm_in_arg import shared_calls

from mcugen.ir import Activation, Padding
from mcugen.kernels import depthwise as dw_module
from mcugen.kernels.depthwise_asm import c_arg_stores, dw_asm_cases, dw_asm_rows, dw_c_arg_fits

# groups of (h, w, stride, padding, output zero point) x channel counts: the six-output kernel at
# stride 1 (one step per row, or only the tail), the four-output one at stride 2, the rows
# kernel (3 wide) past 255 channels; zero point -128 (no activation): the sign-free requantization
GROUPS = [
    ((6, 6, 1, Padding.SAME, 3), (144, 192, 8)),
    ((5, 5, 1, Padding.SAME, -128), (240, 192)),
    ((8, 8, 2, Padding.SAME, 7), (48, 96)),
    ((3, 3, 1, Padding.SAME, -5), (480, 384)),
]


def c_arg_graph(seed: int):
    b = Builder(seed)
    outs = []
    for (h, w, s, pad, zp), channels in GROUPS:
        q_in = None
        for c in channels:
            # one input quantization per group (its zero point fills the ring's border in the code)
            x = b.input((1, h, w, c)) if q_in is None else b.tensor((1, h, w, c), q=q_in)
            if q_in is None:
                q_in = b.tensors[x].quant
            else:
                b.inputs.append(x)
            scale = float(b.tensors[x].quant.s * b.rng.uniform(0.5, 2.0))
            outs.append(b.dw(x, (3, 3), (s, s), (1, 1), 1, pad, Activation.NONE, q=b.act_quant(scale, zp)))
    return b.graph(outs, name=f"dwc{seed}")


def test_the_stores_take_register_offsets():
    """With the channel count C in %[end]: output j at %[o] + j C (C, 2C, 4C from %[o]; 3C and 5C
    from the temporary %[o] + C), then %[o] one byte on; no store or rewind names C as an
    immediate; the row kernels take it only where %[end] has no step loop to end."""
    assert c_arg_stores(3, "r7") == ["strb %[a0], [%[o]]", "strb %[a1], [%[o], %[end]]",
                                     "strb %[a2], [%[o], %[end], lsl #1]", "add %[o], %[o], #1"]
    six = c_arg_stores(6, "r7")
    assert six[0] == "add r7, %[o], %[end]" and "strb %[a5], [r7, %[end], lsl #2]" in six and len(six) == 8
    for case in dw_asm_cases(6, 144, 10, 1, True, c_arg=True):
        assert not any("#144" in ln or "#863" in ln for ln in case) and "strb %[a3], [r7, %[end], lsl #1]" in case
        assert "cmp %[p], %[end]" not in case
    plain = dw_asm_cases(6, 144, 10, 1, True)
    assert "strb %[a0], [%[o]], #144" in plain[0] and "sub %[o], %[o], #863" in plain[0]
    rows = dw_asm_rows(3, 480, 6, False, c_arg=True)
    assert "strb %[a2], [%[o], %[end], lsl #1]" in rows and not any("#480" in ln for ln in rows)
    assert dw_c_arg_fits(6, 1, False) and dw_c_arg_fits(5, 1, False) and not dw_c_arg_fits(12, 1, False)
    assert dw_c_arg_fits(4, 2, False) and not dw_c_arg_fits(6, 2, False)
    assert dw_c_arg_fits(3, 1, True) and not dw_c_arg_fits(6, 1, True)


@pytest.mark.skipif(not have_qemu(), reason="needs qemu-system-arm and arm-none-eabi-gcc (scripts/setup.sh)")
@pytest.mark.parametrize("cases", [True, False], ids=["six-output-cases", "rows"])
def test_layers_differing_in_channels_share_and_stay_exact_on_the_m4(cases, monkeypatch):
    """Every group on the ring-case kernel (six outputs per step at stride 1, four at stride 2),
    or on the rows kernel where it is taken (the 3-wide group; the others keep their own code)."""
    monkeypatch.setattr(dw_module, "SHARE_C_ARG", True)
    monkeypatch.setattr(dw_module, "DW_CASES", cases)
    gen, _ = specialised(c_arg_graph(2), "armv7em-dsp")
    text = gen.files["net_layers.c"]
    owners = shared_calls(text, "dw", "int32_t C", 1)
    groups = GROUPS if cases else GROUPS[3:]
    assert list(owners.values()) == [sorted((c,) for c in channels) for _, channels in groups], owners
    assert ("[%[o], %[end], lsl #2]" in text) == cases and "[%[o], %[end], lsl #1]" in text
    exact_on_host_and_m4(gen, 2, 3, "3x3 depthwise layers sharing code, channels an argument")


def test_without_the_argument_each_channel_count_has_its_code(monkeypatch):
    monkeypatch.setattr(dw_module, "SHARE_C_ARG", False)
    gen, _ = specialised(c_arg_graph(2), "armv7em-dsp")
    assert "int32_t C)" not in gen.files["net_layers.c"]


def test_by_cost_they_share_where_the_copies_do_not_pay(monkeypatch):
    """By default (SHARE_C_ARG None) the groups share: a store more per channel and row is far
    below what the copies of the row kernels would have to save per byte."""
    monkeypatch.setattr(dw_module, "DW_CASES", True)
    gen, _ = specialised(c_arg_graph(2), "armv7em-dsp")
    assert len(re.findall(r"static void net_l\d+_dw_run\(.*int32_t C\)", gen.files["net_layers.c"])) == len(GROUPS)
