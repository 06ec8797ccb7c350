"""Settings: the environment, parsed once into a frozen object.

Each value goes through a tiny typed helper that refuses a bad value with a message naming the
variable, so a typo fails at start-up rather than at 2 a.m. Every secret may instead come from
`NAME_FILE` (Docker secrets). Secrets are held in `Secret`, whose repr never shows the value.

The reference deployment's names (`DB_*`, `DO_SPACES_*`, `SMTP_*`, `ALERT_EMAIL`,
`BACKUP_ENCRYPTION_KEY`) are read as they are; generic names (`DATABASE_URL`, `STORAGE_URL`,
`S3_*`) stand beside them and win when both are set.
"""

from __future__ import annotations

import os
import re
import socket
from collections.abc import Mapping
from dataclasses import dataclass, field, replace
from pathlib import Path
from urllib.parse import unquote, urlsplit

from permafrost.errors import ConfigError
from permafrost.layout import valid_name

PROVIDERS = ("aws", "spaces", "minio", "generic")
TIERS = ("standard", "compliance")


class Secret:
    """A string that does not show itself in reprs, logs or tracebacks."""

    __slots__ = ("_value",)

    def __init__(self, value: str) -> None:
        self._value = value

    def reveal(self) -> str:
        return self._value

    def __repr__(self) -> str:
        return "Secret('********')"

    __str__ = __repr__

    def __eq__(self, other: object) -> bool:
        return isinstance(other, Secret) and other._value == self._value

    def __hash__(self) -> int:
        return hash(self._value)

    def __bool__(self) -> bool:
        return bool(self._value)


@dataclass(frozen=True)
class SourceSettings:
    """Where the databases to back up live. The password is passed to libpq separately."""

    host: str | None
    port: int | None
    user: str | None
    password: Secret | None
    databases: tuple[str, ...]
    options: tuple[tuple[str, str], ...] = ()

    def conninfo(self, database: str) -> dict[str, str]:
        """libpq keywords for one database, without the password."""
        params = dict(self.options)
        params["dbname"] = database
        if self.host:
            params["host"] = self.host
        if self.port:
            params["port"] = str(self.port)
        if self.user:
            params["user"] = self.user
        return params


@dataclass(frozen=True)
class StorageSettings:
    url: str
    endpoint_url: str | None = None
    region: str | None = None
    access_key_id: Secret | None = None
    secret_access_key: Secret | None = None
    provider: str = "generic"
    addressing_style: str = "auto"
    retry_mode: str = "standard"
    max_attempts: int = 5
    part_size: int = 8 * 1024 * 1024
    concurrency: int = 4

    @property
    def scheme(self) -> str:
        return urlsplit(self.url).scheme

    @property
    def bucket(self) -> str:
        return urlsplit(self.url).netloc

    @property
    def prefix(self) -> str:
        parts = urlsplit(self.url)
        if parts.scheme == "file":
            return ""
        return parts.path.strip("/")

    @property
    def local_path(self) -> Path:
        return Path(unquote(urlsplit(self.url).path))


@dataclass(frozen=True)
class ScheduleSettings:
    """When the scheduler runs each job: crontab strings (five fields, or six with seconds
    first), checked by `permafrost.config.schedule` when the scheduler starts."""

    backup: str = "0 2 * * *"
    base_backup: str = "30 1 * * 0"
    verify: str = "0 3 * * 0"
    cleanup: str = "0 4 * * *"
    compliance: str = "0 1 1 * *"
    lifecycle: str = "30 4 * * *"
    timezone: str = "UTC"
    misfire_grace: int = 6 * 3600
    stop_grace: int = 600
    wal_archiving: str = "off"  # off, push (archive_command) or receive (wal-receive)
    lifecycle_apply: bool = True


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
    scheduler_max_silence: int = 300  # the dead-man's switch
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


