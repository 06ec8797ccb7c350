"""Bucket lifecycle rules: generated from the tier settings, applied, and proved safe.

Lifecycle expiry is a safety net behind retention, never ahead of it. `desired` turns the
settings into S3 lifecycle rules (one per tier, plus cold-storage moves on AWS and an abort of
forgotten multipart uploads); `apply` writes them beside any rules that are not ours (ours are the
ones whose ID starts with `permafrost-`); `check` proves, from the settings and from every rule
the bucket actually has, that no rule would delete a backup, or WAL, that retention still keeps:

- standard/: retention keeps backups up to max(RETENTION_DAILY days, RETENTION_WEEKLY weeks), and
  holds those it must keep longer (min-keep) in keep/ shortly before STANDARD_TIER_DAYS, so no
  rule may expire standard/ sooner than either;
- compliance/: nothing sooner than COMPLIANCE_TIER_DAYS;
- base/ and wal/: point-in-time recovery to any moment of the last PITR_WINDOW_DAYS starts from
  a base backup up to one base-backup interval older than that, and needs every WAL file since;
- keep/ and permafrost.json: nothing may ever expire (permafrost.json holds the KDF salt: without
  it no backup can be opened).

A rule with a tag or size filter is treated as if it applied to everything under its prefix: it
might. A local directory has no lifecycle rules, so only the settings are checked there.
"""

from __future__ import annotations

import json
import math
from collections.abc import Iterable
from dataclasses import dataclass, field
from datetime import UTC, datetime, timedelta
from typing import Any

from permafrost import layout
from permafrost.config.settings import Settings

RULE_PREFIX = "permafrost-"
ABORT_RULE = RULE_PREFIX + "abort-multipart"
ABORT_DAYS = 2
EXPIRING_TIERS = ("standard", "compliance", layout.BASE_TIER, "wal")
COLD_TIERS = ("standard", "compliance")  # and keep/, which moves but never expires
# Lifecycle moves into these classes only objects at least this old (AWS refuses fewer days).
MIN_TRANSITION_DAYS = {"STANDARD_IA": 30, "ONEZONE_IA": 30}
# Objects in these classes are billed for at least this many days.
MIN_STORAGE_DAYS = {"GLACIER_IR": 90, "STANDARD_IA": 30, "ONEZONE_IA": 30}
# Objects in these classes must be thawed before they can be read.
THAW_CLASSES = ("GLACIER", "DEEP_ARCHIVE")
TIER_VARIABLES = {
    "standard": "STANDARD_TIER_DAYS",
    "compliance": "COMPLIANCE_TIER_DAYS",
    layout.BASE_TIER: "WAL_RETENTION_DAYS",
    "wal": "WAL_RETENTION_DAYS",
}
APPLY_HINT = "run `permafrost lifecycle apply`"
LOCAL_NOTE = (
    "the bucket is a local directory: it has no lifecycle rules, so retention alone deletes"
)


# --- where things are ----------------------------------------------------------------------


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


# --- the rules the settings want -----------------------------------------------------------


@dataclass(frozen=True)
class Desired:
    """The lifecycle rules for these settings, and what the operator should know about them."""

    provider: str
    prefix: str
    rules: list[dict[str, Any]]
    notes: list[str]

    @property
    def ids(self) -> list[str]:
        return [rule["ID"] for rule in self.rules]

    def to_json(self) -> dict[str, Any]:
        return {"provider": self.provider, "rules": self.rules, "notes": self.notes}


def desired(settings: Settings) -> Desired:
    """The S3 LifecycleConfiguration rules that the tier settings and the provider call for."""
    provider = settings.storage.provider
    prefix = settings.storage.prefix
    r = settings.retention
    where = folders(prefix)
    expiry = {
        "standard": r.standard_days,
        "compliance": r.compliance_days,
        layout.BASE_TIER: r.wal_days,
        "wal": r.wal_days,
    }
    notes: list[str] = []
    cold = _cold_after(settings, notes) if provider == "aws" else None
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
    if cold is not None:
        storage_class, days = cold
        rules.append(
            {
                "ID": RULE_PREFIX + layout.KEEP_TIER,
                "Status": "Enabled",
                "Filter": {"Prefix": where[layout.KEEP_TIER]},
                "Transitions": [{"Days": days, "StorageClass": storage_class}],
            }
        )
    if provider != "minio":
        rules.append(
            {
                "ID": ABORT_RULE,
                "Status": "Enabled",
                "Filter": {"Prefix": repository_root(prefix)},
                "AbortIncompleteMultipartUpload": {"DaysAfterInitiation": ABORT_DAYS},
            }
        )
    notes.extend(_provider_notes(provider))
    notes.append(
        f"keep/ (pinned and held backups) and {layout.REPOSITORY_CONFIG} never expire: "
        "no rule deletes anything there"
    )
    return Desired(provider, prefix, rules, notes)


