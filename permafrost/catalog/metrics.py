"""The metrics' reads: a handful of aggregate queries per scrape, none per backup.

`monitor/metrics.py` shapes their rows into Prometheus families. Each query is one statement
(autocommit: the connection may be shared with other requests), so a scrape stays fast with
tens of thousands of catalogued backups.
"""

from __future__ import annotations

from typing import Any

from permafrost.catalog.db import db_errors
from permafrost.catalog.store import Catalog

# One statement (one snapshot, however the scheduler writes meanwhile). The groups and their
# counts come from backup_tallies (migration 0025: kept by triggers, a row per group, summed over
# the scoped repositories), not from counting every backup: at 100,000 backups that hashing was
# most of a scrape. Each group then looks its facts up by index probes on (database, kind,
# status, started_at): a failed or interrupted group its newest finish, a completed group its
# newest backup (n) and its newest verified one (v), the newest by (started_at, id) as before.
# The newest of a database and kind is its tiers' newest. Safety backups (taken by restores)
# are no database's own, so they make no series.
_BACKUPS = """
WITH g AS MATERIALIZED (
    SELECT database, kind, tier, status, sum(backups)::bigint AS backups
    FROM backup_tallies WHERE purpose = 'backup' AND backups > 0
    GROUP BY database, kind, tier, status
)
SELECT g.database, g.kind, g.tier, g.status, g.backups,
       extract(epoch FROM f.last_at)::float8,
       n.started_at, n.id, extract(epoch FROM coalesce(n.finished_at, n.started_at))::float8,
       n.size_bytes, extract(epoch FROM n.finished_at - n.started_at)::float8,
       coalesce(n.dump_bytes, 0),
       v.started_at, v.id, coalesce(v.dump_bytes, 0),
       n.manifest->>'server_version', n.manifest->>'tool_version'
FROM g
LEFT JOIN LATERAL (
    SELECT max(coalesce(finished_at, started_at)) AS last_at FROM backups
    WHERE g.status IN ('failed', 'interrupted') AND database = g.database AND kind = g.kind
      AND status = g.status AND tier = g.tier AND purpose = 'backup'
) f ON true
LEFT JOIN LATERAL (
    SELECT * FROM backups
    WHERE g.status = 'completed' AND database = g.database AND kind = g.kind
      AND status = 'completed' AND tier = g.tier AND purpose = 'backup'
    ORDER BY started_at DESC, id DESC LIMIT 1
) n ON true
LEFT JOIN LATERAL (
    SELECT * FROM backups
    WHERE g.status = 'completed' AND database = g.database AND kind = g.kind
      AND status = 'completed' AND tier = g.tier AND purpose = 'backup'
      AND verification_status = 'verified'
    ORDER BY started_at DESC, id DESC LIMIT 1
) v ON true
"""

# From job_run_tallies (migration 0025), which keeps a run without a database under ''.
_RUNS = """
SELECT job, CASE WHEN database <> '' THEN database
                 WHEN job = 'base_backup' THEN %s ELSE '' END, status,
       sum(runs)::bigint
FROM job_run_tallies WHERE job = ANY(%s) AND status <> 'running' AND runs > 0
GROUP BY 1, 2, 3
"""

_STORAGE = """
SELECT tier, sum(bytes)::float8, sum(objects)::float8 FROM storage_usage GROUP BY tier
"""

_WAL = "SELECT cluster, extract(epoch FROM last_archived_at)::float8 FROM wal_archive"
_WAL_QUEUE = (
    "SELECT cluster, ready_segments::float8, ready_bytes::float8 FROM wal_archive"
    " WHERE ready_at IS NOT NULL"
)

# Each verification's database by a probe of backups' primary key (a scalar subquery, which
# the planner does not turn into a join): verifications are far fewer than backups, and a hash
# join read all 100,000 backups per scrape, 3x slower (bench/fleet.py). A verification of a
# backup no longer catalogued counts for no database, as with the join.
_VERIFIED = """
SELECT database, extract(epoch FROM max(finished_at))::float8 FROM (
    SELECT (SELECT b.database FROM backups b WHERE b.id = v.backup_id) AS database, v.finished_at
    FROM verifications v WHERE v.status = 'verified'
) x
WHERE database IS NOT NULL
GROUP BY database
"""

