"""Finding backups: by id or `latest`, from the catalog, or from the bucket when it is down.

The catalog answers quickly; the bucket always answers truly. Every lookup here falls back to
reading manifests from the bucket when the metadata store cannot be reached, so an operator can
still list and verify backups during an outage of the metadata database.
"""

from __future__ import annotations

from datetime import UTC, datetime
from typing import TYPE_CHECKING, Any

from permafrost import layout
from permafrost.catalog.records import BackupRecord, TierStats
from permafrost.context import Context
from permafrost.errors import BackupNotFound, UsageError
from permafrost.repo import crypto
from permafrost.repo.config import read_config
from permafrost.repo.manifest import Kind, Manifest
from permafrost.repo.reader import manifest_keys, read_manifest

if TYPE_CHECKING:
    from permafrost.catalog.store import Catalog

FALLBACK = "reading backups from the bucket instead"


def record_from_manifest(manifest: Manifest, key: str) -> BackupRecord:
    m = manifest
    finished = datetime.fromisoformat(m.finished_at)
    return BackupRecord(
        id=m.id,
        database=m.database,
        kind=m.kind,
        tier=m.tier,
        status="completed",
        started_at=datetime.fromisoformat(m.started_at),
        finished_at=finished,
        size_bytes=m.stored_bytes,
        dump_bytes=m.dump_bytes,
        description=m.description,
        tags=list(m.tags),
        manifest_key=key,
        manifest=m.body(),
        error=None,
        verified_at=None,
        verification_status=None,
        deleted_at=None,
        catalogued_at=datetime.now(UTC),
        parent_id=m.parent_id,
        chain_full_id=m.chain_full_id,
    )


def record_json(record: BackupRecord) -> dict[str, Any]:
    """The public shape of a backup, as `--json` prints it and the API will serve it."""
    duration = None
    if record.finished_at is not None:
        duration = round((record.finished_at - record.started_at).total_seconds(), 3)
    out = {
        "id": record.id,
        "database": record.database,
        "kind": record.kind,
        "tier": record.tier,
        "status": record.status,
        "started_at": record.started_at.isoformat(),
        "finished_at": record.finished_at.isoformat() if record.finished_at else None,
        "duration_seconds": duration,
        "size_bytes": record.size_bytes,
        "dump_size_bytes": record.dump_bytes,
        "description": record.description,
        "tags": list(record.tags),
        "verification": record.verification_status,
        "verified_at": record.verified_at.isoformat() if record.verified_at else None,
        "manifest_key": record.manifest_key,
        "error": record.error,
        "purpose": "safety" if record.is_safety else "backup",
    }
    if record.kind == Kind.BASE:
        out["incremental"] = record.incremental
        out["parent_id"] = record.parent_id
        out["chain_full_id"] = record.chain_full_id or record.id
    physical = (record.manifest or {}).get("physical")
    if physical:
        out["physical"] = physical  # base backups: LSNs, timeline, the WAL they need
    sqlite = (record.manifest or {}).get("sqlite")
    if sqlite:
        out["sqlite"] = sqlite  # SQLite backups: path, pages, user_version, SQLite's version
    return out


def find_backups(
    ctx: Context,
    *,
    database: str | None = None,
    tier: str | None = None,
    status: str | None = None,
    limit: int | None = None,
    tags: tuple[str, ...] = (),
) -> list[BackupRecord]:
    """Backups newest first, from the catalog, or from the bucket if the catalog is down;
    with tags, those that carry every one of them."""
    catalog = _index(ctx)
    if catalog is not None:
        return catalog.find(database=database, tier=tier, status=status, limit=limit, tags=tags)
    if status not in (None, "completed"):
        return []
    records = [
        r
        for r in _bucket_records(ctx)
        if (database is None or r.database == database)
        and (tier in (None, r.tier))
        and set(tags) <= set(r.tags)
    ]
    return records[:limit] if limit is not None else records


def _index(ctx: Context) -> Catalog | None:
    """The catalog to look backups up in: none as of a moment (the bucket's versions are read),
    or while the metadata store is down (after a warning)."""
    return None if ctx.reads_bucket else ctx.catalog_or_none(FALLBACK)


def _bucket_keyring(ctx: Context) -> crypto.Keyring | None:
    """Keys to check manifest signatures with, when a key is configured."""
    return ctx.repository().keyring if ctx.settings.encryption_key else None


def _no_repository(ctx: Context) -> bool:
    # Before the first backup there is no permafrost.json, and so no backup: not an error.
    return read_config(ctx.storage, ctx.settings.storage.prefix) is None


def _bucket_records(ctx: Context) -> list[BackupRecord]:
    if _no_repository(ctx):
        return []
    keyring = _bucket_keyring(ctx)
    prefix = ctx.settings.storage.prefix
    records = [
        record_from_manifest(read_manifest(ctx.storage, key, keyring), key)
        for _, key in manifest_keys(ctx.storage, prefix)
    ]
    return sorted(records, key=lambda r: (r.started_at, r.id), reverse=True)


