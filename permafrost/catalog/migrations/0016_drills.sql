-- PITR drills: a recovery of a cluster to a recent moment, in a scratch directory, on a schedule
-- (PITR_DRILL_SCHEDULE) or by hand (`permafrost drill`), with what it measured. `plan` and
-- `recovery-time` take their point-in-time figures from the newest successful one.
--   status: succeeded | failed (a drill is recorded once, when it ends)
--   target_time: the moment asked for (the newest archived WAL minus PITR_DRILL_MARGIN), or null
--     when the archive holds no WAL far enough past the base backup: recovered to its end
--   reached_at: the commit PostgreSQL stopped before (the first past the target), else the last
--     transaction replayed; last_replayed_at: pg_last_xact_replay_timestamp() after promotion
--   fetch_seconds: download, unpack and pg_verifybackup; replay_seconds: the server's start to
--     its promotion; recovery_seconds: the two and the planning
--   rpo_seconds: the drill's start minus the newest archived WAL: what a loss of the server at
--     that moment would have lost
--   wal_bytes: from the base backup's start LSN to where replay ended
-- Scoped by repository like backups (catalog/repositories.py).

CREATE TABLE drills (
    id               bigserial PRIMARY KEY,
    repository_id    text NOT NULL DEFAULT '',
    cluster          text NOT NULL,
    status           text NOT NULL,
    trigger          text NOT NULL DEFAULT 'manual',
    started_at       timestamptz NOT NULL,
    finished_at      timestamptz NOT NULL DEFAULT now(),
    base_backup_id   text,
    base_bytes       bigint,
    target_time      timestamptz,
    newest_wal_at    timestamptz,
    reached_at       timestamptz,
    last_replayed_at timestamptz,
    fetch_seconds    double precision,
    replay_seconds   double precision,
    recovery_seconds double precision,
    rpo_seconds      double precision,
    wal_bytes        bigint,
    error            text,
    details          jsonb NOT NULL DEFAULT '{}'
);
CREATE INDEX drills_cluster_started ON drills (repository_id, cluster, started_at DESC);
