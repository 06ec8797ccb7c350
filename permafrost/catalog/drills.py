"""The drills table (migration 0016): each PITR drill, recorded once when it ends.

Scoped by repository like backups (catalog/repositories.py): a scoped session records with its
repository's id and reads only its repository's drills.
"""

from __future__ import annotations

from dataclasses import asdict, fields
from datetime import datetime
from typing import Any, Protocol

from psycopg.rows import class_row
from psycopg.types.json import Jsonb

from permafrost.catalog.db import Rows
from permafrost.catalog.records import DrillRecord, DrillStatus

DRILL_TASK = "pitr_drill"  # the task kind the restore worker claims

_DEFAULTED = ("id", "finished_at", "repository_id")  # the table's (the scope's) defaults
_RECORDED = [f.name for f in fields(DrillRecord) if f.name not in _DEFAULTED]
_INSERT = (
    f"INSERT INTO drills ({', '.join(_RECORDED)}) VALUES ({', '.join(['%s'] * len(_RECORDED))})"
    " RETURNING id"
)
# The newest drill of each cluster (a skip scan per cluster would cost more than it saves: a
# drill a week makes a small table).
_NEWEST = """
SELECT DISTINCT ON (cluster) * FROM drills
WHERE (%(status)s::text IS NULL OR status = %(status)s)
ORDER BY cluster, started_at DESC, id DESC
"""


class DrillRows(Rows):
    def record_drill(self, drill: DrillRecord) -> int:
        values = asdict(drill)
        values["details"] = Jsonb(drill.details or {})
        with self._errors("record a PITR drill"):
            row = self.conn.execute(_INSERT, [values[name] for name in _RECORDED]).fetchone()
        assert row is not None
        return int(row[0])

    def newest_drills(self, status: DrillStatus | None = None) -> list[DrillRecord]:
        """Each cluster's newest drill (of this status, when given), by cluster name."""
        with (
            self._errors("read the PITR drills"),
            self.conn.cursor(row_factory=class_row(DrillRecord)) as cur,
        ):
            return cur.execute(_NEWEST, {"status": status}).fetchall()

    def newest_drill(self, cluster: str, status: DrillStatus | None = None) -> DrillRecord | None:
        found = [d for d in self.newest_drills(status) if d.cluster == cluster]
        return found[0] if found else None

    def drills(self, cluster: str, limit: int = 20) -> list[DrillRecord]:
        with (
            self._errors("read the PITR drills"),
            self.conn.cursor(row_factory=class_row(DrillRecord)) as cur,
        ):
            return cur.execute(
                "SELECT * FROM drills WHERE cluster = %s ORDER BY started_at DESC, id DESC"
                " LIMIT %s",
                (cluster, limit),
            ).fetchall()

    def first_base_backup_at(self, cluster: str) -> datetime | None:
        """When the oldest completed base backup of the cluster began: something to drill."""
        with self._errors("read the base backups"):
            row = self.conn.execute(
                "SELECT min(started_at) FROM backups WHERE database = %s AND kind = 'base'"
                " AND status = 'completed'",
                (cluster,),
            ).fetchone()
        return row[0] if row else None

    def pending_drill(self, cluster: str) -> int | None:
        """The drill of this cluster queued or running, if one is."""
        with self._errors("read the task queue"):
            row = self.conn.execute(
                "SELECT id FROM tasks WHERE kind = %s AND status IN ('queued', 'running')"
                " AND payload->>'cluster' = %s ORDER BY id LIMIT 1",
                (DRILL_TASK, cluster),
            ).fetchone()
        return int(row[0]) if row else None


class DrillQueue(Protocol):
    """What queueing a drill needs of the catalog (its task and drill families)."""

    def first_base_backup_at(self, cluster: str) -> datetime | None: ...

    def pending_drill(self, cluster: str) -> int | None: ...

    def enqueue(self, kind: str, payload: dict[str, Any], requested_by: str) -> int: ...


def queue_drill(catalog: DrillQueue, cluster: str, requested_by: str) -> dict[str, Any]:
    """Queue a drill of the cluster for the restore worker, unless one is queued or running or
    the catalog knows no base backup of the cluster (nothing to drill yet)."""
    if catalog.first_base_backup_at(cluster) is None:
        return {"cluster": cluster, "queued": False, "skipped": "no base backup yet"}
    pending = catalog.pending_drill(cluster)
    if pending is not None:
        return {"cluster": cluster, "task_id": pending, "queued": False}
    task = catalog.enqueue(DRILL_TASK, {"cluster": cluster}, requested_by)
    return {"cluster": cluster, "task_id": task, "queued": True}
