"""The log stream (issue 16): one line per event, as text, logfmt or JSON (LOG_FORMAT)."""

from __future__ import annotations

import json
import logging
import re
import signal
import subprocess
import sys
import time
import urllib.request
from collections.abc import Callable
from pathlib import Path
from typing import Any

import pytest

from permafrost import logs
from tests.conftest import PERMAFROST, run
from tests.services import serve_http

GUNICORN = str(Path(sys.executable).parent / "gunicorn")
QUIET = {
    "COMPLIANCE_SCHEDULE": "off",
    "VERIFY_SCHEDULE": "off",
    "CLEANUP_SCHEDULE": "off",
    "LIFECYCLE_SCHEDULE": "off",
    "LIFECYCLE_APPLY": "false",
}


# --- a small logfmt reader, as a log shipper would parse the lines ---------------------------

_PAIR = re.compile(r'([^\s=]+)=("(?:[^"\\]|\\.)*"|[^\s"]*)(?:\s+|$)')
_UNESCAPE = {"n": "\n", "r": "\r", "t": "\t", '"': '"', "\\": "\\"}


def parse_logfmt(line: str) -> dict[str, str]:
    out: dict[str, str] = {}
    at = 0
    while at < len(line):
        match = _PAIR.match(line, at)
        if match is None:
            raise ValueError(f"not logfmt at {at}: {line!r}")
        key, value = match.groups()
        out[key] = _unquote(value) if value.startswith('"') else value
        at = match.end()
    return out


def _unquote(value: str) -> str:
    def one(m: re.Match[str]) -> str:
        code = m.group(1)
        return chr(int(code[1:], 16)) if code.startswith("u") else _UNESCAPE[code]

    return re.sub(r"\\(u[0-9a-f]{4}|.)", one, value[1:-1])


def record(msg: str, *args: Any, exc: bool = False, **extra: Any) -> logging.LogRecord:
    info = None
    if exc:
        try:
            raise ValueError("broken\nacross lines")
        except ValueError:
            info = sys.exc_info()
    rec = logging.LogRecord("permafrost.test", logging.WARNING, __file__, 1, msg, args, info)
    rec.__dict__.update(extra)
    return rec


# --- the formatter ----------------------------------------------------------------------------


def test_it_quotes_logfmt_values_only_where_it_must() -> None:
    line = logs.LogfmtFormatter("scheduler").format(
        record(
            'backup of %s said "hi" a=b c:\\d',
            "shop",
            event="backup_succeeded",
            database="shop",
            bytes=1234,
            duration_s=1.5,
            empty="",
            none=None,
            ok=True,
        )
    )
    assert "\n" not in line
    stamp = r"ts=\d{4}-\d\d-\d\dT\d\d:\d\d:\d\d\.\d{3}Z"
    assert re.match(stamp + " level=warning service=scheduler logger=permafrost.test ", line)
    assert 'msg="backup of shop said \\"hi\\" a=b c:\\\\d"' in line
    assert "event=backup_succeeded database=shop bytes=1234 duration_s=1.5" in line
    assert 'empty="" none= ok=true' in line
    parsed = parse_logfmt(line)
    assert parsed["msg"] == 'backup of shop said "hi" a=b c:\\d'
    assert parsed["logger"] == "permafrost.test" and parsed["database"] == "shop"


def test_a_traceback_stays_one_line_in_every_format() -> None:
    for name in logs.LogFormat:
        line = logs.formatter(name, "restore-worker").format(record("task failed", exc=True))
        assert "\n" not in line and "ValueError: broken" in line, (name, line)
    parsed = json.loads(logs.JsonFormatter("monitor").format(record("x", exc=True)))
    assert parsed["exc"].startswith("Traceback (most recent call last):")
    assert parsed["exc"].endswith("ValueError: broken\nacross lines")
    assert parse_logfmt(logs.LogfmtFormatter("monitor").format(record("x", exc=True)))[
        "exc"
    ].endswith("ValueError: broken\nacross lines")


def test_json_is_one_object_per_line_with_stable_keys_and_unicode() -> None:
    line = logs.JsonFormatter("wal-receive").format(
        record("archivé %s ✓\nnext", "000000010000000000000001", segment="0001", tier=object())
    )
    assert "\n" not in line and "archivé" in line  # unicode as itself, not \u escapes
    parsed = json.loads(line)
    assert list(parsed)[:5] == ["ts", "level", "service", "logger", "msg"]
    assert parsed["service"] == "wal-receive" and parsed["level"] == "warning"
    assert parsed["msg"] == "archivé 000000010000000000000001 ✓\nnext"
    assert parsed["segment"] == "0001" and parsed["tier"].startswith("<object")
    assert parse_logfmt(logs.LogfmtFormatter("cli").format(record("é ✓ \x00")))["msg"] == "é ✓ \x00"


