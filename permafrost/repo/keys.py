"""Public-key (X25519) and KMS key wraps: the key-wrap types 1 and 2 of docs/FORMAT.md.

A public key wraps each object's data key with an ephemeral X25519 key, HKDF-SHA256 and
AES-256-GCM, so a host holding only the public key writes backups it cannot read. A KMS key
wraps data keys under a key-encryption key from one GenerateDataKey call per process (per backup,
per WAL batch), opened again with one Decrypt call per distinct wrapped key.
"""

from __future__ import annotations

import base64
import hashlib
import hmac
import secrets
import struct
from collections.abc import Callable, Mapping
from typing import Any

from cryptography.exceptions import InvalidTag
from cryptography.hazmat.primitives import hashes, serialization
from cryptography.hazmat.primitives.asymmetric.x25519 import X25519PrivateKey, X25519PublicKey
from cryptography.hazmat.primitives.ciphers.aead import AESGCM
from cryptography.hazmat.primitives.kdf.hkdf import HKDF

from permafrost import errors
from permafrost.repo.crypto import Header, Signer, Wrap

HKDF_INFO = b"permafrost x25519 wrap v1"
CHECK = b"permafrost key check v1"  # the key check: these bytes' SHA-256 wrapped for the key
NONCE = 12
WRAPPED = 32 + 16
_RAW = serialization.Encoding.Raw


def generate_pair() -> tuple[str, str]:
    """A new key pair in base64: (public, private), as `permafrost keygen --pair` prints them."""
    private = X25519PrivateKey.generate()
    raw_private = private.private_bytes(
        _RAW, serialization.PrivateFormat.Raw, serialization.NoEncryption()
    )
    return _b64(_public_bytes(private)), _b64(raw_private)


def decode(variable: str, text: str) -> bytes:
    try:
        raw = base64.b64decode(text.strip(), validate=True)
    except ValueError:
        raw = b""
    if len(raw) != 32:
        raise errors.EncryptionKeyError(
            f"{variable} is not a base64 X25519 key of 32 bytes: `permafrost keygen --pair` "
            "makes a pair"
        )
    return raw


class PublicKey:
    """The key backups are written with in public-key mode; it cannot open what it wraps."""

    wrap_type = Wrap.X25519

    def __init__(self, raw: bytes) -> None:
        self.raw = raw
        digest = hashlib.sha256(b"permafrost x25519 key id v1" + raw).hexdigest()
        self.key_id = "x25519-" + digest[:16]

    def wrap(self, data_key: bytes, aad: bytes, ephemeral: bytes | None = None) -> bytes:
        """ephemeral public (32) || nonce (12) || AES-GCM(KEK, data key, aad) (48)."""
        secret = (
            X25519PrivateKey.from_private_bytes(ephemeral)
            if ephemeral
            else X25519PrivateKey.generate()
        )
        mine = _public_bytes(secret)
        shared = secret.exchange(X25519PublicKey.from_public_bytes(self.raw))
        nonce = hashlib.sha256(b"permafrost x25519 nonce v1" + mine).digest()[:NONCE]
        sealed = AESGCM(kek(shared, mine, self.raw)).encrypt(nonce, data_key, aad)
        return mine + nonce + sealed

    def check_value(self) -> bytes:
        return self.wrap(hashlib.sha256(CHECK).digest(), CHECK)

    def subkey(self, purpose: bytes) -> bytes:
        return hmac.new(self.raw, b"permafrost public " + purpose, hashlib.sha256).digest()

    def manifest_fields(self) -> dict[str, Any]:
        return {"key_wrap": "x25519"}


