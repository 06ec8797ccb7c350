"""`permafrost wal reset`: give a cluster's WAL archive to the server it now names.

After an upgrade or a replacement (a new system identifier under the same CLUSTER_NAME),
wal-push, wal-receive and base backups are refused (guard.py) until the archive is reset. The
reset reads the server's system, moves every object under wal/{cluster}/ to
wal/{cluster}.{old system}/ (a copy inside the bucket, then the delete), and only then records
the new identity, keeping the old one in its `previous` list; a reset cut short is run again.
The old system's base backups stay in base/{cluster}/, and pitr recovers them from the moved WAL
(`Identity.wal_cluster_of`). The next step is a base backup of the new system.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from datetime import UTC, datetime
from typing import Any

from permafrost import layout
from permafrost.config.settings import SourceSettings
from permafrost.postgres import tools as pgtools
from permafrost.repo.config import Repository
from permafrost.wal import archive as walarchive
from permafrost.wal import identity
from permafrost.wal.identity import Identity, System


def server_system(source: SourceSettings) -> System:
    """The source server's system identifier and major."""
    with pgtools.connect(source, pgtools.cluster_database(source)) as conn:
        row = conn.execute(
            "SELECT system_identifier, current_setting('server_version_num')::int"
            " FROM pg_control_system()"
        ).fetchone()
    assert row is not None
    return System(str(row[0]), int(row[1]) // 10000)


@dataclass
class ResetPlan:
    cluster: str
    recorded: Identity | None  # the archive's identity now
    server: System
    retired: str = ""  # the cluster name under wal/ that the old WAL moves to
    moves: list[tuple[str, str]] = field(default_factory=list)
    old_bases: list[str] = field(default_factory=list)

    @property
    def needed(self) -> bool:
        return (
            self.recorded is not None and self.recorded.system.identifier != self.server.identifier
        )

    def lines(self, applied: bool = False) -> list[str]:
        if self.recorded is None:
            return [
                f"cluster {self.cluster} has no WAL identity yet: the first wal-push or base "
                "backup records the server's; nothing to reset"
            ]
        if not self.needed:
            return [
                f"the archive of cluster {self.cluster} already belongs to "
                f"{self.recorded.system.describe()}, the server's: nothing to reset"
            ]
        verb = ("moved", "recorded") if applied else ("would move", "would record")
        folder = f"wal/{self.retired}/"
        return [
            f"cluster {self.cluster}: the archive belongs to {self.recorded.system.describe()}, "
            f"the server is {self.server.describe()}",
            f"{verb[0]} {len(self.moves)} WAL file(s) from wal/{self.cluster}/ to {folder}; "
            f"{len(self.old_bases)} base backup(s) of system {self.recorded.system.identifier} "
            f"stay in base/{self.cluster}/ and recover from there (pitr --base ID)",
            f"{verb[1]} {self.server.describe()} as the archive's system",
        ]

    def to_json(self) -> dict[str, Any]:
        return {
            "cluster": self.cluster,
            "needed": self.needed,
            "archive_system": self.recorded.to_json() if self.recorded else None,
            "server_system": {
                "system_identifier": self.server.identifier,
                "major": self.server.major,
            },
            "wal_moved_to": self.retired or None,
            "wal_files": len(self.moves),
            "old_base_backups": self.old_bases,
        }


def plan(repo: Repository, cluster: str, server: System) -> ResetPlan:
    recorded = identity.read(repo, cluster)
    out = ResetPlan(cluster, recorded, server)
    if recorded is None or not out.needed:
        return out
    old = recorded.system.identifier
    out.retired = layout.retired_wal_cluster(cluster, old)
    source, target = (
        layout.wal_folder(repo.prefix, cluster),
        layout.wal_folder(repo.prefix, out.retired),
    )
    out.moves = [(i.key, target + i.key[len(source) :]) for i in repo.storage.list(source)]
    out.old_bases = [b.id for b in walarchive.base_backups(repo, cluster) if b.system == old]
    return out


def apply(repo: Repository, reset: ResetPlan) -> Identity:
    """Copy, then delete, then record: until the new identity is written, a rerun finds the
    same archive and finishes the move."""
    assert reset.recorded is not None and reset.needed
    for source, target in reset.moves:
        repo.storage.copy(source, target)
    for source, _ in reset.moves:
        repo.storage.delete(source)
    old = reset.recorded.system
    now = datetime.now(UTC).isoformat(timespec="seconds")
    retired = {
        "system_identifier": old.identifier,
        "major": old.major,
        "wal_cluster": reset.retired,
        "since": reset.recorded.since,
        "retired_at": now,
    }
    new = Identity(
        reset.cluster, reset.server, now, "wal reset", [*reset.recorded.previous, retired]
    )
    identity.write(repo, new, if_absent=False)
    return new
