"""Hostile input: random keys and objects, traversal in ids and names, SQL-looking targets,
malformed and oversized bodies, missing and wrong tokens, forms without CSRF, HTML in text.

Property-based where the input space is large (hypothesis): the key layout parser, the
encrypted-object decoder. Every refusal must be a 4xx (or our own exception), never a 5xx or a
stray exception type.
"""

from __future__ import annotations

import os
import secrets
from collections.abc import Iterator

import pytest
from flask.testing import FlaskClient
from hypothesis import HealthCheck, example, given, settings
from hypothesis import strategies as st

from monitor.app import create_app
from permafrost import errors, layout
from permafrost.config.settings import Settings
from permafrost.repo import crypto, pipeline
from tests.conftest import run
from tests.faults.conftest import Ledger

KEY = crypto.MasterKey(secrets.token_bytes(32))
RING = crypto.Keyring(KEY)
TOKEN = "hostile-test-token-0123456789abcdef"
SEGMENTS = st.sampled_from(["standard", "keep", "base", "compliance", "..", ".", "", "wal", "x"])
# Segments a backup key is made of, so that some of the keys tried do parse.
VALID = st.sampled_from(["pfx", "app", "20261122T020000Z-1a2b3c", "data.zst", "manifest.json"])
PREFIXES = st.one_of(st.sampled_from(["", "pfx", "/pfx/", "a/b"]), st.text(max_size=8))


@settings(max_examples=400, deadline=None)
@given(st.lists(st.one_of(SEGMENTS, VALID, st.text(max_size=12)), max_size=6), PREFIXES)
@example(["standard", "app", "20261122T020000Z-1a2b3c", "data.zst"], "")
@example(["pfx", "keep", "app", "20261122T020000Z-1a2b3c", "manifest.json"], "/pfx/")
def test_the_key_parser_never_returns_a_key_that_escapes(parts: list[str], prefix: str) -> None:
    key = "/".join(parts)
    parsed = layout.parse_backup_key(prefix, key)
    if parsed is not None:
        for part in (parsed.database, parsed.backup_id, parsed.name):
            assert part and "/" not in part and part not in (".", "..") and "\x00" not in part
        assert parsed.tier in layout.BACKUP_TIERS
        # What it parsed builds back into the same key (nothing was lost or smuggled).
        rebuilt = layout.backup_folder(prefix, parsed.tier, parsed.database, parsed.backup_id)
        assert rebuilt + parsed.name == key


