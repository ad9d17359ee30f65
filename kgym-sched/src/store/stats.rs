//! Statistics of the job history over a window: jobs finished per hour,
//! stage durations per kind, the most frequent result headlines.
//!
//! Whole hours come from the rollups migration 0003's triggers keep
//! (`finished_hours`, `duration_hours`, `headline_hours`); the part of the
//! window before its first whole hour from the rows themselves. A week of
//! history is then a few hundred rows whatever the number of jobs.
//! Durations are kept in buckets 5 % apart: percentiles are a bucket's
//! lower bound (never above the longest duration).

use std::collections::BTreeMap;

use kgym_core::{JobId, StageKind};
use rusqlite::{Connection, params};

use super::hours::{HOUR_US, first_whole_hour, start_of};
use super::{stored_kind, to_time};
use crate::error::{Error, Result};
use crate::types::{HeadlineCount, HourCount, KindDurations, Stats};

/// The window: `since` (µs), and the start of its first whole hour (the
/// rollups cover from there on; the rows, from `since` to there).
#[derive(Debug, Clone, Copy)]
struct Window {
    since: i64,
    first_hour: i64,
}

impl Window {
    fn new(since: i64) -> Self {
        Self { since, first_hour: first_whole_hour(since) }
    }

    /// The end (µs, exclusive) of the part read from the rows.
    fn edge(&self) -> i64 {
        start_of(self.first_hour)
    }
}

/// The statistics of what ended at or after `since` (µs).
pub(crate) fn stats(conn: &Connection, since: i64, top: u32) -> Result<Stats> {
    let w = Window::new(since);
    Ok(Stats {
        since: to_time(since),
        finished_per_hour: per_hour(conn, w)?,
        durations: durations(conn, w)?,
        headlines: headlines(conn, w, top)?,
    })
}

fn per_hour(conn: &Connection, w: Window) -> Result<Vec<HourCount>> {
    let err = Error::db("count finished jobs");
    let (partial, failed): (i64, i64) = conn
        .prepare_cached(
            "SELECT COUNT(*), COALESCE(SUM(cursor < json_array_length(stages)), 0) FROM jobs
             WHERE status = 'finished' AND modified_us >= ?1 AND modified_us < ?2",
        )
        .and_then(|mut s| s.query_row(params![w.since, w.edge()], |r| Ok((r.get(0)?, r.get(1)?))))
        .map_err(err)?;
    let mut out = Vec::new();
    if partial > 0 {
        let hour = to_time(w.since.div_euclid(HOUR_US) * HOUR_US);
        out.push(HourCount { hour, finished: partial as u64, failed: failed.max(0) as u64 });
    }
    let mut stmt = conn
        .prepare_cached(
            "SELECT hour, finished, failed FROM finished_hours WHERE hour >= ?1 AND finished > 0 ORDER BY hour",
        )
        .map_err(Error::db("count finished jobs"))?;
    let rows = stmt
        .query_map([w.first_hour], |r| {
            Ok(HourCount {
                hour: to_time(r.get::<_, i64>(0)?.saturating_mul(HOUR_US)),
                finished: r.get::<_, i64>(1)?.max(0) as u64,
                failed: r.get::<_, i64>(2)?.max(0) as u64,
            })
        })
        .and_then(Iterator::collect::<rusqlite::Result<Vec<_>>>)
        .map_err(Error::db("count finished jobs"))?;
    out.extend(rows);
    Ok(out)
}

/// One kind's durations as buckets (lower bound in ms → count) and the
/// longest duration.
#[derive(Default)]
struct Histogram {
    buckets: BTreeMap<i64, u64>,
    max_us: i64,
}

impl Histogram {
    fn count(&self) -> u64 {
        self.buckets.values().sum()
    }

    /// The `q` quantile, in seconds: the lower bound of the bucket holding
    /// the item at rank round((count - 1) * q).
    fn quantile(&self, q: f64) -> f64 {
        let rank = ((self.count().saturating_sub(1)) as f64 * q).round() as u64;
        let mut seen = 0;
        for (lo_ms, n) in &self.buckets {
            seen += n;
            if seen > rank {
                return (*lo_ms as f64 / 1e3).min(self.max_seconds());
            }
        }
        self.max_seconds()
    }

