"""`permafrost lock status|migrate`: object lock (OBJECT_LOCK) as the bucket holds it.

`migrate` moves a repository's legacy keep/ pins to pins by legal hold in their tier
(permafrost/retention/migrate.py), under the retention lock, audit-logged, the catalog following;
`status` reads every object's lock per tier (permafrost/retention/lockstatus.py).
"""

from __future__ import annotations

import argparse
import sys
from datetime import UTC, datetime

from permafrost import layout
from permafrost.audit import actor
from permafrost.context import Context
from permafrost.errors import CatalogUnavailable
from permafrost.retention import apply as cleanup
from permafrost.retention import lockstatus
from permafrost.retention import migrate as migration
from permafrost.text import print_json, table, when


def add_parsers(commands: argparse._SubParsersAction) -> None:  # type: ignore[type-arg,unused-ignore]
    p = commands.add_parser(
        "lock",
        help="object lock (OBJECT_LOCK): status per tier, migrate keep/ pins to legal holds",
    )
    sub = p.add_subparsers(dest="lock_command", required=True, metavar="COMMAND")
    s = sub.add_parser(
        "migrate",
        help="move pinned backups from keep/ back to their tier under a legal hold (idempotent)",
    )
    s.add_argument("--json", action="store_true", help="what was moved, as JSON")
    s.set_defaults(handler=lock_migrate)
    s = sub.add_parser(
        "status",
        help="per tier: oldest and newest retain-until, objects without a lock, legal holds, "
        "and what a delete would do today",
    )
    s.add_argument("--json", action="store_true", help="the tiers as JSON")
    s.set_defaults(handler=lock_status)


def lock_status(ctx: Context, args: argparse.Namespace) -> int:
    now = datetime.now(UTC)
    tiers = lockstatus.status(ctx.storage, ctx.settings.storage.prefix, now)
    if args.json:
        print_json(
            {"mode": ctx.settings.storage.object_lock, "tiers": [t.to_json() for t in tiers]}
        )
        return 0
    rows = [
        [
            t.tier,
            str(t.objects),
            when(t.oldest),
            when(t.newest),
            str(t.unlocked),
            str(t.held),
            t.delete_today(),
        ]
        for t in tiers
    ]
    heads = ["TIER", "OBJECTS", "OLDEST UNTIL", "NEWEST UNTIL", "NO LOCK", "HELD", "DELETE TODAY"]
    print(f"OBJECT_LOCK={ctx.settings.storage.object_lock}")
    print(table(heads, rows))
    unlocked = sum(t.unlocked for t in tiers if t.tier != layout.KEEP_TIER)
    if unlocked:
        print(
            f"note: {unlocked} objects carry no lock (written before OBJECT_LOCK was set); "
            "retention deletes them as before"
        )
    return 0


def lock_migrate(ctx: Context, args: argparse.Namespace) -> int:
    try:
        catalog = ctx.catalog()
    except CatalogUnavailable as exc:
        raise CatalogUnavailable(
            f"{exc}; a migration is written to its audit log, so nothing was changed"
        ) from None
    repo = ctx.repository()
    cleanup.wait_for_lock(catalog, print)
    try:
        moved = migration.migrate(repo, print if not args.json else lambda _: None)
    finally:
        catalog.unlock(cleanup.RETENTION_LOCK, "bucket")
    for m in moved:
        key = layout.manifest_key(repo.prefix, m.tier, m.database, m.backup_id)
        catalog.move_backup(m.backup_id, m.tier, key)
        catalog.audit(actor(), "lock-migrate", m.backup_id, {"tier": m.tier, "held": m.held})
    if args.json:
        print_json({"migrated": [m.__dict__ for m in moved]})
    elif not moved:
        print("nothing in keep/: every pin is a legal hold already")
    else:
        print(f"migrated {len(moved)} backups from keep/ to their tiers")
    for m in moved:
        if m.error:
            print(f"error: {m.backup_id} left in keep/ as well: {m.error}", file=sys.stderr)
    return 1 if any(m.error for m in moved) else 0
