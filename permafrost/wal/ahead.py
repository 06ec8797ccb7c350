"""The look-ahead pusher: segments marked `.ready` uploaded in parallel before wal-push asks.

PostgreSQL calls archive_command for one segment at a time and waits for each. A busy server
completes segments faster than one `permafrost wal-push` process a segment can store them, and
the rest wait in pg_wal. So wal-push (commands/wal.py) makes sure one pusher runs per pg_wal:
a detached process (`permafrost wal-ahead`, its own session) holding the flock on
`pg_wal/.permafrost-ahead/lock`. It lists `pg_wal/archive_status/*.ready` (oldest first, up to
WAL_PUSH_AHEAD of them) and stores each on WAL_PUSH_THREADS threads: sealed, put if absent with
the body's Content-MD5, checked (the provider's ETag is that MD5, or else read back and
compared), and only then recorded in a marker file `done/{name}.rec` with the segment's SHA-256,
the stored object's size and the file's stat when it was read (written, synced, renamed). It
never touches archive_status: PostgreSQL marks a segment done only when its own wal-push
returns success.

wal-push first reads the marker's record (quick.recorded): a file whose stat is the one
recorded there is acknowledged at once, without hashing or asking anyone. Otherwise it asks the
pusher over `pusher.sock` (quick.py): the pusher answers `stored` for a segment whose marker has
the same hash and whose object a HEAD finds with the recorded size; one it has not stored yet it
stores first (ahead of the queue), then answers. The pusher exits
after WAL_PUSH_IDLE seconds with nothing to do, when its folder goes away, or when a wal-push
with other settings asks (so the next wal-push starts one with those).

Killed at any moment, it loses nothing: a segment without a marker is stored again (the put
finds the same bytes there and compares them), a marker is only written after the check, and
until wal-push returns success PostgreSQL keeps the segment.
"""

from __future__ import annotations

import contextlib
import fcntl
import hashlib
import json
import logging
import os
import socket
import sys
import threading
import time
from collections.abc import Callable, Iterator
from concurrent.futures import Future, ThreadPoolExecutor
from dataclasses import asdict, dataclass
from pathlib import Path

from permafrost.errors import NotFound, SystemMismatch
from permafrost.repo.config import Repository
from permafrost.wal import detached, quick
from permafrost.wal import names as walnames
from permafrost.wal import segment as wal
from permafrost.wal.guard import Guard

log = logging.getLogger("permafrost")
DONE = quick.DONE
SCAN_EVERY_S = 0.2
RETRY_AFTER_S = 5.0  # a failed upload waits this long before the pusher tries it again
CLEAN_EVERY_S = 5.0
COUNT_EVERY_S = 10.0  # how often the queue in pg_wal is recorded (for the wal_queue alert)
LOG = "pusher.log"  # the pusher's stderr: its warnings, for an operator
LOG_LIMIT = 10 * 1024 * 1024


@dataclass(frozen=True)
class Marker:
    """A segment the pusher stored and checked: `done/{name}.rec`, two lines. The first is the
    record wal-push's fast path reads (quick.record_line: the stat, no JSON), the second the
    whole marker in JSON, for the pusher and the full wal-push."""

    name: str
    sha256: str  # of the segment's bytes
    size: int
    key: str
    stored_bytes: int
    fingerprint: str
    # What stat said of the file when the pusher began to read it (quick.stat_of), and when the
    # marker was made: wal-push's record path trusts a file with the same stat. None: the file
    # was too fresh to be told apart from a later write (then wal-push asks the pusher).
    stat: tuple[int, int, int, int, int] | None = None
    stored_at: float = 0.0

    @classmethod
    def read(cls, path: Path) -> Marker | None:
        try:
            fields = json.loads(path.read_text().split("\n")[1])
            stat = fields.pop("stat", None)
            return cls(**fields, stat=tuple(stat) if stat else None)
        except (OSError, ValueError, TypeError, IndexError):
            return None

    def lines(self) -> str:
        record = quick.record_line(self.fingerprint, self.sha256, self.stat, self.stored_at)
        return f"{record}\n{json.dumps(asdict(self))}\n"


def marker_path(folder: Path, name: str) -> Path:
    return folder / DONE / f"{name}{quick.RECORD}"


@dataclass(frozen=True)
class Tuning:
    window: int  # WAL_PUSH_AHEAD: how many .ready segments, oldest first, it works on
    threads: int  # WAL_PUSH_THREADS
    idle: float  # WAL_PUSH_IDLE: seconds with nothing to do before it exits


