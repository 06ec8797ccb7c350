"""Settings: the environment, parsed once into a frozen object of sections, one per concern.

Each value goes through a typed helper (`config.env`) that refuses a bad value with a message
naming the variable, so a typo fails at start-up rather than at 2 a.m. The source server and
the bucket have their own modules (`config.source`, `config.storage`); the `--env-file` reader
is `config.envfile`.

The reference deployment's names (`DB_*`, `DO_SPACES_*`, `SMTP_*`, `ALERT_EMAIL`,
`BACKUP_ENCRYPTION_KEY`) are read as they are; generic names (`DATABASE_URL`, `STORAGE_URL`,
`S3_*`) stand beside them; where both are set they must agree (`env.refuse_conflict`), since
a name that quietly wins backs up, or stores into, something the operator did not name.
"""

from __future__ import annotations

import os
import re
import socket
from collections.abc import Mapping
from dataclasses import dataclass, field
from zoneinfo import ZoneInfo

from permafrost.config.copies import CopySettings, copy_settings
from permafrost.config.copyenv import copies_env, storage_env
from permafrost.config.env import Env, Secret
from permafrost.config.source import (
    SourceSettings,
    SqliteSource,
    source_from_url,
    source_settings,
)
from permafrost.config.storage import StorageSettings, storage_settings
from permafrost.config.window import WindowSettings, window_settings
from permafrost.errors import ConfigError
from permafrost.logs import LogFormat

# The parts of the settings that other modules import from here (each has its own module).
__all__ = [
    "Env",
    "Secret",
    "Settings",
    "SourceSettings",
    "SqliteSource",
    "StorageSettings",
    "source_from_url",
    "wal_fetch_env",
]


@dataclass(frozen=True)
class ScheduleSettings:
    """When the scheduler runs each job: crontab strings (five fields, or six with seconds
    first), checked by `permafrost.config.schedule` when the scheduler starts."""

    backup: str = "0 2 * * *"
    base_backup: str = "30 1 * * 0"
    incremental: str = "0 */6 * * *"  # incremental base backups (PostgreSQL 17+), between fulls
    verify: str = "0 3 * * 0"
    cleanup: str = "0 4 * * *"
    compliance: str = "0 1 1 * *"
    lifecycle: str = "30 4 * * *"
    timezone: str = "UTC"
    misfire_grace: int = 6 * 3600
    stop_grace: int = 600
    wal_archiving: str = "off"  # off, push (archive_command) or receive (wal-receive)
    lifecycle_apply: bool = True
    pitr_drill: str = "0 5 * * 6"  # PITR_DRILL_SCHEDULE: Saturday 05:00
    backup_workers: str = "inline"  # BACKUP_WORKERS: inline (the scheduler) or queue (workers)


@dataclass(frozen=True)
class RetentionSettings:
    daily: int = 7
    weekly: int = 4
    monthly: int = 12
    min_keep: int = 3
    standard_days: int = 30
    compliance_days: int = 365
    wal_days: int = 30
    pitr_window_days: int = 14
    cold_storage_class: str = "GLACIER_IR"
    cold_after_days: int = 7
    safety_days: int = 14  # safety backups taken by a restore: kept this long, then deleted


@dataclass(frozen=True)
class MonitorSettings:
    """The monitor: its port, who may change things, when to alert and whom to tell."""

    port: int = 8090
    public_url: str = ""  # how the dashboard is reached, for links in emails
    api_token: Secret | None = None
    dashboard_user: str | None = None
    dashboard_password: Secret | None = None
    alert_interval: int = 60
    max_backup_age: int = 26 * 3600
    wal_max_lag: int = 900
    wal_queue_alert_segments: int = 64  # WAL_QUEUE_ALERT_SEGMENTS: the wal_queue alert
    metrics_cache_seconds: int = 0  # METRICS_CACHE_SECONDS: /metrics rendered once per window
    scheduler_max_silence: int = 300  # the dead-man's switch
    worker_max_silence: int = 300  # service_dead:worker
    task_max_wait: int = 1800  # task_stuck
    alert_repeat_hours: int = 24
    alert_emails: tuple[str, ...] = ()
    smtp_host: str | None = None
    smtp_port: int = 587
    smtp_user: str | None = None
    smtp_password: Secret | None = None
    smtp_from: str = "permafrost@localhost"
    smtp_tls: str = "starttls"
    webhook_url: Secret | None = None
    healthcheck_ping_url: Secret | None = None
    state_dir: str = "~/.permafrost/monitor-state"  # what it sent without the metadata store
    mode: str = "compose"  # how the stack runs (compose, native): which commands pages offer
    env_file: str | None = None  # the settings file the services read (native mode)


