"""A backup of one SQLite file: the online backup API's copy → the pipeline → the manifest.

The copy (permafrost/sqlite/snapshot.py) is one committed state of the file, taken while the
application keeps writing; it is streamed through the same zstd + encryption pipeline as a
pg_dump, its row counts taken from the copy on a thread meanwhile, and committed by the same
manifest builder, so tiers, retention, pins, verification and the catalog treat it as any
other backup.
"""

from __future__ import annotations

import contextlib
import sqlite3
import tempfile
from collections.abc import Callable
from concurrent.futures import ThreadPoolExecutor
from datetime import UTC, datetime
from pathlib import Path

from permafrost.backup.destination import Destination, Made
from permafrost.backup.request import BackupRequest
from permafrost.repo.manifest import Kind, Manifest, TableCount
from permafrost.repo.pipeline import SealedStats, pump
from permafrost.sqlite import snapshot

OnProgress = Callable[[int], None] | None
SCHEMA = "main"  # SQLite's name for a file's own schema: the row counts' schema


def backup(
    destination: Destination, path: str, request: BackupRequest, on_progress: OnProgress = None
) -> Manifest:
    """Back up the SQLite file at path as request says; its manifest."""
    data_key = destination.data_key(request.tier, request.database, request.backup_id)
    started = datetime.now(UTC)
    with (
        snapshot.snapshot(path, Path(tempfile.gettempdir())) as (copy, facts),
        ThreadPoolExecutor(1, thread_name_prefix="rowcount") as pool,
    ):
        counts = pool.submit(_row_counts, copy)
        stats = _seal(destination, data_key, copy, on_progress)
        row_counts = counts.result()
    version = facts.sqlite_version  # the library's: it both read the source and wrote the copy
    made = Made(
        Kind.SQLITE,
        request.tier,
        data_key,
        started,
        version,
        "",
        stats,
        row_counts,
        sqlite=facts.as_dict(),
        tool_version=version,
    )
    return destination.commit(request, made)


def _seal(destination: Destination, key: str, copy: Path, on_progress: OnProgress) -> SealedStats:
    sealer = destination.sealer(key)
    try:
        with copy.open("rb") as file:
            pump(file.read, sealer, on_progress)
        return sealer.close()
    except BaseException:
        sealer.abort()
        raise


def _row_counts(copy: Path) -> list[TableCount]:
    with contextlib.closing(snapshot.open_private(copy)) as conn:
        counts = snapshot.row_counts(conn)
    return [TableCount(SCHEMA, table, rows) for table, rows in counts.items()]


def tables_of(conn: sqlite3.Connection) -> list[TableCount]:
    """The row counts of an open file, as a manifest records them."""
    return [TableCount(SCHEMA, t, n) for t, n in snapshot.row_counts(conn).items()]
