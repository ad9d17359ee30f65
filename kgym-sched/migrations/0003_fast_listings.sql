-- kgym scheduler state, version 3: listings and counts that stay fast at
-- hundreds of thousands of jobs.
--
-- A listing walks one index in the order it returns (job id, or modified
-- time then id) and skips pages inside that index; a page's cursor seeks
-- straight to where the next page begins. Totals come from counters kept
-- by the triggers below: a COUNT over 100,000 index entries takes ~12 ms,
-- a counter lookup microseconds.

-- Job ids alone: skipping N jobs walks N index entries of 8 bytes instead
-- of N table rows (a row holds the job's stages, kilobytes).
CREATE INDEX jobs_by_id              ON jobs (id);
CREATE INDEX jobs_by_status          ON jobs (status);
CREATE INDEX jobs_by_status_modified ON jobs (status, modified_us);
-- Jobs carrying a key, in job order (tags_by_key orders them by value).
CREATE INDEX tags_by_key_job         ON tags (key, job_id);

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
