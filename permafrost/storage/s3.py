"""S3-compatible storage through boto3: AWS S3, DigitalOcean Spaces, MinIO, and others.

Retries are botocore's own (standard or adaptive mode), so `503 SlowDown` and dropped
connections back off and try again; what is left when they give up is translated here into
`NotFound`, `StorageUnavailable` or `StorageError`, with a message that names what to check.
"""

from __future__ import annotations

import base64
import builtins
import hashlib
import time
from collections.abc import Generator, Iterator, Sequence
from contextlib import contextmanager
from datetime import UTC, datetime, timedelta
from typing import Any

import boto3
from botocore.config import Config
from botocore.exceptions import (
    BotoCoreError,
    ClientError,
    NoCredentialsError,
)
from botocore.exceptions import (
    ConnectionError as BotoConnectionError,
)

from permafrost.config.env import Secret
from permafrost.config.storage import StorageSettings
from permafrost.errors import (
    AccessDenied,
    LockUnsupported,
    NotFound,
    ObjectLocked,
    StorageError,
    StorageUnavailable,
)
from permafrost.storage.base import BucketLock, LockState, ObjectInfo, ObjectVersion, PendingUpload
from permafrost.storage.conditional import put_checked
from permafrost.storage.lock import LockPolicy, bucket_without_lock
from permafrost.storage.probes import Probe

_NOT_FOUND = {"404", "NoSuchKey", "NotFound", "NoSuchUpload", "NoSuchLifecycleConfiguration"}
_DENIED = {"AccessDenied", "InvalidAccessKeyId", "SignatureDoesNotMatch", "403", "Forbidden"}


