"""Which scheduler leads: an advisory lock on the leader's own metadata session, and heartbeats.

Each instance asks PostgreSQL for the scheduler lock on its own metadata connection. The holder
is the leader; the others wait as standbys and try again every few seconds, so a standby takes
over within a minute of the leader's death (the server drops a dead leader's session, and so
its lock, through TCP keepalives set on it). Every instance writes its heartbeat row; the
leader's carries the next run of every job, which the monitor shows and watches.
"""

from __future__ import annotations

import contextlib
import os
import socket
import threading
from collections.abc import Callable
from typing import Any

from permafrost.catalog.db import STORE_ERRORS
from permafrost.catalog.heartbeats import Role
from permafrost.catalog.store import Catalog, connect_leader
from permafrost.config.settings import Settings
from permafrost.errors import CatalogUnavailable
from permafrost.logs import Say
from permafrost.text import first_line

SCHEDULER_LOCK = 0x73636864  # 'schd'
Lead = Callable[[Catalog], None]


class Election:
    """Connect, lead while holding the lock (or wait as a standby), start over when lost."""

    def __init__(
        self,
        settings: Settings,
        say: Say,
        stop: threading.Event,
        details: Callable[[], dict[str, Any]],
        standby_poll: float,
    ) -> None:
        self.settings, self.say, self.stop = settings, say, stop
        self.details, self.standby_poll = details, standby_poll
        self.instance = f"{socket.gethostname()}:{os.getpid()}"

    def run(self, lead: Lead) -> None:
        """Until stopped: `lead(catalog)` whenever this instance holds the scheduler lock."""
        pause = 1.0
        while not self.stop.is_set():
            try:
                catalog = self._connect()
            except CatalogUnavailable as exc:
                self.say(f"{exc}; trying again in {pause:.0f} s")
                self.stop.wait(pause)
                pause = min(pause * 2, 30.0)
                continue
            pause = 1.0
            try:
                self._elect(catalog, lead)
            except STORE_ERRORS as exc:
                self.say(f"lost the metadata store ({first_line(exc)}); standing down")
                self.stop.wait(2)
            finally:
                with contextlib.suppress(Exception):
                    catalog.close()

    def beat(self, catalog: Catalog, role: Role, next_runs: dict[str, Any]) -> None:
        catalog.heartbeat(
            self.instance, role, socket.gethostname(), os.getpid(), next_runs, self.details()
        )

    def _connect(self) -> Catalog:
        url = self.settings.metadata_url
        if url is None:
            raise CatalogUnavailable(
                "METADATA_DATABASE_URL is not set: the scheduler needs the metadata store "
                "for its lock, heartbeats and job history"
            )
        return connect_leader(url, "permafrost-scheduler")

    def _elect(self, catalog: Catalog, lead: Lead) -> None:
        standby = False
        while not self.stop.is_set():
            if catalog.try_lock(SCHEDULER_LOCK, "scheduler"):
                try:
                    lead(catalog)
                finally:
                    with contextlib.suppress(Exception):
                        self.beat(catalog, Role.STOPPED, {})
                return
            if not standby:
                self.say("another scheduler is the leader: waiting as a standby")
                standby = True
            self.beat(catalog, Role.STANDBY, {})
            self.stop.wait(self.standby_poll)
