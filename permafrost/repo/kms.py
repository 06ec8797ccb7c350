"""The KMS client behind KMS_KEY_ID (AWS KMS and compatible), as two functions for KmsKey.

Its endpoint is KMS_ENDPOINT_URL, else the S3 settings' endpoint; region and credentials are the
S3 settings'. A failure is one line: a disabled or unknown key is a key error, an unreachable
service a KmsUnavailable (the backup fails before it writes anything).
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Any, TypeVar

import boto3
from botocore.config import Config
from botocore.exceptions import BotoCoreError, ClientError

from permafrost import errors
from permafrost.config.settings import Settings
from permafrost.repo.keys import KmsKey

T = TypeVar("T")
_KEY_ERRORS = (
    "DisabledException",
    "NotFoundException",
    "KMSInvalidStateException",
    "AccessDeniedException",
    "InvalidCiphertextException",
    "IncorrectKeyException",
)


def kms_key(settings: Settings) -> KmsKey:
    key_id = settings.kms_key_id or ""
    client = _client(settings)
    endpoint = settings.kms_endpoint_url or settings.storage.endpoint_url or "AWS KMS"

    def generate() -> tuple[bytes, bytes]:
        # DescribeKey first: a disabled key is named as such (some KMS-compatible services, moto
        # among them, would still hand out data keys), then one GenerateDataKey per process.
        described = _call(
            lambda: client.describe_key(KeyId=key_id), "DescribeKey", key_id, endpoint
        )
        state = described["KeyMetadata"].get("KeyState", "Enabled")
        if state != "Enabled":
            raise errors.WrongKey(
                f"KMS key {key_id} is {state} (DisabledException): enable it, or set KMS_KEY_ID "
                "to an enabled key; no backup can be written with it"
            )
        answer = _call(
            lambda: client.generate_data_key(KeyId=key_id, KeySpec="AES_256"),
            "GenerateDataKey",
            key_id,
            endpoint,
        )
        return bytes(answer["Plaintext"]), bytes(answer["CiphertextBlob"])

    def open_blob(blob: bytes) -> bytes:
        answer = _call(lambda: client.decrypt(CiphertextBlob=blob), "Decrypt", key_id, endpoint)
        return bytes(answer["Plaintext"])

    return KmsKey(key_id, generate, open_blob)


def _client(settings: Settings) -> Any:
    storage = settings.storage
    config = Config(
        region_name=storage.region or "us-east-1",
        retries={"mode": "standard", "max_attempts": 3},
        connect_timeout=5,
        read_timeout=30,
    )
    return boto3.session.Session().client(
        "kms",
        endpoint_url=settings.kms_endpoint_url or storage.endpoint_url,
        aws_access_key_id=storage.access_key_id.reveal() if storage.access_key_id else None,
        aws_secret_access_key=(
            storage.secret_access_key.reveal() if storage.secret_access_key else None
        ),
        config=config,
    )


def _call(action: Callable[[], T], name: str, key_id: str, endpoint: str) -> T:
    try:
        return action()
    except ClientError as exc:
        error = exc.response.get("Error", {})
        code, message = str(error.get("Code", "")), str(error.get("Message", ""))
        if code in _KEY_ERRORS:
            raise errors.WrongKey(
                f"KMS {name} with key {key_id} refused: {code} {message}".strip()
            ) from None
        raise errors.KmsUnavailable(
            f"KMS {name} at {endpoint} failed: {code} {message}".strip()
        ) from None
    except BotoCoreError as exc:
        raise errors.KmsUnavailable(
            f"KMS at {endpoint} cannot be reached ({exc}); nothing was written"
        ) from None
