"""ARG_MAX/ARG_MIN, SQUEEZE/EXPAND_DIMS and PACK on activations (issue 12): the graph rewrites,
what the support check refuses, ties, int32/int64 model outputs through the C API, `info` and
`evaluate`, and every per-op model bit-exact with the oracles on the host (3 seeds) and as
firmware on the emulated Cortex-M4 (DSP target)."""

from __future__ import annotations

import dataclasses
import json
import subprocess

import numpy as np
import pytest

from helpers import OPS_DIR, op_model_entries
from mcugen import driver
from mcugen.cli import main as cli_main
from mcugen.errors import ToolError
from mcugen.fold import fold_constants
from mcugen.ir import DType, OpType, Quant
from mcugen.oracle import ORACLE_TFLITE_MICRO, ORACLE_TFLITE_RUNTIME_REF, TflmOracle, oracles_for, read_signature
from mcugen.supported import find_blockers
from mcugen.tflite_reader import read_tflite
from mcugen.validate import validate
from mcugen.validate_board import runner_kwargs

NEW_OPS = ("ARG_MAX", "ARG_MIN", "SQUEEZE", "EXPAND_DIMS", "PACK")
MODELS = [e["file"][: -len(".tflite")] for e in op_model_entries() if e["op"] in NEW_OPS]


def test_every_new_op_has_models():
    entries = [e for e in op_model_entries() if e["op"] in NEW_OPS]
    assert {e["op"] for e in entries} == set(NEW_OPS)
    outputs = {e["outputs"][0]["dtype"] for e in entries if e["op"] in ("ARG_MAX", "ARG_MIN")}
    assert outputs == {"int32", "int64"}


# ---- bit-exact: host over three seeds, the emulated Cortex-M4 -----------------------------------


@pytest.mark.parametrize("seed", [0, 1, 2])
@pytest.mark.parametrize("name", MODELS)
def test_host_bit_exact(name, seed):
    report = validate(OPS_DIR / f"{name}.tflite", count=2, seed=seed)
    assert report.runs == 2 and report.oracles
    assert report.bit_exact, report.per_run


@pytest.mark.parametrize("name", MODELS)
def test_bit_exact_on_cortex_m4(name):
    report = validate(OPS_DIR / f"{name}.tflite", count=1, seed=2, kernels="mcugen", kernel_target="armv7em-dsp",
                      **runner_kwargs("qemu-mps2-an386"))
    assert report.target == "qemu-mps2-an386" and report.oracles
    assert report.bit_exact, report.per_run


SAN = ("-fsanitize=address,undefined", "-fno-sanitize-recover=all", "-fno-omit-frame-pointer", "-g")


@pytest.mark.parametrize("name", MODELS)
def test_sanitized_and_poisoned(name, tmp_path):
    """Under ASan/UBSan (a report exits non-zero), and with every dead arena byte overwritten
    between layers (the PACK's views share their inputs' bytes)."""
    from mcugen.validate import poisoned_host_runner

    path = OPS_DIR / f"{name}.tflite"
    gen = driver.build(path)
    exe = driver.compile_host(gen, tmp_path / "build", extra_cflags=SAN)
    runs = driver.random_inputs(gen.graph, 2, 11)
    outs = driver.run_host(exe, gen, runs, tmp_path / "io")
    oracle = oracles_for(path)[0]
    for r, arrays in enumerate(runs):
        for a, b in zip(outs[r], oracle.run(arrays)):
            assert a.dtype == b.dtype and np.array_equal(a, b)
    report = validate(path, count=2, seed=4, runner=poisoned_host_runner)
    assert report.bit_exact, report.per_run


# ---- ties --------------------------------------------------------------------------------------


@pytest.mark.parametrize("name", ["arg_max_wide_ties_int32", "arg_min_last_axis_int32", "arg_max_middle_axis_int64",
                                  "arg_min_axis1_int64"])
def test_ties_give_the_first_index(name, tmp_path):
    """Inputs of three values only, so that nearly every position ties: the C gives the oracle's
    indices, which are the first of the tied ones (the last ones differ, so this can fail)."""
    path = OPS_DIR / f"{name}.tflite"
    g = read_tflite(path)
    op = g.operators[0]
    x_t = g.t(g.inputs[0])
    rng = np.random.default_rng(5)
    runs = [[rng.choice(np.array([-3, 0, 5], np.int8), size=x_t.shape)] for _ in range(3)]
    gen = driver.build(path)
    exe = driver.compile_host(gen, tmp_path / "build")
    outs = driver.run_host(exe, gen, runs, tmp_path / "io")
    oracle = oracles_for(path)[0]
    fn = np.argmax if op.op is OpType.ARG_MAX else np.argmin
    for arrays, got in zip(runs, outs):
        want = oracle.run(arrays)[0]
        assert got[0].dtype == want.dtype and np.array_equal(got[0], want)
        x = arrays[0]
        axis = op.attrs.axis
        last = x.shape[axis] - 1 - fn(np.flip(x, axis=axis), axis=axis)
        assert not np.array_equal(want, last), "no ties in the inputs: the test would not see a wrong choice"


