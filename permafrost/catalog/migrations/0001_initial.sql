-- The catalog: an index of the bucket, plus job history, verifications and the audit log.
-- The bucket stays the source of truth; `permafrost catalog sync` rebuilds `backups` from it.

CREATE TABLE backups (
    id                  text PRIMARY KEY,
    database            text NOT NULL,
    kind                text NOT NULL,
    tier                text NOT NULL,
    status              text NOT NULL CHECK (status IN ('running', 'completed', 'failed', 'deleted')),
    started_at          timestamptz NOT NULL,
    finished_at         timestamptz,
    size_bytes          bigint,
    dump_bytes          bigint,
    description         text NOT NULL DEFAULT '',
    tags                text[] NOT NULL DEFAULT '{}',
    manifest_key        text,
    manifest            jsonb,
    error               text,
    verified_at         timestamptz,
    verification_status text CHECK (verification_status IN ('verified', 'failed')),
    deleted_at          timestamptz,
    catalogued_at       timestamptz NOT NULL DEFAULT now()
);
CREATE INDEX backups_database_started ON backups (database, started_at DESC);
CREATE INDEX backups_started ON backups (started_at DESC);

CREATE TABLE job_runs (
    id          bigserial PRIMARY KEY,
    job         text NOT NULL,
    database    text,
    backup_id   text,
    started_at  timestamptz NOT NULL DEFAULT now(),
    finished_at timestamptz,
    status      text NOT NULL CHECK (status IN ('running', 'succeeded', 'failed', 'aborted')),
    error       text,
    details     jsonb NOT NULL DEFAULT '{}'
);
CREATE INDEX job_runs_job_started ON job_runs (job, started_at DESC);

CREATE TABLE verifications (
    id          bigserial PRIMARY KEY,
    backup_id   text NOT NULL,
    kind        text NOT NULL,
    started_at  timestamptz NOT NULL,
    finished_at timestamptz NOT NULL,
    status      text NOT NULL CHECK (status IN ('verified', 'failed')),
    error       text,
    details     jsonb NOT NULL DEFAULT '{}'
);
CREATE INDEX verifications_backup ON verifications (backup_id, started_at DESC);

CREATE TABLE audit_log (
    id      bigserial PRIMARY KEY,
    at      timestamptz NOT NULL DEFAULT now(),
    actor   text NOT NULL,
    action  text NOT NULL,
    target  text NOT NULL,
    details jsonb NOT NULL DEFAULT '{}'
);
