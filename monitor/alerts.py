"""The alert evaluator: what is wrong now, as alert rows, and who has been told.

Every ALERT_CHECK_INTERVAL seconds one monitor process (a PostgreSQL advisory lock picks it, so
several gunicorn workers or replicas never duplicate the work) evaluates the rules below,
raises or refreshes an alert for each finding, resolves the alerts of its rule families that are
no longer found, and hands the result to `monitor.notify` for the emails and the webhook.

The rules, each with its dedup key and severity:

    backup_failed:{db}         critical  the newest backup of a database (per kind) failed
    backup_stale:{db}          critical  no successful backup for MAX_BACKUP_AGE
    scheduler_dead             critical  no leader heartbeat for 5 minutes (the dead-man's switch)
    verification_failed:{db}   warning   the newest verification of a database's backups failed
    wal_lag:{cluster}          critical  the newest archived WAL is older than WAL_MAX_LAG
    wal_gap:{cluster}          critical  the WAL archive has a gap (the bucket, every 15 minutes)
    backup_size:{db}           warning   the newest backup is under 50% or over 200% of the median
    bucket_unreachable         critical  the bucket does not answer
    key_check                  critical  BACKUP_ENCRYPTION_KEY does not open the repository
    lifecycle_drift            warning   `permafrost lifecycle check` fails (S3, hourly)

A rule that cannot be evaluated (the metadata store or the bucket is down) resolves nothing:
only the families it did evaluate are in `Findings.evaluated`. `job_failed:*` alerts belong to
the scheduler, which raises them when a job fails and resolves them when it next succeeds.
"""

from __future__ import annotations

import contextlib
import logging
import statistics
import threading
from collections.abc import Callable, Iterable, Sequence
from dataclasses import dataclass, field
from datetime import UTC, datetime, timedelta
from typing import TYPE_CHECKING, Any

import psycopg
from psycopg.rows import dict_row
from psycopg.types.json import Jsonb

from permafrost.config.settings import Settings
from permafrost.context import Context
from permafrost.errors import (
    CatalogUnavailable,
    ConfigError,
    EncryptionKeyError,
    NotFound,
    PermafrostError,
    StorageError,
)
from permafrost.text import human_bytes, iso, one_line, spoken_duration

if TYPE_CHECKING:
    from monitor.notify import Delivery
    from permafrost.catalog.store import Catalog

log = logging.getLogger("permafrost.monitor.alerts")

ALERT_LOCK = 0x616C7274  # 'alrt': one evaluator at a time, across processes and hosts
LOCK_NAME = "evaluator"
EVALUATOR_ROW = "evaluator"  # alert_checks: when an evaluator last ran to its end
WAL_VERIFY_EVERY = timedelta(minutes=15)
LIFECYCLE_EVERY = timedelta(hours=1)
SIZE_HISTORY = 7  # the previous backups whose median is "usual"
SIZE_MIN_HISTORY = 3  # fewer than this: no judgement
SIZE_LOW, SIZE_HIGH = 0.5, 2.0
SUMMARY_LIMIT = 200

FAMILIES = (
    "backup_failed",
    "backup_stale",
    "scheduler_dead",
    "verification_failed",
    "wal_lag",
    "wal_gap",
    "backup_size",
    "bucket_unreachable",
    "key_check",
    "lifecycle_drift",
)


