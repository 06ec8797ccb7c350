"""Who may do what: a bearer token for the API's writes, basic auth and CSRF for the dashboard.

- API writes (`POST /verify/…`, `/restore-test`, `/backup/run-now`) need
  `Authorization: Bearer $MONITOR_API_TOKEN`, compared in constant time (401 otherwise). With no
  token configured they are disabled (403 saying so), never open.
- The dashboard, when DASHBOARD_USER and DASHBOARD_PASSWORD are set, asks for them (HTTP basic
  auth). Its buttons post forms that carry a CSRF token bound to the session; they are enabled
  only when the dashboard is protected, since otherwise anyone who can reach it could use them.
"""

from __future__ import annotations

import hmac
import secrets
from collections.abc import Callable
from functools import wraps
from typing import Any, TypeVar

from flask import Response, abort, current_app, request, session

from monitor.stores import settings

F = TypeVar("F", bound=Callable[..., Any])


def _same(given: str, expected: str) -> bool:
    return hmac.compare_digest(given.encode(), expected.encode())


def token_required(view: F) -> F:
    @wraps(view)
    def wrapped(*args: Any, **kwargs: Any) -> Any:
        token = settings().monitor.api_token
        if not token:
            abort(
                403,
                "the API's write endpoints are disabled: set MONITOR_API_TOKEN to enable them",
            )
        header = request.headers.get("Authorization", "")
        scheme, _, given = header.partition(" ")
        if scheme.lower() != "bearer" or not given or not _same(given.strip(), token.reveal()):
            response = current_app.response_class(
                '{"error": "a valid Authorization: Bearer token is required", "status": 401}\n',
                status=401,
                mimetype="application/json",
                headers={"WWW-Authenticate": 'Bearer realm="permafrost"'},
            )
            abort(response)
        return view(*args, **kwargs)

    return wrapped  # type: ignore[return-value]


def dashboard_protected() -> bool:
    monitor = settings().monitor
    return bool(monitor.dashboard_user and monitor.dashboard_password)


def check_dashboard_login() -> Response | None:
    """None when the request may see the dashboard; the 401 challenge otherwise."""
    monitor = settings().monitor
    if not dashboard_protected():
        return None
    auth = request.authorization
    assert monitor.dashboard_user is not None and monitor.dashboard_password is not None
    if (
        auth is not None
        and auth.type == "basic"
        and _same(auth.username or "", monitor.dashboard_user)
        and _same(auth.password or "", monitor.dashboard_password.reveal())
    ):
        return None
    return Response(
        "Sign in to the Permafrost dashboard.\n",
        401,
        {"WWW-Authenticate": 'Basic realm="permafrost", charset="UTF-8"'},
        mimetype="text/plain",
    )


def csrf_token() -> str:
    token = session.get("csrf")
    if not token:
        token = secrets.token_urlsafe(32)
        session["csrf"] = token
    return str(token)


def check_csrf() -> None:
    expected = session.get("csrf")
    given = request.form.get("csrf_token", "")
    if not expected or not given or not _same(given, str(expected)):
        abort(400, "the form's CSRF token is missing or stale: reload the page and try again")
