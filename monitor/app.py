"""The monitor: `create_app(settings)`, the Flask application behind gunicorn.

It serves the dashboard (server-rendered HTML), the JSON API, `/metrics` and `/openapi.json`,
and runs the alert evaluator. The views reach the metadata store and the bucket through
monitor/stores.py; nothing imports this module but the entry points (wsgi.py, cli.py).
An outage of the store is a 503 that ends when the store is back, not a dead worker: the page
says what is down since when and what still works, and the outage watch emails about it.
"""

from __future__ import annotations

import hashlib
import hmac
import logging
import secrets
from typing import Any

from flask import Flask, abort, request
from werkzeug.exceptions import HTTPException

from monitor import api, api_alerts, api_backup, dashboard, doctor, metrics_cache, stores, window
from monitor.alerts.evaluator import Evaluator
from monitor.alerts.outage import OutageWatch
from monitor.web import error_response, store_down_response
from permafrost.catalog.reads import is_connection_error
from permafrost.config.settings import Settings
from permafrost.errors import CatalogUnavailable, PermafrostError

log = logging.getLogger("permafrost.monitor")

SECURITY_HEADERS = {
    "X-Content-Type-Options": "nosniff",
    "X-Frame-Options": "DENY",
    "Referrer-Policy": "same-origin",
    "Content-Security-Policy": (
        "default-src 'self'; img-src 'self' data:; style-src 'self'; script-src 'self'"
    ),
}


def create_app(settings: Settings, *, evaluate: bool = True) -> Flask:
    app = Flask(__name__)
    app.config["SECRET_KEY"] = _secret_key(settings)
    app.config["MAX_CONTENT_LENGTH"] = 64 * 1024  # no request here needs more
    app.json.sort_keys = False  # type: ignore[attr-defined]
    stores.install(app, settings)
    metrics_cache.install(app, settings.monitor.metrics_cache_seconds)
    app.register_blueprint(api.blueprint)
    app.register_blueprint(api_alerts.blueprint)
    app.register_blueprint(api_backup.blueprint)
    app.register_blueprint(dashboard.blueprint)
    app.register_blueprint(doctor.blueprint)
    app.register_blueprint(window.blueprint)
    _handle_errors(app)
    app.before_request(_refuse_nul_in_query)
    app.after_request(_security_headers)
    if evaluate:
        _start_evaluator(app, settings)
    return app


def _handle_errors(app: Flask) -> None:
    @app.errorhandler(CatalogUnavailable)
    def _store_down(exc: CatalogUnavailable) -> Any:
        stores.stores(app).forget()
        return store_down_response(str(exc))

    @app.errorhandler(PermafrostError)
    def _expected(exc: PermafrostError) -> Any:
        return error_response(400, str(exc))

    @app.errorhandler(HTTPException)
    def _http(exc: HTTPException) -> Any:
        return error_response(exc.code or 500, exc.description or exc.name)

    @app.errorhandler(Exception)
    def _unexpected(exc: Exception) -> Any:
        if isinstance(exc, CatalogUnavailable):
            return _store_down(exc)
        if is_connection_error(exc):
            stores.stores(app).forget()
            return store_down_response("the metadata store connection failed")
        log.exception("unexpected error on %s", request.path)
        return error_response(500, f"internal error ({type(exc).__name__}); see the monitor's log")


def _refuse_nul_in_query() -> None:
    """PostgreSQL's text cannot hold NUL: a query parameter with one (a filter such as
    /backups?tag=) is refused with a 400 here, not a 500 from the metadata store (json_body
    does the same for request bodies)."""
    with_nul = sorted(
        {
            name.replace("\x00", "\\0")
            for name, value in request.args.items(multi=True)
            if "\x00" in name + value
        }
    )
    if with_nul:
        abort(400, f"{', '.join(with_nul)} must not contain a NUL character")


def _security_headers(response: Any) -> Any:
    for name, value in SECURITY_HEADERS.items():
        response.headers.setdefault(name, value)
    return response


def _secret_key(settings: Settings) -> bytes:
    """The same in every worker (CSRF tokens must verify in any of them), secret, derived."""
    for secret in (
        settings.monitor.api_token,
        settings.monitor.dashboard_password,
        settings.encryption_key,
    ):
        if secret:
            return hmac.new(
                secret.reveal().encode(), b"permafrost dashboard", hashlib.sha256
            ).digest()
    return secrets.token_bytes(32)


def _start_evaluator(app: Flask, settings: Settings) -> None:
    watch = OutageWatch(settings)  # without the metadata store: its own outage, the source's
    watch.start()
    app.extensions["permafrost_outage"] = watch
    evaluator = Evaluator(settings)
    evaluator.start()
    app.extensions["permafrost_evaluator"] = evaluator
