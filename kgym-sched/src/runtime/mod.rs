//! The worker runtime: runs any [`kgym_core::Worker`] with N concurrent
//! slots against a [`WorkerBackend`] (the embedded scheduler in-process, or
//! [`crate::http::HttpWorkerBackend`] from another process).
//!
//! Each slot claims a stage, builds its [`kgym_core::StageContext`]
//! (artifact store, log sink streaming into the job log, cancellation
//! token), keeps the lease alive with heartbeats, and reports the result.
//! An abort fires the stage's cancellation token; shutting down (SIGTERM,
//! ctrl-c, [`RuntimeHandle::shutdown`]) cancels running stages and hands
//! them back to the scheduler instead of losing them.

mod logs;
mod stage;

use std::collections::BTreeMap;
use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::Duration;

use kgym_core::{ArtifactStore, StageKind, Worker};
use tokio::task::JoinSet;
use tokio_util::sync::CancellationToken;

use crate::error::{Error, Result};
use crate::worker_api::{ClaimRequest, WorkerBackend, WorkerInfo};

/// Default time between heartbeats (capped at a third of the lease).
pub const DEFAULT_HEARTBEAT: Duration = Duration::from_secs(1);
/// Default time a claim waits for a stage before asking again.
pub const DEFAULT_CLAIM_WAIT: Duration = Duration::from_secs(10);
/// Default time a cancelled stage gets to stop before it is abandoned.
pub const DEFAULT_GRACE: Duration = Duration::from_secs(30);
/// How long a slot stopping mid-claim still waits for the claim's answer:
/// the scheduler may have handed it a stage already (its answer on the
/// way), which is then handed back instead of staying leased to a worker
/// that is gone until the lease expires.
const CLAIM_IN_FLIGHT: Duration = Duration::from_millis(500);

/// The machine's host name (kGym's `worker-hostname`).
pub fn hostname() -> String {
    nix::unistd::gethostname()
        .ok()
        .and_then(|h| h.into_string().ok())
        .filter(|h| !h.is_empty())
        .unwrap_or_else(|| "localhost".to_owned())
}

/// How a worker runtime behaves: one value passed whole from the facade's
/// `GymBuilder` (or a stock service) down to the runtime.
#[derive(Debug, Clone, PartialEq, Eq)]
#[non_exhaustive]
pub struct RuntimeOptions {
    /// The host name workers are named after (default: the machine's).
    pub host: String,
    /// Time between heartbeats (capped at a third of the lease; at least
    /// 10 ms). Also how fast an abort reaches a running stage.
    pub heartbeat: Duration,
    /// How long one claim waits for a stage (a long poll over HTTP).
    pub claim_wait: Duration,
    /// How long a cancelled stage gets to stop (kill its subprocesses)
    /// before it is abandoned.
    pub grace: Duration,
    /// Labels the workers declare (`pool=big`, `arch=arm64`, ...).
    pub labels: BTreeMap<String, String>,
}

impl Default for RuntimeOptions {
    fn default() -> Self {
        Self {
            host: hostname(),
            heartbeat: DEFAULT_HEARTBEAT,
            claim_wait: DEFAULT_CLAIM_WAIT,
            grace: DEFAULT_GRACE,
            labels: BTreeMap::new(),
        }
    }
}

impl RuntimeOptions {
    /// Sets [`host`](Self::host).
    pub fn host(mut self, host: impl Into<String>) -> Self {
        self.host = host.into();
        self
    }

    /// Sets [`heartbeat`](Self::heartbeat).
    pub fn heartbeat(mut self, every: Duration) -> Self {
        self.heartbeat = every;
        self
    }

    /// Sets [`claim_wait`](Self::claim_wait).
    pub fn claim_wait(mut self, wait: Duration) -> Self {
        self.claim_wait = wait;
        self
    }

    /// Sets [`grace`](Self::grace).
    pub fn grace(mut self, grace: Duration) -> Self {
        self.grace = grace;
        self
    }

