//! Job state transitions. Each public function is one transaction; each
//! returns the [`Effects`] the caller applies after commit (events to
//! emit, an announcement to publish).

use std::collections::BTreeSet;

use kgym_core::failure::codes;
use kgym_core::{Job, JobId, JobSpec, JobStatus, Outcome, StageFailure, StageIndex, StageKind, StageResult, StageSpec};
use rusqlite::{Connection, OptionalExtension, Transaction, TransactionBehavior, params};

use super::logs::{LogLine, log_both, sys_line};
use super::tags::{read_tags, write_tags};
use super::{Cached, raw, status_of, to_time};
use crate::error::{Error, Result};
use crate::queue::Announcement;
use crate::types::{JobEvent, JobLogEntry};
use crate::worker_api::{Claim, Lease, LeaseStatus, StageOutcome};

/// What a committed transition asks the caller to do.
#[derive(Debug, Default)]
pub(crate) struct Effects {
    /// The job's new status, to stream to watchers.
    pub status: Option<JobEvent>,
    /// Job log lines written, to stream to watchers.
    pub logs: Vec<JobLogEntry>,
    /// A stage to announce on its queue.
    pub announce: Option<Announcement>,
}

/// The columns of a job row the transitions need.
#[derive(Debug)]
struct Row {
    id: JobId,
    status: JobStatus,
    cursor: u32,
    stages: Vec<StageSpec>,
    worker: Option<String>,
    host: Option<String>,
    lease_token: Option<String>,
    stage_started_us: Option<i64>,
    attempts: u32,
}

impl Row {
    /// The host and lease of the worker running the current stage.
    fn holder(&self) -> Option<(String, Lease)> {
        match (&self.host, &self.lease_token) {
            (Some(host), Some(token)) if self.status == JobStatus::InProgress => {
                Some((host.clone(), Lease { job: self.id, stage: StageIndex(self.cursor), token: token.clone() }))
            }
            _ => None,
        }
    }

    /// The kind of stage `stage`; a stage past the end is a corrupt row,
    /// never quietly another kind.
    fn kind_at(&self, stage: u32) -> Result<StageKind> {
        self.stages.get(stage as usize).map(|s| s.kind.clone()).ok_or(Error::NoSuchStage {
            job: self.id,
            stage: StageIndex(stage),
            stages: self.stages.len(),
        })
    }

    /// A line about the current stage, naming its holder in the system log.
    fn line<'a>(&'a self, text: &'a str, kind: &'a StageKind) -> LogLine<'a> {
        let line = LogLine::new(text).stage(StageIndex(self.cursor), kind);
        match (&self.worker, &self.host) {
            (Some(w), Some(h)) => line.worker(w, h),
            (None, Some(h)) => line.host(h),
            _ => line,
        }
    }

    fn announcement(&self) -> Result<Announcement> {
        self.announcement_of(self.cursor)
    }

    /// The announcement of stage `stage`: its kind and required labels.
    fn announcement_of(&self, stage: u32) -> Result<Announcement> {
        let labels = self.stages.get(stage as usize).map(|s| s.labels.clone()).unwrap_or_default();
        Ok(Announcement::new(self.id, StageIndex(stage), self.kind_at(stage)?).labels(labels))
    }
}

fn begin<'c>(conn: &'c mut Connection, op: &'static str) -> Result<Transaction<'c>> {
    conn.transaction_with_behavior(TransactionBehavior::Immediate).map_err(Error::db(op))
}

pub(super) fn decode_stages(id: JobId, text: &str) -> Result<Vec<StageSpec>> {
    serde_json::from_str(text).map_err(|source| Error::Corrupt { job: id, what: "stages", source })
}

