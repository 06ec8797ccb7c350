"""Chains of base backups: a full and the incrementals taken against it (migration 0015).

Bounded reads for `permafrost status`, the dashboard and /metrics: one aggregate per cluster
over the base backups (a few per week), never a query per backup.
"""

from __future__ import annotations

from psycopg.rows import class_row

from permafrost.catalog.db import db_errors
from permafrost.catalog.records import BackupRecord, ChainStats
from permafrost.catalog.store import Catalog

# The chain of each cluster's newest completed base backup, summed over its members.
_NEWEST_CHAINS = """
WITH newest AS (
    SELECT DISTINCT ON (database) database, chain_full_id
    FROM backups
    WHERE kind = 'base' AND status = 'completed' AND chain_full_id IS NOT NULL
    ORDER BY database, started_at DESC, id DESC
)
SELECT b.database AS cluster, n.chain_full_id AS full_id, count(*)::int AS members,
       count(*) FILTER (WHERE b.parent_id IS NOT NULL)::int AS incrementals,
       coalesce(sum(b.size_bytes), 0)::bigint AS stored_bytes,
       coalesce(sum(coalesce((b.manifest -> 'physical' ->> 'changed_bytes')::bigint,
                             b.dump_bytes)), 0)::bigint AS changed_bytes,
       (array_agg(b.id ORDER BY b.started_at DESC, b.id DESC))[1] AS newest_id,
       max(b.started_at) AS newest_at
FROM newest n
JOIN backups b ON b.database = n.database AND b.chain_full_id = n.chain_full_id
WHERE b.kind = 'base' AND b.status = 'completed'
GROUP BY b.database, n.chain_full_id
ORDER BY b.database
"""


def newest_chains(catalog: Catalog) -> list[ChainStats]:
    """Each cluster's newest chain (the one the next incremental extends)."""
    catalog.settle_interrupted()
    with (
        db_errors("read base backup chains"),
        catalog.conn.cursor(row_factory=class_row(ChainStats)) as cur,
    ):
        return cur.execute(_NEWEST_CHAINS).fetchall()


def chain_members(catalog: Catalog, full_id: str) -> list[BackupRecord]:
    """Every completed member of the chain that starts at `full_id`, oldest first."""
    with db_errors("read a chain"), catalog.conn.cursor(row_factory=class_row(BackupRecord)) as cur:
        return cur.execute(
            "SELECT * FROM backups WHERE chain_full_id = %s AND status = 'completed'"
            " ORDER BY started_at, id",
            (full_id,),
        ).fetchall()
