"""/metrics' text: Prometheus' text format (0.0.4), as prometheus_client.generate_latest writes
it, byte for byte, for the families monitor/metrics.py builds (gauges and counters, plain
names, no timestamps).

generate_latest checks and escapes every metric and label name of every sample; a fleet's
scrape has about 5,000 samples, and that was a fifth of it (bench/fleet.py). Here a name is
checked once per scrape, label values are escaped as there, and anything this writer does not
cover (another type, a timestamp, a name outside the legacy character set) goes to
generate_latest instead, so the text never differs (tests/test_metrics.py compares the two).
"""

from __future__ import annotations

import re
from collections.abc import Iterable

from prometheus_client import generate_latest
from prometheus_client.core import Metric
from prometheus_client.registry import Collector
from prometheus_client.utils import floatToGoString

LEGACY_NAME = re.compile(r"^[a-zA-Z_:][a-zA-Z0-9_:]*$")
LEGACY_LABEL = re.compile(r"^[a-zA-Z_][a-zA-Z0-9_]*$")
TYPES = {"gauge": "gauge", "counter": "counter"}


class Unsupported(Exception):
    """A family this writer does not cover: generate_latest writes the scrape."""


def text(families: list[Metric]) -> bytes:
    """The exposition of these families, as generate_latest would write it."""
    try:
        return "".join(_lines(families)).encode("utf-8")
    except Unsupported:
        return registry_text(families)


def _lines(families: Iterable[Metric]) -> Iterable[str]:
    labels_seen: set[str] = set()
    for metric in families:
        if metric.type not in TYPES:
            raise Unsupported(metric.type)
        name = metric.name + "_total" if metric.type == "counter" else metric.name
        _check(LEGACY_NAME, name)
        doc = metric.documentation.replace("\\", r"\\").replace("\n", r"\n")
        yield f"# HELP {name} {doc}\n# TYPE {name} {TYPES[metric.type]}\n"
        for sample in metric.samples:
            if sample.timestamp is not None or sample.exemplar is not None:
                raise Unsupported(sample.name)
            if sample.name != name:
                _check(LEGACY_NAME, sample.name)
            yield _sample(sample.name, sample.labels, sample.value, labels_seen)


def _sample(name: str, labels: dict[str, str], value: float, seen: set[str]) -> str:
    if not labels:
        return f"{name} {floatToGoString(value)}\n"
    for label in labels:
        if label not in seen:
            _check(LEGACY_LABEL, label)
            seen.add(label)
    pairs = ",".join(f'{k}="{_escape(v)}"' for k, v in sorted(labels.items()))
    return f"{name}{{{pairs}}} {floatToGoString(value)}\n"


def _escape(value: str) -> str:
    return value.replace("\\", r"\\").replace("\n", r"\n").replace('"', r"\"")


def _check(pattern: re.Pattern[str], name: str) -> None:
    if not pattern.match(name):
        raise Unsupported(name)


class _Fixed(Collector):
    """Families already built, as a registry's collector (for generate_latest)."""

    def __init__(self, families: list[Metric]) -> None:
        self.families = families

    def collect(self) -> Iterable[Metric]:
        return iter(self.families)


def registry_text(families: list[Metric]) -> bytes:
    """generate_latest's own text of these families (what `text` must equal)."""
    return generate_latest(_Fixed(families))
