//! Job logs, the system log and tags.

use kgym_core::{JobId, StageIndex, StageKind, Tags};
use rusqlite::{Connection, params};

use super::jobs::{read_tags, write_tags};
use super::{bound, job_exists, raw, to_time};
use crate::error::{Error, Result};
use crate::types::{JobLogEntry, LogQuery, Order, Page, SystemLogEntry, SystemLogQuery, TagMatch};

/// Longest stored log line, in bytes; longer lines are cut.
const MAX_LINE: usize = 16 * 1024;

fn cut(line: &str) -> &str {
    if line.len() <= MAX_LINE {
        return line;
    }
    let mut end = MAX_LINE;
    while !line.is_char_boundary(end) {
        end -= 1;
    }
    &line[..end]
}

/// Appends one job log line and returns it as stored.
#[allow(clippy::too_many_arguments)]
pub(crate) fn job_line(
    conn: &Connection,
    job: JobId,
    now: i64,
    stage: Option<StageIndex>,
    kind: Option<&StageKind>,
    worker: Option<&str>,
    host: Option<&str>,
    line: &str,
) -> Result<JobLogEntry> {
    let line = cut(line);
    conn.prepare_cached(
        "INSERT INTO job_log (job_id, time_us, stage, kind, worker, host, line) VALUES (?1, ?2, ?3, ?4, ?5, ?6, ?7)",
    )
    .and_then(|mut s| {
        s.execute(params![raw(job), now, stage.map(|s| s.0), kind.map(StageKind::as_str), worker, host, line])
    })
    .map_err(Error::db("append to a job log"))?;
    Ok(JobLogEntry {
        seq: conn.last_insert_rowid() as u64,
        job,
        time: to_time(now),
        stage,
        kind: kind.cloned(),
        worker: worker.map(str::to_owned),
        host: host.map(str::to_owned),
        line: line.to_owned(),
    })
}

/// Appends one system log line.
pub(crate) fn sys_line(
    conn: &Connection,
    now: i64,
    kind: Option<&StageKind>,
    host: Option<&str>,
    worker: Option<&str>,
    job: Option<JobId>,
    message: &str,
) -> Result<()> {
    conn.prepare_cached(
        "INSERT INTO sys_log (time_us, kind, host, worker, job_id, message) VALUES (?1, ?2, ?3, ?4, ?5, ?6)",
    )
    .and_then(|mut s| s.execute(params![now, kind.map(StageKind::as_str), host, worker, job.map(raw), cut(message)]))
    .map_err(Error::db("append to the system log"))?;
    Ok(())
}

/// Appends a batch of worker lines to a job's log in one transaction.
#[allow(clippy::too_many_arguments)]
pub(crate) fn append_worker_lines(
    conn: &mut Connection,
    job: JobId,
    stage: StageIndex,
    kind: &StageKind,
    worker: &str,
    host: &str,
    lines: &[String],
    now: i64,
) -> Result<Vec<JobLogEntry>> {
    let tx = conn.transaction().map_err(Error::db("append to a job log"))?;
    let mut out = Vec::with_capacity(lines.len());
    for line in lines {
        out.push(job_line(&tx, job, now, Some(stage), Some(kind), Some(worker), Some(host), line)?);
    }
    tx.commit().map_err(Error::db("append to a job log"))?;
    Ok(out)
}

fn dir(order: Order) -> &'static str {
    match order {
        Order::NewestFirst => "DESC",
        Order::OldestFirst => "ASC",
    }
}

/// A page of job log lines.
pub(crate) fn query_logs(conn: &Connection, q: &LogQuery) -> Result<Page<JobLogEntry>> {
    if let Some(job) = q.job
        && !job_exists(conn, job)?
    {
        return Err(Error::JobNotFound { id: job });
    }
    let filter = "(?1 IS NULL OR job_id = ?1) AND time_us >= ?2 AND time_us <= ?3";
    let args = params![q.job.map(raw), bound(q.from, i64::MIN), bound(q.to, i64::MAX)];
    let total: i64 = conn
        .query_row(&format!("SELECT COUNT(*) FROM job_log WHERE {filter}"), args, |r| r.get(0))
        .map_err(Error::db("read a job log"))?;
    let mut stmt = conn
        .prepare_cached(&format!(
            "SELECT seq, job_id, time_us, stage, kind, worker, host, line FROM job_log WHERE {filter}
             ORDER BY seq {} LIMIT ?4 OFFSET ?5",
            dir(q.order)
        ))
        .map_err(Error::db("read a job log"))?;
    let items = stmt
        .query_map(
            params![q.job.map(raw), bound(q.from, i64::MIN), bound(q.to, i64::MAX), q.limit, q.start as i64],
            |r| {
                Ok(JobLogEntry {
                    seq: r.get::<_, i64>(0)? as u64,
                    job: JobId::new(r.get::<_, i64>(1)? as u64),
                    time: to_time(r.get(2)?),
                    stage: r.get::<_, Option<u32>>(3)?.map(StageIndex),
                    kind: r.get::<_, Option<String>>(4)?.and_then(|k| StageKind::new(k).ok()),
                    worker: r.get(5)?,
                    host: r.get(6)?,
                    line: r.get(7)?,
                })
            },
        )
        .and_then(Iterator::collect::<rusqlite::Result<Vec<_>>>)
        .map_err(Error::db("read a job log"))?;
    Ok(Page::new(items, q.start, q.limit, total as u64))
}

