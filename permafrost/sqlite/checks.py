"""What SQLite itself says of a file: integrity, foreign keys, and who is writing to it."""

from __future__ import annotations

import contextlib
import fcntl
import os
import sqlite3
import struct
from dataclasses import dataclass
from pathlib import Path

from permafrost.text import one_line

FIRST_PROBLEMS = 5  # integrity_check's first complaints are named; the rest counted


def integrity_problems(conn: sqlite3.Connection) -> list[str]:
    """`PRAGMA integrity_check`'s complaints ([] when it answers ok); a file SQLite cannot even
    read is one complaint."""
    try:
        rows = conn.execute("PRAGMA integrity_check").fetchall()
    except sqlite3.DatabaseError as exc:
        return [f"the file cannot be read: {exc}"]
    problems = [str(row[0]) for row in rows]
    return [] if problems == ["ok"] else problems


def foreign_key_problems(conn: sqlite3.Connection) -> list[str]:
    """`PRAGMA foreign_key_check`'s rows, as text: table, rowid, the table it should refer to."""
    try:
        rows = conn.execute("PRAGMA foreign_key_check").fetchall()
    except sqlite3.DatabaseError as exc:
        return [f"the file cannot be read: {exc}"]
    return [
        f"{table} row {rowid} refers to a missing row of {parent}"
        for table, rowid, parent, _ in rows
    ]


def summary(problems: list[str]) -> str:
    shown = "; ".join(one_line(p, 200) for p in problems[:FIRST_PROBLEMS])
    more = len(problems) - FIRST_PROBLEMS
    return shown + (f" (and {more} more)" if more > 0 else "")


@dataclass(frozen=True)
class Holder:
    pid: int
    command: str

    def __str__(self) -> str:
        return f"pid {self.pid} ({self.command})"


def write_locked(path: Path) -> str | None:
    """Why the file cannot be replaced now: another process holds SQLite's write lock on it (a
    write transaction in progress), or None.

    Read from the POSIX locks SQLite takes, without opening the database (which could create
    or checkpoint its -wal): the RESERVED byte of the file in rollback-journal mode, the write
    lock byte of the -shm file in WAL mode. The holder's pid comes with the answer.
    """
    probes = [(path, RESERVED_BYTE, "its RESERVED lock: a write transaction is open")]
    shm = Path(f"{path}-shm")
    if shm.exists():
        probes.append((shm, WAL_WRITE_LOCK, "the WAL write lock: a write transaction is open"))
    for file, offset, what in probes:
        pid = _lock_holder(file, offset)
        if pid is not None:
            return f"process {pid} holds {what} on {path}"
    return None


RESERVED_BYTE = 0x40000001  # PENDING_BYTE + 1 (sqlite3.c, os_unix.c)
WAL_WRITE_LOCK = 120  # WALINDEX_LOCK_OFFSET + WAL_WRITE_LOCK (slot 0) in the -shm file
_FLOCK = "hhqqi"  # struct flock on Linux: l_type, l_whence, l_start, l_len, l_pid


def _lock_holder(file: Path, offset: int) -> int | None:
    """The pid of a process holding a POSIX lock that a write lock on one byte would meet."""
    try:
        fd = os.open(file, os.O_RDONLY)
    except OSError:
        return None
    try:
        probe = struct.pack(_FLOCK, fcntl.F_WRLCK, os.SEEK_SET, offset, 1, 0)
        kind, _, _, _, pid = struct.unpack(_FLOCK, fcntl.fcntl(fd, fcntl.F_GETLK, probe))
    finally:
        os.close(fd)
    return None if kind == fcntl.F_UNLCK else pid


def holders(path: Path) -> list[Holder]:
    """The processes that have the file (or its -wal) open, as /proc shows them (Linux only;
    elsewhere, and for processes of other users, none are found)."""
    wanted = {str(path.resolve()), f"{path.resolve()}-wal"}
    found = []
    for entry in Path("/proc").glob("[0-9]*"):
        if int(entry.name) == os.getpid():
            continue
        with contextlib.suppress(OSError):
            if any(os.readlink(fd) in wanted for fd in (entry / "fd").iterdir()):
                found.append(Holder(int(entry.name), (entry / "comm").read_text().strip()))
    return found
