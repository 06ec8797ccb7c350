"""WAL file names and LSN arithmetic, as PostgreSQL defines them (xlog_internal.h).

A segment is named TTTTTTTTXXXXXXXXYYYYYYYY: the timeline, then the segment number split into
a high part (the "log") and a low part, each eight hex digits; with the default 16 MiB segments
there are 256 segments per log. Timeline history files are TTTTTTTT.history; backup history
files and partial segments carry .backup and .partial suffixes.
"""

from __future__ import annotations

import re
from dataclasses import dataclass

DEFAULT_SEGMENT_SIZE = 16 * 1024 * 1024
_SEGMENT = re.compile(r"^([0-9A-F]{8})([0-9A-F]{8})([0-9A-F]{8})$")
_HISTORY = re.compile(r"^([0-9A-F]{8})\.history$")
_BACKUP = re.compile(r"^([0-9A-F]{8})([0-9A-F]{8})([0-9A-F]{8})\.[0-9A-F]{8}\.backup$")
_PARTIAL = re.compile(r"^([0-9A-F]{8})([0-9A-F]{8})([0-9A-F]{8})\.partial$")
_LSN = re.compile(r"^([0-9A-Fa-f]{1,8})/([0-9A-Fa-f]{1,8})$")


@dataclass(frozen=True, order=True)
class Segment:
    timeline: int
    number: int  # the segment number across logs: log * segments_per_log + low part

    def name(self, segment_size: int = DEFAULT_SEGMENT_SIZE) -> str:
        per_log = segments_per_log(segment_size)
        log, low = divmod(self.number, per_log)
        return f"{self.timeline:08X}{log:08X}{low:08X}"

    def next(self) -> Segment:
        return Segment(self.timeline, self.number + 1)


def segments_per_log(segment_size: int) -> int:
    return 0x100000000 // segment_size


def parse_segment(name: str, segment_size: int = DEFAULT_SEGMENT_SIZE) -> Segment | None:
    match = _SEGMENT.match(name)
    if not match:
        return None
    timeline, log, low = (int(part, 16) for part in match.groups())
    if low >= segments_per_log(segment_size):
        return None
    return Segment(timeline, log * segments_per_log(segment_size) + low)


def timeline_of(name: str) -> int | None:
    """The timeline a WAL archive file belongs to, or None for a name that is not WAL."""
    for pattern in (_SEGMENT, _HISTORY, _BACKUP, _PARTIAL):
        match = pattern.match(name)
        if match:
            return int(match.group(1), 16)
    return None


def is_history(name: str) -> bool:
    return bool(_HISTORY.match(name))


def parse_lsn(text: str) -> int:
    match = _LSN.match(text.strip())
    if not match:
        raise ValueError(f"{text!r} is not an LSN (like 0/16B3748)")
    return (int(match.group(1), 16) << 32) | int(match.group(2), 16)


def format_lsn(lsn: int) -> str:
    return f"{lsn >> 32:X}/{lsn & 0xFFFFFFFF:X}"


def segment_of(lsn: int, timeline: int, segment_size: int = DEFAULT_SEGMENT_SIZE) -> Segment:
    """The segment holding this LSN (an LSN at a segment boundary belongs to the new one)."""
    return Segment(timeline, lsn // segment_size)


def segment_before(lsn: int, timeline: int, segment_size: int = DEFAULT_SEGMENT_SIZE) -> Segment:
    """The segment holding the byte just before this LSN: where a backup's WAL ends."""
    return Segment(timeline, max(lsn - 1, 0) // segment_size)