    /// Adds a label.
    pub fn label(mut self, key: impl Into<String>, value: impl Into<String>) -> Self {
        self.labels.insert(key.into(), value.into());
        self
    }
}

/// Configures a [`WorkerRuntime`].
#[derive(Debug)]
pub struct RuntimeBuilder {
    backend: Arc<dyn WorkerBackend>,
    options: RuntimeOptions,
    artifacts: ArtifactStore,
    workers: Vec<(Arc<dyn Worker>, u32)>,
}

impl RuntimeBuilder {
    /// Host name, heartbeat, claim wait and grace.
    pub fn options(mut self, options: RuntimeOptions) -> Self {
        self.options = options;
        self
    }

    /// The artifact store handed to every stage (default: in memory).
    pub fn artifacts(mut self, artifacts: ArtifactStore) -> Self {
        self.artifacts = artifacts;
        self
    }

    /// Runs `worker` in `slots` concurrent slots.
    pub fn worker(mut self, worker: Arc<dyn Worker>, slots: u32) -> Self {
        self.workers.push((worker, slots.max(1)));
        self
    }

    /// Registers with the backend and starts every slot.
    pub async fn start(self) -> Result<RuntimeHandle> {
        let RuntimeOptions { host, heartbeat, claim_wait, grace, labels } = self.options;
        let heartbeat = heartbeat.max(Duration::from_millis(10));
        let claim_wait = claim_wait.max(Duration::from_millis(10));
        let kinds = self.workers.iter().map(|(w, n)| (w.kind(), *n)).collect();
        let info = WorkerInfo { host: host.clone(), kinds, labels };
        self.backend.register(&info).await?;
        let shutdown = CancellationToken::new();
        let stats = Arc::new(Stats::default());
        let mut tasks = JoinSet::new();
        for (worker, slots) in &self.workers {
            for slot in 0..*slots {
                let s = Slot {
                    backend: Arc::clone(&self.backend),
                    worker: Arc::clone(worker),
                    kind: worker.kind(),
                    name: format!("{host}/{}-{slot}", worker.kind()),
                    host: host.clone(),
                    artifacts: self.artifacts.clone(),
                    heartbeat,
                    claim_wait,
                    grace,
                    shutdown: shutdown.clone(),
                    stats: Arc::clone(&stats),
                };
                tasks.spawn(s.run());
            }
        }
        tracing::info!(host = %host, slots = tasks.len(), "worker runtime started");
        Ok(RuntimeHandle { shutdown, tasks, stats, backend: self.backend, host })
    }
}

/// Entry point: `WorkerRuntime::builder(backend)...start()`.
#[derive(Debug)]
pub struct WorkerRuntime;

impl WorkerRuntime {
    /// A runtime claiming from `backend`.
    pub fn builder(backend: Arc<dyn WorkerBackend>) -> RuntimeBuilder {
        RuntimeBuilder {
            backend,
            options: RuntimeOptions::default(),
            artifacts: ArtifactStore::in_memory(),
            workers: Vec::new(),
        }
    }
}

/// Counters of a running runtime.
#[derive(Debug, Default)]
pub(crate) struct Stats {
    claimed: AtomicU64,
    reported: AtomicU64,
    yielded: AtomicU64,
}

/// A started runtime.
#[derive(Debug)]
pub struct RuntimeHandle {
    shutdown: CancellationToken,
    tasks: JoinSet<()>,
    stats: Arc<Stats>,
    backend: Arc<dyn WorkerBackend>,
    host: String,
}

impl RuntimeHandle {
    /// Stages claimed so far.
    pub fn claimed(&self) -> u64 {
        self.stats.claimed.load(Ordering::Relaxed)
    }

    /// Results reported so far.
    pub fn reported(&self) -> u64 {
        self.stats.reported.load(Ordering::Relaxed)
    }

    /// Stages handed back so far.
    pub fn yielded(&self) -> u64 {
        self.stats.yielded.load(Ordering::Relaxed)
    }

    /// A token that fires when the runtime starts shutting down.
    pub fn shutdown_token(&self) -> CancellationToken {
        self.shutdown.clone()
    }

