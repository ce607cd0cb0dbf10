"""SOFTMAX with its exponentials computed where they are used (elementwise.softmax_table_pays: few
elements) or from the 1 KB table (many): both bit-exact against tflite-runtime on the host and
the emulated M4, and the computed ones equal the table's for every input difference and
quantization tried."""

from __future__ import annotations

import numpy as np
import pytest

from mcugen.oracle import oracles_for  # noqa: F401,I001  (loads tflite-runtime before TensorFlow can be)

from helpers import OPS_DIR
from test_fast_kernels import assert_equal_runs, have_qemu, run_board, run_host, specialised

from mcugen import driver, quant
from mcugen.kernels import elementwise
from mcugen.tflite_reader import read_tflite

MODELS = ["softmax_beta1.tflite", "softmax_beta0p5.tflite", "softmax_beta1_rank4.tflite"]


def test_the_table_only_where_it_pays():
    assert not elementwise.softmax_table_pays(10, False)  # a 10-class head: 3,600 instructions for 554 bytes
    assert elementwise.softmax_table_pays(1001, False)  # ImageNet's 1001 classes: 360K instructions
    assert not elementwise.softmax_table_pays(1001, True)  # flash tight: never


@pytest.mark.parametrize("table", [False, True], ids=["computed", "table"])
@pytest.mark.parametrize("name", MODELS)
def test_softmax_bit_exact_on_the_host_and_the_m4(name, table, monkeypatch):
    monkeypatch.setattr(elementwise, "SOFTMAX_TABLE", table)
    path = OPS_DIR / name
    graph = read_tflite(path)
    gen, result = specialised(graph, "armv7em-dsp")
    plan = next(p for p in result.plans.values() if p.kind == "softmax")
    assert bool(plan.table) == table
    assert ("_exp[" in gen.files["net_layers.c"]) == table
    runs = driver.random_inputs(graph, 3, seed=11)
    oracle = oracles_for(path)[0]
    want = [oracle.run(r) for r in runs]
    assert_equal_runs(run_host(gen, runs), want, f"{name} on the host")
    if have_qemu():
        assert_equal_runs(run_board(gen, "qemu-mps2-an386", runs), want, f"{name} on the M4")


def test_the_computed_exponentials_equal_the_table_for_every_difference(tmp_path):
    """The C `_exp` of the computed form (compiled on the host) against the table mcugen would
    store (quant.exp_on_negative_values after the input scaling, 0 below diff_min), for every
    difference 0..255 and input scales from 1e-3 to 2 at beta 1 and 0.5."""
    import subprocess

    from mcugen import codegen

    env = codegen.environment()
    misc = env.get_template("c/fast/misc.c.j2").make_module({})
    cases = []
    for scale in (1e-3, 0.0123, 0.05, 0.1, 0.25, 0.5, 1.0, 2.0):
        for beta in (1.0, 0.5):
            p = quant.softmax_params(scale, beta)
            cases.append(p)
    src = ["#include <stdint.h>", "#include <stdio.h>"]
    calls = []
    for n, p in enumerate(cases):
        plan = elementwise.SoftmaxPlan(name=f"s{n}", index=n, isa="dsp", outer=1, depth=1, table="",
                                       input_multiplier=p.input_multiplier, input_left_shift=p.input_left_shift,
                                       diff_min=p.diff_min)
        text = str(misc.softmax(plan))
        src.append(text[: text.index(f"void s{n}(")])  # the helpers, not the kernel
        calls.append(f"for (d = 0; d < 256; ++d) printf(\"%ld\\n\", (long)s{n}_exp(d));")
    src.append("int main(void) { int32_t d; " + " ".join(calls) + " return 0; }")
    (tmp_path / "t.c").write_text("\n".join(src))
    subprocess.run(["gcc", "-std=c99", "-O2", "-Wall", "-Wno-unused-function", str(tmp_path / "t.c"), "-o",
                    str(tmp_path / "t")], check=True)
    got = np.array([int(x) for x in subprocess.run([str(tmp_path / "t")], capture_output=True, text=True,
                                                   check=True).stdout.split()]).reshape(len(cases), 256)
    for n, p in enumerate(cases):
        diff = -np.arange(256, dtype=np.int64)
        scaled = np.asarray(quant.multiply_by_quantized_multiplier_greater_than_one(
            diff, p.input_multiplier, p.input_left_shift), np.int64)
        want = np.asarray(quant.exp_on_negative_values(scaled, quant.SOFTMAX_SCALED_DIFF_INTEGER_BITS), np.int64)
        want = np.where(diff >= p.diff_min, want, 0)
        assert np.array_equal(got[n], want), (n, p)
