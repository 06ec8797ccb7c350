"""/metrics rendered at most once per METRICS_CACHE_SECONDS in each monitor process.

Several Prometheus servers (an HA pair, a federation) scrape the same monitor; at fleet size a
render reads the whole catalog (bench/fleet.py: a few hundred ms), so each scrape within the
window gets the body the first one rendered. The body is never older than the window: a new
failure reaches /metrics at most METRICS_CACHE_SECONDS later (default 5 s, far below a scrape
interval; 0 renders every scrape). A render that fails (the store is down) is not kept, and
the next scrape tries again.

Per process, thread-safe: gunicorn's workers each keep their own (nothing is shared between
processes, and nothing is created before the fork), and the threads of one worker render once
between them: the first renders under the lock, the others wait for its body instead of
reading the store again.
"""

from __future__ import annotations

import threading
import time
from collections.abc import Callable

from flask import Flask, current_app

EXTENSION = "permafrost_metrics_cache"


class RenderedCache:
    """The newest body and when it was rendered (monotonic), kept `seconds` at most."""

    def __init__(self, seconds: float, clock: Callable[[], float] = time.monotonic) -> None:
        self.seconds, self.clock = seconds, clock
        self._lock = threading.Lock()
        self._body: bytes | None = None
        self._at = 0.0

    def get(self, render: Callable[[], bytes]) -> bytes:
        if self.seconds <= 0:
            return render()
        with self._lock:
            if self._body is None or self.clock() - self._at >= self.seconds:
                self._body = None  # a failing render leaves nothing stale behind
                started = self.clock()
                self._body, self._at = render(), started
            return self._body


def install(app: Flask, seconds: float) -> None:
    app.extensions[EXTENSION] = RenderedCache(seconds)


def rendered(render: Callable[[], bytes]) -> bytes:
    """The current application's cached body, rendered by `render` when it is too old."""
    cache: RenderedCache = current_app.extensions[EXTENSION]
    return cache.get(render)
