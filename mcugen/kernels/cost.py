"""Instruction estimates: the cost each chosen kernel (or fused chain) states, per kernel family and instruction set.

A step's estimate is a linear function of its work, with one row of coefficients per
(instruction set, kernel family) in `mcugen.kernels.cost_table`:

    instructions ~ c[0] * MACs + c[1] * output elements + c[2] * input elements + c[3]

(for a convolution the third term counts the taps gathered per output pixel, MACs / output
channels, instead of the input elements; for a depthwise whose records are rebuilt from int8 at
each call, ".../u8", the output channels), and for a fused chain, whose stages run at different
rates,

    instructions ~ c[0] * A MACs + c[1] * B MACs + c[2] * C MACs + c[3] * FC MACs
                   + c[4] * output elements + c[5]

The coefficients are fitted (non-negative least squares) to the instruction counts that
`mcugen bench` measures per layer on the emulated Cortex-M4 (DSP, portable and generic
kernels, CMSIS-NN) and Cortex-M55 (Helium) over the real models and MobileNet v2:
`python benchmarks/estimate.py --fit` measures them again and rewrites the table, and
`python benchmarks/estimate.py` prints the estimate against the measured count per model.
Instructions are not cycles; the estimate is for choosing between plans, within ~10%.
"""

from __future__ import annotations

from typing import Optional, Sequence

from mcugen.kernels.cost_table import COEFFICIENTS
from mcugen.lower import Layer
from mcugen.passes import Schedule, Step
from mcugen.targets import Target

# When a family has no coefficients for an instruction set, the nearest one that has.
FALLBACK_ISA = {"dsp": ("mve", "portable", "generic"), "mve": ("dsp", "portable", "generic"),
                "portable": ("generic",), "cmsis-mve": ("cmsis-dsp",), "cmsis-dsp": (), "generic": ()}
FEATURES_VERSION = 5  # bump when `features` changes: benchmarks/estimate.py recomputes its cached rows
GENERIC_PER_MAC = 10.0  # a layer with no fitted family at all: a generic kernel's rate
# The 16x8 kernels (portable C on every target), fitted the same way to `mcugen bench` on the
# emulated Cortex-M4 over the 16x8 test models and 15 of TFLite Micro's seanet models; kept here,
# not in cost_table.py, because `benchmarks/estimate.py --fit` measures no 16x8 model. The
# convolution is the roughest (within about 40%: its cost per tap is not a feature).
INT16_COEFFICIENTS: dict[tuple[str, str], tuple[float, ...]] = {
    ("generic", "mcugen_add_s16"): (0.0, 122.9, 0.0, 0.0),
    ("generic", "mcugen_conv2d_s16"): (3.738, 0.0, 116.8, 0.0),
    ("generic", "mcugen_depthwise_conv2d_s16"): (40.31, 0.0, 0.0, 0.0),
    ("generic", "mcugen_dequantize_s16"): (0.0, 89.8, 0.0, 0.0),
    ("generic", "mcugen_fully_connected_s16"): (5.164, 80.61, 0.0, 0.0),
    ("generic", "mcugen_leaky_relu_s16"): (0.0, 50.48, 0.0, 7.0),
    ("generic", "mcugen_pad_s16"): (0.0, 21.86, 0.0, 0.0),
    ("generic", "mcugen_quantize_f32_s16"): (0.0, 22.38, 0.0, 0.0),
    ("generic", "mcugen_slice_16"): (0.0, 10.78, 0.0, 0.0),
    ("generic", "mcugen_softmax_s16"): (0.0, 97.4, 0.0, 144.0),
}
# Likewise TRANSPOSE_CONV, which no model of the calibration set has. Its gather
# (features: MACs, output elements, taps gathered (MACs / input channels), 1): the per-op
# models of tests/models/ops and three decoder layers (4x4/3x3/2x2, stride 2, 24 to 64 input
# channels) measured with `mcugen bench` on qemu-mps2-an386: the portable kernel within 4% on
# every one, the DSP kernel within 2% on the decoder layers (up to 26% off on the smallest
# per-op models, a few thousand instructions).
MEASURED: dict[tuple[str, str], tuple[float, ...]] = {
    ("generic", "mcugen_transpose_conv_s8"): (5.979, 99.73, 42.48, 3519.0),
    ("dsp", "transpose_conv"): (2.111, 0.0, 11.3, 4297.0),
}


def _elements(schedule: Schedule, tensors: Sequence[int]) -> int:
    g = schedule.graph
    total = 0
    for i in tensors:
        n = 1
        for d in g.t(i).shape:
            n *= int(d)
        total += n
    return total


def _stage_macs(stage) -> int:
    if stage is None:
        return 0
    w = stage.window
    return w.out_h * w.out_w * w.out_c * w.kernel_h * w.kernel_w * (1 if stage.depthwise else w.in_c)


