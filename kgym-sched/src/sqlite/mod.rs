//! [`SqliteScheduler`]: the scheduler of one machine. Jobs live in SQLite
//! (WAL, embedded migrations, one transaction per transition); ready stages
//! are announced on a [`Queue`]; workers claim them through
//! [`WorkerBackend`](crate::worker_api::WorkerBackend) with a
//! compare-and-set and hold a lease renewed by heartbeats; an expired
//! lease puts the stage back on its queue.

mod api;
mod events;
mod worker_side;

use std::collections::{BTreeSet, HashMap};
use std::path::{Path, PathBuf};
use std::sync::{Arc, RwLock, Weak};
use std::time::Duration;

use kgym_core::{ArtifactStore, Job, JobId, JobSpec, StageIndex, StageKind, StageSchema};
use tokio_util::sync::CancellationToken;

use self::events::EventHub;
use crate::error::{Error, Result};
use crate::queue::{Announcement, Consumer, InProcessQueue, Queue, Route, SignalAction, WorkerSignal};
use crate::registry::StageRegistry;
use crate::store::{self, Store, jobs::Effects};

/// How long a lease lasts without a heartbeat, by default.
pub const DEFAULT_LEASE_TTL: Duration = Duration::from_secs(30);
/// How many times a stage is handed out before it fails with
/// `worker-lost`, by default.
pub const DEFAULT_MAX_ATTEMPTS: u32 = 3;

/// How a scheduler treats leases: one value passed whole from the facade's
/// `GymBuilder` down to the scheduler.
#[derive(Debug, Clone, PartialEq, Eq)]
#[non_exhaustive]
pub struct SchedulerOptions {
    /// How long a lease lasts without a heartbeat (at least 100 ms).
    pub lease_ttl: Duration,
    /// Hand-outs of a stage before it fails with `worker-lost` (retryable
    /// failures count too; at least 1).
    pub max_attempts: u32,
    /// How long a worker process counts as live after its last claim or
    /// heartbeat (its claims come at least every minute while idle).
    pub worker_ttl: Duration,
}

/// How long a worker counts as live after its last sign of life, by default.
pub const DEFAULT_WORKER_TTL: Duration = Duration::from_secs(90);

impl Default for SchedulerOptions {
    fn default() -> Self {
        Self { lease_ttl: DEFAULT_LEASE_TTL, max_attempts: DEFAULT_MAX_ATTEMPTS, worker_ttl: DEFAULT_WORKER_TTL }
    }
}

impl SchedulerOptions {
    /// Sets [`lease_ttl`](Self::lease_ttl).
    pub fn lease_ttl(mut self, ttl: Duration) -> Self {
        self.lease_ttl = ttl;
        self
    }

    /// Sets [`max_attempts`](Self::max_attempts).
    pub fn max_attempts(mut self, n: u32) -> Self {
        self.max_attempts = n;
        self
    }

    /// Sets [`worker_ttl`](Self::worker_ttl).
    pub fn worker_ttl(mut self, ttl: Duration) -> Self {
        self.worker_ttl = ttl;
        self
    }

    fn clamped(self) -> Self {
        Self {
            lease_ttl: self.lease_ttl.max(Duration::from_millis(100)),
            max_attempts: self.max_attempts.max(1),
            worker_ttl: self.worker_ttl.max(Duration::from_secs(1)),
        }
    }
}

/// A shared consumer of one route's queue: claimers take turns on it.
type SharedConsumer = Arc<tokio::sync::Mutex<Box<dyn Consumer>>>;

/// The scheduler of one machine: SQLite state, a queue, lease expiry.
/// Cheap to clone (a handle).
#[derive(Clone)]
pub struct SqliteScheduler {
    inner: Arc<Inner>,
}

struct Inner {
    store: Store,
    queue: Arc<dyn Queue>,
    artifacts: ArtifactStore,
    options: SchedulerOptions,
    stages: RwLock<StageRegistry>,
    consumers: std::sync::Mutex<HashMap<Route, SharedConsumer>>,
    /// Announcements of committed transitions the queue refused (see
    /// `publish_or_keep`).
    unpublished: std::sync::Mutex<Vec<Announcement>>,
    hub: Arc<EventHub>,
    shutdown: CancellationToken,
}

