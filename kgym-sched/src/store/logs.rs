//! Job logs and the system log.

use chrono::{DateTime, Utc};
use kgym_core::{JobId, StageIndex, StageKind};
use rusqlite::{Connection, OptionalExtension, params, params_from_iter};

use super::cursor::Cursor;
use super::sql::{Filter, limit_offset};
use super::{job_exists, raw, to_time};
use crate::error::{Error, Result};
use crate::types::{JobLogEntry, LogQuery, Order, Page, SystemLogEntry, SystemLogQuery};
use crate::worker_api::Lease;

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

/// One log line and what it is about: the stage (or just its kind), and
/// the worker and host it concerns.
#[derive(Debug, Clone, Copy)]
pub(crate) struct LogLine<'a> {
    text: &'a str,
    index: Option<StageIndex>,
    kind: Option<&'a StageKind>,
    worker: Option<&'a str>,
    host: Option<&'a str>,
}

impl<'a> LogLine<'a> {
    /// A line about a whole job (or the system).
    pub fn new(text: &'a str) -> Self {
        Self { text, index: None, kind: None, worker: None, host: None }
    }

    /// About stage `index` of kind `kind`.
    pub fn stage(self, index: StageIndex, kind: &'a StageKind) -> Self {
        Self { index: Some(index), kind: Some(kind), ..self }
    }

    /// About stages of kind `kind`.
    pub fn kind(self, kind: &'a StageKind) -> Self {
        Self { kind: Some(kind), ..self }
    }

    /// About `worker` on `host`.
    pub fn worker(self, worker: &'a str, host: &'a str) -> Self {
        Self { worker: Some(worker), host: Some(host), ..self }
    }

    /// About host `host`.
    pub fn host(self, host: &'a str) -> Self {
        Self { host: Some(host), ..self }
    }
}

/// Appends `line` to `job`'s log and returns it as stored.
pub(crate) fn job_line(conn: &Connection, job: JobId, now: i64, line: &LogLine<'_>) -> Result<JobLogEntry> {
    let text = cut(line.text);
    conn.prepare_cached(
        "INSERT INTO job_log (job_id, time_us, stage, kind, worker, host, line) VALUES (?1, ?2, ?3, ?4, ?5, ?6, ?7)",
    )
    .and_then(|mut s| {
        s.execute(params![
            raw(job),
            now,
            line.index.map(|s| s.0),
            line.kind.map(StageKind::as_str),
            line.worker,
            line.host,
            text
        ])
    })
    .map_err(Error::db("append to a job log"))?;
    Ok(JobLogEntry {
        seq: conn.last_insert_rowid() as u64,
        job,
        time: to_time(now),
        stage: line.index,
        kind: line.kind.cloned(),
        worker: line.worker.map(str::to_owned),
        host: line.host.map(str::to_owned),
        line: text.to_owned(),
    })
}

/// Appends `line` (about `job`, when given) to the system log.
pub(crate) fn sys_line(conn: &Connection, job: Option<JobId>, now: i64, line: &LogLine<'_>) -> Result<()> {
    conn.prepare_cached(
        "INSERT INTO sys_log (time_us, kind, host, worker, job_id, message) VALUES (?1, ?2, ?3, ?4, ?5, ?6)",
    )
    .and_then(|mut s| {
        s.execute(params![now, line.kind.map(StageKind::as_str), line.host, line.worker, job.map(raw), cut(line.text)])
    })
    .map_err(Error::db("append to the system log"))?;
    Ok(())
}

/// A scheduler line about `job`: into the job's log in the scheduler's own
/// voice (no worker), and into the system log naming the worker and
/// prefixed with the job.
pub(crate) fn log_both(conn: &Connection, job: JobId, now: i64, line: &LogLine<'_>) -> Result<JobLogEntry> {
    let own = LogLine { worker: None, host: None, ..*line };
    let entry = job_line(conn, job, now, &own)?;
    let text = format!("job {job}: {}", line.text);
    sys_line(conn, Some(job), now, &LogLine { text: &text, ..*line })?;
    Ok(entry)
}