def _cold_after(settings: Settings, notes: list[str]) -> tuple[str, int]:
    """AWS: the cold class and the day objects move there, raised to the class's minimum."""
    storage_class = settings.retention.cold_storage_class
    days = settings.retention.cold_after_days
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


# --- reading rules -------------------------------------------------------------------------


def rule_id(rule: dict[str, Any]) -> str:
    return str(rule.get("ID") or "(no ID)")


def is_ours(rule: dict[str, Any]) -> bool:
    return str(rule.get("ID") or "").startswith(RULE_PREFIX)


def rule_prefix(rule: dict[str, Any]) -> str:
    """The key prefix a rule applies to: Filter.Prefix, Filter.And.Prefix or the old Prefix."""
    filt = rule.get("Filter")
    if isinstance(filt, dict):
        if "Prefix" in filt:
            return str(filt["Prefix"] or "")
        both = filt.get("And")
        if isinstance(both, dict):
            return str(both.get("Prefix") or "")
        return ""  # a tag or size filter alone: any key
    return str(rule.get("Prefix") or "")


def _narrowed(rule: dict[str, Any]) -> bool:
    """Whether a tag or size filter narrows the rule (it is then treated as applying)."""
    filt = rule.get("Filter")
    return isinstance(filt, dict) and any(key != "Prefix" for key in filt)


def overlaps(rule_prefix_: str, folder: str) -> bool:
    """Whether a rule with this prefix can reach a key under `folder`."""
    return folder.startswith(rule_prefix_) or rule_prefix_.startswith(folder)


def describe(rule: dict[str, Any]) -> str:
    """A rule in a few words: where, and what it does."""
    prefix = rule_prefix(rule)
    parts = [prefix or "the whole bucket"]
    if _narrowed(rule):
        parts.append("(with a tag or size filter)")
    if rule.get("Status") != "Enabled":
        parts.append(f"[{rule.get('Status', 'no status')}]")
    expiration = rule.get("Expiration") or {}
    actions: list[str] = []
    if "Days" in expiration:
        actions.append(f"expire after {expiration['Days']} days")
    elif "Date" in expiration:
        actions.append(f"expire on {_date_text(expiration['Date'])}")
    for move in rule.get("Transitions") or []:
        when = f"after {move['Days']} days" if "Days" in move else f"on {move.get('Date')}"
        actions.append(f"move to {move.get('StorageClass')} {when}")
    abort = rule.get("AbortIncompleteMultipartUpload") or {}
    if "DaysAfterInitiation" in abort:
        actions.append(f"abort incomplete uploads after {abort['DaysAfterInitiation']} days")
    return f"{' '.join(parts)}: {', '.join(actions) or 'no action on current objects'}"


def _date_text(value: Any) -> str:
    if isinstance(value, datetime):
        return value.astimezone(UTC).strftime("%Y-%m-%d")
    return str(value)[:10]


def _canonical(rule: dict[str, Any]) -> str:
    """A rule in a form that compares equal however the service spells the same rule."""
    body: dict[str, Any] = {
        key: value for key, value in rule.items() if key not in ("Filter", "Prefix") and value
    }
    body["Prefix"] = rule_prefix(rule)
    filt = rule.get("Filter")
    if isinstance(filt, dict):
        rest = {key: value for key, value in filt.items() if key != "Prefix"}
        if rest:
            body["Filter"] = rest
    if "Transitions" in body:
        body["Transitions"] = sorted(
            body["Transitions"], key=lambda t: (t.get("Days", 0), str(t.get("StorageClass")))
        )
    return json.dumps(body, sort_keys=True, default=str)


def _jsonable(value: Any) -> Any:
    if isinstance(value, datetime):
        return value.isoformat()
    if isinstance(value, dict):
        return {key: _jsonable(item) for key, item in value.items()}
    if isinstance(value, list):
        return [_jsonable(item) for item in value]
    return value


