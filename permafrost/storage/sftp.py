"""A directory on an SFTP server (`sftp://USER@HOST[:PORT]/PATH`) through paramiko.

The server's host key must be in the known_hosts file the user names (`SFTP_KNOWN_HOSTS`); an
unknown or changed key is refused, never learned. Login is by key file (`SFTP_KEY_PATH`) or
password. Every write goes to a temporary name beside the object and is renamed into place
after the whole object arrived and its size was checked, so a reader never sees half an object;
an overwrite is one POSIX rename (OpenSSH's posix-rename extension). Multipart parts are staged
under `.multipart/UPLOAD/` and joined into the temporary file on completion (server-side with
OpenSSH's copy-data extension where the server has it, else streamed through this process).

There is no lifecycle on a plain server: retention alone deletes. Each thread has its own SFTP
channel over one SSH connection, so concurrent parts do not wait for one another.
"""

from __future__ import annotations

import builtins
import errno
import json
import posixpath
import secrets
import stat
import threading
from collections.abc import Iterator, Sequence
from contextlib import contextmanager
from datetime import UTC, datetime
from typing import Any

import paramiko
from paramiko.sftp import CMD_EXTENDED, int64
from paramiko.ssh_exception import NoValidConnectionsError

from permafrost.config.storage import StorageSettings
from permafrost.errors import NotFound, StorageError, StorageUnavailable
from permafrost.storage.base import ObjectInfo, PendingUpload
from permafrost.storage.retry import with_retries

STAGING = ".multipart"
TEMPORARY = "temporary-file"  # the upload id of a write's leftover temporary file
BLOCK = 1024 * 1024