    /// Stops claiming, cancels running stages and hands them back, then
    /// waits for every slot to stop.
    pub async fn shutdown(mut self) {
        self.shutdown.cancel();
        while self.tasks.join_next().await.is_some() {}
        if let Err(e) = self.backend.deregister(&self.host).await {
            tracing::warn!(host = %self.host, error = %e, "failed to deregister; the scheduler will see the worker go quiet");
        }
        tracing::info!(host = %self.host, "worker runtime stopped");
    }

    /// Runs until SIGTERM or ctrl-c, then shuts down (running stages are
    /// handed back).
    pub async fn run_until_signal(self) -> Result<()> {
        wait_for_signal().await?;
        tracing::info!("signal received; handing running stages back");
        self.shutdown().await;
        Ok(())
    }
}

/// Waits for SIGTERM, SIGHUP or SIGINT (ctrl-c): each means "stop
/// gracefully".
pub async fn wait_for_signal() -> Result<()> {
    use tokio::signal::unix::{SignalKind, signal};
    let io = |source| Error::Io { path: "signal handler".into(), source };
    let mut term = signal(SignalKind::terminate()).map_err(io)?;
    let mut hup = signal(SignalKind::hangup()).map_err(io)?;
    let mut int = signal(SignalKind::interrupt()).map_err(io)?;
    tokio::select! {
        _ = term.recv() => {}
        _ = hup.recv() => {}
        _ = int.recv() => {}
    }
    Ok(())
}

/// One slot: claims and runs stages of one kind, one at a time.
#[derive(Debug)]
struct Slot {
    backend: Arc<dyn WorkerBackend>,
    worker: Arc<dyn Worker>,
    kind: StageKind,
    name: String,
    host: String,
    artifacts: ArtifactStore,
    heartbeat: Duration,
    claim_wait: Duration,
    grace: Duration,
    shutdown: CancellationToken,
    stats: Arc<Stats>,
}

impl Slot {
    async fn run(self) {
        let req = ClaimRequest {
            kind: self.kind.clone(),
            worker: self.name.clone(),
            host: self.host.clone(),
            wait: self.claim_wait,
        };
        let mut backoff = Duration::from_millis(100);
        while !self.shutdown.is_cancelled() {
            let claiming = self.backend.claim(&req);
            tokio::pin!(claiming);
            let claim = tokio::select! {
                biased;
                _ = self.shutdown.cancelled() => {
                    if let Ok(Ok(Some(late))) = tokio::time::timeout(CLAIM_IN_FLIGHT, &mut claiming).await {
                        self.hand_back_late(&late).await;
                    }
                    break;
                }
                c = &mut claiming => c,
            };
            match claim {
                Ok(Some(claim)) => {
                    backoff = Duration::from_millis(100);
                    self.stats.claimed.fetch_add(1, Ordering::Relaxed);
                    stage::run(&self, claim).await;
                }
                Ok(None) => backoff = Duration::from_millis(100),
                Err(Error::ShuttingDown) => break,
                Err(e) => {
                    tracing::warn!(slot = %self.name, error = %e, "claim failed; retrying");
                    tokio::select! {
                        _ = self.shutdown.cancelled() => break,
                        _ = tokio::time::sleep(backoff) => {}
                    }
                    backoff = (backoff * 2).min(Duration::from_secs(5));
                }
            }
        }
    }

    /// A stage claimed as the slot stopped: back to the queue at once.
    async fn hand_back_late(&self, claim: &crate::worker_api::Claim) {
        let lease = &claim.lease;
        match self.backend.yield_stage(lease).await {
            Ok(()) => {
                self.stats.yielded.fetch_add(1, Ordering::Relaxed);
                tracing::info!(slot = %self.name, job = %lease.job, stage = %lease.stage, "stopping: handed back a stage claimed as the slot stopped");
            }
            Err(e) => {
                tracing::warn!(slot = %self.name, job = %lease.job, error = %e, "failed to hand back a stage claimed while stopping; its lease will expire")
            }
        }
    }
}
