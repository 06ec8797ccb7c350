"""Object keys in the bucket: built and parsed only here, by pure functions.

    {prefix}/permafrost.json
    {prefix}/{tier}/{database}/{backup_id}/data.pfe
    {prefix}/{tier}/{database}/{backup_id}/data-{n}.pfe     a data part (LOGICAL_JOBS above 1)
    {prefix}/{tier}/{database}/{backup_id}/manifest.json
    {prefix}/base/{cluster}/{backup_id}/data.pfe            a base backup (pg_basebackup tar)
    {prefix}/base/{cluster}/{backup_id}/backup_manifest.pfe its backup_manifest, sealed on its own
    {prefix}/wal/{cluster}/{timeline}/{name}.pfe            archived WAL
    {prefix}/wal/{cluster}.{system}/{timeline}/{name}.pfe   a replaced system's WAL (wal reset)
    {prefix}/clusters/{cluster}.json                        the system the cluster's WAL is of
    {prefix}/.probe-{random}                                the conditional-write probe (deleted)
    {prefix}/keep/{database}/{backup_id}/...                a pinned backup, with pin.json

The tier comes first so that one lifecycle rule per tier covers every database. Names that reach
a key are checked here, so no caller can build a key that climbs out of its folder.
"""

from __future__ import annotations

import re
import secrets
from dataclasses import dataclass, replace
from datetime import UTC, datetime
from typing import Any, TypeVar

from permafrost.errors import UsageError

REPOSITORY_CONFIG = "permafrost.json"
DATA_OBJECT = "data.pfe"
GLOBALS_OBJECT = "globals.pfe"  # beside a logical backup: the server's roles and tablespaces
MANIFEST_OBJECT = "manifest.json"
# Beside a base backup (full or incremental): PostgreSQL's backup_manifest, sealed on its own, so
# the next incremental can name it (pg_basebackup --incremental) without opening the whole tar.
BACKUP_MANIFEST_OBJECT = "backup_manifest.pfe"
PIN_OBJECT = "pin.json"  # in keep/: who pinned it, why, and the tier it came from
KEEP_TIER = "keep"
LOGICAL_TIERS = ("standard", "compliance", KEEP_TIER)
BASE_TIER = "base"  # physical base backups: base/{cluster}/{backup_id}/, same shape as a tier
BACKUP_TIERS = (*LOGICAL_TIERS, BASE_TIER)

M = TypeVar("M", bound=Any)  # a Manifest; layout stays below manifest.py in the imports

_NAME = re.compile(r"^[A-Za-z0-9_][A-Za-z0-9_.-]{0,62}$")
_BACKUP_ID = re.compile(r"^(\d{8}T\d{6}Z)-([0-9a-f]{6})$")


def valid_name(name: str) -> bool:
    """Whether a database or cluster name can be used safely in an object key."""
    return bool(_NAME.fullmatch(name)) and ".." not in name


def check_name(name: str, what: str = "database") -> str:
    if not valid_name(name):
        raise UsageError(
            f"{what} name {name!r} cannot be used in the bucket "
            "(letters, digits, '_', '.', '-'; at most 63 characters)"
        )
    return name


def valid_backup_id(backup_id: str) -> bool:
    return bool(_BACKUP_ID.fullmatch(backup_id))


def check_backup_id(backup_id: str) -> str:
    if not _BACKUP_ID.fullmatch(backup_id):
        raise UsageError(
            f"{backup_id!r} is not a backup id (they look like 20261122T020000Z-1a2b3c); "
            "run `permafrost list` to see them"
        )
    return backup_id


def check_tier(tier: str) -> str:
    if tier not in BACKUP_TIERS:
        raise UsageError(f"tier {tier!r} is not one of: {', '.join(BACKUP_TIERS)}")
    return tier


def new_backup_id(now: datetime | None = None) -> str:
    """Sortable by time, unique by a random suffix: 20261122T020000Z-1a2b3c."""
    moment = (now or datetime.now(UTC)).astimezone(UTC)
    return f"{moment:%Y%m%dT%H%M%SZ}-{secrets.token_hex(3)}"


def backup_time(backup_id: str) -> datetime:
    stamp = _BACKUP_ID.fullmatch(check_backup_id(backup_id))
    assert stamp is not None
    return datetime.strptime(stamp.group(1), "%Y%m%dT%H%M%SZ").replace(tzinfo=UTC)


def join(prefix: str, *parts: str) -> str:
    return "/".join(part for part in (prefix.strip("/"), *parts) if part)


def repository_config_key(prefix: str) -> str:
    return join(prefix, REPOSITORY_CONFIG)


def backup_folder(prefix: str, tier: str, database: str, backup_id: str) -> str:
    return join(prefix, check_tier(tier), check_name(database), check_backup_id(backup_id)) + "/"


def data_key(prefix: str, tier: str, database: str, backup_id: str) -> str:
    return backup_folder(prefix, tier, database, backup_id) + DATA_OBJECT


def part_name(index: int) -> str:
    """A data part's name in a manifest's objects and parts: data-1, data-2, ..."""
    if index < 1:
        raise UsageError(f"data parts are numbered from 1, not {index}")
    return f"data-{index}"


def part_key(prefix: str, tier: str, database: str, backup_id: str, index: int) -> str:
    """A data part of a logical backup dumped in parallel, beside its schema part (data.pfe)."""
    return backup_folder(prefix, tier, database, backup_id) + part_name(index) + ".pfe"


def globals_key(prefix: str, tier: str, database: str, backup_id: str) -> str:
    return backup_folder(prefix, tier, database, backup_id) + GLOBALS_OBJECT


