"""The encrypted object format (docs/FORMAT.md): STREAM over AES-256-GCM with wrapped data keys.

Each object gets a random 256-bit data key, wrapped by the master key and stored in the header.
The payload is cut into chunks of `chunk_size` plaintext bytes; chunk i is sealed with the nonce
`prefix(7) || i (uint32 BE) || last (1 byte)` and the whole header as associated data, so a
changed, dropped, duplicated, reordered or cut-off chunk, or a header taken from another object,
fails authentication. When a chunk fails, `_diagnose` works out which of those happened, so the
operator reads "chunk 3 is missing" rather than "authentication failed".
"""

from __future__ import annotations

import base64
import hashlib
import hmac
import secrets
import struct
from collections.abc import Mapping
from dataclasses import dataclass, replace
from enum import IntEnum
from typing import Any, Protocol

from cryptography.exceptions import InvalidTag
from cryptography.hazmat.primitives.ciphers.aead import AESGCM

from permafrost import errors

MAGIC = b"PFE1"
VERSION = 1  # symmetric key wrap, as first written
VERSION_WRAPPED = 2  # a key-wrap type byte and a variable-length wrap (public key, KMS)
FLAG_ZSTD = 0x01
CHUNK_SIZE = 1024 * 1024
TAG = 16
PREFIX_LEN = 7
WRAP_NONCE_LEN = 12
WRAPPED_KEY_LEN = 32 + TAG
MAX_KEY_ID = 64
MAX_CHUNK_SIZE = 64 * CHUNK_SIZE
MAX_CHUNKS = 2**32 - 1
_DIAGNOSE_WINDOW = 64


class Wrap(IntEnum):
    """How an object's data key is wrapped: the key-wrap type byte of a version 2 header."""

    SYMMETRIC = 0  # AES-256-GCM under the master key (version 1 headers)
    X25519 = 1  # for a public key: ephemeral X25519, HKDF-SHA256, AES-256-GCM
    KMS = 2  # under a data key from a KMS (GenerateDataKey), opened with Decrypt


class Signer(Protocol):
    """What signs a manifest: a key that derives the HMAC key."""

    def subkey(self, purpose: bytes) -> bytes: ...


class WriteKey(Signer, Protocol):
    """The key objects are written with: names itself in headers and wraps their data keys."""

    @property
    def key_id(self) -> str: ...

    @property
    def wrap_type(self) -> Wrap: ...

    def wrap(self, data_key: bytes, aad: bytes) -> bytes: ...

    def manifest_fields(self) -> dict[str, Any]: ...


class Opener(Protocol):
    """A key that opens the data keys of one wrap type (a private key, a KMS client)."""

    @property
    def key_id(self) -> str: ...

    def unwrap(self, header: Header) -> bytes: ...

    def signer(self, encryption: Mapping[str, Any]) -> Signer: ...


@dataclass(frozen=True)
class MasterKey:
    """A 32-byte master key and the id that names it in object headers."""

    key: bytes

    @property
    def key_id(self) -> str:
        return hmac.new(self.key, b"permafrost key id v1", hashlib.sha256).hexdigest()[:16]

    @property
    def wrap_type(self) -> Wrap:
        return Wrap.SYMMETRIC

    def subkey(self, purpose: bytes) -> bytes:
        return hmac.new(self.key, purpose, hashlib.sha256).digest()

    def wrap(self, data_key: bytes, aad: bytes) -> bytes:
        raise NotImplementedError("a symmetric key wraps in the version 1 header (Encryptor)")

    def manifest_fields(self) -> dict[str, Any]:
        return {}

    def __repr__(self) -> str:
        return f"MasterKey(key_id={self.key_id!r})"


