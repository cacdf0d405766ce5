"""Download progress and byte counts, for people: the library reports progress through a callback
and draws nothing itself.

`FetchOptions(progress=callback)` calls `callback(done, expected)` (bytes, over the whole fetch)
as downloads grow. `ProgressBar` is such a callback drawing a tqdm bar on stderr: the command
line uses it when stderr is a terminal, and so may any caller that wants one.
"""

from __future__ import annotations

import threading
from collections.abc import Callable
from typing import Any

Progress = Callable[[int, int], None]
"""A progress callback: bytes received so far and bytes expected, over the fetch."""


def format_size(n: int) -> str:
    """`512 B`, `1.5 KiB`, `44.6 MiB`."""
    value = float(n)
    for unit in ("B", "KiB", "MiB", "GiB"):
        if value < 1024 or unit == "GiB":
            return f"{value:.0f} {unit}" if unit == "B" else f"{value:.1f} {unit}"
        value /= 1024
    raise AssertionError("unreachable")


class ProgressBar:
    """A progress callback that draws a tqdm bar on stderr on its first call; `close()` it."""

    def __init__(self, description: str = "fetch") -> None:
        self.description = description
        self._bar: Any = None
        self._lock = threading.Lock()  # downloads report from several threads

    def __call__(self, done: int, expected: int) -> None:
        with self._lock:
            if self._bar is None:
                from tqdm import tqdm  # loaded only when a bar is drawn

                self._bar = tqdm(total=0, unit="B", unit_scale=True, unit_divisor=1024,
                                 desc=self.description, leave=False)
            self._bar.total = max(expected, done)
            self._bar.update(done - self._bar.n)

    def close(self) -> None:
        with self._lock:
            if self._bar is not None:
                self._bar.close()
                self._bar = None
