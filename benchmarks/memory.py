"""Memory benchmark (issue 5): TFLite Micro's arena against mcugen's layer-by-layer and fused plans,
and the RAM measured on the emulated Cortex-M4 (static RAM + stack high-water mark).

For each model: TFLM's arena (`mcugen.oracle.tflm_arena_bytes`, the smallest arena the
`tflite-micro` package loads the model with), mcugen's planned arena with each strategy, then
both plans built as firmware for qemu-mps2-an386 and run once on a seeded input: RAM = .data +
.bss (arena, scratch and every other static variable) + the stack high-water mark of
N_invoke(), instructions per inference (QEMU plugin), and whether the outputs equal the
reference oracle's (tflite-runtime BUILTIN_REF, else TFLite Micro). Then the issue's goals.

Models: MobileNet v2 (10 classes, int8) for alpha in {0.35, 0.5, 0.75, 1.0} x resolution in
{96, 128, 160, 224}, built with `mcugen model mobilenet_v2` (a few seconds each), and every
.tflite in ../shared/models/real/.

Usage: python benchmarks/memory.py [--quick] [--no-board] [--work DIR] [--json FILE]
  --quick     MobileNet v2 0.35/96 and the real models only
  --no-board  plans only (no firmware build, no QEMU)
  --work DIR  keep the built models and firmware in DIR (reused by later runs)
This is a benchmark, not a test: it takes minutes (the full grid about 10 on 2 cores).
"""

from __future__ import annotations

import argparse
import json
import subprocess
import sys
import tempfile
import time
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Optional

REPO = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(REPO))

from mcugen.oracle import oracles_for, tflm_arena_bytes  # noqa: E402  (loads tflite-runtime first)

import numpy as np  # noqa: E402

from mcugen import codegen, driver  # noqa: E402
from mcugen.lower import lower  # noqa: E402
from mcugen.planner import verify  # noqa: E402
from mcugen.tflite_reader import read_tflite  # noqa: E402

SHARED_REAL = REPO.parent / "shared" / "models" / "real"
ALPHAS = (0.35, 0.5, 0.75, 1.0)
RESOLUTIONS = (96, 128, 160, 224)
BOARD = "qemu-mps2-an386"
GOAL_035_96 = 0.20
GOAL_GRID = 0.25
GOAL_REAL = 0.60
GOAL_INSTRUCTIONS = 1.10


@dataclass
class BoardRun:
    ram_bytes: int  # .data + .bss + stack high-water mark
    static_bytes: int  # .data + .bss
    stack_bytes: int
    instructions: int
    exact: bool


@dataclass
class Row:
    model: str
    group: str  # "0.35/96", "grid" or "real"
    tflm_arena: int
    layerwise_arena: int
    fused_arena: int
    fused_chains: int
    layerwise: Optional[BoardRun] = None
    fused: Optional[BoardRun] = None

    @property
    def fused_ram(self) -> int:
        """The fused plan's RAM on the board when measured, else its arena alone."""
        return self.fused.ram_bytes if self.fused else self.fused_arena

    @property
    def ratio(self) -> float:
        return self.fused_ram / self.tflm_arena

    @property
    def instruction_ratio(self) -> Optional[float]:
        if self.fused and self.layerwise:
            return self.fused.instructions / self.layerwise.instructions
        return None

    @property
    def goal(self) -> float:
        return {"0.35/96": GOAL_035_96, "grid": GOAL_GRID, "real": GOAL_REAL}[self.group]


def build_mobilenets(work: Path) -> list[tuple[str, str, Path]]:
    models = []
    for alpha in ALPHAS:
        for res in RESOLUTIONS:
            path = work / "models" / f"mobilenet_v2_{alpha}_{res}.tflite"
            if not path.exists():
                path.parent.mkdir(parents=True, exist_ok=True)
                print(f"building {path.name} ...", file=sys.stderr, flush=True)
                done = subprocess.run(
                    [sys.executable, "-m", "mcugen", "model", "mobilenet_v2", "--alpha", str(alpha), "--resolution", str(res),
                     "--classes", "10", "--samples", "8", "-o", str(path)],
                    capture_output=True, text=True, cwd=REPO,
                )
                if done.returncode != 0:
                    raise SystemExit(f"building {path.name} failed: {done.stderr.strip()[-500:]}")
            group = "0.35/96" if (alpha, res) == (0.35, 96) else "grid"
            models.append((f"mobilenet_v2 {alpha}/{res}", group, path))
    return models


def run_on_board(graph, program, path: Path, out_dir: Path) -> BoardRun:
    from mcugen.bench import bench_elf
    from mcugen.boards import get_board
    from mcugen.firmware import build_firmware

    board = get_board(BOARD)
    src = out_dir / "src"
    codegen.write_files(codegen.render_model(program, graph), src)
    fw = build_firmware(src, program.name, board, out_dir / "firmware")
    inputs = driver.random_inputs(graph, 1, 0)[0]
    result = bench_elf(fw.elf, board, [np.ascontiguousarray(a).tobytes() for a in inputs], timeout=600)
    want = oracles_for(path)[0].run(inputs)
    exact = all(
        np.array_equal(np.frombuffer(raw, dtype=w.dtype).reshape(-1), np.asarray(w).reshape(-1))
        for raw, w in zip(result.outputs, want)
    )
    static = result.data + result.bss
    return BoardRun(static + result.stack_bytes, static, result.stack_bytes, result.instructions, exact)