@settings(max_examples=300, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(st.binary(max_size=3000))
def test_random_bytes_raise_only_our_own_errors(data: bytes) -> None:
    with pytest.raises(errors.PermafrostError):
        pipeline.open_bytes(RING, data)


@settings(max_examples=200, deadline=None)
@given(st.integers(0, 4000), st.integers(0, 255))
def test_a_flipped_byte_anywhere_is_an_integrity_error(position: int, value: int) -> None:
    sealed = _sealed()
    at = position % len(sealed)
    damaged = bytearray(sealed)
    damaged[at] ^= value or 1
    with pytest.raises((errors.IntegrityError, errors.EncryptionKeyError)):
        pipeline.open_bytes(RING, bytes(damaged))


_SEALED: list[bytes] = []


def _sealed() -> bytes:
    if not _SEALED:
        encryptor = crypto.Encryptor(KEY, compressed=False, chunk_size=1024)
        _SEALED.append(encryptor.update(os.urandom(3000)) + encryptor.finish())
    return _SEALED[0]


# --- the API and the dashboard ------------------------------------------------------------------

IDS = [
    "../../etc/passwd",
    "..%2F..%2Fetc%2Fpasswd",
    "%2Fetc%2Fpasswd",
    "20261122T020000Z-1a2b3c%00",
    "20261122T020000Z-1a2b3c/../x",
    "'; DROP TABLE backups; --",
    "<script>alert(1)</script>",
    "a" * 5000,
]
NAMES = ["../x", "/abs", "a;drop table x", "x\x00y", "a" * 200, "$(reboot)", "<b>x</b>"]


@pytest.fixture
def client(env: dict[str, str]) -> Iterator[FlaskClient]:
    app = create_app(
        Settings.from_env(
            {**env, "MONITOR_API_TOKEN": TOKEN, "DASHBOARD_USER": "u", "DASHBOARD_PASSWORD": "p"}
        ),
        evaluate=False,
    )
    with app.test_client() as c:
        yield c


def test_hostile_requests_get_4xx_never_5xx(client: FlaskClient, ledger: Ledger) -> None:
    auth = {"Authorization": f"Bearer {TOKEN}"}
    tried = 0
    outcomes = []
    for bad in IDS:
        for method, path in (
            ("GET", f"/backup/{bad}"),
            ("POST", f"/verify/{bad}"),
            ("GET", f"/tasks/{bad}"),
            ("GET", f"/backups?database={bad}"),
            ("GET", f"/backups?page={bad}"),
            ("GET", f"/recovery-time?database={bad}"),
        ):
            response = client.open(path, method=method, headers=auth)
            outcomes.append((method, path, response.status_code))
            tried += 1
    for name in NAMES:
        for body in (
            {"database": name},
            {"backup_id": name},
            {"database": name, "kind": "base"},
            {"tier": name},
        ):
            for path in ("/backup/run-now", "/restore-test"):
                response = client.post(path, json=body, headers=auth)
                outcomes.append(("POST", path, response.status_code))
                tried += 1
    for raw in (b"{", b"[]", b"null", b'"x"', b"{" * 5000, b"x" * 100_000, b"\xff\xfe"):
        response = client.post(
            "/backup/run-now", data=raw, content_type="application/json", headers=auth
        )
        outcomes.append(("POST", "/backup/run-now raw", response.status_code))
        tried += 1
    for headers in (
        {},
        {"Authorization": "Bearer"},
        {"Authorization": "Basic x"},
        {"Authorization": f"Bearer {TOKEN}x"},
        {"Authorization": TOKEN},
    ):
        response = client.post("/backup/run-now", headers=headers)
        assert response.status_code == 401
        tried += 1
    for path in ("/ui/run-now", "/ui/restore-test", "/ui/verify/20261122T020000Z-1a2b3c"):
        basic = {"Authorization": "Basic dTpw"}  # u:p
        response = client.post(path, data={"database": "x"}, headers=basic)
        assert response.status_code == 400 and b"CSRF" in response.data
        tried += 1
    server_errors = [o for o in outcomes if o[2] >= 500]
    assert server_errors == []
    assert all(400 <= o[2] < 500 for o in outcomes), [o for o in outcomes if o[2] < 400]
    ledger.record("hostile input: API and dashboard requests", injected=tried, survived=tried)


def test_a_nul_in_any_query_parameter_is_a_400_not_a_500(client: FlaskClient) -> None:
    # Found by the OpenAPI fuzzer: PostgreSQL's text cannot hold NUL, and /backups?tag= passed
    # it to the metadata store (a 500).
    auth = {"Authorization": f"Bearer {TOKEN}"}
    for path in ("/backups?tag=a%00b", "/backups?kind=base&tag=%00", "/backups?x%00y=1"):
        response = client.get(path, headers=auth)
        assert response.status_code == 400, path
        assert "must not contain a NUL character" in response.get_json()["error"]
    assert client.get("/backups?tag=a%20b", headers=auth).status_code == 200


def test_html_in_descriptions_and_tags_is_escaped_on_every_page(
    client: FlaskClient, env: dict[str, str], ledger: Ledger
) -> None:
    evil = '<img src=x onerror="alert(1)"><script>alert(2)</script>'
    backup = run(env, "backup", "--description", evil, "--tag", "<b>t</b>", "--json").stdout
    import json

    backup_id = json.loads(backup)["id"]
    basic = {"Authorization": "Basic dTpw", "Accept": "text/html"}
    pages = ["/", "/backups", f"/backup/{backup_id}", "/alerts", "/ui/jobs"]
    for page in pages:
        html = client.get(page, headers=basic).get_data(as_text=True)
        assert "<script>alert(2)" not in html and "<img src=x" not in html, page
        assert "<b>t</b>" not in html, page
    assert "&lt;script&gt;alert(2)&lt;/script&gt;" in client.get(
        f"/backup/{backup_id}", headers=basic
    ).get_data(as_text=True)
    ledger.record("hostile input: HTML in text", injected=len(pages), survived=len(pages))