_HEARTBEAT = "SELECT extract(epoch FROM max(beat_at))::float8 FROM heartbeats WHERE role = 'leader'"

_ALERTS = "SELECT severity, count(*) FROM alerts WHERE status = 'active' GROUP BY severity"

# The newest successful test restores, per database and overall, as Catalog.restore_rates reads
# them (the limit counts rows before unusable rates are dropped, as it does there).
_RATES = """
SELECT database, rate, n_database <= %(n)s, n_all <= %(n)s FROM (
    SELECT database, rate,
           row_number() OVER (PARTITION BY database ORDER BY finished_at DESC, id DESC)
               AS n_database,
           row_number() OVER (ORDER BY finished_at DESC, id DESC) AS n_all
    FROM (  -- each one's database by a primary-key probe, as in _VERIFIED
        SELECT (SELECT b.database FROM backups b WHERE b.id = v.backup_id) AS database,
               (v.details->>'bytes_per_second')::float8 AS rate, v.finished_at, v.id
        FROM verifications v
        WHERE v.kind = 'test_restore' AND v.status = 'verified' AND v.details ? 'bytes_per_second'
    ) j
    WHERE database IS NOT NULL
) r
WHERE n_database <= %(n)s OR n_all <= %(n)s
"""


def backup_groups(catalog: Catalog) -> list[tuple[Any, ...]]:
    """Per database, kind, tier and status: the count, for failed and interrupted groups the
    newest finish, and for completed groups the newest backup's and the newest verified
    backup's facts (see _BACKUPS)."""
    catalog.settle_interrupted()
    with db_errors("read the metrics"), catalog.conn.transaction():
        # The probes' estimated cost (thousands of groups) is above jit_above_cost, and the JIT
        # compile took 80-160 ms for a statement that runs in 20 (bench/fleet.py).
        catalog.conn.execute("SET LOCAL jit = off")
        return catalog.conn.execute(_BACKUPS).fetchall()


def finished_run_counts(
    catalog: Catalog, cluster_name: str, jobs: list[str]
) -> list[tuple[str, str, str, int]]:
    """(job, database, status, count) of the finished runs of these jobs (base backups under
    the cluster's name when the run has no database)."""
    with db_errors("read the metrics"):
        return catalog.conn.execute(_RUNS, (cluster_name, jobs)).fetchall()


def storage_totals(catalog: Catalog) -> list[tuple[str, float, float]]:
    """(tier, bytes, objects) as the retention job last measured them."""
    with db_errors("read the metrics"):
        return catalog.conn.execute(_STORAGE).fetchall()


def wal_archived_times(catalog: Catalog) -> list[tuple[str, float]]:
    """(cluster, Unix time of its newest archived segment)."""
    with db_errors("read the metrics"):
        return catalog.conn.execute(_WAL).fetchall()


def wal_queues(catalog: Catalog) -> list[tuple[str, float, float]]:
    """(cluster, files waiting in pg_wal to be archived, their bytes), as last counted."""
    with db_errors("read the metrics"):
        return catalog.conn.execute(_WAL_QUEUE).fetchall()


def verified_times(catalog: Catalog) -> list[tuple[str, float]]:
    """(database, Unix time of the newest passed verification of any of its backups)."""
    with db_errors("read the metrics"):
        return catalog.conn.execute(_VERIFIED).fetchall()


def leader_heartbeat(catalog: Catalog) -> float | None:
    """The leading scheduler's newest heartbeat as a Unix time; None with no leader."""
    with db_errors("read the metrics"):
        row = catalog.conn.execute(_HEARTBEAT).fetchone()
    return row[0] if row else None


def active_alert_counts(catalog: Catalog) -> dict[str, int]:
    """Active alerts per severity (severities without one are absent)."""
    with db_errors("read the metrics"):
        return dict(catalog.conn.execute(_ALERTS).fetchall())


def restore_rate_rows(catalog: Catalog, samples: int) -> list[tuple[str, float, bool, bool]]:
    """(database, bytes per second, among its database's newest `samples`, among all's newest
    `samples`) of the newest successful test restores."""
    with db_errors("read the metrics"):
        return catalog.conn.execute(_RATES, {"n": samples}).fetchall()
