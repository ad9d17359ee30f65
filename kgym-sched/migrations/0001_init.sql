-- kgym scheduler state, version 1.
-- Times are microseconds since the Unix epoch (UTC).

CREATE TABLE jobs (
    id               INTEGER PRIMARY KEY AUTOINCREMENT,
    created_us       INTEGER NOT NULL,
    modified_us      INTEGER NOT NULL,
    status           TEXT    NOT NULL
                     CHECK (status IN ('pending', 'waiting', 'in_progress', 'finished', 'aborted')),
    -- The stage running or queued next (kGym's current-worker); equals the
    -- number of stages once every stage succeeded.
    cursor           INTEGER NOT NULL DEFAULT 0,
    -- JSON array of StageSpec.
    stages           TEXT    NOT NULL,
    -- The lease on the current stage, while a worker holds it.
    worker           TEXT,
    host             TEXT,
    lease_token      TEXT,
    lease_expires_us INTEGER,
    stage_started_us INTEGER,
    -- Hand-outs of the current stage so far.
    attempts         INTEGER NOT NULL DEFAULT 0
);
CREATE INDEX jobs_created  ON jobs (created_us);
CREATE INDEX jobs_modified ON jobs (modified_us);
CREATE INDEX jobs_status   ON jobs (status, lease_expires_us);

-- One row per ended stage; JSON StageResult.
CREATE TABLE results (
    job_id INTEGER NOT NULL REFERENCES jobs (id) ON DELETE CASCADE,
    stage  INTEGER NOT NULL,
    result TEXT    NOT NULL,
    PRIMARY KEY (job_id, stage)
) WITHOUT ROWID;

CREATE TABLE tags (
    job_id INTEGER NOT NULL REFERENCES jobs (id) ON DELETE CASCADE,
    key    TEXT    NOT NULL,
    value  TEXT    NOT NULL,
    PRIMARY KEY (job_id, key)
) WITHOUT ROWID;
CREATE INDEX tags_by_key ON tags (key, value, job_id);

CREATE TABLE job_log (
    seq     INTEGER PRIMARY KEY AUTOINCREMENT,
    job_id  INTEGER NOT NULL,
    time_us INTEGER NOT NULL,
    stage   INTEGER,
    kind    TEXT,
    worker  TEXT,
    host    TEXT,
    line    TEXT    NOT NULL
);
CREATE INDEX job_log_by_job  ON job_log (job_id, seq);
CREATE INDEX job_log_by_time ON job_log (time_us);

CREATE TABLE sys_log (
    seq     INTEGER PRIMARY KEY AUTOINCREMENT,
    time_us INTEGER NOT NULL,
    kind    TEXT,
    host    TEXT,
    worker  TEXT,
    job_id  INTEGER,
    message TEXT    NOT NULL
);
CREATE INDEX sys_log_by_kind ON sys_log (kind, seq);
CREATE INDEX sys_log_by_host ON sys_log (host, seq);
CREATE INDEX sys_log_by_time ON sys_log (time_us);
