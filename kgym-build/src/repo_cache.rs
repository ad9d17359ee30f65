//! The repository cache: one bare git repository per source URL, kept by
//! libgit2 under the data directory and updated by incremental fetches.
//!
//! A commit missing from the cache is fetched on its own (the exact hash as
//! a refspec), so a commit that no branch of the remote advertises — a
//! dangling commit, or one pushed after the cache was populated — is found
//! without a re-clone. Only when that fails (an abbreviated hash, a server
//! that refuses unadvertised objects) are all branches and tags fetched.
//!
//! A local repository given by its path (not a `file://` URL, which is
//! fetched like any remote, as git does) is used in place: the cache
//! borrows its object store (git's `alternates`, like `git clone
//! --shared`) and commits are resolved in it directly, so nothing is
//! copied and even its dangling commits are found at once. As with
//! `--shared`, pruning that repository can take objects away from builds
//! that have not run yet.

use crate::blocking::run_blocking;
use crate::error::{Error, Result};
use crate::process::{self, Limits, require_tool};
use git2::{Oid, Repository};
use kgym_proc::FileLock;
use sha2::{Digest, Sha256};
use std::path::{Path, PathBuf};

/// Refspecs fetched when a commit cannot be fetched by hash.
const ALL_REFS: [&str; 2] = ["+refs/heads/*:refs/heads/*", "+refs/tags/*:refs/tags/*"];

/// Where fetched-by-hash commits are pinned, so `git gc` keeps them.
const PINNED: &str = "refs/kgym/commits";

/// The cache of bare repositories.
#[derive(Debug, Clone)]
pub(crate) struct RepoCache {
    root: PathBuf,
}

/// A resolved commit in a cached repository.
#[derive(Debug, Clone)]
pub(crate) struct Resolved {
    /// The bare repository.
    pub repo_dir: PathBuf,
    /// The commit.
    pub oid: Oid,
}

/// A URL as the cache keys it: an existing local directory becomes its
/// canonical absolute path (so `./linux` and `/src/linux` share a cache).
pub(crate) fn normalize_url(url: &str) -> String {
    let path = Path::new(url);
    if path.is_dir() {
        if let Ok(canon) = path.canonicalize() {
            return canon.to_string_lossy().into_owned();
        }
    }
    url.to_owned()
}

fn is_hex(s: &str) -> bool {
    !s.is_empty() && s.bytes().all(|b| b.is_ascii_hexdigit())
}

impl RepoCache {
    /// A cache rooted at `root` (created on first use).
    pub fn new(root: impl Into<PathBuf>) -> Self {
        Self { root: root.into() }
    }

    /// The bare repository directory for `url`.
    pub fn repo_dir(&self, url: &str) -> PathBuf {
        let digest = hex::encode(Sha256::digest(url.as_bytes()));
        self.root.join(format!("{}.git", &digest[..16]))
    }

    /// Resolves `commit` (full or abbreviated hash, branch, tag, `HEAD`) in
    /// the cache of `url`, fetching what is missing. Concurrent callers for
    /// one URL (in any process) take turns.
    pub async fn resolve(&self, url: &str, commit: &str, limits: &Limits) -> Result<Resolved> {
        let url = normalize_url(url);
        let repo_dir = self.repo_dir(&url);
        let _lock = FileLock::acquire(&repo_dir.with_extension("lock"), limits.cancel()).await?;
        let created = !repo_dir.join("HEAD").is_file();
        let result = self.resolve_locked(&url, &repo_dir, commit, limits).await;
        if result.is_err() && created {
            // A first fetch that failed leaves an empty repository: drop it,
            // so the cache holds only repositories that have something.
            let dir = repo_dir.clone();
            run_blocking("drop an empty repository cache", move || {
                let empty = Repository::open_bare(&dir).map_or(true, |r| {
                    r.references().map_or(true, |mut refs| refs.next().is_none())
                        && !dir.join("objects/info/alternates").is_file()
                });
                if empty {
                    std::fs::remove_dir_all(&dir).map_err(|e| Error::io(&dir, e))?;
                }
                Ok(())
            })
            .await?;
        }
        result
    }