fn read_row(tx: &Connection, id: JobId) -> Result<Row> {
    let row = tx
        .row(
            "SELECT status, cursor, stages, worker, host, lease_token, stage_started_us, attempts
             FROM jobs WHERE id = ?1",
            [raw(id)],
            |r| {
                Ok((
                    r.get::<_, String>(0)?,
                    r.get::<_, u32>(1)?,
                    r.get::<_, String>(2)?,
                    r.get::<_, Option<String>>(3)?,
                    r.get::<_, Option<String>>(4)?,
                    r.get::<_, Option<String>>(5)?,
                    r.get::<_, Option<i64>>(6)?,
                    r.get::<_, u32>(7)?,
                ))
            },
        )
        .optional()
        .map_err(Error::db("read a job"))?
        .ok_or(Error::JobNotFound { id })?;
    Ok(Row {
        id,
        status: status_of(&row.0),
        cursor: row.1,
        stages: decode_stages(id, &row.2)?,
        worker: row.3,
        host: row.4,
        lease_token: row.5,
        stage_started_us: row.6,
        attempts: row.7,
    })
}

fn read_results(conn: &Connection, id: JobId) -> Result<Vec<StageResult>> {
    let mut stmt = conn
        .prepare_cached("SELECT result FROM results WHERE job_id = ?1 ORDER BY stage")
        .map_err(Error::db("read stage results"))?;
    let texts = stmt
        .query_map([raw(id)], |r| r.get::<_, String>(0))
        .and_then(Iterator::collect::<rusqlite::Result<Vec<_>>>)
        .map_err(Error::db("read stage results"))?;
    texts
        .iter()
        .map(|t| serde_json::from_str(t).map_err(|source| Error::Corrupt { job: id, what: "stage result", source }))
        .collect()
}

/// The whole job; `live` are the kinds live workers run (a queued job of
/// another kind says it waits for a worker).
pub(crate) fn load_job(conn: &Connection, id: JobId, live: &BTreeSet<StageKind>) -> Result<Job> {
    let (created, modified, status, cursor, stages, worker) = conn
        .row("SELECT created_us, modified_us, status, cursor, stages, worker FROM jobs WHERE id = ?1", [raw(id)], |r| {
            Ok((
                r.get::<_, i64>(0)?,
                r.get::<_, i64>(1)?,
                r.get::<_, String>(2)?,
                r.get::<_, u32>(3)?,
                r.get::<_, String>(4)?,
                r.get::<_, Option<String>>(5)?,
            ))
        })
        .optional()
        .map_err(Error::db("read a job"))?
        .ok_or(Error::JobNotFound { id })?;
    let status = status_of(&status);
    let stages = decode_stages(id, &stages)?;
    Ok(Job {
        id,
        created: to_time(created),
        modified: to_time(modified),
        no_worker_for: super::listing::no_worker_for(status, stages.get(cursor as usize).map(|s| &s.kind), live),
        stages,
        tags: read_tags(conn, id)?,
        status,
        current_stage: (!status.is_terminal()).then_some(StageIndex(cursor)),
        worker: if status == JobStatus::InProgress { worker } else { None },
        results: read_results(conn, id)?,
    })
}

/// The stage a job stopped at (kGym's `current-worker`), for `restart`
/// without an explicit stage.
pub(crate) fn cursor(conn: &Connection, id: JobId) -> Result<StageIndex> {
    Ok(StageIndex(read_row(conn, id)?.cursor))
}

fn status_event(id: JobId, status: JobStatus, cursor: u32, worker: Option<String>, now: i64) -> JobEvent {
    JobEvent::Status {
        job: id,
        status,
        stage: (!status.is_terminal()).then_some(StageIndex(cursor)),
        worker,
        time: to_time(now),
    }
}

fn queued_status(cursor: u32) -> JobStatus {
    if cursor == 0 { JobStatus::Pending } else { JobStatus::Waiting }
}

