//! [`RemoveOnExit`]: a directory removed when this process ends, however
//! it ends.
//!
//! A destructor does not run after SIGKILL, so the removal is left to a
//! small watcher process (`sh`, in its own process group) that reads a pipe
//! only this process writes to. When this process dies, the kernel closes
//! the pipe, the watcher reads end-of-file and removes the directory. A
//! normal drop removes the directory itself and tells the watcher to exit.

use std::io::Write;
use std::os::unix::process::CommandExt;
use std::path::{Path, PathBuf};
use std::process::{Child, ChildStdin, Command, Stdio};

use crate::error::{Error, Result};

/// The watcher: waits for a word on stdin; anything but `keep` (end of
/// file included) removes the directory. Terminal signals are ignored (it
/// must outlive a Ctrl-C of its owner's process group by a few ms).
const WATCHER_SCRIPT: &str = r#"trap '' INT HUP
read -r word
[ "$word" = keep ] || exec rm -rf -- "$1""#;

/// Removes a directory when dropped, and when the process dies without
/// dropping it (SIGKILL, a crash).
///
/// ```
/// let dir = tempfile::tempdir().unwrap().keep();
/// let guard = kgym_proc::RemoveOnExit::new(&dir).unwrap();
/// std::fs::write(dir.join("scratch"), "x").unwrap();
/// drop(guard);
/// assert!(!dir.exists());
/// ```
#[derive(Debug)]
pub struct RemoveOnExit {
    path: PathBuf,
    watcher: Option<(Child, ChildStdin)>,
}

impl RemoveOnExit {
    /// Guards `path` (created if missing).
    pub fn new(path: impl Into<PathBuf>) -> Result<Self> {
        let path = path.into();
        std::fs::create_dir_all(&path).map_err(|e| Error::io(&path, e))?;
        let mut child = Command::new("/bin/sh")
            .arg("-c")
            .arg(WATCHER_SCRIPT)
            .arg("kgym-proc-cleanup")
            .arg(&path)
            .stdin(Stdio::piped())
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            // Not in the owner's group: signals to that group (Ctrl-C, a
            // group kill) must not take the watcher down with it.
            .process_group(0)
            .spawn()
            .map_err(|e| Error::spawn("/bin/sh", e))?;
        let stdin = child.stdin.take().ok_or_else(|| Error::Spawn {
            program: "/bin/sh".into(),
            source: std::io::Error::other("no stdin pipe for the cleanup watcher"),
        })?;
        Ok(Self { path, watcher: Some((child, stdin)) })
    }

    /// Guards a new directory under `parent` (created if missing), named
    /// `<prefix><pid>-<n>`: one process's scratch space, gone with it.
    pub fn unique_in(parent: &Path, prefix: &str) -> Result<Self> {
        std::fs::create_dir_all(parent).map_err(|e| Error::io(parent, e))?;
        let pid = std::process::id();
        for n in 0u32.. {
            let path = parent.join(format!("{prefix}{pid}-{n}"));
            match std::fs::create_dir(&path) {
                Ok(()) => return Self::new(path),
                Err(e) if e.kind() == std::io::ErrorKind::AlreadyExists => continue,
                Err(e) => return Err(Error::io(&path, e)),
            }
        }
        unreachable!("u32 names ran out")
    }

    /// The guarded directory.
    pub fn path(&self) -> &Path {
        &self.path
    }

    /// Keeps the directory: nothing is removed, now or at exit.
    pub fn keep(mut self) -> PathBuf {
        self.release(true);
        std::mem::take(&mut self.path)
    }

    fn release(&mut self, keep: bool) {
        if let Some((mut child, mut stdin)) = self.watcher.take() {
            if !keep {
                let _ = std::fs::remove_dir_all(&self.path);
            }
            let _ = stdin.write_all(b"keep\n");
            drop(stdin);
            // Reap the watcher without blocking the caller.
            std::thread::spawn(move || child.wait());
        }
    }
}

impl Drop for RemoveOnExit {
    fn drop(&mut self) {
        self.release(false);
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn unique_dirs_are_new_and_keep_disarms_the_watcher() {
        let parent = tempfile::tempdir().unwrap();
        let a = RemoveOnExit::unique_in(parent.path(), "run-").unwrap();
        let b = RemoveOnExit::unique_in(parent.path(), "run-").unwrap();
        assert_ne!(a.path(), b.path());
        assert!(a.path().file_name().unwrap().to_string_lossy().starts_with("run-"));
        let kept = a.keep();
        let removed = b.path().to_owned();
        drop(b);
        assert!(!removed.exists());
        // The watcher of the kept one exits without removing anything.
        std::thread::sleep(std::time::Duration::from_millis(300));
        assert!(kept.is_dir());
    }
}
