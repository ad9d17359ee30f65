//! Job listings and the counts beside them, fast at any size.
//!
//! A page is found in two steps: the ids of the page from one index that
//! matches the filters and the order (skipping inside the index, or
//! seeking to the page's cursor), then the rows of just those ids. Jobs
//! in submission order are in job-id order; by modification, in
//! (modified time, id) order. Totals come from the counters migrations
//! 0003 and 0005 keep; inside a time window, from the hour counters of
//! migration 0004 (see [`window`]), except with a tag filter too, which is
//! counted (a cost in proportion to the jobs inside the window).

use std::collections::{BTreeSet, HashMap};

use kgym_core::{JobId, JobStatus, StageIndex, StageKind};
use rusqlite::types::Value;
use rusqlite::{Connection, OptionalExtension, params_from_iter};
use serde::Deserialize;

use super::cursor::Cursor;
use super::sql::{Filter, limit_offset};
use super::window;
use super::{raw, status_of, to_time};
use crate::error::{Error, Result};
use crate::types::{JobSummary, ListQuery, Order, Page, StatusCounts, TimeField};

/// Below this many matches a tag-filtered listing by modification time
/// takes the tag's jobs and sorts them; above it, it walks the time index
/// and keeps the jobs with the tag.
const FEW_MATCHES: u64 = 10_000;

/// A listing's query, checked and in the store's terms.
struct Listing<'q> {
    q: &'q ListQuery,
    /// See [`FEW_MATCHES`] (tests move it to reach both plans).
    few_matches: u64,
    status: Option<&'static str>,
    tag: Option<(&'q str, Option<&'q str>)>,
    window: Option<(i64, i64)>,
    cursor: Option<Cursor>,
}

impl<'q> Listing<'q> {
    fn new(q: &'q ListQuery) -> Result<Self> {
        let tag = match (&q.tag, &q.tag_value) {
            (Some(k), v) => Some((k.as_str(), v.as_deref())),
            (None, Some(_)) => return Err(Error::bad_request("tag_value needs tag (the key whose value it is)")),
            (None, None) => None,
        };
        let window = (q.from.is_some() || q.to.is_some())
            .then(|| (super::bound(q.from, i64::MIN), super::bound(q.to, i64::MAX)));
        let cursor = q.after.as_deref().map(Cursor::decode).transpose()?;
        match (q.by, cursor) {
            (TimeField::Created, Some(Cursor::Modified(..))) | (TimeField::Modified, Some(Cursor::Id(_))) => {
                return Err(Error::bad_request(format!(
                    "after {:?} belongs to a listing in another order",
                    q.after.as_deref().unwrap_or("")
                )));
            }
            _ => {}
        }
        Ok(Self { q, few_matches: FEW_MATCHES, status: q.status.map(JobStatus::as_str), tag, window, cursor })
    }

