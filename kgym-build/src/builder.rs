//! [`LocalBuilder`]: builds on this machine, with a repository cache, warm
//! build trees and ccache under one data directory.

use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::time::Duration;

use async_trait::async_trait;
use kgym_core::stage::build::BuildArgs;
use kgym_core::stage::patch_check::PatchVerdict;

use crate::error::{Error, Result};
use crate::log::BuildLog;
use crate::make::{Ccache, SEED_SCRIPT};
use crate::pipeline;
use crate::process::Limits;
use crate::process::find_tool;
use crate::repo_cache::RepoCache;
use crate::tarball;
use crate::warm_tree::TreeStore;
use crate::{BuildContext, BuildOutput, KernelBuilder, PatchChecker};

/// Default bound on the total size of warm trees.
pub const DEFAULT_WARM_TREE_LIMIT: u64 = 32 << 30;
/// Default time limit of one build.
pub const DEFAULT_TIMEOUT: Duration = Duration::from_secs(3 * 3600);

/// Builds kernels on this machine.
///
/// Under its data directory: `repos/` (one bare repository per URL),
/// `sources/` (extracted tarballs), `trees/` (warm build trees), `assets/`
/// (the fixed randstruct seed script). Every part is safe to share between
/// processes.
///
/// ```no_run
/// # async fn f() -> Result<(), kgym_build::Error> {
/// use kgym_build::{BuildContext, KernelBuilder, LocalBuilder};
/// use kgym_core::stage::build::{BaseConfig, BuildArgs, KernelConfig, KernelSource};
///
/// let builder = LocalBuilder::builder("/var/lib/kgym").jobs(8).build()?;
/// let req = BuildArgs::new(
///     KernelSource::tarball("/usr/src/linux-source-6.1.tar.xz"),
///     KernelConfig::Base { base: BaseConfig::Tinyconfig, fragments: vec![] },
/// );
/// let out = builder.build(&req, &BuildContext::new("/tmp/kernel")).await?;
/// println!("{} in {:.0}s ({:?})", out.bzimage.display(), out.timings.total_secs, out.cache);
/// # Ok(()) }
/// ```
#[derive(Debug, Clone)]
pub struct LocalBuilder {
    pub(crate) settings: Arc<Settings>,
}

/// The resolved configuration of a [`LocalBuilder`].
#[derive(Debug)]
pub(crate) struct Settings {
    pub data_dir: PathBuf,
    pub jobs: usize,
    pub ccache: Option<Ccache>,
    pub timeout: Duration,
    pub repos: RepoCache,
    pub trees: TreeStore,
    pub seed_script: PathBuf,
    pub sources_dir: PathBuf,
}

impl Settings {
    pub fn sources_dir(&self) -> PathBuf {
        self.sources_dir.clone()
    }
}

/// Configures a [`LocalBuilder`] (from [`LocalBuilder::builder`]).
#[derive(Debug, Clone)]
#[must_use]
pub struct LocalBuilderConfig {
    data_dir: PathBuf,
    jobs: Option<usize>,
    ccache: bool,
    ccache_dir: Option<PathBuf>,
    sources_dir: Option<PathBuf>,
    warm_tree_limit: u64,
    timeout: Duration,
}

impl LocalBuilder {
    /// Starts configuring a builder keeping its caches in `data_dir`.
    pub fn builder(data_dir: impl Into<PathBuf>) -> LocalBuilderConfig {
        LocalBuilderConfig {
            data_dir: data_dir.into(),
            jobs: None,
            ccache: true,
            ccache_dir: None,
            sources_dir: None,
            warm_tree_limit: DEFAULT_WARM_TREE_LIMIT,
            timeout: DEFAULT_TIMEOUT,
        }
    }

    /// The data directory.
    pub fn data_dir(&self) -> &Path {
        &self.settings.data_dir
    }

    /// `make -j` of this builder.
    pub fn jobs(&self) -> usize {
        self.settings.jobs
    }

    /// Whether builds go through ccache.
    pub fn uses_ccache(&self) -> bool {
        self.settings.ccache.is_some()
    }

    /// The pristine source tree of `tarball`, extracted once (shared with
    /// builds). Treat it as read-only: warm trees hard-link its files.
    pub async fn source_tree(&self, tarball: &Path, ctx: &BuildContext) -> Result<PathBuf> {
        let limits = Limits::new(self.settings.timeout, ctx.cancel.clone());
        tokio::fs::create_dir_all(&ctx.out_dir).await.map_err(|e| Error::io(&ctx.out_dir, e))?;
        let log = BuildLog::create(&ctx.out_dir.join("extract.log"), ctx.logs.clone())?;
        tarball::ensure_extracted(&self.settings.sources_dir(), tarball, &limits, &log).await
    }
}

impl LocalBuilderConfig {
    /// `make -j` (default: the machine's available parallelism).
    pub fn jobs(mut self, jobs: usize) -> Self {
        self.jobs = Some(jobs.max(1));
        self
    }

    /// Use ccache when it is installed (default: on).
    pub fn ccache(mut self, on: bool) -> Self {
        self.ccache = on;
        self
    }

