"""`/doctor`: `permafrost doctor`'s report, a page for a browser and JSON for scripts.

Like the other reads it is open (the page asks for the dashboard's login, as every page does),
so archive_command is not shown, only whether it calls `permafrost wal-push`. The bucket's
permissions are the monitor's own credentials', read only (nothing is written from here): what
reading can tell, held against what the monitor needs.
It connects to the source and the metadata store, so each server gets a short connect timeout
(permafrost.postgres.doctor.TIMEOUT) and one report serves every request for CACHE_SECONDS:
a reload, or many clients, cannot make the dashboard pile connections onto the source.
"""

from __future__ import annotations

import threading
import time
from collections.abc import Callable
from dataclasses import asdict
from typing import Any, TypeVar

from flask import Blueprint, current_app, jsonify, render_template

from monitor.stores import settings, stores
from monitor.web import wants_html
from permafrost.commands import permissions
from permafrost.errors import PermafrostError
from permafrost.postgres.doctor import Store, probe_store
from permafrost.postgres.readiness import Report, calls_wal_push, examine, report_json
from permafrost.sqlite.snapshot import describe_files
from permafrost.text import human_bytes

blueprint = Blueprint("doctor", __name__)
CACHE_SECONDS = 30
_lock = threading.Lock()
T = TypeVar("T")


@blueprint.get("/doctor")
def doctor() -> Any:
    if not settings().source.postgres:
        return _sqlite_only()
    report = _report()
    rights = _cached("permafrost_doctor_permissions", _permissions)
    if wants_html():
        return render_template(
            "doctor.html",
            report=report,
            rights=rights,
            human_bytes=human_bytes,
            calls_wal_push=calls_wal_push,
        )
    return jsonify({**report_json(report, redact=True), "permissions": rights.to_json()})


def _permissions() -> permissions.Permissions:
    """The monitor's credentials, read only: reads tried, writes not (this page writes nothing)."""
    monitor = permissions.Service.MONITOR
    try:
        return permissions.examine(settings(), stores().context.storage, monitor, writes=False)
    except PermafrostError as exc:
        return permissions.Permissions(False, f"not probed: {exc}", [], [], monitor)


def _sqlite_only() -> Any:
    """DATABASE_URL names a SQLite file: no server to examine (never "does not answer"); the
    files and the metadata store, as `permafrost doctor` shows them."""
    files, store = _cached("permafrost_doctor_sqlite", _sqlite_facts)
    problems = [str(f["state"]) for f in files if not f["ok"]]
    if store.configured and not store.reachable:
        problems.append(f"the metadata store does not answer: {store.error}")
    if wants_html():
        return render_template("doctor_sqlite.html", files=files, store=store, problems=problems)
    return jsonify(
        {
            "ok": not problems,
            "problems": problems,
            "source": None,
            "store": asdict(store),
            "sqlite": files,
        }
    )


def _sqlite_facts() -> tuple[list[dict[str, str | bool]], Store]:
    current = settings()
    return describe_files(current.source.sqlite), probe_store(current.metadata_url)


def _cached(name: str, make: Callable[[], T]) -> T:
    """What make() gave, while younger than CACHE_SECONDS (one at a time)."""
    with _lock:
        cached: tuple[float, T] | None = current_app.extensions.get(name)
        if cached is not None and time.monotonic() - cached[0] < CACHE_SECONDS:
            return cached[1]
        value = make()
        current_app.extensions[name] = (time.monotonic(), value)
        return value


def _report() -> Report:
    """The last report when it is younger than CACHE_SECONDS, else a new one (one at a time)."""
    return _cached("permafrost_doctor", lambda: examine(settings()))
