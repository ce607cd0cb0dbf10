"""Progress reporting: a tqdm bar on a terminal, a plain line every few seconds otherwise."""

from __future__ import annotations

import sys
import time
from typing import Iterable, Iterator, Optional, TextIO, TypeVar

T = TypeVar("T")
PLAIN_INTERVAL_S = 10.0  # seconds between plain progress lines when stderr is not a terminal


def is_terminal(stream: TextIO) -> bool:
    try:
        return bool(stream.isatty())
    except (AttributeError, ValueError):
        return False


class Progress:
    """Counts steps of one task: a tqdm bar on a terminal; elsewhere (logs, pipes) a line like
    `epoch 1/5: 40/120 batches (33%), loss 0.51` at most every PLAIN_INTERVAL_S seconds, so a
    log file gets readable lines instead of carriage returns. `enabled=False` prints nothing."""

    def __init__(self, total: int, desc: str, unit: str = "it", enabled: bool = True,
                 stream: Optional[TextIO] = None, interval: float = PLAIN_INTERVAL_S):
        self.total, self.desc, self.unit, self.enabled = total, desc, unit, enabled
        self.stream = stream if stream is not None else sys.stderr
        self.interval = interval
        self.count = 0
        self.postfix = ""
        self._bar = None
        self._last = time.monotonic()
        if enabled and is_terminal(self.stream):
            from tqdm import tqdm

            self._bar = tqdm(total=total, desc=desc, unit=unit, file=self.stream, leave=False)

    def update(self, steps: int = 1, **postfix) -> None:
        self.count += steps
        if postfix:
            self.postfix = ", ".join(f"{k} {v}" for k, v in postfix.items())
        if self._bar is not None:
            if postfix:
                self._bar.set_postfix(postfix, refresh=False)
            self._bar.update(steps)
        elif self.enabled and time.monotonic() - self._last >= self.interval:
            self._line()

    def _line(self) -> None:
        self._last = time.monotonic()
        share = f" ({100 * self.count // self.total}%)" if self.total else ""
        extra = f", {self.postfix}" if self.postfix else ""
        print(f"{self.desc}: {self.count}/{self.total} {self.unit}{share}{extra}", file=self.stream, flush=True)

    def close(self) -> None:
        if self._bar is not None:
            self._bar.close()
            self._bar = None

    def __enter__(self) -> "Progress":
        return self

    def __exit__(self, *exc) -> None:
        self.close()


def track(items: Iterable[T], total: int, desc: str, unit: str = "it", enabled: bool = True) -> Iterator[T]:
    """Iterate over `items` while reporting progress (see Progress)."""
    with Progress(total, desc, unit, enabled) as progress:
        for item in items:
            yield item
            progress.update()