    async fn resolve_locked(&self, url: &str, repo_dir: &Path, commit: &str, limits: &Limits) -> Result<Resolved> {
        let (url, repo_dir) = (url.to_owned(), repo_dir.to_owned());
        let commit = commit.trim().to_owned();
        let found = |oid: Option<Oid>| oid.map(|oid| Resolved { repo_dir: repo_dir.clone(), oid });
        let not_found = || Error::CommitNotFound { url: url.clone(), commit: commit.clone() };
        let full_hash = commit.len() == 40 && is_hex(&commit);

        {
            let (dir, u) = (repo_dir.clone(), url.clone());
            run_blocking("open repository cache", move || open_or_init(&dir, &u).map(drop)).await?;
        }
        if Path::new(&url).is_absolute() && Path::new(&url).is_dir() {
            let (dir, u, c) = (repo_dir.clone(), url.clone(), commit.clone());
            let oid = run_blocking("resolve in local repository", move || resolve_in_place(&dir, &u, &c)).await?;
            return found(oid).ok_or_else(not_found);
        }
        if commit == "HEAD" {
            let pinned = "refs/kgym/remote-head";
            fetch(&repo_dir, &url, &[format!("+HEAD:{pinned}")], limits).await?;
            return found(self.lookup(&repo_dir, pinned).await?).ok_or_else(not_found);
        }
        if is_hex(&commit) && commit.len() >= 4 {
            if let Some(r) = found(self.lookup(&repo_dir, &commit).await?) {
                return Ok(r);
            }
        }
        if full_hash {
            let spec = format!("+{commit}:{PINNED}/{commit}");
            match fetch(&repo_dir, &url, std::slice::from_ref(&spec), limits).await {
                Err(e @ (Error::Cancelled { .. } | Error::Timeout { .. } | Error::MissingTool { .. })) => {
                    return Err(e);
                }
                // Refused (a server without protocol v2 or that forbids
                // unadvertised objects) or absent: fall back to the
                // branches, which also tells "unreachable" apart.
                Err(e) => tracing::debug!(%url, %commit, error = %e, "fetch by hash failed"),
                Ok(()) => {}
            }
            if let Some(r) = found(self.lookup(&repo_dir, &commit).await?) {
                return Ok(r);
            }
        }
        let all: Vec<String> = ALL_REFS.iter().map(|s| (*s).to_owned()).collect();
        fetch(&repo_dir, &url, &all, limits).await?;
        found(self.lookup(&repo_dir, &commit).await?).ok_or_else(not_found)
    }

    async fn lookup(&self, repo_dir: &Path, spec: &str) -> Result<Option<Oid>> {
        let (dir, spec) = (repo_dir.to_owned(), spec.to_owned());
        run_blocking("look up commit", move || {
            let repo = Repository::open_bare(&dir)
                .map_err(|e| Error::git(format!("open repository cache {}", dir.display()), e))?;
            Ok(lookup(&repo, &spec))
        })
        .await
    }
}

/// `git fetch` into the cache. The transport is git's own: libgit2 speaks
/// neither protocol v2 (where servers hand out unadvertised commits by
/// hash) nor, without OpenSSL, https; git also brings the user's
/// credentials, proxies and URL rewrites.
async fn fetch(repo_dir: &Path, url: &str, refspecs: &[String], limits: &Limits) -> Result<()> {
    let git = require_tool("git")?;
    // A tree: git runs upload-pack (file://) or a remote helper as children.
    let mut cmd = process::tree_command(git);
    // pack.window=0: a local (file://) upload-pack runs as git's child and
    // would otherwise spend minutes on delta compression of a kernel for a
    // copy on the same disk; remote servers ignore the client's setting.
    cmd.args(["-c", "pack.window=0", "--git-dir"])
        .arg(repo_dir)
        .args(["fetch", "--no-tags", "--no-write-fetch-head", "--quiet", "--", url])
        .args(refspecs)
        .env("GIT_TERMINAL_PROMPT", "0")
        .env_remove("GIT_DIR")
        .env_remove("GIT_WORK_TREE");
    tracing::info!(url, ?refspecs, "fetching");
    let phase = format!("fetching {url}");
    let done = process::run(cmd, &phase, None, limits, None).await?;
    if done.status.success() { Ok(()) } else { Err(Error::FetchFailed { url: url.to_owned(), stderr: done.tail(20) }) }
}

