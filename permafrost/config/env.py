"""Typed access to the environment: each helper refuses a bad value with a message naming the
variable, so a typo fails at start-up rather than at 2 a.m. Every secret may instead come from
`NAME_FILE` (Docker secrets), and is held in `Secret`, whose repr never shows the value."""

from __future__ import annotations

import re
from collections.abc import Mapping
from pathlib import Path

from permafrost.errors import ConfigError
from permafrost.layout import valid_name


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

    def name(self, variable: str, default: str) -> str:
        """A usable name (a cluster's, a database's) from `variable`."""
        return checked_name(variable, self.text(variable, default) or default)


_UNITS = {"": 1, "s": 1, "m": 60, "h": 3600, "d": 86400}


def parse_duration(text: str) -> int | None:
    """90, 90s, 15m, 26h, 7d → seconds; None when it is not one."""
    match = re.fullmatch(r"\s*(\d+)\s*([smhd]?)\s*", text.lower())
    if match is None:
        return None
    return int(match.group(1)) * _UNITS[match.group(2)]


def refuse_conflict(
    what: str, first: tuple[str, object | None], second: tuple[str, object | None], *, secret: bool
) -> None:
    """Refuse two variables that both say `what` and disagree: neither may quietly win.

    `first` and `second` are (variable, value); a value of None is unset and agrees with all.
    """
    (first_name, first_value), (second_name, second_value) = first, second
    if first_value is None or second_value is None or first_value == second_value:
        return

    def shown(value: object) -> str:
        return "'********'" if secret else repr(value)

    raise ConfigError(
        f"conflicting settings: {first_name} says {what} {shown(first_value)} but {second_name} "
        f"says {shown(second_value)}; remove one of them or make them agree"
    )


def checked_name(variable: str, name: str) -> str:
    """`name`, unless it is not a usable name; then a refusal naming `variable`."""
    if not valid_name(name):
        raise ConfigError(
            f"{variable}: {name!r} is not a usable name "
            "(letters, digits, '_', '.', '-'; at most 63 characters)"
        )
    return name
