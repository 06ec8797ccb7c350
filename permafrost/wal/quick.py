"""wal-push's fast path: answered from what the look-ahead pusher (ahead.py) recorded.

Most of a wal-push's 0.4 s is the start-up of the whole command line (boto3, the settings, the
catalog). When a pusher runs for this pg_wal, `permafrost wal-push %p` does not need any of
that: this module (the standard library only, imported before anything else by
permafrost/launch.py, its own imports kept to the few the answer needs) answers in two ways.

- **From the record** (`recorded`): the pusher, once it has stored a segment and checked it,
  writes `pg_wal/.permafrost-ahead/done/{name}.rec` (synced, renamed) with the segment's
  SHA-256 and what `stat` said of the file when it began reading it: device, inode, size,
  mtime_ns and ctime_ns. PostgreSQL never rewrites a segment in place once it is marked
  `.ready`, so a file with the same five values is the one the pusher read: wal-push answers
  success without hashing its 16 MiB or asking the bucket. It is strict: a record written under
  other settings (the fingerprint), older than RECORD_TRUST_S, of a file modified within
  STABLE_NS of the pusher's read (ahead.py waits that long), or any value that differs, and
  the next way is taken. A write to the file after the read sets its mtime (and ctime, which
  no one can set back) to a later time, so the stat differs.
- **By asking** (`ask`): wal-push hashes the segment and asks the pusher over a Unix socket in
  the same folder. The pusher answers `stored` only for a segment it has stored and checked,
  whose hash is this one, and whose object it has just seen in the bucket (a HEAD); a segment
  it has not stored yet it stores first, then answers.

Any other answer, or no pusher, and wal-push runs in full as it always did.

The settings the pusher was started with must be the ones this wal-push would use: both sides
compute a fingerprint of the command line's --env-file and --cluster, the env file's bytes and
the environment, and the pusher refuses a request with another one (then exits, so the next
wal-push starts one with the new settings).
"""

from __future__ import annotations

import os
import time

TYPE_CHECKING = False  # typing's own costs 10 ms at every archive_command
if TYPE_CHECKING:
    from collections.abc import Mapping, Sequence
    from pathlib import Path
    from typing import Any

FOLDER = ".permafrost-ahead"  # inside pg_wal: the same file system, outside base backups
SOCKET = "pusher.sock"
LOCK = "lock"
DONE = "done"  # the pusher's records: done/{name}.rec
RECORD = ".rec"
RECORD_VERSION = "permafrost-record-1"
STORED, UNKNOWN, DIFFERS, OTHER, FAILED = "stored", "unknown", "differs", "other", "failed"
ANSWER_WAIT_S = 600.0  # a segment the pusher is still uploading: PostgreSQL waits for it anyway
# A record is trusted this long after the pusher wrote it; an older one is asked about (a HEAD).
RECORD_TRUST_S = 600.0
# A file modified this recently when the pusher began to read it gets no stat in its record: a
# later write within the same tick of the file system's clock could leave its mtime unchanged.
STABLE_NS = 50_000_000
# Variables that differ between two calls of the same archive_command without meaning anything.
_VOLATILE = frozenset({"_", "PWD", "OLDPWD", "SHLVL", "LC_CTYPE"})  # LC_CTYPE: PEP 538


class Call:
    """A `permafrost [--env-file F] wal-push PATH [--cluster C]` command line (a plain class:
    a NamedTuple or a dataclass would import typing or inspect on the record path)."""

    __slots__ = ("cluster", "env_file", "path")

    def __init__(self, path: str, env_file: str | None, cluster: str | None) -> None:
        self.path, self.env_file, self.cluster = path, env_file, cluster

    def __eq__(self, other: object) -> bool:
        return isinstance(other, Call) and (self.path, self.env_file, self.cluster) == (
            other.path,
            other.env_file,
            other.cluster,
        )

    def __hash__(self) -> int:
        return hash((self.path, self.env_file, self.cluster))

    def __repr__(self) -> str:
        return f"Call({self.path!r}, {self.env_file!r}, {self.cluster!r})"


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


def _sha256() -> Any:
    """A SHA-256 hasher: the interpreter's built-in one where there is one (hashlib's import,
    which loads OpenSSL, costs more than the hashing of a few kilobytes)."""
    try:
        import _sha256  # type: ignore[import-not-found,unused-ignore]

        return _sha256.sha256()
    except ImportError:  # pragma: no cover - an interpreter built without it
        import hashlib

        return hashlib.sha256()


