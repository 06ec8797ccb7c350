"""The pages the API's routes and the dashboard share: a browser asking for `/backups`,
`/backup/<id>` or `/alerts` gets these; both blueprints import them from here."""

from __future__ import annotations

from datetime import datetime
from typing import Any

from flask import render_template, url_for

from monitor.api_alerts import SILENCE_CHOICES
from monitor.notify.messages import runbook_of
from permafrost import layout
from permafrost.catalog.records import BackupRecord, VerificationRecord


def restore_command(record: BackupRecord) -> str:
    """The command that restores this backup (a base backup: recovers its cluster)."""
    if record.kind == "base":
        return (
            "docker compose exec restore permafrost pitr --latest "
            f"--base {record.id} --target-db {record.database}_recovered"
        )
    return (
        f"docker compose exec restore permafrost restore {record.id} "
        f"--target-db {record.database}_restored"
    )


def backups_page(
    records: list[BackupRecord], total: int, filters: dict[str, str], page: int, per_page: int
) -> Any:
    pages = max(1, -(-total // per_page))
    return render_template(
        "backups.html",
        records=records,
        total=total,
        filters=filters,
        page=page,
        pages=pages,
        per_page=per_page,
        tiers=layout.BACKUP_TIERS,
        statuses=("completed", "failed", "running", "deleted"),
        page_url=lambda n: url_for("api.backups", **_query(filters, n, per_page)),
    )


def _query(filters: dict[str, str], page: int, per_page: int) -> dict[str, Any]:
    return {**filters, "page": page, "per_page": per_page}


def backup_page(record: BackupRecord, verifications: list[VerificationRecord]) -> Any:
    manifest = record.manifest or {}
    return render_template(
        "backup.html",
        record=record,
        manifest=manifest,
        row_counts=manifest.get("row_counts", []),
        verifications=verifications,
        restore_command=restore_command(record),
    )


def alerts_page(
    active: list[dict[str, Any]],
    recent: list[dict[str, Any]],
    notifications: list[dict[str, Any]],
    now: datetime,
) -> Any:
    """Active alerts (with their runbook, acknowledgement and silence), the history, and the
    notifications sent about them."""
    shown = [
        {
            **a,
            "runbook_lines": runbook_of(a),
            "silenced": a.get("silenced_until") is not None and a["silenced_until"] > now,
        }
        for a in active
    ]
    return render_template(
        "alerts.html",
        active=shown,
        recent=recent,
        notifications=notifications,
        silence_choices=SILENCE_CHOICES,
    )