    /// ccache's cache directory (default: ccache's own default).
    pub fn ccache_dir(mut self, dir: impl Into<PathBuf>) -> Self {
        self.ccache_dir = Some(dir.into());
        self
    }

    /// Where extracted tarballs are kept (default: `<data>/sources`). Several
    /// builders may share one; it must be on the same filesystem as the
    /// data directory for trees to hard-link it (otherwise they copy).
    pub fn sources_dir(mut self, dir: impl Into<PathBuf>) -> Self {
        self.sources_dir = Some(dir.into());
        self
    }

    /// Bound on the total size of warm trees, least recently used evicted
    /// first (default: 32 GiB).
    pub fn warm_tree_limit_bytes(mut self, bytes: u64) -> Self {
        self.warm_tree_limit = bytes;
        self
    }

    /// Time limit of one build when the request sets none (default: 3 h).
    pub fn timeout(mut self, timeout: Duration) -> Self {
        self.timeout = timeout;
        self
    }

    /// Creates the data directory layout and the builder.
    pub fn build(self) -> Result<LocalBuilder> {
        let data = self.data_dir;
        for sub in ["repos", "sources", "trees", "assets"] {
            let d = data.join(sub);
            std::fs::create_dir_all(&d).map_err(|e| Error::io(&d, e))?;
        }
        let data = data.canonicalize().map_err(|e| Error::io(&data, e))?;
        let sources_dir = match self.sources_dir {
            Some(d) => {
                std::fs::create_dir_all(&d).map_err(|e| Error::io(&d, e))?;
                d.canonicalize().map_err(|e| Error::io(&d, e))?
            }
            None => data.join("sources"),
        };
        let seed_script = data.join("assets/gen-fixed-randstruct-seed.sh");
        write_executable(&seed_script, SEED_SCRIPT)?;
        let jobs = self.jobs.unwrap_or_else(|| std::thread::available_parallelism().map(|n| n.get()).unwrap_or(1));
        let ccache = if self.ccache {
            find_tool("ccache").map(|program| Ccache { program, dir: self.ccache_dir.clone() })
        } else {
            None
        };
        if self.ccache && ccache.is_none() {
            tracing::info!("ccache is not installed; building without it");
        }
        let settings = Settings {
            jobs,
            ccache,
            timeout: self.timeout,
            repos: RepoCache::new(data.join("repos")),
            trees: TreeStore::new(data.join("trees"), self.warm_tree_limit),
            seed_script,
            sources_dir,
            data_dir: data,
        };
        Ok(LocalBuilder { settings: Arc::new(settings) })
    }
}

fn write_executable(path: &Path, text: &str) -> Result<()> {
    use std::os::unix::fs::PermissionsExt;
    if std::fs::read_to_string(path).is_ok_and(|t| t == text) {
        return Ok(());
    }
    // Write then rename: another process may be running the old copy.
    let tmp = path.with_extension(format!("tmp{}", std::process::id()));
    std::fs::write(&tmp, text).map_err(|e| Error::io(&tmp, e))?;
    std::fs::set_permissions(&tmp, std::fs::Permissions::from_mode(0o755)).map_err(|e| Error::io(&tmp, e))?;
    std::fs::rename(&tmp, path).map_err(|e| Error::io(path, e))
}

#[async_trait]
impl KernelBuilder for LocalBuilder {
    async fn build(&self, req: &BuildArgs, ctx: &BuildContext) -> Result<BuildOutput> {
        pipeline::build(&self.settings, req, ctx).await
    }
}

#[async_trait]
impl PatchChecker for LocalBuilder {
    async fn check_patches(
        &self,
        base: &BuildArgs,
        patches: &[String],
        ctx: &BuildContext,
    ) -> Result<Vec<PatchVerdict>> {
        pipeline::check_patches(&self.settings, base, patches, ctx).await
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn builder_creates_layout_and_applies_options() {
        let dir = tempfile::tempdir().unwrap();
        let b = LocalBuilder::builder(dir.path().join("data"))
            .jobs(0)
            .ccache(false)
            .timeout(Duration::from_secs(9))
            .build()
            .unwrap();
        assert_eq!(b.jobs(), 1);
        assert!(!b.uses_ccache());
        for sub in ["repos", "sources", "trees", "assets/gen-fixed-randstruct-seed.sh"] {
            assert!(b.data_dir().join(sub).exists(), "{sub}");
        }
        assert_eq!(b.settings.timeout, Duration::from_secs(9));
        // The seed script works like the kernel's: seed file + hash header.
        let seed = dir.path().join("seed");
        let hash = dir.path().join("hash.h");
        let st = std::process::Command::new(&b.settings.seed_script).arg(&seed).arg(&hash).status().unwrap();
        assert!(st.success());
        let h1 = std::fs::read_to_string(&hash).unwrap();
        assert!(h1.starts_with("#define RANDSTRUCT_HASHED_SEED \""), "{h1}");
        std::process::Command::new(&b.settings.seed_script).arg(&seed).arg(&hash).status().unwrap();
        assert_eq!(std::fs::read_to_string(&hash).unwrap(), h1, "seed is not fixed");
        // A second builder on the same directory is fine.
        LocalBuilder::builder(dir.path().join("data")).build().unwrap();
    }
}