def resolve(ctx: Context, ref: str, database: str | None = None) -> BackupRecord:
    """The backup an operator means by an id or `latest` (of --database, or the only one)."""
    if ref == "latest":
        return _latest(ctx, database)
    layout.check_backup_id(ref)
    record = _by_id(ctx, ref)
    if record is None or record.status == "deleted":
        raise BackupNotFound(
            f"no backup {ref}{_elsewhere(ctx)}: run `permafrost list` to see the backups"
        )
    return record


def _elsewhere(ctx: Context) -> str:
    """Why an id may be missing: STORAGE_URL opens no repository while the catalog knows one."""
    if not _no_repository(ctx):
        return ""
    known = ctx.catalog().known_repository()
    if known is None:
        return ""  # a new deployment, before its first backup
    if known.location is None:
        return f" (there is no repository at {ctx.location}: check STORAGE_URL)"
    return (
        f" (there is no repository at {ctx.location}, and the catalog knows {known.id} at"
        f" {known.location}: check STORAGE_URL)"
    )


def _by_id(ctx: Context, backup_id: str) -> BackupRecord | None:
    catalog = _index(ctx)
    if catalog is not None:
        return catalog.get(backup_id)
    if _no_repository(ctx):
        return None
    keyring = _bucket_keyring(ctx)
    for parsed, key in manifest_keys(ctx.storage, ctx.settings.storage.prefix):
        if parsed.backup_id == backup_id:
            return record_from_manifest(read_manifest(ctx.storage, key, keyring), key)
    return None


def _latest(ctx: Context, database: str | None) -> BackupRecord:
    if database is None:
        configured = ctx.settings.source.backed_up
        if len(configured) == 1:
            database = configured[0]
    # `latest` is a logical backup: base backups are for pitr, which chooses its own.
    completed = [
        r for r in find_backups(ctx, database=database, status="completed") if r.kind != Kind.BASE
    ]
    # A restore's safety backup is `latest` only of a database that has no backup of its own.
    completed = [r for r in completed if not r.is_safety] or completed
    if not completed:
        where = f" of {database}" if database else ""
        raise BackupNotFound(f"no completed backup{where}: take one with `permafrost backup`")
    databases = sorted({r.database for r in completed})
    if len(databases) > 1:
        raise UsageError(
            f"`latest` is ambiguous: there are backups of {', '.join(databases)}; "
            "add --database NAME"
        )
    return completed[0]


def chain_of(ctx: Context, record: BackupRecord) -> list[BackupRecord]:
    """The chain a base backup belongs to, up to it: [full, incremental, ..., record].

    Read from the catalog (else the bucket); a member missing on the way is BackupNotFound,
    naming it (the chain cannot be restored without it)."""
    members = find_backups(ctx, database=record.database, status="completed")
    return chain_from(members, record)


def chain_from(records: list[BackupRecord], record: BackupRecord) -> list[BackupRecord]:
    """chain_of's walk over records already read: from `record` up its parents to the full."""
    by_id = {r.id: r for r in records}
    chain = [record]
    while chain[0].parent_id is not None:
        parent = by_id.get(chain[0].parent_id)
        if parent is None or parent.status != "completed":
            raise BackupNotFound(
                f"base backup {chain[0].id} is an incremental of {chain[0].parent_id}, which is "
                f"not in the bucket any more: the chain of {record.id} cannot be restored"
            )
        if parent in chain:
            raise BackupNotFound(f"the chain of {record.id} loops at {parent.id}")
        chain.insert(0, parent)
    return chain


def load_manifest(ctx: Context, record: BackupRecord) -> Manifest:
    """The backup's manifest from the bucket, its signature checked against the keys."""
    if record.status != "completed" or record.manifest_key is None:
        raise BackupNotFound(f"backup {record.id} is {record.status}, not a completed backup")
    key = ctx.own_key(record.manifest_key)
    return read_manifest(ctx.storage, key, ctx.repository().keyring)


def stats_from_records(records: list[BackupRecord]) -> list[TierStats]:
    """What the catalog's stats query answers, computed from records read from the bucket."""
    groups: dict[tuple[str, str], list[BackupRecord]] = {}
    for record in records:
        groups.setdefault((record.database, record.tier), []).append(record)
    return [
        TierStats(
            database=database,
            tier=tier,
            backups=len(group),
            size_bytes=sum(r.size_bytes or 0 for r in group),
            dump_bytes=sum(r.dump_bytes or 0 for r in group),
            oldest=min(r.started_at for r in group),
            newest=max(r.started_at for r in group),
            last_verified=None,
            failed=0,
        )
        for (database, tier), group in sorted(groups.items())
    ]
