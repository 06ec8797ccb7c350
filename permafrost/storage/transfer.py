"""Moving large objects: concurrent multipart upload and parallel ranged download.

Both work for any `Storage`, in memory bounded by part size times concurrency, whatever the
object's size. A backend with `StreamingReads` is also read as long ranges, piece by piece
(stream_object): far fewer requests for the same memory.
"""

from __future__ import annotations

import contextlib
import hashlib
import queue
import threading
from collections import deque
from collections.abc import Generator, Iterator
from concurrent.futures import Future, ThreadPoolExecutor

from permafrost.errors import StorageError
from permafrost.storage.base import Storage, StreamingReads

MAX_PARTS = 10_000
PART_GROWTH_EVERY = 1_000


class ObjectWriter:
    """A write-only stream that becomes one object: a single put when small, else multipart.

    Parts upload on a thread pool while the caller keeps writing; at most `concurrency` parts are
    in flight. Any failure aborts the multipart upload, so no partial object is left behind.
    The SHA-256 and size of everything written are available after `close()`.
    """

    def __init__(self, storage: Storage, key: str, *, part_size: int, concurrency: int) -> None:
        self.storage, self.key = storage, key
        self._part_size = part_size
        self._buffer = bytearray()
        self._hash = hashlib.sha256()
        self.size = 0
        self._upload_id: str | None = None
        self._parts: list[tuple[int, str]] = []
        self._futures: deque[Future[tuple[int, str]]] = deque()
        self._slots = threading.Semaphore(concurrency)
        self._pool = ThreadPoolExecutor(concurrency, thread_name_prefix="upload")
        self._closed = False

    @property
    def sha256(self) -> str:
        return self._hash.hexdigest()

    def write(self, data: bytes) -> None:
        self._hash.update(data)
        self.size += len(data)
        self._buffer += data
        while len(self._buffer) >= self._current_part_size():
            self._send_from_buffer(self._current_part_size())

    def close(self) -> None:
        """Finish the object. On failure the upload is aborted and the error raised."""
        try:
            if self._upload_id is None:
                self.storage.put(self.key, bytes(self._buffer))
            else:
                if self._buffer or (not self._parts and not self._futures):
                    self._send_from_buffer(len(self._buffer))
                self._collect(wait_all=True)
                self.storage.complete_multipart(self.key, self._upload_id, self._parts)
            self._buffer.clear()
        except BaseException:
            self.abort()
            raise
        finally:
            self._closed = True
            self._pool.shutdown(wait=True)

    def abort(self) -> None:
        """Give up: cancel queued parts, wait for those in flight, abort the upload."""
        for future in self._futures:
            future.cancel()
        self._pool.shutdown(wait=True, cancel_futures=True)
        if self._upload_id is not None:
            # A lifecycle rule aborts uploads that escape; the original error is what matters.
            with contextlib.suppress(StorageError):
                self.storage.abort_multipart(self.key, self._upload_id)
            self._upload_id = None
        self._closed = True

    def _current_part_size(self) -> int:
        # Parts grow as the object does, so 10,000 parts reach far beyond part_size * 10,000.
        return self._part_size * 2 ** ((len(self._parts) + len(self._futures)) // PART_GROWTH_EVERY)

    def _send_from_buffer(self, size: int) -> None:
        """Upload the first `size` buffered bytes as the next part, once a slot is free."""
        if self._upload_id is None:
            self._upload_id = self.storage.create_multipart(self.key)
        number = len(self._parts) + len(self._futures) + 1
        if number > MAX_PARTS:
            raise StorageError(f"upload of {self.key} would need more than {MAX_PARTS} parts")
        self._collect(wait_all=False)
        # Wait for a slot before copying the part out, so no finished part waits in memory.
        self._slots.acquire()
        with memoryview(self._buffer) as view:
            part = bytes(view[:size])
        del self._buffer[:size]
        future = self._pool.submit(self._upload, number, part)
        future.add_done_callback(lambda _: self._slots.release())
        self._futures.append(future)

    def _upload(self, number: int, part: bytes) -> tuple[int, str]:
        assert self._upload_id is not None
        return number, self.storage.upload_part(self.key, self._upload_id, number, part)

    def _collect(self, *, wait_all: bool) -> None:
        """Record finished parts, raising the first failure."""
        while self._futures and (wait_all or self._futures[0].done()):
            self._parts.append(self._futures.popleft().result())


def read_object(
    storage: Storage, key: str, size: int, *, part_size: int, concurrency: int
) -> Iterator[bytes]:
    """An object's bytes in order, fetched as ranges by threads ahead of the reader."""
    ranges = ((offset, min(part_size, size - offset)) for offset in range(0, size, part_size))
    with ThreadPoolExecutor(concurrency, thread_name_prefix="download") as pool:
        pending: deque[Future[bytes]] = deque()
        try:
            for offset, length in ranges:
                pending.append(pool.submit(storage.get, key, offset, length))
                if len(pending) > concurrency:
                    yield pending.popleft().result()
            while pending:
                yield pending.popleft().result()
        finally:
            for future in pending:
                future.cancel()


def stream_object(
    storage: StreamingReads, key: str, size: int, *, range_size: int, piece: int, concurrency: int
) -> Iterator[bytes]:
    """An object's bytes in order, in pieces: `concurrency` long ranges requested at once, each
    read by its own thread into a buffer of a few pieces (the rest waits in the connection), so
    few requests are made and memory stays near concurrency * AHEAD_PIECES * piece."""
    stop = threading.Event()
    pending: deque[_Ahead] = deque()
    try:
        for offset in range(0, size, range_size):
            length = min(range_size, size - offset)
            pending.append(_Ahead(storage.get_pieces(key, offset, length, piece), stop))
            if len(pending) >= concurrency:
                yield from pending.popleft().drain()
        while pending:
            yield from pending.popleft().drain()
    finally:
        stop.set()  # a thread still reading stops at its next piece


AHEAD_PIECES = 4


class _Ahead:
    """One range's pieces, handed from the thread that reads them to the one that uses them.

    The thread is a daemon: a reader that stops midway (a failed check) and is never closed
    cannot keep the process from exiting; closing it sets `stop`, which ends the thread."""

    _END = object()

    def __init__(self, pieces: Generator[bytes, None, None], stop: threading.Event) -> None:
        self._queue: queue.Queue[object] = queue.Queue(maxsize=AHEAD_PIECES)
        self._stop = stop
        threading.Thread(target=self._fill, args=(pieces,), name="download", daemon=True).start()

    def drain(self) -> Iterator[bytes]:
        while (item := self._queue.get()) is not self._END:
            if isinstance(item, BaseException):
                raise item
            assert isinstance(item, bytes)
            yield item

    def _fill(self, pieces: Generator[bytes, None, None]) -> None:
        try:
            for block in pieces:
                if not self._put(block):
                    return
            self._put(self._END)
        except BaseException as exc:  # handed to the reader, which raises it
            self._put(exc)
        finally:
            pieces.close()  # a range left midway closes its connection

    def _put(self, item: object) -> bool:
        while not self._stop.is_set():
            with contextlib.suppress(queue.Full):
                self._queue.put(item, timeout=0.2)
                return True
        return False
