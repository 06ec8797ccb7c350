"""The WAL archive of one cluster as a whole: what it holds, where it has gaps, what may go.

The bucket is the truth: the archive is listed from `wal/{cluster}/`, the base backups from
`base/{cluster}/*/manifest.json` (signatures checked). Everything else here is pure functions
over names, so pitr, `wal verify` and retention reason about the same facts the same way.
"""

from __future__ import annotations

from collections import defaultdict
from dataclasses import dataclass, field
from datetime import datetime

from permafrost import layout
from permafrost.errors import PermafrostError
from permafrost.repo.config import Repository
from permafrost.repo.manifest import Kind, Manifest
from permafrost.repo.reader import read_manifest
from permafrost.wal import identity
from permafrost.wal import names as walnames
from permafrost.wal import segment as wal
from permafrost.wal.names import Segment


@dataclass
class Archive:
    """The files under wal/{cluster}/, by kind."""

    segments: dict[int, set[int]] = field(default_factory=lambda: defaultdict(set))
    histories: set[int] = field(default_factory=set)
    other: set[str] = field(default_factory=set)  # .backup and .partial files
    modified: dict[str, datetime] = field(default_factory=dict)  # name → when it was archived
    segment_size: int = walnames.DEFAULT_SEGMENT_SIZE

    def add(self, name: str, modified: datetime) -> None:
        self.modified[name] = modified
        segment = walnames.parse_segment(name, self.segment_size)
        if segment is not None:
            self.segments[segment.timeline].add(segment.number)
        elif walnames.is_history(name):
            self.histories.add(walnames.timeline_of(name) or 0)
        elif walnames.timeline_of(name) is not None:
            self.other.add(name)

    def has(self, segment: Segment) -> bool:
        return segment.number in self.segments.get(segment.timeline, set())

    def name(self, segment: Segment) -> str:
        return segment.name(self.segment_size)

    def newest(self, timeline: int) -> Segment | None:
        numbers = self.segments.get(timeline)
        return Segment(timeline, max(numbers)) if numbers else None

    def archived_at(self, segment: Segment) -> datetime | None:
        return self.modified.get(self.name(segment))

    @property
    def timelines(self) -> list[int]:
        return sorted(set(self.segments) | self.histories)

    def all_names(self) -> list[str]:
        return sorted(self.modified)


def list_archive(repo: Repository, cluster: str, segment_size: int | None = None) -> Archive:
    archive = Archive(segment_size=segment_size or walnames.DEFAULT_SEGMENT_SIZE)
    folder = layout.wal_folder(repo.prefix, cluster)
    for info in repo.storage.list(folder):
        name = info.key.rsplit("/", 1)[-1]
        if name.endswith(".pfe"):
            archive.add(name.removesuffix(".pfe"), info.modified)
    return archive


@dataclass(frozen=True)
class BaseBackup:
    """What the WAL side needs to know of a base backup (from its manifest)."""

    id: str
    start: Segment
    stop: Segment
    timeline: int
    start_lsn: int
    stop_lsn: int
    stop_time: datetime
    segment_size: int
    manifest: Manifest
    system: str | None = None  # the system identifier of the server it was taken from
    major: int | None = None
    # Its chain (PostgreSQL 17+ incrementals): the backup it was taken against, and the full
    # the chain starts from. An incremental alone cannot be restored (pg_combinebackup).
    parent_id: str | None = None
    chain_full_id: str | None = None

    @property
    def incremental(self) -> bool:
        return self.parent_id is not None

    @classmethod
    def of(cls, m: Manifest) -> BaseBackup:
        p = m.physical
        size = int(p.get("wal_segment_size", walnames.DEFAULT_SEGMENT_SIZE))
        start_timeline = int(p.get("start_timeline", p["timeline"]))
        return cls(
            id=m.id,
            start=walnames.parse_segment(p["wal_start"], size) or Segment(start_timeline, 0),
            stop=walnames.parse_segment(p["wal_stop"], size) or Segment(int(p["timeline"]), 0),
            timeline=int(p["timeline"]),
            start_lsn=walnames.parse_lsn(p["start_lsn"]),
            stop_lsn=walnames.parse_lsn(p["stop_lsn"]),
            stop_time=datetime.fromisoformat(p.get("stop_time", m.finished_at)),
            segment_size=size,
            manifest=m,
            system=str(p["system_identifier"]) if p.get("system_identifier") else None,
            major=int(p["server_version_num"]) // 10000 if p.get("server_version_num") else None,
            parent_id=m.parent_id,
            chain_full_id=m.chain_full_id,
        )


