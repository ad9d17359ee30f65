//! The values the [`Scheduler`](crate::Scheduler) trait takes and returns
//! besides kgym-core's job model: list and log queries, pages, log entries,
//! job summaries and watch events; the live workers ([`workers`]) and the
//! statistics of a job history ([`stats`]). All are serde types (the HTTP
//! API sends them as JSON).

mod stats;
mod workers;

use chrono::{DateTime, Utc};
use kgym_core::{JobId, JobStatus, StageIndex, StageKind};
use serde::{Deserialize, Serialize};

pub use stats::{HeadlineCount, HourCount, KindDurations, Stats, StatsQuery, StatusCounts};
pub use workers::{RunningStage, WorkerStatus};

/// Largest page a query may ask for.
pub const MAX_PAGE: u32 = 500;

/// Default page size.
pub const DEFAULT_PAGE: u32 = 20;

/// Largest `start` a query may ask for (SQLite counts rows in signed 64
/// bits; no listing gets near it).
pub const MAX_START: u64 = i64::MAX as u64;

fn default_limit() -> u32 {
    DEFAULT_PAGE
}

/// Which timestamp a job listing sorts and filters by.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
#[non_exhaustive]
pub enum TimeField {
    /// Submission time (kGym's `by_created_time`).
    #[default]
    Created,
    /// Last change (kGym's `by_modified_time`).
    Modified,
}

/// Newest or oldest first.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
#[non_exhaustive]
pub enum Order {
    /// Newest first (kGym's order).
    #[default]
    NewestFirst,
    /// Oldest first (reading a log from its start).
    OldestFirst,
}

/// A job listing: a time window, an order and a page.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct ListQuery {
    /// Which timestamp to sort and filter by.
    #[serde(default)]
    pub by: TimeField,
    /// Only jobs at or after this time.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub from: Option<DateTime<Utc>>,
    /// Only jobs at or before this time.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub to: Option<DateTime<Utc>>,
    /// Only jobs in this status.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub status: Option<JobStatus>,
    /// Only jobs carrying this tag key.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub tag: Option<String>,
    /// ... with this value (needs `tag`).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub tag_value: Option<String>,
    /// Order of the listing.
    #[serde(default)]
    pub order: Order,
    /// Items to skip (ignored with `after`, where it only labels the
    /// page's position).
    #[serde(default)]
    pub start: u64,
    /// Items per page (at most [`MAX_PAGE`]).
    #[serde(default = "default_limit")]
    pub limit: u32,
    /// Continue after this cursor (a page's [`Page::cursor`]): the next
    /// page at the cost of the first, however deep.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub after: Option<String>,
}

impl Default for ListQuery {
    /// The first page, newest first, by creation time.
    fn default() -> Self {
        Self {
            by: TimeField::Created,
            from: None,
            to: None,
            status: None,
            tag: None,
            tag_value: None,
            order: Order::NewestFirst,
            start: 0,
            limit: DEFAULT_PAGE,
            after: None,
        }
    }
}

impl ListQuery {
    /// The first page, newest first, by creation time.
    pub fn new() -> Self {
        Self::default()
    }

    /// Only jobs in `status` (builder style).
    pub fn status(mut self, status: JobStatus) -> Self {
        self.status = Some(status);
        self
    }

    /// Only jobs carrying tag `key` (with `value`, when given).
    pub fn tagged(mut self, key: impl Into<String>, value: Option<String>) -> Self {
        self.tag = Some(key.into());
        self.tag_value = value;
        self
    }
}

/// One page of a listing.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct Page<T> {
    /// The items.
    pub items: Vec<T>,
    /// How many items were skipped.
    pub start: u64,
    /// How many items match in total.
    pub total: u64,
    /// `start` of the next page; `None` at the end.
    pub next: Option<u64>,
    /// Where the next page begins, as the query's `after` (with `next` as
    /// its `start`); `None` at the end. Following cursors costs the same
    /// on every page, where a large `start` costs in proportion to it.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub cursor: Option<String>,
}

impl<T> Page<T> {
    /// A page of `items` taken at `start` with page size `limit` out of
    /// `total` (kGym's rule: there is a next page when this one is full).
    /// `next` is always past `start`: it never wraps.
    pub fn new(items: Vec<T>, start: u64, limit: u32, total: u64) -> Self {
        let full = !items.is_empty() && items.len() as u64 >= u64::from(limit);
        let next = start.checked_add(u64::from(limit)).filter(|n| full && *n < total && *n <= MAX_START);
        Self { items, start, total, next, cursor: None }
    }

