//! Warm build trees: one source tree + out-of-tree build directory per key
//! (source, commit, backports, config, toolchain, arch, make args). A build
//! that differs only by its patch reuses the tree — the previous patch is
//! reverted, the new one applied, and `make` recompiles what changed.
//!
//! Layout under the trees root: `<key>/src`, `<key>/src/.kgym-out` (the
//! build directory),
//! `<key>/state.json`, and the lock `<key>.lock` beside the directory (so a
//! tree can be deleted while its lock is held). Trees are evicted least
//! recently used first once their total size passes a bound.

use std::path::{Path, PathBuf};
use std::time::{SystemTime, UNIX_EPOCH};

use kgym_core::stage::build::ConfigMismatch;
use serde::{Deserialize, Serialize};
use sha2::{Digest, Sha256};
use tokio_util::sync::CancellationToken;

use crate::blocking::run_blocking;
use crate::error::{Error, Result};
use kgym_proc::{FileLock, GroupRecord};

use crate::make::MAKE_GROUP_FILE;

/// Bumped when the tree layout or state changes meaning: older trees are
/// rebuilt.
const FORMAT: u32 = 1;

/// The build directory's name inside the source tree.
pub(crate) const OUT_DIR: &str = ".kgym-out";

/// What a tree was doing when its last user stopped.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub(crate) enum Busy {
    /// Changing the sources (patch revert/apply): the tree's content is
    /// unknown if this was interrupted.
    Patching,
    /// Running make since `started` (Unix seconds).
    Making {
        /// When make started.
        started: u64,
    },
}

/// The persistent state of a tree.
#[derive(Debug, Clone, Default, Serialize, Deserialize)]
pub(crate) struct TreeState {
    /// [`FORMAT`] of the writer.
    pub format: u32,
    /// The key material, for humans looking at the data directory.
    pub description: String,
    /// Last use (Unix seconds), for LRU eviction.
    pub last_used: u64,
    /// Sources checked out and config generated.
    pub ready: bool,
    /// Set while a step that leaves the tree inconsistent is in progress.
    pub busy: Option<Busy>,
    /// The patch currently applied to the sources.
    pub applied_patch: Option<String>,
    /// The last make on the current sources succeeded.
    pub built: bool,
    /// The checked-out commit (git sources), after backports.
    pub commit: Option<String>,
    /// Backports that were applied (fix hashes).
    pub backports_applied: Vec<String>,
    /// Config symbols that did not survive.
    pub config_mismatches: Vec<ConfigMismatch>,
    /// Bytes the tree uses on its own (hard links shared with a pristine
    /// tarball extraction are not counted).
    pub size_bytes: u64,
}

/// The store of warm trees.
#[derive(Debug, Clone)]
pub(crate) struct TreeStore {
    root: PathBuf,
    max_bytes: u64,
}

/// A locked tree: the only handle through which a tree is used.
#[derive(Debug)]
pub(crate) struct WarmTree {
    /// The key.
    pub key: String,
    /// The tree directory.
    pub dir: PathBuf,
    /// Its state (persist with [`WarmTree::save`]).
    pub state: TreeState,
    /// Processes of an earlier make of this tree that were still running
    /// when the lock was taken (their owner died), and were killed.
    pub stopped_earlier_make: usize,
    _lock: FileLock,
}

/// How long an earlier make of a tree may take to die after SIGKILL.
const STOP_EARLIER_MAKE: std::time::Duration = std::time::Duration::from_secs(30);

/// Stops what still runs of a make recorded in `dir` (its owner died
/// without cleaning up: the kernel released the lock, but an orphaned make
/// could still be writing the tree). Returns how many processes it killed.
/// Blocking; call it with the tree's lock held.
fn stop_earlier_make(dir: &Path) -> Result<usize> {
    let record = dir.join(MAKE_GROUP_FILE);
    let Ok(bytes) = std::fs::read(&record) else { return Ok(0) };
    let stopped = match serde_json::from_slice::<GroupRecord>(&bytes) {
        Ok(group) => group.stop(Some(dir), STOP_EARLIER_MAKE)?,
        Err(e) => {
            tracing::warn!(path = %record.display(), error = %e, "unreadable make record; ignoring it");
            0
        }
    };
    std::fs::remove_file(&record).map_err(|e| Error::io(&record, e))?;
    Ok(stopped)
}

