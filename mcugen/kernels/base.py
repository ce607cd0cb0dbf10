"""Shared ground of the kernel families: pass result, scratch placement, layer views, selection context."""

from __future__ import annotations

import dataclasses
from dataclasses import dataclass, field
from typing import Optional, Sequence

import numpy as np

from mcugen.lower import ArenaArg, ConstArg, ConstArray, Layer, NullArg, Program
from mcugen.targets import Target

SCRATCH_ALIGN = 16

# What one byte of flash is worth in instructions per inference, where a kernel has a faster form
# with larger constants and a smaller, slower one (chain stage weights as int16 pairs or int8,
# a requantization table with or without its shift word): the larger form is taken only where
# it saves at least this many instructions per byte it adds (and never with flash_tight).
INSTRUCTIONS_PER_FLASH_BYTE = 64
# ... and, for the forms that `larger_form_pays` weighs, only where its gain is real: more than
# this share of the layer's estimated instructions in the smaller form.
REAL_GAIN = 0.03


def larger_form_pays(gain: float, small_instructions: float, added_bytes: int, flash_tight: bool) -> bool:
    """Per layer, whether a kernel keeps the form with the larger constants (e.g. int16 weight
    pairs) rather than the smaller one (int8 weights): never with `flash_tight`; else only where
    the instructions per inference it saves, `gain`, are more than REAL_GAIN of the layer's
    `small_instructions` (the estimate in the small form) and at least INSTRUCTIONS_PER_FLASH_BYTE
    per byte of flash it adds."""
    return (not flash_tight and gain > REAL_GAIN * small_instructions
            and gain >= INSTRUCTIONS_PER_FLASH_BYTE * added_bytes)


# ---- what a kernel pass returns ------------------------------------------------------------


@dataclass(frozen=True)
class ScratchBuffer:
    """Working memory a layer's kernel needs while it runs: `size` bytes, live only at `step`.

    The planner can place it like a tensor live on [step, step]; until lowering does, the
    pass puts every scratch buffer at one region after the planned tensors (`place_scratch`).
    """

    name: str
    size: int
    step: int


@dataclass
class KernelPassResult:
    """A Program whose layers call target kernels, plus the C files and flags they need."""

    program: Program
    files: dict[str, str]
    scratch: list[ScratchBuffer]
    cflags: tuple[str, ...] = ()
    choices: dict[int, str] = field(default_factory=dict)  # layer index -> kernel chosen
    plans: dict[int, object] = field(default_factory=dict)  # layer index -> its plan (what the cost model reads)

    def merged_files(self, rendered: dict[str, str]) -> dict[str, str]:
        """The model's files (codegen.render_model of `self.program`) with this pass's files.

        The portable kernels' header becomes `mcugen_portable.h`; the pass's `mcugen_kernels.h`
        includes it and the specialised kernels' header, so `<name>.c` is unchanged.
        """
        files = dict(rendered)
        if "mcugen_kernels.h" in self.files:
            files["mcugen_portable.h"] = files.pop("mcugen_kernels.h")
        files.update(self.files)
        return files