class SftpStorage:
    def __init__(self, settings: StorageSettings) -> None:
        assert settings.sftp is not None
        parts = settings.url.split("://", 1)[1]
        self.user, _, hostport = parts.split("/", 1)[0].rpartition("@")
        self.host, _, port = hostport.partition(":")
        self.port = int(port or 22)
        self.root = "/" + parts.split("/", 1)[1].strip("/")
        self._settings = settings.sftp
        self.attempts = settings.max_attempts
        self._ssh: paramiko.SSHClient | None = None
        self._lock = threading.Lock()
        self._local = threading.local()

    @property
    def url(self) -> str:
        return f"sftp://{self.user}@{self.host}:{self.port}{self.root}"

    def check(self) -> None:
        with self._translate("reach", ""):
            folder = self.root if self._exists(self.root) else posixpath.dirname(self.root)
            if not self._exists(folder):
                raise StorageUnavailable(
                    f"cannot use {self.root} on {self.host} as the bucket: {folder} does not "
                    "exist; check STORAGE_URL, or create the parent directory"
                )
            if not stat.S_ISDIR(self._sftp().stat(folder).st_mode or 0):
                raise StorageUnavailable(f"{folder} on {self.host} is not a directory")

    def put(self, key: str, data: bytes, *, if_absent: bool = False) -> None:
        with_retries(lambda: self._put_once(key, data, if_absent), self.attempts)

    def _put_once(self, key: str, data: bytes, if_absent: bool) -> None:
        path = self._path(key)
        with self._translate("put", key):
            tmp = self._write_temp(path, [data])
            self._publish(tmp, path, key, if_absent=if_absent)

    def get(self, key: str, offset: int = 0, length: int | None = None) -> bytes:
        return with_retries(lambda: self._get_once(key, offset, length), self.attempts)

    def _get_once(self, key: str, offset: int, length: int | None) -> bytes:
        with self._translate("get", key), self._sftp().open(self._path(key), "rb") as handle:
            handle.seek(offset)
            size = handle.stat().st_size or 0
            wanted = max(0, size - offset) if length is None else min(length, size - offset)
            handle.prefetch(wanted)
            body: bytes = handle.read(wanted)
        if len(body) != wanted:
            raise StorageError(f"get {key}: got {len(body)} of {wanted} bytes", permanent=False)
        return body

    def head(self, key: str) -> ObjectInfo:
        with self._translate("head", key):
            info = self._sftp().stat(self._path(key))
        return ObjectInfo(key, info.st_size or 0, _modified(info))

    def list(self, prefix: str) -> Iterator[ObjectInfo]:
        folder = prefix.rsplit("/", 1)[0] if "/" in prefix else ""
        with self._translate("list", prefix):
            found = sorted(self._walk(folder, prefix), key=lambda item: item.key)
        yield from found

    def delete(self, key: str) -> None:
        path = self._path(key)
        try:
            with self._translate("delete", key):
                self._sftp().remove(path)
        except NotFound:
            return
        self._prune(posixpath.dirname(path))

    def copy(self, source: str, target: str) -> None:
        """No server-side copy in SFTP: streamed through, then renamed into place."""
        path = self._path(target)
        with self._translate("copy", source):
            self._sftp().stat(self._path(source))
            tmp = self._temp_name(path)
            self._join(tmp, [self._path(source)])
            self._publish(tmp, path, target, if_absent=False)

    # --- multipart --------------------------------------------------------------------------

    def create_multipart(self, key: str) -> str:
        self._path(key)
        upload_id = secrets.token_hex(12)
        folder = f"{self.root}/{STAGING}/{upload_id}"
        marker = json.dumps({"key": key, "started": datetime.now(UTC).isoformat()})
        with self._translate("start upload of", key):
            self._makedirs(folder)
            with self._sftp().open(f"{folder}/key", "wb") as handle:
                handle.write(marker.encode())
        return upload_id

    def upload_part(self, key: str, upload_id: str, number: int, data: bytes) -> str:
        return with_retries(
            lambda: self._upload_part_once(key, upload_id, number, data), self.attempts
        )

    def _upload_part_once(self, key: str, upload_id: str, number: int, data: bytes) -> str:
        with self._translate(f"upload part {number} of", key):
            folder = self._staging(key, upload_id)
            tmp = self._write_temp(f"{folder}/{number:05d}", [data])
            self._sftp().posix_rename(tmp, f"{folder}/{number:05d}")
        return f"{number}-{len(data)}"

    def complete_multipart(
        self, key: str, upload_id: str, parts: Sequence[tuple[int, str]]
    ) -> None:
        path = self._path(key)
        with self._translate("complete upload of", key):
            folder = self._staging(key, upload_id)
            sources = [f"{folder}/{number:05d}" for number, _ in sorted(parts)]
            for source, (_, etag) in zip(sources, sorted(parts), strict=True):
                if str(self._sftp().stat(source).st_size) != etag.split("-")[1]:
                    raise StorageError(f"complete {key}: part {source} changed")
            tmp = self._temp_name(path)
            self._join(tmp, sources)
            self._publish(tmp, path, key, if_absent=False)
        self.abort_multipart(key, upload_id)

    def abort_multipart(self, key: str, upload_id: str) -> None:
        if upload_id == TEMPORARY:  # a write's temporary file, left by a killed process
            path = self._path(key)
            if posixpath.basename(path).startswith(".tmp-"):
                self._remove_quietly(path)
            return
        folder = f"{self.root}/{STAGING}/{_safe_id(upload_id)}"
        with self._translate("abort upload of", key):
            names = self._listdir(folder)
            for name in sorted(names, key=lambda n: n == "key"):  # the marker last
                self._remove_quietly(f"{folder}/{name}")
            self._remove_quietly(folder, directory=True)

    def list_multipart(self, prefix: str) -> Iterator[PendingUpload]:
        staging = f"{self.root}/{STAGING}"
        found: list[PendingUpload] = []
        with self._translate("list uploads under", prefix):
            for upload_id in sorted(self._listdir(staging)):
                try:
                    with self._sftp().open(f"{staging}/{upload_id}/key", "rb") as handle:
                        recorded = json.loads(handle.read())
                except FileNotFoundError:
                    continue
                if recorded["key"].startswith(prefix):
                    started = datetime.fromisoformat(recorded["started"])
                    found.append(PendingUpload(recorded["key"], upload_id, started))
            folder = prefix.rsplit("/", 1)[0] if "/" in prefix else ""
            found.extend(self._leftovers(folder, prefix))
        yield from found

    # --- helpers ----------------------------------------------------------------------------

    def _sftp(self) -> paramiko.SFTPClient:
        """This thread's SFTP channel, over the one SSH connection (made on first use)."""
        client: paramiko.SFTPClient | None = getattr(self._local, "sftp", None)
        transport = self._ssh.get_transport() if self._ssh else None
        if client is None or transport is None or not transport.is_active():
            with self._lock:
                self._connect()
                assert self._ssh is not None
                client = self._ssh.open_sftp()
            self._local.sftp = client
        return client

    def _connect(self) -> None:
        transport = self._ssh.get_transport() if self._ssh else None
        if transport is not None and transport.is_active():
            return
        ssh = paramiko.SSHClient()
        ssh.load_host_keys(str(self._settings.known_hosts))
        ssh.set_missing_host_key_policy(paramiko.RejectPolicy())
        key = self._settings.key_file
        passphrase = self._settings.key_passphrase
        password = self._settings.password
        ssh.connect(
            self.host,
            self.port,
            username=self.user,
            key_filename=str(key) if key else None,
            passphrase=passphrase.reveal() if passphrase else None,
            password=password.reveal() if password else None,
            look_for_keys=False,
            allow_agent=False,
            timeout=10,
            banner_timeout=10,
            auth_timeout=10,
        )
        self._ssh = ssh

    def _path(self, key: str) -> str:
        parts = key.split("/")
        if not key or key.startswith("/") or any(p in ("", ".", "..") for p in parts):
            raise StorageError(f"refusing unsafe object key {key!r}")
        if parts[0] == STAGING or "\x00" in key:
            raise StorageError(f"refusing unsafe object key {key!r}")
        return f"{self.root}/{key}"

    def _staging(self, key: str, upload_id: str) -> str:
        folder = f"{self.root}/{STAGING}/{_safe_id(upload_id)}"
        try:
            with self._sftp().open(f"{folder}/key", "rb") as handle:
                recorded = json.loads(handle.read())["key"]
        except FileNotFoundError:
            raise NotFound(f"upload {upload_id} of {key} does not exist") from None
        if recorded != key:
            raise StorageError(f"upload {upload_id} belongs to {recorded}, not {key}")
        return folder

    def _temp_name(self, path: str) -> str:
        self._makedirs(posixpath.dirname(path))
        return f"{posixpath.dirname(path)}/.tmp-{secrets.token_hex(8)}"

    def _write_temp(self, path: str, chunks: Sequence[bytes]) -> str:
        tmp = self._temp_name(path)
        expected = sum(len(chunk) for chunk in chunks)
        with self._sftp().open(tmp, "wb") as handle:
            handle.set_pipelined(True)
            for chunk in chunks:
                for start in range(0, len(chunk), BLOCK):
                    handle.write(chunk[start : start + BLOCK])
        self._check_size(tmp, expected)
        return tmp

    def _check_size(self, tmp: str, expected: int) -> None:
        written = self._sftp().stat(tmp).st_size
        if written != expected:
            self._remove_quietly(tmp)
            raise StorageError(f"write {tmp}: the server has {written} of {expected} bytes")

    def _join(self, tmp: str, sources: Sequence[str]) -> None:
        """The sources, one after another, as the file tmp (its size checked)."""
        sftp = self._sftp()
        total = 0
        with sftp.open(tmp, "wb") as out:
            out.set_pipelined(True)
            for source in sources:
                size = sftp.stat(source).st_size or 0
                with sftp.open(source, "rb") as part:
                    if not self._copy_data(sftp, part, out, size, total):
                        out.seek(total)
                        part.prefetch(size)
                        while chunk := part.read(BLOCK):
                            out.write(chunk)
                total += size
                out.seek(total)
        self._check_size(tmp, total)

    def _copy_data(
        self, sftp: paramiko.SFTPClient, source: Any, out: Any, size: int, at: int
    ) -> bool:
        """OpenSSH's copy-data extension: the server copies between two open files, nothing
        crosses the network. False when the server does not offer it (remembered)."""
        if size == 0:
            return True
        if getattr(self, "_no_copy_data", False):
            return False
        out.flush()
        try:
            sftp._request(
                CMD_EXTENDED,
                "copy-data",
                source.handle,
                int64(0),
                int64(size),
                out.handle,
                int64(at),
            )
        except OSError:
            self._no_copy_data = True
            return False
        return True

    def _publish(self, tmp: str, path: str, key: str, *, if_absent: bool) -> None:
        sftp = self._sftp()
        try:
            if if_absent:
                sftp.rename(tmp, path)  # SFTP's plain rename refuses an existing target
            else:
                sftp.posix_rename(tmp, path)
        except OSError:
            self._remove_quietly(tmp)
            if if_absent and self._exists(path):
                raise StorageError(f"{key} already exists") from None
            raise

    def _walk(self, folder: str, prefix: str) -> Iterator[ObjectInfo]:
        for key, entry in self._files(folder, prefix):
            if not entry.filename.startswith(".tmp-"):
                yield ObjectInfo(key, entry.st_size or 0, _modified(entry))

    def _leftovers(self, folder: str, prefix: str) -> Iterator[PendingUpload]:
        """Temporary files of writes that never finished: abandoned uploads too."""
        for key, entry in self._files(folder, prefix):
            if entry.filename.startswith(".tmp-"):
                yield PendingUpload(key, TEMPORARY, _modified(entry))

    def _files(self, folder: str, prefix: str) -> Iterator[tuple[str, Any]]:
        """(key, attributes) of every file under folder whose key starts with prefix, walking
        only the directories that can hold one; the multipart staging directory is left out."""
        base = f"{self.root}/{folder}".rstrip("/")
        try:
            entries = self._sftp().listdir_attr(base)
        except FileNotFoundError:
            return
        for entry in entries:
            key = f"{folder}/{entry.filename}".lstrip("/")
            if not folder and entry.filename == STAGING:
                continue
            if stat.S_ISDIR(entry.st_mode or 0):
                if key.startswith(prefix) or prefix.startswith(key + "/"):
                    yield from self._files(key, prefix)
            elif key.startswith(prefix):
                yield key, entry

    def _makedirs(self, folder: str) -> None:
        if self._exists(folder):
            return
        parent = posixpath.dirname(folder)
        if folder == self.root and not self._exists(parent):
            raise StorageUnavailable(
                f"cannot use {self.root} on {self.host} as the bucket: {parent} does not exist"
            )
        self._makedirs(parent)
        try:
            self._sftp().mkdir(folder)
        except OSError:
            if not self._exists(folder):  # not made by another thread meanwhile
                raise

    def _exists(self, path: str) -> bool:
        try:
            self._sftp().stat(path)
        except FileNotFoundError:
            return False
        return True

    def _listdir(self, folder: str) -> builtins.list[str]:
        try:
            return self._sftp().listdir(folder)
        except FileNotFoundError:
            return []

    def _remove_quietly(self, path: str, *, directory: bool = False) -> None:
        try:
            if directory:
                self._sftp().rmdir(path)
            else:
                self._sftp().remove(path)
        except OSError:
            pass

    def _prune(self, folder: str) -> None:
        while folder != self.root and folder.startswith(self.root + "/"):
            try:
                self._sftp().rmdir(folder)
            except OSError:
                return
            folder = posixpath.dirname(folder)

    @contextmanager
    def _translate(self, action: str, key: str) -> Iterator[None]:
        where = f"{self.host}:{self.port}"
        try:
            yield
        except StorageError:
            raise
        except (NoValidConnectionsError, TimeoutError) as exc:
            raise StorageUnavailable(
                f"cannot reach the SFTP server at {where}: "
                f"{'timed out' if isinstance(exc, TimeoutError) else 'connection refused'}; "
                "check STORAGE_URL and the network",
                permanent=False,
            ) from exc
        except paramiko.BadHostKeyException as exc:
            raise StorageUnavailable(
                f"the host key of {where} has CHANGED from the one in "
                f"{self._settings.known_hosts}: refusing to connect (a new server, or someone "
                "in between); check the server, then update that file"
            ) from exc
        except paramiko.AuthenticationException as exc:
            raise StorageUnavailable(
                f"cannot log in to {where} as {self.user}: {exc}; check SFTP_KEY_PATH "
                "(or SFTP_PASSWORD) and the server's authorized_keys"
            ) from exc
        except paramiko.SSHException as exc:
            if "not found in known_hosts" in str(exc):
                raise StorageUnavailable(
                    f"the host key of {where} is not in {self._settings.known_hosts}: refusing "
                    "to connect; add it (ssh-keyscan -p PORT HOST) after checking its fingerprint"
                ) from exc
            raise self._lost(exc) from exc
        except FileNotFoundError as exc:
            raise NotFound(f"{key} does not exist in {self.url}") from exc
        except PermissionError as exc:
            raise StorageUnavailable(
                f"{action} {key or self.root} on {where}: permission denied"
            ) from exc
        except (OSError, EOFError) as exc:
            if isinstance(exc, OSError) and exc.errno in (errno.ECONNREFUSED, errno.EHOSTUNREACH):
                raise StorageUnavailable(
                    f"cannot reach the SFTP server at {where}: {exc.strerror}; check "
                    "STORAGE_URL and the network",
                    permanent=False,
                ) from exc
            raise self._lost(exc) from exc

    def _lost(self, exc: BaseException) -> StorageError:
        self._local.sftp = None  # the next call opens a new channel (and connection)
        return StorageError(f"SFTP to {self.host}:{self.port}: {exc}", permanent=False)


def _modified(info: paramiko.SFTPAttributes) -> datetime:
    return datetime.fromtimestamp(info.st_mtime or 0, UTC)


def _safe_id(upload_id: str) -> str:
    if not upload_id.isalnum():
        raise StorageError(f"refusing unsafe upload id {upload_id!r}")
    return upload_id
