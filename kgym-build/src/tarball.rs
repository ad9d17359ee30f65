//! Source tarballs: extracted once per tarball identity (canonical path,
//! size, modification time) into a pristine tree that is never modified;
//! warm trees get a hard-link copy of it (`cp -al`, about a second for a
//! kernel), and `git apply` replaces the files it patches instead of
//! writing through the links, so the pristine tree stays pristine.

use std::path::{Path, PathBuf};
use std::time::UNIX_EPOCH;

use sha2::{Digest, Sha256};

use crate::blocking::run_blocking;
use crate::error::{Error, Result};
use crate::log::BuildLog;
use crate::process::{self, Limits, require_tool};
use kgym_proc::FileLock;

/// A tarball's identity: a hash of its canonical path, size and mtime.
pub(crate) fn identity(tarball: &Path) -> Result<String> {
    let unreadable = |source| Error::TarballUnreadable { path: tarball.to_owned(), source };
    let canon = tarball.canonicalize().map_err(unreadable)?;
    let meta = std::fs::metadata(&canon).map_err(unreadable)?;
    if !meta.is_file() {
        return Err(unreadable(std::io::Error::other("not a regular file")));
    }
    let mtime = meta.modified().ok().and_then(|t| t.duration_since(UNIX_EPOCH).ok()).unwrap_or_default();
    let mut h = Sha256::new();
    h.update(canon.to_string_lossy().as_bytes());
    h.update(meta.len().to_le_bytes());
    h.update(mtime.as_nanos().to_le_bytes());
    Ok(hex::encode(h.finalize())[..16].to_owned())
}

/// Extracts `tarball` under `root` unless an extraction with the same
/// identity exists; returns the pristine source directory. Concurrent
/// callers (any process) extract once.
pub(crate) async fn ensure_extracted(root: &Path, tarball: &Path, limits: &Limits, log: &BuildLog) -> Result<PathBuf> {
    let id = {
        let t = tarball.to_owned();
        run_blocking("identify tarball", move || identity(&t)).await?
    };
    let dir = root.join(format!("tarball-{id}"));
    let done = root.join(format!("tarball-{id}.done"));
    let _lock = FileLock::acquire(&root.join(format!("tarball-{id}.lock")), limits.cancel()).await?;
    if done.is_file() && dir.is_dir() {
        return Ok(dir);
    }
    let tar = require_tool("tar")?;
    log.step(&format!("extracting {} (once per tarball)", tarball.display()));
    let tmp = root.join(format!("tarball-{id}.tmp"));
    for stale in [&tmp, &dir] {
        remove_dir_if_exists(stale).await?;
    }
    tokio::fs::create_dir_all(&tmp).await.map_err(|e| Error::io(&tmp, e))?;
    // A tree: tar runs the decompressor (xz) as its child.
    let mut cmd = process::tree_command(tar);
    cmd.arg("-xf").arg(tarball).arg("-C").arg(&tmp);
    let finished = process::run(cmd, "extracting the source tarball", None, limits, None).await?;
    if !finished.status.success() {
        let _ = tokio::fs::remove_dir_all(&tmp).await;
        return Err(Error::ExtractFailed { path: tarball.to_owned(), stderr: finished.tail(20) });
    }
    // Tarballs usually hold one top directory (`linux-source-6.1/`).
    let top = single_subdir(&tmp).await?.unwrap_or_else(|| tmp.clone());
    tokio::fs::rename(&top, &dir).await.map_err(|e| Error::io(&dir, e))?;
    if top != tmp {
        let _ = tokio::fs::remove_dir_all(&tmp).await;
    }
    tokio::fs::write(&done, format!("{}\n", tarball.display())).await.map_err(|e| Error::io(&done, e))?;
    Ok(dir)
}

async fn single_subdir(dir: &Path) -> Result<Option<PathBuf>> {
    let mut entries = tokio::fs::read_dir(dir).await.map_err(|e| Error::io(dir, e))?;
    let mut only = None;
    while let Some(e) = entries.next_entry().await.map_err(|e| Error::io(dir, e))? {
        if only.is_some() {
            return Ok(None);
        }
        only = Some(e.path());
    }
    Ok(only.filter(|p| p.is_dir()))
}

async fn remove_dir_if_exists(dir: &Path) -> Result<()> {
    match tokio::fs::remove_dir_all(dir).await {
        Ok(()) => Ok(()),
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => Ok(()),
        Err(e) => Err(Error::io(dir, e)),
    }
}

