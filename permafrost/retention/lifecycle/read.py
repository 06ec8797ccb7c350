"""Reading lifecycle rules as a bucket returns them: whose they are, where they reach, and a
form that compares equal however the service spells the same rule."""

from __future__ import annotations

import json
from datetime import datetime
from typing import Any

from permafrost.retention.lifecycle.rules import RULE_PREFIX


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


def narrowed(rule: dict[str, Any]) -> bool:
    """Whether a tag or size filter narrows the rule (it is then treated as applying)."""
    filt = rule.get("Filter")
    return isinstance(filt, dict) and any(key != "Prefix" for key in filt)


def overlaps(rule_prefix_: str, folder: str) -> bool:
    """Whether a rule with this prefix can reach a key under `folder`."""
    return folder.startswith(rule_prefix_) or rule_prefix_.startswith(folder)


def canonical(rule: dict[str, Any]) -> str:
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


def jsonable(value: Any) -> Any:
    """The rules as read (boto3 gives dates as datetimes), ready for JSON."""
    if isinstance(value, datetime):
        return value.isoformat()
    if isinstance(value, dict):
        return {key: jsonable(item) for key, item in value.items()}
    if isinstance(value, list):
        return [jsonable(item) for item in value]
    return value
