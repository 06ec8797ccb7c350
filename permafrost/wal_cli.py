"""`permafrost wal-push` (archive_command) and `permafrost wal-fetch` (restore_command).

PostgreSQL reads these exit codes: wal-push must fail non-zero on any doubt, so the segment is
kept and retried; wal-fetch exits 1, silently, for a file the archive does not have (the normal
end of recovery), and above 125 for anything else (wrong key, corrupt object, unreachable
bucket), which makes PostgreSQL stop recovery instead of mistaking the error for the end of the
archive and promoting with WAL missing.
"""

from __future__ import annotations

import argparse
import os
import sys
from pathlib import Path

from permafrost import wal
from permafrost.context import Context
from permafrost.errors import PermafrostError, UsageError

FETCH_MISSING = 1
FETCH_FATAL = 126


def add_parsers(commands: argparse._SubParsersAction) -> None:  # type: ignore[type-arg,unused-ignore]
    p = commands.add_parser(
        "wal-push",
        help="archive one WAL file (for archive_command)",
        description="archive_command = 'permafrost --env-file FILE wal-push %p'",
    )
    p.add_argument("path", help="the WAL file (%%p)")
    p.add_argument("--cluster", help="the server's name in the bucket (default: CLUSTER_NAME)")
    p.set_defaults(handler=wal_push)

    p = commands.add_parser(
        "wal-fetch",
        help="restore one WAL file (for restore_command)",
        description="restore_command = 'permafrost --env-file FILE wal-fetch %f %p'",
    )
    p.add_argument("name", help="the WAL file's name (%%f)")
    p.add_argument("path", help="where to write it (%%p)")
    p.add_argument("--cluster", help="the server's name in the bucket (default: CLUSTER_NAME)")
    p.set_defaults(handler=wal_fetch)


def wal_push(ctx: Context, args: argparse.Namespace) -> int:
    path = Path(args.path)
    if not path.is_file():
        raise UsageError(f"{path} is not a file")
    wal.push(ctx.repository(create=True), args.cluster or ctx.settings.cluster_name, path)
    return 0


def wal_fetch(ctx: Context, args: argparse.Namespace) -> int:
    try:
        data = wal.fetch(ctx.repository(), args.cluster or ctx.settings.cluster_name, args.name)
    except PermafrostError as exc:
        print(f"permafrost: error: wal-fetch {args.name}: {exc}", file=sys.stderr)
        return FETCH_FATAL
    if data is None:
        return FETCH_MISSING
    target = Path(args.path)
    partial = target.with_name(target.name + ".permafrost-partial")
    partial.write_bytes(data)
    os.replace(partial, target)
    return 0
