//! The job model: a job is an ordered list of stages, each a kind plus its
//! argument, with string tags, a status and one result per finished stage.
//!
//! These are the stable serde types shared by clients, the scheduler and
//! remote workers; they change carefully.

use std::collections::BTreeMap;

use chrono::{DateTime, Utc};
use serde::{Deserialize, Serialize};

use crate::failure::StageFailure;
use crate::id::{JobId, StageIndex, StageKind};

/// Tags of a job: a string→string map (kGym's `kv`).
pub type Tags = BTreeMap<String, String>;

/// Labels: a string→string map. Workers declare theirs (`pool=big`,
/// `arch=arm64`); a stage that requires labels runs only on a worker that
/// has every one of them, with the same value.
pub type Labels = BTreeMap<String, String>;

/// One stage of a job spec: which worker kind runs it and with what argument.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct StageSpec {
    /// The worker kind (`build`, `reproduce`, `patch-check`, or user-defined).
    pub kind: StageKind,
    /// The worker's argument; its shape is the kind's business (see
    /// [`crate::stage`] for the stock kinds).
    #[serde(default)]
    pub arg: serde_json::Value,
    /// The labels a worker must have to run this stage (its worker pool);
    /// empty: any worker of the kind.
    #[serde(default, skip_serializing_if = "Labels::is_empty")]
    pub labels: Labels,
}

impl StageSpec {
    /// A stage of `kind` whose argument is `arg` serialized.
    pub fn new<T: Serialize>(kind: StageKind, arg: &T) -> Self {
        Self {
            kind,
            // Serializing our own argument types cannot fail: they hold no
            // maps with non-string keys.
            arg: serde_json::to_value(arg).unwrap_or(serde_json::Value::Null),
            labels: Labels::new(),
        }
    }

    /// Requires the label `key=value` of the worker that runs this stage
    /// (builder style).
    pub fn label(mut self, key: impl Into<String>, value: impl Into<String>) -> Self {
        self.labels.insert(key.into(), value.into());
        self
    }
}

/// What a client submits: ordered stages plus tags.
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
pub struct JobSpec {
    /// The stages, run in order; a failed stage ends the job.
    pub stages: Vec<StageSpec>,
    /// Tags (kGym's `kv`).
    #[serde(default)]
    pub tags: Tags,
}

impl JobSpec {
    /// An empty spec; add stages with [`JobSpec::stage`].
    pub fn new() -> Self {
        Self::default()
    }

    /// Appends a stage and returns the spec (builder style).
    pub fn stage<T: Serialize>(mut self, kind: StageKind, arg: &T) -> Self {
        self.stages.push(StageSpec::new(kind, arg));
        self
    }

    /// Sets a tag and returns the spec (builder style).
    pub fn tag(mut self, key: impl Into<String>, value: impl Into<String>) -> Self {
        self.tags.insert(key.into(), value.into());
        self
    }
}

/// Where a job is in its life, with kGym's names.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
#[non_exhaustive]
pub enum JobStatus {
    /// Queued for its first stage.
    Pending,
    /// Between stages: the next stage is queued.
    Waiting,
    /// A worker holds one of its stages.
    InProgress,
    /// Every stage ran, or a stage failed (see the results).
    Finished,
    /// Stopped by a client; its running stage was cancelled.
    Aborted,
}

impl JobStatus {
    /// `true` once the job will not change without a restart.
    pub fn is_terminal(self) -> bool {
        matches!(self, Self::Finished | Self::Aborted)
    }

    /// The status as stored and shown (`in_progress`, ...).
    pub fn as_str(self) -> &'static str {
        match self {
            Self::Pending => "pending",
            Self::Waiting => "waiting",
            Self::InProgress => "in_progress",
            Self::Finished => "finished",
            Self::Aborted => "aborted",
        }
    }

    /// Parses the stored form produced by [`JobStatus::as_str`].
    pub fn parse(s: &str) -> Option<Self> {
        Some(match s {
            "pending" => Self::Pending,
            "waiting" => Self::Waiting,
            "in_progress" => Self::InProgress,
            "finished" => Self::Finished,
            "aborted" => Self::Aborted,
            _ => return None,
        })
    }
}

/// Whether a stage succeeded.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum Outcome {
    /// The stage produced its result.
    Success,
    /// The stage failed; [`StageResult::failure`] says why.
    Failure,
}

/// The headline of a result value: its top-level `title` when that is a
/// non-empty string.
pub fn value_headline(value: &serde_json::Value) -> Option<String> {
    value.get("title").and_then(|t| t.as_str()).filter(|t| !t.is_empty()).map(str::to_owned)
}

