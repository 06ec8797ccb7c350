"""Google Cloud Storage (`gs://BUCKET[/PREFIX]`) through google-cloud-storage's JSON API.

An object larger than one chunk (`CHUNK`) goes up as a resumable upload: a dropped connection
resumes from the last chunk the server has, not from the start. A multipart upload stores its
parts as objects under `.multipart/UPLOAD/` (each one resumable too, and uploaded concurrently
by the ObjectWriter) and composes them into the object on completion, 32 at a time, as GCS's
compose allows; a small `key` object there records the upload for `list_multipart`.

The client library retries idempotent requests (and conditional writes) with back-off; what is
left is translated here into `NotFound`, `StorageUnavailable` or `StorageError`.
"""

from __future__ import annotations

import json
import secrets
from collections.abc import Iterator, Sequence
from contextlib import contextmanager
from datetime import UTC, datetime
from typing import Any

from google.api_core import exceptions as api
from google.auth import exceptions as auth
from google.cloud import storage as gcs
from google.cloud.storage.retry import DEFAULT_RETRY as RETRY
from requests import exceptions as http

from permafrost.config.storage import GcsSettings, StorageSettings
from permafrost.errors import NotFound, StorageError, StorageUnavailable
from permafrost.storage.base import ObjectInfo, PendingUpload
from permafrost.storage.retry import with_retries

STAGING = ".multipart/"
CHUNK = 16 * 1024 * 1024  # a multiple of 256 KiB, as resumable uploads need
COMPOSE_MAX = 32  # source objects one compose request may join
RETRY_SECONDS = 15.0


