"""Kernels specialised per layer (mcugen.kernels): the exactness proofs pinned at their edges, the
pass's bookkeeping, then bit-exact C against tflite-runtime / the emulator on the host (portable
and DSP code, the latter with its C99 stand-ins) and on the emulated cores (DSP assembly on the
Cortex-M4/M7, Helium on the M55)."""

from __future__ import annotations

import math
import shutil
import subprocess
import tempfile
from pathlib import Path

import numpy as np
import pytest

from helpers import OPS_DIR, build_mobilenet

from mcugen.oracle import oracles_for  # noqa: I001  (loads tflite-runtime before TensorFlow can be)

from mcugen import codegen, driver, quant
from mcugen.boards import get_board
from mcugen.emulate import emulate
from mcugen.errors import UnsupportedError
from mcugen.ir import (
    Activation,
    Conv2DAttrs,
    DepthwiseConv2DAttrs,
    DType,
    ElementwiseAttrs,
    FullyConnectedAttrs,
    Graph,
    MeanAttrs,
    Operator,
    OpType,
    Padding,
    Quant,
    SoftmaxAttrs,
    Tensor,
)
from mcugen.kernels import KernelPassResult, ScratchBuffer, apply_kernels, place_scratch, specialize
from mcugen.kernels import conv as conv_module
from mcugen.kernels import depthwise as dw_module
from mcugen.kernels.base import KernelContext, larger_form_pays
from mcugen.kernels.conv import select_conv
from mcugen.kernels.depthwise import DW3_W8_PAD, DW_INT8_BYTES, DW_RECORD, select_depthwise
from mcugen.kernels.requant import ACC_LIMIT, fast_requant_exact, mve_table, plan_requant
from mcugen.lower import lower
from mcugen.targets import EMULATE_DSP_MACRO, get_target, target_for_board, target_for_cpu
from mcugen.tflite_reader import read_tflite

# ---- 1. requantization: the short form equals TFLite's where the generator says so ----------


def smmlar(a: int, b: int, acc: int) -> int:
    """ARM SMMLAR: acc + round(a * b / 2**32), the 32-bit result wrapping."""
    r = acc + ((a * b + 0x80000000) >> 32)
    return ((r + 2**31) % 2**32) - 2**31


def short_requant(acc: int, m: int, k: int, e: int) -> int:
    a2 = 2 * acc
    return (smmlar(a2, m, k) + (-1 if a2 < 0 else 0)) >> e


EDGE_MULTIPLIERS = (1 << 30, (1 << 30) + 1, 1518500250, 2**31 - 2, 2**31 - 1, 0)


@pytest.mark.parametrize("m", EDGE_MULTIPLIERS)
@pytest.mark.parametrize("shift", (-1, -2, -7, -17, -24, -31))
@pytest.mark.parametrize("zp", (-128, -1, 0, 127))
def test_short_requant_equals_tflite_at_the_edges(m, shift, zp):
    e = -shift
    k = (1 << (e - 1)) + zp * (1 << e)
    bound = ACC_LIMIT - 1
    if not fast_requant_exact(np.array([bound]), np.array([m]), np.array([shift]), zp):
        bound = 1 << 20
    if abs(k) + bound + 2 >= 2**31:  # K = 2**(e-1) + zp * 2**e itself does not fit: refused
        assert not fast_requant_exact(np.array([bound]), np.array([m]), np.array([shift]), zp)
        return
    assert fast_requant_exact(np.array([bound]), np.array([m]), np.array([shift]), zp)
    rng = np.random.default_rng(abs(m) + e * 1000 + zp)
    accs = {0, 1, -1, bound, -bound, bound - 1, -bound + 1}
    # ties of the RoundingDivideByPOT and of the doubling high multiply
    for q in range(-4, 5):
        accs.add(int(np.clip(q * (1 << max(e - 1, 0)), -bound, bound)))
    accs.update(int(v) for v in rng.integers(-bound, bound + 1, size=300))
    for acc in sorted(accs):
        want = int(quant.multiply_by_quantized_multiplier(acc, m, shift)) + zp
        assert short_requant(acc, m, k, e) == want, (acc, m, shift, zp)


@pytest.mark.parametrize("m", EDGE_MULTIPLIERS[:-1])
@pytest.mark.parametrize("shift", (-1, -2, -7, -17, -31))
@pytest.mark.parametrize("zp,act_min", [(-128, -128), (-5, 0), (3, 3)])
def test_sign_free_short_requant_equals_tflite_after_the_clamp(m, shift, zp, act_min):
    """Requant.sign_free: where the activation's lower bound is at or above the zero point, the
    short form without its sign correction, then the clamp, equals TFLite's: every tie of the
    rounding and the whole range near zero, negative accumulators above all."""
    e = -shift
    k = (1 << (e - 1)) + zp * (1 << e)
    rq = plan_requant(np.array([1 << 20]), np.array([m]), np.array([shift]), zp, act_min, 127)
    if not rq.fast:  # K = 2**(e-1) + zp * 2**e does not fit: the general form, never sign-free
        assert abs(k) >= 2**31 - (1 << 21) and not rq.sign_free
        return
    assert rq.sign_free
    rng = np.random.default_rng(m % 1000 + e)
    accs = set(range(-3000, 3001)) | {int(v) for v in rng.integers(-(1 << 20), (1 << 20) + 1, size=2000)}
    for q in range(-64, 65):
        for d in (-1, 0, 1):
            accs.add(int(np.clip(q * (1 << max(e - 1, 0)) + d, -(1 << 20), 1 << 20)))
    for acc in sorted(accs):
        want = min(max(int(quant.multiply_by_quantized_multiplier(acc, m, shift)) + zp, act_min), 127)
        got = min(max(smmlar(2 * acc, m, k) >> e, act_min), 127)  # no (acc >> 31)
        assert got == want, (acc, m, shift, zp)
    # and where the zero point is above the bound, the correction matters: not sign-free
    assert not plan_requant(np.array([1 << 20]), np.array([m]), np.array([shift]), 0, -128, 127).sign_free


