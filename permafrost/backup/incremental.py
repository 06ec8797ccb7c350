"""An incremental base backup (PostgreSQL 17+): its parent chosen, fetched and checked.

`pg_basebackup --incremental=FILE` sends only the blocks changed since the backup whose
backup_manifest FILE is; the server knows which from its WAL summaries (`summarize_wal`). The
parent is the newest completed base backup (full or incremental) of the cluster in this
repository; its backup_manifest is the sealed object stored beside it, checked against the
SHA-256 its signed manifest recorded, then written to a temporary file for pg_basebackup.

Every refusal is an `IncrementalRefused` raised before anything is written to the bucket:
a server before 17 (IncrementalUnsupported), summarize_wal off (SummarizeWalOff, with the
statements that turn it on), no full base backup yet or a chain member gone (ParentMissing),
a parent that fails its checks (ParentDamaged). The scheduler takes a full in their place
(scheduler/jobs.py), except on a server before 17, where a full would change nothing.
"""

from __future__ import annotations

import hashlib
import tempfile
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from permafrost.backup import lookup, physical
from permafrost.backup.physical import Parent
from permafrost.catalog.records import BackupRecord
from permafrost.config.settings import SourceSettings
from permafrost.context import Context
from permafrost.errors import (
    BackupNotFound,
    IncrementalUnsupported,
    IntegrityError,
    NoFullBackup,
    NotFound,
    ParentDamaged,
    ParentMissing,
    SourceError,
    SummarizeWalOff,
)
from permafrost.postgres import tools as pgtools
from permafrost.repo.integrity import check_data_object
from permafrost.repo.manifest import Kind, Manifest
from permafrost.repo.pipeline import open_bytes

FIRST_MAJOR = 17
ENABLE = "ALTER SYSTEM SET summarize_wal = on; SELECT pg_reload_conf()"
_SUMMARIES_MISSING = "WAL summaries are required"  # pg_basebackup's error, PostgreSQL 17+


@dataclass(frozen=True)
class Prepared:
    """What an incremental needs before pg_basebackup runs: the parent, the server's facts."""

    parent: Parent
    facts: dict[str, Any]


@contextmanager
def prepared(ctx: Context, cluster: str, source: SourceSettings) -> Iterator[Prepared]:
    """The checked parent of the next incremental of `cluster`, its backup_manifest in a
    temporary file for as long as the backup runs; or an IncrementalRefused."""
    facts = physical.server_facts(source)
    refuse_before_17(int(facts["server_version_num"]) // 10000)
    refuse_without_summaries(source)
    parent = parent_manifest(ctx, cluster, facts)
    body = parent_backup_manifest(ctx, parent)
    with tempfile.TemporaryDirectory(prefix="permafrost-incremental-") as folder:
        path = Path(folder) / "backup_manifest"
        path.write_bytes(body)
        chain = parent.chain_full_id or parent.id
        yield Prepared(Parent(parent.id, chain, str(path)), facts)


def refuse_before_17(major: int) -> None:
    if major < FIRST_MAJOR:
        raise IncrementalUnsupported(
            f"the server runs PostgreSQL {major}: incremental base backups need PostgreSQL "
            f"{FIRST_MAJOR} or newer; take full base backups (permafrost backup --kind base)"
        )


def refuse_without_summaries(source: SourceSettings) -> None:
    if not pgtools.setting_on(source, "summarize_wal"):
        raise SummarizeWalOff(
            "summarize_wal is off on the server, so it cannot tell which blocks changed: "
            f"turn it on with `{ENABLE}` (as a superuser), then take a full base backup "
            "to start a chain"
        )


def summaries_missing(exc: SourceError, parent_id: str) -> SourceError:
    """pg_basebackup's failure, read: WAL summaries that do not reach back to the parent (it
    was taken before summarize_wal was on, or they were removed) are a refusal, not a fault."""
    if _SUMMARIES_MISSING not in str(exc):
        return exc
    refusal = SummarizeWalOff(
        f"the server's WAL summaries do not reach back to the parent {parent_id} (summarize_wal "
        "was off for part of the time since, or wal_summary_keep_time removed them): take a "
        "full base backup to start a new chain"
    )
    refusal.recorded = True  # pg_basebackup ran: its run is recorded, failed, with this reason
    return refusal


def newest_base(ctx: Context, cluster: str) -> tuple[BackupRecord, list[BackupRecord]]:
    """The newest completed base backup of the cluster, and every one (for its chain)."""
    bases = [
        r
        for r in lookup.find_backups(ctx, database=cluster, status="completed")
        if r.kind == Kind.BASE
    ]
    if not bases:
        raise NoFullBackup(
            f"there is no full base backup of cluster {cluster} to take an incremental "
            "against: take one first (permafrost backup --kind base)"
        )
    return bases[0], bases


def parent_manifest(ctx: Context, cluster: str, facts: dict[str, Any]) -> Manifest:
    """The newest base backup's manifest, its whole chain present in the bucket."""
    newest, bases = newest_base(ctx, cluster)
    try:
        chain = lookup.chain_from(bases, newest)
    except BackupNotFound as exc:
        raise ParentMissing(str(exc)) from None
    manifests = [_member(ctx, record) for record in chain]
    parent = manifests[-1]
    system = str(parent.physical.get("system_identifier", ""))
    if system and system != facts["system_identifier"]:
        raise ParentMissing(
            f"the newest base backup {parent.id} is of another system ({system}) than the "
            f"server ({facts['system_identifier']}): take a full base backup"
        )
    return parent


def _member(ctx: Context, record: BackupRecord) -> Manifest:
    """A chain member's signed manifest, and its data object present at its recorded size."""
    try:
        manifest = lookup.load_manifest(ctx, record)
    except (NotFound, BackupNotFound):
        raise ParentMissing(
            f"base backup {record.id}, which the next incremental depends on, is missing "
            "from the bucket: take a full base backup to start a new chain"
        ) from None
    except IntegrityError as exc:
        raise ParentDamaged(f"base backup {record.id} fails its checks: {exc}") from None
    try:
        check_data_object(ctx.storage, manifest)
    except IntegrityError as exc:
        raise ParentMissing(
            f"{exc}: the next incremental cannot depend on it; take a full base backup"
        ) from None
    return manifest


def parent_backup_manifest(ctx: Context, parent: Manifest) -> bytes:
    """The parent's backup_manifest, opened and checked against the SHA-256 it was taken with."""
    key = parent.objects.get("backup_manifest")
    if key is None:
        raise ParentMissing(
            f"base backup {parent.id} has no backup_manifest stored beside it (taken by an "
            "older Permafrost): take a full base backup to start a chain"
        )
    try:
        body = open_bytes(ctx.repository().keyring, ctx.storage.get(key))
    except NotFound:
        raise ParentMissing(
            f"the backup_manifest of base backup {parent.id} is missing from the bucket "
            f"({key}): take a full base backup to start a new chain"
        ) from None
    except IntegrityError as exc:
        raise ParentDamaged(
            f"the backup_manifest of base backup {parent.id} is damaged ({exc}): "
            "take a full base backup to start a new chain"
        ) from None
    if hashlib.sha256(body).hexdigest() != parent.physical.get("backup_manifest_sha256"):
        raise ParentDamaged(
            f"the backup_manifest of base backup {parent.id} does not match the SHA-256 its "
            "manifest recorded: take a full base backup to start a new chain"
        )
    return body
