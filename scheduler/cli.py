"""`permafrost backup`: take a logical backup of one or every configured database now, or a
base backup of the cluster with `--kind base`."""

from __future__ import annotations

import argparse
import sys
from collections.abc import Callable

from permafrost import layout
from permafrost.backup import sources
from permafrost.backup.job import run_backup
from permafrost.backup.lookup import record_from_manifest, record_json
from permafrost.backup.request import BackupRequest, kind_of, refuse_unconfigured
from permafrost.config.fleet import chosen_cluster, load_fleet
from permafrost.context import Context
from permafrost.errors import LockUnsupported, StorageError, UsageError
from permafrost.progress import Progress
from permafrost.repo.manifest import Kind
from permafrost.text import human_bytes, print_json
from scheduler import queue_cli
from scheduler.fleet_cli import fleet_backup


def add_parsers(commands: argparse._SubParsersAction) -> None:  # type: ignore[type-arg,unused-ignore]
    parser = commands.add_parser("backup", help="take a backup now")
    parser.add_argument(
        "--database",
        help="the database (or SQLite file, by its name) to back up (default: every DB_NAME "
        "and every SQLite file)",
    )
    parser.add_argument(
        "--kind",
        choices=("logical", "base", "incremental"),
        default="logical",
        help="logical: pg_dump of each database; base: pg_basebackup of the whole cluster, "
        "for point-in-time recovery; incremental: a base backup of only the blocks changed "
        "since the cluster's newest base backup (PostgreSQL 17+, summarize_wal on)",
    )
    parser.add_argument(
        "--cluster",
        help="base backups: the cluster's name (default: --source's cluster, else CLUSTER_NAME)",
    )
    parser.add_argument(
        "--all",
        action="store_true",
        help="every database of every source (SOURCES_FILE; `databases: all` listed now), "
        "or of the --source named",
    )
    parser.add_argument(
        "--source",
        help="with --all: only this source's databases; with --kind base: its cluster",
    )
    parser.add_argument("--tier", choices=("standard", "compliance"), default="standard")
    parser.add_argument("--description", default="", help="free text kept with the backup")
    parser.add_argument("--tag", action="append", default=[], help="a label; repeatable")
    parser.add_argument(
        "--no-wait",
        action="store_true",
        help="if a backup of the same database is running, refuse (exit 11) instead of waiting",
    )
    parser.add_argument("--json", action="store_true", help="print the backup's record as JSON")
    queue_cli.add_arguments(parser)
    parser.set_defaults(handler=backup)
    add_service_parsers(commands)


def add_service_parsers(commands: argparse._SubParsersAction) -> None:  # type: ignore[type-arg,unused-ignore]
    p = commands.add_parser(
        "scheduler", help="run the scheduler: scheduled backups, verification, retention"
    )
    p.add_argument(
        "--check", action="store_true", help="check the schedules and print them, then exit"
    )
    p.set_defaults(handler=scheduler)
    p = commands.add_parser("status", help="the scheduler's state: leader, next runs, last results")
    p.add_argument("--json", action="store_true", help="as JSON")
    p.add_argument("--source", help="only this source's databases and jobs (SOURCES_FILE)")
    p.set_defaults(handler=status)


def scheduler(ctx: Context, args: argparse.Namespace) -> int:
    from scheduler.service import Service, say  # start-up cost: APScheduler, for this command only

    service = Service(ctx.settings, say, env_file=args.env_file)
    refuse_unlockable(ctx, say)
    if args.check:
        for line in service.describe():
            print(line)
        return 0
    return service.run()


def refuse_unlockable(ctx: Context, say: Callable[[str], None]) -> None:
    """OBJECT_LOCK on a destination or bucket that cannot lock: refused at start-up
    (LockUnsupported, exit 15), not at the first backup; a bucket that does not answer now is
    the first backup's to report, so the scheduler still starts through an outage."""
    if ctx.settings.storage.object_lock == "off":
        return
    try:
        ctx.storage.check()
    except LockUnsupported:
        raise
    except StorageError as exc:
        say(f"object lock not checked at start-up: {exc}")


def status(ctx: Context, args: argparse.Namespace) -> int:
    from scheduler.status import status as show  # start-up cost, like the scheduler command

    return show(ctx, args)


def _say(text: str) -> None:
    print(f"permafrost: {text}", file=sys.stderr, flush=True)


