"""Which installation's program runs against a server of each major (postgres/installations.py).

The rules on made-up installations (a bin directory of scripts that answer --version as
PostgreSQL's programs do); tests/test_majors.py runs them against real servers of every major.
"""

from __future__ import annotations

from pathlib import Path

import pytest

from permafrost.config.settings import Settings
from permafrost.errors import ToolMissing
from permafrost.postgres import installations as inst

CLIENT = ("pg_dump", "pg_dumpall", "pg_restore", "psql", "pg_basebackup", "pg_receivewal")
SERVER = ("postgres", "initdb", "pg_ctl")


def fake(root: Path, version: str, programs: tuple[str, ...] = CLIENT + SERVER) -> str:
    """A bin directory whose programs say they are PostgreSQL `version`."""
    bin_dir = root / f"pg{version}" / "bin"
    bin_dir.mkdir(parents=True)
    for name in programs:
        script = bin_dir / name
        script.write_text(f'#!/bin/sh\necho "{name} (PostgreSQL) {version}"\n')
        script.chmod(0o755)
    return str(bin_dir)


@pytest.fixture
def several(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> list[inst.Installation]:
    """13 with servers only (as npm's packages), 15 and 18 full, 16 clients only."""
    monkeypatch.setattr(inst, "DEBIAN_ROOT", tmp_path / "no-debian")
    monkeypatch.setenv("PATH", "/nonexistent")
    dirs = (
        fake(tmp_path, "13.23", SERVER),
        fake(tmp_path, "15.18"),
        fake(tmp_path, "16.14", CLIENT),
        fake(tmp_path, "18.6"),
    )
    return inst.discover(dirs)


def major(choice: inst.Choice) -> int:
    return choice.major


def test_pg_dump_is_the_servers_own_major_else_the_newest_newer(
    several: list[inst.Installation],
) -> None:
    assert major(inst.at_least(several, "pg_dump", 15)) == 15
    assert major(inst.at_least(several, "pg_dump", 16)) == 16
    assert major(inst.at_least(several, "pg_dump", 13)) == 18  # no 13 client: the newest
    assert major(inst.at_least(several, "pg_dump", 17)) == 18
    assert inst.at_least(several, "pg_dump", 17).path.endswith("pg18.6/bin/pg_dump")


def test_a_server_newer_than_every_client_is_refused_in_one_line(
    several: list[inst.Installation],
) -> None:
    with pytest.raises(ToolMissing) as refused:
        inst.at_least(several, "pg_dump", 19)
    line = str(refused.value)
    assert "\n" not in line
    assert line.startswith("a PostgreSQL 19 server needs pg_dump 19 or newer; found pg_dump 18")
    assert "postgresql-client-19" in line and "PG_MAJORS" in line and "PG_BIN_DIRS" in line


def test_physical_programs_must_be_exactly_the_clusters_major(
    several: list[inst.Installation],
) -> None:
    assert major(inst.exact(several, "pg_basebackup", 15, "a base backup")) == 15
    assert major(inst.exact(several, "postgres", 13, "recovery")) == 13
    with pytest.raises(ToolMissing) as refused:
        inst.exact(several, "pg_basebackup", 17, "a base backup")
    assert str(refused.value).startswith(
        "a base backup of a PostgreSQL 17 cluster needs pg_basebackup of PostgreSQL 17 exactly; "
        "found pg_basebackup 18 ("
    )
    with pytest.raises(ToolMissing, match="install postgresql-16 "):  # the server package
        inst.exact(several, "postgres", 16, "point-in-time recovery")


def test_pg_restore_is_the_targets_major_when_it_reads_the_dump(
    several: list[inst.Installation],
) -> None:
    same = inst.for_restore(several, target_major=15, archive_major=15, source_major=15)
    assert (same.major, same.warning) == (15, None)
    upgrade = inst.for_restore(several, target_major=16, archive_major=15, source_major=15)
    assert (upgrade.major, upgrade.warning) == (16, None)
    # a dump pg_dump 18 wrote of a 13 server, back into 13: only 18 reads it; no warning
    back = inst.for_restore(several, target_major=13, archive_major=18, source_major=13)
    assert (back.major, back.warning) == (18, None)
    # into an older major than the data came from: the newest, and a warning
    down = inst.for_restore(several, target_major=15, archive_major=16, source_major=16)
    assert down.major == 18
    assert down.warning is not None and "into an older PostgreSQL 15 server" in down.warning
    with pytest.raises(ToolMissing, match="written by pg_dump 19"):
        inst.for_restore(several, target_major=15, archive_major=19, source_major=19)


def test_configured_directories_come_first_and_each_is_listed_once(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setattr(inst, "DEBIAN_ROOT", tmp_path / "debian")
    debian = tmp_path / "debian" / "15"
    debian.mkdir(parents=True)
    (debian / "bin").symlink_to(Path(fake(tmp_path, "15.18")))
    other = fake(tmp_path, "15.9")
    monkeypatch.setenv("PATH", f"{debian / 'bin'}:/usr/bin")
    found = inst.discover((other, str(debian / "bin")))
    assert [(str(i.bin_dir), i.version, i.configured) for i in found] == [
        (other, "15.9", True),
        (str(debian / "bin"), "15.18", True),
    ]
    # on a tie of majors, the configured installation wins
    assert inst.at_least(found, "pg_dump", 15).version == "15.9"
    assert inst.missing_dirs((other, str(tmp_path / "typo"))) == [str(tmp_path / "typo")]


def test_pg_bin_dirs_is_a_colon_separated_list_and_pg_bin_dir_a_list_of_one() -> None:
    env = {
        "PG_BIN_DIRS": "/opt/pg18/bin: /usr/lib/postgresql/16/bin:",
        "PG_BIN_DIR": "/opt/pg13/bin",
        "BACKUP_ENCRYPTION_KEY": "",
    }
    assert Settings.from_env(env).pg_bin_dirs == (
        "/opt/pg18/bin",
        "/usr/lib/postgresql/16/bin",
        "/opt/pg13/bin",
    )
    assert Settings.from_env({"PG_BIN_DIR": "/opt/pg13/bin"}).pg_bin_dirs == ("/opt/pg13/bin",)
    assert Settings.from_env({}).pg_bin_dirs == ()


def test_a_data_directory_says_its_major(tmp_path: Path) -> None:
    (tmp_path / "PG_VERSION").write_text("17\n")
    assert inst.major_of_data_dir(tmp_path) == 17
    assert inst.major_of_data_dir(tmp_path / "missing") is None
