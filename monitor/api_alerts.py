"""Acknowledging and silencing alerts: the API's endpoints (bearer token) and the dashboard's
forms (login and CSRF) for the same three acts, each audit-logged with who and why.

    POST   /alerts/KEY/acknowledge  {"reason", "by"}            no more reminders
    POST   /alerts/KEY/silence      {"for" | "until", "reason", "by"}  no message until then
    DELETE /alerts/KEY/silence      {"by"}                      the silence ends now

KEY is an active alert's key (`backup_stale:shop`); what a silence or an acknowledgement does to
the messages is the outbox's (monitor/notify/outbox.py).
"""

from __future__ import annotations

import re
from datetime import UTC, datetime, timedelta
from typing import Any

from flask import Blueprint, abort, flash, jsonify, redirect, request, url_for

from monitor.auth import check_csrf, dashboard_protected, token_required
from monitor.stores import catalog
from monitor.web import api_actor, json_body
from permafrost.audit import actor
from permafrost.config.env import parse_duration
from permafrost.text import iso, one_line, when

blueprint = Blueprint("alert_actions", __name__)

KEY = re.compile(r"[A-Za-z0-9_.:-]{1,200}")
MAX_SILENCE = timedelta(days=90)
REASON_LIMIT = 500
BY_LIMIT = 100
SILENCE_CHOICES = (("1h", "1 hour"), ("4h", "4 hours"), ("24h", "1 day"), ("7d", "1 week"))


# --- what the requests say ----------------------------------------------------------------------


def _checked_key(key: str) -> str:
    if not KEY.fullmatch(key):
        abort(400, f"{one_line(key, 80)!r} is not an alert key (GET /alerts lists them)")
    return key


def _reason(value: Any) -> str:
    if not isinstance(value, str) or not value.strip():
        abort(400, "reason is required: say why, for the audit log and the dashboard")
    if len(value) > REASON_LIMIT:
        abort(400, f"reason is longer than {REASON_LIMIT} characters")
    return one_line(value.strip(), None)


def _by(value: Any, default: str) -> str:
    if value is None or value == "":
        return default
    if not isinstance(value, str) or len(value) > BY_LIMIT:
        abort(400, f"by must be a name of at most {BY_LIMIT} characters")
    return one_line(value.strip(), None)


def silence_end(body: dict[str, Any], now: datetime) -> datetime:
    """When a silence ends: `for` ("2h", "30m", "7d") or `until` (ISO 8601 with a zone)."""
    if ("for" in body) == ("until" in body):
        abort(400, 'give either "for" (a duration such as 2h) or "until" (an ISO 8601 time)')
    if "for" in body:
        seconds = parse_duration(str(body["for"])) if isinstance(body["for"], str | int) else None
        if not seconds:
            abort(400, "for must be a duration such as 90m, 4h or 7d (seconds, m, h or d)")
        end = now + timedelta(seconds=seconds)
    else:
        end = _moment(body["until"])
    if end <= now:
        abort(400, f"the silence would end in the past ({iso(end)}): give a later time")
    if end - now > MAX_SILENCE:
        abort(400, "a silence lasts at most 90 days: acknowledge the alert instead")
    return end


def _moment(value: Any) -> datetime:
    try:
        moment = datetime.fromisoformat(str(value))
    except ValueError:
        abort(400, "until must be an ISO 8601 time such as 2026-12-03T18:00:00Z")
    if moment.tzinfo is None:
        abort(400, "until needs a time zone, such as 2026-12-03T18:00:00Z or +01:00")
    return moment


def _missing(key: str) -> Any:
    abort(404, f"no active alert {key} (GET /alerts lists them)")


def alert_json(row: dict[str, Any]) -> dict[str, Any]:
    return {k: (v.isoformat() if isinstance(v, datetime) else v) for k, v in row.items()}


# --- the API --------------------------------------------------------------------------------------


@blueprint.post("/alerts/<name>/acknowledge")
@token_required
def acknowledge(name: str) -> Any:
    key = _checked_key(name)
    body = json_body(("reason", "by"))
    reason, by = _reason(body.get("reason")), _by(body.get("by"), api_actor())
    row = catalog().acknowledge_alert(key, by, reason, actor())
    return jsonify(alert_json(row)) if row is not None else _missing(key)


@blueprint.post("/alerts/<name>/silence")
@token_required
def silence(name: str) -> Any:
    key = _checked_key(name)
    body = json_body(("for", "until", "reason", "by"))
    until = silence_end(body, datetime.now(UTC))
    reason, by = _reason(body.get("reason")), _by(body.get("by"), api_actor())
    row = catalog().silence_alert(key, until, by, reason, actor())
    return jsonify(alert_json(row)) if row is not None else _missing(key)


@blueprint.delete("/alerts/<name>/silence")
@token_required
def unsilence(name: str) -> Any:
    key = _checked_key(name)
    by = _by(json_body(("by",)).get("by"), api_actor())
    row = catalog().lift_silence(key, by, actor())
    if row is None:
        abort(404, f"no active alert {key} is silenced (GET /alerts lists them)")
    return jsonify(alert_json(row))


# --- the dashboard's forms ----------------------------------------------------------------------


def _form_allowed() -> str:
    if not dashboard_protected():
        abort(403, "dashboard actions are disabled: set DASHBOARD_USER and DASHBOARD_PASSWORD")
    check_csrf()
    auth = request.authorization
    return f"dashboard:{auth.username if auth else 'unknown'}"


def _back() -> Any:
    return redirect(url_for("api.alerts"), code=303)


@blueprint.post("/ui/alerts/<name>/acknowledge")
def ui_acknowledge(name: str) -> Any:
    by = _form_allowed()
    key = _checked_key(name)
    reason = _reason(request.form.get("reason"))
    if catalog().acknowledge_alert(key, by, reason, actor()) is None:
        _missing(key)
    flash(f"Alert {key} acknowledged: no more reminders.")
    return _back()


@blueprint.post("/ui/alerts/<name>/silence")
def ui_silence(name: str) -> Any:
    by = _form_allowed()
    key = _checked_key(name)
    until = silence_end({"for": request.form.get("for", "")}, datetime.now(UTC))
    reason = _reason(request.form.get("reason"))
    if catalog().silence_alert(key, until, by, reason, actor()) is None:
        _missing(key)
    flash(f"Alert {key} silenced until {when(until)}: no email meanwhile.")
    return _back()


@blueprint.post("/ui/alerts/<name>/unsilence")
def ui_unsilence(name: str) -> Any:
    by = _form_allowed()
    key = _checked_key(name)
    if catalog().lift_silence(key, by, actor()) is None:
        abort(404, f"no active alert {key} is silenced")
    flash(f"The silence of {key} is lifted.")
    return _back()
