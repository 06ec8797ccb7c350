"""What a command works with: settings, the bucket, the repository keys, the catalog.

Each is opened on first use, so `permafrost keygen` touches nothing and `permafrost list`
never proves a key it does not need. The catalog is scoped to the configured repository (the one
STORAGE_URL opens): its lookups see only that repository's backups and WAL.

`ctx.as_of(TIME)` is the same, reading the bucket as it was then (`AsOfContext`, over
storage/asof.py): read only, its lookups from the bucket's manifests, never the catalog.
"""

from __future__ import annotations

import contextlib
import logging
from collections.abc import Callable
from datetime import datetime
from functools import cached_property
from typing import TYPE_CHECKING, TypeVar

from permafrost.config.settings import Settings
from permafrost.errors import CatalogUnavailable, NotFound
from permafrost.repo.config import Repository, open_repository
from permafrost.storage import Storage, open_storage
from permafrost.storage.asof import as_of
from permafrost.storage.lock import policy as lock_policy
from permafrost.storage.ratelimit import limited
from permafrost.text import parse_moment

if TYPE_CHECKING:
    from permafrost.catalog.store import Catalog

log = logging.getLogger("permafrost")
T = TypeVar("T")


class Context:
    reads_bucket = False  # lookups may ask the catalog (AsOfContext: never)
    moment: datetime | None = None  # AsOfContext: the moment the bucket is read as of

    def __init__(self, settings: Settings) -> None:
        self.settings = settings
        self._repository: Repository | None = None
        self._catalog: Catalog | None = None
        self._catalog_error: CatalogUnavailable | None = None
        self._warned = False

    @cached_property
    def storage(self) -> Storage:
        # UPLOAD_RATE_LIMIT: every write to the primary shares one budget (storage/ratelimit.py)
        return limited(
            open_storage(self.settings.storage, lock_policy(self.settings)),
            self.settings.copies.upload_rate_limit,
        )

    @cached_property
    def location(self) -> str:
        """Where STORAGE_URL points, as the catalog remembers where each repository is."""
        return self.settings.storage.location

    def own_key(self, key: str) -> str:
        """A key as the catalog recorded it, in this context's bucket (a copy: readfrom.py)."""
        return key

    def repository(self, *, create: bool = False, init: bool = False) -> Repository:
        """The repository at STORAGE_URL. create: a write's opening, which makes one where there
        is none unless the catalog knows another for this deployment (init: make it anyway)."""
        if self._repository is None:
            guard = None if init or not create else self._refuse_another
            self._repository = open_repository(
                self.storage, self.settings, create=create or init, before_create=guard
            )
            if create or init or self._catalog is not None:
                self._remember(self._repository, adopt_first=not init)
        return self._repository

    def _refuse_another(self) -> None:
        """A backup never makes a new repository where the catalog knows another one."""
        try:
            known = self.catalog().known_repository()
        except CatalogUnavailable as exc:
            # Said here, and the work's own warning about the store still follows.
            log.warning("%s; making the repository without asking the catalog for another", exc)
            return
        if known is None:
            return  # a new deployment: its first backup makes its repository
        other = (
            f"repository {known.id} at {known.location}"
            if known.id
            else "the backups of another repository"
        )
        raise NotFound(
            f"no Permafrost repository at {self.location}, but this deployment's catalog knows "
            f"{other}: check STORAGE_URL, or run `permafrost init` to create a new repository "
            "there"
        )

    def _remember(self, repo: Repository, *, adopt_first: bool) -> None:
        """Tell the catalog where this repository is, adopt the rows recorded before it had an
        id, and scope the catalog to it."""
        if not repo.id:
            return  # made before ids and opened by a read: its rows are the old ones

        def note(catalog: Catalog) -> None:
            known = catalog.known_repository()
            first = known is None or not known.id
            catalog.register_repository(repo.id, self.location)
            if repo.id_assigned or (adopt_first and first):
                adopted = catalog.adopt(repo.id)
                log.info("repository %s adopted %d catalogued backups", repo.id, adopted)
            catalog.scope(repo.id)

        self.record(note, "the catalog learns of this repository with the next write")

    def as_of(self, moment: str | None) -> Context:
        """This context, or, given a moment (--as-of), the repository as it was then."""
        if moment is None:
            return self
        return AsOfContext(self, parse_moment(moment, "--as-of"))

    def writer(self) -> Context:
        """Where a write goes (a restore's safety backup): the live repository."""
        return self

    def catalog(self) -> Catalog:
        """The catalog, or CatalogUnavailable (remembered, so one outage is one attempt)."""
        if self._catalog is None:
            if self._catalog_error is not None:
                raise self._catalog_error
            try:
                from permafrost.catalog.store import connect  # psycopg only when needed

                catalog = connect(self.settings.metadata_url)
                try:
                    self.scope(catalog)
                except CatalogUnavailable:
                    with contextlib.suppress(Exception):  # a connection lost already
                        catalog.close()
                    raise
            except CatalogUnavailable as exc:
                self._catalog_error = exc
                raise
            self._catalog = catalog
        return self._catalog

    def scope(self, catalog: Catalog) -> None:
        """Lookups see the configured repository: the one opened, else the one last seen at
        STORAGE_URL's location (none: only rows from before repository ids)."""
        if self._repository is not None:
            catalog.scope(self._repository.id or None)
        else:
            catalog.scope_to_location(self.location)

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


class AsOfContext(Context):
    """The repository as it was at a moment, from a versioned bucket's old versions: read only.

    Lookups read the manifests from the bucket, not the catalog, which an attacker who deleted
    backups may have changed too. The catalog is still the live one's, for what a command
    records (the audit log), and a write (a safety backup) goes to the live repository."""

    reads_bucket = True

    def __init__(self, live: Context, moment: datetime) -> None:
        super().__init__(live.settings)
        self.live = live
        self.moment = self._at = moment

    @cached_property
    def storage(self) -> Storage:
        return as_of(self.live.storage, self.live.storage.url, self._at)

    def writer(self) -> Context:
        return self.live

    def catalog(self) -> Catalog:
        return self.live.catalog()