/// Stores a validated spec as a pending job.
pub(crate) fn insert_job(conn: &mut Connection, spec: &JobSpec, now: i64) -> Result<(JobId, Effects)> {
    let stages = serde_json::to_string(&spec.stages).map_err(|source| Error::Corrupt {
        job: JobId::new(0),
        what: "stages",
        source,
    })?;
    let tx = begin(conn, "store a new job")?;
    tx.exec(
        "INSERT INTO jobs (created_us, modified_us, status, cursor, stages) VALUES (?1, ?1, 'pending', 0, ?2)",
        params![now, stages],
    )
    .map_err(Error::db("store a new job"))?;
    let id = JobId::new(tx.last_insert_rowid() as u64);
    write_tags(&tx, id, &spec.tags)?;
    sys_line(&tx, Some(id), now, &LogLine::new(&format!("job {id} submitted with {} stages", spec.stages.len())))?;
    tx.commit().map_err(Error::db("store a new job"))?;
    let announce =
        spec.stages.first().map(|s| Announcement::new(id, StageIndex(0), s.kind.clone()).labels(s.labels.clone()));
    let effects = Effects { status: Some(status_event(id, JobStatus::Pending, 0, None, now)), logs: vec![], announce };
    Ok((id, effects))
}

/// Hands stage `stage` of `job` to `worker` if it is still queued
/// (compare-and-set: of concurrent claimers only one gets `Some`) and
/// `host` registered every label the stage requires (its pool: routing
/// sends it only such workers' way; this makes it a rule).
#[allow(clippy::too_many_arguments)]
pub(crate) fn claim(
    conn: &mut Connection,
    ann: &Announcement,
    worker: &str,
    host: &str,
    token: &str,
    lease_ttl: std::time::Duration,
    now: i64,
) -> Result<Option<(Claim, Effects)>> {
    let expires = now + lease_ttl.as_micros() as i64;
    let tx = begin(conn, "claim a stage")?;
    // The row as written (no second read of it).
    let claimed = tx
        .row(
            "UPDATE jobs SET status = 'in_progress', worker = ?1, host = ?2, lease_token = ?3,
                 lease_expires_us = ?4, stage_started_us = ?5, attempts = attempts + 1, modified_us = ?5
             WHERE id = ?6 AND cursor = ?7 AND status IN ('pending', 'waiting')
               AND json_extract(stages, '$[' || cursor || '].kind') = ?8
               AND NOT EXISTS (
                 SELECT 1 FROM json_each(stages, '$[' || cursor || '].labels') AS wanted
                  WHERE NOT EXISTS (
                    SELECT 1 FROM workers, json_each(workers.labels) AS has
                     WHERE workers.host = ?2 AND has.key = wanted.key AND has.value = wanted.value))
             RETURNING stages, attempts",
            params![worker, host, token, expires, now, raw(ann.job), ann.stage.0, ann.kind.as_str()],
            |r| Ok((r.get::<_, String>(0)?, r.get::<_, u32>(1)?)),
        )
        .optional()
        .map_err(Error::db("claim a stage"))?;
    let Some((stages, attempts)) = claimed else { return Ok(None) };
    let stages = decode_stages(ann.job, &stages)?;
    let previous = read_results(&tx, ann.job)?;
    let tags = read_tags(&tx, ann.job)?;
    let line = format!("stage {} ({}) handed to {worker} (attempt {attempts})", ann.stage, ann.kind);
    let log = log_both(&tx, ann.job, now, &LogLine::new(&line).stage(ann.stage, &ann.kind).worker(worker, host))?;
    tx.commit().map_err(Error::db("claim a stage"))?;
    let claim = Claim {
        lease: Lease { job: ann.job, stage: ann.stage, token: token.to_owned() },
        kind: ann.kind.clone(),
        stages,
        previous,
        tags,
        attempt: attempts,
        lease_ttl,
    };
    let effects = Effects {
        status: Some(status_event(ann.job, JobStatus::InProgress, ann.stage.0, Some(worker.to_owned()), now)),
        logs: vec![log],
        announce: None,
    };
    Ok(Some((claim, effects)))
}

