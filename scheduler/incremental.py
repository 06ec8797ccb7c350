"""The scheduled incremental base backup, when PostgreSQL refuses it.

INCREMENTAL_SCHEDULE runs `Jobs.backup` with an incremental request; a refusal
(errors.IncrementalRefused, raised before anything is written) comes here:

- a server before PostgreSQL 17: nothing to do. The run is recorded as succeeded with the reason
  (`skipped`); no alert, no full (the weekly full base backup goes on as before).
- summarize_wal off, a parent missing from the bucket or failing its checks: a full base backup
  is taken in its place, so the cluster still gets its recovery point, and a warning alert
  (emailed like every alert) says why and what to change. The alert has the incremental job's
  key, so the next incremental that succeeds resolves it.
- no base backup yet (a new deployment): the full starts the chain; recorded, no alert.
"""

from __future__ import annotations

import logging
from typing import Any, Protocol

from permafrost.catalog.jobs import RecordedRun
from permafrost.config.settings import Settings
from permafrost.context import Context
from permafrost.errors import IncrementalRefused
from permafrost.logs import Say

FALLBACK_TAG = "incremental-fallback"  # on a full taken in place of a refused incremental
UNRECORDED = "not recorded"  # as scheduler/jobs.py says when the metadata store is down


class Spec(Protocol):
    """A scheduled job (scheduler/jobs.py's JobSpec), as far as this module reads one."""

    @property
    def job(self) -> str: ...

    @property
    def database(self) -> str | None: ...


class Runner(Protocol):
    """scheduler/jobs.py's Jobs, as far as this module uses it."""

    settings: Settings
    say: Say

    def backup(
        self, spec: Any, trigger: str, description: str = "", tags: tuple[str, ...] = ()
    ) -> dict[str, Any]: ...


def refused(
    runner: Runner,
    spec: Spec,
    *,
    full: Spec,
    key: str,
    trigger: str,
    exc: IncrementalRefused,
) -> dict[str, Any]:
    """Record the refusal; take the `full` job in its place where that helps; alert (`key`)
    where the operator has something to change."""
    assert spec.database is not None
    reason = " ".join(str(exc).split())
    ctx = Context(runner.settings)
    try:
        # Refused before pg_basebackup ran, nothing has recorded this run yet.
        details = {"trigger": trigger}
        run = (
            None
            if exc.recorded
            else RecordedRun.start(ctx, UNRECORDED, spec.job, spec.database, None, details)
        )
        if not exc.fallback:
            if run is not None:
                run.succeeded({"skipped": reason})
            runner.say(
                f"{spec.job} of {spec.database} skipped: {reason}",
                event="backup_skipped",
                job=str(spec.job),
                database=spec.database,
            )
            return {"skipped": reason}
        if run is not None:
            run.ended_by(exc, reason)
        runner.say(
            f"{spec.job} of {spec.database} refused: {reason}; taking a full base backup instead",
            level=logging.WARNING,
            event="incremental_refused",
            job=str(spec.job),
            database=spec.database,
            error=reason,
        )
        taken = runner.backup(
            full, trigger, f"in place of a refused incremental: {reason}", (FALLBACK_TAG,)
        )
        if exc.alert:
            summary = _summary(spec.database, reason, taken)
            details = {"job": spec.job, "database": spec.database, "error": reason, **taken}
            ctx.record(lambda c: c.raise_alert(key, "warning", summary, details), UNRECORDED)
        return {"refused": reason, **taken}
    finally:
        ctx.close()


def _summary(cluster: str, reason: str, full: dict[str, Any]) -> str:
    """What happened first (the subject line is cut), then why and what to change."""
    if "backup_id" in full:
        instead = f"a full base backup ({full['backup_id']}) was taken instead"
    else:
        instead = f"the full base backup in its place failed too ({full.get('error')})"
    return f"incremental base backup of {cluster} refused, {instead}: {reason}"
