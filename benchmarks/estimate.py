"""Instruction estimates against measured counts: fits `mcugen/kernels/cost_table.py` and reports estimate/measured.

Each build is generated with `mcugen.driver.build`, built as firmware with per-layer markers
and run once in QEMU with mcugen's instruction-counting plugin (`mcugen bench`'s path).

  python benchmarks/estimate.py --fit      measure every layer of every calibration build
                                           (Cortex-M4: mcugen DSP, portable and generic
                                           kernels, CMSIS-NN; Cortex-M55: Helium; each layer
                                           by layer and with every chain fused), fit one row
                                           of coefficients per (instruction set, kernel
                                           family) by non-negative least squares and write
                                           the table
  python benchmarks/estimate.py            the check: for each model and each of
                                           --strategy auto|fused|layerwise (and CMSIS-NN,
                                           the M55), the estimate against the count

Models: MobileNet v2 0.35/96 (10 classes, built with `mcugen model` into --work) and every
.tflite in ../shared/models/real (and in $MCUGEN_THIRD_PARTY_MODELS when set), or the files
given. CMSIS-NN builds need --cmsis-nn PATH or $CMSIS_NN_PATH (skipped otherwise).
This is a benchmark, not a test: it builds dozens of firmware images and takes minutes.
"""

from __future__ import annotations

import argparse
import os
import subprocess
import sys
import tempfile
from pathlib import Path

REPO = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(REPO))

import numpy as np  # noqa: E402

from mcugen import bench, codegen, driver, firmware  # noqa: E402
from mcugen.boards import get_board  # noqa: E402
from mcugen.errors import McugenError  # noqa: E402
from mcugen.kernels import cost  # noqa: E402
from mcugen.options import CompileOptions  # noqa: E402
from mcugen.targets import get_target  # noqa: E402

M4, M55 = "qemu-mps2-an386", "qemu-mps3-an547"
NAME = "net"
TABLE = REPO / "mcugen" / "kernels" / "cost_table.py"
CONSTANT_PRIOR = 1e-5  # weight of "no per-call constant": 10,000 instructions weigh as a 10% error on one layer


def models(args) -> list[Path]:
    if args.models:
        return [Path(m) for m in args.models]
    work = Path(args.work)
    work.mkdir(parents=True, exist_ok=True)
    mnv2 = work / "mobilenet_v2_0.35_96.tflite"
    if not mnv2.exists():
        subprocess.run([sys.executable, "-m", "mcugen", "model", "mobilenet_v2", "--alpha", "0.35", "--resolution", "96",
                        "--classes", "10", "-o", str(mnv2)], check=True, capture_output=True, cwd=REPO)
    found = [mnv2] + sorted((REPO.parent / "shared" / "models" / "real").glob("*.tflite"))
    third = os.environ.get("MCUGEN_THIRD_PARTY_MODELS")
    if third:
        found += sorted(Path(third).glob("*.tflite"))
    return found


def measure(path: Path, opts: CompileOptions, board: str):
    """(Generated, per-layer instruction counts, whole-inference count) on an emulated board."""
    gen = driver.build(path, options=opts)
    b = get_board(board)
    with tempfile.TemporaryDirectory(prefix="mcugen-estimate-") as tmp:
        model_dir = Path(tmp) / "model"
        codegen.write_files(gen.files, model_dir)
        fw = firmware.build_firmware(model_dir, gen.program.name, b, Path(tmp) / "fw", profile=True,
                                     extra_cflags=gen.cflags)
        rng = np.random.default_rng(0)
        inputs = [rng.integers(0, 256, size=fw.interface.input_bytes[k], dtype=np.uint8).tobytes()
                  for k in range(fw.interface.num_inputs)]
        result = bench.bench_elf(fw.elf, b, inputs)
    return gen, list(result.layers), result.instructions


def rows_of(gen, counts: list[int], board: str):
    """(key, features, measured instructions) of every layer."""
    target = get_target(gen.options.kernel_target)
    schedule = gen.program.schedule
    out = []
    for layer, step, n in zip(gen.program.layers, schedule.steps, counts):
        plan = gen.kernel_plans.get(layer.index)
        k = cost.key(layer, plan, step, target, gen.options.kernels)
        out.append((k, cost.features(layer, step, schedule, k[1]), n))
    return out


def calibration_builds(cmsis: str | None):
    for board, kernels, target in ((M4, "mcugen", None), (M4, "mcugen", "portable"), (M4, None, None),
                                   (M4, "cmsis-nn", None), (M55, "mcugen", None)):
        if kernels == "cmsis-nn" and not cmsis:
            continue
        for strategy, fuse_all in (("layerwise", False), ("fused", True)):  # every chain, to measure each
            yield board, CompileOptions(name=NAME, board=board, kernels=kernels, target=target, cmsis_nn=cmsis,
                                        strategy=strategy, fuse_all=fuse_all)