/// Renews a lease.
pub(crate) fn heartbeat(
    conn: &mut Connection,
    lease: &Lease,
    lease_ttl: std::time::Duration,
    now: i64,
) -> Result<LeaseStatus> {
    let expires = now + lease_ttl.as_micros() as i64;
    let changed = conn
        .exec(
            "UPDATE jobs SET lease_expires_us = ?1
             WHERE id = ?2 AND cursor = ?3 AND lease_token = ?4 AND status = 'in_progress'",
            params![expires, raw(lease.job), lease.stage.0, lease.token],
        )
        .map_err(Error::db("renew a lease"))?;
    if changed == 1 {
        return Ok(LeaseStatus::Active);
    }
    let aborted = conn
        .row(
            "SELECT 1 FROM jobs WHERE id = ?1 AND cursor = ?2 AND lease_token = ?3 AND status = 'aborted'",
            params![raw(lease.job), lease.stage.0, lease.token],
            |_| Ok(()),
        )
        .optional()
        .map_err(Error::db("renew a lease"))?;
    Ok(if aborted.is_some() { LeaseStatus::Cancelled } else { LeaseStatus::Lost })
}

fn holds(row: &Row, lease: &Lease) -> bool {
    row.status == JobStatus::InProgress
        && row.cursor == lease.stage.0
        && row.lease_token.as_deref() == Some(lease.token.as_str())
}

fn clear_lease_sql() -> &'static str {
    "worker = NULL, host = NULL, lease_token = NULL, lease_expires_us = NULL"
}

/// Puts the current stage back on its queue (retry, yield, expiry).
fn requeue(tx: &Transaction<'_>, row: &Row, count_attempt: bool, now: i64) -> Result<()> {
    let status = queued_status(row.cursor);
    let attempts = if count_attempt { row.attempts } else { row.attempts.saturating_sub(1) };
    tx.exec(
        &format!("UPDATE jobs SET status = ?1, attempts = ?2, modified_us = ?3, {} WHERE id = ?4", clear_lease_sql()),
        params![status.as_str(), attempts, now, raw(row.id)],
    )
    .map_err(Error::db("re-queue a stage"))?;
    Ok(())
}

/// Records `result` for the current stage and moves the job on.
fn record(tx: &Transaction<'_>, row: &Row, mut result: StageResult, now: i64) -> Result<(JobStatus, u32)> {
    result.worker = row.worker.clone();
    result.started = row.stage_started_us.map(to_time);
    result.finished = Some(to_time(now));
    let text = serde_json::to_string(&result).map_err(|source| Error::Corrupt {
        job: row.id,
        what: "stage result",
        source,
    })?;
    let outcome = match result.outcome {
        Outcome::Success => "success",
        Outcome::Failure => "failure",
    };
    // A plain INSERT: a stage has at most one result (a job run again loses
    // the results it re-runs first), and the statistics rollups count
    // inserts and deletes.
    tx.exec(
        "INSERT INTO results (job_id, stage, result, kind, outcome, started_us, finished_us, headline)
         VALUES (?1, ?2, ?3, ?4, ?5, ?6, ?7, ?8)",
        params![
            raw(row.id),
            row.cursor,
            text,
            row.kind_at(row.cursor)?.as_str(),
            outcome,
            row.stage_started_us,
            now,
            result.headline
        ],
    )
    .map_err(Error::db("record a stage result"))?;
    let (status, cursor) = match result.outcome {
        Outcome::Success if (row.cursor as usize + 1) < row.stages.len() => (JobStatus::Waiting, row.cursor + 1),
        Outcome::Success => (JobStatus::Finished, row.cursor + 1),
        Outcome::Failure => (JobStatus::Finished, row.cursor),
    };
    tx.exec(
        &format!(
            "UPDATE jobs SET status = ?1, cursor = ?2, attempts = 0, stage_started_us = NULL, modified_us = ?3, {}
             WHERE id = ?4",
            clear_lease_sql()
        ),
        params![status.as_str(), cursor, now, raw(row.id)],
    )
    .map_err(Error::db("record a stage result"))?;
    Ok((status, cursor))
}

