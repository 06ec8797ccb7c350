"""The overview's fleet: which databases it shows (every source's, or the one `?source=NAME`
picks), the source of each, those gone from their server, and a line per source for the
filter (its databases, how many failing, stale or gone)."""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any

from permafrost.backup.sources import fleet_databases
from permafrost.catalog.store import Catalog
from permafrost.config.fleet import Fleet
from permafrost.config.settings import Settings


@dataclass
class FleetView:
    fleet: Fleet
    selected: str | None
    configured: tuple[str, ...]  # every database the fleet backs up (collect's input)
    gone: dict[str, Any] = field(default_factory=dict)  # catalog name → missing since
    _owners: dict[str, str | None] = field(default_factory=dict)  # looked up once per page

    def owner(self, name: str) -> str | None:
        """The source of a catalog name, as Fleet.owner says, remembered for the page: 500
        cards ask for it several times each."""
        if name not in self._owners:
            self._owners[name] = self.fleet.owner(name)
        return self._owners[name]

    @property
    def many(self) -> bool:
        """Whether the page names sources at all (not for the fleet of one)."""
        return self.fleet.from_file is not None

    def shown(self, name: str) -> bool:
        if self.selected is None:
            return True
        # As Fleet.owns, with the owner remembered: the source's databases, or its cluster.
        return self.owner(name) == self.selected or name == self.fleet.source(self.selected).cluster

    def card(self, name: str) -> dict[str, Any]:
        """What a card adds for the fleet: its source, and since when it is gone."""
        return {"source": self.owner(name) or "-", "gone_since": self.gone.get(name)}

    def jobs(self, runs: list[dict[str, Any]]) -> list[dict[str, Any]]:
        """The job runs of the chosen source's databases and cluster (all, without a filter)."""
        if self.selected is None:
            return runs
        return [r for r in runs if r["database"] and self.fleet.owns(self.selected, r["database"])]

    def alerts(self, rows: list[dict[str, Any]]) -> list[dict[str, Any]]:
        """The alerts that name the chosen source (details.source, or its job's key)."""
        if self.selected is None:
            return rows
        mine = f"@{self.selected}"
        return [
            a
            for a in rows
            if (a.get("details") or {}).get("source") == self.selected or a["key"].endswith(mine)
        ]

    def summary(self, cards: list[dict[str, Any]]) -> list[dict[str, Any]]:
        """A line per source over every card (not only the shown ones): for the filter."""
        out = []
        for source in self.fleet.sources:
            mine = [c for c in cards if c["source"] == source.name]
            out.append(
                {
                    "name": source.name,
                    "databases": len(mine),
                    "failing": sum(1 for c in mine if c["failing"]),
                    "stale": sum(1 for c in mine if c["freshness"] == "stale"),
                    "gone": sum(1 for c in mine if c["gone_since"]),
                    "all": source.lists_all,
                }
            )
        return out


def fleet_view(cat: Catalog, fleet: Fleet, settings: Settings, selected: str | None) -> FleetView:
    """The view for `?source=` (None: every source); ConfigError for a source not in the file."""
    if selected is not None:
        fleet.source(selected)
    configured = fleet_databases(cat, fleet, settings.source)
    gone = {}
    if fleet.from_file is not None:
        gone = {
            row["name"]: row["missing_since"]
            for row in cat.source_databases()
            if row["missing_since"] is not None
        }
    return FleetView(fleet, selected, configured, gone)
