"""Where the databases to back up live: `DATABASE_URL`, or the reference deployment's `DB_*`;
and the SQLite files to back up: `DATABASE_URL=sqlite:///path` and `SQLITE_DATABASES`."""

from __future__ import annotations

from dataclasses import dataclass, replace
from pathlib import PurePosixPath
from urllib.parse import parse_qs, unquote, urlsplit

from permafrost.config.env import Env, Secret, checked_name, refuse_conflict
from permafrost.errors import ConfigError


@dataclass(frozen=True)
class SqliteSource:
    """A SQLite file to back up: its name in the bucket and the catalog, and its absolute path."""

    name: str
    path: str


@dataclass(frozen=True)
class SourceSettings:
    """Where the databases to back up live. The password is passed to libpq separately."""

    host: str | None
    port: int | None
    user: str | None
    password: Secret | None
    databases: tuple[str, ...]
    options: tuple[tuple[str, str], ...] = ()
    sqlite: tuple[SqliteSource, ...] = ()
    # False when DATABASE_URL names a SQLite file and no DB_* name a PostgreSQL server: then no
    # base backup is scheduled and no PostgreSQL server is probed.
    postgres: bool = True
    # A fleet's catalog names (SOURCE.DATABASE, config/fleet.py) and the server's database each
    # connects to; a name not here is the database itself.
    aliases: tuple[tuple[str, str], ...] = ()

    @property
    def backed_up(self) -> tuple[str, ...]:
        """Every name a scheduled backup is taken of: the PostgreSQL databases, then the SQLite
        files."""
        return self.databases + tuple(s.name for s in self.sqlite)

    def sqlite_source(self, name: str) -> SqliteSource | None:
        return next((s for s in self.sqlite if s.name == name), None)

    def conninfo(self, database: str) -> dict[str, str]:
        """libpq keywords for one database, without the password."""
        params = dict(self.options)
        params["dbname"] = dict(self.aliases).get(database, database)
        if self.host:
            params["host"] = self.host
        if self.port:
            params["port"] = str(self.port)
        if self.user:
            params["user"] = self.user
        return params


def source_settings(env: Env) -> SourceSettings:
    """The source server: `DATABASE_URL`, or the `DB_*` names; with both, the `DB_*` names fill
    what the URL leaves out and must agree with what it says."""
    url = env.secret("DATABASE_URL")
    files = _sqlite_list(env)
    if url is not None and url.reveal().startswith("sqlite:"):
        files = (sqlite_from_url(url.reveal(), "DATABASE_URL"), *files)
        postgres = any(env.text(n) for n in ("DB_HOST", "DB_NAME", "DB_PORT", "DB_USER"))
        return _with_files(_from_db_names(env), files, postgres)
    source = _source_from_url(env, url.reveal()) if url is not None else _from_db_names(env)
    return _with_files(source, files, True)


def _from_db_names(env: Env) -> SourceSettings:
    return SourceSettings(
        host=env.text("DB_HOST"),
        port=_db_port(env),
        user=env.text("DB_USER"),
        password=env.secret("DB_PASSWORD"),
        databases=_databases(env.text("DB_NAME")),
    )


def _with_files(
    source: SourceSettings, files: tuple[SqliteSource, ...], postgres: bool
) -> SourceSettings:
    """The SQLite files beside the PostgreSQL databases: every name once, across both."""
    seen = set(source.databases) if postgres else set()
    for file in files:
        if file.name in seen:
            raise ConfigError(
                f"SQLITE_DATABASES: the name {file.name!r} is used twice (by a database or "
                "another file): give one of them another with ?name=NAME"
            )
        seen.add(file.name)
    databases = source.databases if postgres else ()
    return replace(source, databases=databases, sqlite=files, postgres=postgres)


def _sqlite_list(env: Env) -> tuple[SqliteSource, ...]:
    raw = env.text("SQLITE_DATABASES") or ""
    urls = [part.strip() for part in raw.split(",") if part.strip()]
    return tuple(sqlite_from_url(url, "SQLITE_DATABASES") for url in urls)


def sqlite_from_url(url: str, name: str) -> SqliteSource:
    """A SQLite file from sqlite:///absolute/path/app.db[?name=NAME]; its name defaults to the
    file's own (app.db)."""
    parts = urlsplit(url)
    path = unquote(parts.path)
    if parts.scheme != "sqlite" or parts.netloc or not path.startswith("/"):
        raise ConfigError(
            f"{name}: a SQLite file is named sqlite:///absolute/path/app.db "
            f"(three slashes, then the absolute path); got {url!r}"
        )
    wanted = parse_qs(parts.query).get("name", [PurePosixPath(path).name])[0]
    return SqliteSource(checked_name(name, wanted), str(PurePosixPath(path)))


def _source_from_url(env: Env, url: str) -> SourceSettings:
    source = source_from_url(url, "DATABASE_URL")
    _refuse_conflicts(env, source)
    return replace(
        source,
        host=source.host or env.text("DB_HOST"),
        port=source.port or _db_port(env),
        user=source.user or env.text("DB_USER"),
        password=source.password or env.secret("DB_PASSWORD"),
        databases=source.databases or _databases(env.text("DB_NAME")),
    )


def _refuse_conflicts(env: Env, url: SourceSettings) -> None:
    """DATABASE_URL and a `DB_*` name that says otherwise: refused, whichever would have won."""
    checks = (
        ("database", ",".join(url.databases) or None, "DB_NAME", _names(env)),
        ("host", url.host, "DB_HOST", env.text("DB_HOST")),
        ("port", url.port, "DB_PORT", _db_port(env)),
        ("user", url.user, "DB_USER", env.text("DB_USER")),
    )
    for what, ours, name, theirs in checks:
        refuse_conflict(what, ("DATABASE_URL", ours), (name, theirs), secret=False)
    refuse_conflict(
        "password",
        ("DATABASE_URL", url.password.reveal() if url.password else None),
        ("DB_PASSWORD", _revealed(env.secret("DB_PASSWORD"))),
        secret=True,
    )


def _names(env: Env) -> str | None:
    return ",".join(_databases(env.text("DB_NAME"))) or None


def _db_port(env: Env) -> int | None:
    return env.integer("DB_PORT", 5432, minimum=1) if env.text("DB_PORT") else None


def _revealed(secret: Secret | None) -> str | None:
    return secret.reveal() if secret is not None else None


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
