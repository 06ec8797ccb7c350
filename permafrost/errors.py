"""One exception hierarchy for everything Permafrost expects to go wrong.

Every error that an operator can cause or fix (a wrong key, an unknown backup, an unreachable
bucket) is a `PermafrostError`. Its message is one line that says what is wrong and what to do;
the CLI prints it without a traceback and exits with the code `permafrost.cli` maps it to.
Anything that is not a `PermafrostError` is a bug and keeps its traceback.
"""

from __future__ import annotations


class PermafrostError(Exception):
    """Base class: an expected failure with a message fit for an operator."""


class ConfigError(PermafrostError):
    """A setting is missing or malformed; the message names the variable."""


class UsageError(PermafrostError):
    """The command line asks for something that cannot be done as asked."""


# --- storage -------------------------------------------------------------------------------


class StorageError(PermafrostError):
    """The bucket refused or failed an operation."""

    def __init__(self, message: str, *, permanent: bool = True) -> None:
        super().__init__(message)
        self.permanent = permanent


class NotFound(StorageError):
    """The object does not exist. Both backends raise this, never their own error."""


class StorageUnavailable(StorageError):
    """The bucket cannot be reached at all (network, DNS, credentials, missing bucket)."""


class AccessDenied(StorageUnavailable):
    """The bucket refused the credentials this operation (a policy without the permission)."""


class WriteConflict(StorageError):
    """An object read back right after it was written holds other bytes: another writer wrote
    it at the same time, on a bucket that does not honour conditional writes."""


class LockUnsupported(StorageError):
    """OBJECT_LOCK is set, but the destination cannot lock objects: a provider or backend
    without S3 Object Lock, or a bucket created without it."""


class ObjectLocked(StorageError):
    """An object is under object lock (its retain-until is ahead) or a legal hold (a pin), so
    it cannot be deleted yet; nothing was deleted."""


# --- backups and the catalog ---------------------------------------------------------------


class BackupNotFound(PermafrostError):
    """No backup has that id (or `latest` matches nothing)."""


class CatalogUnavailable(PermafrostError):
    """The metadata store cannot be reached or is not configured."""


class SourceError(PermafrostError):
    """The source database cannot be reached, or pg_dump failed."""


class ToolMissing(PermafrostError):
    """A PostgreSQL client program (pg_dump, pg_restore) is not installed."""


class TargetError(PermafrostError):
    """The restore target cannot be reached, or pg_restore failed on it."""


class TargetExists(PermafrostError):
    """The target database exists and the command was not told to replace it."""


class InsufficientSpace(PermafrostError):
    """Not enough free space for the work (temporary files, the target)."""


class Busy(PermafrostError):
    """Another process holds what this one needs (a backup of the same database is running)."""


class CheckFailed(PermafrostError):
    """A safety check found a problem (a lifecycle rule that would expire kept backups)."""


class SystemMismatch(PermafrostError):
    """The server is another PostgreSQL system (a new system identifier: upgraded or replaced)
    than the one the cluster's WAL archive belongs to; mixing the two would break recovery."""


class IncrementalRefused(PermafrostError):
    """An incremental base backup cannot be taken (backup/incremental.py). Never raised alone:
    each refusal is also the error it is (exit code from that class), and says whether a full
    base backup in its place would do what the incremental could not (`fallback`)."""

    fallback = True
    alert = True  # the scheduler's full in its place comes with a warning saying what to change
    recorded = False  # True when its job run is recorded already (refused by pg_basebackup)


class IncrementalUnsupported(IncrementalRefused, SourceError):
    """The server is older than PostgreSQL 17: it cannot take incremental backups at all."""

    fallback = False  # a full would not be the chain it asked for: nothing to fall back to


class SummarizeWalOff(IncrementalRefused, SourceError):
    """summarize_wal is off (or its summaries do not reach back to the parent)."""


class ParentMissing(IncrementalRefused, BackupNotFound):
    """The parent (or its backup_manifest, or a member of its chain) is gone from the bucket."""


class NoFullBackup(ParentMissing):
    """No base backup of the cluster yet: a full starts the chain, nothing is wrong."""

    alert = False


# --- encryption and integrity --------------------------------------------------------------


class EncryptionKeyError(PermafrostError):
    """The encryption key is missing, malformed, or not the repository's key."""


class WrongKey(EncryptionKeyError):
    """The configured key does not open this repository or object."""


class KmsUnavailable(PermafrostError):
    """The key service (KMS) cannot be reached or failed; nothing was written."""


class IntegrityError(PermafrostError):
    """Stored bytes are not what was written: corruption or tampering."""


class NotAnObject(IntegrityError):
    """The bytes do not start with a Permafrost object header."""


class HeaderCorrupt(IntegrityError):
    """The object header is damaged, or belongs to other data."""


class HeaderMismatch(IntegrityError):
    """The header is intact but belongs to other data (swapped headers)."""


class ChunkCorrupt(IntegrityError):
    """A chunk failed authentication: its bytes were changed."""


class ChunkMissing(IntegrityError):
    """A chunk was dropped from the middle of the object."""


class ChunkDuplicated(IntegrityError):
    """A chunk appears twice."""


class ChunkReordered(IntegrityError):
    """Chunks are out of order."""


class Truncated(IntegrityError):
    """The object ends before its final chunk."""


class TrailingData(IntegrityError):
    """Bytes follow the final chunk."""


class HashMismatch(IntegrityError):
    """A SHA-256 does not match the one in the manifest."""


class RowCountMismatch(IntegrityError):
    """A restored table does not hold the rows the manifest counted."""

    counts: dict[tuple[str, str], int | None] = {}  # noqa: RUF012 (set per instance)


class ParentDamaged(IncrementalRefused, IntegrityError):
    """An incremental's parent fails its checks (its backup_manifest's hash, its manifest)."""


class ManifestInvalid(IntegrityError):
    """A manifest cannot be parsed, or its signature does not match its contents."""