def _has_rules(storage: object) -> bool:
    return hasattr(storage, "lifecycle_rules") and hasattr(storage, "put_lifecycle_rules")


# --- what retention keeps ------------------------------------------------------------------


@dataclass(frozen=True)
class Requirement:
    """The youngest age at which objects under `folder` may expire (None: never)."""

    name: str  # standard, compliance, base, wal, keep, config
    folder: str  # a folder, or the repository config's key
    days: int | None
    why: str

    def covered_by(self, prefix: str) -> bool:
        if self.name == "config":
            return self.folder.startswith(prefix)
        return overlaps(prefix, self.folder)

    def to_json(self) -> dict[str, Any]:
        return {"what": self.name, "prefix": self.folder, "min_days": self.days, "why": self.why}


@dataclass
class _SettingsCheck:
    requirements: list[Requirement]
    problems: list[str] = field(default_factory=list)
    notes: list[str] = field(default_factory=list)


def _days_text(span: timedelta) -> str:
    days = span.total_seconds() / 86400
    text = f"{days:.0f}" if abs(days - round(days)) < 0.05 else f"{days:.1f}"
    return f"{text} day" if text == "1" else f"{text} days"


def _check_settings(settings: Settings, now: datetime) -> _SettingsCheck:
    """Whether the tier settings expire anything retention keeps; and each tier's minimum."""
    from permafrost.config.schedule import base_backup_interval

    r = settings.retention
    prefix = settings.storage.prefix
    where = folders(prefix)
    out = _SettingsCheck([])

    span = max(r.daily, r.weekly * 7)
    kept = (
        f"RETENTION_DAILY={r.daily} ({r.daily} days) and RETENTION_WEEKLY={r.weekly} "
        f"({r.weekly * 7} days)"
    )
    if r.standard_days < span:
        out.problems.append(
            f"STANDARD_TIER_DAYS={r.standard_days} is shorter than what retention keeps in the "
            f"standard tier, {kept}: lifecycle would expire standard backups that retention "
            f"still keeps; set STANDARD_TIER_DAYS to {span} or more"
        )
    out.requirements.append(
        Requirement(
            "standard",
            where["standard"],
            max(span, r.standard_days),
            f"retention keeps standard backups up to {span} days ({kept}) and moves those it "
            f"must keep longer to keep/ shortly before STANDARD_TIER_DAYS={r.standard_days}",
        )
    )
    out.requirements.append(
        Requirement(
            "compliance",
            where["compliance"],
            r.compliance_days,
            f"retention keeps compliance backups COMPLIANCE_TIER_DAYS={r.compliance_days} days",
        )
    )

    held = f"retention holds base backups until shortly before WAL_RETENTION_DAYS={r.wal_days}"
    archiving = settings.schedules.wal_archiving != "off"
    interval = base_backup_interval(settings, now) if archiving else None
    need = 0
    why = held
    if archiving and interval:
        need = math.ceil((interval + timedelta(days=r.pitr_window_days)).total_seconds() / 86400)
        because = (
            f"the base backup interval ({_days_text(interval)}, BASE_BACKUP_SCHEDULE) plus "
            f"PITR_WINDOW_DAYS={r.pitr_window_days}"
        )
        why = f"point-in-time recovery needs {because} = {need} days, and {held}"
        if r.wal_days < need:
            out.problems.append(
                f"WAL_RETENTION_DAYS={r.wal_days} is shorter than {because}: WAL that "
                "point-in-time recovery needs would expire"
            )
            out.problems.append(
                f"WAL_RETENTION_DAYS={r.wal_days} (the expiry of base/) is shorter than "
                f"{because}: the base backups that point-in-time recovery starts from would "
                "expire"
            )
    elif archiving:
        need = r.pitr_window_days
        why = f"point-in-time recovery needs PITR_WINDOW_DAYS={need} days, and {held}"
        if r.wal_days < need:
            out.problems.append(
                f"WAL_RETENTION_DAYS={r.wal_days} is shorter than PITR_WINDOW_DAYS={need}: WAL "
                "and base backups that point-in-time recovery needs would expire"
            )
        out.notes.append(
            f"WAL_ARCHIVING={settings.schedules.wal_archiving} but BASE_BACKUP_SCHEDULE is off: "
            "with base backups taken by hand, WAL_RETENTION_DAYS must also cover the time "
            "between two of them, which cannot be checked"
        )
    else:
        out.notes.append(
            "WAL_ARCHIVING=off: the expiry of wal/ and base/ is not checked against "
            "PITR_WINDOW_DAYS and BASE_BACKUP_SCHEDULE"
        )
    for tier in (layout.BASE_TIER, "wal"):
        out.requirements.append(Requirement(tier, where[tier], max(need, r.wal_days), why))
    out.requirements.append(
        Requirement(layout.KEEP_TIER, where[layout.KEEP_TIER], None, "pinned backups")
    )
    out.requirements.append(
        Requirement("config", layout.repository_config_key(prefix), None, "the repository")
    )
    return out


