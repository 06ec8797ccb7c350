"""The monitor: `create_app(settings)`, the Flask application behind gunicorn.

It serves the dashboard (server-rendered HTML), the JSON API, `/metrics` and `/openapi.json`,
and runs the alert evaluator. It reads the metadata store through one connection per worker
thread, opened on first use and opened again after a failure, so an outage of the store is a
503 that ends when the store is back, not a dead worker.
"""

from __future__ import annotations

import contextlib
import hashlib
import hmac
import logging
import secrets
import threading
from typing import Any

from flask import Flask, g, jsonify, request
from werkzeug.exceptions import HTTPException

from permafrost.catalog.store import Catalog, connect
from permafrost.config.settings import Settings
from permafrost.context import Context
from permafrost.errors import CatalogUnavailable, PermafrostError

log = logging.getLogger("permafrost.monitor")


class Stores:
    """A metadata connection per thread, and one Context (the bucket) shared by the app."""

    def __init__(self, settings: Settings) -> None:
        self.settings = settings
        self._local = threading.local()
        self.context = Context(settings)

    def catalog(self) -> Catalog:
        catalog: Catalog | None = getattr(self._local, "catalog", None)
        if catalog is None or catalog.conn.closed:
            catalog = connect(self.settings.metadata_url)
            self._local.catalog = catalog
        return catalog

    def forget(self) -> None:
        catalog = getattr(self._local, "catalog", None)
        if catalog is not None:
            with contextlib.suppress(Exception):
                catalog.close()
        self._local.catalog = None


def create_app(settings: Settings, *, evaluate: bool = True) -> Flask:
    from monitor import api, dashboard

    app = Flask(__name__)
    app.config["SECRET_KEY"] = _secret_key(settings)
    app.config["MAX_CONTENT_LENGTH"] = 64 * 1024  # no request here needs more
    app.json.sort_keys = False  # type: ignore[attr-defined]
    app.extensions["permafrost"] = Stores(settings)
    app.register_blueprint(api.blueprint)
    app.register_blueprint(dashboard.blueprint)

    @app.errorhandler(CatalogUnavailable)
    def _store_down(exc: CatalogUnavailable) -> Any:
        stores(app).forget()
        return _error(503, f"the metadata store is unavailable: {exc}")

    @app.errorhandler(PermafrostError)
    def _expected(exc: PermafrostError) -> Any:
        return _error(400, str(exc))

    @app.errorhandler(HTTPException)
    def _http(exc: HTTPException) -> Any:
        return _error(exc.code or 500, exc.description or exc.name)

    @app.errorhandler(Exception)
    def _unexpected(exc: Exception) -> Any:
        if isinstance(exc, CatalogUnavailable):
            return _store_down(exc)
        from monitor.queries import is_connection_error

        if is_connection_error(exc):
            stores(app).forget()
            return _error(503, "the metadata store connection failed; try again")
        log.exception("unexpected error on %s", request.path)
        return _error(500, f"internal error ({type(exc).__name__}); see the monitor's log")

    @app.after_request
    def _headers(response: Any) -> Any:
        response.headers.setdefault("X-Content-Type-Options", "nosniff")
        response.headers.setdefault("X-Frame-Options", "DENY")
        response.headers.setdefault("Referrer-Policy", "same-origin")
        response.headers.setdefault(
            "Content-Security-Policy",
            "default-src 'self'; img-src 'self' data:; style-src 'self'; script-src 'self'",
        )
        return response

    if evaluate:
        _start_evaluator(app, settings)
    return app


def stores(app: Flask | None = None) -> Stores:
    from flask import current_app

    target = app or current_app
    found: Stores = target.extensions["permafrost"]
    return found


def catalog() -> Catalog:
    if "catalog" not in g:
        g.catalog = stores().catalog()
    found: Catalog = g.catalog
    return found


def _error(status: int, message: str) -> Any:
    if _wants_json():
        response = jsonify({"error": message, "status": status})
        response.status_code = status
        return response
    from flask import render_template

    return render_template("error.html", status=status, message=message), status


def wants_html() -> bool:
    """A browser asking (text/html preferred); curl's */* and scripts get JSON."""
    best = request.accept_mimetypes.best_match(["application/json", "text/html"])
    return (
        best == "text/html"
        and request.accept_mimetypes["text/html"] > request.accept_mimetypes["application/json"]
    )


def _wants_json() -> bool:
    if request.path == "/" or request.path.startswith(("/ui/", "/static/")):
        return False
    return not wants_html()


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
    try:
        from monitor.alerts import Evaluator
    except ImportError:  # pragma: no cover - while the evaluator is being written
        return
    evaluator = Evaluator(settings)
    evaluator.start()
    app.extensions["permafrost_evaluator"] = evaluator