class Keyring:
    """The current key (used to write), older symmetric keys (accepted to read), by key id,
    and the openers of the other wrap types (a private key, a KMS client)."""

    def __init__(
        self,
        current: WriteKey,
        old: tuple[MasterKey, ...] = (),
        openers: Mapping[Wrap, Opener] | None = None,
    ) -> None:
        self.current = current
        mine = (current,) if isinstance(current, MasterKey) else ()
        self.by_id = {key.key_id: key for key in (*old, *mine)}
        self.openers = dict(openers or {})

    def unwrap(self, header: Header) -> bytes:
        """The data key of an object; WrongKey when no configured key opens its wrap type."""
        if header.wrap_type == Wrap.SYMMETRIC:
            return _unwrap_symmetric(self.get(header.key_id), header)
        opener = self.openers.get(Wrap(header.wrap_type))
        if opener is None:
            raise errors.WrongKey(_NO_OPENER[Wrap(header.wrap_type)].format(header.key_id))
        return opener.unwrap(header)

    def signer(self, key_id: str, encryption: Mapping[str, Any]) -> Signer | None:
        """The key a manifest written with key `key_id` was signed with; None when this host
        holds no symmetric key and the manifest is another mode's (a backup host with only the
        public key reading a symmetric manifest): it cannot check it, the restore host does."""
        if key_id in self.by_id:
            return self.by_id[key_id]
        for opener in self.openers.values():
            if opener.key_id == key_id:
                return opener.signer(encryption)
        if self.current.key_id == key_id:
            return self.current
        if not self.by_id:
            return None
        return self.get(key_id)

    def get(self, key_id: str) -> MasterKey:
        try:
            return self.by_id[key_id]
        except KeyError:
            known = ", ".join(sorted(self.by_id))
            raise errors.WrongKey(
                f"this object was encrypted with key {key_id}, but the configured keys are "
                f"{known}: set BACKUP_ENCRYPTION_KEY (or BACKUP_ENCRYPTION_OLD_KEYS) to that key "
                "(if no key has that id, the object's header is damaged)"
            ) from None


_NO_OPENER = {
    Wrap.X25519: "this object is encrypted for the public key {0}: only BACKUP_PRIVATE_KEY opens it"
    " (this host holds the public key only, by design); run this on the restore host",
    Wrap.KMS: "this object's data key is held by KMS (key {0}): set KMS_KEY_ID (and KMS access)"
    " to open it",
}


def _unwrap_symmetric(key: MasterKey, header: Header) -> bytes:
    return AESGCM(key.key).decrypt(header.wrap_nonce, header.wrapped_key, header.prefix_bytes())


def generate_key() -> str:
    """A new master key: 32 random bytes in base64, as `permafrost keygen` prints it."""
    return base64.b64encode(secrets.token_bytes(32)).decode()


def raw_key(text: str) -> bytes | None:
    """The 32 bytes of a base64 key, or None when the text is a passphrase instead."""
    try:
        decoded = base64.b64decode(text.strip(), validate=True)
    except ValueError:
        return None
    return decoded if len(decoded) == 32 else None


def stretch(passphrase: str, salt: bytes, n: int, r: int, p: int) -> MasterKey:
    derived = hashlib.scrypt(
        passphrase.encode(), salt=salt, n=n, r=r, p=p, dklen=32, maxmem=256 * 1024 * 1024
    )
    return MasterKey(derived)


# --- header ------------------------------------------------------------------------------


@dataclass(frozen=True)
class Header:
    flags: int
    key_id: str
    chunk_size: int
    nonce_prefix: bytes
    wrap_nonce: bytes  # version 1 only; a version 2 wrap carries its own nonces
    wrapped_key: bytes  # version 2: the whole wrap, as its type lays it out
    wrap_type: int = Wrap.SYMMETRIC

    @property
    def compressed(self) -> bool:
        return bool(self.flags & FLAG_ZSTD)

    @property
    def version(self) -> int:
        return VERSION if self.wrap_type == Wrap.SYMMETRIC else VERSION_WRAPPED

    def wrap_aad(self) -> bytes:
        """What a version 2 wrap authenticates: the header up to its wrap type."""
        kid = self.key_id.encode("ascii")
        return (
            MAGIC
            + bytes([self.version, self.flags, len(kid)])
            + kid
            + struct.pack(">I", self.chunk_size)
            + self.nonce_prefix
        )

    def prefix_bytes(self) -> bytes:
        if self.version == VERSION:
            return self.wrap_aad() + self.wrap_nonce
        return self.wrap_aad() + struct.pack(">BH", self.wrap_type, len(self.wrapped_key))

    def to_bytes(self) -> bytes:
        return self.prefix_bytes() + self.wrapped_key


