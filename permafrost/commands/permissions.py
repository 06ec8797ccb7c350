"""doctor's least-privilege check: what the credentials may do in the bucket (probed,
storage/s3probes.py), against what each service needs and must not have.

Each service gets its own credentials (README: Security, "Least privilege" has the policies):

- scheduler: list, get, put; delete only while retention runs there (CLEANUP_SCHEDULE not
  `off`); get-lifecycle and get-bucket-versioning for the lifecycle check, and put-lifecycle
  when it applies the rules at start (LIFECYCLE_APPLY);
- wal-push (archive_command, on the database server): list, get, put; never delete;
- monitor: list, get, get-lifecycle, get-bucket-versioning; never put or delete;
- restore (the restore CLI and worker): list, get, and for `--as-of` get-bucket-versioning,
  list-versions, get-version; never delete (a safety backup before --drop-existing also puts);
- retention (`permafrost retention --apply` as a job of its own, under an append-only
  scheduler): list, get, put (holds copy into keep/), delete.

No service needs delete-version (s3:DeleteObjectVersion): the lifecycle rules expire old
versions. Credentials that have it can destroy the history `--as-of` restores from.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from enum import StrEnum
from typing import Any

from permafrost import layout
from permafrost.config.schedule import OFF
from permafrost.config.settings import Settings
from permafrost.storage import PermissionProbing, Storage
from permafrost.storage.probes import Access, Action, Probe
from permafrost.text import table


class Service(StrEnum):
    SCHEDULER = "scheduler"
    WAL_PUSH = "wal-push"
    MONITOR = "monitor"
    RESTORE = "restore"
    RETENTION = "retention"


A = Action
LIFECYCLE_READS = (A.GET_LIFECYCLE, A.GET_VERSIONING)


@dataclass(frozen=True)
class Need:
    """What a service needs (must be allowed) and must not have, and why."""

    service: Service
    needs: tuple[Action, ...]
    never: tuple[Action, ...]
    why: str


@dataclass(frozen=True)
class Fit:
    """These credentials against one service's needs."""

    need: Need
    missing: list[Action]  # needed, denied
    unknown: list[Action]  # needed, not known (not probed, or the probe failed)
    excess: list[Action]  # must not have, allowed
    unchecked: list[Action] = field(default_factory=list)  # must not have, not known

    def line(self) -> str:
        name = self.need.service
        parts = []
        if self.missing:
            parts.append(f"lacks {', '.join(self.missing)}")
        if self.excess:
            parts.append(f"should not have {', '.join(self.excess)}, which these credentials may")
        if self.unknown:
            parts.append(f"not known: {', '.join(self.unknown)}")
        if self.unchecked:
            parts.append(f"whether it may also {', '.join(self.unchecked)} was not probed")
        verdict = "; ".join(parts) if parts else "has what it needs, and nothing it must not"
        return f"{name}: {verdict} (needs {', '.join(self.need.needs)}; {self.need.why})"

    def to_json(self) -> dict[str, Any]:
        return {
            "service": str(self.need.service),
            "needs": [str(a) for a in self.need.needs],
            "never": [str(a) for a in self.need.never],
            "missing": [str(a) for a in self.missing],
            "unknown": [str(a) for a in self.unknown],
            "excess": [str(a) for a in self.excess],
            "unchecked": [str(a) for a in self.unchecked],
        }


def needs(settings: Settings) -> list[Need]:
    """Each service's needs, from the settings (where retention runs, whether the scheduler
    writes the lifecycle rules)."""
    cleanup = settings.schedules.cleanup.strip().lower() not in (*OFF, "")
    apply_rules = settings.schedules.lifecycle_apply
    scheduler_why = (
        "retention runs here (CLEANUP_SCHEDULE)"
        if cleanup
        else ("append-only: CLEANUP_SCHEDULE=off, retention runs elsewhere")
    )
    if apply_rules:
        scheduler_why += "; put-lifecycle to write the rules at start (LIFECYCLE_APPLY)"
    return [
        Need(
            Service.SCHEDULER,
            (A.LIST, A.GET, A.PUT, *((A.DELETE,) if cleanup else ()), *LIFECYCLE_READS),
            ((A.DELETE_VERSION,) if cleanup else (A.DELETE, A.DELETE_VERSION)),
            scheduler_why,
        ),
        Need(
            Service.WAL_PUSH,
            (A.LIST, A.GET, A.PUT),
            (A.DELETE, A.DELETE_VERSION),
            "archive_command on the database server",
        ),
        Need(
            Service.MONITOR,
            (A.LIST, A.GET, *LIFECYCLE_READS),
            (A.PUT, A.DELETE, A.DELETE_VERSION),
            "reads only: the dashboard, metrics and the lifecycle alert",
        ),
        Need(
            Service.RESTORE,
            (A.LIST, A.GET, A.GET_VERSIONING, A.LIST_VERSIONS, A.GET_VERSION),
            (A.DELETE, A.DELETE_VERSION),
            "versions for --as-of; put only for a safety backup before --drop-existing",
        ),
        Need(
            Service.RETENTION,
            (A.LIST, A.GET, A.PUT, A.DELETE),
            (A.DELETE_VERSION,),
            "`permafrost retention --apply` where the scheduler may not delete",
        ),
    ]