class S3Storage:
    def __init__(self, settings: StorageSettings, lock: LockPolicy | None = None) -> None:
        self.bucket = settings.bucket
        self.endpoint = settings.endpoint_url or "AWS S3"
        self.attempts = settings.max_attempts
        self._client = _client(settings)
        self._provider_honours = False  # until the repository's probe says so
        self._lock = lock
        self._lock_checked = False  # the bucket's lock configuration, read before a first write

    @property
    def url(self) -> str:
        return f"s3://{self.bucket} at {self.endpoint}"

    def check(self) -> None:
        with self._translate("reach the bucket", ""):
            self._client.head_bucket(Bucket=self.bucket)
        if self._lock is not None:
            self._require_lock()

    def put(self, key: str, data: bytes, *, if_absent: bool = False) -> None:
        """With if_absent: the provider's `If-None-Match: *` once the repository's probe found
        it honoured, else checked here (conditional.put_checked)."""
        if if_absent and not self._provider_honours:
            put_checked(self, key, data)
        elif if_absent:
            self.put_if_none_match(key, data)
        else:
            with self._translate("put", key):
                self._client.put_object(
                    Bucket=self.bucket, Key=key, Body=data, **self._lock_args(key, data)
                )

    def put_if_none_match(self, key: str, data: bytes) -> None:
        extra = self._lock_args(key, data)
        with self._translate("put", key):
            self._client.put_object(
                Bucket=self.bucket, Key=key, Body=data, IfNoneMatch="*", **extra
            )

    def put_verified(self, key: str, data: bytes, *, if_absent: bool = False) -> bool:
        """A PUT with the body's Content-MD5 (the provider refuses another body: BadDigest);
        True when the answer's ETag is that MD5 (VerifiedPut)."""
        if if_absent and not self._provider_honours:
            put_checked(self, key, data)  # reads it back and compares
            return True
        md5 = hashlib.md5(data, usedforsecurity=False).digest()
        extra = {**self._lock_args(key, data), "ContentMD5": base64.b64encode(md5).decode()}
        if if_absent:
            extra["IfNoneMatch"] = "*"
        with self._translate("put", key):
            response = self._client.put_object(Bucket=self.bucket, Key=key, Body=data, **extra)
        return str(response.get("ETag", "")).strip('"') == md5.hex()

    def rely_on_provider(self, honoured: bool) -> None:
        self._provider_honours = honoured

    def get(self, key: str, offset: int = 0, length: int | None = None) -> bytes:
        """An object or a range of it. botocore retries a failed request, but not a body cut
        off after the headers arrived: that is retried here, with the same back-off."""
        return self._get(key, offset, length, None)

    def get_version(
        self, key: str, version_id: str, offset: int = 0, length: int | None = None
    ) -> bytes:
        return self._get(key, offset, length, version_id)

    def _get(self, key: str, offset: int, length: int | None, version_id: str | None) -> bytes:
        attempt = 1
        while True:
            try:
                return self._get_once(key, offset, length, version_id)
            except StorageError as exc:
                self._back_off(exc, attempt)
                attempt += 1

    def _back_off(self, exc: StorageError, attempt: int) -> None:
        """Re-raise a final failure, or wait before the next attempt at a transient one."""
        if exc.permanent or isinstance(exc, NotFound | StorageUnavailable):
            raise exc
        if attempt >= self.attempts:
            raise exc
        time.sleep(min(0.2 * 2 ** (attempt - 1), 5.0))

    def get_pieces(
        self, key: str, offset: int, length: int, piece: int
    ) -> Generator[bytes, None, None]:
        """One request for the whole range, read as it arrives; a body cut off midway is asked
        for again from where it stopped (the attempts count again after any progress)."""
        done, attempt = 0, 1
        while done < length:
            try:
                for block in self._pieces_once(key, offset + done, length - done, piece):
                    done, attempt = done + len(block), 1
                    yield block
            except StorageError as exc:
                self._back_off(exc, attempt)
                attempt += 1

    def _pieces_once(
        self, key: str, offset: int, length: int, piece: int
    ) -> Generator[bytes, None, None]:
        got = 0
        with self._translate("get", key):
            response = self._client.get_object(
                Bucket=self.bucket, Key=key, Range=f"bytes={offset}-{offset + length - 1}"
            )
            body = response["Body"]
            try:
                while got < length and (block := body.read(min(piece, length - got))):
                    got += len(block)
                    yield block
            finally:
                body.close()
        if got != length:
            raise StorageError(f"get {key}: got {got} of {length} bytes", permanent=False)

    def _get_once(self, key: str, offset: int, length: int | None, version_id: str | None) -> bytes:
        extra = {}
        if offset or length is not None:
            end = "" if length is None else str(offset + length - 1)
            extra["Range"] = f"bytes={offset}-{end}"
        if version_id is not None:
            extra["VersionId"] = version_id
        with self._translate("get", key):
            response = self._client.get_object(Bucket=self.bucket, Key=key, **extra)
            body: bytes = response["Body"].read()
        if length is not None and len(body) != length:
            raise StorageError(f"get {key}: got {len(body)} of {length} bytes", permanent=False)
        return body

    def head(self, key: str) -> ObjectInfo:
        with self._translate("head", key):
            response = self._client.head_object(Bucket=self.bucket, Key=key)
        return ObjectInfo(key, response["ContentLength"], response["LastModified"])

    def list(self, prefix: str) -> Iterator[ObjectInfo]:
        paginator = self._client.get_paginator("list_objects_v2")
        with self._translate("list", prefix):
            for page in paginator.paginate(Bucket=self.bucket, Prefix=prefix):
                for item in page.get("Contents", []):
                    yield ObjectInfo(item["Key"], item["Size"], item["LastModified"])

    def versioning(self) -> str:
        with self._translate("read the versioning of", ""):
            response = self._client.get_bucket_versioning(Bucket=self.bucket)
        return str(response.get("Status", ""))

    def list_versions(self, prefix: str) -> Iterator[ObjectVersion]:
        """Versions and delete markers, which S3 answers in two lists per page: merged back
        into one, each key's newest first (the latest first on a tie of whole seconds)."""
        paginator = self._client.get_paginator("list_object_versions")
        with self._translate("list versions under", prefix):
            for page in paginator.paginate(Bucket=self.bucket, Prefix=prefix):
                entries = [_version(v, False) for v in page.get("Versions", [])]
                entries += [_version(m, True) for m in page.get("DeleteMarkers", [])]
                entries.sort(key=lambda e: (e[0].key, -e[0].modified.timestamp(), not e[1]))
                yield from (version for version, _ in entries)

    def probe_permissions(
        self, probe_key: str, read_key: str, writes: bool = True
    ) -> builtins.list[Probe]:
        """What these credentials may do here, one harmless request each (s3probes.py)."""
        from permafrost.storage import s3probes  # start-up cost: only doctor probes

        root = probe_key.rsplit("/", 1)[0] + "/" if "/" in probe_key else ""
        return s3probes.probe(self._client, self.bucket, root, probe_key, read_key, writes)

    def delete(self, key: str) -> None:
        """Under OBJECT_LOCK, an object still locked or held is refused here (ObjectLocked),
        before S3 is asked: S3 would hide it behind a delete marker, and keep it all the same."""
        if self._lock is not None:
            try:
                state = self.lock_state(key)
            except NotFound:
                return  # removing one that is not there is not an error
            # What Permafrost locks, or holds, is refused; a key it leaves unlocked (pin.json,
            # a probe) goes, even where a bucket default retention keeps its version a while.
            locked = self._lock.tier_of(key) is not None
            if state.legal_hold or (locked and state.blocks(datetime.now(UTC))):
                raise ObjectLocked(state.why())
        with self._translate("delete", key):
            self._client.delete_object(Bucket=self.bucket, Key=key)

    def copy(self, source: str, target: str) -> None:
        """A server-side copy (multipart for large objects, by boto3's managed transfer)."""
        self.copy_from_bucket(self.bucket, source, target)

    def copy_from_bucket(self, bucket: str, source: str, target: str) -> None:
        """A server-side copy from another bucket at this endpoint, with these credentials."""
        from boto3.s3.transfer import TransferConfig  # start-up cost: only copies need it

        config = TransferConfig(multipart_threshold=256 * 1024 * 1024, max_concurrency=4)
        with self._translate("copy", source):
            self._client.copy({"Bucket": bucket, "Key": source}, self.bucket, target, Config=config)
        if self._lock is not None:
            # Set after the copy: a copy's lock headers want a checksum of a body it has none
            # of (moto refuses them), and the source's lock is not copied.
            self._require_lock()
            self._confirm_lock(target)

    def lifecycle_rules(self) -> builtins.list[dict[str, Any]]:
        """The bucket's lifecycle rules as S3 returns them; none set is an empty list."""
        try:
            with self._translate("read the lifecycle configuration of", self.bucket):
                response = self._client.get_bucket_lifecycle_configuration(Bucket=self.bucket)
        except NotFound:
            return []
        rules: builtins.list[dict[str, Any]] = response.get("Rules", [])
        return rules

    def put_lifecycle_rules(self, rules: builtins.list[dict[str, Any]]) -> None:
        with self._translate("write the lifecycle configuration of", self.bucket):
            if rules:
                self._client.put_bucket_lifecycle_configuration(
                    Bucket=self.bucket, LifecycleConfiguration={"Rules": rules}
                )
            else:
                self._client.delete_bucket_lifecycle(Bucket=self.bucket)

    def create_multipart(self, key: str) -> str:
        extra = self._lock_args(key)  # the lock goes on CreateMultipartUpload
        with self._translate("start upload of", key):
            response = self._client.create_multipart_upload(Bucket=self.bucket, Key=key, **extra)
        return str(response["UploadId"])

    def upload_part(self, key: str, upload_id: str, number: int, data: bytes) -> str:
        # S3 wants each part of a locked object with its Content-MD5.
        extra = {"ContentMD5": _md5(data)} if self._lock is not None else {}
        with self._translate(f"upload part {number} of", key):
            response = self._client.upload_part(
                Bucket=self.bucket,
                Key=key,
                UploadId=upload_id,
                PartNumber=number,
                Body=data,
                **extra,
            )
        return str(response["ETag"])

    def complete_multipart(
        self, key: str, upload_id: str, parts: Sequence[tuple[int, str]]
    ) -> None:
        listing = [{"PartNumber": n, "ETag": etag} for n, etag in sorted(parts)]
        with self._translate("complete upload of", key):
            self._client.complete_multipart_upload(
                Bucket=self.bucket,
                Key=key,
                UploadId=upload_id,
                MultipartUpload={"Parts": listing},
            )
        if self._lock is not None:
            self._confirm_lock(key)

    def abort_multipart(self, key: str, upload_id: str) -> None:
        try:
            with self._translate("abort upload of", key):
                self._client.abort_multipart_upload(Bucket=self.bucket, Key=key, UploadId=upload_id)
        except NotFound:
            return

    def list_multipart(self, prefix: str) -> Iterator[PendingUpload]:
        paginator = self._client.get_paginator("list_multipart_uploads")
        with self._translate("list uploads under", prefix):
            for page in paginator.paginate(Bucket=self.bucket, Prefix=prefix):
                for item in page.get("Uploads", []):
                    yield PendingUpload(item["Key"], item["UploadId"], item["Initiated"])

    # --- object lock (LockingStorage) -------------------------------------------------------

    @property
    def locking(self) -> bool:
        return self._lock is not None

    def bucket_lock(self) -> BucketLock:
        try:
            with self._translate("read the object lock configuration of", self.bucket):
                response = self._client.get_object_lock_configuration(Bucket=self.bucket)
        except StorageError as exc:
            if isinstance(exc, StorageUnavailable) or not exc.permanent:
                raise
            return BucketLock(enabled=False)  # none configured, or the provider has no lock
        config = response.get("ObjectLockConfiguration", {})
        default = config.get("Rule", {}).get("DefaultRetention", {})
        days = default.get("Days") or (365 * default["Years"] if default.get("Years") else None)
        return BucketLock(
            enabled=config.get("ObjectLockEnabled") == "Enabled",
            default_mode=default.get("Mode"),
            default_days=days,
        )

    def lock_state(self, key: str) -> LockState:
        with self._translate("head", key):
            response = self._client.head_object(Bucket=self.bucket, Key=key)
        return LockState(
            key,
            mode=response.get("ObjectLockMode"),
            retain_until=response.get("ObjectLockRetainUntilDate"),
            legal_hold=response.get("ObjectLockLegalHoldStatus") == "ON",
        )

    def set_legal_hold(self, key: str, on: bool) -> None:
        status = "ON" if on else "OFF"
        with self._translate(f"set the legal hold {status} on", key):
            self._client.put_object_legal_hold(
                Bucket=self.bucket, Key=key, LegalHold={"Status": status}
            )

    def _require_lock(self) -> None:
        """Refuse (LockUnsupported) a bucket without object lock, once per process."""
        if self._lock_checked:
            return
        if not self.bucket_lock().enabled:
            assert self._lock is not None
            raise bucket_without_lock(self.url, self._lock.mode.lower())
        self._lock_checked = True

    def _confirm_lock(self, key: str) -> None:
        """A completed multipart object has the lock CreateMultipartUpload asked for on AWS;
        a provider that dropped it (moto does), or a copy, gets it set (or extended) here, so no
        object goes unlocked or locked short."""
        assert self._lock is not None
        until = self._lock.retain_until(key, datetime.now(UTC))
        current = self.lock_state(key).retain_until if until is not None else None
        # Within an hour: the lock CreateMultipartUpload set when the upload began.
        if until is None or (current is not None and current >= until - timedelta(hours=1)):
            return
        retention = {"Mode": self._lock.mode.value, "RetainUntilDate": until}
        with self._translate("lock", key):
            self._client.put_object_retention(Bucket=self.bucket, Key=key, Retention=retention)

    def _lock_args(self, key: str, data: bytes | None = None) -> dict[str, Any]:
        """The lock headers a write of `key` carries now (none without OBJECT_LOCK)."""
        if self._lock is None:
            return {}
        self._require_lock()
        extra: dict[str, Any] = {} if data is None else {"ContentMD5": _md5(data)}
        until = self._lock.retain_until(key, datetime.now(UTC))
        if until is not None:
            extra["ObjectLockMode"] = self._lock.mode.value
            extra["ObjectLockRetainUntilDate"] = until
        return extra

    @contextmanager
    def _translate(self, action: str, key: str) -> Iterator[None]:
        try:
            yield
        except ClientError as exc:
            raise _client_error(exc, action, key, self) from exc
        except NoCredentialsError:
            raise StorageUnavailable(
                "no S3 credentials: set S3_ACCESS_KEY_ID and S3_SECRET_ACCESS_KEY "
                "(or DO_SPACES_KEY and DO_SPACES_SECRET)"
            ) from None
        except BotoConnectionError as exc:
            raise StorageUnavailable(
                f"cannot reach the bucket at {self.endpoint}: {_reason(exc)}; "
                "check S3_ENDPOINT_URL and the network",
                permanent=False,
            ) from exc
        except BotoCoreError as exc:
            raise StorageError(f"{action} {key}: {exc}", permanent=False) from exc


