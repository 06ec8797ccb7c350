"""What `check` and `apply` found, in words: a rule in a few words, the summary line, the
messages and the JSON that `permafrost lifecycle check|apply` print."""

from __future__ import annotations

from dataclasses import dataclass
from datetime import UTC, datetime
from enum import StrEnum
from typing import Any

from permafrost import layout
from permafrost.retention.lifecycle.keeps import Requirement
from permafrost.retention.lifecycle.read import is_ours, jsonable, narrowed, rule_prefix
from permafrost.retention.lifecycle.rules import EXPIRING_TIERS

APPLY_HINT = "run `permafrost lifecycle apply`"
LOCAL_NOTE = (
    "the bucket is a local directory: it has no lifecycle rules, so retention alone deletes"
)
# The destinations whose lifecycle Permafrost does not write, by STORAGE_URL's scheme.
NO_RULES_NOTES = {
    "file": LOCAL_NOTE,
    "sftp": "the bucket is a directory on an SFTP server: it has no lifecycle rules, so "
    "retention alone deletes",
    "azure": "an Azure container's lifecycle management policy belongs to the storage account "
    "and is set through Azure's management API, which Permafrost does not call: retention "
    "alone deletes (README: Destinations shows the policy to set for the tiers)",
    "gs": "Permafrost does not write a Google Cloud Storage bucket's lifecycle rules: "
    "retention alone deletes (README: Destinations shows the rules to set for the tiers)",
}


def no_rules_note(scheme: str) -> str:
    """Why a destination gets no lifecycle rules from Permafrost."""
    return NO_RULES_NOTES.get(scheme, LOCAL_NOTE)


def describe(rule: dict[str, Any]) -> str:
    """A rule in a few words: where, and what it does."""
    parts = [rule_prefix(rule) or "the whole bucket"]
    if narrowed(rule):
        parts.append("(with a tag or size filter)")
    if rule.get("Status") != "Enabled":
        parts.append(f"[{rule.get('Status', 'no status')}]")
    return f"{' '.join(parts)}: {', '.join(_actions(rule)) or 'no action on current objects'}"


def _actions(rule: dict[str, Any]) -> list[str]:
    expiration = rule.get("Expiration") or {}
    actions: list[str] = []
    if "Days" in expiration:
        actions.append(f"expire after {expiration['Days']} days")
    elif "Date" in expiration:
        actions.append(f"expire on {date_text(expiration['Date'])}")
    for move in rule.get("Transitions") or []:
        when = f"after {move['Days']} days" if "Days" in move else f"on {move.get('Date')}"
        actions.append(f"move to {move.get('StorageClass')} {when}")
    noncurrent = rule.get("NoncurrentVersionExpiration") or {}
    if "NoncurrentDays" in noncurrent:
        actions.append(f"expire old versions {noncurrent['NoncurrentDays']} days after")
    abort = rule.get("AbortIncompleteMultipartUpload") or {}
    if "DaysAfterInitiation" in abort:
        actions.append(f"abort incomplete uploads after {abort['DaysAfterInitiation']} days")
    return actions


def date_text(value: Any) -> str:
    """An expiry date as a rule gives it (a datetime from boto3, or text) as YYYY-MM-DD."""
    if isinstance(value, datetime):
        return value.astimezone(UTC).strftime("%Y-%m-%d")
    return str(value)[:10]


