"""The lifecycle rules the tier settings call for, per provider.

One expiry rule per tier, plus cold-storage moves on AWS and an abort of forgotten multipart
uploads. Ours are the rules whose ID starts with `permafrost-`; `apply` writes them beside any
rules that are not ours.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

from permafrost import layout
from permafrost.config.settings import RetentionSettings, Settings
from permafrost.storage.lock import retention_days

RULE_PREFIX = "permafrost-"
ABORT_RULE = RULE_PREFIX + "abort-multipart"
ABORT_DAYS = 2
EXPIRING_TIERS = ("standard", "compliance", layout.BASE_TIER, "wal")
COLD_TIERS = ("standard", "compliance")  # and keep/, which moves but never expires
# Lifecycle moves into these classes only objects at least this old (AWS refuses fewer days).
MIN_TRANSITION_DAYS = {"STANDARD_IA": 30, "ONEZONE_IA": 30}
# Objects in these classes are billed for at least this many days.
MIN_STORAGE_DAYS = {"GLACIER_IR": 90, "STANDARD_IA": 30, "ONEZONE_IA": 30}
TIER_VARIABLES = {
    "standard": "STANDARD_TIER_DAYS",
    "compliance": "COMPLIANCE_TIER_DAYS",
    layout.BASE_TIER: "WAL_RETENTION_DAYS",
    "wal": "WAL_RETENTION_DAYS",
}


def folders(prefix: str) -> dict[str, str]:
    """Each tier's folder in the bucket: standard, compliance, base, wal, keep."""
    return {
        "standard": layout.tier_folder(prefix, "standard"),
        "compliance": layout.tier_folder(prefix, "compliance"),
        layout.BASE_TIER: layout.tier_folder(prefix, layout.BASE_TIER),
        "wal": layout.join(prefix, "wal") + "/",  # every cluster's wal_folder is under it
        layout.KEEP_TIER: layout.tier_folder(prefix, layout.KEEP_TIER),
    }


def repository_root(prefix: str) -> str:
    """The folder every key of this repository is under ('' for a whole bucket)."""
    root = layout.join(prefix)
    return root + "/" if root else ""


@dataclass(frozen=True)
class Desired:
    """The lifecycle rules for these settings, and what the operator should know about them."""

    provider: str
    prefix: str
    rules: list[dict[str, Any]]
    notes: list[str]
    versioned: bool = False  # the bucket keeps old versions: rules expire them (versions.py)

    @property
    def ids(self) -> list[str]:
        return [rule["ID"] for rule in self.rules]

    def to_json(self) -> dict[str, Any]:
        return {"provider": self.provider, "rules": self.rules, "notes": self.notes}


def desired(settings: Settings) -> Desired:
    """The S3 LifecycleConfiguration rules that the tier settings and the provider call for."""
    provider = settings.storage.provider
    prefix = settings.storage.prefix
    notes: list[str] = []
    cold = _cold_after(settings.retention, notes) if provider == "aws" else None
    rules = _expiry_rules(settings.retention, folders(prefix), cold, notes)
    if settings.storage.object_lock != "off":
        rules = without_expiry(rules, notes)
    if cold is not None:
        rules.append(_keep_rule(folders(prefix)[layout.KEEP_TIER], cold))
    if provider != "minio":
        rules.append(_abort_rule(prefix))
    notes.extend(_provider_notes(provider))
    notes.append(
        f"keep/ (pinned and held backups) and {layout.REPOSITORY_CONFIG} never expire: "
        "no rule deletes anything there"
    )
    return Desired(provider, prefix, rules, notes)


def without_expiry(rules: list[dict[str, Any]], notes: list[str]) -> list[dict[str, Any]]:
    """Under OBJECT_LOCK: the tier rules without their Expiration (retention deletes once the
    lock allows; an expiry on a versioned bucket would hide pinned backups behind delete markers);
    a rule left with nothing goes."""
    kept = []
    for rule in rules:
        if "Expiration" in rule:
            rule = {k: v for k, v in rule.items() if k != "Expiration"}
            if "Transitions" not in rule:
                continue
        kept.append(rule)
    notes.append(
        "OBJECT_LOCK: no expiry rules: retention deletes each backup once its lock has ended "
        "(an expiry rule would hide pinned backups, held by a legal hold, behind a delete marker)"
    )
    return kept


