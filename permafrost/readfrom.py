"""Where a command reads a repository from: the primary, a copy named by `--from`, or a copy
when the primary fails.

A copy destination (COPY_STORAGE_URLS) holds the primary's layout: the same permafrost.json
(so the same repository id and keys), the same keys under its own prefix. So a copy is read
as the primary is, through a `CopyContext`: its storage is the copy's, everything else (the
settings, the catalog, which knows the repository by its id) is the primary's. A copy never
needs the primary: with the catalog down too, its backups are listed from its own manifests.

`Reader.read(work)` runs `work` on the primary and, when the primary cannot be reached
(StorageUnavailable) or an object fails its check (IntegrityError: a hash, a chunk, a
truncated object; or an object gone), runs it again on each copy in turn, saying on stderr in
one line which copy and why. Once it has moved to a copy it stays there: every later read of
the same command comes from that copy, never a mix. `restart` undoes what a failed attempt
left (a restore drops and recreates its staging database).
"""

from __future__ import annotations

import argparse
import dataclasses
import sys
from collections.abc import Callable
from functools import cached_property
from typing import TYPE_CHECKING, TypeVar

from permafrost.config.copies import CopyDestination
from permafrost.context import Context
from permafrost.errors import (
    CatalogUnavailable,
    IntegrityError,
    NotFound,
    PermafrostError,
    RowCountMismatch,
    StorageUnavailable,
)
from permafrost.layout import join
from permafrost.storage import Storage, open_storage
from permafrost.storage.ratelimit import limited
from permafrost.text import error_line

if TYPE_CHECKING:
    from permafrost.catalog.store import Catalog

T = TypeVar("T")
READING_FROM_COPY = "reading from copy"  # in each line that says so (pitr repeats wal-fetch's)
Warn = Callable[[str], None]


def falls_back(exc: BaseException) -> bool:
    """Whether a copy may do what the primary failed to: the bucket unreachable, or an object
    missing or failing its check. A row count that differs is the backup's, not the bucket's."""
    if isinstance(exc, RowCountMismatch):
        return False
    return isinstance(exc, StorageUnavailable | IntegrityError | NotFound)


class CopyContext(Context):
    """A copy destination read as the repository: its storage, the primary's catalog."""

    def __init__(
        self, primary: Context, destination: CopyDestination, others: tuple[CopyDestination, ...]
    ) -> None:
        settings = primary.settings
        copies = dataclasses.replace(settings.copies, destinations=others)
        super().__init__(dataclasses.replace(settings, storage=destination.storage, copies=copies))
        self.primary = primary
        self.destination = destination

    @cached_property
    def storage(self) -> Storage:
        return limited(open_storage(self.destination.storage), self.destination.rate_limit)

    @cached_property
    def location(self) -> str:
        return self.destination.storage.location

    def catalog(self) -> Catalog:
        # The same repository (its id is in the copy's permafrost.json): the primary's catalog,
        # scoped by the primary context, and closed by it.
        return self.primary.catalog()

    def _warn(self, exc: CatalogUnavailable, purpose: str) -> None:
        self.primary._warn(exc, purpose)  # one warning per command about the store, not two

    def own_key(self, key: str) -> str:
        """A key the catalog recorded under the primary's prefix, under this copy's."""
        mine, theirs = self.settings.storage.prefix, self.primary.settings.storage.prefix
        if mine == theirs or (mine and key.startswith(mine + "/")):
            return key
        rest = key[len(theirs) + 1 :] if theirs and key.startswith(theirs + "/") else key
        return join(mine, rest) if mine else rest

    def close(self) -> None:
        pass  # the catalog is the primary's


def _stderr(line: str) -> None:
    print(f"permafrost: {line}", file=sys.stderr, flush=True)


class Reader:
    """The repository a command reads: the primary (falling back to each copy in turn), or
    the copy `source` names (--from NAME: that copy alone)."""

    def __init__(self, ctx: Context, source: str | None = None, warn: Warn = _stderr) -> None:
        self.primary, self._warn = ctx, warn
        self.failures: list[str] = []  # what each repository left behind said, in order
        copies = ctx.settings.copies
        if source is None:
            self.ctx: Context = ctx
            self._left = list(copies.destinations)
        else:
            destination = copies.named(source)  # ConfigError naming the known copies
            self.ctx = CopyContext(ctx, destination, ())
            self._left = []
            warn(f"{READING_FROM_COPY} {destination.name} ({destination.storage.location})")

    def details(self) -> dict[str, object]:
        """Where the reads came from, for a verification's or an audit entry's details."""
        found: dict[str, object] = {"read_from": self.copy or "primary"}
        return found | ({"failed": list(self.failures)} if self.failures else {})

    @property
    def copy(self) -> str | None:
        """The copy read from now; None: the primary."""
        return self.ctx.destination.name if isinstance(self.ctx, CopyContext) else None

    def read(self, work: Callable[[Context], T], restart: Callable[[], None] | None = None) -> T:
        while True:
            try:
                return work(self.ctx)
            except PermafrostError as exc:
                if not (falls_back(exc) and self._left):
                    raise
                self._move_on(exc)
            if restart is not None:
                restart()

    def _move_on(self, exc: PermafrostError) -> None:
        failed = f"copy {self.copy}" if self.copy else "the primary repository"
        failed += f" ({self.ctx.location})"
        self.failures.append(f"{failed}: {error_line(exc)}")
        destination = self._left.pop(0)
        self.ctx = CopyContext(self.primary, destination, tuple(self._left))
        self._warn(
            f"{failed} failed: {error_line(exc)}; {READING_FROM_COPY} {destination.name} "
            f"({destination.storage.location}) instead"
        )


def add_from_argument(parser: argparse.ArgumentParser) -> None:
    parser.add_argument(
        "--from",
        dest="read_from",
        metavar="NAME",
        help="read the backup from this copy destination (a name in COPY_STORAGE_URLS) alone; "
        "without it, the primary, falling back to each copy when it fails",
    )
