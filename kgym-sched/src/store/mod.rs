//! The scheduler's state in SQLite: WAL mode, schema migrations embedded
//! from `migrations/*.sql`, one transaction per state transition.
//!
//! Functions here are synchronous and take a `Connection`; the embedded
//! scheduler runs them on the blocking pool through [`Store::run`].

mod cursor;
mod hours;
pub(crate) mod jobs;
pub(crate) mod listing;
pub(crate) mod logs;
mod sql;
pub(crate) mod stats;
pub(crate) mod tags;
mod window;
pub(crate) mod workers;

use std::path::{Path, PathBuf};

use chrono::{DateTime, TimeZone, Utc};
use kgym_core::{JobId, JobStatus, StageKind};
use rusqlite::{Connection, OptionalExtension};

use crate::error::{Error, Result};

/// Schema migrations in order; `PRAGMA user_version` records how many ran.
const MIGRATIONS: &[(&str, &str)] = &[
    ("0001_init.sql", include_str!("../../migrations/0001_init.sql")),
    ("0002_workers_and_stats.sql", include_str!("../../migrations/0002_workers_and_stats.sql")),
    ("0003_fast_listings.sql", include_str!("../../migrations/0003_fast_listings.sql")),
    ("0004_counted_windows.sql", include_str!("../../migrations/0004_counted_windows.sql")),
    ("0005_lean_transitions.sql", include_str!("../../migrations/0005_lean_transitions.sql")),
    ("0006_applied_requests.sql", include_str!("../../migrations/0006_applied_requests.sql")),
];

/// A unit of work for the database thread.
type Task = Box<dyn FnOnce(&mut Connection) + Send>;

/// The job database: one connection owned by a dedicated thread that runs
/// transactions one after the other (SQLite has one writer anyway; a
/// thread of its own avoids waking a blocking-pool thread per transition).
#[derive(Clone)]
pub(crate) struct Store {
    tx: std::sync::mpsc::Sender<Task>,
    path: Option<PathBuf>,
}

impl std::fmt::Debug for Store {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Store").field("path", &self.path).finish()
    }
}

/// `execute` and `query_row` through the connection's statement cache.
/// A statement writing `jobs` or `results` has their triggers (counters,
/// statistics rollups) compiled into it: compiling it again on every
/// transition cost more than running it (`cargo bench --bench scheduler`).
pub(crate) trait Cached {
    /// [`Connection::execute`], prepared once.
    fn exec<P: rusqlite::Params>(&self, sql: &str, params: P) -> rusqlite::Result<usize>;
    /// [`Connection::query_row`], prepared once.
    fn row<T, P, F>(&self, sql: &str, params: P, f: F) -> rusqlite::Result<T>
    where
        P: rusqlite::Params,
        F: FnOnce(&rusqlite::Row<'_>) -> rusqlite::Result<T>;
}

impl Cached for Connection {
    fn exec<P: rusqlite::Params>(&self, sql: &str, params: P) -> rusqlite::Result<usize> {
        self.prepare_cached(sql)?.execute(params)
    }

    fn row<T, P, F>(&self, sql: &str, params: P, f: F) -> rusqlite::Result<T>
    where
        P: rusqlite::Params,
        F: FnOnce(&rusqlite::Row<'_>) -> rusqlite::Result<T>,
    {
        self.prepare_cached(sql)?.query_row(params, f)
    }
}

impl Store {
    /// Opens (creating and migrating) the database at `path`.
    pub fn open(path: &Path) -> Result<Self> {
        let open_err = |source| Error::OpenDatabase { path: path.to_owned(), source };
        let conn = Connection::open(path).map_err(open_err)?;
        // WAL: readers do not block the writer and a commit is one append;
        // NORMAL sync: a commit survives the process dying (kill -9), and
        // the database stays consistent on power loss.
        conn.pragma_update(None, "journal_mode", "WAL").map_err(open_err)?;
        conn.pragma_update(None, "synchronous", "NORMAL").map_err(open_err)?;
        // A checkpoint (the WAL copied into the database, both synced)
        // every 4000 WAL pages instead of 1000: a transition writes ~20
        // pages, so the default checkpointed every ~50 transitions and its
        // syncs were much of their cost (`cargo bench --bench scheduler`:
        // +17 % transitions/s); pages many transitions rewrite (counters,
        // index ends) are copied once per checkpoint. The WAL file grows to
        // ~16 MB.
        conn.pragma_update(None, "wal_autocheckpoint", 4000).map_err(open_err)?;
        Self::prepare(conn, Some(path.to_owned()))
    }

