"""What retention keeps, from the settings: the youngest age at which each folder may expire.

- standard/: retention keeps backups up to max(RETENTION_DAILY days, RETENTION_WEEKLY weeks), and
  holds those it must keep longer (min-keep) in keep/ shortly before STANDARD_TIER_DAYS, so no
  rule may expire standard/ sooner than either;
- compliance/: nothing sooner than COMPLIANCE_TIER_DAYS;
- base/ and wal/: point-in-time recovery to any moment of the last PITR_WINDOW_DAYS starts from
  a base backup up to one base-backup interval older than that, and needs every WAL file since;
- keep/ and permafrost.json: nothing may ever expire (permafrost.json holds the KDF salt: without
  it no backup can be opened).
"""

from __future__ import annotations

import math
from dataclasses import dataclass, field, replace
from datetime import datetime, timedelta
from typing import Any

from permafrost import layout
from permafrost.config.fleet import load_fleet
from permafrost.config.schedule import base_backup_interval
from permafrost.config.settings import RetentionSettings, Settings
from permafrost.retention.lifecycle.read import overlaps
from permafrost.retention.lifecycle.rules import folders


@dataclass(frozen=True)
class Requirement:
    """The youngest age at which objects under `folder` may expire (None: never)."""

    name: str  # standard, compliance, base, wal, keep, config
    folder: str  # a folder, or the repository config's key
    days: int | None
    why: str

    def covered_by(self, prefix: str) -> bool:
        if self.name == "config":
            return self.folder.startswith(prefix)
        return overlaps(prefix, self.folder)

    def to_json(self) -> dict[str, Any]:
        return {"what": self.name, "prefix": self.folder, "min_days": self.days, "why": self.why}


@dataclass
class Verdict:
    """Whether the tier settings expire anything retention keeps, and each folder's floor."""

    requirements: list[Requirement]
    problems: list[str] = field(default_factory=list)
    notes: list[str] = field(default_factory=list)


def check_settings(settings: Settings, now: datetime) -> Verdict:
    """Whether the tier settings expire anything retention keeps; and each tier's minimum."""
    where = folders(settings.storage.prefix)
    out = Verdict([])
    _standard(settings.retention, where, out)
    _compliance(settings.retention, where, out)
    need, why = _pitr(settings, now, out)
    for tier in (layout.BASE_TIER, "wal"):
        out.requirements.append(
            Requirement(tier, where[tier], max(need, settings.retention.wal_days), why)
        )
    out.requirements.append(
        Requirement(layout.KEEP_TIER, where[layout.KEEP_TIER], None, "pinned backups")
    )
    config = layout.repository_config_key(settings.storage.prefix)
    out.requirements.append(Requirement("config", config, None, "the repository"))
    return out


def _standard(r: RetentionSettings, where: dict[str, str], out: Verdict) -> None:
    span = max(r.daily, r.weekly * 7)
    kept = (
        f"RETENTION_DAILY={r.daily} ({r.daily} days) and RETENTION_WEEKLY={r.weekly} "
        f"({r.weekly * 7} days)"
    )
    if r.standard_days < span:
        out.problems.append(
            f"STANDARD_TIER_DAYS={r.standard_days} is shorter than what retention keeps in the "
            f"standard tier, {kept}: lifecycle would expire standard backups that retention "
            f"still keeps; set STANDARD_TIER_DAYS to {span} or more"
        )
    out.requirements.append(
        Requirement(
            "standard",
            where["standard"],
            max(span, r.standard_days),
            f"retention keeps standard backups up to {span} days ({kept}) and moves those it "
            f"must keep longer to keep/ shortly before STANDARD_TIER_DAYS={r.standard_days}",
        )
    )


def _compliance(r: RetentionSettings, where: dict[str, str], out: Verdict) -> None:
    out.requirements.append(
        Requirement(
            "compliance",
            where["compliance"],
            r.compliance_days,
            f"retention keeps compliance backups COMPLIANCE_TIER_DAYS={r.compliance_days} days",
        )
    )


def _pitr(settings: Settings, now: datetime, out: Verdict) -> tuple[int, str]:
    """The days base/ and wal/ must keep for point-in-time recovery, and why: for the cluster
    that needs the most, of every cluster whose WAL is archived (a SOURCES_FILE source's with
    its own `wal:` and base backup schedule)."""
    r = settings.retention
    held = f"retention holds base backups until shortly before WAL_RETENTION_DAYS={r.wal_days}"
    archived = _archiving(settings)
    if not archived:
        out.notes.append(
            "WAL_ARCHIVING=off: the expiry of wal/ and base/ is not checked against "
            "PITR_WINDOW_DAYS and BASE_BACKUP_SCHEDULE"
        )
        return 0, held
    needs = [_pitr_of(each, now, out, held) for each in archived]
    out.problems[:] = list(dict.fromkeys(out.problems))  # the same words for two clusters: once
    out.notes[:] = list(dict.fromkeys(out.notes))
    return max(needs, key=lambda need: need[0])


def _archiving(settings: Settings) -> list[Settings]:
    """The settings of each cluster whose WAL is archived (its schedules: a fleet source's)."""
    fleet = load_fleet(settings)
    if fleet.from_file is None:
        return [] if settings.schedules.wal_archiving == "off" else [settings]
    return [replace(settings, schedules=s.schedules) for s in fleet.sources if s.wal != "off"]


def _pitr_of(settings: Settings, now: datetime, out: Verdict, held: str) -> tuple[int, str]:
    r, mode = settings.retention, settings.schedules.wal_archiving
    interval = base_backup_interval(settings, now)
    if interval:
        return _pitr_with_interval(r, interval, held, out)
    need = r.pitr_window_days
    if r.wal_days < need:
        out.problems.append(
            f"WAL_RETENTION_DAYS={r.wal_days} is shorter than PITR_WINDOW_DAYS={need}: WAL "
            "and base backups that point-in-time recovery needs would expire"
        )
    out.notes.append(
        f"WAL_ARCHIVING={mode} but BASE_BACKUP_SCHEDULE is off: "
        "with base backups taken by hand, WAL_RETENTION_DAYS must also cover the time "
        "between two of them, which cannot be checked"
    )
    return need, f"point-in-time recovery needs PITR_WINDOW_DAYS={need} days, and {held}"


def _pitr_with_interval(
    r: RetentionSettings, interval: timedelta, held: str, out: Verdict
) -> tuple[int, str]:
    need = math.ceil((interval + timedelta(days=r.pitr_window_days)).total_seconds() / 86400)
    because = (
        f"the base backup interval ({_days_text(interval)}, BASE_BACKUP_SCHEDULE) plus "
        f"PITR_WINDOW_DAYS={r.pitr_window_days}"
    )
    if r.wal_days < need:
        out.problems.append(
            f"WAL_RETENTION_DAYS={r.wal_days} is shorter than {because}: WAL that "
            "point-in-time recovery needs would expire"
        )
        out.problems.append(
            f"WAL_RETENTION_DAYS={r.wal_days} (the expiry of base/) is shorter than "
            f"{because}: the base backups that point-in-time recovery starts from would "
            "expire"
        )
    return need, f"point-in-time recovery needs {because} = {need} days, and {held}"


def _days_text(span: timedelta) -> str:
    days = span.total_seconds() / 86400
    text = f"{days:.0f}" if abs(days - round(days)) < 0.05 else f"{days:.1f}"
    return f"{text} day" if text == "1" else f"{text} days"
