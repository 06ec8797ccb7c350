"""Copying to each destination, recorded in the catalog: what the scheduler and `permafrost copy`
call.

A destination that does not answer is recorded (copy_destinations.last_error) and skipped: it
never fails the backup that was being copied, and the next run (the scheduler's `copy` job, every
minute, or `permafrost copy --all-missing`) catches up from the catalog, which knows what each
destination lacks. One copier per destination at a time (an advisory lock); another finding it
busy leaves it alone.
"""

from __future__ import annotations

import logging
from collections.abc import Callable, Iterable
from dataclasses import dataclass, field
from datetime import UTC, datetime, timedelta

from permafrost.catalog.copy_records import CopyRecord, WalCopyRecord
from permafrost.catalog.records import BackupRecord
from permafrost.config.copies import CopyDestination
from permafrost.context import Context
from permafrost.copies.backup import copy_backup
from permafrost.copies.objects import Source, server_side_bucket
from permafrost.copies.target import CopyTarget, open_target
from permafrost.copies.wal import copy_wal
from permafrost.errors import IntegrityError, PermafrostError, StorageUnavailable
from permafrost.text import first_line

log = logging.getLogger("permafrost.copies")
COPY_LOCK = 0x636F7079  # 'copy': one copier per destination
Say = Callable[[str], None]


@dataclass
class DestinationResult:
    """What a run did at one destination."""

    name: str
    copied: list[str] = field(default_factory=list)  # backup ids now verified there
    failed: dict[str, str] = field(default_factory=dict)  # backup id -> why
    wal_segments: int = 0
    error: str | None = None  # the destination could not be used at all
    busy: bool = False  # another copier holds it
    integrity: bool = False  # an object failed its SHA-256 check (primary's or read back)

    @property
    def ok(self) -> bool:
        return self.error is None and not self.failed


def where_copied(ctx: Context, backup_ids: Iterable[str]) -> dict[str, list[CopyRecord]]:
    """The verified copies of these backups, by backup id ({} without the metadata store: then
    only the primary is known)."""
    catalog = ctx.catalog_or_none("showing backups without where their copies are")
    return catalog.copies_of_many(backup_ids) if catalog is not None else {}


def copy_json(copy: CopyRecord) -> dict[str, object]:
    return {
        "destination": copy.destination,
        "repository_id": copy.repository_id,
        "manifest_key": copy.manifest_key,
        "verified_at": copy.verified_at.isoformat(),
        "method": copy.method,
    }


def wanted(destination: CopyDestination, records: Iterable[BackupRecord]) -> list[BackupRecord]:
    """The backups among these that the destination copies (COPY_<N>_TIERS)."""
    return [r for r in records if r.status == "completed" and destination.copies_tier(r.tier)]


def destinations_for(ctx: Context, names: Iterable[str] = ()) -> list[CopyDestination]:
    """The configured destinations, or those named (ConfigError for a name not configured)."""
    chosen = list(names)
    if not chosen:
        return list(ctx.settings.copies.destinations)
    return [ctx.settings.copies.named(name) for name in chosen]


def copy_to(
    ctx: Context,
    destination: CopyDestination,
    backups: list[BackupRecord] | None,
    *,
    wal: bool = False,
    say: Say = log.info,
) -> DestinationResult:
    """Copy these backups (None: every one the destination lacks) and, with wal, the WAL."""
    result = DestinationResult(destination.name)
    catalog = ctx.catalog()
    if not catalog.try_lock(COPY_LOCK, destination.name):
        result.busy = True
        return result
    try:
        _copy_locked(ctx, destination, backups, wal, say, result)
    finally:
        catalog.unlock(COPY_LOCK, destination.name)
    return result


