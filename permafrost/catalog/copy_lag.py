"""How far each copy destination lags behind the primary, from the catalog of copies
(catalog/copies.py, migration 0018), in one statement per destination.

The lag is the age of the oldest completed backup (of the tiers the destination copies) that
the destination's current repository holds no verified copy of: zero when it holds them all.
That is what an operator means by "the copy is two days behind", and it grows for a copy that
never answered, where "now minus its newest copy" would say nothing at all. The newest verified
copy (its backup and when it was verified) is read beside it, for the dashboard and /metrics.
"""

from __future__ import annotations

from collections.abc import Iterable
from dataclasses import dataclass
from datetime import datetime

from psycopg.rows import class_row

from permafrost.catalog.db import SCHEMA, db_errors
from permafrost.catalog.store import Catalog
from permafrost.config.copies import CopyDestination, CopySettings

_HELD = f"""
    SELECT 1 FROM {SCHEMA}.backup_copies c
    JOIN {SCHEMA}.copy_destinations d
      ON d.name = c.destination AND d.repository_id = c.repository_id
    WHERE c.backup_id = b.id AND d.name = %(name)s"""

_LAG = f"""
WITH missing AS (
    SELECT b.id, coalesce(b.finished_at, b.started_at) AS at FROM backups b
    WHERE b.status = 'completed' AND b.tier = ANY(%(tiers)s) AND NOT EXISTS ({_HELD})
      AND NOT (b.tier = 'standard' AND %(standard_days)s::int IS NOT NULL
               AND b.started_at <= now() - %(standard_days)s::int * interval '1 day')
      AND NOT (b.tier = 'compliance' AND %(compliance_days)s::int IS NOT NULL
               AND b.started_at <= now() - %(compliance_days)s::int * interval '1 day')
), newest AS (
    SELECT b.id, coalesce(b.finished_at, b.started_at) AS at, c.verified_at
    FROM {SCHEMA}.backup_copies c
    JOIN {SCHEMA}.copy_destinations d
      ON d.name = c.destination AND d.repository_id = c.repository_id
    JOIN backups b ON b.id = c.backup_id
    WHERE d.name = %(name)s AND b.status = 'completed' AND c.removed_at IS NULL
    ORDER BY b.started_at DESC, b.id DESC LIMIT 1
)
SELECT %(name)s AS destination,
       (SELECT count(*) FROM missing) AS missing,
       (SELECT min(at) FROM missing) AS oldest_missing_at,
       (SELECT id FROM missing ORDER BY at, id LIMIT 1) AS oldest_missing_id,
       n.id AS newest_id, n.at AS newest_at, n.verified_at AS newest_verified_at,
       d.last_error, d.last_error_at, d.last_success_at
FROM (SELECT 1) one
LEFT JOIN newest n ON true
LEFT JOIN {SCHEMA}.copy_destinations d ON d.name = %(name)s
"""


@dataclass(frozen=True)
class CopyLag:
    """One destination against the primary, as the catalog knows it now."""

    destination: str
    missing: int  # completed backups it lacks
    oldest_missing_at: datetime | None  # when the oldest of them finished
    oldest_missing_id: str | None
    newest_id: str | None  # the newest backup it holds a verified copy of
    newest_at: datetime | None  # when that backup finished
    newest_verified_at: datetime | None  # when its copy was read back and matched
    last_error: str | None  # the destination's last failure, if newer than its last success
    last_error_at: datetime | None
    last_success_at: datetime | None

    def lag_seconds(self, now: datetime) -> float:
        if self.oldest_missing_at is None:
            return 0.0
        return max(0.0, (now - self.oldest_missing_at).total_seconds())


def copy_lag(
    catalog: Catalog,
    name: str,
    tiers: Iterable[str],
    standard_days: int | None = None,
    compliance_days: int | None = None,
) -> CopyLag:
    """The destination `name` (copying these tiers) against the configured repository. A backup
    older than the copy's own days for its tier is not missing: the copy engine does not send
    it (its retention would delete it there), and a copy its retention removed is not missing
    either (backup_copies.removed_at)."""
    with (
        db_errors("read how far a copy lags"),
        catalog.conn.cursor(row_factory=class_row(CopyLag)) as cur,
    ):
        row = cur.execute(
            _LAG,
            {
                "name": name,
                "tiers": list(tiers),
                "standard_days": standard_days,
                "compliance_days": compliance_days,
            },
        ).fetchone()
    assert row is not None  # one row always: FROM (SELECT 1)
    return row


def copy_lags(catalog: Catalog, copies: CopySettings) -> list[CopyLag]:
    """Every configured destination's lag, in COPY_STORAGE_URLS order."""
    return [
        copy_lag(
            catalog,
            d.name,
            copied_tiers(d),
            d.retention_days,
            d.compliance_retention_days,
        )
        for d in copies.destinations
    ]


def copied_tiers(destination: CopyDestination) -> tuple[str, ...]:
    """The backup tiers a destination copies (COPY_<N>_TIERS; pinned backups with any)."""
    tiers = tuple(t for t in destination.tiers if t != "wal")
    return (*tiers, "keep") if tiers else ()
