"""The `mcugen plan` command: per-layer live bytes, the peak and who sets it, arena, scratch, TFLM ratio, a picture."""

from __future__ import annotations

import json
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Optional

from mcugen.errors import McugenError, OutputError
from mcugen.lower import Program
from mcugen.planner import plan_naive


@dataclass(frozen=True)
class StepUse:
    """Memory of one layer: the bytes of the arena in use while it runs."""

    layer: int
    op: str
    operators: tuple[int, ...]
    live_bytes: int  # bytes covered by the buffers live at this layer (shared bytes once)
    tensor_bytes: int  # of which activation tensors
    scratch_bytes: int  # of which this layer's scratch
    buffers: tuple[str, ...]  # names of the live buffers


@dataclass(frozen=True)
class PlanReport:
    model: str
    strategy: str
    planner: str  # the planner's ordering that won
    arena_bytes: int
    peak_bytes: int  # most bytes in use at one layer
    peak_layer: int
    peak_op: str
    scratch_bytes: int  # the largest scratch of one layer (inside the arena)
    lower_bound_bytes: int  # no plan honouring these aliases can be smaller (planner.alias_lower_bound)
    naive_arena_bytes: int  # the no-reuse baseline: every buffer its own bytes
    fused_layers: int
    layers: tuple[StepUse, ...]
    tflm_arena_bytes: Optional[int] = None

    @property
    def ratio_to_tflm(self) -> Optional[float]:
        return self.arena_bytes / self.tflm_arena_bytes if self.tflm_arena_bytes else None

    def to_json(self) -> dict:
        d = asdict(self)
        d["ratio_to_tflm"] = self.ratio_to_tflm
        d["layers"] = [asdict(s) for s in self.layers]
        return d


def _covered(spans: list[tuple[int, int]]) -> int:
    total, end = 0, None
    for lo, hi in sorted(spans):
        if end is None or lo >= end:
            total += hi - lo
            end = hi
        elif hi > end:
            total += hi - end
            end = hi
    return total


def plan_report(program: Program, model: str, tflm_arena_bytes: Optional[int] = None) -> PlanReport:
    """Per-layer bytes in use under the program's plan (a buffer is in use from the layer that
    writes it to the last layer that reads it; bytes two buffers share count once)."""
    offsets = program.plan.offsets
    steps = []
    for layer in program.layers:
        k = layer.index
        live = [b for b in program.buffers if b.first <= k <= b.last]
        spans = [(offsets[b.name], offsets[b.name] + b.size) for b in live]
        scratch = [b for b in live if b.name.startswith("scratch")]
        tensors = [b for b in live if not b.name.startswith("scratch")]
        steps.append(
            StepUse(
                layer=k,
                op=layer.op,
                operators=tuple(program.schedule.steps[k].ops) if program.schedule else (k,),
                live_bytes=_covered(spans),
                tensor_bytes=_covered([(offsets[b.name], offsets[b.name] + b.size) for b in tensors]),
                scratch_bytes=sum(b.size for b in scratch),
                buffers=tuple(b.name for b in live),
            )
        )
    peak = max(steps, key=lambda s: (s.live_bytes, -s.layer))
    return PlanReport(
        model=model,
        strategy=program.strategy,
        planner=program.plan.strategy,
        arena_bytes=program.arena_bytes,
        peak_bytes=peak.live_bytes,
        peak_layer=peak.layer,
        peak_op=peak.op,
        scratch_bytes=program.scratch_bytes,
        lower_bound_bytes=program.plan.lower_bound_bytes,
        naive_arena_bytes=plan_naive(program.buffers).arena_bytes,
        fused_layers=sum(1 for l in program.layers if l.op == "CHAIN"),
        layers=tuple(steps),
        tflm_arena_bytes=tflm_arena_bytes,
    )


