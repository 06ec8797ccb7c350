"""The reference deployment's `/backup/...` endpoints: create, list, status, cleanup, delete,
restore.

Like the rest of the API, reads are open and writes need the bearer token. A backup and a
restore are queued (the scheduler takes backups, the restore worker restores; the monitor only
observes and asks); cleanup runs retention here, a dry run unless `{"apply": true}`; a deletion
is done here, audit-logged like `permafrost delete`.
"""

from __future__ import annotations

from datetime import UTC, datetime
from typing import Any

from flask import Blueprint, abort, jsonify, request

from monitor import api
from monitor.auth import token_required
from monitor.status import status_json
from monitor.stores import catalog, settings, stores
from monitor.web import api_actor, json_body
from permafrost import layout
from permafrost.audit import actor
from permafrost.catalog import reads
from permafrost.catalog.records import BackupRecord
from permafrost.errors import ObjectLocked, PermafrostError, UsageError
from permafrost.postgres import ddl
from permafrost.postgres import tools as pgtools
from permafrost.retention import apply as retention
from permafrost.retention import deletion
from permafrost.retention.plan import Action

blueprint = Blueprint("api_backup", __name__)
MAX_TAGS = 20
MAX_TEXT = 500
BUSY_KINDS = ("verify", "test_restore", "restore")  # tasks that read a backup's objects


@blueprint.get("/backup/list")
def backup_list() -> Any:
    """The reference deployment's name for `GET /backups` (same filters and pages)."""
    return api.backups()


@blueprint.get("/backup/status")
def backup_status() -> Any:
    """The reference deployment's name for `GET /status`."""
    return jsonify(status_json(catalog(), settings(), datetime.now(UTC)))


@blueprint.post("/backup/create")
@token_required
def create() -> Any:
    body = json_body(("database", "tier", "name", "description", "tags"))
    database = _configured_database(body.get("database"))
    tier = body.get("tier", "standard")
    if tier not in ("standard", "compliance"):
        abort(400, "tier must be standard or compliance")
    description = _text(body, "description")
    tags = _tags(body.get("tags"))
    name = _text(body, "name")
    if name:
        tags = [f"name:{name}", *tags]
    payload = {
        "kind": "logical",
        "database": database,
        "tier": tier,
        "description": description,
        "tags": tags,
    }
    catalog().audit(actor(), "queue-backup", database, {"by": api_actor(), **payload})
    return api.queue("backup", payload, api_actor())


def _configured_database(value: Any) -> str:
    configured = list(settings().source.backed_up)
    if value is None:
        if not configured:
            abort(400, "no database is configured (DB_NAME): name one in database")
        return configured[0]
    if not isinstance(value, str) or not layout.valid_name(value):
        abort(400, "database must be a valid database name")
    if value not in configured:
        abort(400, f"database {value} is not configured; the configured: {', '.join(configured)}")
    return value


def _text(body: dict[str, Any], field: str) -> str:
    value = body.get(field, "")
    if not isinstance(value, str) or len(value) > MAX_TEXT:
        abort(400, f"{field} must be a string of at most {MAX_TEXT} characters")
    return " ".join(value.split())


def _tags(value: Any) -> list[str]:
    if value is None:
        return []
    if (
        not isinstance(value, list)
        or len(value) > MAX_TAGS
        or not all(isinstance(t, str) and 0 < len(t.strip()) <= 100 for t in value)
    ):
        abort(400, f"tags must be a list of at most {MAX_TAGS} non-empty strings")
    return [t.strip() for t in value]


@blueprint.post("/backup/cleanup")
@token_required
def cleanup() -> Any:
    body = json_body(("apply", "database"))
    apply = body.get("apply", False)
    if not isinstance(apply, bool):
        abort(400, "apply must be true or false")
    database = body.get("database")
    if database is not None and (not isinstance(database, str) or not layout.valid_name(database)):
        abort(400, "database must be a valid database name")
    cat, context = catalog(), stores().context
    if apply and not cat.try_lock(retention.RETENTION_LOCK, "bucket"):
        abort(409, "another retention run, pin or unpin is working on the bucket: try again soon")
    try:
        outcome = retention.run(
            settings(),
            context.storage,
            context.repository(),
            cat,
            datetime.now(UTC),
            apply=apply,
            database=database,
        )
    finally:
        if apply:
            cat.unlock(retention.RETENTION_LOCK, "bucket")
    answer = outcome.to_json()
    gone = [d.to_json() for d in outcome.decisions if d.action in (Action.DELETE, Action.RELEASE)]
    answer["deleted" if apply else "would_delete"] = gone
    if apply:
        cat.audit(
            actor(),
            "cleanup",
            database or "all",
            {"by": api_actor(), "deleted": [d["id"] for d in gone]},
        )
    return jsonify(answer)


