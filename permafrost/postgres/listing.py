"""The databases a server has: what a `databases: all` source backs up (config/fleet.py)."""

from __future__ import annotations

from permafrost.config.source import SourceSettings
from permafrost.postgres import tools


def server_databases(server: SourceSettings, maintenance_db: str) -> list[str]:
    """Every database one can connect to, templates left out, by name; SourceError when the
    server does not answer."""
    with tools.connect(server, maintenance_db, autocommit=True) as conn:
        rows = conn.execute(
            "SELECT datname FROM pg_database WHERE NOT datistemplate AND datallowconn"
            " ORDER BY datname"
        ).fetchall()
    return [str(row[0]) for row in rows]
