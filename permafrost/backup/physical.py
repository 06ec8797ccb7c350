"""A base backup of a whole cluster: pg_basebackup's tar → the pipeline → base/{cluster}/{id}/.

`pg_basebackup -Ft -X none --checkpoint=fast -D -` writes one tar to stdout, PostgreSQL's own
`backup_manifest` last. The WAL the backup needs (its start to stop LSN) is not in the tar:
it is in the WAL archive, which wal-push or wal-receive fills. The manifest records the WAL
range read from backup_manifest, so pitr and `wal verify` know exactly which segments a base
backup depends on. The backup_manifest stays inside the tar, so after a restore
`pg_verifybackup` checks every file of the data directory against it; it is also sealed as an
object of its own beside the data (layout.backup_manifest_key), which the next incremental
hands to `pg_basebackup --incremental` (backup/incremental.py finds and checks it).

Every base backup's manifest records its chain: `incremental`, `parent_id` (the backup an
incremental was taken against), `chain_full_id` (the full the chain starts from; a full names
itself) and `changed_bytes` (the bytes of the files it carries, from backup_manifest: for an
incremental its changed blocks and new files, for a full its whole size).
"""

from __future__ import annotations

import hashlib
import json
from collections.abc import Callable
from dataclasses import dataclass
from datetime import UTC, datetime
from typing import Any

from permafrost import layout
from permafrost.backup.destination import Beside, Destination, Made
from permafrost.backup.request import BackupRequest
from permafrost.config.settings import SourceSettings
from permafrost.errors import IntegrityError, SourceError
from permafrost.postgres import process
from permafrost.postgres import tools as pgtools
from permafrost.postgres.tarwatch import BACKUP_MANIFEST, TarWatcher
from permafrost.repo.manifest import Kind, Manifest
from permafrost.repo.pipeline import READ_SIZE, SealedStats, Sealer
from permafrost.wal import names as walnames
from permafrost.wal.guard import Guard
from permafrost.wal.identity import System

OnProgress = Callable[[int], None] | None


@dataclass(frozen=True)
class Parent:
    """The backup an incremental is taken against: its backup_manifest checked, in a file."""

    id: str
    chain_full_id: str
    manifest_path: str  # a temporary file holding the parent's backup_manifest


_SERVER = """
SELECT current_setting('server_version'),
       current_setting('server_version_num')::int,
       (SELECT system_identifier FROM pg_control_system()),
       (SELECT setting::bigint FROM pg_settings WHERE name = 'wal_segment_size'),
       (SELECT count(*) FROM pg_tablespace WHERE spcname NOT IN ('pg_default', 'pg_global'))
"""


def server_facts(source: SourceSettings) -> dict[str, Any]:
    with pgtools.connect(source, pgtools.cluster_database(source)) as conn:
        row = conn.execute(_SERVER).fetchone()
    assert row is not None
    version, version_num, system_id, segment_size, tablespaces = row
    if tablespaces:
        raise SourceError(
            f"the server has {tablespaces} tablespace(s) besides pg_default: a base backup "
            "streamed to the bucket holds one tablespace only; move them into pg_default, or "
            "use logical backups for this server"
        )
    return {
        "server_version": version,
        "server_version_num": version_num,
        "system_identifier": str(system_id),
        "wal_segment_size": int(segment_size),
    }


def backup(
    destination: Destination,
    source: SourceSettings,
    tool: str,
    request: BackupRequest,
    on_progress: OnProgress = None,
    parent: Parent | None = None,
    facts: dict[str, Any] | None = None,
) -> Manifest:
    """A full base backup, or with `parent` an incremental one (PostgreSQL 17+)."""
    data_key = destination.data_key(layout.BASE_TIER, request.database, request.backup_id)
    started = datetime.now(UTC)
    facts = facts or server_facts(source)
    _check_system(destination, request.database, facts)
    sealer = destination.sealer(data_key)
    watcher = TarWatcher(BACKUP_MANIFEST)
    command = _command(tool, source, request.backup_id, parent)
    stats = _run_basebackup(command, source, sealer, watcher, on_progress)
    stopped = datetime.now(UTC)
    physical = {**facts, **_wal_range(watcher, facts["wal_segment_size"])}
    physical["stop_time"] = stopped.isoformat()
    physical["files"] = watcher.members - 1
    physical.update(_chain(request.backup_id, parent, watcher))
    assert watcher.kept is not None
    kept = watcher.kept
    destination = destination.storing_beside(lambda d, r: _store_backup_manifest(d, r, kept))
    made = Made(
        Kind.BASE,
        layout.BASE_TIER,
        data_key,
        started,
        facts["server_version"],
        tool,
        stats,
        physical=physical,
    )
    return destination.commit(request, made)