@dataclass(frozen=True)
class Settings:
    source: SourceSettings
    storage: StorageSettings
    metadata_url: Secret | None
    encryption_key: Secret | None
    old_encryption_keys: tuple[Secret, ...]
    cluster_name: str = "main"
    compression_level: int = 3
    compression_threads: int = 2
    pg_bin_dir: str | None = None
    restore_tmpdir: str | None = None
    restore_jobs: int = 2
    verify_url: Secret | None = None
    log_level: str = "WARNING"
    wal_max_segment_age: int = 300
    wal_prefetch: int = 8
    wal_spool_dir: str | None = None
    wal_slot: str | None = None
    pitr_os_user: str = "postgres"
    schedules: ScheduleSettings = field(default_factory=ScheduleSettings)
    retention: RetentionSettings = field(default_factory=RetentionSettings)
    monitor: MonitorSettings = field(default_factory=MonitorSettings)
    extra: Mapping[str, str] = field(default_factory=dict, repr=False)

    @classmethod
    def from_env(cls, env: Mapping[str, str] | None = None) -> Settings:
        return _parse(Env(os.environ if env is None else env))


class Env:
    """Typed access to an environment mapping; every refusal names the variable."""

    def __init__(self, values: Mapping[str, str]) -> None:
        self.values = values
        self.asked: set[str] = set()  # every name looked up: .env.example must list them all

    def text(self, name: str, default: str | None = None) -> str | None:
        self.asked.add(name)
        value = self.values.get(name, "").strip()
        return value if value else default

    def first(self, *names: str) -> str | None:
        for name in names:
            value = self.text(name)
            if value is not None:
                return value
        return None

    def integer(self, name: str, default: int, *, minimum: int = 0) -> int:
        raw = self.text(name)
        if raw is None:
            return default
        try:
            value = int(raw)
        except ValueError:
            raise ConfigError(f"{name}={raw!r} is not a whole number") from None
        if value < minimum:
            raise ConfigError(f"{name}={value} is below the minimum of {minimum}")
        return value

    def duration(self, name: str, default: int) -> int:
        """Seconds, from a number with an optional unit: 90, 90s, 15m, 26h, 7d."""
        raw = self.text(name)
        if raw is None:
            return default
        seconds = parse_duration(raw)
        if seconds is None:
            raise ConfigError(
                f"{name}={raw!r} is not a duration (a number with s, m, h or d, like 26h)"
            )
        return seconds

    def flag(self, name: str, default: bool) -> bool:
        raw = self.text(name)
        if raw is None:
            return default
        value = raw.lower()
        if value in ("1", "true", "yes", "on"):
            return True
        if value in ("0", "false", "no", "off"):
            return False
        raise ConfigError(f"{name}={raw!r} is not true or false")

    def choice(self, name: str, choices: tuple[str, ...], default: str) -> str:
        value = (self.text(name) or default).lower()
        if value not in choices:
            raise ConfigError(f"{name}={value!r} is not one of: {', '.join(choices)}")
        return value

    def secret(self, name: str) -> Secret | None:
        """`NAME`, or the contents of the file named by `NAME_FILE`."""
        path = self.text(f"{name}_FILE")
        if path is not None:
            try:
                return Secret(Path(path).read_text().strip())
            except OSError as exc:
                raise ConfigError(f"{name}_FILE={path}: cannot read ({exc.strerror})") from None
        value = self.text(name)
        return Secret(value) if value is not None else None

    def first_secret(self, *names: str) -> Secret | None:
        for name in names:
            value = self.secret(name)
            if value is not None:
                return value
        return None


