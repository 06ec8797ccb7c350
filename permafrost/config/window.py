"""The nightly backup window and the concurrency limits, as `permafrost plan window` reads them.

`BACKUP_WINDOW` is `HH:MM-HH:MM` in the schedules' timezone; an end at or before the start runs
over midnight (`22:00-04:00`). `MAX_CONCURRENT` (backups at once on one worker) and
`MAX_CONCURRENT_PER_SOURCE` (at once against one source server) feed the forecast only, for now:
the scheduler still runs one backup at a time itself.
"""

from __future__ import annotations

import re
from dataclasses import dataclass

from permafrost.config.env import Env
from permafrost.errors import ConfigError

DEFAULT_WINDOW = "01:00-05:00"


@dataclass(frozen=True)
class WindowSettings:
    opens: int = 60  # minutes after midnight
    closes: int = 300
    max_concurrent: int = 1
    max_concurrent_per_source: int = 1

    @property
    def seconds(self) -> int:
        """How long the window is open; over midnight when it closes at or before it opens."""
        return ((self.closes - self.opens) % 1440 or 1440) * 60

    @property
    def text(self) -> str:
        return f"{_clock(self.opens)}-{_clock(self.closes)}"


def window_settings(env: Env) -> WindowSettings:
    opens, closes = parse_window(env.text("BACKUP_WINDOW", DEFAULT_WINDOW) or DEFAULT_WINDOW)
    return WindowSettings(
        opens=opens,
        closes=closes,
        max_concurrent=env.integer("MAX_CONCURRENT", 1, minimum=1),
        max_concurrent_per_source=env.integer("MAX_CONCURRENT_PER_SOURCE", 1, minimum=1),
    )


def parse_window(text: str) -> tuple[int, int]:
    """`01:00-05:00` → (60, 300), minutes after midnight; a refusal naming BACKUP_WINDOW."""
    match = re.fullmatch(r"\s*(\d{1,2}):(\d{2})\s*-\s*(\d{1,2}):(\d{2})\s*", text)
    if match is None:
        raise ConfigError(f"BACKUP_WINDOW={text!r} is not a window like 01:00-05:00")
    hours = (int(match.group(1)), int(match.group(3)))
    minutes = (int(match.group(2)), int(match.group(4)))
    if max(hours) > 23 or max(minutes) > 59:
        raise ConfigError(f"BACKUP_WINDOW={text!r}: a time is not a clock time (00:00 to 23:59)")
    opens, closes = hours[0] * 60 + minutes[0], hours[1] * 60 + minutes[1]
    if opens == closes:
        raise ConfigError(f"BACKUP_WINDOW={text!r} opens and closes at the same time")
    return opens, closes


def _clock(minutes: int) -> str:
    return f"{minutes // 60:02d}:{minutes % 60:02d}"
