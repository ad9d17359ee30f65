//! Worker processes: registration, signs of life, goodbyes, and what their
//! slots hold.

use std::collections::BTreeSet;

use kgym_core::{JobId, Labels, StageIndex, StageKind};
use rusqlite::{Connection, OptionalExtension, params};

use super::{Cached, raw, stored_kind, to_time};
use crate::error::{Error, Result};
use crate::types::{RunningStage, WorkerStatus};
use crate::worker_api::WorkerInfo;

/// Records (or refreshes) a worker's registration.
pub(crate) fn register(conn: &Connection, info: &WorkerInfo, now: i64) -> Result<()> {
    let kinds = serde_json::to_string(&info.kinds).map_err(|e| Error::bad_request(format!("worker kinds: {e}")))?;
    let labels = serde_json::to_string(&info.labels).map_err(|e| Error::bad_request(format!("worker labels: {e}")))?;
    conn.prepare_cached(
        "INSERT INTO workers (host, kinds, labels, registered_us, last_seen_us, stopped_us)
         VALUES (?1, ?2, ?3, ?4, ?4, NULL)
         ON CONFLICT (host) DO UPDATE SET kinds = excluded.kinds, labels = excluded.labels,
             registered_us = excluded.registered_us, last_seen_us = excluded.last_seen_us, stopped_us = NULL",
    )
    .and_then(|mut s| s.execute(params![info.host, kinds, labels, now]))
    .map_err(Error::db("register a worker"))?;
    Ok(())
}

/// A sign of life from `host` (a claim); the labels it registered (none
/// when it never registered). The row is written only when the worker had
/// stopped or was last seen before `stale_before` (µs): a busy worker
/// claims many times a second, and a write each time was a commit (and WAL
/// page) per claim for a time that only matters to within the worker TTL.
pub(crate) fn seen(conn: &Connection, host: &str, now: i64, stale_before: i64) -> Result<Labels> {
    let row = conn
        .row("SELECT labels, last_seen_us, stopped_us FROM workers WHERE host = ?1", [host], |r| {
            Ok((r.get::<_, String>(0)?, r.get::<_, i64>(1)?, r.get::<_, Option<i64>>(2)?))
        })
        .optional()
        .map_err(Error::db("note a worker's sign of life"))?;
    let Some((labels, last_seen, stopped)) = row else { return Ok(Labels::default()) };
    if stopped.is_some() || last_seen < stale_before {
        conn.exec("UPDATE workers SET last_seen_us = ?1, stopped_us = NULL WHERE host = ?2", params![now, host])
            .map_err(Error::db("note a worker's sign of life"))?;
    }
    Ok(serde_json::from_str(&labels).unwrap_or_default())
}

/// A sign of life from whoever holds job `job`'s stage (a heartbeat).
pub(crate) fn seen_holder(conn: &Connection, job: JobId, now: i64) -> Result<()> {
    conn.prepare_cached("UPDATE workers SET last_seen_us = ?1 WHERE host = (SELECT host FROM jobs WHERE id = ?2)")
        .and_then(|mut s| s.execute(params![now, raw(job)]))
        .map_err(Error::db("note a worker's sign of life"))?;
    Ok(())
}

/// `host` said it stopped.
pub(crate) fn stopped(conn: &Connection, host: &str, now: i64) -> Result<()> {
    conn.prepare_cached("UPDATE workers SET stopped_us = ?1 WHERE host = ?2")
        .and_then(|mut s| s.execute(params![now, host]))
        .map_err(Error::db("note a worker's goodbye"))?;
    Ok(())
}

/// The kinds run by workers that are live: seen since `live_after` and
/// not stopped. Jobs of these kinds are accepted at submit beside the
/// declared ones, and a queued stage of another kind waits for a worker.
pub(crate) fn live_kinds(conn: &Connection, live_after: i64) -> Result<BTreeSet<StageKind>> {
    let mut stmt = conn
        .prepare_cached("SELECT kinds FROM workers WHERE stopped_us IS NULL AND last_seen_us >= ?1")
        .map_err(Error::db("list live workers"))?;
    let rows = stmt
        .query_map([live_after], |r| r.get::<_, String>(0))
        .and_then(Iterator::collect::<rusqlite::Result<Vec<_>>>)
        .map_err(Error::db("list live workers"))?;
    Ok(rows
        .iter()
        .filter_map(|k| serde_json::from_str::<Vec<(StageKind, u32)>>(k).ok())
        .flatten()
        .map(|(kind, _)| kind)
        .collect())
}

/// Every worker ever registered, with what its slots hold; live means seen
/// since `live_after` and not stopped.
pub(crate) fn list(conn: &Connection, live_after: i64) -> Result<Vec<WorkerStatus>> {
    let mut stmt = conn
        .prepare_cached(
            "SELECT host, kinds, labels, registered_us, last_seen_us, stopped_us FROM workers ORDER BY host",
        )
        .map_err(Error::db("list workers"))?;
    let rows = stmt
        .query_map([], |r| {
            Ok((
                r.get::<_, String>(0)?,
                r.get::<_, String>(1)?,
                r.get::<_, String>(2)?,
                r.get::<_, i64>(3)?,
                r.get::<_, i64>(4)?,
                r.get::<_, Option<i64>>(5)?,
            ))
        })
        .and_then(Iterator::collect::<rusqlite::Result<Vec<_>>>)
        .map_err(Error::db("list workers"))?;
    let mut held = running(conn)?;
    let mut out = Vec::with_capacity(rows.len());
    for (host, kinds, labels, registered, last_seen, stopped) in rows {
        let running: Vec<RunningStage> = {
            let (mine, rest): (Vec<_>, Vec<_>) = held.into_iter().partition(|(h, _)| *h == host);
            held = rest;
            mine.into_iter().map(|(_, r)| r).collect()
        };
        out.push(WorkerStatus {
            kinds: serde_json::from_str(&kinds).unwrap_or_default(),
            labels: serde_json::from_str(&labels).unwrap_or_default(),
            registered: to_time(registered),
            last_seen: to_time(last_seen),
            live: stopped.is_none() && last_seen >= live_after,
            stopped: stopped.map(to_time),
            running,
            host,
        });
    }
    Ok(out)
}

/// The stages held now, with their holder's host.
fn running(conn: &Connection) -> Result<Vec<(String, RunningStage)>> {
    let mut stmt = conn
        .prepare_cached(
            "SELECT host, id, cursor, json_extract(stages, '$[' || cursor || '].kind'), worker, stage_started_us,
                    lease_expires_us, attempts
             FROM jobs WHERE status = 'in_progress' AND host IS NOT NULL",
        )
        .map_err(Error::db("list running stages"))?;
    stmt.query_map([], |r| {
        Ok((
            r.get::<_, String>(0)?,
            RunningStage {
                job: JobId::new(r.get::<_, i64>(1)? as u64),
                stage: StageIndex(r.get(2)?),
                kind: stored_kind(r.get::<_, String>(3)?, 3)?,
                worker: r.get::<_, Option<String>>(4)?.unwrap_or_default(),
                since: to_time(r.get::<_, Option<i64>>(5)?.unwrap_or_default()),
                lease_expires: r.get::<_, Option<i64>>(6)?.map(to_time),
                attempt: r.get(7)?,
            },
        ))
    })
    .and_then(Iterator::collect::<rusqlite::Result<Vec<_>>>)
    .map_err(Error::db("list running stages"))
}
