"""The dashboard's and the API's reads: one query per page part, none per backup.

Every query here is bounded (LIMIT, or an aggregate over an index), so the dashboard and the
API stay fast with tens of thousands of backups in the catalog. The metrics' reads are in
`catalog/metrics.py`, the alerts' in `catalog/alerts.py`.
"""

from __future__ import annotations

import contextlib
from datetime import datetime
from typing import Any

import psycopg
from psycopg.pq import TransactionStatus
from psycopg.rows import class_row, dict_row

from permafrost.catalog.db import db_errors, open_connection
from permafrost.catalog.records import BackupRecord
from permafrost.catalog.store import Catalog
from permafrost.config.settings import Secret
from permafrost.errors import CatalogUnavailable

FILTERS = ("database", "tier", "status", "kind")


def page_of_backups(
    catalog: Catalog, filters: dict[str, str], page: int, per_page: int
) -> tuple[list[BackupRecord], int]:
    """One page of backups, newest first, and how many match in all."""
    catalog.settle_interrupted()
    where = [f"{name} = %s" for name in FILTERS if filters.get(name)]
    params: list[Any] = [filters[name] for name in FILTERS if filters.get(name)]
    if filters.get("tag"):  # backups carrying this tag (the GIN index of migration 0017)
        where.append("tags @> ARRAY[%s]::text[]")
        params.append(filters["tag"])
    if not filters.get("status"):
        where.append("status <> 'deleted'")
    clause = (" WHERE " + " AND ".join(where)) if where else ""
    with db_errors("list backups"):
        row = catalog.conn.execute(f"SELECT count(*) FROM backups{clause}", params).fetchone()
        total = int(row[0]) if row else 0
        with catalog.conn.cursor(row_factory=class_row(BackupRecord)) as cur:
            records = cur.execute(
                f"SELECT * FROM backups{clause} ORDER BY started_at DESC, id DESC"
                " LIMIT %s OFFSET %s",
                [*params, per_page, (page - 1) * per_page],
            ).fetchall()
    return records, total


DATABASES_SQL = """
            WITH RECURSIVE pairs AS (
    (SELECT database, kind FROM backups ORDER BY database, kind LIMIT 1)
    UNION ALL
    SELECT n.database, n.kind FROM pairs p, LATERAL (
        SELECT b.database, b.kind FROM backups b WHERE (b.database, b.kind) > (p.database, p.kind)
        ORDER BY b.database, b.kind LIMIT 1) n
)
SELECT d.database, k.kind,
                   ok.id AS last_id, ok.started_at AS last_started,
                   ok.finished_at AS last_finished, ok.size_bytes AS last_size,
                   ok.verification_status AS last_verification, ok.verified_at AS last_verified_at,
                   bad.id AS failed_id, bad.started_at AS failed_at, bad.error AS failed_error,
                   (SELECT max(b.verified_at) FROM backups b WHERE b.database = d.database
                      AND b.verification_status = 'verified') AS verified_at,
                   (SELECT b.verification_status FROM backups b WHERE b.database = d.database
                      AND b.verified_at IS NOT NULL ORDER BY b.verified_at DESC LIMIT 1)
                     AS newest_verification
            FROM pairs d JOIN LATERAL (SELECT d.kind) k ON true
            LEFT JOIN LATERAL (
                SELECT * FROM backups b WHERE b.database = d.database AND b.kind = k.kind
                  AND b.status = 'completed' AND b.purpose = 'backup'
                ORDER BY b.database, b.kind, b.status, b.started_at DESC LIMIT 1) ok ON true
            LEFT JOIN LATERAL (
                SELECT * FROM backups b WHERE b.database = d.database AND b.kind = k.kind
                  AND b.status IN ('failed', 'interrupted') AND b.purpose = 'backup'
                ORDER BY b.started_at DESC LIMIT 1) bad ON true
            WHERE ok.id IS NOT NULL OR bad.id IS NOT NULL
            ORDER BY k.kind DESC, d.database
            """


def databases(catalog: Catalog) -> list[dict[str, Any]]:
    """Per database and kind: the newest completed and failed (or interrupted) backup, and
    verification state. Safety backups are not a database's own: they make no card."""
    catalog.settle_interrupted()
    with db_errors("summarise backups"), catalog.conn.cursor(row_factory=dict_row) as cur:
        return cur.execute(DATABASES_SQL).fetchall()


def history(
    catalog: Catalog, since: datetime, databases: list[str] | None = None, limit: int = 5000
) -> list[dict[str, Any]]:
    """Completed backups since a moment (of these databases only, when given), for the size
    and duration chart (oldest first): the newest `limit` of them, so a fleet's chart reaches
    today (500 databases fill 5,000 in ten days; the oldest 5,000 would have stopped the chart
    weeks ago)."""
    with db_errors("read backup history"), catalog.conn.cursor(row_factory=dict_row) as cur:
        rows = cur.execute(
            "SELECT database, kind, started_at, size_bytes,"
            " extract(epoch FROM finished_at - started_at)::float AS seconds"
            " FROM backups WHERE status = 'completed' AND purpose = 'backup' AND started_at >= %s"
            " AND (%s::text[] IS NULL OR database = ANY(%s))"
            " ORDER BY started_at DESC LIMIT %s",
            (since, databases, databases, limit),
        ).fetchall()
    rows.reverse()
    return rows


