"""Code generation safety and shape: sanitised identifiers, escaped comments, exact literals."""

from __future__ import annotations


import numpy as np
import pytest

from helpers import OPS_DIR
from mcugen import driver
from mcugen.codegen import c_float, c_rows
from mcugen.lower import c_comment_text, c_identifier


@pytest.mark.parametrize(
    "text,expected",
    [
        ("person_detect", "person_detect"),
        ("My Model-v2.1", "my_model_v2_1"),
        ("3x3", "m_3x3"),
        ("int", "m_int"),
        ("main", "m_main"),
        ("", "model"),
        ("../../etc/passwd", "etc_passwd"),
        ("*/ #include <x> /*", "include_x"),
        ("mcugen_kernels", "m_mcugen_kernels"),
        ("é漢字", "model"),
    ],
)
def test_c_identifier(text, expected):
    assert c_identifier(text) == expected


def test_comment_text_cannot_close_comment():
    s = c_comment_text("a */ int evil; /* b\n#define X\\")
    assert "*/" not in s and "/*" not in s and "\n" not in s and "\\" not in s


def test_exact_float_literal():
    assert c_float(1 / 256) == "0x1.0000000000000p-8f"
    v = np.float32(0.0123456789)
    assert float.fromhex(c_float(v)[:-1]) == float(v)


def test_int32_min_is_valid_c():
    assert "(-2147483647 - 1)" in c_rows(np.array([-(2**31), 5], np.int64))


def test_hostile_tensor_name_is_escaped(tmp_path):
    """A tensor name that tries to close a comment and inject code must come out inert."""
    src = OPS_DIR / "conv2d_3x3_same_s1_relu.tflite"
    raw = src.read_bytes()
    old = b"serving_default_input0:0"
    assert old in raw
    hostile = b"*/ int pwn = 1; /*\n#x\\"
    hostile = hostile + b"_" * (len(old) - len(hostile))
    model = tmp_path / "hostile.tflite"
    model.write_bytes(raw.replace(old, hostile))
    gen = driver.build(model, name="../evil */")
    assert gen.program.name == "evil"
    c = "".join(gen.files.values())
    assert "int pwn" not in c.replace("int pwn = 1; /_*", "")  # only inside an escaped comment
    assert "*/ int pwn" not in c
    exe = driver.compile_host(gen, tmp_path / "build")
    runs = driver.random_inputs(gen.graph, 1, 0)
    out = driver.run_host(exe, gen, runs, tmp_path / "io")
    from mcugen.oracle import oracles_for

    assert np.array_equal(out[0][0], oracles_for(src)[0].run(runs[0])[0])


def test_generated_c_compiles_with_sanitizers(tmp_path):
    """ASan + UBSan over a chain model: no report, same outputs."""
    gen = driver.build(OPS_DIR / "chain_conv_dw_conv_add_mean_fc_softmax.tflite")
    exe = driver.compile_host(gen, tmp_path / "b", extra_cflags=("-fsanitize=address,undefined", "-fno-sanitize-recover=all", "-g"))
    runs = driver.random_inputs(gen.graph, 2, 0)
    out = driver.run_host(exe, gen, runs, tmp_path / "io")
    assert len(out) == 2


@pytest.mark.parametrize("kernels,target", [("mcugen", "armv7em-dsp"), ("mcugen", "mve"), ("mcugen", "portable")])
def test_kernel_pass_scratch_is_planned_inside_the_arena(kernels, target):
    """The specialised kernels' scratch is placed by the planner with the tensors: the arena
    the plan verified is the arena the code uses (no region appended past it)."""
    from helpers import real_model
    from mcugen.planner import verify

    path = real_model("mlperf_tiny_kws_ref_model.tflite")
    gen = driver.build(path, kernels=kernels, target=target)
    p = gen.program
    verify(p.buffers, p.plan, p.aliases)
    assert p.arena_bytes == p.plan.arena_bytes
    assert any(l.kernel and l.kernel.startswith(p.name) for l in p.layers), "no layer was specialised"
