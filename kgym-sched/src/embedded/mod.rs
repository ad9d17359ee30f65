//! The embedded scheduler: [`EmbeddedScheduler`] keeps jobs in SQLite,
//! announces ready stages on a [`Queue`], hands stages to workers through
//! [`WorkerBackend`](crate::worker_api::WorkerBackend) and watches their leases. [`Embedded`] wires it with
//! in-process workers and the HTTP API (the gym of one machine).

mod events;
mod gym;
mod worker_side;

use std::collections::HashMap;
use std::path::{Path, PathBuf};
use std::sync::{Arc, RwLock, Weak};
use std::time::Duration;

use async_trait::async_trait;
use futures::StreamExt;
use kgym_core::{ArtifactStore, Job, JobId, JobSpec, StageIndex, StageKind, Tags, Worker};
use tokio::sync::broadcast;
use tokio_util::sync::CancellationToken;

pub use gym::{ARTIFACTS_DIR, DATABASE_FILE, Embedded, EmbeddedBuilder};

use self::events::EventHub;
use crate::error::{Error, Result};
use crate::queue::{Consumer, InProcessQueue, Queue};
use crate::scheduler::{EventStream, Scheduler};
use crate::store::{self, Store, jobs::Effects};
use crate::types::{
    JobEvent, JobLogEntry, JobSummary, ListQuery, LogQuery, MAX_PAGE, Page, SystemLogEntry, SystemLogQuery, TagMatch,
};
use crate::validate::{Accepted, check_spec};

/// How long a lease lasts without a heartbeat, by default.
pub const DEFAULT_LEASE_TTL: Duration = Duration::from_secs(30);
/// How many times a stage is handed out before it fails with
/// `worker-lost`, by default.
pub const DEFAULT_MAX_ATTEMPTS: u32 = 3;

/// A shared consumer of one kind's queue: claimers take turns on it.
type SharedConsumer = Arc<tokio::sync::Mutex<Box<dyn Consumer>>>;

/// The scheduler of one machine: SQLite state, a queue, lease expiry.
/// Cheap to clone (a handle).
#[derive(Clone)]
pub struct EmbeddedScheduler {
    inner: Arc<Inner>,
}

struct Inner {
    store: Store,
    queue: Arc<dyn Queue>,
    artifacts: ArtifactStore,
    lease_ttl: Duration,
    max_attempts: u32,
    accepted: RwLock<Accepted>,
    consumers: std::sync::Mutex<HashMap<StageKind, SharedConsumer>>,
    hub: Arc<EventHub>,
    shutdown: CancellationToken,
}

impl std::fmt::Debug for EmbeddedScheduler {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("EmbeddedScheduler")
            .field("store", &self.inner.store)
            .field("queue", &self.inner.queue)
            .field("lease_ttl", &self.inner.lease_ttl)
            .field("max_attempts", &self.inner.max_attempts)
            .finish_non_exhaustive()
    }
}

/// Configures an [`EmbeddedScheduler`].
#[derive(Debug)]
pub struct SchedulerBuilder {
    database: Option<PathBuf>,
    queue: Option<Arc<dyn Queue>>,
    artifacts: Option<ArtifactStore>,
    lease_ttl: Duration,
    max_attempts: u32,
    kinds: Vec<StageKind>,
}

impl Default for SchedulerBuilder {
    fn default() -> Self {
        Self {
            database: None,
            queue: None,
            artifacts: None,
            lease_ttl: DEFAULT_LEASE_TTL,
            max_attempts: DEFAULT_MAX_ATTEMPTS,
            kinds: Vec::new(),
        }
    }
}

impl SchedulerBuilder {
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

    /// How long a lease lasts without a heartbeat.
    pub fn lease_ttl(mut self, ttl: Duration) -> Self {
        self.lease_ttl = ttl.max(Duration::from_millis(100));
        self
    }

    /// How many hand-outs of a stage before it fails with `worker-lost`
    /// (retryable failures count too).
    pub fn max_attempts(mut self, n: u32) -> Self {
        self.max_attempts = n.max(1);
        self
    }

    /// Accepts stages of `kind` at submit although no worker registered it
    /// yet (kinds served by remote workers).
    pub fn accept_kind(mut self, kind: StageKind) -> Self {
        self.kinds.push(kind);
        self
    }

