"""How a parallel logical backup splits its work (LOGICAL_JOBS): the tables into balanced
groups, COMPRESSION_THREADS between the parts. The dumps themselves: test_parallel_logical.py."""

from __future__ import annotations

from typing import cast

import pytest

from permafrost.backup.destination import Destination
from permafrost.backup.parallel import groups, per_part
from permafrost.config.settings import CompressionSettings
from permafrost.config.storage import StorageSettings
from permafrost.postgres.tools import TableSize
from permafrost.repo.config import Repository


def destination(threads: int, uploads: int = 4) -> Destination:
    repository = cast(Repository, None)  # per_part reads only the pipeline's settings
    storage = StorageSettings("file:///x", concurrency=uploads)
    return Destination(repository, storage, CompressionSettings(3, threads))


@pytest.mark.parametrize(
    ("threads", "parts", "each"),
    [(2, 2, 1), (4, 2, 2), (4, 4, 1), (2, 4, 1), (8, 3, 2), (0, 4, 0), (4, 1, 4)],
)
def test_it_shares_the_compression_threads_between_the_parts(
    threads: int, parts: int, each: int
) -> None:
    shared = per_part(destination(threads), parts)
    assert shared.compression.threads == each
    assert shared.compression.level == 3


@pytest.mark.parametrize(
    ("uploads", "parts", "each"), [(4, 2, 2), (8, 2, 4), (4, 4, 2), (1, 4, 1), (16, 1, 16)]
)
def test_it_shares_the_uploads_in_flight_between_the_parts(
    uploads: int, parts: int, each: int
) -> None:
    shared = per_part(destination(2, uploads), parts)
    assert shared.storage.concurrency == each
    assert shared.storage.url == "file:///x"


def test_it_puts_the_biggest_tables_first_each_into_the_lightest_group() -> None:
    sizes = {"c": 5, "orders": 60, "a": 20, "events": 130, "customers": 35, "b": 15}
    tables = [TableSize("public", name, size) for name, size in sizes.items()]
    split = groups(tables, 2)
    assert [[t.table for t in group] for group in split] == [
        ["events", "c"],
        ["orders", "customers", "a", "b"],
    ]
    assert [sum(t.bytes for t in group) for group in split] == [135, 130]  # heaviest first


def test_it_makes_no_more_groups_than_tables() -> None:
    tables = [TableSize("public", "only", 1), TableSize("public", "other", 2)]
    assert len(groups(tables, 8)) == 2
