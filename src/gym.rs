//! [`Gym`]: the whole of kgym in one process — the SQLite scheduler, local
//! build, patch-check and QEMU reproduce workers (plus any of your own),
//! a local artifact store and, optionally, the HTTP API with kGym's routes
//! and the web dashboard — under one data directory, with one call. This is the one place where
//! scheduler, workers and server are wired together; the stock services
//! (`examples/k*.rs`) are thin configurations of it or of a worker runtime.

use std::net::SocketAddr;
use std::path::{Path, PathBuf};
use std::sync::Arc;

use crate::build::{BuildWorker, LocalBuilder, PatchCheckWorker};
use crate::compat::CompatOptions;
use crate::core::{ArtifactStore, StageKind, StageSchema, Worker};
use crate::sched::http::{HttpServer, ServerHandle, ServerOptions};
use crate::sched::queue::Queue;
use crate::sched::runtime::{RuntimeHandle, RuntimeOptions, WorkerRuntime};
use crate::sched::sqlite::{SchedulerOptions, SqliteScheduler};
use crate::sched::{Scheduler, StageRegistry};
use crate::vm::{QemuRunner, ReproduceWorker};

/// Workers and their slots.
type Workers = Vec<(Arc<dyn Worker>, u32)>;

/// The database file inside a data directory.
pub const DATABASE_FILE: &str = "jobs.sqlite3";
/// The artifact folder inside a data directory.
pub const ARTIFACTS_DIR: &str = "artifacts";

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

/// A running gym: submit jobs to [`Gym::scheduler`], read artifacts from
/// [`Gym::artifacts`]. Layout of the data directory:
///
/// - `jobs.sqlite3`, `artifacts/`: the scheduler's state and the job
///   artifacts;
/// - `build/`: repository cache, extracted tarballs, warm build trees
///   (movable with [`GymBuilder::build_cache`]);
/// - `scratch/`: per-stage temporary files (removed after each stage).
///
/// Call [`shutdown`](Gym::shutdown) to stop it: running stages are handed
/// back (the next gym opened on the same data directory runs them).
#[derive(Debug)]
pub struct Gym {
    sched: SqliteScheduler,
    runtime: Option<RuntimeHandle>,
    server: Option<ServerHandle>,
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
            stock_workers: true,
            build_slots: 1,
            reproduce_slots: 1,
            build_cache: None,
            local_builder: None,
            runner: None,
            workers: Vec::new(),
            stages: StageRegistry::stock(),
            scheduler: SchedulerOptions::default(),
            runtime: RuntimeOptions::default(),
            http: None,
            dashboard: true,
            compat: CompatOptions::default(),
            artifacts: None,
            queue: None,
        }
    }

    /// The scheduler: submit, watch, abort, restart...
    pub fn scheduler(&self) -> Arc<dyn Scheduler> {
        Arc::new(self.sched.clone())
    }

    /// The SQLite scheduler itself (also the in-process worker backend).
    pub fn sqlite(&self) -> &SqliteScheduler {
        &self.sched
    }

    /// Where the jobs' artifacts are.
    pub fn artifacts(&self) -> &ArtifactStore {
        self.sched.artifacts()
    }

    /// The data directory.
    pub fn data_dir(&self) -> &Path {
        &self.data_dir
    }

    /// The SQLite file.
    pub fn database(&self) -> PathBuf {
        self.data_dir.join(DATABASE_FILE)
    }

    /// The HTTP API's address, when serving.
    pub fn http_addr(&self) -> Option<SocketAddr> {
        self.server.as_ref().map(ServerHandle::local_addr)
    }

    /// The HTTP API's base URL (`http://ADDR`), when serving.
    pub fn http_url(&self) -> Option<String> {
        self.server.as_ref().map(ServerHandle::url)
    }

    /// The in-process worker runtime, when there are local workers.
    pub fn runtime(&self) -> Option<&RuntimeHandle> {
        self.runtime.as_ref()
    }

    /// Stops the HTTP server, hands running stages back, stops the
    /// scheduler's lease watch.
    pub async fn shutdown(self) {
        if let Some(s) = self.server {
            s.shutdown().await;
        }
        if let Some(r) = self.runtime {
            r.shutdown().await;
        }
        self.sched.close();
    }

    /// Serves until SIGTERM, SIGHUP or ctrl-c, then shuts down gracefully.
    pub async fn run_until_signal(self) -> Result<(), GymError> {
        crate::sched::runtime::wait_for_signal().await?;
        tracing::info!("signal received; shutting down");
        self.shutdown().await;
        Ok(())
    }
}

