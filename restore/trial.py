"""Verification by restoring: the backup goes into a scratch database that is then dropped.

The scratch database lives on VERIFY_DATABASE_URL's server (by default the source server) and
has a name no one else uses. The verification records how long the restore took and its
throughput, which `permafrost recovery-time` turns into an estimate for a real recovery.
A base backup (full or incremental) is recovered instead: restore/pitr/trial.py.
"""

from __future__ import annotations

import secrets
import time
from dataclasses import dataclass
from datetime import UTC, datetime

from permafrost.catalog.records import BackupRecord
from permafrost.context import Context
from permafrost.errors import PermafrostError
from permafrost.postgres import ddl
from permafrost.readfrom import Reader
from permafrost.repo.manifest import Kind
from restore import target as targets
from restore.engine import RestoreOptions, Say, execute, plan_restore
from restore.pitr.trial import trial_restore_base
from restore.verify import record_failure, record_verification, refuse_unfinished

SCRATCH_PREFIX = "permafrost_verify_"


@dataclass(frozen=True)
class TrialResult:
    backup_id: str
    tables: int
    dump_bytes: int
    seconds: float

    @property
    def bytes_per_second(self) -> float:
        return self.dump_bytes / max(self.seconds, 1e-3)


def test_restore(
    ctx: Context, record: BackupRecord, say: Say, reader: Reader | None = None
) -> TrialResult:
    if record.kind == Kind.BASE:  # a full or incremental base backup: its chain, recovered
        base = trial_restore_base(ctx, record, say)
        return TrialResult(record.id, base.tables, base.data_bytes, base.seconds)
    url = ctx.settings.restore.verify_url.reveal() if ctx.settings.restore.verify_url else None
    options = RestoreOptions(
        target_db=f"{SCRATCH_PREFIX}{secrets.token_hex(4)}",
        target_url=url,
        jobs=ctx.settings.restore.jobs,
        record_checks=False,
    )
    refuse_unfinished(record)
    started, clock = datetime.now(UTC), time.monotonic()
    plan = None
    try:
        plan = plan_restore(ctx, record, options, reader)
        result = execute(ctx, plan, say)
    except PermafrostError as exc:
        record_failure(ctx, record.id, "test_restore", started, exc)
        raise
    finally:
        if plan is not None:
            with targets.maintenance(plan.target) as conn:
                ddl.drop_database(conn, plan.target.database)
    trial = TrialResult(
        record.id, len(result.counts), plan.manifest.dump_bytes, time.monotonic() - clock
    )
    record_verification(
        ctx,
        record.id,
        "test_restore",
        started,
        None,
        {
            "tables": trial.tables,
            "dump_bytes": trial.dump_bytes,
            "seconds": round(trial.seconds, 3),
            "bytes_per_second": round(trial.bytes_per_second),
            "target": plan.target.where,
            **plan.reader.details(),
        },
    )
    return trial
