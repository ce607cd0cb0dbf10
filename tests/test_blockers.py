"""The support check names every blocker of a model in one run, grouped by operator type and rule."""

from __future__ import annotations

import subprocess
import sys

import pytest

from helpers import OPS_DIR, REPO
from mcugen.errors import UnsupportedError, UnsupportedOpsError
from mcugen.ir import MeanAttrs, OpType
from mcugen.supported import check_graph, find_blockers
from mcugen.tflite_reader import read_tflite

CHAIN = OPS_DIR / "chain_conv_dw_conv_add_mean_fc_softmax.tflite"


def _graph_with_blockers():
    g = read_tflite(CHAIN)
    ops = {op.op: op for op in g.operators}
    conv = g.operators[0]
    conv.op = None
    conv.unknown_name = "FANCY_OP"  # what the reader records for an operator it does not know
    ops[OpType.SOFTMAX].op = None
    ops[OpType.SOFTMAX].unknown_name = "FANCY_OP"
    mean = ops[OpType.MEAN]
    mean.attrs = MeanAttrs(axes=(7,), keep_dims=mean.attrs.keep_dims)
    return g, conv.index, ops[OpType.SOFTMAX].index, mean.index


def test_every_blocker_in_one_message_grouped():
    g, conv, softmax, mean = _graph_with_blockers()
    assert len(find_blockers(g)) == 3
    with pytest.raises(UnsupportedOpsError) as e:
        check_graph(g)
    lines = str(e.value).splitlines()
    assert lines[0].endswith("3 operators or properties mcugen cannot generate, in 2 groups:")
    assert lines[1] == f"- 2 operators {conv}, {softmax} (FANCY_OP): not supported"
    assert lines[2].startswith(f"- operator {mean} (MEAN): ") and "rule: MEAN/SUM:" in lines[2]
    assert lines[3].startswith("- supported ops: CONV_2D")
    assert len(lines) == 4


def test_one_blocker_keeps_one_line():
    g = read_tflite(CHAIN)
    g.operators[-1].op = None
    g.operators[-1].unknown_name = "FANCY_OP"
    with pytest.raises(UnsupportedError) as e:
        check_graph(g)
    assert not isinstance(e.value, UnsupportedOpsError)
    assert "\n" not in str(e.value) and "is not supported; supported ops:" in str(e.value)


def test_cli_lists_all_and_exits_2(tmp_path):
    """`info` on a model with several blockers prints one line per group on stderr and exits 2."""
    import struct

    import tflite

    # Turn the chain model's SOFTMAX and MEAN opcodes into SVDF (a recurrent op mcugen refuses).
    data = bytearray(CHAIN.read_bytes())
    m = tflite.Model.GetRootAsModel(data, 0)
    patched = 0
    for i in range(m.OperatorCodesLength()):
        oc = m.OperatorCodes(i)
        if oc.BuiltinCode() not in (tflite.BuiltinOperator.SOFTMAX, tflite.BuiltinOperator.MEAN):
            continue
        for slot, fmt in ((4, "<b"), (10, "<i")):  # deprecated_builtin_code, builtin_code
            off = oc._tab.Offset(slot)
            if off:
                struct.pack_into(fmt, data, oc._tab.Pos + off, tflite.BuiltinOperator.SVDF)
        patched += 1
    assert patched == 2
    path = tmp_path / "two_blockers.tflite"
    path.write_bytes(bytes(data))
    r = subprocess.run([sys.executable, "-m", "mcugen", "info", str(path)], capture_output=True, text=True, cwd=REPO)
    assert r.returncode == 2, r.stderr
    assert "Traceback" not in r.stderr
    lines = r.stderr.strip().splitlines()
    assert lines[0].startswith("mcugen: error: two_blockers: 2 operators or properties")
    assert any(line.startswith("- 2 operators") and "(SVDF)" in line for line in lines), lines


def test_concatenation_with_a_rescaled_input_is_refused_like_tflite(tmp_path):
    """TFLite's int8 CONCATENATION does not rescale (both oracles refuse differing scales in
    Prepare); mcugen names the input tensor and both quantizations."""
    import importlib.util

    import tflite

    from mcugen.oracle import oracles_for
    from mcugen.errors import ToolError
    from mcugen.tflite_reader import read_tflite_bytes

    spec = importlib.util.spec_from_file_location("mcugen_fuzz", REPO / "benchmarks" / "fuzz.py")
    fuzz = importlib.util.module_from_spec(spec)
    sys.modules.setdefault("mcugen_fuzz", fuzz)
    spec.loader.exec_module(fuzz)
    data = (OPS_DIR / "concat_axis1_three_ranges.tflite").read_bytes()
    g = read_tflite_bytes(data, "m")
    t = g.operators[0].inputs[1]
    p = fuzz.Patcher(data)
    slot = fuzz.fields_of(tflite.QuantizationParameters)["Scale"].slot
    p.set_element(p.tensors()[t].Quantization()._tab, slot, "f", 0, g.t(t).quant.s * 2)
    path = tmp_path / "concat_rescaled.tflite"
    path.write_bytes(bytes(p.buf))
    with pytest.raises(ToolError, match="scale"):
        oracles_for(path)
    with pytest.raises(UnsupportedError, match=f"input tensor {t} has scale"):
        check_graph(read_tflite(path))
