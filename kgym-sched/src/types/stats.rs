//! Counts and statistics of a job history, for dashboards.

use chrono::{DateTime, Utc};
use kgym_core::{JobId, StageKind};
use serde::{Deserialize, Serialize};

/// How many jobs are in each status (of the jobs a
/// [`ListQuery`](super::ListQuery) selects, ignoring its status and page).
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct StatusCounts {
    /// Queued for their first stage.
    pub pending: u64,
    /// Between stages.
    pub waiting: u64,
    /// Held by a worker.
    pub in_progress: u64,
    /// Ended (successfully or not).
    pub finished: u64,
    /// Aborted.
    pub aborted: u64,
}

impl StatusCounts {
    /// All of them.
    pub fn total(&self) -> u64 {
        self.pending + self.waiting + self.in_progress + self.finished + self.aborted
    }
}

/// The window statistics are taken over.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct StatsQuery {
    /// Only what ended at or after this time (default: the last 7 days).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub since: Option<DateTime<Utc>>,
    /// How many headlines to list (default 10, at most 100).
    #[serde(default = "default_top")]
    pub top: u32,
}

fn default_top() -> u32 {
    10
}

impl Default for StatsQuery {
    fn default() -> Self {
        Self { since: None, top: default_top() }
    }
}

/// What a job history looks like over a window.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct Stats {
    /// The start of the window.
    pub since: DateTime<Utc>,
    /// Jobs that finished, per hour (oldest first; hours without any are
    /// left out).
    pub finished_per_hour: Vec<HourCount>,
    /// How long successful stages took, per kind.
    pub durations: Vec<KindDurations>,
    /// The most frequent result headlines (crash titles), most frequent
    /// first.
    pub headlines: Vec<HeadlineCount>,
}

/// Jobs that ended in one hour.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
pub struct HourCount {
    /// The hour's start.
    pub hour: DateTime<Utc>,
    /// Jobs finished in it.
    pub finished: u64,
    /// Of those, jobs with a failed stage.
    pub failed: u64,
}

/// Durations of one stage kind's successful stages. Percentiles are read
/// from buckets 5 % apart (a bucket's lower bound, never above the
/// longest).
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct KindDurations {
    /// The kind.
    pub kind: StageKind,
    /// How many stages.
    pub count: u64,
    /// Median seconds.
    pub p50_seconds: f64,
    /// 90th percentile seconds.
    pub p90_seconds: f64,
    /// Longest, in seconds (a stage whose result was removed by a re-run
    /// may still count here).
    pub max_seconds: f64,
}

/// A headline and how often it was seen.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct HeadlineCount {
    /// The headline (a crash title).
    pub headline: String,
    /// How many stage results carried it.
    pub count: u64,
    /// The latest job that had it.
    pub last_job: JobId,
}
