"""Where a backup goes, and the manifest that commits it: shared by logical and base backups.

The repository is opened (and the key proved) once per backup; the data object is sealed
through the pipeline, and the manifest is written only after it is complete: a backup exists
if and only if its manifest does.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass, field, replace
from datetime import UTC, datetime
from typing import Any

from permafrost import __version__, layout
from permafrost.backup.request import BackupRequest
from permafrost.config.settings import CompressionSettings, StorageSettings
from permafrost.context import Context
from permafrost.postgres import tools as pgtools
from permafrost.repo import crypto
from permafrost.repo.config import Repository
from permafrost.repo.manifest import Kind, Manifest, Part, TableCount
from permafrost.repo.pipeline import SealedStats, Sealer
from permafrost.storage.transfer import ObjectWriter


@dataclass(frozen=True)
class Made:
    """What one dump program made, as its manifest records it."""

    kind: Kind
    tier: str
    data_key: str
    started: datetime
    server_version: str
    tool: str  # the program's path; its version goes into the manifest
    stats: SealedStats
    row_counts: list[TableCount] = field(default_factory=list)
    physical: dict[str, Any] = field(default_factory=dict)
    sqlite: dict[str, Any] = field(default_factory=dict)
    tool_version: str = ""  # when there is no program to ask (SQLite: the library's version)
    parts: list[Part] = field(default_factory=list)  # a logical backup dumped in parallel
    part_keys: dict[str, str] = field(default_factory=dict)  # its data parts' object keys


@dataclass(frozen=True)
class Beside:
    """Objects stored beside the data object just before the commit (the server's globals)."""

    objects: dict[str, str] = field(default_factory=dict)
    globals: dict[str, Any] = field(default_factory=dict)


@dataclass(frozen=True)
class Destination:
    repository: Repository
    storage: StorageSettings  # part size and upload concurrency
    compression: CompressionSettings
    # Called once the dump is complete, before the manifest: what it stored beside the dump.
    before_commit: Callable[[Destination, BackupRequest], Beside] | None = None

    @classmethod
    def of(cls, ctx: Context) -> Destination:
        """The repository of ctx, created if it is not there yet, and the pipeline's settings."""
        s = ctx.settings
        repository = ctx.repository(create=True)
        return cls(repository, s.storage, s.compression)

    def storing_beside(self, store: Callable[[Destination, BackupRequest], Beside]) -> Destination:
        return replace(self, before_commit=store)

    def data_key(self, tier: str, database: str, backup_id: str) -> str:
        return layout.data_key(self.repository.prefix, tier, database, backup_id)

    def sealer(self, key: str) -> Sealer:
        """The pipeline into one new object: zstd, encryption with the current key, upload."""
        writer = ObjectWriter(
            self.repository.storage,
            key,
            part_size=self.storage.part_size,
            concurrency=self.storage.concurrency,
        )
        return Sealer(
            writer,
            self.repository.key,
            level=self.compression.level,
            threads=self.compression.threads,
        )

    def commit(self, request: BackupRequest, made: Made) -> Manifest:
        """Write the manifest, last: from now on the backup exists."""
        beside = self.before_commit(self, request) if self.before_commit else Beside()
        manifest = self._manifest(request, made, beside)
        key = layout.manifest_key(
            self.repository.prefix, made.tier, request.database, request.backup_id
        )
        self.repository.storage.put(key, manifest.to_json(self.repository.key))
        return manifest

    def _manifest(self, request: BackupRequest, made: Made, beside: Beside) -> Manifest:
        stats = made.stats
        return Manifest(
            id=request.backup_id,
            database=request.database,
            kind=made.kind,
            tier=made.tier,
            started_at=made.started.isoformat(),
            finished_at=datetime.now(UTC).isoformat(),
            server_version=made.server_version,
            tool_version=made.tool_version or pgtools.tool_version(made.tool),
            dump_bytes=stats.plain_bytes,
            compressed_bytes=stats.compressed_bytes,
            stored_bytes=stats.stored_bytes,
            dump_sha256=stats.plain_sha256,
            stored_sha256=stats.stored_sha256,
            key_id=self.repository.key.key_id,
            compression={"algorithm": "zstd", "level": self.compression.level},
            encryption={
                "algorithm": "aes-256-gcm-stream",
                "chunk_size": crypto.CHUNK_SIZE,
                **self.repository.key.manifest_fields(),
            },
            objects={"data": made.data_key, **made.part_keys, **beside.objects},
            row_counts=made.row_counts,
            description=request.description,
            tags=list(request.tags),
            permafrost_version=__version__,
            physical=made.physical,
            globals=beside.globals,
            sqlite=made.sqlite,
            parts=made.parts,
        )
