"""The heartbeats table: each scheduler's row, rewritten every beat (the leader's carries the
next run of every job)."""

from __future__ import annotations

from enum import StrEnum
from typing import Any

from psycopg.rows import dict_row
from psycopg.types.json import Jsonb

from permafrost.catalog.db import Rows


class Role(StrEnum):
    """What a scheduler says it is in its heartbeat row."""

    LEADER = "leader"
    STANDBY = "standby"
    STOPPED = "stopped"  # the last beat of a leader that stood down


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
