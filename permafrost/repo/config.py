"""The repository config, `permafrost.json`: format version, KDF parameters, and key checks.

Opening a repository proves the configured key before any work: the key's id must be one the
repository knows and its check value must open, so a wrong key fails at once with one line.
Every repository has an id (a random UUID, written once), which the catalog records on the rows
of what the repository holds; one made before ids gets its id the first time a write opens it.
Key rotation: put the new key in BACKUP_ENCRYPTION_KEY and the old one in
BACKUP_ENCRYPTION_OLD_KEYS; the first command run with both registers the new key here.
Whether the bucket honours conditional writes (storage/conditional.py) is probed when the
repository is made, and by `init` and `doctor`, and recorded here (`conditional_writes`); an
opening tells the storage, which checks for itself unless the record says honoured.
"""

from __future__ import annotations

import base64
import json
import secrets
import uuid
from collections.abc import Callable
from dataclasses import dataclass
from datetime import UTC, datetime
from typing import Any

from permafrost import layout
from permafrost.config.settings import Secret, Settings
from permafrost.errors import (
    ConfigError,
    EncryptionKeyError,
    IntegrityError,
    NotFound,
    StorageError,
    WriteConflict,
    WrongKey,
)
from permafrost.repo import crypto, keys
from permafrost.storage import ProviderConditions, Storage
from permafrost.storage.conditional import Conditional, probe

FORMAT_VERSION = 1
SCRYPT = {"n": 2**15, "r": 8, "p": 1}
MIN_PASSPHRASE = 16
CONDITIONAL_WRITES = "conditional_writes"  # the probe's answer: {"state", "probed_at"}


@dataclass(frozen=True)
class Repository:
    storage: Storage
    prefix: str
    config: dict[str, Any]
    keyring: crypto.Keyring
    id_assigned: bool = False  # made before ids, it got its id just now (by this opening)

    @property
    def key(self) -> crypto.WriteKey:
        return self.keyring.current

    @property
    def id(self) -> str:
        """The repository's id ('' for one made before ids, until a write opens it)."""
        return str(self.config.get("id") or "")

    @property
    def conditional_writes(self) -> Conditional:
        return recorded_conditional_writes(self.config)


def open_repository(
    storage: Storage,
    settings: Settings,
    *,
    create: bool,
    before_create: Callable[[], None] | None = None,
) -> Repository:
    """Read (or, with create, write) permafrost.json and prove the configured key against it.

    create is a write's opening: it makes a repository where there is none (after
    before_create, which may refuse) and gives one made before ids its id."""
    prefix = settings.storage.prefix
    config = read_config(storage, prefix)
    if config is None:
        if not create:
            raise NotFound(
                f"no Permafrost repository at {storage.url}: run `permafrost init` "
                "or take a backup, or check STORAGE_URL"
            )
        config = _guarded(storage, prefix, before_create) or _create(storage, prefix, settings)
    rely_on_record(storage, config)
    keyring = _keyring(settings, config)
    if create and isinstance(keyring.current, keys.KmsKey):
        keyring.current.current()  # KMS down: fail now, before anything of the backup is written
    _prove(storage, prefix, config, keyring)
    assigned = False
    if create and not config.get("id"):
        config, assigned = _assign_id(storage, prefix, config)
    return Repository(storage, prefix, config, keyring, assigned)


def _guarded(
    storage: Storage, prefix: str, before_create: Callable[[], None] | None
) -> dict[str, Any] | None:
    """Run the guard before making a repository. A refusal may be a race, not a mistake: two
    first backups at once, where the other one has just made the repository and told the
    catalog. Then the repository is there now, and it is the one to use."""
    if before_create is None:
        return None
    try:
        before_create()
    except NotFound:
        config = read_config(storage, prefix)
        if config is None:
            raise
        return config
    return None


