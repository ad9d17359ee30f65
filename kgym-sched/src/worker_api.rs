//! The scheduler's side of the worker protocol: [`WorkerBackend`].
//!
//! The worker runtime ([`crate::runtime`]) claims stages, renews leases,
//! streams log lines and reports results through this trait. The embedded
//! scheduler implements it directly; [`crate::http::HttpWorkerBackend`]
//! implements it over HTTP, so a worker can live in another process (and be
//! `kill -9`'d: its lease expires and the stage goes back on its queue).

use std::collections::BTreeMap;
use std::fmt;
use std::time::Duration;

use async_trait::async_trait;
use kgym_core::{JobId, StageFailure, StageIndex, StageKind, StageResult, StageSpec, Tags};
use serde::{Deserialize, Serialize};

use crate::error::Result;
use crate::queue::SignalAction;

/// A worker process announcing itself.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct WorkerInfo {
    /// The host (kGym's `worker-hostname`).
    pub host: String,
    /// The kinds it runs, with its slots for each.
    pub kinds: Vec<(StageKind, u32)>,
    /// Labels describing it (`pool=big`, `arch=arm64`, ...).
    #[serde(default)]
    pub labels: BTreeMap<String, String>,
}

impl WorkerInfo {
    /// A worker on `host` running `kinds`, without labels.
    pub fn new(host: impl Into<String>, kinds: Vec<(StageKind, u32)>) -> Self {
        Self { host: host.into(), kinds, labels: BTreeMap::new() }
    }
}

/// A request for the next stage of one kind.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct ClaimRequest {
    /// The kind wanted.
    pub kind: StageKind,
    /// The worker's name (`host/kind-slot`).
    pub worker: String,
    /// The worker's host.
    pub host: String,
    /// How long to wait for a stage before answering "none".
    #[serde(with = "millis")]
    pub wait: Duration,
}

/// Proof that a worker holds a stage: presented with every heartbeat, log
/// batch and report.
#[derive(Debug, Clone, PartialEq, Eq, Hash, Serialize, Deserialize)]
pub struct Lease {
    /// The job.
    pub job: JobId,
    /// The stage.
    pub stage: StageIndex,
    /// A random token naming this hand-out of the stage.
    pub token: String,
}

/// A stage handed to a worker, with everything needed to build its
/// [`kgym_core::StageContext`].
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct Claim {
    /// The lease.
    pub lease: Lease,
    /// The stage's kind.
    pub kind: StageKind,
    /// Every stage of the job.
    pub stages: Vec<StageSpec>,
    /// Results of the earlier stages.
    pub previous: Vec<StageResult>,
    /// The job's tags.
    pub tags: Tags,
    /// Which hand-out of this stage this is (1 for the first).
    pub attempt: u32,
    /// How long the lease lasts without a heartbeat.
    #[serde(with = "millis")]
    pub lease_ttl: Duration,
}

/// What a heartbeat learns about a lease.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum LeaseStatus {
    /// Still held; renewed.
    Active,
    /// The job was aborted: cancel the stage (its result will not be
    /// recorded).
    Cancelled,
    /// No longer held (expired and handed out again, or the job was
    /// restarted): stop the stage.
    Lost,
}

/// How a stage ended, as a worker reports it.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum StageOutcome {
    /// The worker's typed result, serialized.
    Success(serde_json::Value),
    /// Why it failed. A `retryable` failure is handed to another worker
    /// while attempts remain.
    Failure(StageFailure),
}

impl From<Result<serde_json::Value, StageFailure>> for StageOutcome {
    fn from(r: Result<serde_json::Value, StageFailure>) -> Self {
        match r {
            Ok(v) => Self::Success(v),
            Err(f) => Self::Failure(f),
        }
    }
}

/// What the scheduler did with a report.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum ReportAck {
    /// Recorded; the job moved on (next stage queued, or finished).
    Recorded,
    /// A retryable failure: the stage went back on its queue.
    Requeued,
}

/// The scheduler as workers see it.
#[async_trait]
pub trait WorkerBackend: Send + Sync + fmt::Debug + 'static {
    /// Announces a worker process and the kinds it runs (they are accepted
    /// at submit while the worker is live: it claims or heartbeats within
    /// the scheduler's worker TTL and has not deregistered).
    async fn register(&self, info: &WorkerInfo) -> Result<()>;

    /// Takes the next ready stage of `req.kind`, waiting up to `req.wait`;
    /// `None` when nothing came. Only one worker can win a stage
    /// (compare-and-set in the store).
    async fn claim(&self, req: &ClaimRequest) -> Result<Option<Claim>>;

    /// Renews the lease and says whether the stage should go on.
    async fn heartbeat(&self, lease: &Lease) -> Result<LeaseStatus>;

    /// Appends lines to the job's log.
    async fn append_log(&self, lease: &Lease, worker: &str, lines: &[String]) -> Result<()>;

    /// Records the stage's outcome. A lease that is no longer held is
    /// refused with [`crate::Error::LeaseLost`].
    async fn report(&self, lease: &Lease, outcome: StageOutcome) -> Result<ReportAck>;

    /// Hands the stage back unfinished (worker shutting down); it goes back
    /// on its queue without using up an attempt.
    async fn yield_stage(&self, lease: &Lease) -> Result<()>;

    /// Records a system log line about a worker (started, stopping).
    async fn worker_event(&self, host: &str, kind: Option<&StageKind>, message: &str) -> Result<()>;

    /// Says goodbye: the worker process on `host` stopped (it is no longer
    /// live, whatever its last heartbeat).
    async fn deregister(&self, host: &str) -> Result<()>;

    /// Waits for a word from the scheduler about the running stage of
    /// `lease` between heartbeats (an abort to check at once, a request to
    /// hand it back). Backends without a way to hear one never return:
    /// the next heartbeat tells instead.
    async fn signalled(&self, lease: &Lease) -> SignalAction {
        let _ = lease;
        std::future::pending().await
    }
}

/// Runs `claim` (a claim of an announcement taken off a queue) to its end
/// in a task, so the work finishes even if the claimer goes away meanwhile:
/// a claim nobody received is handed back through `backend` at once.
pub(crate) async fn finish_claim<B: WorkerBackend>(
    backend: B,
    claim: impl std::future::Future<Output = Result<Option<Claim>>> + Send + 'static,
) -> Result<Option<Claim>> {
    let (tx, rx) = tokio::sync::oneshot::channel();
    tokio::spawn(async move {
        if let Err(Ok(Some(orphan))) = tx.send(claim.await)
            && let Err(e) = backend.yield_stage(&orphan.lease).await
        {
            tracing::warn!(error = %e, "failed to hand back an unreceived claim");
        }
    });
    rx.await.unwrap_or(Err(crate::error::Error::ShuttingDown))
}

/// Serde adapter: a `Duration` as integer milliseconds.
pub(crate) mod millis {
    use std::time::Duration;

    use serde::{Deserialize, Deserializer, Serializer};

    pub fn serialize<S: Serializer>(d: &Duration, s: S) -> Result<S::Ok, S::Error> {
        s.serialize_u64(u64::try_from(d.as_millis()).unwrap_or(u64::MAX))
    }

    pub fn deserialize<'de, D: Deserializer<'de>>(d: D) -> Result<Duration, D::Error> {
        Ok(Duration::from_millis(u64::deserialize(d)?))
    }
}