def test_a_field_named_like_a_record_attribute_is_kept_not_raised(
    capsys: pytest.CaptureFixture[str],
) -> None:
    root = logging.getLogger()
    handlers, level = list(root.handlers), root.level
    logs.configure("scheduler", "json", "WARNING")
    try:
        logs.sayer("scheduler")("retention finished", event="job_succeeded", message="x", keep=3)
    finally:
        root.handlers[:] = handlers
        root.setLevel(level)
    line = json.loads(capsys.readouterr().out)
    assert line["msg"] == "retention finished" and line["message_"] == "x" and line["keep"] == 3


def test_text_keeps_todays_lines() -> None:
    cli = logs.TextFormatter("cli").format(record("cannot reach %s", "x"))
    assert cli == "permafrost: warning: cannot reach x"
    info = record("backup of shop started")
    info.levelno, info.levelname = logging.INFO, "INFO"
    line = logs.TextFormatter("scheduler").format(info)
    assert re.fullmatch(r"\d{4}-\d\d-\d\dT\d\d:\d\d:\d\dZ scheduler: backup of shop started", line)
    assert "\n" not in logs.TextFormatter("scheduler").format(record("boom", exc=True))


def test_a_bad_log_format_is_refused_in_one_line(tmp_path: Path) -> None:
    env = {"PATH": "/usr/bin:/bin", "HOME": str(tmp_path), "LOG_FORMAT": "yaml"}
    result = run(env, "scheduler", "--check", check=False)
    assert result.returncode == 2, result.stderr
    assert result.stderr == (
        "permafrost: error: LOG_FORMAT='yaml' is not one of: text, logfmt, json\n"
    )


# --- real services ------------------------------------------------------------------------------

PARSERS: dict[str, Callable[[str], dict[str, Any]]] = {"json": json.loads, "logfmt": parse_logfmt}


@pytest.mark.parametrize("log_format", sorted(PARSERS))
def test_the_scheduler_logs_every_line_in_the_format(
    env: dict[str, str], source_db: str, tmp_path: Path, log_format: str
) -> None:
    log = tmp_path / "scheduler.log"
    extra = {"DB_NAME": source_db, "BACKUP_SCHEDULE": "*/2 * * * * *", "LOG_FORMAT": log_format}
    with log.open("wb") as out:
        proc = subprocess.Popen(
            [PERMAFROST, "scheduler"], env={**env, **QUIET, **extra}, stdout=out, stderr=out
        )
        try:
            deadline = time.monotonic() + 90
            while "backup_succeeded" not in log.read_text() and time.monotonic() < deadline:
                assert proc.poll() is None, log.read_text()
                time.sleep(0.25)
        finally:
            proc.send_signal(signal.SIGTERM)
            code = proc.wait(timeout=90)
    text = log.read_text()
    assert code == 0, text
    parse = PARSERS[log_format]
    lines = [parse(line) for line in text.splitlines()]  # every line, or this raises
    assert all(set(line) >= {"ts", "level", "service", "logger", "msg"} for line in lines)
    assert {line["service"] for line in lines} == {"scheduler"}
    done = next(line for line in lines if line.get("event") == "backup_succeeded")
    assert done["database"] == source_db and done["level"] == "info"
    assert re.fullmatch(r"\d{8}T\d{6}Z-[0-9a-f]{6}", done["backup_id"])
    assert float(done["duration_s"]) > 0 and int(done["bytes"]) > 0
    started = [line for line in lines if line.get("event") == "backup_started"]
    assert done["backup_id"] in {line["backup_id"] for line in started}
    listed = json.loads(run(env, "list", "--json").stdout)
    assert done["backup_id"] in {backup["id"] for backup in listed}


def test_gunicorns_error_and_access_logs_follow_log_format(
    env: dict[str, str], tmp_path: Path
) -> None:
    log = tmp_path / "monitor.log"
    out = log.open("wb")

    def start(port: int) -> subprocess.Popen[bytes]:
        command = [
            GUNICORN,
            "--bind",
            f"127.0.0.1:{port}",
            "--workers",
            "1",
            "--access-logfile",
            "-",
            "--logger-class",
            "monitor.gunicorn_logs.Logger",
            "monitor.wsgi:app",
        ]
        menv = {**env, "LOG_FORMAT": "json", "ALERT_CHECK_INTERVAL": "3600"}
        return subprocess.Popen(command, env=menv, stdout=out, stderr=out, cwd=tmp_path)

    proc, port = serve_http(start)
    try:
        with urllib.request.urlopen(f"http://127.0.0.1:{port}/health?probe=1", timeout=10):
            pass
        time.sleep(0.5)
    finally:
        proc.terminate()
        proc.wait(timeout=30)
        out.close()
    lines = [json.loads(line) for line in log.read_text().splitlines()]
    assert any(line["logger"] == "gunicorn.error" for line in lines)
    request = next(line for line in lines if line.get("event") == "http_request")
    assert request["logger"] == "gunicorn.access" and request["service"] == "monitor"
    assert request["path"] == "/health" and request["status"] == 200
    assert request["method"] == "GET" and isinstance(request["duration_s"], float)
