"""A copy destination opened as a repository: made from the primary's permafrost.json on first
use (the same format, KDF salt and key checks, so the same keys open it; its own id, and
`copy_of` naming the primary's), then proven with the configured keys like any repository."""

from __future__ import annotations

import json
import uuid
from dataclasses import dataclass, replace
from datetime import UTC, datetime
from typing import Any

from permafrost import layout
from permafrost.config.copies import CopyDestination
from permafrost.config.settings import Settings
from permafrost.errors import ConfigError, IntegrityError, StorageError
from permafrost.repo.config import CONDITIONAL_WRITES, Repository, open_repository, read_config
from permafrost.storage import Storage, open_storage
from permafrost.storage.ratelimit import limited

COPY_OF = "copy_of"  # permafrost.json of a copy: the id of the repository it copies


@dataclass(frozen=True)
class CopyTarget:
    """A copy destination, reachable, with its repository open."""

    destination: CopyDestination
    repository: Repository

    @property
    def name(self) -> str:
        return self.destination.name

    @property
    def storage(self) -> Storage:
        return self.repository.storage

    @property
    def prefix(self) -> str:
        return self.repository.prefix

    @property
    def location(self) -> str:
        return self.destination.storage.location


def open_target(
    settings: Settings, primary: Repository, destination: CopyDestination
) -> CopyTarget:
    """The destination's repository, made from the primary's where there is none yet.

    StorageError (StorageUnavailable: it does not answer) or IntegrityError (another
    repository, of other keys, is there) when it cannot be used."""
    if destination.storage.location == settings.storage.location:
        raise ConfigError(
            f"copy {destination.name!r} is the primary's own STORAGE_URL: a copy must be "
            "somewhere else"
        )
    storage = limited(open_storage(destination.storage), destination.rate_limit)
    prefix = destination.storage.prefix
    found = read_config(storage, prefix)
    if found is None:
        _make(storage, prefix, primary)
    else:
        _follow_keys(storage, prefix, primary.config, found, destination)
    opened = open_repository(storage, replace(settings, storage=destination.storage), create=False)
    return CopyTarget(destination, opened)


def copy_config(primary: dict[str, Any]) -> dict[str, Any]:
    """A copy's permafrost.json: the primary's, with an id of its own. What the provider does
    with conditional writes is the copy's bucket's own, probed there when it matters."""
    config = {k: v for k, v in primary.items() if k != CONDITIONAL_WRITES}
    config["id"] = str(uuid.uuid4())
    config["created_at"] = datetime.now(UTC).isoformat(timespec="seconds")
    config[COPY_OF] = str(primary.get("id") or "")
    return config


def _make(storage: Storage, prefix: str, primary: Repository) -> None:
    key = layout.repository_config_key(prefix)
    try:
        storage.put(key, _dump(copy_config(primary.config)), if_absent=True)
    except StorageError:
        if read_config(storage, prefix) is None:  # not a race with another copier: a failure
            raise


def _follow_keys(
    storage: Storage,
    prefix: str,
    primary: dict[str, Any],
    found: dict[str, Any],
    destination: CopyDestination,
) -> None:
    """Refuse a repository of other keys; add the keys the primary registered since (rotation)."""
    if found.get("kdf", {}).get("salt") != primary.get("kdf", {}).get("salt"):
        raise IntegrityError(
            f"copy {destination.name!r} at {destination.storage.location} holds another "
            "repository (its permafrost.json has another salt): give the copy an empty place"
        )
    known = {entry.get("key_id") for entry in found.get("keys", [])}
    new = [entry for entry in primary.get("keys", []) if entry.get("key_id") not in known]
    if new:
        found["keys"] = [*found.get("keys", []), *new]
        storage.put(layout.repository_config_key(prefix), _dump(found))


def _dump(config: dict[str, Any]) -> bytes:
    return json.dumps(config, indent=2, sort_keys=True).encode() + b"\n"
