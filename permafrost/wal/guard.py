"""The refusal to mix two systems' WAL in one archive, for wal-push, wal-receive and base backups.

Before a segment is stored (or a base backup taken), the system that wrote it is compared with
the archive's identity (identity.py). The first to arrive records the identity: an archive from
before identities were kept takes its newest base backup's system, a new one the server's.
"""

from __future__ import annotations

from pathlib import Path

from permafrost.errors import StorageError
from permafrost.repo.config import Repository
from permafrost.wal import archive as walarchive
from permafrost.wal import identity
from permafrost.wal.identity import Identity, System


class Guard:
    """Checks one cluster's segments or server; a match is remembered, so a long-running
    wal-receive reads the identity once rather than once per segment."""

    def __init__(self, repo: Repository, cluster: str, by: str) -> None:
        self.repo, self.cluster, self.by = repo, cluster, by
        self._matched: str | None = None

    def check_segment(self, path: Path) -> None:
        """Raise SystemMismatch for a segment of another system (a history file passes)."""
        system = identity.of_segment(path)
        if system is not None:
            self.check(system)

    def check(self, server: System) -> None:
        if self._matched == server.identifier:
            return
        found = identity.read(self.repo, self.cluster)
        if found is None:
            found = establish(self.repo, self.cluster, server, self.by)
        if found.system.identifier != server.identifier:
            raise identity.mismatch(self.cluster, found.system, server)
        self._matched = server.identifier


def establish(repo: Repository, cluster: str, server: System, by: str) -> Identity:
    """Record the archive's identity once: the newest base backup's system, else the server's."""
    bases = [b for b in walarchive.base_backups(repo, cluster) if b.system]
    newest = max(bases, key=lambda b: b.id) if bases else None
    system = System(newest.system, newest.major) if newest and newest.system else server
    recorded = identity.new_identity(cluster, system, by)
    try:
        identity.write(repo, recorded, if_absent=True)
    except StorageError as exc:
        if "already exists" not in str(exc):
            raise
        return identity.read(repo, cluster) or recorded  # another push recorded it first
    return recorded