def header_length(data: bytes | bytearray) -> int | None:
    """How long the header at the start of `data` is, or None if more bytes are needed."""
    if len(data) < 7:
        return None
    if bytes(data[:4]) != MAGIC:
        raise errors.NotAnObject("not a Permafrost object: it does not start with PFE1")
    if data[4] not in (VERSION, VERSION_WRAPPED):
        raise errors.NotAnObject(
            f"object format version {data[4]} is not supported by this Permafrost "
            f"(it reads versions {VERSION} and {VERSION_WRAPPED}); upgrade Permafrost"
        )
    kid_len = data[6]
    if not 1 <= kid_len <= MAX_KEY_ID:
        raise errors.HeaderCorrupt("object header is damaged: key id length out of range")
    fixed = 7 + kid_len + 4 + PREFIX_LEN
    if data[4] == VERSION:
        return fixed + WRAP_NONCE_LEN + WRAPPED_KEY_LEN
    if len(data) < fixed + 3:
        return None
    (wrap_len,) = struct.unpack(">H", bytes(data[fixed + 1 : fixed + 3]))
    return fixed + 3 + wrap_len


def parse_header(data: bytes) -> Header:
    kid_len = data[6]
    offset = 7 + kid_len
    try:
        key_id = data[7:offset].decode("ascii")
    except UnicodeDecodeError:
        raise errors.HeaderCorrupt("object header is damaged: key id is not text") from None
    (chunk_size,) = struct.unpack(">I", data[offset : offset + 4])
    if not 1 <= chunk_size <= MAX_CHUNK_SIZE:
        raise errors.HeaderCorrupt("object header is damaged: chunk size out of range")
    offset += 4
    prefix = data[offset : offset + PREFIX_LEN]
    offset += PREFIX_LEN
    if data[4] == VERSION_WRAPPED:
        if data[offset] not in tuple(Wrap) or data[offset] == Wrap.SYMMETRIC:
            raise errors.HeaderCorrupt(f"object header has unknown key-wrap type {data[offset]}")
        wrap = data[offset + 3 :]
        return Header(data[5], key_id, chunk_size, prefix, b"", wrap, Wrap(data[offset]))
    wrap_nonce = data[offset : offset + WRAP_NONCE_LEN]
    offset += WRAP_NONCE_LEN
    wrapped = data[offset : offset + WRAPPED_KEY_LEN]
    return Header(data[5], key_id, chunk_size, prefix, wrap_nonce, wrapped)


def chunk_nonce(prefix: bytes, index: int, last: bool) -> bytes:
    return prefix + struct.pack(">IB", index, 1 if last else 0)


# --- encryption --------------------------------------------------------------------------


class Encryptor:
    """Turns a byte stream into an encrypted object, chunk by chunk, in bounded memory."""

    def __init__(
        self,
        key: WriteKey,
        *,
        compressed: bool,
        chunk_size: int = CHUNK_SIZE,
        data_key: bytes | None = None,
        nonce_prefix: bytes | None = None,
        wrap_nonce: bytes | None = None,
    ) -> None:
        if not 1 <= chunk_size <= MAX_CHUNK_SIZE:
            raise ValueError(f"chunk size must be 1 to {MAX_CHUNK_SIZE} bytes")
        if data_key is not None and len(data_key) != 32:
            raise ValueError("a data key is 32 bytes")
        if nonce_prefix is not None and len(nonce_prefix) != PREFIX_LEN:
            raise ValueError(f"a nonce prefix is {PREFIX_LEN} bytes")
        if wrap_nonce is not None and len(wrap_nonce) != WRAP_NONCE_LEN:
            raise ValueError(f"a wrap nonce is {WRAP_NONCE_LEN} bytes")
        self.chunk_size = chunk_size
        self._data_key = data_key or secrets.token_bytes(32)
        self.header = _sealed_header(
            key,
            Header(
                FLAG_ZSTD if compressed else 0,
                key.key_id,
                chunk_size,
                nonce_prefix or secrets.token_bytes(PREFIX_LEN),
                b"",
                b"",
                key.wrap_type,
            ),
            self._data_key,
            wrap_nonce,
        )
        self._aad = self.header.to_bytes()
        self._aead = AESGCM(self._data_key)
        self._buffer = bytearray()
        self._index = 0
        self._started = False
        self._finished = False

    def update(self, data: bytes) -> bytes:
        """Ciphertext for as many whole chunks as are known not to be the last."""
        out = [self._start()]
        self._buffer += data
        size = self.chunk_size
        taken = 0
        with memoryview(self._buffer) as view:
            while len(view) - taken > size:
                out.append(self._seal(view[taken : taken + size], last=False))
                taken += size
        del self._buffer[:taken]
        return b"".join(out)

    def finish(self) -> bytes:
        if self._finished:
            raise ValueError("the object is already finished")
        self._finished = True
        head = self._start()
        return head + self._seal(bytes(self._buffer), last=True)

    def _start(self) -> bytes:
        if self._started:
            return b""
        self._started = True
        return self._aad

    def _seal(self, plaintext: bytes | memoryview, *, last: bool) -> bytes:
        if self._index > MAX_CHUNKS:
            raise ValueError("an object holds at most 2**32 chunks")
        nonce = chunk_nonce(self.header.nonce_prefix, self._index, last)
        self._index += 1
        return self._aead.encrypt(nonce, plaintext, self._aad)


