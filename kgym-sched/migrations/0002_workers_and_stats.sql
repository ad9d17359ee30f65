-- kgym scheduler state, version 2: live workers, and result columns that
-- listings and statistics read without decoding JSON.

-- Worker processes as they registered; last_seen_us moves with every claim
-- and heartbeat, stopped_us is set when a worker says goodbye.
CREATE TABLE workers (
    host          TEXT    PRIMARY KEY,
    -- JSON array of [kind, slots].
    kinds         TEXT    NOT NULL,
    -- JSON object of label → value.
    labels        TEXT    NOT NULL DEFAULT '{}',
    registered_us INTEGER NOT NULL,
    last_seen_us  INTEGER NOT NULL,
    stopped_us    INTEGER
) WITHOUT ROWID;

ALTER TABLE results ADD COLUMN kind        TEXT;
ALTER TABLE results ADD COLUMN outcome     TEXT;
ALTER TABLE results ADD COLUMN started_us  INTEGER;
ALTER TABLE results ADD COLUMN finished_us INTEGER;
ALTER TABLE results ADD COLUMN headline    TEXT;

UPDATE results SET
    kind        = (SELECT json_extract(j.stages, '$[' || results.stage || '].kind') FROM jobs j WHERE j.id = results.job_id),
    outcome     = json_extract(result, '$.outcome'),
    started_us  = CAST(strftime('%s', json_extract(result, '$.started')) AS INTEGER) * 1000000,
    finished_us = CAST(strftime('%s', json_extract(result, '$.finished')) AS INTEGER) * 1000000,
    headline    = CASE WHEN json_type(result, '$.value.title') = 'text' THEN json_extract(result, '$.value.title') END;

CREATE INDEX results_by_finished ON results (finished_us);
CREATE INDEX results_by_headline ON results (headline) WHERE headline IS NOT NULL;