def _copy_locked(
    ctx: Context,
    destination: CopyDestination,
    backups: list[BackupRecord] | None,
    wal: bool,
    say: Say,
    result: DestinationResult,
) -> None:
    catalog = ctx.catalog()
    primary = ctx.repository()
    try:
        target = open_target(ctx.settings, primary, destination)
    except PermafrostError as exc:
        result.error = first_line(exc)
        catalog.destination_failed(destination.name, destination.storage.location, result.error)
        say(f"copy {destination.name}: cannot be used: {result.error}")
        return
    catalog.destination_reached(destination.name, target.repository.id, target.location)
    source = Source(
        ctx.storage,
        ctx.settings.storage,
        server_side_bucket(ctx.settings.storage, destination.storage),
    )
    if backups is None:  # what it lacks, but not what its own retention would delete now
        missing = catalog.missing_copies(destination.name, _tiers(destination))
        todo = [r for r in missing if _young_enough(destination, r, datetime.now(UTC))]
    else:
        todo = wanted(destination, backups)
    for record in todo:
        if not _copy_one(ctx, source, target, record, say, result):
            return  # the destination went away: the rest waits for the next run
    if wal and "wal" in destination.tiers:
        _copy_wal(ctx, source, target, say, result)


def _copy_one(
    ctx: Context,
    source: Source,
    target: CopyTarget,
    record: BackupRecord,
    say: Say,
    result: DestinationResult,
) -> bool:
    """Copy one backup and record it; False when the destination stopped answering."""
    catalog = ctx.catalog()
    assert record.manifest_key is not None
    try:
        done = copy_backup(
            source,
            ctx.settings.storage.prefix,
            ctx.repository().keyring,
            record.manifest_key,
            target,
        )
    except PermafrostError as exc:
        error = first_line(exc)
        result.failed[record.id] = error
        result.integrity = result.integrity or isinstance(exc, IntegrityError)
        catalog.destination_failed(target.name, target.location, f"{record.id}: {error}")
        say(f"copy {target.name}: backup {record.id} failed: {error}")
        return not isinstance(exc, StorageUnavailable)
    catalog.backup_copied(
        CopyRecord(
            backup_id=record.id,
            repository_id=target.repository.id,
            destination=target.name,
            manifest_key=done.manifest_key,
            stored_bytes=done.stored_bytes,
            method=str(done.method),
            seconds=round(done.seconds, 3),
            verified_at=datetime.now(UTC),
        )
    )
    result.copied.append(record.id)
    say(
        f"copy {target.name}: backup {record.id} verified there "
        f"({done.stored_bytes} bytes, {done.method}, {done.seconds:.1f} s)"
    )
    return True


def _copy_wal(
    ctx: Context, source: Source, target: CopyTarget, say: Say, result: DestinationResult
) -> None:
    catalog = ctx.catalog()
    try:
        marks = {w.cluster: w.last_segment for w in catalog.wal_copies(target.name)}
        clusters = copy_wal(source, ctx.settings.storage.prefix, target, marks)
    except PermafrostError as exc:
        error = first_line(exc)
        result.failed["wal"] = error
        catalog.destination_failed(target.name, target.location, f"WAL: {error}")
        say(f"copy {target.name}: WAL failed: {error}")
        return
    for cluster in clusters:
        result.wal_segments += cluster.segments
        catalog.wal_copied(
            WalCopyRecord(
                destination=target.name,
                repository_id=target.repository.id,
                cluster=cluster.cluster,
                last_segment=cluster.last_segment,
                last_copied_at=None,
                segments=cluster.segments,
                bytes=cluster.bytes,
            )
        )
        if cluster.segments:
            say(
                f"copy {target.name}: {cluster.segments} WAL files of {cluster.cluster} "
                "verified there"
            )


def _young_enough(destination: CopyDestination, record: BackupRecord, now: datetime) -> bool:
    """Whether the copy's own retention days (COPY_<N>_RETENTION_DAYS for standard backups,
    _COMPLIANCE_RETENTION_DAYS for compliance ones) still cover the backup: older ones are not
    sent only to be deleted there by the next retention run."""
    days = {
        "standard": destination.retention_days,
        "compliance": destination.compliance_retention_days,
    }.get(record.tier)
    return days is None or now - record.started_at < timedelta(days=days)


def _tiers(destination: CopyDestination) -> tuple[str, ...]:
    tiers = tuple(t for t in destination.tiers if t != "wal")
    return (*tiers, "keep") if tiers else ()
