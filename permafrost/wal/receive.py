"""WAL archiving for servers whose archive_command we cannot set: pg_receivewal, supervised.

`pg_receivewal` streams WAL over a replication connection, holding a replication slot so the
server keeps what has not been received, into a local spool. Each completed segment (and each
timeline history file) is pushed to the bucket exactly as wal-push does, then removed from the
spool; the segment being written stays as `.partial` until it completes. When pg_receivewal
dies it is restarted, with a growing pause, and the spool is drained either way.

Before each start the slot's holder is read (postgres/slots.py): a stale stream of ours (one
whose wal-receive is gone, for instance after kill -9 of an old leader) is ended and the log says
whose it was; any other holder is named in the log and in wal_archive.last_error. pg_receivewal
dies with this process (process.die_with_parent), so a killed wal-receive leaves no stream.

The recovery point: a quiet server may take hours to fill a 16 MiB segment. When none has
completed for WAL_MAX_SEGMENT_AGE seconds and the server has written WAL since, the switch
check calls pg_switch_wal(), which completes the segment, so a commit reaches the bucket within
that bound (plus one upload).
"""

from __future__ import annotations

import logging
import os
import socket
import subprocess
import threading
import time
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass
from pathlib import Path

from permafrost.context import Context
from permafrost.errors import PermafrostError, SourceError, StorageError, SystemMismatch
from permafrost.postgres import slots as pgslots
from permafrost.postgres import tools as pgtools
from permafrost.postgres.process import StderrTail, die_with_parent
from permafrost.repo.config import Repository
from permafrost.text import when
from permafrost.wal import names as walnames
from permafrost.wal import segment as wal
from permafrost.wal.guard import Guard
from permafrost.wal.identity import System

log = logging.getLogger("permafrost")
events = logging.getLogger("wal.receive")  # the service's own lines, always written
DEFAULT_SPOOL = "/var/lib/permafrost/wal-spool"
LATER = "the archive position is recorded once the metadata store is back"


def spool_dir(configured: str | None, cluster: str) -> Path:
    """The cluster's spool under WAL_SPOOL_DIR (or the default), created if it is not there."""
    root = Path(configured or DEFAULT_SPOOL)
    path = root / cluster
    try:
        path.mkdir(parents=True, exist_ok=True, mode=0o700)
    except OSError as exc:
        raise PermafrostError(
            f"cannot create the WAL spool {path} ({exc.strerror}): set WAL_SPOOL_DIR to a "
            "directory this user can write, on a volume that survives a restart"
        ) from None
    return path


def slot_name(configured: str | None, cluster: str) -> str:
    """WAL_SLOT, else permafrost_{cluster} as a valid replication slot name."""
    if configured:
        return configured
    cleaned = "".join(c if c.isalnum() or c == "_" else "_" for c in cluster.lower())
    return f"permafrost_{cleaned}"[:63]


@dataclass
class Position:
    """The newest segment archived, and when: what the switch check compares against."""

    segment: str | None = None
    at: float = 0.0


def upload_completed(
    ctx: Context, cluster: str, spool: Path, position: Position, guard: Guard | None = None
) -> int:
    """Push every completed file in the spool, WAL_PUSH_THREADS at a time; remove each once it
    is stored and read back. A segment of another system than the archive's stays in the spool
    (SystemMismatch), as does one whose upload failed; the first such error is raised once the
    others are done."""
    repo = ctx.repository(create=True)
    guard = guard or Guard(repo, cluster, "wal-receive")
    completed = [p for p in sorted(spool.iterdir()) if _completed(p.name)]
    if not completed:
        return 0
    threads = min(ctx.settings.wal.push_threads, len(completed))
    with ThreadPoolExecutor(threads, thread_name_prefix="wal-receive") as pool:
        futures = [pool.submit(_push_one, repo, cluster, guard, path) for path in completed]
        pushed, errors = 0, []
        for path, future in zip(completed, futures, strict=True):  # oldest first
            try:
                result = future.result()
            except PermafrostError as exc:
                errors.append(exc)
                continue
            _archived(ctx, cluster, path, result.plain_bytes, position)
            pushed += 1
    if errors:
        raise next((e for e in errors if isinstance(e, SystemMismatch)), errors[0])
    return pushed