    fn time_col(&self) -> &'static str {
        match self.q.by {
            TimeField::Created => "j.created_us",
            TimeField::Modified => "j.modified_us",
        }
    }

    fn desc(&self) -> bool {
        self.q.order == Order::NewestFirst
    }

    /// Adds the time window's conditions.
    fn add_window(&self, f: &mut Filter) {
        if let Some((from, to)) = self.window {
            let col = self.time_col();
            f.add(format!("{col} >= ? AND {col} <= ?"), [Value::Integer(from), Value::Integer(to)]);
        }
    }

    /// Adds "carries the tag" as a probe of the job's tags.
    fn add_tag_probe(&self, f: &mut Filter) {
        if let Some((key, value)) = self.tag {
            match value {
                Some(v) => f.add(
                    "EXISTS (SELECT 1 FROM tags t WHERE t.job_id = j.id AND t.key = ? AND t.value = ?)",
                    [Value::Text(key.to_owned()), Value::Text(v.to_owned())],
                ),
                None => f.add(
                    "EXISTS (SELECT 1 FROM tags t WHERE t.job_id = j.id AND t.key = ?)",
                    [Value::Text(key.to_owned())],
                ),
            };
        }
    }

    /// Adds the tag's conditions on the tag table (aliased `t`).
    fn add_tag_rows(&self, f: &mut Filter) -> &'static str {
        let Some((key, value)) = self.tag else { return "tags_by_key_job" };
        f.add("t.key = ?", [Value::Text(key.to_owned())]);
        match value {
            Some(v) => {
                f.add("t.value = ?", [Value::Text(v.to_owned())]);
                "tags_by_key"
            }
            None => "tags_by_key_job",
        }
    }

    /// Adds "after the cursor" on the id column `col`.
    fn add_id_cursor(&self, f: &mut Filter, col: &str) {
        if let Some(Cursor::Id(id)) = self.cursor {
            f.add(format!("{col} {} ?", if self.desc() { "<" } else { ">" }), [Value::Integer(id)]);
        }
    }

    /// Adds "after the cursor" in (modified time, id) order.
    fn add_modified_cursor(&self, f: &mut Filter) {
        if let Some(Cursor::Modified(us, id)) = self.cursor {
            let (le, lt) = if self.desc() { ("<=", "<") } else { (">=", ">") };
            f.add(
                format!("j.modified_us {le} ? AND (j.modified_us {lt} ? OR j.id {lt} ?)"),
                [Value::Integer(us), Value::Integer(us), Value::Integer(id)],
            );
        }
    }

    /// The ids of the page, in order.
    fn page_ids(&self, conn: &Connection) -> Result<Vec<i64>> {
        let dir = if self.desc() { "DESC" } else { "ASC" };
        let mut f = Filter::default();
        let sql = match self.q.by {
            TimeField::Created => {
                let tag_driven = match (self.tag, self.status) {
                    (None, _) => false,
                    (Some(_), None) => true,
                    (Some((k, v)), Some(s)) => tag_count(conn, k, v, None)? <= status_count(conn, s)?,
                };
                if tag_driven {
                    let index = self.add_tag_rows(&mut f);
                    let join = self.status.is_some() || self.window.is_some();
                    f.add_opt("j.status = ?", self.status.map(str::to_owned));
                    self.add_window(&mut f);
                    self.add_id_cursor(&mut f, "t.job_id");
                    let join = if join { "CROSS JOIN jobs j ON j.id = t.job_id" } else { "" };
                    format!(
                        "SELECT t.job_id FROM tags t INDEXED BY {index} {join} {} ORDER BY t.job_id {dir} LIMIT ? OFFSET ?",
                        f.clause()
                    )
                } else {
                    // Both indexes hold the submission time: a window is
                    // checked inside the index, in id order.
                    let index = if self.status.is_some() { "jobs_by_status" } else { "jobs_by_id" };
                    f.add_opt("j.status = ?", self.status.map(str::to_owned));
                    self.add_tag_probe(&mut f);
                    self.add_window(&mut f);
                    self.add_id_cursor(&mut f, "j.id");
                    format!(
                        "SELECT j.id FROM jobs j INDEXED BY {index} {} ORDER BY j.id {dir} LIMIT ? OFFSET ?",
                        f.clause()
                    )
                }
            }
            TimeField::Modified => {
                let order = format!("ORDER BY j.modified_us {dir}, j.id {dir}");
                let few = match self.tag {
                    Some((k, v)) => tag_count(conn, k, v, self.status)? <= self.few_matches,
                    None => false,
                };
                if few {
                    let index = self.add_tag_rows(&mut f);
                    f.add_opt("j.status = ?", self.status.map(str::to_owned));
                    self.add_window(&mut f);
                    self.add_modified_cursor(&mut f);
                    format!(
                        "SELECT j.id FROM tags t INDEXED BY {index} CROSS JOIN jobs j ON j.id = t.job_id {} {order}
                         LIMIT ? OFFSET ?",
                        f.clause()
                    )
                } else {
                    let index = if self.status.is_some() { "jobs_by_status_modified" } else { "jobs_modified" };
                    f.add_opt("j.status = ?", self.status.map(str::to_owned));
                    self.add_tag_probe(&mut f);
                    self.add_window(&mut f);
                    self.add_modified_cursor(&mut f);
                    format!("SELECT j.id FROM jobs j INDEXED BY {index} {} {order} LIMIT ? OFFSET ?", f.clause())
                }
            }
        };
        let args = f.args(limit_offset(self.q.limit, self.q.start, self.cursor.is_some()));
        let mut stmt = conn.prepare_cached(&sql).map_err(Error::db("list jobs"))?;
        stmt.query_map(params_from_iter(args), |r| r.get::<_, i64>(0))
            .and_then(Iterator::collect::<rusqlite::Result<Vec<_>>>)
            .map_err(Error::db("list jobs"))
    }

    /// How many jobs match (ignoring the page and the cursor).
    fn total(&self, conn: &Connection) -> Result<u64> {
        if let (Some((from, to)), None) = (self.window, self.tag) {
            let per_status = window::counts(conn, self.q.by, from, to, self.status)?;
            return Ok(per_status.iter().map(|(_, n)| n).sum());
        }
        if self.window.is_some() {
            let mut f = Filter::default();
            f.add_opt("j.status = ?", self.status.map(str::to_owned));
            self.add_tag_probe(&mut f);
            self.add_window(&mut f);
            let sql = format!("SELECT COUNT(*) FROM jobs j {}", f.clause());
            let n: i64 = conn
                .prepare_cached(&sql)
                .and_then(|mut s| s.query_row(params_from_iter(f.args([])), |r| r.get(0)))
                .map_err(Error::db("count jobs"))?;
            return Ok(n as u64);
        }
        match (self.tag, self.status) {
            (Some((k, v)), status) => tag_count(conn, k, v, status),
            (None, Some(s)) => status_count(conn, s),
            (None, None) => conn
                .query_row("SELECT COALESCE(SUM(n), 0) FROM counters WHERE name = 'status'", [], |r| r.get::<_, i64>(0))
                .map(|n| n as u64)
                .map_err(Error::db("count jobs")),
        }
    }
}

