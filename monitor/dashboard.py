"""The dashboard: server-rendered pages (Jinja2, autoescaped), every asset served from here.

`/` is the overview: a card per database, the size and duration chart, alerts, job history,
storage per tier. `/backups`, `/backup/<id>` and `/alerts` are the API's routes (a browser gets
monitor/pages.py's pages there). The buttons (Verify, Test restore, Run backup now) post
CSRF-protected forms to /ui/…, which queue tasks exactly as the API does.
"""

from __future__ import annotations

from datetime import UTC, datetime
from typing import Any

from flask import Blueprint, abort, flash, redirect, render_template, request, url_for

from monitor.auth import check_csrf, check_dashboard_login, csrf_token, dashboard_protected
from monitor.chart import read_chart
from monitor.fleet_view import fleet_view
from monitor.formats import ago, when
from monitor.stores import catalog, stores
from monitor.web import wants_html
from permafrost import layout
from permafrost.audit import actor
from permafrost.backup.request import refuse_unconfigured
from permafrost.catalog import reads
from permafrost.catalog.chains import newest_chains
from permafrost.catalog.copy_lag import copy_lags
from permafrost.catalog.records import DrillStatus
from permafrost.catalog.schedulers import collect
from permafrost.catalog.store import Catalog
from permafrost.config.fleet import Fleet, load_fleet
from permafrost.errors import ConfigError, UsageError
from permafrost.text import human_bytes, short_duration
from permafrost.worker.queue import task_labels

blueprint = Blueprint("dashboard", __name__)
CARD_KINDS = ("logical", "sqlite")  # a card per database: its dumps, or a SQLite file's copies


@blueprint.before_app_request
def _login() -> Any:
    if request.endpoint in ("api.health", "api.metrics", "static"):
        return None
    if request.path == "/" or request.path.startswith("/ui/") or _is_page():
        return check_dashboard_login()
    return None


def _is_page() -> bool:
    return request.method == "GET" and wants_html()


@blueprint.app_context_processor
def _helpers() -> dict[str, Any]:
    return {
        "csrf_token": csrf_token,
        "actions_enabled": dashboard_protected(),
        "human_bytes": human_bytes,
        "ago": ago,
        "duration": short_duration,
        "when": when,
    }


def freshness(age_seconds: float | None, limit: int) -> str:
    if age_seconds is None:
        return "stale"
    if age_seconds <= limit * 0.75:
        return "fresh"
    return "aging" if age_seconds <= limit else "stale"


@blueprint.get("/")
def overview() -> Any:
    cat = catalog()
    settings = stores().settings
    now = datetime.now(UTC)
    fleet = load_fleet(settings)
    try:
        view = fleet_view(cat, fleet, settings, request.args.get("source") or None)
    except ConfigError as exc:
        abort(404, str(exc))
    rows = reads.databases(cat)
    names = [r["database"] for r in rows if r["kind"] in CARD_KINDS]
    listed = set(names)
    names += [db for db in view.configured if db not in listed]
    shown = None if view.selected is None else {n for n in names if view.shown(n)}
    state = collect(cat, view.configured, view.owner, shown)
    wal = {w["cluster"]: w for w in cat.wal_status()}
    cluster_wal = (
        wal.get(settings.cluster_name) if settings.schedules.wal_archiving != "off" else None
    )
    by_name = {r["database"]: r for r in rows if r["kind"] in CARD_KINDS}
    limit = settings.monitor.max_backup_age
    files = {s.name for s in settings.source.sqlite}
    every = [
        _card(
            name,
            by_name.get(name, {}),
            state["databases"].get(name, {}),
            None
            if name in files
            else _wal_of(fleet, wal, name)
            if fleet.from_file
            else cluster_wal,
            limit,
            now,
        )
        | {"sqlite": name in files or by_name.get(name, {}).get("kind") == "sqlite"}
        | view.card(name)
        for name in names
    ]
    cards = [c for c in every if view.shown(c["database"])]
    return render_template(
        "overview.html",
        cards=cards,
        fleet=view,
        sources=view.summary(every) if view.many else [],
        scheduler=state["scheduler"],
        alerts=view.alerts(cat.alerts(active=True)),
        jobs=view.jobs(reads.job_history(cat, 15 if view.selected is None else 200))[:15],
        storage=_storage(reads.stored_by_tier(cat), cat.usage()),
        drills=_drills(cat, settings.cluster_name),
        chart=read_chart(
            cat, now, None if view.selected is None else [c["database"] for c in cards]
        ),
        chains=newest_chains(cat),
        copies=copy_lags(cat, settings.copies),
        copy_locations={d.name: d.storage.location for d in settings.copies.destinations},
        copy_max_lag=settings.copies.max_lag,
        max_age=short_duration(limit),
        now=now,
    )


def _wal_of(fleet: Fleet, wal: dict[str, Any], name: str) -> dict[str, Any] | None:
    """A fleet database's recovery point source: its source's cluster's WAL, when archived
    (a SQLite file and a database without one: its last backup)."""
    source = fleet.source_of(name)
    if source is None or source.cluster is None or source.wal == "off":
        return None
    return wal.get(source.cluster)