@blueprint.delete("/backup/<name>")
@token_required
def delete(name: str) -> Any:
    """Delete a backup; one with dependants (incrementals) with them, on `?apply=true` only."""
    record = api.find_backup(name)
    _refuse_if_kept(record)
    context = stores().context
    try:
        doomed = deletion.plan(
            context.repository, record.id, record.database, record.tier, record.kind
        )
    except UsageError as exc:
        abort(409, str(exc))
    listing = [{"id": d.id, "tier": d.tier} for d in doomed]
    if len(doomed) > 1 and request.args.get("apply") != "true":
        error = (
            f"backup {record.id} has {len(doomed) - 1} backups depending on it (incrementals that "
            f"cannot be restored without it): DELETE /backup/{record.id}?apply=true deletes them "
            "too; nothing was deleted"
        )
        return jsonify({"error": error, "would_delete": listing}), 409
    for dependant in doomed[:-1]:
        _refuse_if_busy(dependant.id)
    try:
        done = deletion.carry_out(
            context.storage,
            settings().storage.prefix,
            catalog(),
            actor(),
            doomed,
            {"by": api_actor()},
        )
    except ObjectLocked as exc:  # OBJECT_LOCK: locked or held; nothing was deleted
        abort(409, str(exc))
    asked = done[-1]
    return jsonify({**asked, "status": "deleted", "deleted": [d["id"] for d in done]})


def _refuse_if_kept(record: BackupRecord) -> None:
    """409 for what must not go this way: pinned, in progress, in use by a task."""
    if record.status == "deleted":
        abort(409, f"backup {record.id} is already deleted")
    if record.tier == layout.KEEP_TIER:
        abort(
            409,
            f"backup {record.id} is pinned (in keep/): `permafrost unpin {record.id}` first, "
            "then delete it",
        )
    if record.status == "running":
        abort(409, f"backup {record.id} is still running: wait for it to finish")
    _refuse_if_busy(record.id)


def _refuse_if_busy(backup_id: str) -> None:
    busy = catalog().tasks_on_backup(backup_id, BUSY_KINDS)
    if busy:
        abort(
            409,
            f"backup {backup_id} is locked by task {busy[0]} (a verification or restore "
            "reading it): wait for it to finish",
        )


@blueprint.post("/backup/restore")
@token_required
def restore() -> Any:
    body = json_body(("backup_id", "database", "target_db"))
    target = body.get("target_db")
    if not isinstance(target, str) or not layout.valid_name(target):
        abort(400, "target_db is required: the name of a database that does not exist yet")
    record = _restorable(body.get("backup_id"), body.get("database"))
    if _exists(target):
        abort(
            409,
            f"database {target} already exists on {pgtools.where(settings().source)}: the API "
            "restores only into a new database; choose another target_db",
        )
    payload = {"backup_id": record.id, "target_db": target}
    catalog().audit(actor(), "queue-restore", record.id, {"by": api_actor(), **payload})
    return api.queue("restore", payload, api_actor())


def _restorable(name: Any, database: Any) -> BackupRecord:
    if name is not None:
        if not isinstance(name, str):
            abort(400, "backup_id must be a string")
        record = api.find_backup(name)
    else:
        db = _configured_database(database) if database is None else database
        if not isinstance(db, str) or not layout.valid_name(db):
            abort(400, "database must be a valid database name")
        found = reads.newest_completed(catalog(), db)
        if found is None:
            abort(404, f"no completed backup of {db} to restore")
        record = found
    if record.kind != "logical" or record.status != "completed":
        abort(409, f"backup {record.id} cannot be restored here (a completed logical one can)")
    return record


def _exists(database: str) -> bool:
    source = settings().source
    try:
        with pgtools.connect(source, pgtools.cluster_database(source)) as conn:
            return ddl.database_exists(conn, database)
    except PermafrostError as exc:
        abort(503, f"cannot check whether {database} exists: {exc}")