# One row per UTC day and kind: how many completed, the largest and the longest, and whose the
# largest was. A fleet's 90 days (22,500 backups at 500 databases) make 90 rows per kind, read
# from the index of completed backups (migration 0025). The largest's database rides on its size
# (zero-padded, so text order is size order): no sort per group, as array_agg(ORDER BY) needs.
HISTORY_BY_DAY_SQL = """
SELECT kind, date_trunc('day', started_at AT TIME ZONE 'UTC') AS day, count(*) AS backups,
       max(coalesce(size_bytes, 0)) AS size_bytes,
       substr(max(lpad(coalesce(size_bytes, 0)::text, 20, '0') || database), 21) AS largest,
       max(extract(epoch FROM finished_at - started_at))::float AS seconds
FROM backups
WHERE status = 'completed' AND purpose = 'backup' AND started_at >= %s
  AND (%s::text[] IS NULL OR database = ANY(%s))
GROUP BY 1, 2
ORDER BY 2, 1
"""


def history_by_day(
    catalog: Catalog, since: datetime, databases: list[str] | None = None
) -> list[dict[str, Any]]:
    """The chart's points when there are too many backups for a dot each: per UTC day and
    kind, the count, the largest backup (and whose) and the longest duration."""
    with db_errors("read backup history"), catalog.conn.cursor(row_factory=dict_row) as cur:
        return cur.execute(HISTORY_BY_DAY_SQL, (since, databases, databases)).fetchall()


def stored_by_tier(catalog: Catalog) -> list[dict[str, Any]]:
    """Completed backups and their stored bytes per tier, as of now (the overview's panel)."""
    with db_errors("read storage per tier"), catalog.conn.cursor(row_factory=dict_row) as cur:
        return cur.execute(
            "SELECT tier, count(*) AS backups, coalesce(sum(size_bytes), 0)::bigint AS bytes"
            " FROM backups WHERE status = 'completed' GROUP BY tier ORDER BY tier"
        ).fetchall()


def job_history(catalog: Catalog, limit: int = 30) -> list[dict[str, Any]]:
    catalog.settle_interrupted()  # a killed backup's run is aborted, not "running now"
    with db_errors("read job runs"), catalog.conn.cursor(row_factory=dict_row) as cur:
        return cur.execute("SELECT * FROM job_runs ORDER BY id DESC LIMIT %s", (limit,)).fetchall()


def newest_completed(
    catalog: Catalog, database: str | None, *, verified: bool = False
) -> BackupRecord | None:
    """The newest completed logical (or SQLite) backup (of one database, or of any; verified
    ones only)."""
    check = " AND verification_status = 'verified'" if verified else ""
    with (
        db_errors("find the newest backup"),
        catalog.conn.cursor(row_factory=class_row(BackupRecord)) as cur,
    ):
        return cur.execute(
            "SELECT * FROM backups WHERE status = 'completed' AND kind IN ('logical', 'sqlite')"
            f" AND purpose = 'backup'{check} AND (%s::text IS NULL OR database = %s)"
            " ORDER BY started_at DESC LIMIT 1",
            (database, database),
        ).fetchone()


def ping(catalog: Catalog) -> None:
    with db_errors("answer"):
        catalog.conn.execute("SELECT 1")


def healthy(catalog: Catalog) -> bool:
    """Whether a connection kept from an earlier request still answers: a restart or a
    failover of the store leaves it open on our side and dead on the server's."""
    conn = catalog.conn
    if conn.closed or conn.broken or conn.info.transaction_status != TransactionStatus.IDLE:
        return False
    try:
        ping(catalog)
    except CatalogUnavailable:
        return False
    return True


def probe(url: Secret) -> None:
    """Connect to the metadata store and run one statement, or raise CatalogUnavailable: the
    monitor's outage check, which must not depend on a connection the store handed out."""
    with contextlib.closing(open_connection(url)) as conn, db_errors("answer"):
        conn.execute("SELECT 1")


# --- the connection ----------------------------------------------------------------------------


def is_connection_error(exc: BaseException) -> bool:
    """Whether a database error escaped `db_errors` (a statement run outside it): the app
    answers 503 and reconnects, as for CatalogUnavailable."""
    return isinstance(exc, psycopg.OperationalError | psycopg.InterfaceError)


def close_quietly(catalog: Catalog) -> None:
    """Close a connection that may be broken already (the database's error is not news)."""
    with contextlib.suppress(psycopg.Error):
        catalog.close()


def recent_durations(catalog: Catalog, recent: int = 7) -> list[dict[str, Any]]:
    """Per database and kind: the median duration in seconds of its `recent` newest completed
    backups, and how many there were (what `plan window` expects tonight's backup to take)."""
    with db_errors("read backup durations"), catalog.conn.cursor(row_factory=dict_row) as cur:
        return cur.execute(RECENT_DURATIONS_SQL, (recent,)).fetchall()


# Bounded like DATABASES_SQL: a skip scan for the (database, kind) pairs, then the `recent`
# newest completed backups of each through backups_database_kind_status.
RECENT_DURATIONS_SQL = """
    WITH RECURSIVE pairs AS (
        (SELECT database, kind FROM backups ORDER BY database, kind LIMIT 1)
        UNION ALL
        SELECT n.database, n.kind FROM pairs p, LATERAL (
            SELECT b.database, b.kind FROM backups b
            WHERE (b.database, b.kind) > (p.database, p.kind)
            ORDER BY b.database, b.kind LIMIT 1) n
    )
    SELECT p.database, p.kind, count(*) AS samples,
           percentile_cont(0.5) WITHIN GROUP (ORDER BY r.seconds) AS seconds
    FROM pairs p JOIN LATERAL (
        SELECT extract(epoch FROM b.finished_at - b.started_at)::float AS seconds
        FROM backups b
        WHERE b.database = p.database AND b.kind = p.kind AND b.status = 'completed'
          AND b.purpose = 'backup' AND b.finished_at IS NOT NULL
        ORDER BY b.database, b.kind, b.status, b.started_at DESC
        LIMIT %s) r ON true
    GROUP BY p.database, p.kind
    ORDER BY p.database, p.kind
"""
