"""Schedule choice: which fused chains run, from each kernel's stated cost (scratch, flash, instructions) under the budget.

Kernel selection comes before planning. For the layer-by-layer schedule and for the schedule
with every candidate chain fused, the layers are lowered with provisional (zero) arena
offsets and the kernel pass chooses each one's kernel; each step then states its cost
(`StepCost`: the kernel, its scratch bytes, its constant bytes in flash and an instruction
estimate from `mcugen.kernels.cost`). Nothing is planned yet. From those costs, block by
block (a block is one candidate chain: fused, or its layers one by one):

- `layerwise`: no chain is fused.
- `fused`: every chain that lowers the planned arena (`arena.choose_chains`), whatever it costs.
- `auto` (the default): the smallest arena whose estimated instructions stay within `TIE`
  (10%) of the fastest plan's (the estimate is not closer than that to the measured counts):
  from the smallest plan, the blocks that add the most instructions run layer by layer again
  until the plan is that fast, unless the RAM budget needs their bytes; the blocks left fused
  are those that lower the arena. Where the constants exceed the flash budget, blocks whose
  fused form stores more constants run layer by layer again while the RAM allows.
  (A literal "fastest plan that fits" would run MobileNet v2 0.35/96 layer by layer on a 4 MB
  board: 4.2x the arena for 9% fewer instructions; 10% is the price auto pays for RAM.)
The scratch each unfused layer's kernel needs is then planned with the tensors, once, by the
caller (`driver.build`), so that the numbers stated here are the generated code's.
"""

from __future__ import annotations

import re
from dataclasses import dataclass, field
from typing import Mapping, Optional, Sequence

from mcugen.fusion import Chain, find_chains
from mcugen.ir import Graph
from mcugen.arena import PlannedSchedule, choose_chains, plan_schedule
from mcugen.lower import Program, emit
from mcugen.options import Budget, CompileOptions
from mcugen.passes import build_schedule, schedule_buffers
from mcugen.planner import Plan

TIE = 0.10  # fused within 10% of layer by layer counts as the same speed (the estimate's error)


@dataclass(frozen=True)
class StepCost:
    """What one step (a layer, or a fused chain) costs with the kernel chosen for it."""

    ops: tuple[int, ...]  # the operators it runs
    kernel: str  # the kernel (family) chosen
    scratch_bytes: int
    const_bytes: int  # constants in flash: weights, biases, requantization tables
    instructions: int  # estimated for the target
    output: int = -1  # tensor index of the step's output


@dataclass(frozen=True)
class BlockChoice:
    """One candidate chain: fused, or its layers one by one, and which was chosen and why."""

    label: str
    ops: tuple[int, ...]
    fused: StepCost
    layers: tuple[StepCost, ...]
    chosen: str  # "fused" or "layerwise"
    reason: str

    @property
    def layers_instructions(self) -> int:
        return sum(c.instructions for c in self.layers)

    @property
    def layers_const_bytes(self) -> int:
        return sum(c.const_bytes for c in self.layers)

    def to_json(self) -> dict:
        return {
            "block": self.label, "operators": list(self.ops), "chosen": self.chosen, "reason": self.reason,
            "fused": {"kernel": self.fused.kernel, "estimated_instructions": self.fused.instructions,
                      "const_bytes": self.fused.const_bytes, "scratch_bytes": self.fused.scratch_bytes},
            "layerwise": {"estimated_instructions": self.layers_instructions, "const_bytes": self.layers_const_bytes,
                          "kernels": [c.kernel for c in self.layers]},
        }


@dataclass(frozen=True)
class Alternative:
    """A whole plan: its arena, constants and estimated instructions, and whether it fits."""

    label: str
    arena_bytes: int
    const_bytes: int
    instructions: int
    fits: bool
    chosen: bool = False

    def to_json(self) -> dict:
        return {"plan": self.label, "arena_bytes": self.arena_bytes, "const_bytes": self.const_bytes,
                "estimated_instructions": self.instructions, "fits": self.fits, "chosen": self.chosen}