class GcsStorage:
    def __init__(self, settings: StorageSettings) -> None:
        assert settings.gcs is not None
        self.bucket_name = settings.bucket
        self.attempts = settings.max_attempts
        # The library retries by time, not by count: S3_MAX_ATTEMPTS sets the time as well
        # (about 15 s each: back-off from 1 s, doubling). Every request here is safe to repeat:
        # the same bytes to the same name, or a write that must not overwrite (412 after).
        self._retry = RETRY.with_timeout(RETRY_SECONDS * settings.max_attempts)
        self.endpoint = settings.gcs.endpoint or "Google Cloud Storage"
        with self._translate("connect to", ""):
            self._client = _client(settings.gcs)
        self._bucket = self._client.bucket(self.bucket_name)

    @property
    def url(self) -> str:
        return f"gs://{self.bucket_name} at {self.endpoint}"

    def check(self) -> None:
        with self._translate("reach the bucket", ""):
            self._client.get_bucket(self.bucket_name, retry=self._retry)

    def put(self, key: str, data: bytes, *, if_absent: bool = False) -> None:
        condition: dict[str, Any] = {"if_generation_match": 0} if if_absent else {}
        with self._translate("put", key):
            self._blob(key).upload_from_string(
                data, content_type="application/octet-stream", retry=self._retry, **condition
            )

    def get(self, key: str, offset: int = 0, length: int | None = None) -> bytes:
        return with_retries(lambda: self._get_once(key, offset, length), self.attempts)

    def _get_once(self, key: str, offset: int, length: int | None) -> bytes:
        if length == 0:
            return b""
        ranged = bool(offset) or length is not None
        end = None if length is None else offset + length - 1
        with self._translate("get", key):
            body: bytes = self._blob(key).download_as_bytes(
                start=offset or None,
                end=end,
                checksum=None if ranged else "md5",
                retry=self._retry,
            )
        if length is not None and len(body) != length:
            raise StorageError(f"get {key}: got {len(body)} of {length} bytes", permanent=False)
        return body

    def head(self, key: str) -> ObjectInfo:
        with self._translate("head", key):
            blob = self._bucket.get_blob(key, retry=self._retry)
        if blob is None:
            raise NotFound(f"{key} does not exist in {self.url}")
        return ObjectInfo(key, int(blob.size), blob.updated)

    def list(self, prefix: str) -> Iterator[ObjectInfo]:
        with self._translate("list", prefix):
            for blob in self._listing(prefix):
                if not blob.name.startswith(STAGING):
                    yield ObjectInfo(blob.name, int(blob.size), blob.updated)

    def delete(self, key: str) -> None:
        try:
            with self._translate("delete", key):
                self._blob(key).delete(retry=self._retry)
        except NotFound:
            return

    def copy(self, source: str, target: str) -> None:
        """A server-side rewrite, resumed by token until done (large objects take several)."""
        with self._translate("copy", source):
            token, _, _ = self._blob(target).rewrite(self._blob(source), retry=self._retry)
            while token is not None:
                token, _, _ = self._blob(target).rewrite(
                    self._blob(source), token=token, retry=self._retry
                )

    # --- multipart: parts as objects, composed on completion -----------------------------

    def create_multipart(self, key: str) -> str:
        upload_id = secrets.token_hex(12)
        marker = json.dumps({"key": key, "started": datetime.now(UTC).isoformat()})
        self.put(f"{STAGING}{upload_id}/key", marker.encode())
        return upload_id

    def upload_part(self, key: str, upload_id: str, number: int, data: bytes) -> str:
        name = f"{STAGING}{_safe_id(upload_id)}/{number:05d}"
        self.put(name, data)
        return name

    def complete_multipart(
        self, key: str, upload_id: str, parts: Sequence[tuple[int, str]]
    ) -> None:
        self._pending(key, upload_id)
        names = [name for _, name in sorted(parts)]
        target = self._blob(key)
        with self._translate("complete upload of", key):
            target.compose([self._blob(n) for n in names[:COMPOSE_MAX]], retry=self._retry)
            rest = names[COMPOSE_MAX:]
            while rest:  # the object so far, and the next 31 parts
                batch, rest = rest[: COMPOSE_MAX - 1], rest[COMPOSE_MAX - 1 :]
                sources = [self._blob(key), *(self._blob(n) for n in batch)]
                target.compose(sources, retry=self._retry)
        self.abort_multipart(key, upload_id)

    def abort_multipart(self, key: str, upload_id: str) -> None:
        folder = f"{STAGING}{_safe_id(upload_id)}/"
        with self._translate("abort upload of", key):
            names = [blob.name for blob in self._listing(folder)]
        for name in sorted(names, key=lambda n: n.endswith("/key")):  # the marker last
            self.delete(name)

    def list_multipart(self, prefix: str) -> Iterator[PendingUpload]:
        with self._translate("list uploads under", prefix):
            markers = [blob.name for blob in self._listing(STAGING) if blob.name.endswith("/key")]
        for name in markers:
            try:
                recorded = json.loads(self.get(name))
            except NotFound:
                continue  # completed meanwhile
            if recorded["key"].startswith(prefix):
                upload_id = name.removeprefix(STAGING).split("/")[0]
                started = datetime.fromisoformat(recorded["started"])
                yield PendingUpload(recorded["key"], upload_id, started)

    def _pending(self, key: str, upload_id: str) -> None:
        try:
            recorded = json.loads(self.get(f"{STAGING}{_safe_id(upload_id)}/key"))
        except NotFound:
            raise NotFound(f"upload {upload_id} of {key} does not exist") from None
        if recorded["key"] != key:
            raise StorageError(f"upload {upload_id} belongs to {recorded['key']}, not {key}")

    def _unreachable(self, exc: BaseException) -> StorageUnavailable:
        return StorageUnavailable(
            f"cannot reach the bucket at {self.endpoint}: {_reason(exc)}; check "
            "GCS_ENDPOINT_URL and the network",
            permanent=False,
        )

    def _listing(self, prefix: str) -> Iterator[Any]:
        return iter(self._client.list_blobs(self.bucket_name, prefix=prefix, retry=self._retry))

    def _blob(self, key: str) -> Any:
        return self._bucket.blob(key, chunk_size=CHUNK)

    @contextmanager
    def _translate(self, action: str, key: str) -> Iterator[None]:
        try:
            yield
        except api.NotFound as exc:
            if not key or "bucket does not exist" in str(exc.message).lower():
                raise StorageUnavailable(
                    f"bucket {self.bucket_name} does not exist at {self.endpoint}"
                ) from exc
            raise NotFound(f"{key} does not exist in {self.url}") from exc
        except api.PreconditionFailed as exc:
            raise StorageError(f"{key} already exists") from exc
        except (api.Forbidden, api.Unauthorized, auth.RefreshError) as exc:
            raise StorageUnavailable(
                f"{action} {key or self.bucket_name}: access denied ({_first_line(exc)}); check "
                "GOOGLE_APPLICATION_CREDENTIALS and the service account's role on the bucket"
            ) from exc
        except auth.DefaultCredentialsError as exc:
            raise StorageUnavailable(
                "no Google Cloud credentials: set GOOGLE_APPLICATION_CREDENTIALS to a service "
                "account key file"
            ) from exc
        except (http.ConnectionError, http.Timeout, auth.TransportError) as exc:
            raise self._unreachable(exc) from exc
        except api.RetryError as exc:
            if isinstance(exc.cause, http.ConnectionError | http.Timeout):
                raise self._unreachable(exc.cause) from exc
            raise StorageError(
                f"{action} {key or self.bucket_name}: gave up retrying: "
                f"{_first_line(exc.cause or exc)}",
                permanent=False,
            ) from exc
        except api.GoogleAPICallError as exc:
            transient = int(exc.code or 0) >= 500 or int(exc.code or 0) in (408, 429)
            raise StorageError(
                f"{action} {key}: {_first_line(exc)}", permanent=not transient
            ) from exc


def _reason(exc: BaseException) -> str:
    """The last reason in a chain such as urllib3's 'Max retries exceeded (Caused by ...)'."""
    text = _first_line(exc)
    return text.rsplit(": ", 1)[-1].rstrip("'\")") if "Caused by" in text else text


def _client(settings: GcsSettings) -> Any:
    if settings.endpoint is not None:  # an emulator: no credentials
        from google.auth.credentials import AnonymousCredentials

        return gcs.Client(
            project=settings.project or "permafrost",
            credentials=AnonymousCredentials(),
            client_options={"api_endpoint": settings.endpoint},
        )
    if settings.credentials_file is not None:
        return gcs.Client.from_service_account_json(
            str(settings.credentials_file), project=settings.project
        )
    return gcs.Client(project=settings.project)


def _safe_id(upload_id: str) -> str:
    if not upload_id.isalnum():
        raise StorageError(f"refusing unsafe upload id {upload_id!r}")
    return upload_id


def _first_line(exc: BaseException) -> str:
    return (str(exc).strip().splitlines() or [type(exc).__name__])[0]
