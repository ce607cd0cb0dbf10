"""Kernel selection: which family's kernel each lowered layer gets, and the C files the chosen plans render to.

    lower(graph) -> Program --specialize(program, target)--> KernelPassResult
        .program   the same model, its CONV_2D / DEPTHWISE_CONV_2D / FULLY_CONNECTED / ADD /
                   SOFTMAX / MEAN layers and fused CHAIN layers (conv -> 3x3 depthwise -> 1x1
                   [-> ADD], in the ring and scratch lowering planned for them) now calling
                   `<name>_l<i>_<kind>()`, their constants
                   repacked (weights reordered, bias folded with the input offset, one
                   requantization table per layer), the arena grown by the scratch they need
        .files     `<name>_layers.c` / `<name>_layers.h` (rendered from templates/c/fast/) and
                   a `mcugen_kernels.h` that declares both the portable and the specialised kernels
        .scratch   the scratch buffers, one per layer that needs one (name, bytes, step)

Each kernel family's module (conv, depthwise, chain, fc, elementwise) has a `select_<family>(ctx,
layer)` returning its plan and the name of the scratch buffer the plan needs (None: none), or
None where the family has no kernel for the layer.

Python decides everything (which layers, block sizes, tables, exactness conditions); the
templates only print. Every specialised kernel is bit-exact with TFLite's reference kernels:
requantization takes the one-instruction SMMLAR route only when a bound on the accumulator,
computed from the weights, proves the short formula equal to TFLite's double rounding
(`requant.plan_requant`); otherwise the layer uses the exact general formula. Layers a target has
no specialised kernel for keep the portable kernel.
"""

from __future__ import annotations

import dataclasses

from mcugen.kernels.base import KernelContext, KernelPassResult, place_scratch
from mcugen.kernels.chain import patch_word_pieces, ring_comment, select_chain, share_a_rows
from mcugen.kernels.conv import NARROW_ACC, RQ_E_BITS, THIN_LOOP_UNROLL, select_conv, share_gemm_code, share_thin_code
from mcugen.kernels.depthwise import select_depthwise, share_dw_code
from mcugen.kernels.depthwise_asm import DW_BLOCK, DW_CASES_REGS, DW_RECORD, DW_ROWS_REGS, dw_cases_layout, dw_cases_step
from mcugen.kernels.elementwise import select_add, select_mean, select_softmax
from mcugen.kernels.fc import FC_UNITS, select_fc
from mcugen.kernels.tconv import select_transpose_conv
from mcugen.kernels.thin_rebuild import THIN_REBUILD_CLOBBERS
from mcugen.lower import ArenaArg, ConstArg, Program
from mcugen.targets import EMULATE_DSP_MACRO, Target

# the portable kernel a lowered layer calls -> the family that may replace it
SELECT = {
    "mcugen_conv2d_s8": select_conv,
    "mcugen_depthwise_conv2d_s8": select_depthwise,
    "mcugen_depthwise_conv2d_inplace_s8": select_depthwise,
    "mcugen_fully_connected_s8": select_fc,
    "mcugen_add_s8": select_add,
    "mcugen_mean_hw_s8": select_mean,
    "mcugen_softmax_s8": select_softmax,
    "mcugen_chain_s8": select_chain,
    "mcugen_transpose_conv_s8": select_transpose_conv,
}


def _dw3_tops(plans) -> set[int]:
    """The `top` arguments the model's calls of mcugen_dw3_records pass (0: each channel's own
    shift), so that its assembly holds only the paths they take."""
    tops = set()
    for pl in plans:
        if getattr(pl, "kind", "") == "depthwise" and pl.unpack:
            tops.add(pl.dw3_args[1])
        ring = getattr(pl, "ring_b", None)
        if ring is not None and ring.compact:
            tops.add(ring.top)
    return tops


