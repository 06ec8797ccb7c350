"""wal-push's fast path: ask the look-ahead pusher (ahead.py) whether a segment is stored.

Most of a wal-push's 0.4 s is the start-up of the whole command line (boto3, the settings, the
catalog). When a pusher runs for this pg_wal, `permafrost wal-push %p` does not need any of
that: this module (the standard library only, imported before anything else by
permafrost/launch.py) hashes the segment and asks the pusher over a Unix socket in
`pg_wal/.permafrost-ahead/`. The pusher answers `stored` only for a segment it has stored, read
back and checked, whose hash is this one, and whose object it has just seen in the bucket (a
HEAD); a segment it has not stored yet it stores first, then answers. Any other answer, or no
pusher, and wal-push runs in full as it always did.

The settings the pusher was started with must be the ones this wal-push would use: both sides
compute a fingerprint of the command line's --env-file and --cluster, the env file's bytes and
the environment, and the pusher refuses a request with another one (then exits, so the next
wal-push starts one with the new settings).
"""

from __future__ import annotations

import contextlib
import hashlib
import json
import os
import socket
from collections.abc import Iterator, Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path

FOLDER = ".permafrost-ahead"  # inside pg_wal: the same file system, outside base backups
SOCKET = "pusher.sock"
LOCK = "lock"
STORED, UNKNOWN, DIFFERS, OTHER, FAILED = "stored", "unknown", "differs", "other", "failed"
ANSWER_WAIT_S = 600.0  # a segment the pusher is still uploading: PostgreSQL waits for it anyway
# Variables that differ between two calls of the same archive_command without meaning anything.
_VOLATILE = frozenset({"_", "PWD", "OLDPWD", "SHLVL", "LC_CTYPE"})  # LC_CTYPE: PEP 538


@dataclass(frozen=True)
class Call:
    """A `permafrost [--env-file F] wal-push PATH [--cluster C]` command line."""

    path: str
    env_file: str | None
    cluster: str | None


def parse(argv: Sequence[str]) -> Call | None:
    """The wal-push call in argv, or None for any other command line (then the full parser)."""
    env_file = cluster = path = None
    command = False
    tokens = list(argv)
    while tokens:
        token = tokens.pop(0)
        if token in ("--env-file", "--cluster") and tokens:
            value = tokens.pop(0)
        elif token.startswith(("--env-file=", "--cluster=")):
            token, value = token.split("=", 1)
        elif token == "wal-push" and not command:
            command = True
            continue
        elif token in ("-v", "--verbose"):
            continue
        elif command and path is None and not token.startswith("-"):
            path = token
            continue
        else:
            return None
        if token == "--env-file" and not command:
            env_file = value
        elif token == "--cluster" and command:
            cluster = value
        else:
            return None
    return Call(path, env_file, cluster) if command and path else None


def fingerprint(env_file: str | None, cluster: str | None, environ: Mapping[str, str]) -> str:
    """What decides where a wal-push stores its segment, hashed."""
    digest = hashlib.sha256()
    named = env_file or environ.get("PERMAFROST_ENV_FILE")
    content = b""
    if named:
        try:
            content = Path(named).read_bytes()
        except OSError:
            content = b"(unreadable)"
    settings = sorted((k, v) for k, v in environ.items() if k not in _VOLATILE)
    body = json.dumps([env_file, cluster, settings, content.hex()])
    digest.update(body.encode())
    return digest.hexdigest()[:32]


def folder_of(segment: Path) -> Path | None:
    """The look-ahead folder of a segment inside pg_wal (one with archive_status beside it)."""
    if not (segment.parent / "archive_status").is_dir():
        return None
    return segment.parent / FOLDER


def file_sha256(path: Path) -> str:
    with path.open("rb") as handle:
        return hashlib.file_digest(handle, "sha256").hexdigest()


@contextlib.contextmanager
def socket_address(folder: Path) -> Iterator[str]:
    """A short path to the folder's socket (through /proc/self/fd: a deep data directory's own
    path may not fit in sun_path's 108 bytes)."""
    fd = os.open(folder, os.O_RDONLY | os.O_DIRECTORY)
    try:
        yield f"/proc/self/fd/{fd}/{SOCKET}"
    finally:
        os.close(fd)


def ask(folder: Path, request: Mapping[str, object], wait: float = ANSWER_WAIT_S) -> dict[str, str]:
    """The pusher's answer to one request, or {"status": "unknown"} when none answers."""
    try:
        with (
            socket_address(folder) as address,
            socket.socket(socket.AF_UNIX, socket.SOCK_STREAM) as sock,
        ):
            sock.settimeout(wait)
            sock.connect(address)
            sock.sendall(json.dumps(request).encode() + b"\n")
            answer = sock.makefile("rb").readline()
        parsed = json.loads(answer) if answer else {}
    except (OSError, ValueError):
        return {"status": UNKNOWN, "message": "no pusher answered"}
    return parsed if isinstance(parsed, dict) and "status" in parsed else {"status": UNKNOWN}


def try_fast(argv: Sequence[str], environ: Mapping[str, str]) -> bool:
    """True when the pusher answered that this wal-push's segment is stored and checked."""
    call = parse(argv)
    if call is None:
        return False
    path = Path(call.path)
    folder = folder_of(path)
    if folder is None or not (folder / SOCKET).exists() or not path.is_file():
        return False
    request = {
        "op": "ack",
        "name": path.name,
        "sha256": file_sha256(path),
        "fingerprint": fingerprint(call.env_file, call.cluster, environ),
    }
    return ask(folder, request).get("status") == STORED
