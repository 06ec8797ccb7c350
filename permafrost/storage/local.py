"""A local directory as the bucket (`file:///path`).

Writes are made durable before they become visible: a temporary file in the same directory is
written, checked for length, fsynced, and renamed into place, then the directory is fsynced.
Multipart uploads are staged under `.multipart/` and joined on completion. The bucket's own
directory is made by the first write, but never its missing parents: a mistyped path fails.
"""

from __future__ import annotations

import contextlib
import os
import secrets
import shutil
from collections.abc import Generator, Iterator, Sequence
from datetime import UTC, datetime
from pathlib import Path

from permafrost.errors import NotFound, StorageError, StorageUnavailable
from permafrost.storage.base import ObjectInfo, PendingUpload

STAGING = ".multipart"
TEMPORARY = "temporary-file"  # the upload id of a write's leftover temporary file


class LocalStorage:
    def __init__(self, root: Path) -> None:
        self.root = root

    @property
    def url(self) -> str:
        return f"file://{self.root}"

    def check(self) -> None:
        """The bucket can be written: its directory, or (before the first write) its parent."""
        folder = self.root if self.root.is_dir() else self.root.parent
        if not folder.is_dir():
            raise self._no_parent()
        if not os.access(folder, os.W_OK):
            raise StorageUnavailable(f"cannot write to {folder}: permission denied")

    def _ensure_root(self) -> None:
        """Make the bucket's directory, but not its parents: a mistyped path must fail."""
        if self.root.is_dir():
            return
        try:
            self.root.mkdir(exist_ok=True)
        except FileNotFoundError:
            raise self._no_parent() from None
        except OSError as exc:
            raise StorageUnavailable(
                f"cannot use {self.root} as the bucket: {exc.strerror}"
            ) from None

    def _no_parent(self) -> StorageUnavailable:
        return StorageUnavailable(
            f"cannot use {self.root} as the bucket: {self.root.parent} does not exist; "
            "check STORAGE_URL, or create the parent directory"
        )

    def put(self, key: str, data: bytes, *, if_absent: bool = False) -> None:
        path = self._path(key)
        self._ensure_root()
        tmp = self._write_temp(path.parent, [data])
        self._publish(tmp, path, if_absent=if_absent, key=key)

    def get(self, key: str, offset: int = 0, length: int | None = None) -> bytes:
        try:
            with self._path(key).open("rb") as handle:
                handle.seek(offset)
                return handle.read() if length is None else handle.read(length)
        except (FileNotFoundError, NotADirectoryError):
            raise NotFound(f"{key} does not exist in {self.url}") from None
        except OSError as exc:
            raise StorageError(f"read {key}: {exc.strerror}") from exc

    def get_pieces(
        self, key: str, offset: int, length: int, piece: int
    ) -> Generator[bytes, None, None]:
        got = 0
        try:
            with self._path(key).open("rb") as handle:
                handle.seek(offset)
                while got < length and (block := handle.read(min(piece, length - got))):
                    got += len(block)
                    yield block
        except (FileNotFoundError, NotADirectoryError):
            raise NotFound(f"{key} does not exist in {self.url}") from None
        except OSError as exc:
            raise StorageError(f"read {key}: {exc.strerror}") from exc
        if got != length:
            raise StorageError(f"read {key}: got {got} of {length} bytes")

    def head(self, key: str) -> ObjectInfo:
        try:
            stat = self._path(key).stat()
        except (FileNotFoundError, NotADirectoryError):
            raise NotFound(f"{key} does not exist in {self.url}") from None
        return ObjectInfo(key, stat.st_size, datetime.fromtimestamp(stat.st_mtime, UTC))

    def list(self, prefix: str) -> Iterator[ObjectInfo]:
        for path in sorted(self._walk(self._search_root(prefix))):
            key = path.relative_to(self.root).as_posix()
            if key.startswith(prefix):
                stat = path.stat()
                yield ObjectInfo(key, stat.st_size, datetime.fromtimestamp(stat.st_mtime, UTC))

    def delete(self, key: str) -> None:
        path = self._path(key)
        try:
            path.unlink()
        except FileNotFoundError:
            return
        except OSError as exc:
            raise StorageError(f"delete {key}: {exc.strerror}") from exc
        self._prune(path.parent)

    def copy(self, source: str, target: str) -> None:
        src = self._path(source)
        path = self._path(target)
        self._ensure_root()
        try:
            path.parent.mkdir(parents=True, exist_ok=True)
            tmp = path.parent / f".tmp-{secrets.token_hex(8)}"
            shutil.copyfile(src, tmp)
            with tmp.open("rb") as handle:
                os.fsync(handle.fileno())
        except (FileNotFoundError, NotADirectoryError):
            raise NotFound(f"{source} does not exist in {self.url}") from None
        except OSError as exc:
            raise StorageError(f"copy {source}: {exc.strerror}") from exc
        self._publish(tmp, path, if_absent=False, key=target)

    # --- multipart --------------------------------------------------------------------------

    def create_multipart(self, key: str) -> str:
        self._path(key)
        self._ensure_root()
        upload_id = secrets.token_hex(12)
        folder = self.root / STAGING / upload_id
        folder.mkdir(parents=True)
        (folder / "key").write_text(key)
        return upload_id

    def upload_part(self, key: str, upload_id: str, number: int, data: bytes) -> str:
        folder = self._staging(key, upload_id)
        # Staged parts are not synced: only the joined object must survive a crash.
        tmp = self._write_temp(folder, [data], sync=False)
        os.replace(tmp, folder / f"{number:05d}")
        return f"{number}-{len(data)}"

    def complete_multipart(
        self, key: str, upload_id: str, parts: Sequence[tuple[int, str]]
    ) -> None:
        folder = self._staging(key, upload_id)
        path = self._path(key)
        sources = [folder / f"{number:05d}" for number, _ in sorted(parts)]
        for source, (_, etag) in zip(sources, sorted(parts), strict=True):
            if not source.exists() or f"{source.stat().st_size}" != etag.split("-")[1]:
                raise StorageError(f"complete {key}: part {source.name} is missing or changed")
        tmp = self._join_parts(path.parent, sources)
        self._publish(tmp, path, if_absent=False, key=key)
        _remove_staged(folder)

    def abort_multipart(self, key: str, upload_id: str) -> None:
        if upload_id == TEMPORARY:
            # A write's temporary file, left by a process killed before its rename.
            path = self._path(key)
            if path.name.startswith(".tmp-"):
                path.unlink(missing_ok=True)
                self._prune(path.parent)
            return
        _remove_staged(self.root / STAGING / _safe_id(upload_id))

    def list_multipart(self, prefix: str) -> Iterator[PendingUpload]:
        staging = self.root / STAGING
        for upload in sorted(staging.iterdir()) if staging.is_dir() else []:
            try:
                key = (upload / "key").read_text()
            except FileNotFoundError:
                key = ""
            except OSError:
                continue
            if key and not key.startswith(prefix):
                continue
            with contextlib.suppress(FileNotFoundError):  # completed or aborted meanwhile
                started = datetime.fromtimestamp(upload.stat().st_mtime, UTC)
                # Without its key (a process killed between making the folder and writing the
                # key, or while removing it) no one can go on with it: abandoned, whatever the
                # prefix, and named by its folder.
                yield PendingUpload(key or f"{STAGING}/{upload.name}", upload.name, started)
        # Temporary files of writes that never finished (the process was killed): abandoned
        # uploads too, which retention aborts once they are old enough.
        for folder, dirs, files in os.walk(self._search_root(prefix)):
            dirs[:] = [d for d in dirs if not (folder == str(self.root) and d == STAGING)]
            for name in files:
                if name.startswith(".tmp-"):
                    path = Path(folder) / name
                    key = path.relative_to(self.root).as_posix()
                    if key.startswith(prefix):
                        started = datetime.fromtimestamp(path.stat().st_mtime, UTC)
                        yield PendingUpload(key, TEMPORARY, started)

    # --- helpers ----------------------------------------------------------------------------

    def _path(self, key: str) -> Path:
        parts = key.split("/")
        if not key or key.startswith("/") or any(p in ("", ".", "..") for p in parts):
            raise StorageError(f"refusing unsafe object key {key!r}")
        if parts[0] == STAGING or "\x00" in key:
            raise StorageError(f"refusing unsafe object key {key!r}")
        return self.root.joinpath(*parts)

    def _staging(self, key: str, upload_id: str) -> Path:
        folder = self.root / STAGING / _safe_id(upload_id)
        try:
            recorded = (folder / "key").read_text()
        except FileNotFoundError:
            raise NotFound(f"upload {upload_id} of {key} does not exist") from None
        if recorded != key:
            raise StorageError(f"upload {upload_id} belongs to {recorded}, not {key}")
        return folder

    def _write_temp(self, folder: Path, chunks: Sequence[bytes], *, sync: bool = True) -> Path:
        try:
            folder.mkdir(parents=True, exist_ok=True)
            tmp = folder / f".tmp-{secrets.token_hex(8)}"
            expected = sum(len(chunk) for chunk in chunks)
            with tmp.open("wb") as handle:
                for chunk in chunks:
                    handle.write(chunk)
                handle.flush()
                if sync:
                    os.fsync(handle.fileno())
                written = handle.tell()
        except OSError as exc:
            raise StorageError(f"write to {folder}: {exc.strerror}") from exc
        if written != expected:
            tmp.unlink(missing_ok=True)
            raise StorageError(f"write to {folder}: wrote {written} of {expected} bytes")
        return tmp

    def _join_parts(self, folder: Path, sources: Sequence[Path]) -> Path:
        """The parts as one file beside the object: the first moved, the rest appended."""
        tmp = folder / f".tmp-{secrets.token_hex(8)}"
        try:
            folder.mkdir(parents=True, exist_ok=True)
            os.replace(sources[0], tmp)
            with tmp.open("r+b") as out:  # not "ab": copy_file_range refuses O_APPEND
                out.seek(0, os.SEEK_END)
                for source in sources[1:]:
                    with source.open("rb") as part:
                        _append(part.fileno(), out.fileno(), source.stat().st_size)
                os.fsync(out.fileno())
        except OSError as exc:
            tmp.unlink(missing_ok=True)
            raise StorageError(f"join parts into {folder}: {exc.strerror}") from exc
        return tmp

    def _publish(self, tmp: Path, path: Path, *, if_absent: bool, key: str) -> None:
        try:
            if if_absent:
                try:
                    os.link(tmp, path)
                except FileExistsError:
                    raise StorageError(f"{key} already exists") from None
                finally:
                    tmp.unlink(missing_ok=True)
            else:
                os.replace(tmp, path)
            _fsync_dir(path.parent)
        except OSError as exc:
            tmp.unlink(missing_ok=True)
            raise StorageError(f"write {key}: {exc.strerror}") from exc

    def _search_root(self, prefix: str) -> Path:
        folder = prefix.rsplit("/", 1)[0] if "/" in prefix else ""
        return self.root.joinpath(*[p for p in folder.split("/") if p]) if folder else self.root

    def _walk(self, top: Path) -> Iterator[Path]:
        for folder, dirs, files in os.walk(top):
            dirs[:] = [d for d in dirs if not (folder == str(self.root) and d == STAGING)]
            for name in files:
                if not name.startswith(".tmp-"):
                    yield Path(folder) / name

    def _prune(self, folder: Path) -> None:
        while folder != self.root and folder.is_relative_to(self.root):
            try:
                folder.rmdir()
            except OSError:
                return
            folder = folder.parent


