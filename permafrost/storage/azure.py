"""Azure Blob Storage (`azure://CONTAINER[/PREFIX]`) through azure-storage-blob.

Objects are block blobs. A multipart upload stages its parts as blocks of the target blob (the
ObjectWriter stages them concurrently) and commits the block list on completion, so nothing is
visible before then. Azure keeps no list of such uploads: a small marker object under
`.multipart/` records each one (its key, its start), which `list_multipart` reads and retention
aborts when old; uncommitted blocks left behind are discarded by Azure after seven days.

Retries are the SDK's own (exponential from 1 s, `S3_MAX_ATTEMPTS` tries in all); what is left is
translated here into `NotFound`, `StorageUnavailable` or `StorageError`.
"""

from __future__ import annotations

import base64
import json
import logging
import secrets
import time
from collections.abc import Iterator, Sequence
from contextlib import contextmanager
from datetime import UTC, datetime
from typing import Any

from azure.core.exceptions import (
    ClientAuthenticationError,
    HttpResponseError,
    ResourceExistsError,
    ResourceNotFoundError,
    ServiceRequestError,
    ServiceResponseError,
)
from azure.storage.blob import BlobBlock, BlobServiceClient, ContainerClient, ExponentialRetry

from permafrost.config.storage import AzureSettings, StorageSettings
from permafrost.errors import NotFound, StorageError, StorageUnavailable
from permafrost.storage.base import ObjectInfo, PendingUpload
from permafrost.storage.retry import with_retries

STAGING = ".multipart/"
# The SDK logs each retry it makes ("Incomplete download.") as a warning; what is left after its
# retries and ours is said once, by the error this module raises.
logging.getLogger("azure").setLevel(logging.ERROR)
COPY_WAIT = 600.0  # seconds a server-side copy may take before it is called failed