fn success_message(value: &serde_json::Value) -> String {
    value.get("message").and_then(|m| m.as_str()).unwrap_or("success").to_owned()
}

/// Records a worker's report on the stage it holds.
pub(crate) fn report(
    conn: &mut Connection,
    lease: &Lease,
    outcome: StageOutcome,
    max_attempts: u32,
    now: i64,
) -> Result<(crate::worker_api::ReportAck, Effects)> {
    let tx = begin(conn, "record a stage result")?;
    let row = read_row(&tx, lease.job)?;
    if !holds(&row, lease) {
        return Err(Error::LeaseLost { job: lease.job, stage: lease.stage });
    }
    let kind = row.kind_at(row.cursor)?;
    let worker = row.worker.clone();
    let mut effects = Effects::default();
    let ack = match outcome {
        StageOutcome::Failure(f) if f.retryable && row.attempts < max_attempts => {
            requeue(&tx, &row, true, now)?;
            let line = format!(
                "stage {} ({kind}) failed on {} (attempt {} of {max_attempts}), will retry: {f}",
                row.cursor,
                worker.as_deref().unwrap_or("?"),
                row.attempts
            );
            effects.logs.push(log_both(&tx, row.id, now, &row.line(&line, &kind))?);
            effects.status = Some(status_event(row.id, queued_status(row.cursor), row.cursor, None, now));
            effects.announce = Some(row.announcement()?);
            crate::worker_api::ReportAck::Requeued
        }
        outcome => {
            let (result, line) = match outcome {
                StageOutcome::Success(value) => (
                    StageResult::success(success_message(&value), value),
                    format!("stage {} ({kind}) succeeded", row.cursor),
                ),
                StageOutcome::Failure(f) => {
                    let line = format!("stage {} ({kind}) failed: {f}", row.cursor);
                    (StageResult::failure(f), line)
                }
            };
            let (status, cursor) = record(&tx, &row, result, now)?;
            effects.logs.push(log_both(&tx, row.id, now, &row.line(&line, &kind))?);
            effects.status = Some(status_event(row.id, status, cursor, None, now));
            if status == JobStatus::Waiting {
                effects.announce = Some(row.announcement_of(cursor)?);
            }
            crate::worker_api::ReportAck::Recorded
        }
    };
    tx.commit().map_err(Error::db("record a stage result"))?;
    Ok((ack, effects))
}

/// Hands a held stage back without using up an attempt.
pub(crate) fn yield_stage(conn: &mut Connection, lease: &Lease, now: i64) -> Result<Effects> {
    let tx = begin(conn, "hand a stage back")?;
    let row = read_row(&tx, lease.job)?;
    if !holds(&row, lease) {
        // Aborted or already handed elsewhere: nothing to give back.
        return Ok(Effects::default());
    }
    requeue(&tx, &row, false, now)?;
    let kind = row.kind_at(row.cursor)?;
    let line = format!("stage {} ({kind}) handed back by {}", row.cursor, row.worker.as_deref().unwrap_or("?"));
    let log = log_both(&tx, row.id, now, &row.line(&line, &kind))?;
    tx.commit().map_err(Error::db("hand a stage back"))?;
    Ok(Effects {
        status: Some(status_event(row.id, queued_status(row.cursor), row.cursor, None, now)),
        logs: vec![log],
        announce: Some(row.announcement()?),
    })
}

