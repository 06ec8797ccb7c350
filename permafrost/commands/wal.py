"""The WAL commands: wal-push (archive_command), wal-fetch (restore_command), wal-receive, and
`wal status`, `wal verify`, `wal switch`.

PostgreSQL reads these exit codes: wal-push must fail non-zero on any doubt, so the segment is
kept and retried; wal-fetch exits 1, silently, for a file the archive does not have (the normal
end of recovery), and above 125 for anything else (wrong key, corrupt object, unreachable
bucket), which makes PostgreSQL stop recovery instead of mistaking the error for the end of the
archive and promoting with WAL missing.
"""

from __future__ import annotations

import argparse
import contextlib
import logging
import os
import sys
import threading
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

from permafrost import layout, signals
from permafrost.audit import actor
from permafrost.config.fleet import chosen_cluster, cluster_settings
from permafrost.context import Context
from permafrost.errors import (
    CatalogUnavailable,
    IntegrityError,
    PermafrostError,
    SystemMismatch,
    UsageError,
)
from permafrost.postgres import tools as pgtools
from permafrost.readfrom import Reader
from permafrost.repo.config import settle_conditional_writes
from permafrost.text import iso, print_json
from permafrost.wal import ahead as walahead
from permafrost.wal import archive as walarchive
from permafrost.wal import identity as walidentity
from permafrost.wal import names as walnames
from permafrost.wal import prefetch as walprefetch
from permafrost.wal import quick
from permafrost.wal import receive as walreceive
from permafrost.wal import reset as walreset
from permafrost.wal import segment as wal
from permafrost.wal.guard import Guard

FETCH_MISSING = 1
FETCH_FATAL = 126
CLUSTER_HELP = "the server's name in the bucket (default: CLUSTER_NAME)"
SOURCE_HELP = "the cluster of this SOURCES_FILE source (its `cluster:`), on its server"


def add_parsers(commands: argparse._SubParsersAction) -> None:  # type: ignore[type-arg,unused-ignore]
    p = commands.add_parser(
        "wal-push",
        help="archive one WAL file (for archive_command)",
        description="archive_command = 'permafrost --env-file FILE wal-push %%p'",
    )
    p.add_argument("path", help="the WAL file (%%p)")
    p.add_argument("--cluster", help=CLUSTER_HELP)
    p.set_defaults(handler=wal_push)

    p = commands.add_parser(
        "wal-fetch",
        help="restore one WAL file (for restore_command)",
        description="restore_command = 'permafrost --env-file FILE wal-fetch %%f %%p'. Fetching "
        "a segment also prefetches the next WAL_PREFETCH segments in the background.",
    )
    p.add_argument("name", help="the WAL file's name (%%f)")
    p.add_argument("path", help="where to write it (%%p)")
    p.add_argument("--cluster", help=CLUSTER_HELP)
    p.add_argument(
        "--as-of",
        metavar="TIME",
        help="the archive as it was at TIME, from a versioned bucket's object versions "
        "(pitr --as-of writes this into its restore_command)",
    )
    p.set_defaults(handler=wal_fetch)

    p = commands.add_parser("wal-ahead", help=argparse.SUPPRESS)  # started by wal-push
    p.add_argument("folder")
    p.add_argument("--cluster")
    p.add_argument("--fingerprint", required=True)
    p.set_defaults(handler=wal_ahead)

    p = commands.add_parser("wal-prefetch", help=argparse.SUPPRESS)
    p.add_argument("folder")
    p.add_argument("--cluster")
    p.add_argument("--as-of")
    p.set_defaults(handler=wal_prefetch)

    p = commands.add_parser(
        "wal-receive",
        help="archive WAL by streaming it with pg_receivewal (no archive_command needed)",
        description="Streams WAL from the source server through a replication slot into "
        "WAL_SPOOL_DIR and archives each completed segment; runs until stopped.",
    )
    p.add_argument("--cluster", help=CLUSTER_HELP)
    p.add_argument("--source", help=SOURCE_HELP)
    p.set_defaults(handler=wal_receive)

    p = commands.add_parser("wal", help="the WAL archive: status, verify, switch, reset")
    sub = p.add_subparsers(dest="wal_command", required=True, metavar="COMMAND")
    s = sub.add_parser("status", help="the newest archived segment and the archive lag")
    s.add_argument("--cluster", help=CLUSTER_HELP)
    s.add_argument("--source", help=SOURCE_HELP)
    s.add_argument("--json", action="store_true")
    s.set_defaults(handler=wal_status)
    s = sub.add_parser(
        "verify", help="check that every segment from the oldest base backup on is archived"
    )
    s.add_argument("--cluster", help=CLUSTER_HELP)
    s.add_argument("--source", help=SOURCE_HELP)
    s.add_argument("--json", action="store_true")
    s.set_defaults(handler=wal_verify)
    s = sub.add_parser(
        "switch",
        help="call pg_switch_wal() if no segment completed for WAL_MAX_SEGMENT_AGE seconds",
    )
    s.add_argument("--cluster", help=CLUSTER_HELP)
    s.add_argument("--source", help=SOURCE_HELP)
    s.set_defaults(handler=wal_switch)
    s = sub.add_parser(
        "reset",
        help="give the archive to the server's new system (after an upgrade or replacement)",
        description="When the server under CLUSTER_NAME has a new system identifier (upgraded "
        "or replaced), move the old system's WAL to wal/CLUSTER.SYSTEM/ (its base backups stay "
        "restorable with pitr --base ID) and record the server's system as the archive's. "
        "A dry run unless --apply; then take a base backup.",
    )
    s.add_argument("--cluster", help=CLUSTER_HELP)
    s.add_argument("--source", help=SOURCE_HELP)
    s.add_argument("--apply", action="store_true", help="do it (audit-logged)")
    s.add_argument("--json", action="store_true")
    s.set_defaults(handler=wal_reset)


