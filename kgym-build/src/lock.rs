//! Cross-process exclusive file locks (`flock` through `fs4`): concurrent
//! builds — in one process or many — of the same warm tree, repository or
//! tarball take turns.

use std::fs::{File, OpenOptions};
use std::path::{Path, PathBuf};

use fs4::fs_std::FileExt;
use tokio_util::sync::CancellationToken;

use crate::error::{Error, Result};

/// An exclusive lock on a file, released on drop (also when the process
/// dies: the kernel drops `flock` locks with the last descriptor).
#[derive(Debug)]
pub struct FileLock {
    _file: File,
    path: PathBuf,
}

impl FileLock {
    /// Waits for the lock on `path` (created if missing, with its parent
    /// directories). Waiting happens on a blocking thread; `cancel` stops
    /// the wait with [`Error::Cancelled`].
    ///
    /// ```
    /// # tokio::runtime::Runtime::new().unwrap().block_on(async {
    /// use kgym_build::FileLock;
    /// let dir = tempfile::tempdir().unwrap();
    /// let path = dir.path().join("tree.lock");
    /// let held = FileLock::acquire(&path, &Default::default()).await.unwrap();
    /// assert!(FileLock::try_acquire(&path).unwrap().is_none());
    /// drop(held);
    /// assert!(FileLock::try_acquire(&path).unwrap().is_some());
    /// # });
    /// ```
    pub async fn acquire(path: &Path, cancel: &CancellationToken) -> Result<Self> {
        let file = open(path)?;
        let owned = path.to_owned();
        let wait = tokio::task::spawn_blocking(move || file.lock_exclusive().map(|()| file));
        tokio::select! {
            res = wait => {
                let file = res
                    .map_err(|source| Error::Task { what: "lock", source })?
                    .map_err(|e| Error::io(&owned, e))?;
                Ok(Self { _file: file, path: owned })
            }
            // The blocking waiter gets the lock eventually and drops it at once.
            () = cancel.cancelled() => Err(Error::Cancelled { phase: format!("waiting for lock {}", owned.display()) }),
        }
    }

    /// Takes the lock on `path` if nobody holds it.
    pub fn try_acquire(path: &Path) -> Result<Option<Self>> {
        let file = open(path)?;
        match file.try_lock_exclusive() {
            Ok(true) => Ok(Some(Self { _file: file, path: path.to_owned() })),
            Ok(false) => Ok(None),
            Err(e) if e.kind() == std::io::ErrorKind::WouldBlock => Ok(None),
            Err(e) => Err(Error::io(path, e)),
        }
    }

    /// Waits for the lock on `path`, blocking the thread (for code already
    /// on a blocking thread).
    pub fn acquire_blocking(path: &Path) -> Result<Self> {
        let file = open(path)?;
        file.lock_exclusive().map_err(|e| Error::io(path, e))?;
        Ok(Self { _file: file, path: path.to_owned() })
    }

    /// The lock file.
    pub fn path(&self) -> &Path {
        &self.path
    }
}

fn open(path: &Path) -> Result<File> {
    if let Some(parent) = path.parent() {
        std::fs::create_dir_all(parent).map_err(|e| Error::io(parent, e))?;
    }
    OpenOptions::new().create(true).truncate(false).read(true).write(true).open(path).map_err(|e| Error::io(path, e))
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::time::Duration;

    #[tokio::test]
    async fn second_locker_waits_until_release_and_cancel_stops_waiting() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("a/b.lock");
        let token = CancellationToken::new();
        let held = FileLock::acquire(&path, &token).await.unwrap();
        assert_eq!(held.path(), path);

        let p2 = path.clone();
        let waiter = tokio::spawn(async move { FileLock::acquire(&p2, &CancellationToken::new()).await });
        tokio::time::sleep(Duration::from_millis(200)).await;
        assert!(!waiter.is_finished(), "second locker did not wait");
        drop(held);
        let second = tokio::time::timeout(Duration::from_secs(10), waiter).await.unwrap().unwrap().unwrap();

        let cancelled = CancellationToken::new();
        cancelled.cancel();
        let err = FileLock::acquire(&path, &cancelled).await.unwrap_err();
        assert!(matches!(err, Error::Cancelled { .. }), "{err}");
        drop(second);
    }
}
