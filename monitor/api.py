"""The JSON API: the reference deployment's endpoints, and a few more.

Reads are open (like `/health` and `/metrics`, they are for probes and scripts); writes need the
bearer token (monitor/auth.py). `/backups`, `/backup/<id>` and `/alerts` answer a browser with
the dashboard's page and everything else with JSON. Unknown or malformed names are 404 or 400.
"""

from __future__ import annotations

import statistics
from datetime import UTC, datetime
from typing import Any

from flask import Blueprint, Response, abort, jsonify, request, url_for

from monitor import metrics as prometheus
from monitor import metrics_cache
from monitor.auth import token_required
from monitor.openapi import document
from monitor.pages import alerts_page, backup_page, backups_page, restore_command
from monitor.status import status_json
from monitor.stores import catalog, stores
from monitor.web import api_actor, json_body, wants_html
from permafrost import layout
from permafrost.audit import actor
from permafrost.backup.lookup import record_json
from permafrost.backup.recovery import ASSUMED_RATE, drill_facts
from permafrost.backup.request import refuse_unconfigured
from permafrost.backup.sources import fleet_databases
from permafrost.catalog import reads
from permafrost.catalog.records import BackupRecord, DrillStatus, TaskRecord
from permafrost.catalog.schedulers import collect
from permafrost.catalog.store import Catalog
from permafrost.config.fleet import load_fleet
from permafrost.config.settings import Settings
from permafrost.errors import CatalogUnavailable, StorageError, UsageError
from permafrost.worker.queue import task_labels

blueprint = Blueprint("api", __name__)
PER_PAGE = 50
MAX_PER_PAGE = 200
MAX_PAGE = 1_000_000  # beyond it the offset overflows PostgreSQL's bigint (found by fuzzing)
STATUSES = ("running", "completed", "failed", "deleted")
BACKUP_KINDS = ("logical", "base")
LISTED_KINDS = (*BACKUP_KINDS, "sqlite")  # what /backups filters by (a SQLite file's: run-now
# takes kind logical and its name, as for a database)
MAX_TAG = 200
TIERS = layout.BACKUP_TIERS


def _now() -> datetime:
    return datetime.now(UTC)


@blueprint.get("/health")
def health() -> Any:
    failing = []
    try:
        reads.ping(catalog())
    except CatalogUnavailable as exc:
        stores().forget()
        failing.append(f"metadata store: {exc}")
    try:
        stores().context.storage.check()
    except StorageError as exc:
        failing.append(f"bucket: {exc}")
    if failing:
        return jsonify({"status": "unhealthy", "failing": failing}), 503
    return jsonify({"status": "ok", "metadata_store": "ok", "bucket": "ok"})


@blueprint.get("/status")
def status() -> Any:
    return jsonify(status_json(catalog(), stores().settings, _now()))


def _int_arg(name: str, default: int, maximum: int | None = None) -> int:
    raw = request.args.get(name)
    if raw is None:
        return default
    try:
        value = int(raw)
    except ValueError:
        abort(400, f"{name} must be a whole number")
    if value < 1 or (maximum is not None and value > maximum):
        abort(400, f"{name} must be between 1 and {maximum}" if maximum else f"{name} must be 1+")
    return value


def backup_filters() -> dict[str, str]:
    filters = {}
    for name, allowed in (("tier", TIERS), ("status", STATUSES), ("kind", LISTED_KINDS)):
        value = request.args.get(name, "").strip()
        if value:
            if value not in allowed:
                abort(400, f"{name} must be one of: {', '.join(allowed)}")
            filters[name] = value
    database = request.args.get("database", "").strip()
    if database:
        if not layout.valid_name(database):
            abort(400, "database is not a valid database name")
        filters["database"] = database
    tag = request.args.get("tag", "").strip()
    if tag:
        if len(tag) > MAX_TAG:
            abort(400, f"tag is longer than {MAX_TAG} characters")
        filters["tag"] = tag
    return filters