@dataclass(frozen=True)
class Finding:
    """One thing wrong: its alert key, severity, one-line summary, facts and runbook."""

    key: str
    severity: str  # critical, warning
    summary: str
    details: dict[str, Any]
    runbook: str  # the command(s) to run first, one per line

    @property
    def family(self) -> str:
        return self.key.split(":", 1)[0]

    def to_json(self) -> dict[str, Any]:
        return {
            "key": self.key,
            "severity": self.severity,
            "summary": self.summary,
            "details": self.details,
            "runbook": self.runbook,
        }

    @classmethod
    def from_json(cls, data: dict[str, Any]) -> Finding:
        return cls(
            data["key"], data["severity"], data["summary"], dict(data["details"]), data["runbook"]
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


class _Skip(Exception):
    """A rule that cannot be evaluated now, and says why (not an error worth a traceback)."""


# --- evaluation ------------------------------------------------------------------------------


def evaluate(ctx: Context, now: datetime, *, watching_since: datetime | None = None) -> Findings:
    """Every rule, once. `watching_since` is when this monitor started watching: with no
    heartbeat ever written, the dead-man's switch fires once it has watched for 5 minutes."""
    run = _Run(ctx, _aware(now), _aware(watching_since or now))
    out = Findings()
    for families, rule in RULES:
        try:
            found = rule(run)
        except (_Skip, PermafrostError) as exc:
            reason = " ".join(str(exc).split()) or type(exc).__name__
            for family in families:
                out.skipped[family] = reason
            log.info("alert rule %s not evaluated: %s", "/".join(families), reason)
            continue
        except Exception as exc:  # a bug in one rule must not silence the others
            for family in families:
                out.skipped[family] = f"{type(exc).__name__}: {exc}"
            log.exception("alert rule %s failed", "/".join(families))
            continue
        out.extend(found)
        out.evaluated.update(families)
    return out


class _Run:
    """What one evaluation reads, each at most once."""

    def __init__(self, ctx: Context, now: datetime, watching_since: datetime) -> None:
        self.ctx, self.settings = ctx, ctx.settings
        self.now, self.watching_since = now, watching_since
        self._catalog: Catalog | None = None
        self._db_clock: datetime | None = None
        self.bucket_error: str | None = None
        self._installed: datetime | None = None

    @property
    def catalog(self) -> Catalog:
        if self._catalog is None:
            self._catalog = self.ctx.catalog()
        return self._catalog

    def rows(self, query: str, params: Sequence[Any] = ()) -> list[dict[str, Any]]:
        try:
            with self.catalog.conn.cursor(row_factory=dict_row) as cur:
                return cur.execute(query, params).fetchall()
        except (psycopg.OperationalError, psycopg.InterfaceError) as exc:
            raise CatalogUnavailable(f"metadata store failed to evaluate alerts: {exc}") from exc

    @property
    def db_clock(self) -> datetime:
        """`now` on the metadata server's clock: heartbeats and WAL progress are stamped with
        its now(), so their ages are measured against it (a skewed monitor clock is no alarm)."""
        if self._db_clock is None:
            server = self.rows("SELECT now() AS now")[0]["now"]
            self._db_clock = server + (self.now - datetime.now(UTC))
        return self._db_clock

    @property
    def installed(self) -> datetime:
        """When the metadata store was created: the reference for "never backed up"."""
        if self._installed is None:
            found = self.rows("SELECT min(applied_at) AS at FROM schema_migrations")[0]["at"]
            self._installed = found or self.now
        return self._installed

    def repository_checked(self) -> None:
        if self.bucket_error is not None:
            raise _Skip(f"the bucket is unreachable ({self.bucket_error})")


# --- the rules -------------------------------------------------------------------------------


def _backup_failed(run: _Run) -> list[Finding]:
    rows = run.rows(
        "SELECT DISTINCT ON (database, kind) id, database, kind, tier, status, started_at,"
        " finished_at, error, description FROM backups"
        " WHERE status IN ('completed', 'failed', 'deleted')"
        " ORDER BY database, kind, started_at DESC, id DESC"
    )
    # A scheduled backup that failed has its alert already (job_failed:JOB:DB, raised by the
    # scheduler): one problem, one alert, one email.
    scheduled = {
        r["key"]
        for r in run.rows(
            "SELECT key FROM alerts WHERE status = 'active' AND key LIKE 'job_failed:%%'"
        )
    }
    out = []
    for row in rows:
        if row["status"] != "failed":
            continue
        name, kind = row["database"], row["kind"]
        jobs = ("base_backup",) if kind == "base" else ("backup", "compliance_backup")
        if any(f"job_failed:{job}:{name}" in scheduled for job in jobs):
            continue
        key = f"backup_failed:{name}" if kind == "logical" else f"backup_failed:{name}:{kind}"
        error = one_line(row["error"] or "no error recorded", 120)
        what = "backup" if kind == "logical" else f"{kind} backup"
        good = run.rows(
            "SELECT id, coalesce(finished_at, started_at) AS at FROM backups"
            " WHERE database = %s AND kind = %s AND status = 'completed'"
            " ORDER BY started_at DESC LIMIT 1",
            (name, kind),
        )
        runbook = f"permafrost list --database {name} --status failed\n" + (
            f"permafrost backup --database {name}"
            if kind == "logical"
            else f"permafrost backup --kind base --cluster {name}"
        )
        out.append(
            Finding(
                key,
                "critical",
                _summary(f"the newest {what} of {name} failed: {error}"),
                {
                    "database" if kind == "logical" else "cluster": name,
                    "kind": kind,
                    "tier": row["tier"],
                    "backup_id": row["id"],
                    "started_at": iso(row["started_at"]),
                    "error": one_line(row["error"] or "", 1000),
                    "description": row["description"] or "",
                    "last_successful_backup": good[0]["id"] if good else None,
                    "last_successful_at": iso(good[0]["at"]) if good else None,
                },
                runbook,
            )
        )
    return out


def _backup_stale(run: _Run) -> list[Finding]:
    limit = run.settings.monitor.max_backup_age
    rows = run.rows(
        "SELECT database,"
        " (array_agg(id ORDER BY coalesce(finished_at, started_at) DESC)"
        "   FILTER (WHERE status = 'completed'))[1] AS newest_id,"
        " max(coalesce(finished_at, started_at)) FILTER (WHERE status = 'completed') AS newest"
        " FROM backups WHERE kind = 'logical' AND status <> 'deleted' GROUP BY database"
    )
    known = {row["database"]: row for row in rows}
    out = []
    for db in sorted(set(run.settings.source.databases) | set(known)):
        row = known.get(db)
        runbook = f"permafrost status\npermafrost backup --database {db}"
        facts: dict[str, Any] = {"database": db, "max_backup_age": spoken_duration(limit)}
        if row is None or row["newest"] is None:
            waited = (run.now - run.installed).total_seconds()
            if waited <= limit:
                continue
            facts |= {"newest_backup": None, "catalog_created_at": iso(run.installed)}
            summary = (
                f"no successful backup of {db} ever (the catalog was created "
                f"{spoken_duration(waited)} ago)"
            )
        else:
            age = (run.now - row["newest"]).total_seconds()
            if age <= limit:
                continue
            facts |= {
                "newest_backup": row["newest_id"],
                "newest_backup_at": iso(row["newest"]),
                "age": spoken_duration(age),
                "age_seconds": int(age),
            }
            summary = f"no successful backup of {db} for {spoken_duration(age)}"
        out.append(Finding(f"backup_stale:{db}", "critical", _summary(summary), facts, runbook))
    return out


def _scheduler_dead(run: _Run) -> list[Finding]:
    beats = run.rows("SELECT instance, role, host, beat_at FROM heartbeats ORDER BY beat_at DESC")
    leading = [b for b in beats if b["role"] in ("leader", "stopped")]
    runbook = "permafrost status"
    if not leading:
        watched = (run.now - run.watching_since).total_seconds()
        if watched <= run.settings.monitor.scheduler_max_silence:
            return []
        standbys = [b["instance"] for b in beats if b["role"] == "standby"]
        what = (
            f"only standby schedulers ({', '.join(standbys)}) and no leader"
            if standbys
            else "no scheduler has ever written a heartbeat"
        )
        return [
            Finding(
                "scheduler_dead",
                "critical",
                _summary(f"{what}: no backups are being scheduled"),
                {"last_heartbeat": None, "standbys": standbys, "watched": spoken_duration(watched)},
                runbook,
            )
        ]
    last = leading[0]
    age = (run.db_clock - last["beat_at"]).total_seconds()
    if age <= run.settings.monitor.scheduler_max_silence:
        return []
    facts = {
        "instance": last["instance"],
        "host": last["host"],
        "last_heartbeat": iso(last["beat_at"]),
        "age": spoken_duration(age),
        "age_seconds": int(age),
    }
    if last["role"] == "stopped":
        summary = (
            f"the scheduler stopped {spoken_duration(age)} ago: no backups are being scheduled"
        )
    else:
        summary = (
            f"the scheduler has not written a heartbeat for {spoken_duration(age)}: "
            "no backups are being scheduled"
        )
    return [Finding("scheduler_dead", "critical", summary, facts, runbook)]


def _verification_failed(run: _Run) -> list[Finding]:
    rows = run.rows(
        "SELECT DISTINCT ON (b.database) b.database, v.backup_id, v.kind, v.status, v.error,"
        " v.finished_at FROM verifications v JOIN backups b ON b.id = v.backup_id"
        " ORDER BY b.database, v.finished_at DESC, v.id DESC"
    )
    out = []
    for row in rows:
        if row["status"] != "failed":
            continue
        db, backup_id = row["database"], row["backup_id"]
        what = "test restore" if row["kind"] == "test_restore" else "verification"
        error = one_line(row["error"] or "no error recorded", 120)
        out.append(
            Finding(
                f"verification_failed:{db}",
                "warning",
                _summary(f"the newest {what} of a backup of {db} failed: {error}"),
                {
                    "database": db,
                    "backup_id": backup_id,
                    "kind": row["kind"],
                    "finished_at": iso(row["finished_at"]),
                    "error": one_line(row["error"] or "", 1000),
                },
                f"permafrost show {backup_id}\npermafrost verify {backup_id} --test-restore",
            )
        )
    return out


def _wal_lag(run: _Run) -> list[Finding]:
    if run.settings.schedules.wal_archiving == "off":
        return []
    cluster, limit = run.settings.cluster_name, run.settings.monitor.wal_max_lag
    rows = run.rows(
        "SELECT last_segment, last_archived_at, last_error, last_error_at FROM wal_archive"
        " WHERE cluster = %s",
        (cluster,),
    )
    runbook = f"permafrost wal status --cluster {cluster}"
    if not rows:
        waited = (run.now - run.installed).total_seconds()
        if waited <= limit:
            return []
        return [
            Finding(
                f"wal_lag:{cluster}",
                "critical",
                _summary(
                    f"no WAL of cluster {cluster} has ever been archived "
                    f"(WAL_ARCHIVING={run.settings.schedules.wal_archiving})"
                ),
                {"cluster": cluster, "wal_max_lag": spoken_duration(limit), "last_segment": None},
                runbook,
            )
        ]
    row = rows[0]
    lag = (run.db_clock - row["last_archived_at"]).total_seconds()
    if lag <= limit:
        return []
    error = ""
    if (
        row["last_error"]
        and row["last_error_at"]
        and row["last_error_at"] > row["last_archived_at"]
    ):
        error = f"; last error: {one_line(row['last_error'], 80)}"
    return [
        Finding(
            f"wal_lag:{cluster}",
            "critical",
            _summary(
                f"the WAL archive of cluster {cluster} is {spoken_duration(lag)} behind{error}"
            ),
            {
                "cluster": cluster,
                "last_segment": row["last_segment"],
                "last_archived_at": iso(row["last_archived_at"]),
                "lag": spoken_duration(lag),
                "lag_seconds": int(lag),
                "wal_max_lag": spoken_duration(limit),
                "last_error": row["last_error"],
                "last_error_at": iso(row["last_error_at"]),
            },
            runbook + (f"\npermafrost wal switch --cluster {cluster}"),
        )
    ]


def _wal_gap(run: _Run) -> list[Finding]:
    if run.settings.schedules.wal_archiving == "off":
        return []
    run.repository_checked()
    cluster = run.settings.cluster_name

    def compute() -> list[Finding]:
        from permafrost.wal import archive as walarchive

        report = walarchive.verify(run.ctx.repository(), cluster)
        if not report.gaps:
            return []
        first = report.gaps[0]
        missing = sum(gap.count for gap in report.gaps)
        return [
            Finding(
                f"wal_gap:{cluster}",
                "critical",
                _summary(
                    f"the WAL archive of cluster {cluster} has {len(report.gaps)} gap(s), "
                    f"{missing} segment(s) missing (first: {first}): point-in-time recovery "
                    "cannot cross a gap"
                ),
                {
                    "cluster": cluster,
                    "gaps": [str(gap) for gap in report.gaps[:20]],
                    "problems": report.problems[:20],
                    "base_backups": report.bases,
                },
                f"permafrost wal verify --cluster {cluster}\n"
                f"permafrost backup --kind base --cluster {cluster}",
            )
        ]

    return _cached(run, f"wal_gap:{cluster}", WAL_VERIFY_EVERY, compute)


def _backup_size(run: _Run) -> list[Finding]:
    rows = run.rows(
        "SELECT database, id, status, size_bytes, started_at FROM ("
        " SELECT database, id, status, size_bytes, started_at, row_number() OVER"
        "  (PARTITION BY database ORDER BY started_at DESC, id DESC) AS n"
        " FROM backups WHERE kind = 'logical' AND status IN ('completed', 'deleted')"
        " AND size_bytes IS NOT NULL) t"
        " WHERE n <= %s ORDER BY database, n",
        (SIZE_HISTORY + 1,),
    )
    by_db: dict[str, list[dict[str, Any]]] = {}
    for row in rows:
        by_db.setdefault(row["database"], []).append(row)
    out = []
    for db, history in by_db.items():
        newest, previous = history[0], history[1:]
        if newest["status"] != "completed" or len(previous) < SIZE_MIN_HISTORY:
            continue
        usual = statistics.median(row["size_bytes"] for row in previous)
        if usual <= 0:
            continue
        ratio = newest["size_bytes"] / usual
        if SIZE_LOW <= ratio <= SIZE_HIGH:
            continue
        direction = "smaller" if ratio < SIZE_LOW else "larger"
        out.append(
            Finding(
                f"backup_size:{db}",
                "warning",
                _summary(
                    f"the newest backup of {db} is {human_bytes(newest['size_bytes'])}, "
                    f"{ratio:.0%} of the usual {human_bytes(usual)}: much {direction} than "
                    "the ones before it"
                ),
                {
                    "database": db,
                    "backup_id": newest["id"],
                    "size_bytes": newest["size_bytes"],
                    "median_bytes": int(usual),
                    "ratio": round(ratio, 3),
                    "compared_with": len(previous),
                },
                f"permafrost show {newest['id']}\npermafrost list --database {db} --limit 8",
            )
        )
    return out


def _bucket(run: _Run) -> list[Finding]:
    try:
        storage = run.ctx.storage
        storage.check()
    except StorageError as exc:
        reason = one_line(str(exc), 160)
        run.bucket_error = reason
        url = run.settings.storage.url
        return [
            Finding(
                "bucket_unreachable",
                "critical",
                _summary(f"the bucket {url} cannot be reached: {reason}"),
                {"storage_url": url, "error": reason},
                "permafrost init",
            )
        ]
    return []


def _key_check(run: _Run) -> list[Finding]:
    run.repository_checked()
    if run.settings.encryption_key is None:
        raise _Skip("BACKUP_ENCRYPTION_KEY is not set in the monitor: the key is not checked")
    url = run.settings.storage.url
    try:
        run.ctx.repository()
    except NotFound:
        count = run.rows("SELECT count(*) AS n FROM backups WHERE status = 'completed'")[0]["n"]
        if not count:
            return []  # a new installation: the first backup creates the repository
        return [
            Finding(
                "key_check",
                "critical",
                _summary(
                    f"no Permafrost repository at {url}, but the catalog lists {count} "
                    "backup(s) there: STORAGE_URL names the wrong place, or the bucket was emptied"
                ),
                {"storage_url": url, "catalogued_backups": count},
                "permafrost list --limit 5",
            )
        ]
    except (EncryptionKeyError, ConfigError) as exc:
        reason = one_line(str(exc), 300)
        return [
            Finding(
                "key_check",
                "critical",
                _summary(f"the encryption key check failed: {reason}"),
                {"storage_url": url, "error": reason},
                "permafrost init",
            )
        ]
    return []


def _lifecycle(run: _Run) -> list[Finding]:
    if run.settings.storage.scheme != "s3":
        return []
    run.repository_checked()

    def compute() -> list[Finding]:
        from permafrost.retention import lifecycle

        report = lifecycle.check(run.settings, run.ctx.storage, run.now)
        if report.ok:
            return []
        return [
            Finding(
                "lifecycle_drift",
                "warning",
                _summary(report.summary()),
                {
                    "storage_url": run.settings.storage.url,
                    "problems": report.problems[:20],
                    "differences": report.differences[:20],
                },
                "permafrost lifecycle check\npermafrost lifecycle apply",
            )
        ]

    return _cached(run, "lifecycle", LIFECYCLE_EVERY, compute)


Rule = Callable[[_Run], list[Finding]]
RULES: tuple[tuple[tuple[str, ...], Rule], ...] = (
    (("backup_failed",), _backup_failed),
    (("backup_stale",), _backup_stale),
    (("scheduler_dead",), _scheduler_dead),
    (("verification_failed",), _verification_failed),
    (("wal_lag",), _wal_lag),
    (("backup_size",), _backup_size),
    (("bucket_unreachable",), _bucket),  # before the rules that need the bucket
    (("key_check",), _key_check),
    (("wal_gap",), _wal_gap),
    (("lifecycle_drift",), _lifecycle),
)


def _cached(
    run: _Run, name: str, every: timedelta, compute: Callable[[], list[Finding]]
) -> list[Finding]:
    """A slow check's findings, from alert_checks while younger than `every`."""
    rows = run.rows("SELECT checked_at, findings FROM alert_checks WHERE name = %s", (name,))
    if rows and timedelta(0) <= run.now - rows[0]["checked_at"] < every:
        return [Finding.from_json(item) for item in rows[0]["findings"]]
    found = compute()
    run.rows(
        "INSERT INTO alert_checks (name, checked_at, findings) VALUES (%s, %s, %s)"
        " ON CONFLICT (name) DO UPDATE SET checked_at = EXCLUDED.checked_at,"
        " findings = EXCLUDED.findings RETURNING name",
        (name, run.now, Jsonb([finding.to_json() for finding in found])),
    )
    return found


# --- applying --------------------------------------------------------------------------------


@dataclass
class Applied:
    opened: list[str] = field(default_factory=list)
    refreshed: list[str] = field(default_factory=list)
    resolved: list[str] = field(default_factory=list)


def owns(key: str, families: Iterable[str]) -> bool:
    """Whether an alert key belongs to one of these rule families (never `job_failed:*`)."""
    family = key.split(":", 1)[0]
    return family in set(families) and family in FAMILIES


def apply_findings(
    catalog: Catalog, findings: Sequence[Finding], keys_owned: Iterable[str]
) -> Applied:
    """Raise (or refresh) an alert per finding; resolve the active alerts of the families in
    `keys_owned` (normally `findings.evaluated`) that were not found this time."""
    applied = Applied()
    seen: set[str] = set()
    for finding in findings:
        if finding.key in seen:
            continue
        seen.add(finding.key)
        details = dict(finding.details)
        if catalog.raise_alert(finding.key, finding.severity, finding.summary, details):
            applied.opened.append(finding.key)
        else:
            applied.refreshed.append(finding.key)
        _set_runbook(catalog, finding.key, finding.runbook)
    owned = set(keys_owned)
    for alert in _active_keys(catalog):
        if alert not in seen and owns(alert, owned) and catalog.resolve_alert(alert):
            applied.resolved.append(alert)
    for key in applied.opened:
        log.warning("alert opened: %s", key)
    for key in applied.resolved:
        log.warning("alert resolved: %s", key)
    return applied


def _set_runbook(catalog: Catalog, key: str, runbook: str) -> None:
    try:
        catalog.conn.execute(
            "UPDATE alerts SET runbook = %s WHERE key = %s AND status = 'active'"
            " AND runbook IS DISTINCT FROM %s",
            (runbook, key, runbook),
        )
    except (psycopg.OperationalError, psycopg.InterfaceError) as exc:
        raise CatalogUnavailable(f"metadata store failed to record a runbook: {exc}") from exc


def _active_keys(catalog: Catalog) -> list[str]:
    try:
        rows = catalog.conn.execute("SELECT key FROM alerts WHERE status = 'active'").fetchall()
    except (psycopg.OperationalError, psycopg.InterfaceError) as exc:
        raise CatalogUnavailable(f"metadata store failed to read alerts: {exc}") from exc
    return [row[0] for row in rows]


# --- the evaluator thread --------------------------------------------------------------------


@dataclass
class Outcome:
    """One run of the evaluator that held the lock."""

    findings: Findings
    applied: Applied
    delivery: Delivery | None


class Evaluator:
    """Runs the rules every ALERT_CHECK_INTERVAL seconds on a daemon thread; one process at a
    time (a session advisory lock on a connection of its own), so any number of monitor
    workers or replicas may each run one."""

    def __init__(self, settings: Settings) -> None:
        self.settings = settings
        self.watching_since = datetime.now(UTC)
        self._stop = threading.Event()
        self._thread: threading.Thread | None = None
        self._lock_catalog: Catalog | None = None
        self._mutex = threading.Lock()

    @property
    def interval(self) -> int:
        return self.settings.monitor.alert_interval

    def start(self) -> None:
        """Start the thread (once); with ALERT_CHECK_INTERVAL=0 or no metadata store, do not."""
        if self._thread is not None and self._thread.is_alive():
            return
        if self.interval <= 0:
            log.warning("ALERT_CHECK_INTERVAL is 0: the alert evaluator is off")
            return
        if self.settings.metadata_url is None:
            log.warning("METADATA_DATABASE_URL is not set: the alert evaluator is off")
            return
        self._stop.clear()
        self._thread = threading.Thread(target=self._loop, name="permafrost-alerts", daemon=True)
        self._thread.start()

    def stop(self, timeout: float = 15.0) -> None:
        self._stop.set()
        if self._thread is not None:
            self._thread.join(timeout)
            self._thread = None
        with self._mutex:
            self._close_lock_catalog()

    @property
    def alive(self) -> bool:
        return self._thread is not None and self._thread.is_alive()

    def _loop(self) -> None:
        while not self._stop.is_set():
            try:
                self.run_once(if_due=True)
            except Exception:  # the thread outlives every failure
                log.exception("the alert evaluator failed; it runs again in %s s", self.interval)
            self._stop.wait(self.interval)

    def run_once(self, now: datetime | None = None, *, if_due: bool = False) -> Outcome | None:
        """Evaluate, apply and notify, if this process gets the lock; None when another holds
        it or the metadata store is down (logged). With `if_due` (the thread), also None when
        another process ran within half an interval: several workers make one run per interval,
        not one each. Unexpected errors propagate (the thread logs them)."""
        from monitor.notify import notify_pending

        with self._mutex:
            moment = _aware(now or datetime.now(UTC))
            lock = self._lock()
            if lock is None:
                return None
            ctx = Context(self.settings)
            try:
                catalog = ctx.catalog()
                if if_due and not self._due(catalog, moment):
                    return None
                findings = evaluate(ctx, moment, watching_since=self.watching_since)
                applied = apply_findings(catalog, findings, findings.evaluated)
                delivery = notify_pending(catalog, self.settings, moment)
                _ran(catalog, moment)
                return Outcome(findings, applied, delivery)
            except CatalogUnavailable as exc:
                log.warning("alerts not evaluated: %s", exc)
                return None
            finally:
                ctx.close()
                self._unlock(lock)

    def _due(self, catalog: Catalog, now: datetime) -> bool:
        last = last_run(catalog)
        return last is None or not timedelta(0) <= now - last < timedelta(seconds=self.interval / 2)

    def _lock(self) -> Catalog | None:
        from permafrost.catalog.store import connect

        try:
            if self._lock_catalog is None:
                self._lock_catalog = connect(self.settings.metadata_url)
            if self._lock_catalog.try_lock(ALERT_LOCK, LOCK_NAME):
                return self._lock_catalog
            log.debug("another monitor is evaluating the alerts")
            return None
        except CatalogUnavailable as exc:
            log.warning("alerts not evaluated: %s", exc)
            self._close_lock_catalog()
            return None

    def _unlock(self, catalog: Catalog) -> None:
        try:
            catalog.unlock(ALERT_LOCK, LOCK_NAME)
        except CatalogUnavailable:
            self._close_lock_catalog()  # the session, and so the lock, is gone with it

    def _close_lock_catalog(self) -> None:
        if self._lock_catalog is not None:
            with contextlib.suppress(psycopg.Error):
                self._lock_catalog.close()
            self._lock_catalog = None


def last_run(catalog: Catalog) -> datetime | None:
    """When an evaluator last ran to its end (any process): for a dashboard's "checked at"."""
    try:
        row = catalog.conn.execute(
            "SELECT checked_at FROM alert_checks WHERE name = %s", (EVALUATOR_ROW,)
        ).fetchone()
    except (psycopg.OperationalError, psycopg.InterfaceError) as exc:
        raise CatalogUnavailable(
            f"metadata store failed to read the evaluator's run: {exc}"
        ) from exc
    return row[0] if row else None


def _ran(catalog: Catalog, now: datetime) -> None:
    try:
        catalog.conn.execute(
            "INSERT INTO alert_checks (name, checked_at) VALUES (%s, %s)"
            " ON CONFLICT (name) DO UPDATE SET checked_at = EXCLUDED.checked_at",
            (EVALUATOR_ROW, now),
        )
    except (psycopg.OperationalError, psycopg.InterfaceError) as exc:
        raise CatalogUnavailable(
            f"metadata store failed to record the evaluator's run: {exc}"
        ) from exc


# --- helpers ---------------------------------------------------------------------------------


def _summary(text: str) -> str:
    return one_line(text, SUMMARY_LIMIT)


def _aware(moment: datetime) -> datetime:
    return moment if moment.tzinfo else moment.replace(tzinfo=UTC)
