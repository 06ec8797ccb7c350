"""COPY_STORAGE_URLS and each copy's COPY_<N>_* settings (config/copies.py)."""

from __future__ import annotations

from pathlib import Path

import pytest

from permafrost.config.settings import Settings
from permafrost.errors import ConfigError


def test_no_copies_by_default() -> None:
    settings = Settings.from_env({})
    assert settings.copies.destinations == ()
    assert settings.copies.max_lag == 2 * 86400
    assert settings.copies.upload_rate_limit == 0


def test_named_and_positional_copies_with_their_own_credentials(tmp_path: Path) -> None:
    creds = tmp_path / "offsite.env"
    creds.write_text("S3_ACCESS_KEY_ID=file-key\nS3_SECRET_ACCESS_KEY=file-secret\n")
    env = {
        "S3_ACCESS_KEY_ID": "primary-key",
        "COPY_STORAGE_URLS": "offsite=s3://other/pf, file:///tmp/second",
        "COPY_1_S3_ENDPOINT_URL": "http://127.0.0.1:9999",
        "COPY_1_ENV_FILE": str(creds),
        "COPY_1_S3_ACCESS_KEY_ID": "prefixed-key",
        "COPY_1_TIERS": "compliance",
        "COPY_1_COMPLIANCE_RETENTION_DAYS": "400",
        "COPY_2_UPLOAD_RATE_LIMIT": "512k",
        "UPLOAD_RATE_LIMIT": "20M",
        "COPY_MAX_LAG": "36h",
    }
    copies = Settings.from_env(env).copies
    offsite, second = copies.destinations
    assert (offsite.name, offsite.index, second.name, second.index) == ("offsite", 1, "copy2", 2)
    assert offsite.storage.url == "s3://other/pf"
    assert offsite.storage.endpoint_url == "http://127.0.0.1:9999"
    assert offsite.storage.access_key_id is not None
    assert offsite.storage.access_key_id.reveal() == "prefixed-key"  # the prefixed one wins
    assert offsite.storage.secret_access_key is not None
    assert offsite.storage.secret_access_key.reveal() == "file-secret"
    assert offsite.tiers == ("compliance",)
    assert offsite.compliance_retention_days == 400
    assert offsite.rate_limit == 20 * 1024**2  # UPLOAD_RATE_LIMIT by default
    assert second.storage.scheme == "file"
    assert second.rate_limit == 512 * 1024
    assert copies.max_lag == 36 * 3600
    assert copies.named("copy2") is second
    with pytest.raises(ConfigError, match="no copy destination named 'nope'"):
        copies.named("nope")


@pytest.mark.parametrize(
    ("env", "message"),
    [
        ({"COPY_STORAGE_URLS": "a=s3://x a=s3://y"}, "names 'a' twice"),
        ({"COPY_STORAGE_URLS": "bad!=s3://x"}, "not a usable name"),
        ({"COPY_STORAGE_URLS": "ftp://x"}, r"copy 'copy1' \(COPY_1_\*\): STORAGE_URL must start"),
        ({"COPY_STORAGE_URLS": "s3://x", "COPY_1_TIERS": "daily"}, "COPY_1_TIERS"),
        ({"UPLOAD_RATE_LIMIT": "fast"}, "UPLOAD_RATE_LIMIT='fast' is not a rate"),
        ({"COPY_STORAGE_URLS": "azure://c/p"}, r"COPY_1_\*.*AZURE_STORAGE_CONNECTION_STRING"),
    ],
)
def test_bad_copy_settings_are_refused_with_one_line(env: dict[str, str], message: str) -> None:
    with pytest.raises(ConfigError, match=message):
        Settings.from_env(env)
