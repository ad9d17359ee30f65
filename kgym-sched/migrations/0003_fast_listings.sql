-- kgym scheduler state, version 3: listings and counts that stay fast at
-- hundreds of thousands of jobs.
--
-- A listing walks one index in the order it returns (job id, or modified
-- time then id) and skips pages inside that index; a page's cursor seeks
-- straight to where the next page begins. Totals come from counters kept
-- by the triggers below: a COUNT over 100,000 index entries takes ~12 ms,
-- a counter lookup microseconds.

-- Job ids (with their submission time, for time windows): skipping N jobs
-- walks N small index entries instead of N table rows (a row holds the
-- job's stages, kilobytes).
CREATE INDEX jobs_by_id              ON jobs (id, created_us);
CREATE INDEX jobs_by_status          ON jobs (status, id, created_us);
CREATE INDEX jobs_by_status_modified ON jobs (status, modified_us);
-- Jobs carrying a key, in job order, with the value (tags_by_key orders
-- them by value).
CREATE INDEX tags_by_key_job         ON tags (key, job_id, value);

-- Jobs per status.
CREATE TABLE job_counts (
    status TEXT    PRIMARY KEY,
    n      INTEGER NOT NULL
) WITHOUT ROWID;

-- Jobs per tag key and status.
CREATE TABLE tag_key_counts (
    key    TEXT    NOT NULL,
    status TEXT    NOT NULL,
    n      INTEGER NOT NULL,
    PRIMARY KEY (key, status)
) WITHOUT ROWID;

-- Jobs per tag key, value and status.
CREATE TABLE tag_value_counts (
    key    TEXT    NOT NULL,
    value  TEXT    NOT NULL,
    status TEXT    NOT NULL,
    n      INTEGER NOT NULL,
    PRIMARY KEY (key, value, status)
) WITHOUT ROWID;

INSERT INTO job_counts (status, n) SELECT status, COUNT(*) FROM jobs GROUP BY status;
INSERT INTO tag_key_counts (key, status, n)
    SELECT t.key, j.status, COUNT(*) FROM tags t JOIN jobs j ON j.id = t.job_id GROUP BY t.key, j.status;
INSERT INTO tag_value_counts (key, value, status, n)
    SELECT t.key, t.value, j.status, COUNT(*) FROM tags t JOIN jobs j ON j.id = t.job_id
    GROUP BY t.key, t.value, j.status;

-- Jobs are never deleted; a new job is counted in its status, and its
-- tags (written after it) in that status too.
CREATE TRIGGER jobs_count_insert AFTER INSERT ON jobs BEGIN
    INSERT INTO job_counts (status, n) VALUES (new.status, 1) ON CONFLICT (status) DO UPDATE SET n = n + 1;
END;

-- A status change moves the job and each of its tags to the new status.
CREATE TRIGGER jobs_count_status AFTER UPDATE OF status ON jobs WHEN old.status IS NOT new.status BEGIN
    UPDATE job_counts SET n = n - 1 WHERE status = old.status;
    INSERT INTO job_counts (status, n) VALUES (new.status, 1) ON CONFLICT (status) DO UPDATE SET n = n + 1;
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

CREATE TRIGGER tags_count_insert AFTER INSERT ON tags BEGIN
    INSERT INTO tag_key_counts (key, status, n) SELECT new.key, status, 1 FROM jobs WHERE id = new.job_id
        ON CONFLICT (key, status) DO UPDATE SET n = n + 1;
    INSERT INTO tag_value_counts (key, value, status, n)
        SELECT new.key, new.value, status, 1 FROM jobs WHERE id = new.job_id
        ON CONFLICT (key, value, status) DO UPDATE SET n = n + 1;
END;

CREATE TRIGGER tags_count_delete AFTER DELETE ON tags BEGIN
    UPDATE tag_key_counts SET n = n - 1
        WHERE key = old.key AND status = (SELECT status FROM jobs WHERE id = old.job_id);
    DELETE FROM tag_key_counts
        WHERE key = old.key AND n <= 0 AND status = (SELECT status FROM jobs WHERE id = old.job_id);
    UPDATE tag_value_counts SET n = n - 1
        WHERE key = old.key AND value = old.value AND status = (SELECT status FROM jobs WHERE id = old.job_id);
    DELETE FROM tag_value_counts
        WHERE key = old.key AND value = old.value AND n <= 0 AND status = (SELECT status FROM jobs WHERE id = old.job_id);
END;

CREATE TRIGGER tags_count_value AFTER UPDATE OF value ON tags WHEN old.value IS NOT new.value BEGIN
    UPDATE tag_value_counts SET n = n - 1
        WHERE key = old.key AND value = old.value AND status = (SELECT status FROM jobs WHERE id = old.job_id);
    DELETE FROM tag_value_counts
        WHERE key = old.key AND value = old.value AND n <= 0 AND status = (SELECT status FROM jobs WHERE id = old.job_id);
    INSERT INTO tag_value_counts (key, value, status, n)
        SELECT new.key, new.value, status, 1 FROM jobs WHERE id = new.job_id
        ON CONFLICT (key, value, status) DO UPDATE SET n = n + 1;
END;

-- Log lines per job, and system log lines per kind and per host (kGym's
-- worker-type and worker-host logs): logs are only ever appended to.
CREATE TABLE job_log_counts (
    job_id INTEGER PRIMARY KEY,
    n      INTEGER NOT NULL
);
CREATE TABLE sys_log_counts (
    dim   TEXT    NOT NULL CHECK (dim IN ('kind', 'host')),
    value TEXT    NOT NULL,
    n     INTEGER NOT NULL,
    PRIMARY KEY (dim, value)
) WITHOUT ROWID;
INSERT INTO job_log_counts (job_id, n) SELECT job_id, COUNT(*) FROM job_log GROUP BY job_id;
INSERT INTO sys_log_counts (dim, value, n) SELECT 'kind', kind, COUNT(*) FROM sys_log WHERE kind IS NOT NULL GROUP BY kind;
INSERT INTO sys_log_counts (dim, value, n) SELECT 'host', host, COUNT(*) FROM sys_log WHERE host IS NOT NULL GROUP BY host;

CREATE TRIGGER job_log_count AFTER INSERT ON job_log BEGIN
    INSERT INTO job_log_counts (job_id, n) VALUES (new.job_id, 1) ON CONFLICT (job_id) DO UPDATE SET n = n + 1;
END;

CREATE TRIGGER sys_log_count AFTER INSERT ON sys_log BEGIN
    INSERT INTO sys_log_counts (dim, value, n) SELECT 'kind', new.kind, 1 WHERE new.kind IS NOT NULL
        ON CONFLICT (dim, value) DO UPDATE SET n = n + 1;
    INSERT INTO sys_log_counts (dim, value, n) SELECT 'host', new.host, 1 WHERE new.host IS NOT NULL
        ON CONFLICT (dim, value) DO UPDATE SET n = n + 1;
END;

-- Statistics rolled up per hour (hour = µs / 3600000000) by triggers, so
-- /api/v1/stats reads a few hundred rows for a week instead of every
-- result in it; the part of the window before its first whole hour is
-- read from the rows themselves.

-- Finished jobs per hour they finished in (their modified time while
-- finished), and how many of them stopped at a failed stage (a finished
-- job's cursor is past its last stage unless a stage failed).
CREATE TABLE finished_hours (
    hour     INTEGER PRIMARY KEY,
    finished INTEGER NOT NULL,
    failed   INTEGER NOT NULL
);
INSERT INTO finished_hours (hour, finished, failed)
    SELECT modified_us / 3600000000, COUNT(*), SUM(cursor < json_array_length(stages))
    FROM jobs WHERE status = 'finished' GROUP BY 1;

CREATE TRIGGER jobs_finished_hours AFTER UPDATE OF status, modified_us ON jobs
    WHEN old.status = 'finished' OR new.status = 'finished' BEGIN
    UPDATE finished_hours
        SET finished = finished - 1, failed = failed - (old.cursor < json_array_length(old.stages))
        WHERE old.status = 'finished' AND hour = old.modified_us / 3600000000;
    INSERT INTO finished_hours (hour, finished, failed)
        SELECT new.modified_us / 3600000000, 1, new.cursor < json_array_length(new.stages)
        WHERE new.status = 'finished'
        ON CONFLICT (hour) DO UPDATE SET finished = finished + 1, failed = failed + excluded.failed;
END;

-- Lower bounds (ms) of the duration buckets: 0, then 5 % apart up to
-- ~12 days. Percentiles are read to within a bucket.
CREATE TABLE duration_bounds (
    lo_ms INTEGER PRIMARY KEY
);
INSERT INTO duration_bounds (lo_ms) VALUES (0);
WITH RECURSIVE b(x) AS (SELECT 1.0 UNION ALL SELECT x * 1.05 FROM b WHERE x < 1000000000.0)
INSERT OR IGNORE INTO duration_bounds (lo_ms) SELECT CAST(x AS INTEGER) FROM b;

-- Successful stages per hour they ended in, kind and duration bucket.
CREATE TABLE duration_hours (
    hour   INTEGER NOT NULL,
    kind   TEXT    NOT NULL,
    lo_ms  INTEGER NOT NULL,
    n      INTEGER NOT NULL,
    max_us INTEGER NOT NULL,
    PRIMARY KEY (hour, kind, lo_ms)
) WITHOUT ROWID;
INSERT INTO duration_hours (hour, kind, lo_ms, n, max_us)
    SELECT finished_us / 3600000000, kind,
           (SELECT MAX(lo_ms) FROM duration_bounds WHERE lo_ms <= MAX(finished_us - started_us, 0) / 1000),
           COUNT(*), MAX(finished_us - started_us)
    FROM results
    WHERE outcome = 'success' AND started_us IS NOT NULL AND finished_us IS NOT NULL AND kind IS NOT NULL
    GROUP BY 1, 2, 3;

-- Result headlines per hour they ended in.
CREATE TABLE headline_hours (
    hour     INTEGER NOT NULL,
    headline TEXT    NOT NULL,
    n        INTEGER NOT NULL,
    last_job INTEGER NOT NULL,
    PRIMARY KEY (hour, headline)
) WITHOUT ROWID;
INSERT INTO headline_hours (hour, headline, n, last_job)
    SELECT finished_us / 3600000000, headline, COUNT(*), MAX(job_id)
    FROM results WHERE headline IS NOT NULL AND finished_us IS NOT NULL GROUP BY 1, 2;

CREATE TRIGGER results_stats_insert AFTER INSERT ON results BEGIN
    INSERT INTO duration_hours (hour, kind, lo_ms, n, max_us)
        SELECT new.finished_us / 3600000000, new.kind,
               (SELECT MAX(lo_ms) FROM duration_bounds WHERE lo_ms <= MAX(new.finished_us - new.started_us, 0) / 1000),
               1, new.finished_us - new.started_us
        WHERE new.outcome = 'success' AND new.started_us IS NOT NULL AND new.finished_us IS NOT NULL
              AND new.kind IS NOT NULL
        ON CONFLICT (hour, kind, lo_ms) DO UPDATE SET n = n + 1, max_us = MAX(max_us, excluded.max_us);
    INSERT INTO headline_hours (hour, headline, n, last_job)
        SELECT new.finished_us / 3600000000, new.headline, 1, new.job_id
        WHERE new.headline IS NOT NULL AND new.finished_us IS NOT NULL
        ON CONFLICT (hour, headline) DO UPDATE SET n = n + 1, last_job = MAX(last_job, excluded.last_job);
END;

-- A result removed (a job run again) leaves the rollups; the bucket's
-- longest duration and a headline's latest job stay as they were.
CREATE TRIGGER results_stats_delete AFTER DELETE ON results BEGIN
    UPDATE duration_hours SET n = n - 1
        WHERE old.outcome = 'success' AND old.started_us IS NOT NULL AND old.finished_us IS NOT NULL
              AND old.kind IS NOT NULL AND hour = old.finished_us / 3600000000 AND kind = old.kind
              AND lo_ms = (SELECT MAX(lo_ms) FROM duration_bounds
                           WHERE lo_ms <= MAX(old.finished_us - old.started_us, 0) / 1000);
    DELETE FROM duration_hours WHERE n <= 0 AND hour = old.finished_us / 3600000000 AND kind = old.kind;
    UPDATE headline_hours SET n = n - 1
        WHERE old.headline IS NOT NULL AND hour = old.finished_us / 3600000000 AND headline = old.headline;
    DELETE FROM headline_hours WHERE n <= 0 AND hour = old.finished_us / 3600000000 AND headline = old.headline;
END;
