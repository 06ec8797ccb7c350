"""`permafrost restore --globals [ID|latest]`: the server's roles and tablespaces, applied.

The restore parser (restore/cli.py) hands `--globals` here; restore/globals.py fetches and applies.
"""

from __future__ import annotations

import argparse

from permafrost.audit import actor
from permafrost.backup.lookup import find_backups, load_manifest, resolve
from permafrost.catalog.records import BackupRecord
from permafrost.context import Context
from permafrost.errors import BackupNotFound, UsageError
from permafrost.postgres import tools as pgtools
from restore import globals as globals_restore
from restore import target as targets
from restore.engine import refuse_base

_NOT_FOR_GLOBALS = {
    "target_db": "--target-db",
    "jobs": "--jobs",
    "table": "--table",
    "schema": "--schema",
    "schema_only": "--schema-only",
    "data_only": "--data-only",
    "drop_existing": "--drop-existing",
    "no_safety_backup": "--no-safety-backup",
    "no_owner": "--no-owner",
}


def restore_globals(ctx: Context, args: argparse.Namespace) -> int:
    given = [flag for name, flag in _NOT_FOR_GLOBALS.items() if getattr(args, name)]
    if given:
        raise UsageError(
            f"--globals restores the server's roles and tablespaces, not a database, and "
            f"takes no {', '.join(given)}: restore each database with a second command"
        )
    record = _with_globals(ctx, args.backup or "latest", args.database)
    refuse_base(record, "restore --globals")
    manifest = load_manifest(ctx, record)
    target = targets.server_target(ctx.settings, args.target_url)
    sql = globals_restore.fetch(ctx.repository(), manifest)
    applied = globals_restore.apply(
        sql,
        target,
        ctx.settings.pg_bin_dirs,
        lambda line: print(f"- {line}", flush=True),
        dry_run=args.dry_run,
    )
    if args.dry_run:
        print(
            f"dry run: would create {_names('role', applied.created_roles)} and "
            f"{_names('tablespace', applied.created_tablespaces)} on "
            f"{pgtools.where(target.server)}; nothing was changed"
        )
        return 0
    ctx.record(
        lambda c: c.audit(actor(), "restore-globals", record.id, vars(applied)),
        "this restore is not in the audit log",
    )
    print(
        f"applied the globals of backup {record.id} to {pgtools.where(target.server)}: "
        f"{_names('role', applied.created_roles)} created, "
        f"{_names('role', applied.skipped_roles)} skipped (they exist), "
        f"{_names('tablespace', applied.created_tablespaces)} created"
    )
    return 0


def _names(what: str, names: list[str]) -> str:
    count = f"{len(names)} {what}{'' if len(names) == 1 else 's'}"
    return f"{count} ({', '.join(names)})" if names else count


def _with_globals(ctx: Context, ref: str, database: str | None) -> BackupRecord:
    """The backup meant, or for `latest` the newest one of any database that has globals."""
    if ref != "latest" or database is not None:
        return resolve(ctx, ref, database)
    for record in find_backups(ctx, status="completed"):
        if (record.manifest or {}).get("objects", {}).get("globals"):
            return record
    raise BackupNotFound(
        "no backup has the server's globals stored beside it: take one with `permafrost backup`"
    )
