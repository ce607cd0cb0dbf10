"""Float and uint8 model I/O on the emulated Cortex-M4 (real arm-none-eabi-gcc and QEMU): the
float QUANTIZE links without libm and rounds like TfLiteRound; the uint8 -> int8 QUANTIZE with
scale ratio 1 is one XOR pass under 1.5 instructions per element."""

from __future__ import annotations

import numpy as np
import pytest

from helpers import OPS_DIR
from test_fast_kernels import run_board, specialised
from mcugen import driver
from mcugen.emulate import emulate
from mcugen.ir import DType, Graph, Operator, OpType, Quant, Tensor
from mcugen.tflite_reader import read_tflite
from mcugen.validate import validate
from mcugen.validate_board import runner_kwargs

M4 = "qemu-mps2-an386"


def _half_way_inputs(tmp_path, model):
    """Inputs at exact half steps of the QUANTIZE's output scale (and the range ends), where a
    wrong rounding rule shows."""
    g = read_tflite(model)
    q = next(op for op in g.operators if op.op is OpType.QUANTIZE)
    out = g.t(q.outputs[0])
    x = g.t(g.inputs[0])
    k = np.arange(x.size) % 300 - 150  # beyond both ends of int8 too
    values = ((k + 0.5) * np.float32(out.quant.s)).astype(np.float32)
    values[:4] = [0.0, -0.0, 0.5 * out.quant.s, -0.5 * out.quant.s]
    path = tmp_path / "half.npy"
    np.save(path, values.reshape(x.shape))
    return [str(path)]


@pytest.mark.parametrize("board", ["host", M4])
def test_float_input_rounds_half_away_from_zero(tmp_path, board):
    model = OPS_DIR / "quantize_float_input.tflite"
    kwargs = runner_kwargs(board) if board != "host" else {}
    report = validate(model, input_files=_half_way_inputs(tmp_path, model), **kwargs)
    assert report.runs == 1 and report.bit_exact, report.per_run