def test_fast_requant_is_refused_where_it_could_differ():
    m, s = np.array([2**31 - 1]), np.array([-1])
    assert fast_requant_exact(np.array([ACC_LIMIT - 1]), m, s, 0)
    assert not fast_requant_exact(np.array([ACC_LIMIT]), m, s, 0)  # 2 * acc would overflow
    assert not fast_requant_exact(np.array([100]), m, np.array([0]), 0)  # no rounding shift
    assert not fast_requant_exact(np.array([100]), m, np.array([3]), 0)  # a left shift
    assert not fast_requant_exact(np.array([100]), np.array([-5]), s, 0)
    assert fast_requant_exact(np.array([100]), m, np.array([0]), 7, allow_zero_shift=True)
    # a large zero point times 2**e must still leave room
    assert not fast_requant_exact(np.array([1 << 29]), m, np.array([-24]), 127)


@pytest.mark.parametrize("m", EDGE_MULTIPLIERS[:-1])
def test_zero_shift_short_form_is_smmlar(m):
    for acc in (0, 1, -1, 12345, -12345, (1 << 29), -(1 << 29), ACC_LIMIT - 1, -(ACC_LIMIT - 1)):
        assert smmlar(2 * acc, m, 5) == int(quant.multiply_by_quantized_multiplier(acc, m, 0)) + 5


def test_plan_requant_falls_back_to_the_exact_form():
    rq = plan_requant(np.array([10, 10]), np.array([1 << 30, 1 << 30]), np.array([-3, 2]), 0, -128, 127)
    assert not rq.fast and list(rq.shift) == [-3, 2]
    rq = plan_requant(np.array([10, 10]), np.array([1 << 30, 1 << 30]), np.array([-3, -9]), 4, -128, 127)
    assert rq.fast and list(rq.e) == [3, 9] and list(rq.k) == [4 + 4 * 8, 256 + 4 * 512] and rq.clamp_is_int8


def test_mve_table_layout():
    t = mve_table(np.array([1, 2, 3, 4, 5]), np.array([10, 20, 30, 40, 50]), np.array([-1, 0, 2, -31, -5]), 8)
    blocks = t.reshape(2, 5, 4)
    assert list(blocks[0, 0]) == [1, 2, 3, 4] and list(blocks[1, 0]) == [5, 0, 0, 0]
    assert list(blocks[0, 2]) == [0, 0, 2, 0]  # left shifts
    assert list(blocks[0, 3]) == [-1, 0, 0, -31]  # minus right shifts
    assert list(blocks[0, 4]) == [-1, 0, 0, -1]  # the -1 for negatives only where a right shift rounds


def test_targets():
    assert target_for_cpu("cortex-m4").name == "armv7em-dsp" and target_for_cpu("cortex-m7").name == "armv7em-dsp"
    assert target_for_cpu("cortex-m55").name == "mve" and target_for_cpu("cortex-m0plus").name == "portable"
    assert target_for_board(get_board("qemu-mps3-an547")).name == "mve"
    with pytest.raises(UnsupportedError, match="supported targets"):
        get_target("avx512")
    with pytest.raises(UnsupportedError, match="--kernels"):
        apply_kernels(lower(_one_conv_graph(0)), "tvm", get_target("portable"))


# ---- 2. a small IR factory with adversarial quantization -----------------------------------------


class Builder:
    """int8 IR graphs with seeded weights and quantization chosen to reach the edges: zero points at
    +-128, output scales that make multipliers > 1 (left shifts) or tiny, per-tensor weights."""

    def __init__(self, seed: int):
        self.rng = np.random.default_rng(seed)
        self.tensors: list[Tensor] = []
        self.ops: list[Operator] = []
        self.inputs: list[int] = []

    def tensor(self, shape, dtype=DType.INT8, q=None, data=None) -> int:
        self.tensors.append(Tensor(len(self.tensors), f"t{len(self.tensors)}", tuple(shape), dtype, q, data))
        return len(self.tensors) - 1

    def act_quant(self, scale=None, zp=None) -> Quant:
        zp = int(self.rng.choice([-128, -127, -5, 0, 3, 126, 127])) if zp is None else zp
        s = scale if scale is not None else float(self.rng.uniform(0.01, 0.1))
        return Quant(np.array([s], np.float32), np.array([zp], np.int64))

    def input(self, shape) -> int:
        i = self.tensor(shape, q=self.act_quant())
        self.inputs.append(i)
        return i

    def op(self, kind, ins, shape, attrs, q=None) -> int:
        o = self.tensor(shape, q=q or self.act_quant(self.out_scale(ins)))
        self.ops.append(Operator(len(self.ops), kind, list(ins), [o], attrs))
        return o

    def out_scale(self, ins) -> float:
        x = self.tensors[ins[0]]
        # a wide spread of effective multipliers: from ~2**-20 to ~4 (left shifts), the scale
        # itself kept in [1e-3, 1] so that a chain of layers stays a plausible network
        return float(np.clip(x.quant.s * 10 ** self.rng.uniform(-3.0, 1.3), 1e-3, 1.0))

    def weights(self, shape, axis, per_channel) -> int:
        data = self.rng.integers(-127, 128, size=shape).astype(np.int8)
        n = shape[axis] if per_channel else 1
        scales = (10 ** self.rng.uniform(-3.5, -1.5, size=n)).astype(np.float32)
        return self.tensor(shape, q=Quant(scales, np.zeros(n, np.int64), axis), data=data)

    def bias(self, x, w, n) -> int:
        scales = (self.tensors[x].quant.scale[0] * np.broadcast_to(self.tensors[w].quant.scale, (n,))).astype(np.float32)
        data = self.rng.integers(-(1 << 16), 1 << 16, size=n).astype(np.int32)
        return self.tensor((n,), DType.INT32, Quant(scales, np.zeros(n, np.int64)), data)

    @staticmethod
    def out_size(size, k, s, d, padding):
        eff = (k - 1) * d + 1
        return math.ceil(size / s) if padding is Padding.SAME else math.ceil((size - eff + 1) / s)

    def conv(self, x, out_c, k, s, d, padding, act, per_channel=True, with_bias=True, q=None) -> int:
        n, h, w, c = self.tensors[x].shape
        oh, ow = self.out_size(h, k[0], s[0], d[0], padding), self.out_size(w, k[1], s[1], d[1], padding)
        wt = self.weights((out_c, k[0], k[1], c), 0, per_channel)
        ins = [x, wt] + ([self.bias(x, wt, out_c)] if with_bias else [])
        return self.op(OpType.CONV_2D, ins, (n, oh, ow, out_c), Conv2DAttrs(s[0], s[1], d[0], d[1], padding, act), q=q)

    def dw(self, x, k, s, d, m, padding, act, per_channel=True, q=None) -> int:
        n, h, w, c = self.tensors[x].shape
        oh, ow = self.out_size(h, k[0], s[0], d[0], padding), self.out_size(w, k[1], s[1], d[1], padding)
        wt = self.weights((1, k[0], k[1], c * m), 3, per_channel)
        attrs = DepthwiseConv2DAttrs(s[0], s[1], d[0], d[1], padding, act, m)
        return self.op(OpType.DEPTHWISE_CONV_2D, [x, wt, self.bias(x, wt, c * m)], (n, oh, ow, c * m), attrs, q=q)

    def fc(self, x, units, per_channel) -> int:
        depth = self.tensors[x].size
        wt = self.weights((units, depth), 0, per_channel)
        return self.op(OpType.FULLY_CONNECTED, [x, wt, self.bias(x, wt, units)], (1, units),
                       FullyConnectedAttrs(Activation.NONE, False))

    def add(self, a, b, act) -> int:
        q = self.act_quant(float(max(self.tensors[a].quant.s, self.tensors[b].quant.s) * self.rng.uniform(0.6, 2.5)))
        return self.op(OpType.ADD, [a, b], self.tensors[a].shape, ElementwiseAttrs(act), q=q)

    def mean(self, x) -> int:
        n, h, w, c = self.tensors[x].shape
        axes = self.tensor((2,), DType.INT32, data=np.array([1, 2], np.int32))
        q = self.act_quant(float(self.tensors[x].quant.s * self.rng.uniform(0.3, 3.0)))
        return self.op(OpType.MEAN, [x, axes], (n, c), MeanAttrs((1, 2), False), q=q)

    def softmax(self, x, beta) -> int:
        q = Quant(np.array([1 / 256], np.float32), np.array([-128], np.int64))
        return self.op(OpType.SOFTMAX, [x], self.tensors[x].shape, SoftmaxAttrs(beta), q=q)

    def graph(self, outputs, name="g") -> Graph:
        return Graph(name, self.tensors, self.ops, list(self.inputs), list(outputs))