def backup(ctx: Context, args: argparse.Namespace) -> int:
    if args.queue:
        return queue_cli.queue_backups(ctx, args)
    if args.kind in ("base", "incremental"):
        return _base_backup(ctx, args)
    fleet = load_fleet(ctx.settings)
    if args.all or args.source or (fleet.from_file and not args.database):
        if args.database:
            raise UsageError("--all backs up every database: --database does not go with it")
        return fleet_backup(ctx, args, fleet, _say)
    if args.database:
        refuse_unconfigured(ctx.settings.source, args.database, fleet)
    databases = [args.database] if args.database else list(ctx.settings.source.backed_up)
    if not databases:
        raise UsageError(
            "no database to back up: pass --database NAME or set DB_NAME "
            "(or a database in DATABASE_URL, or a SQLite file: DATABASE_URL=sqlite:///path)"
        )
    records = []
    for database in databases:
        kind = kind_of(ctx.settings.source, database)
        request = BackupRequest(
            database=database,
            tier=args.tier,
            description=args.description,
            tags=tuple(args.tag),
            kind=kind,
            source=None if kind == Kind.SQLITE else sources.server_for(fleet, database),
        )
        progress = Progress(f"backup {database}")
        manifest = run_backup(ctx, request, progress.advance, wait=not args.no_wait, say=_say)
        progress.close()
        key = layout.manifest_key(
            ctx.settings.storage.prefix, manifest.tier, manifest.database, manifest.id
        )
        record = record_from_manifest(manifest, key)
        records.append(record_json(record))
        if not args.json:
            print(
                f"backup {manifest.id} of {database} completed: "
                f"{human_bytes(manifest.dump_bytes)} dumped, "
                f"{human_bytes(manifest.stored_bytes)} stored in the {manifest.tier} tier, "
                f"{manifest.duration_seconds:.1f} s"
            )
    if args.json:
        print_json(records[0] if len(records) == 1 else records)
    return 0


def _base_backup(ctx: Context, args: argparse.Namespace) -> int:
    if args.database or args.tier != "standard":
        raise UsageError(
            "a base backup is of the whole cluster: --database and --tier do not apply"
        )
    records = [_one_base_backup(ctx, args, cluster) for cluster in base_clusters(ctx, args)]
    if args.json:
        print_json(records[0] if len(records) == 1 else records)
    return 0


def base_clusters(ctx: Context, args: argparse.Namespace) -> list[str]:
    """The clusters a base backup is of: --cluster's, --source's (its `cluster:`), with --all
    every source's whose WAL is archived (of --source), else CLUSTER_NAME's."""
    if not args.all:
        return [chosen_cluster(ctx.settings, args.cluster, args.source)]
    if args.cluster:
        raise UsageError("--all backs up every source's cluster: --cluster does not go with it")
    clusters = list(load_fleet(ctx.settings).clusters(args.source, archived=True))
    if not clusters:
        raise UsageError(
            "no source has a cluster whose WAL is archived: give one `cluster:` and `wal:` "
            "(or WAL_ARCHIVING) in SOURCES_FILE"
        )
    return clusters


def _one_base_backup(ctx: Context, args: argparse.Namespace, cluster: str) -> dict[str, object]:
    request = BackupRequest(
        database=cluster,
        tier=layout.BASE_TIER,
        kind=Kind.BASE,
        description=args.description,
        tags=tuple(args.tag),
        incremental=args.kind == "incremental",
        source=sources.server_for(load_fleet(ctx.settings), cluster, cluster=True),
    )
    what = "incremental base backup" if request.incremental else "base backup"
    progress = Progress(f"{what} of {cluster}")
    manifest = run_backup(ctx, request, progress.advance, wait=not args.no_wait, say=_say)
    progress.close()
    key = layout.manifest_key(ctx.settings.storage.prefix, manifest.tier, cluster, manifest.id)
    if args.json:
        return record_json(record_from_manifest(manifest, key))
    wal = manifest.physical
    of_parent = (
        f" (of {manifest.parent_id}, chain {manifest.chain_full_id}: "
        f"{human_bytes(manifest.changed_bytes)} changed)"
        if manifest.incremental
        else ""
    )
    print(
        f"{what} {manifest.id}{of_parent} of cluster {cluster} completed: "
        f"{human_bytes(manifest.dump_bytes)} read, {human_bytes(manifest.stored_bytes)} stored, "
        f"{manifest.duration_seconds:.1f} s; WAL {wal['start_lsn']} to {wal['stop_lsn']} on "
        f"timeline {wal['timeline']} (segments {wal['wal_start']} to {wal['wal_stop']}) "
        "must be archived for it to restore"
    )
    return {}
