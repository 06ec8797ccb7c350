"""`permafrost retention`, `pin` and `unpin`."""

from __future__ import annotations

import argparse
import sys
from collections.abc import Callable
from datetime import UTC, datetime
from typing import TYPE_CHECKING

from permafrost import layout
from permafrost.audit import actor
from permafrost.context import Context
from permafrost.errors import CatalogUnavailable
from permafrost.retention import apply as cleanup
from permafrost.retention import deletion, pins
from permafrost.retention.copies import CopyRetention, run_copies
from permafrost.retention.plan import Action
from permafrost.text import human_bytes, print_json, table

if TYPE_CHECKING:
    from permafrost.catalog.store import Catalog


def add_parsers(commands: argparse._SubParsersAction) -> None:  # type: ignore[type-arg,unused-ignore]
    p = commands.add_parser(
        "retention",
        help="show which backups retention keeps and deletes, and why (--apply to delete)",
    )
    p.add_argument("--apply", action="store_true", help="delete what the plan deletes")
    p.add_argument("--database", help="only this database's (or cluster's) backups")
    p.add_argument("--json", action="store_true", help="the plan as JSON")
    p.set_defaults(handler=retention)

    p = commands.add_parser(
        "pin", help="keep a backup for good: move it to keep/ (under OBJECT_LOCK: a legal hold)"
    )
    p.add_argument("backup", help="the backup id")
    p.add_argument("--reason", default="", help="why, for whoever reads it later")
    p.set_defaults(handler=pin)

    p = commands.add_parser("unpin", help="return a pinned backup to its tier's retention")
    p.add_argument("backup", help="the backup id")
    p.set_defaults(handler=unpin)


def _say(text: str) -> None:
    print(text, file=sys.stderr)


def _catalog_for_changes(ctx: Context, what: str) -> Catalog:
    try:
        return ctx.catalog()
    except CatalogUnavailable as exc:
        raise CatalogUnavailable(
            f"{exc}; {what} is written to its audit log, so nothing was changed"
        ) from None


def retention(ctx: Context, args: argparse.Namespace) -> int:
    if args.database:
        layout.check_name(args.database)
    if args.apply:
        catalog: Catalog | None = _catalog_for_changes(ctx, "every deletion")
    else:
        catalog = ctx.catalog_or_none("which backups are verified is unknown")
    outcome = cleanup.run(
        ctx.settings,
        ctx.storage,
        ctx.repository(),
        catalog,
        datetime.now(UTC),
        apply=args.apply,
        database=args.database,
        say=_say,
    )
    copies = run_copies(
        ctx.settings,
        ctx.repository(),
        datetime.now(UTC),
        apply=args.apply,
        database=args.database,
        say=_say,
    )
    errors = [*outcome.errors, *_copy_errors(copies)]
    if args.json:
        body = outcome.to_json()
        if copies:
            body["copies"] = {c.destination: _copy_json(c) for c in copies}
        print_json(body)
        return 1 if errors else 0
    rows = [
        [
            d.action.upper() if d.action is not Action.KEEP else d.action.value,
            d.item.id,
            d.item.database,
            d.item.tier,
            human_bytes(d.item.size),
            "; ".join(d.reasons),
        ]
        for d in outcome.decisions
    ]
    if rows:
        print(table(["ACTION", "BACKUP", "DATABASE", "TIER", "SIZE", "RULE"], rows))
    else:
        print("no backups in the bucket")
    for orphan in outcome.orphans:
        print(f"orphan {orphan.folder}: {len(orphan.objects)} objects without a manifest")
    for wal in outcome.wal:
        print(
            f"WAL of {wal.cluster}: {len(wal.delete)} of {wal.files} files older than every "
            f"kept base backup ({human_bytes(wal.bytes)})"
        )
    counts = outcome.counts()
    summary = ", ".join(f"{n} {action}" for action, n in sorted(counts.items())) or "nothing"
    extra = f", {len(outcome.orphans)} orphans" if outcome.orphans else ""
    if outcome.applied:
        print(f"retention applied: {summary}{extra}")
    else:
        print(f"dry run: {summary}{extra}; nothing was changed (add --apply to delete)")
    for held in outcome.locked:  # OBJECT_LOCK: deletions deferred until the lock ends
        print(f"locked, deleted by a later run: {held}")
    for copy in copies:
        _print_copy(copy)
    for error in errors:
        print(f"error: {error}", file=sys.stderr)
    return 1 if errors else 0