    fn max_seconds(&self) -> f64 {
        self.max_us.max(0) as f64 / 1e6
    }
}

fn durations(conn: &Connection, w: Window) -> Result<Vec<KindDurations>> {
    let mut stmt = conn
        .prepare_cached(
            "SELECT kind, lo_ms, SUM(n), MAX(max_us) FROM duration_hours WHERE hour >= ?1 GROUP BY kind, lo_ms
             UNION ALL
             SELECT kind, (SELECT MAX(lo_ms) FROM duration_bounds WHERE lo_ms <= MAX(finished_us - started_us, 0) / 1000),
                    COUNT(*), MAX(finished_us - started_us)
             FROM results
             WHERE finished_us >= ?2 AND finished_us < ?3 AND outcome = 'success' AND started_us IS NOT NULL
                   AND kind IS NOT NULL
             GROUP BY 1, 2",
        )
        .map_err(Error::db("read stage durations"))?;
    let rows = stmt
        .query_map(params![w.first_hour, w.since, w.edge()], |r| {
            Ok((stored_kind(r.get(0)?, 0)?, r.get::<_, i64>(1)?, r.get::<_, i64>(2)?, r.get::<_, i64>(3)?))
        })
        .and_then(Iterator::collect::<rusqlite::Result<Vec<_>>>)
        .map_err(Error::db("read stage durations"))?;
    let mut by_kind: BTreeMap<StageKind, Histogram> = BTreeMap::new();
    for (kind, lo_ms, n, max_us) in rows {
        let h = by_kind.entry(kind).or_default();
        *h.buckets.entry(lo_ms).or_default() += n.max(0) as u64;
        h.max_us = h.max_us.max(max_us);
    }
    Ok(by_kind
        .into_iter()
        .filter(|(_, h)| h.count() > 0)
        .map(|(kind, h)| KindDurations {
            kind,
            count: h.count(),
            p50_seconds: h.quantile(0.5),
            p90_seconds: h.quantile(0.9),
            max_seconds: h.max_seconds(),
        })
        .collect())
}

