"""What a command works with: settings, the bucket, the repository keys, the catalog.

Each is opened on first use, so `permafrost keygen` touches nothing and `permafrost list`
never proves a key it does not need.
"""

from __future__ import annotations

import contextlib
import logging
from collections.abc import Callable
from functools import cached_property
from typing import TYPE_CHECKING, TypeVar

from permafrost.config.settings import Settings
from permafrost.errors import CatalogUnavailable
from permafrost.repo.config import Repository, open_repository
from permafrost.storage import Storage, open_storage

if TYPE_CHECKING:
    from permafrost.catalog.store import Catalog

log = logging.getLogger("permafrost")
T = TypeVar("T")


class Context:
    def __init__(self, settings: Settings) -> None:
        self.settings = settings
        self._repository: Repository | None = None
        self._catalog: Catalog | None = None
        self._catalog_error: CatalogUnavailable | None = None
        self._warned = False

    @cached_property
    def storage(self) -> Storage:
        return open_storage(self.settings.storage)

    def repository(self, *, create: bool = False) -> Repository:
        if self._repository is None:
            self._repository = open_repository(self.storage, self.settings, create=create)
        return self._repository

    def catalog(self) -> Catalog:
        """The catalog, or CatalogUnavailable (remembered, so one outage is one attempt)."""
        if self._catalog is None:
            if self._catalog_error is not None:
                raise self._catalog_error
            try:
                from permafrost.catalog.store import connect  # psycopg only when needed

                self._catalog = connect(self.settings.metadata_url)
            except CatalogUnavailable as exc:
                self._catalog_error = exc
                raise
        return self._catalog

    def catalog_or_none(self, purpose: str) -> Catalog | None:
        """The catalog, or None after a warning saying what goes without it."""
        try:
            return self.catalog()
        except CatalogUnavailable as exc:
            self._warn(exc, purpose)
            return None

    def _warn(self, exc: CatalogUnavailable, purpose: str) -> None:
        if not self._warned:
            self._warned = True
            log.warning("%s; %s", exc, purpose)

    def record(self, action: Callable[[Catalog], T], purpose: str) -> T | None:
        """Write to the catalog if it answers; otherwise warn once and carry on without it.

        Work that must not fail because the metadata store is down (a backup) records through
        this; the bucket keeps the truth and `catalog sync` catches the catalog up later.
        """
        if self._catalog_error is not None:
            return None
        try:
            return action(self.catalog())
        except CatalogUnavailable as exc:
            self._catalog_error = exc
            self._warn(exc, purpose)
            return None

    @property
    def catalog_lost(self) -> bool:
        """Whether the catalog failed and is remembered as unavailable (see forget_catalog)."""
        return self._catalog_error is not None

    def forget_catalog(self) -> None:
        """Drop the catalog and any remembered outage, so the next use connects afresh
        (a long-running service that has waited out an outage)."""
        with contextlib.suppress(Exception):  # a connection the server dropped may not close
            self.close()
        self._catalog, self._catalog_error, self._warned = None, None, False

    def close(self) -> None:
        if self._catalog is not None:
            self._catalog.close()
