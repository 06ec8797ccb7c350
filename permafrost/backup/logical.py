"""A logical backup of one database: pg_dump → the pipeline → data object, then the manifest.

Row counts are taken in the very snapshot pg_dump reads (`pg_export_snapshot()` and
`pg_dump --snapshot`), on a thread while the dump streams, so the manifest's counts are exactly
what a restore must bring back. The manifest is written only after the data object is complete:
a backup exists if and only if its manifest does.
"""

from __future__ import annotations

from collections.abc import Callable
from concurrent.futures import Future, ThreadPoolExecutor
from datetime import UTC, datetime

from permafrost.backup import parallel
from permafrost.backup.destination import Destination, Made
from permafrost.backup.request import BackupRequest
from permafrost.config.settings import LogicalSettings, SourceSettings
from permafrost.postgres import process
from permafrost.postgres import tools as pgtools
from permafrost.repo.manifest import SCHEMA_PART, Kind, Manifest, TableCount
from permafrost.repo.pipeline import SealedStats, Sealer, pump

OnProgress = Callable[[int], None] | None


def dump(
    destination: Destination,
    source: SourceSettings,
    pg_dump: str,
    request: BackupRequest,
    on_progress: OnProgress = None,
    jobs: LogicalSettings | None = None,
) -> Manifest:
    """One object, or with LOGICAL_JOBS above 1 and a database big enough, a schema part and
    data parts dumped in parallel (backup/parallel.py), all from the same snapshot."""
    database, tier = request.database, request.tier
    data_key = destination.data_key(tier, database, request.backup_id)
    started = datetime.now(UTC)
    jobs = jobs or LogicalSettings()
    with pgtools.exported_snapshot(source, database) as snapshot:
        info = snapshot.export()
        tables = snapshot.table_sizes() if jobs.jobs > 1 else []
        with ThreadPoolExecutor(1, thread_name_prefix="rowcount") as pool:
            counts = pool.submit(snapshot.row_counts)
            if parallel.worth_splitting(tables, jobs.jobs, jobs.min_bytes):
                groups = parallel.groups(tables, jobs.jobs)
                where = (tier, database, request.backup_id)
                dumped = parallel.dump_parts(
                    destination,
                    source,
                    pg_dump,
                    where,
                    info.snapshot_id,
                    groups,
                    counts,
                    on_progress,
                )
            else:
                command = _command(pg_dump, source, database, info.snapshot_id)
                sealer = destination.sealer(data_key)
                stats = _run_dump(command, source, database, sealer, counts, on_progress)
                dumped = parallel.Dumped([], {SCHEMA_PART: data_key}, stats)
            row_counts = counts.result()
    made = Made(
        Kind.LOGICAL,
        tier,
        data_key,
        started,
        info.server_version,
        pg_dump,
        dumped.totals(),
        row_counts,
        parts=dumped.parts,
        part_keys={name: key for name, key in dumped.keys.items() if name != SCHEMA_PART},
    )
    return destination.commit(request, made)


def _command(pg_dump: str, source: SourceSettings, database: str, snapshot_id: str) -> list[str]:
    return [
        pg_dump,
        "--format=custom",
        "--compress=0",
        f"--snapshot={snapshot_id}",
        "--no-password",
        f"--dbname={pgtools.conninfo(source, database)}",
    ]


def _run_dump(
    command: list[str],
    source: SourceSettings,
    database: str,
    sealer: Sealer,
    counts: Future[list[TableCount]],
    on_progress: OnProgress,
) -> SealedStats:
    try:
        with process.reading(command, source) as pg_dump:
            pump(pg_dump.stdout.read, sealer, on_progress)
            pg_dump.finish(f"pg_dump of {database}")
            counts.result()  # a failed count fails the backup before anything is committed
            return sealer.close()
    except BaseException:
        sealer.abort()
        raise
