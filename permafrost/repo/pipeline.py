"""The streaming pipeline: bytes → zstd → encryption → object, and back again.

Every stage works on bounded pieces, so memory does not grow with the size of the database:
zstd compresses on its own threads, AES-GCM seals 1 MiB chunks, and the object writer uploads
parts concurrently while the next ones are being produced.
"""

from __future__ import annotations

import hashlib
import itertools
from collections.abc import Callable, Iterable, Iterator
from dataclasses import dataclass
from typing import Any

import zstandard

from permafrost import errors
from permafrost.repo import crypto
from permafrost.storage.transfer import ObjectWriter

READ_SIZE = 1024 * 1024
# zstd's default job is several times its window; each worker holds one in and one out. 4 MiB
# jobs keep two workers busy for a third of the memory (measured: bench/backup.py).
ZSTD_JOB_SIZE = 4 * 1024 * 1024


@dataclass(frozen=True)
class SealedStats:
    plain_bytes: int
    plain_sha256: str
    compressed_bytes: int
    stored_bytes: int
    stored_sha256: str


class Sealer:
    """A write-only stream: hashes what it is given, compresses, encrypts, and stores it."""

    def __init__(
        self, writer: ObjectWriter, key: crypto.WriteKey, *, level: int, threads: int
    ) -> None:
        self._writer = writer
        self._plain_hash = hashlib.sha256()
        self.plain_bytes = 0
        self._compressed_bytes = 0
        params = zstandard.ZstdCompressionParameters.from_level(
            level, threads=threads, job_size=ZSTD_JOB_SIZE if threads else 0, write_checksum=1
        )
        self._zstd = zstandard.ZstdCompressor(compression_params=params).compressobj()
        self._encryptor = crypto.Encryptor(key, compressed=True)

    def write(self, data: bytes) -> None:
        self._plain_hash.update(data)
        self.plain_bytes += len(data)
        self._emit(self._zstd.compress(data))

    def close(self) -> SealedStats:
        self._emit(self._zstd.flush())
        self._writer.write(self._encryptor.finish())
        self._writer.close()
        return SealedStats(
            self.plain_bytes,
            self._plain_hash.hexdigest(),
            self._compressed_bytes,
            self._writer.size,
            self._writer.sha256,
        )

    def abort(self) -> None:
        self._writer.abort()

    def _emit(self, compressed: bytes) -> None:
        if compressed:
            self._compressed_bytes += len(compressed)
            self._writer.write(self._encryptor.update(compressed))


def pump(
    read: Callable[[int], bytes], sink: Sealer, on_progress: Callable[[int], None] | None = None
) -> None:
    """Copy from a reader into the sealer until EOF."""
    while block := read(READ_SIZE):
        sink.write(block)
        if on_progress is not None:
            on_progress(len(block))


class Opened:
    """The plaintext of an encrypted object, with the SHA-256 of the stored bytes it came from."""

    def __init__(
        self, blocks: Iterable[bytes], keyring: crypto.Keyring, name: str = "the object"
    ) -> None:
        self._blocks = blocks
        self._decryptor = crypto.Decryptor(keyring, name)
        self._stored_hash = hashlib.sha256()
        self.stored_bytes = 0

    @property
    def stored_sha256(self) -> str:
        return self._stored_hash.hexdigest()

    @property
    def header(self) -> crypto.Header | None:
        return self._decryptor.header

    def chunks(self) -> Iterator[bytes]:
        """Plaintext pieces of at most a few MiB each, decompressed when the object says so."""
        decrypted = self._decrypted()
        first = next(decrypted, None)
        assert self.header is not None
        rest = itertools.chain([] if first is None else [first], decrypted)
        if not self.header.compressed:
            yield from rest
            return
        yield from _decompressed(rest)

    def _decrypted(self) -> Iterator[bytes]:
        for block in self._blocks:
            self._stored_hash.update(block)
            self.stored_bytes += len(block)
            if out := self._decryptor.update(block):
                yield out
        if out := self._decryptor.finish():
            yield out


def decompressed(pieces: Iterator[bytes]) -> Iterator[bytes]:
    """The plaintext of a compressed (already decrypted) stream, in bounded pieces: for callers
    that tell a decryption failure from a decompression one (a SQLite backup's named checks)."""
    return _decompressed(pieces)


def _decompressed(pieces: Iterator[bytes]) -> Iterator[bytes]:
    """One zstd frame, read in pieces of at most READ_SIZE whatever the compression ratio.

    zstandard's reader bounds the output (a table of zeros compresses thousands to one, and a
    decompressor fed by input slices would hand back gigabytes at once), but it does not say
    whether the frame was complete: callers that know the dump's SHA-256 check it.
    """
    source: Any = _PieceReader(pieces)
    reader = zstandard.ZstdDecompressor().stream_reader(source, read_size=READ_SIZE)
    try:
        while block := reader.read(READ_SIZE):
            yield block
    except zstandard.ZstdError as exc:
        raise errors.IntegrityError(f"compressed stream is damaged: {exc}") from None


class _PieceReader:
    """A source for zstandard's stream_reader, which asks it for read(n): each piece is handed
    over as it is, a view and no copy (a decrypted chunk is READ_SIZE, what it asks for)."""

    def __init__(self, pieces: Iterator[bytes]) -> None:
        self._pieces = pieces
        self._rest = memoryview(b"")

    def read(self, size: int) -> memoryview:
        while not self._rest:
            piece = next(self._pieces, None)
            if piece is None:
                return memoryview(b"")
            self._rest = memoryview(piece)
        taken, self._rest = self._rest[:size], self._rest[size:]
        return taken


def open_bytes(keyring: crypto.Keyring, data: bytes) -> bytes:
    return b"".join(Opened([data], keyring).chunks())
