//! The [`Scheduler`] trait (what clients call) and [`SchedulerExt`]
//! (conveniences such as [`wait`](SchedulerExt::wait) built on it).
//!
//! The embedded SQLite scheduler and the HTTP client implement the same
//! trait, so code written against `Arc<dyn Scheduler>` runs unchanged
//! against either.

use std::fmt;
use std::time::Duration;

use async_trait::async_trait;
use futures::StreamExt;
use futures::stream::BoxStream;
use kgym_core::{Job, JobId, JobSpec, StageIndex, Tags};

use crate::error::{Error, Result};
use crate::types::{
    JobEvent, JobLogEntry, JobSummary, ListQuery, LogQuery, Page, Stats, StatsQuery, StatusCounts, SystemLogEntry,
    SystemLogQuery, TagMatch, TagQuery, WorkerStatus,
};

/// The events of one job, ending after the terminal status event.
pub type EventStream = BoxStream<'static, Result<JobEvent>>;

/// Submits, inspects and steers jobs.
///
/// Object safe: use it as `Arc<dyn Scheduler>`. Conveniences live in
/// [`SchedulerExt`], implemented for every scheduler.
#[async_trait]
pub trait Scheduler: Send + Sync + fmt::Debug + 'static {
    /// Validates and stores a job, queues its first stage and returns its id.
    /// A bad spec is refused with [`Error::Validation`] listing every
    /// problem. Accepted are the kinds the deployment declares and the
    /// kinds live workers run; tags follow [`crate::tags`].
    async fn submit(&self, spec: JobSpec) -> Result<JobId>;

    /// The job as it is now.
    async fn get(&self, id: JobId) -> Result<Job>;

    /// A page of job summaries. A `limit` outside `1..=MAX_PAGE` or a
    /// `start` past [`MAX_START`](crate::types::MAX_START) is refused with
    /// [`Error::BadRequest`].
    async fn list(&self, query: &ListQuery) -> Result<Page<JobSummary>>;

    /// How many of the jobs `query` selects (ignoring its status and page)
    /// are in each status.
    async fn status_counts(&self, query: &ListQuery) -> Result<StatusCounts>;

    /// Stops a pending, waiting or running job; a running stage's worker
    /// sees its cancellation token fire. Terminal jobs are refused with
    /// [`Error::InvalidState`].
    async fn abort(&self, id: JobId) -> Result<Job>;

    /// Re-runs a finished or aborted job from stage `from` (`None`: the stage
    /// it stopped at, like kGym's `restart_from=-1`). Results and artifacts
    /// of stages `>= from` are removed; the stages before `from` must have
    /// succeeded.
    async fn restart(&self, id: JobId, from: Option<StageIndex>) -> Result<Job>;

    /// Replaces a finished or aborted job's stages with `spec`'s, merges
    /// `spec`'s tags into the job's, and runs it from stage `from` (results
    /// and artifacts of stages `>= from` are removed).
    async fn reset(&self, id: JobId, spec: JobSpec, from: StageIndex) -> Result<Job>;

    /// The job's tags.
    async fn tags(&self, id: JobId) -> Result<Tags>;

    /// Replaces the job's tags (refused with [`Error::Validation`] when they
    /// break the rules of [`crate::tags`]).
    async fn set_tags(&self, id: JobId, tags: Tags) -> Result<Tags>;

    /// Adds or overwrites the given tags, keeping the others (refused with
    /// [`Error::Validation`] when they, or the job's tags after the merge,
    /// break the rules of [`crate::tags`]).
    async fn merge_tags(&self, id: JobId, tags: Tags) -> Result<Tags>;

    /// A page of the jobs carrying tag `query.key` (with value
    /// `query.value`, when given), in job order.
    async fn jobs_with_tag(&self, query: &TagQuery) -> Result<Page<TagMatch>>;

    /// A page of log lines (one job's, or every job's).
    async fn logs(&self, query: &LogQuery) -> Result<Page<JobLogEntry>>;

    /// A page of the system log.
    async fn system_log(&self, query: &SystemLogQuery) -> Result<Page<SystemLogEntry>>;

    /// Streams the job's events: first its current status, then status
    /// changes and log lines as they happen; the stream ends after a
    /// terminal status (`finished`/`aborted`).
    async fn watch(&self, id: JobId) -> Result<EventStream>;

    /// The worker processes that registered, live or not, with the stages
    /// their slots hold.
    async fn workers(&self) -> Result<Vec<WorkerStatus>>;

    /// Statistics of what ended in a window (jobs per hour, stage
    /// durations, frequent headlines).
    async fn stats(&self, query: &StatsQuery) -> Result<Stats>;
}

/// Conveniences over any [`Scheduler`].
#[async_trait]
pub trait SchedulerExt: Scheduler {
    /// Waits until the job is finished or aborted and returns it. Uses
    /// [`Scheduler::watch`] (no polling); a dropped watch is re-opened.
    /// When a server refuses another event stream to this client
    /// ([`Error::TooManyStreams`]), it polls the job every second instead.
    async fn wait(&self, id: JobId) -> Result<Job> {
        let mut failures = 0u32;
        loop {
            match self.watch(id).await {
                Ok(mut events) => {
                    while let Some(ev) = events.next().await {
                        match ev {
                            Ok(ev) if ev.is_terminal() => return self.get(id).await,
                            Ok(_) => failures = 0,
                            Err(e) if e.is_not_found() => return Err(e),
                            Err(e) => {
                                tracing::debug!(job = %id, error = %e, "watch broke; re-opening");
                                break;
                            }
                        }
                    }
                }
                Err(e) if e.is_not_found() => return Err(e),
                Err(Error::TooManyStreams { .. }) => {
                    let job = self.get(id).await?;
                    if job.status.is_terminal() {
                        return Ok(job);
                    }
                    tokio::time::sleep(Duration::from_secs(1)).await;
                    continue;
                }
                Err(e) => {
                    failures += 1;
                    if failures > 20 {
                        return Err(e);
                    }
                    tracing::debug!(job = %id, error = %e, "watch failed; retrying");
                }
            }
            // The stream ended or broke without a terminal event: check, then
            // watch again.
            let job = self.get(id).await?;
            if job.status.is_terminal() {
                return Ok(job);
            }
            tokio::time::sleep(Duration::from_millis(200)).await;
        }
    }

    /// Like [`wait`](SchedulerExt::wait) with a time limit; `Ok(None)` when
    /// the job is still running after `limit`.
    async fn wait_timeout(&self, id: JobId, limit: Duration) -> Result<Option<Job>> {
        match tokio::time::timeout(limit, self.wait(id)).await {
            Ok(job) => job.map(Some),
            Err(_) => Ok(None),
        }
    }

    /// Submits `spec` and waits for the job to end.
    async fn run(&self, spec: JobSpec) -> Result<Job> {
        let id = self.submit(spec).await?;
        self.wait(id).await
    }

    /// Every line of the job's log, oldest first.
    async fn all_logs(&self, id: JobId) -> Result<Vec<JobLogEntry>> {
        let mut query = LogQuery::job(id);
        query.limit = crate::types::MAX_PAGE;
        let mut out = Vec::new();
        loop {
            let page = self.logs(&query).await?;
            out.extend(page.items);
            match page.next {
                Some(next) => (query.start, query.after) = (next, page.cursor),
                None => return Ok(out),
            }
        }
    }
}

impl<T: Scheduler + ?Sized> SchedulerExt for T {}
