"""The metadata store: catalog of backups, job runs, verifications, audit log.

`records` holds the plain records (no driver needed); `store` the connection and all the SQL;
`sync` rebuilds the catalog from the bucket; migrations/ holds the schema, applied in order.
"""
