//! Statistics of the job history over a window: jobs finished per hour,
//! stage durations per kind, the most frequent result headlines.

use std::collections::BTreeMap;

use kgym_core::{JobId, StageKind};
use rusqlite::{Connection, params};

use super::{stored_kind, to_time};
use crate::error::{Error, Result};
use crate::types::{HeadlineCount, HourCount, KindDurations, Stats};

const HOUR_US: i64 = 3_600_000_000;

/// The statistics of what ended at or after `since` (µs).
pub(crate) fn stats(conn: &Connection, since: i64, top: u32) -> Result<Stats> {
    Ok(Stats {
        since: to_time(since),
        finished_per_hour: per_hour(conn, since)?,
        durations: durations(conn, since)?,
        headlines: headlines(conn, since, top)?,
    })
}

fn per_hour(conn: &Connection, since: i64) -> Result<Vec<HourCount>> {
    let mut stmt = conn
        .prepare_cached(
            "SELECT modified_us / ?2 AS h, COUNT(*),
                    SUM(EXISTS (SELECT 1 FROM results r WHERE r.job_id = jobs.id AND r.outcome = 'failure'))
             FROM jobs WHERE status = 'finished' AND modified_us >= ?1 GROUP BY h ORDER BY h",
        )
        .map_err(Error::db("count finished jobs"))?;
    stmt.query_map(params![since, HOUR_US], |r| {
        Ok(HourCount {
            hour: to_time(r.get::<_, i64>(0)? * HOUR_US),
            finished: r.get::<_, i64>(1)? as u64,
            failed: r.get::<_, i64>(2)? as u64,
        })
    })
    .and_then(Iterator::collect::<rusqlite::Result<Vec<_>>>)
    .map_err(Error::db("count finished jobs"))
}

fn durations(conn: &Connection, since: i64) -> Result<Vec<KindDurations>> {
    let mut stmt = conn
        .prepare_cached(
            "SELECT kind, finished_us - started_us FROM results
             WHERE outcome = 'success' AND finished_us >= ?1 AND started_us IS NOT NULL AND kind IS NOT NULL",
        )
        .map_err(Error::db("read stage durations"))?;
    let rows = stmt
        .query_map([since], |r| Ok((stored_kind(r.get(0)?, 0)?, r.get::<_, i64>(1)?)))
        .and_then(Iterator::collect::<rusqlite::Result<Vec<_>>>)
        .map_err(Error::db("read stage durations"))?;
    let mut by_kind: BTreeMap<StageKind, Vec<f64>> = BTreeMap::new();
    for (kind, us) in rows {
        by_kind.entry(kind).or_default().push(us.max(0) as f64 / 1e6);
    }
    Ok(by_kind
        .into_iter()
        .map(|(kind, mut secs)| {
            secs.sort_by(f64::total_cmp);
            let at = |q: f64| secs[((secs.len() - 1) as f64 * q).round() as usize];
            KindDurations {
                kind,
                count: secs.len() as u64,
                p50_seconds: at(0.5),
                p90_seconds: at(0.9),
                max_seconds: secs[secs.len() - 1],
            }
        })
        .collect())
}

fn headlines(conn: &Connection, since: i64, top: u32) -> Result<Vec<HeadlineCount>> {
    let mut stmt = conn
        .prepare_cached(
            "SELECT headline, COUNT(*), MAX(job_id) FROM results
             WHERE headline IS NOT NULL AND finished_us >= ?1
             GROUP BY headline ORDER BY COUNT(*) DESC, headline LIMIT ?2",
        )
        .map_err(Error::db("count headlines"))?;
    stmt.query_map(params![since, top.min(100)], |r| {
        Ok(HeadlineCount {
            headline: r.get(0)?,
            count: r.get::<_, i64>(1)? as u64,
            last_job: JobId::new(r.get::<_, i64>(2)? as u64),
        })
    })
    .and_then(Iterator::collect::<rusqlite::Result<Vec<_>>>)
    .map_err(Error::db("count headlines"))
}
