-- The completed backups, the few that are in the bucket now (a fleet's year: about 11,000 of
-- 100,000 rows; the rest are deleted, failed or running), with what the overview reads of them:
-- storage per tier and the chart's days are index-only scans of this, not a scan of every
-- backup (bench/fleet.py: 47 ms and 50 ms became 6 ms and 24 ms).
CREATE INDEX backups_completed ON backups (started_at DESC)
    INCLUDE (repository_id, kind, tier, purpose, database, size_bytes, finished_at)
    WHERE status = 'completed';
