from __future__ import annotations

from datetime import UTC, datetime

import pytest
from hypothesis import given
from hypothesis import strategies as st

from permafrost import layout
from permafrost.errors import UsageError


def test_it_builds_keys_with_the_tier_first() -> None:
    backup_id = layout.new_backup_id(datetime(2026, 11, 22, 2, 0, tzinfo=UTC))
    assert backup_id.startswith("20261122T020000Z-")
    key = layout.data_key("pfx/", "standard", "shop", backup_id)
    assert key == f"pfx/standard/shop/{backup_id}/data.pfe"
    assert layout.manifest_key("", "compliance", "shop", backup_id) == (
        f"compliance/shop/{backup_id}/manifest.json"
    )
    assert layout.repository_config_key("a/b") == "a/b/permafrost.json"
    assert layout.backup_time(backup_id) == datetime(2026, 11, 22, 2, 0, tzinfo=UTC)


def test_it_parses_what_it_builds() -> None:
    backup_id = layout.new_backup_id()
    key = layout.manifest_key("p", "keep", "db-1.x", backup_id)
    assert layout.parse_backup_key("p", key) == layout.BackupKey(
        "keep", "db-1.x", backup_id, "manifest.json"
    )
    assert layout.parse_backup_key("other", key) is None
    assert layout.parse_backup_key("p", "p/permafrost.json") is None


@pytest.mark.parametrize(
    "name", ["../etc", "..", "a/b", "/abs", "nul\x00", "", "x" * 64, ".hidden"]
)
def test_it_refuses_names_that_could_escape_their_folder(name: str) -> None:
    with pytest.raises(UsageError):
        layout.check_name(name)


@pytest.mark.parametrize(
    "backup_id", ["latest", "../x", "20261122T020000Z-zzzzzz", "", "20261122T020000Z-abcdef\n"]
)
def test_it_refuses_malformed_backup_ids(backup_id: str) -> None:
    with pytest.raises(UsageError, match="permafrost list"):
        layout.check_backup_id(backup_id)


@given(st.text(max_size=200))
def test_it_parses_any_key_without_crashing(key: str) -> None:
    parsed = layout.parse_backup_key("pfx", key)
    if parsed is not None:
        rebuilt = layout.backup_folder("pfx", parsed.tier, parsed.database, parsed.backup_id)
        assert key == rebuilt + parsed.name
        assert ".." not in parsed.database and "/" not in parsed.name