def _append(source: int, target: int, size: int) -> None:
    """Copy a whole file onto the end of another, in the kernel where it can."""
    copied = 0
    try:
        while copied < size:
            step = os.copy_file_range(source, target, size - copied)
            if step == 0:
                break
            copied += step
    except OSError:
        pass  # not supported between these files: finish in user space below
    os.lseek(source, copied, os.SEEK_SET)
    while chunk := os.read(source, 8 * 1024 * 1024):
        os.write(target, chunk)


def _safe_id(upload_id: str) -> str:
    if not upload_id.isalnum():
        raise StorageError(f"refusing unsafe upload id {upload_id!r}")
    return upload_id


def _fsync_dir(folder: Path) -> None:
    fd = os.open(folder, os.O_RDONLY)
    try:
        os.fsync(fd)
    finally:
        os.close(fd)


def _remove_staged(folder: Path) -> None:
    """Remove a staged upload, its key last: a process killed meanwhile leaves a folder that
    list_multipart still lists (and retention aborts)."""
    try:
        entries = list(folder.iterdir())
    except OSError:
        entries = []
    for entry in entries:
        if entry.name != "key":
            if entry.is_dir():
                shutil.rmtree(entry, ignore_errors=True)
            else:
                entry.unlink(missing_ok=True)
    shutil.rmtree(folder, ignore_errors=True)
