"""The log stream: one line per record, as text, logfmt or JSON (LOG_FORMAT).

Every record carries `ts` (UTC, milliseconds), `level`, `service` (the process's role),
`logger` and `msg`, then whatever the call site passed in `extra={...}` (event, database,
backup_id, duration_s, ...), then `exc` for a traceback. A newline never reaches the stream
inside a record, so `docker compose logs` and a log shipper both read one event per line.

A service (scheduler, monitor, restore-worker, wal-receive) writes its own event lines (the
`EVENT_LOGGERS`, always at INFO) to stdout and the library's records (`permafrost.*`, which
follow LOG_LEVEL) to stderr, as it did before; a command logs only to stderr, which keeps its
stdout for its own output (tables, JSON).
"""

from __future__ import annotations

import json
import logging
import sys
import traceback
from datetime import UTC, datetime
from enum import StrEnum
from typing import Any, Protocol


class LogFormat(StrEnum):
    TEXT = "text"
    LOGFMT = "logfmt"
    JSON = "json"


SERVICES = {
    "scheduler": "scheduler",
    "monitor": "monitor",
    "restore-worker": "restore-worker",
    "worker": "worker",
    "wal-receive": "wal-receive",
}
CLI = "cli"
EVENT_LOGGERS = (
    "scheduler",
    "monitor",
    "restore",
    "wal",
    "worker",
)  # what services say, always shown
QUIET_LIBRARIES = ("botocore", "boto3", "urllib3", "s3transfer")
_RESERVED = frozenset(
    [*vars(logging.LogRecord("", 0, "", 0, "", None, None)), "message", "asctime", "taskName"]
)
_BASE = ("ts", "level", "service", "logger", "msg")


class Say(Protocol):
    """A service's event line: the text, and structured fields for the log stream."""

    def __call__(self, text: str, /, *, level: int = logging.INFO, **fields: Any) -> None: ...


def sayer(logger: str) -> Say:
    """A `say` that logs `text` on `logger`, with `fields` as the record's extras."""
    log = logging.getLogger(logger)

    def say(text: str, /, *, level: int = logging.INFO, **fields: Any) -> None:
        # A field named like a LogRecord attribute (`message`, `args`) would make logging raise.
        extra = {f"{k}_" if k in _RESERVED else k: v for k, v in fields.items()}
        log.log(level, "%s", text, extra=extra)

    return say


def service_of(command: str | None) -> str:
    return SERVICES.get(command or "", CLI)


# --- the fields of a record ---------------------------------------------------------------


def fields(record: logging.LogRecord, service: str) -> dict[str, Any]:
    """A record as ordered fields: the base five, the call site's extras, then `exc`."""
    out: dict[str, Any] = {
        "ts": _stamp(record.created, milliseconds=True),
        "level": record.levelname.lower(),
        "service": service,
        "logger": record.name,
        "msg": record.getMessage(),
    }
    for key, value in vars(record).items():
        if key not in _RESERVED and key not in out and not key.startswith("_"):
            out[key] = value
    if record.exc_info:
        out["exc"] = "".join(traceback.format_exception(*record.exc_info)).rstrip()
    elif record.exc_text:
        out["exc"] = record.exc_text
    if record.stack_info:
        out["stack"] = record.stack_info
    return out


def _stamp(created: float, *, milliseconds: bool) -> str:
    moment = datetime.fromtimestamp(created, UTC)
    if milliseconds:
        return moment.strftime("%Y-%m-%dT%H:%M:%S.") + f"{moment.microsecond // 1000:03d}Z"
    return moment.strftime("%Y-%m-%dT%H:%M:%SZ")


# --- the three formats --------------------------------------------------------------------


class JsonFormatter(logging.Formatter):
    def __init__(self, service: str) -> None:
        super().__init__()
        self.service = service

    def format(self, record: logging.LogRecord) -> str:
        return json.dumps(fields(record, self.service), ensure_ascii=False, default=str)


class LogfmtFormatter(logging.Formatter):
    def __init__(self, service: str) -> None:
        super().__init__()
        self.service = service

    def format(self, record: logging.LogRecord) -> str:
        return logfmt(fields(record, self.service))