def _one_conv_graph(seed: int) -> Graph:
    b = Builder(seed)
    x = b.input((1, 6, 5, 8))
    return b.graph([b.conv(x, 8, (1, 1), (1, 1), (1, 1), Padding.SAME, Activation.NONE)])


def random_graph(seed: int) -> Graph:
    """A short random network touching every specialised kernel: a stem conv, a depthwise, a 1x1,
    a residual ADD, then MEAN + FC + SOFTMAX or just an FC."""
    rng = np.random.default_rng(5000 + seed)
    b = Builder(seed)
    h, w = int(rng.integers(3, 13)), int(rng.integers(3, 13))
    cin = int(rng.choice([1, 2, 3, 4, 5, 8]))
    x = b.input((1, h, w, cin))
    act = lambda: Activation(rng.choice(["NONE", "RELU", "RELU6"]))  # noqa: E731
    pad = Padding(rng.choice(["SAME", "VALID"]))
    k = (int(rng.choice([1, 2, 3, 5])), int(rng.choice([1, 3])))
    s = (int(rng.choice([1, 2])), int(rng.choice([1, 2])))
    d = (1, 1) if max(s) > 1 else (int(rng.choice([1, 2])), 1)
    if pad is Padding.VALID and (h < (k[0] - 1) * d[0] + 1 or w < (k[1] - 1) * d[1] + 1):
        pad = Padding.SAME
    c1 = int(rng.choice([4, 8, 12, 16, 20]))
    y = b.conv(x, c1, k, s, d, pad, act(), per_channel=bool(rng.random() < 0.8), with_bias=bool(rng.random() < 0.9))
    sd = int(rng.choice([1, 2]))
    pad2 = Padding(rng.choice(["SAME", "VALID"])) if min(b.tensors[y].shape[1:3]) >= 3 else Padding.SAME
    y = b.dw(y, (3, 3), (sd, sd), (1, 1), 1, pad2, act(), per_channel=bool(rng.random() < 0.8))
    c2 = int(rng.choice([3, 4, 8, 9, 16]))
    z = b.conv(y, c2, (1, 1), (1, 1), (1, 1), Padding.SAME, Activation.NONE)
    w2 = b.conv(z, c2, (1, 1), (1, 1), (1, 1), Padding.SAME, act())
    r = b.add(z, w2, act())
    if rng.random() < 0.6:
        m = b.mean(r)
        f = b.fc(m, int(rng.integers(2, 12)), per_channel=bool(rng.random() < 0.5))
        out = b.softmax(f, float(rng.choice([1.0, 0.5, 2.0])))
    else:
        out = b.fc(r, int(rng.integers(1, 9)), per_channel=bool(rng.random() < 0.5))
    return b.graph([out], name=f"rand{seed}")


# (h, w, channels, stride, padding) of depthwise layers that take the DSP assembly path: every
# row length mod 4 and mod 6 (and rows shorter than one step, one step, several steps in a
# loop), both strides, odd and even left padding, and more than 255 channels (stores by
# immediate offsets instead of post-indexed)
DW_ASM_CASES = [
    (5, 1, 4, 1, Padding.SAME), (4, 6, 8, 1, Padding.SAME), (3, 7, 12, 1, Padding.VALID),
    (6, 11, 8, 2, Padding.SAME), (7, 16, 4, 2, Padding.VALID), (3, 10, 8, 2, Padding.SAME),
    (4, 9, 260, 1, Padding.SAME), (5, 8, 264, 2, Padding.SAME),
    (3, 13, 8, 1, Padding.SAME), (4, 25, 4, 2, Padding.SAME), (3, 14, 260, 1, Padding.VALID),
    (3, 4, 8, 1, Padding.SAME), (5, 23, 8, 2, Padding.VALID),
]


def depthwise_asm_graph(seed: int) -> Graph:
    """One 3x3 depthwise branch per DW_ASM_CASES entry, each with its own input and output, no
    activation and output scales large enough that every channel takes the short requantization."""
    b = Builder(seed)
    outs = []
    for n, (h, w, c, s, pad) in enumerate(DW_ASM_CASES):
        x = b.input((1, h, w, c))
        scale = float(b.tensors[x].quant.s * b.rng.uniform(0.5, 2.0))
        zp = -128 if n % 2 else 5  # -128: the requantization without its sign correction (sign-free)
        outs.append(b.dw(x, (3, 3), (s, s), (1, 1), 1, pad, Activation.NONE, q=b.act_quant(scale, zp)))
    return b.graph(outs, name=f"dwasm{seed}")