    /// Opens the database (running migrations), re-announces every queued
    /// stage and starts watching leases. Must be called inside a Tokio
    /// runtime.
    pub async fn build(self) -> Result<EmbeddedScheduler> {
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
        let accepted = Accepted { kinds: self.kinds.into_iter().collect(), validators: HashMap::new() };
        let inner = Arc::new(Inner {
            store,
            queue: self.queue.unwrap_or_else(|| Arc::new(InProcessQueue::new())),
            artifacts: self.artifacts.unwrap_or_else(ArtifactStore::in_memory),
            lease_ttl: self.lease_ttl,
            max_attempts: self.max_attempts,
            accepted: RwLock::new(accepted),
            consumers: std::sync::Mutex::new(HashMap::new()),
            hub: Arc::new(EventHub::default()),
            shutdown: CancellationToken::new(),
        });
        let sched = EmbeddedScheduler { inner };
        // Nothing lost across a restart: queued stages are announced again;
        // stages held by a worker keep their lease until it expires.
        let queued = sched.inner.store.run(|c| store::jobs::queued(c)).await?;
        tracing::info!(stages = queued.len(), "re-announcing queued stages");
        for ann in queued {
            sched.inner.queue.publish(&ann).await?;
        }
        tokio::spawn(reap_leases(Arc::downgrade(&sched.inner), sched.inner.shutdown.clone()));
        Ok(sched)
    }
}

/// Expires leases until the scheduler is closed or dropped.
async fn reap_leases(inner: Weak<Inner>, shutdown: CancellationToken) {
    let tick = {
        let Some(i) = inner.upgrade() else { return };
        (i.lease_ttl / 4).clamp(Duration::from_millis(25), Duration::from_secs(1))
    };
    loop {
        tokio::select! {
            _ = shutdown.cancelled() => return,
            _ = tokio::time::sleep(tick) => {}
        }
        let Some(inner) = inner.upgrade() else { return };
        let sched = EmbeddedScheduler { inner };
        let max = sched.inner.max_attempts;
        match sched.transition_many(move |c| store::jobs::expire_leases(c, max, store::now_us())).await {
            Ok(n) if n > 0 => tracing::info!(stages = n, "expired leases"),
            Ok(_) => {}
            Err(e) => tracing::warn!(error = %e, "failed to expire leases"),
        }
    }
}

impl EmbeddedScheduler {
    /// Configures a scheduler.
    pub fn builder() -> SchedulerBuilder {
        SchedulerBuilder::default()
    }

    /// A scheduler with its state in memory (tests, throw-away runs).
    pub async fn in_memory() -> Result<Self> {
        Self::builder().build().await
    }

    /// A scheduler with its state in the SQLite file `path`.
    pub async fn open(path: &Path) -> Result<Self> {
        Self::builder().database(path).build().await
    }

    /// The artifact store restart cleans up.
    pub fn artifacts(&self) -> &ArtifactStore {
        &self.inner.artifacts
    }

    /// The lease duration.
    pub fn lease_ttl(&self) -> Duration {
        self.inner.lease_ttl
    }

    /// Accepts stages of `kind` at submit (kinds served by remote workers).
    pub fn accept_kind(&self, kind: StageKind) {
        self.inner.accepted.write().unwrap_or_else(|p| p.into_inner()).kinds.insert(kind);
    }

    /// Accepts `worker`'s kind and checks its stage arguments at submit with
    /// [`Worker::validate`] (in-process workers).
    pub fn add_validator(&self, worker: Arc<dyn Worker>) {
        let mut acc = self.inner.accepted.write().unwrap_or_else(|p| p.into_inner());
        acc.kinds.insert(worker.kind());
        acc.validators.insert(worker.kind(), worker);
    }

    /// The kinds accepted at submit.
    pub fn accepted_kinds(&self) -> Vec<StageKind> {
        self.inner.accepted.read().map(|a| a.kinds.iter().cloned().collect()).unwrap_or_default()
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
            self.inner.queue.publish(&ann).await?;
        }
        Ok(value)
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
            self.inner.queue.publish(&ann).await?;
        }
        Ok(n)
    }

    async fn read<T: Send + 'static>(
        &self,
        f: impl FnOnce(&rusqlite::Connection) -> Result<T> + Send + 'static,
    ) -> Result<T> {
        self.inner.store.run(move |c| f(c)).await
    }

    fn check(&self, spec: &JobSpec) -> Result<()> {
        let problems = {
            let acc = self.inner.accepted.read().unwrap_or_else(|p| p.into_inner());
            check_spec(spec, &acc)
        };
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
            self.check(s)?;
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
        self.get(id).await
    }

    pub(crate) fn consumer(&self, kind: &StageKind) -> Option<SharedConsumer> {
        self.inner.consumers.lock().ok()?.get(kind).cloned()
    }

    pub(crate) async fn consumer_or_open(&self, kind: &StageKind) -> Result<SharedConsumer> {
        if let Some(c) = self.consumer(kind) {
            return Ok(c);
        }
        let opened = self.inner.queue.consume(kind).await?;
        let mut map = self.inner.consumers.lock().unwrap_or_else(|p| p.into_inner());
        Ok(Arc::clone(map.entry(kind.clone()).or_insert_with(|| Arc::new(tokio::sync::Mutex::new(opened)))))
    }
}

/// Sends a transition's events to watchers; returns its announcement.
fn emit(hub: &EventHub, effects: Effects) -> Option<crate::queue::Announcement> {
    for log in effects.logs {
        hub.emit(&JobEvent::Log(log));
    }
    if let Some(s) = &effects.status {
        hub.emit(s);
    }
    effects.announce
}