def _card(
    name: str,
    row: dict[str, Any],
    jobs: dict[str, Any],
    cluster_wal: dict[str, Any] | None,
    limit: int,
    now: datetime,
) -> dict[str, Any]:
    """A database's card: its newest backups, their age against MAX_BACKUP_AGE, the RPO."""
    finished = row.get("last_finished")
    age = (now - finished).total_seconds() if finished else None
    return {
        "database": name,
        "last_id": row.get("last_id"),
        "last_finished": finished,
        "age": age,
        "freshness": freshness(age, limit),
        "rpo": float(cluster_wal["lag_seconds"]) if cluster_wal else age,
        "rpo_source": "WAL archive" if cluster_wal else "last backup",
        "wal_queue": cluster_wal if cluster_wal and cluster_wal.get("ready_at") else None,
        "next_run": (jobs.get("backup") or {}).get("next_run"),
        "verification": row.get("newest_verification"),
        "verified_at": row.get("verified_at"),
        "failed_id": row.get("failed_id"),
        "failed_at": row.get("failed_at"),
        "failed_error": row.get("failed_error"),
        "failing": bool(
            row.get("failed_at") and (not finished or row["failed_at"] > row["last_started"])
        ),
    }


def _drills(cat: Catalog, cluster: str) -> list[dict[str, Any]]:
    """The last PITR drill of each cluster (the configured one first), and its last success."""
    good = {d.cluster: d for d in cat.newest_drills(DrillStatus.SUCCEEDED)}
    newest = sorted(cat.newest_drills(), key=lambda d: (d.cluster != cluster, d.cluster))
    return [{"last": d, "success": good.get(d.cluster)} for d in newest]


def _storage(
    stored: list[dict[str, Any]], usage: list[dict[str, Any]]
) -> list[tuple[str, list[int]]]:
    """(tier, [count, bytes]) per tier: the backup tiers from the catalog as of now (a backup
    counts at once), and what only retention measures (WAL) from its last run."""
    storage = {row["tier"]: [int(row["backups"]), int(row["bytes"])] for row in stored}
    for u in usage:
        if u["tier"] in layout.BACKUP_TIERS:
            continue
        entry = storage.setdefault(u["tier"], [0, 0])
        entry[0] += int(u["objects"])
        entry[1] += int(u["bytes"])
    return sorted(storage.items())


@blueprint.get("/ui/jobs")
def jobs() -> Any:
    return render_template("jobs.html", jobs=reads.job_history(catalog(), 200))


# --- the buttons ------------------------------------------------------------------------------


def _action_allowed() -> None:
    if not dashboard_protected():
        abort(403, "dashboard actions are disabled: set DASHBOARD_USER and DASHBOARD_PASSWORD")
    check_csrf()


def _who() -> str:
    auth = request.authorization
    return f"dashboard:{auth.username if auth else 'unknown'}"


@blueprint.post("/ui/verify/<name>")
def ui_verify(name: str) -> Any:
    _action_allowed()
    if not layout.valid_backup_id(name):
        abort(400, f"{name!r} is not a backup id")
    record = catalog().get(name)
    if record is None:
        abort(404, f"no backup {name}")
    task_id = catalog().enqueue("verify", {"backup_id": record.id}, _who())
    catalog().audit(actor(), "queue-verify", record.id, {"by": _who()})
    flash(f"Verification of {record.id} queued as task {task_id}.")
    return redirect(url_for("api.backup", name=record.id))


@blueprint.post("/ui/restore-test")
def ui_restore_test() -> Any:
    _action_allowed()
    database = request.form.get("database", "")
    if not layout.valid_name(database):
        abort(400, "database is not a valid database name")
    record = reads.newest_completed(catalog(), database)
    if record is None:
        abort(404, f"no completed backup of {database} to test")
    task_id = catalog().enqueue("test_restore", {"backup_id": record.id}, _who())
    catalog().audit(actor(), "queue-test-restore", record.id, {"by": _who()})
    flash(f"Test restore of {record.id} ({database}) queued as task {task_id}.")
    return redirect(url_for("dashboard.overview"))


@blueprint.post("/ui/run-now")
def ui_run_now() -> Any:
    _action_allowed()
    database = request.form.get("database", "")
    if not layout.valid_name(database):
        abort(400, "database is not a valid database name")
    try:
        refuse_unconfigured(
            stores().settings.source, database, load_fleet(stores().settings)
        )  # as the API and the CLI do
    except UsageError as exc:
        abort(400, str(exc))
    payload = {"kind": "logical", "database": database, "tier": "standard"}
    labels = task_labels(stores().settings, "backup", payload)
    task_id = catalog().enqueue("backup", payload, _who(), **labels)
    catalog().audit(actor(), "queue-backup", database, {"by": _who()})
    who = "a worker" if stores().settings.schedules.backup_workers == "queue" else "the scheduler"
    flash(f"Backup of {database} queued as task {task_id}: {who} takes it.")
    return redirect(url_for("dashboard.overview"))


@blueprint.get("/ui/tasks/<int:task_id>")
def ui_task(task_id: int) -> Any:
    found = catalog().task(task_id)
    if found is None:
        abort(404, f"no task {task_id}")
    return render_template("task.html", task=found)
