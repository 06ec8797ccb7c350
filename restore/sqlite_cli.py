"""The command line of SQLite backups: restore to a file, verify by named checks, show facts."""

from __future__ import annotations

import argparse
import sys
from typing import Any

from permafrost.catalog.records import BackupRecord
from permafrost.context import Context
from permafrost.errors import UsageError
from permafrost.progress import Progress
from permafrost.text import human_bytes, print_json, when
from restore.sqlite_checks import Report
from restore.sqlite_restore import plan_file_restore, refuse_locked, restore_file
from restore.sqlite_verify import verify_sqlite


def add_restore_arguments(p: argparse.ArgumentParser) -> None:
    p.add_argument(
        "--target-path",
        metavar="PATH",
        help="SQLite backups: the file to restore to (default: the file it was taken of)",
    )
    p.add_argument(
        "--force",
        action="store_true",
        help="SQLite backups: replace the file even while another process holds a write lock",
    )


def facts(manifest: dict[str, Any]) -> list[tuple[str, str]]:
    """What `show` prints of a SQLite backup's file."""
    sqlite = manifest.get("sqlite") or {}
    if not sqlite:
        return []
    pages = f"{sqlite['page_count']} of {sqlite['page_size']} bytes"
    return [
        ("file", sqlite["path"]),
        ("pages", pages),
        ("user_version", str(sqlite["user_version"])),
        ("journal mode", sqlite["journal_mode"]),
        ("SQLite version", sqlite["sqlite_version"]),
    ]


def restore(ctx: Context, record: BackupRecord, args: argparse.Namespace) -> int:
    database_only = (args.drop_existing, args.table, args.schema, args.schema_only, args.data_only)
    if any(database_only) or args.target_url or args.jobs or args.no_owner:
        raise UsageError(
            "a SQLite backup is restored whole, to a file: --target-path (default: the file it "
            "was taken of), --force, --no-safety-backup, --dry-run and --yes apply"
        )
    plan = plan_file_restore(
        ctx, record, args.target_path, force=args.force, safety=not args.no_safety_backup
    )
    print(
        f"restore plan for SQLite backup {record.id} of {record.database} "
        f"(taken {when(record.started_at)}):"
    )
    for number, step in enumerate(plan.steps, start=1):
        print(f"  {number}. {step}")
    if plan.locked:
        print(f"warning: {plan.locked}" + (" (--force: replacing it anyway)" if args.force else ""))
    if args.dry_run:
        print("dry run: nothing was downloaded or changed")
        return 0
    refuse_locked(plan)
    if plan.exists:
        _confirm(plan.target.name, str(plan.target), args.yes)
    result = restore_file(ctx, plan, say=lambda line: print(f"- {line}", flush=True))
    if result.safety_backup_id:
        print(f"safety backup: {result.safety_backup_id}")
    print(f"restored backup {record.id} to {plan.target} in {result.seconds:.1f} s")
    return 0


def _confirm(name: str, where: str, assume_yes: bool) -> None:
    if assume_yes:
        return
    if not sys.stdin.isatty():
        raise UsageError(
            f"refusing to replace {where} without confirmation: add --yes "
            "(there is no terminal to ask on); nothing was changed"
        )
    if input(f"This will replace {where}. Type its file name to go on: ").strip() != name:
        raise UsageError("not confirmed; nothing was changed")


def verify(ctx: Context, record: BackupRecord, *, full: bool, json: bool) -> dict[str, Any]:
    """Run and print the named checks; the error of the first that failed is raised after."""
    progress = Progress(f"verify {record.id}", total=record.dump_bytes)
    result = verify_sqlite(ctx, record, full=full, on_progress=progress.advance)
    progress.close()
    report = result.report
    if report.error is not None and json:
        print_json_report(record, report)
    elif not json:
        _print_report(record, report)
    if report.error is not None:
        raise report.error
    if not json:
        print(
            f"backup {record.id} verified: {len(report.outcomes)} checks passed "
            f"({human_bytes(result.dump_bytes)} in {result.seconds:.1f} s)"
        )
    return {
        "id": record.id,
        "status": "verified",
        "kind": result.kind,
        "checks": report.as_json(),
        "seconds": round(result.seconds, 3),
    }


def _print_report(record: BackupRecord, report: Report) -> None:
    print(f"checks of SQLite backup {record.id} of {record.database}:")
    width = max(len(o.check) for o in report.outcomes)
    for o in report.outcomes:
        status = "FAILED" if o.status == "failed" else o.status
        print(f"  {o.check.ljust(width)}  {status:7}  {o.detail}".rstrip())


def print_json_report(record: BackupRecord, report: Report) -> None:
    print_json({"id": record.id, "status": "failed", "checks": report.as_json()})