/// The recorded result of one stage.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct StageResult {
    /// Success or failure (kGym's `result`).
    pub outcome: Outcome,
    /// A one-line human summary (kGym's `message`).
    pub message: String,
    /// The worker's typed result on success (see [`crate::stage`]); `null` on
    /// failure.
    #[serde(default)]
    pub value: serde_json::Value,
    /// Why the stage failed, when it did.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub failure: Option<StageFailure>,
    /// The worker (hostname/slot) that ran the stage.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub worker: Option<String>,
    /// When the stage's final attempt started.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub started: Option<DateTime<Utc>>,
    /// When the stage ended.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub finished: Option<DateTime<Utc>>,
    /// What a listing shows of the result: its value's top-level `title`
    /// when that is a string (a reproduce stage's crash title). Set by the
    /// scheduler when it records the result.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub headline: Option<String>,
}

impl StageResult {
    /// A successful result carrying `value`.
    pub fn success(message: impl Into<String>, value: serde_json::Value) -> Self {
        Self {
            outcome: Outcome::Success,
            message: message.into(),
            headline: value_headline(&value),
            value,
            failure: None,
            worker: None,
            started: None,
            finished: None,
        }
    }

    /// A failed result.
    pub fn failure(failure: StageFailure) -> Self {
        Self {
            outcome: Outcome::Failure,
            message: failure.message.clone(),
            value: serde_json::Value::Null,
            failure: Some(failure),
            worker: None,
            started: None,
            finished: None,
            headline: None,
        }
    }

    /// Decodes the result value as the stage's typed result.
    pub fn decode<T: serde::de::DeserializeOwned>(&self) -> serde_json::Result<T> {
        T::deserialize(&self.value)
    }
}

/// A job as the scheduler reports it.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct Job {
    /// The job's id.
    pub id: JobId,
    /// When the job was submitted.
    pub created: DateTime<Utc>,
    /// When the job last changed.
    pub modified: DateTime<Utc>,
    /// The stages to run.
    pub stages: Vec<StageSpec>,
    /// Tags.
    pub tags: Tags,
    /// Where the job is.
    pub status: JobStatus,
    /// The stage running or queued next; `None` once terminal.
    pub current_stage: Option<StageIndex>,
    /// The worker holding the current stage, while one does.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub worker: Option<String>,
    /// The kind of the queued stage when no live worker runs that kind: the
    /// job waits until a worker of it registers. `None` while a worker is
    /// there (or the job runs or ended).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub no_worker_for: Option<StageKind>,
    /// One result per stage that ended, in stage order.
    pub results: Vec<StageResult>,
}

impl Job {
    /// `true` when the job finished and every stage succeeded.
    pub fn succeeded(&self) -> bool {
        self.status == JobStatus::Finished
            && self.results.len() == self.stages.len()
            && self.results.iter().all(|r| r.outcome == Outcome::Success)
    }

    /// The first failed stage's failure, if any stage failed.
    pub fn failure(&self) -> Option<(StageIndex, &StageFailure)> {
        self.results.iter().enumerate().find_map(|(i, r)| r.failure.as_ref().map(|f| (StageIndex(i as u32), f)))
    }

    /// The result of stage `index`, if that stage ended.
    pub fn result(&self, index: StageIndex) -> Option<&StageResult> {
        self.results.get(index.as_usize())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn status_names_match_kgym() {
        let json = serde_json::to_string(&JobStatus::InProgress).unwrap();
        assert_eq!(json, "\"in_progress\"");
        for s in
            [JobStatus::Pending, JobStatus::Waiting, JobStatus::InProgress, JobStatus::Finished, JobStatus::Aborted]
        {
            assert_eq!(JobStatus::parse(s.as_str()), Some(s));
        }
        assert_eq!(JobStatus::parse("done"), None);
    }

    #[test]
    fn spec_builder_serializes_stages_in_order() {
        let spec = JobSpec::new()
            .stage(StageKind::build(), &serde_json::json!({"a": 1}))
            .stage(StageKind::reproduce(), &serde_json::json!({"b": 2}))
            .tag("k", "v");
        let text = serde_json::to_string(&spec).unwrap();
        let back: JobSpec = serde_json::from_str(&text).unwrap();
        assert_eq!(back, spec);
        assert_eq!(back.stages[1].kind.as_str(), "reproduce");
        assert_eq!(back.tags["k"], "v");
    }
}
