"""SIGTERM always stops a process waiting on its stop Event (permafrost/signals.py).

An `Event.set()` in a Python signal handler deadlocks when the signal lands while the main
thread holds that Event's lock inside `Event.wait()`: a wal-receive then outlived its killed
scheduler and kept the replication slot. A tight `wait(0)` loop spends most of its time holding
the lock, so the old handler hangs within a few tries; the wakeup-pipe one must never.
"""

from __future__ import annotations

import signal
import subprocess
import sys
import time

import pytest

LOOP = """
import signal, sys, threading
from permafrost import signals
stop = threading.Event()
said = []
signals.set_on_signal(stop, said=said.append)
print("ready", flush=True)
while not stop.wait(0):
    pass
print("stopped by", signal.Signals(said[0]).name, flush=True)
"""


@pytest.mark.parametrize("signum", [signal.SIGTERM, signal.SIGINT])
def test_a_signal_stops_a_process_spinning_on_its_stop_event(signum: signal.Signals) -> None:
    for _ in range(8):
        proc = subprocess.Popen([sys.executable, "-c", LOOP], stdout=subprocess.PIPE, text=True)
        try:
            assert proc.stdout is not None
            assert proc.stdout.readline().strip() == "ready"
            time.sleep(0.05)
            proc.send_signal(signum)
            out, _ = proc.communicate(timeout=20)
        finally:
            if proc.poll() is None:
                proc.kill()
                proc.wait()
        assert proc.returncode == 0
        assert out.strip() == f"stopped by {signum.name}"
