"""`permafrost doctor`'s facts: what the source and the metadata store say about themselves,
which programs each job would run, and the scratch space a restore has.

Every probe returns a plain record and never raises for what an operator can fix: a server that
does not answer is `reachable=False` with its one-line error, a program that is not installed is
its ToolMissing line. What those facts mean for each feature is postgres/readiness.py's part.
"""

from __future__ import annotations

import os
import shutil
import tempfile
from collections.abc import Sequence
from dataclasses import dataclass, field, replace

from permafrost.config.settings import Secret, SourceSettings
from permafrost.errors import PermafrostError
from permafrost.postgres import installations
from permafrost.postgres import tools as pgtools
from permafrost.text import first_line

TIMEOUT = 5  # seconds to connect: the dashboard's page waits for this, at most, per server
SETTINGS = ("wal_level", "archive_mode", "archive_command", "max_wal_senders", "summarize_wal")

_ROLE = """
SELECT current_setting('server_version'), current_setting('server_version_num')::int,
       current_user, r.rolsuper, r.rolreplication
FROM pg_catalog.pg_roles r WHERE r.rolname = current_user
"""
_SETTINGS = "SELECT name, setting FROM pg_catalog.pg_settings WHERE name = ANY(%s)"
_ARCHIVER = "SELECT failed_count, last_failed_wal FROM pg_catalog.pg_stat_archiver"
_READ_ALL = "SELECT pg_catalog.pg_has_role(current_user, 'pg_read_all_data', 'USAGE')"


@dataclass(frozen=True)
class Reach:
    """One database of DB_NAME: can the configured role connect to it?"""

    name: str
    reachable: bool
    error: str | None = None


@dataclass(frozen=True)
class Server:
    """The source server as its configured role sees it (None: not known, not readable)."""

    where: str
    reachable: bool
    error: str | None = None
    version: str | None = None
    major: int = 0
    user: str | None = None
    superuser: bool = False
    replication: bool = False
    reads_all_data: bool | None = None  # pg_read_all_data (14+); None before 14
    settings: dict[str, str | None] = field(default_factory=dict)
    archiver_failed: int | None = None
    archiver_last_failed_wal: str | None = None
    databases: tuple[Reach, ...] = ()


@dataclass(frozen=True)
class Store:
    """The metadata store: configured, reachable, its version, whether it has our schema."""

    configured: bool
    reachable: bool = False
    error: str | None = None
    version: str | None = None
    migrated: bool = False


@dataclass(frozen=True)
class Tool:
    """A program a job would run against this server, or why there is none."""

    job: str
    program: str
    path: str | None = None
    version: str | None = None
    error: str | None = None


@dataclass(frozen=True)
class Space:
    """Free space where a restore writes its temporary dump (RESTORE_TMPDIR)."""

    path: str
    configured: bool
    free_bytes: int | None = None
    error: str | None = None


def probe_source(source: SourceSettings, timeout: int = TIMEOUT) -> Server:
    """The cluster once (through its first database), then each database of DB_NAME."""
    import psycopg  # imported here: start-up cost, as in tools.connect

    where = pgtools.where(source)
    try:
        with pgtools.connect(
            source, pgtools.cluster_database(source), autocommit=True, timeout=timeout
        ) as conn:
            server = _describe(conn, where)
    except PermafrostError as exc:
        return Server(where, False, first_line(exc))
    except psycopg.Error as exc:  # connected, but a read failed (a server gone mid-way)
        return Server(where, False, f"reading the server's settings failed: {first_line(exc)}")
    reaches = tuple(_reach(source, name, timeout) for name in source.databases)
    return replace(server, databases=reaches)