/// A key from any serializable description of what determines the build.
pub(crate) fn key_of(material: &impl Serialize) -> (String, String) {
    let description = serde_json::to_string(material).unwrap_or_default();
    let digest = hex::encode(Sha256::digest(description.as_bytes()));
    (digest[..20].to_owned(), description)
}

fn now_secs() -> u64 {
    SystemTime::now().duration_since(UNIX_EPOCH).map(|d| d.as_secs()).unwrap_or_default()
}

impl WarmTree {
    /// The source tree.
    pub fn src(&self) -> PathBuf {
        self.dir.join("src")
    }

    /// The build directory: a subdirectory of the source tree, so that
    /// kbuild uses relative paths (objects do not depend on where the tree
    /// is, with or without ccache).
    pub fn out(&self) -> PathBuf {
        self.src().join(OUT_DIR)
    }

    fn state_path(&self) -> PathBuf {
        self.dir.join("state.json")
    }

    /// Writes the state (atomically: temp file + rename).
    pub fn save(&mut self) -> Result<()> {
        self.state.format = FORMAT;
        self.state.last_used = now_secs();
        let path = self.state_path();
        let tmp = self.dir.join("state.json.tmp");
        let json = serde_json::to_vec_pretty(&self.state).map_err(|e| Error::io(&path, std::io::Error::other(e)))?;
        std::fs::write(&tmp, json).map_err(|e| Error::io(&tmp, e))?;
        std::fs::rename(&tmp, &path).map_err(|e| Error::io(&path, e))
    }

    /// Deletes everything in the tree and starts from an empty state.
    pub async fn reset(&mut self, description: String) -> Result<()> {
        let dir = self.dir.clone();
        run_blocking("reset warm tree", move || {
            remove_dir_all_if_exists(&dir)?;
            std::fs::create_dir_all(&dir).map_err(|e| Error::io(&dir, e))
        })
        .await?;
        self.state = TreeState { description, ..TreeState::default() };
        self.save()
    }

    /// Recomputes the tree's own size.
    pub async fn measure(&mut self) -> Result<()> {
        let dir = self.dir.clone();
        self.state.size_bytes = run_blocking("measure warm tree", move || Ok(own_size(&dir))).await?;
        Ok(())
    }
}

fn remove_dir_all_if_exists(dir: &Path) -> Result<()> {
    match std::fs::remove_dir_all(dir) {
        Ok(()) => Ok(()),
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => Ok(()),
        Err(e) => Err(Error::io(dir, e)),
    }
}

/// Bytes of the regular files under `dir` that are not hard links shared
/// with another tree (link count 1).
pub(crate) fn own_size(dir: &Path) -> u64 {
    use std::os::unix::fs::MetadataExt;
    let mut total = 0;
    let mut stack = vec![dir.to_owned()];
    while let Some(d) = stack.pop() {
        let Ok(entries) = std::fs::read_dir(&d) else { continue };
        for e in entries.flatten() {
            let Ok(meta) = e.path().symlink_metadata() else { continue };
            if meta.is_dir() {
                stack.push(e.path());
            } else if meta.is_file() && meta.nlink() == 1 {
                total += meta.blocks() * 512;
            }
        }
    }
    total
}

impl TreeStore {
    /// A store under `root` keeping at most about `max_bytes`.
    pub fn new(root: impl Into<PathBuf>, max_bytes: u64) -> Self {
        Self { root: root.into(), max_bytes }
    }

