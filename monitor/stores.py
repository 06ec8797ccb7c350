"""The stores a request or a thread uses: the settings, a metadata connection, the bucket.

The application factory puts one `Stores` in `app.extensions`; views reach it through
`stores()`, `catalog()` and `settings()` here (as flaskr's views use its db.py), so nothing
imports the factory. A connection is opened per worker thread on first use, checked out
healthy (one `SELECT 1`: a restart of the store leaves a kept connection dead) and opened again
after a failure, so an outage of the metadata store ends when the store is back, and the first
request after a restart succeeds. `down_since` is when this process first found the store down.
"""

from __future__ import annotations

import contextlib
import threading
import time
from datetime import UTC, datetime

from flask import Flask, current_app, g

from permafrost.catalog.reads import close_quietly, healthy
from permafrost.catalog.store import Catalog, connect
from permafrost.config.settings import Settings
from permafrost.context import Context
from permafrost.errors import CatalogUnavailable, PermafrostError
from permafrost.text import one_line

EXTENSION = "permafrost"
BUCKET_CHECK_EVERY = 30.0


class Stores:
    """A metadata connection per thread, and one Context (the bucket) shared by the app."""

    def __init__(self, settings: Settings) -> None:
        self.settings = settings
        self._local = threading.local()
        self.context = Context(settings)
        self.down_since: datetime | None = None
        self._bucket_lock = threading.Lock()
        self._bucket: tuple[float, str | None] | None = None

    def bucket_problem(self) -> str | None:
        """Why the bucket does not answer, or None; checked at most every BUCKET_CHECK_EVERY
        seconds, so the pages of an outage do not each wait out an unreachable bucket too."""
        with self._bucket_lock:
            if self._bucket is None or time.monotonic() - self._bucket[0] > BUCKET_CHECK_EVERY:
                try:
                    self.context.storage.check()
                    problem = None
                except PermafrostError as exc:
                    problem = one_line(exc, 200)
                self._bucket = (time.monotonic(), problem)
            return self._bucket[1]

    def catalog(self) -> Catalog:
        """This thread's connection, checked healthy, or a new one (CatalogUnavailable)."""
        catalog: Catalog | None = getattr(self._local, "catalog", None)
        if catalog is not None and not healthy(catalog):
            close_quietly(catalog)
            catalog = self._local.catalog = None
        if catalog is None:
            try:
                catalog = connect(self.settings.metadata_url)
            except CatalogUnavailable:
                self.down_since = self.down_since or datetime.now(UTC)
                raise
            self.context.scope(catalog)  # the configured repository's backups only
            self._local.catalog = catalog
        self.down_since = None
        return catalog

    def forget(self) -> None:
        """Drop this thread's connection (after a failure): the next use opens a new one."""
        self.down_since = self.down_since or datetime.now(UTC)
        catalog = getattr(self._local, "catalog", None)
        if catalog is not None:
            with contextlib.suppress(Exception):
                catalog.close()
        self._local.catalog = None


def install(app: Flask, settings: Settings) -> None:
    app.extensions[EXTENSION] = Stores(settings)


def stores(app: Flask | None = None) -> Stores:
    """The application's stores (the current application's, in a request)."""
    found: Stores = (app or current_app).extensions[EXTENSION]
    return found


def catalog() -> Catalog:
    """The metadata store, for this request."""
    if "catalog" not in g:
        g.catalog = stores().catalog()
    found: Catalog = g.catalog
    return found


def settings() -> Settings:
    return stores().settings
