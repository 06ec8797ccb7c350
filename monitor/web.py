"""HTTP helpers shared by the views: who gets HTML, and an error in the form the client reads,
including the page that stands in for every view while the metadata store is down."""

from __future__ import annotations

from datetime import UTC, datetime
from typing import Any

from flask import abort, jsonify, render_template, request

from monitor.alerts.outage import Outage, current
from monitor.stores import stores
from permafrost.config.settings import Settings
from permafrost.text import iso, when


def wants_html() -> bool:
    """A browser asking (text/html preferred); curl's */* and scripts get JSON."""
    best = request.accept_mimetypes.best_match(["application/json", "text/html"])
    return (
        best == "text/html"
        and request.accept_mimetypes["text/html"] > request.accept_mimetypes["application/json"]
    )


def wants_json() -> bool:
    """Whether an error here is answered in JSON: the dashboard's own paths get a page."""
    if request.path == "/" or request.path.startswith(("/ui/", "/static/")):
        return False
    return not wants_html()


def error_response(status: int, message: str) -> Any:
    """The error as JSON ({"error", "status"}) or as the error page."""
    if wants_json():
        response = jsonify({"error": message, "status": status})
        response.status_code = status
        return response
    return render_template("error.html", status=status, message=message), status


def store_down_response(reason: str) -> Any:
    """503 for a lost metadata store: what is down since when, and what still works (the
    bucket, and the commands that read it without the store), as a page or one JSON line."""
    settings = stores().settings
    now = datetime.now(UTC)
    down = _outages(settings, reason, now)
    bucket = stores().bucket_problem()
    line = (
        f"{down[0].what} is unreachable since {when(down[0].since)} ({down[0].error}); "
        + (f"the bucket does not answer either ({bucket})" if bucket else "the bucket answers")
        + f": {' and '.join(f'`{c}`' for c in STILL_WORKING)} work without the store"
    )
    if wants_json():
        response = jsonify(
            {
                "error": line,
                "status": 503,
                "down": [_outage_json(outage) for outage in down],
                "bucket": "unreachable" if bucket else "ok",
            }
        )
        response.status_code = 503
        return response
    page = render_template(
        "outage.html", down=down, bucket=bucket, commands=STILL_WORKING, now=now, line=line
    )
    return page, 503


STILL_WORKING = ("permafrost list", "permafrost restore latest --target-db NEW_NAME")


def _outages(settings: Settings, reason: str, now: datetime) -> list[Outage]:
    """The metadata store first (as the watch saw it, else as this process did), then the
    other outages the watch knows of."""
    known = {o.key: o for o in current(settings)}
    store = known.pop("metadata_unreachable", None)
    if store is None:
        since = stores().down_since or now
        store = Outage(
            "metadata_unreachable", "the metadata store", since, reason, False, "not yet"
        )
    return [store, *known.values()]


def _outage_json(outage: Outage) -> dict[str, Any]:
    return {
        "what": outage.what,
        "since": iso(outage.since),
        "error": outage.error,
        "alerted": outage.announced,
    }


def json_body(allowed: tuple[str, ...]) -> dict[str, Any]:
    """A write's JSON object (empty when there is no body), refusing unknown fields by name."""
    if not request.data:
        return {}
    body = request.get_json(silent=True)
    if not isinstance(body, dict):
        abort(400, "the request body must be a JSON object")
    unknown = sorted(set(body) - set(allowed))
    if unknown:
        abort(400, f"unknown fields {', '.join(unknown)}: this endpoint takes {', '.join(allowed)}")
    # PostgreSQL's text cannot hold NUL: refused here, not a 500 from the metadata store.
    with_nul = sorted(name for name, value in body.items() if "\x00" in str(value))
    if with_nul:
        abort(400, f"{', '.join(with_nul)} must not contain a NUL character")
    return body


def api_actor() -> str:
    """Who made an API write, for the audit log and requested_by."""
    return f"api:{request.remote_addr or 'unknown'}"
