"""Writing the desired rules in place of ours, keeping every other rule as it is."""

from __future__ import annotations

from datetime import UTC, datetime
from typing import Any

from permafrost.config.settings import Settings
from permafrost.retention.lifecycle.check import other_repositories, rule_problems
from permafrost.retention.lifecycle.keeps import check_settings
from permafrost.retention.lifecycle.read import canonical, is_ours, rule_id
from permafrost.retention.lifecycle.report import ApplyAction, ApplyResult, no_rules_note
from permafrost.retention.lifecycle.rules import desired
from permafrost.retention.lifecycle.versions import desired_for, noncurrent_problems
from permafrost.storage.base import LifecycleStorage


def apply(settings: Settings, storage: object, now: datetime | None = None) -> ApplyResult:
    """Write the desired rules in place of ours, keeping every other rule as it is.

    Idempotent: when the bucket already has them, nothing is written ("unchanged"). Refuses,
    writing nothing, when the settings would expire what retention keeps, or when a rule named
    like ours reaches outside this repository. Rules that are not ours and would delete what
    must stay are reported as problems after writing ours (they are not ours to change).
    """
    if not isinstance(storage, LifecycleStorage):
        wanted = desired(settings)
        why = no_rules_note(settings.storage.scheme)
        return ApplyResult(wanted.provider, ApplyAction.LOCAL, wanted.rules, [], [], [], [], why)
    actual = list(storage.lifecycle_rules())
    wanted = desired_for(settings, storage, actual)
    notes = list(wanted.notes)
    verdict = check_settings(settings, now or datetime.now(UTC))
    notes.extend(verdict.notes)
    if verdict.problems:
        return _refused(wanted.provider, wanted.rules, verdict.problems, notes)
    conflicts = other_repositories(actual, wanted.prefix)
    if conflicts:
        return _refused(wanted.provider, wanted.rules, conflicts, notes)
    others = [rule for rule in actual if not is_ours(rule)]
    ours = [rule for rule in actual if is_ours(rule)]
    action = ApplyAction.UNCHANGED
    if not _same(ours, wanted.rules):
        storage.put_lifecycle_rules([*others, *wanted.rules])
        action = ApplyAction.WRITTEN
    problems = [
        text
        for rule in others
        if rule.get("Status") == "Enabled"
        for text in [
            *rule_problems(rule, verdict.requirements),
            *(noncurrent_problems(rule, settings) if wanted.versioned else []),
        ]
    ]
    removed = [rule_id(rule) for rule in ours if rule_id(rule) not in wanted.ids]
    kept = [rule_id(rule) for rule in others]
    return ApplyResult(wanted.provider, action, wanted.rules, kept, removed, problems, notes)


def _same(ours: list[dict[str, Any]], wanted: list[dict[str, Any]]) -> bool:
    return sorted(canonical(rule) for rule in ours) == sorted(canonical(rule) for rule in wanted)


def _refused(
    provider: str, rules: list[dict[str, Any]], problems: list[str], notes: list[str]
) -> ApplyResult:
    return ApplyResult(provider, ApplyAction.REFUSED, rules, [], [], problems, notes)
