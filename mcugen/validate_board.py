"""Runs generated models on emulated Cortex-M boards for `validate --board` and the main job."""

from __future__ import annotations

import tempfile
from dataclasses import dataclass
from pathlib import Path

import numpy as np

from mcugen import codegen
from mcugen.boards import get_board
from mcugen.errors import McugenError, ToolError


def _firmware(gen, board, work: Path, profile: bool = False):
    from mcugen.firmware import build_firmware

    model_dir = work / "model"
    codegen.write_files(gen.files, model_dir)
    folder = "firmware-profiled" if profile else "firmware"
    return build_firmware(model_dir, gen.program.name, board, work / folder, profile=profile, extra_cflags=gen.cflags)


def _to_bytes(gen, arrays) -> list[bytes]:
    g = gen.graph
    out = []
    for k, a in enumerate(arrays):
        t = g.t(g.inputs[k])
        out.append(np.ascontiguousarray(np.asarray(a).astype(t.dtype.numpy).reshape(t.shape)).tobytes())
    return out


def _from_bytes(gen, blobs) -> list[np.ndarray]:
    g = gen.graph
    return [np.frombuffer(b, dtype=g.t(i).dtype.numpy).reshape(g.t(i).shape).copy() for b, i in zip(blobs, g.outputs)]


def make_runner(board_name: str):
    board = get_board(board_name)
    if not board.emulated:
        raise McugenError(
            f"--board {board_name}: validation runs on an emulated board (qemu-mps2-an386, qemu-mps2-an500, "
            "qemu-mps3-an547) or host; use `mcugen firmware` and `mcugen flash` for real boards"
        )

    def runner(gen, runs, work: Path):
        from mcugen.qemu import describe_failure, run_on_qemu_batch

        fw = _firmware(gen, board, work)
        timeout = 120 + gen.graph.macs() / 20e6 * len(runs)
        res = run_on_qemu_batch(fw.elf, board, [_to_bytes(gen, r) for r in runs], timeout=timeout)
        if res.exit_code != 0:
            raise ToolError(f"the firmware on {board.name} failed: {describe_failure(res.exit_code, res.stderr, timeout)}")
        return [_from_bytes(gen, blobs) for blobs in res.outputs]

    return runner


def runner_kwargs(board_name: str) -> dict:
    return {"runner": make_runner(board_name), "target": board_name}


@dataclass
class BoardMeasurement:
    board: str
    instructions: int
    layers: list[int]
    flash_bytes: int
    ram_bytes: int  # static RAM (.data + .bss) + measured stack high-water mark
    stack_bytes: int
    arena_bytes: int


def measure(model_path, board_name: str, seed: int | None = None, strategy: str = "auto", kernels: str | None = "mcugen",
            generated=None) -> BoardMeasurement:
    """Instruction counts (whole inference and per layer), flash and RAM on an emulated board
    (bench_firmware: the firmware as `firmware` builds it, the layers from a build with markers),
    with the kernels specialised for the board's CPU (or `kernels=None`: generic portable C).
    `generated`: code already generated from `model_path` (then it is measured as it is)."""
    from mcugen import driver
    from mcugen.bench import bench_firmware
    from mcugen.options import CompileOptions

    board = get_board(board_name)
    gen = generated or driver.build(model_path, options=CompileOptions(board=board_name, strategy=strategy, kernels=kernels))
    with tempfile.TemporaryDirectory(prefix="mcugen-measure-") as tmp:
        fw = _firmware(gen, board, Path(tmp))
        profiled = _firmware(gen, board, Path(tmp), profile=True)
        if seed is None:  # what `mcugen bench` measures when given no input
            from mcugen.cmd_firmware import default_inputs

            inputs = default_inputs(fw.interface.input_bytes)
        else:
            inputs = _to_bytes(gen, driver.random_inputs(gen.graph, 1, seed)[0])
        b = bench_firmware(fw.elf, profiled.elf, board, inputs)
    return BoardMeasurement(
        board=board.name,
        instructions=b.instructions,
        layers=list(b.layers),
        flash_bytes=b.text + b.rodata + b.data,
        ram_bytes=b.data + b.bss + b.stack_bytes,
        stack_bytes=b.stack_bytes,
        arena_bytes=gen.program.arena_bytes,
    )
