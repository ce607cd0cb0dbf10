"""The CMSIS-NN backend (mcugen.kernels.cmsis_nn): the checkout is found or refused with a clear
message, calls and scratch are generated from the library's own API, and models built against it
are bit-exact with tflite-runtime on the host and on the emulated cores.

Tests that compile CMSIS-NN skip unless CMSIS_NN_PATH names a checkout
(git clone https://github.com/ARM-software/CMSIS-NN); mcugen never vendors it."""

from __future__ import annotations

import os
import shutil
import subprocess
import sys
import tempfile
from pathlib import Path

import numpy as np
import pytest

from helpers import OPS_DIR

from mcugen.oracle import oracles_for  # noqa: I001  (loads tflite-runtime before TensorFlow can be)

from mcugen import codegen, driver
from mcugen.boards import get_board
from mcugen.errors import ToolError
from mcugen.kernels import apply_kernels
from mcugen.kernels.cmsis_nn import ENV_VAR, cmsis_nn_path, source_index, to_cmsis_nn
from mcugen.lower import lower
from mcugen.targets import get_target, target_for_board
from mcugen.tflite_reader import read_tflite

CHECKOUT = os.environ.get(ENV_VAR)
needs_cmsis = pytest.mark.skipif(
    not CHECKOUT or not Path(CHECKOUT, "Include", "arm_nnfunctions.h").is_file(),
    reason=f"set {ENV_VAR} to a CMSIS-NN checkout (git clone https://github.com/ARM-software/CMSIS-NN) to run this test",
)
needs_qemu = pytest.mark.skipif(
    not all(shutil.which(t) for t in ("qemu-system-arm", "arm-none-eabi-gcc", "make")),
    reason="needs qemu-system-arm and arm-none-eabi-gcc (scripts/setup.sh)",
)


def test_missing_checkout_is_a_clear_error(tmp_path, monkeypatch):
    monkeypatch.delenv(ENV_VAR, raising=False)
    with pytest.raises(ToolError, match=f"--cmsis-nn PATH or set {ENV_VAR}"):
        cmsis_nn_path(None)
    with pytest.raises(ToolError, match="is not a CMSIS-NN checkout"):
        cmsis_nn_path(tmp_path)
    program = lower(read_tflite(OPS_DIR / "conv2d_1x1_valid_s1_none.tflite"), "net")
    with pytest.raises(ToolError, match="CMSIS-NN checkout"):
        apply_kernels(program, "cmsis-nn", get_target("portable"), None)


def test_repo_does_not_vendor_cmsis_nn():
    repo = Path(__file__).resolve().parents[1]
    tracked = subprocess.run(["git", "ls-files"], cwd=repo, capture_output=True, text=True).stdout.split()
    assert not [f for f in tracked if Path(f).name in ("arm_nnfunctions.h", "arm_nn_types.h", "arm_convolve_s8.c")]


def build(path: Path, target: str, strategy: str = "layerwise"):
    graph = read_tflite(path)
    program = lower(graph, "net", strategy=strategy)
    result = to_cmsis_nn(program, get_target(target), CHECKOUT)
    files = result.merged_files(codegen.render_model(result.program, graph))
    return driver.Generated(graph=graph, program=result.program, files=files), result


@needs_cmsis
def test_source_index_finds_the_api_and_its_dependencies():
    index = source_index(Path(CHECKOUT))
    for fn in ("arm_convolve_wrapper_s8", "arm_depthwise_conv_wrapper_s8", "arm_fully_connected_wrapper_s8",
               "arm_elementwise_add_s8", "arm_avgpool_s8", "arm_max_pool_s8", "arm_softmax_s8"):
        assert fn in index.defines, fn
    files = index.closure({"arm_convolve_wrapper_s8"})
    assert "ConvolutionFunctions/arm_convolve_wrapper_s8.c" in files
    assert any("mat_mult" in f for f in files), "the wrapper's kernels' helpers are followed"


@needs_cmsis
def test_generated_calls_and_scratch():
    gen, result = build(OPS_DIR / "chain_conv_dw_conv_add_mean_fc_softmax.tflite", "armv7em-dsp")
    text = gen.files["net_cmsis_nn.c"]
    for fn in ("arm_convolve_wrapper_s8", "arm_depthwise_conv_wrapper_s8", "arm_fully_connected_wrapper_s8",
               "arm_softmax_s8"):
        assert fn + "(" in text
    assert "arm_elementwise_add_s8(" in text or "mcugen_add_s8" in gen.files["net.c"]
    assert any(n.startswith("cmsis_nn_") and n.endswith(".c") for n in gen.files)
    for n, body in gen.files.items():
        if n.startswith("cmsis_nn_"):
            assert body.count("#include") == 1, "wrappers only include the checkout's file"
    assert result.cflags == (f"-I{Path(CHECKOUT).resolve() / 'Include'}", f"-I{Path(CHECKOUT).resolve() / 'Source'}")
    for s in result.scratch:
        assert s.size > 0
        layer = next(l for l in result.program.layers if l.index == s.step)
        assert layer.args[-1].offset + s.size <= result.program.arena_bytes


