//! # kgym-build
//!
//! Builds Linux kernels at any commit, config and patch, fast and
//! reproducibly.
//!
//! - [`KernelBuilder`]: the seam — a build request ([`BuildArgs`]) in, local
//!   output files ([`BuildOutput`]) out. [`PatchChecker`] is the optional
//!   ability to check candidate patches on a warm tree.
//! - [`LocalBuilder`]: builds on this machine. Git sources go through a
//!   cache of bare repositories (a missing commit is fetched on its own,
//!   dangling or not); tarballs are extracted once. Each (source, commit,
//!   backports, config, toolchain, arch) gets a warm out-of-tree build
//!   directory, so a build that differs only by its patch recompiles just
//!   what the patch touches; ccache sits underneath. Builds are
//!   reproducible: fixed timestamp/user/host, fixed randstruct seed and
//!   module signing key, path-independent objects.
//! - [`BuildWorker`] / [`PatchCheckWorker`]: adapters to
//!   [`kgym_core::Worker`] that store outputs as artifacts.
//!
//! Failures are typed ([`Error`]) and map to the stable codes of
//! [`kgym_core::failure::codes`] with [`Error::to_stage_failure`].
//!
//! ```
//! use std::sync::Arc;
//! use kgym_build::{BuildContext, BuildWorker, Error, KernelBuilder, LocalBuilder};
//! use kgym_core::stage::build::{BaseConfig, BuildArgs, KernelConfig, KernelSource};
//! use kgym_core::{StageKind, StageSchema};
//!
//! # tokio::runtime::Runtime::new().unwrap().block_on(async {
//! let data = tempfile::tempdir().unwrap();
//! let builder = LocalBuilder::builder(data.path()).jobs(2).build().unwrap();
//!
//! // A bad input is a typed error with a stable code.
//! let req = BuildArgs::new(
//!     KernelSource::tarball(data.path().join("missing.tar.xz")),
//!     KernelConfig::Base { base: BaseConfig::Tinyconfig, fragments: vec![] },
//! );
//! let err = builder.build(&req, &BuildContext::new(data.path().join("out"))).await.unwrap_err();
//! assert!(matches!(err, Error::TarballUnreadable { .. } | Error::MissingTool { .. }));
//!
//! // The same builder serves `build` stages of a gym.
//! let worker = BuildWorker::new(Arc::new(builder), data.path().join("scratch"));
//! assert_eq!(worker.kind(), StageKind::build());
//! assert!(worker.validate_alone(&serde_json::json!({"source": 1})).is_err());
//! # });
//! ```

use std::fmt;
use std::path::PathBuf;
use std::sync::Arc;

use async_trait::async_trait;
use kgym_core::stage::build::{Arch, BuildTimings, CacheStatus, ConfigMismatch};
use kgym_core::stage::patch_check::PatchVerdict;
use kgym_core::{CancellationToken, LogSink, TracingSink};

mod backport;
mod blocking;
mod builder;
mod checkout;
mod error;
mod kbuild_deps;
mod kconfig;
mod lineage;
mod log;
mod make;
mod patch;
mod patch_check;
mod patch_plan;
mod pipeline;
mod process;
mod repo_cache;
mod tarball;
mod warm_tree;
pub mod worker;

pub use builder::{DEFAULT_TIMEOUT, DEFAULT_WARM_TREE_LIMIT, LocalBuilder, LocalBuilderConfig};
pub use error::{Error, Result};
pub use kgym_core::stage::build::BuildArgs;
pub use kgym_proc::find_tool;
pub use make::LLVM_BINUTILS;
pub use worker::{BuildWorker, PatchCheckWorker};

/// Where a build puts its outputs and reports progress.
#[derive(Clone)]
pub struct BuildContext {
    /// The folder receiving `bzImage`, `vmlinux`, `config`, `build.log`
    /// (and `compile_commands.json`); created if missing.
    pub out_dir: PathBuf,
    /// Receives every line of the build log as it is produced.
    pub logs: Arc<dyn LogSink>,
    /// Stops the build; its subprocesses (the whole `make` tree) are killed.
    pub cancel: CancellationToken,
}

impl fmt::Debug for BuildContext {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("BuildContext").field("out_dir", &self.out_dir).finish_non_exhaustive()
    }
}

impl BuildContext {
    /// A context writing into `out_dir`, logging to `tracing`, never
    /// cancelled.
    pub fn new(out_dir: impl Into<PathBuf>) -> Self {
        Self { out_dir: out_dir.into(), logs: Arc::new(TracingSink), cancel: CancellationToken::new() }
    }

    /// Replaces the log sink (builder style).
    pub fn with_logs(mut self, logs: Arc<dyn LogSink>) -> Self {
        self.logs = logs;
        self
    }

    /// Replaces the cancellation token (builder style).
    pub fn with_cancel(mut self, cancel: CancellationToken) -> Self {
        self.cancel = cancel;
        self
    }
}

/// What a build produced: local files (copies owned by the caller) and facts.
#[derive(Debug, Clone, PartialEq)]
pub struct BuildOutput {
    /// The bootable image.
    pub bzimage: PathBuf,
    /// The kernel ELF with symbols (for symbolization).
    pub vmlinux: PathBuf,
    /// The final `.config`.
    pub config: PathBuf,
    /// The build log of this build.
    pub log: PathBuf,
    /// `compile_commands.json`, when requested.
    pub compile_commands: Option<PathBuf>,
    /// The resolved commit (git sources).
    pub commit: Option<String>,
    /// The architecture built.
    pub arch: Arch,
    /// The command line the request carried.
    pub cmdline: Option<String>,
    /// Phase timings.
    pub timings: BuildTimings,
    /// Whether a warm tree was reused.
    pub cache: CacheStatus,
    /// Requested config symbols that did not survive.
    pub config_mismatches: Vec<ConfigMismatch>,
    /// Backports applied (fix hashes).
    pub backports_applied: Vec<String>,
    /// Objects this build compiled (`kernel/sys.o`, from make's `CC` lines):
    /// all of them for a cold build, the patch's for a warm one.
    pub compiled: Vec<String>,
}

/// Builds kernels. Object-safe: used as `Arc<dyn KernelBuilder>`.
#[async_trait]
pub trait KernelBuilder: Send + Sync + fmt::Debug + 'static {
    /// Builds `req`, writing outputs into `ctx.out_dir`.
    async fn build(&self, req: &BuildArgs, ctx: &BuildContext) -> Result<BuildOutput>;
}

/// The optional ability to check candidate patches against a base build
/// (kGymSuite's kprebuilder).
#[async_trait]
pub trait PatchChecker: Send + Sync + fmt::Debug + 'static {
    /// For each patch, in order: does it apply and compile on the (warm)
    /// tree of `base`, and which functions did it change. A patch that does
    /// not apply or compile is a verdict, not an error; errors are about the
    /// base build or the machine. Logs go to `ctx.out_dir/patch-check.log`.
    async fn check_patches(
        &self,
        base: &BuildArgs,
        patches: &[String],
        ctx: &BuildContext,
    ) -> Result<Vec<PatchVerdict>>;
}

// The README's examples are compiled as doc tests.
#[cfg(doctest)]
#[doc = include_str!("../README.md")]
struct ReadmeDoctests;