@dataclass
class ScheduleChoice:
    """The chains to fuse, the scratch to plan with the tensors, and how the choice was made."""

    strategy: str
    chains: list[Chain]
    extra_scratch: dict  # output tensor of an unfused layer (a chain: its operators) -> its kernel's scratch bytes
    costs: dict[tuple[int, ...], StepCost]  # every step of both schedules, by its operators
    blocks: list[BlockChoice]
    alternatives: list[Alternative] = field(default_factory=list)
    budget: Optional[Budget] = None
    flash_tight: bool = False  # the kernels take the smallest form of their constants (the flash budget needs it)

    def step_cost(self, ops: Sequence[int]) -> StepCost:
        return self.costs[tuple(ops)]


# ---- kernel selection on a schedule, before planning --------------------------------------------


def provisional_plan(bufs) -> Plan:
    """Offsets under which two buffers overlap exactly when an alias lets them share bytes
    (each group of aliased buffers at one base, groups apart): enough to lower the layers and
    choose their kernels. No kernel's choice depends on where a tensor lies, and the scratch
    a kernel states for inputs its output may overwrite (CMSIS-NN copies them first) is then
    the most the real plan can need."""
    parent = {b.name: b.name for b in bufs.buffers}

    def root(n: str) -> str:
        while parent[n] != n:
            parent[n] = parent[parent[n]]
            n = parent[n]
        return n

    for al in bufs.aliases:
        parent[root(al.a)] = root(al.b)
    size: dict[str, int] = {}
    for b in bufs.buffers:
        size[root(b.name)] = max(size.get(root(b.name), 0), b.size)
    base, at = {}, 0
    for r in sorted(size):
        base[r] = at
        at += -(-size[r] // 16) * 16
    return Plan({b.name: base[root(b.name)] for b in bufs.buffers}, at, 0, "provisional")


def layer_const_bytes(program: Program) -> dict[int, int]:
    """Constant bytes of each layer: the arrays its arguments name, and the arrays a kernel
    pass made for it (named `<model>_l<layer>_...`, not named by any argument)."""
    from mcugen.lower import ConstArg

    size = {c.cname: int(c.values.nbytes) for c in program.consts}
    named = {a.cname for l in program.layers for a in l.args if isinstance(a, ConstArg)}
    prefix = re.compile(rf"^{re.escape(program.name)}_l(\d+)_")
    out = {l.index: sum(size[a.cname] for a in l.args if isinstance(a, ConstArg)) for l in program.layers}
    for cname, n in size.items():
        m = prefix.match(cname)
        if cname not in named and m and int(m.group(1)) in out:
            out[int(m.group(1))] += n
    return out


def step_costs(folded: Graph, pads, chains: Sequence[Chain], cname: str, model_name: str,
               opts: CompileOptions, flash_tight: bool = False) -> dict[tuple[int, ...], StepCost]:
    """Lower the schedule with these chains fused (provisional offsets), choose every layer's
    kernel for the target, and state each step's cost. Plans nothing."""
    from mcugen.kernels import apply_kernels
    from mcugen.kernels.cost import estimate_layer
    from mcugen.targets import get_target

    schedule = build_schedule(folded, pads, chains)
    bufs = schedule_buffers(schedule)
    program = emit(PlannedSchedule(schedule, bufs, provisional_plan(bufs)), cname, model_name, "provisional")
    target = get_target(opts.kernel_target)
    plans: Mapping[int, object] = {}
    scratch: dict[int, int] = {k: sp.nbytes for k, sp in program.scratch.items()}
    if opts.kernels is not None:
        result = apply_kernels(program, opts.kernels, target, opts.cmsis_nn, flash_tight=flash_tight)
        for s in result.scratch:
            scratch[s.step] = max(scratch.get(s.step, 0), s.size)
        plans = result.plans
        program = result.program
    consts = layer_const_bytes(program)
    costs = {}
    for layer, step in zip(program.layers, schedule.steps):
        plan = plans.get(layer.index)
        costs[tuple(step.ops)] = StepCost(
            ops=tuple(step.ops),
            kernel=getattr(plan, "kind", None) or layer.kernel or "view",
            scratch_bytes=scratch.get(layer.index, 0),
            const_bytes=consts.get(layer.index, 0),
            instructions=estimate_layer(layer, plan, schedule, step, target, opts.kernels),
            output=layer.output,
        )
    return costs


# ---- the choice ------------------------------------------------------------------------------------


def _label(folded: Graph, chain: Chain) -> str:
    names = {op.index: op.op.value for op in folded.operators}
    return f"operators {chain.ops[0]}-{chain.ops[-1]} (" + " -> ".join(names[i] for i in chain.ops) + ")"


def _totals(chains: Sequence[Chain], costs: Mapping[tuple[int, ...], StepCost], n_ops: Sequence[int]) -> tuple[int, int]:
    """(constant bytes, estimated instructions) of the schedule fusing `chains`."""
    fused_ops = {o for c in chains for o in c.ops}
    steps = [costs[tuple(c.ops)] for c in chains] + [costs[(o,)] for o in n_ops if o not in fused_ops and (o,) in costs]
    return sum(s.const_bytes for s in steps), sum(s.instructions for s in steps)


def choose_schedule(folded: Graph, pads, cname: str, model_name: str, opts: CompileOptions) -> ScheduleChoice:
    """The chains to fuse for `opts.strategy` under `opts.budget()` (see the module docstring).
    When the constants do not fit the flash budget, or `opts.small_forms` asks for it (the
    firmware built with the fast forms was over the limit), the kernels' small forms too."""
    if opts.small_forms and opts.kernels == "mcugen":
        return _choose(folded, pads, cname, model_name, opts, flash_tight=True)
    choice = _choose(folded, pads, cname, model_name, opts, flash_tight=False)
    budget = choice.budget
    chosen = next(a for a in choice.alternatives if a.chosen)
    if budget.const_bytes is not None and chosen.const_bytes > budget.const_bytes and opts.kernels == "mcugen":
        choice = _choose(folded, pads, cname, model_name, opts, flash_tight=True)
    return choice


def _choose(folded: Graph, pads, cname: str, model_name: str, opts: CompileOptions, flash_tight: bool) -> ScheduleChoice:
    budget = opts.budget()
    candidates = find_chains(folded, pads) if opts.strategy != "layerwise" else []
    costs = step_costs(folded, pads, [], cname, model_name, opts, flash_tight)
    if candidates:
        fused_costs = step_costs(folded, pads, candidates, cname, model_name, opts, flash_tight)
        costs.update({k: v for k, v in fused_costs.items() if len(k) > 1 or k not in costs})
    extra: dict = {c.output: c.scratch_bytes for k, c in costs.items() if len(k) == 1 and c.scratch_bytes}
    # a chain's kernel may state more scratch than the portable chain kernel's ring and pixel
    extra.update({k: c.scratch_bytes for k, c in costs.items() if len(k) > 1 and c.scratch_bytes})
    ops = [op.index for op in folded.operators]

    def plan_of(chains: Sequence[Chain]):
        return plan_schedule(folded, pads, list(chains), extra)

    def chains_of(planned) -> list[Chain]:
        return [s.chain for s in planned.schedule.steps if s.chain is not None]

    def fused_instr(c: Chain) -> int:
        return costs[tuple(c.ops)].instructions

    def layers_instr(c: Chain) -> int:
        return sum(costs[(o,)].instructions for o in c.ops)

    # the smallest arena: every block whose fusion lowers it (what --strategy fused runs)
    smallest = chains_of(choose_chains(folded, pads, candidates, extra)) if candidates else []
    reasons: dict[tuple[int, ...], str] = {}
    if opts.strategy == "layerwise" or not candidates:
        chosen: list[Chain] = []
        for c in candidates:
            reasons[c.ops] = "--strategy layerwise"
    elif opts.strategy == "fused":
        chosen = list(candidates) if opts.fuse_all else list(smallest)
        for c in candidates:
            reasons[c.ops] = "--strategy fused: lowers the arena" if c in chosen else "--strategy fused: does not lower the arena"
    else:
        chosen = _auto(folded, pads, candidates, smallest, costs, budget, extra, reasons, plan_of, chains_of,
                       fused_instr, layers_instr, ops)
    blocks = [
        BlockChoice(_label(folded, c), c.ops, costs[tuple(c.ops)], tuple(costs[(o,)] for o in c.ops),
                    "fused" if c in chosen else "layerwise", reasons.get(c.ops, ""))
        for c in candidates
    ]
    choice = ScheduleChoice(opts.strategy, chosen, extra, costs, blocks, budget=budget, flash_tight=flash_tight)
    choice.alternatives = _alternatives(folded, pads, chosen, smallest, costs, budget, extra, ops)
    return choice


def _fits(arena: int, const: int, budget: Budget) -> bool:
    return (budget.arena_bytes is None or arena <= budget.arena_bytes) and (
        budget.const_bytes is None or const <= budget.const_bytes)


def _auto(folded, pads, candidates, smallest, costs, budget: Budget, extra, reasons, plan_of, chains_of,
          fused_instr, layers_instr, ops) -> list[Chain]:
    fastest = _totals([], costs, ops)[1]
    chosen = list(smallest)
    for c in candidates:
        if c not in chosen:
            reasons[c.ops] = "layer by layer: fusing does not lower the arena"
    # time: run the blocks that cost the most instructions layer by layer again, until the
    # plan is within TIE of the fastest, while the arena still fits the budget
    def ratio(c: Chain) -> str:
        return f"{fused_instr(c) / max(layers_instr(c), 1):.2f}x the instructions of its layers"

    while chosen and _totals(chosen, costs, ops)[1] > (1 + TIE) * fastest:
        for worst in sorted(chosen, key=lambda c: layers_instr(c) - fused_instr(c)):
            trial = chains_of(choose_chains(folded, pads, [c for c in chosen if c is not worst], extra))
            if budget.arena_bytes is None or plan_of(trial).plan.arena_bytes <= budget.arena_bytes:
                break
        else:  # no block can go back to layer by layer: the RAM budget needs them all
            for c in chosen:
                reasons[c.ops] = f"fused: {ratio(c)}, but the arena must fit {budget.arena_bytes:,} bytes ({budget.source})"
            break
        reasons[worst.ops] = f"layer by layer: fused would take {ratio(worst)}"
        for c in chosen:
            if c not in trial and c is not worst:
                reasons[c.ops] = "layer by layer: fusing no longer lowers the arena"
        chosen = trial
    for c in chosen:
        if not reasons.get(c.ops, "").startswith("fused"):
            reasons[c.ops] = f"fused: lowers the arena; the plan stays within {TIE:.0%} of the fastest ({ratio(c)})"
    # flash: run blocks whose constants are larger fused than layer by layer one by one again
    const, _ = _totals(chosen, costs, ops)
    if budget.const_bytes is not None and const > budget.const_bytes:
        def gain(c: Chain) -> int:
            return costs[tuple(c.ops)].const_bytes - sum(costs[(o,)].const_bytes for o in c.ops)

        for c in sorted(chosen, key=gain, reverse=True):
            if const <= budget.const_bytes or gain(c) <= 0:
                break
            trial = [x for x in chosen if x is not c]
            if budget.arena_bytes is not None and plan_of(trial).plan.arena_bytes > budget.arena_bytes:
                continue
            chosen, const = trial, const - gain(c)
            reasons[c.ops] = f"layer by layer: the constants must fit {budget.const_bytes:,} bytes of flash ({budget.source})"
    order = {c.ops: k for k, c in enumerate(candidates)}
    return sorted(chosen, key=lambda c: order[c.ops])


def _alternatives(folded, pads, chosen, smallest, costs, budget, extra, ops) -> list[Alternative]:
    rows = []
    for label, chains in (("chosen", chosen), ("fused", smallest), ("layerwise", [])):
        arena = plan_schedule(folded, pads, list(chains), extra).plan.arena_bytes
        const, instr = _totals(chains, costs, ops)
        rows.append(Alternative(label, arena, const, instr, _fits(arena, const, budget), chosen=label == "chosen"))
    return rows