def _completed(name: str) -> bool:
    """A completed segment or a history file (not .partial, not pg_receivewal's temporary)."""
    return walnames.parse_segment(name) is not None or walnames.is_history(name)


def _push_one(repo: Repository, cluster: str, guard: Guard, path: Path) -> wal.Pushed:
    guard.check_segment(path)
    pushed = wal.push(repo, cluster, path)
    wal.check_stored(repo, pushed)
    return pushed


def _archived(ctx: Context, cluster: str, path: Path, size: int, position: Position) -> None:
    name = path.name
    if walnames.parse_segment(name) is not None:
        _record(ctx, cluster, name, size)
        position.segment, position.at = name, time.time()
    path.unlink()
    extra = {"event": "wal_archived", "segment": name, "cluster": cluster}
    log.info("archived %s of cluster %s", name, cluster, extra=extra)


def _record(ctx: Context, cluster: str, name: str, size: int, method: str = "receive") -> None:
    if ctx.settings.metadata_url is not None:
        ctx.record(lambda c: c.wal_archived(cluster, name, size, method), LATER)


def record_error(ctx: Context, cluster: str, error: str) -> None:
    """An archiving error for `wal status` and the wal_lag alert (best effort)."""
    if ctx.settings.metadata_url is not None:
        ctx.record(lambda c: c.wal_error(cluster, error), LATER)


def record_pushed(ctx: Context, cluster: str, name: str, size: int) -> None:
    """wal-push's note to the catalog (segments only; best effort)."""
    if walnames.parse_segment(name) is not None:
        _record(ctx, cluster, name, size, "push")


