"""`permafrost doctor`: the source, the metadata store and this machine's PostgreSQL programs,
checked for each feature (logical backups, base backups and PITR, incremental backups on 17+).

It prints the report (a table, or `--json`) and then fails with CheckFailed (exit 12) when a
source does not answer or logical backups are not ready (postgres/readiness.py has the rule).
"""

from __future__ import annotations

import argparse
from dataclasses import asdict

from permafrost.config.settings import SqliteSource
from permafrost.context import Context
from permafrost.errors import CheckFailed, SourceError
from permafrost.postgres.doctor import Server, Space, Store, probe_store, restore_space
from permafrost.postgres.readiness import Feature, Report, Status, calls_wal_push, examine
from permafrost.postgres.readiness import report_json as as_json
from permafrost.sqlite.snapshot import describe
from permafrost.text import human_bytes, print_json, table


def add_parsers(commands: argparse._SubParsersAction) -> None:  # type: ignore[type-arg,unused-ignore]
    p = commands.add_parser(
        "doctor",
        help="check the source, the metadata store and the PostgreSQL programs, per feature",
        description="For the source and the metadata store: reachable, version, the settings "
        "that matter, the programs each job would run; then per feature (logical backups, base "
        "backups and PITR, incremental backups on 17+) ready, or what is missing. Exit 12 when "
        "a source does not answer or logical backups are not ready.",
    )
    p.add_argument("--json", action="store_true", help="the same facts as JSON")
    p.set_defaults(handler=doctor)


def doctor(ctx: Context, args: argparse.Namespace) -> int:
    files = _sqlite_files(ctx.settings.source.sqlite)
    if not ctx.settings.source.postgres:  # SQLite files only: no server to examine
        return _sqlite_only(ctx, files, args.json)
    report = examine(ctx.settings)
    if args.json:
        print_json({**as_json(report), **({"sqlite": files} if files else {})})
    else:
        print(render(report) + "".join(f"\n\n{_file_line(f)}" for f in files))
    if not report.ok:
        raise CheckFailed(f"doctor: {report.problems[0]}")
    _refuse_unreadable(files)
    return 0


def _sqlite_files(sources: tuple[SqliteSource, ...]) -> list[dict[str, str | bool]]:
    out: list[dict[str, str | bool]] = []
    for s in sources:
        try:
            out.append({"name": s.name, "path": s.path, "ok": True, "state": describe(s.path)})
        except SourceError as exc:
            out.append({"name": s.name, "path": s.path, "ok": False, "state": str(exc)})
    return out


def _file_line(file: dict[str, str | bool]) -> str:
    return f"SQLite file {file['name']} ({file['path']}): {file['state']}"


def _sqlite_only(ctx: Context, files: list[dict[str, str | bool]], json: bool) -> int:
    store = probe_store(ctx.settings.metadata_url)
    space = restore_space(ctx.settings.restore.tmpdir)
    if json:
        print_json(
            {"source": None, "store": asdict(store), "space": asdict(space), "sqlite": files}
        )
    else:
        lines = ["source: no PostgreSQL server (DATABASE_URL names a SQLite file)"]
        lines += [_store(store), _machine(space, ()), *map(_file_line, files)]
        print("\n\n".join(lines))
    _refuse_unreadable(files)
    return 0


def _refuse_unreadable(files: list[dict[str, str | bool]]) -> None:
    bad = [f for f in files if not f["ok"]]
    if bad:
        raise CheckFailed(f"doctor: {bad[0]['state']}")


def render(report: Report) -> str:
    """The report as a person reads it: the servers, the programs, then each feature."""
    parts = [
        _source(report.source),
        _store(report.store),
        _machine(report.space, report.missing_dirs),
    ]
    if report.tools:
        rows = [
            [t.job, t.program, t.version or "-", t.path or f"missing: {t.error}"]
            for t in report.tools
        ]
        parts.append(table(["job", "program", "version", "path"], rows))
    parts.append("\n".join(_feature(f) for f in report.features))
    return "\n\n".join(parts)


def _source(source: Server) -> str:
    if not source.reachable:
        return f"source {source.where}: does not answer: {source.error}"
    privileges = [
        p
        for p, has in (("superuser", source.superuser), ("REPLICATION", source.replication))
        if has
    ]
    lines = [
        f"source {source.where}: PostgreSQL {source.version}, as {source.user}"
        f" ({', '.join(privileges) or 'no superuser, no REPLICATION'})"
    ]
    lines += [
        f"  database {r.name}: {'reachable' if r.reachable else r.error}" for r in source.databases
    ]
    rows = [[f"  {name}", _setting(name, value)] for name, value in source.settings.items()]
    if source.archiver_failed is not None:
        rows.append(["  archiver failures", str(source.archiver_failed)])
    return "\n".join(lines) + "\n" + table(["  setting", "value"], rows)


def _setting(name: str, value: str | None) -> str:
    if value is None:
        return "(may not be read by this role)"
    if name == "archive_command":
        calls = "calls" if calls_wal_push(value) else "does not call"
        return f"{value or '(empty)'} ({calls} permafrost wal-push)"
    return value


def _store(store: Store) -> str:
    if not store.configured:
        return "metadata store: not configured (METADATA_DATABASE_URL)"
    if not store.reachable:
        return f"metadata store: {store.error}"
    schema = "schema migrated" if store.migrated else "no schema yet (made on first use)"
    return f"metadata store: PostgreSQL {store.version}, {schema}"


def _machine(space: Space, missing_dirs: tuple[str, ...]) -> str:
    name = "RESTORE_TMPDIR" if space.configured else "temporary directory (no RESTORE_TMPDIR)"
    free = human_bytes(space.free_bytes) + " free" if space.free_bytes is not None else space.error
    lines = [f"{name} {space.path}: {free}"]
    lines += [f"PG_BIN_DIRS entry {d} holds no PostgreSQL programs" for d in missing_dirs]
    return "\n".join(lines)


def _feature(feature: Feature) -> str:
    status = str(feature.status)
    if feature.status is Status.READY and not feature.in_permafrost:
        status = "ready on the server"
    lines = [f"{feature.title}: {status}"]
    lines += [f"  - {line}" for line in feature.missing]
    lines += [f"  note: {line}" for line in feature.notes]
    return "\n".join(lines)