def _client(settings: StorageSettings) -> Any:
    retries: Any = {"mode": settings.retry_mode, "max_attempts": settings.max_attempts}
    addressing: Any = {"addressing_style": settings.addressing_style}
    config = Config(
        region_name=settings.region,
        signature_version="s3v4",
        retries=retries,
        s3=addressing,
        connect_timeout=10,
        read_timeout=120,
        max_pool_connections=max(10, settings.concurrency * 2 + 2),
        request_checksum_calculation="when_required",
        response_checksum_validation="when_required",
    )
    return boto3.session.Session().client(
        "s3",
        endpoint_url=settings.endpoint_url,
        aws_access_key_id=_reveal(settings.access_key_id),
        aws_secret_access_key=_reveal(settings.secret_access_key),
        config=config,
    )


def _md5(data: bytes) -> str:
    return base64.b64encode(hashlib.md5(data, usedforsecurity=False).digest()).decode()


def _version(item: dict[str, Any], deleted: bool) -> tuple[ObjectVersion, bool]:
    """An entry of ListObjectVersions, and whether S3 marks it the key's latest."""
    version = ObjectVersion(
        item["Key"], str(item["VersionId"]), int(item.get("Size", 0)), item["LastModified"], deleted
    )
    return version, bool(item.get("IsLatest"))


