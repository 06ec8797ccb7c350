"""`permafrost backup --all [--source NAME]`: every database of every source (or of one) now,
one after the other; a failure is reported and the rest still run."""

from __future__ import annotations

import argparse
from collections.abc import Callable

from permafrost.backup import sources
from permafrost.backup.job import run_backup
from permafrost.backup.request import BackupRequest, kind_of
from permafrost.config.fleet import Fleet, FleetSource
from permafrost.context import Context
from permafrost.errors import PermafrostError
from permafrost.progress import Progress
from permafrost.repo.manifest import Kind
from permafrost.text import error_line, human_bytes, print_json


def fleet_backup(
    ctx: Context, args: argparse.Namespace, fleet: Fleet, say: Callable[[str], None]
) -> int:
    """Every database of the sources chosen; the first failure is raised once all have run."""
    failures: list[PermafrostError] = []
    records: list[dict[str, object]] = []
    for source in fleet.select(args.source):
        try:
            names = _names(ctx, source, say)
        except PermafrostError as exc:
            say(f"source {source.name}: {error_line(exc)}")
            failures.append(exc)
            continue
        for name in names:
            outcome = _one(ctx, args, fleet, name, say)
            if isinstance(outcome, PermafrostError):
                failures.append(outcome)
            else:
                records.append({"source": source.name, **outcome})
    if args.json:
        print_json(records)
    if failures:
        raise _summary(failures, len(failures) + len(records))
    return 0


def _summary(failures: list[PermafrostError], total: int) -> PermafrostError:
    """One error for them all, of the first one's class (so its exit code)."""
    first = failures[0]
    text = f"{len(failures)} of {total} backups failed; the first: {error_line(first)}"
    try:
        return type(first)(text)
    except TypeError:  # a class that takes more than a message
        return PermafrostError(text)


def _names(ctx: Context, source: FleetSource, say: Callable[[str], None]) -> tuple[str, ...]:
    if fleet_of_one(source):
        return tuple(ctx.settings.source.backed_up)  # SQLite files too, as `backup` alone
    found = sources.listing(ctx, source)
    for database in found.new:
        say(f"source {source.name}: new database {database}, backed up from now on")
    return found.names


def fleet_of_one(source: FleetSource) -> bool:
    return source.line == 0


def _one(
    ctx: Context, args: argparse.Namespace, fleet: Fleet, name: str, say: Callable[[str], None]
) -> dict[str, object] | PermafrostError:
    kind = kind_of(ctx.settings.source, name)
    request = BackupRequest(
        database=name,
        tier=args.tier,
        description=args.description,
        tags=tuple(args.tag),
        kind=kind,
        source=None if kind == Kind.SQLITE else sources.server_for(fleet, name),
    )
    progress = Progress(f"backup {name}")
    try:
        manifest = run_backup(ctx, request, progress.advance, wait=not args.no_wait, say=say)
    except PermafrostError as exc:
        say(f"backup of {name} failed: {error_line(exc)}")
        return exc
    finally:
        progress.close()
    if not args.json:
        print(
            f"backup {manifest.id} of {name} completed: {human_bytes(manifest.dump_bytes)} "
            f"dumped, {human_bytes(manifest.stored_bytes)} stored in the {manifest.tier} tier, "
            f"{manifest.duration_seconds:.1f} s"
        )
    return {"database": name, "id": manifest.id, "tier": manifest.tier}
