-- kgym scheduler state, version 4: time windows and deep log pages that
-- cost the same at 100,000 jobs as at 100.
--
-- Jobs per hour (hour = µs / 3600000000) of their submission and of their
-- last change, and status: a window's total sums the whole hours inside
-- it and counts jobs only in the two partial hours at its edges (a COUNT
-- over 100,000 index entries takes ~10-20 ms, a few hundred counters
-- microseconds).
CREATE TABLE job_hours (
    time   TEXT    NOT NULL CHECK (time IN ('created', 'modified')),
    hour   INTEGER NOT NULL,
    status TEXT    NOT NULL,
    n      INTEGER NOT NULL,
    PRIMARY KEY (time, hour, status)
) WITHOUT ROWID;
INSERT INTO job_hours (time, hour, status, n)
    SELECT 'created', created_us / 3600000000, status, COUNT(*) FROM jobs GROUP BY 2, 3;
INSERT INTO job_hours (time, hour, status, n)
    SELECT 'modified', modified_us / 3600000000, status, COUNT(*) FROM jobs GROUP BY 2, 3;

CREATE TRIGGER jobs_hours_insert AFTER INSERT ON jobs BEGIN
    INSERT INTO job_hours (time, hour, status, n) VALUES ('created', new.created_us / 3600000000, new.status, 1)
        ON CONFLICT (time, hour, status) DO UPDATE SET n = n + 1;
    INSERT INTO job_hours (time, hour, status, n) VALUES ('modified', new.modified_us / 3600000000, new.status, 1)
        ON CONFLICT (time, hour, status) DO UPDATE SET n = n + 1;
END;

-- A job moves between buckets when its status or the hour of one of its
-- times changes (most updates stay in the same bucket and do nothing).
CREATE TRIGGER jobs_hours_created AFTER UPDATE OF status, created_us ON jobs
    WHEN old.status IS NOT new.status OR old.created_us / 3600000000 IS NOT new.created_us / 3600000000 BEGIN
    UPDATE job_hours SET n = n - 1
        WHERE time = 'created' AND hour = old.created_us / 3600000000 AND status = old.status;
    DELETE FROM job_hours
        WHERE time = 'created' AND hour = old.created_us / 3600000000 AND status = old.status AND n <= 0;
    INSERT INTO job_hours (time, hour, status, n) VALUES ('created', new.created_us / 3600000000, new.status, 1)
        ON CONFLICT (time, hour, status) DO UPDATE SET n = n + 1;
END;

CREATE TRIGGER jobs_hours_modified AFTER UPDATE OF status, modified_us ON jobs
    WHEN old.status IS NOT new.status OR old.modified_us / 3600000000 IS NOT new.modified_us / 3600000000 BEGIN
    UPDATE job_hours SET n = n - 1
        WHERE time = 'modified' AND hour = old.modified_us / 3600000000 AND status = old.status;
    DELETE FROM job_hours
        WHERE time = 'modified' AND hour = old.modified_us / 3600000000 AND status = old.status AND n <= 0;
    INSERT INTO job_hours (time, hour, status, n) VALUES ('modified', new.modified_us / 3600000000, new.status, 1)
        ON CONFLICT (time, hour, status) DO UPDATE SET n = n + 1;
END;

-- Log pages: the tables' B-tree leaves hold the messages, so
-- skipping 100,000 lines in them reads them all; these indexes hold only the
-- sequence numbers, and a page skips inside one, then reads its 20 rows.
CREATE INDEX sys_log_by_seq ON sys_log (seq);
CREATE INDEX job_log_by_seq ON job_log (seq);

-- Each log's length, kept like the per-job, per-kind and per-host counts.
CREATE TABLE log_totals (
    log TEXT    PRIMARY KEY CHECK (log IN ('job', 'sys')),
    n   INTEGER NOT NULL
) WITHOUT ROWID;
INSERT INTO log_totals (log, n) SELECT 'job', COUNT(*) FROM job_log;
INSERT INTO log_totals (log, n) SELECT 'sys', COUNT(*) FROM sys_log;

CREATE TRIGGER job_log_total AFTER INSERT ON job_log BEGIN
    UPDATE log_totals SET n = n + 1 WHERE log = 'job';
END;
CREATE TRIGGER sys_log_total AFTER INSERT ON sys_log BEGIN
    UPDATE log_totals SET n = n + 1 WHERE log = 'sys';
END;