fn check_page(limit: u32) -> Result<()> {
    if limit == 0 || limit > MAX_PAGE {
        return Err(Error::bad_request(format!("limit must be 1..={MAX_PAGE}, got {limit}")));
    }
    Ok(())
}

#[async_trait]
impl Scheduler for EmbeddedScheduler {
    async fn submit(&self, spec: JobSpec) -> Result<JobId> {
        if self.inner.shutdown.is_cancelled() {
            return Err(Error::ShuttingDown);
        }
        self.check(&spec)?;
        self.transition(move |c| store::jobs::insert_job(c, &spec, store::now_us())).await
    }

    async fn get(&self, id: JobId) -> Result<Job> {
        self.read(move |c| store::jobs::load_job(c, id)).await
    }

    async fn list(&self, query: &ListQuery) -> Result<Page<JobSummary>> {
        check_page(query.limit)?;
        let q = query.clone();
        self.read(move |c| store::listing::list(c, &q)).await
    }

    async fn abort(&self, id: JobId) -> Result<Job> {
        self.transition(move |c| Ok(((), store::jobs::abort(c, id, store::now_us())?))).await?;
        self.get(id).await
    }

    async fn restart(&self, id: JobId, from: Option<StageIndex>) -> Result<Job> {
        self.rerun(id, "restart", None, from).await
    }

    async fn reset(&self, id: JobId, spec: JobSpec, from: StageIndex) -> Result<Job> {
        self.rerun(id, "reset", Some(spec), Some(from)).await
    }

    async fn tags(&self, id: JobId) -> Result<Tags> {
        self.read(move |c| store::logs::tags(c, id)).await
    }

    async fn set_tags(&self, id: JobId, tags: Tags) -> Result<Tags> {
        self.inner.store.run(move |c| store::logs::update_tags(c, id, &tags, true, store::now_us())).await
    }

    async fn merge_tags(&self, id: JobId, tags: Tags) -> Result<Tags> {
        self.inner.store.run(move |c| store::logs::update_tags(c, id, &tags, false, store::now_us())).await
    }

    async fn jobs_with_tag(&self, key: &str, value: Option<&str>) -> Result<Vec<TagMatch>> {
        let (key, value) = (key.to_owned(), value.map(str::to_owned));
        self.read(move |c| store::logs::jobs_with_tag(c, &key, value.as_deref())).await
    }

    async fn logs(&self, query: &LogQuery) -> Result<Page<JobLogEntry>> {
        check_page(query.limit)?;
        let q = query.clone();
        self.read(move |c| store::logs::query_logs(c, &q)).await
    }

    async fn system_log(&self, query: &SystemLogQuery) -> Result<Page<SystemLogEntry>> {
        check_page(query.limit)?;
        let q = query.clone();
        self.read(move |c| store::logs::query_sys_log(c, &q)).await
    }

    async fn watch(&self, id: JobId) -> Result<EventStream> {
        // Subscribe before reading the status, so no event falls between.
        let rx = self.inner.hub.subscribe(id);
        let job = self.get(id).await?;
        let first = JobEvent::Status {
            job: id,
            status: job.status,
            stage: job.current_stage,
            worker: job.worker.clone(),
            time: job.modified,
        };
        let this = self.clone();
        let state = WatchState { rx: Some(rx), sched: this, id, done: false, first: Some(first) };
        Ok(futures::stream::unfold(state, next_event).boxed())
    }
}

struct WatchState {
    rx: Option<broadcast::Receiver<JobEvent>>,
    sched: EmbeddedScheduler,
    id: JobId,
    done: bool,
    first: Option<JobEvent>,
}

impl Drop for WatchState {
    fn drop(&mut self) {
        drop(self.rx.take());
        self.sched.inner.hub.prune(self.id);
    }
}

async fn next_event(mut st: WatchState) -> Option<(Result<JobEvent>, WatchState)> {
    if st.done {
        return None;
    }
    if let Some(first) = st.first.take() {
        st.done = first.is_terminal();
        return Some((Ok(first), st));
    }
    let rx = st.rx.as_mut()?;
    let ev = match rx.recv().await {
        Ok(ev) => Ok(ev),
        Err(broadcast::error::RecvError::Lagged(n)) => {
            // Missed events: report the status as it is now.
            tracing::debug!(job = %st.id, missed = n, "watcher lagged");
            st.sched.get(st.id).await.map(|job| JobEvent::Status {
                job: st.id,
                status: job.status,
                stage: job.current_stage,
                worker: job.worker,
                time: job.modified,
            })
        }
        Err(broadcast::error::RecvError::Closed) => return None,
    };
    st.done = match &ev {
        Ok(ev) => ev.is_terminal(),
        Err(_) => true,
    };
    Some((ev, st))
}

#[cfg(test)]
mod tests;