def run_host(gen, result, runs):
    with tempfile.TemporaryDirectory(prefix="mcugen-cmsis-") as tmp:
        exe = driver.compile_host(gen, Path(tmp) / "build", ("-DMCUGEN_POISON", *result.cflags))
        return driver.run_host(exe, gen, runs, Path(tmp) / "io")


def assert_equal_runs(got, want, what):
    for r, (g_run, w_run) in enumerate(zip(got, want)):
        for k, (a, b) in enumerate(zip(g_run, w_run)):
            b = np.asarray(b).reshape(a.shape).astype(a.dtype)
            assert np.array_equal(a, b), f"{what}: run {r} output {k} differs"


OP_MODELS = sorted(
    p.name for p in OPS_DIR.glob("*.tflite")
    if p.stem.split("_")[0] in ("conv2d", "depthwise", "fully", "add", "mul", "avgpool", "maxpool", "softmax", "chain", "two")
)


@needs_cmsis
@pytest.mark.parametrize("name", OP_MODELS)
def test_op_models_bit_exact_on_the_host(name):
    path = OPS_DIR / name
    gen, result = build(path, "portable")
    runs = driver.random_inputs(gen.graph, 2, seed=4)
    oracle = oracles_for(path)[0]
    assert_equal_runs(run_host(gen, result, runs), [oracle.run(r) for r in runs], f"{name} via CMSIS-NN (C)")


def run_board(gen, result, board_name, runs):
    from mcugen.firmware import build_firmware
    from mcugen.qemu import describe_failure, run_on_qemu_batch

    board = get_board(board_name)
    g = gen.graph
    with tempfile.TemporaryDirectory(prefix="mcugen-cmsis-fw-") as tmp:
        codegen.write_files(gen.files, Path(tmp) / "model")
        fw = build_firmware(Path(tmp) / "model", "net", board, Path(tmp) / "fw", extra_cflags=result.cflags)
        blobs = [[np.ascontiguousarray(a).tobytes() for a in r] for r in runs]
        res = run_on_qemu_batch(fw.elf, board, blobs, timeout=300)
        assert res.exit_code == 0, describe_failure(res.exit_code, res.stderr, 300)
        return [[np.frombuffer(b, dtype=g.t(i).dtype.numpy).reshape(g.t(i).shape) for b, i in zip(out, g.outputs)]
                for out in res.outputs]


BOARD_MODELS = ["conv2d_3x3_same_s2_relu6.tflite", "depthwise_3x3_same_s1_m1_relu6.tflite",
                "depthwise_3x3_valid_s2_m2_relu.tflite", "fully_connected_per_channel_bias_none.tflite",
                "avgpool_3x3_s2_same.tflite", "maxpool_3x3_s1_same.tflite", "add_same_relu.tflite",
                "mul_same_none.tflite", "softmax_beta1.tflite", "chain_conv_dw_conv_add_mean_fc_softmax.tflite"]


@needs_cmsis
@needs_qemu
@pytest.mark.parametrize("board", ["qemu-mps2-an386", "qemu-mps3-an547"])
def test_op_models_bit_exact_on_the_emulated_cores(board):
    for name in BOARD_MODELS:
        path = OPS_DIR / name
        gen, result = build(path, target_for_board(get_board(board)).name)
        runs = driver.random_inputs(gen.graph, 2, seed=8)
        oracle = oracles_for(path)[0]
        assert_equal_runs(run_board(gen, result, board, runs), [oracle.run(r) for r in runs], f"{name} on {board}")


@needs_cmsis
@needs_qemu
def test_mobilenet_v2_bit_exact_on_the_m4(tmp_path):
    path = tmp_path / "mnv2.tflite"
    done = subprocess.run(
        [sys.executable, "-m", "mcugen", "model", "mobilenet_v2", "--alpha", "0.35", "--resolution", "96",
         "--classes", "10", "--samples", "4", "-o", str(path)],
        capture_output=True, text=True, timeout=900,
    )
    assert done.returncode == 0, done.stderr[-2000:]
    gen, result = build(path, "armv7em-dsp")
    runs = driver.random_inputs(gen.graph, 1, seed=3)
    oracle = oracles_for(path)[0]
    assert_equal_runs(run_board(gen, result, "qemu-mps2-an386", runs), [oracle.run(r) for r in runs], "MobileNet v2 via CMSIS-NN on the M4")
