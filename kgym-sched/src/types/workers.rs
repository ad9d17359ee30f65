//! The worker processes a scheduler knows, as
//! [`Scheduler::workers`](crate::Scheduler::workers) shows them.

use std::collections::BTreeMap;

use chrono::{DateTime, Utc};
use kgym_core::{JobId, StageIndex, StageKind};
use serde::{Deserialize, Serialize};

/// A worker process (one host) as the scheduler knows it.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct WorkerStatus {
    /// The host it runs on (kGym's `worker-hostname`).
    pub host: String,
    /// The kinds it runs, with its slots for each.
    pub kinds: Vec<(StageKind, u32)>,
    /// The labels it declared (its pool, its arch, ...).
    #[serde(default)]
    pub labels: BTreeMap<String, String>,
    /// When it (last) registered.
    pub registered: DateTime<Utc>,
    /// When it last claimed, heartbeat or registered.
    pub last_seen: DateTime<Utc>,
    /// Whether it is alive: seen recently and not stopped.
    pub live: bool,
    /// When it said it stopped, if it did.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub stopped: Option<DateTime<Utc>>,
    /// The stages its slots hold now.
    #[serde(default)]
    pub running: Vec<RunningStage>,
}

/// A stage a worker holds.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct RunningStage {
    /// The job.
    pub job: JobId,
    /// The stage.
    pub stage: StageIndex,
    /// Its kind.
    pub kind: StageKind,
    /// The slot holding it (`host/kind-slot`).
    pub worker: String,
    /// When the slot took it.
    pub since: DateTime<Utc>,
    /// When its lease runs out unless renewed.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub lease_expires: Option<DateTime<Utc>>,
    /// Which hand-out of the stage this is.
    pub attempt: u32,
}
