"""The restore tool's commands: list, show, verify, delete, stats."""

from __future__ import annotations

import argparse
import sys
from typing import Any

from permafrost import layout
from permafrost.audit import actor
from permafrost.backup.lookup import (
    FALLBACK,
    find_backups,
    record_json,
    resolve,
    stats_from_records,
)
from permafrost.catalog.copy_records import CopyRecord
from permafrost.catalog.records import BackupRecord
from permafrost.config.fleet import load_fleet
from permafrost.context import Context
from permafrost.copies.run import copy_json, where_copied
from permafrost.errors import CatalogUnavailable, RowCountMismatch, UsageError
from permafrost.readfrom import Reader, add_from_argument
from permafrost.retention import deletion
from permafrost.text import human_bytes, one_line, print_json, table, when
from restore import globals_cli, sqlite_cli, verify_cli
from restore import runbook_cli as plan_cli
from restore import target as targets
from restore.engine import RestoreOptions, RestorePlan, execute, plan_restore, refuse_base

AS_OF_HELP = (
    "read the bucket as it was at this moment (ISO 8601; no offset: local time, TZ) from a "
    "versioned bucket's old object versions, not the catalog: backups deleted or overwritten "
    "since come back"
)


def add_as_of(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("--as-of", metavar="TIME", help=AS_OF_HELP)


def add_parsers(commands: argparse._SubParsersAction) -> None:  # type: ignore[type-arg,unused-ignore]
    p = commands.add_parser("list", help="list backups, newest first")
    p.add_argument("--database")
    p.add_argument("--source", help="only this source's backups (SOURCES_FILE)")
    p.add_argument("--tier", choices=layout.LOGICAL_TIERS)
    p.add_argument("--status", choices=("running", "completed", "failed", "interrupted"))
    p.add_argument("--limit", type=_positive, default=None)
    p.add_argument(
        "--tag",
        action="append",
        default=[],
        help="only backups with this tag (backup --tag); repeatable: every one of them",
    )
    p.add_argument("--json", action="store_true")
    add_as_of(p)
    p.set_defaults(handler=list_backups)

    p = commands.add_parser("show", help="show one backup: manifest, row counts, verifications")
    p.add_argument("backup", metavar="ID|latest")
    p.add_argument("--database", help="whose backup `latest` means")
    p.add_argument("--json", action="store_true")
    add_as_of(p)
    p.set_defaults(handler=show)

    p = commands.add_parser(
        "restore",
        help="restore a backup into a database",
        description="Download and check a backup, restore it into a staging database, compare "
        "exact row counts with the manifest, then put it in place under --target-db. An "
        "existing target is only replaced with --drop-existing, after a safety backup.",
    )
    p.add_argument("backup", metavar="ID|latest", nargs="?", default=None)
    p.add_argument("--database", help="whose backup `latest` means")
    p.add_argument("--target-db", metavar="NAME", help="the database to create")
    sqlite_cli.add_restore_arguments(p)
    p.add_argument(
        "--globals",
        action="store_true",
        help="apply the server's roles and tablespaces stored with the backup (default: the "
        "newest) to the target server; roles that exist are skipped",
    )
    p.add_argument(
        "--target-url",
        metavar="URL",
        help="the target server, postgresql://user:password@host:port (default: the source server)",
    )
    p.add_argument(
        "--jobs",
        type=_positive,
        metavar="N",
        help="parallel pg_restore jobs; for a backup in parts (LOGICAL_JOBS), also how many "
        "data parts stream at once",
    )
    p.add_argument(
        "--table",
        action="append",
        default=[],
        metavar="[SCHEMA.]TABLE",
        help="restore only this table; repeatable",
    )
    p.add_argument(
        "--schema",
        action="append",
        default=[],
        metavar="NAME",
        help="restore only the tables of this schema; repeatable",
    )
    only = p.add_mutually_exclusive_group()
    only.add_argument("--schema-only", action="store_true", help="tables without their rows")
    only.add_argument(
        "--data-only", action="store_true", help="rows into the existing tables of the target"
    )
    p.add_argument(
        "--drop-existing",
        action="store_true",
        help="replace the target if it exists (after a safety backup)",
    )
    p.add_argument(
        "--no-safety-backup",
        action="store_true",
        help="with --drop-existing: do not back the old target up first",
    )
    p.add_argument(
        "--no-owner",
        action="store_true",
        help="do not restore ownership and privileges (roles missing on the target)",
    )
    p.add_argument("--yes", action="store_true", help="do not ask before replacing anything")
    p.add_argument("--dry-run", action="store_true", help="print the plan and change nothing")
    add_as_of(p)
    add_from_argument(p)
    p.set_defaults(handler=restore)

    p = commands.add_parser(
        "delete", help="delete a backup, and the incrementals depending on it (audit-logged)"
    )
    p.add_argument("backup", metavar="ID")
    p.add_argument(
        "--apply",
        "--yes",
        dest="yes",
        action="store_true",
        help="really delete it (without: list what would be deleted, and change nothing)",
    )
    p.set_defaults(handler=delete)

    p = commands.add_parser("stats", help="backups and bytes per database and tier")
    p.add_argument("--json", action="store_true")
    p.set_defaults(handler=stats)

    verify_cli.add_parsers(commands)
    plan_cli.add_parsers(commands)


def _positive(text: str) -> int:
    value = int(text)
    if value < 1:
        raise argparse.ArgumentTypeError("must be 1 or more")
    return value


def list_backups(ctx: Context, args: argparse.Namespace) -> int:
    ctx = ctx.as_of(args.as_of)
    records = find_backups(
        ctx,
        database=args.database,
        tier=args.tier,
        status=args.status,
        limit=None if args.source else args.limit,
        tags=tuple(args.tag),
    )
    if args.source:  # SOURCE.DATABASE names (config/fleet.py): the source is in the name
        fleet = load_fleet(ctx.settings)
        records = [r for r in records if fleet.owns(args.source, r.database)][: args.limit]
    copies = where_copied(ctx, [r.id for r in records])
    if args.json:
        print_json([_with_copies(record_json(r), copies.get(r.id, [])) for r in records])
        return 0
    if ctx.moment is not None:
        print(f"as of {when(ctx.moment)}, from the bucket's object versions:")
    if not records:
        print("no backups")
        return 0
    rows = [
        [
            r.id,
            r.database,
            r.kind,
            r.tier,
            r.status,
            when(r.started_at),
            human_bytes(r.size_bytes) if r.size_bytes is not None else "-",
            r.verification_status or "-",
            ", ".join(r.tags) or "-",
            ", ".join(c.destination for c in copies.get(r.id, [])) or "-",
            _described(r),
        ]
        for r in records
    ]
    print(
        table(
            [
                "ID",
                "DATABASE",
                "KIND",
                "TIER",
                "STATUS",
                "STARTED",
                "SIZE",
                "VERIFIED",
                "TAGS",
                "COPIES",
                "DESCRIPTION",
            ],
            rows,
        )
    )
    return 0


def _with_copies(out: dict[str, Any], copies: list[CopyRecord]) -> dict[str, Any]:
    """A backup's JSON with where its verified copies are (issue 18)."""
    return {**out, "copies": [copy_json(c) for c in copies]}


def _described(record: BackupRecord) -> str:
    """A backup's description, shortened; a safety backup's says whose it is, in full."""
    if record.is_safety:
        return f"safety backup of {record.database}"
    return one_line(record.description, 40)


def show(ctx: Context, args: argparse.Namespace) -> int:
    ctx = ctx.as_of(args.as_of)
    record = resolve(ctx, args.backup, args.database)
    manifest = record.manifest or {}
    catalog = ctx.catalog_or_none("showing the backup without its verification history")
    checks = catalog.verifications(record.id) if catalog else []
    copies = where_copied(ctx, [record.id]).get(record.id, [])
    if args.json:
        print_json(
            {
                **_with_copies(record_json(record), copies),
                "location": ctx.location,  # where the backup lives: STORAGE_URL's repository
                "manifest": manifest,
                "verifications": [vars(v) for v in checks],
            }
        )
        return 0
    _print_record(record, ctx.location)
    for copy in copies:
        print(f"copy at {copy.destination}: verified {when(copy.verified_at)} ({copy.method})")
    counts = manifest.get("row_counts", [])
    if counts:
        print("\nrow counts:")
        print(
            table(
                ["SCHEMA", "TABLE", "ROWS"],
                [[c["schema"], c["table"], str(c["rows"])] for c in counts],
            )
        )
    _print_parts(manifest)
    for check in checks:
        print(
            f"\nverified {when(check.finished_at)}: {check.kind} {check.status}"
            + (f" ({check.error})" if check.error else "")
        )
    return 0


def _print_parts(manifest: dict[str, Any]) -> None:
    """A backup dumped in parallel: each object, its sizes, SHA-256 and tables."""
    parts = manifest.get("parts", [])
    if not parts:
        return
    print(f"\nparts ({len(parts)}; `permafrost decrypt --backup ID --part NAME` opens one):")
    rows = [
        [
            p["name"],
            manifest.get("objects", {}).get(p["name"], "-").rsplit("/", 1)[-1],
            human_bytes(p["plain_bytes"]),
            human_bytes(p["stored_bytes"]),
            str(len(p["row_counts"])) if p["name"] != "data" else "schema",
            str(sum(c["rows"] for c in p["row_counts"])),
            p["stored_sha256"][:16],
        ]
        for p in parts
    ]
    print(table(["PART", "OBJECT", "DUMP", "STORED", "TABLES", "ROWS", "STORED SHA256"], rows))


def _client(kind: str) -> str:
    """The program whose version the manifest's tool_version is."""
    return {"base": "pg_basebackup", "sqlite": "SQLite library"}.get(kind, "pg_dump")


def _print_record(record: BackupRecord, location: str | None = None) -> None:
    manifest = record.manifest or {}
    fields = [
        ("id", record.id),
        ("database", record.database),
        ("kind", record.kind),
        ("tier", record.tier),
        ("purpose", f"safety backup of {record.database}" if record.is_safety else "backup"),
        ("status", record.status),
        ("started", when(record.started_at)),
        ("finished", when(record.finished_at)),
        ("dump size", _size(record.dump_bytes)),
        ("stored size", _size(record.size_bytes)),
        ("server version", manifest.get("server_version", "-")),
        (f"{_client(record.kind)} version", manifest.get("tool_version", "-")),
        ("key id", manifest.get("key_id", "-")),
        ("dump sha256", manifest.get("dump_sha256", "-")),
        ("stored sha256", manifest.get("stored_sha256", "-")),
        ("verification", record.verification_status or "never verified"),
        ("description", one_line(record.description, 200) or "-"),
        ("tags", ", ".join(record.tags) or "-"),
    ]
    fields += sqlite_cli.facts(manifest)
    if location is not None:
        fields.append(("stored at", location))
    if record.error:
        fields.append(("error", record.error))
    width = max(len(name) for name, _ in fields)
    for name, value in fields:
        print(f"{name.ljust(width)}  {value}")


def _size(count: int | None) -> str:
    return f"{human_bytes(count)} ({count} bytes)" if count is not None else "-"


def restore(ctx: Context, args: argparse.Namespace) -> int:
    ctx = ctx.as_of(args.as_of)
    if args.globals:
        return globals_cli.restore_globals(ctx, args)
    reader = Reader(ctx, args.read_from)
    if args.backup is not None and args.target_db is None:
        record = reader.read(lambda c: resolve(c, args.backup, args.database))
        if record.kind == "sqlite":
            return sqlite_cli.restore(reader.ctx, record, args)
    if args.target_path is not None or args.force:
        raise UsageError("--target-path and --force are for SQLite backups (kind sqlite)")
    if args.backup is None or args.target_db is None:
        raise UsageError(
            "restore needs a backup and a target: permafrost restore ID|latest --target-db NAME "
            "(or --globals for the server's roles and tablespaces)"
        )
    record = reader.read(lambda c: resolve(c, args.backup, args.database))
    refuse_base(record, "restore")
    options = RestoreOptions(
        target_db=args.target_db,
        target_url=args.target_url,
        jobs=args.jobs or ctx.settings.restore.jobs,
        tables=tuple(args.table),
        schemas=tuple(args.schema),
        schema_only=args.schema_only,
        data_only=args.data_only,
        drop_existing=args.drop_existing,
        safety_backup=not args.no_safety_backup,
        no_owner=args.no_owner,
    )
    plan = plan_restore(ctx, record, options, reader)
    as_of = f", read as of {when(ctx.moment)}" if ctx.moment else ""
    print(
        f"restore plan for backup {record.id} of {record.database} "
        f"(taken {when(record.started_at)}{as_of}):"
    )
    for number, step in enumerate(plan.steps, start=1):
        print(f"  {number}. {step}")
    if args.dry_run:
        print("dry run: nothing was downloaded or changed")
        return 0
    if plan.target_exists:
        _confirm(f"replace {plan.target.where}", plan.target.database, args.yes)
    elif targets.recreates_source(
        plan.target, targets.own_name(ctx.settings, plan.manifest.database), plan.target_exists
    ):
        _confirm(
            f"recreate {plan.target.where}, the database this backup was taken from "
            "(it does not exist now)",
            plan.target.database,
            args.yes,
        )
    try:
        result = execute(ctx, plan, say=lambda line: print(f"- {line}", flush=True))
    except RowCountMismatch as exc:
        _print_counts(plan, exc.counts)
        raise
    _print_counts(plan, result.counts)
    copy = f" from copy {plan.reader.copy}" if plan.reader.copy else ""
    print(f"restored backup {record.id}{copy} into {plan.target.where} in {result.seconds:.1f} s")
    return 0


def _confirm(action: str, name: str, assume_yes: bool) -> None:
    if assume_yes:
        return
    if not sys.stdin.isatty():
        raise UsageError(
            f"refusing to {action} without confirmation: add --yes "
            "(there is no terminal to ask on); nothing was changed"
        )
    answer = input(f"This will {action}. Type its name to go on: ").strip()
    if answer != name:
        raise UsageError("not confirmed; nothing was changed")


def _print_counts(plan: RestorePlan, counts: dict[tuple[str, str], int | None]) -> None:
    rows = [
        [
            f"{t.schema}.{t.table}",
            str(0 if plan.options.schema_only else t.rows),
            "missing" if counts[(t.schema, t.table)] is None else str(counts[(t.schema, t.table)]),
        ]
        for t in plan.selection
    ]
    print(table(["TABLE", "EXPECTED", "RESTORED"], rows))


def delete(ctx: Context, args: argparse.Namespace) -> int:
    record = resolve(ctx, layout.check_backup_id(args.backup))
    doomed = deletion.plan(ctx.repository, record.id, record.database, record.tier, record.kind)
    if not args.yes:
        print("would delete " + "\n".join(deletion.describe(doomed)))
        raise UsageError(
            f"refusing to delete backup {record.id} of {record.database} without --apply "
            "(or --yes); nothing was deleted"
        )
    try:
        catalog = ctx.catalog()
    except CatalogUnavailable as exc:
        raise CatalogUnavailable(
            f"{exc}; deletions are written to its audit log, so nothing was deleted"
        ) from None
    done = deletion.carry_out(
        ctx.storage, ctx.settings.storage.prefix, catalog, actor(), doomed, say=print
    )
    if len(done) > 1:
        print(f"deleted backup {record.id} and {deletion.backups(len(done) - 1)} depending on it")
    return 0


def stats(ctx: Context, args: argparse.Namespace) -> int:
    catalog = ctx.catalog_or_none(FALLBACK)
    rows = catalog.stats() if catalog else stats_from_records(find_backups(ctx))
    if args.json:
        print_json([vars(r) for r in rows])
        return 0
    if not rows:
        print("no backups")
        return 0
    print(
        table(
            [
                "DATABASE",
                "TIER",
                "BACKUPS",
                "STORED",
                "DUMPED",
                "OLDEST",
                "NEWEST",
                "VERIFIED",
                "FAILED",
            ],
            [
                [
                    r.database,
                    r.tier,
                    str(r.backups),
                    human_bytes(r.size_bytes),
                    human_bytes(r.dump_bytes),
                    when(r.oldest),
                    when(r.newest),
                    when(r.last_verified),
                    str(r.failed),
                ]
                for r in rows
            ],
        )
    )
    total = sum(r.size_bytes for r in rows)
    print(f"\n{sum(r.backups for r in rows)} backups, {human_bytes(total)} stored")
    return 0
