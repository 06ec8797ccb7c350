"""Verification of a base backup (full or incremental) by restoring it.

The backup's chain is restored into a scratch data directory (restore/pitr/chain.py: every
member checked by its hash before anything is unpacked, combined, pg_verifybackup), a private
server replays the archived WAL until the backup is consistent and promotes, `pg_amcheck --all`
of exactly the cluster's major checks heap and indexes where it is installed (the output says
when it is not), every table of every database is read, and the scratch directory is removed.
The verification row records the duration, the restored size and the throughput.
"""

from __future__ import annotations

import os
import time
from dataclasses import dataclass
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

from permafrost.backup.lookup import load_manifest
from permafrost.catalog.records import BackupRecord
from permafrost.context import Context
from permafrost.errors import PermafrostError, ToolMissing
from permafrost.postgres import readthrough
from permafrost.postgres import tools as pgtools
from permafrost.text import human_bytes
from restore.pitr import chain as chains
from restore.pitr.plan import RecoveryTarget, plan_pitr
from restore.pitr.recover import Recovered, Say, recover_into
from restore.verify import record_failure, record_verification, refuse_unfinished


@dataclass(frozen=True)
class BaseTrial:
    backup_id: str
    chain: list[str]  # the full first, this backup last
    databases: int
    tables: int
    rows: int
    data_bytes: int  # the restored data directory
    amcheck: str  # "passed", or why it did not run
    seconds: float

    @property
    def bytes_per_second(self) -> float:
        return self.data_bytes / max(self.seconds, 1e-3)

    def details(self) -> dict[str, Any]:
        return {
            "chain": self.chain,
            "databases": self.databases,
            "tables": self.tables,
            "rows": self.rows,
            "data_bytes": self.data_bytes,
            "amcheck": self.amcheck,
            "seconds": round(self.seconds, 3),
            "bytes_per_second": round(self.bytes_per_second),
        }


def trial_restore_base(ctx: Context, record: BackupRecord, say: Say) -> BaseTrial:
    refuse_unfinished(record)
    started, clock = datetime.now(UTC), time.monotonic()
    try:
        trial = _trial(ctx, record, say, clock)
    except PermafrostError as exc:
        record_failure(ctx, record.id, "test_restore", started, exc)
        raise
    record_verification(ctx, record.id, "test_restore", started, None, trial.details())
    return trial


def _trial(ctx: Context, record: BackupRecord, say: Say, clock: float) -> BaseTrial:
    chain = chains.load(ctx, load_manifest(ctx, record))
    plan = plan_pitr(ctx, record.database, RecoveryTarget("immediate"), chain=chain)
    say(f"test restore of base backup {record.id} (chain: {chain.describe()})")
    with recover_into(ctx, plan, None, say) as done:
        say(f"consistent at WAL position {done.reached.lsn}; checking the restored cluster")
        amcheck = _amcheck(ctx, done, say)
        source = done.server.source(done.role)
        read = readthrough.read_every_table(source, readthrough.databases(source))
        say(
            f"read {read.tables} tables of {read.databases} databases: {read.rows} rows, "
            f"{human_bytes(read.bytes)}"
        )
        size = _size(done.data)
    return BaseTrial(
        record.id,
        chain.ids(),
        read.databases,
        read.tables,
        read.rows,
        size,
        amcheck,
        time.monotonic() - clock,
    )


def _amcheck(ctx: Context, done: Recovered, say: Say) -> str:
    try:
        tool = pgtools.cluster_tool(
            ctx.settings.pg_bin_dirs, "pg_amcheck", done.major, "checking a restored cluster"
        ).path
    except ToolMissing:
        said = f"not run: pg_amcheck {done.major} is not installed (PG_BIN_DIRS)"
        say(f"pg_amcheck {said}")
        return said
    source = done.server.source(done.role)
    if not readthrough.amcheck_available(source):
        said = f"not run: the PostgreSQL {done.major} server has no amcheck extension (contrib)"
        say(f"pg_amcheck {said}")
        return said
    readthrough.amcheck(tool, source)
    say("pg_amcheck --all: no corruption in any table or index")
    return "passed"


def _size(data: Path) -> int:
    total = 0
    for root, _dirs, files in os.walk(data):
        for name in files:
            try:
                total += os.lstat(os.path.join(root, name)).st_size
            except OSError:
                continue  # a file the server removed meanwhile
    return total
