"""What `permafrost doctor`'s facts mean: per feature, ready or what is missing, each missing
item a line that says what to run or set; and which findings make the command fail.

Pure functions of the records postgres/doctor.py gathers (`examine` gathers them), so the CLI
and the dashboard say the same thing. The exit rule: the command fails when a configured source
does not answer, logical backups are not ready, or base backups are not ready although WAL
archiving is configured (WAL_ARCHIVING, or an archive_mode that calls `permafrost wal-push`);
otherwise base backups not ready is a warning, and incremental backups are only reported.
"""

from __future__ import annotations

import re
from dataclasses import asdict, dataclass
from enum import StrEnum
from typing import Any

from permafrost.config.settings import Settings
from permafrost.postgres import doctor, installations
from permafrost.postgres.doctor import INCREMENTAL_MAJOR, Server, Space, Store, Tool

ARCHIVE_COMMAND = "archive_command = 'permafrost --env-file FILE wal-push %p'"


class FeatureName(StrEnum):
    LOGICAL = "logical"
    BASE = "base"
    INCREMENTAL = "incremental"


class Status(StrEnum):
    READY = "ready"
    NOT_READY = "not ready"
    NOT_APPLICABLE = "not applicable"


TITLES = {
    FeatureName.LOGICAL: "logical backups",
    FeatureName.BASE: "base backups and PITR",
    FeatureName.INCREMENTAL: "incremental backups (17+)",
}


@dataclass(frozen=True)
class Feature:
    """A feature's readiness: `missing` lines stop it, `notes` are worth knowing."""

    name: FeatureName
    status: Status
    missing: tuple[str, ...] = ()
    notes: tuple[str, ...] = ()
    in_permafrost: bool = True  # False: the server could, Permafrost does not do it yet

    @property
    def title(self) -> str:
        return TITLES[self.name]


@dataclass(frozen=True)
class Report:
    source: Server
    store: Store
    tools: tuple[Tool, ...]
    space: Space
    missing_dirs: tuple[str, ...]
    wal_archiving: str  # WAL_ARCHIVING: off, push or receive
    features: tuple[Feature, ...]
    problems: tuple[str, ...]  # what makes `doctor` fail; empty: it exits 0

    @property
    def ok(self) -> bool:
        return not self.problems

    def feature(self, name: FeatureName) -> Feature:
        return next(f for f in self.features if f.name == name)


def examine(settings: Settings, timeout: int = doctor.TIMEOUT) -> Report:
    """Every check against the configured servers and this machine's programs."""
    source = doctor.probe_source(settings.source, timeout)
    tools = doctor.choose_tools(settings.pg_bin_dirs, source.major) if source.reachable else ()
    return assess(
        source,
        doctor.probe_store(settings.metadata_url, timeout),
        tools,
        doctor.restore_space(settings.restore.tmpdir),
        tuple(installations.missing_dirs(settings.pg_bin_dirs)),
        settings.schedules.wal_archiving,
        has_databases=bool(settings.source.databases),
    )


def assess(
    source: Server,
    store: Store,
    tools: tuple[Tool, ...],
    space: Space,
    missing_dirs: tuple[str, ...],
    wal_archiving: str,
    *,
    has_databases: bool = True,
) -> Report:
    logical = _logical(source, tools, has_databases)
    base = _base(source, tools, wal_archiving)
    features = (logical, base, _incremental(source, tools, base))
    problems: list[str] = []
    if not source.reachable:
        problems.append(_unreachable(source))
    elif logical.missing:
        problems.append(f"logical backups are not ready: {'; '.join(logical.missing)}")
    if source.reachable and base.missing and _archiving(source, wal_archiving):
        problems.append(
            "WAL archiving is configured, but base backups are not ready: "
            + "; ".join(base.missing)
        )
    return Report(
        source, store, tools, space, missing_dirs, wal_archiving, features, tuple(problems)
    )


def _feature(name: FeatureName, missing: list[str], notes: list[str], **kw: Any) -> Feature:
    status = Status.NOT_READY if missing else Status.READY
    return Feature(name, status, tuple(missing), tuple(notes), **kw)


def _tool_errors(tools: tuple[Tool, ...], programs: tuple[str, ...]) -> list[str]:
    return [t.error for t in tools if t.program in programs and t.error]


def _unreachable(source: Server) -> str:
    return f"the source at {source.where} does not answer: {source.error}"


def _logical(source: Server, tools: tuple[Tool, ...], has_databases: bool) -> Feature:
    if not source.reachable:
        return _feature(FeatureName.LOGICAL, [_unreachable(source)], [])
    missing = (
        []
        if has_databases
        else ["no database to back up: set DB_NAME (or name one in DATABASE_URL)"]
    )
    missing += [f"database {r.name}: {r.error}" for r in source.databases if not r.reachable]
    missing += _tool_errors(tools, ("pg_dump", "pg_dumpall", "pg_restore"))
    notes = _tool_errors(tools, ("psql",))
    if not source.superuser and source.reads_all_data is False:
        notes.append(
            f"the role {source.user} is neither superuser nor in pg_read_all_data: pg_dump fails "
            f"on any table it may not read (GRANT pg_read_all_data TO {_ident(source.user)})"
        )
    return _feature(FeatureName.LOGICAL, missing, notes)


