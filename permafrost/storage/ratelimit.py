"""UPLOAD_RATE_LIMIT: every byte written to one destination shares one budget, in bytes per
second, whichever thread writes it (the concurrent parts of a multipart upload, WAL, manifests).

A wrapper around the backend, as retries are (restic's shape): `limited(storage, rate)` answers
the same protocol, and each write (a whole object, or one part) takes its share of a token
bucket that starts empty and holds no burst: a write of n bytes gets the next n/rate seconds of
the budget, is sent when they begin and is not over before they end. So whatever the
concurrency, an upload of S bytes takes at least S/rate seconds, and about that when the link
is faster; each request itself goes at the link's speed (the rate is kept on average over parts
of UPLOAD_PART_SIZE_MB, not within one). Reads, listings and server-side
copies are not limited. The optional capabilities pass through (`isinstance` sees the
backend's own).
"""

from __future__ import annotations

import contextlib
import threading
import time
from collections.abc import Callable, Iterator
from typing import Any

from permafrost.storage.base import Storage


class TokenBucket:
    """Bytes per second shared by every thread that takes from it."""

    def __init__(self, rate: int, clock: Callable[[], float] = time.monotonic) -> None:
        self.rate, self._clock = rate, clock
        self._lock = threading.Lock()
        self._free_at = clock()

    @contextlib.contextmanager
    def spending(self, count: int) -> Iterator[None]:
        """Send `count` bytes within their share of the budget: the next count/rate seconds
        after what others hold. The sending starts when that share does, and is over no
        earlier than it ends (a failed send gives nothing back: it used the link too)."""
        with self._lock:
            start = max(self._clock(), self._free_at)
            self._free_at = end = start + count / self.rate
        self._sleep_until(start)
        yield
        self._sleep_until(end)

    def _sleep_until(self, moment: float) -> None:
        delay = moment - self._clock()
        if delay > 0:
            time.sleep(delay)


class RateLimitedStorage:
    """A backend whose writes share one TokenBucket; everything else is the backend's own."""

    def __init__(self, inner: Storage, bucket: TokenBucket) -> None:
        self.inner, self.bucket = inner, bucket

    @property
    def url(self) -> str:
        return self.inner.url

    def put(self, key: str, data: bytes, *, if_absent: bool = False) -> None:
        with self.bucket.spending(len(data)):
            self.inner.put(key, data, if_absent=if_absent)

    def upload_part(self, key: str, upload_id: str, number: int, data: bytes) -> str:
        with self.bucket.spending(len(data)):
            return self.inner.upload_part(key, upload_id, number, data)

    def __getattr__(self, name: str) -> Any:
        found = getattr(self.inner, name)  # AttributeError: the backend lacks the capability
        if name == "put_if_none_match":

            def limited_put(key: str, data: bytes) -> None:
                with self.bucket.spending(len(data)):
                    found(key, data)

            return limited_put
        if name == "put_verified":

            def limited_verified(key: str, data: bytes, *, if_absent: bool = False) -> bool:
                with self.bucket.spending(len(data)):
                    return bool(found(key, data, if_absent=if_absent))

            return limited_verified
        return found


def limited(storage: Storage, rate: int) -> Storage:
    """The storage with its writes held to `rate` bytes per second (0: as it is)."""
    if rate <= 0:
        return storage
    return RateLimitedStorage(storage, TokenBucket(rate))
