"""What the rules find: `Finding` (one thing wrong, as an alert will show it) and its `Severity`."""

from __future__ import annotations

from collections.abc import Iterable
from dataclasses import dataclass
from enum import StrEnum
from typing import Any

from permafrost.text import one_line

SUMMARY_LIMIT = 200

# The rule families the evaluator owns: only their alerts does it resolve (`job_failed:*` are
# the scheduler's).
FAMILIES = (
    "backup_failed",
    "backup_stale",
    "scheduler_dead",
    "service_dead",
    "task_stuck",
    "queue_stalled",
    "verification_failed",
    "verify_config",
    "wal_lag",
    "wal_gap",
    "wal_queue",
    "backup_size",
    "bucket_unreachable",
    "key_check",
    "lifecycle_drift",
    "pitr_drill",
    "database_gone",
    "copy_lag",
)


class Severity(StrEnum):
    CRITICAL = "critical"
    WARNING = "warning"
    INFO = "info"  # no rule raises it; /metrics counts it, as a job's alert may have it


@dataclass(frozen=True)
class Finding:
    """One thing wrong: its alert key, severity, one-line summary, facts and runbook."""

    key: str
    severity: Severity
    summary: str
    details: dict[str, Any]
    runbook: str  # the command(s) to run first, one per line

    @property
    def family(self) -> str:
        return self.key.split(":", 1)[0]

    def to_json(self) -> dict[str, Any]:
        return {
            "key": self.key,
            "severity": str(self.severity),
            "summary": self.summary,
            "details": self.details,
            "runbook": self.runbook,
        }

    @classmethod
    def from_json(cls, data: dict[str, Any]) -> Finding:
        return cls(
            data["key"],
            Severity(data["severity"]),
            data["summary"],
            dict(data["details"]),
            data["runbook"],
        )


class Findings(list[Finding]):
    """`evaluate`'s answer: the findings, and the rule families that were evaluated.

    Only an evaluated family may have its alerts resolved; `skipped` says why the others were
    not (family → reason), for the log and for tests.
    """

    def __init__(self, items: Iterable[Finding] = ()) -> None:
        super().__init__(items)
        self.evaluated: set[str] = set()
        self.skipped: dict[str, str] = {}

    def alert_keys(self) -> set[str]:
        return {finding.key for finding in self}


class Skip(Exception):
    """A rule that cannot be evaluated now, and says why (not an error worth a traceback)."""


def owns(key: str, families: Iterable[str]) -> bool:
    """Whether an alert key belongs to one of these rule families (never `job_failed:*`)."""
    family = key.split(":", 1)[0]
    return family in set(families) and family in FAMILIES


def summary(text: str) -> str:
    """A finding's summary: one line, at most SUMMARY_LIMIT characters."""
    return one_line(text, SUMMARY_LIMIT)