class Receiver:
    def __init__(self, ctx: Context, cluster: str, stop: threading.Event) -> None:
        self.ctx = ctx
        self.cluster = cluster
        self.stop = stop
        self.spool = spool_dir(ctx.settings.wal.spool_dir, cluster)
        self.slot = slot_name(ctx.settings.wal.slot, cluster)
        self.position = Position()
        self._store_pause, self._store_retry_at = 1.0, 0.0
        self.source = ctx.settings.source
        database = pgtools.cluster_database(self.source)
        self.application = pgslots.stream_application(socket.gethostname(), os.getpid())
        self.conninfo = pgslots.stream_conninfo(self.source, database, self.application)
        with pgtools.connect(self.source, database) as conn:
            row = conn.execute("SELECT current_setting('server_version_num')::int").fetchone()
        major = int(row[0]) // 10000 if row else 0
        self.tool = pgtools.cluster_tool(
            ctx.settings.pg_bin_dirs, "pg_receivewal", major, "streaming WAL"
        ).path
        self.guard = Guard(ctx.repository(create=True), cluster, "wal-receive")
        self._refused: str | None = None
        self._check_server(database)

    def _check_server(self, database: str) -> None:
        """Refuse to stream from a server that is not the archive's system, before any slot."""
        with pgtools.connect(self.source, database) as conn:
            row = conn.execute(
                "SELECT system_identifier, current_setting('server_version_num')::int"
                " FROM pg_control_system()"
            ).fetchone()
        assert row is not None
        try:
            self.guard.check(System(str(row[0]), int(row[1]) // 10000))
        except SystemMismatch as exc:
            self._record_error(str(exc))
            raise

    def create_slot(self) -> None:
        result = subprocess.run(
            [
                self.tool,
                "--create-slot",
                "--if-not-exists",
                f"--slot={self.slot}",
                "--no-password",
                f"--dbname={self.conninfo}",
            ],
            capture_output=True,
            text=True,
            env=pgtools.libpq_env(self.source),
            check=False,
        )
        if result.returncode != 0:
            message = result.stderr.strip().splitlines()[-1:] or ["no error output"]
            raise SourceError(
                f"cannot create replication slot {self.slot}: "
                f"{message[0].removeprefix('pg_receivewal: ')} (the user needs the "
                "REPLICATION attribute and a replication line in pg_hba.conf)"
            )

    def run(self) -> None:
        self.create_slot()
        events.info(
            "streaming cluster %s through slot %s into %s",
            self.cluster,
            self.slot,
            self.spool,
            extra={"event": "wal_receive_started", "cluster": self.cluster, "slot": self.slot},
        )
        pause = 1.0
        while not self.stop.is_set():
            started = time.monotonic()
            self._free_slot()
            code, error = self._one_run()
            self._drain()
            if self.stop.is_set():
                break
            if time.monotonic() - started > 60:
                pause = 1.0
            log.warning(
                "pg_receivewal exited with %s (%s); restarting in %.0f s", code, error, pause
            )
            self._record_error(error)
            self.stop.wait(pause)
            pause = min(pause * 2, 30.0)
        self._drain()

    def _record_error(self, error: str) -> None:
        record_error(self.ctx, self.cluster, error)

    def _free_slot(self) -> None:
        """End a stale stream of ours holding the slot; name any other holder."""
        try:
            holder = pgslots.slot_holder(self.source, self.slot)
        except PermafrostError as exc:
            log.warning("cannot read who holds replication slot %s: %s", self.slot, exc)
            return
        if holder is None:
            return
        held = f"replication slot {self.slot} is held by {describe_holder(holder)}"
        if not holder.ours or self._live_elsewhere_here(holder):
            message = (
                f"{held}: not a stale stream of ours; stop that client or set WAL_SLOT to a "
                "slot of this receiver's own"
            )
            log.warning("%s", message)
            self._record_error(message)
            return
        log.warning("%s, a stale stream of ours: ending it", held)
        try:
            ended = pgslots.end_stream(self.source, self.slot, holder)
        except PermafrostError as exc:
            log.warning("cannot end PID %s: %s", holder.pid, exc)
            return
        if ended:
            log.warning("ended the stale stream (PID %s): slot %s is free", holder.pid, self.slot)
        else:
            log.warning(
                "PID %s still holds slot %s after pg_terminate_backend", holder.pid, self.slot
            )

    @staticmethod
    def _live_elsewhere_here(holder: pgslots.SlotHolder) -> bool:
        """Whether the stream belongs to another wal-receive still alive on this host (then
        two receivers share a slot by mistake, and ending one would only start a tug of war)."""
        owner = holder.owner
        if owner is None or owner[0] != socket.gethostname()[:40] or owner[1] == os.getpid():
            return False
        try:
            os.kill(owner[1], 0)
        except ProcessLookupError:
            return False
        except PermissionError:
            return True
        return True

    def _one_run(self) -> tuple[int | None, str]:
        proc = subprocess.Popen(
            [
                self.tool,
                f"--directory={self.spool}",
                f"--slot={self.slot}",
                "--no-loop",
                "--no-password",
                f"--dbname={self.conninfo}",
            ],
            stdout=subprocess.DEVNULL,
            stderr=subprocess.PIPE,
            env=pgtools.libpq_env(self.source),
            preexec_fn=die_with_parent(),
        )
        assert proc.stderr is not None
        errors = StderrTail(proc.stderr, "pg_receivewal: ")
        next_check = 0.0
        try:
            while proc.poll() is None and not self.stop.is_set():
                self._store_back()
                self._drain()
                now = time.monotonic()
                if now >= next_check:
                    next_check = now + min(
                        60.0, max(1.0, self.ctx.settings.wal.max_segment_age / 4)
                    )
                    self._switch_check()
                self.stop.wait(0.5)
        finally:
            if proc.poll() is None:
                proc.terminate()  # pg_receivewal flushes what it has and exits
                try:
                    proc.wait(timeout=10)
                except subprocess.TimeoutExpired:
                    proc.kill()
                    proc.wait()
        return proc.returncode, errors.summary()

    def _store_back(self) -> None:
        """After a lost metadata store (a restart), connect again now and then (1 s doubling to
        30 s), so archive positions are recorded again instead of never: a silent catalog would
        raise a false wal_lag alert while every segment reaches the bucket."""
        if not self.ctx.catalog_lost:
            self._store_pause = 1.0
            return
        now = time.monotonic()
        if now >= self._store_retry_at:
            self.ctx.forget_catalog()  # the next record connects afresh
            self._store_retry_at = now + self._store_pause
            self._store_pause = min(self._store_pause * 2, 30.0)

    def _drain(self) -> None:
        try:
            upload_completed(self.ctx, self.cluster, self.spool, self.position, self.guard)
        except SystemMismatch as exc:
            if str(exc) != self._refused:  # said once, not every half second
                self._refused = str(exc)
                log.error("%s", exc)
                self._record_error(str(exc))
        except (StorageError, PermafrostError) as exc:
            log.warning("cannot archive from the spool yet: %s; will retry", exc)
        else:
            self._refused = None

    def _switch_check(self) -> None:
        try:
            switch_if_idle(self.ctx, self.cluster, self.position)
        except PermafrostError as exc:
            log.warning("WAL switch check: %s", exc)


def describe_holder(holder: pgslots.SlotHolder) -> str:
    """`PID 4242 (permafrost-wal-receive/host:17, from 10.0.0.5, since 2026-…)`."""
    parts = [holder.application or "no application name"]
    if holder.client:
        parts.append(f"from {holder.client}")
    if holder.since:
        parts.append(f"since {when(holder.since)}")
    return f"PID {holder.pid} ({', '.join(parts)})"


def switch_if_idle(ctx: Context, cluster: str, position: Position | None = None) -> str | None:
    """pg_switch_wal() when no segment completed for WAL_MAX_SEGMENT_AGE but WAL was written.

    Returns the name of the segment that the switch completed, or None. Without a position of
    its own (the scheduler's check), the archive position comes from the server's archiver
    (archive_command) or else from the catalog (wal-receive in another process).
    """
    max_age = ctx.settings.wal.max_segment_age
    source = ctx.settings.source
    with pgtools.connect(source, pgtools.cluster_database(source), autocommit=True) as conn:
        row = conn.execute(
            "SELECT pg_current_wal_insert_lsn()::text,"
            " (SELECT setting::bigint FROM pg_settings WHERE name = 'wal_segment_size'),"
            " (SELECT timeline_id FROM pg_control_checkpoint()),"
            " a.last_archived_wal, extract(epoch FROM a.last_archived_time)"
            " FROM pg_stat_archiver a"
        ).fetchone()
        assert row is not None
        lsn_text, segment_size, _timeline, archived_wal, archived_time = row
        last = position or _known_position(ctx, cluster, archived_wal, archived_time)
        size = int(segment_size)
        lsn = walnames.parse_lsn(lsn_text)
        done = walnames.parse_segment(last.segment, size) if last.segment else None
        written_from = (done.number + 1) * size if done is not None else lsn - lsn % size
        if lsn - written_from <= LONG_PAGE_HEADER:
            return None  # nothing written since the last completed segment
        if done is not None and time.time() - last.at < max_age:
            return None
        name = pgtools.switch_wal(conn)
    log.info("switched WAL of cluster %s: %s had waited %s s or more", cluster, name, max_age)
    if ctx.settings.metadata_url is not None:
        ctx.record(lambda c: c.wal_switched(cluster), LATER)
    if position is not None:
        position.at = time.time()  # give the switched segment one period to arrive
    return name


LONG_PAGE_HEADER = 40  # a segment that holds only its page header has no WAL in it yet


def _known_position(
    ctx: Context, cluster: str, archived_wal: str | None, archived_time: float | None
) -> Position:
    if archived_wal and walnames.parse_segment(archived_wal) is not None:
        return Position(archived_wal, float(archived_time or 0))
    if ctx.settings.metadata_url is not None:
        rows = ctx.record(lambda c: c.wal_status(cluster), LATER) or []
        if rows:
            at = rows[0]["last_archived_at"]
            return Position(rows[0]["last_segment"], at.timestamp())
    return Position()
