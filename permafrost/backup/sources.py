"""What a fleet's source backs up at a run: its listed databases, or, for `databases: all`,
the server's databases listed now (recorded in the catalog, so that one that disappears is
noticed), and the server each catalog name connects to."""

from __future__ import annotations

from dataclasses import dataclass, replace

from permafrost.catalog.store import Catalog
from permafrost.config.fleet import Fleet, FleetSource
from permafrost.config.source import SourceSettings
from permafrost.context import Context
from permafrost.postgres.listing import server_databases

UNRECORDED = "the listing is not recorded; a database that disappears is not noticed until it is"


@dataclass(frozen=True)
class Listing:
    source: FleetSource
    names: tuple[str, ...]  # the catalog names to back up now, in the server's order
    new: tuple[str, ...] = ()  # databases seen for the first time (`all` only)


def listing(ctx: Context, source: FleetSource) -> Listing:
    """The source's databases to back up now; SourceError when an `all` server does not
    answer (nothing is recorded then: a server down is not a database gone)."""
    if not source.lists_all:
        return Listing(source, tuple(source.catalog_name(d) for d in source.databases or ()))
    on_server = server_databases(source.server, source.maintenance_db)
    wanted = [d for d in on_server if source.wanted(d)]
    present = {d: source.catalog_name(d) for d in wanted}
    new = ctx.record(
        lambda c: c.record_listing(source.name, present, list(source.exclude)), UNRECORDED
    )
    return Listing(source, tuple(present.values()), tuple(new or ()))


def server_for(fleet: Fleet, name: str, *, cluster: bool = False) -> SourceSettings | None:
    """The server a backup of `name` (a catalog name, or a cluster's with `cluster`) connects
    to; None for the fleet of one, whose server is the settings' own (as before fleets)."""
    if fleet.from_file is None:
        return None
    if cluster:
        for source in fleet.sources:
            if source.cluster == name:
                return replace(source.server, databases=(source.maintenance_db,))
        return None
    owner = fleet.source_of(name)
    return owner.server_for([name]) if owner is not None else None


def configured(fleet: Fleet, name: str) -> bool:
    """Whether a backup asked for by name is one the fleet backs up."""
    source = fleet.source_of(name)
    database = source.database_of(name) if source is not None else None
    return source is not None and database is not None and source.wanted(database)


def known_names(catalog: Catalog, source: FleetSource) -> list[str]:
    """The catalog names a source backs up: the file's list, or what its last listing found
    (a database gone missing included: its state still matters)."""
    if not source.lists_all:
        return [source.catalog_name(d) for d in source.databases or ()]
    return [row["name"] for row in catalog.source_databases(source.name)]


def fleet_databases(
    catalog: Catalog, fleet: Fleet, settings_source: SourceSettings, only: str | None = None
) -> tuple[str, ...]:
    """Every database the fleet backs up (of the source `only`, when given), for the status,
    the dashboard and the metrics: the fleet of one's are the settings' (SQLite files too)."""
    if fleet.from_file is None:
        return settings_source.backed_up
    chosen = fleet.select(only)
    listed: dict[str, list[str]] = {}  # one read for every `all` source, not one per source
    if any(s.lists_all for s in chosen):
        for row in catalog.source_databases(only):
            listed.setdefault(row["source"], []).append(row["name"])
    names = [
        n
        for s in chosen
        for n in (listed.get(s.name, []) if s.lists_all else known_names(catalog, s))
    ]
    if only is None:
        names += [f.name for f in settings_source.sqlite]
    return tuple(dict.fromkeys(names))
