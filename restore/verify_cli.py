"""`permafrost verify` (integrity, or by restoring; now or queued) and `restore-worker`."""

from __future__ import annotations

import argparse

from permafrost.audit import actor
from permafrost.backup.lookup import resolve
from permafrost.catalog.records import BackupRecord
from permafrost.context import Context
from permafrost.errors import PermafrostError, UsageError
from permafrost.logs import sayer
from permafrost.progress import Progress
from permafrost.readfrom import Reader, add_from_argument
from permafrost.text import human_bytes, print_json
from restore import sqlite_cli
from restore.pitr.trial import trial_restore_base
from restore.trial import test_restore
from restore.verify import blocking_setting, verify_backup
from restore.worker import Worker


def add_parsers(commands: argparse._SubParsersAction) -> None:  # type: ignore[type-arg,unused-ignore]
    p = commands.add_parser(
        "verify",
        help="check a backup: every byte read back, or a real restore",
        description="Without options: download the backup, check its size, both SHA-256s and "
        "every chunk's tag, and have pg_restore read it. With --test-restore: restore it into a "
        "scratch database (on VERIFY_DATABASE_URL's server, by default the source server), "
        "compare exact row counts, and drop it; a base backup (full or incremental) is "
        "recovered with its chain into a scratch data directory, checked by pg_amcheck and "
        "read table by table, then removed. A SQLite backup reports its named checks: "
        "object present, checksum, decryption, decompression; with --test-restore also "
        "integrity_check, foreign_key_check and row counts on a restored copy.",
    )
    p.add_argument("backup", metavar="ID|latest", nargs="?")
    p.add_argument("--database", help="whose backup `latest` means")
    p.add_argument("--test-restore", action="store_true", help="verify by restoring")
    p.add_argument(
        "--queue",
        action="store_true",
        help="queue the work for the restore worker and return its task id",
    )
    p.add_argument(
        "--all-unverified",
        action="store_true",
        help="every completed backup that has not been verified yet",
    )
    p.add_argument("--json", action="store_true")
    add_from_argument(p)
    p.set_defaults(handler=verify)

    p = commands.add_parser("restore-worker", help="run queued verifications and test restores")
    p.add_argument("--once", action="store_true", help="stop when the queue is empty")
    p.add_argument(
        "--poll",
        type=float,
        default=30.0,
        metavar="SECONDS",
        help="look for work at least this often, besides being woken",
    )
    p.set_defaults(handler=restore_worker)


def verify(ctx: Context, args: argparse.Namespace) -> int:
    if args.all_unverified == bool(args.backup):
        raise UsageError("name one backup (ID or latest), or give --all-unverified")
    reader = Reader(ctx, args.read_from)
    records = (
        _unverified(ctx)
        if args.all_unverified
        else [reader.read(lambda c: resolve(c, args.backup, args.database))]
    )
    if args.queue:
        return _queue(ctx, records, args)
    failures = 0
    results = []
    for record in records:
        try:
            results.append(_verify_one(ctx, record, args, reader))
        except PermafrostError as exc:
            if not args.all_unverified or blocking_setting(exc) is not None:
                raise  # a setting that stops one verification stops them all: not "FAILED"
            failures += 1
            print(f"backup {record.id} FAILED: {exc}")
    if args.json:
        print_json(results[0] if not args.all_unverified else results)
    elif args.all_unverified:
        print(f"{len(records) - failures} verified, {failures} failed")
    return 5 if failures else 0


def _unverified(ctx: Context) -> list[BackupRecord]:
    ctx.repository()  # no repository at STORAGE_URL is an error, not "0 verified, 0 failed"
    catalog = ctx.catalog()
    return [r for r in catalog.find(status="completed") if r.verification_status is None]


def _verify_one(
    ctx: Context, record: BackupRecord, args: argparse.Namespace, reader: Reader
) -> dict:
    if args.test_restore and record.kind == "base":
        return _test_restore_base(reader.ctx, record, args)
    if record.kind == "sqlite":  # the named checks: four, or seven with --test-restore
        return sqlite_cli.verify(reader.ctx, record, full=args.test_restore, json=args.json)
    if args.test_restore:
        trial = test_restore(
            ctx,
            record,
            say=lambda line: None if args.json else print(f"- {line}", flush=True),
            reader=reader,
        )
        if not args.json:
            print(
                f"backup {record.id} verified by restoring {trial.tables} tables: "
                f"{human_bytes(trial.dump_bytes)} in {trial.seconds:.1f} s "
                f"({human_bytes(trial.bytes_per_second)}/s)"
            )
        return {
            "id": record.id,
            "status": "verified",
            "kind": "test_restore",
            "tables": trial.tables,
            "seconds": round(trial.seconds, 3),
            "bytes_per_second": round(trial.bytes_per_second),
        }
    progress = Progress(f"verify {record.id}", total=record.dump_bytes)
    result = verify_backup(ctx, record, progress.advance, reader)
    progress.close()
    if not args.json:
        copy = f" (from copy {reader.copy})" if reader.copy else ""
        print(
            f"backup {result.backup_id} verified{copy}: {human_bytes(result.stored_bytes)} read, "
            f"hashes and every chunk's tag match, {_readable(record, result.toc_entries)} "
            f"({result.seconds:.1f} s)"
        )
    return {
        "id": result.backup_id,
        "status": "verified",
        "kind": "integrity",
        "stored_bytes": result.stored_bytes,
        "dump_bytes": result.dump_bytes,
        "toc_entries": result.toc_entries,
        "seconds": round(result.seconds, 3),
        **reader.details(),
    }


def _test_restore_base(ctx: Context, record: BackupRecord, args: argparse.Namespace) -> dict:
    trial = trial_restore_base(
        ctx, record, say=lambda line: None if args.json else print(f"- {line}", flush=True)
    )
    if not args.json:
        print(
            f"base backup {record.id} verified by restoring {' + '.join(trial.chain)}: "
            f"{trial.tables} tables, {trial.rows} rows in {trial.databases} databases read; "
            f"pg_amcheck {trial.amcheck}; {human_bytes(trial.data_bytes)} in "
            f"{trial.seconds:.1f} s ({human_bytes(trial.bytes_per_second)}/s)"
        )
    return {"id": record.id, "status": "verified", "kind": "test_restore", **trial.details()}


def _queue(ctx: Context, records: list[BackupRecord], args: argparse.Namespace) -> int:
    catalog = ctx.catalog()
    kind = "test_restore" if args.test_restore else "verify"
    tasks = [
        {
            "task_id": catalog.enqueue(kind, {"backup_id": r.id}, actor()),
            "kind": kind,
            "backup_id": r.id,
        }
        for r in records
    ]
    if args.json:
        print_json(tasks[0] if not args.all_unverified else tasks)
    for task in [] if args.json else tasks:
        print(f"queued task {task['task_id']}: {kind} of {task['backup_id']}")
    return 0


def restore_worker(ctx: Context, args: argparse.Namespace) -> int:
    worker = Worker(ctx, say=sayer("restore.worker"), poll_seconds=args.poll)
    return worker.run(once=args.once)


def _readable(record: BackupRecord, entries: int) -> str:
    """What was read through: pg_restore's table of contents, or a base backup's tar."""
    if record.kind == "base":
        return f"the tar reads through to backup_manifest ({entries} members)"
    return f"pg_restore reads {entries} entries"