def read_config(storage: Storage, prefix: str) -> dict[str, Any] | None:
    key = layout.repository_config_key(prefix)
    try:
        raw = storage.get(key)
    except NotFound:
        return None
    try:
        config = json.loads(raw)
    except ValueError:
        raise IntegrityError(f"{key} is not valid JSON: the repository config is damaged") from None
    if config.get("version") != FORMAT_VERSION:
        raise IntegrityError(
            f"{key} has format version {config.get('version')}; this Permafrost "
            f"reads version {FORMAT_VERSION}"
        )
    return dict(config)


def load_keys(settings: Settings, config: dict[str, Any] | None) -> crypto.Keyring:
    """The keyring from the settings alone, for opening objects (a passphrase needs the config)."""
    if config is None and not _all_raw(settings):
        raise ConfigError(
            "BACKUP_ENCRYPTION_KEY is a passphrase, and its salt is in the "
            "repository's permafrost.json, which cannot be read"
        )
    return _keyring(settings, config or {})


def _all_raw(settings: Settings) -> bool:
    if settings.encryption_key is None:
        return bool(settings.public_key or settings.private_key or settings.kms_key_id)
    symmetric = [settings.encryption_key, *settings.old_encryption_keys]
    return all(crypto.raw_key(k.reveal()) for k in symmetric)


def recorded_conditional_writes(config: dict[str, Any] | None) -> Conditional:
    """What permafrost.json says of conditional writes (unknown: not probed, or no config)."""
    entry = (config or {}).get(CONDITIONAL_WRITES) or {}
    try:
        return Conditional(entry.get("state", Conditional.UNKNOWN))
    except (ValueError, AttributeError):
        return Conditional.UNKNOWN  # a value this version does not know: probe again


def rely_on_record(storage: Storage, config: dict[str, Any]) -> None:
    """Tell the storage whether the provider keeps its conditional puts (else it checks)."""
    if isinstance(storage, ProviderConditions):
        honoured = recorded_conditional_writes(config) is Conditional.HONOURED
        storage.rely_on_provider(honoured)


def probe_conditional_writes(storage: Storage, prefix: str) -> dict[str, str]:
    """Probe the bucket now: the entry to record under `conditional_writes`."""
    state = probe(storage, layout.probe_key(prefix))
    return {"state": str(state), "probed_at": datetime.now(UTC).isoformat(timespec="seconds")}


def record_conditional_writes(storage: Storage, prefix: str, entry: dict[str, str]) -> None:
    """Write the probe's answer into an existing permafrost.json (read again just before, so
    what another process wrote meanwhile is kept), and tell the storage."""
    config = read_config(storage, prefix)
    if config is None:
        return
    config[CONDITIONAL_WRITES] = entry
    rely_on_record(storage, config)
    storage.put(layout.repository_config_key(prefix), _dump(config))


def reprobe_conditional_writes(storage: Storage, prefix: str) -> tuple[Conditional, Conditional]:
    """Probe now (init, doctor); record the answer where a repository is and says otherwise.
    (what permafrost.json said, the answer now)."""
    before = recorded_conditional_writes(read_config(storage, prefix))
    entry = probe_conditional_writes(storage, prefix)
    now = Conditional(entry["state"])
    if now is not before:
        record_conditional_writes(storage, prefix, entry)
    return before, now


def settle_conditional_writes(repo: Repository) -> Conditional:
    """For a repository from before the probe: probe once, on the first write that needs it
    (wal-push, after its system check), and record the answer."""
    if repo.conditional_writes is Conditional.UNKNOWN:
        entry = probe_conditional_writes(repo.storage, repo.prefix)
        record_conditional_writes(repo.storage, repo.prefix, entry)
        repo.config[CONDITIONAL_WRITES] = entry
    return repo.conditional_writes