def _parse(env: Env) -> Settings:
    return Settings(
        source=_source(env),
        storage=_storage(env),
        metadata_url=env.secret("METADATA_DATABASE_URL"),
        encryption_key=env.secret("BACKUP_ENCRYPTION_KEY"),
        old_encryption_keys=_old_keys(env),
        cluster_name=_name(env, "CLUSTER_NAME", "main"),
        compression_level=_level(env),
        compression_threads=env.integer(
            "COMPRESSION_THREADS", min(os.cpu_count() or 1, 4), minimum=0
        ),
        pg_bin_dir=env.text("PG_BIN_DIR"),
        restore_tmpdir=env.text("RESTORE_TMPDIR"),
        restore_jobs=env.integer("RESTORE_JOBS", 2, minimum=1),
        verify_url=env.secret("VERIFY_DATABASE_URL"),
        log_level=env.choice("LOG_LEVEL", ("debug", "info", "warning", "error"), "warning").upper(),
        wal_max_segment_age=env.integer("WAL_MAX_SEGMENT_AGE", 300, minimum=1),
        wal_prefetch=env.integer("WAL_PREFETCH", 8, minimum=0),
        wal_spool_dir=env.text("WAL_SPOOL_DIR"),
        wal_slot=_slot(env),
        pitr_os_user=env.text("PITR_OS_USER", "postgres") or "postgres",
        schedules=_schedules(env),
        retention=_retention(env),
        monitor=_monitor(env),
        extra=dict(env.values),
    )


_UNITS = {"": 1, "s": 1, "m": 60, "h": 3600, "d": 86400}


def parse_duration(text: str) -> int | None:
    """90, 90s, 15m, 26h, 7d → seconds; None when it is not one."""
    match = re.fullmatch(r"\s*(\d+)\s*([smhd]?)\s*", text.lower())
    if match is None:
        return None
    return int(match.group(1)) * _UNITS[match.group(2)]


def _schedules(env: Env) -> ScheduleSettings:
    defaults = ScheduleSettings()
    timezone = env.text("TZ", "UTC") or "UTC"
    try:
        from zoneinfo import ZoneInfo

        ZoneInfo(timezone)
    except (ValueError, LookupError):
        raise ConfigError(
            f"TZ={timezone!r} is not a time zone (for example Europe/Berlin)"
        ) from None
    return ScheduleSettings(
        backup=env.text("BACKUP_SCHEDULE", defaults.backup) or defaults.backup,
        base_backup=env.text("BASE_BACKUP_SCHEDULE", defaults.base_backup) or "",
        verify=env.text("VERIFY_SCHEDULE", defaults.verify) or defaults.verify,
        cleanup=env.text("CLEANUP_SCHEDULE", defaults.cleanup) or defaults.cleanup,
        compliance=env.text("COMPLIANCE_SCHEDULE", defaults.compliance) or "",
        lifecycle=env.text("LIFECYCLE_SCHEDULE", defaults.lifecycle) or defaults.lifecycle,
        timezone=timezone,
        misfire_grace=env.duration("SCHEDULE_MISFIRE_GRACE", defaults.misfire_grace),
        stop_grace=env.duration("STOP_GRACE_PERIOD", defaults.stop_grace),
        wal_archiving=env.choice("WAL_ARCHIVING", ("off", "push", "receive"), "off"),
        lifecycle_apply=env.flag("LIFECYCLE_APPLY", True),
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
        scheduler_max_silence=env.duration("SCHEDULER_MAX_SILENCE", 300),
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
    )


def _source(env: Env) -> SourceSettings:
    url = env.secret("DATABASE_URL")
    if url is not None:
        return _source_from_url(env, url.reveal())
    return SourceSettings(
        host=env.text("DB_HOST"),
        port=env.integer("DB_PORT", 5432, minimum=1) if env.text("DB_PORT") else None,
        user=env.text("DB_USER"),
        password=env.secret("DB_PASSWORD"),
        databases=_databases(env.text("DB_NAME")),
    )


def _source_from_url(env: Env, url: str) -> SourceSettings:
    source = source_from_url(url, "DATABASE_URL")
    return replace(
        source,
        user=source.user or env.text("DB_USER"),
        password=source.password or env.secret("DB_PASSWORD"),
        databases=_databases(env.text("DB_NAME")) or source.databases,
    )


def source_from_url(url: str, name: str) -> SourceSettings:
    """A server from a postgresql:// URL; `name` is what messages call it."""
    parts = urlsplit(url)
    if parts.scheme not in ("postgres", "postgresql"):
        raise ConfigError(f"{name} must start with postgresql:// (got another scheme)")
    try:
        port = parts.port
    except ValueError:
        raise ConfigError(f"{name} has a port that is not a number") from None
    options = tuple((k, v) for k, _, v in (p.partition("=") for p in parts.query.split("&")) if v)
    database = unquote(parts.path.lstrip("/"))
    return SourceSettings(
        host=unquote(parts.hostname) if parts.hostname else None,
        port=port,
        user=unquote(parts.username) if parts.username else None,
        password=Secret(unquote(parts.password)) if parts.password else None,
        databases=_databases(database or None),
        options=options,
    )