def _reveal(secret: Secret | None) -> str | None:
    return secret.reveal() if secret else None


def _client_error(exc: ClientError, action: str, key: str, storage: S3Storage) -> StorageError:
    error = exc.response.get("Error", {})
    code = str(error.get("Code", ""))
    status = int(exc.response.get("ResponseMetadata", {}).get("HTTPStatusCode", 0) or 0)
    if code in _NOT_FOUND and key:
        return NotFound(f"{key} does not exist in {storage.url}")
    if code in ("NoSuchBucket",) or (code in _NOT_FOUND and not key):
        return StorageUnavailable(f"bucket {storage.bucket} does not exist at {storage.endpoint}")
    if code in _DENIED:
        return AccessDenied(
            f"{action} {key or storage.bucket}: access denied ({code}); check the access key, "
            "secret and bucket policy"
        )
    if code == "ObjectLockConfigurationNotFoundError" or (
        code in ("NotImplemented", "InvalidRequest") and "lock" in action
    ):
        return LockUnsupported(f"{action} {storage.bucket}: {error.get('Message') or code}")
    if code in ("PreconditionFailed", "412", "ConditionalRequestConflict"):
        return StorageError(f"{key} already exists")
    # BadDigest: the body changed on the way (the Content-MD5 sent with it did not match).
    transient = status >= 500 or code in (
        "SlowDown",
        "RequestTimeout",
        "InternalError",
        "BadDigest",
    )
    message = error.get("Message") or code or f"HTTP {status}"
    return StorageError(f"{action} {key}: {message}", permanent=not transient)


def _reason(exc: Exception) -> str:
    text = str(exc)
    return text.split(": ", 1)[-1] if ": " in text else text
