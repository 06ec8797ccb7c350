"""The leader's WAL duties: a switch every minute (WAL_ARCHIVING=push), or a supervised
`permafrost wal-receive` (WAL_ARCHIVING=receive)."""

from __future__ import annotations

import os
import signal
import subprocess
import sys
import threading
import time

from permafrost.catalog.jobs import JobName, RecordedRun
from permafrost.config.settings import Settings
from permafrost.context import Context
from permafrost.logs import Say
from permafrost.postgres.process import die_with_parent
from permafrost.wal import receive as walreceive
from scheduler.jobs import Jobs, JobSpec


def switch_wal(settings: Settings, jobs: Jobs) -> None:
    """Switch to a new WAL segment when the current one sat idle too long, recorded as a run.

    A run is recorded when something happened, not every quiet minute; a failure is recorded
    and alerted, and a later success resolves the alert.
    """
    cluster = settings.cluster_name
    spec = JobSpec(f"{JobName.WAL_SWITCH}:{cluster}", JobName.WAL_SWITCH, cluster)
    ctx = Context(settings)
    try:
        name = walreceive.switch_if_idle(ctx, cluster)
        if name:
            RecordedRun.start(ctx, "", spec.job, spec.database).succeeded({"segment": name})
        ctx.record(lambda c: c.resolve_alert(f"job_failed:{spec.job}:{spec.database}"), "")
    except Exception as exc:
        error = " ".join(str(exc).split())
        RecordedRun.start(ctx, "", spec.job, spec.database).ended_by(exc, error)
        jobs.alert(ctx, spec, error)
    finally:
        ctx.close()


def supervise_receiver(
    settings: Settings, say: Say, env_file: str | None, term: threading.Event
) -> None:
    """Run `permafrost wal-receive`: restart it when it exits, stop it at `term` (SIGTERM)."""
    command = [sys.executable, "-m", "permafrost", "wal-receive"]
    env = dict(os.environ)
    if env_file:
        env["PERMAFROST_ENV_FILE"] = env_file
    pause = 1.0
    while not term.is_set():
        say("starting wal-receive")
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
        say(f"wal-receive exited with {child.returncode}; restarting in {pause:.0f} s")
        term.wait(pause)
        pause = min(pause * 2, 30.0)


def _stop(child: subprocess.Popen[bytes], grace: float) -> None:
    child.send_signal(signal.SIGTERM)
    try:
        child.wait(timeout=grace)
    except subprocess.TimeoutExpired:
        child.kill()
