//! Job listings.

use kgym_core::{JobId, JobStatus, StageIndex};
use rusqlite::{Connection, params};

use super::jobs::decode_stages;
use super::{status_of, to_time};
use crate::error::{Error, Result};
use crate::types::{JobSummary, ListQuery, Order, Page, TimeField};

/// A page of job summaries.
pub(crate) fn list(conn: &Connection, q: &ListQuery) -> Result<Page<JobSummary>> {
    let col = match q.by {
        TimeField::Created => "created_us",
        TimeField::Modified => "modified_us",
    };
    let dir = match q.order {
        Order::NewestFirst => "DESC",
        Order::OldestFirst => "ASC",
    };
    let from = super::bound(q.from, i64::MIN);
    let to = super::bound(q.to, i64::MAX);
    let status = q.status.map(JobStatus::as_str);
    let filter = format!("{col} >= ?1 AND {col} <= ?2 AND (?3 IS NULL OR status = ?3)");
    let total: i64 = conn
        .query_row(&format!("SELECT COUNT(*) FROM jobs WHERE {filter}"), params![from, to, status], |r| r.get(0))
        .map_err(Error::db("list jobs"))?;
    let mut stmt = conn
        .prepare_cached(&format!(
            "SELECT id, created_us, modified_us, status, cursor, stages, worker FROM jobs
             WHERE {filter} ORDER BY {col} {dir}, id {dir} LIMIT ?4 OFFSET ?5"
        ))
        .map_err(Error::db("list jobs"))?;
    let rows = stmt
        .query_map(params![from, to, status, q.limit, q.start as i64], |r| {
            Ok((
                r.get::<_, i64>(0)?,
                r.get::<_, i64>(1)?,
                r.get::<_, i64>(2)?,
                r.get::<_, String>(3)?,
                r.get::<_, u32>(4)?,
                r.get::<_, String>(5)?,
                r.get::<_, Option<String>>(6)?,
            ))
        })
        .and_then(Iterator::collect::<rusqlite::Result<Vec<_>>>)
        .map_err(Error::db("list jobs"))?;
    let mut items = Vec::with_capacity(rows.len());
    for (id, created, modified, status, cursor, stages, worker) in rows {
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
        });
    }
    Ok(Page::new(items, q.start, q.limit, total as u64))
}
