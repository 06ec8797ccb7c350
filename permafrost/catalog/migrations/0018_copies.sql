-- Copies (issue 18): which repositories hold a verified copy of each backup and of each
-- cluster's WAL. A copy destination (COPY_STORAGE_URLS) is a repository of its own: its own id
-- in its own permafrost.json, made from the primary's (same format, salt and key checks).
--   copy_destinations: each configured destination by name, the repository found there, and
--     the last attempt's outcome (an unreachable destination is an error here, not a failure
--     of the backup it was copying).
--   backup_copies: one row per backup and repository holding a copy whose every object's
--     SHA-256 was read back from the destination and matched; removed_at set when the copy's
--     own retention deletes it there (so it is not copied again).
--   wal_copies: per destination and cluster, what of the primary's WAL reached it.

CREATE TABLE copy_destinations (
    name            text PRIMARY KEY,
    repository_id   text,
    location        text NOT NULL,
    last_attempt_at timestamptz,
    last_success_at timestamptz,
    last_error      text,
    last_error_at   timestamptz
);

CREATE TABLE backup_copies (
    backup_id     text NOT NULL,
    repository_id text NOT NULL,
    destination   text NOT NULL,
    manifest_key  text NOT NULL,
    stored_bytes  bigint NOT NULL,
    method        text NOT NULL CHECK (method IN ('stream', 'server-side', 'found')),
    seconds       double precision NOT NULL DEFAULT 0,
    verified_at   timestamptz NOT NULL DEFAULT now(),
    removed_at    timestamptz,
    PRIMARY KEY (backup_id, repository_id)
);
CREATE INDEX backup_copies_destination ON backup_copies (destination, verified_at DESC);

CREATE TABLE wal_copies (
    destination    text NOT NULL,
    repository_id  text NOT NULL,
    cluster        text NOT NULL,
    last_segment   text NOT NULL DEFAULT '',
    last_copied_at timestamptz,
    segments       bigint NOT NULL DEFAULT 0,
    bytes          bigint NOT NULL DEFAULT 0,
    PRIMARY KEY (repository_id, cluster)
);
