"""The pages the API's routes and the dashboard share: a browser asking for `/backups`,
`/backup/<id>` or `/alerts` gets these; both blueprints import them from here."""

from __future__ import annotations

from datetime import UTC, datetime
from typing import Any

from flask import render_template, url_for

from monitor.api_alerts import SILENCE_CHOICES
from monitor.notify.messages import runbook_of
from monitor.stores import catalog, settings
from permafrost import errors, layout
from permafrost.catalog.chains import chain_members
from permafrost.catalog.records import BackupRecord, VerificationRecord
from permafrost.config.settings import MonitorSettings, SourceSettings
from permafrost.postgres import ddl, tools


def restore_command(record: BackupRecord) -> str:
    """The command that restores this backup (a base backup: recovers its cluster), for the
    way the stack runs, into a database the target server does not have yet."""
    current = settings()
    command = _permafrost(current.monitor)
    if record.kind == "sqlite":  # beside the file, not over it: `--target-path` replaces
        path = str((record.manifest or {}).get("sqlite", {}).get("path", record.database))
        return f"{command} restore {record.id} --target-path {path}.restored"
    if record.kind == "base":
        target = free_target(current.source, f"{record.database}_recovered")
        return f"{command} pitr --latest --base {record.id} --target-db {target}"
    target = free_target(current.source, f"{record.database}_restored")
    return f"{command} restore {record.id} --target-db {target}"


def _permafrost(monitor: MonitorSettings) -> str:
    if monitor.mode != "native":
        return "docker compose exec restore permafrost"
    env_file = f"PERMAFROST_ENV_FILE={monitor.env_file} " if monitor.env_file else ""
    return f"{env_file}.venv/bin/permafrost"


def free_target(source: SourceSettings, wanted: str) -> str:
    """`wanted`, or `wanted_2`, … : the first the server lacks; a dated name when its
    databases cannot be read (the command must not name one that may exist)."""
    try:
        with tools.connect(source, tools.cluster_database(source), autocommit=True) as conn:
            taken = ddl.database_names(conn)
    except errors.PermafrostError:
        return f"{wanted}_{datetime.now(UTC):%Y%m%d}"
    candidates = (wanted, *(f"{wanted}_{n}" for n in range(2, 1000)))
    return next(name for name in candidates if name not in taken)


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
        chain=_chain(record),
        stored_at=settings().storage.location,
        copies=_copies(record),
    )


def _copies(record: BackupRecord) -> list[Any]:
    """Where else the backup lives: its verified copies (COPY_STORAGE_URLS), by destination."""
    if not settings().copies.destinations:
        return []
    try:
        return list(catalog().copies_of(record.id))
    except errors.PermafrostError:  # the page still shows the backup; the copies table says why
        return []


def _chain(record: BackupRecord) -> list[BackupRecord]:
    """A base backup's chain: its full and every incremental taken against it, oldest first."""
    if record.kind != "base" or not record.chain_full_id:
        return []
    return chain_members(catalog(), record.chain_full_id)


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
