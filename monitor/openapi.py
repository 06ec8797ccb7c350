"""The OpenAPI 3.1 document at /openapi.json: every endpoint, its parameters and answers."""

from __future__ import annotations

from typing import Any

from permafrost import __version__

_ID = {
    "name": "name",
    "in": "path",
    "required": True,
    "schema": {"type": "string", "pattern": "^[0-9]{8}T[0-9]{6}Z-[0-9a-f]{6}$"},
    "description": "a backup id",
}
_ERR = {
    "description": "an error",
    "content": {"application/json": {"schema": {"$ref": "#/components/schemas/Error"}}},
}
_JSON = {"application/json": {"schema": {"type": "object"}}}


def _ok(description: str) -> dict[str, Any]:
    return {"description": description, "content": _JSON}


def _write(summary: str, body: dict[str, Any] | None = None) -> dict[str, Any]:
    op: dict[str, Any] = {
        "summary": summary,
        "security": [{"bearer": []}],
        "responses": {
            "202": _ok("queued: the task id and its status URL"),
            "400": _ERR,
            "401": _ERR,
            "403": _ERR,
            "404": _ERR,
            "409": _ERR,
            "503": _ERR,
        },
    }
    if body is not None:
        op["requestBody"] = {"required": False, "content": {"application/json": {"schema": body}}}
    return op


def _read(summary: str, params: list[dict[str, Any]] | None = None) -> dict[str, Any]:
    return {
        "summary": summary,
        "parameters": params or [],
        "responses": {"200": _ok(summary), "400": _ERR, "404": _ERR, "503": _ERR},
    }


def _query(name: str, schema: dict[str, Any], description: str) -> dict[str, Any]:
    return {
        "name": name,
        "in": "query",
        "required": False,
        "schema": schema,
        "description": description,
    }


def _alert_write(summary: str, body: dict[str, Any]) -> dict[str, Any]:
    key = {
        "name": "name",
        "in": "path",
        "required": True,
        "schema": {"type": "string", "pattern": "^[A-Za-z0-9_.:-]{1,200}$"},
        "description": "an active alert's key, such as backup_stale:shop",
    }
    codes = {code: _ERR for code in ("400", "401", "403", "404", "503")}
    return {
        "summary": summary,
        "security": [{"bearer": []}],
        "parameters": [key],
        "requestBody": {"required": False, "content": {"application/json": {"schema": body}}},
        "responses": {"200": _ok("the alert as it now is"), **codes},
    }


def _alert_paths() -> dict[str, Any]:
    """Acknowledging and silencing an alert (monitor/api_alerts.py)."""
    text = {"type": "string", "maxLength": 500}
    by = {"type": "string", "maxLength": 100, "description": "who (default api:ADDRESS)"}
    return {
        "/alerts/{name}/acknowledge": {
            "post": _alert_write(
                "acknowledge an active alert: no more reminders; audit-logged",
                {
                    "type": "object",
                    "required": ["reason"],
                    "properties": {"reason": text, "by": by},
                },
            )
        },
        "/alerts/{name}/silence": {
            "post": _alert_write(
                "silence an active alert until a time (at most 90 days): no email meanwhile",
                {
                    "type": "object",
                    "required": ["reason"],
                    "properties": {
                        "for": {"type": "string", "description": "a duration: 90m, 4h, 7d"},
                        "until": {"type": "string", "format": "date-time"},
                        "reason": text,
                        "by": by,
                    },
                },
            ),
            "delete": _alert_write(
                "lift an alert's silence now", {"type": "object", "properties": {"by": by}}
            ),
        },
    }