def manifest_key(prefix: str, tier: str, database: str, backup_id: str) -> str:
    return backup_folder(prefix, tier, database, backup_id) + MANIFEST_OBJECT


def backup_manifest_key(prefix: str, cluster: str, backup_id: str, tier: str = BASE_TIER) -> str:
    """A base backup's own backup_manifest, beside its data object: base/{cluster}/{id}/."""
    return backup_folder(prefix, tier, check_name(cluster, "cluster"), backup_id) + (
        BACKUP_MANIFEST_OBJECT
    )


def wal_key(prefix: str, cluster: str, timeline: int, name: str) -> str:
    """{prefix}/wal/{cluster}/{timeline}/{name}.pfe; the caller has checked the WAL name."""
    if "/" in name or name.startswith("."):
        raise UsageError(f"{name!r} is not a WAL file name")
    return join(prefix, "wal", check_name(cluster, "cluster"), f"{timeline:08X}", name + ".pfe")


def wal_folder(prefix: str, cluster: str) -> str:
    return join(prefix, "wal", check_name(cluster, "cluster")) + "/"


def identity_key(prefix: str, cluster: str) -> str:
    """{prefix}/clusters/{cluster}.json: outside wal/ and every tier, so no lifecycle rule
    expires it and no listing of WAL or backups meets it."""
    return join(prefix, "clusters", check_name(cluster, "cluster") + ".json")


def probe_key(prefix: str) -> str:
    """{prefix}/.probe-{random}: the object the conditional-write probe writes twice and
    deletes; random, so two probes at once never meet, and dotted, so no reader takes it for
    a backup."""
    return join(prefix, f".probe-{secrets.token_hex(8)}")


def retired_wal_cluster(cluster: str, system_identifier: str) -> str:
    """The name under wal/ that a replaced system's WAL moves to: `{cluster}.{system}`, itself a
    valid cluster name (so wal-fetch, wal status and wal verify take it as --cluster); a long
    cluster name is shortened to keep it within 63 characters."""
    if not system_identifier.isdigit():
        raise UsageError(f"{system_identifier!r} is not a system identifier")
    room = 63 - len(system_identifier) - 1
    return check_name(f"{cluster[:room]}.{system_identifier}", "cluster")


# Object lock (OBJECT_LOCK): the retention each key is locked for is its tier's, named here and
# turned into days by storage/lock.py. The repository config opens every backup, so it is locked
# as long as the longest tier; keep/ (legacy pins), pin.json, probes and clusters/ are not locked.
LOCK_REPOSITORY = "repository"
LOCKED_TIERS = ("standard", "compliance", BASE_TIER, "wal", LOCK_REPOSITORY)


def lock_tier(prefix: str, key: str) -> str | None:
    """The tier whose retention locks `key` (one of LOCKED_TIERS), or None for a key no lock
    holds: what pin and unpin rewrite (pin.json), legacy keep/, probes, cluster identities."""
    root = join(prefix) + "/" if prefix.strip("/") else ""
    if not key.startswith(root):
        return None
    rest = key[len(root) :]
    first = rest.split("/", 1)[0]
    if rest == REPOSITORY_CONFIG:
        return LOCK_REPOSITORY
    if first == "wal" and "/" in rest:
        return "wal"
    if first in ("standard", "compliance", BASE_TIER) and not rest.endswith("/" + PIN_OBJECT):
        return first
    return None


def rebase(key: str, old_prefix: str, new_prefix: str) -> str:
    """The same object's key under another repository's prefix (a copy's layout is the
    primary's): `{old_prefix}/rest` becomes `{new_prefix}/rest`."""
    root = join(old_prefix) + "/" if old_prefix.strip("/") else ""
    if not key.startswith(root):
        raise UsageError(f"{key} is not under the repository prefix {old_prefix!r}")
    return join(new_prefix, key[len(root) :])


def tier_folder(prefix: str, tier: str) -> str:
    return join(prefix, check_tier(tier)) + "/"


def relocate(manifest: M, manifest_key: str) -> M:
    """The manifest as read from `manifest_key`: the tier of its folder, its objects beside it.

    A manifest records the keys its objects were written under; a pinned backup has moved to
    keep/ by a copy, so readers look for each object in the folder the manifest was read from.
    """
    folder = manifest_key.rsplit("/", 1)[0] + "/"
    parts = manifest_key.split("/")
    tier = parts[-4] if len(parts) >= 4 and parts[-4] in BACKUP_TIERS else manifest.tier
    objects = {name: folder + key.rsplit("/", 1)[-1] for name, key in manifest.objects.items()}
    if objects == manifest.objects and tier == manifest.tier:
        return manifest
    return replace(manifest, objects=objects, tier=tier)


@dataclass(frozen=True)
class BackupKey:
    """What a key under a logical tier says: which backup, and which of its objects."""

    tier: str
    database: str
    backup_id: str
    name: str


def parse_backup_key(prefix: str, key: str) -> BackupKey | None:
    """The parts of a backup object's key, or None for any key that is not one."""
    root = join(prefix) + "/" if prefix.strip("/") else ""
    if not key.startswith(root):
        return None
    parts = key[len(root) :].split("/")
    if len(parts) != 4 or parts[0] not in BACKUP_TIERS:
        return None
    tier, database, backup_id, name = parts
    if not valid_name(database) or not _BACKUP_ID.fullmatch(backup_id):
        return None
    if not name or name.startswith("."):
        return None
    return BackupKey(tier, database, backup_id, name)