impl std::fmt::Debug for SqliteScheduler {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("SqliteScheduler")
            .field("store", &self.inner.store)
            .field("queue", &self.inner.queue)
            .field("options", &self.inner.options)
            .finish_non_exhaustive()
    }
}

/// Configures a [`SqliteScheduler`].
#[derive(Debug, Default)]
pub struct SqliteSchedulerBuilder {
    database: Option<PathBuf>,
    queue: Option<Arc<dyn Queue>>,
    artifacts: Option<ArtifactStore>,
    options: SchedulerOptions,
    stages: StageRegistry,
}

impl SqliteSchedulerBuilder {
    /// The SQLite file (created if missing). Without it, the state lives in
    /// memory and dies with the process.
    pub fn database(mut self, path: impl Into<PathBuf>) -> Self {
        self.database = Some(path.into());
        self
    }

    /// The announcement transport (default: an [`InProcessQueue`]).
    pub fn queue(mut self, queue: Arc<dyn Queue>) -> Self {
        self.queue = Some(queue);
        self
    }

    /// Where artifacts live (restart deletes the artifacts of re-run
    /// stages). Default: in memory.
    pub fn artifacts(mut self, artifacts: ArtifactStore) -> Self {
        self.artifacts = Some(artifacts);
        self
    }

    /// Lease settings.
    pub fn options(mut self, options: SchedulerOptions) -> Self {
        self.options = options;
        self
    }

    /// The kinds accepted at submit, with their schemas (default: none).
    pub fn stages(mut self, stages: StageRegistry) -> Self {
        self.stages = stages;
        self
    }

    /// Opens the database (running migrations), re-announces every queued
    /// stage and starts watching leases. Must be called inside a Tokio
    /// runtime.
    pub async fn build(self) -> Result<SqliteScheduler> {
        let store = match &self.database {
            Some(path) => {
                if let Some(dir) = path.parent().filter(|d| !d.as_os_str().is_empty()) {
                    std::fs::create_dir_all(dir).map_err(|source| Error::Io { path: dir.to_owned(), source })?;
                }
                let path = path.clone();
                tokio::task::spawn_blocking(move || Store::open(&path))
                    .await
                    .map_err(|source| Error::Task { what: "opening the job database", source })??
            }
            None => Store::in_memory()?,
        };
        let inner = Arc::new(Inner {
            store,
            queue: self.queue.unwrap_or_else(|| Arc::new(InProcessQueue::new())),
            artifacts: self.artifacts.unwrap_or_else(ArtifactStore::in_memory),
            options: self.options.clamped(),
            stages: RwLock::new(self.stages),
            consumers: std::sync::Mutex::new(HashMap::new()),
            unpublished: std::sync::Mutex::new(Vec::new()),
            hub: Arc::new(EventHub::default()),
            shutdown: CancellationToken::new(),
        });
        let sched = SqliteScheduler { inner };
        // Nothing lost across a restart: queued stages are announced again;
        // stages held by a worker keep their lease until it expires.
        let queued = sched.inner.store.run(|c| store::jobs::queued(c)).await?;
        tracing::info!(stages = queued.len(), "re-announcing queued stages");
        for ann in queued {
            sched.publish_or_keep(ann).await;
        }
        tokio::spawn(reap_leases(Arc::downgrade(&sched.inner), sched.inner.shutdown.clone()));
        Ok(sched)
    }
}

/// Expires leases until the scheduler is closed or dropped.
async fn reap_leases(inner: Weak<Inner>, shutdown: CancellationToken) {
    let tick = {
        let Some(i) = inner.upgrade() else { return };
        (i.options.lease_ttl / 4).clamp(Duration::from_millis(25), Duration::from_secs(1))
    };
    loop {
        tokio::select! {
            _ = shutdown.cancelled() => return,
            _ = tokio::time::sleep(tick) => {}
        }
        let Some(inner) = inner.upgrade() else { return };
        let sched = SqliteScheduler { inner };
        sched.publish_kept().await;
        let max = sched.inner.options.max_attempts;
        match sched.transition_many(move |c| store::jobs::expire_leases(c, max, store::now_us())).await {
            Ok(n) if n > 0 => tracing::info!(stages = n, "expired leases"),
            Ok(_) => {}
            Err(e) => tracing::warn!(error = %e, "failed to expire leases"),
        }
    }
}

