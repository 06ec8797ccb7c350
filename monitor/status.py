"""What `/status` answers: the scheduler, each database's newest backups, WAL, storage, alerts."""

from __future__ import annotations

from datetime import datetime
from typing import Any

from permafrost.backup.sources import fleet_databases
from permafrost.catalog import reads
from permafrost.catalog.schedulers import collect
from permafrost.catalog.store import Catalog
from permafrost.config.fleet import load_fleet
from permafrost.config.settings import Settings


def status_json(catalog: Catalog, settings: Settings, now: datetime) -> dict[str, Any]:
    fleet = load_fleet(settings)
    configured = fleet_databases(catalog, fleet, settings.source)
    state = collect(catalog, configured, fleet.owner)
    per_db = {
        row["database"]: _database_json(row, _next_runs(state, row["database"]), now)
        for row in reads.databases(catalog)
        if row["kind"] in ("logical", "sqlite")  # a database's card: a dump or a SQLite file
    }
    for db in configured:  # configured, and never backed up
        per_db.setdefault(db, _never_backed_up(_next_runs(state, db)))
    return {
        "generated_at": now.isoformat(),
        "scheduler": state["scheduler"],
        "services": state["services"],
        "databases": per_db,
        "jobs": state["jobs"],
        "wal": [_wal_json(w) for w in catalog.wal_status()],
        "storage": _storage_json(catalog.usage()),
        "alerts": state["alerts"],
    }


def _next_runs(state: dict[str, Any], database: str) -> dict[str, Any]:
    return {job: info["next_run"] for job, info in state["databases"].get(database, {}).items()}


def _database_json(row: dict[str, Any], next_runs: dict[str, Any], now: datetime) -> dict[str, Any]:
    finished = row["last_finished"]
    return {
        "last_success": {
            "id": row["last_id"],
            "finished_at": finished.isoformat() if finished else None,
            "age_seconds": round((now - finished).total_seconds()) if finished else None,
            "size_bytes": row["last_size"],
        }
        if row["last_id"]
        else None,
        "last_failure": {
            "id": row["failed_id"],
            "at": row["failed_at"].isoformat(),
            "error": row["failed_error"],
        }
        if row["failed_id"]
        else None,
        "verified_at": row["verified_at"].isoformat() if row["verified_at"] else None,
        "next_runs": next_runs,
    }


def _never_backed_up(next_runs: dict[str, Any]) -> dict[str, Any]:
    return {"last_success": None, "last_failure": None, "verified_at": None, "next_runs": next_runs}


def _wal_json(w: dict[str, Any]) -> dict[str, Any]:
    return {
        "cluster": w["cluster"],
        "last_segment": w["last_segment"],
        "last_archived_at": w["last_archived_at"].isoformat(),
        "lag_seconds": round(float(w["lag_seconds"])),
        "last_error": w["last_error"],
    }


def _storage_json(usage: list[dict[str, Any]]) -> dict[str, dict[str, int]]:
    """Bytes and objects per tier, the databases added up."""
    storage: dict[str, dict[str, int]] = {}
    for u in usage:
        tier = storage.setdefault(u["tier"], {"bytes": 0, "objects": 0})
        tier["bytes"] += int(u["bytes"])
        tier["objects"] += int(u["objects"])
    return storage