Store = Callable[[Path], Marker]  # store one segment, read it back, return its marker
Confirm = Callable[[Marker], bool]  # is the object still there with the recorded size
Stored = Callable[[Marker], None]  # told on the main thread (the catalog's note)


def write_marker(folder: Path, marker: Marker) -> None:
    done = folder / DONE
    done.mkdir(mode=0o700, exist_ok=True)
    partial = done / f"{marker.name}.{os.getpid()}.{threading.get_ident()}.tmp"
    with partial.open("w") as handle:
        handle.write(marker.lines())
        handle.flush()
        os.fsync(handle.fileno())
    os.replace(partial, marker_path(folder, marker.name))


def read_marker(folder: Path, name: str, fingerprint: str) -> Marker | None:
    """The marker of a segment stored under these settings, if there is one."""
    marker = Marker.read(marker_path(folder, name))
    return marker if marker is not None and marker.fingerprint == fingerprint else None


def ready(pg_wal: Path) -> list[tuple[str, int]]:
    """The files PostgreSQL waits to archive, oldest first, with their sizes."""
    found = []
    with contextlib.suppress(FileNotFoundError):
        for entry in os.scandir(pg_wal / "archive_status"):
            if entry.name.endswith(".ready"):
                name = entry.name.removesuffix(".ready")
                with contextlib.suppress(OSError):
                    found.append((name, (pg_wal / name).stat().st_size))
    return sorted(found, key=lambda item: _order(item[0]))


def backlog(pg_wal: Path) -> tuple[int, int]:
    """How many files wait in pg_wal to be archived, and their bytes."""
    waiting = ready(pg_wal)
    return len(waiting), sum(size for _, size in waiting)


def _order(name: str) -> tuple[int, str]:
    # History files first: recovery needs a timeline's history before its segments.
    return (0 if walnames.is_history(name) else 1, name)


# --- starting one ---------------------------------------------------------------------------


def running(folder: Path) -> bool:
    """Whether a pusher holds the folder's lock."""
    return detached.held(folder / quick.LOCK)


def ensure_running(folder: Path, spawn: Callable[[], None]) -> bool:
    """Start a pusher unless one runs; True when this call started one."""
    folder.mkdir(mode=0o700, exist_ok=True)
    if running(folder):
        return False
    spawn()
    return True


def spawn_pusher(env_file: str | None, cluster: str | None, fingerprint: str, folder: Path) -> None:
    command = [sys.executable, "-m", "permafrost.cli"]
    if env_file:
        command += ["--env-file", env_file]
    command += ["wal-ahead", "--fingerprint", fingerprint]
    if cluster:
        command += ["--cluster", cluster]
    log_file = folder / LOG
    with contextlib.suppress(OSError):
        if log_file.stat().st_size > LOG_LIMIT:
            log_file.unlink()
    with log_file.open("ab") as errors:
        detached.start([*command, str(folder.resolve())], stderr=errors, cwd="/")


@contextlib.contextmanager
def locked(folder: Path) -> Iterator[bool]:
    """Hold the folder's lock (and write this process's id in it), or yield False."""
    fd = os.open(folder / quick.LOCK, os.O_RDWR | os.O_CREAT, 0o600)
    try:
        try:
            fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
        except BlockingIOError:
            yield False
            return
        os.ftruncate(fd, 0)
        os.write(fd, f"{os.getpid()}\n".encode())
        yield True
    finally:
        os.close(fd)


def pid_of(folder: Path) -> int | None:
    """The id of the pusher holding the folder's lock (None when none does)."""
    if not running(folder):
        return None
    try:
        return int((folder / quick.LOCK).read_text().strip() or 0) or None
    except (OSError, ValueError):
        return None


# --- storing one ----------------------------------------------------------------------------


def store_segment(repo: Repository, cluster: str, guard: Guard, fp: str, path: Path) -> Marker:
    """Store one file as wal-push does, check it, and return the marker to write (with the
    file's stat as it was before the read: see quick.recorded)."""
    data, st = read_stable(path)
    guard.check_segment(path)
    pushed = wal.push_data(repo, cluster, path.name, data)
    stored_bytes = wal.check_stored(repo, pushed)
    digest = hashlib.sha256(data).hexdigest()
    stat = quick.stat_of(st) if st is not None else None
    return Marker(path.name, digest, len(data), pushed.key, stored_bytes, fp, stat, time.time())