# (h, w, in_c, out_c) of pointwise layers for the thin kernel (a pixel's inputs in registers):
# every input width it takes, one output channel up to the most its code allows
# (every channel in line) and past it (the looped form: full iterations, a tail, or both)
THIN_CASES = [(2, 3, 4, 1), (1, 5, 4, 64), (3, 2, 8, 48), (2, 2, 8, 3), (1, 3, 12, 40), (2, 3, 16, 8), (1, 2, 16, 33),
              (2, 2, 16, 96), (1, 3, 8, 70), (1, 2, 4, 130), (2, 1, 12, 51)]


# (h, w, in_c, out_c) for the narrow kernel (few output channels accumulating in registers):
# one and two passes, an odd channel count, groups in and past one loop step
NARROW_CASES = [(2, 3, 20, 2), (3, 2, 48, 8), (1, 3, 48, 16), (2, 2, 36, 7), (1, 4, 64, 9), (2, 1, 24, 13)]


def thin_conv_graph(seed: int, cases=None) -> Graph:
    """One pointwise branch per THIN_CASES entry (own input and output, no activation, output
    scales that keep every channel in the short requantization)."""
    b = Builder(seed)
    outs = []
    for n, (h, w, cin, cout) in enumerate(cases or THIN_CASES):
        x = b.input((1, h, w, cin))
        wt = b.weights((cout, 1, 1, cin), 0, True)
        q = b.act_quant(float(b.tensors[x].quant.s * b.rng.uniform(0.5, 2.0)), -128 if n % 2 else -3)
        attrs = Conv2DAttrs(1, 1, 1, 1, Padding.SAME, Activation.NONE)
        outs.append(b.op(OpType.CONV_2D, [x, wt, b.bias(x, wt, cout)], (1, h, w, cout), attrs, q=q))
    return b.graph(outs, name=f"thin{seed}")


# (h, w, in_c, out_c, k) of convolutions whose dot product takes one pixel more than 13
# registers hold (r7 saved by the assembly): 6 pixels in line, 5 with the loop (+ a tail)
WIDE_CASES = [(2, 3, 24, 20, 1), (3, 3, 56, 24, 1), (3, 3, 112, 20, 1), (2, 3, 3, 8, 3)]


def wide_block_graph(seed: int) -> Graph:
    b = Builder(seed)
    outs = []
    for n, (h, w, cin, cout, k) in enumerate(WIDE_CASES):
        x = b.input((1, h, w, cin))
        q = b.act_quant(None, -128 if n % 2 else 7)
        outs.append(b.conv(x, cout, (k, k), (1, 1), (1, 1), Padding.SAME, Activation.NONE, q=q))
    return b.graph(outs, name=f"wide{seed}")


# ---- helpers ----------------------------------------------------------------------------------


def specialised(graph: Graph, target: str, strategy: str = "layerwise") -> tuple[driver.Generated, KernelPassResult]:
    program = lower(graph, "net", strategy=strategy)
    result = specialize(program, get_target(target))
    files = result.merged_files(codegen.render_model(result.program, graph))
    return driver.Generated(graph=graph, program=result.program, files=files), result


def run_host(gen: driver.Generated, runs, cflags=()) -> list[list[np.ndarray]]:
    with tempfile.TemporaryDirectory(prefix="mcugen-fast-") as tmp:
        exe = driver.compile_host(gen, Path(tmp) / "build", (f"-D{EMULATE_DSP_MACRO}", "-DMCUGEN_POISON", *cflags))
        return driver.run_host(exe, gen, runs, Path(tmp) / "io")


def have_qemu() -> bool:
    return all(shutil.which(t) for t in ("qemu-system-arm", "arm-none-eabi-gcc", "make"))


def run_board(gen: driver.Generated, board_name: str, runs, cflags=()) -> list[list[np.ndarray]]:
    from mcugen.firmware import build_firmware
    from mcugen.qemu import describe_failure, run_on_qemu_batch

    board = get_board(board_name)
    g = gen.graph
    with tempfile.TemporaryDirectory(prefix="mcugen-fast-fw-") as tmp:
        model_dir = Path(tmp) / "model"
        codegen.write_files(gen.files, model_dir)
        fw = build_firmware(model_dir, gen.program.name, board, Path(tmp) / "fw", extra_cflags=cflags)
        blobs = [[np.ascontiguousarray(a.astype(g.t(g.inputs[k]).dtype.numpy)).tobytes() for k, a in enumerate(r)] for r in runs]
        res = run_on_qemu_batch(fw.elf, board, blobs, timeout=300)
        assert res.exit_code == 0, describe_failure(res.exit_code, res.stderr, 300)
        return [[np.frombuffer(b, dtype=g.t(i).dtype.numpy).reshape(g.t(i).shape) for b, i in zip(out, g.outputs)]
                for out in res.outputs]


def dsp_plans(graph: Graph, op: str) -> tuple[driver.Generated, list]:
    """The graph specialised for the DSP target, and the plans of its `op` layers ("conv" or
    "depthwise", as the specialiser makes them)."""
    gen, _ = specialised(graph, "armv7em-dsp")
    program = lower(graph, "net", strategy="layerwise")
    ctx = KernelContext(program, get_target("armv7em-dsp"))
    select = select_conv if op == "conv" else select_depthwise
    layers = [l for l in program.layers if l.op == ("CONV_2D" if op == "conv" else "DEPTHWISE_CONV_2D")]
    return gen, [select(ctx, layer)[0] for layer in layers]


def exact_on_host_and_m4(gen: driver.Generated, runs: int, seed: int, what: str) -> None:
    """`runs` seeded inputs: the C path on the host and the assembly on the emulated M4 both
    equal the numpy emulator."""
    inputs = driver.random_inputs(gen.graph, runs, seed=seed)
    want = [emulate(gen.graph, r).outputs for r in inputs]
    assert_equal_runs(run_host(gen, inputs), want, f"{what} on the host (C path)")
    assert_equal_runs(run_board(gen, "qemu-mps2-an386", inputs), want, f"{what} on the M4")


