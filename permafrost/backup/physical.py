"""A base backup of a whole cluster: pg_basebackup's tar → the pipeline → base/{cluster}/{id}/.

`pg_basebackup -Ft -X none --checkpoint=fast -D -` writes one tar to stdout, PostgreSQL's own
`backup_manifest` last. The WAL the backup needs (its start to stop LSN) is not in the tar:
it is in the WAL archive, which wal-push or wal-receive fills. The manifest records the WAL
range read from backup_manifest, so pitr and `wal verify` know exactly which segments a base
backup depends on. The backup_manifest stays inside the tar, so after a restore
`pg_verifybackup` checks every file of the data directory against it.
"""

from __future__ import annotations

import hashlib
import json
import subprocess
from collections.abc import Callable
from datetime import UTC, datetime
from typing import Any

from permafrost import __version__, layout
from permafrost.backup.logical import BackupRequest, StderrTail, open_sealer, widen_pipe
from permafrost.context import Context
from permafrost.errors import IntegrityError, SourceError
from permafrost.postgres import tools as pgtools
from permafrost.postgres.tarwatch import TarWatcher
from permafrost.repo import crypto
from permafrost.repo.manifest import Manifest
from permafrost.repo.pipeline import READ_SIZE, Sealer
from permafrost.wal import names as walnames

BACKUP_MANIFEST = "backup_manifest"

_SERVER = """
SELECT current_setting('server_version'),
       current_setting('server_version_num')::int,
       (SELECT system_identifier FROM pg_control_system()),
       (SELECT setting::bigint FROM pg_settings WHERE name = 'wal_segment_size'),
       (SELECT count(*) FROM pg_tablespace WHERE spcname NOT IN ('pg_default', 'pg_global'))
"""


def connect_database(ctx: Context) -> str:
    """The database a cluster-level command connects to: the first DB_NAME, else postgres."""
    databases = ctx.settings.source.databases
    return databases[0] if databases else "postgres"


def server_facts(ctx: Context) -> dict[str, Any]:
    with pgtools.connect(ctx.settings.source, connect_database(ctx)) as conn:
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


def base_backup(
    ctx: Context, request: BackupRequest, on_progress: Callable[[int], None] | None = None
) -> Manifest:
    repo = ctx.repository(create=True)
    cluster, backup_id = request.database, request.backup_id
    data_key = layout.data_key(repo.prefix, layout.BASE_TIER, cluster, backup_id)
    started = datetime.now(UTC)
    facts = server_facts(ctx)
    tool = pgtools.find_tool(
        "pg_basebackup", ctx.settings.pg_bin_dir, facts["server_version_num"] // 10000
    )
    sealer = open_sealer(ctx, data_key)
    watcher = TarWatcher(BACKUP_MANIFEST)
    stats = _run_basebackup(ctx, tool, backup_id, sealer, watcher, on_progress)
    stopped = datetime.now(UTC)
    physical = {**facts, **_wal_range(watcher, facts["wal_segment_size"])}
    physical["stop_time"] = stopped.isoformat()
    physical["files"] = watcher.members - 1
    manifest = Manifest(
        id=backup_id,
        database=cluster,
        kind="base",
        tier=layout.BASE_TIER,
        started_at=started.isoformat(),
        finished_at=datetime.now(UTC).isoformat(),
        server_version=facts["server_version"],
        tool_version=pgtools.tool_version(tool),
        dump_bytes=stats.plain_bytes,
        compressed_bytes=stats.compressed_bytes,
        stored_bytes=stats.stored_bytes,
        dump_sha256=stats.plain_sha256,
        stored_sha256=stats.stored_sha256,
        key_id=repo.key.key_id,
        compression={"algorithm": "zstd", "level": ctx.settings.compression.level},
        encryption={"algorithm": "aes-256-gcm-stream", "chunk_size": crypto.CHUNK_SIZE},
        objects={"data": data_key},
        description=request.description,
        tags=list(request.tags),
        permafrost_version=__version__,
        physical=physical,
    )
    manifest_key = layout.manifest_key(repo.prefix, layout.BASE_TIER, cluster, backup_id)
    ctx.storage.put(manifest_key, manifest.to_json(repo.key))
    return manifest


def _run_basebackup(
    ctx: Context,
    tool: str,
    backup_id: str,
    sealer: Sealer,
    watcher: TarWatcher,
    on_progress: Callable[[int], None] | None,
) -> Any:
    command = [
        tool,
        "--format=tar",
        "--wal-method=none",
        "--checkpoint=fast",
        "--pgdata=-",
        "--no-password",
        f"--label=permafrost {backup_id}",
        f"--dbname={pgtools.conninfo(ctx.settings.source, connect_database(ctx))}",
    ]
    proc = subprocess.Popen(
        command,
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        env=pgtools.libpq_env(ctx.settings.source),
    )
    assert proc.stdout is not None and proc.stderr is not None
    widen_pipe(proc.stdout)
    errors = StderrTail(proc.stderr, "pg_basebackup: ")
    try:
        while block := proc.stdout.read(READ_SIZE):
            watcher.feed(block)
            sealer.write(block)
            if on_progress is not None:
                on_progress(len(block))
        if proc.wait() != 0:
            raise SourceError(f"pg_basebackup failed: {errors.summary()}{_hint(errors)}")
        if not watcher.ended or watcher.kept is None:
            raise IntegrityError(
                "pg_basebackup's output ended without a complete tar and backup_manifest; "
                "nothing was committed"
            )
        return sealer.close()
    except BaseException:
        proc.kill()
        proc.wait()
        sealer.abort()
        raise
    finally:
        errors.join()


def _hint(errors: StderrTail) -> str:
    text = errors.summary()
    if "replication" in text and ("pg_hba" in text or "no pg_hba.conf entry" in text):
        return " (allow replication connections for this user in pg_hba.conf)"
    if "must be superuser or replication role" in text or "permission denied" in text:
        return " (the user needs the REPLICATION attribute: ALTER ROLE name REPLICATION)"
    return ""


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