def _cluster(ctx: Context, args: argparse.Namespace) -> str:
    if not hasattr(args, "source"):  # wal-push, wal-fetch: --cluster, else CLUSTER_NAME
        return layout.check_name(args.cluster or ctx.settings.cluster_name, "cluster")
    chosen = chosen_cluster(ctx.settings, args.cluster, args.source)
    return layout.check_name(chosen, "cluster")


def _on_server(ctx: Context, cluster: str) -> Context:
    """The context of a command that talks to the cluster's server: a SOURCES_FILE source's
    cluster is on that source's server (config/fleet.py cluster_settings)."""
    settings = cluster_settings(ctx.settings, cluster)
    return ctx if settings.source == ctx.settings.source else Context(settings)


def wal_push(ctx: Context, args: argparse.Namespace) -> int:
    path = Path(args.path)
    if not path.is_file():
        raise UsageError(f"{path} is not a file")
    cluster = _cluster(ctx, args)
    fingerprint = quick.fingerprint(args.env_file, args.cluster, os.environ)
    folder = quick.folder_of(path) if ctx.settings.wal.push_ahead else None
    if quick.folder_of(path) is not None:
        _record_backlog(ctx, cluster, walahead.backlog(path.parent))  # the bucket may be down
    if folder is not None:
        _start_pusher(args, folder, fingerprint)
    repo = ctx.repository(create=True)
    try:
        Guard(repo, cluster, "wal-push").check_segment(path)
    except SystemMismatch as exc:
        walreceive.record_error(ctx, cluster, str(exc))  # for wal status and the wal_lag alert
        raise
    marker = walahead.read_marker(folder, path.name, fingerprint) if folder else None
    if marker and marker.sha256 == quick.file_sha256(path) and walahead.confirm(repo, marker):
        return 0  # the pusher stored and checked it (and told the catalog), then went away
    settle_conditional_writes(repo)  # a repository from before the probe: probed once, here
    pushed = wal.push(repo, cluster, path)
    walreceive.record_pushed(ctx, cluster, path.name, pushed.plain_bytes)
    return 0


def _record_backlog(ctx: Context, cluster: str, counted: tuple[int, int]) -> None:
    """How much waits in pg_wal to be archived, for the wal_queue alert (best effort)."""
    if ctx.settings.metadata_url is not None:
        waiting, size = counted
        ctx.record(lambda c: c.wal_backlog(cluster, waiting, size), walreceive.LATER)


def _start_pusher(args: argparse.Namespace, folder: Path, fingerprint: str) -> None:
    """Make sure a look-ahead pusher runs for this pg_wal (an optimisation: never fatal)."""
    try:
        walahead.ensure_running(
            folder,
            lambda: walahead.spawn_pusher(args.env_file, args.cluster, fingerprint, folder),
        )
    except OSError as exc:
        logging.getLogger("permafrost").warning("cannot start the look-ahead pusher: %s", exc)


