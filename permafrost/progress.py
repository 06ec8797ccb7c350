"""Progress on stderr for long work, shown only when stderr is a terminal."""

from __future__ import annotations

import sys
import time
from typing import TextIO

from permafrost.text import clock, human_bytes


class Progress:
    """`label: 812.4 MiB, 95.3 MiB/s, 00:08`, redrawn at most twice a second."""

    def __init__(
        self,
        label: str,
        stream: TextIO | None = None,
        enabled: bool | None = None,
        total: int | None = None,
    ) -> None:
        self.label = label
        self.stream = stream or sys.stderr
        self.enabled = self.stream.isatty() if enabled is None else enabled
        self.total = total
        self.done = 0
        self.started = time.monotonic()
        self._drawn = 0.0

    def advance(self, count: int) -> None:
        self.done += count
        now = time.monotonic()
        if self.enabled and now - self._drawn >= 0.5:
            self._drawn = now
            self.stream.write("\r" + self.line() + "\x1b[K")
            self.stream.flush()

    def line(self) -> str:
        elapsed = max(time.monotonic() - self.started, 1e-6)
        share = f" of {human_bytes(self.total)}" if self.total else ""
        return (
            f"{self.label}: {human_bytes(self.done)}{share}, "
            f"{human_bytes(self.done / elapsed)}/s, {clock(elapsed)}"
        )

    def close(self) -> None:
        if self.enabled and self._drawn:
            self.stream.write("\r" + self.line() + "\x1b[K\n")
            self.stream.flush()
