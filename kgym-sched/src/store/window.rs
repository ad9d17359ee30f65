//! How many jobs fall inside a time window, per status, at a cost that
//! does not grow with the number of jobs: the whole hours inside the
//! window from the counters migration 0004 keeps (`job_hours`), the
//! partial hours at its two edges counted in the time index.

use rusqlite::types::Value;
use rusqlite::{Connection, params_from_iter};

use super::hours::{HOUR_US, first_whole_hour, last_whole_hour, start_of};
use super::sql::Filter;
use crate::error::{Error, Result};
use crate::types::TimeField;

/// Jobs whose `time` lies in `[from, to]` (µs), per status (only `status`
/// when given); statuses without jobs are left out.
pub(crate) fn counts(
    conn: &Connection,
    time: TimeField,
    from: i64,
    to: i64,
    status: Option<&str>,
) -> Result<Vec<(String, u64)>> {
    let mut out: Vec<(String, u64)> = Vec::new();
    let mut add = |rows: Vec<(String, i64)>| {
        for (s, n) in rows {
            let n = n.max(0) as u64;
            match out.iter_mut().find(|(have, _)| *have == s) {
                Some((_, m)) => *m += n,
                None => out.push((s, n)),
            }
        }
    };
    // SQLite's division truncates toward zero, so the counters' hour 0
    // also holds the hour before the epoch: counters only from hour 1 on
    // (no job is that old; a window reaching there is counted in rows).
    let first = first_whole_hour(from).max(1);
    let last = last_whole_hour(to);
    if first > last {
        add(in_rows(conn, time, from, to, status)?);
    } else {
        add(in_hours(conn, time, first, last, status)?);
        if from < start_of(first) {
            add(in_rows(conn, time, from, start_of(first) - 1, status)?);
        }
        // The open end (`last_whole_hour(i64::MAX)`) has no hour after it.
        if last < i64::MAX / HOUR_US && start_of(last + 1) <= to {
            add(in_rows(conn, time, start_of(last + 1), to, status)?);
        }
    }
    out.retain(|(_, n)| *n > 0);
    Ok(out)
}

fn time_name(time: TimeField) -> (&'static str, &'static str) {
    match time {
        TimeField::Created => ("created", "created_us"),
        TimeField::Modified => ("modified", "modified_us"),
    }
}

/// From the counters of hours `first..=last`.
fn in_hours(
    conn: &Connection,
    time: TimeField,
    first: i64,
    last: i64,
    status: Option<&str>,
) -> Result<Vec<(String, i64)>> {
    let mut f = Filter::default();
    f.add("time = ?", [Value::Text(time_name(time).0.to_owned())]);
    f.add("hour >= ? AND hour <= ?", [Value::Integer(first), Value::Integer(last)]);
    f.add_opt("status = ?", status.map(str::to_owned));
    grouped(conn, &format!("SELECT status, SUM(n) FROM job_hours {} GROUP BY status", f.clause()), &f)
}

/// From the jobs themselves, in the time index.
fn in_rows(conn: &Connection, time: TimeField, from: i64, to: i64, status: Option<&str>) -> Result<Vec<(String, i64)>> {
    let col = time_name(time).1;
    let mut f = Filter::default();
    f.add(format!("{col} >= ? AND {col} <= ?"), [Value::Integer(from), Value::Integer(to)]);
    f.add_opt("status = ?", status.map(str::to_owned));
    grouped(conn, &format!("SELECT status, COUNT(*) FROM jobs {} GROUP BY status", f.clause()), &f)
}

fn grouped(conn: &Connection, sql: &str, f: &Filter) -> Result<Vec<(String, i64)>> {
    let mut stmt = conn.prepare_cached(sql).map_err(Error::db("count jobs"))?;
    stmt.query_map(params_from_iter(f.args([])), |r| Ok((r.get::<_, String>(0)?, r.get::<_, i64>(1)?)))
        .and_then(Iterator::collect::<rusqlite::Result<Vec<_>>>)
        .map_err(Error::db("count jobs"))
}