def base_backups(repo: Repository, cluster: str) -> list[BaseBackup]:
    """Every base backup of the cluster in the bucket (base/ and keep/), oldest first."""
    found: dict[str, BaseBackup] = {}
    for tier in (layout.BASE_TIER, "keep"):
        folder = layout.join(repo.prefix, tier, layout.check_name(cluster, "cluster")) + "/"
        for info in repo.storage.list(folder):
            parsed = layout.parse_backup_key(repo.prefix, info.key)
            if parsed is None or parsed.name != layout.MANIFEST_OBJECT:
                continue
            try:
                m = read_manifest(repo.storage, info.key, repo.keyring)
            except PermafrostError:
                continue  # a damaged manifest is `verify`'s to report; pitr cannot use it
            if m.kind == Kind.BASE and m.physical:
                found[m.id] = BaseBackup.of(m)
    return sorted(found.values(), key=lambda b: (b.stop_lsn, b.id))


def parse_history(text: str) -> list[tuple[int, int]]:
    """A timeline history file: (parent timeline, switch LSN) per line, oldest first."""
    entries = []
    for line in text.splitlines():
        parts = line.split()
        if len(parts) >= 2 and not line.startswith("#"):
            try:
                entries.append((int(parts[0]), walnames.parse_lsn(parts[1])))
            except ValueError:
                continue
    return entries


@dataclass(frozen=True)
class Gap:
    timeline: int
    first: str  # the first missing file
    last: str  # the last missing file
    count: int

    def __str__(self) -> str:
        if self.count == 1:
            return f"{self.first} is missing"
        return f"{self.first} to {self.last} are missing ({self.count} segments)"


def gaps(archive: Archive, start: Segment, end: Segment) -> list[Gap]:
    """Missing segments from start to end (inclusive) on one timeline."""
    found: list[Gap] = []
    run: list[int] = []
    present = archive.segments.get(start.timeline, set())
    for number in range(start.number, end.number + 1):
        if number in present:
            if run:
                found.append(_gap(archive, start.timeline, run))
                run = []
        else:
            run.append(number)
    if run:
        found.append(_gap(archive, start.timeline, run))
    return found


def _gap(archive: Archive, timeline: int, run: list[int]) -> Gap:
    first, last = Segment(timeline, run[0]), Segment(timeline, run[-1])
    return Gap(timeline, archive.name(first), archive.name(last), len(run))


def first_missing(archive: Archive, start: Segment, end: Segment) -> Segment | None:
    present = archive.segments.get(start.timeline, set())
    for number in range(start.number, end.number + 1):
        if number not in present:
            return Segment(start.timeline, number)
    return None


def removable(archive_names: list[str], kept: list[BaseBackup], segment_size: int) -> list[str]:
    """The archived WAL files retention may delete, given the base backups that stay.

    A file goes only when every kept base backup starts after it: segments and .backup files
    numbered below the oldest kept backup's first segment, on any timeline. Timeline history
    files always stay (they are tiny, and recovery onto any later timeline needs them), and with
    no base backup kept nothing goes: WAL without a base cannot be replayed, but deleting it
    because the bases failed would turn a recoverable mistake into a lost archive.
    """
    if not kept:
        return []
    floor = min(base.start.number for base in kept)
    out = []
    for name in archive_names:
        if walnames.is_history(name):
            continue
        segment = walnames.parse_segment(name[:24], segment_size)
        if segment is not None and segment.number < floor:
            out.append(name)
    return out


