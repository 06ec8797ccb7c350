"""Heartbeats: each scheduler's row in `heartbeats`, rewritten every beat (the leader's carries
the next run of every job), and the other services' rows in `service_heartbeats` (restore
workers, the evaluating monitor), with `Beating`, the thread that keeps a worker's row fresh."""

from __future__ import annotations

import contextlib
import logging
import os
import socket
import threading
from collections.abc import Callable
from enum import StrEnum
from typing import Any

from psycopg.rows import dict_row
from psycopg.types.json import Jsonb

from permafrost.catalog.db import Rows, migrate, open_connection
from permafrost.config.settings import Secret
from permafrost.errors import CatalogUnavailable

log = logging.getLogger("permafrost")


class Role(StrEnum):
    """What a scheduler says it is in its heartbeat row."""

    LEADER = "leader"
    STANDBY = "standby"
    STOPPED = "stopped"  # the last beat of a leader that stood down


class Service(StrEnum):
    """A long-running service other than the scheduler, as named in service_heartbeats."""

    WORKER = "worker"
    MONITOR = "monitor"


_SERVICE_BEAT = (
    "INSERT INTO service_heartbeats (service, instance, host, pid, details)"
    " VALUES (%s, %s, %s, %s, %s) ON CONFLICT (service, instance) DO UPDATE SET"
    " beat_at = now(), stopped_at = NULL, host = EXCLUDED.host, pid = EXCLUDED.pid,"
    " details = EXCLUDED.details"
)


class HeartbeatRows(Rows):
    def heartbeat(
        self,
        instance: str,
        role: str,
        host: str,
        pid: int,
        next_runs: dict[str, Any],
        details: dict[str, Any],
    ) -> None:
        with self._errors("write the heartbeat"):
            self.conn.execute(
                "INSERT INTO heartbeats (instance, role, host, pid, next_runs, details)"
                " VALUES (%s, %s, %s, %s, %s, %s) ON CONFLICT (instance) DO UPDATE SET"
                " role = EXCLUDED.role, beat_at = now(), next_runs = EXCLUDED.next_runs,"
                " details = EXCLUDED.details",
                (instance, str(role), host, pid, Jsonb(next_runs), Jsonb(details)),
            )

    def heartbeats(self) -> list[dict[str, Any]]:
        """Every scheduler seen in the last day, the leader first, with its age in seconds."""
        with self._errors("read heartbeats"), self.conn.cursor(row_factory=dict_row) as cur:
            return cur.execute(
                "SELECT *, extract(epoch FROM now() - beat_at)::float AS age_seconds"
                " FROM heartbeats WHERE beat_at > now() - interval '1 day'"
                " ORDER BY role = 'leader' DESC, beat_at DESC"
            ).fetchall()

    def service_beat(self, service: Service, instance: str, details: dict[str, Any]) -> None:
        """This process's row for `service`, beaten now (and no longer stopped)."""
        with self._errors("write the heartbeat"):
            self.conn.execute(
                _SERVICE_BEAT,
                (str(service), instance, socket.gethostname(), os.getpid(), Jsonb(details)),
            )

    def service_stopped(self, service: Service, instance: str) -> None:
        """A clean stop: the row says so, and a silent stopped service is no alarm."""
        with self._errors("write the heartbeat"):
            self.conn.execute(
                "UPDATE service_heartbeats SET stopped_at = now()"
                " WHERE service = %s AND instance = %s",
                (str(service), instance),
            )

    def service_beats(self, service: Service | None = None) -> list[dict[str, Any]]:
        """The services seen in the last week, newest beat first, with their age in seconds."""
        where, params = " AND service = %s", (str(service),) if service else ()
        if service is None:
            where = ""
        with self._errors("read heartbeats"), self.conn.cursor(row_factory=dict_row) as cur:
            return cur.execute(
                "SELECT *, extract(epoch FROM now() - beat_at)::float AS age_seconds"
                " FROM service_heartbeats WHERE beat_at > now() - interval '7 days'"
                f"{where} ORDER BY coalesce(stopped_at, beat_at) DESC, beat_at DESC",
                params,
            ).fetchall()


class Beating:
    """A daemon thread writing one service's heartbeat every `every` seconds on a connection of
    its own, so a task that runs for hours does not look like a dead worker. A lost store is
    waited out (the next beat connects again); `stop(clean=True)` marks the row stopped."""

    def __init__(
        self,
        url: Secret,
        service: Service,
        instance: str,
        details: Callable[[], dict[str, Any]],
        every: float = 30.0,
    ) -> None:
        self.url, self.service, self.instance = url, service, instance
        self.details, self.every = details, every
        self._stop = threading.Event()
        self._conn: Any = None
        self._thread = threading.Thread(target=self._loop, name="heartbeat", daemon=True)

    def start(self) -> Beating:
        self._thread.start()
        return self

    def stop(self, *, clean: bool = True) -> None:
        self._stop.set()
        self._thread.join(timeout=10)
        if clean:
            with contextlib.suppress(CatalogUnavailable):
                self._write(stopped=True)
        self._close()

    def _loop(self) -> None:
        while not self._stop.is_set():
            try:
                self._write()
            except CatalogUnavailable as exc:
                log.info("heartbeat not written: %s", exc)
                self._close()
            self._stop.wait(self.every)

    def _write(self, *, stopped: bool = False) -> None:
        if self._conn is None:
            conn = open_connection(self.url, application_name=f"permafrost-{self.service}")
            try:
                migrate(conn)  # the schema, and the search_path into it
            except CatalogUnavailable:
                conn.close()
                raise
            self._conn = conn
        rows = HeartbeatRows()
        rows.conn = self._conn
        if stopped:
            rows.service_stopped(self.service, self.instance)
        else:
            rows.service_beat(self.service, self.instance, self.details())

    def _close(self) -> None:
        if self._conn is not None:
            with contextlib.suppress(Exception):
                self._conn.close()
            self._conn = None