def place_scratch(program: Program, needs: Sequence[ScratchBuffer]) -> tuple[Program, dict[str, int]]:
    """Arena offsets of the scratch buffers, and the Program with its arena grown to hold them.

    A buffer the plan already placed at least as large (lowering planned the step's scratch
    with the tensors) keeps that offset. The others share one region after the planned
    tensors: each is live only during its own layer, so one region as large as the largest of
    them serves all.
    """
    offsets: dict[str, int] = {}
    planned = {b.name: b.size for b in program.buffers}
    base = -(-program.arena_bytes // SCRATCH_ALIGN) * SCRATCH_ALIGN
    top = program.arena_bytes
    for s in needs:
        if s.name in program.plan.offsets and planned.get(s.name, 0) >= s.size:
            offsets[s.name] = program.plan.offsets[s.name]
        else:
            offsets[s.name] = base
            top = max(top, base + s.size)
    return dataclasses.replace(program, arena_bytes=top), offsets


# ---- what a family's selection works with --------------------------------------------------


class KernelContext:
    """What a family's `select_*` works with: the Program and the target, and the constants and
    scratch buffers the chosen kernels add (`const`, `scratch_for`), in the order they are made.

    `flash_tight`: the flash budget is tight, so every kernel that has a smaller form of its
    constants (int8 weights sign-extended as they are read instead of int16 pairs) takes it,
    whatever instructions that costs; otherwise each kernel weighs the two forms itself
    (e.g. `chain.int16_weights_pay`)."""

    def __init__(self, program: Program, target: Target, flash_tight: bool = False):
        self.p = program
        self.t = target
        self.flash_tight = flash_tight
        self.name = program.name
        self.consts = {c.cname: c for c in program.consts}
        self.new_consts: list[ConstArray] = []
        self.scratch: list[ScratchBuffer] = []

    def const(self, layer: int, role: str, ctype: str, values: np.ndarray, comment: str) -> str:
        """A new constant array of layer `layer` (C name `<model>_l<layer>_<role>`); its C name."""
        cname = f"{self.name}_l{layer}_{role}"
        self.new_consts.append(ConstArray(cname=cname, ctype=ctype, values=np.ascontiguousarray(values), comment=comment))
        return cname

    def scratch_for(self, layer: int, size: int) -> str:
        """The scratch buffer of layer `layer`, `size` bytes (at least 4), live at its step; its name."""
        name = f"scratch{layer}"
        self.scratch.append(ScratchBuffer(name=name, size=max(int(size), 4), step=layer))
        return name

    def drop_consts(self, names: set[str]) -> None:
        """Forget constants made for this pass (a kernel that replaces another's weights)."""
        self.new_consts = [c for c in self.new_consts if c.cname not in names]


def round_up(x: int, m: int) -> int:
    """`x` rounded up to a multiple of `m`."""
    return -(-x // m) * m


# ---- views of the lowered layers -----------------------------------------------------------


def layer_params(layer: Layer) -> dict:
    """A lowered layer's parameters by name."""
    return {p.name: p.value for p in layer.params}


def _const(consts: dict[str, ConstArray], arg) -> Optional[np.ndarray]:
    if isinstance(arg, ConstArg):
        return consts[arg.cname].values
    if isinstance(arg, NullArg):
        return None
    raise TypeError(f"expected a constant argument, got {arg!r}")


@dataclass(frozen=True)
class ConvView:
    """A CONV_2D or DEPTHWISE_CONV_2D layer's shapes and integer parameters (from lowering)."""

    layer: Layer
    depthwise: bool
    batches: int
    in_h: int
    in_w: int
    in_c: int
    out_h: int
    out_w: int
    out_c: int
    kh: int
    kw: int
    sh: int
    sw: int
    dh: int
    dw: int
    pad_t: int
    pad_l: int
    depth_multiplier: int
    input_offset: int
    output_offset: int
    act_min: int
    act_max: int
    input: ArenaArg
    output: ArenaArg
    weights: np.ndarray  # conv: [out_c, kh, kw, in_c]; depthwise: [1, kh, kw, out_c]
    bias: np.ndarray  # int64 [out_c] (zeros if the model has none)
    multiplier: np.ndarray  # int64 [out_c]
    shift: np.ndarray  # int64 [out_c]

    @property
    def macs(self) -> int:
        per = self.kh * self.kw * (1 if self.depthwise else self.in_c)
        return self.batches * self.out_h * self.out_w * self.out_c * per


def conv_view(layer: Layer, consts: dict[str, ConstArray]) -> ConvView:
    p = layer_params(layer)
    a = layer.args
    out_c = int(p["out_c"])
    bias = _const(consts, a[3])
    return ConvView(
        layer=layer,
        depthwise=layer.kernel in ("mcugen_depthwise_conv2d_s8", "mcugen_depthwise_conv2d_inplace_s8"),
        batches=int(p["batches"]),
        in_h=int(p["in_h"]),
        in_w=int(p["in_w"]),
        in_c=int(p["in_c"]),
        out_h=int(p["out_h"]),
        out_w=int(p["out_w"]),
        out_c=out_c,
        kh=int(p["kernel_h"]),
        kw=int(p["kernel_w"]),
        sh=int(p["stride_h"]),
        sw=int(p["stride_w"]),
        dh=int(p["dilation_h"]),
        dw=int(p["dilation_w"]),
        pad_t=int(p["pad_top"]),
        pad_l=int(p["pad_left"]),
        depth_multiplier=int(p["depth_multiplier"]),
        input_offset=int(p["input_offset"]),
        output_offset=int(p["output_offset"]),
        act_min=int(p["act_min"]),
        act_max=int(p["act_max"]),
        input=a[1],
        output=a[6],
        weights=np.asarray(_const(consts, a[2])).astype(np.int64),
        bias=np.zeros(out_c, np.int64) if bias is None else np.asarray(bias).astype(np.int64).reshape(-1),
        multiplier=np.broadcast_to(np.asarray(_const(consts, a[4])).astype(np.int64).reshape(-1), (out_c,)).copy(),
        shift=np.broadcast_to(np.asarray(_const(consts, a[5])).astype(np.int64).reshape(-1), (out_c,)).copy(),
    )


def chain_stage_view(layer: Layer, consts: dict[str, ConstArray], stage: str) -> ConvView:
    """Stage `stage` ("a", "b" or "c") of a lowered CHAIN layer as a ConvView (batch 1)."""
    p = layer_params(layer)
    first = {"a": 2, "b": 6, "c": 10}[stage]
    a = layer.args
    g = lambda k: int(p[f"{stage}.{k}"])  # noqa: E731
    out_c = g("out_c")
    bias = _const(consts, a[first + 1])
    return ConvView(
        layer=layer, depthwise=g("depth_multiplier") > 0, batches=1,
        in_h=g("in_h"), in_w=g("in_w"), in_c=g("in_c"), out_h=g("out_h"), out_w=g("out_w"), out_c=out_c,
        kh=g("kernel_h"), kw=g("kernel_w"), sh=g("stride_h"), sw=g("stride_w"), dh=g("dilation_h"), dw=g("dilation_w"),
        pad_t=g("pad_top"), pad_l=g("pad_left"), depth_multiplier=g("depth_multiplier"),
        input_offset=g("input_offset"), output_offset=g("output_offset"), act_min=g("act_min"), act_max=g("act_max"),
        input=a[1], output=a[19],
        weights=np.asarray(_const(consts, a[first])).astype(np.int64),
        bias=np.zeros(out_c, np.int64) if bias is None else np.asarray(bias).astype(np.int64).reshape(-1),
        multiplier=np.broadcast_to(np.asarray(_const(consts, a[first + 2])).astype(np.int64).reshape(-1), (out_c,)).copy(),
        shift=np.broadcast_to(np.asarray(_const(consts, a[first + 3])).astype(np.int64).reshape(-1), (out_c,)).copy(),
    )


@dataclass(frozen=True)
class FcView:
    """A FULLY_CONNECTED layer: `batches` rows of `depth` inputs times [units, depth] weights."""

    layer: Layer
    batches: int
    depth: int
    units: int
    input_offset: int
    output_offset: int
    act_min: int
    act_max: int
    input: ArenaArg
    output: ArenaArg
    weights: np.ndarray  # [units, depth]
    bias: np.ndarray  # int64 [units]
    multiplier: np.ndarray  # int64 [units]
    shift: np.ndarray  # int64 [units]


def fc_view(layer: Layer, consts: dict[str, ConstArray]) -> FcView:
    p = layer_params(layer)
    a = layer.args
    units = int(p["units"])
    bias = _const(consts, a[3])
    return FcView(
        layer=layer,
        batches=int(p["batches"]),
        depth=int(p["depth"]),
        units=units,
        input_offset=int(p["input_offset"]),
        output_offset=int(p["output_offset"]),
        act_min=int(p["act_min"]),
        act_max=int(p["act_max"]),
        input=a[1],
        output=a[6],
        weights=np.asarray(_const(consts, a[2])).astype(np.int64).reshape(units, -1),
        bias=np.zeros(units, np.int64) if bias is None else np.asarray(bias).astype(np.int64).reshape(-1),
        multiplier=np.broadcast_to(np.asarray(_const(consts, a[4])).astype(np.int64).reshape(-1), (units,)).copy(),
        shift=np.broadcast_to(np.asarray(_const(consts, a[5])).astype(np.int64).reshape(-1), (units,)).copy(),
    )


ASM_LINE_BYTES = 4  # flash per line of a kernel's DSP assembly (the SMLAD family are 32-bit instructions)


def placeholder_key(pl, render, **shape) -> str:
    """The code `render` prints for `pl` with its name, index, weights and table replaced by
    placeholders (and the fields in `shape` replaced too): equal keys, shareable code."""
    return str(render(dataclasses.replace(pl, name="mcugen_shape", index=0, weights="W", table="T", **shape)))


def group_by_key(keys: dict[int, str]) -> list[list[int]]:
    """The plan indices of `keys` (index -> placeholder_key) grouped by equal key, in order."""
    groups: dict[str, list[int]] = {}
    for n, key in keys.items():
        groups.setdefault(key, []).append(n)
    return list(groups.values())


def own_and_call(out: list, members: Sequence[int], variants) -> None:
    """In `out`, the first of `members` owns one copy of the code (`shared`) and the others call
    it (`code_of`), each as its plan in `variants` (index -> plan)."""
    first, *rest = members
    out[first] = dataclasses.replace(variants[first], shared=True)
    for n in rest:
        out[n] = dataclasses.replace(variants[n], code_of=variants[first].name)


def share_identical_code(plans: list, render, takes) -> list:
    """The plans for which `takes(plan)` holds and that would print the same code but for their
    name, index, weights and table calling the first such layer's code (`shared`, `code_of`):
    one copy of the code in flash, two more arguments per call. `render(plan)` prints a plan's
    C; equal text with those replaced by placeholders is what decides."""
    out = list(plans)
    keys = {n: placeholder_key(pl, render) for n, pl in enumerate(plans) if takes(pl)}
    for members in group_by_key(keys):
        if len(members) > 1:
            own_and_call(out, members, plans)
    return out