    /// Locks the tree of `key` (waiting for other builds of the same key,
    /// in any process) and reads its state. A tree left mid-patch, of an
    /// older format or with a different description is reset.
    pub async fn open(&self, key: &str, description: &str, cancel: &CancellationToken) -> Result<WarmTree> {
        let lock = FileLock::acquire(&self.root.join(format!("{key}.lock")), cancel).await?;
        let dir = self.root.join(key);
        // Before anything reads or resets the tree: no make of an earlier
        // owner may still run in it.
        let stopped_earlier_make = {
            let d = dir.clone();
            run_blocking("stop an earlier make", move || stop_earlier_make(&d)).await?
        };
        let state: Option<TreeState> =
            std::fs::read(dir.join("state.json")).ok().and_then(|b| serde_json::from_slice(&b).ok());
        let mut tree =
            WarmTree { key: key.to_owned(), dir, state: TreeState::default(), stopped_earlier_make, _lock: lock };
        match state {
            Some(s) if s.format == FORMAT && s.description == description && s.busy != Some(Busy::Patching) => {
                tree.state = s;
            }
            _ => tree.reset(description.to_owned()).await?,
        }
        Ok(tree)
    }

    /// Deletes least recently used trees (never `keep`, never one in use)
    /// until the total is within the bound; returns the deleted keys.
    pub async fn evict(&self, keep: &str, keep_size: u64) -> Result<Vec<String>> {
        let (root, keep, max) = (self.root.clone(), keep.to_owned(), self.max_bytes);
        run_blocking("evict warm trees", move || evict(&root, &keep, keep_size, max)).await
    }
}

