"""Watching a tar stream go by: which members it has, and one member's contents kept aside.

A base backup is pg_basebackup's tar, streamed straight into the pipeline. PostgreSQL writes
its `backup_manifest` as the tar's last member; this reads the headers as the bytes pass (no
copy, no seeking) to keep that member and to know that the archive ended properly, with the
two zero blocks of a complete tar, rather than being cut short.
"""

from __future__ import annotations

BLOCK = 512
BACKUP_MANIFEST = "backup_manifest"  # PostgreSQL's own list of a base backup's files, last


class TarWatcher:
    def __init__(self, keep: str, limit: int = 256 * 1024 * 1024) -> None:
        self.keep = keep
        self.limit = limit
        self.members = 0
        self.kept: bytes | None = None
        self.ended = False
        self._header = bytearray()
        self._remaining = 0  # bytes of the current member's data (and padding) still to come
        self._capture: bytearray | None = None
        self._capture_size = 0
        self._zero_blocks = 0

    def feed(self, data: bytes | memoryview) -> None:
        view = memoryview(data)
        while view and not self.ended:
            if self._remaining:
                take = min(self._remaining, len(view))
                if self._capture is not None and len(self._capture) < self._capture_size:
                    want = self._capture_size - len(self._capture)
                    self._capture += view[: min(take, want)]
                self._remaining -= take
                view = view[take:]
                if not self._remaining:
                    self._finish_member()
                continue
            take = min(BLOCK - len(self._header), len(view))
            self._header += view[:take]
            view = view[take:]
            if len(self._header) == BLOCK:
                self._read_header(bytes(self._header))
                self._header.clear()

    def _read_header(self, header: bytes) -> None:
        if header == bytes(BLOCK):
            self._zero_blocks += 1
            self.ended = self._zero_blocks >= 2
            return
        self._zero_blocks = 0
        name = header[:100].split(b"\0", 1)[0].decode(errors="replace")
        prefix = header[345:500].split(b"\0", 1)[0].decode(errors="replace")
        if prefix:
            name = f"{prefix}/{name}"
        kind = header[156:157]
        size = _size(header[124:136])
        padded = (size + BLOCK - 1) // BLOCK * BLOCK
        extension = kind in (b"L", b"K", b"x", b"g")  # long names, pax headers: not members
        if not extension:
            self.members += 1
        keep = not extension and name == self.keep and size <= self.limit
        self._capture = bytearray() if keep else None
        self._capture_size = size
        self._remaining = padded
        if not padded:
            self._finish_member()

    def _finish_member(self) -> None:
        if self._capture is not None:
            self.kept = bytes(self._capture)
        self._capture = None


def _size(field: bytes) -> int:
    if field[0] & 0x80:  # base-256, for members of 8 GiB and more
        return int.from_bytes(bytes([field[0] & 0x7F]) + field[1:], "big")
    text = field.split(b"\0", 1)[0].strip()
    return int(text, 8) if text else 0