def specialize(program: Program, target: Target, flash_tight: bool = False) -> KernelPassResult:
    """Replace the layers `target` has specialised kernels for; see the module docstring.
    `flash_tight`: take the smallest form of every kernel's constants (KernelContext)."""
    ctx = KernelContext(program, target, flash_tight)
    pending = []
    for layer in program.layers:
        fn = SELECT.get(layer.kernel or "")
        made = fn(ctx, layer) if fn else None
        if made is None:
            continue
        pending.append(made)
    program, offsets = place_scratch(program, ctx.scratch)
    plans = [dataclasses.replace(plan, scratch_offset=offsets[sname]) if sname else plan for plan, sname in pending]
    by_index = {pl.index: pl for pl in plans}
    layers = []
    replaced_consts: set[str] = set()
    choices: dict[int, str] = {}
    for layer in program.layers:
        pl = by_index.get(layer.index)
        if pl is None:
            layers.append(layer)
            continue
        replaced_consts.update(a.cname for a in layer.args if isinstance(a, ConstArg))
        choices[layer.index] = pl.name
        if pl.kind in ("gemm_conv", "thin_conv", "depthwise", "fc", "transpose_conv"):
            args = [layer.args[1], layer.args[6], ArenaArg(offset=pl.scratch_offset, ctype="uint32_t", const=False)]
        elif pl.kind == "add":
            args = list(layer.args[1:4])
        elif pl.kind == "chain":
            # input, output, the chain's scratch (where the kernel states its own: placed for it)
            scratch = layer.args[18] if pl.scratch_offset < 0 else dataclasses.replace(layer.args[18], offset=pl.scratch_offset)
            args = [layer.args[1], layer.args[19], scratch]
        else:
            args = list(layer.args[1:3])
        # a chain on the ring says what its kernel does and holds, not what the portable one would
        comment = ring_comment(layer.comment, pl) if pl.kind == "chain" and pl.ring_b is not None else layer.comment
        layers.append(dataclasses.replace(
            layer, kernel=pl.name, kernel_group=None, params_type=None, params=[], args=args, comment=comment,
        ))
    still_used = {a.cname for l in layers for a in l.args if isinstance(a, ConstArg)}
    consts = [c for c in program.consts if c.cname not in replaced_consts or c.cname in still_used] + ctx.new_consts
    program = dataclasses.replace(
        program, layers=layers, consts=consts,
        kernel_groups=sorted({l.kernel_group for l in layers if l.kernel_group}),
    )
    files = render_layers(program, plans, target) if plans else {}
    return KernelPassResult(program=program, files=files, scratch=list(ctx.scratch), choices=choices, plans=by_index)


def _plan_parts(pl) -> list:
    """A plan and, for a chain, its stages (each with its own constants)."""
    if pl.kind == "chain":
        return [pl] + [st for st in (pl.a, pl.b, pl.c, pl.a_thin, pl.c_thin, pl.c_narrow, pl.ring_b, pl.a_records,
                                     pl.c_records) if st is not None]
    return [pl]


def render_layers(program: Program, plans: list, target: Target) -> dict[str, str]:
    """The C files of the chosen plans: `<name>_layers.h/.c` and `mcugen_kernels.h`."""
    from mcugen import __version__, codegen

    env = codegen.environment()
    ctx = dict(
        p=program, plans=plans, target=target, isa=target.isa.value, version=__version__,
        rq_e_bits=RQ_E_BITS, thin_unroll=THIN_LOOP_UNROLL, thin_rebuild_clobbers=THIN_REBUILD_CLOBBERS, add_shifts=sorted({pl.linear.shift for pl in plans if pl.kind == "add" and pl.shared_linear}), dw_unpack=any(getattr(pl, "unpack", False) or (getattr(pl, "ring_b", None) is not None and pl.ring_b.compact) for pl in plans), dw3_tops=_dw3_tops(plans), emulate_macro=EMULATE_DSP_MACRO, narrow_acc=NARROW_ACC, dw_rows_regs=DW_ROWS_REGS, dw_block=DW_BLOCK,
        dw_cases_regs=DW_CASES_REGS, patch_word_pieces=patch_word_pieces, dw_cases_step=dw_cases_step, dw_cases_layout=dw_cases_layout, dw_record=DW_RECORD, ldm4="{%[x0], %[x1], %[x2], %[x3]}", ldm_units="{" + ", ".join(f"%[w{r}]" for r in range(FC_UNITS)) + "}", plan_consts={getattr(x, a) for pl in plans for x in _plan_parts(pl) for a in ("weights", "table", "records", "w8", "bm", "src") if hasattr(x, a)},
    )
    conv_module = env.get_template("c/fast/conv.c.j2").make_module(ctx)
    dw_module = env.get_template("c/fast/depthwise.c.j2").make_module(ctx)
    plans = share_gemm_code(plans, conv_module.gemm_conv)
    plans = share_thin_code(plans, conv_module.thin_conv)
    ctx["plans"] = plans = share_a_rows(share_dw_code(plans, dw_module.depthwise))
    return {
        f"{program.name}_layers.h": env.get_template("c/fast/layers.h.j2").render(ctx),
        f"{program.name}_layers.c": env.get_template("c/fast/layers.c.j2").render(ctx),
        "mcugen_kernels.h": env.get_template("c/fast/kernels.h.j2").render(ctx),
    }
