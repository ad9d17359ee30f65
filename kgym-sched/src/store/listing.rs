//! Job listings and the counts beside them.

use kgym_core::{JobId, JobStatus, StageIndex};
use rusqlite::{Connection, params};

use super::jobs::decode_stages;
use super::{status_of, to_time};
use crate::error::{Error, Result};
use crate::types::{JobSummary, ListQuery, Order, Page, StatusCounts, TimeField};

/// The WHERE clause of a listing (time window, tag) with its parameters
/// `?1..?4`; `?5` is the optional status.
fn filter(q: &ListQuery) -> (&'static str, String) {
    let col = match q.by {
        TimeField::Created => "created_us",
        TimeField::Modified => "modified_us",
    };
    let clause = format!(
        "{col} >= ?1 AND {col} <= ?2
         AND (?3 IS NULL OR id IN (SELECT job_id FROM tags WHERE key = ?3 AND (?4 IS NULL OR value = ?4)))"
    );
    (col, clause)
}

/// A page of job summaries.
pub(crate) fn list(conn: &Connection, q: &ListQuery) -> Result<Page<JobSummary>> {
    let dir = match q.order {
        Order::NewestFirst => "DESC",
        Order::OldestFirst => "ASC",
    };
    let (col, filter) = filter(q);
    let from = super::bound(q.from, i64::MIN);
    let to = super::bound(q.to, i64::MAX);
    let status = q.status.map(JobStatus::as_str);
    let total: i64 = conn
        .query_row(
            &format!("SELECT COUNT(*) FROM jobs WHERE {filter} AND (?5 IS NULL OR status = ?5)"),
            params![from, to, q.tag, q.tag_value, status],
            |r| r.get(0),
        )
        .map_err(Error::db("list jobs"))?;
    let mut stmt = conn
        .prepare_cached(&format!(
            "SELECT id, created_us, modified_us, status, cursor, stages, worker,
                    (SELECT headline FROM results r WHERE r.job_id = jobs.id AND r.headline IS NOT NULL
                     ORDER BY r.stage DESC LIMIT 1)
             FROM jobs WHERE {filter} AND (?5 IS NULL OR status = ?5)
             ORDER BY {col} {dir}, id {dir} LIMIT ?6 OFFSET ?7"
        ))
        .map_err(Error::db("list jobs"))?;
    let rows = stmt
        .query_map(params![from, to, q.tag, q.tag_value, status, q.limit, q.start as i64], |r| {
            Ok((
                r.get::<_, i64>(0)?,
                r.get::<_, i64>(1)?,
                r.get::<_, i64>(2)?,
                r.get::<_, String>(3)?,
                r.get::<_, u32>(4)?,
                r.get::<_, String>(5)?,
                r.get::<_, Option<String>>(6)?,
                r.get::<_, Option<String>>(7)?,
            ))
        })
        .and_then(Iterator::collect::<rusqlite::Result<Vec<_>>>)
        .map_err(Error::db("list jobs"))?;
    let mut items = Vec::with_capacity(rows.len());
    for (id, created, modified, status, cursor, stages, worker, headline) in rows {
        let id = JobId::new(id as u64);
        let status = status_of(&status);
        items.push(JobSummary {
            id,
            created: to_time(created),
            modified: to_time(modified),
            kinds: decode_stages(id, &stages)?.into_iter().map(|s| s.kind).collect(),
            status,
            current_stage: (!status.is_terminal()).then_some(StageIndex(cursor)),
            worker: if status == JobStatus::InProgress { worker } else { None },
            headline,
        });
    }
    Ok(Page::new(items, q.start, q.limit, total as u64))
}

/// How many of the jobs `q` selects (ignoring its status and page) are in
/// each status.
pub(crate) fn counts(conn: &Connection, q: &ListQuery) -> Result<StatusCounts> {
    let (_, filter) = filter(q);
    let from = super::bound(q.from, i64::MIN);
    let to = super::bound(q.to, i64::MAX);
    let mut stmt = conn
        .prepare_cached(&format!("SELECT status, COUNT(*) FROM jobs WHERE {filter} GROUP BY status"))
        .map_err(Error::db("count jobs"))?;
    let rows = stmt
        .query_map(params![from, to, q.tag, q.tag_value], |r| Ok((r.get::<_, String>(0)?, r.get::<_, i64>(1)?)))
        .and_then(Iterator::collect::<rusqlite::Result<Vec<_>>>)
        .map_err(Error::db("count jobs"))?;
    let mut c = StatusCounts::default();
    for (status, n) in rows {
        let n = n as u64;
        match status_of(&status) {
            JobStatus::Pending => c.pending = n,
            JobStatus::Waiting => c.waiting = n,
            JobStatus::InProgress => c.in_progress = n,
            JobStatus::Finished => c.finished = n,
            JobStatus::Aborted => c.aborted = n,
        }
    }
    Ok(c)
}
