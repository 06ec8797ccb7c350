"""The leader's WAL duties: a switch every minute (WAL_ARCHIVING=push), or a supervised
`permafrost wal-receive` (WAL_ARCHIVING=receive: permafrost/wal/supervisor.py, run under the
cluster's WAL stream lock, permafrost/worker/streams.py)."""

from __future__ import annotations

from permafrost.catalog.jobs import JobName, RecordedRun
from permafrost.config.settings import Settings
from permafrost.context import Context
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