def fit(need: Need, probes: list[Probe]) -> Fit:
    access = {p.action: p.access for p in probes}
    versioned = any(p.action is A.LIST_VERSIONS for p in probes)
    wanted = [a for a in need.needs if versioned or a not in (A.LIST_VERSIONS, A.GET_VERSION)]
    return Fit(
        need,
        missing=[a for a in wanted if access.get(a) is Access.DENIED],
        unknown=[a for a in wanted if access.get(a) in (Access.UNKNOWN, Access.NOT_PROBED)],
        excess=[a for a in need.never if access.get(a) is Access.ALLOWED],
        unchecked=[a for a in need.never if access.get(a) in (Access.UNKNOWN, Access.NOT_PROBED)],
    )


@dataclass(frozen=True)
class Permissions:
    """doctor's permission section: the probes, each service's fit, warnings and problems."""

    probed: bool
    why_not: str
    probes: list[Probe]
    fits: list[Fit]
    service: Service | None  # the one these credentials are for (doctor --service)

    def warnings(self) -> list[str]:
        out = [
            f"these credentials may delete old versions ({p.action.value}, s3:DeleteObjectVersion):"
            " whoever holds them can destroy the history that --as-of restores from; no "
            "Permafrost service needs it (the lifecycle rules expire old versions)"
            for p in self.probes
            if p.action is A.DELETE_VERSION and p.access is Access.ALLOWED
        ]
        for f in self.named():
            out += [
                f"the {f.need.service} may {a.value} ({_iam(a)}), which it should not: "
                f"{_why_not(f.need, a)}; give it credentials without it (README: Security, "
                "'Least privilege')"
                for a in f.excess
                if a is not A.DELETE_VERSION
            ]
        return out

    def problems(self) -> list[str]:
        return [
            f"the {f.need.service} needs {', '.join(f'{a} ({_iam(a)})' for a in f.missing)}, "
            "which these credentials are denied"
            for f in self.named()
            if f.missing
        ]

    def named(self) -> list[Fit]:
        return [f for f in self.fits if f.need.service is self.service]

    def to_json(self) -> dict[str, Any]:
        return {
            "probed": self.probed,
            "why_not": self.why_not or None,
            "service": str(self.service) if self.service else None,
            "probes": [p.to_json() for p in self.probes],
            "services": [f.to_json() for f in self.fits],
            "warnings": self.warnings(),
            "problems": self.problems(),
        }


def examine(
    settings: Settings, storage: Storage, service: Service | None, writes: bool = True
) -> Permissions:
    """Probe the bucket (S3) and hold the answers against each service's needs; without
    writes (the dashboard), only what reading can tell."""
    if not isinstance(storage, PermissionProbing):
        why = (
            f"{settings.storage.scheme} destinations are not probed: the account or directory "
            "permissions there decide"
        )
        return Permissions(False, why, [], [], service)
    prefix = settings.storage.prefix
    probes = storage.probe_permissions(
        layout.probe_key(prefix), layout.repository_config_key(prefix), writes
    )
    fits = [fit(need, probes) for need in needs(settings)]
    return Permissions(True, "", probes, fits, service)


def render(found: Permissions) -> str:
    if not found.probed:
        return f"bucket permissions: {found.why_not}"
    rows = [[p.action.value, p.iam, str(p.access), p.detail or "-"] for p in found.probes]
    lines = ["bucket permissions of these credentials (one harmless request each):"]
    lines.append(table(["  action", "IAM action", "access", "detail"], _indent(rows)))
    fits = found.named() or found.fits
    lines += [f"  {f.line()}" for f in fits]
    lines += [f"  warning: {w}" for w in found.warnings()]
    return "\n".join(lines)


def _indent(rows: list[list[str]]) -> list[list[str]]:
    return [[f"  {row[0]}", *row[1:]] for row in rows]


def _iam(action: Action) -> str:
    return Probe(action, Access.UNKNOWN).iam


def _why_not(need: Need, action: Action) -> str:
    if need.service is Service.SCHEDULER and action is A.DELETE:
        return "CLEANUP_SCHEDULE=off makes it append-only (retention runs elsewhere)"
    if action is A.PUT:
        return "it only reads"
    return "it never deletes"