/// Re-queues (or, past `max_attempts`, fails with `worker-lost`) every
/// stage whose lease expired before `now`.
pub(crate) fn expire_leases(conn: &mut Connection, max_attempts: u32, now: i64) -> Result<Vec<Effects>> {
    let ids: Vec<i64> = {
        let mut stmt = conn
            .prepare_cached("SELECT id FROM jobs WHERE status = 'in_progress' AND lease_expires_us < ?1")
            .map_err(Error::db("find expired leases"))?;
        stmt.query_map([now], |r| r.get(0))
            .and_then(Iterator::collect::<rusqlite::Result<Vec<i64>>>)
            .map_err(Error::db("find expired leases"))?
    };
    let mut out = Vec::new();
    for id in ids {
        let tx = begin(conn, "expire a lease")?;
        let row = read_row(&tx, JobId::new(id as u64))?;
        if row.status != JobStatus::InProgress {
            continue;
        }
        let kind = row.kind_at(row.cursor)?;
        let who = row.worker.clone().unwrap_or_else(|| "?".into());
        let mut effects = Effects::default();
        let line;
        if row.attempts >= max_attempts {
            let failure = StageFailure::new(
                codes::WORKER_LOST,
                format!(
                    "stage {} ({kind}) was handed out {} times and no worker reported a result (last: {who})",
                    row.cursor, row.attempts
                ),
            );
            line = format!("lease of {who} expired; {failure}");
            let (status, cursor) = record(&tx, &row, StageResult::failure(failure), now)?;
            effects.status = Some(status_event(row.id, status, cursor, None, now));
        } else {
            requeue(&tx, &row, true, now)?;
            line = format!(
                "lease of {who} on stage {} ({kind}) expired (attempt {} of {max_attempts}); stage re-queued",
                row.cursor, row.attempts
            );
            effects.status = Some(status_event(row.id, queued_status(row.cursor), row.cursor, None, now));
            effects.announce = Some(row.announcement()?);
        }
        effects.logs.push(log_both(&tx, row.id, now, &row.line(&line, &kind))?);
        tx.commit().map_err(Error::db("expire a lease"))?;
        out.push(effects);
    }
    Ok(out)
}

/// Every queued stage (re-announced at start).
pub(crate) fn queued(conn: &Connection) -> Result<Vec<Announcement>> {
    let mut stmt = conn
        .prepare(
            "SELECT id, cursor, json_extract(stages, '$[' || cursor || '].kind'),
                    json_extract(stages, '$[' || cursor || '].labels') FROM jobs
                  WHERE status IN ('pending', 'waiting') ORDER BY id",
        )
        .map_err(Error::db("list queued stages"))?;
    let rows = stmt
        .query_map([], |r| {
            Ok((
                r.get::<_, i64>(0)?,
                r.get::<_, u32>(1)?,
                r.get::<_, Option<String>>(2)?,
                r.get::<_, Option<String>>(3)?,
            ))
        })
        .and_then(Iterator::collect::<rusqlite::Result<Vec<_>>>)
        .map_err(Error::db("list queued stages"))?;
    Ok(rows
        .into_iter()
        .filter_map(|(id, cursor, kind, labels)| {
            let kind = StageKind::new(kind?).ok()?;
            let labels = labels.and_then(|l| serde_json::from_str(&l).ok()).unwrap_or_default();
            Some(Announcement::new(JobId::new(id as u64), StageIndex(cursor), kind).labels(labels))
        })
        .collect())
}

/// The host and lease of the worker running job `id`'s stage, if one is.
pub(crate) fn holder(conn: &Connection, id: JobId) -> Result<Option<(String, Lease)>> {
    Ok(read_row(conn, id)?.holder())
}

/// Stops a job that has not ended: aborts job `id`; returns the lease of the stage it was running, and
/// the holder's host, so the holder can be told at once.
pub(crate) fn abort(conn: &mut Connection, id: JobId, now: i64) -> Result<(Option<(String, Lease)>, Effects)> {
    let tx = begin(conn, "abort a job")?;
    let row = read_row(&tx, id)?;
    if row.status.is_terminal() {
        return Err(Error::InvalidState {
            id,
            action: "abort".into(),
            status: row.status,
            reason: "the job has already ended".into(),
        });
    }
    // The lease token stays, so the holder's next heartbeat learns it was
    // cancelled (rather than lost).
    tx.exec(
        "UPDATE jobs SET status = 'aborted', lease_expires_us = NULL, modified_us = ?1 WHERE id = ?2",
        params![now, raw(id)],
    )
    .map_err(Error::db("abort a job"))?;
    let line = match &row.worker {
        Some(w) if row.status == JobStatus::InProgress => {
            format!("job aborted; cancelling stage {} on {w}", row.cursor)
        }
        _ => "job aborted".to_owned(),
    };
    let log = log_both(&tx, id, now, &LogLine::new(&line))?;
    tx.commit().map_err(Error::db("abort a job"))?;
    let holder = row.holder();
    let effects = Effects {
        status: Some(status_event(id, JobStatus::Aborted, row.cursor, None, now)),
        logs: vec![log],
        announce: None,
    };
    Ok((holder, effects))
}

