"""Second copies of the repository elsewhere: `COPY_STORAGE_URLS` and each copy's own settings.

`COPY_STORAGE_URLS` lists one or more destinations, separated by spaces or commas, each
`NAME=URL` or a bare URL (named `copy1`, `copy2`, … by position). Each copy is configured by
variables named `COPY_<N>_<VARIABLE>`, N its 1-based position in the list, VARIABLE any of the
primary's storage variables: `COPY_1_S3_ENDPOINT_URL`, `COPY_1_S3_ACCESS_KEY_ID`,
`COPY_2_AZURE_STORAGE_CONNECTION_STRING`, `COPY_3_SFTP_KNOWN_HOSTS`, … (the `_FILE` form of a
secret included). `COPY_<N>_ENV_FILE` names a file of the same variables without the prefix (the
.env format), for credentials kept apart; a prefixed variable wins over the file. Nothing of the
primary's credentials is inherited: a copy is another account, another provider.

Per copy, besides where it is:
- `COPY_<N>_TIERS`: which tiers are copied (standard, compliance, base, wal; default all);
- `COPY_<N>_RETENTION_DAYS`, `COPY_<N>_COMPLIANCE_RETENTION_DAYS`, `COPY_<N>_WAL_RETENTION_DAYS`:
  the copy's own retention (default: the primary's);
- `COPY_<N>_UPLOAD_RATE_LIMIT`: bytes per second (k/M/G suffixes) for writes to it (default
  `UPLOAD_RATE_LIMIT`, which also limits the primary; unset or 0: no limit).

`COPY_MAX_LAG` (default 2d): a copy whose newest verified copy is older than this alerts.
"""

from __future__ import annotations

import re
from collections.abc import Mapping
from dataclasses import dataclass

from permafrost.config.env import Env
from permafrost.config.envfile import load_env_file
from permafrost.config.storage import StorageSettings, storage_settings
from permafrost.errors import ConfigError
from permafrost.layout import valid_name

COPY_TIERS = ("standard", "compliance", "base", "wal")
DEFAULT_MAX_LAG = 2 * 86400


@dataclass(frozen=True)
class CopyDestination:
    """One copy destination: its name (for --from/--to, the catalog, the dashboard) and where."""

    name: str
    index: int  # 1-based position in COPY_STORAGE_URLS: its variables are COPY_{index}_*
    storage: StorageSettings
    tiers: tuple[str, ...] = COPY_TIERS
    retention_days: int | None = None  # None: the primary's
    compliance_retention_days: int | None = None
    wal_retention_days: int | None = None
    rate_limit: int = 0  # bytes per second; 0: none

    @property
    def prefix(self) -> str:
        return f"COPY_{self.index}_"

    def copies_tier(self, tier: str) -> bool:
        return tier in self.tiers or (tier == "keep" and bool(self.tiers))


@dataclass(frozen=True)
class CopySettings:
    destinations: tuple[CopyDestination, ...] = ()
    max_lag: int = DEFAULT_MAX_LAG  # seconds
    upload_rate_limit: int = 0  # UPLOAD_RATE_LIMIT: the primary's (and each copy's default)

    def named(self, name: str) -> CopyDestination:
        for destination in self.destinations:
            if destination.name == name:
                return destination
        known = ", ".join(d.name for d in self.destinations) or "none configured"
        raise ConfigError(f"no copy destination named {name!r} (COPY_STORAGE_URLS: {known})")