@dataclass
class CheckReport:
    """`check`'s findings: problems (something kept would be deleted), differences (our rules
    in the bucket are not the desired ones), notes. Both problems and differences fail."""

    provider: str
    bucket_checked: bool
    problems: list[str]
    differences: list[str]
    notes: list[str]
    requirements: list[Requirement]
    rules: list[dict[str, Any]]  # the bucket's rules as read

    @property
    def ok(self) -> bool:
        return not self.problems and not self.differences

    def messages(self) -> list[str]:
        return [
            *(f"problem: {text}" for text in self.problems),
            *(f"difference: {text}" for text in self.differences),
            *(f"note: {text}" for text in self.notes),
        ]

    def summary(self) -> str:
        if not self.ok:
            first = (self.problems or self.differences)[0]
            return (
                f"lifecycle check failed: {len(self.problems)} problem(s), "
                f"{len(self.differences)} difference(s); first: {first}"
            )
        floors = ", ".join(
            f"{req.folder} {req.days} days"
            for req in self.requirements
            if req.days is not None and req.name in EXPIRING_TIERS
        )
        if not self.bucket_checked:
            return (
                "lifecycle check passed: the settings expire nothing retention keeps "
                f"({floors}); a local directory has no lifecycle rules, so only the settings "
                "were checked"
            )
        ours = sum(1 for rule in self.rules if is_ours(rule))
        others = len(self.rules) - ours
        return (
            f"lifecycle check passed: no rule in the bucket expires what retention keeps "
            f"(at least {floors}; nothing under keep/ or {layout.REPOSITORY_CONFIG}); "
            f"{ours} permafrost rule(s) match the settings, {others} other rule(s) checked"
        )

    def to_json(self) -> dict[str, Any]:
        return {
            "ok": self.ok,
            "provider": self.provider,
            "bucket_checked": self.bucket_checked,
            "summary": self.summary(),
            "problems": self.problems,
            "differences": self.differences,
            "notes": self.notes,
            "requirements": [req.to_json() for req in self.requirements],
            "rules": jsonable(self.rules),
        }


class ApplyAction(StrEnum):
    """What `apply` did to the bucket."""

    WRITTEN = "written"
    UNCHANGED = "unchanged"  # the bucket already had the desired rules
    REFUSED = "refused"  # nothing written: the settings or a rule named like ours are unsafe
    LOCAL = "local"  # a local directory has no lifecycle rules


@dataclass
class ApplyResult:
    """What `apply` did, and what it found."""

    provider: str
    action: ApplyAction
    rules: list[dict[str, Any]]  # the desired rules
    kept: list[str]  # IDs of the rules that are not ours, left as they were
    removed: list[str]  # IDs of our rules the settings no longer want
    problems: list[str]
    notes: list[str]
    unsupported: str = LOCAL_NOTE  # with ApplyAction.LOCAL: why no rule was written

    @property
    def ok(self) -> bool:
        return not self.problems

    @property
    def changed(self) -> bool:
        return self.action is ApplyAction.WRITTEN

    def messages(self) -> list[str]:
        return [
            *(f"problem: {text}" for text in self.problems),
            *(f"note: {text}" for text in self.notes),
        ]

    def summary(self) -> str:
        if self.action is ApplyAction.LOCAL:
            return f"lifecycle rules not written: {self.unsupported}"
        if self.action is ApplyAction.REFUSED:
            return (
                f"lifecycle rules not written: {len(self.problems)} problem(s); first: "
                f"{self.problems[0]}"
            )
        ids = ", ".join(rule["ID"] for rule in self.rules)
        if self.action is ApplyAction.UNCHANGED:
            text = f"lifecycle rules unchanged: the bucket already has the desired rules ({ids})"
        else:
            removed = f"; removed: {', '.join(self.removed)}" if self.removed else ""
            text = f"lifecycle rules written: {ids}{removed}"
        if self.kept:
            text += f"; {len(self.kept)} other rule(s) kept: {', '.join(self.kept)}"
        if self.problems:
            text += f"; but {len(self.problems)} problem(s) remain: {self.problems[0]}"
        return text

    def to_json(self) -> dict[str, Any]:
        return {
            "ok": self.ok,
            "provider": self.provider,
            "action": self.action.value,
            "summary": self.summary(),
            "rules": self.rules,
            "kept": self.kept,
            "removed": self.removed,
            "problems": self.problems,
            "notes": self.notes,
        }
