"""The object format: round trips, and every kind of damage caught with its own error."""

from __future__ import annotations

import os

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from permafrost import errors
from permafrost.repo import crypto
from permafrost.repo.pipeline import open_bytes

SMALL = 64
KEY = crypto.MasterKey(bytes(range(32)))
RING = crypto.Keyring(KEY)


def seal(data: bytes, key: crypto.MasterKey = KEY, chunk_size: int = SMALL) -> bytes:
    enc = crypto.Encryptor(key, compressed=False, chunk_size=chunk_size)
    return enc.update(data) + enc.finish()


def split(obj: bytes) -> tuple[bytes, list[bytes]]:
    """Header and sealed chunks of an object made with chunk size SMALL."""
    length = crypto.header_length(obj)
    assert length is not None
    body, total = obj[length:], SMALL + crypto.TAG
    return obj[:length], [body[i : i + total] for i in range(0, len(body), total)]


def open_(obj: bytes) -> bytes:
    return crypto.decrypt_bytes(RING, obj)[1]


@pytest.mark.parametrize("size", [0, 1, SMALL - 1, SMALL, SMALL + 1, 5 * SMALL, 5 * SMALL + 3])
def test_it_round_trips_at_every_boundary(size: int) -> None:
    data = os.urandom(size)
    assert open_(seal(data)) == data


def test_it_round_trips_in_any_pieces() -> None:
    data = os.urandom(3 * crypto.CHUNK_SIZE + 17)
    enc = crypto.Encryptor(KEY, compressed=False)
    obj = b"".join(enc.update(data[i : i + 300_001]) for i in range(0, len(data), 300_001))
    obj += enc.finish()
    dec = crypto.Decryptor(RING)
    out = b"".join(dec.update(obj[i : i + 77_777]) for i in range(0, len(obj), 77_777))
    assert out + dec.finish() == data


def test_it_hides_the_plaintext() -> None:
    secret = b"the-customer-list-" * 1000
    assert b"the-customer-list" not in seal(secret)
    assert seal(secret) != seal(secret)  # a fresh data key and nonce every time


def test_it_detects_a_flipped_byte() -> None:
    header, chunks = split(seal(os.urandom(4 * SMALL)))
    chunks[2] = chunks[2][:5] + bytes([chunks[2][5] ^ 1]) + chunks[2][6:]
    with pytest.raises(errors.ChunkCorrupt, match="chunk 2"):
        open_(header + b"".join(chunks))


def test_it_detects_truncation_at_a_chunk_boundary() -> None:
    header, chunks = split(seal(os.urandom(4 * SMALL + 10)))
    with pytest.raises(errors.Truncated):
        open_(header + b"".join(chunks[:3]))


def test_it_detects_truncation_inside_the_header() -> None:
    with pytest.raises(errors.Truncated):
        open_(seal(b"data")[:20])


def test_it_detects_trailing_data() -> None:
    # After a short final chunk, appended bytes merge into it and fail as a corrupt final chunk
    # (verify catches that earlier by the size in the manifest); after a full one, they are
    # recognised as data after the end.
    header, chunks = split(seal(os.urandom(3 * SMALL)))
    with pytest.raises(errors.TrailingData):
        open_(header + b"".join(chunks) + b"appended")
    header, chunks = split(seal(os.urandom(2 * SMALL + 10)))
    with pytest.raises(errors.ChunkCorrupt, match="final chunk 2"):
        open_(header + b"".join(chunks) + b"appended")


def test_it_detects_a_dropped_chunk() -> None:
    header, chunks = split(seal(os.urandom(5 * SMALL + 1)))
    with pytest.raises(errors.ChunkMissing, match="chunk 2 is missing"):
        open_(header + b"".join(chunks[:2] + chunks[3:]))


def test_it_detects_a_duplicated_chunk() -> None:
    header, chunks = split(seal(os.urandom(5 * SMALL + 1)))
    with pytest.raises(errors.ChunkDuplicated, match="chunk 1 appears again"):
        open_(header + b"".join(chunks[:2] + chunks[1:]))


def test_it_detects_reordered_chunks() -> None:
    header, chunks = split(seal(os.urandom(5 * SMALL + 1)))
    chunks[1], chunks[2] = chunks[2], chunks[1]
    with pytest.raises(errors.ChunkReordered):
        open_(header + b"".join(chunks))


def test_it_detects_a_header_swapped_from_another_object() -> None:
    header_a, _ = split(seal(os.urandom(3 * SMALL)))
    _, chunks_b = split(seal(os.urandom(3 * SMALL)))
    with pytest.raises(errors.HeaderMismatch):
        open_(header_a + b"".join(chunks_b))


def test_it_detects_a_damaged_header() -> None:
    obj = bytearray(seal(os.urandom(100)))
    obj[30] ^= 0xFF  # inside the nonce prefix, which the wrapped key authenticates
    with pytest.raises(errors.HeaderCorrupt):
        open_(bytes(obj))


def test_it_refuses_bytes_that_are_not_an_object() -> None:
    with pytest.raises(errors.NotAnObject):
        open_(b"PGDMP" + os.urandom(100))


def test_it_names_the_key_an_object_needs() -> None:
    other = crypto.MasterKey(os.urandom(32))
    with pytest.raises(errors.WrongKey, match=other.key_id):
        open_(seal(b"data", key=other))


def test_it_opens_old_objects_after_key_rotation() -> None:
    old, new = crypto.MasterKey(os.urandom(32)), crypto.MasterKey(os.urandom(32))
    ring = crypto.Keyring(new, (old,))
    assert crypto.decrypt_bytes(ring, seal(b"before", key=old))[1] == b"before"
    assert crypto.decrypt_bytes(ring, seal(b"after", key=new))[1] == b"after"


def test_it_checks_keys_and_signatures() -> None:
    other = crypto.MasterKey(os.urandom(32))
    check = crypto.key_check(KEY)
    assert crypto.key_check_passes(KEY, check)
    assert not crypto.key_check_passes(other, check)
    signature = crypto.sign(KEY, b"payload")
    assert crypto.signature_matches(KEY, b"payload", signature)
    assert not crypto.signature_matches(KEY, b"payload!", signature)
    assert not crypto.signature_matches(other, b"payload", signature)


def test_it_stretches_passphrases_deterministically() -> None:
    a = crypto.stretch("correct horse battery", b"salt" * 4, 2**10, 8, 1)
    b = crypto.stretch("correct horse battery", b"salt" * 4, 2**10, 8, 1)
    c = crypto.stretch("correct horse battery", b"pepper" * 3, 2**10, 8, 1)
    assert a.key_id == b.key_id != c.key_id


@settings(max_examples=300, deadline=None)
@given(st.binary(max_size=400))
def test_it_raises_only_its_own_errors_on_random_bytes(data: bytes) -> None:
    for candidate in (data, crypto.MAGIC + bytes([1]) + data):
        with pytest.raises(errors.PermafrostError):
            open_bytes(RING, candidate)
