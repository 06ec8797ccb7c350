"""Bucket lifecycle rules: generated from the tier settings, applied, and proved safe.

Lifecycle expiry is a safety net behind retention, never ahead of it. `rules` turns the settings
into S3 lifecycle rules; `keeps` says, from the settings, what retention keeps in each folder;
`check` proves that no rule in the bucket would delete a backup, or WAL, that retention still
keeps; `apply` writes ours beside any rules that are not ours; `report` puts it in words.
"""

from permafrost.retention.lifecycle.apply import apply
from permafrost.retention.lifecycle.check import check
from permafrost.retention.lifecycle.keeps import Requirement
from permafrost.retention.lifecycle.read import rule_prefix
from permafrost.retention.lifecycle.report import (
    LOCAL_NOTE,
    ApplyAction,
    ApplyResult,
    CheckReport,
    describe,
    no_rules_note,
)
from permafrost.retention.lifecycle.rules import RULE_PREFIX, Desired, desired, repository_root
from permafrost.retention.lifecycle.versions import desired_for

__all__ = [
    "LOCAL_NOTE",
    "RULE_PREFIX",
    "ApplyAction",
    "ApplyResult",
    "CheckReport",
    "Desired",
    "Requirement",
    "apply",
    "check",
    "describe",
    "desired",
    "desired_for",
    "no_rules_note",
    "repository_root",
    "rule_prefix",
]
