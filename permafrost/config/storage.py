"""Where the backups go: `STORAGE_URL` (s3:// or file://) and how to speak to the bucket.

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
