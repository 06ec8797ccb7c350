"""Where the backups go: `STORAGE_URL` and how to speak to the bucket.

s3:// and file:// from the start; azure://CONTAINER[/PREFIX], gs://BUCKET[/PREFIX] and
sftp://USER@HOST[:PORT]/PATH are the other destinations, each with its own credentials
(`AZURE_STORAGE_*`, `GOOGLE_APPLICATION_CREDENTIALS`/`GCS_*`, `SFTP_*`).

The reference deployment's `DO_SPACES_*` names are read as they are; the generic `S3_*` names
stand beside them. Set both and they must agree: neither quietly wins.
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path
from urllib.parse import unquote, urlsplit

from permafrost.config.env import Env, Secret, refuse_conflict
from permafrost.errors import ConfigError

PROVIDERS = ("aws", "spaces", "minio", "generic")
DEFAULT_STORAGE_DIR = ".permafrost/bucket"


@dataclass(frozen=True)
class AzureSettings:
    """A connection string, or an account name and key (endpoint: Azurite, sovereign clouds)."""

    connection_string: Secret | None = None
    account: str | None = None
    key: Secret | None = None
    endpoint: str | None = None


@dataclass(frozen=True)
class GcsSettings:
    """A service account key file (None: Google's default credentials); endpoint: an emulator."""

    credentials_file: Path | None = None
    project: str | None = None
    endpoint: str | None = None


@dataclass(frozen=True)
class SftpSettings:
    """The host key is checked against known_hosts; a key file (or a password) logs in."""

    known_hosts: Path
    key_file: Path | None = None
    key_passphrase: Secret | None = None
    password: Secret | None = None


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
    azure: AzureSettings | None = None
    gcs: GcsSettings | None = None
    sftp: SftpSettings | None = None
    object_lock: str = "off"  # OBJECT_LOCK: off, governance, compliance (storage/lock.py)

    @property
    def scheme(self) -> str:
        return urlsplit(self.url).scheme

    @property
    def bucket(self) -> str:
        return urlsplit(self.url).netloc

    @property
    def prefix(self) -> str:
        parts = urlsplit(self.url)
        if parts.scheme in ("file", "sftp"):
            return ""  # the path is the bucket's own directory
        return parts.path.strip("/")

    @property
    def location(self) -> str:
        """Where the bucket is, for messages and the catalog (never with credentials)."""
        if self.scheme == "file":
            return f"file://{self.local_path}"
        if self.scheme == "s3":
            where = f"s3://{self.bucket}/{self.prefix}".rstrip("/")
            return f"{where} at {self.endpoint_url or 'AWS S3'}"
        if self.scheme == "azure" and self.azure and self.azure.endpoint:
            return f"{self.url} at {self.azure.endpoint}"
        if self.scheme == "gs" and self.gcs and self.gcs.endpoint:
            return f"{self.url} at {self.gcs.endpoint}"
        return self.url

    @property
    def local_path(self) -> Path:
        return Path(unquote(urlsplit(self.url).path))


def storage_settings(env: Env) -> StorageSettings:
    _refuse_conflicts(env)
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
        # Every destination's variables are read; only STORAGE_URL's are checked and kept.
        azure=_azure(env, used=urlsplit(url).scheme == "azure"),
        gcs=_gcs(env, used=urlsplit(url).scheme == "gs"),
        sftp=_sftp(env, used=urlsplit(url).scheme == "sftp"),
        object_lock=env.choice("OBJECT_LOCK", ("off", "governance", "compliance"), "off"),
    )


def _azure(env: Env, *, used: bool) -> AzureSettings | None:
    settings = AzureSettings(
        connection_string=env.secret("AZURE_STORAGE_CONNECTION_STRING"),
        account=env.text("AZURE_STORAGE_ACCOUNT"),
        key=env.secret("AZURE_STORAGE_KEY"),
        endpoint=env.text("AZURE_STORAGE_ENDPOINT"),
    )
    if not used:
        return None
    if settings.connection_string is None and (settings.account is None or settings.key is None):
        raise ConfigError(
            "STORAGE_URL=azure://… needs AZURE_STORAGE_CONNECTION_STRING, or "
            "AZURE_STORAGE_ACCOUNT and AZURE_STORAGE_KEY"
        )
    return settings