class AzureStorage:
    def __init__(self, settings: StorageSettings) -> None:
        assert settings.azure is not None
        self.container_name = settings.bucket
        self.attempts = settings.max_attempts
        self._container = _container(settings.azure, settings.bucket, settings.max_attempts)
        self.endpoint = self._container.primary_endpoint.rsplit("/", 1)[0]

    @property
    def url(self) -> str:
        return f"azure://{self.container_name} at {self.endpoint}"

    def check(self) -> None:
        with self._translate("reach the container", ""):
            self._container.get_container_properties()

    def put(self, key: str, data: bytes, *, if_absent: bool = False) -> None:
        with self._translate("put", key):
            self._blob(key).upload_blob(data, overwrite=not if_absent, max_concurrency=1)

    def get(self, key: str, offset: int = 0, length: int | None = None) -> bytes:
        return with_retries(lambda: self._get_once(key, offset, length), self.attempts)

    def _get_once(self, key: str, offset: int, length: int | None) -> bytes:
        if length == 0:
            return b""
        with self._translate("get", key):
            stream = self._blob(key).download_blob(offset=offset, length=length)
            body = stream.readall()
        if length is not None and len(body) != length:
            raise StorageError(f"get {key}: got {len(body)} of {length} bytes", permanent=False)
        return body

    def head(self, key: str) -> ObjectInfo:
        with self._translate("head", key):
            props = self._blob(key).get_blob_properties()
        return ObjectInfo(key, int(props.size), props.last_modified)

    def list(self, prefix: str) -> Iterator[ObjectInfo]:
        with self._translate("list", prefix):
            for item in self._container.list_blobs(name_starts_with=prefix):
                if not item.name.startswith(STAGING):
                    yield ObjectInfo(item.name, int(item.size), item.last_modified)

    def delete(self, key: str) -> None:
        try:
            with self._translate("delete", key):
                self._blob(key).delete_blob()
        except NotFound:
            return

    def copy(self, source: str, target: str) -> None:
        """A server-side copy (Copy Blob: the same account authorizes the source)."""
        with self._translate("copy", source):
            self._blob(source).get_blob_properties()
            client = self._blob(target)
            client.start_copy_from_url(self._blob(source).url)
            deadline = time.monotonic() + COPY_WAIT
            while (status := client.get_blob_properties().copy.status) == "pending":
                if time.monotonic() > deadline:
                    client.abort_copy(client.get_blob_properties().copy.id)
                    raise StorageError(f"copy {source}: still pending after {COPY_WAIT:.0f} s")
                time.sleep(0.2)
        if status != "success":
            raise StorageError(f"copy {source} to {target}: {status}", permanent=False)

    # --- multipart: staged blocks, committed as one block list ---------------------------

    def create_multipart(self, key: str) -> str:
        upload_id = secrets.token_hex(12)
        marker = json.dumps({"key": key, "started": datetime.now(UTC).isoformat()})
        with self._translate("start upload of", key):
            self._blob(STAGING + upload_id).upload_blob(marker.encode(), overwrite=False)
        return upload_id

    def upload_part(self, key: str, upload_id: str, number: int, data: bytes) -> str:
        block = _block_id(upload_id, number)
        with self._translate(f"upload part {number} of", key):
            self._blob(key).stage_block(block, data, length=len(data))
        return block

    def complete_multipart(
        self, key: str, upload_id: str, parts: Sequence[tuple[int, str]]
    ) -> None:
        self._pending(key, upload_id)
        blocks = [BlobBlock(block_id=block) for _, block in sorted(parts)]
        with self._translate("complete upload of", key):
            self._blob(key).commit_block_list(blocks)
        self.delete(STAGING + upload_id)

    def abort_multipart(self, key: str, upload_id: str) -> None:
        # The staged blocks cannot be removed on their own; Azure drops them after 7 days.
        self.delete(STAGING + _safe_id(upload_id))

    def list_multipart(self, prefix: str) -> Iterator[PendingUpload]:
        with self._translate("list uploads under", prefix):
            markers = [item.name for item in self._container.list_blobs(STAGING)]
        for name in markers:
            try:
                recorded = json.loads(self.get(name))
            except NotFound:
                continue  # completed meanwhile
            if recorded["key"].startswith(prefix):
                started = datetime.fromisoformat(recorded["started"])
                yield PendingUpload(recorded["key"], name.removeprefix(STAGING), started)

    def _pending(self, key: str, upload_id: str) -> None:
        try:
            recorded = json.loads(self.get(STAGING + _safe_id(upload_id)))
        except NotFound:
            raise NotFound(f"upload {upload_id} of {key} does not exist") from None
        if recorded["key"] != key:
            raise StorageError(f"upload {upload_id} belongs to {recorded['key']}, not {key}")

    def _blob(self, key: str) -> Any:
        return self._container.get_blob_client(key)

    @contextmanager
    def _translate(self, action: str, key: str) -> Iterator[None]:
        try:
            yield
        except ResourceNotFoundError as exc:
            raise self._not_found(exc, key) from exc
        except ResourceExistsError as exc:
            raise StorageError(f"{key} already exists") from exc
        except ClientAuthenticationError as exc:
            raise StorageUnavailable(
                f"{action} {key or self.container_name}: access denied ({_code(exc)}); check "
                "AZURE_STORAGE_CONNECTION_STRING, or AZURE_STORAGE_ACCOUNT and AZURE_STORAGE_KEY"
            ) from exc
        except ServiceResponseError as exc:  # sent, but the answer was lost: try again
            raise StorageError(f"{action} {key}: {_first_line(exc)}", permanent=False) from exc
        except ServiceRequestError as exc:
            raise StorageUnavailable(
                f"cannot reach the container at {self.endpoint}: {_first_line(exc)}; check the "
                "account's endpoint and the network",
                permanent=False,
            ) from exc
        except HttpResponseError as exc:
            raise self._http_error(exc, action, key) from exc

    def _not_found(self, exc: ResourceNotFoundError, key: str) -> StorageError:
        if _code(exc) == "ContainerNotFound" or not key:
            return StorageUnavailable(
                f"container {self.container_name} does not exist at {self.endpoint}"
            )
        return NotFound(f"{key} does not exist in {self.url}")

    def _http_error(self, exc: HttpResponseError, action: str, key: str) -> StorageError:
        status = int(exc.status_code or 0)
        if status == 412 or _code(exc) in ("BlobAlreadyExists", "ConditionNotMet"):
            return StorageError(f"{key} already exists")
        if status == 403:
            return StorageUnavailable(
                f"{action} {key or self.container_name}: access denied ({_code(exc)}); check "
                "AZURE_STORAGE_CONNECTION_STRING, or AZURE_STORAGE_ACCOUNT and AZURE_STORAGE_KEY"
            )
        # No status: the body was cut off (IncompleteReadError) or could not be read.
        transient = status >= 500 or status in (0, 408, 429)
        return StorageError(f"{action} {key}: {_first_line(exc)}", permanent=not transient)


def _container(settings: AzureSettings, name: str, attempts: int) -> ContainerClient:
    # The SDK's default waits 15 s before its first retry; 1 s, then 3, 5, 9, 17 s (+-1 s).
    retry = ExponentialRetry(
        initial_backoff=1, increment_base=2, retry_total=max(0, attempts - 1), random_jitter_range=1
    )
    options: dict[str, Any] = {
        "retry_policy": retry,
        "connection_timeout": 10,
        "read_timeout": 120,
    }
    if settings.connection_string is not None:
        service = BlobServiceClient.from_connection_string(
            settings.connection_string.reveal(), **options
        )
    else:
        assert settings.account is not None and settings.key is not None
        endpoint = settings.endpoint or f"https://{settings.account}.blob.core.windows.net"
        credential = {"account_name": settings.account, "account_key": settings.key.reveal()}
        service = BlobServiceClient(endpoint, credential=credential, **options)
    return service.get_container_client(name)


def _block_id(upload_id: str, number: int) -> str:
    # Every block id of a blob must have the same length: the upload's and a 5-digit number.
    return base64.b64encode(f"{upload_id}-{number:05d}".encode()).decode()


def _safe_id(upload_id: str) -> str:
    if not upload_id.isalnum():
        raise StorageError(f"refusing unsafe upload id {upload_id!r}")
    return upload_id


def _code(exc: HttpResponseError) -> str:
    code = getattr(exc, "error_code", None) or exc.status_code or ""
    return str(getattr(code, "value", code))  # the SDK's StorageErrorCode enum, as Azure says it


def _first_line(exc: Exception) -> str:
    return (str(exc).strip().splitlines() or [type(exc).__name__])[0]