/// Appends a batch of a worker's lines to a job's log in one transaction.
/// How long the id of an applied request is kept (see migration 0006).
const APPLIED_REQUEST_KEPT_US: i64 = 24 * 3600 * 1_000_000;

/// Appends a worker's lines to its stage's log; with `request` (an id
/// unique to this request), only once: a request delivered again after it
/// was applied appends nothing.
pub(crate) fn append_worker_lines(
    conn: &mut Connection,
    lease: &Lease,
    worker: &str,
    lines: &[String],
    request: Option<&str>,
    now: i64,
) -> Result<Vec<JobLogEntry>> {
    let tx = conn.transaction().map_err(Error::db("append to a job log"))?;
    if let Some(id) = request {
        let fresh = tx
            .execute("INSERT OR IGNORE INTO applied_requests (id, at_us) VALUES (?1, ?2)", params![id, now])
            .map_err(Error::db("record an applied request"))?;
        if fresh == 0 {
            return Ok(Vec::new());
        }
        tx.execute("DELETE FROM applied_requests WHERE at_us < ?1", params![now - APPLIED_REQUEST_KEPT_US])
            .map_err(Error::db("prune applied requests"))?;
    }
    // Lines of a stage whose lease is gone (handed to another worker) are
    // dropped; an aborted stage's last words are kept.
    let kind: Option<String> = tx
        .query_row(
            "SELECT json_extract(stages, '$[' || cursor || '].kind') FROM jobs
             WHERE id = ?1 AND cursor = ?2 AND lease_token = ?3 AND status IN ('in_progress', 'aborted')",
            params![raw(lease.job), lease.stage.0, lease.token],
            |r| r.get(0),
        )
        .optional()
        .map_err(Error::db("append to a job log"))?;
    let kind =
        kind.and_then(|k| StageKind::new(k).ok()).ok_or(Error::LeaseLost { job: lease.job, stage: lease.stage })?;
    let host = worker.split('/').next().unwrap_or(worker);
    let mut out = Vec::with_capacity(lines.len());
    for text in lines {
        let line = LogLine::new(text).stage(lease.stage, &kind).worker(worker, host);
        out.push(job_line(&tx, lease.job, now, &line)?);
    }
    tx.commit().map_err(Error::db("append to a job log"))?;
    Ok(out)
}

fn dir(order: Order) -> (&'static str, &'static str) {
    match order {
        Order::NewestFirst => ("DESC", "<"),
        Order::OldestFirst => ("ASC", ">"),
    }
}

/// Adds a log query's time window.
fn add_window(f: &mut Filter, from: Option<DateTime<Utc>>, to: Option<DateTime<Utc>>) {
    f.add_opt("time_us >= ?", from.map(|t| t.timestamp_micros()));
    f.add_opt("time_us <= ?", to.map(|t| t.timestamp_micros()));
}

/// A count kept by the triggers of migrations 0003 to 0005 (0 when there
/// is no row).
fn counter<const N: usize>(conn: &Connection, sql: &str, args: [rusqlite::types::Value; N]) -> Result<u64> {
    conn.prepare_cached(sql)
        .and_then(|mut s| s.query_row(params_from_iter(args), |r| r.get::<_, i64>(0)).optional())
        .map(|n| n.unwrap_or(0).max(0) as u64)
        .map_err(Error::db("count log lines"))
}

fn count(conn: &Connection, table: &str, f: &Filter, op: &'static str) -> Result<u64> {
    let sql = format!("SELECT COUNT(*) FROM {table} {}", f.clause());
    conn.prepare_cached(&sql)
        .and_then(|mut s| s.query_row(params_from_iter(f.args([])), |r| r.get::<_, i64>(0)))
        .map(|n| n as u64)
        .map_err(Error::db(op))
}

