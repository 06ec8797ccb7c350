"""Lifecycle on a versioned bucket: how long deleted and overwritten objects stay readable.

With versioning on, a delete (retention's, an attacker's, or a tier's expiry rule) leaves the
object as a noncurrent version, which `--as-of` reads back (storage/asof.py). Each tier's rule
expires noncurrent versions after the tier's own days, so anything deleted can be brought back
for as long as retention would have kept it, and no longer is paid for; keep/ (which never
expires) keeps them COMPLIANCE_TIER_DAYS. permafrost.json and clusters/ get no rule: their few
versions are kept for good, because without the old permafrost.json no old backup opens.

`check` fails a rule (ours or not) that expires noncurrent versions under a tier sooner than
that: an attack would then be past repair sooner than the settings promise.
"""

from __future__ import annotations

from typing import Any

from permafrost import layout
from permafrost.config.settings import RetentionSettings, Settings
from permafrost.errors import StorageError
from permafrost.retention.lifecycle.read import is_ours, overlaps, rule_id, rule_prefix
from permafrost.retention.lifecycle.rules import (
    RULE_PREFIX,
    TIER_VARIABLES,
    Desired,
    desired,
    folders,
    tier_days,
)
from permafrost.storage.base import VersionedStorage

NONCURRENT = "NoncurrentVersionExpiration"
PROBE_RULE = RULE_PREFIX + "probes"
KEEP_VARIABLE = "COMPLIANCE_TIER_DAYS"
UNVERSIONED_NOTE = (
    "the bucket has no versioning: an object deleted or overwritten (by retention, or by anyone "
    "holding the credentials) is gone, and `--as-of` cannot bring it back; README: Security, "
    "'Rolling back an attack', says how to turn versioning on"
)


def desired_for(
    settings: Settings, storage: object, actual: list[dict[str, Any]] | None = None
) -> Desired:
    """The rules the settings call for on this bucket: with noncurrent-version expiry when it
    keeps old versions (asked of the bucket: GetBucketVersioning). Credentials that may not ask
    (a monitor's, say) judge from the bucket's rules (`actual`): ours with a noncurrent expiry
    were written for a versioned bucket, so they are not reported as different for want of it."""
    wanted = desired(settings)
    if not isinstance(storage, VersionedStorage):
        return wanted  # a local directory, another destination: no versions, no rules
    notes = list(wanted.notes)
    rules = [dict(rule) for rule in wanted.rules]
    state = _versioning(storage, notes)
    if state is None:
        state = any(is_ours(rule) and NONCURRENT in rule for rule in actual or [])
        notes.append(
            "so it is judged from Permafrost's rules in the bucket: "
            + ("they expire old versions" if state else "none expires old versions")
        )
    elif not state:
        notes.append(UNVERSIONED_NOTE)
    if not state:
        return Desired(wanted.provider, wanted.prefix, rules, notes)
    add_noncurrent(rules, settings, notes)
    return Desired(wanted.provider, wanted.prefix, rules, notes, versioned=True)


def versioned(storage: object) -> bool:
    """Whether the bucket keeps old versions (versioning on, or suspended after being on)."""
    return isinstance(storage, VersionedStorage) and storage.versioning() in (
        "Enabled",
        "Suspended",
    )


def _versioning(storage: object, notes: list[str]) -> bool | None:
    """versioned(), or None with a note when the bucket does not answer the question
    (credentials without s3:GetBucketVersioning, a provider without versioning)."""
    try:
        return versioned(storage)
    except StorageError as exc:
        notes.append(f"whether the bucket keeps old versions is unknown ({exc})")
        return None


def noncurrent_days(policy: RetentionSettings) -> dict[str, int]:
    """How long each folder keeps a deleted or overwritten object readable."""
    return {**tier_days(policy), layout.KEEP_TIER: policy.compliance_days}


def add_noncurrent(rules: list[dict[str, Any]], settings: Settings, notes: list[str]) -> None:
    """Each tier's rule also expires noncurrent versions after the tier's days; keep/ gets
    its own rule where it has none (only AWS moves it to cold storage)."""
    days = noncurrent_days(settings.retention)
    by_id = {rule["ID"]: rule for rule in rules}
    for tier, count in days.items():
        rule = by_id.get(RULE_PREFIX + tier)
        if rule is None:
            rule = {
                "ID": RULE_PREFIX + tier,
                "Status": "Enabled",
                "Filter": {"Prefix": folders(settings.storage.prefix)[tier]},
            }
            rules.append(rule)
        rule[NONCURRENT] = {"NoncurrentDays": count}
    rules.append(_probe_rule(settings.storage.prefix))
    notes.append(
        "the bucket is versioned: a deleted or overwritten object stays readable with --as-of "
        "for its tier's days after (standard "
        f"{days['standard']}, compliance {days['compliance']}, base and wal "
        f"{days['wal']}, keep/ {days[layout.KEEP_TIER]}), then its old version expires; "
        f"{layout.REPOSITORY_CONFIG} keeps every version"
    )


def _probe_rule(prefix: str) -> dict[str, Any]:
    """The probes' leftovers (`.probe-*`, written and deleted by init, doctor and wal-push): on a
    versioned bucket each delete leaves an old version and a delete marker, which no tier's rule
    covers; they go after a day, and so do the markers left alone."""
    return {
        "ID": PROBE_RULE,
        "Status": "Enabled",
        "Filter": {"Prefix": layout.join(prefix, ".probe-")},
        NONCURRENT: {"NoncurrentDays": 1},
        "Expiration": {"ExpiredObjectDeleteMarker": True},
    }


def noncurrent_problems(rule: dict[str, Any], settings: Settings) -> list[str]:
    """What one bucket rule cuts short: a folder's deleted objects expiring before its days."""
    found = (rule.get(NONCURRENT) or {}).get("NoncurrentDays")
    if found is None:
        return []
    prefix = rule_prefix(rule)
    where = folders(settings.storage.prefix)
    problems = []
    for tier, days in noncurrent_days(settings.retention).items():
        if overlaps(prefix, where[tier]) and int(found) < days:
            variable = TIER_VARIABLES.get(tier, KEEP_VARIABLE)
            problems.append(
                f"rule {rule_id(rule)} expires old versions under {where[tier]} {found} days "
                f"after they were deleted or overwritten: a backup deleted by an attack could "
                f"be brought back with --as-of for only {found} days, not the {days} of "
                f"{variable}"
            )
    return problems