def wal_ahead(ctx: Context, args: argparse.Namespace) -> int:
    folder = Path(args.folder)
    cluster = _cluster(ctx, args)
    wal_settings = ctx.settings.wal
    with walahead.locked(folder) as mine:
        if not mine:
            return 0  # another wal-push started one first
        repo = ctx.repository(create=True)
        settle_conditional_writes(repo)
        guard = Guard(repo, cluster, "wal-push")
        tuning = walahead.Tuning(
            wal_settings.push_ahead, wal_settings.push_threads, wal_settings.push_idle
        )
        walahead.Pusher(
            folder,
            tuning,
            args.fingerprint,
            store=lambda path: walahead.store_segment(repo, cluster, guard, args.fingerprint, path),
            confirm=lambda marker: walahead.confirm(repo, marker),
            on_stored=lambda m: walreceive.record_pushed(ctx, cluster, m.name, m.size),
            on_backlog=lambda counted: _record_backlog(ctx, cluster, counted),
        ).run()
    return 0


def wal_fetch(ctx: Context, args: argparse.Namespace) -> int:
    target = Path(args.path)
    try:
        ctx = ctx.as_of(args.as_of)
        cluster = _cluster(ctx, args)
        depth = ctx.settings.wal.prefetch
        segment = walnames.parse_segment(args.name)
        folder = walprefetch.folder_for(target)
        if segment is not None and depth and walprefetch.take(folder, args.name, target):
            _ask_for_more(ctx, args, cluster, folder)
            return 0
        data = _fetch(Reader(ctx), cluster, args.name)
    except PermafrostError as exc:
        print(f"permafrost: error: wal-fetch {args.name}: {exc}", file=sys.stderr)
        return FETCH_FATAL
    if data is None:
        return FETCH_MISSING
    partial = target.with_name(target.name + ".permafrost-partial")
    partial.write_bytes(data)
    os.replace(partial, target)
    if segment is not None and depth:
        _ask_for_more(ctx, args, cluster, folder)
    return 0


def _fetch(reader: Reader, cluster: str, name: str) -> bytes | None:
    """A segment from the primary, or, when the primary fails, from each copy in turn."""
    return reader.read(lambda c: wal.fetch(c.repository(), cluster, name))


def _ask_for_more(ctx: Context, args: argparse.Namespace, cluster: str, folder: Path) -> None:
    env_file = getattr(args, "env_file", None) or os.environ.get("PERMAFROST_ENV_FILE")
    with contextlib.suppress(OSError):  # an optimisation: the segment itself is in place
        walprefetch.request(
            folder,
            args.name,
            lambda: walprefetch.spawn_prefetcher(env_file, cluster, folder, args.as_of),
        )


def wal_prefetch(ctx: Context, args: argparse.Namespace) -> int:
    reader = Reader(
        ctx.as_of(args.as_of), warn=lambda line: logging.getLogger("permafrost").warning("%s", line)
    )
    cluster = _cluster(ctx, args)
    walprefetch.run_prefetcher(
        Path(args.folder),
        ctx.settings.wal.prefetch,
        lambda name: _fetch(reader, cluster, name),
        walnames.DEFAULT_SEGMENT_SIZE,
    )
    return 0


def wal_receive(ctx: Context, args: argparse.Namespace) -> int:
    cluster = _cluster(ctx, args)
    ctx = _on_server(ctx, cluster)
    ctx.repository(create=True)  # a wrong key fails now, not at the first segment
    stop = threading.Event()
    signals.set_on_signal(stop)
    walreceive.Receiver(ctx, cluster, stop).run()
    logging.getLogger("wal.receive").info(
        "stopped; every completed segment is archived", extra={"event": "wal_receive_stopped"}
    )
    return 0


def wal_switch(ctx: Context, args: argparse.Namespace) -> int:
    cluster = _cluster(ctx, args)
    ctx = _on_server(ctx, cluster)
    name = walreceive.switch_if_idle(ctx, cluster)
    if name:
        print(f"switched WAL: {name} completed and goes to the archive")
    else:
        print(
            "no switch needed: a segment completed within WAL_MAX_SEGMENT_AGE "
            f"({ctx.settings.wal.max_segment_age} s), or nothing was written since"
        )
    return 0


