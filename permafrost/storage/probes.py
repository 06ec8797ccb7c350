"""What the configured credentials may do in the bucket, found by trying: the vocabulary of
`PermissionProbing` (storage/base.py), which S3 implements (storage/s3probes.py).

Each probe is one harmless request: a list of one key, a put, get and delete of a probe object
of its own, reads of the bucket's settings. Nothing that is there is changed: the lifecycle rules
in particular are only read, so whether the credentials may write them is not probed.
"""

from __future__ import annotations

from dataclasses import dataclass
from enum import StrEnum


class Action(StrEnum):
    LIST = "list"
    GET = "get"
    PUT = "put"
    DELETE = "delete"
    LIST_VERSIONS = "list-versions"
    GET_VERSION = "get-version"
    DELETE_VERSION = "delete-version"
    GET_LIFECYCLE = "get-lifecycle"
    PUT_LIFECYCLE = "put-lifecycle"
    GET_OBJECT_LOCK = "get-object-lock-configuration"
    GET_VERSIONING = "get-bucket-versioning"


# The IAM action each one is, as AWS S3 names it in a policy.
IAM_ACTIONS = {
    Action.LIST: "s3:ListBucket",
    Action.GET: "s3:GetObject",
    Action.PUT: "s3:PutObject",
    Action.DELETE: "s3:DeleteObject",
    Action.LIST_VERSIONS: "s3:ListBucketVersions",
    Action.GET_VERSION: "s3:GetObjectVersion",
    Action.DELETE_VERSION: "s3:DeleteObjectVersion",
    Action.GET_LIFECYCLE: "s3:GetLifecycleConfiguration",
    Action.PUT_LIFECYCLE: "s3:PutLifecycleConfiguration",
    Action.GET_OBJECT_LOCK: "s3:GetBucketObjectLockConfiguration",
    Action.GET_VERSIONING: "s3:GetBucketVersioning",
}


class Access(StrEnum):
    ALLOWED = "allowed"
    DENIED = "denied"
    UNSUPPORTED = "not supported"  # the provider has no such operation
    NOT_PROBED = "not probed"  # a probe would change something, or needs what was denied
    UNKNOWN = "unknown"  # the probe failed for another reason (its detail says)


@dataclass(frozen=True)
class Probe:
    action: Action
    access: Access
    detail: str = ""

    @property
    def iam(self) -> str:
        return IAM_ACTIONS[self.action]

    def to_json(self) -> dict[str, str]:
        return {
            "action": str(self.action),
            "iam": self.iam,
            "access": str(self.access),
            "detail": self.detail,
        }
