"""One retry loop for what a client library does not retry itself: a body cut off after the
headers arrived (Azure, GCS), or an SFTP channel lost midway. Only a transient `StorageError`
is tried again; a missing object, an unreachable server and a refusal are final."""

from __future__ import annotations

import time
from collections.abc import Callable
from typing import TypeVar

from permafrost.errors import NotFound, StorageError, StorageUnavailable

T = TypeVar("T")


def with_retries(call: Callable[[], T], attempts: int) -> T:
    """call(), tried again (0.2 s back-off, doubling to 5 s) while it fails transiently."""
    attempt = 1
    while True:
        try:
            return call()
        except StorageError as exc:
            final = exc.permanent or isinstance(exc, NotFound | StorageUnavailable)
            if final or attempt >= attempts:
                raise
            time.sleep(min(0.2 * 2 ** (attempt - 1), 5.0))
            attempt += 1
