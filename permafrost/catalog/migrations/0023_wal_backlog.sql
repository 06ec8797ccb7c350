-- The WAL waiting in pg_wal to be archived: the files marked .ready in pg_wal/archive_status and
-- their bytes, as wal-push and the look-ahead pusher last counted them (ready_at). A queue that
-- grows means the bucket is slower than the server: the wal_queue alert fires before pg_wal fills.
ALTER TABLE wal_archive ADD COLUMN ready_segments integer;
ALTER TABLE wal_archive ADD COLUMN ready_bytes bigint;
ALTER TABLE wal_archive ADD COLUMN ready_at timestamptz;
