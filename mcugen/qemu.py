"""Runs firmware ELFs on QEMU's Cortex-M boards with semihosting file I/O, under a timeout."""
from __future__ import annotations

import re
import shutil
import subprocess
import tempfile
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Sequence

from mcugen.boards import Board
from mcugen.errors import ToolError, UnsupportedError

QEMU = "qemu-system-arm"
DEFAULT_TIMEOUT_S = 120.0
_STACK_LINE = re.compile(r"^MCUGEN_STACK_BYTES=(\d+)$", re.MULTILINE)


@dataclass(frozen=True)
class QemuBatchResult:
    """One boot that ran the model on several inputs: `outputs[run][k]` is output k.

    `exit_code` is the firmware's semihosting exit status (0 = every run succeeded),
    negative if QEMU died of a signal, None if the run was stopped at the timeout.
    """

    outputs: list[list[bytes]]
    exit_code: int | None
    stdout: str
    stderr: str
    stack_bytes: int | None
    wall_seconds: float

    @property
    def timed_out(self) -> bool:
        return self.exit_code is None


@dataclass(frozen=True)
class QemuResult:
    """One inference: `outputs[k]` is the raw bytes of model output k."""

    outputs: list[bytes]
    exit_code: int | None
    stdout: str
    stderr: str
    stack_bytes: int | None
    wall_seconds: float

    @property
    def timed_out(self) -> bool:
        return self.exit_code is None


def require_tool(program: str) -> str:
    """Absolute path of `program`, or a one-line ToolError saying how to install it."""
    found = shutil.which(program)
    if found is None:
        raise ToolError(f"{program} not found on PATH; run scripts/setup.sh to install the toolchain and QEMU")
    return found


def qemu_command(elf: Path, board: Board, extra_args: Sequence[str] = ()) -> list[str]:
    """The qemu-system-arm command line that boots `elf` on `board` with semihosting on."""
    if board.qemu_machine is None:
        raise UnsupportedError(
            f"board {board.name} is a real board, not emulated: build it and flash it "
            f"(mcugen flash), or choose a qemu-* board to run it"
        )
    return [
        require_tool(QEMU),
        "-M", board.qemu_machine,
        "-display", "none",
        "-monitor", "none",
        "-serial", "null",
        "-semihosting-config", "enable=on,target=native",
        *extra_args,
        "-kernel", str(Path(elf).resolve()),
    ]


def run_qemu_process(
    elf: Path, board: Board, workdir: Path, *, timeout: float, extra_args: Sequence[str] = ()
) -> tuple[int | None, str, str, float]:
    """Runs QEMU in `workdir` (semihosting paths are relative to it): exit code, stdout, stderr, seconds."""
    command = qemu_command(elf, board, extra_args)
    start = time.monotonic()
    try:
        done = subprocess.run(
            command, cwd=workdir, stdin=subprocess.DEVNULL, capture_output=True, timeout=timeout
        )
    except subprocess.TimeoutExpired as expired:  # subprocess.run has killed QEMU
        out = (expired.stdout or b"").decode(errors="replace")
        err = (expired.stderr or b"").decode(errors="replace")
        return None, out, err, time.monotonic() - start
    return (
        done.returncode,
        done.stdout.decode(errors="replace"),
        done.stderr.decode(errors="replace"),
        time.monotonic() - start,
    )


def write_run_inputs(workdir: Path, runs: Sequence[Sequence[bytes]]) -> None:
    """Writes run<r>_input<k>.bin, the files the emulated-board main.c reads."""
    for r, inputs in enumerate(runs):
        for k, data in enumerate(inputs):
            (workdir / f"run{r}_input{k}.bin").write_bytes(bytes(data))


def read_run_outputs(workdir: Path, run_count: int) -> list[list[bytes]]:
    """Reads run<r>_output<k>.bin for every run, k = 0, 1, ... while the files exist."""
    outputs = []
    for r in range(run_count):
        run_outputs = []
        k = 0
        while (path := workdir / f"run{r}_output{k}.bin").exists():
            run_outputs.append(path.read_bytes())
            k += 1
        outputs.append(run_outputs)
    return outputs


def parse_stack_bytes(stdout: str) -> int | None:
    match = _STACK_LINE.search(stdout)
    return int(match.group(1)) if match else None


def run_on_qemu_batch(
    elf: Path,
    board: Board,
    runs: Sequence[Sequence[bytes]],
    *,
    timeout: float = DEFAULT_TIMEOUT_S,
    workdir: Path | None = None,
    extra_args: Sequence[str] = (),
) -> QemuBatchResult:
    """Boots `elf` once and runs the model on each input set of `runs`, in order.

    Files go to `workdir` (kept) or to a temporary folder (removed afterwards).
    """
    if not runs:
        raise ValueError("run_on_qemu_batch needs at least one input set")
    with tempfile.TemporaryDirectory(prefix="mcugen-qemu-") as scratch:
        folder = Path(workdir) if workdir is not None else Path(scratch)
        folder.mkdir(parents=True, exist_ok=True)
        for stale in folder.glob("run*_*put*.bin"):
            stale.unlink()
        write_run_inputs(folder, runs)
        exit_code, out, err, seconds = run_qemu_process(
            elf, board, folder, timeout=timeout, extra_args=extra_args
        )
        return QemuBatchResult(
            outputs=read_run_outputs(folder, len(runs)),
            exit_code=exit_code,
            stdout=out,
            stderr=err,
            stack_bytes=parse_stack_bytes(out),
            wall_seconds=seconds,
        )


def run_on_qemu(
    elf: Path,
    board: Board,
    inputs: Sequence[bytes],
    *,
    timeout: float = DEFAULT_TIMEOUT_S,
    workdir: Path | None = None,
    extra_args: Sequence[str] = (),
) -> QemuResult:
    """Boots `elf` on `board`'s QEMU machine, runs the model once on `inputs` (one bytes
    object per model input) and returns its outputs, exit status and stack use."""
    batch = run_on_qemu_batch(
        elf, board, [list(inputs)], timeout=timeout, workdir=workdir, extra_args=extra_args
    )
    return QemuResult(
        outputs=batch.outputs[0],
        exit_code=batch.exit_code,
        stdout=batch.stdout,
        stderr=batch.stderr,
        stack_bytes=batch.stack_bytes,
        wall_seconds=batch.wall_seconds,
    )


def describe_failure(exit_code: int | None, stderr: str, timeout: float) -> str:
    """One line saying why a firmware run failed, for error messages."""
    if exit_code is None:
        return f"did not finish within {timeout:g} s (stopped)"
    lines = [line.strip() for line in stderr.splitlines() if line.strip()]
    detail = next((line for line in lines if line.startswith(("MCUGEN_FAULT", "MCUGEN_ERROR"))), None)
    if detail is None and lines:
        detail = lines[-1]
    if exit_code < 0:
        status = f"QEMU died of signal {-exit_code}"
    else:
        status = f"exit status {exit_code}"
    return f"{status}" + (f": {detail}" if detail else "")
