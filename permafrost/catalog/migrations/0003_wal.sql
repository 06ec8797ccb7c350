-- The WAL archive's progress per cluster: the newest segment archived and when, so the monitor
-- and `permafrost wal status` show the archive lag without listing the bucket.

CREATE TABLE wal_archive (
    cluster          text PRIMARY KEY,
    last_segment     text NOT NULL,
    last_archived_at timestamptz NOT NULL,
    segments         bigint NOT NULL DEFAULT 0,
    bytes            bigint NOT NULL DEFAULT 0,
    method           text NOT NULL DEFAULT 'push',
    last_error       text,
    last_error_at    timestamptz,
    last_switch_at   timestamptz
);