# ---- the graph rewrites --------------------------------------------------------------------------


@pytest.mark.parametrize("name", [m for m in MODELS if m.startswith(("squeeze", "expand_dims"))])
def test_squeeze_and_expand_dims_are_views(name):
    g = fold_constants(read_tflite(OPS_DIR / f"{name}.tflite"))
    assert [op.op for op in g.operators] == [OpType.RESHAPE] and find_blockers(g) == []
    layer = driver.build(OPS_DIR / f"{name}.tflite").program.layers[0]
    assert layer.kernel is None and "a view of its input, no code" in layer.comment[0]


def test_pack_becomes_a_reshape_of_each_input_and_a_concatenation():
    path = OPS_DIR / "pack_axis_last_three.tflite"
    g = read_tflite(path)
    (pack,) = g.operators
    folded = fold_constants(g)
    assert [op.op for op in folded.operators] == [OpType.RESHAPE] * 3 + [OpType.CONCATENATION]
    concat = folded.operators[-1]
    assert concat.index == pack.index and concat.outputs == pack.outputs and concat.attrs.axis == 2
    assert len({op.index for op in folded.operators}) == 4
    for reshape, x in zip(folded.operators, pack.inputs):
        assert reshape.inputs == [x] and folded.t(reshape.outputs[0]).shape == g.t(x).shape + (1,)
    layers = driver.build(path).program.layers
    assert [layer.kernel for layer in layers] == [None, None, None, "mcugen_concat_8"]  # the views cost nothing


def _with_tensor(g, index, **changes):
    g.tensors[index] = dataclasses.replace(g.t(index), **changes)
    return g


def _only_blocker(g):
    blockers = find_blockers(fold_constants(g))
    assert len(blockers) == 1, blockers
    return blockers[0]


def test_refusals_name_the_reason():
    g = read_tflite(OPS_DIR / "pack_axis0_two.tflite")
    q = g.t(g.outputs[0]).quant
    g = _with_tensor(g, g.outputs[0], quant=Quant(q.scale * 2, q.zero_point))
    b = _only_blocker(g)
    assert b.op_name == "PACK" and "output scale" in b.detail and "does not rescale" in b.rule
    assert [op.op for op in fold_constants(g).operators] == [OpType.PACK]

    g = read_tflite(OPS_DIR / "squeeze_axis_neg2.tflite")
    g = _with_tensor(g, g.outputs[0], shape=(1, 6, 4))
    b = _only_blocker(g)
    assert b.op_name == "SQUEEZE" and "[1, 4, 6]" in b.detail and b.rule.startswith("SQUEEZE/EXPAND_DIMS")

    g = read_tflite(OPS_DIR / "expand_dims_axis1_rank2.tflite")
    axis = g.operators[0].inputs[1]
    g = _with_tensor(g, axis, data=np.asarray([4], g.t(axis).dtype.numpy))
    assert "inserts axis 4 into a rank-2 tensor" in _only_blocker(g).detail

    g = read_tflite(OPS_DIR / "arg_max_last_axis_int32.tflite")
    g = _with_tensor(g, g.outputs[0], dtype=DType.BOOL)
    details = [b.detail for b in find_blockers(g)]
    assert any("output tensor" in d and "bool" in d for d in details)  # the operator
    assert any(d.startswith("graph output tensor") for d in details)  # and the graph output

    # tflite-runtime types the indices by the options' output_type: it must be the tensor's
    g = read_tflite(OPS_DIR / "arg_min_axis1_int64.tflite")
    assert g.operators[0].attrs.output_type is DType.INT64 and find_blockers(g) == []
    g.operators[0].attrs = dataclasses.replace(g.operators[0].attrs, output_type=DType.INT32)
    assert "names int32 as its output type in its options but writes int64" in _only_blocker(g).detail


def test_tflite_micro_is_no_oracle_for_int64_indices():
    path = OPS_DIR / "arg_max_middle_axis_int64.tflite"
    assert [o.name for o in oracles_for(path)] == [ORACLE_TFLITE_RUNTIME_REF]
    signature = read_signature(path.read_bytes(), path)
    with pytest.raises(ToolError, match="int64 indices; its kernel supports int32 only"):
        TflmOracle(path, path.read_bytes(), signature)
    int32 = OPS_DIR / "arg_max_last_axis_int32.tflite"
    assert [o.name for o in oracles_for(int32)] == [ORACLE_TFLITE_RUNTIME_REF, ORACLE_TFLITE_MICRO]


# ---- an index as the model's output: C API, info, evaluate ---------------------------------------

APP = r"""
#include <stdio.h>
#include <stdint.h>
#include "clf.h"

#if CLF_OUTPUT0_TYPE != MCUGEN_TYPE_INT32 || CLF_OUTPUT0_BYTES != 4 || CLF_OUTPUT0_ELEMENTS != 1
#error "expected one int32 class index"
#endif
#ifdef CLF_OUTPUT0_SCALE
#error "an index has no quantization"
#endif

int main(void)
{
    int8_t *image = (int8_t *)clf_input(0);
    int i;
    for (i = 0; i < CLF_INPUT0_BYTES; ++i) {
        image[i] = (int8_t)((i * 37) % 256 - 128);
    }
    if (clf_invoke() != 0) {
        return 1;
    }
    printf("%ld\n", (long)*(const int32_t *)clf_output(0));
    return 0;
}
"""


