-- Backup workers (issue 19): a backup task names the source it reads (a label: today the one
-- source, named by CLUSTER_NAME; a sources file's name once there is one) and the backup lock it
-- will take (`logical:DB`, `base:CLUSTER`), so that a worker's claim can keep the limits across
-- every worker: one backup per database at a time, MAX_CONCURRENT_PER_SOURCE per source.
-- Verifications and test restores read no source and leave both NULL.

ALTER TABLE tasks ADD COLUMN source text;
ALTER TABLE tasks ADD COLUMN subject text;
CREATE INDEX tasks_running_source ON tasks (source) WHERE status = 'running';
