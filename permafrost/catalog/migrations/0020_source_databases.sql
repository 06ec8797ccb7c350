-- The databases each `databases: all` source of SOURCES_FILE had when it was last listed (at
-- each of its backup runs): a new one is backed up from that run on, and one that disappears
-- (was on the server, is no longer, and is not excluded) keeps its row with missing_since set,
-- so the monitor's database_gone rule can say so instead of its backups silently stopping.
--   source: the source's name; database: the server's name for it; name: its catalog name
--     (SOURCE.DATABASE, or the bare name for a plain_names source), as in backups.database
--   missing_since: the first listing that did not have it; null while it is there
-- A row of a database the file excludes later is deleted at the next listing.
-- Not scoped by repository: it describes servers, not a bucket.

CREATE TABLE source_databases (
    source        text NOT NULL,
    database      text NOT NULL,
    name          text NOT NULL,
    first_seen    timestamptz NOT NULL DEFAULT now(),
    last_seen     timestamptz NOT NULL DEFAULT now(),
    missing_since timestamptz,
    PRIMARY KEY (source, database)
);

CREATE INDEX source_databases_missing ON source_databases (source) WHERE missing_since IS NOT NULL;