/// Configures a [`Gym`]. Options of the scheduler, the worker runtime and
/// the HTTP server are passed whole ([`SchedulerOptions`],
/// [`RuntimeOptions`], [`ServerOptions`]) to the part they configure.
#[derive(Debug)]
pub struct GymBuilder {
    data_dir: PathBuf,
    stock_workers: bool,
    build_slots: u32,
    reproduce_slots: u32,
    build_cache: Option<PathBuf>,
    local_builder: Option<LocalBuilder>,
    runner: Option<QemuRunner>,
    workers: Workers,
    stages: StageRegistry,
    scheduler: SchedulerOptions,
    runtime: RuntimeOptions,
    http: Option<(SocketAddr, ServerOptions)>,
    dashboard: bool,
    compat: CompatOptions,
    artifacts: Option<ArtifactStore>,
    queue: Option<Arc<dyn Queue>>,
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

    /// Whether the stock workers (build, patch-check, reproduce) run in
    /// this process (default: yes). Without them the gym is a scheduler for
    /// remote workers; the stock kinds are still accepted at submit.
    pub fn stock_workers(mut self, on: bool) -> Self {
        self.stock_workers = on;
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

    /// Also runs `worker` in this process with `slots` concurrent slots;
    /// its kind is accepted at submit and checked by its schema.
    pub fn worker(mut self, worker: Arc<dyn Worker>, slots: u32) -> Self {
        self.workers.push((worker, slots.max(1)));
        self
    }

    /// Accepts stages of `schema`'s kind at submit, checked by it (kinds
    /// that remote workers run).
    pub fn accept(mut self, schema: Arc<dyn StageSchema>) -> Self {
        self.stages.insert_schema(schema);
        self
    }

    /// Accepts stages of `kind` at submit without checking their argument.
    pub fn accept_kind(mut self, kind: StageKind) -> Self {
        self.stages.insert_kind(kind);
        self
    }

    /// Lease settings of the scheduler.
    pub fn scheduler_options(mut self, options: SchedulerOptions) -> Self {
        self.scheduler = options;
        self
    }

    /// Host name, heartbeat, claim wait and grace of the local workers.
    pub fn runtime_options(mut self, options: RuntimeOptions) -> Self {
        self.runtime = options;
        self
    }

    /// Also serves the HTTP API (typed routes, the remote-worker protocol
    /// and kGym's routes) and the web dashboard (see [`dashboard`](Self::dashboard)) on `addr`. Beyond loopback a token is required:
    /// without one, [`start`](Self::start) refuses before anything starts.
    pub fn serve_http(mut self, addr: SocketAddr, options: ServerOptions) -> Self {
        self.http = Some((addr, options));
        self
    }

    /// Whether the HTTP server also shows the web dashboard at `/` (default:
    /// yes; see [`crate::dashboard`]). It only serves static pages that
    /// read the API from the browser.
    pub fn dashboard(mut self, on: bool) -> Self {
        self.dashboard = on;
        self
    }

    /// Settings of the kGym payload conversion (kGym's routes).
    pub fn compat(mut self, compat: CompatOptions) -> Self {
        self.compat = compat;
        self
    }

    /// Where artifacts live (default: `data_dir/artifacts`).
    pub fn artifacts(mut self, artifacts: ArtifactStore) -> Self {
        self.artifacts = Some(artifacts);
        self
    }

    /// The announcement transport (default: in-process).
    pub fn queue(mut self, queue: Arc<dyn Queue>) -> Self {
        self.queue = Some(queue);
        self
    }

    /// The stock workers under `data_dir`, built unless turned off.
    fn stock(&mut self) -> Result<Workers, GymError> {
        if !self.stock_workers {
            return Ok(Vec::new());
        }
        let scratch = self.data_dir.join("scratch");
        let builder = match self.local_builder.take() {
            Some(b) => b,
            None => {
                let cache = self.build_cache.take().unwrap_or_else(|| self.data_dir.join("build"));
                LocalBuilder::builder(cache).build()?
            }
        };
        let builder = Arc::new(builder);
        let runner = match self.runner.take() {
            Some(r) => r,
            None => QemuRunner::builder().work_dir(scratch.join("vm")).build()?,
        };
        let reproduce = ReproduceWorker::new(Arc::new(runner)).scratch_dir(scratch.join("reproduce"));
        Ok(vec![
            (Arc::new(BuildWorker::new(builder.clone(), scratch.join("build"))), self.build_slots),
            (Arc::new(PatchCheckWorker::new(builder, scratch.join("patch-check"))), 1),
            (Arc::new(reproduce), self.reproduce_slots),
        ])
    }

    /// Checks the settings, opens the database (re-announcing queued
    /// stages), starts the workers and the HTTP server.
    pub async fn start(mut self) -> Result<Gym, GymError> {
        // Refused settings change nothing: no database, no workers.
        if let Some((addr, options)) = &self.http {
            crate::sched::http::check_listen(*addr, options)?;
        }
        let mut workers = self.stock()?;
        workers.append(&mut self.workers);
        let mut stages = self.stages;
        for (w, _) in &workers {
            stages.insert_schema(Arc::clone(w) as Arc<dyn StageSchema>);
        }
        let artifacts = match self.artifacts {
            Some(a) => a,
            None => {
                let path = self.data_dir.join(ARTIFACTS_DIR);
                let url = path.display().to_string();
                ArtifactStore::local(&path).map_err(|source| GymError::Artifacts { url, source })?
            }
        };
        let mut sb = SqliteScheduler::builder()
            .database(self.data_dir.join(DATABASE_FILE))
            .artifacts(artifacts.clone())
            .options(self.scheduler)
            .stages(stages);
        if let Some(q) = self.queue {
            sb = sb.queue(q);
        }
        let sched = sb.build().await?;
        let runtime = if workers.is_empty() {
            None
        } else {
            let rb = workers.into_iter().fold(
                WorkerRuntime::builder(Arc::new(sched.clone())).options(self.runtime).artifacts(artifacts),
                |rb, (w, n)| rb.worker(w, n),
            );
            Some(rb.start().await?)
        };
        let server = match self.http {
            Some((addr, options)) => {
                let api: Arc<dyn Scheduler> = Arc::new(sched.clone());
                let mut server = HttpServer::builder(Arc::clone(&api))
                    .worker_backend(Arc::new(sched.clone()))
                    .artifacts(sched.artifacts().clone())
                    .options(options)
                    .merge(crate::compat::router(api, self.compat));
                if self.dashboard {
                    server = server.merge_public(crate::dashboard::router());
                }
                let served = server.serve(addr).await;
                match served {
                    Ok(s) => Some(s),
                    Err(e) => {
                        // Nothing half-started stays behind.
                        if let Some(r) = runtime {
                            r.shutdown().await;
                        }
                        sched.close();
                        return Err(e.into());
                    }
                }
            }
            None => None,
        };
        Ok(Gym { sched, runtime, server, data_dir: self.data_dir })
    }
}
