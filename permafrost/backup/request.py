"""What a backup is asked to be: of which database (or cluster), into which tier, and why."""

from __future__ import annotations

from dataclasses import dataclass, field

from permafrost import layout
from permafrost.config.settings import SourceSettings
from permafrost.repo.manifest import Kind


@dataclass(frozen=True)
class BackupRequest:
    database: str  # for a base backup, the cluster's name
    tier: str = "standard"
    description: str = ""
    tags: tuple[str, ...] = ()
    backup_id: str = field(default_factory=layout.new_backup_id)
    kind: Kind = Kind.LOGICAL
    trigger: str = "manual"  # manual, schedule or task: recorded with the job run
    # The server to back up when it is not the configured source: a restore's safety backup
    # of the target it is about to replace.
    source: SourceSettings | None = None
