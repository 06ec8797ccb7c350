"""A logical backup dumped in parallel (LOGICAL_JOBS above 1): one snapshot, N streams, no disk.

One exported snapshot (logical.py holds its transaction open) is imported by every pg_dump:

- the schema part, data.pfe: `pg_dump --exclude-table-data=` each user table, so it holds the
  whole schema, sequence values, large objects and anything else that is not a user table's
  rows (an extension's configuration tables);
- N data parts, data-1.pfe ... data-N.pfe: `pg_dump --data-only --table=` a group of tables,
  the groups balanced by size (biggest table first into the lightest group), the biggest
  group first.

Each streams through its own pipeline (zstd, encryption, multipart upload) on its own thread,
while the snapshot's connection counts every table's rows. The parts share the backup's
COMPRESSION_THREADS and UPLOAD_CONCURRENCY (each gets its share, at least one zstd worker and two
uploads in flight) rather than each taking them all: N pipelines with the full counts would start
N times the zstd workers on the same cores and hold N times the buffers, for no gain on a machine
whose cores the dumps already keep busy. If one part fails, every other pg_dump is killed, the
unfinished uploads are aborted and the finished parts deleted: no manifest is written, so no
backup exists (what a crash leaves is an orphan that retention removes).
"""

from __future__ import annotations

import contextlib
import threading
from collections.abc import Callable
from concurrent.futures import FIRST_EXCEPTION, Future, ThreadPoolExecutor, wait
from dataclasses import dataclass, replace

from permafrost import layout
from permafrost.backup.destination import Destination
from permafrost.config.settings import SourceSettings
from permafrost.postgres import process
from permafrost.postgres import tools as pgtools
from permafrost.postgres.tools import TableSize
from permafrost.repo.manifest import SCHEMA_PART, Part, TableCount
from permafrost.repo.pipeline import SealedStats, pump

OnProgress = Callable[[int], None] | None
# pg_dump takes one --table or --exclude-table-data argument per table; past this many bytes of
# them the command line nears Linux's limits, and the backup is taken in one object instead.
MAX_PATTERN_BYTES = 512 * 1024


@dataclass(frozen=True)
class Dumped:
    """What the parallel dump stored: every part (schema first), its key, and the totals."""

    parts: list[Part]  # empty for a backup in one object, whose stats are `single`
    keys: dict[str, str]  # part name → object key
    single: SealedStats | None = None

    def totals(self) -> SealedStats:
        """Sizes summed over the parts; the SHA-256s are the schema part's (objects["data"])."""
        if self.single is not None:
            return self.single
        schema = self.parts[0]
        return SealedStats(
            sum(p.plain_bytes for p in self.parts),
            schema.plain_sha256,
            sum(p.compressed_bytes for p in self.parts),
            sum(p.stored_bytes for p in self.parts),
            schema.stored_sha256,
        )


def worth_splitting(tables: list[TableSize], jobs: int, min_bytes: int) -> bool:
    """Whether a database is dumped in parts: LOGICAL_JOBS above 1, at least two tables, at
    least LOGICAL_JOBS_MIN_SIZE_MB of them, and a command line that fits."""
    if jobs < 2 or len(tables) < 2 or sum(t.bytes for t in tables) < min_bytes:
        return False
    return sum(len(pattern(t)) + 16 for t in tables) <= MAX_PATTERN_BYTES


def groups(tables: list[TableSize], jobs: int) -> list[list[TableSize]]:
    """At most `jobs` groups balanced by size: each table, biggest first, goes to the lightest
    group so far (the longest-processing-time rule); the heaviest group comes first."""
    bins: list[list[TableSize]] = [[] for _ in range(min(jobs, len(tables)))]
    totals = [0] * len(bins)
    for table in sorted(tables, key=lambda t: (-t.bytes, t.schema, t.table)):
        lightest = totals.index(min(totals))
        bins[lightest].append(table)
        totals[lightest] += table.bytes
    order = sorted(range(len(bins)), key=lambda i: -totals[i])
    return [bins[i] for i in order if bins[i]]