def _create(storage: Storage, prefix: str, settings: Settings) -> dict[str, Any]:
    conditional = probe_conditional_writes(storage, prefix)  # first: it decides how to write
    config = {
        CONDITIONAL_WRITES: conditional,
        "format": "permafrost",
        "version": FORMAT_VERSION,
        "id": str(uuid.uuid4()),
        "created_at": datetime.now(UTC).isoformat(timespec="seconds"),
        "kdf": {
            "name": "scrypt",
            "salt": base64.b64encode(secrets.token_bytes(16)).decode(),
            **SCRYPT,
        },
        "chunk_size": crypto.CHUNK_SIZE,
        "keys": [],
    }
    key = _keyring(settings, config).current
    config["keys"] = [_key_entry(key)]
    rely_on_record(storage, config)
    try:
        storage.put(layout.repository_config_key(prefix), _dump(config), if_absent=True)
    except WriteConflict:
        raise  # another process wrote its own at the same time, and this one's is not stored
    except StorageError:
        # Another process initialised it first: use theirs, so every key derives from one salt.
        existing = read_config(storage, prefix)
        if existing is None:
            raise
        return existing
    return config


def _assign_id(
    storage: Storage, prefix: str, config: dict[str, Any]
) -> tuple[dict[str, Any], bool]:
    """Give a repository made before ids its id; (the config as stored, whether ours is it)."""
    mine = str(uuid.uuid4())
    storage.put(layout.repository_config_key(prefix), _dump({**config, "id": mine}))
    stored = read_config(storage, prefix) or {**config, "id": mine}
    return stored, stored.get("id") == mine  # another process may have written its own


def _keyring(settings: Settings, config: dict[str, Any]) -> crypto.Keyring:
    """The writing key is KMS_KEY_ID's, else the public key's, else BACKUP_ENCRYPTION_KEY; every
    configured key also reads (symmetric keys, the private key, KMS)."""
    symmetric = _symmetric(settings, config)
    private = _private(settings)
    public = _public(settings, private)
    kms_key = _kms(settings)
    current: crypto.WriteKey | None = kms_key or public or (symmetric[0] if symmetric else None)
    if current is None:
        raise EncryptionKeyError(
            "BACKUP_ENCRYPTION_KEY is not set: generate one with `permafrost keygen` (or a pair "
            "with `permafrost keygen --pair` for BACKUP_PUBLIC_KEY, or set KMS_KEY_ID) and keep "
            "a copy somewhere other than this server (a lost key means lost backups)"
        )
    openers: dict[crypto.Wrap, crypto.Opener] = {}
    if private is not None:
        openers[crypto.Wrap.X25519] = private
    if kms_key is not None:
        openers[crypto.Wrap.KMS] = kms_key
    old = tuple(k for k in symmetric if k is not current)
    return crypto.Keyring(current, old, openers)


def _symmetric(settings: Settings, config: dict[str, Any]) -> list[crypto.MasterKey]:
    found = []
    if settings.encryption_key is not None:
        found.append(_master_key("BACKUP_ENCRYPTION_KEY", settings.encryption_key, config))
    found += [
        _master_key("BACKUP_ENCRYPTION_OLD_KEYS", k, config) for k in settings.old_encryption_keys
    ]
    return found


def _private(settings: Settings) -> keys.PrivateKey | None:
    if settings.private_key is None:
        return None
    return keys.PrivateKey(keys.decode("BACKUP_PRIVATE_KEY", settings.private_key.reveal()))


def _public(settings: Settings, private: keys.PrivateKey | None) -> keys.PublicKey | None:
    if settings.public_key is None:
        return private.public if private else None
    public = keys.PublicKey(keys.decode("BACKUP_PUBLIC_KEY", settings.public_key.reveal()))
    if private is not None and private.public.raw != public.raw:
        raise EncryptionKeyError(
            "BACKUP_PUBLIC_KEY is not the public key of BACKUP_PRIVATE_KEY: set the pair that "
            "`permafrost keygen --pair` printed together"
        )
    return public


def _kms(settings: Settings) -> keys.KmsKey | None:
    if not settings.kms_key_id:
        return None
    from permafrost.repo.kms import kms_key  # boto3's KMS client, only when KMS is configured

    return kms_key(settings)


