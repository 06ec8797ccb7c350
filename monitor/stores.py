"""The stores a request or a thread uses: the settings, a metadata connection, the bucket.

The application factory puts one `Stores` in `app.extensions`; views reach it through
`stores()`, `catalog()` and `settings()` here (as flaskr's views use its db.py), so nothing
imports the factory. A connection is opened per worker thread on first use and opened again
after a failure, so an outage of the metadata store ends when the store is back.
"""

from __future__ import annotations

import contextlib
import threading

from flask import Flask, current_app, g

from permafrost.catalog.store import Catalog, connect
from permafrost.config.settings import Settings
from permafrost.context import Context

EXTENSION = "permafrost"


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
            self.context.scope(catalog)  # the configured repository's backups only
            self._local.catalog = catalog
        return catalog

    def forget(self) -> None:
        """Drop this thread's connection (after a failure): the next use opens a new one."""
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
