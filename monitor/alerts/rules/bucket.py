"""The bucket's rules: bucket_unreachable, key_check (BACKUP_ENCRYPTION_KEY opens the
repository) and lifecycle_drift (`permafrost lifecycle check`, S3 only, hourly)."""

from __future__ import annotations

from datetime import timedelta

from monitor.alerts.findings import Finding, Severity, Skip, summary
from monitor.alerts.run import Run
from permafrost.errors import ConfigError, EncryptionKeyError, NotFound, StorageError
from permafrost.retention import lifecycle
from permafrost.retention.lifecycle import CheckReport
from permafrost.text import one_line

LIFECYCLE_EVERY = timedelta(hours=1)


def bucket_unreachable(run: Run) -> list[Finding]:
    """The bucket does not answer; the rules after it that need it are skipped then."""
    try:
        run.ctx.storage.check()
    except StorageError as exc:
        reason = one_line(str(exc), 160)
        run.bucket_error = reason
        url = run.settings.storage.url
        return [
            Finding(
                "bucket_unreachable",
                Severity.CRITICAL,
                summary(f"the bucket {url} cannot be reached: {reason}"),
                {"storage_url": url, "error": reason},
                "permafrost init",
            )
        ]
    return []


def key_check(run: Run) -> list[Finding]:
    """BACKUP_ENCRYPTION_KEY opens the repository (when the monitor has it)."""
    run.repository_checked()
    if run.settings.encryption_key is None:
        raise Skip("BACKUP_ENCRYPTION_KEY is not set in the monitor: the key is not checked")
    url = run.settings.storage.url
    try:
        run.ctx.repository()
    except NotFound:
        return no_repository(url, run.catalog.completed_backup_count())
    except (EncryptionKeyError, ConfigError) as exc:
        reason = one_line(str(exc), 300)
        return [
            Finding(
                "key_check",
                Severity.CRITICAL,
                summary(f"the encryption key check failed: {reason}"),
                {"storage_url": url, "error": reason},
                "permafrost init",
            )
        ]
    return []


def no_repository(url: str, count: int) -> list[Finding]:
    """No repository in the bucket: news only when the catalog lists `count` backups there."""
    if not count:
        return []  # a new installation: the first backup creates the repository
    return [
        Finding(
            "key_check",
            Severity.CRITICAL,
            summary(
                f"no Permafrost repository at {url}, but the catalog lists {count} "
                "backup(s) there: STORAGE_URL names the wrong place, or the bucket was emptied"
            ),
            {"storage_url": url, "catalogued_backups": count},
            "permafrost list --limit 5",
        )
    ]


def lifecycle_drift(run: Run) -> list[Finding]:
    """The bucket's lifecycle rules differ from what the settings need (S3, hourly)."""
    if run.settings.storage.scheme != "s3":
        return []
    run.repository_checked()

    def compute() -> list[Finding]:
        return drift_findings(
            run.settings.storage.url, lifecycle.check(run.settings, run.ctx.storage, run.now)
        )

    return run.cached("lifecycle", LIFECYCLE_EVERY, compute)


def drift_findings(url: str, report: CheckReport) -> list[Finding]:
    if report.ok:
        return []
    return [
        Finding(
            "lifecycle_drift",
            Severity.WARNING,
            summary(report.summary()),
            {
                "storage_url": url,
                "problems": report.problems[:20],
                "differences": report.differences[:20],
            },
            "permafrost lifecycle check\npermafrost lifecycle apply",
        )
    ]