def _around_half_steps(n: int, scale: np.float32) -> np.ndarray:
    """n float32 values cycling over the half steps k + 1/2 of `scale`, k in -300..299: one
    float step above each, one below, and the half step itself."""
    k = (np.arange(n) // 3) % 600 - 300
    half = ((k + 0.5) * scale).astype(np.float32)
    step = np.arange(n) % 3
    return np.where(step == 0, np.nextafter(half, np.float32(np.inf)),
                    np.where(step == 1, np.nextafter(half, np.float32(-np.inf)), half)).astype(np.float32)


def _near_half_way_inputs(tmp_path, model):
    """Inputs where a QUANTIZE that multiplies by 1/scale instead of dividing could round
    differently: one float step either side of each half step, the half steps themselves, values
    where the fixed-point conversion saturates, subnormals, +-0, -inf and NaN (not +inf or values
    beyond 2^31 steps: converting them to int32 is undefined in the reference, x86 gives INT32_MIN)."""
    g = read_tflite(model)
    q = next(op for op in g.operators if op.op is OpType.QUANTIZE)
    s = np.float32(g.t(q.outputs[0]).quant.s)
    x = g.t(g.inputs[0])
    values = _around_half_steps(x.size, s)
    special = np.array([np.nan, 1.0, -np.inf, -np.nan, np.nan, 1e-45, -1e-45, 0.0, -0.0,
                        -3.4e38, 40000 * s, -40000 * s, 32767.5 * s, -32768.5 * s, 511.5 * s, -511.5 * s,
                        127.5 * s, -128.5 * s], dtype=np.float32)
    values[5:5 + len(special)] = special
    path = tmp_path / "near_half.npy"
    np.save(path, values.reshape(x.shape))
    return [str(path)]


@pytest.mark.parametrize("board", ["host", M4])
def test_float_input_near_half_steps_and_non_finite(tmp_path, board):
    """The M4's float QUANTIZE multiplies by 1/scale and falls back to the division within 2^-12
    of a half step and for NaN: one float step either side of a half step still rounds like the
    reference, and so do saturating, infinite and NaN inputs."""
    model = OPS_DIR / "quantize_float_input.tflite"
    kwargs = runner_kwargs(board) if board != "host" else {}
    report = validate(model, input_files=_near_half_way_inputs(tmp_path, model), **kwargs)
    assert report.runs == 1 and report.bit_exact, report.per_run


@pytest.mark.parametrize("model", ["quantize_float_input.tflite", "quantize_dequantize_float_io.tflite",
                                   "quantize_uint8_io.tflite"])
def test_float_and_uint8_io_on_cortex_m4(model):
    report = validate(OPS_DIR / model, count=2, seed=11, **runner_kwargs(M4))
    assert report.target == M4
    assert report.bit_exact, (model, report.per_run)


def test_uint8_input_quantize_is_one_xor_pass():
    program = driver.build(OPS_DIR / "quantize_uint8_io.tflite").program
    kernels = [l.kernel for l in program.layers if l.op == "QUANTIZE"]
    assert kernels == ["mcugen_flip_sign_8", "mcugen_flip_sign_8"]  # uint8 in -> int8, int8 -> uint8 out


def test_uint8_input_quantize_under_1_5_instructions_per_element_on_m4():
    from mcugen.cli import main as cli_main  # noqa: F401  (the bench command is what users run)
    import json
    import subprocess
    import sys

    model = OPS_DIR / "quantize_uint8_input_64x64.tflite"
    r = subprocess.run([sys.executable, "-m", "mcugen", "bench", str(model), "--board", M4, "--json"],
                       capture_output=True, text=True, timeout=900)
    assert r.returncode == 0, r.stderr[-1500:]
    layers = json.loads(r.stdout)["layers"]
    assert layers[0]["op"] == "QUANTIZE"
    elements = 64 * 64 * 3
    per_element = layers[0]["instructions"] / elements
    assert per_element < 1.5, per_element


STREAMED = ["quantize_float_input.tflite", "quantize_dequantize_float_io.tflite", "quantize_uint8_io.tflite",
            "chain16x8_float_io.tflite"]  # the last: float32 -> int16 (16x8)


@pytest.mark.parametrize("board", ["host", M4])
@pytest.mark.parametrize("model", STREAMED)
def test_streamed_inputs_bit_exact(tmp_path, model, board):
    """--stream-inputs: the input QUANTIZE runs in <name>_input_write(), fed a row at a time (host)
    or 256 bytes at a time (M4), at the half steps where rounding shows and on random inputs."""
    from mcugen.options import CompileOptions

    path = OPS_DIR / model
    kwargs = runner_kwargs(board) if board != "host" else {}
    opts = CompileOptions(board=None if board == "host" else board, stream_inputs=True)
    inputs = _half_way_inputs(tmp_path, path) if "float" in model else []
    report = validate(path, input_files=inputs, count=2, seed=5, options=opts, **kwargs)
    assert report.bit_exact, (model, report.per_run)


@pytest.mark.parametrize("model", STREAMED)
def test_streamed_input_leaves_the_arena(model):
    from mcugen.options import CompileOptions

    held = driver.build(OPS_DIR / model, options=CompileOptions())
    streamed = driver.build(OPS_DIR / model, options=CompileOptions(stream_inputs=True))
    source = held.graph.t(held.graph.inputs[0])
    assert streamed.program.inputs[0].offset == -1 and streamed.program.inputs[0].nbytes == source.nbytes
    assert len(streamed.program.layers) == len(held.program.layers) - 1
    assert streamed.program.arena_bytes <= held.program.arena_bytes
    header = streamed.files[f"{streamed.program.name}.h"]
    assert f"{streamed.program.name.upper()}_INPUT0_STREAMED 1" in header
    assert f"int {streamed.program.name}_input_write(" in header
    assert "_input_write(" not in held.files[f"{held.program.name}.h"]


def test_stream_inputs_rejects_out_of_range_writes(tmp_path):
    """<name>_input_write() refuses a bad index or range (returns 1) and writes nothing then."""
    import subprocess

    from mcugen.options import CompileOptions

    gen = driver.build(OPS_DIR / "quantize_float_input.tflite", options=CompileOptions(name="m", stream_inputs=True))
    for name, text in gen.files.items():
        (tmp_path / name).write_text(text)
    n = gen.graph.t(gen.graph.inputs[0]).size
    (tmp_path / "t.c").write_text(f"""
#include <stdio.h>
#include "m.h"
static float src[{n}];
int main(void)
{{
    int bad = 0;
    bad |= m_input(0) != NULL;
    bad |= m_input_write(0, 0, src, {n}) != 0;
    bad |= m_input_write(0, 1, src, {n}) != 1;
    bad |= m_input_write(0, -1, src, 1) != 1;
    bad |= m_input_write(0, 0, src, -1) != 1;
    bad |= m_input_write(1, 0, src, 1) != 1;
    bad |= m_input_write(0, 0, NULL, 1) != 1;
    bad |= m_input_write(0, {n}, src, 0) != 0;
    printf("%d\\n", bad);
    return bad;
}}
""")
    sources = [str(tmp_path / f) for f in gen.files if f.endswith(".c")] + [str(tmp_path / "t.c")]
    exe = tmp_path / "t"
    subprocess.run(["gcc", *driver.HOST_CFLAGS, "-I", str(tmp_path), *sources, "-o", str(exe)], check=True)
    done = subprocess.run([str(exe)], capture_output=True, text=True)
    assert done.returncode == 0 and done.stdout.strip() == "0", done.stdout


@pytest.mark.parametrize("zero_point", [0, 128, 255])
def test_float_to_uint8_quantize_near_half_steps_on_cortex_m4(zero_point):
    """The M4's float QUANTIZE to uint8 (its USAT path), against the numpy model of the
    reference: one float step either side of every half step, the half steps, NaN and -inf."""
    n = 1800
    scale = np.float32(0.0123)
    x = Tensor(0, "x", (1, n), DType.FLOAT32)
    y = Tensor(1, "y", (1, n), DType.UINT8, Quant(np.array([scale], np.float32), np.array([zero_point], np.int64)))
    graph = Graph(f"q_u8_{zero_point}", [x, y], [Operator(0, OpType.QUANTIZE, [0], [1])], [0], [1])
    values = _around_half_steps(n, scale)
    values[:4] = [np.nan, -np.inf, 0.0, -0.0]
    runs = [[values.reshape(1, n)]]
    gen, _ = specialised(graph, "armv7em-dsp")
    got = run_board(gen, M4, runs)[0][0].reshape(-1)
    want = np.asarray(emulate(graph, runs[0]).outputs[0]).reshape(-1).astype(np.uint8)
    assert np.array_equal(got, want), np.flatnonzero(got != want)[:10]