/// Jobs in `status`, from the counters.
fn status_count(conn: &Connection, status: &str) -> Result<u64> {
    conn.prepare_cached("SELECT n FROM counters WHERE name = 'status' AND key = ?1")
        .and_then(|mut s| s.query_row([status], |r| r.get::<_, i64>(0)).optional())
        .map(|n| n.unwrap_or(0).max(0) as u64)
        .map_err(Error::db("count jobs"))
}

/// Jobs carrying `key` (= `value`) (in `status`), from the counters.
pub(crate) fn tag_count(conn: &Connection, key: &str, value: Option<&str>, status: Option<&str>) -> Result<u64> {
    let n: i64 = match value {
        Some(v) => conn
            .prepare_cached(
                "SELECT COALESCE(SUM(n), 0) FROM tag_value_counts WHERE key = ?1 AND value = ?2
                 AND (?3 IS NULL OR status = ?3)",
            )
            .and_then(|mut s| s.query_row(rusqlite::params![key, v, status], |r| r.get(0))),
        None => conn
            .prepare_cached(
                "SELECT COALESCE(SUM(n), 0) FROM tag_key_counts WHERE key = ?1 AND (?2 IS NULL OR status = ?2)",
            )
            .and_then(|mut s| s.query_row(rusqlite::params![key, status], |r| r.get(0))),
    }
    .map_err(Error::db("count tagged jobs"))?;
    Ok(n.max(0) as u64)
}

/// A stage as listings need it: its kind (the argument is skipped, not
/// decoded).
#[derive(Deserialize)]
struct KindOnly {
    kind: StageKind,
}