def _rule_problems(rule: dict[str, Any], requirements: Iterable[Requirement]) -> list[str]:
    """What one bucket rule would delete, or make unreadable, that must stay."""
    name = rule_id(rule)
    prefix = rule_prefix(rule)
    scope = f"everything under {prefix}" if prefix else "every object in the bucket"
    if _narrowed(rule):
        scope += " (its tag or size filter is ignored: it might match)"
    expiration = rule.get("Expiration") or {}
    days = expiration.get("Days")
    date = expiration.get("Date")
    problems: list[str] = []
    for req in requirements:
        if not req.covered_by(prefix):
            continue
        if days is not None or date is not None:
            when = f"after {days} days" if days is not None else f"on {_date_text(date)}"
            if req.name == layout.KEEP_TIER:
                problems.append(
                    f"rule {name} expires {scope} {when}: it covers {req.folder} and would "
                    "delete pinned backups"
                )
            elif req.name == "config":
                problems.append(
                    f"rule {name} expires {scope} {when}: it would delete the repository "
                    f"configuration ({req.folder}): every backup would become unreadable"
                )
            elif date is not None:
                problems.append(
                    f"rule {name} expires {scope} on {_date_text(date)}, whatever their age: it "
                    f"covers {req.folder}, where {req.why}"
                )
            elif req.days is not None and days is not None and int(days) < req.days:
                problems.append(
                    f"rule {name} expires {scope} after {days} days: it covers {req.folder}, "
                    f"which must keep objects at least {req.days} days ({req.why})"
                )
        for move in rule.get("Transitions") or []:
            storage_class = str(move.get("StorageClass"))
            if storage_class in THAW_CLASSES:
                problems.append(
                    f"rule {name} moves {scope} to {storage_class}: objects under {req.folder} "
                    "would have to be thawed for hours before a restore could read them; use "
                    "GLACIER_IR"
                )
    return problems


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
        elif _canonical(have) != _canonical(rule):
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


def _other_repositories(actual: list[dict[str, Any]], prefix: str) -> list[str]:
    """Rules named like ours that reach outside this repository: not ours to replace."""
    root = repository_root(prefix)
    return [
        f"rule {rule_id(rule)} ({describe(rule)}) reaches outside this repository ({root}): it "
        "may belong to another repository in the same bucket, so it is not replaced; give each "
        "repository its own bucket, or remove the rule if it is left from an earlier STORAGE_URL"
        for rule in actual
        if is_ours(rule) and not rule_prefix(rule).startswith(root)
    ]


# --- check ---------------------------------------------------------------------------------


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
            "rules": _jsonable(self.rules),
        }


def check(settings: Settings, storage: object, now: datetime | None = None) -> CheckReport:
    """Prove that lifecycle expires nothing retention keeps, from the settings and the bucket.

    Reads the bucket's rules (a local directory has none; then only the settings are checked).
    Raises only for storage errors; what it finds is in the report.
    """
    moment = now or datetime.now(UTC)
    verdict = _check_settings(settings, moment)
    wanted = desired(settings)
    problems = list(verdict.problems)
    notes = list(verdict.notes)
    if not _has_rules(storage):
        notes.append(LOCAL_NOTE + "; only the settings were checked")
        return CheckReport(
            wanted.provider, False, problems, [], notes, verdict.requirements, rules=[]
        )
    actual: list[dict[str, Any]] = list(storage.lifecycle_rules())  # type: ignore[attr-defined]
    for rule in actual:
        found = _rule_problems(rule, verdict.requirements)
        if rule.get("Status") == "Enabled":
            problems.extend(found)
        else:
            notes.extend(f"disabled, but if enabled: {text}" for text in found)
    differences = _differences(actual, wanted)
    notes.extend(wanted.notes)
    return CheckReport(
        wanted.provider, True, problems, differences, notes, verdict.requirements, actual
    )