fn open_or_init(dir: &Path, url: &str) -> Result<Repository> {
    if dir.join("HEAD").is_file() {
        return Repository::open_bare(dir)
            .map_err(|e| Error::git(format!("open repository cache {}", dir.display()), e));
    }
    std::fs::create_dir_all(dir).map_err(|e| Error::io(dir, e))?;
    let repo =
        Repository::init_bare(dir).map_err(|e| Error::git(format!("create repository cache {}", dir.display()), e))?;
    // For humans looking at the data directory.
    let note = dir.join("kgym-url");
    std::fs::write(&note, format!("{url}\n")).map_err(|e| Error::io(&note, e))?;
    Ok(repo)
}

/// Resolves `commit` in the local repository at `path`, after making its
/// objects visible to the cache repository `cache_dir`. Blocking.
fn resolve_in_place(cache_dir: &Path, path: &str, commit: &str) -> Result<Option<Oid>> {
    let source = Repository::open(path)
        .map_err(|e| Error::FetchFailed { url: path.to_owned(), stderr: format!("not a git repository: {e}") })?;
    let objects = source.commondir().join("objects");
    let objects = objects.canonicalize().map_err(|e| Error::io(&objects, e))?;
    let alternates = cache_dir.join("objects/info/alternates");
    let current = std::fs::read_to_string(&alternates).unwrap_or_default();
    let line = objects.display().to_string();
    if !current.lines().any(|l| l == line) {
        if let Some(parent) = alternates.parent() {
            std::fs::create_dir_all(parent).map_err(|e| Error::io(parent, e))?;
        }
        std::fs::write(&alternates, format!("{current}{line}\n")).map_err(|e| Error::io(&alternates, e))?;
    }
    Ok(lookup(&source, commit))
}

fn lookup(repo: &Repository, spec: &str) -> Option<Oid> {
    let obj = repo.revparse_single(spec).ok()?;
    obj.peel_to_commit().ok().map(|c| c.id())
}

#[cfg(test)]
pub(crate) mod tests {
    use super::*;
    use git2::Signature;

    /// Commits `files` on top of `parent` (or as a root) without moving any
    /// ref, returning the new commit.
    pub(crate) fn commit_files(repo: &Repository, parent: Option<Oid>, files: &[(&str, &str)], msg: &str) -> Oid {
        let mut index = git2::Index::new().unwrap();
        if let Some(p) = parent {
            let tree = repo.find_commit(p).unwrap().tree().unwrap();
            index.read_tree(&tree).unwrap();
        }
        for (path, content) in files {
            let blob = repo.blob(content.as_bytes()).unwrap();
            let entry = git2::IndexEntry {
                ctime: git2::IndexTime::new(0, 0),
                mtime: git2::IndexTime::new(0, 0),
                dev: 0,
                ino: 0,
                mode: 0o100644,
                uid: 0,
                gid: 0,
                file_size: content.len() as u32,
                id: blob,
                flags: 0,
                flags_extended: 0,
                path: path.as_bytes().to_vec(),
            };
            index.add(&entry).unwrap();
        }
        let tree_id = index.write_tree_to(repo).unwrap();
        let tree = repo.find_tree(tree_id).unwrap();
        let sig = Signature::new("t", "t@example.com", &git2::Time::new(1_700_000_000, 0)).unwrap();
        let parents: Vec<git2::Commit<'_>> = parent.map(|p| repo.find_commit(p).unwrap()).into_iter().collect();
        let refs: Vec<&git2::Commit<'_>> = parents.iter().collect();
        repo.commit(None, &sig, &sig, msg, &tree, &refs).unwrap()
    }

