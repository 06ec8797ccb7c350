-- The completed backups, the few that are in the bucket now (a fleet's year: about 11,000 of
-- 100,000 rows; the rest are deleted, failed or running), with what the overview reads of them:
-- storage per tier and the chart's days are index-only scans of this, not a scan of every
-- backup (bench/fleet.py: 47 ms and 50 ms became 6 ms and 24 ms).
CREATE INDEX backups_completed ON backups (started_at DESC)
    INCLUDE (repository_id, kind, tier, purpose, database, size_bytes, finished_at)
    WHERE status = 'completed';
-- /metrics' probes of each group's newest completed backup and newest verified one: one
-- descent each (the tier in the key, the verification in the leaf), not a walk through every
-- completed backup of the database and kind.
CREATE INDEX backups_completed_newest ON backups (database, kind, tier, started_at DESC, id DESC)
    INCLUDE (repository_id, purpose, verification_status, dump_bytes)
    WHERE status = 'completed';

-- How many backups each (repository, database, kind, tier, status, purpose) has, and how many
-- finished runs each (job, database, status): /metrics' permafrost_backups and
-- permafrost_backup_runs_total, kept by triggers as rows come, change and go, so a scrape reads
-- a few thousand rows instead of counting 100,000 backups and as many job runs by hashing
-- (bench/fleet.py: most of a scrape). A change moves one row from its old group to its new one;
-- the two are locked in key order, so two changes of the same groups cannot deadlock. A group
-- that empties keeps its row at 0 (the reads skip those). The functions name their schema
-- first and pg_temp last: a scoped connection's temporary views (catalog/repositories.py) must
-- not stand in for the tables here.
CREATE TABLE backup_tallies (
    repository_id text NOT NULL,
    database      text NOT NULL,
    kind          text NOT NULL,
    tier          text NOT NULL,
    status        text NOT NULL,
    purpose       text NOT NULL,
    backups       bigint NOT NULL,
    PRIMARY KEY (repository_id, database, kind, tier, status, purpose)
);

CREATE FUNCTION backup_tallies_move() RETURNS trigger LANGUAGE plpgsql
    SET search_path = permafrost, pg_temp AS $$
DECLARE
    was text[];
    now_ text[];
BEGIN
    IF TG_OP <> 'INSERT' THEN
        was := ARRAY[OLD.repository_id, OLD.database, OLD.kind, OLD.tier, OLD.status, OLD.purpose];
    END IF;
    IF TG_OP <> 'DELETE' THEN
        now_ := ARRAY[NEW.repository_id, NEW.database, NEW.kind, NEW.tier, NEW.status, NEW.purpose];
    END IF;
    IF was IS NOT NULL AND (now_ IS NULL OR was < now_) THEN
        PERFORM backup_tallies_add(was, -1);
        IF now_ IS NOT NULL THEN PERFORM backup_tallies_add(now_, 1); END IF;
    ELSE
        PERFORM backup_tallies_add(now_, 1);
        IF was IS NOT NULL THEN PERFORM backup_tallies_add(was, -1); END IF;
    END IF;
    RETURN NULL;
END $$;

CREATE FUNCTION backup_tallies_add(k text[], n bigint) RETURNS void LANGUAGE sql
    SET search_path = permafrost, pg_temp AS $$
    INSERT INTO backup_tallies AS t
    VALUES (k[1], k[2], k[3], k[4], k[5], k[6], n)
    ON CONFLICT (repository_id, database, kind, tier, status, purpose)
    DO UPDATE SET backups = t.backups + n
$$;

CREATE TRIGGER backups_tally AFTER INSERT OR DELETE ON backups
    FOR EACH ROW EXECUTE FUNCTION backup_tallies_move();
CREATE TRIGGER backups_tally_change AFTER UPDATE ON backups FOR EACH ROW
    WHEN ((OLD.repository_id, OLD.database, OLD.kind, OLD.tier, OLD.status, OLD.purpose)
          IS DISTINCT FROM
          (NEW.repository_id, NEW.database, NEW.kind, NEW.tier, NEW.status, NEW.purpose))
    EXECUTE FUNCTION backup_tallies_move();

INSERT INTO backup_tallies
SELECT repository_id, database, kind, tier, status, purpose, count(*)
FROM backups GROUP BY 1, 2, 3, 4, 5, 6;

-- A run without a database is tallied under '' (the key cannot be NULL).
CREATE TABLE job_run_tallies (
    job      text NOT NULL,
    database text NOT NULL,
    status   text NOT NULL,
    runs     bigint NOT NULL,
    PRIMARY KEY (job, database, status)
);

CREATE FUNCTION job_run_tallies_add(k text[], n bigint) RETURNS void LANGUAGE sql
    SET search_path = permafrost, pg_temp AS $$
    INSERT INTO job_run_tallies AS t VALUES (k[1], k[2], k[3], n)
    ON CONFLICT (job, database, status) DO UPDATE SET runs = t.runs + n
$$;

CREATE FUNCTION job_run_tallies_move() RETURNS trigger LANGUAGE plpgsql
    SET search_path = permafrost, pg_temp AS $$
DECLARE
    was text[];
    now_ text[];
BEGIN
    IF TG_OP <> 'INSERT' THEN
        was := ARRAY[OLD.job, coalesce(OLD.database, ''), OLD.status];
    END IF;
    IF TG_OP <> 'DELETE' THEN
        now_ := ARRAY[NEW.job, coalesce(NEW.database, ''), NEW.status];
    END IF;
    IF was IS NOT NULL AND (now_ IS NULL OR was < now_) THEN
        PERFORM job_run_tallies_add(was, -1);
        IF now_ IS NOT NULL THEN PERFORM job_run_tallies_add(now_, 1); END IF;
    ELSE
        PERFORM job_run_tallies_add(now_, 1);
        IF was IS NOT NULL THEN PERFORM job_run_tallies_add(was, -1); END IF;
    END IF;
    RETURN NULL;
END $$;

CREATE TRIGGER job_runs_tally AFTER INSERT OR DELETE ON job_runs
    FOR EACH ROW EXECUTE FUNCTION job_run_tallies_move();
CREATE TRIGGER job_runs_tally_change AFTER UPDATE ON job_runs FOR EACH ROW
    WHEN ((OLD.job, OLD.database, OLD.status) IS DISTINCT FROM (NEW.job, NEW.database, NEW.status))
    EXECUTE FUNCTION job_run_tallies_move();

INSERT INTO job_run_tallies
SELECT job, coalesce(database, ''), status, count(*) FROM job_runs GROUP BY 1, 2, 3;

-- TRUNCATE fires no row trigger: it empties the tallies too.
CREATE FUNCTION tallies_clear() RETURNS trigger LANGUAGE plpgsql
    SET search_path = permafrost, pg_temp AS $$
BEGIN
    IF TG_TABLE_NAME = 'backups' THEN
        DELETE FROM backup_tallies;
    ELSE
        DELETE FROM job_run_tallies;
    END IF;
    RETURN NULL;
END $$;
CREATE TRIGGER backups_tally_truncate AFTER TRUNCATE ON backups
    FOR EACH STATEMENT EXECUTE FUNCTION tallies_clear();
CREATE TRIGGER job_runs_tally_truncate AFTER TRUNCATE ON job_runs
    FOR EACH STATEMENT EXECUTE FUNCTION tallies_clear();
