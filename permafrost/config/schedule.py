"""Schedules: the crontab strings in the settings, read as APScheduler cron triggers.

Five fields as in crontab (`0 2 * * *`), or six with seconds first (`*/10 * * * * *`, for tests
and for operators who need it); `off` disables a job. Every refusal names its variable.
"""

from __future__ import annotations

from dataclasses import dataclass
from datetime import UTC, datetime, timedelta
from typing import TYPE_CHECKING
from zoneinfo import ZoneInfo

from permafrost.config.settings import Settings
from permafrost.errors import ConfigError

if TYPE_CHECKING:
    from apscheduler.triggers.cron import CronTrigger  # start-up cost: only schedules need it

OFF = ("off", "never", "none", "disabled")


@dataclass(frozen=True)
class Schedule:
    variable: str
    text: str
    trigger: CronTrigger | None  # None: the job is off

    @property
    def enabled(self) -> bool:
        return self.trigger is not None

    def next_after(self, moment: datetime) -> datetime | None:
        if self.trigger is None:
            return None
        fire: datetime | None = self.trigger.get_next_fire_time(None, moment)
        return fire

    def previous_before(self, now: datetime, horizon: timedelta) -> datetime | None:
        """The last time this schedule fired at or before `now`, looking back `horizon`.

        The search widens its window backwards from `now`, so a per-second schedule with a
        year of grace costs a few steps, and steps in UTC, so the repeated hour when clocks go
        back cannot make it find the same fire time twice.
        """
        if self.trigger is None:
            return None
        now = now.astimezone(UTC)
        earliest = now - horizon
        window = timedelta(seconds=1)
        while True:
            start = max(now - window, earliest)
            fire = self._next(start)
            if fire is not None and fire <= now:
                last = fire
                for _ in range(100_000):
                    following = self._next(last + timedelta(microseconds=1))
                    if following is None or following > now:
                        break
                    last = following
                return last
            if start <= earliest:
                return None
            window *= 2

    def _next(self, moment: datetime) -> datetime | None:
        assert self.trigger is not None
        fire: datetime | None = self.trigger.get_next_fire_time(None, moment.astimezone(UTC))
        return fire.astimezone(UTC) if fire is not None else None

    def longest_gap(self, start: datetime, fires: int = 60) -> timedelta | None:
        """The longest time between two runs over the next `fires` runs (None when off)."""
        if self.trigger is None:
            return None
        previous = self._next(start)
        longest = timedelta(0)
        for _ in range(fires):
            if previous is None:
                break
            following = self._next(previous + timedelta(seconds=1))
            if following is None:
                break
            longest = max(longest, following - previous)
            previous = following
        return longest


_DAYS = ("sun", "mon", "tue", "wed", "thu", "fri", "sat")


def crontab_weekdays(field: str) -> str:
    """crontab's weekday field (0 or 7 is Sunday) in APScheduler 3's terms (0 is Monday).

    APScheduler 3 reads numbers as Monday-based even in `from_crontab`, so `0 3 * * 0` would
    run on Mondays; numbers are turned into day names here instead.
    """
    if field == "*":
        return field
    days: set[int] = set()
    for part in field.split(","):
        span, _, step_text = part.partition("/")
        step = int(step_text) if step_text else 1
        if span == "*":
            first, last = 0, 6
        elif "-" in span:
            a, b = span.split("-", 1)
            first, last = _day(a), _day(b, end=True)
        else:
            first = last = _day(span)
            if step_text:
                last = 6
        if step < 1 or first > last:
            raise ValueError(f"weekday range {part!r}")
        days.update(d % 7 for d in range(first, last + 1, step))
    return ",".join(_DAYS[d] for d in sorted(days))


def _day(text: str, *, end: bool = False) -> int:
    if text.isdigit():
        number = int(text)
        if number > 7:
            raise ValueError(f"weekday {number} (0-7, 0 and 7 are Sunday)")
        return number if end or number != 7 else 0
    name = text.lower()[:3]
    if name not in _DAYS:
        raise ValueError(f"weekday {text!r}")
    return _DAYS.index(name)


def parse(variable: str, text: str, timezone: str) -> Schedule:
    """A crontab string as a trigger, or ConfigError naming the variable."""
    from apscheduler.triggers.cron import CronTrigger

    value = text.strip()
    if value.lower() in OFF or not value:
        return Schedule(variable, "off", None)
    fields = value.split()
    zone = ZoneInfo(timezone)
    try:
        if len(fields) == 5:
            fields = ["0", *fields]
        if len(fields) != 6:
            raise ValueError(f"{len(fields)} fields")
        second, minute, hour, day, month, weekday = fields
        trigger = CronTrigger(
            second=second,
            minute=minute,
            hour=hour,
            day=day,
            month=month,
            day_of_week=crontab_weekdays(weekday),
            timezone=zone,
        )
    except ValueError as exc:
        raise ConfigError(
            f"{variable}={text!r} is not a schedule ({exc}): use five crontab fields, "
            "minute hour day month weekday, like '0 2 * * *', or 'off'"
        ) from None
    return Schedule(variable, value, trigger)


def schedules(settings: Settings) -> dict[str, Schedule]:
    """Every cron schedule in the settings, by job name; base backups only with WAL archiving."""
    s = settings.schedules
    zone = s.timezone
    base = s.base_backup if s.wal_archiving != "off" else "off"
    # Incrementals only where base backups run: each is taken against the newest of them.
    incremental = s.incremental if base.strip().lower() not in ("", *OFF) else "off"
    return {
        "backup": parse("BACKUP_SCHEDULE", s.backup, zone),
        "base_backup": parse("BASE_BACKUP_SCHEDULE", base, zone),
        "incremental_backup": parse("INCREMENTAL_SCHEDULE", incremental, zone),
        "verify": parse("VERIFY_SCHEDULE", s.verify, zone),
        "retention": parse("CLEANUP_SCHEDULE", s.cleanup, zone),
        "compliance_backup": parse("COMPLIANCE_SCHEDULE", s.compliance, zone),
        "lifecycle": parse("LIFECYCLE_SCHEDULE", s.lifecycle, zone),
        "pitr_drill": parse("PITR_DRILL_SCHEDULE", drill_schedule(settings), zone),
    }


def drill_schedule(settings: Settings) -> str:
    """PITR drills run only where base backups and WAL archiving do: there is nothing to
    recover otherwise."""
    s = settings.schedules
    if s.wal_archiving == "off" or s.base_backup.strip().lower() in (*OFF, ""):
        return "off"
    return s.pitr_drill


def drill_interval(settings: Settings, now: datetime) -> timedelta | None:
    """The longest time between two scheduled drills (None when they are off)."""
    zone = settings.schedules.timezone
    return parse("PITR_DRILL_SCHEDULE", drill_schedule(settings), zone).longest_gap(now)


def base_backup_interval(settings: Settings, now: datetime) -> timedelta | None:
    """The longest time between two scheduled base backups (None when they are off)."""
    schedule = parse(
        "BASE_BACKUP_SCHEDULE", settings.schedules.base_backup, settings.schedules.timezone
    )
    return schedule.longest_gap(now)