# --- apply ---------------------------------------------------------------------------------


@dataclass
class ApplyResult:
    """What `apply` did: action is written, unchanged, refused (nothing written) or local."""

    provider: str
    action: str
    rules: list[dict[str, Any]]  # the desired rules
    kept: list[str]  # IDs of the rules that are not ours, left as they were
    removed: list[str]  # IDs of our rules the settings no longer want
    problems: list[str]
    notes: list[str]

    @property
    def ok(self) -> bool:
        return not self.problems

    @property
    def changed(self) -> bool:
        return self.action == "written"

    def messages(self) -> list[str]:
        return [
            *(f"problem: {text}" for text in self.problems),
            *(f"note: {text}" for text in self.notes),
        ]

    def summary(self) -> str:
        ids = ", ".join(rule["ID"] for rule in self.rules)
        kept = f"; {len(self.kept)} other rule(s) kept: {', '.join(self.kept)}" if self.kept else ""
        removed = f"; removed: {', '.join(self.removed)}" if self.removed else ""
        if self.action == "local":
            return f"lifecycle rules not written: {LOCAL_NOTE}"
        if self.action == "refused":
            return (
                f"lifecycle rules not written: {len(self.problems)} problem(s); first: "
                f"{self.problems[0]}"
            )
        if self.action == "unchanged":
            text = f"lifecycle rules unchanged: the bucket already has the desired rules ({ids})"
        else:
            text = f"lifecycle rules written: {ids}{removed}"
        text += kept
        if self.problems:
            text += f"; but {len(self.problems)} problem(s) remain: {self.problems[0]}"
        return text

    def to_json(self) -> dict[str, Any]:
        return {
            "ok": self.ok,
            "provider": self.provider,
            "action": self.action,
            "summary": self.summary(),
            "rules": self.rules,
            "kept": self.kept,
            "removed": self.removed,
            "problems": self.problems,
            "notes": self.notes,
        }


def apply(settings: Settings, storage: object, now: datetime | None = None) -> ApplyResult:
    """Write the desired rules in place of ours, keeping every other rule as it is.

    Idempotent: when the bucket already has them, nothing is written ("unchanged"). Refuses,
    writing nothing, when the settings would expire what retention keeps, or when a rule named
    like ours reaches outside this repository. Rules that are not ours and would delete what
    must stay are reported as problems after writing ours (they are not ours to change).
    """
    moment = now or datetime.now(UTC)
    wanted = desired(settings)
    notes = list(wanted.notes)
    if not _has_rules(storage):
        return ApplyResult(wanted.provider, "local", wanted.rules, [], [], [], [])
    verdict = _check_settings(settings, moment)
    notes.extend(verdict.notes)
    if verdict.problems:
        return ApplyResult(
            wanted.provider, "refused", wanted.rules, [], [], verdict.problems, notes
        )
    actual: list[dict[str, Any]] = list(storage.lifecycle_rules())  # type: ignore[attr-defined]
    conflicts = _other_repositories(actual, wanted.prefix)
    if conflicts:
        return ApplyResult(wanted.provider, "refused", wanted.rules, [], [], conflicts, notes)
    others = [rule for rule in actual if not is_ours(rule)]
    ours = [rule for rule in actual if is_ours(rule)]
    removed = [rule_id(rule) for rule in ours if rule_id(rule) not in wanted.ids]
    same = sorted(_canonical(rule) for rule in ours) == sorted(
        _canonical(rule) for rule in wanted.rules
    )
    if same:
        action = "unchanged"
    else:
        storage.put_lifecycle_rules([*others, *wanted.rules])  # type: ignore[attr-defined]
        action = "written"
    problems = [
        text
        for rule in others
        if rule.get("Status") == "Enabled"
        for text in _rule_problems(rule, verdict.requirements)
    ]
    return ApplyResult(
        wanted.provider,
        action,
        wanted.rules,
        [rule_id(rule) for rule in others],
        removed,
        problems,
        notes,
    )