/// A page of `columns` of log `table` (filtered by `f`, then `LIMIT ?
/// OFFSET ?`): the page's sequence numbers are found in an index that
/// holds them without the lines (migration 0004), then just those rows are
/// read; skipping inside the table itself would read every skipped line.
fn page_sql(table: &str, columns: &str, f: &Filter, dir: &str) -> String {
    format!(
        "SELECT {columns} FROM {table} WHERE seq IN
             (SELECT seq FROM {table} {} ORDER BY seq {dir} LIMIT ? OFFSET ?)
         ORDER BY seq {dir}",
        f.clause()
    )
}

/// A page of job log lines.
pub(crate) fn query_logs(conn: &Connection, q: &LogQuery) -> Result<Page<JobLogEntry>> {
    if let Some(job) = q.job
        && !job_exists(conn, job)?
    {
        return Err(Error::JobNotFound { id: job });
    }
    let after = q.after.as_deref().map(Cursor::id).transpose()?;
    let (dir, cmp) = dir(q.order);
    let mut f = Filter::default();
    f.add_opt("job_id = ?", q.job.map(raw));
    add_window(&mut f, q.from, q.to);
    let total = match (q.job, q.from.or(q.to)) {
        // One job's lines, from the counters (a chatty stage logs many).
        (Some(job), None) => counter(conn, "SELECT n FROM job_log_counts WHERE job_id = ?1", [raw(job).into()])?,
        (None, None) => counter(conn, "SELECT n FROM counters WHERE name = 'log' AND key = 'job'", [])?,
        _ => count(conn, "job_log", &f, "read a job log")?,
    };
    f.add_opt(&format!("seq {cmp} ?"), after);
    let sql = page_sql("job_log", "seq, job_id, time_us, stage, kind, worker, host, line", &f, dir);
    let mut stmt = conn.prepare_cached(&sql).map_err(Error::db("read a job log"))?;
    let items = stmt
        .query_map(params_from_iter(f.args(limit_offset(q.limit, q.start, after.is_some()))), |r| {
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
        })
        .and_then(Iterator::collect::<rusqlite::Result<Vec<_>>>)
        .map_err(Error::db("read a job log"))?;
    Ok(Page::new(items, q.start, q.limit, total).with_cursor(|e| Cursor::Id(e.seq as i64).encode()))
}

