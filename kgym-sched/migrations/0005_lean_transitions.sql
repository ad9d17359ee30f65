-- kgym scheduler state, version 5: fewer pages written per transition.
--
-- A transition costs mostly the B-tree pages it dirties: each is appended
-- to the WAL, and every 1000 of them a checkpoint copies them into the
-- database and syncs it. A claim and a report dirtied ~51 pages per stage;
-- one per index and counter table they touch.

-- jobs_status (status, lease_expires_us) moved with every claim, report and
-- heartbeat. Its one reader, the lease reaper's "in progress with a lease
-- expired", now walks the in-progress entries of jobs_by_status_modified
-- (one per held stage) and reads their lease; every other query already
-- used another index.
DROP INDEX jobs_status;

-- The small counters of migrations 0003 and 0004 (jobs per status, lines
-- per log, system log lines per kind and per host), one table each, were
-- three pages written by most transitions; in one table they share a page.
--   name = 'status': key is a job status, n the jobs in it;
--   name = 'log':    key is 'job' or 'sys', n the lines of that log;
--   name = 'kind', 'host': n the system log lines of that kind or host.
CREATE TABLE counters (
    name TEXT    NOT NULL CHECK (name IN ('status', 'log', 'kind', 'host')),
    key  TEXT    NOT NULL,
    n    INTEGER NOT NULL,
    PRIMARY KEY (name, key)
) WITHOUT ROWID;
INSERT INTO counters (name, key, n) SELECT 'status', status, n FROM job_counts;
INSERT INTO counters (name, key, n) SELECT 'log', log, n FROM log_totals;
INSERT INTO counters (name, key, n) SELECT dim, value, n FROM sys_log_counts;

DROP TRIGGER jobs_count_insert;
DROP TRIGGER jobs_count_status;
DROP TRIGGER job_log_count;
DROP TRIGGER job_log_total;
DROP TRIGGER sys_log_count;
DROP TRIGGER sys_log_total;
DROP TABLE job_counts;
DROP TABLE log_totals;
DROP TABLE sys_log_counts;

CREATE TRIGGER jobs_count_insert AFTER INSERT ON jobs BEGIN
    INSERT INTO counters (name, key, n) VALUES ('status', new.status, 1)
        ON CONFLICT (name, key) DO UPDATE SET n = n + 1;
END;

CREATE TRIGGER jobs_count_status AFTER UPDATE OF status ON jobs WHEN old.status IS NOT new.status BEGIN
    UPDATE counters SET n = n - 1 WHERE name = 'status' AND key = old.status;
    INSERT INTO counters (name, key, n) VALUES ('status', new.status, 1)
        ON CONFLICT (name, key) DO UPDATE SET n = n + 1;
END;

-- A status change moves each of the job's tags to the new status (as in
-- migration 0003); a job without tags has nothing to move.
CREATE TRIGGER jobs_count_tag_status AFTER UPDATE OF status ON jobs
    WHEN old.status IS NOT new.status AND EXISTS (SELECT 1 FROM tags WHERE job_id = new.id) BEGIN
    UPDATE tag_key_counts SET n = n - 1
        WHERE status = old.status AND key IN (SELECT key FROM tags WHERE job_id = new.id);
    DELETE FROM tag_key_counts
        WHERE status = old.status AND n <= 0 AND key IN (SELECT key FROM tags WHERE job_id = new.id);
    INSERT INTO tag_key_counts (key, status, n) SELECT key, new.status, 1 FROM tags WHERE job_id = new.id
        ON CONFLICT (key, status) DO UPDATE SET n = n + 1;
    UPDATE tag_value_counts SET n = n - 1
        WHERE status = old.status AND (key, value) IN (SELECT key, value FROM tags WHERE job_id = new.id);
    DELETE FROM tag_value_counts
        WHERE status = old.status AND n <= 0 AND (key, value) IN (SELECT key, value FROM tags WHERE job_id = new.id);
    INSERT INTO tag_value_counts (key, value, status, n)
        SELECT key, value, new.status, 1 FROM tags WHERE job_id = new.id
        ON CONFLICT (key, value, status) DO UPDATE SET n = n + 1;
END;

CREATE TRIGGER job_log_count AFTER INSERT ON job_log BEGIN
    INSERT INTO job_log_counts (job_id, n) VALUES (new.job_id, 1) ON CONFLICT (job_id) DO UPDATE SET n = n + 1;
    INSERT INTO counters (name, key, n) VALUES ('log', 'job', 1) ON CONFLICT (name, key) DO UPDATE SET n = n + 1;
END;

CREATE TRIGGER sys_log_count AFTER INSERT ON sys_log BEGIN
    INSERT INTO counters (name, key, n) VALUES ('log', 'sys', 1) ON CONFLICT (name, key) DO UPDATE SET n = n + 1;
    INSERT INTO counters (name, key, n) SELECT 'kind', new.kind, 1 WHERE new.kind IS NOT NULL
        ON CONFLICT (name, key) DO UPDATE SET n = n + 1;
    INSERT INTO counters (name, key, n) SELECT 'host', new.host, 1 WHERE new.host IS NOT NULL
        ON CONFLICT (name, key) DO UPDATE SET n = n + 1;
END;