def logfmt(values: dict[str, Any]) -> str:
    return " ".join(f"{_key(key)}={logfmt_value(value)}" for key, value in values.items())


def logfmt_value(value: Any) -> str:
    """A value as logfmt writes it: quoted when it has to be, with `\\` and `"` escaped."""
    if value is None:
        return ""
    if isinstance(value, bool):
        return "true" if value else "false"
    if isinstance(value, int | float):
        return str(value)
    text = value if isinstance(value, str) else str(value)
    if text and not any(c in ' ="\\' or not c.isprintable() for c in text):
        return text
    return '"' + "".join(_escaped(c) for c in text) + '"'


_ESCAPES = {"\\": "\\\\", '"': '\\"', "\n": "\\n", "\r": "\\r", "\t": "\\t"}


def _escaped(char: str) -> str:
    if char in _ESCAPES:
        return _ESCAPES[char]
    return char if char.isprintable() or char == " " else f"\\u{ord(char):04x}"


def _key(key: str) -> str:
    return "".join(c if c.isalnum() or c in "_.-" else "_" for c in key) or "_"


class TextFormatter(logging.Formatter):
    """Today's human lines: `permafrost: warning: ...` from a command; a service's lines
    stamped and named (`2026-12-03T02:00:04Z scheduler: backup of shop started (...)`). A
    traceback stays one line here too, its newlines written as `\\n`."""

    def __init__(self, service: str) -> None:
        super().__init__()
        self.service = service

    def format(self, record: logging.LogRecord) -> str:
        level = record.levelname.lower()
        text = record.getMessage()
        if record.exc_info:
            text += "\n" + "".join(traceback.format_exception(*record.exc_info)).rstrip()
        text = text.replace("\\", "\\\\").replace("\r", "\\r").replace("\n", "\\n")
        if self.service == CLI:
            return f"permafrost: {level}: {text}"
        stamp = _stamp(record.created, milliseconds=False)
        shown = "" if record.levelno == logging.INFO else f"{level}: "
        return f"{stamp} {self.service}: {shown}{text}"


FORMATTERS: dict[LogFormat, type[logging.Formatter]] = {
    LogFormat.TEXT: TextFormatter,
    LogFormat.LOGFMT: LogfmtFormatter,
    LogFormat.JSON: JsonFormatter,
}


def formatter(log_format: LogFormat | str, service: str) -> logging.Formatter:
    return FORMATTERS[LogFormat(log_format)](service)


# --- the one configuration of a process ---------------------------------------------------


class _State:
    format: LogFormat | None = None
    service: str = CLI


def configure(service: str, log_format: LogFormat | str, level: str | int) -> None:
    """The root logger's handlers for this process, in `log_format`: a service's own event
    lines on stdout and everything else (the library's warnings) on stderr, the streams each
    wrote before (in a container both are `docker compose logs`); a command's all on stderr."""
    shown = formatter(log_format, service)
    root = logging.getLogger()
    for old in list(root.handlers):
        root.removeHandler(old)
    streams = [(sys.stdout, True), (sys.stderr, False)] if service != CLI else [(sys.stderr, None)]
    for stream, events in streams:
        handler = logging.StreamHandler(stream)
        handler.setFormatter(shown)
        if events is not None:
            handler.addFilter(_Events(events))
        root.addHandler(handler)
    root.setLevel(level)
    for name in EVENT_LOGGERS:
        logging.getLogger(name).setLevel(logging.INFO)
    for noisy in QUIET_LIBRARIES:
        logging.getLogger(noisy).setLevel(logging.WARNING)
    _State.format, _State.service = LogFormat(log_format), service


class _Events(logging.Filter):
    """Passes a service's own event records (`events`), or every other record."""

    def __init__(self, events: bool) -> None:
        super().__init__()
        self.events = events

    def filter(self, record: logging.LogRecord) -> bool:
        return (record.name.split(".", 1)[0] in EVENT_LOGGERS) == self.events


def configured_format() -> LogFormat | None:
    """The format `configure` set in this process, if it ran."""
    return _State.format


def configured_service() -> str:
    return _State.service


def structured() -> bool:
    """Whether this process logs logfmt or JSON (so a plain line would break the stream)."""
    return _State.format not in (None, LogFormat.TEXT)