    /// Sets [`cursor`](Self::cursor) from the last item, when there is a
    /// next page.
    pub fn with_cursor(mut self, key: impl Fn(&T) -> String) -> Self {
        self.cursor = self.next.and(self.items.last()).map(key);
        self
    }

    /// Maps the items, keeping the paging.
    pub fn map<U>(self, f: impl FnMut(T) -> U) -> Page<U> {
        Page {
            items: self.items.into_iter().map(f).collect(),
            start: self.start,
            total: self.total,
            next: self.next,
            cursor: self.cursor,
        }
    }
}

/// A job without its arguments and results (what listings return).
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct JobSummary {
    /// The job.
    pub id: JobId,
    /// Submission time.
    pub created: DateTime<Utc>,
    /// Last change.
    pub modified: DateTime<Utc>,
    /// The stage kinds, in order.
    pub kinds: Vec<StageKind>,
    /// Status.
    pub status: JobStatus,
    /// The stage running or queued next; `None` once terminal.
    pub current_stage: Option<StageIndex>,
    /// The worker holding the current stage.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub worker: Option<String>,
    /// The headline of the job's latest result that has one (a crash
    /// title), see [`kgym_core::StageResult::headline`].
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub headline: Option<String>,
    /// The kind of the queued stage when no live worker runs that kind
    /// (see [`kgym_core::Job::no_worker_for`]).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub no_worker_for: Option<StageKind>,
}

/// A page of log lines: one job's, or every job's when `job` is `None`.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct LogQuery {
    /// The job; `None` for the lines of every job (kGym's jobs display).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub job: Option<JobId>,
    /// Only lines at or after this time.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub from: Option<DateTime<Utc>>,
    /// Only lines at or before this time.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub to: Option<DateTime<Utc>>,
    /// Order.
    #[serde(default)]
    pub order: Order,
    /// Lines to skip (ignored with `after`).
    #[serde(default)]
    pub start: u64,
    /// Lines per page (at most [`MAX_PAGE`]).
    #[serde(default = "default_limit")]
    pub limit: u32,
    /// Continue after this cursor (a page's [`Page::cursor`]).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub after: Option<String>,
}

impl Default for LogQuery {
    /// The newest lines of every job.
    fn default() -> Self {
        Self { job: None, from: None, to: None, order: Order::NewestFirst, start: 0, limit: DEFAULT_PAGE, after: None }
    }
}

impl LogQuery {
    /// The first lines of `job`, oldest first.
    pub fn job(job: JobId) -> Self {
        Self { job: Some(job), order: Order::OldestFirst, ..Self::default() }
    }
}

/// One line of a job's log.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct JobLogEntry {
    /// Position in the scheduler's log (increases with time).
    pub seq: u64,
    /// The job.
    pub job: JobId,
    /// When the line was recorded.
    pub time: DateTime<Utc>,
    /// The stage that logged it; `None` for scheduler lines.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub stage: Option<StageIndex>,
    /// That stage's kind.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub kind: Option<StageKind>,
    /// The worker that logged it (`host/kind-slot`), `None` for the
    /// scheduler.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub worker: Option<String>,
    /// The worker's host.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub host: Option<String>,
    /// The line.
    pub line: String,
}

/// A page of the system log (scheduler and worker events), optionally
/// narrowed to one worker kind or one host.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct SystemLogQuery {
    /// Only entries about this worker kind.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub kind: Option<StageKind>,
    /// Only entries from this host.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub host: Option<String>,
    /// Only entries at or after this time.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub from: Option<DateTime<Utc>>,
    /// Only entries at or before this time.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub to: Option<DateTime<Utc>>,
    /// Order.
    #[serde(default)]
    pub order: Order,
    /// Entries to skip (ignored with `after`).
    #[serde(default)]
    pub start: u64,
    /// Entries per page (at most [`MAX_PAGE`]).
    #[serde(default = "default_limit")]
    pub limit: u32,
    /// Continue after this cursor (a page's [`Page::cursor`]).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub after: Option<String>,
}

impl Default for SystemLogQuery {
    /// The newest entries.
    fn default() -> Self {
        Self {
            kind: None,
            host: None,
            from: None,
            to: None,
            order: Order::NewestFirst,
            start: 0,
            limit: DEFAULT_PAGE,
            after: None,
        }
    }
}

