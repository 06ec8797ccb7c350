"""Which PostgreSQL system a cluster's WAL archive belongs to: its system identifier and major.

A server upgraded (pg_upgrade, or a new initdb restored from a dump) or replaced under the same
CLUSTER_NAME has a new system identifier, and its WAL does not continue the archive's: recovery
from an old base backup cannot replay it, and its segment names may even repeat the old ones.
The archive's identity is a small JSON object, `clusters/{cluster}.json` (outside wal/ and every
tier, so no lifecycle rule expires it), written once by the first wal-push or base backup.
Every WAL segment carries the system identifier in its first page's long header, so wal-push
checks a segment against the identity without connecting to the server: one small GET.
"""

from __future__ import annotations

import json
import struct
from dataclasses import dataclass, field
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

from permafrost import layout
from permafrost.errors import IntegrityError, NotFound, SystemMismatch
from permafrost.repo.config import Repository

# XLogLongPageHeaderData: xlp_magic, xlp_info, xlp_tli, xlp_pageaddr, xlp_rem_len, padding,
# xlp_sysid, xlp_seg_size, xlp_xlog_blcksz (little-endian, as written on x86 and arm64).
LONG_HEADER = struct.Struct("<HHIQI4xQII")
XLP_LONG_HEADER = 0x0002
# XLOG_PAGE_MAGIC changes with every major: it tells which PostgreSQL wrote a segment.
PAGE_MAGIC = {0xD101: 12, 0xD106: 13, 0xD10D: 14, 0xD110: 15, 0xD113: 16, 0xD116: 17, 0xD118: 18}


@dataclass(frozen=True)
class System:
    """One PostgreSQL system: initdb's identifier, and the major it runs (when known)."""

    identifier: str
    major: int | None = None

    def describe(self) -> str:
        version = f"PostgreSQL {self.major}" if self.major else "PostgreSQL version unknown"
        return f"system {self.identifier} ({version})"


@dataclass(frozen=True)
class Identity:
    cluster: str
    system: System
    since: str  # when it was recorded
    by: str  # what recorded it: wal-push, wal-receive, base backup, wal reset
    previous: list[dict[str, Any]] = field(default_factory=list)  # systems moved aside by reset

    def to_json(self) -> dict[str, Any]:
        return {
            "format": 1,
            "cluster": self.cluster,
            "system_identifier": self.system.identifier,
            "major": self.system.major,
            "since": self.since,
            "by": self.by,
            "previous": self.previous,
        }

    @classmethod
    def from_json(cls, body: dict[str, Any]) -> Identity:
        system = System(str(body["system_identifier"]), body.get("major"))
        return cls(
            str(body["cluster"]),
            system,
            str(body.get("since", "")),
            str(body.get("by", "")),
            list(body.get("previous", [])),
        )

    def wal_cluster_of(self, identifier: str | None) -> str:
        """Where the WAL of that system is: this cluster's folder, or the one reset moved it to."""
        if identifier is None or identifier == self.system.identifier:
            return self.cluster
        for entry in self.previous:
            if entry.get("system_identifier") == identifier:
                return str(entry["wal_cluster"])
        return layout.retired_wal_cluster(self.cluster, identifier)


def new_identity(cluster: str, system: System, by: str) -> Identity:
    return Identity(cluster, system, datetime.now(UTC).isoformat(timespec="seconds"), by)


def of_segment(path: Path) -> System | None:
    """The system that wrote a WAL segment (or .partial), from its first page; None for a file
    without a long page header (a timeline history file, a .backup file)."""
    with path.open("rb") as handle:
        return of_header(handle.read(LONG_HEADER.size))


def of_header(header: bytes) -> System | None:
    """The system named by a WAL file's first bytes, as `of_segment`."""
    header = header[: LONG_HEADER.size]
    if len(header) < LONG_HEADER.size:
        return None
    magic, info, _tli, _addr, _rem, sysid, _seg, _blck = LONG_HEADER.unpack(header)
    if magic not in PAGE_MAGIC or not info & XLP_LONG_HEADER or sysid == 0:
        return None  # not a WAL page PostgreSQL 12 to 18 wrote: nothing to check it by
    return System(str(sysid), PAGE_MAGIC[magic])


def read(repo: Repository, cluster: str) -> Identity | None:
    key = layout.identity_key(repo.prefix, cluster)
    try:
        data = repo.storage.get(key)
    except NotFound:
        return None
    try:
        return Identity.from_json(json.loads(data))
    except (ValueError, KeyError, TypeError) as exc:
        raise IntegrityError(f"{key} cannot be read ({exc}): put it back or delete it") from None


def write(repo: Repository, identity: Identity, *, if_absent: bool) -> None:
    body = json.dumps(identity.to_json(), indent=2).encode() + b"\n"
    repo.storage.put(layout.identity_key(repo.prefix, identity.cluster), body, if_absent=if_absent)


def mismatch(cluster: str, archive: System, server: System) -> SystemMismatch:
    """The one line that says what happened and what to do."""
    return SystemMismatch(
        f"the archive for cluster {cluster} belongs to {archive.describe()}, this server is "
        f"{server.describe()}: it was upgraded or replaced; use a new CLUSTER_NAME, or run "
        f"`permafrost wal reset --cluster {cluster} --apply` and then take a base backup "
        f"(`permafrost backup --kind base --cluster {cluster}`)"
    )


MISMATCH_MARK = "it was upgraded or replaced"


def is_mismatch(message: str | None) -> bool:
    """Whether a recorded WAL error is this refusal (for the alert's wording)."""
    return bool(message) and MISMATCH_MARK in str(message)