def _describe(conn: pgtools.Connection, where: str) -> Server:
    conn.execute(f"SET statement_timeout = '{TIMEOUT}s'")
    role = conn.execute(_ROLE).fetchone()
    assert role is not None
    version, number, user, superuser, replication = role
    found: dict[str, str | None] = dict(conn.execute(_SETTINGS, (list(SETTINGS),)).fetchall())
    failed = conn.execute(_ARCHIVER).fetchone()
    reads_all = conn.execute(_READ_ALL).fetchone() if number >= 140000 else None
    return Server(
        where,
        True,
        version=str(version).split()[0],
        major=int(number) // 10000,
        user=str(user),
        superuser=bool(superuser),
        replication=bool(replication),
        reads_all_data=bool(reads_all[0]) if reads_all else None,
        settings={name: found[name] for name in SETTINGS if name in found},
        archiver_failed=int(failed[0]) if failed else None,
        archiver_last_failed_wal=failed[1] if failed else None,
    )


def _reach(source: SourceSettings, database: str, timeout: int) -> Reach:
    try:
        with pgtools.connect(source, database, autocommit=True, timeout=timeout) as conn:
            conn.execute("SELECT 1")
    except PermafrostError as exc:
        return Reach(database, False, first_line(exc))
    return Reach(database, True)


def probe_store(url: Secret | None, timeout: int = TIMEOUT) -> Store:
    """The metadata store at METADATA_DATABASE_URL (a URL is a libpq connection string)."""
    if url is None:
        return Store(configured=False)
    import psycopg  # imported here: start-up cost, as in tools.connect

    try:
        with psycopg.connect(
            url.reveal(), autocommit=True, connect_timeout=timeout, client_encoding="UTF8"
        ) as conn:
            row = conn.execute(
                "SELECT current_setting('server_version'),"
                " to_regclass('permafrost.backups') IS NOT NULL"
            ).fetchone()
    except psycopg.Error as exc:
        return Store(True, False, f"cannot reach the metadata store: {first_line(exc)}")
    assert row is not None
    return Store(True, True, version=str(row[0]).split()[0], migrated=bool(row[1]))


# (job, program, how it is chosen); "exact" programs must be of the server's own major.
JOBS: tuple[tuple[str, str, str], ...] = (
    ("logical backup", "pg_dump", "at_least"),
    ("logical backup (roles)", "pg_dumpall", "newest"),
    ("restore, verify", "pg_restore", "restore"),
    ("restore --globals", "psql", "newest"),
    ("base backup", "pg_basebackup", "a base backup"),
    ("base backup check", "pg_verifybackup", "checking a base backup"),
    ("wal-receive", "pg_receivewal", "streaming WAL"),
    ("point-in-time recovery", "postgres", "point-in-time recovery"),
    ("incremental backups", "pg_combinebackup", "combining incremental backups"),
)
INCREMENTAL_MAJOR = 17


def choose_tools(bin_dirs: tuple[str, ...], major: int) -> tuple[Tool, ...]:
    """The program each job would run against a server of `major` (17+: pg_combinebackup)."""
    found = installations.installed(bin_dirs)
    jobs = [j for j in JOBS if j[1] != "pg_combinebackup" or major >= INCREMENTAL_MAJOR]
    return tuple(_choose(found, job, program, how, major) for job, program, how in jobs)


def _choose(
    found: Sequence[installations.Installation], job: str, program: str, how: str, major: int
) -> Tool:
    try:
        if how in ("at_least", "newest"):  # newest: any major reads every server
            choice = installations.at_least(found, program, major if how == "at_least" else 0)
        elif how == "restore":
            dumper = installations.at_least(found, "pg_dump", major).major
            choice = installations.for_restore(found, major, dumper, major)
        else:
            choice = installations.exact(found, program, major, how)
    except PermafrostError as exc:
        return Tool(job, program, error=first_line(exc))
    return Tool(job, program, choice.path, choice.version)


def restore_space(tmpdir: str | None) -> Space:
    """Free bytes in RESTORE_TMPDIR, or in the system's temporary directory without it."""
    path = tmpdir or tempfile.gettempdir()
    if not os.path.isdir(path):
        return Space(path, tmpdir is not None, error=f"{path} is not a directory")
    try:
        free = shutil.disk_usage(path).free
    except OSError as exc:
        return Space(path, tmpdir is not None, error=f"{path}: {exc.strerror}")
    return Space(path, tmpdir is not None, free_bytes=free)
