"""Archived WAL copied to a copy destination, after archive_command has returned.

wal-push writes only to the primary, so archiving never waits for a copy. This runs apart (the
scheduler's `copy` job, every minute, and `permafrost copy`): it lists the primary's wal/ and the
copy's, and copies every object the copy lacks (or holds at another size), each read back and
checked against the SHA-256 of the bytes read from the primary, then each cluster's identity
(clusters/{cluster}.json), so a copy can run pitr, and wal-push to it, on its own.
"""

from __future__ import annotations

import contextlib
from collections.abc import Mapping
from dataclasses import dataclass

from permafrost import layout
from permafrost.copies.objects import Source, copy_object
from permafrost.copies.target import CopyTarget
from permafrost.errors import NotFound


@dataclass
class WalCopy:
    """What one cluster's WAL copy did."""

    cluster: str
    segments: int = 0
    bytes: int = 0
    last_segment: str = ""  # `{timeline}/{name}.pfe` of the newest: the copy is complete up to it


def copy_wal(
    source: Source, prefix: str, target: CopyTarget, copied: Mapping[str, str] | None = None
) -> list[WalCopy]:
    """Copy the WAL the copy lacks, cluster by cluster, oldest first.

    copied: per cluster, the newest WAL (`{timeline}/{name}.pfe`) an earlier run left the copy
    complete up to; what is not newer is not looked at again, so WAL that the copy's own
    retention deleted is not sent again."""
    marks = copied or {}
    folder = layout.join(prefix, "wal") + "/"
    there = {
        layout.rebase(info.key, target.prefix, prefix): info.size
        for info in target.storage.list(layout.join(target.prefix, "wal") + "/")
    }
    results: dict[str, WalCopy] = {}
    for info in source.storage.list(folder):
        cluster, _, rest = info.key[len(folder) :].partition("/")
        name = rest.rsplit("/", 1)[-1]
        if not layout.valid_name(cluster) or not rest or name.startswith("."):
            continue  # an upload in progress, or nothing of ours
        result = results.setdefault(cluster, WalCopy(cluster))
        result.last_segment = max(result.last_segment, rest)
        if rest <= marks.get(cluster, "") or there.get(info.key) == info.size:
            continue
        target_key = layout.rebase(info.key, prefix, target.prefix)
        copy_object(source, info.key, target.storage, target_key, target.destination.storage, None)
        result.segments += 1
        result.bytes += info.size
    for cluster in results:
        _copy_identity(source, prefix, target, cluster)
    return list(results.values())


def _copy_identity(source: Source, prefix: str, target: CopyTarget, cluster: str) -> None:
    """The cluster's identity (which system its WAL is of), as the primary has it."""
    try:
        body = source.storage.get(layout.identity_key(prefix, cluster))
    except NotFound:
        return
    key = layout.identity_key(target.prefix, cluster)
    with contextlib.suppress(NotFound):
        if target.storage.get(key) == body:
            return
    target.storage.put(key, body)