def fingerprint(env_file: str | None, cluster: str | None, environ: Mapping[str, str]) -> str:
    """What decides where a wal-push stores its segment, hashed."""
    digest = _sha256()
    named = env_file or environ.get("PERMAFROST_ENV_FILE")
    content = b""
    if named:
        try:
            with open(named, "rb") as handle:
                content = handle.read()
        except OSError:
            content = b"(unreadable)"
    settings = sorted((k, v) for k, v in environ.items() if k not in _VOLATILE)
    digest.update(repr((env_file, cluster, settings)).encode("utf-8", "surrogateescape"))
    digest.update(b"\0" + content)
    return str(digest.hexdigest())[:32]


def folder_of(segment: Path) -> Path | None:
    """The look-ahead folder of a segment inside pg_wal (one with archive_status beside it)."""
    if not (segment.parent / "archive_status").is_dir():
        return None
    return segment.parent / FOLDER


def file_sha256(path: Path) -> str:
    import hashlib  # file_digest: hashing 16 MiB, the import is the lesser part

    with path.open("rb") as handle:
        return hashlib.file_digest(handle, "sha256").hexdigest()


def stat_of(st: os.stat_result) -> tuple[int, int, int, int, int]:
    """What a record keeps of a file's stat: device, inode, size, mtime_ns, ctime_ns."""
    return (st.st_dev, st.st_ino, st.st_size, st.st_mtime_ns, st.st_ctime_ns)


def stable(st: os.stat_result, now_ns: int) -> bool:
    """Whether a file last modified at st's mtime, read from now_ns on, can be told apart by its
    stat from any later write (see STABLE_NS)."""
    return now_ns - max(st.st_mtime_ns, st.st_ctime_ns) >= STABLE_NS


def record_line(fp: str, sha256: str, stat: tuple[int, ...] | None, stored_at: float) -> str:
    """The record path's line of a marker (ahead.Marker.write): split by spaces, no JSON to
    import. Without a stat (a file too fresh to be told apart), none is written: then asked."""
    if stat is None:
        return ""
    return " ".join([RECORD_VERSION, fp, sha256, *map(str, stat), repr(stored_at)])


def vouches(line: str, st: os.stat_result, fp: str, now: float) -> bool:
    """Whether a record's line vouches for the file whose stat is st, under the settings fp."""
    fields = line.split()
    if len(fields) != 9 or fields[0] != RECORD_VERSION or fields[1] != fp:
        return False
    try:
        stat, stored_at = tuple(int(f) for f in fields[3:8]), float(fields[8])
    except ValueError:
        return False
    fresh = 0 <= now - stored_at <= RECORD_TRUST_S
    return fresh and stat[1] != 0 and stat == stat_of(st)


def recorded(pg_wal: str, name: str, fp: str) -> bool:
    """Whether the pusher's record says the file pg_wal/name, as it is now, is stored and
    checked (no hashing, no bucket, nothing imported)."""
    try:
        st = os.stat(os.path.join(pg_wal, name))
        with open(os.path.join(pg_wal, FOLDER, DONE, name + RECORD), "rb") as handle:
            line = handle.readline(4096).decode()
    except (OSError, UnicodeDecodeError):
        return False
    return vouches(line, st, fp, time.time())


class socket_address:  # lower case: used as a function, `with socket_address(folder) as a`
    """A short path to the folder's socket (through /proc/self/fd: a deep data directory's own
    path may not fit in sun_path's 108 bytes)."""

    def __init__(self, folder: Path) -> None:
        self.folder, self.fd = folder, -1

    def __enter__(self) -> str:
        self.fd = os.open(self.folder, os.O_RDONLY | os.O_DIRECTORY)
        return f"/proc/self/fd/{self.fd}/{SOCKET}"

    def __exit__(self, *exc: object) -> None:
        os.close(self.fd)


def ask(folder: Path, request: Mapping[str, object], wait: float = ANSWER_WAIT_S) -> dict[str, str]:
    """The pusher's answer to one request, or {"status": "unknown"} when none answers."""
    import json
    import socket

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
    """True when the pusher's record, or the pusher asked, says this wal-push's segment is
    stored and checked."""
    call = parse(argv)
    if call is None:
        return False
    pg_wal, name = os.path.split(call.path)
    if not os.path.isdir(os.path.join(pg_wal, "archive_status")):
        return False
    fp = fingerprint(call.env_file, call.cluster, environ)
    if recorded(pg_wal, name, fp):
        return True
    return asked(call, fp)


def asked(call: Call, fp: str) -> bool:
    from pathlib import Path

    path = Path(call.path)
    folder = path.parent / FOLDER
    if not (folder / SOCKET).exists() or not path.is_file():
        return False
    request = {"op": "ack", "name": path.name, "sha256": file_sha256(path), "fingerprint": fp}
    return ask(folder, request).get("status") == STORED
