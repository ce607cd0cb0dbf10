"""Static memory planner: buffers with live ranges in, arena offsets out, checked by a verifier.

Vocabulary
- A *step* is an op index. A `Buffer` is live on the closed range of steps `[first, last]`: it
  is written at `first` and last read at `last`. Two buffers live at one common step must not
  share a byte, unless an `Alias` declares that they may (see `overlap_permitted`).
- The op at step `s` reads its inputs and writes its outputs, so an input whose last read is
  `s` and an output first written at `s` are live together: only an alias lets them overlap.
- A ring buffer of a fused block is an ordinary `Buffer` live over the block's steps.
- Everything here is pure: functions take frozen dataclasses and return new ones, and every
  planner calls `verify` on its result before returning it (a planner bug raises `PlanError`).

Greedy planner (`plan_greedy`), in the spirit of TFLite Micro's greedy_memory_planner.h:
- Aliases first: each declared alias, in the order given, glues its two buffers into one
  *group* at the relative offset of largest permitted overlap (SAME: same offset, i.e. the op
  runs in place; HEAD/TAIL: the output moved as far into the input as `overlap` allows). An
  alias is skipped if honouring it would overlap two members of the group live together that
  no alias allows to, or cannot meet the alignments. Groups are then placed as rigid blocks.
- Each ordering of the groups is tried (input order, largest first as in TFLM, first use, size
  times lifetime, lifetime, bytes of conflicting groups), every one with ties broken by input
  order; plus the order built by repeatedly taking the group that fits lowest (ties: largest,
  or longest lived), as in the "best fit" heuristic for dynamic storage allocation.
- Placement of one ordering: take the groups in that order; collect the address ranges of the
  already-placed groups that are live at some common step; put the group at the lowest aligned
  offset that does not intersect any of them (first fit in address between live conflicts).
- The best ordering then goes through a bounded hill climb of `iterations` moves: either a
  group that ends highest is swapped with, or moved before, an earlier group live at the same
  time, or any group is moved anywhere (choices from a generator with a fixed seed, so the
  result is deterministic); a move is kept if (highest end, groups ending there) does not
  grow. The climb stops early when the arena reaches the lower bound.
- Everything is done twice, with aliases honoured and with aliases ignored; the smaller arena
  wins (ties: the plan honouring the aliases, then the earlier strategy). The result is
  verified, so an arena can never be wrong, only larger than needed.

The lower bound (`lower_bound`) is the largest number of bytes live at one step. Without
aliases no plan can be smaller; with aliases an in-place plan can be, but not smaller than
`alias_lower_bound` (the same count minus, at each step, the most bytes each alias between
two live buffers lets them share: the union of the buffers' bytes is at least the sum of
their sizes minus the sum of their pairwise intersections). `Plan.lower_bound_bytes` holds
the latter, which equals the former without aliases.
"""

from __future__ import annotations

import enum
import random
import types
from dataclasses import dataclass, field
from typing import Callable, Iterable, Mapping, Optional, Sequence

from mcugen.errors import McugenError


class PlanError(McugenError):
    """A memory plan is inconsistent: bad buffers or aliases, or two live buffers overlap."""