def _databases(raw: str | None) -> tuple[str, ...]:
    if raw is None:
        return ()
    names = tuple(name.strip() for name in raw.split(",") if name.strip())
    for name in names:
        _check_name("DB_NAME", name)
    return names


def _check_name(variable: str, name: str) -> str:
    if not valid_name(name):
        raise ConfigError(
            f"{variable}: {name!r} is not a usable name "
            "(letters, digits, '_', '.', '-'; at most 63 characters)"
        )
    return name


def _name(env: Env, variable: str, default: str) -> str:
    return _check_name(variable, env.text(variable, default) or default)


def _slot(env: Env) -> str | None:
    slot = env.text("WAL_SLOT_NAME")
    if slot is not None and not re.fullmatch(r"[a-z0-9_]{1,63}", slot):
        raise ConfigError(
            f"WAL_SLOT_NAME={slot!r}: a replication slot name is lower-case letters, digits and _"
        )
    return slot


def wal_fetch_env(settings: Settings) -> dict[str, str]:
    """What `wal-fetch` needs, as NAME=value lines for an env file that restore_command reads.

    Resolved values, not the names they came from: a NAME_FILE the server's OS user cannot read
    becomes the value itself, in a file only that user can read.
    """
    storage = settings.storage
    values = {
        "STORAGE_URL": storage.url,
        "S3_ENDPOINT_URL": storage.endpoint_url,
        "S3_REGION": storage.region,
        "S3_ACCESS_KEY_ID": storage.access_key_id.reveal() if storage.access_key_id else None,
        "S3_SECRET_ACCESS_KEY": (
            storage.secret_access_key.reveal() if storage.secret_access_key else None
        ),
        "S3_PROVIDER": storage.provider,
        "S3_ADDRESSING_STYLE": storage.addressing_style,
        "S3_RETRY_MODE": storage.retry_mode,
        "S3_MAX_ATTEMPTS": str(storage.max_attempts),
        "BACKUP_ENCRYPTION_KEY": (
            settings.encryption_key.reveal() if settings.encryption_key else None
        ),
        "BACKUP_ENCRYPTION_OLD_KEYS": ",".join(k.reveal() for k in settings.old_encryption_keys),
        "CLUSTER_NAME": settings.cluster_name,
        "WAL_PREFETCH": str(settings.wal_prefetch),
        "LOG_LEVEL": settings.log_level.lower(),
    }
    return {name: value for name, value in values.items() if value}


def _level(env: Env) -> int:
    level = env.integer("COMPRESSION_LEVEL", 3, minimum=1)
    if level > 19:
        raise ConfigError(f"COMPRESSION_LEVEL={level} is above the maximum of 19")
    return level


def _old_keys(env: Env) -> tuple[Secret, ...]:
    raw = env.secret("BACKUP_ENCRYPTION_OLD_KEYS")
    if raw is None:
        return ()
    return tuple(Secret(part.strip()) for part in raw.reveal().split(",") if part.strip())


DEFAULT_STORAGE_DIR = ".permafrost/bucket"


def _storage(env: Env) -> StorageSettings:
    url = _storage_url(env)
    provider = env.choice("S3_PROVIDER", PROVIDERS, _default_provider(env))
    return StorageSettings(
        url=url,
        endpoint_url=_endpoint(env),
        region=env.first("S3_REGION", "DO_SPACES_REGION") or _default_region(provider),
        access_key_id=env.first_secret("S3_ACCESS_KEY_ID", "DO_SPACES_KEY"),
        secret_access_key=env.first_secret("S3_SECRET_ACCESS_KEY", "DO_SPACES_SECRET"),
        provider=provider,
        addressing_style=env.choice(
            "S3_ADDRESSING_STYLE", ("auto", "path", "virtual"), _default_addressing(provider)
        ),
        retry_mode=env.choice("S3_RETRY_MODE", ("standard", "adaptive"), "standard"),
        max_attempts=env.integer("S3_MAX_ATTEMPTS", 5, minimum=1),
        part_size=_part_size(env),
        concurrency=env.integer("UPLOAD_CONCURRENCY", 4, minimum=1),
    )