def _master_key(variable: str, secret: Secret, config: dict[str, Any]) -> crypto.MasterKey:
    text = secret.reveal()
    raw = crypto.raw_key(text)
    if raw is not None:
        return crypto.MasterKey(raw)
    if len(text) < MIN_PASSPHRASE:
        raise EncryptionKeyError(
            f"{variable} is neither a base64 key of 32 bytes nor a passphrase of at least "
            f"{MIN_PASSPHRASE} characters; `permafrost keygen` makes a key"
        )
    kdf = config.get("kdf") or {}
    if "salt" not in kdf:
        raise ConfigError(f"{variable} is a passphrase, but the repository has no KDF salt")
    salt = base64.b64decode(kdf["salt"])
    return crypto.stretch(text, salt, int(kdf["n"]), int(kdf["r"]), int(kdf["p"]))


def _prove(storage: Storage, prefix: str, config: dict[str, Any], ring: crypto.Keyring) -> None:
    known = {entry["key_id"]: entry for entry in config.get("keys", [])}
    current = ring.current
    variable = _VARIABLE[current.wrap_type]
    if current.key_id in known:
        if not _check_passes(current, ring, known[current.key_id]):
            raise WrongKey(f"{variable} fails the key check of {storage.url}")
        return
    vouching = [k for k in _provers(ring) if k.key_id in known and k.key_id != current.key_id]
    if not any(_check_passes(k, ring, known[k.key_id]) for k in vouching):
        raise WrongKey(
            f"{variable} (key id {current.key_id}) is not a key of the repository at "
            f"{storage.url} (its keys: {', '.join(known) or 'none'}): set the key it was "
            "created with; to add a key, run once with it and a key the repository knows "
            "(BACKUP_ENCRYPTION_KEY or _OLD_KEYS, or BACKUP_PRIVATE_KEY)"
        )
    config["keys"] = [*config.get("keys", []), _key_entry(current)]
    storage.put(layout.repository_config_key(prefix), _dump(config))


_VARIABLE = {
    crypto.Wrap.SYMMETRIC: "BACKUP_ENCRYPTION_KEY",
    crypto.Wrap.X25519: "BACKUP_PUBLIC_KEY",
    crypto.Wrap.KMS: "KMS_KEY_ID",
}


def _provers(ring: crypto.Keyring) -> list[Any]:
    """The configured keys that can open a key check: symmetric keys and the private key."""
    private = ring.openers.get(crypto.Wrap.X25519)
    return [*ring.by_id.values(), *([private] if private is not None else [])]


def _check_passes(key: Any, ring: crypto.Keyring, entry: dict[str, str]) -> bool:
    """A symmetric key opens its check; a private key opens its public key's check; a public
    key alone (a backup host) is known by its id; a KMS key is proved by its first call."""
    if isinstance(key, crypto.MasterKey):
        return crypto.key_check_passes(key, entry["check"])
    private = ring.openers.get(crypto.Wrap.X25519)
    if isinstance(key, keys.PublicKey | keys.PrivateKey) and isinstance(private, keys.PrivateKey):
        return private.key_id == key.key_id and _opens(private, entry["check"])
    return True


def _opens(private: keys.PrivateKey, check: str) -> bool:
    try:
        return private.opens_check(base64.b64decode(check))
    except (ValueError, IntegrityError, EncryptionKeyError):
        return False


def _key_entry(key: crypto.WriteKey) -> dict[str, str]:
    entry = {
        "key_id": key.key_id,
        "check": _new_check(key),
        "added_at": datetime.now(UTC).isoformat(timespec="seconds"),
    }
    if key.wrap_type != crypto.Wrap.SYMMETRIC:  # symmetric entries stay as version 1 wrote them
        entry["type"] = _TYPE[key.wrap_type]
    return entry


_TYPE = {crypto.Wrap.SYMMETRIC: "symmetric", crypto.Wrap.X25519: "x25519", crypto.Wrap.KMS: "kms"}


def _new_check(key: crypto.WriteKey) -> str:
    if isinstance(key, crypto.MasterKey):
        return crypto.key_check(key)
    if isinstance(key, keys.PublicKey):
        return base64.b64encode(key.check_value()).decode()
    return ""


def _dump(config: dict[str, Any]) -> bytes:
    return json.dumps(config, indent=2, sort_keys=True).encode() + b"\n"