def assert_equal_runs(got, want, what: str) -> None:
    for r, (g_run, w_run) in enumerate(zip(got, want)):
        for k, (a, b) in enumerate(zip(g_run, w_run)):
            b = np.asarray(b).reshape(a.shape).astype(a.dtype)
            assert np.array_equal(a, b), f"{what}: run {r} output {k} differs (max {np.abs(a.astype(int) - b.astype(int)).max()})"


# ---- 3. the pass's bookkeeping --------------------------------------------------------------------


def test_the_larger_form_only_where_its_gain_is_real_and_pays_for_its_bytes():
    # 5% of the layer and INSTRUCTIONS_PER_FLASH_BYTE per byte: kept; not with flash_tight, nor at
    # 2% of the layer (even at that many per byte), nor at one fewer per byte
    from mcugen.kernels.base import INSTRUCTIONS_PER_FLASH_BYTE as per_byte

    assert larger_form_pays(5_000, 100_000, 5_000 // per_byte, False)
    assert not larger_form_pays(5_000, 100_000, 5_000 // per_byte, True)
    assert not larger_form_pays(2_000, 100_000, 2_000 // per_byte, False)
    assert not larger_form_pays(5_000, 100_000, 5_000 // (per_byte - 1), False)


def test_mobilenet_depthwise_layers_keep_int8_weights_by_default(mobilenet):
    """On the DSP, MobileNet v2's layerwise 3x3 depthwise layers take the int8 form (the rebuild
    gains nothing near 16 instructions per byte): DW_INT8_BYTES per channel of flash."""
    graph = read_tflite(mobilenet)
    program = lower(graph, "net", strategy="layerwise")
    result = specialize(program, get_target("armv7em-dsp"))
    plans = [pl for pl in result.plans.values() if pl.kind == "depthwise"]
    assert plans and all(pl.unpack for pl in plans)
    sizes = {c.cname: c.values.nbytes for c in result.program.consts}
    assert all(sizes[pl.weights] + sizes[pl.table] == DW_INT8_BYTES * pl.v.out_c + DW3_W8_PAD for pl in plans)


def test_layers_replaced_constants_repacked_and_scratch_placed():
    graph = random_graph(3)
    program = lower(graph, "net", strategy="layerwise")
    gen, result = specialised(graph, "armv7em-dsp")
    kinds = {l.kernel for l in result.program.layers if l.kernel}
    assert all(k.startswith("net_l") for k in kinds if "conv" in k or "dw" in k or "fc" in k)
    assert len(result.choices) == sum(1 for l in program.layers if l.kernel in (
        "mcugen_conv2d_s8", "mcugen_depthwise_conv2d_s8", "mcugen_depthwise_conv2d_inplace_s8",
        "mcugen_fully_connected_s8", "mcugen_add_s8", "mcugen_mean_hw_s8", "mcugen_softmax_s8"))
    names = {c.cname for c in result.program.consts}
    assert not any(n.endswith(("_conv_weights", "_dw_weights", "_fc_weights")) for n in names), "old weights kept"
    assert result.program.arena_bytes >= program.arena_bytes
    for s in result.scratch:
        assert s.size > 0 and 0 <= s.step < len(program.layers)
    assert "mcugen_portable.h" in gen.files and '#include "net_layers.h"' in gen.files["mcugen_kernels.h"]
    assert gen.files["net.c"].count("net_l") >= len(result.choices)


def test_place_scratch_reuses_a_large_enough_planned_buffer_else_the_tail():
    graph = random_graph(1)
    program = lower(graph, "net", strategy="layerwise")
    grown, offsets = place_scratch(program, [ScratchBuffer("scratch0", 100, 0), ScratchBuffer("scratch1", 40, 1)])
    base = -(-program.arena_bytes // 16) * 16
    assert offsets == {"scratch0": base, "scratch1": base} and grown.arena_bytes == base + 100
    planned = [b for b in program.buffers if b.name.startswith("scratch")]
    if planned:
        b = planned[0]
        _, offsets = place_scratch(program, [ScratchBuffer(b.name, b.size, b.first)])
        assert offsets[b.name] == program.plan.offsets[b.name]
        _, offsets = place_scratch(program, [ScratchBuffer(b.name, b.size + 1, b.first)])
        assert offsets[b.name] == base


def test_dsp_code_refuses_to_compile_for_the_wrong_target(tmp_path):
    gen, _ = specialised(_one_conv_graph(0), "armv7em-dsp")
    with pytest.raises(Exception, match="compilation"):
        driver.compile_host(gen, tmp_path / "build")  # no DSP and no emulation macro: #error


# ---- 4. bit-exact on the host -----------------------------------------------------------------------

OP_MODELS = sorted(
    p.name for p in OPS_DIR.glob("*.tflite")
    if p.stem.split("_")[0] in ("conv2d", "depthwise", "fully", "add", "softmax", "chain", "pad", "two")
    or p.stem.startswith("mean_hw")
)


@pytest.mark.parametrize("target", ["portable", "armv7em-dsp"])
@pytest.mark.parametrize("name", OP_MODELS)
def test_op_models_bit_exact_with_tflite_on_the_host(name, target):
    path = OPS_DIR / name
    graph = read_tflite(path)
    gen, result = specialised(graph, target)
    runs = driver.random_inputs(graph, 2, seed=11)
    got = run_host(gen, runs)
    oracle = oracles_for(path)[0]
    assert_equal_runs(got, [oracle.run(r) for r in runs], f"{name} ({target}) vs {oracle.name}")


@pytest.mark.parametrize("target", ["portable", "armv7em-dsp"])
@pytest.mark.parametrize("seed", range(12))
def test_random_graphs_bit_exact_with_the_emulator(seed, target):
    graph = random_graph(seed)
    gen, result = specialised(graph, target)
    assert result.choices, "nothing was specialised"
    runs = driver.random_inputs(graph, 3, seed=seed)
    assert_equal_runs(run_host(gen, runs), [emulate(graph, r).outputs for r in runs], f"random graph {seed} ({target})")


def test_fused_program_keeps_its_chains_and_stays_exact():
    graph = random_graph(4)
    gen, result = specialised(graph, "armv7em-dsp", strategy="fused")
    runs = driver.random_inputs(graph, 2, seed=1)
    assert_equal_runs(run_host(gen, runs), [emulate(graph, r).outputs for r in runs], "fused + specialised")


# ---- 5. bit-exact on the emulated cores (the assembly and Helium paths) ------------------------------

BOARD_OP_MODELS = [
    "conv2d_1x1_valid_s1_none.tflite", "conv2d_1x1_same_s2_relu.tflite", "conv2d_3x3_same_s2_cin1_relu6.tflite",
    "conv2d_3x3_same_dil2_relu.tflite", "conv2d_5x3_valid_s2_none.tflite", "depthwise_3x3_same_s1_m1_relu6.tflite",
    "depthwise_3x3_same_s2_even_m1_relu6.tflite", "depthwise_3x3_valid_s2_m1_none.tflite",
    "fully_connected_batch3_bias_none.tflite", "fully_connected_per_channel_bias_none.tflite",
    "fully_connected_nobias_none.tflite", "chain_conv_dw_conv_add_mean_fc_softmax.tflite",
    "fully_connected_head3_depth1001.tflite", "fully_connected_head4_depth500_relu.tflite",
]


@pytest.mark.parametrize("name", ["fully_connected_head3_depth1001.tflite", "fully_connected_head4_depth500_relu.tflite"])
def test_fc_heads_read_the_input_directly_without_scratch(name):
    """A head of <= 4 units does not unpack its input (the unpacked row would outweigh the layer's
    tensors and be used by too few units to pay): no scratch; wider layers keep the unpacking form."""
    gen, result = specialised(read_tflite(OPS_DIR / name), "armv7em-dsp")
    plan = next(p for p in result.plans.values() if p.kind == "fc")
    assert plan.direct and plan.scratch_bytes == 0
    gen, result = specialised(read_tflite(OPS_DIR / "fully_connected_bias_none.tflite"), "armv7em-dsp")
    plan = next(p for p in result.plans.values() if p.kind == "fc")
    assert not plan.direct and plan.scratch_bytes > 0


@pytest.mark.skipif(not have_qemu(), reason="needs qemu-system-arm and arm-none-eabi-gcc (scripts/setup.sh)")
@pytest.mark.parametrize("board", ["qemu-mps2-an386", "qemu-mps3-an547"])
def test_op_models_bit_exact_on_the_emulated_cores(board):
    for name in BOARD_OP_MODELS:
        path = OPS_DIR / name
        graph = read_tflite(path)
        gen, _ = specialised(graph, target_for_board(get_board(board)).name)
        runs = driver.random_inputs(graph, 2, seed=5)
        oracle = oracles_for(path)[0]
        assert_equal_runs(run_board(gen, board, runs), [oracle.run(r) for r in runs], f"{name} on {board}")


@pytest.mark.skipif(not have_qemu(), reason="needs qemu-system-arm and arm-none-eabi-gcc (scripts/setup.sh)")
@pytest.mark.parametrize("board", ["qemu-mps2-an386", "qemu-mps2-an500", "qemu-mps3-an547"])
def test_random_graphs_bit_exact_on_the_emulated_cores(board):
    graphs = [random_graph(seed) for seed in range(100, 106)]
    for graph in graphs:
        gen, _ = specialised(graph, target_for_board(get_board(board)).name)
        runs = driver.random_inputs(graph, 2, seed=2)
        assert_equal_runs(run_board(gen, board, runs), [emulate(graph, r).outputs for r in runs], f"{graph.name} on {board}")


@pytest.mark.skipif(not have_qemu(), reason="needs qemu-system-arm and arm-none-eabi-gcc (scripts/setup.sh)")
@pytest.mark.parametrize("int8_form", [True, False], ids=["int8-form", "records"])
@pytest.mark.parametrize("cases", [True, False], ids=["six-per-step", "four-per-step"])
def test_depthwise_assembly_bit_exact_on_the_m4(int8_form, cases, monkeypatch):
    """Both forms of the 3x3 weights: int8 in flash with the records rebuilt in scratch at each
    call (mcugen_dw3_records), and the records in flash; both kernels: six outputs per step, one
    assembly per ring case (the default), and the four-output ones it replaces where it encodes."""
    monkeypatch.setattr(dw_module, "DW_INT8_FORM", int8_form)
    monkeypatch.setattr(dw_module, "DW_CASES", cases)
    gen, plans = dsp_plans(depthwise_asm_graph(3), "depthwise")
    assert all(pl.unpack == int8_form for pl in plans)
    sizes = {c.cname: c.values.nbytes for c in gen.program.consts}
    assert all(sizes[pl.weights] + (sizes[pl.table] if pl.unpack else 0)
               == (DW_INT8_BYTES * pl.v.out_c + DW3_W8_PAD if pl.unpack else 4 * DW_RECORD * pl.v.out_c) for pl in plans)
    assert ("mcugen_dw3_records(" in gen.files["net_layers.c"]) == int8_form
    assert len(plans) == len(DW_ASM_CASES) and all(pl.asm_loop or pl.asm_tail or pl.asm_rows or pl.asm_cases
                                                   for pl in plans), "every case must take the assembly path"
    if cases:
        assert all(len(pl.asm_cases) == 3 and not (pl.asm_rows or pl.asm_loop or pl.asm_tail) for pl in plans)
        widths = {(pl.v.sh, dw_module.dw_cases_layout(pl.v.out_w, pl.v.sh)[:2]) for pl in plans}
        assert {s for s, (blocks, _) in widths if blocks > 1} == {1, 2}  # a loop of steps on both strides
        assert {s for s, (blocks, tail) in widths if blocks == 1 and tail == 0} == {1, 2}
        exact_on_host_and_m4(gen, 2, 4, "depthwise cases")
        return
    # stride 1, and stride 2 with at most one step of outputs a row (dw_asm_rows_s2): one loop over
    # every channel through row pointers; the other stride-2 rows: per ring case
    from mcugen.kernels.depthwise_asm import dw_s2_rows_fit

    assert all(bool(pl.asm_rows) == (pl.v.sh == 1 or dw_s2_rows_fit(pl.v.out_w, pl.v.out_c, pl.plane_w)) for pl in plans)
    assert {pl.v.sh == 2 and bool(pl.asm_rows) for pl in plans} == {True, False}
    assert any(pl.v.sh == 2 and pl.asm_loop for pl in plans)
    assert {pl.rq.sign_free for pl in plans if pl.v.sh == 1} == {pl.rq.sign_free for pl in plans if pl.v.sh == 2} == {True, False}
    assert {pl.v.sh for pl in plans if pl.v.out_c > 255} == {1, 2} and any(pl.asm_blocks == 0 for pl in plans)
    exact_on_host_and_m4(gen, 2, 4, "depthwise cases")


@pytest.mark.skipif(not have_qemu(), reason="needs qemu-system-arm and arm-none-eabi-gcc (scripts/setup.sh)")
def test_depthwise_int8_form_on_the_exact_general_requantization():
    """3x3 depthwise layers whose output scale is too small for the short requantization (the C
    path, the shift in the rebuilt records), both strides, a ReLU6 range: the int8 form by
    default, bit-exact on the host and the M4."""
    b = Builder(5)
    outs = []
    for n, (h, w, c, s) in enumerate([(5, 6, 8, 1), (6, 7, 12, 2)]):
        x = b.input((1, h, w, c))
        q = b.act_quant(float(b.tensors[x].quant.s * 1e-4), -128 if n else 3)
        outs.append(b.dw(x, (3, 3), (s, s), (1, 1), 1, Padding.SAME, Activation.RELU6 if n else Activation.NONE, q=q))
    gen, plans = dsp_plans(b.graph(outs, name="dwexact"), "depthwise")
    assert len(plans) == 2 and all(pl.unpack and not pl.rq.fast for pl in plans)
    exact_on_host_and_m4(gen, 2, 6, "depthwise int8 form, exact general requantization")


@pytest.mark.skipif(not have_qemu(), reason="needs qemu-system-arm and arm-none-eabi-gcc (scripts/setup.sh)")
def test_thin_pointwise_assembly_bit_exact_on_the_m4():
    gen, plans = dsp_plans(thin_conv_graph(5), "conv")
    assert [pl.kind for pl in plans] == ["thin_conv"] * len(THIN_CASES)
    assert {pl.code.looped for pl in plans} == {False, True} and {pl.rq.sign_free for pl in plans} == {False, True}
    exact_on_host_and_m4(gen, 3, 6, "thin pointwise")


@pytest.mark.skipif(not have_qemu(), reason="needs qemu-system-arm and arm-none-eabi-gcc (scripts/setup.sh)")
def test_narrow_pointwise_assembly_bit_exact_on_the_m4():
    gen, plans = dsp_plans(thin_conv_graph(7, NARROW_CASES), "conv")
    assert all(pl.kind == "thin_conv" and pl.narrow is not None for pl in plans)
    assert {len(pl.narrow.passes) for pl in plans} == {1, 2} and {pl.rq.sign_free for pl in plans} == {False, True}
    exact_on_host_and_m4(gen, 3, 8, "narrow pointwise")


def test_thin_pointwise_code_is_bounded():
    from mcugen.kernels.conv import THIN_MAX_INSTRUCTIONS, thin_conv_asm, thin_conv_fits

    for cin in (4, 8, 12, 16):
        widest = max(c for c in range(1, 200) if thin_conv_fits(cin, c))
        lines, clobbers = thin_conv_asm(cin, [7] * widest)
        assert len(lines) <= THIN_MAX_INSTRUCTIONS and not thin_conv_fits(cin, widest + 1)
        assert "r7" not in clobbers and "r0" not in clobbers and "r1" not in clobbers
        # looped: the same few iterations' code for any number of channels, r7 saved and restored
        looped, clobbers = thin_conv_asm(cin, [7] * 1000, looped=True)
        assert len(looped) < 120 and looped[0] == "push {r7}" and looped[-1] == "pop {r7}" and "r7" not in clobbers
    assert not thin_conv_fits(20, 8) and not thin_conv_fits(6, 8)


@pytest.mark.skipif(not have_qemu(), reason="needs qemu-system-arm and arm-none-eabi-gcc (scripts/setup.sh)")
def test_wide_blocks_bit_exact_on_the_m4():
    gen, plans = dsp_plans(wide_block_graph(2), "conv")
    assert [(pl.block, pl.full_unroll) for pl in plans] == [(6, True), (5, False), (5, False), (6, True)]
    assert [pl.rq.sign_free for pl in plans] == [False, True, False, True]
    exact_on_host_and_m4(gen, 2, 3, "wide blocks (r7)")


RQ_TABLE_CASES = [  # (h, w, in_c, out_c, k, output scale factor): many blocks, few blocks, a 3x3, the exact form
    (16, 12, 24, 20, 1, 1.0), (3, 3, 56, 24, 1, 1.0), (4, 3, 8, 20, 3, 1.0), (3, 2, 24, 20, 1, 1e-4)]


def rq_table_graph(seed: int) -> Graph:
    b = Builder(seed)
    outs = []
    for n, (h, w, cin, cout, k, f) in enumerate(RQ_TABLE_CASES):
        x = b.input((1, h, w, cin))
        q = b.act_quant(float(b.tensors[x].quant.s * f), -128 if n % 2 else 5)
        outs.append(b.conv(x, cout, (k, k), (1, 1), (1, 1), Padding.SAME, Activation.NONE, q=q, per_channel=True))
    return b.graph(outs, name=f"rqtables{seed}")


@pytest.mark.skipif(not have_qemu(), reason="needs qemu-system-arm and arm-none-eabi-gcc (scripts/setup.sh)")
@pytest.mark.parametrize("packs", [True, False], ids=["two-word", "three-word"])
def test_short_requant_tables_bit_exact_on_the_m4(packs, monkeypatch):
    """GEMM layers whose table is read few times per inference, and every layer with flash_tight,
    store (bias * 32 + e, M) per channel after one word 2 zero_point + 1, and compute K from e;
    where a bias does not survive that shift (forced here), (bias, M, K), the shift from K; layers
    on the exact general form never store the unused fourth word. Bit-exact on the host and the M4."""
    from helpers import fast_forms_rule

    fast_forms_rule(monkeypatch)  # the four-word table where it pays
    if not packs:
        monkeypatch.setattr(conv_module, "rq_e_packs", lambda bias, rq: False)
    graph = rq_table_graph(3)
    program = lower(graph, "net", strategy="layerwise")
    small = 2 if packs else 3
    for tight in (False, True):
        result = specialize(program, get_target("armv7em-dsp"), flash_tight=tight)
        gen = driver.Generated(graph=graph, program=result.program,
                               files=result.merged_files(codegen.render_model(result.program, graph)))
        plans = sorted((pl for pl in result.plans.values() if pl.kind == "gemm_conv"), key=lambda pl: pl.index)
        assert len(plans) == len(RQ_TABLE_CASES)
        sizes = {c.cname: c.values.nbytes for c in result.program.consts}
        assert all(sizes[pl.table] == 4 * pl.rq_words * pl.v.out_c + (4 if pl.rq_words == 2 else 0) for pl in plans)
        assert [pl.rq.fast for pl in plans] == [True, True, True, False]
        assert [pl.rq_words for pl in plans] == ([small, small, small, 3] if tight else [4, small, small, 3])
        assert ("mcugen_e_of_k(" in gen.files["net_layers.c"]) == (not packs)
        assert ("rq_kodd" in gen.files["net_layers.c"]) == packs
        exact_on_host_and_m4(gen, 2, 7, f"{small}-word tables (flash_tight={tight})")


def shared_code_graph(seed: int) -> Graph:
    """Pairs of convolutions that differ only in their weights and output scale (same shapes, zero
    points, activation): 1x1 in one block of 6 and in blocks of 5 + a tail (both with r7), a padded 3x3."""
    b = Builder(seed)
    outs = []
    for h, w, cin, cout, k in [(2, 3, 24, 20, 1), (3, 3, 56, 24, 1), (4, 3, 8, 20, 3)]:
        x = b.input((1, h, w, cin))
        s = float(b.tensors[x].quant.s)
        for f in (0.9, 1.1):
            outs.append(b.conv(x, cout, (k, k), (1, 1), (1, 1), Padding.SAME, Activation.RELU, q=b.act_quant(s * f, -128),
                               per_channel=True))
    return b.graph(outs, name=f"shared{seed}")


@pytest.mark.skipif(not have_qemu(), reason="needs qemu-system-arm and arm-none-eabi-gcc (scripts/setup.sh)")
def test_layers_with_the_same_code_share_it_and_stay_exact_on_the_m4():
    gen, result = specialised(shared_code_graph(4), "armv7em-dsp")
    text = gen.files["net_layers.c"]
    for pl in result.plans.values():
        assert pl.kind == "gemm_conv"
    names = sorted(result.plans.values(), key=lambda pl: pl.index)
    for first, second in zip(names[::2], names[1::2]):
        assert f"static void {first.name}_run(" in text, first.name
        assert f"{first.name}_run(input, output, scratch, {second.weights}, {second.table});" in text
        assert f"static void {second.name}_dot" not in text, "the second layer's code is not emitted"
    assert [(pl.block, pl.tail) for pl in names[::2]] == [(6, 0), (5, 4), (4, 0)], "the r7 variants and a tail are shared too"
    exact_on_host_and_m4(gen, 2, 5, "layers sharing code")


@pytest.mark.skipif(not have_qemu(), reason="needs qemu-system-arm and arm-none-eabi-gcc (scripts/setup.sh)")
def test_depthwise_of_one_channel_is_a_convolution_and_exact():
    """A depthwise layer on one input channel with a depth multiplier (person_detect's first layer)
    takes the convolution kernel: its weights [1, kh, kw, M] read as [M, kh, kw, 1]."""
    b = Builder(11)
    outs = []
    for h, w, m, s, pad in ((9, 10, 8, 2, Padding.SAME), (7, 6, 4, 1, Padding.VALID), (5, 5, 3, 1, Padding.SAME)):
        x = b.input((1, h, w, 1))
        outs.append(b.dw(x, (3, 3), (s, s), (1, 1), m, pad, Activation.RELU6))
    graph = b.graph(outs, name="dw1")
    gen, plans = dsp_plans(graph, "depthwise")
    assert [pl.kind for pl in plans] == ["gemm_conv"] * 3
    exact_on_host_and_m4(gen, 2, 5, "one-channel depthwise as a convolution")
    gen_portable, _ = specialised(graph, "portable")
    inputs = driver.random_inputs(graph, 2, seed=5)
    assert_equal_runs(run_host(gen_portable, inputs), [emulate(graph, r).outputs for r in inputs], "portable")


@pytest.fixture(scope="module")
def mobilenet(tmp_path_factory) -> Path:
    return build_mobilenet(tmp_path_factory.mktemp("mnv2"), 96, 1000)


@pytest.mark.skipif(not have_qemu(), reason="needs qemu-system-arm and arm-none-eabi-gcc (scripts/setup.sh)")
@pytest.mark.parametrize("board", ["qemu-mps2-an386", "qemu-mps3-an547"])
def test_mobilenet_v2_bit_exact_on_the_emulated_cores(mobilenet, board):
    graph = read_tflite(mobilenet)
    gen, result = specialised(graph, target_for_board(get_board(board)).name)
    assert len(result.choices) >= 60
    runs = driver.random_inputs(graph, 1, seed=9)
    oracle = oracles_for(mobilenet)[0]
    assert_equal_runs(run_board(gen, board, runs), [oracle.run(r) for r in runs], f"MobileNet v2 on {board}")


@pytest.mark.skipif(shutil.which("arm-none-eabi-gcc") is None, reason="needs arm-none-eabi-gcc (scripts/setup.sh)")
@pytest.mark.parametrize("flags", [("-O0",), ("-O2", "-fno-omit-frame-pointer"), ("-Os",), ("-O3",)])
def test_dsp_and_helium_code_compiles_at_any_optimization_level(tmp_path, flags):
    """The inline assembly asks for at most 13 registers, so r7 may stay a frame pointer."""
    for graph in (random_graph(7), depthwise_asm_graph(3), thin_conv_graph(5), wide_block_graph(2),
                  thin_conv_graph(7, NARROW_CASES)):
        _compile_at(graph, tmp_path / graph.name, flags)


def _compile_at(graph: Graph, tmp_path: Path, flags) -> None:
    for target, cpu in (("armv7em-dsp", ("-mcpu=cortex-m4", "-mfpu=fpv4-sp-d16")), ("mve", ("-mcpu=cortex-m55",))):
        gen, _ = specialised(graph, target)
        folder = tmp_path / target
        codegen.write_files(gen.files, folder)
        for src in sorted(folder.glob("*.c")):
            done = subprocess.run(
                ["arm-none-eabi-gcc", "-std=c99", "-Wall", "-Wextra", "-Werror", "-mthumb", "-mfloat-abi=hard", *cpu, *flags,
                 "-c", str(src), "-o", str(src.with_suffix(".o"))],
                capture_output=True, text=True,
            )
            assert done.returncode == 0, f"{target} {flags} {src.name}: {done.stderr[:400]}"
