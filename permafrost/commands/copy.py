"""`permafrost copy`: copy backups (and WAL) to the copy destinations by hand, or catch up.

    permafrost copy ID [--to NAME]             one backup (or `latest --database NAME`)
    permafrost copy --all-missing [--to NAME]  every backup a destination lacks, and its WAL

Exit codes: 0 every asked-for copy verified at every destination; 2 no destination configured,
or no such --to; 3 no such backup; 5 an object failed its SHA-256 check (the primary's, or the
copy's when read back); 6 a destination could not be reached or refused a write; 8 the metadata
store cannot be reached (it is what knows which backups each destination lacks); 11 another
copier is at work on a destination.
"""

from __future__ import annotations

import argparse

from permafrost.backup.lookup import resolve
from permafrost.context import Context
from permafrost.copies.run import DestinationResult, copy_to, destinations_for
from permafrost.errors import Busy, ConfigError, IntegrityError, StorageError, UsageError
from permafrost.text import print_json


def add_parsers(commands: argparse._SubParsersAction) -> None:  # type: ignore[type-arg,unused-ignore]
    p = commands.add_parser(
        "copy",
        help="copy backups and WAL to the copy destinations (COPY_STORAGE_URLS)",
        description="Copy a backup, or every backup a destination lacks (--all-missing, with the "
        "WAL), to the copy destinations: streamed (server-side on the same S3 endpoint and "
        "credentials), each object read back and checked against its SHA-256, the manifest "
        "last. Exit 5: an object failed its check; 6: a destination could not be used; "
        "11: another copier is at work.",
    )
    p.add_argument("backup_id", nargs="?", metavar="ID", help="a backup id, or `latest`")
    p.add_argument("--database", help="with `latest`: whose")
    p.add_argument("--all-missing", action="store_true", help="every backup each lacks, and WAL")
    p.add_argument("--to", action="append", default=[], metavar="NAME", help="only this copy")
    p.add_argument("--json", action="store_true", help="what was done, as JSON")
    p.set_defaults(handler=copy)


def copy(ctx: Context, args: argparse.Namespace) -> int:
    if not ctx.settings.copies.destinations:
        raise ConfigError("no copy destination: set COPY_STORAGE_URLS (see README, Copies)")
    if bool(args.backup_id) == bool(args.all_missing):
        raise UsageError("name one backup (ID or latest) or --all-missing")
    destinations = destinations_for(ctx, args.to)
    backups = None if args.all_missing else [resolve(ctx, args.backup_id, args.database)]
    results = [
        copy_to(ctx, d, backups, wal=args.all_missing, say=_quiet if args.json else print)
        for d in destinations
    ]
    if args.json:
        print_json([_json(r) for r in results])
    else:
        for result in results:
            print(_summary(result))
    _raise_for(results)
    return 0


def _quiet(_: str) -> None:
    return None


def _summary(result: DestinationResult) -> str:
    if result.busy:
        return f"{result.name}: another copier is at work there; try again later"
    if result.error:
        return f"{result.name}: not reached: {result.error}"
    done = f"{result.name}: {len(result.copied)} backups copied and verified"
    if result.wal_segments:
        done += f", {result.wal_segments} WAL files"
    if result.failed:
        done += f"; {len(result.failed)} failed"
    return done


def _json(result: DestinationResult) -> dict[str, object]:
    return {
        "destination": result.name,
        "copied": result.copied,
        "failed": result.failed,
        "wal_files": result.wal_segments,
        "error": result.error,
        "busy": result.busy,
    }


def _raise_for(results: list[DestinationResult]) -> None:
    for result in results:
        if result.integrity:
            raise IntegrityError(f"copy {result.name}: {next(iter(result.failed.values()))}")
    for result in results:
        if result.error or result.failed:
            reason = result.error or next(iter(result.failed.values()))
            raise StorageError(f"copy {result.name}: {reason}")
    if any(r.busy for r in results):
        raise Busy("another copier is at work on a destination: try again later")