    /// A database in memory (tests, throw-away gyms).
    pub fn in_memory() -> Result<Self> {
        let conn =
            Connection::open_in_memory().map_err(|source| Error::OpenDatabase { path: ":memory:".into(), source })?;
        Self::prepare(conn, None)
    }

    fn prepare(mut conn: Connection, path: Option<PathBuf>) -> Result<Self> {
        let shown = path.clone().unwrap_or_else(|| ":memory:".into());
        let open_err = |source| Error::OpenDatabase { path: shown.clone(), source };
        conn.pragma_update(None, "foreign_keys", "ON").map_err(open_err)?;
        conn.busy_timeout(std::time::Duration::from_secs(10)).map_err(open_err)?;
        // Room for every statement of the hot paths and the listings (see
        // `Cached`); rusqlite keeps 16 by default.
        conn.set_prepared_statement_cache_capacity(256);
        migrate(&mut conn)?;
        let (tx, rx) = std::sync::mpsc::channel::<Task>();
        std::thread::Builder::new()
            .name("kgym-sqlite".into())
            .spawn(move || {
                // Ends when every `Store` handle is gone.
                while let Ok(task) = rx.recv() {
                    task(&mut conn);
                }
            })
            .map_err(|source| Error::Io { path: shown.clone(), source })?;
        Ok(Self { tx, path })
    }

    /// Runs `f` on the database thread.
    pub async fn run<T, F>(&self, f: F) -> Result<T>
    where
        T: Send + 'static,
        F: FnOnce(&mut Connection) -> Result<T> + Send + 'static,
    {
        let (done, result) = tokio::sync::oneshot::channel();
        let task: Task = Box::new(move |conn| {
            // A panic in `f` must not kill the database thread.
            let out = std::panic::catch_unwind(std::panic::AssertUnwindSafe(|| f(conn)));
            let _ = done.send(out);
        });
        self.tx.send(task).map_err(|_| Error::ShuttingDown)?;
        match result.await {
            Ok(Ok(out)) => out,
            Ok(Err(panic)) => std::panic::resume_unwind(panic),
            Err(_) => Err(Error::ShuttingDown),
        }
    }
}

/// Applies the migrations the database has not seen, each in its own
/// transaction.
pub(crate) fn migrate(conn: &mut Connection) -> Result<()> {
    let done: usize = conn
        .pragma_query_value(None, "user_version", |r| r.get::<_, i64>(0))
        .map_err(Error::db("read the schema version"))? as usize;
    for (version, (name, sql)) in MIGRATIONS.iter().enumerate().skip(done) {
        let err = |source| Error::Migration { version: version + 1, name, source };
        let tx = conn.transaction().map_err(err)?;
        tx.execute_batch(sql).map_err(err)?;
        tx.pragma_update(None, "user_version", (version + 1) as i64).map_err(err)?;
        tx.commit().map_err(err)?;
    }
    Ok(())
}

/// Microseconds since the epoch, now.
pub(crate) fn now_us() -> i64 {
    Utc::now().timestamp_micros()
}

/// A stored time as a `DateTime`.
pub(crate) fn to_time(us: i64) -> DateTime<Utc> {
    Utc.timestamp_micros(us).single().unwrap_or_default()
}

/// An optional `DateTime` bound as stored microseconds.
pub(crate) fn bound(t: Option<DateTime<Utc>>, default: i64) -> i64 {
    t.map(|t| t.timestamp_micros()).unwrap_or(default)
}

/// A job id as stored.
pub(crate) fn raw(id: JobId) -> i64 {
    id.get() as i64
}

/// A stored status.
pub(crate) fn status_of(s: &str) -> JobStatus {
    // The CHECK constraint keeps other values out.
    JobStatus::parse(s).unwrap_or(JobStatus::Aborted)
}

/// A stored stage kind; one that does not parse is a column conversion
/// error (the row is corrupt), never another kind.
pub(crate) fn stored_kind(text: String, column: usize) -> rusqlite::Result<StageKind> {
    StageKind::new(text)
        .map_err(|e| rusqlite::Error::FromSqlConversionFailure(column, rusqlite::types::Type::Text, Box::new(e)))
}

/// Whether job `id` exists.
pub(crate) fn job_exists(conn: &Connection, id: JobId) -> Result<bool> {
    conn.query_row("SELECT 1 FROM jobs WHERE id = ?1", [raw(id)], |_| Ok(()))
        .optional()
        .map(|r| r.is_some())
        .map_err(Error::db("look up a job"))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[tokio::test]
    async fn migrations_run_once_and_set_the_version() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("jobs.sqlite3");
        drop(Store::open(&path).unwrap());
        let store = Store::open(&path).unwrap(); // second open: nothing to migrate
        let (version, mode): (i64, String) = store
            .run(|c| {
                let v = c.pragma_query_value(None, "user_version", |r| r.get(0)).map_err(Error::db("x"))?;
                let m = c.pragma_query_value(None, "journal_mode", |r| r.get(0)).map_err(Error::db("x"))?;
                Ok((v, m))
            })
            .await
            .unwrap();
        assert_eq!(version as usize, MIGRATIONS.len());
        assert_eq!(mode, "wal");
    }