    fn stop() -> Limits {
        Limits::new(std::time::Duration::from_secs(60), tokio_util::sync::CancellationToken::new())
    }

    #[tokio::test]
    async fn resolves_fetches_missing_and_dangling_commits_and_reports_missing() {
        let dir = tempfile::tempdir().unwrap();
        let origin_dir = dir.path().join("origin");
        let origin = Repository::init(&origin_dir).unwrap();
        let c1 = commit_files(&origin, None, &[("a.c", "one\n")], "first");
        origin.reference("refs/heads/main", c1, true, "").unwrap();
        let url = format!("file://{}", origin_dir.display());

        let cache = RepoCache::new(dir.path().join("cache"));
        let r = cache.resolve(&url, "main", &stop()).await.unwrap();
        assert_eq!(r.oid, c1);
        let short = &c1.to_string()[..10];
        assert_eq!(cache.resolve(&url, short, &stop()).await.unwrap().oid, c1);

        // A commit created after the cache was populated, on a branch the
        // cache has never seen: fetched by hash.
        let c2 = commit_files(&origin, Some(c1), &[("a.c", "two\n")], "second");
        origin.reference("refs/heads/feature", c2, true, "").unwrap();
        let r2 = cache.resolve(&url, &c2.to_string(), &stop()).await.unwrap();
        assert_eq!(r2.oid, c2);
        let bare = Repository::open_bare(&r2.repo_dir).unwrap();
        assert!(bare.find_reference(&format!("{PINNED}/{c2}")).is_ok(), "not fetched by hash");
        assert!(bare.find_reference("refs/heads/feature").is_err(), "fell back to fetching every branch");

        // A commit on no ref at all (dangling in the origin).
        let c3 = commit_files(&origin, Some(c2), &[("a.c", "three\n")], "dangling");
        assert_eq!(cache.resolve(&url, &c3.to_string(), &stop()).await.unwrap().oid, c3);

        let missing = "0123456789abcdef0123456789abcdef01234567";
        let err = cache.resolve(&url, missing, &stop()).await.unwrap_err();
        assert!(matches!(err, Error::CommitNotFound { ref commit, .. } if commit == missing), "{err}");
        let err = cache.resolve(&url, "no-such-branch", &stop()).await.unwrap_err();
        assert!(matches!(err, Error::CommitNotFound { .. }), "{err}");
    }

    #[tokio::test]
    async fn unreachable_remote_is_a_fetch_failure_and_cancel_is_honoured() {
        let dir = tempfile::tempdir().unwrap();
        let cache = RepoCache::new(dir.path().join("cache"));
        let url = format!("file://{}/nowhere", dir.path().display());
        let err = cache.resolve(&url, "0123456789abcdef0123456789abcdef01234567", &stop()).await.unwrap_err();
        assert!(matches!(err, Error::FetchFailed { .. }), "{err}");
        assert_eq!(err.code(), kgym_core::failure::codes::FETCH_FAILED);

        let cancelled = stop();
        cancelled.cancel().cancel();
        let err = cache.resolve(&url, "main", &cancelled).await.unwrap_err();
        assert!(matches!(err, Error::Cancelled { .. }), "{err}");
        match cache.resolve(&url, "main", &stop()).await.unwrap_err() {
            Error::FetchFailed { stderr, .. } => assert!(stderr.contains("nowhere"), "git's words: {stderr}"),
            other => panic!("{other}"),
        }
        // Nothing was fetched, so nothing is cached: no empty repository.
        assert!(!cache.repo_dir(&url).exists(), "a failed first fetch left an empty repository");
        let not_a_repo = dir.path().join("plain-dir");
        std::fs::create_dir_all(&not_a_repo).unwrap();
        let err = cache.resolve(not_a_repo.to_str().unwrap(), "main", &stop()).await.unwrap_err();
        assert!(matches!(err, Error::FetchFailed { .. }), "{err}");
        assert!(!cache.repo_dir(not_a_repo.to_str().unwrap()).exists());
    }

