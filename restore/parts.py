"""Restoring a logical backup dumped in parallel (manifest parts): schema, rows at once, indexes.

Into the staging database (restore/engine.py owns it and drops it on any failure):

1. the schema part (data.pfe, small) is downloaded and checked into a temporary file, and its
   pre-data section restored (types, tables, sequences, functions);
2. its data section (sequence values, large objects) and every data part run at once, at most
   `jobs` at a time, biggest part first: each data part streams from the bucket into its own
   `pg_restore` through restore/stream.py, with no temporary file, its chunk tags and both
   SHA-256s checked before its pg_restore is given the end of its input;
3. the post-data section (indexes, constraints, triggers) with `pg_restore -j jobs`.

A failure in one stream cancels the others (their pg_restore is killed) and is raised: the
caller drops the staging database, and nothing is renamed.
"""

from __future__ import annotations

import threading
from collections.abc import Callable
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass
from pathlib import Path

from permafrost.config.settings import StorageSettings
from permafrost.repo.config import Repository
from permafrost.repo.manifest import SCHEMA_PART, Manifest
from restore import pg_restore as pgrestore
from restore import stream
from restore.fetch import fetch_dump, temp_dir
from restore.target import Target


@dataclass(frozen=True)
class PartsRestore:
    """What a restore of parts works with, besides the target and pg_restore's arguments."""

    repository: Repository
    transfer: StorageSettings
    manifest: Manifest
    pg_restore: str
    jobs: int
    lenient: bool  # pg_restore 17 or newer into an older server (restore/stream.py)
    tmpdir: str | None


def run(
    parts: PartsRestore,
    target: Target,
    args: list[str],
    on_progress: Callable[[int], None],
    schema_only: bool = False,
) -> None:
    """Restore every part into target (a staging database); raise on the first failure."""
    args = [a for a in args if a != "--schema-only"]  # the sections say what is restored
    advance = _locked(on_progress)
    directory = temp_dir(parts.tmpdir)
    schema = fetch_dump(
        parts.repository, parts.transfer, parts.manifest.part(SCHEMA_PART), directory, advance
    )
    try:
        pgrestore.run(parts.pg_restore, target, schema, [*args, "--section=pre-data"])
        if not schema_only:
            _data(parts, target, args, schema, advance)
        post = [*args, "--section=post-data", f"--jobs={parts.jobs}"]
        pgrestore.run(parts.pg_restore, target, schema, post)
    finally:
        schema.unlink(missing_ok=True)


def _data(
    parts: PartsRestore,
    target: Target,
    args: list[str],
    schema: Path,
    advance: Callable[[int], None],
) -> None:
    """The schema part's data section and every data part, `jobs` at a time."""
    cancel = threading.Event()
    first: list[BaseException] = []

    def guarded(task: Callable[[], None]) -> None:
        try:
            task()
        except BaseException as exc:
            first.append(exc)
            cancel.set()

    def section() -> None:
        pgrestore.run(parts.pg_restore, target, schema, [*args, "--section=data"])

    def streamed(name: str) -> Callable[[], None]:
        def task() -> None:
            if cancel.is_set():
                raise stream.Cancelled
            stream.run(
                parts.repository,
                parts.transfer,
                parts.manifest.part(name),
                parts.pg_restore,
                target,
                args,
                lenient=parts.lenient,
                on_progress=advance,
                cancel=cancel,
            )

        return task

    tasks = [section, *(streamed(p.name) for p in parts.manifest.data_parts)]
    with ThreadPoolExecutor(max(parts.jobs, 1), thread_name_prefix="pg_restore-part") as pool:
        list(pool.map(guarded, tasks))
    real = [e for e in first if not isinstance(e, stream.Cancelled)]  # the cause, not its echoes
    if first:
        raise (real or first)[0]


def _locked(on_progress: Callable[[int], None]) -> Callable[[int], None]:
    lock = threading.Lock()

    def advance(count: int) -> None:
        with lock:
            on_progress(count)

    return advance