def _align_up(value: int, align: int) -> int:
    return -(-value // align) * align


def _align_down(value: int, align: int) -> int:
    return (value // align) * align


@dataclass(frozen=True)
class Buffer:
    """One tensor (or scratch/ring buffer) to place: `size` bytes live on steps `first..last`."""

    name: str
    size: int
    first: int
    last: int
    align: int = 16

    def __post_init__(self) -> None:
        if not isinstance(self.name, str) or not self.name:
            raise PlanError(f"buffer name {self.name!r} is not a non-empty string")
        for attr in ("size", "first", "last", "align"):
            if not isinstance(getattr(self, attr), int) or isinstance(getattr(self, attr), bool):
                raise PlanError(f"buffer {self.name!r}: {attr} must be an int")
        if self.size <= 0:
            raise PlanError(f"buffer {self.name!r}: size {self.size} must be > 0 bytes")
        if self.first < 0 or self.last < self.first:
            raise PlanError(
                f"buffer {self.name!r}: live range {self.first}..{self.last} must satisfy 0 <= first <= last"
            )
        if self.align <= 0 or self.align & (self.align - 1):
            raise PlanError(f"buffer {self.name!r}: align {self.align} must be a power of two")

    def live_with(self, other: "Buffer") -> bool:
        """True if the two buffers are live at one common step (closed ranges intersect)."""
        return self.first <= other.last and other.first <= self.last

    def describe(self, offset: int) -> str:
        return f"{self.name!r} (steps {self.first}..{self.last}, bytes {offset}..{offset + self.size})"


class AliasKind(enum.Enum):
    """How buffer `b` of an `Alias` may overlap buffer `a` (see `overlap_permitted`)."""

    SAME = "same"  # b starts exactly where a starts (in place: depthwise, ADD, RESHAPE view)
    HEAD = "head"  # b may cover bytes among the first `overlap` bytes of a
    TAIL = "tail"  # b may cover bytes among the last `overlap` bytes of a


@dataclass(frozen=True)
class Alias:
    """Permission for buffer `b` (usually an op's output) to overlap buffer `a` (its input).

    The rule creating an alias justifies it from the kernel's access order, e.g.:
    - SAME: an element-wise kernel reading a[i] before writing b[i] (ADD over an operand,
      depthwise conv over its input with the right loop order, a RESHAPE view).
    - HEAD (`overlap` bytes): a kernel writing b front to back never past the bytes of a it
      has finished reading, so b may sit below a and end inside a's first `overlap` bytes.
    - TAIL (`overlap` bytes): the mirror image, a kernel writing back to front: b may sit above
      a and start inside a's last `overlap` bytes.
    Aliases are permissions, not obligations; they are not transitive.
    """

    a: str
    b: str
    kind: AliasKind = AliasKind.SAME
    overlap: int = 0

    def __post_init__(self) -> None:
        if not isinstance(self.kind, AliasKind):
            raise PlanError(f"alias {self.a!r}->{self.b!r}: kind {self.kind!r} is not an AliasKind")
        if self.a == self.b:
            raise PlanError(f"alias {self.a!r}->{self.b!r}: a buffer cannot alias itself")
        if self.kind is AliasKind.SAME and self.overlap != 0:
            raise PlanError(f"alias {self.a!r}->{self.b!r}: SAME takes no overlap (got {self.overlap})")
        if self.kind is not AliasKind.SAME and (not isinstance(self.overlap, int) or self.overlap <= 0):
            raise PlanError(f"alias {self.a!r}->{self.b!r}: {self.kind.value} needs overlap > 0 bytes")


def overlap_permitted(alias: Alias, a: Buffer, offset_a: int, b: Buffer, offset_b: int) -> bool:
    """The aliasing predicate: may `b` at `offset_b` share bytes with `a` at `offset_a`?

    `alias` must name `a` as its `a` and `b` as its `b` (direction matters for HEAD/TAIL).
    Buffers that do not intersect in memory need no permission; this answers for those that do.
    """
    assert (alias.a, alias.b) == (a.name, b.name)
    if alias.kind is AliasKind.SAME:
        # In place: b's first byte is a's first byte. b may be shorter or longer than a.
        return offset_b == offset_a
    if alias.kind is AliasKind.HEAD:
        # b lies below (or at) a's start and its end reaches at most `overlap` bytes into a:
        # every byte of a that b covers is among a's first `overlap` bytes.
        return offset_b + b.size <= offset_a + alias.overlap
    # TAIL: b starts no lower than `overlap` bytes before a's end, i.e.
    # every byte of a that b covers is among a's last `overlap` bytes.
    return offset_b >= offset_a + a.size - alias.overlap


def _max_overlap_shift(alias: Alias, a: Buffer, b: Buffer) -> int:
    """Offset of b minus offset of a that overlaps them most while `overlap_permitted` holds."""
    if alias.kind is AliasKind.SAME:
        return 0
    if alias.kind is AliasKind.HEAD:
        return alias.overlap - b.size
    return a.size - alias.overlap


@dataclass(frozen=True)
class Plan:
    """Offsets of every buffer in one arena of `arena_bytes` (a multiple of the largest align)."""

    offsets: Mapping[str, int] = field(hash=False)
    arena_bytes: int
    lower_bound_bytes: int  # alias_lower_bound: most bytes live at one step, shared bytes once
    strategy: str  # which planner / ordering produced it, for reports

    def __post_init__(self) -> None:
        object.__setattr__(self, "offsets", types.MappingProxyType(dict(self.offsets)))

    @property
    def ratio(self) -> float:
        """arena_bytes / lower_bound_bytes (1.0 is optimal without aliases; 1.0 if empty)."""
        return self.arena_bytes / self.lower_bound_bytes if self.lower_bound_bytes else 1.0


def live_bytes_per_step(buffers: Sequence[Buffer]) -> list[int]:
    """Bytes live at each step 0..max(last): the sum of the sizes of the buffers live there."""
    if not buffers:
        return []
    delta = [0] * (max(buf.last for buf in buffers) + 2)
    for buf in buffers:
        delta[buf.first] += buf.size
        delta[buf.last + 1] -= buf.size
    live, running = [], 0
    for change in delta[:-1]:
        running += change
        live.append(running)
    return live


def lower_bound(buffers: Sequence[Buffer]) -> int:
    """The most bytes live at one step: no plan without aliases can use a smaller arena."""
    return max(live_bytes_per_step(buffers), default=0)


def alias_lower_bound(buffers: Sequence[Buffer], aliases: Sequence[Alias] = ()) -> int:
    """No verified plan honouring at most these aliases can use a smaller arena: at each step,
    the bytes live minus, for each alias whose two buffers are live there, the most bytes the
    alias lets them share (SAME: the smaller size; HEAD/TAIL: `overlap`, at most either size)."""
    live = live_bytes_per_step(buffers)
    by_name = {buf.name: buf for buf in buffers}
    shared: dict[tuple[str, str], int] = {}  # per pair of buffers, the most any alias allows
    for alias in aliases:
        a, b = by_name[alias.a], by_name[alias.b]
        most = min(a.size, b.size) if alias.kind is AliasKind.SAME else min(alias.overlap, a.size, b.size)
        pair = (min(a.name, b.name), max(a.name, b.name))
        shared[pair] = max(shared.get(pair, 0), most)
    for (name_a, name_b), most in shared.items():
        a, b = by_name[name_a], by_name[name_b]
        for step in range(max(a.first, b.first), min(a.last, b.last) + 1):
            live[step] -= most
    return max(live, default=0)


def _index_buffers(buffers: Sequence[Buffer]) -> dict[str, Buffer]:
    by_name: dict[str, Buffer] = {}
    for buf in buffers:
        if not isinstance(buf, Buffer):
            raise PlanError(f"expected a Buffer, got {type(buf).__name__}")
        if buf.name in by_name:
            raise PlanError(f"buffer name {buf.name!r} is used twice")
        by_name[buf.name] = buf
    return by_name


def _check_aliases(by_name: Mapping[str, Buffer], aliases: Sequence[Alias]) -> None:
    for alias in aliases:
        if not isinstance(alias, Alias):
            raise PlanError(f"expected an Alias, got {type(alias).__name__}")
        for name in (alias.a, alias.b):
            if name not in by_name:
                raise PlanError(f"alias {alias.a!r}->{alias.b!r} names unknown buffer {name!r}")


def _arena_align(buffers: Sequence[Buffer]) -> int:
    return max((buf.align for buf in buffers), default=1)


def verify(buffers: Sequence[Buffer], plan: Plan, aliases: Sequence[Alias] = ()) -> None:
    """Raise `PlanError` unless `plan` places every buffer aligned, inside the arena, and no two
    buffers live at a common step share a byte without a declared alias permitting it."""
    by_name = _index_buffers(buffers)
    aliases = tuple(aliases)
    _check_aliases(by_name, aliases)
    missing = [name for name in by_name if name not in plan.offsets]
    extra = [name for name in plan.offsets if name not in by_name]
    if missing or extra:
        raise PlanError(f"plan offsets do not match the buffers: missing {missing}, unknown {extra}")
    if plan.arena_bytes % _arena_align(buffers):
        raise PlanError(f"arena of {plan.arena_bytes} bytes is not a multiple of {_arena_align(buffers)}")
    for buf in buffers:
        offset = plan.offsets[buf.name]
        if not isinstance(offset, int) or offset < 0 or offset % buf.align:
            raise PlanError(f"buffer {buf.describe(offset)}: offset is not a multiple of {buf.align} >= 0")
        if offset + buf.size > plan.arena_bytes:
            raise PlanError(f"buffer {buf.describe(offset)} ends past the arena of {plan.arena_bytes} bytes")
    permits: dict[tuple[str, str], list[Alias]] = {}
    for alias in aliases:
        permits.setdefault((alias.a, alias.b), []).append(alias)
    # Sweep in address order: only buffers whose address ranges intersect are compared.
    placed = sorted(buffers, key=lambda buf: (plan.offsets[buf.name], buf.name))
    for i, first in enumerate(placed):
        off1 = plan.offsets[first.name]
        for second in placed[i + 1 :]:
            off2 = plan.offsets[second.name]
            if off2 >= off1 + first.size:
                break
            if not first.live_with(second):
                continue
            allowed = any(
                overlap_permitted(alias, first, off1, second, off2) for alias in permits.get((first.name, second.name), ())
            ) or any(
                overlap_permitted(alias, second, off2, first, off1) for alias in permits.get((second.name, first.name), ())
            )
            if not allowed:
                raise PlanError(
                    f"buffers {first.describe(off1)} and {second.describe(off2)} are live together "
                    "and overlap in memory without an alias permitting it"
                )


def plan_naive(buffers: Sequence[Buffer]) -> Plan:
    """The no-reuse baseline: every buffer gets its own bytes, in the order given."""
    _index_buffers(buffers)
    offsets, end = {}, 0
    for buf in buffers:
        offsets[buf.name] = _align_up(end, buf.align)
        end = offsets[buf.name] + buf.size
    plan = Plan(offsets, _align_up(end, _arena_align(buffers)), lower_bound(buffers), "naive")
    verify(buffers, plan)
    return plan


# ---------------------------------------------------------------------------------------------
# Greedy planner internals


@dataclass(frozen=True)
class _Group:
    """Buffers glued together by aliases, placed as one rigid block (offsets relative to it)."""

    members: tuple[tuple[int, int], ...]  # (buffer index, offset relative to the group base)
    align: int  # the base offset must be a multiple of this (largest member align)
    extent: int  # bytes from the base to the end of the highest member
    first: int
    last: int
    index: int  # position of its first member in the input, for tie-breaking


def _build_groups(buffers: Sequence[Buffer], aliases: Sequence[Alias]) -> list[_Group]:
    """Glue aliased buffers at their largest permitted overlap, skipping aliases that conflict."""
    index = {buf.name: i for i, buf in enumerate(buffers)}
    group_of = list(range(len(buffers)))  # buffer index -> group id
    members: dict[int, dict[int, int]] = {i: {i: 0} for i in range(len(buffers))}  # gid -> {buf: rel}
    permits: dict[tuple[int, int], list[Alias]] = {}
    for alias in aliases:
        permits.setdefault((index[alias.a], index[alias.b]), []).append(alias)

    def pair_ok(i: int, rel_i: int, j: int, rel_j: int) -> bool:
        bi, bj = buffers[i], buffers[j]
        if not bi.live_with(bj) or rel_j >= rel_i + bi.size or rel_i >= rel_j + bj.size:
            return True
        return any(overlap_permitted(al, bi, rel_i, bj, rel_j) for al in permits.get((i, j), ())) or any(
            overlap_permitted(al, bj, rel_j, bi, rel_i) for al in permits.get((j, i), ())
        )

    for alias in aliases:
        ia, ib = index[alias.a], index[alias.b]
        ga, gb = group_of[ia], group_of[ib]
        if ga == gb:
            continue  # already placed relative to each other; the alias may or may not hold
        group_a, group_b = members[ga], members[gb]
        align_b = max(buffers[i].align for i in group_b)
        wanted = group_a[ia] + _max_overlap_shift(alias, buffers[ia], buffers[ib]) - group_b[ib]
        # Move group b by a multiple of its own alignment, in the direction the alias allows.
        if alias.kind is AliasKind.SAME:
            shift = wanted
            if shift % align_b:
                continue
        elif alias.kind is AliasKind.HEAD:
            shift = _align_down(wanted, align_b)
        else:
            shift = _align_up(wanted, align_b)
        moved = {i: rel + shift for i, rel in group_b.items()}
        if not all(pair_ok(i, ri, j, rj) for i, ri in group_a.items() for j, rj in moved.items()):
            continue
        merged = {**group_a, **moved}
        align = max(buffers[i].align for i in merged)
        base = _align_down(min(merged.values()), align)
        members[ga] = {i: rel - base for i, rel in merged.items()}
        del members[gb]
        for i in moved:
            group_of[i] = ga

    groups = []
    for gid in sorted(members, key=lambda g: min(members[g])):
        rels = members[gid]
        order = sorted(rels)
        groups.append(
            _Group(
                members=tuple((i, rels[i]) for i in order),
                align=max(buffers[i].align for i in order),
                extent=max(rels[i] + buffers[i].size for i in order),
                first=min(buffers[i].first for i in order),
                last=max(buffers[i].last for i in order),
                index=order[0],
            )
        )
    return groups


def _conflicts(buffers: Sequence[Buffer], groups: Sequence[_Group]) -> list[dict[int, list[tuple[int, int]]]]:
    """For each group g and each group h live with it: the base offsets of g forbidden per unit
    of h's base, as half-open ranges [lo, hi) to shift by h's base (member pairs live together)."""
    table: list[dict[int, list[tuple[int, int]]]] = [{} for _ in groups]
    for g, group in enumerate(groups):
        for h in range(g + 1, len(groups)):
            other = groups[h]
            if group.first > other.last or other.first > group.last:
                continue
            g_vs_h, h_vs_g = [], []
            for i, rel_i in group.members:
                for j, rel_j in other.members:
                    if buffers[i].live_with(buffers[j]):
                        # base_g + rel_i .. + size_i must miss base_h + rel_j .. + size_j
                        g_vs_h.append((rel_j - rel_i - buffers[i].size + 1, rel_j + buffers[j].size - rel_i))
                        h_vs_g.append((rel_i - rel_j - buffers[j].size + 1, rel_i + buffers[i].size - rel_j))
            if g_vs_h:
                table[g][h] = g_vs_h
                table[h][g] = h_vs_g
    return table


def _place(groups: Sequence[_Group], conflicts, order: Sequence[int]) -> tuple[int, list[int]]:
    """First fit of the groups in `order`; returns (highest end, base offset per group)."""
    bases = [-1] * len(groups)
    top = 0
    for g in order:
        bases[g] = _first_fit(groups[g].align, conflicts[g], bases)
        top = max(top, bases[g] + groups[g].extent)
    return top, bases


def _first_fit(align: int, ranges_by_group: Mapping[int, list[tuple[int, int]]], bases: Sequence[int]) -> int:
    """Lowest multiple of `align` outside the ranges forbidden by the already-placed groups."""
    forbidden = sorted(
        (bases[h] + lo, bases[h] + hi) for h, ranges in ranges_by_group.items() if bases[h] >= 0 for lo, hi in ranges
    )
    base = 0
    for lo, hi in forbidden:
        if lo > base:
            break  # every later range starts even higher: base is free
        if base < hi:
            base = _align_up(hi, align)
    return base


def _lowest_offset_order(groups: Sequence[_Group], conflicts, tie: Callable[[int], tuple]) -> list[int]:
    """The order in which first fit places, each time, the group that fits lowest (ties: `tie`)."""
    bases = [-1] * len(groups)
    lowest = {g: 0 for g in range(len(groups))}
    order = []
    while lowest:
        g = min(lowest, key=lambda g: (lowest[g], tie(g)))
        bases[g] = lowest.pop(g)
        order.append(g)
        for h in conflicts[g]:
            if h in lowest:
                lowest[h] = _first_fit(groups[h].align, conflicts[h], bases)
    return order


def _orderings(groups: Sequence[_Group], conflicts) -> list[tuple[str, list[int]]]:
    def lifetime(g: _Group) -> int:
        return g.last - g.first + 1

    conflict_bytes = [sum(groups[h].extent for h in conflicts[g]) for g in range(len(groups))]
    keys: list[tuple[str, Callable[[int], tuple]]] = [
        # First fit in input order places every buffer at or below its `plan_naive` offset
        # (induction: all earlier buffers end at or below their naive ends), so keeping this
        # ordering guarantees greedy <= naive.
        ("input_order", lambda g: (groups[g].index,)),
        ("size", lambda g: (-groups[g].extent, groups[g].first, groups[g].index)),
        ("first_use", lambda g: (groups[g].first, -groups[g].extent, groups[g].index)),
        ("size_x_lifetime", lambda g: (-groups[g].extent * lifetime(groups[g]), -groups[g].extent, groups[g].index)),
        ("lifetime", lambda g: (-lifetime(groups[g]), -groups[g].extent, groups[g].index)),
        ("conflict_bytes", lambda g: (-conflict_bytes[g], -groups[g].extent, groups[g].index)),
    ]
    orders = [(name, sorted(range(len(groups)), key=key)) for name, key in keys]
    orders.append(("lowest_fit", _lowest_offset_order(groups, conflicts, keys[1][1])))
    orders.append(("lowest_fit_lifetime", _lowest_offset_order(groups, conflicts, keys[4][1])))
    return orders


def _climb(groups, conflicts, order: list[int], top: int, target: int, iterations: int) -> tuple[list[int], int, int]:
    """Bounded hill climb over orderings; returns (order, top, moves kept that lowered the top).
    It stops once `top` is at or below `target` (no smaller arena is possible).

    A move is kept if it lowers (highest end, number of groups ending there), or leaves it equal
    (to walk across plateaus)."""
    rng = random.Random(0x6D637567)  # fixed seed: same input, same plan
    improvements = 0
    bases = _place(groups, conflicts, order)[1]

    def score(top: int, bases: Sequence[int]) -> tuple[int, int]:
        return top, sum(1 for g, group in enumerate(groups) if bases[g] + group.extent == top)

    current = score(top, bases)
    for _ in range(iterations):
        if top <= target:
            break
        position = {g: p for p, g in enumerate(order)}
        candidate = list(order)
        if rng.random() < 0.5:
            # Random shake: move any group to any position.
            g = candidate.pop(rng.randrange(len(candidate)))
            candidate.insert(rng.randrange(len(candidate) + 1), g)
        else:
            highest = [g for g in order if bases[g] + groups[g].extent == top]
            g = rng.choice(highest)
            earlier = [h for h in conflicts[g] if position[h] < position[g]]
            if not earlier:
                break  # g sits at offset 0 with nothing below it: no order can end lower
            h = rng.choice(sorted(earlier))
            if rng.random() < 0.5:
                candidate[position[g]], candidate[position[h]] = h, g
            else:
                candidate.pop(position[g])
                candidate.insert(position[h], g)
        new_top, new_bases = _place(groups, conflicts, candidate)
        new = score(new_top, new_bases)
        if new <= current:
            improvements += new_top < top
            order, top, bases, current = candidate, new_top, new_bases, new
    return order, top, improvements


def _group_bound(buffers: Sequence[Buffer], groups: Sequence[_Group]) -> int:
    """Most bytes live at one step when each group counts the union of its live members' bytes:
    no placement of these rigid groups can end lower."""
    steps = sorted({buffers[i].first for group in groups for i, _ in group.members})
    best = 0
    for step in steps:  # live bytes only grow at a first step, so checking those suffices
        total = 0
        for group in groups:
            spans = sorted(
                (rel, rel + buffers[i].size) for i, rel in group.members if buffers[i].first <= step <= buffers[i].last
            )
            covered, end = 0, None
            for lo, hi in spans:
                if end is None or lo >= end:
                    covered += hi - lo
                    end = hi
                elif hi > end:
                    covered += hi - end
                    end = hi
            total += covered
        best = max(best, total)
    return best


def _plan_with_groups(
    buffers: Sequence[Buffer], groups: Sequence[_Group], iterations: int, arena_align: int
) -> tuple[int, str, dict[str, int]]:
    """Best first-fit ordering of `groups`, climbed; returns (highest end, strategy, offsets)."""
    # The arena is the top rounded up to `arena_align`: a top at or below the bound rounded up
    # the same way already gives the smallest arena possible.
    target = _align_up(_group_bound(buffers, groups), arena_align)
    conflicts = _conflicts(buffers, groups)
    best = None
    for name, order in _orderings(groups, conflicts):
        top, _ = _place(groups, conflicts, order)
        if best is None or top < best[0]:
            best = (top, name, order)
    top, name, order = best
    order, top, improvements = _climb(groups, conflicts, order, top, target, iterations)
    if improvements:
        name += "+climb"
    bases = _place(groups, conflicts, order)[1]
    offsets = {}
    for g, group in enumerate(groups):
        for i, rel in group.members:
            offsets[buffers[i].name] = bases[g] + rel
    return top, name, {buf.name: offsets[buf.name] for buf in buffers}


def plan_greedy(buffers: Sequence[Buffer], aliases: Iterable[Alias] = (), *, iterations: int = 1000) -> Plan:
    """Smallest arena found by greedy first fit over several orderings plus a bounded hill
    climb of `iterations` moves (see the module docstring); verified before it is returned."""
    by_name = _index_buffers(buffers)
    aliases = tuple(aliases)
    _check_aliases(by_name, aliases)
    if iterations < 0:
        raise PlanError(f"iterations {iterations} must be >= 0")
    arena_align = _arena_align(buffers)
    bound = alias_lower_bound(buffers, aliases)
    variants = [("", aliases)] if not aliases else [("aliases:", aliases), ("no-aliases:", ())]
    best: Optional[Plan] = None
    for label, honoured in variants:
        groups = _build_groups(buffers, honoured)
        top, name, offsets = _plan_with_groups(buffers, groups, iterations, arena_align)
        plan = Plan(offsets, _align_up(top, arena_align), bound, label + name)
        if best is None or plan.arena_bytes < best.arena_bytes:
            best = plan
    assert best is not None
    verify(buffers, best, aliases)
    return best