def tier_days(policy: RetentionSettings) -> dict[str, int]:
    """The days after which each expiring tier's objects go."""
    days = retention_days(policy)  # the one map from tier to days (object lock's too)
    return {tier: days[tier] for tier in EXPIRING_TIERS}


def _expiry_rules(
    policy: RetentionSettings,
    where: dict[str, str],
    cold: tuple[str, int] | None,
    notes: list[str],
) -> list[dict[str, Any]]:
    expiry = tier_days(policy)
    rules: list[dict[str, Any]] = []
    for tier in EXPIRING_TIERS:
        rule: dict[str, Any] = {
            "ID": RULE_PREFIX + tier,
            "Status": "Enabled",
            "Filter": {"Prefix": where[tier]},
            "Expiration": {"Days": expiry[tier]},
        }
        if cold is not None and tier in COLD_TIERS:
            transition = _transition(tier, expiry[tier], cold, notes)
            if transition is not None:
                rule["Transitions"] = [transition]
        rules.append(rule)
    return rules


def _keep_rule(folder: str, cold: tuple[str, int]) -> dict[str, Any]:
    storage_class, days = cold
    return {
        "ID": RULE_PREFIX + layout.KEEP_TIER,
        "Status": "Enabled",
        "Filter": {"Prefix": folder},
        "Transitions": [{"Days": days, "StorageClass": storage_class}],
    }


def _abort_rule(prefix: str) -> dict[str, Any]:
    return {
        "ID": ABORT_RULE,
        "Status": "Enabled",
        "Filter": {"Prefix": repository_root(prefix)},
        "AbortIncompleteMultipartUpload": {"DaysAfterInitiation": ABORT_DAYS},
    }


def _cold_after(policy: RetentionSettings, notes: list[str]) -> tuple[str, int]:
    """AWS: the cold class and the day objects move there, raised to the class's minimum."""
    storage_class = policy.cold_storage_class
    days = policy.cold_after_days
    least = MIN_TRANSITION_DAYS.get(storage_class, 0)
    if days < least:
        notes.append(
            f"COLD_STORAGE_CLASS={storage_class} only takes objects at least {least} days old: "
            f"COLD_AFTER_DAYS={days} is raised to {least} in the rules"
        )
        days = least
    return storage_class, days


def _transition(
    tier: str, expiry: int, cold: tuple[str, int], notes: list[str]
) -> dict[str, Any] | None:
    storage_class, days = cold
    variable = TIER_VARIABLES[tier]
    if days >= expiry:
        notes.append(
            f"{tier}: no move to {storage_class}: its objects expire after {variable}={expiry} "
            f"days, no later than they would move (day {days})"
        )
        return None
    least = MIN_STORAGE_DAYS.get(storage_class)
    if least is not None and expiry - days < least:
        notes.append(
            f"{tier}: objects move to {storage_class} on day {days} and expire on day {expiry}, "
            f"but {storage_class} bills at least {least} days: each is charged as if kept until "
            f"day {days + least} (the rule is written all the same)"
        )
    return {"Days": days, "StorageClass": storage_class}


def _provider_notes(provider: str) -> list[str]:
    if provider == "spaces":
        return [
            "DigitalOcean Spaces has no storage classes: COLD_AFTER_DAYS and COLD_STORAGE_CLASS "
            "are not used, and only expiry rules (and the abort of incomplete uploads) are written"
        ]
    if provider == "minio":
        return [
            "MinIO does not take AbortIncompleteMultipartUpload in lifecycle rules (it clears "
            "stale multipart uploads itself), so only expiry rules are written; COLD_AFTER_DAYS "
            "and COLD_STORAGE_CLASS are not used (MinIO's tiers are set up in MinIO)"
        ]
    if provider == "generic":
        return [
            "S3_PROVIDER=generic: storage classes differ between services, so no moves to cold "
            "storage are written (COLD_AFTER_DAYS and COLD_STORAGE_CLASS apply with "
            "S3_PROVIDER=aws); expiry rules and the abort of incomplete uploads are"
        ]
    return []
