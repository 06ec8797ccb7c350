"""`permafrost lifecycle show|apply|check`: the bucket's lifecycle rules, from the tier settings.

`show` prints the rules the settings call for (touching nothing), `apply` writes them beside the
bucket's other rules, `check` proves that no rule in the bucket expires what retention keeps and
that ours match the settings; it exits 12 (CheckFailed) when either is not so.
"""

from __future__ import annotations

import argparse
import sys
from datetime import UTC, datetime
from typing import Any

from permafrost.config.settings import Settings
from permafrost.context import Context
from permafrost.errors import CheckFailed
from permafrost.retention import lifecycle
from permafrost.retention.copies import settings_for
from permafrost.storage import Storage, open_storage
from permafrost.text import print_json, table


def add_parsers(commands: argparse._SubParsersAction) -> None:  # type: ignore[type-arg,unused-ignore]
    p = commands.add_parser(
        "lifecycle",
        help="the bucket's lifecycle rules: show, apply, check",
        description="Lifecycle rules expire each tier after its days (STANDARD_TIER_DAYS, "
        "COMPLIANCE_TIER_DAYS, WAL_RETENTION_DAYS), move backups to cold storage on AWS "
        "(COLD_STORAGE_CLASS after COLD_AFTER_DAYS) and never touch keep/ or permafrost.json.",
    )
    sub = p.add_subparsers(dest="lifecycle_command", required=True, metavar="COMMAND")
    s = sub.add_parser("show", help="print the rules the settings call for (writes nothing)")
    s.add_argument("--json", action="store_true", help="provider, rules and notes as JSON")
    s.set_defaults(handler=lifecycle_show)
    s = sub.add_parser(
        "apply", help="write the rules to the bucket, keeping rules that are not Permafrost's"
    )
    s.add_argument("--json", action="store_true", help="what was done, as JSON")
    s.set_defaults(handler=lifecycle_apply)
    s = sub.add_parser(
        "check",
        help="prove no rule expires what retention keeps, and ours match the settings (exit 12)",
    )
    s.add_argument("--json", action="store_true", help="the report as JSON")
    s.set_defaults(handler=lifecycle_check)


def lifecycle_show(ctx: Context, args: argparse.Namespace) -> int:
    wanted = lifecycle.desired(ctx.settings)
    notes = list(wanted.notes)
    if ctx.settings.storage.scheme != "s3":
        note = lifecycle.no_rules_note(ctx.settings.storage.scheme)
        notes.insert(0, f"{note}; an S3 bucket would get these")
    else:
        notes.append(
            "on a versioned bucket, `apply` also expires each tier's old (deleted or "
            "overwritten) versions after the tier's days, keep/'s after COMPLIANCE_TIER_DAYS"
        )
    if args.json:
        print_json({**wanted.to_json(), "notes": notes})
        return 0
    where = lifecycle.repository_root(wanted.prefix) or "the whole bucket"
    print(f"lifecycle rules for S3_PROVIDER={wanted.provider}, repository {where}:")
    print(table(("tier", "prefix", "expires", "moves to", "rule"), _rows(wanted.rules)))
    _print_notes(notes)
    return 0


def _rows(rules: list[dict[str, Any]]) -> list[list[str]]:
    rows = []
    for rule in rules:
        name = rule["ID"]
        tier = name.removeprefix(lifecycle.RULE_PREFIX)
        expiration = rule.get("Expiration") or {}
        expires = f"after {expiration['Days']} days" if "Days" in expiration else "never"
        moves = ", ".join(
            f"{move['StorageClass']} after {move['Days']} days"
            for move in rule.get("Transitions") or []
        )
        abort = rule.get("AbortIncompleteMultipartUpload")
        if abort:
            tier = "uploads"
            expires = f"incomplete uploads aborted after {abort['DaysAfterInitiation']} days"
        rows.append([tier, lifecycle.rule_prefix(rule) or "(all)", expires, moves or "-", name])
    return rows


def _print_notes(notes: list[str]) -> None:
    for note in notes:
        print(f"note: {note}")


def lifecycle_apply(ctx: Context, args: argparse.Namespace) -> int:
    result = lifecycle.apply(ctx.settings, ctx.storage, datetime.now(UTC))
    copies = [
        (name, lifecycle.apply(own, storage, datetime.now(UTC)))
        for name, own, storage in _copies(ctx)
    ]
    if args.json:
        print_json(_with_copies(result.to_json(), copies))
    else:
        print(result.summary())
        for line in result.messages():
            print(line)
        for name, each in copies:
            print(f"copy {name}: {each.summary()}")
            for line in each.messages():
                print(f"copy {name}: {line}")
    result.problems += [f"copy {name}: {p}" for name, each in copies for p in each.problems]
    if not result.ok:
        refused = result.action is lifecycle.ApplyAction.REFUSED
        raise CheckFailed(
            f"lifecycle apply: {len(result.problems)} problem(s) "
            f"({'nothing written' if refused else 'rules written'}); "
            f"first: {result.problems[0]}"
        )
    return 0


def lifecycle_check(ctx: Context, args: argparse.Namespace) -> int:
    report = lifecycle.check(ctx.settings, ctx.storage, datetime.now(UTC))
    copies = [
        (name, lifecycle.check(own, storage, datetime.now(UTC)))
        for name, own, storage in _copies(ctx)
    ]
    if args.json:
        print_json(_with_copies(report.to_json(), copies))
    else:
        for line in report.messages():
            print(line)
        if report.ok:
            print(report.summary())
        for name, each in copies:
            for line in each.messages():
                print(f"copy {name}: {line}")
            if each.ok:
                print(f"copy {name}: {each.summary()}")
    failed = [r.summary() for r in (report, *(each for _, each in copies)) if not r.ok]
    if failed:
        sys.stdout.flush()
        raise CheckFailed(failed[0] if not report.ok else f"copy: {failed[0]}")
    return 0


def _copies(ctx: Context) -> list[tuple[str, Settings, Storage]]:
    """Each copy destination as lifecycle sees it: its storage and its own retention (issue 18);
    a destination without lifecycle rules (Azure, GCS, SFTP) says so as the primary would."""
    return [
        (d.name, settings_for(ctx.settings, d), open_storage(d.storage))
        for d in ctx.settings.copies.destinations
    ]


def _with_copies(body: dict[str, Any], copies: list[tuple[str, Any]]) -> dict[str, Any]:
    if not copies:
        return body
    return {**body, "copies": {name: each.to_json() for name, each in copies}}