/// The summaries of `ids`, in that order. A queued job whose stage kind
/// no worker in `live` runs says so.
fn summaries(conn: &Connection, ids: &[i64], live: &BTreeSet<StageKind>) -> Result<Vec<JobSummary>> {
    if ids.is_empty() {
        return Ok(Vec::new());
    }
    let marks = vec!["?"; ids.len()].join(",");
    let sql = format!(
        "SELECT id, created_us, modified_us, status, cursor, stages, worker,
                (SELECT headline FROM results r WHERE r.job_id = jobs.id AND r.headline IS NOT NULL
                 ORDER BY r.stage DESC LIMIT 1)
         FROM jobs WHERE id IN ({marks})"
    );
    let mut stmt = conn.prepare_cached(&sql).map_err(Error::db("list jobs"))?;
    let rows = stmt
        .query_map(params_from_iter(ids), |r| {
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
    let mut by_id = HashMap::with_capacity(rows.len());
    for (id, created, modified, status, cursor, stages, worker, headline) in rows {
        let job = JobId::new(id as u64);
        let stages: Vec<KindOnly> =
            serde_json::from_str(&stages).map_err(|source| Error::Corrupt { job, what: "stages", source })?;
        let kinds: Vec<StageKind> = stages.into_iter().map(|s| s.kind).collect();
        let status = status_of(&status);
        let summary = JobSummary {
            id: job,
            created: to_time(created),
            modified: to_time(modified),
            no_worker_for: no_worker_for(status, kinds.get(cursor as usize), live),
            kinds,
            status,
            current_stage: (!status.is_terminal()).then_some(StageIndex(cursor)),
            worker: if status == JobStatus::InProgress { worker } else { None },
            headline,
        };
        by_id.insert(id, summary);
    }
    Ok(ids.iter().filter_map(|id| by_id.remove(id)).collect())
}

/// The kind a queued job waits for when no live worker runs it.
pub(crate) fn no_worker_for(
    status: JobStatus,
    kind: Option<&StageKind>,
    live: &BTreeSet<StageKind>,
) -> Option<StageKind> {
    let queued = matches!(status, JobStatus::Pending | JobStatus::Waiting);
    kind.filter(|k| queued && !live.contains(*k)).cloned()
}

/// A page of job summaries; `live` are the kinds live workers run.
pub(crate) fn list(conn: &Connection, q: &ListQuery, live: &BTreeSet<StageKind>) -> Result<Page<JobSummary>> {
    list_planned(conn, q, live, FEW_MATCHES)
}

/// [`list`] with the plan threshold given.
fn list_planned(
    conn: &Connection,
    q: &ListQuery,
    live: &BTreeSet<StageKind>,
    few_matches: u64,
) -> Result<Page<JobSummary>> {
    let listing = Listing { few_matches, ..Listing::new(q)? };
    let ids = listing.page_ids(conn)?;
    let total = listing.total(conn)?;
    let items = summaries(conn, &ids, live)?;
    Ok(Page::new(items, q.start, q.limit, total).with_cursor(|s| match q.by {
        TimeField::Created => Cursor::Id(raw(s.id)).encode(),
        TimeField::Modified => Cursor::Modified(s.modified.timestamp_micros(), raw(s.id)).encode(),
    }))
}

/// How many of the jobs `q` selects (ignoring its status, page and
/// cursor) are in each status.
pub(crate) fn counts(conn: &Connection, q: &ListQuery) -> Result<StatusCounts> {
    let q = ListQuery { status: None, after: None, ..q.clone() };
    let listing = Listing::new(&q)?;
    let rows = if let (Some((from, to)), None) = (listing.window, listing.tag) {
        window::counts(conn, q.by, from, to, None)?
    } else {
        counted(conn, &listing)?
    };
    let mut c = StatusCounts::default();
    for (status, n) in rows {
        match status_of(&status) {
            JobStatus::Pending => c.pending = n,
            JobStatus::Waiting => c.waiting = n,
            JobStatus::InProgress => c.in_progress = n,
            JobStatus::Finished => c.finished = n,
            JobStatus::Aborted => c.aborted = n,
            // The table's CHECK constraint admits only the statuses above;
            // a status added to the contract gets its own counter here.
            _ => {}
        }
    }
    Ok(c)
}

/// Jobs per status that `listing` selects, from the tag and status
/// counters, or (tag and window) counted.
fn counted(conn: &Connection, listing: &Listing<'_>) -> Result<Vec<(String, u64)>> {
    let (sql, args) = if listing.window.is_some() {
        let mut f = Filter::default();
        listing.add_tag_probe(&mut f);
        listing.add_window(&mut f);
        (format!("SELECT j.status, COUNT(*) FROM jobs j {} GROUP BY j.status", f.clause()), f.args([]))
    } else {
        match listing.tag {
            Some((k, Some(v))) => (
                "SELECT status, n FROM tag_value_counts WHERE key = ? AND value = ?".to_owned(),
                vec![Value::Text(k.to_owned()), Value::Text(v.to_owned())],
            ),
            Some((k, None)) => {
                ("SELECT status, n FROM tag_key_counts WHERE key = ?".to_owned(), vec![Value::Text(k.to_owned())])
            }
            None => ("SELECT key, n FROM counters WHERE name = 'status'".to_owned(), vec![]),
        }
    };
    let mut stmt = conn.prepare_cached(&sql).map_err(Error::db("count jobs"))?;
    stmt.query_map(params_from_iter(args), |r| Ok((r.get::<_, String>(0)?, r.get::<_, i64>(1)?.max(0) as u64)))
        .and_then(Iterator::collect::<rusqlite::Result<Vec<_>>>)
        .map_err(Error::db("count jobs"))
}

#[cfg(test)]
#[path = "listing_tests.rs"]
mod tests;
