"""The overview's chart of the last CHART_DAYS: size (dots) and duration (a line) per kind, as
SVG coordinates (1000 × 200). A dot per backup up to CHART_DOTS of them; above that (a fleet's
90 days are 22,500 backups), a dot per UTC day and kind."""

from __future__ import annotations

from datetime import UTC, datetime, timedelta
from typing import Any

from markupsafe import Markup, escape

from monitor.formats import when
from permafrost.catalog import reads
from permafrost.catalog.store import Catalog
from permafrost.text import axis_seconds, human_bytes, nice_ceiling

CHART_DAYS = 90
CHART_DOTS = 1000  # more backups than this in CHART_DAYS: a dot per day and kind


def read_chart(cat: Catalog, now: datetime, databases: list[str] | None) -> dict[str, Any]:
    """The chart of the last CHART_DAYS (of these databases only, when given): a dot per backup
    up to CHART_DOTS of them, else a dot per day and kind (a fleet's 90 days are 22,500 backups,
    more than a chart can show one by one; formatting them was the overview's largest part)."""
    start = now - timedelta(days=CHART_DAYS)
    points = reads.history(cat, start, databases, CHART_DOTS + 1)
    if len(points) <= CHART_DOTS:
        return chart(points, now)
    return chart_by_day(reads.history_by_day(cat, start, databases), now)


def chart(points: list[dict[str, Any]], now: datetime) -> dict[str, Any]:
    """Coordinates for the SVG chart (1000 × 200): per kind, size as dots and duration as a
    line, each against its own axis (size on the left, duration on the right), ending on a
    round value."""
    axes = _Axes(now, points)
    series = []
    for kind in sorted({p["kind"] for p in points}):
        mine = [p for p in points if p["kind"] == kind]
        dots = [
            axes.dot(
                p["started_at"],
                p["size_bytes"],
                f"{kind} {p['database']} {when(p['started_at'])}: "
                f"{human_bytes(p['size_bytes'] or 0)} in {axis_seconds(p['seconds'] or 0.0)}",
            )
            for p in mine
        ]
        line = [axes.line_point(p["started_at"], p["seconds"]) for p in mine]
        series.append(_series(kind, dots, line, len(mine)))
    return axes.chart(series, len(points), per_day=False)


def chart_by_day(days: list[dict[str, Any]], now: datetime) -> dict[str, Any]:
    """The chart from history_by_day's rows: per kind, a dot per UTC day at the day's largest
    backup (its title names whose, and how many that day), the line at its longest duration."""
    axes = _Axes(now, days)
    series = []
    for kind in sorted({d["kind"] for d in days}):
        mine = [d for d in days if d["kind"] == kind]
        noon = [d["day"].replace(tzinfo=UTC) + timedelta(hours=12) for d in mine]
        dots = [
            axes.dot(
                at,
                d["size_bytes"],
                f"{kind} {d['day']:%Y-%m-%d}: {d['backups']} backups, largest "
                f"{human_bytes(d['size_bytes'] or 0)} ({d['largest']}), longest "
                f"{axis_seconds(d['seconds'] or 0.0)}",
            )
            for d, at in zip(mine, noon, strict=True)
        ]
        line = [axes.line_point(at, d["seconds"]) for d, at in zip(mine, noon, strict=True)]
        series.append(_series(kind, dots, line, sum(d["backups"] for d in mine)))
    return axes.chart(series, sum(d["backups"] for d in days), per_day=True)


class _Axes:
    """The chart's scales: time across, size (left axis) and duration (right) up, each axis
    ending on a round value above the largest point."""

    def __init__(self, now: datetime, points: list[dict[str, Any]]) -> None:
        self.start = now - timedelta(days=CHART_DAYS)
        self.span = (now - self.start).total_seconds()
        self.top_size = nice_ceiling(max((p["size_bytes"] or 0 for p in points), default=0))
        self.top_seconds = nice_ceiling(max((p["seconds"] or 0.0 for p in points), default=0.0))

    def x(self, at: datetime) -> float:
        """Across, 0 to 1000 (a day's noon may fall just outside the 90 days)."""
        return max(0.0, min(1000.0, round(1000 * (at - self.start).total_seconds() / self.span, 1)))

    def dot(self, at: datetime, size: int | None, title: str) -> dict[str, Any]:
        return {
            "x": self.x(at),
            "y": round(200 - 190 * (size or 0) / self.top_size, 1),
            "title": title,
        }

    def line_point(self, at: datetime, seconds: float | None) -> str:
        return f"{self.x(at)},{round(200 - 190 * (seconds or 0.0) / self.top_seconds, 1)}"

    def chart(self, series: list[dict[str, Any]], count: int, *, per_day: bool) -> dict[str, Any]:
        return {
            "series": series,
            "top_size": human_bytes(self.top_size),
            "top_seconds": axis_seconds(self.top_seconds),
            "count": count,
            "per_day": per_day,
            "dots_max": CHART_DOTS,
        }


def _series(kind: str, dots: list[dict[str, Any]], line: list[str], backups: int) -> dict[str, Any]:
    return {
        "kind": kind,
        "dots": dots,
        "backups": backups,
        "line": " ".join(line),
        "svg": _dots_svg(dots),
    }


def _dots_svg(dots: list[dict[str, Any]]) -> Markup:
    """The series' dots as SVG, built here rather than in the template: as template
    expressions, a thousand dots were a large part of the overview (bench/fleet.py)."""
    return Markup(
        "".join(
            f'<circle cx="{d["x"]}" cy="{d["y"]}" r="3" class="size"><title>'
            f"{escape(d['title'])}</title></circle>"
            for d in dots
        )
    )
