"""The audit_log table: who did what to which backup, newest first."""

from __future__ import annotations

from typing import Any

from psycopg.rows import dict_row
from psycopg.types.json import Jsonb

from permafrost.catalog.db import Rows


class AuditRows(Rows):
    def audit(self, actor: str, action: str, target: str, details: dict[str, Any]) -> None:
        with self._errors("write the audit log"):
            self.conn.execute(
                "INSERT INTO audit_log (actor, action, target, details) VALUES (%s, %s, %s, %s)",
                (actor, action, target, Jsonb(details)),
            )

    def audit_entries(self, limit: int = 50) -> list[dict[str, Any]]:
        with self._errors("read the audit log"), self.conn.cursor(row_factory=dict_row) as cur:
            return cur.execute(
                "SELECT * FROM audit_log ORDER BY id DESC LIMIT %s", (limit,)
            ).fetchall()
