"""The fault tests' ledger: what was injected, what was survived, what was lost.

Each test records its fault class's counts; at the end of the session they are written to
test-artifacts/reliability.json, from which `python -m tests.faults.report` writes the table
in docs/RELIABILITY.md.
"""

from __future__ import annotations

import json
from collections.abc import Iterator
from pathlib import Path

import pytest

from tests.faults.proxy import FaultProxy
from tests.services import S3Server


def blob(rows: int) -> str:
    """SQL for a table of `rows` rows that compress poorly (about 100 bytes each): enough data
    for a multipart upload, ranged downloads, and a dump that takes long enough to interrupt."""
    return (
        "CREATE TABLE blob AS SELECT g, md5(g::text) || md5((g * 7)::text)"
        f" || md5((g * 13)::text) AS m FROM generate_series(1, {rows}) g;"
    )


ARTIFACT = Path(__file__).resolve().parents[2] / "test-artifacts" / "reliability.json"


class Ledger:
    def __init__(self) -> None:
        self.rows: dict[str, dict[str, int]] = {}

    def record(self, fault_class: str, *, injected: int, survived: int, lost: int = 0) -> None:
        row = self.rows.setdefault(fault_class, {"injected": 0, "survived": 0, "lost": 0})
        row["injected"] += injected
        row["survived"] += survived
        row["lost"] += lost


@pytest.fixture(scope="session")
def ledger() -> Iterator[Ledger]:
    book = Ledger()
    yield book
    ARTIFACT.parent.mkdir(exist_ok=True)
    ARTIFACT.write_text(json.dumps(book.rows, indent=2, sort_keys=True) + "\n")


@pytest.fixture(scope="module")
def proxy(s3: S3Server) -> Iterator[FaultProxy]:
    server = FaultProxy(s3.url)
    yield server
    server.stop()
