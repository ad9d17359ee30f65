//! The [`Scheduler`] trait on SQLite: submit, read, steer and watch jobs.

use async_trait::async_trait;
use futures::StreamExt;
use kgym_core::{Job, JobId, JobSpec, StageIndex, Tags};
use tokio::sync::broadcast;

use super::SqliteScheduler;
use crate::error::{Error, Result};
use crate::queue::{SignalAction, WorkerSignal};
use crate::scheduler::{EventStream, Scheduler};
use crate::store;
use crate::types::{
    JobEvent, JobLogEntry, JobSummary, ListQuery, LogQuery, MAX_PAGE, MAX_START, Page, Stats, StatsQuery, StatusCounts,
    SystemLogEntry, SystemLogQuery, TagMatch, TagQuery, WorkerStatus,
};

/// The default window of [`Scheduler::stats`]: the last 7 days.
const DEFAULT_STATS_WINDOW: chrono::Duration = chrono::Duration::days(7);

/// Refuses pages no listing can serve: an empty or oversized page, or a
/// start past what SQLite can count.
fn check_page(limit: u32, start: u64) -> Result<()> {
    if limit == 0 || limit > MAX_PAGE {
        return Err(Error::bad_request(format!("limit must be 1..={MAX_PAGE}, got {limit}")));
    }
    if start > MAX_START {
        return Err(Error::bad_request(format!("start must be at most {MAX_START}, got {start}")));
    }
    Ok(())
}

/// Refuses tags that break the rules of [`crate::tags`].
fn check_tags(tags: &Tags) -> Result<()> {
    let problems = crate::tags::check(tags);
    if problems.is_empty() { Ok(()) } else { Err(Error::Validation { problems }) }
}

#[async_trait]
impl Scheduler for SqliteScheduler {
    async fn submit(&self, spec: JobSpec) -> Result<JobId> {
        if self.inner.shutdown.is_cancelled() {
            return Err(Error::ShuttingDown);
        }
        self.check(&spec).await?;
        self.transition(move |c| store::jobs::insert_job(c, &spec, store::now_us())).await
    }

    async fn get(&self, id: JobId) -> Result<Job> {
        let live_after = self.live_after();
        self.read(move |c| store::jobs::load_job(c, id, &store::workers::live_kinds(c, live_after)?)).await
    }

    async fn list(&self, query: &ListQuery) -> Result<Page<JobSummary>> {
        check_page(query.limit, query.start)?;
        let (q, live_after) = (query.clone(), self.live_after());
        self.read(move |c| store::listing::list(c, &q, &store::workers::live_kinds(c, live_after)?)).await
    }

    async fn status_counts(&self, query: &ListQuery) -> Result<StatusCounts> {
        let q = query.clone();
        self.read(move |c| store::listing::counts(c, &q)).await
    }

    async fn workers(&self) -> Result<Vec<WorkerStatus>> {
        let live_after = self.live_after();
        self.read(move |c| store::workers::list(c, live_after)).await
    }

    async fn stats(&self, query: &StatsQuery) -> Result<Stats> {
        let since = query.since.unwrap_or_else(|| chrono::Utc::now() - DEFAULT_STATS_WINDOW).timestamp_micros();
        let top = query.top;
        self.read(move |c| store::stats::stats(c, since, top)).await
    }

    async fn abort(&self, id: JobId) -> Result<Job> {
        let holder = self.transition(move |c| store::jobs::abort(c, id, store::now_us())).await?;
        if let Some((host, lease)) = holder {
            // The holder's heartbeat would learn it too, a third of a
            // lease later.
            self.signal(WorkerSignal { host, lease, action: SignalAction::Check }).await;
        }
        self.get(id).await
    }

    async fn restart(&self, id: JobId, from: Option<StageIndex>) -> Result<Job> {
        self.rerun(id, "restart", None, from).await
    }

    async fn reset(&self, id: JobId, spec: JobSpec, from: StageIndex) -> Result<Job> {
        self.rerun(id, "reset", Some(spec), Some(from)).await
    }

    async fn tags(&self, id: JobId) -> Result<Tags> {
        self.read(move |c| store::tags::tags(c, id)).await
    }

    async fn set_tags(&self, id: JobId, tags: Tags) -> Result<Tags> {
        check_tags(&tags)?;
        self.inner.store.run(move |c| store::tags::update_tags(c, id, &tags, true, store::now_us())).await
    }

    async fn merge_tags(&self, id: JobId, tags: Tags) -> Result<Tags> {
        check_tags(&tags)?;
        self.inner.store.run(move |c| store::tags::update_tags(c, id, &tags, false, store::now_us())).await
    }

    async fn jobs_with_tag(&self, query: &TagQuery) -> Result<Page<TagMatch>> {
        check_page(query.limit, query.start)?;
        let q = query.clone();
        self.read(move |c| store::tags::jobs_with_tag(c, &q)).await
    }

    async fn logs(&self, query: &LogQuery) -> Result<Page<JobLogEntry>> {
        check_page(query.limit, query.start)?;
        let q = query.clone();
        self.read(move |c| store::logs::query_logs(c, &q)).await
    }

    async fn system_log(&self, query: &SystemLogQuery) -> Result<Page<SystemLogEntry>> {
        check_page(query.limit, query.start)?;
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
    sched: SqliteScheduler,
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
