"""One harmless request per permission against an S3 bucket (`S3Storage.probe_permissions`).

The object probes use an object of their own ({prefix}/.probe-{random}): put, read back, delete,
and on a versioned bucket its versions read and deleted, so nothing is left behind when the
credentials may do all that. Where they may not, what is left is that small object (or a delete
marker), and the probe says so. The bucket's settings are only read: the lifecycle rules are
never written, so put-lifecycle is reported as not probed.

A "denied" is S3's 403 (AccessDenied); a "not supported" is a provider answering that it has no
such operation (501 NotImplemented); anything else is "unknown" with what the provider said. A
bucket that cannot be reached at all raises StorageUnavailable, as every other operation does.
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

from botocore.exceptions import ClientError
from botocore.exceptions import ConnectionError as BotoConnectionError

from permafrost.errors import StorageUnavailable
from permafrost.storage.probes import Access, Action, Probe

BODY = b"permafrost doctor: permission probe; safe to delete\n"
_DENIED = {"AccessDenied", "403", "Forbidden", "AllAccessDisabled"}
_UNSUPPORTED = {"NotImplemented", "501", "MethodNotAllowed", "405", "XNotImplemented"}
# Answers that mean the request was allowed, and there was only nothing to give.
_EMPTY = {
    "NoSuchLifecycleConfiguration",
    "ObjectLockConfigurationNotFoundError",
    "NoSuchKey",
    "404",
    "NoSuchVersion",
}


def probe(
    client: Any, bucket: str, root: str, probe_key: str, read_key: str, writes: bool = True
) -> list[Probe]:
    """Every probe, in the order they depend on each other; without writes (the dashboard),
    only the reads: put, delete and delete-version are then not probed."""
    versioning = _try(Action.GET_VERSIONING, lambda: client.get_bucket_versioning(Bucket=bucket))
    versioned = versioning.access is Access.ALLOWED and versioning.detail in (
        "Enabled",
        "Suspended",
    )
    probes = [versioning]
    probes.append(_try(Action.LIST, lambda: _list(client, bucket, root)))
    if writes:
        probes += _object_probes(client, bucket, root, probe_key, read_key, versioned)
    else:
        probes += _reads_only(client, bucket, root, read_key, versioned)
    probes.append(_lifecycle(client, bucket))
    probes.append(
        Probe(Action.PUT_LIFECYCLE, Access.NOT_PROBED, "doctor never changes the lifecycle rules")
    )
    probes.append(
        _try(Action.GET_OBJECT_LOCK, lambda: client.get_object_lock_configuration(Bucket=bucket))
    )
    return probes


def _object_probes(
    client: Any, bucket: str, root: str, probe_key: str, read_key: str, versioned: bool
) -> list[Probe]:
    put, version_id = _put(client, bucket, probe_key)
    stored = put.access is Access.ALLOWED
    probes = [put, _get(client, bucket, probe_key if stored else read_key, stored)]
    probes.append(_delete(client, bucket, probe_key, stored))
    if versioned:
        probes += _version_probes(client, bucket, root, probe_key, version_id)
    return probes


def _reads_only(client: Any, bucket: str, root: str, read_key: str, versioned: bool) -> list[Probe]:
    why = "nothing is written from here (`permafrost doctor` probes it)"
    probes = [_get(client, bucket, read_key, True), Probe(Action.PUT, Access.NOT_PROBED, why)]
    probes.append(Probe(Action.DELETE, Access.NOT_PROBED, why))
    if versioned:
        probes.append(
            _try(
                Action.LIST_VERSIONS,
                lambda: client.list_object_versions(Bucket=bucket, Prefix=root, MaxKeys=1) and "",
            )
        )
        probes.append(Probe(Action.DELETE_VERSION, Access.NOT_PROBED, why))
    return probes


def _list(client: Any, bucket: str, root: str) -> str:
    client.list_objects_v2(Bucket=bucket, Prefix=root, MaxKeys=1)
    return ""


def _put(client: Any, bucket: str, key: str) -> tuple[Probe, str | None]:
    found: dict[str, Any] = {}

    def put() -> str:
        found.update(client.put_object(Bucket=bucket, Key=key, Body=BODY))
        return f"wrote {key}"

    return _try(Action.PUT, put), found.get("VersionId")


def _get(client: Any, bucket: str, key: str, own: bool) -> Probe:
    def get() -> str:
        client.get_object(Bucket=bucket, Key=key)["Body"].read()
        return f"read {key}" if own else f"read {key} (the probe object could not be written)"

    return _try(Action.GET, get)


def _delete(client: Any, bucket: str, key: str, stored: bool) -> Probe:
    probe = _try(Action.DELETE, lambda: client.delete_object(Bucket=bucket, Key=key) and "")
    if probe.access is not Access.ALLOWED and stored:
        left = f"; the probe object {key} is left in the bucket: delete it with other credentials"
        return Probe(probe.action, probe.access, probe.detail + left)
    return probe


def _version_probes(
    client: Any, bucket: str, root: str, key: str, version_id: str | None
) -> list[Probe]:
    """A versioned bucket: list versions, read the probe's own version, then delete each of its
    versions and delete markers (which only s3:DeleteObjectVersion may)."""
    probes = [
        _try(
            Action.LIST_VERSIONS,
            lambda: client.list_object_versions(Bucket=bucket, Prefix=root, MaxKeys=1) and "",
        )
    ]
    if version_id is None:
        probes.append(Probe(Action.GET_VERSION, Access.NOT_PROBED, "no probe object was written"))
    else:
        probes.append(
            _try(
                Action.GET_VERSION,
                lambda: (
                    client.get_object(Bucket=bucket, Key=key, VersionId=version_id)["Body"].read()
                    and ""
                ),
            )
        )
    probes.append(_delete_versions(client, bucket, key))
    return probes


def _delete_versions(client: Any, bucket: str, key: str) -> Probe:
    try:
        listed = client.list_object_versions(Bucket=bucket, Prefix=key)
    except ClientError as exc:
        return Probe(Action.DELETE_VERSION, Access.NOT_PROBED, f"its versions: {_message(exc)}")
    found = [
        item["VersionId"]
        for item in [*listed.get("Versions", []), *listed.get("DeleteMarkers", [])]
        if item["Key"] == key
    ]
    if not found:
        return Probe(Action.DELETE_VERSION, Access.NOT_PROBED, "the probe left no version")
    outcome = Probe(Action.DELETE_VERSION, Access.ALLOWED, "")
    for version in found:
        outcome = _try(Action.DELETE_VERSION, _version_deleter(client, bucket, key, version))
        if outcome.access is not Access.ALLOWED:
            left = f"; old versions of the probe object {key} are left in the bucket"
            return Probe(outcome.action, outcome.access, outcome.detail + left)
    return outcome


def _version_deleter(client: Any, bucket: str, key: str, version: str) -> Callable[[], str]:
    def delete() -> str:
        client.delete_object(Bucket=bucket, Key=key, VersionId=version)
        return ""

    return delete


def _lifecycle(client: Any, bucket: str) -> Probe:
    def read() -> str:
        try:
            rules = client.get_bucket_lifecycle_configuration(Bucket=bucket).get("Rules", [])
        except ClientError as exc:
            if _code(exc) == "NoSuchLifecycleConfiguration":
                return "the bucket has no lifecycle rules"
            raise
        ours = sum(1 for r in rules if str(r.get("ID", "")).startswith("permafrost-"))
        return f"{len(rules)} rule(s), {ours} of them Permafrost's"

    return _try(Action.GET_LIFECYCLE, read)


def _try(action: Action, call: Callable[[], Any]) -> Probe:
    """Run one probe: allowed (with what the call said, when it says something), or why not."""
    try:
        said = call()
    except ClientError as exc:
        code = _code(exc)
        if code in _DENIED:
            return Probe(action, Access.DENIED, _message(exc))
        if code in _UNSUPPORTED:
            return Probe(action, Access.UNSUPPORTED, _message(exc))
        if code in _EMPTY:
            return Probe(action, Access.ALLOWED, f"nothing there ({code})")
        return Probe(action, Access.UNKNOWN, _message(exc))
    except BotoConnectionError as exc:
        raise StorageUnavailable(f"cannot reach the bucket to probe {action}: {exc}") from exc
    return Probe(action, Access.ALLOWED, _said(action, said))


def _said(action: Action, said: Any) -> str:
    if action is Action.GET_VERSIONING and isinstance(said, dict):
        return str(said.get("Status") or "never enabled")
    if action is Action.GET_OBJECT_LOCK and isinstance(said, dict):
        enabled = said.get("ObjectLockConfiguration", {}).get("ObjectLockEnabled")
        return "object lock enabled" if enabled == "Enabled" else "no object lock"
    return said if isinstance(said, str) else ""


def _code(exc: ClientError) -> str:
    return str(exc.response.get("Error", {}).get("Code", ""))


def _message(exc: ClientError) -> str:
    error = exc.response.get("Error", {})
    return f"{error.get('Code', '')}: {error.get('Message', '')}".strip(": ")
