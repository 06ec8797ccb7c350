"""The pipeline's compression layer: whole frames only, small pieces at any ratio."""

from __future__ import annotations

import os

import pytest
import zstandard

from permafrost import errors
from permafrost.repo import crypto
from permafrost.repo.pipeline import Opened, open_bytes

KEY = crypto.MasterKey(os.urandom(32))
RING = crypto.Keyring(KEY)


def sealed_frame(frame: bytes) -> bytes:
    return crypto.encrypt_bytes(KEY, frame, compressed=True)


def test_it_round_trips_and_keeps_pieces_small_at_a_high_ratio() -> None:
    data = b"\x00" * (64 * 1024 * 1024) + os.urandom(1000)
    frame = zstandard.ZstdCompressor(level=3).compress(data)
    assert len(frame) < 64 * 1024  # a ratio above 1000:1
    pieces = list(Opened([sealed_frame(frame)], RING).chunks())
    assert b"".join(pieces) == data
    assert max(len(p) for p in pieces) <= 16 * 1024 * 1024


def test_it_refuses_a_damaged_frame() -> None:
    frame = bytearray(
        zstandard.ZstdCompressor(level=3, write_checksum=True).compress(b"some text " * 1000)
    )
    frame[len(frame) // 2] ^= 0xFF
    with pytest.raises(errors.IntegrityError):
        open_bytes(RING, sealed_frame(bytes(frame)))
