//! Job tags: the string map kGym calls `kv`, and lookups by tag.

use kgym_core::{JobId, Tags};
use rusqlite::types::Value;
use rusqlite::{Connection, params, params_from_iter};

use super::cursor::Cursor;
use super::sql::{Filter, limit_offset};
use super::{job_exists, raw};
use crate::error::{Error, Result};
use crate::types::{Order, Page, TagMatch, TagQuery};

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

/// Refuses a job that now carries more tags than [`crate::tags::MAX_TAGS`]
/// (inside the writing transaction, which is then rolled back).
pub(crate) fn check_tag_count(conn: &Connection, id: JobId) -> Result<()> {
    let n: i64 = conn
        .prepare_cached("SELECT COUNT(*) FROM tags WHERE job_id = ?1")
        .and_then(|mut s| s.query_row([raw(id)], |r| r.get(0)))
        .map_err(Error::db("count tags"))?;
    match crate::tags::check_count(n as usize) {
        Some(problem) => Err(Error::Validation { problems: vec![problem] }),
        None => Ok(()),
    }
}

/// Replaces (`replace`) or merges the job's tags; returns the result.
/// The new tags were checked alone; here the job's tag count is.
pub(crate) fn update_tags(conn: &mut Connection, id: JobId, new: &Tags, replace: bool, now: i64) -> Result<Tags> {
    let tx = conn.transaction().map_err(Error::db("write tags"))?;
    if !job_exists(&tx, id)? {
        return Err(Error::JobNotFound { id });
    }
    if replace {
        tx.execute("DELETE FROM tags WHERE job_id = ?1", [raw(id)]).map_err(Error::db("write tags"))?;
    }
    write_tags(&tx, id, new)?;
    check_tag_count(&tx, id)?;
    tx.execute("UPDATE jobs SET modified_us = ?1 WHERE id = ?2", params![now, raw(id)])
        .map_err(Error::db("write tags"))?;
    let out = read_tags(&tx, id)?;
    tx.commit().map_err(Error::db("write tags"))?;
    Ok(out)
}

/// A page of the jobs carrying tag `q.key` (= `q.value`), from the tag
/// index (seeking to the cursor when there is one); the total from the
/// counters.
pub(crate) fn jobs_with_tag(conn: &Connection, q: &TagQuery) -> Result<Page<TagMatch>> {
    let cursor = q.after.as_deref().map(Cursor::id).transpose()?;
    let (dir, cmp) = match q.order {
        Order::OldestFirst => ("ASC", ">"),
        Order::NewestFirst => ("DESC", "<"),
    };
    let mut f = Filter::default();
    f.add("key = ?", [Value::Text(q.key.clone())]);
    f.add_opt("value = ?", q.value.clone());
    f.add_opt(&format!("job_id {cmp} ?"), cursor);
    let index = if q.value.is_some() { "tags_by_key" } else { "tags_by_key_job" };
    let sql = format!(
        "SELECT job_id, value FROM tags INDEXED BY {index} {} ORDER BY job_id {dir} LIMIT ? OFFSET ?",
        f.clause()
    );
    let mut stmt = conn.prepare_cached(&sql).map_err(Error::db("find tagged jobs"))?;
    let items = stmt
        .query_map(params_from_iter(f.args(limit_offset(q.limit, q.start, cursor.is_some()))), |r| {
            Ok(TagMatch { job: JobId::new(r.get::<_, i64>(0)? as u64), key: q.key.clone(), value: r.get(1)? })
        })
        .and_then(Iterator::collect::<rusqlite::Result<Vec<_>>>)
        .map_err(Error::db("find tagged jobs"))?;
    let total = super::listing::tag_count(conn, &q.key, q.value.as_deref(), None)?;
    Ok(Page::new(items, q.start, q.limit, total).with_cursor(|m| Cursor::Id(raw(m.job)).encode()))
}
