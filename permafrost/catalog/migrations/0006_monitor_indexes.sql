-- Indexes for the monitor's summaries, so the dashboard stays fast with many thousands of
-- backups and job runs: the newest run of each job per database by a skip scan, and the newest
-- verification of each database without reading its every backup.

CREATE INDEX job_runs_latest ON job_runs (job, (coalesce(database, '')), started_at DESC, id DESC);
CREATE INDEX backups_database_verified ON backups (database, verified_at DESC)
    WHERE verified_at IS NOT NULL;
CREATE INDEX backups_database_verified_ok ON backups (database, verified_at DESC)
    WHERE verification_status = 'verified';
CREATE INDEX backups_database_kind_status ON backups (database, kind, status, started_at DESC);