@dataclass(frozen=True)
class CompressionSettings:
    """zstd, for logical and base backups."""

    level: int = 3
    threads: int = 2


@dataclass(frozen=True)
class LogicalSettings:
    """Logical backups in parallel (backup/parallel.py): LOGICAL_JOBS pg_dump processes for the
    rows of a database of at least LOGICAL_JOBS_MIN_SIZE_MB; below that, one object."""

    jobs: int = 1
    min_bytes: int = 256 * 1024 * 1024


@dataclass(frozen=True)
class WalSettings:
    """WAL shipping: how long a segment may wait, how far `wal-fetch` reads ahead, and where
    `wal-receive` spools and which replication slot it holds."""

    max_segment_age: int = 300
    prefetch: int = 8
    spool_dir: str | None = None
    slot: str | None = None
    push_ahead: int = 32  # WAL_PUSH_AHEAD: the look-ahead pusher's window (0: no pusher)
    push_threads: int = 4  # WAL_PUSH_THREADS: its parallel uploads (and wal-receive's)
    push_idle: int = 60  # WAL_PUSH_IDLE: seconds with nothing to do before it exits


@dataclass(frozen=True)
class RestoreSettings:
    """Restores and test restores: scratch space, parallel jobs, the server test restores go to,
    and the OS user a point-in-time recovery's server runs as."""

    tmpdir: str | None = None
    jobs: int = 1  # 1 streams the dump into pg_restore; N > 1 downloads it first
    verify_url: Secret | None = None
    pitr_os_user: str = "postgres"
    drill_margin: int = 60  # PITR_DRILL_MARGIN: a drill's target, before the newest archived WAL


@dataclass(frozen=True)
class Settings:
    source: SourceSettings
    storage: StorageSettings
    metadata_url: Secret | None
    encryption_key: Secret | None
    old_encryption_keys: tuple[Secret, ...]
    cluster_name: str = "main"
    sources_file: str | None = None  # SOURCES_FILE: the fleet (config/fleet.py reads it)
    pg_bin_dirs: tuple[str, ...] = ()  # PG_BIN_DIRS, then PG_BIN_DIR (postgres/installations.py)
    backup_role_passwords: bool = False  # the globals beside each backup include role passwords
    log_level: str = "WARNING"
    log_format: LogFormat = LogFormat.TEXT
    compression: CompressionSettings = field(default_factory=CompressionSettings)
    logical: LogicalSettings = field(default_factory=LogicalSettings)
    wal: WalSettings = field(default_factory=WalSettings)
    restore: RestoreSettings = field(default_factory=RestoreSettings)
    schedules: ScheduleSettings = field(default_factory=ScheduleSettings)
    retention: RetentionSettings = field(default_factory=RetentionSettings)
    monitor: MonitorSettings = field(default_factory=MonitorSettings)
    window: WindowSettings = field(default_factory=WindowSettings)  # plan window's forecast
    copies: CopySettings = field(default_factory=CopySettings)  # COPY_STORAGE_URLS
    # Public-key and KMS modes (repo/keys.py): BACKUP_PUBLIC_KEY, BACKUP_PRIVATE_KEY, KMS_*.
    public_key: Secret | None = None
    private_key: Secret | None = None
    kms_key_id: str | None = None
    kms_endpoint_url: str | None = None

    @classmethod
    def from_env(cls, env: Mapping[str, str] | None = None) -> Settings:
        return _parse(Env(os.environ if env is None else env))