def read_stable(path: Path) -> tuple[bytes, os.stat_result | None]:
    """A file's bytes and its stat before the read (None when the file changed during the
    read or was modified too recently to be told apart from a later write)."""
    with path.open("rb") as handle:
        before = os.fstat(handle.fileno())
        wait_ns = quick.STABLE_NS - (time.time_ns() - max(before.st_mtime_ns, before.st_ctime_ns))
        if 0 < wait_ns <= quick.STABLE_NS:
            time.sleep(wait_ns / 1e9)
            before = os.fstat(handle.fileno())
        began = time.time_ns()
        data = handle.read()
        after = os.fstat(handle.fileno())
    same = quick.stat_of(before) == quick.stat_of(after) and len(data) == before.st_size
    return data, before if same and quick.stable(before, began) else None


def confirm(repo: Repository, marker: Marker) -> bool:
    """Whether the marker's object is in the bucket with the size it was stored with."""
    try:
        return repo.storage.head(marker.key).size == marker.stored_bytes
    except NotFound:
        return False


# --- the pusher -----------------------------------------------------------------------------


class Pusher:
    """One pusher's state: what is stored, in flight, failed; served to wal-push and scanned."""

    def __init__(
        self,
        folder: Path,
        tuning: Tuning,
        fingerprint: str,
        store: Store,
        confirm: Confirm,
        on_stored: Stored = lambda marker: None,
        on_backlog: Callable[[tuple[int, int]], None] = lambda counted: None,
    ) -> None:
        self.folder, self.pg_wal = folder, folder.parent
        self.tuning, self.fingerprint = tuning, fingerprint
        self.store, self.confirm, self.on_stored = store, confirm, on_stored
        self.on_backlog = on_backlog
        self._counted = 0.0
        self.cond = threading.Condition()  # an RLock: a future may settle inside _submit
        self.done: dict[str, Marker] = {}
        self.inflight: dict[str, Future[Marker]] = {}
        self.failed: dict[str, tuple[str, float]] = {}
        self.finished: list[Marker] = []
        self.last_work = time.monotonic()
        self.stopping = False
        self.pool = ThreadPoolExecutor(tuning.threads, thread_name_prefix="wal-ahead")
        self.backlog: tuple[int, int] = (0, 0)  # .ready files and their bytes, at the last scan
        self._cleaned = 0.0

    def run(self) -> None:
        self._load_markers()
        server = self._listen()
        threading.Thread(target=self._serve, args=(server,), daemon=True).start()
        try:
            while not self._should_stop():
                self._scan()
                self._report()
                with self.cond:
                    self.cond.wait(SCAN_EVERY_S)
        finally:
            self.stopping = True
            server.close()
            with contextlib.suppress(OSError):
                (self.folder / quick.SOCKET).unlink()
            self.pool.shutdown(wait=True)
            self._report()

    # the work

    def _scan(self) -> None:
        items = ready(self.pg_wal)
        self.backlog = (len(items), sum(size for _, size in items))
        now = time.monotonic()
        with self.cond:
            for name, _ in items[: self.tuning.window]:
                if name in self.done or name in self.inflight:
                    continue
                failed = self.failed.get(name)
                if failed is None or now - failed[1] >= RETRY_AFTER_S:
                    self._submit(name)
            if self.inflight:
                self.last_work = now
        if now - self._cleaned >= CLEAN_EVERY_S:
            self._cleaned = now
            self._forget_gone()

    def _submit(self, name: str) -> None:
        """Start storing one file (the caller holds the condition)."""
        self.failed.pop(name, None)
        try:
            future = self.pool.submit(self._store_one, name)
        except RuntimeError:  # shut down: the pusher is exiting, wal-push stores it itself
            self.failed[name] = ("the pusher is stopping", time.monotonic())
            return
        self.inflight[name] = future
        future.add_done_callback(lambda ended: self._settle(name, ended))

    def _store_one(self, name: str) -> Marker:
        marker = self.store(self.pg_wal / name)
        write_marker(self.folder, marker)
        return marker

    def _settle(self, name: str, future: Future[Marker]) -> None:
        with self.cond:
            self.inflight.pop(name, None)
            error = future.exception()
            if error is None:
                self.done[name] = future.result()
                self.finished.append(self.done[name])
            else:
                self.failed[name] = (str(error), time.monotonic())
                log.warning("look-ahead: %s not stored: %s; wal-push will store it", name, error)
                if isinstance(error, SystemMismatch):
                    # Another system's WAL: refused until `wal reset`, which wal-push reports
                    # and PostgreSQL retries; no pusher goes on trying in the background.
                    self.stopping = True
            self.cond.notify_all()

    def _report(self) -> None:
        """Tell the catalog what was stored (on this thread: one connection)."""
        with self.cond:
            finished, self.finished = self.finished, []
        for marker in finished:
            try:
                self.on_stored(marker)
            except Exception as exc:  # the catalog is a note: the segment is stored
                log.warning("look-ahead: cannot record %s: %s", marker.name, exc)
        if time.monotonic() - self._counted >= COUNT_EVERY_S or self.stopping:
            self._counted = time.monotonic()
            try:
                self.on_backlog(self.backlog)
            except Exception as exc:
                log.warning("look-ahead: cannot record the queue: %s", exc)

    def _should_stop(self) -> bool:
        if self.stopping or not self.folder.is_dir():
            return True
        with self.cond:
            busy = bool(self.inflight)
        return not busy and time.monotonic() - self.last_work > self.tuning.idle

    def _load_markers(self) -> None:
        for path in (self.folder / DONE).glob(f"*{quick.RECORD}"):
            marker = Marker.read(path)
            if marker is not None and marker.fingerprint == self.fingerprint:
                self.done[marker.name] = marker
        self._forget_gone()

    def _forget_gone(self) -> None:
        """Markers of files PostgreSQL has removed (or recycled) are no longer needed."""
        with self.cond:
            names = list(self.done)
        for path in (self.folder / DONE).glob("*"):
            name = path.name.split(".", 1)[0] if path.suffix == ".tmp" else path.stem
            if not (self.pg_wal / name).exists():
                with contextlib.suppress(OSError):
                    path.unlink()
        with self.cond:
            for name in names:
                if not (self.pg_wal / name).exists():
                    self.done.pop(name, None)

    # the socket

    def _listen(self) -> socket.socket:
        with contextlib.suppress(FileNotFoundError):
            (self.folder / quick.SOCKET).unlink()  # a killed pusher's: this one holds the lock
        server = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
        old = os.umask(0o077)
        try:
            with quick.socket_address(self.folder) as address:
                server.bind(address)
        finally:
            os.umask(old)
        server.listen(64)
        return server

    def _serve(self, server: socket.socket) -> None:
        while not self.stopping:
            try:
                conn, _ = server.accept()
            except OSError:
                return
            threading.Thread(target=self._answer, args=(conn,), daemon=True).start()

    def _answer(self, conn: socket.socket) -> None:
        with conn:
            try:
                request = json.loads(conn.makefile("rb").readline() or b"{}")
                answer = self.answer(request)
            except (OSError, ValueError) as exc:
                answer = {"status": quick.UNKNOWN, "message": str(exc)}
            with contextlib.suppress(OSError):
                conn.sendall(json.dumps(answer).encode() + b"\n")

    def answer(self, request: dict[str, object]) -> dict[str, str]:
        """What wal-push is told about its segment (see quick.py for the statuses)."""
        if request.get("fingerprint") != self.fingerprint:
            self.stopping = True  # the settings changed: the next wal-push starts a new pusher
            return {"status": quick.OTHER}
        name = str(request.get("name", ""))
        if walnames.timeline_of(name) is None or not (self.pg_wal / name).is_file():
            return {"status": quick.UNKNOWN}
        marker, error = self._wait_for(name)
        if marker is None:
            return {"status": quick.FAILED, "message": error}
        if marker.sha256 != request.get("sha256"):
            return {"status": quick.DIFFERS}
        if not self.confirm(marker):
            self._forget(name)
            return {"status": quick.UNKNOWN, "message": f"{marker.key} is not in the bucket"}
        return {"status": quick.STORED}

    def _wait_for(self, name: str) -> tuple[Marker | None, str]:
        asked = time.monotonic()
        with self.cond:
            self.last_work = asked
            while not self.stopping:
                if name in self.done:
                    return self.done[name], ""
                failed = self.failed.get(name)
                if failed is not None and failed[1] >= asked:
                    return None, failed[0]
                if name not in self.inflight:
                    self._submit(name)
                self.cond.wait(1.0)
        return None, "the pusher is stopping"

    def _forget(self, name: str) -> None:
        with self.cond:
            self.done.pop(name, None)
        with contextlib.suppress(OSError):
            marker_path(self.folder, name).unlink()
