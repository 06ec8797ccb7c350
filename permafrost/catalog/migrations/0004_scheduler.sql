-- The scheduler's coordination and the storage accounting.
--   heartbeats:    one row per scheduler process; the leader's carries the next run of each job,
--                  which the monitor shows and watches (the dead-man's switch).
--   alerts:        what is wrong now, one active row per alert key; resolved rows stay as history.
--   storage_usage: bytes and objects per tier and database, measured by the retention job.

CREATE TABLE heartbeats (
    instance   text PRIMARY KEY,
    role       text NOT NULL CHECK (role IN ('leader', 'standby', 'stopped')),
    host       text NOT NULL,
    pid        int NOT NULL,
    started_at timestamptz NOT NULL DEFAULT now(),
    beat_at    timestamptz NOT NULL DEFAULT now(),
    next_runs  jsonb NOT NULL DEFAULT '{}',
    details    jsonb NOT NULL DEFAULT '{}'
);

CREATE TABLE alerts (
    id          bigserial PRIMARY KEY,
    key         text NOT NULL,
    severity    text NOT NULL CHECK (severity IN ('critical', 'warning', 'info')),
    summary     text NOT NULL,
    details     jsonb NOT NULL DEFAULT '{}',
    status      text NOT NULL DEFAULT 'active' CHECK (status IN ('active', 'resolved')),
    first_seen  timestamptz NOT NULL DEFAULT now(),
    last_seen   timestamptz NOT NULL DEFAULT now(),
    resolved_at timestamptz,
    notified_at timestamptz
);
CREATE UNIQUE INDEX alerts_active_key ON alerts (key) WHERE status = 'active';
CREATE INDEX alerts_recent ON alerts (last_seen DESC);

CREATE TABLE storage_usage (
    tier        text NOT NULL,
    database    text NOT NULL,
    objects     bigint NOT NULL,
    bytes       bigint NOT NULL,
    measured_at timestamptz NOT NULL DEFAULT now(),
    PRIMARY KEY (tier, database)
);

CREATE INDEX job_runs_database_job ON job_runs (database, job, started_at DESC);