/// A page of the system log.
pub(crate) fn query_sys_log(conn: &Connection, q: &SystemLogQuery) -> Result<Page<SystemLogEntry>> {
    let filter = "(?1 IS NULL OR kind = ?1) AND (?2 IS NULL OR host = ?2) AND time_us >= ?3 AND time_us <= ?4";
    let kind = q.kind.as_ref().map(StageKind::as_str);
    let (from, to) = (bound(q.from, i64::MIN), bound(q.to, i64::MAX));
    let total: i64 = conn
        .query_row(&format!("SELECT COUNT(*) FROM sys_log WHERE {filter}"), params![kind, q.host, from, to], |r| {
            r.get(0)
        })
        .map_err(Error::db("read the system log"))?;
    let mut stmt = conn
        .prepare_cached(&format!(
            "SELECT seq, time_us, kind, host, worker, job_id, message FROM sys_log WHERE {filter}
             ORDER BY seq {} LIMIT ?5 OFFSET ?6",
            dir(q.order)
        ))
        .map_err(Error::db("read the system log"))?;
    let items = stmt
        .query_map(params![kind, q.host, from, to, q.limit, q.start as i64], |r| {
            Ok(SystemLogEntry {
                seq: r.get::<_, i64>(0)? as u64,
                time: to_time(r.get(1)?),
                kind: r.get::<_, Option<String>>(2)?.and_then(|k| StageKind::new(k).ok()),
                host: r.get(3)?,
                worker: r.get(4)?,
                job: r.get::<_, Option<i64>>(5)?.map(|j| JobId::new(j as u64)),
                message: r.get(6)?,
            })
        })
        .and_then(Iterator::collect::<rusqlite::Result<Vec<_>>>)
        .map_err(Error::db("read the system log"))?;
    Ok(Page::new(items, q.start, q.limit, total as u64))
}

/// The job's tags.
pub(crate) fn tags(conn: &Connection, id: JobId) -> Result<Tags> {
    if !job_exists(conn, id)? {
        return Err(Error::JobNotFound { id });
    }
    read_tags(conn, id)
}

/// Replaces (`replace`) or merges the job's tags; returns the result.
pub(crate) fn update_tags(conn: &mut Connection, id: JobId, new: &Tags, replace: bool, now: i64) -> Result<Tags> {
    let tx = conn.transaction().map_err(Error::db("write tags"))?;
    if !job_exists(&tx, id)? {
        return Err(Error::JobNotFound { id });
    }
    if replace {
        tx.execute("DELETE FROM tags WHERE job_id = ?1", [raw(id)]).map_err(Error::db("write tags"))?;
    }
    write_tags(&tx, id, new)?;
    tx.execute("UPDATE jobs SET modified_us = ?1 WHERE id = ?2", params![now, raw(id)])
        .map_err(Error::db("write tags"))?;
    let out = read_tags(&tx, id)?;
    tx.commit().map_err(Error::db("write tags"))?;
    Ok(out)
}

/// Jobs carrying tag `key` (= `value`).
pub(crate) fn jobs_with_tag(conn: &Connection, key: &str, value: Option<&str>) -> Result<Vec<TagMatch>> {
    let mut stmt = conn
        .prepare_cached("SELECT job_id, value FROM tags WHERE key = ?1 AND (?2 IS NULL OR value = ?2) ORDER BY job_id")
        .map_err(Error::db("find tagged jobs"))?;
    stmt.query_map(params![key, value], |r| {
        Ok(TagMatch { job: JobId::new(r.get::<_, i64>(0)? as u64), key: key.to_owned(), value: r.get(1)? })
    })
    .and_then(Iterator::collect::<rusqlite::Result<Vec<_>>>)
    .map_err(Error::db("find tagged jobs"))
}