def fit(args, cmsis) -> int:
    """Measure (or take from the cache in --work, except builds matching --refresh) and fit."""
    import json
    import re

    from scipy.optimize import nnls

    cache_path = Path(args.work) / "estimate_rows.json"
    cache = json.loads(cache_path.read_text()) if cache_path.exists() else {}
    groups: dict[tuple[str, str], list] = {}
    for path in models(args):
        for board, opts in calibration_builds(cmsis):
            tag = f"{path.name}|{board}|{opts.kernels}|{opts.kernel_target}|{opts.strategy}"
            entry = cache.get(tag)
            if isinstance(entry, list):  # rows of an older cache: keep their counts
                entry = {"version": 0, "counts": [n for _, _, n in entry], "rows": entry}
            if entry is None or (args.refresh and re.search(args.refresh, tag)):
                try:
                    gen, counts, total = measure(path, opts, board)
                except McugenError as e:
                    print(f"skip {tag}: {e}", flush=True)
                    continue
                entry = {"version": cost.FEATURES_VERSION, "counts": counts,
                         "rows": [[list(k), x, n] for k, x, n in rows_of(gen, counts, board)]}
                print(f"{tag:100} {total:>13,}", flush=True)
            elif entry["version"] != cost.FEATURES_VERSION:  # the counts stand; the features are computed again
                gen = driver.build(path, options=opts)
                entry = {"version": cost.FEATURES_VERSION, "counts": entry["counts"],
                         "rows": [[list(k), x, n] for k, x, n in rows_of(gen, entry["counts"], board)]}
            cache[tag] = entry
            cache_path.write_text(json.dumps(cache))
            for k, x, n in entry["rows"]:
                groups.setdefault(tuple(k), []).append((x, n))
    table = {}
    for k, rows in sorted(groups.items()):
        x = np.array([r[0] for r in rows], float)
        y = np.array([r[1] for r in rows], float)
        scale = x.max(axis=0)
        scale[scale == 0] = 1
        # relative error: every layer counts, not only the largest model's largest layers
        weight = 1.0 / np.maximum(y, 1.0)
        a, b = x / scale * weight[:, None], y * weight
        # a per-call constant is overhead (hundreds of instructions), never the bulk of a layer:
        # one pseudo-observation holds it near 0 unless the data need it
        prior = np.zeros((1, x.shape[1]))
        prior[0, -1] = CONSTANT_PRIOR * scale[-1]
        w, _ = nnls(np.vstack([a, prior]), np.append(b, 0.0))
        table[k] = tuple(float(f"{v:.4g}") for v in w / scale)
    print(f"{'calibration build (cached counts)':100} {'measured':>13} {'estimated':>13} ratio")
    for tag, entry in sorted(cache.items()):
        if isinstance(entry, dict) and entry.get("version") == cost.FEATURES_VERSION:
            measured = sum(n for _, _, n in entry["rows"])
            est = sum(sum(a * b for a, b in zip(table.get(tuple(k), ()), x)) for k, x, _ in entry["rows"])
            print(f"{tag:100} {measured:>13,} {est:>13,.0f} {est / max(measured, 1):.3f}")
    lines = ['"""Fitted instruction-cost coefficients per (instruction set, kernel family): written by '
             '`python benchmarks/estimate.py --fit`."""', "",
             "COEFFICIENTS: dict[tuple[str, str], tuple[float, ...]] = {"]
    lines += [f"    {k!r}: {v!r}," for k, v in table.items()]
    lines += ["}", ""]
    TABLE.write_text("\n".join(lines))
    print(f"wrote {len(table)} rows to {TABLE.relative_to(REPO)}")
    return 0


def check(args, cmsis) -> int:
    builds = [(M4, dict(kernels="mcugen", strategy=s)) for s in ("auto", "fused", "layerwise")]
    builds += [(M55, dict(kernels="mcugen", strategy="auto"))]
    if cmsis:
        builds += [(M4, dict(kernels="cmsis-nn", strategy="auto", cmsis_nn=cmsis))]
    print(f"{'model':44} {'board':16} {'kernels':9} {'strategy':9} {'measured':>13} {'estimated':>13} {'ratio':>6}")
    worst = 0.0
    for path in models(args):
        for board, kw in builds:
            try:
                gen, _, total = measure(path, CompileOptions(name=NAME, board=board, **kw), board)
            except McugenError as e:
                print(f"skip {path.name} {board} {kw}: {e}", flush=True)
                continue
            est = gen.estimated_instructions
            ratio = est / max(total, 1)
            worst = max(worst, abs(ratio - 1))
            print(f"{path.name:44} {board:16} {kw['kernels']:9} {kw['strategy']:9} {total:>13,} {est:>13,} {ratio:6.3f}",
                  flush=True)
    print(f"largest deviation of the estimate: {worst:.1%}")
    return 0


def main(argv=None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("models", nargs="*", help=".tflite files (default: MobileNet v2 0.35/96 and ../shared/models/real)")
    ap.add_argument("--fit", action="store_true", help="measure, fit and rewrite mcugen/kernels/cost_table.py")
    ap.add_argument("--refresh", metavar="REGEX", help="with --fit: measure again the cached builds whose "
                    "'model|board|kernels|target|strategy' matches")
    ap.add_argument("--work", default=str(Path(tempfile.gettempdir()) / "mcugen-estimate"), help="where models are built")
    ap.add_argument("--cmsis-nn", default=os.environ.get("CMSIS_NN_PATH"), help="CMSIS-NN checkout (default $CMSIS_NN_PATH)")
    args = ap.parse_args(argv)
    return fit(args, args.cmsis_nn) if args.fit else check(args, args.cmsis_nn)


if __name__ == "__main__":
    raise SystemExit(main())