def _bin_dirs(env: Env) -> tuple[str, ...]:
    """PG_BIN_DIRS (colon-separated), then PG_BIN_DIR (the older setting, a list of one)."""
    listed = env.text("PG_BIN_DIRS") or ""
    single = env.text("PG_BIN_DIR") or ""
    parts = [*listed.split(":"), single]
    return tuple(dict.fromkeys(part.strip() for part in parts if part.strip()))


def _parse(env: Env) -> Settings:
    # The order of the look-ups decides which of several bad values is refused first.
    return Settings(
        source=source_settings(env),
        storage=storage_settings(env),
        copies=copy_settings(env),
        metadata_url=env.secret("METADATA_DATABASE_URL"),
        encryption_key=env.secret("BACKUP_ENCRYPTION_KEY"),
        old_encryption_keys=_old_keys(env),
        public_key=env.secret("BACKUP_PUBLIC_KEY"),
        private_key=env.secret("BACKUP_PRIVATE_KEY"),
        kms_key_id=env.text("KMS_KEY_ID"),
        kms_endpoint_url=env.text("KMS_ENDPOINT_URL"),
        cluster_name=env.name("CLUSTER_NAME", "main"),
        sources_file=env.text("SOURCES_FILE"),
        compression=_compression(env),
        logical=LogicalSettings(
            jobs=env.integer("LOGICAL_JOBS", 1, minimum=1),
            min_bytes=env.integer("LOGICAL_JOBS_MIN_SIZE_MB", 256, minimum=0) * 1024 * 1024,
        ),
        pg_bin_dirs=_bin_dirs(env),
        backup_role_passwords=env.flag("BACKUP_ROLE_PASSWORDS", False),
        restore=_restore(env),
        log_level=env.choice("LOG_LEVEL", ("debug", "info", "warning", "error"), "warning").upper(),
        log_format=LogFormat(env.choice("LOG_FORMAT", tuple(LogFormat), LogFormat.TEXT)),
        wal=_wal(env),
        schedules=_schedules(env),
        retention=_retention(env),
        monitor=_monitor(env),
        window=window_settings(env),
    )


def _compression(env: Env) -> CompressionSettings:
    level = env.integer("COMPRESSION_LEVEL", 3, minimum=1)
    if level > 19:
        raise ConfigError(f"COMPRESSION_LEVEL={level} is above the maximum of 19")
    threads = env.integer("COMPRESSION_THREADS", min(os.cpu_count() or 1, 4), minimum=0)
    return CompressionSettings(level=level, threads=threads)


def _restore(env: Env) -> RestoreSettings:
    return RestoreSettings(
        tmpdir=env.text("RESTORE_TMPDIR"),
        jobs=env.integer("RESTORE_JOBS", 1, minimum=1),
        verify_url=env.secret("VERIFY_DATABASE_URL"),
        pitr_os_user=env.text("PITR_OS_USER", "postgres") or "postgres",
        drill_margin=env.duration("PITR_DRILL_MARGIN", 60),
    )


def _wal(env: Env) -> WalSettings:
    return WalSettings(
        max_segment_age=env.integer("WAL_MAX_SEGMENT_AGE", 300, minimum=1),
        prefetch=env.integer("WAL_PREFETCH", 8, minimum=0),
        spool_dir=env.text("WAL_SPOOL_DIR"),
        slot=_slot(env),
        push_ahead=env.integer("WAL_PUSH_AHEAD", 32, minimum=0),
        push_threads=env.integer("WAL_PUSH_THREADS", 4, minimum=1),
        push_idle=env.integer("WAL_PUSH_IDLE", 60, minimum=1),
    )


def _slot(env: Env) -> str | None:
    slot = env.text("WAL_SLOT_NAME")
    if slot is not None and not re.fullmatch(r"[a-z0-9_]{1,63}", slot):
        raise ConfigError(
            f"WAL_SLOT_NAME={slot!r}: a replication slot name is lower-case letters, digits and _"
        )
    return slot