def _base(source: Server, tools: tuple[Tool, ...], wal_archiving: str) -> Feature:
    if not source.reachable:
        return _feature(FeatureName.BASE, [_unreachable(source)], [])
    settings = source.settings
    missing: list[str] = []
    if settings.get("wal_level") == "minimal":
        missing.append("wal_level is minimal: set wal_level = replica and restart")
    senders = _int(settings.get("max_wal_senders"))
    wanted = 2 if wal_archiving == "receive" else 1
    if senders is not None and senders < wanted:
        missing.append(
            f"max_wal_senders is {senders}: set max_wal_senders = 10 and restart "
            + (
                "(a base backup and wal-receive hold one each)"
                if wanted == 2
                else "(a base backup holds one)"
            )
        )
    if not (source.superuser or source.replication):
        missing.append(
            f"the role {source.user} lacks REPLICATION: "
            f"ALTER ROLE {_ident(source.user)} REPLICATION"
        )
    missing += _tool_errors(tools, ("pg_basebackup", "pg_verifybackup", "postgres"))
    missing += _archiving_missing(source, tools, wal_archiving)
    return _feature(FeatureName.BASE, missing, _archiver_notes(source, wal_archiving))


def _archiving_missing(source: Server, tools: tuple[Tool, ...], wal_archiving: str) -> list[str]:
    if wal_archiving == "receive":
        return _tool_errors(tools, ("pg_receivewal",))
    if wal_archiving != "push":
        return [
            "WAL_ARCHIVING is off: set WAL_ARCHIVING=push (with archive_mode = on and "
            f"{ARCHIVE_COMMAND} on the server) or WAL_ARCHIVING=receive (wal-receive streams it)"
        ]
    missing = []
    if source.settings.get("archive_mode") not in ("on", "always"):
        missing.append(
            f"archive_mode is {source.settings.get('archive_mode') or 'unknown'}: "
            f"set archive_mode = on and {ARCHIVE_COMMAND}, and restart"
        )
    elif source.settings.get("archive_command") is not None and not calls_wal_push(
        source.settings.get("archive_command")
    ):
        missing.append(f"archive_command does not call permafrost wal-push: set {ARCHIVE_COMMAND}")
    return missing


def _archiver_notes(source: Server, wal_archiving: str) -> list[str]:
    notes = []
    archive_mode = source.settings.get("archive_mode")
    if "archive_command" in source.settings and source.settings["archive_command"] is None:
        notes.append(
            f"the role {source.user} may not read archive_command "
            f"(GRANT pg_read_all_settings TO {_ident(source.user)})"
        )
    if source.archiver_failed and (wal_archiving == "push" or archive_mode in ("on", "always")):
        notes.append(
            f"pg_stat_archiver counts {source.archiver_failed} failed archive attempts (last "
            f"{source.archiver_last_failed_wal}): see the server's log and `permafrost wal status`"
        )
    return notes


def _incremental(source: Server, tools: tuple[Tool, ...], base: Feature) -> Feature:
    how = (
        "Permafrost: `permafrost backup --kind incremental`, and INCREMENTAL_SCHEDULE "
        "(every 6 hours) between the full base backups"
    )
    if source.reachable and source.major < INCREMENTAL_MAJOR:
        return Feature(
            FeatureName.INCREMENTAL,
            Status.NOT_APPLICABLE,
            notes=(f"needs PostgreSQL {INCREMENTAL_MAJOR}+; the source is {source.major}",),
        )
    if not source.reachable:
        return _feature(FeatureName.INCREMENTAL, [_unreachable(source)], [how])
    missing = ["base backups are not ready (above)"] if base.missing else []
    if source.settings.get("summarize_wal") != "on":
        missing.append(
            f"summarize_wal is {source.settings.get('summarize_wal') or 'unknown'}: "
            "ALTER SYSTEM SET summarize_wal = on; SELECT pg_reload_conf()"
        )
    missing += _tool_errors(tools, ("pg_combinebackup",))
    return _feature(FeatureName.INCREMENTAL, missing, [how])


def calls_wal_push(command: str | None) -> bool:
    return bool(command) and "permafrost" in str(command) and "wal-push" in str(command)


def _archiving(source: Server, wal_archiving: str) -> bool:
    """WAL archiving is meant: Permafrost's setting, or the server archives through it."""
    mode = source.settings.get("archive_mode")
    return wal_archiving != "off" or (
        mode in ("on", "always") and calls_wal_push(source.settings.get("archive_command"))
    )


def _ident(name: str | None) -> str:
    """A role name as SQL spells it: bare when it may be, else double-quoted."""
    text = name or "CURRENT_USER"
    if re.fullmatch(r"[a-z_][a-z0-9_$]*", text) or text == "CURRENT_USER":
        return text
    return '"' + text.replace('"', '""') + '"'


def _int(value: str | None) -> int | None:
    try:
        return int(value) if value is not None else None
    except ValueError:
        return None


def report_json(report: Report, *, redact: bool = False) -> dict[str, Any]:
    """The report for `--json` and the dashboard's /doctor: stable keys (README lists them).

    redact: archive_command left out (an open endpoint; a command line may carry a secret),
    archive_command_calls_wal_push says what matters about it."""
    source = asdict(report.source)
    source["databases"] = [asdict(r) for r in report.source.databases]
    command = report.source.settings.get("archive_command")
    source["archive_command_calls_wal_push"] = calls_wal_push(command)
    if redact and command is not None:
        source["settings"]["archive_command"] = "(hidden)"
    return {
        "ok": report.ok,
        "problems": list(report.problems),
        "source": source,
        "metadata_store": asdict(report.store),
        "tools": [asdict(t) for t in report.tools],
        "restore_tmpdir": asdict(report.space),
        "pg_bin_dirs_missing": list(report.missing_dirs),
        "wal_archiving": report.wal_archiving,
        "features": [
            {
                "feature": str(f.name),
                "title": f.title,
                "status": str(f.status),
                "missing": list(f.missing),
                "notes": list(f.notes),
                "in_permafrost": f.in_permafrost,
            }
            for f in report.features
        ],
    }
