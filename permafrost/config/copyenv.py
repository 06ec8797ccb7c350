"""Copy destinations written back as variables, for a process that reads an env file: the
`wal-fetch` that PostgreSQL runs as restore_command falls back to the same copies, segment by
segment, as the `pitr` that started it (permafrost/readfrom.py)."""

from __future__ import annotations

from permafrost.config.copies import CopySettings
from permafrost.config.env import Secret
from permafrost.config.storage import StorageSettings


def copies_env(copies: CopySettings) -> dict[str, str]:
    """COPY_STORAGE_URLS and each copy's COPY_<N>_* storage variables (resolved values)."""
    if not copies.destinations:
        return {}
    values = {
        "COPY_STORAGE_URLS": " ".join(f"{d.name}={d.storage.url}" for d in copies.destinations)
    }
    for index, destination in enumerate(copies.destinations, start=1):
        for name, value in storage_env(destination.storage).items():
            values[f"COPY_{index}_{name}"] = value
    return values


def storage_env(storage: StorageSettings) -> dict[str, str]:
    """The variables that open this storage again (STORAGE_URL itself left out)."""
    values: dict[str, str | Secret | None] = {
        "S3_ENDPOINT_URL": storage.endpoint_url,
        "S3_REGION": storage.region,
        "S3_ACCESS_KEY_ID": storage.access_key_id,
        "S3_SECRET_ACCESS_KEY": storage.secret_access_key,
        "S3_PROVIDER": storage.provider,
        "S3_ADDRESSING_STYLE": storage.addressing_style,
        "S3_RETRY_MODE": storage.retry_mode,
        "S3_MAX_ATTEMPTS": str(storage.max_attempts),
    }
    if storage.azure is not None:
        values |= {
            "AZURE_STORAGE_CONNECTION_STRING": storage.azure.connection_string,
            "AZURE_STORAGE_ACCOUNT": storage.azure.account,
            "AZURE_STORAGE_KEY": storage.azure.key,
            "AZURE_STORAGE_ENDPOINT": storage.azure.endpoint,
        }
    if storage.gcs is not None:
        values |= {
            "GOOGLE_APPLICATION_CREDENTIALS": _path(storage.gcs.credentials_file),
            "GCS_PROJECT": storage.gcs.project,
            "GCS_ENDPOINT_URL": storage.gcs.endpoint,
        }
    if storage.sftp is not None:
        values |= {
            "SFTP_KNOWN_HOSTS": str(storage.sftp.known_hosts),
            "SFTP_KEY_PATH": _path(storage.sftp.key_file),
            "SFTP_KEY_PASSPHRASE": storage.sftp.key_passphrase,
            "SFTP_PASSWORD": storage.sftp.password,
        }
    return {name: _plain(value) for name, value in values.items() if value}


def _plain(value: str | Secret) -> str:
    return value.reveal() if isinstance(value, Secret) else value


def _path(path: object) -> str | None:
    return str(path) if path is not None else None
