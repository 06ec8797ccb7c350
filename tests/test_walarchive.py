"""The WAL archive as a whole: gaps, what retention may delete, tar watching, prefetching."""

from __future__ import annotations

import io
import os
import tarfile
from datetime import UTC, datetime
from pathlib import Path

from permafrost.postgres.tarwatch import TarWatcher
from permafrost.repo.manifest import Kind, Manifest
from permafrost.wal import archive as walarchive
from permafrost.wal import prefetch as walprefetch
from permafrost.wal.archive import Archive, BaseBackup
from permafrost.wal.names import Segment

NOW = datetime(2026, 11, 22, tzinfo=UTC)


def seg(timeline: int, number: int) -> str:
    return Segment(timeline, number).name()


def archive_of(*names: str) -> Archive:
    archive = Archive()
    for name in names:
        archive.add(name, NOW)
    return archive


def base(start: int, stop: int, timeline: int = 1) -> BaseBackup:
    m = Manifest(
        id=f"20261122T0{start:05d}Z-abcdef"[:23],
        database="main",
        kind=Kind.BASE,
        tier="base",
        started_at=NOW.isoformat(),
        finished_at=NOW.isoformat(),
        server_version="15",
        tool_version="15",
        dump_bytes=1,
        compressed_bytes=1,
        stored_bytes=1,
        dump_sha256="",
        stored_sha256="",
        key_id="k",
        compression={},
        encryption={},
        objects={},
        physical={
            "timeline": timeline,
            "start_lsn": f"0/{start * 0x1000000 + 0x28:X}",
            "stop_lsn": f"0/{stop * 0x1000000 + 0x100:X}",
            "wal_start": seg(timeline, start),
            "wal_stop": seg(timeline, stop),
        },
    )
    return BaseBackup.of(m)


def test_gaps_are_listed_as_runs() -> None:
    archive = archive_of(*(seg(1, n) for n in (2, 3, 6, 7, 9)))
    found = walarchive.gaps(archive, Segment(1, 2), Segment(1, 9))
    assert [(g.first, g.last, g.count) for g in found] == [
        (seg(1, 4), seg(1, 5), 2),
        (seg(1, 8), seg(1, 8), 1),
    ]
    assert str(found[1]) == f"{seg(1, 8)} is missing"
    assert walarchive.first_missing(archive, Segment(1, 2), Segment(1, 9)) == Segment(1, 4)
    assert walarchive.first_missing(archive, Segment(1, 2), Segment(1, 3)) is None


def test_retention_keeps_everything_a_kept_base_backup_needs() -> None:
    names = [seg(1, n) for n in range(1, 12)]
    names += [f"{seg(1, 3)}.00000028.backup", "00000002.history", seg(2, 4)]
    gone = walarchive.removable(names, [base(5, 5), base(9, 9)], 16 * 1024 * 1024)
    assert gone == [seg(1, n) for n in range(1, 5)] + [f"{seg(1, 3)}.00000028.backup", seg(2, 4)]
    assert "00000002.history" not in gone
    # No base backup kept: nothing goes, whatever its age.
    assert walarchive.removable(names, [], 16 * 1024 * 1024) == []


def test_history_files_parse() -> None:
    text = "1\t0/3000148\tbefore 2026-11-22 02:00:00+00\n\n2\t0/5000000\tno recovery target\n"
    assert walarchive.parse_history(text) == [(1, 0x3000148), (2, 0x5000000)]


def tar_bytes(members: dict[str, bytes]) -> bytes:
    out = io.BytesIO()
    with tarfile.open(fileobj=out, mode="w", format=tarfile.USTAR_FORMAT) as tar:
        for name, data in members.items():
            info = tarfile.TarInfo(name)
            info.size = len(data)
            tar.addfile(info, io.BytesIO(data))
    return out.getvalue()


def test_tar_watcher_keeps_the_manifest_whatever_the_read_sizes() -> None:
    data = tar_bytes(
        {
            "base/1/1259": os.urandom(70_000),
            "global/pg_control": b"x" * 513,
            "backup_manifest": b'{"WAL-Ranges": []}',
        }
    )
    for step in (1, 7, 511, 512, 4096, len(data)):
        watcher = TarWatcher("backup_manifest")
        for at in range(0, len(data), step):
            watcher.feed(data[at : at + step])
        assert watcher.ended and watcher.members == 3
        assert watcher.kept == b'{"WAL-Ranges": []}'


def test_tar_watcher_notices_a_cut_stream() -> None:
    data = tar_bytes({"a": b"1" * 5000, "backup_manifest": b"{}"})
    watcher = TarWatcher("backup_manifest")
    watcher.feed(data[:6000])
    assert not watcher.ended and watcher.kept is None


def test_prefetcher_keeps_segments_ahead_and_cleans_behind(tmp_path: Path) -> None:
    archive = {seg(1, n): f"segment {n}".encode() for n in range(1, 8)}
    asked: list[str] = []

    def fetch(name: str) -> bytes | None:
        asked.append(name)
        return archive.get(name)

    folder = tmp_path / walprefetch.FOLDER
    spawned: list[int] = []
    walprefetch.request(folder, seg(1, 2), lambda: spawned.append(1))
    assert spawned == [1]
    assert walprefetch.run_prefetcher(folder, 3, fetch, 16 * 1024 * 1024) == 3
    assert sorted(p.name for p in folder.iterdir() if len(p.name) == 24) == [
        seg(1, 3),
        seg(1, 4),
        seg(1, 5),
    ]
    target = tmp_path / "RECOVERYXLOG"
    assert walprefetch.take(folder, seg(1, 3), target)
    assert target.read_bytes() == b"segment 3"
    assert not walprefetch.take(folder, seg(1, 9), target)
    # Replay reaches 6: 3-5 are cleaned away, 7 is fetched, 8 is past the archive's end.
    walprefetch.request(folder, seg(1, 6), lambda: None)
    walprefetch.run_prefetcher(folder, 3, fetch, 16 * 1024 * 1024)
    assert sorted(p.name for p in folder.iterdir() if len(p.name) == 24) == [seg(1, 7)]
    assert seg(1, 8) in asked


def test_a_running_prefetcher_is_not_started_twice(tmp_path: Path) -> None:
    folder = tmp_path / walprefetch.FOLDER
    folder.mkdir()
    with walprefetch._locked(folder) as mine:
        assert mine
        spawned: list[int] = []
        walprefetch.request(folder, seg(1, 2), lambda: spawned.append(1))
        assert spawned == []
