"""The alerts table, its notification outbox and the alert rules' reads: all their SQL.

`AlertRows` is mixed into `Catalog`. The scheduler raises and resolves its `job_failed:*` alerts
through it; the monitor's evaluator raises and resolves the rules' alerts, reads what the rules
judge, and records what each notification channel has delivered (the outbox columns of
`alerts`: notified_at, notify_sent, notify_error, notify_attempts, next_notify_at).
Acknowledging and silencing an alert are done here too (the audit row beside the change, in
one transaction), and `alert_notifications` logs every message the outbox sent or holds.
`alert_checks` keeps a slow check's findings between runs and when the evaluator last ran.
"""

from __future__ import annotations

from datetime import datetime
from typing import Any

import psycopg
from psycopg.rows import dict_row
from psycopg.types.json import Jsonb

from permafrost.catalog.db import db_errors

EVALUATOR_ROW = "evaluator"  # alert_checks: when an evaluator last ran to its end

# What delivering each event records on its alert (the event names are the monitor's).
_DELIVERED = {
    "opened": "notified_at = %(now)s",
    "reminder": "notified_at = %(now)s, reminded_count = reminded_count + 1",
    "resolved": "resolved_notified_at = %(now)s",
}


class AlertRows:
    """The alerts and alert_checks tables; needs only the catalog's connection."""

    conn: psycopg.Connection[Any]

    # --- raising and resolving ------------------------------------------------------------

    def raise_alert(
        self, key: str, severity: str, summary: str, details: dict[str, Any] | None = None
    ) -> bool:
        """Make an alert active (or refresh it); True when it was not active before."""
        with db_errors("raise an alert"):
            row = self.conn.execute(
                "INSERT INTO alerts (key, severity, summary, details) VALUES (%s, %s, %s, %s)"
                " ON CONFLICT (key) WHERE status = 'active' DO UPDATE SET last_seen = now(),"
                " severity = EXCLUDED.severity, summary = EXCLUDED.summary,"
                " details = EXCLUDED.details RETURNING (xmax = 0)",
                (key, str(severity), summary, Jsonb(details or {})),
            ).fetchone()
        return bool(row and row[0])

    def resolve_alert(self, key: str) -> bool:
        with db_errors("resolve an alert"):
            cur = self.conn.execute(
                "UPDATE alerts SET status = 'resolved', resolved_at = now()"
                " WHERE key = %s AND status = 'active'",
                (key,),
            )
        return cur.rowcount > 0

    def alerts(self, *, active: bool | None = None, limit: int = 100) -> list[dict[str, Any]]:
        query = "SELECT * FROM alerts"
        if active is not None:
            query += " WHERE status = 'active'" if active else " WHERE status = 'resolved'"
        with db_errors("read alerts"), self.conn.cursor(row_factory=dict_row) as cur:
            return cur.execute(query + " ORDER BY last_seen DESC LIMIT %s", (limit,)).fetchall()

    def set_runbook(self, key: str, runbook: str) -> None:
        with db_errors("record a runbook"):
            self.conn.execute(
                "UPDATE alerts SET runbook = %s WHERE key = %s AND status = 'active'"
                " AND runbook IS DISTINCT FROM %s",
                (runbook, key, runbook),
            )

    def active_alert_keys(self, prefix: str = "") -> list[str]:
        """The keys of the active alerts (those starting with `prefix`)."""
        with db_errors("read alerts"):
            rows = self.conn.execute(
                "SELECT key FROM alerts WHERE status = 'active' AND starts_with(key, %s)",
                (prefix,),
            ).fetchall()
        return [row[0] for row in rows]

    # --- the notification outbox ----------------------------------------------------------

    def alerts_to_notify(self) -> list[dict[str, Any]]:
        """Every alert that may be owed a message: active, or resolved and not yet told."""
        with db_errors("read alerts"), self.conn.cursor(row_factory=dict_row) as cur:
            return cur.execute(
                "SELECT * FROM alerts WHERE status = 'active' OR resolved_notified_at IS NULL"
                " ORDER BY id"
            ).fetchall()

    def lease_notification(
        self, alert_id: int, seen_next: datetime | None, until: datetime
    ) -> bool:
        """Claim an alert's delivery until `until`; False when another notifier took it first
        (its next_notify_at is no longer the `seen_next` this one read)."""
        with db_errors("claim an alert notification"):
            row = self.conn.execute(
                "UPDATE alerts SET next_notify_at = %s WHERE id = %s"
                " AND next_notify_at IS NOT DISTINCT FROM %s RETURNING id",
                (until, alert_id, seen_next),
            ).fetchone()
        return row is not None

    def notification_delivered(self, alert_id: int, event: str, now: datetime) -> None:
        """Record an event as told on every channel, and clear the delivery state."""
        column = _DELIVERED[event]
        with db_errors("record an alert notification"):
            self.conn.execute(
                f"UPDATE alerts SET {column}, notify_sent = '{{}}', notify_error = NULL,"
                " notify_attempts = 0, next_notify_at = NULL WHERE id = %(id)s",
                {"now": now, "id": alert_id},
            )

    def notification_failed(
        self, alert_id: int, sent: list[str], error: str, attempts: int, retry_at: datetime
    ) -> None:
        """Record a failed delivery: the channels already told, the error, when to retry."""
        with db_errors("record an alert notification failure"):
            self.conn.execute(
                "UPDATE alerts SET notify_sent = %s, notify_error = %s, notify_attempts = %s,"
                " next_notify_at = %s WHERE id = %s",
                (sent, error[:1000], attempts, retry_at, alert_id),
            )

    # --- acknowledging and silencing -------------------------------------------------------

    def acknowledge_alert(
        self, key: str, by: str, reason: str, actor: str
    ) -> dict[str, Any] | None:
        """Mark the active alert `key` acknowledged (no more reminders), audit-logged; None when
        no alert with that key is active."""
        return self._act(
            "acknowledge an alert",
            "UPDATE alerts SET acknowledged_at = now(), acknowledged_by = %(by)s,"
            " ack_reason = %(reason)s WHERE key = %(key)s AND status = 'active' RETURNING *",
            {"key": key, "by": by, "reason": reason},
            (actor, "alert-acknowledge", {"by": by, "reason": reason}),
        )

    def silence_alert(
        self, key: str, until: datetime, by: str, reason: str, actor: str
    ) -> dict[str, Any] | None:
        """Silence the active alert `key` until `until` (no message meanwhile), audit-logged."""
        return self._act(
            "silence an alert",
            "UPDATE alerts SET silenced_until = %(until)s, silenced_at = now(),"
            " silenced_by = %(by)s, silence_reason = %(reason)s"
            " WHERE key = %(key)s AND status = 'active' RETURNING *",
            {"key": key, "by": by, "reason": reason, "until": until},
            (actor, "alert-silence", {"by": by, "reason": reason, "until": until.isoformat()}),
        )

    def lift_silence(self, key: str, by: str, actor: str) -> dict[str, Any] | None:
        """End the silence of the active alert `key` now, audit-logged; None when it has none."""
        return self._act(
            "lift an alert's silence",
            "UPDATE alerts SET silenced_until = now() WHERE key = %(key)s AND status = 'active'"
            " AND silenced_until > now() RETURNING *",
            {"key": key},
            (actor, "alert-unsilence", {"by": by}),
        )

    def _act(
        self,
        action: str,
        query: str,
        params: dict[str, Any],
        audit: tuple[str, str, dict[str, Any]],
    ) -> dict[str, Any] | None:
        actor, name, details = audit
        with (
            db_errors(action),
            self.conn.transaction(),
            self.conn.cursor(row_factory=dict_row) as cur,
        ):
            row = cur.execute(query, params).fetchone()
            if row is not None:
                cur.execute(
                    "INSERT INTO audit_log (actor, action, target, details)"
                    " VALUES (%s, %s, %s, %s)",
                    (actor, name, params["key"], Jsonb({"alert_id": row["id"], **details})),
                )
        return row

    def muted_alert_counts(self) -> dict[tuple[str, str], int]:
        """Active alerts silenced now, and acknowledged ones: (state, severity) → count."""
        with db_errors("read the metrics"):
            rows = self.conn.execute(
                "SELECT 'silenced', severity, count(*) FROM alerts WHERE status = 'active'"
                " AND silenced_until > now() GROUP BY severity UNION ALL"
                " SELECT 'acknowledged', severity, count(*) FROM alerts WHERE status = 'active'"
                " AND acknowledged_at IS NOT NULL GROUP BY severity"
            ).fetchall()
        return {(state, severity): int(count) for state, severity, count in rows}

    # --- the notification log -------------------------------------------------------------

    def log_notification(self, alert: dict[str, Any], message: dict[str, Any]) -> None:
        """Record one message's outcome (delivered, failed: an attempt; pending: noted once).
        `message`: event, number, channel, recipients, subject, status, error."""
        attempt = 0 if message["status"] == "pending" else 1
        with db_errors("log an alert notification"):
            self.conn.execute(
                "INSERT INTO alert_notifications (alert_id, alert_key, event, number, channel,"
                " recipients, subject, status, error, attempts) VALUES (%(alert_id)s, %(key)s,"
                " %(event)s, %(number)s, %(channel)s, %(recipients)s, %(subject)s, %(status)s,"
                " %(error)s, %(attempt)s) ON CONFLICT (alert_id, event, number, channel) DO UPDATE"
                " SET status = EXCLUDED.status, error = EXCLUDED.error, subject = EXCLUDED.subject,"
                " recipients = EXCLUDED.recipients, updated_at = now(),"
                " attempts = alert_notifications.attempts + EXCLUDED.attempts"
                " WHERE EXCLUDED.status <> 'pending'",
                {
                    **message,
                    "alert_id": alert["id"],
                    "key": alert["key"],
                    "attempt": attempt,
                    "error": (message.get("error") or None) and str(message["error"])[:1000],
                },
            )

    def drop_pending_notifications(self, alert_id: int, reason: str) -> None:
        """An alert resolved: its openings and reminders not yet delivered are moot."""
        with db_errors("log an alert notification"):
            self.conn.execute(
                "UPDATE alert_notifications SET status = 'dropped', error = %s, updated_at = now()"
                " WHERE alert_id = %s AND event <> 'resolved' AND status IN ('pending', 'failed')",
                (reason, alert_id),
            )

    def notification_log(self, limit: int = 50) -> list[dict[str, Any]]:
        """The newest messages, newest first, with their alert's retry time."""
        with db_errors("read the notification log"), self.conn.cursor(row_factory=dict_row) as cur:
            return cur.execute(
                "SELECT n.*, a.next_notify_at FROM alert_notifications n"
                " JOIN alerts a ON a.id = n.alert_id"
                " ORDER BY n.updated_at DESC, n.id DESC LIMIT %s",
                (limit,),
            ).fetchall()

    # --- alert_checks ---------------------------------------------------------------------

    def cached_check(self, name: str) -> tuple[datetime, list[dict[str, Any]]] | None:
        """A slow check's last run: when, and its findings as JSON."""
        with db_errors("read a cached alert check"):
            row = self.conn.execute(
                "SELECT checked_at, findings FROM alert_checks WHERE name = %s", (name,)
            ).fetchone()
        return (row[0], row[1]) if row else None

    def cache_check(self, name: str, now: datetime, findings: list[dict[str, Any]]) -> None:
        with db_errors("cache an alert check"):
            self.conn.execute(
                "INSERT INTO alert_checks (name, checked_at, findings) VALUES (%s, %s, %s)"
                " ON CONFLICT (name) DO UPDATE SET checked_at = EXCLUDED.checked_at,"
                " findings = EXCLUDED.findings",
                (name, now, Jsonb(findings)),
            )

    def evaluator_last_run(self) -> datetime | None:
        """When an evaluator last ran to its end (any process): for a dashboard's "checked at"."""
        with db_errors("read the evaluator's run"):
            row = self.conn.execute(
                "SELECT checked_at FROM alert_checks WHERE name = %s", (EVALUATOR_ROW,)
            ).fetchone()
        return row[0] if row else None

    def evaluator_ran(self, now: datetime) -> None:
        with db_errors("record the evaluator's run"):
            self.conn.execute(
                "INSERT INTO alert_checks (name, checked_at) VALUES (%s, %s)"
                " ON CONFLICT (name) DO UPDATE SET checked_at = EXCLUDED.checked_at",
                (EVALUATOR_ROW, now),
            )

    # --- what the rules read --------------------------------------------------------------

    def _rows(self, query: str, params: Any = ()) -> list[dict[str, Any]]:
        with db_errors("evaluate alerts"), self.conn.cursor(row_factory=dict_row) as cur:
            return cur.execute(query, params).fetchall()

    def server_now(self) -> datetime:
        """now() on the metadata server's clock (heartbeats and WAL progress are stamped so)."""
        moment: datetime = self._rows("SELECT now() AS now")[0]["now"]
        return moment

    def installed_at(self) -> datetime | None:
        """When the metadata store was created (its first migration)."""
        found: datetime | None = self._rows("SELECT min(applied_at) AS at FROM schema_migrations")[
            0
        ]["at"]
        return found

    def newest_backup_outcomes(self) -> list[dict[str, Any]]:
        """Per database and kind, the newest backup that finished (completed, failed,
        interrupted, deleted); safety backups are not a database's own."""
        return self._rows(
            "SELECT DISTINCT ON (database, kind) id, database, kind, tier, status, started_at,"
            " finished_at, error, description FROM backups"
            " WHERE status IN ('completed', 'failed', 'interrupted', 'deleted')"
            " AND purpose = 'backup'"
            " ORDER BY database, kind, started_at DESC, id DESC"
        )

    def last_good_backup(self, database: str, kind: str) -> dict[str, Any] | None:
        """The newest completed backup of a database and kind: its id and when it finished."""
        rows = self._rows(
            "SELECT id, coalesce(finished_at, started_at) AS at FROM backups"
            " WHERE database = %s AND kind = %s AND status = 'completed' AND purpose = 'backup'"
            " ORDER BY started_at DESC LIMIT 1",
            (database, kind),
        )
        return rows[0] if rows else None

    def newest_logical_successes(self) -> list[dict[str, Any]]:
        """Per database with logical (or SQLite) backups: its newest completed one (id, when),
        or None."""
        return self._rows(
            "SELECT database,"
            " (array_agg(id ORDER BY coalesce(finished_at, started_at) DESC)"
            "   FILTER (WHERE status = 'completed'))[1] AS newest_id,"
            " max(coalesce(finished_at, started_at)) FILTER (WHERE status = 'completed')"
            " AS newest"
            " FROM backups WHERE kind IN ('logical', 'sqlite') AND status <> 'deleted'"
            " AND purpose = 'backup'"
            " GROUP BY database"
        )

    def heartbeats_newest_first(self) -> list[dict[str, Any]]:
        return self._rows(
            "SELECT instance, role, host, beat_at FROM heartbeats ORDER BY beat_at DESC"
        )

    def newest_verifications(self) -> list[dict[str, Any]]:
        """Per database, the newest verification of any of its backups."""
        return self._rows(
            "SELECT DISTINCT ON (b.database) b.database, v.backup_id, v.kind, v.status, v.error,"
            " v.finished_at FROM verifications v JOIN backups b ON b.id = v.backup_id"
            " WHERE v.status <> 'unverified'"
            " ORDER BY b.database, v.finished_at DESC, v.id DESC"
        )

    def newest_unverifiable(self) -> list[dict[str, Any]]:
        """Per setting, the newest verification that could not run because of it, if no
        verification has run since (a fixed setting lets the next one run)."""
        return self._rows(
            "SELECT DISTINCT ON (u.setting) u.setting, u.backup_id, u.kind, u.error,"
            " u.finished_at, b.database FROM verifications u"
            " LEFT JOIN backups b ON b.id = u.backup_id"
            " WHERE u.status = 'unverified' AND NOT EXISTS (SELECT 1 FROM verifications v"
            "  WHERE v.status <> 'unverified' AND v.finished_at > u.finished_at)"
            " ORDER BY u.setting, u.finished_at DESC, u.id DESC"
        )

    def wal_progress(self, cluster: str) -> dict[str, Any] | None:
        rows = self._rows(
            "SELECT last_segment, last_archived_at, last_error, last_error_at FROM wal_archive"
            " WHERE cluster = %s",
            (cluster,),
        )
        return rows[0] if rows else None

    def recent_logical_sizes(self, per_database: int) -> list[dict[str, Any]]:
        """The newest `per_database` sized logical backups of each database, newest first."""
        return self._rows(
            "SELECT database, id, status, size_bytes, started_at FROM ("
            " SELECT database, id, status, size_bytes, started_at, row_number() OVER"
            "  (PARTITION BY database ORDER BY started_at DESC, id DESC) AS n"
            " FROM backups WHERE kind = 'logical' AND status IN ('completed', 'deleted')"
            " AND size_bytes IS NOT NULL AND purpose = 'backup') t"
            " WHERE n <= %s ORDER BY database, n",
            (per_database,),
        )

    def completed_backup_count(self) -> int:
        rows = self._rows("SELECT count(*) AS n FROM backups WHERE status = 'completed'")
        return int(rows[0]["n"])