def _print_copy(copy: CopyRetention) -> None:
    """A copy's own retention: what it deletes there (what it keeps, counted)."""
    if copy.outcome is None:
        return
    for d in copy.outcome.decisions:
        if d.action is not Action.KEEP:
            reasons = "; ".join(d.reasons)
            print(f"copy {copy.destination}: {d.action.upper()} {d.item.id} ({reasons})")
    counts = copy.outcome.counts()
    summary = ", ".join(f"{n} {action}" for action, n in sorted(counts.items())) or "nothing"
    state = "applied" if copy.outcome.applied else "dry run"
    print(f"copy {copy.destination}: retention {state}: {summary}")


def _copy_errors(copies: list[CopyRetention]) -> list[str]:
    out = [f"copy {c.destination}: {c.error}" for c in copies if c.error]
    return out + [
        f"copy {c.destination}: {e}" for c in copies if c.outcome for e in c.outcome.errors
    ]


def _copy_json(copy: CopyRetention) -> dict[str, object]:
    return {"error": copy.error, **(copy.outcome.to_json() if copy.outcome else {})}


def pin(ctx: Context, args: argparse.Namespace) -> int:
    layout.check_backup_id(args.backup)
    catalog = _catalog_for_changes(ctx, "a pin")
    cleanup.wait_for_lock(catalog, _say)
    try:
        record = _recorder(ctx, catalog, "pin", {"reason": args.reason})
        moved = pins.pin_chain(ctx.repository(), args.backup, actor(), args.reason, _say, record)
    finally:
        catalog.unlock(cleanup.RETENTION_LOCK, "bucket")
    asked = moved[-1]
    if not any(m.changed for m in moved):
        print(f"backup {args.backup} is already pinned")
        return 0
    if asked.location.tier == layout.KEEP_TIER:
        where = "it is in keep/ now, where neither retention nor lifecycle expiry deletes it"
    else:
        where = f"under a legal hold in {asked.location.tier}/, which no one can delete it from"
    print(f"pinned backup {args.backup} of {asked.location.database}: {where}")
    if len(moved) > 1:
        _pinned_chain(ctx, moved)
    return 0


def _pinned_chain(ctx: Context, moved: list[pins.Pinned]) -> None:
    ids = ", ".join(m.location.backup_id for m in moved[:-1])
    print(
        f"pinned its chain too: {deletion.backups(len(moved) - 1)} it restores from ({ids}), "
        f"{'in keep/ now' if moved[0].location.tier == layout.KEEP_TIER else 'held'} as well"
    )
    print(
        "note: a base backup restores with the WAL from its start to its end, archived in wal/, "
        f"which expires after WAL_RETENTION_DAYS={ctx.settings.retention.wal_days} days"
    )


def unpin(ctx: Context, args: argparse.Namespace) -> int:
    layout.check_backup_id(args.backup)
    catalog = _catalog_for_changes(ctx, "an unpin")
    cleanup.wait_for_lock(catalog, _say)
    try:
        record = _recorder(ctx, catalog, "unpin", {})
        moved = pins.unpin_chain(ctx.repository(), args.backup, _say, record)
    finally:
        catalog.unlock(cleanup.RETENTION_LOCK, "bucket")
    for m in moved:
        where = m.location
        chain = f" (in the chain of {m.chain_of})" if m.chain_of else ""
        print(
            f"unpinned backup {where.backup_id} of {where.database}{chain}: in the "
            f"{where.tier} tier, where retention decides on it again"
        )
    return 0


def _recorder(
    ctx: Context, catalog: Catalog, action: str, details: dict[str, str]
) -> Callable[[pins.Pinned], None]:
    """Each backup moved, as it moves: its catalog row follows it, and an audit row says so."""

    def record(m: pins.Pinned) -> None:
        if not m.changed:
            return
        where = m.location
        key = where.folder(ctx.settings.storage.prefix) + layout.MANIFEST_OBJECT
        catalog.move_backup(where.backup_id, where.tier, key)
        extra = {"chain_of": m.chain_of} if m.chain_of else {}
        body = {**details, "tier": where.tier, "folder": key, **extra}
        catalog.audit(actor(), action, where.backup_id, body)

    return record
