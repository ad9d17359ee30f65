//! Job tags: the string map kGym calls `kv`, and lookups by tag.

use kgym_core::{JobId, Tags};
use rusqlite::{Connection, params};

use super::{job_exists, raw};
use crate::error::{Error, Result};
use crate::types::TagMatch;

/// The tags of job `id` (which must exist).
pub(crate) fn read_tags(conn: &Connection, id: JobId) -> Result<Tags> {
    let mut stmt = conn
        .prepare_cached("SELECT key, value FROM tags WHERE job_id = ?1 ORDER BY key")
        .map_err(Error::db("read tags"))?;
    stmt.query_map([raw(id)], |r| Ok((r.get::<_, String>(0)?, r.get::<_, String>(1)?)))
        .and_then(Iterator::collect::<rusqlite::Result<Tags>>)
        .map_err(Error::db("read tags"))
}

/// Adds or overwrites `tags` on job `id`.
pub(crate) fn write_tags(tx: &Connection, id: JobId, tags: &Tags) -> Result<()> {
    let mut stmt = tx
        .prepare_cached(
            "INSERT INTO tags (job_id, key, value) VALUES (?1, ?2, ?3)
             ON CONFLICT (job_id, key) DO UPDATE SET value = excluded.value",
        )
        .map_err(Error::db("write tags"))?;
    for (k, v) in tags {
        stmt.execute(params![raw(id), k, v]).map_err(Error::db("write tags"))?;
    }
    Ok(())
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
