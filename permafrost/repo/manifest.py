"""The manifest: everything known about one backup, written last as its commit point.

It is plain JSON, so an operator can read it with any S3 client, and it is signed with an HMAC
derived from the master key, so an edited manifest is detected before its numbers are trusted.
"""

from __future__ import annotations

import json
from dataclasses import asdict, dataclass, field, fields, replace
from datetime import datetime
from enum import StrEnum
from typing import Any

from permafrost import errors
from permafrost.repo import crypto

FORMAT = 1


class Kind(StrEnum):
    """What a backup is: a logical dump of one database, a base backup of a whole cluster, or
    a snapshot of one SQLite file (the online backup API's copy)."""

    LOGICAL = "logical"
    BASE = "base"
    SQLITE = "sqlite"


@dataclass(frozen=True)
class TableCount:
    schema: str
    table: str
    rows: int


@dataclass(frozen=True)
class Part:
    """One object of a logical backup dumped in parallel (LOGICAL_JOBS, backup/parallel.py).

    The schema part is named "data" (data.pfe: the whole schema, sequence values and large
    objects, every table's rows left out); each data part "data-N" (data-N.pfe) holds the rows
    of its tables, whose exact counts it lists. Each is a pg_dump custom-format archive of its
    own, sealed through the pipeline like any data object.
    """

    name: str
    plain_bytes: int
    plain_sha256: str
    compressed_bytes: int
    stored_bytes: int
    stored_sha256: str
    row_counts: list[TableCount] = field(default_factory=list)


SCHEMA_PART = "data"


@dataclass(frozen=True)
class Manifest:
    id: str
    database: str
    kind: Kind
    tier: str
    started_at: str
    finished_at: str
    server_version: str
    tool_version: str
    dump_bytes: int
    compressed_bytes: int
    stored_bytes: int
    dump_sha256: str
    stored_sha256: str
    key_id: str
    compression: dict[str, Any]
    encryption: dict[str, Any]
    objects: dict[str, str]
    row_counts: list[TableCount] = field(default_factory=list)
    description: str = ""
    tags: list[str] = field(default_factory=list)
    permafrost_version: str = ""
    # Base backups only: LSNs, timeline, system identifier, the WAL they need (physical.py).
    physical: dict[str, Any] = field(default_factory=dict)
    # Logical backups: the server's globals stored beside the dump (objects["globals"]):
    # plain_bytes, plain_sha256, stored_bytes, stored_sha256, tool_version, role_passwords.
    globals: dict[str, Any] = field(default_factory=dict)
    # SQLite backups only: path, page_size, page_count, user_version, journal_mode,
    # sqlite_version (backup/sqlite.py); the row counts are in row_counts, schema "main".
    sqlite: dict[str, Any] = field(default_factory=dict)
    # A logical backup dumped in parallel: the schema part first, then the data parts, biggest
    # first. The top-level sizes are then the sums over the parts, the top-level SHA-256s those
    # of the schema part (objects["data"]), and row_counts every table's.
    parts: list[Part] = field(default_factory=list)
    format: int = FORMAT

    @property
    def duration_seconds(self) -> float:
        start = datetime.fromisoformat(self.started_at)
        return (datetime.fromisoformat(self.finished_at) - start).total_seconds()

    # A base backup's chain (physical: incremental, parent_id, chain_full_id, changed_bytes).
    # Manifests written before chains existed read as full backups of their own chain.

    @property
    def incremental(self) -> bool:
        return bool(self.physical.get("incremental", False))

    @property
    def parent_id(self) -> str | None:
        """The backup an incremental was taken against (None for a full or a logical backup)."""
        parent = self.physical.get("parent_id")
        return str(parent) if parent else None

    @property
    def chain_full_id(self) -> str | None:
        """The full base backup the chain starts from (a full names itself; None if logical)."""
        if self.kind != Kind.BASE:
            return None
        return str(self.physical.get("chain_full_id") or self.id)

    @property
    def changed_bytes(self) -> int:
        """The bytes a base backup carries: an incremental's changed blocks and new files, a
        full's whole size (the tar's size where an older manifest did not record it)."""
        return int(self.physical.get("changed_bytes", self.dump_bytes))

    @property
    def data_parts(self) -> list[Part]:
        """The parts that hold table rows (none for a backup in one object)."""
        return [p for p in self.parts if p.name != SCHEMA_PART]

    def part(self, name: str) -> Manifest:
        """The manifest as one of its parts alone would read: that object as objects["data"],
        its sizes, SHA-256s and tables. The readers that check and open a data object
        (repo/integrity.py, repo/reader.py, decrypt, verify, restore) take it unchanged."""
        found = next((p for p in self.parts if p.name == name), None)
        if found is None:
            known = ", ".join(p.name for p in self.parts) or "data"
            raise errors.UsageError(f"backup {self.id} has no part {name!r} (its parts: {known})")
        return replace(
            self,
            objects={"data": self.objects[name]},
            dump_bytes=found.plain_bytes,
            compressed_bytes=found.compressed_bytes,
            stored_bytes=found.stored_bytes,
            dump_sha256=found.plain_sha256,
            stored_sha256=found.stored_sha256,
            row_counts=found.row_counts,
            parts=[],
        )

    def body(self) -> dict[str, Any]:
        body = asdict(self)
        for optional in ("physical", "globals", "sqlite", "parts"):
            if not body[optional]:
                del body[optional]  # manifests without them stay as format 1 first wrote them
        return body

    def to_json(self, key: crypto.Signer) -> bytes:
        body = self.body()
        body["signature"] = crypto.sign(key, _canonical(body))
        return json.dumps(body, indent=2, sort_keys=True).encode() + b"\n"


def _canonical(body: dict[str, Any]) -> bytes:
    return json.dumps(body, sort_keys=True, separators=(",", ":")).encode()


def parse(raw: bytes, keyring: crypto.Keyring | None, where: str) -> Manifest:
    """Read a manifest; with a keyring, refuse one whose signature does not match."""
    try:
        body = json.loads(raw)
        signature = body.pop("signature", "")
        manifest = _from_body(body)
    except (ValueError, TypeError, KeyError) as exc:
        raise errors.ManifestInvalid(f"manifest {where} cannot be read: {exc}") from None
    if manifest.format != FORMAT:
        raise errors.ManifestInvalid(
            f"manifest {where} has format {manifest.format}; this Permafrost reads format {FORMAT}"
        )
    if keyring is not None:
        key = keyring.signer(manifest.key_id, manifest.encryption)
        if key is not None and not crypto.signature_matches(key, _canonical(body), signature):
            raise errors.ManifestInvalid(
                f"manifest {where} does not match its signature: it was edited or damaged"
            )
    return manifest


def _from_body(body: dict[str, Any]) -> Manifest:
    names = {f.name for f in fields(Manifest)}
    unknown = set(body) - names
    if unknown:
        raise KeyError(f"unknown fields {sorted(unknown)}")
    values = dict(body)
    if "kind" in values:  # a missing one is refused with the other missing fields, below
        values["kind"] = Kind(values["kind"])
    values["row_counts"] = [TableCount(**row) for row in body.get("row_counts", [])]
    values["parts"] = [_part(part) for part in body.get("parts", [])]
    return Manifest(**values)


def _part(body: dict[str, Any]) -> Part:
    values = dict(body)
    values["row_counts"] = [TableCount(**row) for row in body.get("row_counts", [])]
    return Part(**values)
