"""`permafrost worker`: a backup worker (BACKUP_WORKERS=queue). Run any number, on any machines,
against one metadata store: each claims queued backups, base backups, verifications, test
restores, restores and PITR drills (permafrost/worker/loop.py), MAX_CONCURRENT at a time, and
streams the WAL of each cluster archived by `receive` (CLUSTER_NAME's with WAL_ARCHIVING=receive,
or each SOURCES_FILE source's) while it holds that cluster's stream lock (worker/streams.py).

The handlers come from the composition root (`permafrost.cli`): backups from the scheduler
package, the restore kinds from the restore package, which this library cannot import.
"""

from __future__ import annotations

import argparse
import functools
from collections.abc import Mapping

from permafrost.context import Context
from permafrost.logs import sayer
from permafrost.wal.supervisor import streamed_clusters, supervise_receiver
from permafrost.worker.loop import Handler, Worker
from permafrost.worker.queue import BACKUP_TASK
from permafrost.worker.streams import StreamHolder

say = sayer("worker")  # the worker's own lines, in LOG_FORMAT on stdout


def add_parsers(
    commands: argparse._SubParsersAction,  # type: ignore[type-arg,unused-ignore]
    handlers: Mapping[str, Handler],
) -> None:
    p = commands.add_parser(
        "worker",
        help="run a backup worker: queued backups, verifications and test restores, and the "
        "WAL stream when this worker holds it",
    )
    p.add_argument("--once", action="store_true", help="stop when the queue is empty")
    p.add_argument(
        "--poll",
        type=float,
        default=30.0,
        metavar="SECONDS",
        help="look for work (and for a dead worker's tasks) at least this often",
    )
    p.set_defaults(handler=functools.partial(worker, handlers=dict(handlers)))


def worker(ctx: Context, args: argparse.Namespace, handlers: dict[str, Handler]) -> int:
    settings = ctx.settings
    if settings.public_key is not None and settings.private_key is None:
        # Public-key mode: this host may write backups but cannot read them, so it leaves the
        # verifications and restores to a worker that has BACKUP_PRIVATE_KEY.
        handlers = {kind: run for kind, run in handlers.items() if kind == BACKUP_TASK}
    work = Worker(
        ctx,
        say,
        handlers,
        poll_seconds=args.poll,
        slots=settings.window.max_concurrent,
        per_source=settings.window.max_concurrent_per_source,
    )
    for cluster in () if args.once else streamed_clusters(settings):
        stream = functools.partial(supervise_receiver, settings, say, args.env_file, cluster)
        poll = min(args.poll, 5.0)
        work.stream(StreamHolder(settings, say, cluster, stream, work.stopping, poll))
    return work.run(once=args.once)