@dataclass
class Report:
    cluster: str
    checked: list[str] = field(default_factory=list)  # "timeline 1: A to B (n segments)"
    problems: list[str] = field(default_factory=list)
    gaps: list[Gap] = field(default_factory=list)
    bases: int = 0

    def lines(self) -> list[str]:
        out = [f"cluster {self.cluster}: {self.bases} base backup(s)"]
        out += [f"checked {line}" for line in self.checked]
        out += [f"PROBLEM: {problem}" for problem in self.problems]
        if not self.problems:
            out.append("no gaps: every base backup can be recovered to the newest archived WAL")
        return out

    def to_json(self) -> dict[str, object]:
        return {
            "cluster": self.cluster,
            "base_backups": self.bases,
            "checked": self.checked,
            "problems": self.problems,
            "gaps": [
                {"timeline": g.timeline, "first": g.first, "last": g.last, "count": g.count}
                for g in self.gaps
            ],
            "ok": not self.problems,
        }


def of_system(bases: list[BaseBackup], recorded: identity.Identity | None) -> list[BaseBackup]:
    """The base backups whose WAL is in the cluster's own folder: those of the archive's system
    (a replaced system's recover from the folder `wal reset` moved its WAL to)."""
    if recorded is None:
        return bases
    return [b for b in bases if b.system in (None, recorded.system.identifier)]


def verify(repo: Repository, cluster: str) -> Report:
    """Every segment from the oldest base backup's start to the newest archived one, per
    timeline, and the history file of every timeline after the first."""
    bases = of_system(base_backups(repo, cluster), identity.read(repo, cluster))
    size = bases[0].segment_size if bases else walnames.DEFAULT_SEGMENT_SIZE
    archive = list_archive(repo, cluster, size)
    report = Report(cluster, bases=len(bases))
    if not bases and not archive.segments:
        report.problems.append("no base backup and no archived WAL: nothing to recover from")
        return report
    if not bases:
        report.problems.append(
            "no base backup: archived WAL cannot be replayed without one "
            "(run `permafrost backup --kind base`)"
        )
    starts: dict[int, Segment] = {}
    if bases:
        oldest = bases[0]
        starts[oldest.start.timeline] = oldest.start
    for timeline in archive.timelines:
        if timeline <= 1:
            continue
        if timeline not in archive.histories:
            report.problems.append(
                f"timeline {timeline} has no history file {timeline:08X}.history"
            )
            continue
        data = wal.fetch(repo, cluster, f"{timeline:08X}.history")
        history = parse_history(data.decode(errors="replace")) if data else []
        if history and timeline not in starts:
            switch = history[-1][1]
            starts[timeline] = walnames.segment_of(switch, timeline, size)
    for timeline, start in sorted(starts.items()):
        if bases and timeline < bases[0].start.timeline:
            continue
        newest = archive.newest(timeline)
        if newest is None:
            if bases and timeline == bases[0].start.timeline:
                report.problems.append(
                    f"timeline {timeline}: no segment archived from {archive.name(start)}, "
                    f"where base backup {bases[0].id} starts"
                )
            continue
        if not bases:
            start = Segment(timeline, min(archive.segments[timeline]))
        found = gaps(archive, start, newest)
        count = newest.number - start.number + 1
        report.checked.append(
            f"timeline {timeline}: {archive.name(start)} to {archive.name(newest)} "
            f"({count} segments)"
        )
        for gap in found:
            report.gaps.append(gap)
            report.problems.append(f"timeline {timeline}: {gap}")
    for base in bases:
        if base.stop > (archive.newest(base.stop.timeline) or Segment(base.stop.timeline, -1)):
            report.problems.append(
                f"base backup {base.id} needs WAL up to {archive.name(base.stop)}, "
                "which is not archived yet"
            )
    return report
