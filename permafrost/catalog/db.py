"""The metadata store's connection: database errors, translated in one place."""

from __future__ import annotations

import psycopg

from permafrost.errors import CatalogUnavailable
from permafrost.text import first_line


class db_errors:
    """Turn a lost or failing metadata connection into CatalogUnavailable: the one translation.

    `with db_errors("list backups"): ...` around every statement the catalog runs.
    """

    def __init__(self, action: str) -> None:
        self.action = action

    def __enter__(self) -> None:
        return None

    def __exit__(
        self, kind: type[BaseException] | None, exc: BaseException | None, tb: object
    ) -> None:
        if isinstance(exc, psycopg.OperationalError | psycopg.InterfaceError):
            raise CatalogUnavailable(
                f"metadata store failed to {self.action}: {first_line(exc)}"
            ) from exc