def cost_isa(plan, target: Target, kernels: Optional[str]) -> str:
    """The row of the table a layer's kernel uses: generic portable kernels ("generic"),
    CMSIS-NN ("cmsis-dsp" / "cmsis-mve") or mcugen's kernels for the target's ISA."""
    if plan is None:
        return "generic"
    if kernels == "cmsis-nn":
        return "cmsis-mve" if target.isa.value == "mve" else "cmsis-dsp"
    return target.isa.value


def family(layer: Layer, plan, step: Step) -> str:
    """The kernel family of a layer: what its plan is, or the generic kernel it calls."""
    if plan is None:
        name = layer.kernel or "view"
        if layer.op == "CONV_2D" and "(1x1 " in (layer.comment[0] if layer.comment else ""):
            name += "/1x1"
        return name
    kind = getattr(plan, "kind", "")
    if hasattr(plan, "function"):  # a CMSIS-NN call
        return plan.function
    if kind == "gemm_conv":
        return "conv/gemm-1x1" if plan.pointwise else "conv/gemm"
    if kind == "thin_conv":
        if plan.narrow is not None:
            return "conv/narrow"
        return "conv/thin-loop" if plan.code is not None and plan.code.looped else "conv/thin"
    if kind == "chain" and getattr(plan, "ring_b", None) is not None:
        # stage B on the channel-major ring (kernels.chain.RingB); "/c": stage C pixel by pixel
        # in C (neither the thin nor the narrow kernel)
        return "chain/ring" if plan.c_thin or plan.c_narrow else "chain/ring/c"
    if kind == "depthwise":
        v = plan.v
        fam = f"depthwise/{v.kh}x{v.kw}/s{v.sh}"  # 3x3, or the kh x kw ring kernel ("depthwise/5x5/s1")
        if getattr(plan, "row_words", 0) and not plan.asm_k:
            return fam + "/c"  # the kh x kw kernel without its assembly (general requantization)
        if getattr(plan, "unpack", False):
            return fam + "/u8"  # 3x3, int8 in flash: the records rebuilt in scratch at each call
        return fam + "/i8" if getattr(plan, "int8_weights", False) else fam  # int8 weights unpacked by SXTB16
    return kind


def features(layer: Layer, step: Step, schedule: Schedule, fam: str = "") -> list[int]:
    """The work a step does, in the order of its family's coefficients (see the module docstring)."""
    if step.chain is not None:
        c = step.chain
        w = c.out_window
        fc_macs = c.fc_units * w.out_h * w.out_w * w.out_c if c.fc is not None else 0
        return [_stage_macs(c.a), _stage_macs(c.b), _stage_macs(c.c), fc_macs, _elements(schedule, step.writes), 1]
    out = _elements(schedule, step.writes)
    if fam in ("mcugen_transpose_conv_s8", "transpose_conv"):
        # a gather: the taps gathered per output pixel and channel (MACs / input channels)
        in_c = schedule.graph.t(schedule.op(step.ops[0]).inputs[2]).shape[3]
        return [layer.macs, out, layer.macs // max(int(in_c), 1), 1]
    if fam.startswith(("conv/", "mcugen_conv2d", "arm_convolve")) and layer.macs:
        # a convolution: the taps gathered per output pixel (the im2col patch), once per pixel
        out_c = schedule.graph.t(step.writes[0]).shape[-1]
        return [layer.macs, out, layer.macs // max(int(out_c), 1), 1]
    if fam.endswith("/u8"):  # a depthwise whose records are rebuilt per channel at each call
        return [layer.macs, out, int(schedule.graph.t(step.writes[0]).shape[-1]), 1]
    return [layer.macs, out, _elements(schedule, step.reads[:1]), 1]


def key(layer: Layer, plan, step: Step, target: Target, kernels: Optional[str]) -> tuple[str, str]:
    return cost_isa(plan, target, kernels), family(layer, plan, step)


def family_estimate(isa: str, fam: str, x: Sequence[int]) -> Optional[float]:
    """The estimate of a family's kernel for work `x` (`features`), from the table row of `isa`
    or its fallbacks; None where no row fits (what a kernel's selection uses to weigh forms)."""
    for candidate in (isa, *FALLBACK_ISA.get(isa, ())):
        coef = COEFFICIENTS.get((candidate, fam)) or INT16_COEFFICIENTS.get((candidate, fam)) or MEASURED.get((candidate, fam))
        if coef is not None and len(coef) == len(x):
            return float(sum(a * b for a, b in zip(coef, x)))
    return None


def estimate_layer(layer: Layer, plan, schedule: Schedule, step: Step, target: Target,
                   kernels: Optional[str]) -> int:
    """Estimated instructions of one step with the kernel chosen for it."""
    isa, fam = key(layer, plan, step, target, kernels)
    x = features(layer, step, schedule, fam)
    e = family_estimate(isa, fam, x)
    if e is not None:
        return int(round(e))
    if layer.kernel is None:
        return 0  # a view: nothing runs
    return int(round(GENERIC_PER_MAC * layer.macs + x[-2]))