def measure(name: str, group: str, path: Path, work: Path, board: bool) -> Row:
    graph = read_tflite(path)
    programs = {}
    for strategy in ("layerwise", "fused"):
        p = lower(graph, strategy=strategy)
        verify(p.buffers, p.plan, p.aliases)
        programs[strategy] = p
    row = Row(
        model=name,
        group=group,
        tflm_arena=tflm_arena_bytes(path),
        layerwise_arena=programs["layerwise"].arena_bytes,
        fused_arena=programs["fused"].arena_bytes,
        fused_chains=sum(1 for l in programs["fused"].layers if l.op == "CHAIN"),
    )
    if board:
        for strategy, p in programs.items():
            out = work / "firmware" / f"{path.stem}_{strategy}"
            setattr(row, strategy, run_on_board(graph, p, path, out))
    return row


def _n(v: Optional[int]) -> str:
    return f"{v:,}" if v is not None else "n/a"


def print_table(rows: list[Row]) -> None:
    head = (
        f"{'model':<48} {'TFLM arena':>11} {'layerwise':>10} {'fused':>9} {'chains':>6} "
        f"{'RAM layerw.':>11} {'RAM fused':>10} {'stack':>6} {'fused/TFLM':>10} {'goal':>5} {'instr f/l':>9} {'exact':>5}"
    )
    print(head)
    print("-" * len(head))
    for r in rows:
        exact = "n/a" if not (r.fused and r.layerwise) else ("yes" if r.fused.exact and r.layerwise.exact else "NO")
        ir = f"{r.instruction_ratio:.3f}" if r.instruction_ratio is not None else "n/a"
        print(
            f"{r.model:<48} {r.tflm_arena:>11,} {r.layerwise_arena:>10,} {r.fused_arena:>9,} {r.fused_chains:>6} "
            f"{_n(r.layerwise.ram_bytes if r.layerwise else None):>11} {_n(r.fused.ram_bytes if r.fused else None):>10} "
            f"{_n(r.fused.stack_bytes if r.fused else None):>6} {r.ratio:>10.1%} {r.goal:>5.0%} {ir:>9} {exact:>5}"
        )


def print_goals(rows: list[Row], board: bool) -> bool:
    what = "RAM on the emulated M4 (static + stack)" if board else "planned arena only (no board run)"
    print(f"\nGoals ({what}, against TFLite Micro's arena for the same file):")
    ok = True

    def line(text: str, passed: bool) -> None:
        nonlocal ok
        ok &= passed
        print(f"  [{'PASS' if passed else 'FAIL'}] {text}")

    for group, goal, label in (
        ("0.35/96", GOAL_035_96, "MobileNet v2 0.35/96"),
        ("grid", GOAL_GRID, "every other alpha x resolution"),
        ("real", GOAL_REAL, "every real model"),
    ):
        members = [r for r in rows if r.group == group]
        if members:
            worst = max(members, key=lambda r: r.ratio)
            line(f"{label}: <= {goal:.0%} (worst {worst.ratio:.1%}, {worst.model})", all(r.ratio <= goal for r in members))
    if board:
        ratios = [r for r in rows if r.instruction_ratio is not None]
        worst = max(ratios, key=lambda r: r.instruction_ratio)
        line(
            f"instructions of the fused plan <= {GOAL_INSTRUCTIONS:.2f} x layer-by-layer (worst {worst.instruction_ratio:.3f}, {worst.model})",
            all(r.instruction_ratio <= GOAL_INSTRUCTIONS for r in ratios),
        )
        line("bit-exact on the board for both plans", all(r.fused.exact and r.layerwise.exact for r in rows))
    else:
        print("  [n/a ] instructions and on-board exactness: run without --no-board")
    return ok


def main(argv=None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--quick", action="store_true", help="MobileNet v2 0.35/96 and the real models only")
    ap.add_argument("--no-board", action="store_true", help="plans only, no firmware or QEMU")
    ap.add_argument("--work", type=Path, help="folder for built models and firmware (kept; default: a temporary folder)")
    ap.add_argument("--json", type=Path, help="also write the rows as JSON to this file")
    args = ap.parse_args(argv)
    board = not args.no_board
    with tempfile.TemporaryDirectory(prefix="mcugen-memory-bench-") as tmp:
        work = args.work or Path(tmp)
        work.mkdir(parents=True, exist_ok=True)
        models = build_mobilenets(work)
        if args.quick:
            models = [m for m in models if m[1] == "0.35/96"]
        if SHARED_REAL.is_dir():
            models += [(p.name, "real", p) for p in sorted(SHARED_REAL.glob("*.tflite"))]
        else:
            print(f"note: {SHARED_REAL} is absent: no real models", file=sys.stderr)
        rows = []
        for name, group, path in models:
            start = time.monotonic()
            rows.append(measure(name, group, path, work, board))
            print(f"measured {name} in {time.monotonic() - start:.0f} s", file=sys.stderr, flush=True)
    print_table(rows)
    ok = print_goals(rows, board)
    if args.json:
        args.json.write_text(json.dumps([{**asdict(r), "ratio": r.ratio} for r in rows], indent=2) + "\n")
    return 0 if ok else 1


if __name__ == "__main__":
    raise SystemExit(main())
