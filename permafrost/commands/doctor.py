"""`permafrost doctor`: the source, the metadata store and this machine's PostgreSQL programs,
checked for each feature (logical backups, base backups and PITR, incremental backups on 17+).

It prints the report (a table, or `--json`) and then fails with CheckFailed (exit 12) when a
source does not answer or logical backups are not ready (postgres/readiness.py has the rule),
or the bucket cannot be written. The bucket's conditional writes are probed on every run and the
answer recorded in permafrost.json when it differs (the dashboard's /doctor writes nothing, so
it has no bucket section). The credentials' permissions are probed too, one harmless request
each (commands/permissions.py): with --service, a permission that service needs and is denied
fails doctor, and one it must not have (delete, for an append-only scheduler) is a warning.
"""

from __future__ import annotations

import argparse
from dataclasses import asdict, dataclass
from typing import Any

from permafrost.commands import permissions
from permafrost.context import Context
from permafrost.errors import CheckFailed, PermafrostError
from permafrost.postgres.doctor import Server, Space, Store, probe_store, restore_space
from permafrost.postgres.readiness import Feature, Report, Status, calls_wal_push, examine
from permafrost.postgres.readiness import report_json as as_json
from permafrost.repo.config import read_config, reprobe_conditional_writes
from permafrost.sqlite.snapshot import describe_files
from permafrost.storage import ProviderConditions
from permafrost.storage.conditional import LOCAL, MEANING, Conditional
from permafrost.storage.lock import describe_lock
from permafrost.text import human_bytes, print_json, table


@dataclass(frozen=True)
class Bucket:
    """The bucket as doctor found it: reachable and writable, and its conditional writes."""

    where: str
    reachable: bool
    error: str | None = None
    repository: bool = False  # a permafrost.json is there (the probe's answer is recorded)
    conditional_writes: str = str(Conditional.UNKNOWN)  # the probe's answer now
    recorded_before: str = str(Conditional.UNKNOWN)  # what permafrost.json said before it
    local: bool = False  # a local directory: no provider to probe
    object_lock: str | None = None  # OBJECT_LOCK's state on the bucket (storage/lock.py)


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
    p.add_argument(
        "--service",
        choices=[str(s) for s in permissions.Service],
        help="whose credentials these are: fail when they lack what it needs, warn when they "
        "may do what it must not (delete, for the monitor, restore, wal-push, or a scheduler "
        "with CLEANUP_SCHEDULE=off)",
    )
    p.set_defaults(handler=doctor)


def doctor(ctx: Context, args: argparse.Namespace) -> int:
    files = describe_files(ctx.settings.source.sqlite)
    if not ctx.settings.source.postgres:  # SQLite files only: no server to examine
        return _sqlite_only(ctx, files, args.json, args.service)
    report = examine(ctx.settings)
    bucket = examine_bucket(ctx)
    rights = _permissions(ctx, bucket, args.service)
    if args.json:
        sqlite = {"sqlite": files} if files else {}
        print_json({**as_json(report), "bucket": _bucket_json(bucket, rights), **sqlite})
    else:
        sqlite_lines = "".join(f"\n\n{_file_line(f)}" for f in files)
        text = render(report) + "\n\n" + _render_bucket(bucket, rights) + sqlite_lines
        print(text)
    problems = [*report.problems]
    if not bucket.reachable:
        problems.append(f"the bucket cannot be used: {bucket.error}")
    problems += rights.problems() if rights else []
    if problems:
        raise CheckFailed(f"doctor: {problems[0]}")
    _refuse_unreadable(files)
    return 0


def examine_bucket(ctx: Context) -> Bucket:
    """Reach the bucket, and probe its conditional writes (recorded where a repository is)."""
    prefix = ctx.settings.storage.prefix
    try:
        storage = ctx.storage
        storage.check()
        repository = read_config(storage, prefix) is not None
        before, now = reprobe_conditional_writes(storage, prefix)
        locked = describe_lock(storage, ctx.settings.storage.object_lock)
    except PermafrostError as exc:
        return Bucket(ctx.location, reachable=False, error=str(exc))
    local = not isinstance(storage, ProviderConditions)
    return Bucket(ctx.location, True, None, repository, str(now), str(before), local, locked)


def _permissions(
    ctx: Context, bucket: Bucket, service: str | None
) -> permissions.Permissions | None:
    """The credentials' permissions, probed where the bucket answers."""
    if not bucket.reachable:
        return None
    named = permissions.Service(service) if service else None
    try:
        return permissions.examine(ctx.settings, ctx.storage, named)
    except PermafrostError as exc:
        return permissions.Permissions(False, f"not probed: {exc}", [], [], named)


def _bucket_json(bucket: Bucket, rights: permissions.Permissions | None) -> dict[str, Any]:
    return {**asdict(bucket), "permissions": rights.to_json() if rights else None}


def _render_bucket(bucket: Bucket, rights: permissions.Permissions | None) -> str:
    text = render_bucket(bucket)
    return text + "\n" + permissions.render(rights) if rights else text


def render_bucket(bucket: Bucket) -> str:
    if not bucket.reachable:
        return f"bucket {bucket.where}: cannot be used: {bucket.error}"
    state = Conditional(bucket.conditional_writes)
    meaning = LOCAL if bucket.local else MEANING[state]
    if not bucket.repository:
        kept = "no repository there yet: `permafrost init` records it"
    elif bucket.recorded_before != bucket.conditional_writes:
        kept = f"recorded in permafrost.json now (it said: {bucket.recorded_before})"
    else:
        kept = "as recorded in permafrost.json"
    lock = f"\n  object lock: {bucket.object_lock}" if bucket.object_lock else ""
    return (
        f"bucket {bucket.where}: reachable\n  conditional writes: {state} ({meaning}); {kept}"
        + lock
    )


def _file_line(file: dict[str, str | bool]) -> str:
    return f"SQLite file {file['name']} ({file['path']}): {file['state']}"


def _sqlite_only(
    ctx: Context, files: list[dict[str, str | bool]], json: bool, service: str | None
) -> int:
    store = probe_store(ctx.settings.metadata_url)
    space = restore_space(ctx.settings.restore.tmpdir)
    bucket = examine_bucket(ctx)
    rights = _permissions(ctx, bucket, service)
    if json:
        facts = {"source": None, "store": asdict(store), "space": asdict(space)}
        print_json({**facts, "bucket": _bucket_json(bucket, rights), "sqlite": files})
    else:
        lines = ["source: no PostgreSQL server (DATABASE_URL names a SQLite file)"]
        lines += [_store(store), _machine(space, ()), _render_bucket(bucket, rights)]
        print("\n\n".join([*lines, *map(_file_line, files)]))
    if not bucket.reachable:
        raise CheckFailed(f"doctor: the bucket cannot be used: {bucket.error}")
    if rights and rights.problems():
        raise CheckFailed(f"doctor: {rights.problems()[0]}")
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
