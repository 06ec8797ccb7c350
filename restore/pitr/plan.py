"""Point-in-time recovery, the planning half: which base backup, which WAL, and whether the
target is inside the recoverable window. Everything here only reads the bucket; everything that
can be refused is refused here, before a byte is downloaded (restore/pitr/run.py runs the plan).
"""

from __future__ import annotations

from dataclasses import dataclass
from datetime import UTC, datetime, timedelta

from permafrost import layout
from permafrost.context import Context
from permafrost.errors import (
    BackupNotFound,
    IntegrityError,
    UsageError,
)
from permafrost.text import parse_moment
from permafrost.wal import archive as walarchive
from permafrost.wal import identity as walidentity
from permafrost.wal import names as walnames
from permafrost.wal.archive import Archive, BaseBackup
from permafrost.wal.names import Segment
from restore.pitr import chain as chains
from restore.pitr.chain import Chain


@dataclass(frozen=True)
class RecoveryTarget:
    kind: str  # time, lsn, name, latest, immediate (as soon as the backup is consistent)
    text: str = ""
    time: datetime | None = None
    lsn: int | None = None

    def describe(self) -> str:
        if self.kind == "time" and self.time is not None:
            return f"time {self.time.isoformat()}"
        if self.kind == "lsn" and self.lsn is not None:
            return f"LSN {walnames.format_lsn(self.lsn)}"
        if self.kind == "name":
            return f"restore point {self.text!r}"
        if self.kind == "immediate":
            return "the moment the base backup became consistent"
        return "the end of the archived WAL"

    def settings(self) -> dict[str, str]:
        if self.kind == "time" and self.time is not None:
            return {"recovery_target_time": self.time.isoformat(sep=" ")}
        if self.kind == "lsn" and self.lsn is not None:
            return {"recovery_target_lsn": walnames.format_lsn(self.lsn)}
        if self.kind == "name":
            return {"recovery_target_name": self.text}
        if self.kind == "immediate":
            return {"recovery_target": "immediate"}
        return {}


def parse_time(text: str) -> datetime:
    """ISO 8601; without an offset, the local time zone (TZ) of this process."""
    return parse_moment(text, "--target-time")


def recovery_target(
    time_: str | None, lsn: str | None, name: str | None, latest: bool
) -> RecoveryTarget:
    if time_ is not None:
        return RecoveryTarget("time", time_, time=parse_time(time_).astimezone(UTC))
    if lsn is not None:
        try:
            return RecoveryTarget("lsn", lsn, lsn=walnames.parse_lsn(lsn))
        except ValueError as exc:
            raise UsageError(f"--target-lsn: {exc}") from None
    if name is not None:
        if not name or len(name) > 63 or "'" in name:
            raise UsageError("--target-name must be a restore point name of 1 to 63 characters")
        return RecoveryTarget("name", name)
    assert latest
    return RecoveryTarget("latest")


@dataclass(frozen=True)
class Window:
    """From the end of the oldest base backup to the newest archived, unbroken WAL."""

    start: datetime
    end: datetime | None
    start_lsn: int
    end_segment: Segment | None

    def __str__(self) -> str:
        end = self.end.isoformat() if self.end else "(no WAL archived after the base backup)"
        return f"{self.start.isoformat()} to {end}"


@dataclass
class PitrPlan:
    cluster: str
    target: RecoveryTarget
    base: BaseBackup
    window: Window
    archive: Archive
    gap: Segment | None  # the first segment missing after the base backup, if any
    later_timelines: bool
    wal_cluster: str  # where its WAL is: the cluster's folder, or a replaced system's (wal reset)
    chain: Chain  # the full that starts base's chain, and its incrementals up to base