impl SqliteScheduler {
    /// Configures a scheduler.
    pub fn builder() -> SqliteSchedulerBuilder {
        SqliteSchedulerBuilder::default()
    }

    /// A scheduler with its state in memory accepting `stages` (tests,
    /// throw-away runs).
    pub async fn in_memory(stages: StageRegistry) -> Result<Self> {
        Self::builder().stages(stages).build().await
    }

    /// A scheduler with its state in the SQLite file `path`, accepting
    /// `stages`.
    pub async fn open(path: &Path, stages: StageRegistry) -> Result<Self> {
        Self::builder().database(path).stages(stages).build().await
    }

    /// The artifact store restart cleans up.
    pub fn artifacts(&self) -> &ArtifactStore {
        &self.inner.artifacts
    }

    /// The lease settings.
    pub fn options(&self) -> &SchedulerOptions {
        &self.inner.options
    }

    /// Declares stages of `schema`'s kind: accepted at submit, checked by
    /// it, whether a worker of the kind is live or not.
    pub fn accept(&self, schema: Arc<dyn StageSchema>) {
        self.inner.stages.write().unwrap_or_else(|p| p.into_inner()).insert_schema(schema);
    }

    /// Declares stages of `kind`: accepted at submit without checking their
    /// argument, whether a worker of the kind is live or not.
    pub fn accept_kind(&self, kind: StageKind) {
        self.inner.stages.write().unwrap_or_else(|p| p.into_inner()).insert_kind(kind);
    }

    /// The declared kinds (accepted at submit beside the kinds of live
    /// workers, [`live_kinds`](Self::live_kinds)).
    pub fn accepted_kinds(&self) -> Vec<StageKind> {
        self.inner.stages.read().map(|r| r.kinds().cloned().collect()).unwrap_or_default()
    }

    /// Stops watching leases. Jobs stay in the database; a scheduler opened
    /// on it later picks them up.
    pub fn close(&self) {
        self.inner.shutdown.cancel();
    }

