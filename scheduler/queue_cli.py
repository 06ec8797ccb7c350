"""`permafrost backup --all --queue` (or `--database NAME --queue`): the backups queued for the
`permafrost worker` processes instead of taken here; one task per database, printed with its id.
"""

from __future__ import annotations

import argparse

from permafrost.backup import sources
from permafrost.catalog.jobs import BASE_JOBS, JobName
from permafrost.config.fleet import chosen_cluster, load_fleet
from permafrost.context import Context
from permafrost.errors import UsageError
from permafrost.text import print_json
from permafrost.worker.queue import Queued, queue_all, queue_backup

BY_KIND = {"base": JobName.BASE_BACKUP, "incremental": JobName.INCREMENTAL_BACKUP}


def add_arguments(parser: argparse.ArgumentParser) -> None:
    # `--all [--source NAME]` is backup's own (scheduler/cli.py): with --queue it queues them.
    parser.add_argument(
        "--queue",
        action="store_true",
        help="queue the backups for `permafrost worker` processes and print their task ids, "
        "instead of taking them here",
    )


def queue_backups(ctx: Context, args: argparse.Namespace) -> int:
    if args.description or args.tag:
        raise UsageError("--description and --tag are not kept with queued backups yet")
    job = _job(args)
    catalog = ctx.catalog()  # no metadata store, no queue: exit 8 with the variable named
    fleet = load_fleet(ctx.settings)
    if job in BASE_JOBS and (args.all or args.source or args.cluster):
        clusters = _clusters(ctx, args)
        queued = [queue_backup(catalog, ctx.settings, job, c, "cli", "manual") for c in clusters]
    elif args.database:
        queued = [queue_backup(catalog, ctx.settings, job, args.database, "cli", "manual")]
    elif fleet.from_file is not None and job not in BASE_JOBS:
        # Each source's databases, listed now for `databases: all` (as `backup --all` does).
        names = [n for s in fleet.select(args.source) for n in sources.listing(ctx, s).names]
        queued = [queue_backup(catalog, ctx.settings, job, n, "cli", "manual") for n in names]
    else:
        queued = queue_all(catalog, ctx.settings, job, "cli")
    if not queued:
        raise UsageError("no database to back up: set DB_NAME (or a database in DATABASE_URL)")
    if args.json:
        print_json([q.json() for q in queued])
        return 0
    for q in queued:
        print(_line(q))
    return 0


def _clusters(ctx: Context, args: argparse.Namespace) -> list[str]:
    """A queued base backup's clusters: --cluster's or --source's, or with --all every source's
    whose WAL is archived."""
    if args.all and not args.cluster:
        return list(load_fleet(ctx.settings).clusters(args.source, archived=True))
    return [chosen_cluster(ctx.settings, args.cluster, args.source)]


def _job(args: argparse.Namespace) -> JobName:
    if args.kind in BY_KIND:
        return BY_KIND[args.kind]
    return JobName.COMPLIANCE_BACKUP if args.tier == "compliance" else JobName.BACKUP


def _line(q: Queued) -> str:
    state = "already queued as" if q.already else "queued as"
    return f"{q.job} of {q.name} (source {q.source}) {state} task {q.task_id}"