def _sealed_header(key: WriteKey, header: Header, data_key: bytes, nonce: bytes | None) -> Header:
    if isinstance(key, MasterKey):
        header = replace(header, wrap_nonce=nonce or secrets.token_bytes(WRAP_NONCE_LEN))
        wrapped = AESGCM(key.key).encrypt(header.wrap_nonce, data_key, header.prefix_bytes())
        return replace(header, wrapped_key=wrapped)
    return replace(header, wrapped_key=key.wrap(data_key, header.wrap_aad()))


def encrypt_bytes(key: WriteKey, data: bytes, *, compressed: bool = False) -> bytes:
    enc = Encryptor(key, compressed=compressed)
    return enc.update(data) + enc.finish()


# --- decryption --------------------------------------------------------------------------


_WHAT_TO_DO = (
    "restore another backup (`permafrost list`) and check the rest with `permafrost verify`"
)


class Decryptor:
    """Checks and decrypts an object stream; raises a specific IntegrityError on any damage."""

    def __init__(self, keyring: Keyring, name: str = "the object") -> None:
        self._keyring = keyring
        self.name = name  # what the messages call it: "backup ID (key)", a file's path
        self._buffer = bytearray()
        self.header: Header | None = None
        self._aad = b""
        self._aead: AESGCM | None = None
        self._index = 0
        self._done = False

    def update(self, data: bytes) -> bytes:
        self._buffer += data
        if self.header is None and not self._read_header():
            return b""
        total = self._chunk_total
        out = []
        # Keep one whole chunk in hand beyond the one being opened, so a failure can look ahead.
        while len(self._buffer) > 2 * total:
            out.append(self._open_next(last=False))
        return b"".join(out)

    def finish(self) -> bytes:
        if self.header is None and not self._read_header():
            raise errors.Truncated("object is truncated: it ends inside its header")
        out = []
        while len(self._buffer) > self._chunk_total:
            out.append(self._open_next(last=False))
        out.append(self._open_next(last=True))
        self._done = True
        return b"".join(out)

    @property
    def _chunk_total(self) -> int:
        assert self.header is not None
        return self.header.chunk_size + TAG

    def _read_header(self) -> bool:
        length = header_length(self._buffer)
        if length is None or len(self._buffer) < length:
            return False
        raw = bytes(self._buffer[:length])
        header = parse_header(raw)
        try:
            data_key = self._keyring.unwrap(header)
        except InvalidTag:
            raise errors.HeaderCorrupt(
                f"the header of {self.name} failed authentication: it is damaged or was altered,"
                f" or the key with its key id is not the one it was sealed with; {_WHAT_TO_DO}"
            ) from None
        self.header, self._aad, self._aead = header, raw, AESGCM(data_key)
        del self._buffer[:length]
        return True

    def _open_next(self, *, last: bool) -> bytes:
        total = self._chunk_total
        if len(self._buffer) < TAG:
            raise errors.Truncated(
                f"object is truncated: it ends before its final chunk (after {self._index} chunks)"
            )
        with memoryview(self._buffer) as view:  # opened in place: no copy of the chunk
            plaintext = self._try(view[:total], self._index, last)
        if plaintext is None:
            raise self._diagnose(bytes(self._buffer[:total]), last)
        del self._buffer[:total]
        self._index += 1
        return plaintext

    def _try(self, sealed: bytes | memoryview, index: int, last: bool) -> bytes | None:
        assert self.header is not None and self._aead is not None
        try:
            return self._aead.decrypt(
                chunk_nonce(self.header.nonce_prefix, index, last), sealed, self._aad
            )
        except InvalidTag:
            return None

    def _identify(self, sealed: bytes) -> tuple[int, bool] | None:
        """Which chunk these bytes really are, searching near the expected position."""
        low = max(0, self._index - _DIAGNOSE_WINDOW)
        for index in range(low, self._index + _DIAGNOSE_WINDOW + 1):
            for last in (False, True):
                if self._try(sealed, index, last) is not None:
                    return index, last
        return None

    def _diagnose(self, sealed: bytes, last: bool) -> errors.IntegrityError:
        n = self._index
        found = self._identify(sealed)
        if found is None:
            return self._unidentified(n, last)
        index, was_last = found
        if index == n and was_last:
            return errors.TrailingData(f"object has data after its final chunk ({n})")
        if index == n:
            return errors.Truncated(
                f"object is truncated: it ends after chunk {n}, which is not the final chunk"
            )
        if index < n:
            return errors.ChunkDuplicated(f"chunk {index} appears again at position {n}")
        following = bytes(self._buffer[self._chunk_total : 2 * self._chunk_total])
        if following and self._identify_as(following, n):
            return errors.ChunkReordered(
                f"chunks are out of order: chunk {index} is at position {n}, before chunk {n}"
            )
        after = f"chunk {n - 1}" if n else "the header"
        return errors.ChunkMissing(f"chunk {n} is missing: chunk {index} follows {after}")

    def _identify_as(self, sealed: bytes, index: int) -> bool:
        return any(self._try(sealed, index, last) is not None for last in (False, True))

    def _unidentified(self, n: int, last: bool) -> errors.IntegrityError:
        following = bytes(self._buffer[self._chunk_total : 2 * self._chunk_total])
        # Every chunk failing from the first on means the header is not this data's; one chunk
        # failing among good ones means that chunk was damaged. A lone chunk cannot tell.
        if n == 0 and following and not self._identify_as(following, 1):
            return errors.HeaderMismatch(
                "object header does not belong to its data: the header was swapped or the data "
                "replaced"
            )
        damage = (
            "the object is truncated, has bytes appended, or was altered"
            if last
            else "the object is corrupt or was altered"
        )
        return errors.ChunkCorrupt(
            f"{'final ' if last else ''}chunk {n} of {self.name} failed authentication: {damage}"
            f" (or its header was sealed with another key); {_WHAT_TO_DO}"
        )


def decrypt_bytes(keyring: Keyring, data: bytes) -> tuple[Header, bytes]:
    dec = Decryptor(keyring)
    plaintext = dec.update(data) + dec.finish()
    assert dec.header is not None
    return dec.header, plaintext


# --- small sealed values (key check, manifest signature) ---------------------------------


def key_check(key: MasterKey) -> str:
    nonce = secrets.token_bytes(12)
    sealed = AESGCM(key.key).encrypt(nonce, b"permafrost key check v1", key.key_id.encode())
    return base64.b64encode(nonce + sealed).decode()


def key_check_passes(key: MasterKey, check: str) -> bool:
    try:
        raw = base64.b64decode(check)
        AESGCM(key.key).decrypt(raw[:12], raw[12:], key.key_id.encode())
    except (InvalidTag, ValueError):
        return False
    return True


def sign(key: Signer, payload: bytes) -> str:
    return hmac.new(key.subkey(b"permafrost manifest v1"), payload, hashlib.sha256).hexdigest()


def signature_matches(key: Signer, payload: bytes, signature: str) -> bool:
    return hmac.compare_digest(sign(key, payload), signature)