/// Makes `dest` (which must not exist) a hard-link copy of `pristine`, or
/// a plain copy when hard links are impossible (another filesystem).
pub(crate) async fn link_copy(pristine: &Path, dest: &Path, limits: &Limits) -> Result<()> {
    let cp = require_tool("cp")?;
    let mut failure = None;
    for flags in ["-al", "-a"] {
        let mut cmd = process::command(&cp);
        cmd.arg(flags).arg(pristine).arg(dest);
        let finished = process::run(cmd, "copying the source tree", None, limits, None).await?;
        if finished.status.success() {
            return Ok(());
        }
        tracing::debug!(flags, output = %finished.tail(5), "cp failed");
        failure = Some(Error::ToolFailed {
            program: format!("cp {flags} {}", pristine.display()),
            status: process::describe(&finished.status),
            stderr: finished.tail(20),
        });
        remove_dir_if_exists(dest).await?;
    }
    Err(failure.unwrap_or_else(|| Error::MissingTool { tool: "cp".into() }))
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::sync::Arc;
    use std::time::Duration;

    fn limits() -> Limits {
        Limits::new(Duration::from_secs(60), Default::default())
    }

    fn make_tarball(dir: &Path) -> PathBuf {
        let src = dir.join("pkg/linux-x");
        std::fs::create_dir_all(src.join("kernel")).unwrap();
        std::fs::write(src.join("kernel/sys.c"), "int x;\n").unwrap();
        std::fs::write(src.join("Makefile"), "all:\n").unwrap();
        let tarball = dir.join("linux-x.tar.gz");
        let st = std::process::Command::new("tar")
            .arg("-czf")
            .arg(&tarball)
            .arg("-C")
            .arg(dir.join("pkg"))
            .arg("linux-x")
            .status()
            .unwrap();
        assert!(st.success());
        tarball
    }

    #[tokio::test]
    async fn extracts_once_and_link_copies_stay_independent() {
        let dir = tempfile::tempdir().unwrap();
        let tarball = make_tarball(dir.path());
        let log = BuildLog::create(&dir.path().join("log"), Arc::new(kgym_core::MemorySink::default())).unwrap();
        let root = dir.path().join("sources");
        let pristine = ensure_extracted(&root, &tarball, &limits(), &log).await.unwrap();
        assert_eq!(std::fs::read_to_string(pristine.join("kernel/sys.c")).unwrap(), "int x;\n");
        // Second call: no extraction (the marker file is there, the tree is reused).
        std::fs::write(pristine.join("marker"), "kept").unwrap();
        let again = ensure_extracted(&root, &tarball, &limits(), &log).await.unwrap();
        assert_eq!(again, pristine);
        assert!(again.join("marker").exists());
        log.flush();
        assert_eq!(std::fs::read_to_string(dir.path().join("log")).unwrap().matches("extracting").count(), 1);

        let copy = dir.path().join("tree/src");
        std::fs::create_dir_all(copy.parent().unwrap()).unwrap();
        link_copy(&pristine, &copy, &limits()).await.unwrap();
        assert_eq!(std::fs::read_to_string(copy.join("Makefile")).unwrap(), "all:\n");

        // Changing the tarball's mtime changes its identity.
        let id = identity(&tarball).unwrap();
        let f = std::fs::File::options().write(true).open(&tarball).unwrap();
        f.set_modified(std::time::SystemTime::now() + Duration::from_secs(5)).unwrap();
        assert_ne!(identity(&tarball).unwrap(), id);
    }

    #[tokio::test]
    async fn missing_or_corrupt_tarballs_are_typed_errors() {
        let dir = tempfile::tempdir().unwrap();
        let log = BuildLog::create(&dir.path().join("log"), Arc::new(kgym_core::MemorySink::default())).unwrap();
        let err = ensure_extracted(dir.path(), &dir.path().join("none.tar.xz"), &limits(), &log).await.unwrap_err();
        assert!(matches!(err, Error::TarballUnreadable { .. }), "{err}");
        let bad = dir.path().join("bad.tar.xz");
        std::fs::write(&bad, "not a tarball").unwrap();
        let err = ensure_extracted(&dir.path().join("s"), &bad, &limits(), &log).await.unwrap_err();
        assert!(matches!(err, Error::ExtractFailed { .. }), "{err}");
    }
}