def _schedules(env: Env) -> ScheduleSettings:
    defaults = ScheduleSettings()
    timezone = env.text("TZ", "UTC") or "UTC"
    try:
        ZoneInfo(timezone)
    except (ValueError, LookupError):
        raise ConfigError(
            f"TZ={timezone!r} is not a time zone (for example Europe/Berlin)"
        ) from None
    return ScheduleSettings(
        backup=env.text("BACKUP_SCHEDULE", defaults.backup) or defaults.backup,
        base_backup=env.text("BASE_BACKUP_SCHEDULE", defaults.base_backup) or "",
        incremental=env.text("INCREMENTAL_SCHEDULE", defaults.incremental) or "",
        verify=env.text("VERIFY_SCHEDULE", defaults.verify) or defaults.verify,
        cleanup=env.text("CLEANUP_SCHEDULE", defaults.cleanup) or defaults.cleanup,
        compliance=env.text("COMPLIANCE_SCHEDULE", defaults.compliance) or "",
        lifecycle=env.text("LIFECYCLE_SCHEDULE", defaults.lifecycle) or defaults.lifecycle,
        timezone=timezone,
        misfire_grace=env.duration("SCHEDULE_MISFIRE_GRACE", defaults.misfire_grace),
        stop_grace=env.duration("STOP_GRACE_PERIOD", defaults.stop_grace),
        wal_archiving=env.choice("WAL_ARCHIVING", ("off", "push", "receive"), "off"),
        lifecycle_apply=env.flag("LIFECYCLE_APPLY", True),
        pitr_drill=env.text("PITR_DRILL_SCHEDULE", defaults.pitr_drill) or "",
        backup_workers=env.choice("BACKUP_WORKERS", ("inline", "queue"), "inline"),
    )


COLD_CLASSES = ("GLACIER_IR", "STANDARD_IA", "ONEZONE_IA", "INTELLIGENT_TIERING")


def _retention(env: Env) -> RetentionSettings:
    cold = (env.text("COLD_STORAGE_CLASS", "GLACIER_IR") or "GLACIER_IR").upper()
    if cold in ("GLACIER", "DEEP_ARCHIVE"):
        raise ConfigError(
            f"COLD_STORAGE_CLASS={cold}: objects in {cold} must be thawed before they can be "
            "read, so a restore at 3 a.m. would wait hours; use GLACIER_IR (instant retrieval)"
        )
    if cold not in COLD_CLASSES:
        raise ConfigError(f"COLD_STORAGE_CLASS={cold!r} is not one of: {', '.join(COLD_CLASSES)}")
    return RetentionSettings(
        daily=env.integer("RETENTION_DAILY", 7),
        weekly=env.integer("RETENTION_WEEKLY", 4),
        monthly=env.integer("RETENTION_MONTHLY", 12),
        min_keep=env.integer("RETENTION_MIN_KEEP", 3, minimum=1),
        standard_days=env.integer("STANDARD_TIER_DAYS", 30, minimum=1),
        compliance_days=env.integer("COMPLIANCE_TIER_DAYS", 365, minimum=1),
        wal_days=env.integer("WAL_RETENTION_DAYS", 30, minimum=1),
        pitr_window_days=env.integer("PITR_WINDOW_DAYS", 14, minimum=0),
        cold_storage_class=cold,
        cold_after_days=env.integer("COLD_AFTER_DAYS", 7, minimum=0),
        safety_days=env.integer("SAFETY_RETENTION_DAYS", 14, minimum=1),
    )


