//! Cross-process exclusive file locks (`flock` through `fs4`): concurrent
//! users of one warm tree, repository or cache entry — in one process or
//! many — take turns. The kernel releases an `flock` lock when the last
//! descriptor of its open file closes, so a holder that dies (even by
//! SIGKILL) never leaves a lock behind; descriptors are opened close-on-exec,
//! so a child process never inherits (and keeps) the lock, and a dropped
//! lock is unlocked explicitly, so one forked just then (it holds copies of
//! the descriptors until it execs) does not keep it either.

use std::fs::{File, OpenOptions};
use std::path::{Path, PathBuf};

use fs4::fs_std::FileExt;
use tokio_util::sync::CancellationToken;

use crate::error::{Error, Result};

/// An exclusive lock on a file, released on drop (and when the process
/// dies).
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
    /// use kgym_proc::FileLock;
    /// let dir = tempfile::tempdir().unwrap();
    /// let path = dir.path().join("tree.lock");
    /// let held = FileLock::acquire(&path, &Default::default()).await.unwrap();
    /// assert!(FileLock::try_acquire(&path).unwrap().is_none());
    /// drop(held);
    /// assert!(FileLock::try_acquire(&path).unwrap().is_some());
    /// # });
    /// ```
    pub async fn acquire(path: &Path, cancel: &CancellationToken) -> Result<Self> {
        if let Some(held) = Self::try_acquire(path)? {
            return Ok(held);
        }
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
            () = cancel.cancelled() => Err(Error::Cancelled { what: format!("waiting for lock {}", owned.display()) }),
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

impl Drop for FileLock {
    /// Unlocks explicitly rather than only closing the descriptor: a child
    /// process forked at that moment (any thread's `Command::spawn`) holds
    /// a copy of every descriptor until it execs, and the kernel keeps an
    /// `flock` lock until the last copy closes. An unlock releases it for
    /// every copy (they share the open file), so a dropped lock is free at
    /// once. (Seen: a warm tree dropped during a concurrent spawn was still
    /// locked for the eviction right after.)
    fn drop(&mut self) {
        let _ = FileExt::unlock(&self._file);
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

    /// A child forked while the lock is held (here one that never execs)
    /// has a copy of its descriptor; the lock is free as soon as it is
    /// dropped anyway.
    #[test]
    #[allow(unsafe_code)] // fork without exec: the only way to hold that copy
    fn a_dropped_lock_is_free_while_a_forked_child_holds_its_descriptor() {
        use nix::sys::signal::{Signal, kill};
        use nix::sys::wait::waitpid;
        use nix::unistd::{ForkResult, fork};

        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("tree.lock");
        let held = FileLock::acquire_blocking(&path).unwrap();
        // SAFETY: the child only sleeps and exits (async-signal-safe calls).
        let child = match unsafe { fork() }.unwrap() {
            ForkResult::Child => {
                nix::unistd::sleep(30);
                // SAFETY: exits without running the parent's destructors.
                unsafe { nix::libc::_exit(0) }
            }
            ForkResult::Parent { child } => child,
        };
        drop(held);
        let again = FileLock::try_acquire(&path).unwrap();
        let _ = kill(child, Signal::SIGKILL);
        let _ = waitpid(child, None);
        assert!(again.is_some(), "the lock stayed with the forked child's copy of the descriptor");
    }

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

    #[test]
    fn a_child_process_does_not_inherit_the_lock() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("x.lock");
        let held = FileLock::acquire_blocking(&path).unwrap();
        // A child that outlives the holder's release must not keep the lock.
        let mut child = std::process::Command::new("sleep").arg("30").spawn().unwrap();
        drop(held);
        // Other tests of this process fork too: a child of theirs holds a
        // copy of every descriptor until its exec, a few ms.
        let started = std::time::Instant::now();
        let mut again = FileLock::try_acquire(&path).unwrap();
        while again.is_none() && started.elapsed() < std::time::Duration::from_secs(2) {
            std::thread::sleep(std::time::Duration::from_millis(20));
            again = FileLock::try_acquire(&path).unwrap();
        }
        let _ = child.kill();
        let _ = child.wait();
        assert!(again.is_some(), "the child process kept the lock");
    }
}