/// One system log entry.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct SystemLogEntry {
    /// Position in the log.
    pub seq: u64,
    /// When it was recorded.
    pub time: DateTime<Utc>,
    /// The worker kind concerned.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub kind: Option<StageKind>,
    /// The host concerned.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub host: Option<String>,
    /// The worker concerned (`host/kind-slot`).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub worker: Option<String>,
    /// The job concerned.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub job: Option<JobId>,
    /// What happened.
    pub message: String,
}

/// A page of the jobs carrying a tag, in job order (oldest first) unless
/// `order` says otherwise.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct TagQuery {
    /// The tag's key.
    pub key: String,
    /// Only jobs where the tag has this value.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub value: Option<String>,
    /// Order (default: oldest first, the order jobs were submitted in).
    #[serde(default = "oldest_first")]
    pub order: Order,
    /// Matches to skip (ignored with `after`).
    #[serde(default)]
    pub start: u64,
    /// Matches per page (at most [`MAX_PAGE`]).
    #[serde(default = "default_limit")]
    pub limit: u32,
    /// Continue after this cursor (a page's [`Page::cursor`]).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub after: Option<String>,
}

fn oldest_first() -> Order {
    Order::OldestFirst
}

impl TagQuery {
    /// The first page of jobs carrying `key` (with `value`, when given).
    pub fn new(key: impl Into<String>, value: Option<String>) -> Self {
        Self { key: key.into(), value, order: Order::OldestFirst, start: 0, limit: DEFAULT_PAGE, after: None }
    }
}

/// A job carrying a tag (an item of
/// [`Scheduler::jobs_with_tag`](crate::Scheduler::jobs_with_tag)).
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct TagMatch {
    /// The job.
    pub job: JobId,
    /// The tag's key.
    pub key: String,
    /// The tag's value on that job.
    pub value: String,
}

/// Something that happened to a job, as [`Scheduler::watch`](crate::Scheduler::watch)
/// streams it.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(tag = "event", rename_all = "snake_case")]
#[non_exhaustive]
pub enum JobEvent {
    /// The job's status or current stage changed (the first event of a
    /// watch is always the current status).
    Status {
        /// The job.
        job: JobId,
        /// The new status.
        status: JobStatus,
        /// The stage running or queued next; `None` once terminal.
        stage: Option<StageIndex>,
        /// The worker holding the stage.
        #[serde(default, skip_serializing_if = "Option::is_none")]
        worker: Option<String>,
        /// When it changed.
        time: DateTime<Utc>,
    },
    /// A log line.
    Log(JobLogEntry),
}

impl JobEvent {
    /// The status carried by a status event.
    pub fn status(&self) -> Option<JobStatus> {
        match self {
            Self::Status { status, .. } => Some(*status),
            Self::Log(_) => None,
        }
    }

    /// `true` for a status event with a terminal status (the last event of a
    /// watch).
    pub fn is_terminal(&self) -> bool {
        self.status().is_some_and(JobStatus::is_terminal)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn page_has_next_only_when_full_and_more_remain() {
        assert_eq!(Page::new(vec![1, 2], 0, 2, 5).next, Some(2));
        assert_eq!(Page::new(vec![1], 4, 2, 5).next, None);
        assert_eq!(Page::new(vec![1, 2], 3, 2, 5).next, None);
        assert_eq!(Page::<u8>::new(vec![], 0, 2, 0).next, None);
    }

    #[test]
    fn next_never_wraps() {
        assert_eq!(Page::new(vec![1, 2], u64::MAX - 1, 2, u64::MAX).next, None);
        assert_eq!(Page::new(vec![1, 2], MAX_START - 1, 2, u64::MAX).next, None);
        assert_eq!(Page::new(vec![1, 2], MAX_START - 2, 2, u64::MAX).next, Some(MAX_START));
    }

    #[test]
    fn events_serialize_with_a_tag() {
        let ev = JobEvent::Status {
            job: JobId::new(1),
            status: JobStatus::Finished,
            stage: None,
            worker: None,
            time: Utc::now(),
        };
        let json = serde_json::to_value(&ev).unwrap();
        assert_eq!(json["event"], "status");
        assert_eq!(json["status"], "finished");
        assert!(serde_json::from_value::<JobEvent>(json).unwrap().is_terminal());
    }
}
