"""Prefetching WAL for restore_command, so replay is not one download at a time.

PostgreSQL asks for one segment, replays it, and only then asks for the next. `wal-fetch` of a
segment therefore also asks for the next WAL_PREFETCH segments, which a detached process
downloads in parallel into `pg_wal/.permafrost-prefetch/` (the same file system as pg_wal, so
handing one over is a rename). The next `wal-fetch` finds its segment there and returns at
once. One prefetcher runs at a time (a lock file); `wal-fetch` tells it how far replay has got
through the `wanted` file, and it deletes what replay has passed.
"""

from __future__ import annotations

import contextlib
import fcntl
import logging
import os
import sys
import time
from collections.abc import Callable, Iterator
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

from permafrost.wal import detached
from permafrost.wal import names as walnames
from permafrost.wal.names import Segment

log = logging.getLogger("permafrost")
FOLDER = ".permafrost-prefetch"
WANTED = "wanted"
LOCK = "lock"

Fetch = Callable[[str], bytes | None]


def folder_for(target: Path) -> Path:
    """Where prefetched files for a restore_command target (%p, inside pg_wal) are kept."""
    return target.parent / FOLDER


def take(folder: Path, name: str, target: Path) -> bool:
    """Move a prefetched file into place; False when it has not been prefetched."""
    try:
        os.replace(folder / name, target)
    except FileNotFoundError:
        return False
    return True


def request(folder: Path, name: str, spawn: Callable[[], None]) -> None:
    """Say that replay has reached `name`, and start a prefetcher unless one is running."""
    folder.mkdir(mode=0o700, exist_ok=True)
    _write(folder / WANTED, name.encode())
    if detached.held(folder / LOCK):
        return
    spawn()


def spawn_prefetcher(
    env_file: str | None, cluster: str, folder: Path, as_of: str | None = None
) -> None:
    command = [sys.executable, "-m", "permafrost.cli"]
    if env_file:
        command += ["--env-file", env_file]
    command += ["wal-prefetch", "--cluster", cluster, str(folder)]
    if as_of is not None:
        command += ["--as-of", as_of]  # pitr --as-of: the archive as it was
    detached.start(command)


@contextlib.contextmanager
def _locked(folder: Path) -> Iterator[bool]:
    fd = os.open(folder / LOCK, os.O_RDWR | os.O_CREAT, 0o600)
    try:
        try:
            fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
        except BlockingIOError:
            yield False
            return
        yield True
    finally:
        os.close(fd)


def run_prefetcher(folder: Path, depth: int, fetch: Fetch, segment_size: int) -> int:
    """Keep `depth` segments ahead of the wanted one, until the archive ends or replay stops."""
    fetched = 0
    with _locked(folder) as mine:
        if not mine:
            return 0
        done: str | None = None
        while True:
            wanted = _read(folder / WANTED)
            if wanted is None or wanted == done:
                break
            current = walnames.parse_segment(wanted, segment_size)
            if current is None:
                break
            _clean(folder, current, segment_size)
            ahead = [Segment(current.timeline, current.number + i) for i in range(1, depth + 1)]
            names = [s.name(segment_size) for s in ahead]
            missing = [n for n in names if not (folder / n).exists()]
            with ThreadPoolExecutor(max(1, min(depth, 8))) as pool:
                results = list(pool.map(lambda n: _download(folder, n, fetch), missing))
            fetched += sum(results)
            done = wanted
            if len(results) > sum(results):
                break  # the archive ends here (or a download failed): wal-fetch will say which
    return fetched


def _download(folder: Path, name: str, fetch: Fetch) -> bool:
    try:
        data = fetch(name)
    except Exception as exc:  # the next wal-fetch fetches it itself and reports the error
        log.debug("prefetch of %s failed: %s", name, exc)
        return False
    if data is None:
        return False
    _write(folder / name, data)
    return True


def _clean(folder: Path, current: Segment, segment_size: int) -> None:
    """Remove prefetched segments replay has passed, and leftovers of interrupted writes."""
    for entry in folder.iterdir():
        segment = walnames.parse_segment(entry.name, segment_size)
        stale = entry.name.endswith(".tmp") and time.time() - entry.stat().st_mtime > 600
        if stale or (segment is not None and segment <= current):
            entry.unlink(missing_ok=True)


def _write(path: Path, data: bytes) -> None:
    partial = path.with_name(f"{path.name}.{os.getpid()}.tmp")
    partial.write_bytes(data)
    os.replace(partial, path)


def _read(path: Path) -> str | None:
    try:
        return path.read_text().strip() or None
    except OSError:
        return None