fn evict(root: &Path, keep: &str, keep_size: u64, max: u64) -> Result<Vec<String>> {
    let Ok(entries) = std::fs::read_dir(root) else { return Ok(Vec::new()) };
    let mut others: Vec<(u64, u64, String)> = Vec::new();
    let mut total = keep_size;
    for e in entries.flatten() {
        let name = e.file_name().to_string_lossy().into_owned();
        if name == keep || !e.path().is_dir() {
            continue;
        }
        let state: Option<TreeState> =
            std::fs::read(e.path().join("state.json")).ok().and_then(|b| serde_json::from_slice(&b).ok());
        let (used, size) = state.map(|s| (s.last_used, s.size_bytes)).unwrap_or((0, 0));
        total += size;
        others.push((used, size, name));
    }
    others.sort();
    let mut evicted = Vec::new();
    for (_, size, name) in others {
        if total <= max {
            break;
        }
        // A tree in use is skipped; it will be considered next time.
        let Some(_lock) = FileLock::try_acquire(&root.join(format!("{name}.lock")))? else { continue };
        stop_earlier_make(&root.join(&name))?;
        tracing::info!(tree = %name, size, "evicting warm tree");
        remove_dir_all_if_exists(&root.join(&name))?;
        total = total.saturating_sub(size);
        evicted.push(name);
    }
    Ok(evicted)
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::os::unix::process::ExitStatusExt;

    #[tokio::test]
    async fn state_persists_and_interrupted_patching_resets() {
        let dir = tempfile::tempdir().unwrap();
        let store = TreeStore::new(dir.path(), u64::MAX);
        let cancel = CancellationToken::new();
        let (key, desc) = key_of(&("tarball", "abc", "tinyconfig"));
        assert_eq!(key.len(), 20);
        {
            let mut t = store.open(&key, &desc, &cancel).await.unwrap();
            assert!(!t.state.ready);
            std::fs::create_dir_all(t.src()).unwrap();
            t.state.ready = true;
            t.state.applied_patch = Some("p".into());
            t.save().unwrap();
        }
        {
            let mut t = store.open(&key, &desc, &cancel).await.unwrap();
            assert!(t.state.ready);
            assert_eq!(t.state.applied_patch.as_deref(), Some("p"));
            t.state.busy = Some(Busy::Making { started: 5 });
            t.save().unwrap();
        }
        {
            // Interrupted make: kept (make itself recovers).
            let mut t = store.open(&key, &desc, &cancel).await.unwrap();
            assert!(t.state.ready);
            assert_eq!(t.state.busy, Some(Busy::Making { started: 5 }));
            t.state.busy = Some(Busy::Patching);
            t.save().unwrap();
        }
        // Interrupted patching: the sources are unknown, start over.
        let t = store.open(&key, &desc, &cancel).await.unwrap();
        assert!(!t.state.ready && !t.src().exists());
        drop(t);
        // Same key, other description (a hash collision or a format change): reset.
        let t = store.open(&key, "other", &cancel).await.unwrap();
        assert_eq!(t.state.description, "other");
    }

    #[tokio::test]
    async fn opening_a_tree_stops_a_make_its_dead_owner_left_running() {
        use std::os::unix::process::CommandExt;
        let dir = tempfile::tempdir().unwrap();
        let store = TreeStore::new(dir.path(), u64::MAX);
        let cancel = CancellationToken::new();
        let t = store.open("k", "k", &cancel).await.unwrap();
        assert_eq!(t.stopped_earlier_make, 0);
        // An orphaned "make" working in the tree, recorded as its group.
        std::fs::create_dir_all(t.src()).unwrap();
        let mut orphan = std::process::Command::new("sh")
            .args(["-c", "sleep 300 & wait"])
            .current_dir(t.src())
            .process_group(0)
            .spawn()
            .unwrap();
        std::thread::sleep(std::time::Duration::from_millis(200));
        let record = GroupRecord::of(orphan.id() as i32);
        std::fs::write(t.dir.join(MAKE_GROUP_FILE), serde_json::to_vec(&record).unwrap()).unwrap();
        drop(t);
        let t = store.open("k", "k", &cancel).await.unwrap();
        assert_eq!(t.stopped_earlier_make, 2, "sh and sleep");
        assert!(orphan.wait().unwrap().signal().is_some());
        assert!(!t.dir.join(MAKE_GROUP_FILE).exists());
        drop(t);
        // A record of a group that is gone is dropped quietly.
        let t = store.open("k", "k", &cancel).await.unwrap();
        std::fs::write(t.dir.join(MAKE_GROUP_FILE), serde_json::to_vec(&record).unwrap()).unwrap();
        drop(t);
        assert_eq!(store.open("k", "k", &cancel).await.unwrap().stopped_earlier_make, 0);
    }

    #[tokio::test]
    async fn evicts_least_recently_used_unlocked_trees() {
        let dir = tempfile::tempdir().unwrap();
        let store = TreeStore::new(dir.path(), 10_000);
        let cancel = CancellationToken::new();
        for (i, name) in ["old", "mid", "new", "busy"].iter().enumerate() {
            let mut t = store.open(name, name, &cancel).await.unwrap();
            std::fs::write(t.dir.join("blob"), vec![1u8; 8192]).unwrap();
            t.measure().await.unwrap();
            assert!(t.state.size_bytes >= 8192);
            t.save().unwrap();
            t.state.last_used = i as u64; // deterministic order
            let json = serde_json::to_vec(&t.state).unwrap();
            std::fs::write(t.dir.join("state.json"), json).unwrap();
        }
        let held = store.open("busy", "busy", &cancel).await.unwrap();
        // Re-opening rewrote nothing; make "busy" the oldest of all.
        let mut st = held.state.clone();
        st.last_used = 0;
        std::fs::write(held.dir.join("state.json"), serde_json::to_vec(&st).unwrap()).unwrap();

        let evicted = store.evict("new", 8192).await.unwrap();
        // Bound 10k with "new" (8k) kept: everything else must go, except the locked one.
        assert_eq!(evicted, ["old", "mid"]);
        assert!(dir.path().join("new").exists() && dir.path().join("busy").exists());
        drop(held);
        assert_eq!(store.evict("new", 8192).await.unwrap(), ["busy"]);
    }
}
