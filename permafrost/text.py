"""All human formatting: tables and JSON for scripts, sizes, durations, moments, one-line errors.

Every module that shows a person a size, a duration or an error message formats it here, so
the CLI, the dashboard and the alert emails say the same thing the same way.
"""

from __future__ import annotations

import json
import math
import sys
from collections.abc import Sequence
from datetime import UTC, datetime
from typing import Any

from permafrost.errors import UsageError


def print_json(value: Any) -> None:
    json.dump(value, sys.stdout, indent=2, default=_default)
    sys.stdout.write("\n")


def _default(value: Any) -> Any:
    if isinstance(value, datetime):
        return value.isoformat()
    raise TypeError(f"cannot serialise {type(value).__name__}")


def table(headers: Sequence[str], rows: Sequence[Sequence[str]]) -> str:
    widths = [len(h) for h in headers]
    for row in rows:
        widths = [max(w, len(cell)) for w, cell in zip(widths, row, strict=True)]
    lines = [headers, *rows]
    return "\n".join(
        "  ".join(cell.ljust(width) for cell, width in zip(line, widths, strict=True)).rstrip()
        for line in lines
    )


def when(moment: datetime | None) -> str:
    return moment.strftime("%Y-%m-%d %H:%M:%S UTC") if moment else "-"


def iso(moment: datetime | None, timespec: str = "seconds") -> str | None:
    """A moment in UTC for JSON and for machines, or None."""
    return moment.astimezone(UTC).isoformat(timespec=timespec) if moment else None


def parse_moment(text: str, option: str) -> datetime:
    """A moment given on the command line: ISO 8601 (`Z` or an offset; none: the local time
    zone, TZ), or UsageError naming the option."""
    try:
        moment = datetime.fromisoformat(text.strip().replace("Z", "+00:00"))
    except ValueError:
        raise UsageError(
            f"{option} {text!r} is not a time: use ISO 8601, like "
            "2026-11-22T03:15:00Z or '2026-11-22 03:15:00+01:00'"
        ) from None
    return moment if moment.tzinfo else moment.astimezone()


def one_line(text: object, limit: int | None = 60) -> str:
    """Whitespace folded to single spaces, cut to `limit` characters with an ellipsis."""
    flat = " ".join(str(text).split())
    return flat if limit is None or len(flat) <= limit else flat[: limit - 1] + "…"


def error_line(exc: BaseException) -> str:
    """The whole message of an error on one line, for `permafrost: error: …`."""
    return one_line(exc, None) or type(exc).__name__


def first_line(exc: BaseException) -> str:
    """The first line of an error (a driver's detail lines follow it), or its class name."""
    text = str(exc).strip()
    return text.splitlines()[0] if text else type(exc).__name__


def human_bytes(count: float) -> str:
    for unit in ("B", "KiB", "MiB", "GiB", "TiB"):
        if abs(count) < 1024 or unit == "TiB":
            return f"{count:.0f} {unit}" if unit == "B" else f"{count:.1f} {unit}"
        count /= 1024
    raise AssertionError("unreachable")


def clock(seconds: float) -> str:
    """`07:42` or `1:07:42`: elapsed time, as a progress line shows it."""
    minutes, secs = divmod(int(seconds), 60)
    hours, minutes = divmod(minutes, 60)
    return f"{hours}:{minutes:02d}:{secs:02d}" if hours else f"{minutes:02d}:{secs:02d}"


def short_duration(seconds: float) -> str:
    """`45 s`, `12 min`, `5 h`, `9 days`: an age in a dashboard cell."""
    seconds = max(0, int(seconds))
    if seconds < 120:
        return f"{seconds} s"
    if seconds < 7200:
        return f"{seconds // 60} min"
    if seconds < 3 * 86400:
        return f"{seconds // 3600} h"
    return f"{seconds // 86400} days"


def axis_seconds(seconds: float) -> str:
    """`0.4 s`, `12 s`, `3 min`, `2 h`: the top of a chart's duration axis, never `0 s`."""
    if seconds < 10:
        return f"{seconds:.1f} s" if seconds >= 0.1 else f"{seconds * 1000:.0f} ms"
    return short_duration(seconds)


def nice_ceiling(value: float) -> float:
    """The smallest 1, 2 or 5 × 10^k at or above value: an axis that ends on a round number."""
    if value <= 0:
        return 1.0
    step = 10 ** math.floor(math.log10(value))
    return next(m * step for m in (1, 2, 5, 10) if m * step >= value * (1 - 1e-9))


def plain_duration(seconds: float) -> str:
    """`45 s`, `2 min 5 s`, `1 h 5 min`, `3 days 4 h`: how long, with its units, to the unit
    that matters (a plan's recovery time and recovery point)."""
    s = max(0, round(seconds))
    if s < 60:
        return f"{s} s"
    if s < 3600:
        minutes, secs = divmod(s, 60)
        return f"{minutes} min {secs} s" if secs else f"{minutes} min"
    if s < 86400:
        hours, minutes = divmod(s // 60, 60)
        return f"{hours} h {minutes} min" if minutes else f"{hours} h"
    days, hours = divmod(s // 3600, 24)
    unit = "day" if days == 1 else "days"
    return f"{days} {unit} {hours} h" if hours else f"{days} {unit}"


def spoken_duration(seconds: float) -> str:
    """`27h`, `7 minutes`, `45 seconds`, `3 days`: how long, as a person would say it."""
    s = max(0, int(seconds))
    if s < 90:
        return _plural(s, "second")
    if s < 2 * 3600:
        return _plural(s // 60, "minute")
    if s < 72 * 3600:
        return f"{s // 3600}h"
    return _plural(s // 86400, "day")


def _plural(count: int, unit: str) -> str:
    return f"{count} {unit}" if count == 1 else f"{count} {unit}s"