def test_c_api_of_an_index_output(tmp_path):
    path = OPS_DIR / "fc_arg_max_classifier.tflite"
    out = tmp_path / "clf"
    assert cli_main(["generate", str(path), "-o", str(out), "--name", "clf"]) == 0
    (out / "app.c").write_text(APP)
    exe = tmp_path / "app"
    sources = [str(p) for p in sorted(out.glob("*.c"))]
    subprocess.run([driver.host_cc(), *driver.HOST_CFLAGS, "-I", str(out), *sources, "-o", str(exe)], check=True)
    got = int(subprocess.run([str(exe)], capture_output=True, text=True, check=True).stdout)
    x = ((np.arange(6 * 6 * 3) * 37) % 256 - 128).astype(np.int8).reshape(1, 6, 6, 3)
    want = oracles_for(path)[0].run([x])[0]
    assert want.dtype == np.int32 and got == int(want.reshape(-1)[0])
    header = (out / "clf.h").read_text()
    assert "CLF_OUTPUT0_TYPE_NAME \"int32\"" in header

    int64 = tmp_path / "i64"
    assert cli_main(["generate", str(OPS_DIR / "arg_min_axis1_int64.tflite"), "-o", str(int64), "--name", "m"]) == 0
    header = (int64 / "m.h").read_text()
    assert "M_OUTPUT0_TYPE MCUGEN_TYPE_INT64" in header and "M_OUTPUT0_BYTES 96" in header  # 1x4x3 int64


def test_info_on_the_new_ops(capsys):
    for name, op, dtype in (("pack_axis1_rank4_two", "PACK", "int8"), ("arg_max_middle_axis_int64", "ARG_MAX", "int64"),
                            ("squeeze_three_axes_rank5", "SQUEEZE", "int8")):
        assert cli_main(["info", str(OPS_DIR / f"{name}.tflite"), "--json"]) == 0
        info = json.loads(capsys.readouterr().out)
        assert info["ops"] == {op: 1} and info["outputs"][0]["dtype"] == dtype
    assert cli_main(["info", str(OPS_DIR / "fc_arg_max_classifier.tflite"), "--board", "qemu-mps2-an386"]) == 0
    assert "output 0:     [1] int32" in capsys.readouterr().out


def test_evaluate_reads_the_index_as_the_prediction(tmp_path, capsys):
    rng = np.random.default_rng(3)
    data = tmp_path / "d.npz"
    np.savez(data, x=rng.integers(0, 256, (10, 6, 6, 3)).astype(np.uint8), y=rng.integers(0, 5, 10))
    model = OPS_DIR / "fc_arg_max_classifier.tflite"
    assert cli_main(["evaluate", str(model), str(data), "--json", "--quiet", "--board", "qemu-mps2-an386",
                     "--count", "3"]) == 0
    report = json.loads(capsys.readouterr().out)
    assert report["classes"] == 5 and report["images"] == 10
    results = report["results"]
    assert all("top5" not in row for row in results.values())
    assert results["c_host"]["predictions"] == results["int8_reference"]["predictions"]
    assert report["agreement"]["int8_vs_c_bit_exact"] is True and report["agreement"]["board_vs_host_bit_exact"] is True
    # the predictions are the model's own indices: run the reference on the same images independently
    from mcugen.datasets import DEFAULT_OFFSET, DEFAULT_SCALE, preprocess
    from mcugen.quantize import quantize_input, run_reference

    raw = model.read_bytes()
    images = np.load(data)["x"]
    indices = run_reference(raw, quantize_input(raw, preprocess(images, DEFAULT_SCALE, DEFAULT_OFFSET)))
    assert results["int8_reference"]["predictions"] == [int(v) for v in indices.reshape(-1)]
    assert len(set(results["int8_reference"]["predictions"])) > 1


@pytest.mark.parametrize("name, wrong, layer", [
    ("pack_axis0_two", (".outer = ", ".outer = 0 * "), 2),  # the CONCATENATION after the two views
    ("arg_max_axis1_int32_rank3", (".find_min = 0", ".find_min = 1"), 0),
])
def test_a_wrong_build_is_caught_and_its_layer_named(name, wrong, layer, monkeypatch):
    """--layers skips the tensors only the rewrite has (PACK's views) and names the layer."""
    real_compile = driver.compile_host

    def broken_compile(gen, build_dir, extra_cflags=()):
        c = f"{gen.program.name}.c"
        if wrong[1] not in gen.files[c]:  # --layers compiles the same files again
            assert wrong[0] in gen.files[c]
            gen.files[c] = gen.files[c].replace(*wrong, 1)
        return real_compile(gen, build_dir, extra_cflags)

    monkeypatch.setattr(driver, "compile_host", broken_compile)
    report = validate(OPS_DIR / f"{name}.tflite", count=2, seed=1, layers=True)
    assert not report.bit_exact and report.first_bad_layer is not None
    assert report.first_bad_layer.layer == layer
