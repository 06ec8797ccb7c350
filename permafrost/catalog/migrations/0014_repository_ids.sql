-- Which repository (permafrost.json's id) holds each backup, each cluster's WAL and the storage
-- measured by retention, so that every
-- lookup is scoped to the repository the configured STORAGE_URL opens (catalog/repositories.py).
--   repositories: every repository this deployment has opened, and where it was last seen.
--   repository_id '' marks rows recorded before repositories had ids; the first write that gives
--   the repository its id adopts them.

CREATE TABLE repositories (
    id         text PRIMARY KEY,
    location   text NOT NULL,
    created_at timestamptz NOT NULL DEFAULT now(),
    seen_at    timestamptz NOT NULL DEFAULT now()
);
CREATE INDEX repositories_location ON repositories (location, seen_at DESC);

ALTER TABLE backups ADD COLUMN repository_id text NOT NULL DEFAULT '';
CREATE INDEX backups_repository_started ON backups (repository_id, started_at DESC);

ALTER TABLE wal_archive ADD COLUMN repository_id text NOT NULL DEFAULT '';
ALTER TABLE wal_archive DROP CONSTRAINT wal_archive_pkey;
ALTER TABLE wal_archive ADD PRIMARY KEY (repository_id, cluster);

ALTER TABLE storage_usage ADD COLUMN repository_id text NOT NULL DEFAULT '';
ALTER TABLE storage_usage DROP CONSTRAINT storage_usage_pkey;
ALTER TABLE storage_usage ADD PRIMARY KEY (repository_id, tier, database);

-- The repository last seen at a location: what a session scoped by location sees, at each query,
-- so a long-lived connection follows a repository made after it connected.
CREATE FUNCTION repository_at(place text) RETURNS text LANGUAGE sql STABLE AS $$
    SELECT id FROM permafrost.repositories WHERE location = place ORDER BY seen_at DESC LIMIT 1
$$;
