"""A consistent copy of a SQLite file that an application keeps writing, and what it holds.

The copy is made with SQLite's online backup API (`sqlite3_backup_step`, here Python's
`Connection.backup`) in one step: it reads the source inside a single read transaction, so the
copy is one committed state of the database, in rollback-journal and WAL mode alike. In WAL
mode the application's writers go on meanwhile; in rollback-journal mode their commits wait
(their busy timeout) until the copy is done. A plain file copy is never taken: it can tear a
page being written, and it misses what is still in the -wal file.
"""

from __future__ import annotations

import contextlib
import os
import shutil
import sqlite3
import tempfile
from collections.abc import Iterable, Iterator
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Any

from permafrost.errors import InsufficientSpace, SourceError
from permafrost.text import human_bytes

MARGIN = 64 * 1024 * 1024
BUSY_MS = 60_000  # how long the copy waits for a writer holding an exclusive lock


@dataclass(frozen=True)
class Facts:
    """What the manifest records of a SQLite file (beside its row counts)."""

    path: str
    page_size: int
    page_count: int
    user_version: int
    journal_mode: str
    sqlite_version: str

    def as_dict(self) -> dict[str, Any]:
        return asdict(self)


def open_private(path: Path) -> sqlite3.Connection:
    """A file only this process uses (a snapshot, a download): read without locks or -shm."""
    return sqlite3.connect(f"{path.as_uri()}?immutable=1", uri=True, check_same_thread=False)


def open_source(path: str) -> sqlite3.Connection:
    """An application's file, read-only: no -wal or -shm is created where there was none."""
    if not Path(path).is_file():
        raise SourceError(f"SQLite file {path} does not exist (or is not a file)")
    try:
        conn = sqlite3.connect(f"{Path(path).as_uri()}?mode=ro", uri=True)
        conn.execute(f"PRAGMA busy_timeout = {BUSY_MS}")
        conn.execute("SELECT count(*) FROM sqlite_master").fetchone()
    except sqlite3.Error as exc:
        raise SourceError(f"SQLite file {path} cannot be read: {exc}{_hint(path)}") from None
    return conn


def _hint(path: str) -> str:
    """What a read-only mount of a WAL-mode file needs, when that is likely the reason."""
    folder = Path(path).parent
    if os.access(folder, os.W_OK) or Path(f"{path}-shm").exists():
        return ""
    return (
        f" ({folder} is read-only: a WAL-mode file opens read-only only while its -wal and -shm "
        "files exist, that is while its application has it open; otherwise mount it read-write)"
    )


@contextlib.contextmanager
def snapshot(path: str, directory: Path) -> Iterator[tuple[Path, Facts]]:
    """A consistent copy of the file at path in a temporary file in directory, with its facts;
    removed on leaving."""
    source = open_source(path)
    fd, name = tempfile.mkstemp(prefix="permafrost-sqlite-", suffix=".db", dir=directory)
    os.close(fd)
    copy = Path(name)
    try:
        _check_space(source, path, directory)
        _copy(source, path, copy)
        with contextlib.closing(open_private(copy)) as conn:
            facts = read_facts(conn, path, _journal_mode(source))
        yield copy, facts
    finally:
        source.close()
        for leftover in (copy, Path(f"{copy}-journal"), Path(f"{copy}-wal")):
            leftover.unlink(missing_ok=True)


def _copy(source: sqlite3.Connection, path: str, copy: Path) -> None:
    try:
        with contextlib.closing(sqlite3.connect(copy)) as target:
            # A scratch file: no rollback journal and no fsync (a crash discards it anyway).
            target.execute("PRAGMA journal_mode = OFF")
            target.execute("PRAGMA synchronous = OFF")
            source.backup(target, pages=-1)  # one step: one read transaction, one state
    except sqlite3.Error as exc:
        raise SourceError(f"the online backup of {path} failed: {exc}") from None


def _check_space(source: sqlite3.Connection, path: str, directory: Path) -> None:
    size = page_size(source) * page_count(source)
    free = shutil.disk_usage(directory).free
    if free < size + MARGIN:
        raise InsufficientSpace(
            f"{directory} has {human_bytes(free)} free, and a snapshot of {path} needs "
            f"{human_bytes(size + MARGIN)}: free some space or set TMPDIR"
        )


def _journal_mode(conn: sqlite3.Connection) -> str:
    return str(conn.execute("PRAGMA journal_mode").fetchone()[0])


def page_size(conn: sqlite3.Connection) -> int:
    return int(conn.execute("PRAGMA page_size").fetchone()[0])


def page_count(conn: sqlite3.Connection) -> int:
    return int(conn.execute("PRAGMA page_count").fetchone()[0])


def read_facts(conn: sqlite3.Connection, path: str, journal_mode: str) -> Facts:
    return Facts(
        path=path,
        page_size=page_size(conn),
        page_count=page_count(conn),
        user_version=int(conn.execute("PRAGMA user_version").fetchone()[0]),
        journal_mode=journal_mode,
        sqlite_version=sqlite3.sqlite_version,
    )


def tables(conn: sqlite3.Connection) -> list[str]:
    """The file's own tables (not SQLite's internal ones, not virtual tables' shadows' owners)."""
    rows = conn.execute(
        "SELECT name FROM sqlite_master WHERE type = 'table' AND name NOT LIKE 'sqlite\\_%'"
        " ESCAPE '\\' AND sql NOT LIKE 'CREATE VIRTUAL TABLE%' ORDER BY name"
    ).fetchall()
    return [str(row[0]) for row in rows]


def row_counts(conn: sqlite3.Connection) -> dict[str, int]:
    """Every table's exact row count."""
    return {
        table: int(conn.execute(f"SELECT count(*) FROM {quoted(table)}").fetchone()[0])
        for table in tables(conn)
    }


def quoted(identifier: str) -> str:
    return '"' + identifier.replace('"', '""') + '"'


def describe_files(sources: Iterable[Any]) -> list[dict[str, str | bool]]:
    """Each configured file (a SqliteSource: name, path) as doctor shows it: readable and its
    facts, or why not (`ok` False)."""
    out: list[dict[str, str | bool]] = []
    for s in sources:
        try:
            out.append({"name": s.name, "path": s.path, "ok": True, "state": describe(s.path)})
        except SourceError as exc:
            out.append({"name": s.name, "path": s.path, "ok": False, "state": str(exc)})
    return out


def describe(path: str) -> str:
    """One line on a configured file as `doctor` shows it; SourceError when it cannot be read."""
    with contextlib.closing(open_source(path)) as conn:
        mode = _journal_mode(conn)
        size = page_size(conn) * page_count(conn)
        version = int(conn.execute("PRAGMA user_version").fetchone()[0])
    return f"readable, {human_bytes(size)}, {mode} mode, user_version {version}"
