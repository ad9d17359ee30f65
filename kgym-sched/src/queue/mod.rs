//! Queues that carry "stage `i` of job `J` is ready" announcements, one
//! queue per stage kind and required label set ([`Route`]).
//!
//! The queue only wakes workers up; the job database decides who gets a
//! stage (a compare-and-set claim). So an announcement may be delivered
//! twice or be stale (the job was aborted meanwhile): the claim sorts that
//! out, and the scheduler re-announces every queued stage when it starts.
//!
//! The contract follows AMQP (so a `lapin` transport fits): a
//! [`Consumer`] receives [`Delivery`]s that must be acknowledged; the
//! embedded scheduler acks a delivery once the claim it led to is durably
//! recorded, and nacks (requeues) it when recording failed. A delivery
//! dropped without an answer is redelivered (AMQP: when its channel
//! closes). [`crate::conformance::queue`] holds the tests every transport
//! must pass.

mod memory;

use std::fmt;

use async_trait::async_trait;
use kgym_core::{JobId, Labels, StageIndex, StageKind};
use serde::{Deserialize, Serialize};

pub use memory::InProcessQueue;

use crate::error::Result;
use crate::worker_api::Lease;

/// "Stage `stage` (of kind `kind`) of job `job` is ready to be claimed."
#[derive(Debug, Clone, PartialEq, Eq, Hash, Serialize, Deserialize)]
pub struct Announcement {
    /// The job.
    pub job: JobId,
    /// The stage.
    pub stage: StageIndex,
    /// The stage's kind: the queue it goes on.
    pub kind: StageKind,
    /// The labels the stage requires of its worker (its pool): with the
    /// kind, they name the queue.
    #[serde(default, skip_serializing_if = "Labels::is_empty")]
    pub labels: Labels,
}

impl Announcement {
    /// Stage `stage` of job `job`, of `kind`, for any worker of the kind.
    pub fn new(job: JobId, stage: StageIndex, kind: StageKind) -> Self {
        Self { job, stage, kind, labels: Labels::new() }
    }

    /// Requires `labels` of the worker (builder style).
    pub fn labels(mut self, labels: Labels) -> Self {
        self.labels = labels;
        self
    }

    /// The queue it goes on.
    pub fn route(&self) -> Route {
        Route { kind: self.kind.clone(), labels: self.labels.clone() }
    }
}

/// A queue: the announcements of one stage kind that require exactly one
/// label set. A worker with labels `L` consumes the routes of its kinds
/// whose labels are subsets of `L`.
#[derive(Debug, Clone, PartialEq, Eq, Hash, PartialOrd, Ord, Serialize, Deserialize)]
pub struct Route {
    /// The stage kind.
    pub kind: StageKind,
    /// The labels its stages require.
    #[serde(default, skip_serializing_if = "Labels::is_empty")]
    pub labels: Labels,
}

impl Route {
    /// The queue of `kind`'s stages that require no labels.
    pub fn of(kind: &StageKind) -> Self {
        Self { kind: kind.clone(), labels: Labels::new() }
    }

    /// The queue of `kind`'s stages that require `labels`.
    pub fn with_labels(kind: &StageKind, labels: Labels) -> Self {
        Self { kind: kind.clone(), labels }
    }
}

impl fmt::Display for Route {
    /// `kind`, or `kind[k=v,k=v]` when it requires labels.
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        if self.labels.is_empty() {
            write!(f, "{}", self.kind)
        } else {
            write!(f, "{}[{}]", self.kind, crate::labels::display(&self.labels))
        }
    }
}

/// A transport of announcements.
#[async_trait]
pub trait Queue: Send + Sync + fmt::Debug + 'static {
    /// Puts `announcement` on the queue of its [route](Announcement::route).
    /// Returns once the transport holds it (AMQP: after the broker
    /// confirmed it).
    async fn publish(&self, announcement: &Announcement) -> Result<()>;

    /// Opens a consumer of `route`'s queue. Consumers of one route compete:
    /// each announcement goes to one of them.
    async fn consume(&self, route: &Route) -> Result<Box<dyn Consumer>>;

    /// Tells the worker process on `signal.host` about one of its stages
    /// ahead of its next heartbeat, where the transport reaches workers
    /// (AMQP: the worker's control queue). Best effort: the heartbeat
    /// still decides. The default does nothing (the in-process queue: the
    /// embedded workers' heartbeats are cheap).
    async fn signal(&self, signal: &WorkerSignal) -> Result<()> {
        let _ = signal;
        Ok(())
    }
}

/// A word from the scheduler to the worker holding a stage.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct WorkerSignal {
    /// The worker process's host.
    pub host: String,
    /// The stage's lease.
    pub lease: Lease,
    /// What the worker should do.
    pub action: SignalAction,
}

/// What a [`WorkerSignal`] asks of a worker.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum SignalAction {
    /// The lease changed (the job was aborted): heartbeat now to learn how
    /// (and stop the stage).
    Check,
    /// Hand the stage back (it goes to another worker without using an
    /// attempt): the worker is being drained.
    HandBack,
}

/// Receives the announcements of one queue.
#[async_trait]
pub trait Consumer: Send + fmt::Debug {
    /// Waits for the next delivery. Cancel safe: dropping the future before
    /// it completes loses no announcement.
    async fn next(&mut self) -> Result<Delivery>;
}

/// Answers a delivery to its transport.
#[async_trait]
pub trait Acker: Send + Sync + fmt::Debug {
    /// Done with it: remove it from the queue.
    async fn ack(self: Box<Self>) -> Result<()>;
    /// Not done: put it back (`requeue`) or drop it.
    async fn nack(self: Box<Self>, requeue: bool) -> Result<()>;
}

/// One announcement handed to a consumer, to be acked or nacked. Dropping
/// it unanswered has it redelivered.
#[derive(Debug)]
pub struct Delivery {
    /// The announcement.
    pub announcement: Announcement,
    /// `true` when it was delivered before and not acked.
    pub redelivered: bool,
    acker: Box<dyn Acker>,
}

impl Delivery {
    /// A delivery answered through `acker` (for transport implementors).
    pub fn new(announcement: Announcement, redelivered: bool, acker: Box<dyn Acker>) -> Self {
        Self { announcement, redelivered, acker }
    }

    /// Removes the announcement from the queue.
    pub async fn ack(self) -> Result<()> {
        self.acker.ack().await
    }

    /// Puts the announcement back (`requeue`) or drops it.
    pub async fn nack(self, requeue: bool) -> Result<()> {
        self.acker.nack(requeue).await
    }
}
