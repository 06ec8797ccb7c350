"""`permafrost wal-receive` run as a child and restarted when it exits: by the leading scheduler
(BACKUP_WORKERS=inline) or by the worker that holds the cluster's WAL stream lock (queue); one
per streamed cluster (`streams`: every source whose WAL is `receive`)."""

from __future__ import annotations

import os
import signal
import subprocess
import sys
import threading
import time

from permafrost.config.fleet import load_fleet
from permafrost.config.settings import Settings
from permafrost.logs import Say
from permafrost.postgres.process import die_with_parent


def supervise_receiver(
    settings: Settings, say: Say, env_file: str | None, cluster: str, term: threading.Event
) -> None:
    """Run `permafrost wal-receive --cluster CLUSTER` (a SOURCES_FILE source's cluster streams
    from that source's server): restart it when it exits, stop it at `term` (SIGTERM)."""
    command = [sys.executable, "-m", "permafrost", "wal-receive", "--cluster", cluster]
    env = dict(os.environ)
    if env_file:
        env["PERMAFROST_ENV_FILE"] = env_file
    pause = 1.0
    while not term.is_set():
        say(f"starting wal-receive of cluster {cluster}")
        started = time.monotonic()
        # It dies with this thread (kill -9 of the scheduler too), so no old wal-receive
        # holds the slot against the next leader's.
        child = subprocess.Popen(command, env=env, preexec_fn=die_with_parent())
        while child.poll() is None and not term.is_set():
            term.wait(1)
        if child.poll() is None:
            _stop(child, max(settings.schedules.stop_grace, 30))
            return
        if time.monotonic() - started > 60:
            pause = 1.0
        say(
            f"wal-receive of cluster {cluster} exited with {child.returncode}; "
            f"restarting in {pause:.0f} s"
        )
        term.wait(pause)
        pause = min(pause * 2, 30.0)


def streamed_clusters(settings: Settings) -> tuple[str, ...]:
    """The clusters whose WAL is streamed: each SOURCES_FILE source's with `wal: receive` (or
    WAL_ARCHIVING=receive and a `cluster:`), or CLUSTER_NAME's with WAL_ARCHIVING=receive."""
    return tuple(s.cluster for s in load_fleet(settings).archived("receive") if s.cluster)


def _stop(child: subprocess.Popen[bytes], grace: float) -> None:
    child.send_signal(signal.SIGTERM)
    try:
        child.wait(timeout=grace)
    except subprocess.TimeoutExpired:
        child.kill()