def _monitor(env: Env) -> MonitorSettings:
    port = env.integer("MONITOR_PORT", 8090, minimum=1)
    if port > 65535:
        raise ConfigError(f"MONITOR_PORT={port} is not a port (1 to 65535)")
    emails = tuple(e.strip() for e in (env.text("ALERT_EMAIL") or "").split(",") if e.strip())
    for email in emails:
        if not re.fullmatch(r"[^@\s,<>]+@[^@\s,<>]+", email):
            raise ConfigError(f"ALERT_EMAIL: {email!r} is not an email address")
    user = env.text("DASHBOARD_USER")
    password = env.secret("DASHBOARD_PASSWORD")
    if (user is None) != (password is None):
        raise ConfigError("DASHBOARD_USER and DASHBOARD_PASSWORD go together: set both or neither")
    smtp_from = env.text("SMTP_FROM") or (
        f"permafrost@{socket.gethostname()}" if emails else "permafrost@localhost"
    )
    return MonitorSettings(
        port=port,
        public_url=(env.text("MONITOR_PUBLIC_URL") or f"http://localhost:{port}").rstrip("/"),
        api_token=env.secret("MONITOR_API_TOKEN"),
        dashboard_user=user,
        dashboard_password=password,
        alert_interval=env.duration("ALERT_CHECK_INTERVAL", 60),
        max_backup_age=env.duration("MAX_BACKUP_AGE", 26 * 3600),
        wal_max_lag=env.duration("WAL_MAX_LAG", 900),
        wal_queue_alert_segments=env.integer("WAL_QUEUE_ALERT_SEGMENTS", 64, minimum=1),
        metrics_cache_seconds=env.duration("METRICS_CACHE_SECONDS", 0),
        scheduler_max_silence=env.duration("SCHEDULER_MAX_SILENCE", 300),
        worker_max_silence=env.duration("WORKER_MAX_SILENCE", 300),
        task_max_wait=env.duration("TASK_MAX_WAIT", 1800),
        alert_repeat_hours=env.integer("ALERT_REPEAT_HOURS", 24),
        alert_emails=emails,
        smtp_host=env.text("SMTP_HOST"),
        smtp_port=env.integer("SMTP_PORT", 587, minimum=1),
        smtp_user=env.text("SMTP_USER"),
        smtp_password=env.secret("SMTP_PASSWORD"),
        smtp_from=smtp_from,
        smtp_tls=env.choice("SMTP_TLS", ("starttls", "ssl", "none"), "starttls"),
        webhook_url=env.secret("ALERT_WEBHOOK_URL"),
        healthcheck_ping_url=env.secret("HEALTHCHECK_PING_URL"),
        state_dir=env.text("MONITOR_STATE_DIR") or "~/.permafrost/monitor-state",
        mode=env.choice("PERMAFROST_MODE", ("compose", "native"), "compose"),
        env_file=env.text("PERMAFROST_ENV_FILE"),
    )


def _old_keys(env: Env) -> tuple[Secret, ...]:
    raw = env.secret("BACKUP_ENCRYPTION_OLD_KEYS")
    if raw is None:
        return ()
    return tuple(Secret(part.strip()) for part in raw.reveal().split(",") if part.strip())


def wal_fetch_env(settings: Settings) -> dict[str, str]:
    """What `wal-fetch` needs, as NAME=value lines for an env file that restore_command reads.

    Resolved values, not the names they came from: a NAME_FILE the server's OS user cannot read
    becomes the value itself, in a file only that user can read.
    """
    # The storage read first is the primary, or the copy `pitr --from` named or fell back to:
    # all of its own settings, whatever its kind (S3, Azure, GCS, SFTP).
    values: dict[str, str | None] = {
        "STORAGE_URL": settings.storage.url,
        **storage_env(settings.storage),
        "BACKUP_ENCRYPTION_KEY": (
            settings.encryption_key.reveal() if settings.encryption_key else None
        ),
        "BACKUP_ENCRYPTION_OLD_KEYS": ",".join(k.reveal() for k in settings.old_encryption_keys),
        "BACKUP_PRIVATE_KEY": settings.private_key.reveal() if settings.private_key else None,
        "KMS_KEY_ID": settings.kms_key_id,
        "KMS_ENDPOINT_URL": settings.kms_endpoint_url,
        "CLUSTER_NAME": settings.cluster_name,
        "WAL_PREFETCH": str(settings.wal.prefetch),
        "LOG_LEVEL": settings.log_level.lower(),
    }
    values |= copies_env(settings.copies)  # wal-fetch falls back segment by segment
    return {name: value for name, value in values.items() if value}