    /// Runs a transition on the database, emits its events in commit order
    /// and publishes its announcement.
    async fn transition<T: Send + 'static>(
        &self,
        f: impl FnOnce(&mut rusqlite::Connection) -> Result<(T, Effects)> + Send + 'static,
    ) -> Result<T> {
        let hub = Arc::clone(&self.inner.hub);
        let (value, announce) = self
            .inner
            .store
            .run(move |c| {
                let (value, effects) = f(c)?;
                Ok((value, emit(&hub, effects)))
            })
            .await?;
        if let Some(ann) = announce {
            self.publish_or_keep(ann).await;
        }
        Ok(value)
    }

    /// Publishes an announcement of a committed transition. When the
    /// transport fails (a broker restarting), the transition stands: the
    /// announcement is kept and published again at the lease reaper's next
    /// tick, until the transport takes it.
    async fn publish_or_keep(&self, ann: Announcement) {
        if let Err(e) = self.inner.queue.publish(&ann).await {
            tracing::warn!(job = %ann.job, stage = %ann.stage, error = %e, "announcement kept to publish again");
            self.inner.unpublished.lock().unwrap_or_else(|p| p.into_inner()).push(ann);
        }
    }

    /// Sends `signal` through the queue's transport (best effort: the
    /// holder's heartbeat learns the same a little later).
    pub(crate) async fn signal(&self, signal: WorkerSignal) {
        if let Err(e) = self.inner.queue.signal(&signal).await {
            tracing::info!(host = %signal.host, job = %signal.lease.job, error = %e, "worker not signalled; its heartbeat will tell");
        }
    }

    /// Asks the worker running job `id`'s stage to hand it back (it goes
    /// back on its queue, to another worker, without using an attempt):
    /// for draining a worker. Needs a transport that reaches workers (the
    /// AMQP queue); `false` when the job has no running stage.
    pub async fn hand_back(&self, id: JobId) -> Result<bool> {
        let Some((host, lease)) = self.read(move |c| store::jobs::holder(c, id)).await? else { return Ok(false) };
        self.signal(WorkerSignal { host, lease, action: SignalAction::HandBack }).await;
        Ok(true)
    }

    /// Publishes the announcements kept by [`publish_or_keep`](Self::publish_or_keep).
    async fn publish_kept(&self) {
        let kept = std::mem::take(&mut *self.inner.unpublished.lock().unwrap_or_else(|p| p.into_inner()));
        if !kept.is_empty() {
            tracing::info!(announcements = kept.len(), "publishing kept announcements");
        }
        for ann in kept {
            self.publish_or_keep(ann).await;
        }
    }

    /// Like [`transition`](Self::transition) for several transitions at once;
    /// returns how many there were.
    async fn transition_many(
        &self,
        f: impl FnOnce(&mut rusqlite::Connection) -> Result<Vec<Effects>> + Send + 'static,
    ) -> Result<usize> {
        let hub = Arc::clone(&self.inner.hub);
        let announces =
            self.inner.store.run(move |c| Ok(f(c)?.into_iter().map(|e| emit(&hub, e)).collect::<Vec<_>>())).await?;
        let n = announces.len();
        for ann in announces.into_iter().flatten() {
            self.publish_or_keep(ann).await;
        }
        Ok(n)
    }

    async fn read<T: Send + 'static>(
        &self,
        f: impl FnOnce(&rusqlite::Connection) -> Result<T> + Send + 'static,
    ) -> Result<T> {
        self.inner.store.run(move |c| f(c)).await
    }

    /// When a worker last seen before this time (µs) counts as gone.
    fn live_after(&self) -> i64 {
        let ttl = i64::try_from(self.inner.options.worker_ttl.as_micros()).unwrap_or(i64::MAX);
        store::now_us().saturating_sub(ttl)
    }

    /// The kinds live workers run now.
    pub async fn live_kinds(&self) -> Result<BTreeSet<StageKind>> {
        let live_after = self.live_after();
        self.read(move |c| store::workers::live_kinds(c, live_after)).await
    }

    /// Checks a spec against the declared kinds and those of live workers.
    async fn check(&self, spec: &JobSpec) -> Result<()> {
        let live = self.live_kinds().await?;
        let problems = self.inner.stages.read().unwrap_or_else(|p| p.into_inner()).check_served(spec, &live);
        if problems.is_empty() { Ok(()) } else { Err(Error::Validation { problems }) }
    }

    async fn rerun(
        &self,
        id: JobId,
        action: &'static str,
        spec: Option<JobSpec>,
        from: Option<StageIndex>,
    ) -> Result<Job> {
        if let Some(s) = &spec {
            self.check(s).await?;
        }
        let replace = spec.clone();
        let from = self
            .read(move |c| {
                let from = match from {
                    Some(f) => f,
                    None => store::jobs::cursor(c, id)?,
                };
                store::jobs::check_rerun(c, id, action, replace.as_ref().map(|s| s.stages.as_slice()), from)?;
                Ok(from)
            })
            .await?;
        // Artifacts first: if deleting fails, the job is left as it was.
        self.inner.artifacts.delete_stages_from(id, from).await.map_err(|source| Error::Artifacts {
            id,
            from,
            source,
        })?;
        self.transition(move |c| Ok(((), store::jobs::rerun(c, id, action, spec.as_ref(), from, store::now_us())?)))
            .await?;
        crate::Scheduler::get(self, id).await
    }

    fn consumer(&self, route: &Route) -> Option<SharedConsumer> {
        self.inner.consumers.lock().ok()?.get(route).cloned()
    }

    async fn consumer_or_open(&self, route: &Route) -> Result<SharedConsumer> {
        if let Some(c) = self.consumer(route) {
            return Ok(c);
        }
        let opened = self.inner.queue.consume(route).await?;
        let mut map = self.inner.consumers.lock().unwrap_or_else(|p| p.into_inner());
        Ok(Arc::clone(map.entry(route.clone()).or_insert_with(|| Arc::new(tokio::sync::Mutex::new(opened)))))
    }
}

/// Sends a transition's events to watchers; returns its announcement.
fn emit(hub: &EventHub, effects: Effects) -> Option<Announcement> {
    for log in effects.logs {
        hub.emit(&crate::types::JobEvent::Log(log));
    }
    if let Some(s) = &effects.status {
        hub.emit(s);
    }
    effects.announce
}

#[cfg(test)]
mod tests;