fn headlines(conn: &Connection, w: Window, top: u32) -> Result<Vec<HeadlineCount>> {
    let mut stmt = conn
        .prepare_cached(
            "SELECT headline, SUM(n), MAX(last_job) FROM (
                 SELECT headline, n, last_job FROM headline_hours WHERE hour >= ?1
                 UNION ALL
                 SELECT headline, 1, job_id FROM results
                 WHERE finished_us >= ?2 AND finished_us < ?3 AND headline IS NOT NULL)
             GROUP BY headline HAVING SUM(n) > 0 ORDER BY SUM(n) DESC, headline LIMIT ?4",
        )
        .map_err(Error::db("count headlines"))?;
    stmt.query_map(params![w.first_hour, w.since, w.edge(), top.min(100)], |r| {
        Ok(HeadlineCount {
            headline: r.get(0)?,
            count: r.get::<_, i64>(1)? as u64,
            last_job: JobId::new(r.get::<_, i64>(2)? as u64),
        })
    })
    .and_then(Iterator::collect::<rusqlite::Result<Vec<_>>>)
    .map_err(Error::db("count headlines"))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn windows_split_at_the_first_whole_hour() {
        let w = Window::new(3 * HOUR_US + 5);
        assert_eq!((w.first_hour, w.edge()), (4, 4 * HOUR_US));
        let on = Window::new(3 * HOUR_US);
        assert_eq!((on.first_hour, on.edge()), (3, 3 * HOUR_US));
        let before_epoch = Window::new(-5);
        assert_eq!(before_epoch.first_hour, 0);
    }

    #[test]
    fn quantiles_are_bucket_bounds_never_above_the_longest() {
        let h = Histogram { buckets: BTreeMap::from([(10, 5), (20, 4), (40, 1)]), max_us: 41_000 };
        assert_eq!(h.count(), 10);
        assert_eq!(h.quantile(0.5), 0.02);
        assert_eq!(h.quantile(0.9), 0.02);
        assert_eq!(h.quantile(1.0), 0.04);
        assert_eq!(h.quantile(0.0), 0.01);
        let capped = Histogram { buckets: BTreeMap::from([(1000, 1)]), max_us: 500_000 };
        assert_eq!(capped.quantile(0.5), 0.5);
    }

    /// A finished job with a build of `build_ms` and a reproduce stage
    /// that ended `failed` or with `headline`, all at `at` (µs).
    fn finished_job(conn: &Connection, at: i64, build_ms: i64, failed: bool, headline: &str) -> i64 {
        conn.execute(
            "INSERT INTO jobs (created_us, modified_us, status, cursor, stages)
             VALUES (?1, ?1, 'pending', 0, '[{\"kind\": \"build\"}, {\"kind\": \"reproduce\"}]')",
            [at],
        )
        .unwrap();
        let id = conn.last_insert_rowid();
        let result = |stage: i64, kind: &str, outcome: &str, started: i64, headline: Option<&str>| {
            conn.execute(
                "INSERT INTO results (job_id, stage, result, kind, outcome, started_us, finished_us, headline)
                 VALUES (?1, ?2, '{}', ?3, ?4, ?5, ?6, ?7)",
                params![id, stage, kind, outcome, started, at, headline],
            )
            .unwrap();
        };
        result(0, "build", "success", at - build_ms * 1000, None);
        result(1, "reproduce", if failed { "failure" } else { "success" }, at - 1_000_000, Some(headline));
        conn.execute(
            "UPDATE jobs SET status = 'finished', cursor = ?1, modified_us = ?2 WHERE id = ?3",
            params![if failed { 1 } else { 2 }, at, id],
        )
        .unwrap();
        id
    }

    #[test]
    fn whole_hours_come_from_the_rollups_and_follow_reruns() {
        let mut conn = Connection::open_in_memory().unwrap();
        crate::store::migrate(&mut conn).unwrap();
        let now = 1_800_000_000_000_000 + 1234;
        // Three hours ago (rollups) and just now (rows).
        let old = now - 3 * HOUR_US;
        let a = finished_job(&conn, old, 20_000, false, "KASAN: A");
        finished_job(&conn, old + 10, 40_000, true, "KASAN: A");
        finished_job(&conn, now, 10_000, false, "KASAN: B");
        let s = stats(&conn, now - 5 * HOUR_US, 10).unwrap();
        let hours: Vec<(u64, u64)> = s.finished_per_hour.iter().map(|h| (h.finished, h.failed)).collect();
        assert_eq!(hours, vec![(2, 1), (1, 0)], "{s:?}");
        let build = s.durations.iter().find(|d| d.kind.as_str() == "build").unwrap();
        assert_eq!(build.count, 3);
        assert!((build.p50_seconds - 20.0).abs() <= 1.0 && build.p50_seconds <= 20.0, "{build:?}");
        assert_eq!(build.max_seconds, 40.0);
        let reproduce = s.durations.iter().find(|d| d.kind.as_str() == "reproduce").unwrap();
        assert_eq!(reproduce.count, 2, "failed stages have no duration");
        assert_eq!(s.headlines[0].headline, "KASAN: A");
        assert_eq!((s.headlines[0].count, s.headlines[1].count), (2, 1));
        // The window starts after the old hour: only the new job.
        let recent = stats(&conn, now - HOUR_US / 2, 10).unwrap();
        assert_eq!(recent.finished_per_hour.iter().map(|h| h.finished).sum::<u64>(), 1);
        assert_eq!(recent.headlines.len(), 1);
        // Job a runs again from stage 0: it leaves every rollup.
        conn.execute("UPDATE jobs SET status = 'pending', cursor = 0, modified_us = ?1 WHERE id = ?2", params![now, a])
            .unwrap();
        conn.execute("DELETE FROM results WHERE job_id = ?1", [a]).unwrap();
        let s = stats(&conn, now - 5 * HOUR_US, 10).unwrap();
        let hours: Vec<(u64, u64)> = s.finished_per_hour.iter().map(|h| (h.finished, h.failed)).collect();
        assert_eq!(hours, vec![(1, 1), (1, 0)], "{s:?}");
        assert_eq!(s.durations.iter().find(|d| d.kind.as_str() == "build").unwrap().count, 2);
        assert_eq!((s.headlines[0].count, s.headlines[1].count), (1, 1));
    }
}
