"""What doctor's facts mean for each feature: postgres/readiness.py's rules on plain records."""

from __future__ import annotations

from pathlib import Path

from permafrost.postgres.doctor import Reach, Server, Space, Store, Tool
from permafrost.postgres.readiness import FeatureName, Report, Status, assess

BIN = Path("/usr/lib/postgresql/15/bin")
PROGRAMS = ("pg_dump", "pg_dumpall", "pg_restore", "psql", "pg_basebackup", "pg_verifybackup")
TOOLS = tuple(Tool("job", p, str(BIN / p), "15.18") for p in (*PROGRAMS, "postgres"))
SETTINGS = {
    "wal_level": "replica",
    "archive_mode": "on",
    "archive_command": "permafrost --env-file /etc/permafrost.env wal-push %p",
    "max_wal_senders": "10",
}


def server(**changes: object) -> Server:
    facts: dict[str, object] = {
        "where": "db:5432",
        "reachable": True,
        "version": "15.18",
        "major": 15,
        "user": "backup",
        "superuser": False,
        "replication": True,
        "reads_all_data": True,
        "settings": dict(SETTINGS),
        "archiver_failed": 0,
        "databases": (Reach("shop", True),),
    }
    facts.update(changes)
    return Server(**facts)  # type: ignore[arg-type]


def report(source: Server, wal_archiving: str = "push", tools: tuple[Tool, ...] = TOOLS) -> Report:
    return assess(source, Store(False), tools, Space("/tmp", False, 1), (), wal_archiving)


def test_it_is_ready_with_replica_archiving_through_wal_push_and_a_replication_role() -> None:
    done = report(server())
    assert done.ok
    assert done.feature(FeatureName.LOGICAL).status is Status.READY
    assert done.feature(FeatureName.BASE).status is Status.READY
    assert done.feature(FeatureName.INCREMENTAL).status is Status.NOT_APPLICABLE


def test_it_names_the_grant_a_role_without_replication_lacks() -> None:
    base = report(server(replication=False), "off").feature(FeatureName.BASE)
    assert "the role backup lacks REPLICATION: ALTER ROLE backup REPLICATION" in base.missing


def test_an_archive_command_that_does_not_call_wal_push_is_named() -> None:
    settings = {**SETTINGS, "archive_command": "cp %p /mnt/wal/%f"}
    done = report(server(settings=settings))
    assert any("archive_command does not call permafrost wal-push" in m for m in done.problems)
    assert not done.ok  # WAL_ARCHIVING=push: base backups not ready fails the command


def test_the_server_archiving_through_permafrost_makes_base_readiness_count() -> None:
    done = report(server(replication=False), "off")  # WAL_ARCHIVING off, archive_mode on
    assert not done.ok and "base backups are not ready" in done.problems[0]
    quiet = {**SETTINGS, "archive_mode": "off"}
    assert report(server(replication=False, settings=quiet), "off").ok  # only a warning


def test_failed_archive_attempts_and_a_missing_pg_dump_are_reported() -> None:
    failing = server(archiver_failed=3, archiver_last_failed_wal="000000010000000000000007")
    notes = report(failing).feature(FeatureName.BASE).notes
    assert any("3 failed archive attempts (last 000000010000000000000007)" in n for n in notes)
    missing = Tool("logical backup", "pg_dump", error="a PostgreSQL 15 server needs pg_dump 15+")
    no_dump = (*(t for t in TOOLS if t.program != "pg_dump"), missing)
    done = report(server(), tools=no_dump)
    assert not done.ok and "pg_dump 15+" in done.problems[0]


def test_incrementals_on_17_need_summarize_wal_and_pg_combinebackup() -> None:
    tools = (*TOOLS, Tool("incremental backups", "pg_combinebackup", error="install postgresql-17"))
    settings = {**SETTINGS, "summarize_wal": "off"}
    incremental = report(server(major=17, settings=settings), tools=tools).feature(
        FeatureName.INCREMENTAL
    )
    assert incremental.status is Status.NOT_READY and incremental.in_permafrost
    assert incremental.missing == (
        "summarize_wal is off: ALTER SYSTEM SET summarize_wal = on; SELECT pg_reload_conf()",
        "install postgresql-17",
    )


def test_a_role_name_sql_must_quote_is_quoted_in_the_fix() -> None:
    base = report(server(replication=False, user="Backup Robot"), "off").feature(FeatureName.BASE)
    assert 'ALTER ROLE "Backup Robot" REPLICATION' in base.missing[0]
