"""A logical backup of one database: pg_dump → the pipeline → data object, then the manifest.

Row counts are taken in the very snapshot pg_dump reads (`pg_export_snapshot()` and
`pg_dump --snapshot`), on a thread while the dump streams, so the manifest's counts are exactly
what a restore must bring back. The manifest is written only after the data object is complete:
a backup exists if and only if its manifest does.
"""

from __future__ import annotations

import contextlib
import fcntl
import subprocess
import threading
from collections import deque
from collections.abc import Callable
from concurrent.futures import Future, ThreadPoolExecutor
from dataclasses import dataclass, field
from datetime import UTC, datetime
from typing import IO

from permafrost import __version__, layout
from permafrost.context import Context
from permafrost.errors import SourceError
from permafrost.postgres import tools as pgtools
from permafrost.repo import crypto
from permafrost.repo.manifest import Manifest, TableCount
from permafrost.repo.pipeline import SealedStats, Sealer, pump
from permafrost.storage.transfer import ObjectWriter

PIPE_SIZE = 1024 * 1024
F_SETPIPE_SZ = 1031


@dataclass(frozen=True)
class BackupRequest:
    database: str  # for a base backup, the cluster's name
    tier: str = "standard"
    description: str = ""
    tags: tuple[str, ...] = ()
    backup_id: str = field(default_factory=layout.new_backup_id)
    kind: str = "logical"  # or "base"
    trigger: str = "manual"  # manual, schedule or task: recorded with the job run


def dump_database(
    ctx: Context, request: BackupRequest, on_progress: Callable[[int], None] | None = None
) -> Manifest:
    repo = ctx.repository(create=True)
    prefix = repo.prefix
    database, tier, backup_id = request.database, request.tier, request.backup_id
    data_key = layout.data_key(prefix, tier, database, backup_id)
    started = datetime.now(UTC)
    with pgtools.exported_snapshot(ctx.settings.source, database) as snapshot:
        info = snapshot.export()
        pg_dump = pgtools.find_tool("pg_dump", ctx.settings.pg_bin_dir, info.server_major)
        sealer = open_sealer(ctx, data_key)
        with ThreadPoolExecutor(1, thread_name_prefix="rowcount") as pool:
            counts = pool.submit(snapshot.row_counts)
            stats = _run_dump(ctx, pg_dump, database, info.snapshot_id, sealer, counts, on_progress)
            row_counts = counts.result()
    manifest = Manifest(
        id=backup_id,
        database=database,
        kind="logical",
        tier=tier,
        started_at=started.isoformat(),
        finished_at=datetime.now(UTC).isoformat(),
        server_version=info.server_version,
        tool_version=pgtools.tool_version(pg_dump),
        dump_bytes=stats.plain_bytes,
        compressed_bytes=stats.compressed_bytes,
        stored_bytes=stats.stored_bytes,
        dump_sha256=stats.plain_sha256,
        stored_sha256=stats.stored_sha256,
        key_id=repo.key.key_id,
        compression={"algorithm": "zstd", "level": ctx.settings.compression.level},
        encryption={"algorithm": "aes-256-gcm-stream", "chunk_size": crypto.CHUNK_SIZE},
        objects={"data": data_key},
        row_counts=row_counts,
        description=request.description,
        tags=list(request.tags),
        permafrost_version=__version__,
    )
    manifest_key = layout.manifest_key(prefix, tier, database, backup_id)
    ctx.storage.put(manifest_key, manifest.to_json(repo.key))
    return manifest


def open_sealer(ctx: Context, key: str) -> Sealer:
    """The pipeline into one new object: zstd, encryption with the current key, upload."""
    writer = ObjectWriter(
        ctx.storage,
        key,
        part_size=ctx.settings.storage.part_size,
        concurrency=ctx.settings.storage.concurrency,
    )
    return Sealer(
        writer,
        ctx.repository().key,
        level=ctx.settings.compression.level,
        threads=ctx.settings.compression.threads,
    )


def _run_dump(
    ctx: Context,
    pg_dump: str,
    database: str,
    snapshot_id: str,
    sealer: Sealer,
    counts: Future[list[TableCount]],
    on_progress: Callable[[int], None] | None,
) -> SealedStats:
    command = [
        pg_dump,
        "--format=custom",
        "--compress=0",
        f"--snapshot={snapshot_id}",
        "--no-password",
        f"--dbname={pgtools.conninfo(ctx.settings.source, database)}",
    ]
    proc = subprocess.Popen(
        command,
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        env=pgtools.libpq_env(ctx.settings.source),
    )
    assert proc.stdout is not None and proc.stderr is not None
    widen_pipe(proc.stdout)
    errors = StderrTail(proc.stderr)
    try:
        pump(proc.stdout.read, sealer, on_progress)
        if proc.wait() != 0:
            raise SourceError(f"pg_dump of {database} failed: {errors.summary()}")
        counts.result()  # a failed count fails the backup before anything is committed
        return sealer.close()
    except BaseException:
        proc.kill()
        proc.wait()
        sealer.abort()
        raise
    finally:
        errors.join()


def widen_pipe(stream: IO[bytes]) -> None:
    """A 1 MiB pipe lets pg_dump run ahead while the previous block is being compressed."""
    # The system limit may be lower; the default pipe still works then.
    with contextlib.suppress(OSError):
        fcntl.fcntl(stream.fileno(), F_SETPIPE_SZ, PIPE_SIZE)


class StderrTail:
    """Reads a child's stderr on a thread, keeping the last lines for the error message."""

    def __init__(self, stream: IO[bytes], program: str = "pg_dump: ") -> None:
        self._program = program
        self._lines: deque[str] = deque(maxlen=5)
        self._thread = threading.Thread(target=self._read, args=(stream,), daemon=True)
        self._thread.start()

    def _read(self, stream: IO[bytes]) -> None:
        for raw in stream:
            line = raw.decode(errors="replace").strip()
            if line:
                self._lines.append(line.removeprefix(self._program))

    def join(self) -> None:
        self._thread.join(timeout=5)

    def summary(self) -> str:
        self.join()
        errors = [line for line in self._lines if line.startswith("error:")]
        return (errors or list(self._lines) or ["no error output"])[-1]