def copy_settings(env: Env) -> CopySettings:
    limit = rate(env, "UPLOAD_RATE_LIMIT")
    max_lag = env.duration("COPY_MAX_LAG", DEFAULT_MAX_LAG)
    listed = env.text("COPY_STORAGE_URLS")
    if listed is None:
        return CopySettings(max_lag=max_lag, upload_rate_limit=limit)
    destinations: list[CopyDestination] = []
    for index, entry in enumerate(re.split(r"[\s,]+", listed.strip()), start=1):
        name, sep, url = entry.partition("=")
        if not sep:
            name, url = f"copy{index}", entry
        if not valid_name(name):
            raise ConfigError(
                f"COPY_STORAGE_URLS: {name!r} is not a usable name for a copy "
                "(letters, digits, '_', '.', '-')"
            )
        if any(d.name == name for d in destinations):
            raise ConfigError(f"COPY_STORAGE_URLS names {name!r} twice")
        destinations.append(_destination(env, index, name, url, limit))
    return CopySettings(tuple(destinations), max_lag=max_lag, upload_rate_limit=limit)


def _destination(env: Env, index: int, name: str, url: str, limit: int) -> CopyDestination:
    prefix = f"COPY_{index}_"
    view = _CopyEnv(env, prefix, url)
    try:
        storage = storage_settings(view)
    except ConfigError as exc:
        raise ConfigError(f"copy {name!r} (COPY_{index}_*): {exc}") from None
    tiers = _tiers(env, prefix + "TIERS")
    own = env.text(prefix + "UPLOAD_RATE_LIMIT")
    return CopyDestination(
        name=name,
        index=index,
        storage=storage,
        tiers=tiers,
        retention_days=_days(env, prefix + "RETENTION_DAYS"),
        compliance_retention_days=_days(env, prefix + "COMPLIANCE_RETENTION_DAYS"),
        wal_retention_days=_days(env, prefix + "WAL_RETENTION_DAYS"),
        rate_limit=rate(env, prefix + "UPLOAD_RATE_LIMIT") if own is not None else limit,
    )


class _CopyEnv(Env):
    """The primary's variable names, read from `COPY_<N>_<NAME>`, then `COPY_<N>_ENV_FILE`;
    STORAGE_URL is the copy's URL. Each look-up is recorded in the parent under its prefixed
    name."""

    def __init__(self, parent: Env, prefix: str, url: str) -> None:
        path = parent.text(prefix + "ENV_FILE")
        from_file: Mapping[str, str] = load_env_file(path) if path else {}
        values = {**from_file}
        for key, value in parent.values.items():
            if key.startswith(prefix):
                values[key.removeprefix(prefix)] = value
        values["STORAGE_URL"] = url
        super().__init__(values)
        self._parent, self._prefix = parent, prefix

    def text(self, name: str, default: str | None = None) -> str | None:
        if name != "STORAGE_URL":
            self._parent.asked.add(self._prefix + name)
        return super().text(name, default)


def _tiers(env: Env, name: str) -> tuple[str, ...]:
    raw = env.text(name)
    if raw is None:
        return COPY_TIERS
    tiers = tuple(t for t in re.split(r"[\s,]+", raw.strip().lower()) if t)
    wrong = [t for t in tiers if t not in COPY_TIERS]
    if wrong or not tiers:
        raise ConfigError(f"{name}={raw!r}: each must be one of {', '.join(COPY_TIERS)}")
    return tiers


def _days(env: Env, name: str) -> int | None:
    if env.text(name) is None:
        return None
    return env.integer(name, 0, minimum=1)


_RATE = re.compile(r"^\s*(\d+(?:\.\d+)?)\s*([kmg]?)(?:i?b)?(?:/s)?\s*$", re.IGNORECASE)
_RATE_UNITS = {"": 1, "k": 1024, "m": 1024**2, "g": 1024**3}


def rate(env: Env, name: str) -> int:
    """Bytes per second from `name`: 1048576, 1M, 512k, 2.5M, 10MB/s (powers of 1024); 0: none."""
    raw = env.text(name)
    if raw is None:
        return 0
    match = _RATE.match(raw)
    if match is None:
        raise ConfigError(
            f"{name}={raw!r} is not a rate in bytes per second (a number with an optional "
            "k, M or G, like 20M)"
        )
    return int(float(match.group(1)) * _RATE_UNITS[match.group(2).lower()])