@blueprint.get("/backups")
def backups() -> Any:
    filters = backup_filters()
    page = _int_arg("page", 1, MAX_PAGE)
    per_page = _int_arg("per_page", PER_PAGE, MAX_PER_PAGE)
    records, total = reads.page_of_backups(catalog(), filters, page, per_page)
    if wants_html():
        return backups_page(records, total, filters, page, per_page)
    return jsonify(
        {
            "backups": [record_json(r) for r in records],
            "total": total,
            "page": page,
            "per_page": per_page,
            "pages": max(1, -(-total // per_page)),
            "filters": filters,
        }
    )


def find_backup(name: str) -> BackupRecord:
    if not layout.valid_backup_id(name):
        abort(400, f"{name!r} is not a backup id (they look like 20261122T020000Z-1a2b3c)")
    record = catalog().get(name)
    if record is None:
        abort(404, f"no backup {name}")
    return record


@blueprint.get("/backup/next-backup")
def next_backup() -> Any:
    settings = stores().settings
    fleet = load_fleet(settings)
    state = collect(catalog(), fleet_databases(catalog(), fleet, settings.source), fleet.owner)
    runs = []
    for db, jobs in state["databases"].items():
        for job, info in jobs.items():
            if info["next_run"]:
                runs.append({"database": db, "job": job, "at": info["next_run"]})
    for job_id, info in state["jobs"].items():
        if job_id.startswith("base_backup") and info["next_run"]:
            runs.append(
                {"database": job_id.partition(":")[2], "job": "base_backup", "at": info["next_run"]}
            )
    runs.sort(key=lambda r: r["at"])
    return jsonify(
        {
            "next": runs[0] if runs else None,
            "runs": runs,
            "scheduler_alive": state["scheduler"]["alive"],
        }
    )


@blueprint.get("/backup/<name>")
def backup(name: str) -> Any:
    record = find_backup(name)
    verifications = catalog().verifications(record.id)
    if wants_html():
        return backup_page(record, verifications)
    body = record_json(record)
    body["row_counts"] = (record.manifest or {}).get("row_counts", [])
    body["verifications"] = [
        {
            "kind": v.kind,
            "status": v.status,
            "started_at": v.started_at.isoformat(),
            "finished_at": v.finished_at.isoformat(),
            "error": v.error,
            "details": v.details,
        }
        for v in verifications
    ]
    body["restore_command"] = restore_command(record)
    return jsonify(body)


def queue(kind: str, payload: dict[str, Any], by: str) -> Response:
    labels = task_labels(stores().settings, kind, payload)  # the workers' limits hold for it
    task_id = catalog().enqueue(kind, payload, by, **labels)
    response = jsonify(
        {
            "task_id": task_id,
            "kind": kind,
            "status": "queued",
            "status_url": url_for("api.task", task_id=task_id),
            **payload,
        }
    )
    response.status_code = 202
    response.headers["Location"] = url_for("api.task", task_id=task_id)
    return response


@blueprint.post("/verify/<name>")
@token_required
def verify(name: str) -> Any:
    record = find_backup(name)
    if record.status != "completed":
        abort(409, f"backup {record.id} is {record.status}: only a completed backup is verified")
    catalog().audit(actor(), "queue-verify", record.id, {"by": api_actor()})
    return queue("verify", {"backup_id": record.id}, api_actor())


@blueprint.post("/restore-test")
@token_required
def restore_test() -> Any:
    body = json_body(("backup_id", "database"))
    name = body.get("backup_id")
    database = body.get("database")
    if name is not None:
        if not isinstance(name, str):
            abort(400, "backup_id must be a string")
        record = find_backup(name)
        if record.kind not in ("logical", "sqlite") or record.status != "completed":
            abort(409, f"backup {record.id} cannot be test-restored (a completed logical one can)")
    else:
        if database is not None and (
            not isinstance(database, str) or not layout.valid_name(database)
        ):
            abort(400, "database must be a valid database name")
        configured = stores().settings.source.backed_up
        if database is None and len(configured) == 1:
            database = configured[0]  # as the CLI's `latest` does: DB_NAME's newest backup
        found = reads.newest_completed(catalog(), database)
        if found is None:
            abort(404, f"no completed backup{' of ' + database if database else ''} to test")
        record = found
    catalog().audit(actor(), "queue-test-restore", record.id, {"by": api_actor()})
    return queue("test_restore", {"backup_id": record.id}, api_actor())


@blueprint.post("/backup/run-now")
@token_required
def run_now() -> Any:
    body = json_body(("database", "kind", "tier"))
    payload: dict[str, Any] = {}
    kind = body.get("kind", "logical")
    if kind not in BACKUP_KINDS:
        abort(400, "kind must be logical or base")
    payload["kind"] = kind
    database = body.get("database")
    if database is not None:
        if not isinstance(database, str) or not layout.valid_name(database):
            abort(400, "database must be a valid database name")
        refused = _unconfigured(kind, database)
        if refused is not None:
            return refused
        payload["database" if kind == "logical" else "cluster"] = database
    tier = body.get("tier", "standard")
    if tier not in ("standard", "compliance"):
        abort(400, "tier must be standard or compliance")
    if kind == "logical":
        payload["tier"] = tier
    catalog().audit(actor(), "queue-backup", database or "all", {"by": api_actor(), **payload})
    return queue("backup", payload, api_actor())


def _unconfigured(kind: str, name: str) -> Any:
    """400 with the configured names for a database (or cluster) no backup is configured for."""
    settings = stores().settings
    try:
        if kind == "logical":
            refuse_unconfigured(settings.source, name, load_fleet(settings))
        elif name not in _clusters(settings):
            raise UsageError(
                f"cluster {name!r} is not configured: the clusters are "
                f"{', '.join(_clusters(settings))}"
            )
    except UsageError as exc:
        configured = list(settings.source.backed_up) if kind == "logical" else _clusters(settings)
        response = jsonify({"error": str(exc), "status": 400, "configured": configured})
        response.status_code = 400
        return response
    return None


def _clusters(settings: Settings) -> list[str]:
    """The clusters base backups are of: each SOURCES_FILE source's `cluster:`, else
    CLUSTER_NAME's."""
    fleet = load_fleet(settings)
    return list(fleet.clusters()) if fleet.from_file else [settings.cluster_name]


def task_json(task: TaskRecord) -> dict[str, Any]:
    return {
        "id": task.id,
        "kind": task.kind,
        "status": task.status,
        "payload": task.payload,
        "requested_by": task.requested_by,
        "created_at": task.created_at.isoformat(),
        "started_at": task.started_at.isoformat() if task.started_at else None,
        "finished_at": task.finished_at.isoformat() if task.finished_at else None,
        "worker": task.worker,
        "attempts": task.attempts,
        "error": task.error,
        "result": task.result,
    }


@blueprint.get("/tasks/<int:task_id>")
def task(task_id: int) -> Any:
    if task_id > 2**62:
        abort(404, f"no task {task_id}")
    found = catalog().task(task_id)
    if found is None:
        abort(404, f"no task {task_id}")
    return jsonify(task_json(found))


def alert_json(row: dict[str, Any]) -> dict[str, Any]:
    out = {k: (v.isoformat() if isinstance(v, datetime) else v) for k, v in row.items()}
    return out


@blueprint.get("/alerts")
def alerts() -> Any:
    cat = catalog()
    active = cat.alerts(active=True)
    recent = cat.alerts(active=False, limit=50)
    sent = cat.notification_log(50)
    if wants_html():
        return alerts_page(active, recent, sent, _now())
    return jsonify(
        {
            "active": [alert_json(a) for a in active],
            "recent": [alert_json(a) for a in recent],
            "notifications": [alert_json(n) for n in sent],
        }
    )


@blueprint.get("/recovery-time")
def recovery_time() -> Any:
    cat = catalog()
    wanted = request.args.get("database")
    if wanted is not None and not layout.valid_name(wanted):
        abort(400, "database is not a valid database name")
    estimates = []
    for row in reads.databases(cat):
        if row["kind"] != "logical" or not row["last_id"] or (wanted and row["database"] != wanted):
            continue
        # The backup a recovery would use, as `permafrost plan` picks it: verified first.
        record = reads.newest_completed(cat, row["database"], verified=True) or cat.get(
            row["last_id"]
        )
        if record is None:
            continue
        rates = cat.restore_rates(record.database) or cat.restore_rates(None)
        rate = statistics.median(rates) if rates else ASSUMED_RATE
        dump = record.dump_bytes or 0
        estimates.append(
            {
                "database": record.database,
                "backup_id": record.id,
                "dump_bytes": dump,
                "estimate_seconds": round(dump / rate, 1),
                "bytes_per_second": round(rate),
                "measured": bool(rates),
                "samples": len(rates),
            }
        )
    if wanted and not estimates:
        abort(404, f"no completed backup of {wanted}")
    return jsonify({"estimates": estimates, "pitr": _drilled(cat)})


def _drilled(cat: Catalog) -> list[dict[str, object]]:
    """Point-in-time recovery as measured: each cluster's newest successful PITR drill."""
    return [
        {"cluster": d.cluster, "measured": True, **drill_facts(d)}
        for d in cat.newest_drills(DrillStatus.SUCCEEDED)
    ]


@blueprint.get("/metrics")
def metrics() -> Any:
    body = metrics_cache.rendered(lambda: prometheus.render(catalog(), stores().settings))
    return Response(body, mimetype=None, content_type=prometheus.CONTENT_TYPE)


@blueprint.get("/openapi.json")
def openapi() -> Any:
    return jsonify(document())