def _storage_url(env: Env) -> str:
    url = env.text("STORAGE_URL")
    if url is None:
        bucket = env.text("DO_SPACES_BUCKET") or env.text("S3_BUCKET")
        if bucket is not None:
            prefix = (env.text("STORAGE_PREFIX") or "").strip("/")
            return f"s3://{bucket}/{prefix}" if prefix else f"s3://{bucket}"
        return "file://" + str(Path(DEFAULT_STORAGE_DIR).resolve())
    parts = urlsplit(url)
    if parts.scheme == "s3":
        if not parts.netloc:
            raise ConfigError("STORAGE_URL must name a bucket: s3://BUCKET[/PREFIX]")
        return url.rstrip("/")
    if parts.scheme == "file":
        path = unquote(parts.netloc + parts.path)
        if not path:
            raise ConfigError("STORAGE_URL must name a directory: file:///PATH")
        return "file://" + str(Path(path).resolve())
    raise ConfigError(f"STORAGE_URL must start with s3:// or file:// (got {parts.scheme or url!r})")


def _endpoint(env: Env) -> str | None:
    endpoint = env.first("S3_ENDPOINT_URL", "DO_SPACES_ENDPOINT")
    if endpoint is None and env.text("DO_SPACES_REGION") and env.text("DO_SPACES_BUCKET"):
        endpoint = f"{env.text('DO_SPACES_REGION')}.digitaloceanspaces.com"
    if endpoint is None:
        return None
    if "://" not in endpoint:
        endpoint = "https://" + endpoint
    if urlsplit(endpoint).scheme not in ("http", "https"):
        raise ConfigError(f"S3_ENDPOINT_URL={endpoint!r} must be an http:// or https:// URL")
    return endpoint.rstrip("/")


def _default_provider(env: Env) -> str:
    endpoint = env.first("S3_ENDPOINT_URL", "DO_SPACES_ENDPOINT") or ""
    if env.text("DO_SPACES_BUCKET") or "digitaloceanspaces.com" in endpoint:
        return "spaces"
    if not endpoint or "amazonaws.com" in endpoint:
        return "aws"
    return "generic"


def _default_region(provider: str) -> str:
    return "us-east-1" if provider != "spaces" else "nyc3"


def _default_addressing(provider: str) -> str:
    return "virtual" if provider in ("aws", "spaces") else "path"


def _part_size(env: Env) -> int:
    mib = env.integer("UPLOAD_PART_SIZE_MB", 8, minimum=5)
    if mib > 1024:
        raise ConfigError(f"UPLOAD_PART_SIZE_MB={mib} is above the maximum of 1024")
    return mib * 1024 * 1024


def load_env_file(path: str) -> dict[str, str]:
    """Read `NAME=value` lines (the .env format Docker Compose reads) into a dict."""
    try:
        text = Path(path).read_text()
    except OSError as exc:
        raise ConfigError(f"--env-file {path}: cannot read ({exc.strerror})") from None
    values: dict[str, str] = {}
    for number, line in enumerate(text.splitlines(), start=1):
        line = line.strip()
        if not line or line.startswith("#"):
            continue
        if line.startswith("export "):
            line = line[len("export ") :]
        name, sep, value = line.partition("=")
        if not sep or not name.strip().isidentifier():
            raise ConfigError(f"--env-file {path}, line {number}: expected NAME=value")
        values[name.strip()] = _unquote_value(value.strip())
    return values


def _unquote_value(value: str) -> str:
    if len(value) >= 2 and value[0] == value[-1] and value[0] in "'\"":
        return value[1:-1]
    return value