def per_part(destination: Destination, parts: int) -> Destination:
    """The pipeline settings of one of `parts` data streams running at once: COMPRESSION_THREADS
    divided between them, at least one worker each (0, compression on the stream's own thread,
    stays 0), and UPLOAD_CONCURRENCY, at least two uploads in flight each. The schema part is
    small, and takes a share too."""
    if parts < 2:
        return destination
    threads = destination.compression.threads
    compression = replace(destination.compression, threads=threads and max(1, threads // parts))
    uploads = destination.storage.concurrency
    storage = replace(destination.storage, concurrency=min(uploads, max(2, uploads // parts)))
    return replace(destination, compression=compression, storage=storage)


def pattern(table: TableSize | TableCount) -> str:
    """A pg_dump pattern matching exactly this table: both names quoted, quotes doubled, so
    that case, dots and wildcard characters in a name are taken literally."""
    schema, name = (table.schema.replace('"', '""'), table.table.replace('"', '""'))
    return f'"{schema}"."{name}"'


def dump_parts(
    destination: Destination,
    source: SourceSettings,
    pg_dump: str,
    where: tuple[str, str, str],  # tier, database, backup id
    snapshot_id: str,
    split: list[list[TableSize]],
    counts: Future[list[TableCount]],
    on_progress: OnProgress,
) -> Dumped:
    """Dump the schema part and one data part per group at once; raise after cleaning up if
    any of them fails."""
    tier, database, backup_id = where
    prefix = destination.repository.prefix
    keys = {SCHEMA_PART: layout.data_key(prefix, tier, database, backup_id)}
    commands = {SCHEMA_PART: _schema_command(pg_dump, source, database, snapshot_id, split)}
    for index, group in enumerate(split, start=1):
        name = layout.part_name(index)
        keys[name] = layout.part_key(prefix, tier, database, backup_id, index)
        commands[name] = _data_command(pg_dump, source, database, snapshot_id, group)
    run = _Run(per_part(destination, len(split)), source, _locked(on_progress))
    stats = run.all(keys, commands, database)
    counted = {(c.schema, c.table): c for c in counts.result()}
    tables = {SCHEMA_PART: [], **{layout.part_name(i): g for i, g in enumerate(split, start=1)}}
    parts = [_part(name, stats[name], tables[name], counted) for name in keys]
    return Dumped(parts, keys)


def _part(
    name: str,
    stats: SealedStats,
    tables: list[TableSize],
    counted: dict[tuple[str, str], TableCount],
) -> Part:
    rows = [counted[(t.schema, t.table)] for t in tables if (t.schema, t.table) in counted]
    return Part(
        name,
        stats.plain_bytes,
        stats.plain_sha256,
        stats.compressed_bytes,
        stats.stored_bytes,
        stats.stored_sha256,
        rows,
    )


def _base(pg_dump: str, snapshot_id: str) -> list[str]:
    return [
        pg_dump,
        "--format=custom",
        "--compress=0",
        f"--snapshot={snapshot_id}",
        "--no-password",
    ]


def _schema_command(
    pg_dump: str,
    source: SourceSettings,
    database: str,
    snapshot_id: str,
    split: list[list[TableSize]],
) -> list[str]:
    excluded = [f"--exclude-table-data={pattern(t)}" for group in split for t in group]
    return [*_base(pg_dump, snapshot_id), *excluded, _dbname(source, database)]


def _data_command(
    pg_dump: str, source: SourceSettings, database: str, snapshot_id: str, group: list[TableSize]
) -> list[str]:
    tables = [f"--table={pattern(t)}" for t in group]
    return [*_base(pg_dump, snapshot_id), "--data-only", *tables, _dbname(source, database)]


def _dbname(source: SourceSettings, database: str) -> str:
    return f"--dbname={pgtools.conninfo(source, database)}"


def _locked(on_progress: OnProgress) -> OnProgress:
    """The progress callback, called from every part's thread one at a time."""
    if on_progress is None:
        return None
    lock = threading.Lock()

    def advance(count: int) -> None:
        with lock:
            on_progress(count)

    return advance


class _Run:
    """Every part's pg_dump → pipeline on its own thread; the first failure stops the rest."""

    def __init__(
        self, destination: Destination, source: SourceSettings, on_progress: OnProgress
    ) -> None:
        self._destination, self._source, self._on_progress = destination, source, on_progress
        self._children: list[process.Child] = []
        self._lock = threading.Lock()
        self._failed = threading.Event()
        self._first: BaseException | None = None  # the failure that stopped the others

    def all(
        self, keys: dict[str, str], commands: dict[str, list[str]], database: str
    ) -> dict[str, SealedStats]:
        with ThreadPoolExecutor(len(keys), thread_name_prefix="pg_dump-part") as pool:
            futures = {
                name: pool.submit(self._one, keys[name], commands[name], f"{name} of {database}")
                for name in keys
            }
            done, _ = wait(futures.values(), return_when=FIRST_EXCEPTION)
            if any(f.exception() is not None for f in done):
                self._stop()
        if self._first is not None:
            self._remove_finished(keys, futures)
            raise self._first
        return {name: f.result() for name, f in futures.items()}

    def _one(self, key: str, command: list[str], what: str) -> SealedStats:
        sealer = self._destination.sealer(key)
        try:
            with process.reading(command, self._source) as child:
                with self._lock:
                    self._children.append(child)
                if self._failed.is_set():
                    child.kill()
                pump(child.stdout.read, sealer, self._on_progress)
                child.finish(f"pg_dump of {what}")
            return sealer.close()
        except BaseException as exc:
            sealer.abort()
            with self._lock:
                self._first = self._first or exc
            raise

    def _stop(self) -> None:
        self._failed.set()
        with self._lock:
            for child in self._children:
                child.kill()

    def _remove_finished(
        self, keys: dict[str, str], futures: dict[str, Future[SealedStats]]
    ) -> None:
        """Delete the parts that were stored before another failed (no manifest will name them)."""
        storage = self._destination.repository.storage
        for name, future in futures.items():
            if future.exception() is None:
                with contextlib.suppress(Exception):
                    storage.delete(keys[name])
