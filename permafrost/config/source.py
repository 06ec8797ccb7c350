"""Where the databases to back up live: `DATABASE_URL`, or the reference deployment's `DB_*`."""

from __future__ import annotations

from dataclasses import dataclass, replace
from urllib.parse import unquote, urlsplit

from permafrost.config.env import Env, Secret, checked_name
from permafrost.errors import ConfigError


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


def source_settings(env: Env) -> SourceSettings:
    """The source server: `DATABASE_URL` first, the `DB_*` names filling what it leaves out."""
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
        checked_name("DB_NAME", name)
    return names