def plan_pitr(
    ctx: Context,
    cluster: str,
    target: RecoveryTarget,
    base_id: str | None = None,
    chain: Chain | None = None,
) -> PitrPlan:
    """The plan, refused here if it cannot work. base_id names the backup to start from (a full
    or an incremental); a chain built already (verify's, from the catalog) names it too."""
    repo = ctx.repository()
    base_id = chain.last.id if chain is not None else base_id
    every = walarchive.base_backups(repo, cluster)
    if not every:
        raise BackupNotFound(
            f"cluster {cluster} has no base backup in {ctx.storage.url}: take one with "
            "`permafrost backup --kind base` (and archive WAL) before point-in-time recovery"
        )
    recorded = walidentity.read(repo, cluster)
    if base_id is not None:
        base = _named_base(every, cluster, base_id)
        bases = [b for b in every if b.system == base.system]
    else:
        bases = _of_system(every, cluster, recorded)
        base = _choose_base(bases, target)
    wal_cluster = recorded.wal_cluster_of(base.system) if recorded else cluster
    size = bases[-1].segment_size
    archive = walarchive.list_archive(repo, wal_cluster, size)
    missing = walarchive.first_missing(archive, base.start, base.stop)
    if missing is not None:
        raise IntegrityError(
            f"base backup {base.id} cannot be restored: WAL segment {archive.name(missing)} "
            f"is missing from the bucket ({_wal_key(ctx, wal_cluster, archive, missing)})"
        )
    newest = archive.newest(base.timeline) or base.stop
    gap = walarchive.first_missing(archive, base.stop.next(), newest)
    last_good = Segment(base.timeline, gap.number - 1) if gap else newest
    end_time = archive.archived_at(last_good)
    if end_time is not None:
        end_time += timedelta(seconds=1)  # object times are whole seconds; the WAL came first
    window = Window(bases[0].stop_time, end_time, bases[0].stop_lsn, last_good)
    later = any(t > base.timeline for t in archive.timelines)
    if chain is None:
        known = {b.id: b.manifest for b in every}
        chain = chains.build(base.manifest, known.get, ctx.settings.storage.prefix)
    plan = PitrPlan(cluster, target, base, window, archive, gap, later, wal_cluster, chain)
    _check_window(ctx, plan, bases)
    chains.check_present(ctx.storage, chain)
    return plan


def _named_base(bases: list[BaseBackup], cluster: str, base_id: str) -> BaseBackup:
    for base in bases:
        if base.id == base_id:
            return base
    raise BackupNotFound(
        f"no base backup {base_id} of cluster {cluster}; "
        f"there are: {', '.join(b.id for b in bases)}"
    )


def _of_system(
    bases: list[BaseBackup], cluster: str, recorded: walidentity.Identity | None
) -> list[BaseBackup]:
    """Without --base, the base backups of the archive's system: a replaced system's LSNs
    and times do not continue into the new one's, so they are only taken when named."""
    own = walarchive.of_system(bases, recorded)
    if own or recorded is None:
        return own
    raise BackupNotFound(
        f"cluster {cluster} has no base backup of {recorded.system.describe()}, the archive's "
        f"system since {recorded.since}: take one with `permafrost backup --kind base "
        f"--cluster {cluster}`; one of the system before recovers with --base ID "
        f"({', '.join(b.id for b in bases)})"
    )


def _choose_base(bases: list[BaseBackup], target: RecoveryTarget) -> BaseBackup:
    if target.kind == "time" and target.time is not None:
        moment = target.time
        usable = [b for b in bases if b.stop_time < moment]
    elif target.kind == "lsn" and target.lsn is not None:
        lsn = target.lsn
        usable = [b for b in bases if b.stop_lsn <= lsn]
    else:
        usable = bases
    if not usable:
        oldest = bases[0]
        raise UsageError(
            f"{target.describe()} is before the end of the oldest base backup "
            f"({oldest.id}, consistent from {oldest.stop_time.isoformat()} at LSN "
            f"{walnames.format_lsn(oldest.stop_lsn)}): no base backup can reach it"
        )
    return usable[-1]


def _check_window(ctx: Context, plan: PitrPlan, bases: list[BaseBackup]) -> None:
    target, window, archive = plan.target, plan.window, plan.archive
    gap_text = ""
    if plan.gap is not None:
        gap_text = (
            f": WAL segment {archive.name(plan.gap)} is missing from the bucket "
            f"({_wal_key(ctx, plan.wal_cluster, archive, plan.gap)})"
        )
    if target.kind == "time" and target.time is not None:
        if window.end is None or target.time > window.end:
            reason = gap_text or ": that WAL is not archived (yet)"
            raise UsageError(
                f"{target.describe()} is past the newest archived WAL{reason}; "
                f"the recoverable window is {window}"
            )
    elif target.kind == "lsn" and target.lsn is not None:
        needed = walnames.segment_of(target.lsn, plan.base.timeline, plan.base.segment_size)
        if window.end_segment is None or needed > window.end_segment:
            reason = gap_text or f": segment {archive.name(needed)} is not archived (yet)"
            raise UsageError(f"{target.describe()} is past the newest archived WAL{reason}")
    elif target.kind == "latest" and plan.gap is not None:
        after = archive.newest(plan.base.timeline)
        if after is not None and after > plan.gap:
            raise IntegrityError(
                f"recovery to the latest moment would stop at a hole in the archive{gap_text}; "
                f"WAL archived after it could not be replayed. Recover to a --target-time "
                f"up to {window.end.isoformat() if window.end else 'the base backup'}, or put "
                "the segment back"
            )


def _wal_key(ctx: Context, cluster: str, archive: Archive, segment: Segment) -> str:
    return layout.wal_key(
        ctx.settings.storage.prefix, cluster, segment.timeline, archive.name(segment)
    )