    fn counters(conn: &Connection) -> Vec<(String, String, i64)> {
        let mut stmt = conn.prepare("SELECT name, key, n FROM counters WHERE n > 0 ORDER BY name, key").unwrap();
        stmt.query_map([], |r| Ok((r.get(0)?, r.get(1)?, r.get(2)?))).unwrap().collect::<rusqlite::Result<_>>().unwrap()
    }

    fn expect(rows: &[(&str, &str, i64)]) -> Vec<(String, String, i64)> {
        rows.iter().map(|(a, b, n)| ((*a).to_owned(), (*b).to_owned(), *n)).collect()
    }

    /// A database at version 4 keeps its counts through migration 0005
    /// (the small counters move into one table), and the new triggers go
    /// on counting.
    #[test]
    fn migration_5_moves_the_counters() {
        let mut conn = Connection::open_in_memory().unwrap();
        for (version, (_, sql)) in MIGRATIONS.iter().enumerate().take(4) {
            conn.execute_batch(sql).unwrap();
            conn.pragma_update(None, "user_version", (version + 1) as i64).unwrap();
        }
        conn.execute_batch(
            "INSERT INTO jobs (created_us, modified_us, status, cursor, stages)
                 VALUES (1, 1, 'pending', 0, '[]'), (2, 2, 'finished', 1, '[]'), (3, 3, 'finished', 1, '[]');
             INSERT INTO tags (job_id, key, value) VALUES (1, 'k', 'v');
             INSERT INTO job_log (job_id, time_us, line) VALUES (1, 1, 'a'), (1, 2, 'b');
             INSERT INTO sys_log (time_us, kind, host, message) VALUES (1, 'build', 'h', 'x'), (2, NULL, 'h', 'y');",
        )
        .unwrap();
        migrate(&mut conn).unwrap();
        let before = [
            ("host", "h", 2),
            ("kind", "build", 1),
            ("log", "job", 2),
            ("log", "sys", 2),
            ("status", "finished", 2),
            ("status", "pending", 1),
        ];
        assert_eq!(counters(&conn), expect(&before));
        conn.execute_batch(
            "UPDATE jobs SET status = 'finished' WHERE id = 1;
             INSERT INTO job_log (job_id, time_us, line) VALUES (2, 3, 'c');
             INSERT INTO sys_log (time_us, kind, host, message) VALUES (3, 'run', NULL, 'z');",
        )
        .unwrap();
        let after = [
            ("host", "h", 2),
            ("kind", "build", 1),
            ("kind", "run", 1),
            ("log", "job", 3),
            ("log", "sys", 3),
            ("status", "finished", 3),
        ];
        assert_eq!(counters(&conn), expect(&after));
        let tag: (String, i64) = conn
            .query_row("SELECT status, n FROM tag_key_counts WHERE key = 'k'", [], |r| Ok((r.get(0)?, r.get(1)?)))
            .unwrap();
        assert_eq!(tag, ("finished".to_owned(), 1));
    }
}