/// Checks that job `id` may run again from `from` with `stages`, and
/// returns the job's current stage list (whose artifacts go).
pub(crate) fn check_rerun(
    conn: &Connection,
    id: JobId,
    action: &str,
    stages: Option<&[StageSpec]>,
    from: StageIndex,
) -> Result<()> {
    let row = read_row(conn, id)?;
    let invalid = |reason: String| Error::InvalidState { id, action: action.to_owned(), status: row.status, reason };
    if !row.status.is_terminal() {
        return Err(invalid("only finished or aborted jobs can run again; abort it first".into()));
    }
    let count = stages.map_or(row.stages.len(), <[StageSpec]>::len);
    if from.as_usize() >= count {
        return Err(Error::bad_request(format!("stage {from} does not exist: the job has {count} stages")));
    }
    let results = read_results(conn, id)?;
    for i in 0..from.as_usize() {
        match results.get(i) {
            Some(r) if r.outcome == Outcome::Success => {}
            Some(_) => {
                return Err(invalid(format!(
                    "stage {i} failed, so stage {from} has no input; run again from stage {i}"
                )));
            }
            None => {
                return Err(invalid(format!(
                    "stage {i} never ran, so stage {from} has no input; run again from stage {i}"
                )));
            }
        }
    }
    Ok(())
}

/// Runs an ended job again from `from`, optionally with new stages and
/// merged tags (kGym's reset).
pub(crate) fn rerun(
    conn: &mut Connection,
    id: JobId,
    action: &str,
    replace: Option<&JobSpec>,
    from: StageIndex,
    now: i64,
) -> Result<Effects> {
    let tx = begin(conn, "run a job again")?;
    check_rerun(&tx, id, action, replace.map(|s| s.stages.as_slice()), from)?;
    // The status first: the finished-hours rollup (migration 0003) reads
    // the stages the job finished with.
    let status = queued_status(from.0);
    tx.exec(
        &format!(
            "UPDATE jobs SET status = ?1, cursor = ?2, attempts = 0, stage_started_us = NULL, modified_us = ?3, {}
             WHERE id = ?4",
            clear_lease_sql()
        ),
        params![status.as_str(), from.0, now, raw(id)],
    )
    .map_err(Error::db("run a job again"))?;
    if let Some(spec) = replace {
        let stages =
            serde_json::to_string(&spec.stages).map_err(|source| Error::Corrupt { job: id, what: "stages", source })?;
        tx.exec("UPDATE jobs SET stages = ?1 WHERE id = ?2", params![stages, raw(id)])
            .map_err(Error::db("run a job again"))?;
        write_tags(&tx, id, &spec.tags)?;
        super::tags::check_tag_count(&tx, id)?;
    }
    tx.exec("DELETE FROM results WHERE job_id = ?1 AND stage >= ?2", params![raw(id), from.0])
        .map_err(Error::db("run a job again"))?;
    let row = read_row(&tx, id)?;
    let line = format!("job {action} from stage {from}");
    let log = log_both(&tx, id, now, &LogLine::new(&line))?;
    tx.commit().map_err(Error::db("run a job again"))?;
    Ok(Effects {
        status: Some(status_event(id, status, from.0, None, now)),
        logs: vec![log],
        announce: Some(row.announcement()?),
    })
}