def _gcs(env: Env, *, used: bool) -> GcsSettings | None:
    path = env.text("GOOGLE_APPLICATION_CREDENTIALS")
    project, endpoint = env.text("GCS_PROJECT"), env.text("GCS_ENDPOINT_URL")
    if not used:
        return None
    if path is not None and not Path(path).is_file():
        raise ConfigError(f"GOOGLE_APPLICATION_CREDENTIALS={path}: no such file")
    if endpoint is not None and urlsplit(endpoint).scheme not in ("http", "https"):
        raise ConfigError(f"GCS_ENDPOINT_URL={endpoint!r} must be an http:// or https:// URL")
    return GcsSettings(
        credentials_file=Path(path) if path else None, project=project, endpoint=endpoint
    )


def _sftp(env: Env, *, used: bool) -> SftpSettings | None:
    known = Path(env.text("SFTP_KNOWN_HOSTS") or Path.home() / ".ssh" / "known_hosts")
    key_file = env.text("SFTP_KEY_PATH")
    passphrase, password = env.secret("SFTP_KEY_PASSPHRASE"), env.secret("SFTP_PASSWORD")
    if not used:
        return None
    if not known.is_file():
        raise ConfigError(
            f"SFTP_KNOWN_HOSTS={known}: no such file; the server's host key is checked against "
            "it (ssh-keyscan -p PORT HOST > known_hosts, then compare the fingerprint)"
        )
    if key_file is not None and not Path(key_file).is_file():
        raise ConfigError(f"SFTP_KEY_PATH={key_file}: no such file")
    return SftpSettings(
        known_hosts=known,
        key_file=Path(key_file) if key_file else None,
        key_passphrase=passphrase,
        password=password,
    )


def _refuse_conflicts(env: Env) -> None:
    url = env.text("STORAGE_URL")
    said = urlsplit(url).netloc if url and urlsplit(url).scheme == "s3" else url
    for name in ("DO_SPACES_BUCKET", "S3_BUCKET"):
        refuse_conflict("bucket", ("STORAGE_URL", said), (name, env.text(name)), secret=False)
    for generic, reference, secret in (
        ("S3_BUCKET", "DO_SPACES_BUCKET", False),
        ("S3_REGION", "DO_SPACES_REGION", False),
        ("S3_ACCESS_KEY_ID", "DO_SPACES_KEY", True),
        ("S3_SECRET_ACCESS_KEY", "DO_SPACES_SECRET", True),
    ):
        refuse_conflict(
            generic.removeprefix("S3_").lower().replace("_", " "),
            (generic, _value(env, generic, secret)),
            (reference, _value(env, reference, secret)),
            secret=secret,
        )
    endpoints = [
        (n, _normal_endpoint(env.text(n))) for n in ("S3_ENDPOINT_URL", "DO_SPACES_ENDPOINT")
    ]
    refuse_conflict("endpoint", endpoints[0], endpoints[1], secret=False)


def _value(env: Env, name: str, secret: bool) -> str | None:
    if not secret:
        return env.text(name)
    value = env.secret(name)
    return value.reveal() if value is not None else None


def _normal_endpoint(endpoint: str | None) -> str | None:
    if endpoint is None:
        return None
    return (endpoint if "://" in endpoint else "https://" + endpoint).rstrip("/")


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
    if parts.scheme in DESTINATION_FORMS:
        return _destination_url(url)
    raise ConfigError(
        "STORAGE_URL must start with s3://, file://, azure://, gs:// or sftp:// "
        f"(got {parts.scheme or url!r})"
    )


DESTINATION_FORMS = {
    "azure": "azure://CONTAINER[/PREFIX]",
    "gs": "gs://BUCKET[/PREFIX]",
    "sftp": "sftp://USER@HOST[:PORT]/PATH",
}


def _destination_url(url: str) -> str:
    parts = urlsplit(url)
    form = DESTINATION_FORMS[parts.scheme]
    wrong = not parts.hostname or parts.password is not None
    if parts.scheme == "sftp":
        wrong = wrong or not parts.username or not parts.path.strip("/")
        try:
            parts.port  # noqa: B018 (a port that is not a number raises here)
        except ValueError:
            wrong = True
    elif parts.username is not None or parts.port is not None:
        wrong = True
    if wrong:
        raise ConfigError(f"STORAGE_URL must be of the form {form} (no password in it)")
    return url.rstrip("/")


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
