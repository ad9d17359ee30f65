//! Blocking work (libgit2, directory walks, big copies) on tokio's blocking
//! pool, with panics turned into errors.

use crate::error::{Error, Result};

/// Runs `f` on the blocking pool; `what` names it if it panics.
pub(crate) async fn run_blocking<T, F>(what: &'static str, f: F) -> Result<T>
where
    F: FnOnce() -> Result<T> + Send + 'static,
    T: Send + 'static,
{
    tokio::task::spawn_blocking(f).await.map_err(|source| Error::Task { what, source })?
}
