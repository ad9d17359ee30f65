//! [`Gym`]: the whole of kgym in one process — scheduler (SQLite), local
//! build worker, patch-check worker, QEMU reproduce worker and a local
//! artifact store under one data directory — with one call.

use std::net::SocketAddr;
use std::path::{Path, PathBuf};
use std::sync::Arc;

use crate::build::{BuildWorker, LocalBuilder, PatchCheckWorker};
use crate::core::ArtifactStore;
use crate::sched::{Embedded, Scheduler};
use crate::vm::{QemuRunner, ReproduceWorker};

/// Why the gym could not start.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum GymError {
    /// The kernel builder could not be set up.
    #[error("set up the kernel builder")]
    Build(#[from] crate::build::Error),
    /// The QEMU runner could not be set up.
    #[error("set up the QEMU runner")]
    Vm(#[from] crate::vm::Error),
    /// The scheduler, workers or HTTP server could not start.
    #[error("start the scheduler")]
    Sched(#[from] crate::sched::Error),
    /// The artifact store could not be opened.
    #[error("open artifact store {url}")]
    Artifacts {
        /// The store's URL or path.
        url: String,
        /// Why.
        #[source]
        source: crate::core::Error,
    },
    /// A `gs://` store was asked of a build without GCS support.
    #[error("open artifact store {url}: GCS needs kgym built with `--features gcp`")]
    GcsDisabled {
        /// The store's URL.
        url: String,
    },
}

/// An embedded gym: submit jobs to [`Gym::scheduler`], read artifacts from
/// [`Gym::artifacts`]. Layout of the data directory:
///
/// - `jobs.sqlite3`, `artifacts/`: the scheduler's state and the job
///   artifacts;
/// - `build/`: repository cache, extracted tarballs, warm build trees
///   (movable with [`GymBuilder::build_cache`]);
/// - `scratch/`: per-stage temporary files (removed after each stage).
#[derive(Debug)]
pub struct Gym {
    embedded: Embedded,
    data_dir: PathBuf,
}

impl Gym {
    /// A gym with the defaults under `data_dir` (see [`GymBuilder`]).
    pub async fn embedded(data_dir: impl Into<PathBuf>) -> Result<Self, GymError> {
        Self::builder(data_dir).start().await
    }

    /// Configures a gym under `data_dir`.
    pub fn builder(data_dir: impl Into<PathBuf>) -> GymBuilder {
        GymBuilder {
            data_dir: data_dir.into(),
            build_slots: 1,
            reproduce_slots: 1,
            http: None,
            build_cache: None,
            local_builder: None,
            runner: None,
        }
    }

    /// The scheduler: submit, watch, abort, restart...
    pub fn scheduler(&self) -> Arc<dyn Scheduler> {
        self.embedded.scheduler()
    }

    /// Where the jobs' artifacts are.
    pub fn artifacts(&self) -> &ArtifactStore {
        self.embedded.artifacts()
    }

    /// The data directory.
    pub fn data_dir(&self) -> &Path {
        &self.data_dir
    }

    /// The HTTP API's base URL, when serving.
    pub fn http_url(&self) -> Option<String> {
        self.embedded.http_url()
    }

    /// Stops the workers (running stages are handed back, not lost) and the
    /// HTTP server.
    pub async fn shutdown(self) {
        self.embedded.shutdown().await;
    }

    /// Serves until SIGTERM/ctrl-c, then shuts down gracefully.
    pub async fn run_until_signal(self) -> Result<(), GymError> {
        Ok(self.embedded.run_until_signal().await?)
    }
}

/// Configures a [`Gym`].
#[derive(Debug)]
pub struct GymBuilder {
    data_dir: PathBuf,
    build_slots: u32,
    reproduce_slots: u32,
    http: Option<(SocketAddr, Option<String>)>,
    build_cache: Option<PathBuf>,
    local_builder: Option<LocalBuilder>,
    runner: Option<QemuRunner>,
}

impl GymBuilder {
    /// Concurrent builds (default 1: a build already uses every core).
    pub fn build_slots(mut self, n: u32) -> Self {
        self.build_slots = n.max(1);
        self
    }

    /// Concurrent reproduce stages (default 1; each runs its own instances
    /// in parallel).
    pub fn reproduce_slots(mut self, n: u32) -> Self {
        self.reproduce_slots = n.max(1);
        self
    }

    /// Also serves the HTTP API on `addr` (a token is required beyond
    /// loopback).
    pub fn serve_http(mut self, addr: SocketAddr, token: Option<String>) -> Self {
        self.http = Some((addr, token));
        self
    }

    /// Keeps the default builder's repository cache, extracted sources and
    /// warm trees in `dir` instead of `data_dir/build` (e.g. on a bigger
    /// disk, or shared by several gyms: builds of one key are serialized by
    /// file locks).
    pub fn build_cache(mut self, dir: impl Into<PathBuf>) -> Self {
        self.build_cache = Some(dir.into());
        self
    }

    /// Uses this builder instead of the default `LocalBuilder` under
    /// `data_dir/build`.
    pub fn local_builder(mut self, builder: LocalBuilder) -> Self {
        self.local_builder = Some(builder);
        self
    }

    /// Uses this QEMU runner instead of the default one.
    pub fn qemu_runner(mut self, runner: QemuRunner) -> Self {
        self.runner = Some(runner);
        self
    }

    /// Opens the database, starts the workers (and the HTTP server).
    pub async fn start(self) -> Result<Gym, GymError> {
        let dir = self.data_dir;
        let scratch = dir.join("scratch");
        let builder = match self.local_builder {
            Some(b) => b,
            None => LocalBuilder::builder(self.build_cache.unwrap_or_else(|| dir.join("build"))).build()?,
        };
        let builder = Arc::new(builder);
        let runner = match self.runner {
            Some(r) => r,
            None => QemuRunner::builder().work_dir(scratch.join("vm")).build()?,
        };
        let mut embedded = Embedded::builder()
            .data_dir(&dir)
            .worker(Arc::new(BuildWorker::new(builder.clone(), scratch.join("build"))), self.build_slots)
            .worker(Arc::new(PatchCheckWorker::new(builder, scratch.join("patch-check"))), 1)
            .worker(
                Arc::new(ReproduceWorker::new(Arc::new(runner)).scratch_dir(scratch.join("reproduce"))),
                self.reproduce_slots,
            );
        if let Some((addr, token)) = self.http {
            embedded = embedded.serve_http(addr, token);
        }
        let embedded = embedded.build().await?;
        Ok(Gym { embedded, data_dir: dir })
    }
}
