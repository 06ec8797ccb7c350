"""Stopping on SIGTERM/SIGINT through an Event, without taking a lock in the signal handler.

A Python signal handler runs in the main thread between two bytecodes, wherever that thread is.
`Event.set()` in the handler takes the Event's lock, which the main thread itself holds for a
moment in every `Event.wait()`: a signal landing in that moment deadlocks the process, which
then ignores SIGTERM for good (a wal-receive that outlives its killed scheduler holds the
replication slot). Here the handler does nothing in Python: the interpreter's C handler writes
the signal's number to a wakeup pipe (`signal.set_wakeup_fd`, async-signal-safe), and a thread
reading the pipe sets the Event.
"""

from __future__ import annotations

import os
import signal
import threading
from collections.abc import Callable, Iterable


def set_on_signal(
    event: threading.Event,
    signums: Iterable[int] = (signal.SIGTERM, signal.SIGINT),
    said: Callable[[int], None] | None = None,
) -> None:
    """Set `event` when one of `signums` arrives, after calling `said(signum)` (a log line).

    Both run on a thread of their own. Call it from the main thread, once per process (a
    process has one wakeup fd).
    """
    wanted = {int(s) for s in signums}
    read, write = os.pipe()
    os.set_blocking(write, False)
    signal.set_wakeup_fd(write, warn_on_full_buffer=False)
    for signum in wanted:
        signal.signal(signum, _ignore)

    def watch() -> None:
        while True:
            for signum in os.read(read, 64):
                if signum in wanted:
                    if said is not None:
                        said(signum)
                    event.set()

    threading.Thread(target=watch, name="signals", daemon=True).start()


def _ignore(signum: int, frame: object) -> None:
    """The handler proper: the wakeup pipe has the news already."""