    #[tokio::test]
    async fn a_failed_fetch_keeps_a_repository_that_has_content() {
        let dir = tempfile::tempdir().unwrap();
        let origin_dir = dir.path().join("origin");
        let origin = Repository::init(&origin_dir).unwrap();
        let c1 = commit_files(&origin, None, &[("a.c", "one\n")], "first");
        origin.reference("refs/heads/main", c1, true, "").unwrap();
        let url = format!("file://{}", origin_dir.display());
        let cache = RepoCache::new(dir.path().join("cache"));
        cache.resolve(&url, "main", &stop()).await.unwrap();
        std::fs::remove_dir_all(&origin_dir).unwrap();
        let err = cache.resolve(&url, "0123456789abcdef0123456789abcdef01234567", &stop()).await.unwrap_err();
        assert!(matches!(err, Error::FetchFailed { .. }), "{err}");
        assert_eq!(cache.resolve(&url, &c1.to_string(), &stop()).await.unwrap().oid, c1, "the cache was dropped");
    }

    #[tokio::test]
    async fn local_paths_are_used_in_place_without_copying() {
        let dir = tempfile::tempdir().unwrap();
        let origin_dir = dir.path().join("origin");
        let origin = Repository::init(&origin_dir).unwrap();
        let c1 = commit_files(&origin, None, &[("a.c", "one\n")], "first");
        origin.reference("refs/heads/main", c1, true, "").unwrap();
        let cache = RepoCache::new(dir.path().join("cache"));
        let path = origin_dir.to_str().unwrap();
        let r = cache.resolve(path, "main", &stop()).await.unwrap();
        assert_eq!(r.oid, c1);
        // A relative spelling of the path shares the cache.
        let relative = format!("{}/../origin", origin_dir.display());
        assert_eq!(cache.resolve(&relative, &c1.to_string(), &stop()).await.unwrap().repo_dir, r.repo_dir);

        // A dangling commit made later is visible at once, and nothing was copied.
        let c2 = commit_files(&origin, Some(c1), &[("a.c", "two\n")], "dangling");
        let r2 = cache.resolve(path, &c2.to_string(), &stop()).await.unwrap();
        assert_eq!(r2.oid, c2);
        let bare = Repository::open_bare(&r2.repo_dir).unwrap();
        assert!(bare.find_commit(c2).is_ok(), "the cache cannot read the commit");
        let packs = std::fs::read_dir(r2.repo_dir.join("objects/pack")).map(|d| d.count()).unwrap_or(0);
        assert_eq!(packs, 0, "objects were copied");

        let err = cache.resolve(path, "no-such-branch", &stop()).await.unwrap_err();
        assert!(matches!(err, Error::CommitNotFound { .. }), "{err}");
        let not_repo = dir.path().join("plain");
        std::fs::create_dir_all(&not_repo).unwrap();
        let err = cache.resolve(not_repo.to_str().unwrap(), "main", &stop()).await.unwrap_err();
        assert!(matches!(err, Error::FetchFailed { .. }), "{err}");
    }

    #[tokio::test]
    async fn head_follows_the_remote() {
        let dir = tempfile::tempdir().unwrap();
        let origin_dir = dir.path().join("origin");
        let origin = Repository::init(&origin_dir).unwrap();
        let c1 = commit_files(&origin, None, &[("a", "1")], "one");
        origin.reference("refs/heads/main", c1, true, "").unwrap();
        origin.set_head("refs/heads/main").unwrap();
        let cache = RepoCache::new(dir.path().join("cache"));
        let url = &format!("file://{}", origin_dir.display());
        assert_eq!(cache.resolve(url, "HEAD", &stop()).await.unwrap().oid, c1);
        let c2 = commit_files(&origin, Some(c1), &[("a", "2")], "two");
        origin.reference("refs/heads/main", c2, true, "").unwrap();
        assert_eq!(cache.resolve(url, "HEAD", &stop()).await.unwrap().oid, c2);
        assert_eq!(cache.resolve(url, "main", &stop()).await.unwrap().oid, c2);
    }
}