/// A page of the system log.
pub(crate) fn query_sys_log(conn: &Connection, q: &SystemLogQuery) -> Result<Page<SystemLogEntry>> {
    let after = q.after.as_deref().map(Cursor::id).transpose()?;
    let (dir, cmp) = dir(q.order);
    let mut f = Filter::default();
    f.add_opt("kind = ?", q.kind.as_ref().map(|k| k.as_str().to_owned()));
    f.add_opt("host = ?", q.host.clone());
    add_window(&mut f, q.from, q.to);
    let by_counter = "SELECT n FROM counters WHERE name = ?1 AND key = ?2";
    let total = match (&q.kind, &q.host, q.from.or(q.to)) {
        (Some(k), None, None) => counter(conn, by_counter, ["kind".to_owned().into(), k.as_str().to_owned().into()])?,
        (None, Some(h), None) => counter(conn, by_counter, ["host".to_owned().into(), h.clone().into()])?,
        (None, None, None) => counter(conn, "SELECT n FROM counters WHERE name = 'log' AND key = 'sys'", [])?,
        _ => count(conn, "sys_log", &f, "read the system log")?,
    };
    f.add_opt(&format!("seq {cmp} ?"), after);
    let sql = page_sql("sys_log", "seq, time_us, kind, host, worker, job_id, message", &f, dir);
    let mut stmt = conn.prepare_cached(&sql).map_err(Error::db("read the system log"))?;
    let items = stmt
        .query_map(params_from_iter(f.args(limit_offset(q.limit, q.start, after.is_some()))), |r| {
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
    Ok(Page::new(items, q.start, q.limit, total).with_cursor(|e| Cursor::Id(e.seq as i64).encode()))
}

#[cfg(test)]
mod tests {
    use super::*;

    /// Lines about three kinds and two hosts, at increasing times.
    fn filled() -> Connection {
        let mut conn = Connection::open_in_memory().unwrap();
        crate::store::migrate(&mut conn).unwrap();
        let kinds = [StageKind::new("build").unwrap(), StageKind::new("reproduce").unwrap()];
        for i in 0..120i64 {
            let text = format!("line {i}");
            let mut line = LogLine::new(&text);
            if i % 3 != 0 {
                line = line.kind(&kinds[(i % 2) as usize]);
            }
            if i % 5 != 0 {
                line = line.host(if i % 4 == 0 { "a" } else { "b" });
            }
            sys_line(&conn, None, 1_000_000 + i, &line).unwrap();
        }
        conn
    }

    /// Pages of the system log, deep pages and cursors included, against
    /// the lines filtered and sorted by hand; totals (from the counters or
    /// counted) against the same.
    #[test]
    fn system_log_pages_are_the_filtered_lines_in_order() {
        let conn = filled();
        let all: Vec<SystemLogEntry> =
            query_sys_log(&conn, &SystemLogQuery { order: Order::OldestFirst, limit: 500, ..Default::default() })
                .unwrap()
                .items;
        assert_eq!(all.len(), 120);
        let build = StageKind::new("build").unwrap();
        let queries = [
            SystemLogQuery::default(),
            SystemLogQuery { kind: Some(build.clone()), ..Default::default() },
            SystemLogQuery { host: Some("a".into()), order: Order::OldestFirst, ..Default::default() },
            SystemLogQuery { kind: Some(build.clone()), host: Some("b".into()), ..Default::default() },
            SystemLogQuery { from: Some(to_time(1_000_030)), to: Some(to_time(1_000_090)), ..Default::default() },
        ];
        for q in queries {
            let mut want: Vec<u64> = all
                .iter()
                .filter(|e| q.kind.as_ref().is_none_or(|k| e.kind.as_ref() == Some(k)))
                .filter(|e| q.host.as_ref().is_none_or(|h| e.host.as_ref() == Some(h)))
                .filter(|e| q.from.is_none_or(|t| e.time >= t) && q.to.is_none_or(|t| e.time <= t))
                .map(|e| e.seq)
                .collect();
            if q.order == Order::NewestFirst {
                want.reverse();
            }
            for start in [0, 7, want.len().saturating_sub(3) as u64, want.len() as u64 + 5] {
                let page = query_sys_log(&conn, &SystemLogQuery { start, limit: 10, ..q.clone() }).unwrap();
                let got: Vec<u64> = page.items.iter().map(|e| e.seq).collect();
                let expect: Vec<u64> = want.iter().skip(start as usize).take(10).copied().collect();
                assert_eq!(got, expect, "{q:?} from {start}");
                assert_eq!(page.total, want.len() as u64, "total of {q:?}");
            }
            // Cursors walk the same list.
            let mut walk = SystemLogQuery { limit: 7, ..q.clone() };
            let mut walked = Vec::new();
            loop {
                let page = query_sys_log(&conn, &walk).unwrap();
                walked.extend(page.items.iter().map(|e| e.seq));
                match page.cursor {
                    Some(c) => walk.after = Some(c),
                    None => break,
                }
            }
            assert_eq!(walked, want, "cursor walk of {q:?}");
        }
    }

    /// Every job's lines together: the total from the counter, deep pages
    /// through the sequence index.
    #[test]
    fn all_job_lines_page_and_count() {
        let conn = filled();
        for i in 0..50u64 {
            job_line(&conn, JobId::new(1 + i % 3), 2_000_000 + i as i64, &LogLine::new(&format!("out {i}"))).unwrap();
        }
        let q = LogQuery { start: 45, limit: 10, ..LogQuery::default() };
        let page = query_logs(&conn, &q).unwrap();
        assert_eq!(page.total, 50);
        let lines: Vec<&str> = page.items.iter().map(|e| e.line.as_str()).collect();
        assert_eq!(lines, ["out 4", "out 3", "out 2", "out 1", "out 0"]);
        let one = query_logs(&conn, &LogQuery { job: None, from: Some(to_time(2_000_040)), ..LogQuery::default() });
        assert_eq!(one.unwrap().total, 10);
    }
}
