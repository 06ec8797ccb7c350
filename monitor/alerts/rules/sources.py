"""The fleet's rule: a database of a `databases: all` source that was backed up and is no
longer on its server (catalog/sources.py), named with its source, instead of its backups
silently stopping. Adding it to the source's `exclude` resolves it."""

from __future__ import annotations

from typing import Any

from monitor.alerts.findings import Finding, Severity, summary
from monitor.alerts.run import Run
from permafrost.text import iso


def database_gone(run: Run) -> list[Finding]:
    return [gone_finding(row) for row in run.catalog.gone_databases()]


def gone_finding(row: dict[str, Any]) -> Finding:
    source, database = row["source"], row["database"]
    return Finding(
        f"database_gone:{source}:{database}",
        Severity.CRITICAL,
        summary(
            f"database {database} of source {source} is no longer on the server (missing "
            f"since {iso(row['missing_since'])}): it is not backed up any more"
        ),
        {
            "source": source,
            "database": database,
            "name": row["name"],
            "missing_since": iso(row["missing_since"]),
            "last_seen": iso(row["last_seen"]),
            "last_backup_id": row["last_backup_id"],
            "last_backup_at": iso(row["last_backup_at"]),
        },
        f"permafrost list --database {row['name']}\n"
        f"# dropped on purpose? add {database} to exclude of source {source} in SOURCES_FILE",
    )
