"""The refusal to mix two systems' WAL in one archive, for wal-push, wal-receive and base backups.

Before a segment is stored (or a base backup taken), the system that wrote it is compared with
the archive's identity (identity.py). The first to arrive records the identity: an archive from
before identities were kept takes the system of its newest base backup (or else of its newest
segment), a new one the server's.
"""

from __future__ import annotations

from pathlib import Path

from permafrost.errors import StorageError
from permafrost.repo.config import Repository
from permafrost.wal import archive as walarchive
from permafrost.wal import identity
from permafrost.wal import segment as wal
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
    """Record the archive's identity once: the system of its newest base backup, else of its
    newest archived segment, else (a new archive) the server's."""
    system = _of_base_backups(repo, cluster) or _of_archived_wal(repo, cluster) or server
    recorded = identity.new_identity(cluster, system, by)
    try:
        identity.write(repo, recorded, if_absent=True)
    except StorageError as exc:
        if "already exists" not in str(exc):
            raise
        return identity.read(repo, cluster) or recorded  # another push recorded it first
    return recorded


def _of_base_backups(repo: Repository, cluster: str) -> System | None:
    bases = [b for b in walarchive.base_backups(repo, cluster) if b.system]
    newest = max(bases, key=lambda b: b.id) if bases else None
    return System(newest.system, newest.major) if newest and newest.system else None


def _of_archived_wal(repo: Repository, cluster: str) -> System | None:
    """An archive with WAL but no base backup: its newest segment says (one download, once)."""
    archive = walarchive.list_archive(repo, cluster)
    newest = [s for s in (archive.newest(t) for t in archive.timelines) if s is not None]
    if not newest:
        return None
    data = wal.fetch(repo, cluster, archive.name(max(newest)))
    return identity.of_header(data) if data else None