def draw_plan(program: Program, report: PlanReport, path: Path) -> None:
    """Tensors as rectangles, layer (time) across and arena offset up, saved as a PNG."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt
    from matplotlib.patches import Rectangle

    inputs = {f"t{t.index}" for t in program.inputs}
    outputs = {f"t{t.index}" for t in program.outputs}
    fig, ax = plt.subplots(figsize=(max(8.0, len(program.layers) * 0.18), 6.0), dpi=110)
    for b in program.buffers:
        off = program.plan.offsets[b.name]
        if b.name.startswith("scratch"):
            color = "#e4572e"
        elif b.name in inputs:
            color = "#29335c"
        elif b.name in outputs:
            color = "#669bbc"
        else:
            color = "#f3a712"
        ax.add_patch(Rectangle((b.first, off), b.last - b.first + 1, b.size, facecolor=color, edgecolor="black", linewidth=0.4, alpha=0.75))
    ax.axvspan(report.peak_layer, report.peak_layer + 1, color="red", alpha=0.12)
    ax.axhline(program.arena_bytes, color="black", linestyle="--", linewidth=0.8)
    ax.set_xlim(0, max(len(program.layers), 1))
    ax.set_ylim(0, program.arena_bytes * 1.05 or 1)
    ax.set_xlabel("layer (time)")
    ax.set_ylabel("arena offset (bytes)")
    ratio = f", {report.ratio_to_tflm:.1%} of TFLite Micro's arena" if report.ratio_to_tflm else ""
    ax.set_title(
        f"{Path(report.model).name}: {report.strategy} plan, arena {report.arena_bytes:,} bytes{ratio}\n"
        f"peak {report.peak_bytes:,} bytes at layer {report.peak_layer} ({report.peak_op}); "
        "blue: input, light blue: output, orange: tensors, red: scratch",
        fontsize=9,
    )
    fig.tight_layout()
    try:
        fig.savefig(path)
    except OSError as e:
        raise OutputError(f"{path}: cannot write the picture ({e.strerror})") from None
    finally:
        plt.close(fig)


def cmd_plan(args) -> int:
    from mcugen.driver import build
    from mcugen.options import options_from_args

    gen = build(args.model, options=options_from_args(args))
    program = gen.program
    tflm = None
    if not args.no_tflm:
        from mcugen.oracle import tflm_arena_bytes

        tflm = tflm_arena_bytes(args.model)
    report = plan_report(program, str(args.model), tflm)
    choice = gen.schedule
    if args.png:
        png = Path(args.png)
        if png.suffix.lower() != ".png":
            raise McugenError(f"--png {png}: the picture's file name must end in .png")
        draw_plan(program, report, png)
    if args.json:
        out = report.to_json()
        out.update(gen.numbers())
        out["options"] = gen.options.to_json()
        out["budget"] = {"arena_bytes": choice.budget.arena_bytes, "const_bytes": choice.budget.const_bytes,
                         "source": choice.budget.source}
        out["alternatives"] = [a.to_json() for a in choice.alternatives]
        out["blocks"] = [b.to_json() for b in choice.blocks]
        print(json.dumps(out, indent=2))
        return 0
    print(f"model:     {report.model}  (plan: {report.strategy}, planner ordering {report.planner})")
    print(f"{'layer':>5} {'op':<22} {'live bytes':>11} {'tensors':>9} {'scratch':>8}")
    for s in report.layers:
        mark = "  <- peak" if s.layer == report.peak_layer else ""
        ops = s.op if s.op != "CHAIN" else "CHAIN " + "+".join(str(i) for i in s.operators)
        print(f"{s.layer:>5} {ops:<22} {s.live_bytes:>11,} {s.tensor_bytes:>9,} {s.scratch_bytes:>8,}{mark}")
    print(f"peak:      {report.peak_bytes:,} bytes at layer {report.peak_layer} ({report.peak_op})")
    print(f"arena:     {report.arena_bytes:,} bytes (scratch inside it: at most {report.scratch_bytes:,} bytes in one layer)")
    print(f"bounds:    no plan with these aliases below {report.lower_bound_bytes:,} bytes; no reuse at all: {report.naive_arena_bytes:,} bytes")
    print(f"fused:     {report.fused_layers} layers are fused chains")
    if tflm is not None:
        print(f"TFLM:      {tflm:,} bytes of arena; mcugen needs {report.ratio_to_tflm:.1%} of it")
    print_choice(gen)
    if args.png:
        print(f"picture:   {args.png}")
    return 0


def print_choice(gen) -> None:
    """The plan chosen and the alternatives it rejected, in one short table."""
    choice, o = gen.schedule, gen.options
    budget = choice.budget
    limit = ", ".join(x for x in (
        f"arena <= {budget.arena_bytes:,}" if budget.arena_bytes is not None else "",
        f"constants <= {budget.const_bytes:,}" if budget.const_bytes is not None else "") if x) or "none"
    print(f"choice:    --strategy {o.strategy}, {o.kernels or 'generic'} kernels for {o.kernel_target}; budget: {limit} "
          f"({budget.source})")
    print(f"  {'plan':<10} {'arena':>10} {'constants':>11} {'est. instructions':>18}  fits")
    for a in choice.alternatives:
        print(f"  {a.label + (' *' if a.chosen else ''):<10} {a.arena_bytes:>10,} {a.const_bytes:>11,} "
              f"{a.instructions:>18,}  {'yes' if a.fits else 'no'}")
    fused = sum(1 for b in choice.blocks if b.chosen == "fused")
    if choice.blocks:
        print(f"  blocks fused: {fused} of {len(choice.blocks)} (per block in --json 'blocks')")


def register(subparsers) -> None:
    from mcugen.options import add_compile_options

    p = subparsers.add_parser("plan", help="the memory plan: live bytes per layer, peak, arena, scratch, ratio to TFLite Micro, "
                                           "the plan chosen and the alternatives")
    p.add_argument("model", help="an int8 .tflite file")
    p.add_argument("--json", action="store_true", help="print one JSON object (arena_bytes, scratch_bytes, const_bytes, "
                                                       "estimated_instructions, tflm_arena_bytes, ratio_to_tflm, alternatives, blocks, layers)")
    p.add_argument("--png", metavar="FILE", help="draw the plan (tensors as time x address rectangles) into FILE.png")
    p.add_argument("--no-tflm", action="store_true", help="skip measuring TFLite Micro's arena")
    add_compile_options(p)
    p.set_defaults(func=cmd_plan)