def _check_system(destination: Destination, cluster: str, facts: dict[str, Any]) -> None:
    """Refuse, before anything is stored, a server that is not the WAL archive's system: its
    base backup could not be recovered with the archive's WAL (SystemMismatch)."""
    server = System(facts["system_identifier"], facts["server_version_num"] // 10000)
    Guard(destination.repository, cluster, "base backup").check(server)


def _chain(backup_id: str, parent: Parent | None, watcher: TarWatcher) -> dict[str, Any]:
    assert watcher.kept is not None
    return {
        "incremental": parent is not None,
        "parent_id": parent.id if parent else None,
        "chain_full_id": parent.chain_full_id if parent else backup_id,
        "changed_bytes": carried_bytes(watcher.kept),
    }


def carried_bytes(backup_manifest: bytes) -> int:
    """The bytes of the files a base backup carries, by its backup_manifest (for an
    incremental, the INCREMENTAL.* files hold only the changed blocks)."""
    try:
        files = json.loads(backup_manifest)["Files"]
        return sum(int(f.get("Size", 0)) for f in files)
    except (ValueError, KeyError, TypeError) as exc:
        raise IntegrityError(f"backup_manifest from pg_basebackup cannot be read: {exc}") from None


def _store_backup_manifest(destination: Destination, request: BackupRequest, body: bytes) -> Beside:
    """PostgreSQL's backup_manifest sealed beside the data: what the next incremental needs."""
    key = layout.backup_manifest_key(
        destination.repository.prefix, request.database, request.backup_id
    )
    sealer = destination.sealer(key)
    try:
        sealer.write(body)
        sealer.close()
    except BaseException:
        sealer.abort()
        raise
    return Beside({"backup_manifest": key})


def _command(
    tool: str, source: SourceSettings, backup_id: str, parent: Parent | None = None
) -> list[str]:
    incremental = [f"--incremental={parent.manifest_path}"] if parent else []
    return [
        tool,
        *incremental,
        "--format=tar",
        "--wal-method=none",
        "--checkpoint=fast",
        "--pgdata=-",
        "--no-password",
        f"--label=permafrost {backup_id}",
        f"--dbname={pgtools.conninfo(source, pgtools.cluster_database(source))}",
    ]


def _run_basebackup(
    command: list[str],
    source: SourceSettings,
    sealer: Sealer,
    watcher: TarWatcher,
    on_progress: OnProgress,
) -> SealedStats:
    try:
        with process.reading(command, source) as pg_basebackup:
            while block := pg_basebackup.stdout.read(READ_SIZE):
                watcher.feed(block)
                sealer.write(block)
                if on_progress is not None:
                    on_progress(len(block))
            pg_basebackup.finish("pg_basebackup", process.replication_hint)
            if not watcher.ended or watcher.kept is None:
                raise IntegrityError(
                    "pg_basebackup's output ended without a complete tar and backup_manifest; "
                    "nothing was committed"
                )
            return sealer.close()
    except BaseException:
        sealer.abort()
        raise


def _wal_range(watcher: TarWatcher, segment_size: int) -> dict[str, Any]:
    """Start and stop LSN and timeline, from backup_manifest's WAL-Ranges."""
    assert watcher.kept is not None
    try:
        body = json.loads(watcher.kept)
        ranges = body["WAL-Ranges"]
        first, last = ranges[0], ranges[-1]
        start = walnames.parse_lsn(first["Start-LSN"])
        stop = walnames.parse_lsn(last["End-LSN"])
        timeline = int(last["Timeline"])
        start_timeline = int(first["Timeline"])
    except (ValueError, KeyError, IndexError, TypeError) as exc:
        raise IntegrityError(f"backup_manifest from pg_basebackup cannot be read: {exc}") from None
    return {
        "start_lsn": walnames.format_lsn(start),
        "stop_lsn": walnames.format_lsn(stop),
        "timeline": timeline,
        "start_timeline": start_timeline,
        "wal_start": walnames.segment_of(start, start_timeline, segment_size).name(segment_size),
        "wal_stop": walnames.segment_before(stop, timeline, segment_size).name(segment_size),
        "backup_manifest_sha256": hashlib.sha256(watcher.kept).hexdigest(),
    }
