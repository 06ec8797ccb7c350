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