def wal_status(ctx: Context, args: argparse.Namespace) -> int:
    cluster = _cluster(ctx, args)
    repo = ctx.repository()
    archive = walarchive.list_archive(repo, cluster)
    status: dict[str, Any] = {"cluster": cluster, "timelines": archive.timelines}
    newest = _newest(archive)
    now = datetime.now(UTC)
    if newest is not None:
        at = archive.archived_at(newest)
        status["last_segment"] = archive.name(newest)
        status["last_archived_at"] = at.isoformat() if at else None
        status["lag_seconds"] = round((now - at).total_seconds(), 1) if at else None
    else:
        status.update(last_segment=None, last_archived_at=None, lag_seconds=None)
    status["segments"] = sum(len(numbers) for numbers in archive.segments.values())
    recorded = walidentity.read(repo, cluster)
    status["system_identifier"] = recorded.system.identifier if recorded else None
    status["major"] = recorded.system.major if recorded else None
    catalog = ctx.catalog_or_none("showing the bucket's view only")
    if catalog is not None:
        rows = catalog.wal_status(cluster)
        if rows:
            row = rows[0]
            status["method"] = row["method"]
            status["last_error"] = row["last_error"]
            status["last_switch_at"] = iso(row["last_switch_at"])
    status.update(_server_position(_on_server(ctx, cluster), archive))
    if args.json:
        print_json(status)
        return 0
    if newest is None:
        print(f"cluster {cluster}: no WAL archived yet")
    else:
        print(
            f"cluster {cluster}: newest archived segment {status['last_segment']} at "
            f"{status['last_archived_at']} ({status['lag_seconds']:.0f} s ago); "
            f"{status['segments']} segments on timeline(s) "
            f"{', '.join(str(t) for t in archive.timelines)}"
        )
    if recorded is not None:
        print(f"the archive belongs to {recorded.system.describe()}, since {recorded.since}")
    if "server_segment" in status:
        print(f"server is writing {status['server_segment']}: {_behind(status)}")
    if status.get("archiver_failed"):
        print(f"server's archiver: {status['archiver_failed']}")
    if status.get("last_error"):
        print(f"last error: {status['last_error']}")
    return 0


def _behind(status: dict[str, Any]) -> str:
    behind = status["segments_behind"]
    if behind is None:
        return "nothing on its timeline is archived yet (see archive_command, wal-receive)"
    return f"{behind} segment(s) not yet archived"


def _newest(archive: walarchive.Archive) -> walnames.Segment | None:
    timelines = [t for t in archive.timelines if archive.newest(t)]
    return archive.newest(max(timelines)) if timelines else None


def _server_position(ctx: Context, archive: walarchive.Archive) -> dict[str, Any]:
    """Where the source server is writing, when it can be reached (best effort)."""
    source = ctx.settings.source
    try:
        with pgtools.connect(source, pgtools.cluster_database(source)) as conn:
            row = conn.execute(
                "SELECT pg_walfile_name(pg_current_wal_lsn()), failed_count, last_failed_wal,"
                " last_failed_time FROM pg_stat_archiver"
            ).fetchone()
    except Exception:
        return {}
    if row is None:
        return {}
    current = walnames.parse_segment(row[0])
    newest = archive.newest(current.timeline) if current else None
    out: dict[str, Any] = {"server_segment": row[0]}
    out["segments_behind"] = current.number - newest.number - 1 if current and newest else None
    if row[1]:
        out["archiver_failed"] = (
            f"{row[1]} failed attempt(s), last {row[2]} at {iso(row[3], 'auto')}"
        )
    return out


def wal_verify(ctx: Context, args: argparse.Namespace) -> int:
    cluster = _cluster(ctx, args)
    repo = ctx.repository()
    report = walarchive.verify(repo, cluster)
    if args.json:
        print_json(report.to_json())
    else:
        for line in report.lines():
            print(line)
    if report.problems:
        raise IntegrityError(
            f"the WAL archive of cluster {cluster} has {len(report.problems)} problem(s): "
            f"{report.problems[0]}; point-in-time recovery cannot cross them"
        )
    return 0


def wal_reset(ctx: Context, args: argparse.Namespace) -> int:
    cluster = _cluster(ctx, args)
    repo = ctx.repository()
    server = cluster_settings(ctx.settings, cluster).source
    reset = walreset.plan(repo, cluster, walreset.server_system(server))
    if not reset.needed or not args.apply:
        if args.json:
            print_json(reset.to_json())
        else:
            for line in reset.lines():
                print(line)
            if reset.needed:
                print(
                    f"dry run: nothing changed; run `permafrost wal reset --cluster {cluster} "
                    "--apply` to do it"
                )
        return 0
    try:
        catalog = ctx.catalog()
    except CatalogUnavailable as exc:
        raise CatalogUnavailable(
            f"{exc}; a WAL reset is written to its audit log, so nothing was changed"
        ) from None
    walreset.apply(repo, reset)
    catalog.audit(actor(), "wal-reset", cluster, reset.to_json())
    if args.json:
        print_json(reset.to_json())
        return 0
    for line in reset.lines(applied=True):
        print(line)
    print(f"now take a base backup: permafrost backup --kind base --cluster {cluster}")
    return 0
