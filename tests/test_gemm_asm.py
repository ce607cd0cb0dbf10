"""The GEMM convolution's channel loop in assembly (mcugen.kernels.gemm_asm): every variant the
plans take, bit-exact on the host (C path) and the emulated M4 (the assembly)."""

from __future__ import annotations

import pytest

from test_fast_kernels import Builder, exact_on_host_and_m4, have_qemu, specialised  # noqa: I001

from mcugen.ir import Activation, Padding

# (h, w, in_c, out_c, kernel, activation, output zero point): blocks of 6 in line and of 5 / 4 / 3
# with the group loop, one pixel, tables read few times (two words) or often, inputs doubled or
# not (few output channels), the sign correction (no activation) or not (ReLU at zero point
# -128), a clamp narrower than int8 (ReLU at another zero point, ReLU6), output channels too far
# apart for immediate store offsets
CASES = [
    (2, 3, 24, 20, 1, Activation.NONE, 3),
    (3, 3, 56, 24, 1, Activation.RELU, -128),
    (4, 3, 8, 12, 3, Activation.RELU6, -128),
    (1, 3, 40, 16, 1, Activation.RELU, 10),
    (1, 1, 20, 18, 1, Activation.NONE, -7),
    (2, 3, 36, 17, 1, Activation.NONE, 0),
    (2, 2, 20, 1100, 1, Activation.RELU, -128),
    (2, 3, 20, 900, 1, Activation.NONE, 5),
    (5, 1, 48, 1500, 1, Activation.RELU6, -128),
    (12, 12, 24, 40, 1, Activation.NONE, -20),
]


def gemm_graph(seed: int):
    b = Builder(seed)
    outs = []
    for h, w, cin, cout, k, act, zp in CASES:
        x = b.input((1, h, w, cin))
        q = b.act_quant(float(b.tensors[x].quant.s) * 1.3, zp)
        outs.append(b.conv(x, cout, (k, k), (1, 1), (1, 1), Padding.SAME, act, q=q, per_channel=True))
    return b.graph(outs, name=f"gemmasm{seed}")


@pytest.mark.skipif(not have_qemu(), reason="needs qemu-system-arm and arm-none-eabi-gcc (scripts/setup.sh)")
def test_gemm_channel_loop_assembly_bit_exact_on_the_m4(monkeypatch):
    from helpers import fast_forms_rule

    fast_forms_rule(monkeypatch)  # the four-word table where it pays
    gen, result = specialised(gemm_graph(11), "armv7em-dsp")
    plans = sorted((pl for pl in result.plans.values() if pl.kind == "gemm_conv"), key=lambda pl: pl.index)
    assert len(plans) == len(CASES) and all(pl.rq.fast and pl.dot_asm for pl in plans)
    text = "\n".join(line for pl in plans for lines in pl.dot_asm for line in lines)
    seen = {
        "in line": any(pl.full_unroll for pl in plans), "group loop": any(not pl.full_unroll for pl in plans),
        "6 pixels": any(pl.block == 6 for pl in plans), "5 pixels": any(pl.block == 5 for pl in plans),
        "odd tail or block": any(n % 2 for pl in plans for n in (pl.block, pl.tail) if n),
        "one pixel": any(pl.block == 1 for pl in plans),
        "not doubled": any(not pl.doubled for pl in plans), "doubled": any(pl.doubled for pl in plans),
        "two-word": any(pl.rq_words == 2 for pl in plans), "four-word": any(pl.rq_words == 4 for pl in plans),
        "sign correction": "asr #31" in text, "sign free": any(pl.rq.sign_free for pl in plans),
        "clamp": "it lt" in text or "it gt" in text, "register offsets": "movw r10" in text,
        "five register offsets": "add r9, r10, r10, lsl #2" in text,
    }
    assert all(seen.values()), [k for k, v in seen.items() if not v]
    exact_on_host_and_m4(gen, 2, 5, "GEMM channel loops in assembly")