def document() -> dict[str, Any]:
    name = {"type": "string", "pattern": "^[A-Za-z0-9_][A-Za-z0-9_.-]{0,62}$"}
    return {
        "openapi": "3.1.0",
        "info": {
            "title": "Permafrost monitor",
            "version": __version__,
            "description": "Backups, their state, verification and alerts. Reads are open; "
            "writes need Authorization: Bearer MONITOR_API_TOKEN.",
        },
        "components": {
            "securitySchemes": {"bearer": {"type": "http", "scheme": "bearer"}},
            "schemas": {
                "Error": {
                    "type": "object",
                    "required": ["error", "status"],
                    "properties": {"error": {"type": "string"}, "status": {"type": "integer"}},
                }
            },
        },
        "paths": {
            "/health": {
                "get": {
                    "summary": "the metadata store and the bucket answer",
                    "responses": {"200": _ok("healthy"), "503": _ok("what fails")},
                }
            },
            "/status": {
                "get": _read(
                    "per database: last success and its age, last failure, "
                    "next runs, scheduler, WAL lag, storage, active alerts"
                )
            },
            "/backups": {
                "get": _read(
                    "backups, newest first, paginated",
                    [
                        _query(
                            "page",
                            {"type": "integer", "minimum": 1, "maximum": 1000000},
                            "page number",
                        ),
                        _query(
                            "per_page",
                            {"type": "integer", "minimum": 1, "maximum": 200},
                            "page size",
                        ),
                        _query("database", name, "only this database"),
                        _query(
                            "tier", {"enum": ["standard", "compliance", "keep", "base"]}, "tier"
                        ),
                        _query(
                            "status",
                            {"enum": ["running", "completed", "failed", "deleted"]},
                            "status (default: all but deleted)",
                        ),
                        _query("kind", {"enum": ["logical", "base", "sqlite"]}, "kind"),
                        _query(
                            "tag",
                            {"type": "string", "minLength": 1, "maxLength": 200},
                            "only backups with this tag",
                        ),
                    ],
                )
            },
            "/backup/{name}": {
                "get": _read(
                    "one backup: record, row counts, verifications, the restore command", [_ID]
                ),
                "delete": {
                    **_answered(
                        _write(
                            "delete a backup (409 for a pinned, running or busy one, or for "
                            "one with dependant incrementals without apply=true: they are "
                            "listed in would_delete)"
                        ),
                        "200",
                        "deleted: the objects removed, and the ids deleted",
                    ),
                    "parameters": [
                        _ID,
                        _query(
                            "apply",
                            {"enum": ["true", "false"]},
                            "true: also delete the incrementals that depend on it",
                        ),
                    ],
                },
            },
            "/backup/next-backup": {"get": _read("the next scheduled backup runs")},
            "/backup/run-now": {
                "post": _write(
                    "queue a backup for the scheduler",
                    {
                        "type": "object",
                        "properties": {
                            "database": name,
                            "kind": {"enum": ["logical", "base"]},
                            "tier": {"enum": ["standard", "compliance"]},
                        },
                    },
                )
            },
            "/verify/{name}": {
                "post": {**_write("queue an integrity verification"), "parameters": [_ID]}
            },
            "/restore-test": {
                "post": _write(
                    "queue a test restore of the newest or a named backup",
                    {
                        "type": "object",
                        "properties": {"backup_id": {"type": "string"}, "database": name},
                    },
                )
            },
            "/tasks/{id}": {
                "get": _read(
                    "a queued task and its result",
                    [
                        {
                            "name": "id",
                            "in": "path",
                            "required": True,
                            "schema": {"type": "integer", "minimum": 1},
                        }
                    ],
                )
            },
            "/alerts": {
                "get": _read("active and recently resolved alerts, and the notifications sent")
            },
            **_alert_paths(),
            "/recovery-time": {
                "get": _read(
                    "the estimated time to restore the newest backup; `pitr`: each cluster's "
                    "newest successful PITR drill (recovery, download and replay seconds, RPO)",
                    [_query("database", name, "only this database")],
                )
            },
            "/metrics": {
                "get": {
                    "summary": "Prometheus metrics",
                    "responses": {
                        "200": {
                            "description": "text exposition format",
                            "content": {"text/plain": {"schema": {"type": "string"}}},
                        },
                        "503": _ERR,
                    },
                }
            },
            "/doctor": {
                "get": _read(
                    "permafrost doctor: the source, the metadata store, the programs each job "
                    "runs, and per feature ready or what is missing (cached 30 s)"
                )
            },
            "/window": {
                "get": _read(
                    "will tonight's backups fit in BACKUP_WINDOW: when they finish, which miss "
                    "it, and how many workers would fit them (as `permafrost plan window`)",
                    [
                        _query(
                            "workers",
                            {"type": "integer", "minimum": 1, "maximum": 1000},
                            "workers to simulate (default 1)",
                        )
                    ],
                )
            },
            "/openapi.json": {"get": _read("this document")},
            **_backup_paths(name),
        },
    }


def _answered(op: dict[str, Any], code: str, description: str) -> dict[str, Any]:
    """A write that answers at once (200) instead of queueing (202)."""
    responses = {k: v for k, v in op["responses"].items() if k != "202"}
    return {**op, "responses": {code: _ok(description), **responses}}


def _backup_paths(name: dict[str, Any]) -> dict[str, Any]:
    """The reference deployment's /backup/... endpoints (monitor/api_backup.py)."""
    text = {"type": "string", "maxLength": 500}
    return {
        "/backup/list": {"get": _read("backups, newest first (the same as /backups)")},
        "/backup/status": {"get": _read("the same as /status")},
        "/backup/create": {
            "post": _write(
                "queue a logical backup now, with an optional name, description and tags",
                {
                    "type": "object",
                    "properties": {
                        "database": name,
                        "tier": {"enum": ["standard", "compliance"]},
                        "name": text,
                        "description": text,
                        "tags": {"type": "array", "items": {"type": "string"}, "maxItems": 20},
                    },
                },
            )
        },
        "/backup/cleanup": {
            "post": _answered(
                _write(
                    "retention: what would be deleted, or with apply what was",
                    {
                        "type": "object",
                        "properties": {"apply": {"type": "boolean"}, "database": name},
                    },
                ),
                "200",
                "the retention plan or its outcome; would_delete or deleted",
            )
        },
        "/backup/restore": {
            "post": _write(
                "queue a restore into a database that does not exist yet (409 when it does)",
                {
                    "type": "object",
                    "required": ["target_db"],
                    "properties": {
                        "backup_id": {"type": "string"},
                        "database": name,
                        "target_db": name,
                    },
                },
            )
        },
    }
