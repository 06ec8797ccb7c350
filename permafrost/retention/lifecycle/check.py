"""The proof that no lifecycle rule expires what retention keeps.

From the settings (`keeps.check_settings`) and from every rule the bucket actually has: a rule
with a tag or size filter is treated as if it applied to everything under its prefix (it
might). A local directory has no lifecycle rules, so only the settings are checked there.
"""

from __future__ import annotations

from collections.abc import Iterable
from datetime import UTC, datetime
from typing import Any

from permafrost import layout
from permafrost.config.settings import Settings
from permafrost.retention.lifecycle import chains, locked
from permafrost.retention.lifecycle.keeps import Requirement, check_settings
from permafrost.retention.lifecycle.read import canonical, is_ours, narrowed, rule_id, rule_prefix
from permafrost.retention.lifecycle.report import (
    APPLY_HINT,
    CheckReport,
    date_text,
    describe,
    no_rules_note,
)
from permafrost.retention.lifecycle.rules import Desired, repository_root
from permafrost.retention.lifecycle.versions import desired_for, noncurrent_problems
from permafrost.storage.base import LifecycleStorage

# Objects in these classes must be thawed before they can be read.
THAW_CLASSES = ("GLACIER", "DEEP_ARCHIVE")


def check(settings: Settings, storage: object, now: datetime | None = None) -> CheckReport:
    """Prove that lifecycle expires nothing retention keeps, from the settings and the bucket.

    Reads the bucket's rules (a local directory has none; then only the settings are checked).
    Raises only for storage errors; what it finds is in the report.
    """
    moment = now or datetime.now(UTC)
    verdict = check_settings(settings, moment)
    # Chains are cut only by lifecycle rules: a local directory has none.
    spans = chains.spans(storage, settings.storage.prefix) if _has_rules(storage) else []
    chains.chain_requirement(settings, moment, spans, verdict)
    actual = list(storage.lifecycle_rules()) if isinstance(storage, LifecycleStorage) else []
    wanted = desired_for(settings, storage, actual)
    problems = list(verdict.problems)
    notes = list(verdict.notes)
    if not isinstance(storage, LifecycleStorage):
        notes.append(no_rules_note(settings.storage.scheme) + "; only the settings were checked")
        return CheckReport(
            wanted.provider, False, problems, [], notes, verdict.requirements, rules=[]
        )
    for rule in actual:
        found = rule_problems(rule, verdict.requirements)
        if wanted.versioned:
            found += noncurrent_problems(rule, settings)
        if rule.get("Status") == "Enabled":
            problems.extend(found)
        else:
            notes.extend(f"disabled, but if enabled: {text}" for text in found)
    lock_problems, lock_notes = locked.check(
        settings, storage, actual, verdict.requirements, moment
    )
    problems.extend(lock_problems)
    notes.extend(lock_notes)
    differences = _differences(actual, wanted)
    notes.extend(wanted.notes)
    return CheckReport(
        wanted.provider, True, problems, differences, notes, verdict.requirements, actual
    )


def _has_rules(storage: object) -> bool:
    return isinstance(storage, LifecycleStorage)


def rule_problems(rule: dict[str, Any], requirements: Iterable[Requirement]) -> list[str]:
    """What one bucket rule would delete, or make unreadable, that must stay."""
    prefix = rule_prefix(rule)
    scope = f"everything under {prefix}" if prefix else "every object in the bucket"
    if narrowed(rule):
        scope += " (its tag or size filter is ignored: it might match)"
    problems: list[str] = []
    for req in requirements:
        if req.covered_by(prefix):
            problems.extend(_expiry_problems(rule, scope, req))
            problems.extend(_thaw_problems(rule, scope, req))
    return problems


def _expiry_problems(rule: dict[str, Any], scope: str, req: Requirement) -> list[str]:
    name = rule_id(rule)
    expiration = rule.get("Expiration") or {}
    days = expiration.get("Days")
    date = expiration.get("Date")
    if days is None and date is None:
        return []
    when = f"after {days} days" if days is not None else f"on {date_text(date)}"
    if req.name == layout.KEEP_TIER:
        return [
            f"rule {name} expires {scope} {when}: it covers {req.folder} and would "
            "delete pinned backups"
        ]
    if req.name == "config":
        return [
            f"rule {name} expires {scope} {when}: it would delete the repository "
            f"configuration ({req.folder}): every backup would become unreadable"
        ]
    if date is not None:
        return [
            f"rule {name} expires {scope} on {date_text(date)}, whatever their age: it "
            f"covers {req.folder}, where {req.why}"
        ]
    if req.name == chains.CHAIN and req.days is not None and days is not None:
        return [chains.cut_problem(name, scope, int(days), req)] if int(days) < req.days else []
    if req.days is not None and days is not None and int(days) < req.days:
        return [
            f"rule {name} expires {scope} after {days} days: it covers {req.folder}, "
            f"which must keep objects at least {req.days} days ({req.why})"
        ]
    return []


def _thaw_problems(rule: dict[str, Any], scope: str, req: Requirement) -> list[str]:
    return [
        f"rule {rule_id(rule)} moves {scope} to {move.get('StorageClass')}: objects under "
        f"{req.folder} would have to be thawed for hours before a restore could read them; use "
        "GLACIER_IR"
        for move in rule.get("Transitions") or []
        if str(move.get("StorageClass")) in THAW_CLASSES
    ]


def _differences(actual: list[dict[str, Any]], wanted: Desired) -> list[str]:
    """Our rules in the bucket against the desired ones: missing, different, extra."""
    ours = {rule_id(rule): rule for rule in actual if is_ours(rule)}
    out: list[str] = []
    for rule in wanted.rules:
        have = ours.get(rule["ID"])
        if have is None:
            out.append(
                f"rule {rule['ID']} is missing from the bucket (wanted: {describe(rule)}); "
                f"{APPLY_HINT}"
            )
        elif canonical(have) != canonical(rule):
            out.append(
                f"rule {rule['ID']} differs from the settings: the bucket has {describe(have)}; "
                f"wanted: {describe(rule)}; {APPLY_HINT}"
            )
    for name, rule in ours.items():
        if name not in wanted.ids:
            out.append(
                f"rule {name} ({describe(rule)}) is not one the settings want; "
                f"{APPLY_HINT} to remove it"
            )
    return out


def other_repositories(actual: list[dict[str, Any]], prefix: str) -> list[str]:
    """Rules named like ours that reach outside this repository: not ours to replace."""
    root = repository_root(prefix)
    return [
        f"rule {rule_id(rule)} ({describe(rule)}) reaches outside this repository ({root}): it "
        "may belong to another repository in the same bucket, so it is not replaced; give each "
        "repository its own bucket, or remove the rule if it is left from an earlier STORAGE_URL"
        for rule in actual
        if is_ours(rule) and not rule_prefix(rule).startswith(root)
    ]
