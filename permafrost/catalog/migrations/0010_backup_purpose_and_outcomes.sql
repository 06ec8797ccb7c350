-- Issue 14: what a backup is for, a run whose process died, and a verification that could not
-- run (a configuration problem is not an integrity result).

-- A safety backup (taken by a restore before it replaces a database) is not a database's own
-- backup: no card, no staleness alert, its own retention. Its manifest says so by the tag
-- `safety-backup` (docs/FORMAT.md), which the backups taken before this migration carry too.
ALTER TABLE backups ADD COLUMN purpose text NOT NULL DEFAULT 'backup'
    CHECK (purpose IN ('backup', 'safety'));
UPDATE backups SET purpose = 'safety' WHERE 'safety-backup' = ANY (tags);

-- The metadata session that holds the backup's lock while it runs: when that session is gone
-- (the process was killed), the backup is `interrupted`.
ALTER TABLE backups ADD COLUMN backend_pid int;
ALTER TABLE backups DROP CONSTRAINT backups_status_check;
ALTER TABLE backups ADD CONSTRAINT backups_status_check
    CHECK (status IN ('running', 'completed', 'failed', 'interrupted', 'deleted'));
CREATE INDEX backups_running ON backups (id) WHERE status = 'running';

-- `unverified`: the verification could not run (a wrong key, no repository at STORAGE_URL);
-- the backup's own verification state is left as it was.
ALTER TABLE verifications DROP CONSTRAINT verifications_status_check;
ALTER TABLE verifications ADD CONSTRAINT verifications_status_check
    CHECK (status IN ('verified', 'failed', 'unverified'));
ALTER TABLE verifications ADD COLUMN setting text;
