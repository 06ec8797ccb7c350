from __future__ import annotations

import pytest
from hypothesis import given
from hypothesis import strategies as st

from permafrost.wal import names as walnames


def test_it_names_segments_as_postgresql_does() -> None:
    segment = walnames.parse_segment("0000000100000002000000FF")
    assert segment == walnames.Segment(1, 2 * 256 + 255)
    assert segment.next().name() == "000000010000000300000000"
    assert walnames.parse_segment("0000000100000002000001FF") is None  # low part too large
    assert walnames.parse_segment("000000010000000200000000.partial") is None


def test_it_knows_the_timeline_of_every_archive_file() -> None:
    assert walnames.timeline_of("0000000200000000000000A1") == 2
    assert walnames.timeline_of("00000003.history") == 3
    assert walnames.timeline_of("000000010000000000000002.00000028.backup") == 1
    assert walnames.timeline_of("000000010000000000000002.partial") == 1
    assert walnames.timeline_of("../etc/passwd") is None
    assert walnames.is_history("00000003.history")


def test_it_does_lsn_arithmetic() -> None:
    lsn = walnames.parse_lsn("0/16B3748")
    assert walnames.format_lsn(lsn) == "0/16B3748"
    assert walnames.segment_of(lsn, 1).name() == "000000010000000000000001"
    assert walnames.segment_of(walnames.parse_lsn("1/0"), 1).name() == "000000010000000100000000"
    assert walnames.segment_before(walnames.parse_lsn("0/2000000"), 1).name() == (
        "000000010000000000000001"
    )
    with pytest.raises(ValueError):
        walnames.parse_lsn("16B3748")


@given(
    st.integers(min_value=1, max_value=0xFFFFFFFF), st.integers(min_value=0, max_value=2**40 - 1)
)
def test_names_round_trip(timeline: int, number: int) -> None:
    segment = walnames.Segment(timeline, number)
    assert walnames.parse_segment(segment.name()) == segment
    assert walnames.timeline_of(segment.name()) == timeline
