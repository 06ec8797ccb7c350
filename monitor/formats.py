"""The pages' moments: "3 h ago" and "2026-12-07 02:00 UTC" (the templates' `ago` and `when`)."""

from __future__ import annotations

from datetime import UTC, datetime

from permafrost.text import short_duration


def ago(moment: datetime | None, now: datetime | None = None) -> str:
    if moment is None:
        return "never"
    seconds = ((now or datetime.now(UTC)) - moment).total_seconds()
    return f"{short_duration(seconds)} ago"


def when(moment: datetime | str | None) -> str:
    if moment is None:
        return "-"
    if isinstance(moment, str):
        moment = datetime.fromisoformat(moment)
    return moment.astimezone(UTC).strftime("%Y-%m-%d %H:%M UTC")
