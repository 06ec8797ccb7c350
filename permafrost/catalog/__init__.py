"""The metadata store: catalog of backups, job runs, verifications, tasks, audit log.

`records` holds the plain records (no driver needed); `db` the connection, migrations, locks
and the one translation of database errors; one module per table family holds its SQL
(`backups`, `jobs`, `tasks`, `wal`, `heartbeats`, `audit`), and `store.Catalog` composes them
over one connection; `sync` rebuilds the catalog from the bucket; migrations/ holds the schema.
"""
