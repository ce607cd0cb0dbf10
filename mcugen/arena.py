"""Arena planning of a schedule: its buffers, the aliases it needs, the verified greedy plan, the arena-driven chain choice, live ranges."""

from __future__ import annotations

from dataclasses import dataclass
from typing import Optional

from mcugen.fusion import Chain
from mcugen.ir import Graph
from mcugen.passes import Buffers, Schedule, build_schedule, schedule_buffers
from mcugen.planner import Alias, AliasKind, Buffer, Plan, plan_greedy


@dataclass(frozen=True)
class PlannedSchedule:
    schedule: Schedule
    bufs: Buffers
    plan: Plan


def _permitted_overlap(alias: Alias, a: Buffer, b: Buffer) -> int:
    """Most bytes `b` may share with `a` under `alias`."""
    if alias.kind is AliasKind.SAME:
        return min(a.size, b.size)
    return min(alias.overlap, a.size, b.size)


def needed_aliases(buffers: tuple[Buffer, ...], aliases: tuple[Alias, ...]) -> tuple[Alias, ...]:
    """The aliases of the steps that cannot reach the bound without sharing bytes.

    The greedy planner glues aliased buffers into rigid groups at their largest overlap; a long
    chain of aliases (one per layer) drifts down by every layer's lag and can make a group
    taller than the peak. Sharing only matters at steps whose live bytes exceed the bound
    with aliases (the most bytes live at a step minus the overlaps permitted there), so this
    keeps the aliases between buffers live together at such a step.
    """
    by_name = {b.name: b for b in buffers}
    n = max((b.last for b in buffers), default=-1) + 1
    plain = [0] * n
    for b in buffers:
        for k in range(b.first, b.last + 1):
            plain[k] += b.size
    shared = [0] * n
    for al in aliases:
        a, b = by_name[al.a], by_name[al.b]
        for k in range(max(a.first, b.first), min(a.last, b.last) + 1):
            shared[k] += _permitted_overlap(al, a, b)
    bound = max((plain[k] - shared[k] for k in range(n)), default=0)
    tight = {k for k in range(n) if plain[k] > bound}
    keep = []
    for al in aliases:
        a, b = by_name[al.a], by_name[al.b]
        if any(k in tight for k in range(max(a.first, b.first), min(a.last, b.last) + 1)):
            keep.append(al)
    return tuple(keep)


def plan_buffers(bufs: Buffers) -> Plan:
    """The smaller of the greedy plans honouring every alias and only the needed ones."""
    plan = plan_greedy(bufs.buffers, bufs.aliases)
    needed = needed_aliases(bufs.buffers, bufs.aliases)
    if needed != bufs.aliases:
        trial = plan_greedy(bufs.buffers, needed)
        if trial.arena_bytes < plan.arena_bytes:
            plan = Plan(trial.offsets, trial.arena_bytes, plan.lower_bound_bytes, "needed-" + trial.strategy)
    return plan


def plan_schedule(graph: Graph, pads, chains: list[Chain], extra_scratch: Optional[dict[int, int]] = None) -> PlannedSchedule:
    """The schedule with these chains fused, its buffers and its verified greedy plan."""
    schedule = build_schedule(graph, pads, chains)
    bufs = schedule_buffers(schedule, extra_scratch)
    return PlannedSchedule(schedule, bufs, plan_buffers(bufs))


def choose_chains(graph: Graph, pads, candidates: list[Chain], extra_scratch: Optional[dict[int, int]] = None) -> PlannedSchedule:
    """Fuse a chain only where it lowers the arena: start with every candidate fused, then
    run each one layer by layer instead (in graph order) whenever that does not grow the
    planned arena."""
    chosen = list(candidates)
    best = plan_schedule(graph, pads, chosen, extra_scratch)
    for chain in candidates:
        trial = [c for c in chosen if c is not chain]
        planned = plan_schedule(graph, pads, trial, extra_scratch)
        if planned.plan.arena_bytes <= best.plan.arena_bytes:
            chosen, best = trial, planned
    return best


def live_ranges(bufs: Buffers, plan: Plan, n_steps: int, inputs: set[str], outputs: set[str]) -> list[list[tuple[int, int]]]:
    """Merged [start, end) byte ranges live at each layer boundary (see Program.live_ranges):
    before layer 0 the graph inputs, after the last layer the graph outputs, in between
    every buffer written before the boundary and read after it."""
    boundaries = []
    for k in range(n_steps + 1):
        spans = []
        for b in bufs.buffers:
            if k == 0:
                live = b.name in inputs
            elif k == n_steps:
                live = b.name in outputs
            else:
                live = b.first <= k - 1 < b.last
            if live:
                spans.append((plan.offsets[b.name], plan.offsets[b.name] + b.size))
        merged: list[tuple[int, int]] = []
        for lo, hi in sorted(spans):
            if merged and lo <= merged[-1][1]:
                merged[-1] = (merged[-1][0], max(merged[-1][1], hi))
            else:
                merged.append((lo, hi))
        boundaries.append(merged)
    return boundaries