class PrivateKey:
    """Opens what was wrapped for its public key (restore, verify, decrypt, pitr)."""

    def __init__(self, raw: bytes) -> None:
        self._key = X25519PrivateKey.from_private_bytes(raw)
        self.public = PublicKey(_public_bytes(self._key))
        self.key_id = self.public.key_id

    def unwrap(self, header: Header) -> bytes:
        if header.key_id != self.key_id:
            raise errors.WrongKey(
                f"this object is encrypted for public key {header.key_id}, but BACKUP_PRIVATE_KEY "
                f"is the private key of {self.key_id}"
            )
        return self._open(header.wrapped_key, header.wrap_aad())

    def opens_check(self, wrap: bytes) -> bool:
        try:
            return self._open(wrap, CHECK) == hashlib.sha256(CHECK).digest()
        except InvalidTag:
            return False

    def _open(self, wrap: bytes, aad: bytes) -> bytes:
        if len(wrap) != 32 + NONCE + WRAPPED:
            raise errors.HeaderCorrupt("object header is damaged: X25519 wrap of wrong length")
        theirs, nonce, sealed = wrap[:32], wrap[32 : 32 + NONCE], wrap[32 + NONCE :]
        shared = self._key.exchange(X25519PublicKey.from_public_bytes(theirs))
        return AESGCM(kek(shared, theirs, self.public.raw)).decrypt(nonce, sealed, aad)

    def signer(self, encryption: Mapping[str, Any]) -> Signer:
        return self.public


def kek(shared: bytes, ephemeral: bytes, recipient: bytes) -> bytes:
    """The key-encryption key: HKDF-SHA256(shared secret, salt = ephemeral || recipient)."""
    return HKDF(hashes.SHA256(), 32, salt=ephemeral + recipient, info=HKDF_INFO).derive(shared)


def _public_bytes(private: X25519PrivateKey) -> bytes:
    return private.public_key().public_bytes(_RAW, serialization.PublicFormat.Raw)


def _b64(raw: bytes) -> str:
    return base64.b64encode(raw).decode()


# --- KMS ----------------------------------------------------------------------------------

# (key id) -> (plaintext, blob): GenerateDataKey; (blob) -> plaintext: Decrypt.
Generate = Callable[[], tuple[bytes, bytes]]
Open = Callable[[bytes], bytes]


class KmsKey:
    """Writes with a key-encryption key from KMS, fetched once, and opens through KMS."""

    wrap_type = Wrap.KMS

    def __init__(self, kms_key_id: str, generate: Generate, open_blob: Open) -> None:
        self.kms_key_id = kms_key_id
        self.key_id = "kms-" + hashlib.sha256(kms_key_id.encode()).hexdigest()[:16]
        self._generate = generate
        self._open = open_blob
        self._current: tuple[bytes, bytes] | None = None
        self._opened: dict[bytes, bytes] = {}

    def current(self) -> tuple[bytes, bytes]:
        """(key-encryption key, its KMS blob): one GenerateDataKey per process."""
        if self._current is None:
            plain, blob = self._generate()
            self._current = plain, blob
            self._opened[blob] = plain
        return self._current

    def wrap(self, data_key: bytes, aad: bytes) -> bytes:
        """blob length (2) || KMS blob || nonce (12) || AES-GCM(KEK, data key, aad) (48)."""
        plain, blob = self.current()
        nonce = secrets.token_bytes(NONCE)
        sealed = AESGCM(plain).encrypt(nonce, data_key, aad)
        return struct.pack(">H", len(blob)) + blob + nonce + sealed

    def unwrap(self, header: Header) -> bytes:
        wrap = header.wrapped_key
        (length,) = struct.unpack(">H", wrap[:2])
        blob, rest = wrap[2 : 2 + length], wrap[2 + length :]
        if len(rest) != NONCE + WRAPPED:
            raise errors.HeaderCorrupt("object header is damaged: KMS wrap of wrong length")
        return AESGCM(self._plain(blob)).decrypt(rest[:NONCE], rest[NONCE:], header.wrap_aad())

    def _plain(self, blob: bytes) -> bytes:
        if blob not in self._opened:
            self._opened[blob] = self._open(blob)
        return self._opened[blob]

    def subkey(self, purpose: bytes) -> bytes:
        return _kms_mac(self.current()[0]).subkey(purpose)

    def manifest_fields(self) -> dict[str, Any]:
        return {"key_wrap": "kms", "kms_key": _b64(self.current()[1])}

    def signer(self, encryption: Mapping[str, Any]) -> Signer:
        blob = base64.b64decode(str(encryption.get("kms_key", "")))
        return _kms_mac(self._plain(blob))


def _kms_mac(plain: bytes) -> _Mac:
    return _Mac(hmac.new(plain, b"permafrost kms manifest", hashlib.sha256).digest())


class _Mac:
    def __init__(self, key: bytes) -> None:
        self._key = key

    def subkey(self, purpose: bytes) -> bytes:
        return hmac.new(self._key, purpose, hashlib.sha256).digest()
