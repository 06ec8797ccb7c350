"""`/doctor`: `permafrost doctor`'s report, a page for a browser and JSON for scripts.

Like the other reads it is open (the page asks for the dashboard's login, as every page does),
so archive_command is not shown, only whether it calls `permafrost wal-push`.
It connects to the source and the metadata store, so each server gets a short connect timeout
(permafrost.postgres.doctor.TIMEOUT) and one report serves every request for CACHE_SECONDS:
a reload, or many clients, cannot make the dashboard pile connections onto the source.
"""

from __future__ import annotations

import threading
import time
from typing import Any

from flask import Blueprint, current_app, jsonify, render_template

from monitor.stores import settings
from monitor.web import wants_html
from permafrost.postgres.readiness import Report, calls_wal_push, examine, report_json
from permafrost.text import human_bytes

blueprint = Blueprint("doctor", __name__)
CACHE_SECONDS = 30
_lock = threading.Lock()


@blueprint.get("/doctor")
def doctor() -> Any:
    report = _report()
    if wants_html():
        return render_template(
            "doctor.html", report=report, human_bytes=human_bytes, calls_wal_push=calls_wal_push
        )
    return jsonify(report_json(report, redact=True))


def _report() -> Report:
    """The last report when it is younger than CACHE_SECONDS, else a new one (one at a time)."""
    with _lock:
        cached: tuple[float, Report] | None = current_app.extensions.get("permafrost_doctor")
        if cached is not None and time.monotonic() - cached[0] < CACHE_SECONDS:
            return cached[1]
        report = examine(settings())
        current_app.extensions["permafrost_doctor"] = (time.monotonic(), report)
        return report
