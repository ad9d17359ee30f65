//! Conformance suites for every seam with more than one implementation, in
//! the style of `object_store`'s `integration.rs`: public async functions
//! that drive a `&dyn Trait` and panic on a violation. A new transport
//! proves itself by passing them.
//!
//! - [`queue`]: announcement transports ([`Queue`](crate::queue::Queue)).
//! - [`scheduler`]: [`Scheduler`] implementations (SQLite, the HTTP client,
//!   ...), driven together with the worker backend that serves them.
//! - [`workers`]: [`WorkerBackend`] implementations (in-process, HTTP, ...),
//!   including the worker runtime running over them.
//!
//! Every test uses stage kinds no earlier run used (registered through the
//! backend), so the suites can run against a long-lived service.
//!
//! ```
//! use std::sync::Arc;
//! use std::time::Duration;
//! use kgym_sched::conformance::{self, Harness};
//! use kgym_sched::sqlite::{SchedulerOptions, SqliteScheduler};
//!
//! # tokio::runtime::Runtime::new().unwrap().block_on(async {
//! let options = SchedulerOptions::default().lease_ttl(Duration::from_millis(300)).max_attempts(2);
//! let sched = SqliteScheduler::builder().options(options).build().await.unwrap();
//! let harness = Harness {
//!     scheduler: Arc::new(sched.clone()),
//!     workers: Arc::new(sched.clone()),
//!     artifacts: sched.artifacts().clone(),
//!     max_attempts: 2,
//! };
//! conformance::scheduler::run_all(&harness).await;
//! conformance::workers::run_all(&harness).await;
//! # });
//! ```

pub mod queue;
pub mod scheduler;
pub mod workers;

use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::Duration;

use kgym_core::{ArtifactStore, JobSpec, StageKind};
use serde_json::json;

use crate::scheduler::Scheduler;
use crate::worker_api::{Claim, ClaimRequest, WorkerBackend, WorkerInfo};

/// What the scheduler and worker-backend suites drive: a scheduler and the
/// worker backend that serves its stages (over the same state).
///
/// Build the backend with a lease of 300 ms to 1 s (the suites wait for
/// leases to expire, and race claims within one lease) and `max_attempts`
/// of at least 2.
#[derive(Debug, Clone)]
pub struct Harness {
    /// The scheduler under test (or the one the backend under test serves).
    pub scheduler: Arc<dyn Scheduler>,
    /// The worker backend under test (or the one serving the scheduler).
    pub workers: Arc<dyn WorkerBackend>,
    /// The artifact store the scheduler cleans on restart.
    pub artifacts: ArtifactStore,
    /// The attempts the scheduler allows a stage.
    pub max_attempts: u32,
}

/// How long a test waits for something that must happen.
pub(crate) const MUST_HAPPEN: Duration = Duration::from_secs(10);

/// A stage kind no earlier run used.
pub(crate) fn fresh_kind(test: &str) -> StageKind {
    static N: AtomicU64 = AtomicU64::new(0);
    let nanos =
        std::time::SystemTime::now().duration_since(std::time::UNIX_EPOCH).map(|d| d.as_nanos() as u64).unwrap_or(0);
    let n = N.fetch_add(1, Ordering::Relaxed);
    StageKind::new(format!("conf-{test}-{:x}-{n}", nanos & 0xffff_ffff_ffff)).expect("valid kind")
}

impl Harness {
    /// `sched` as both the scheduler and the worker backend under test
    /// (in-process workers), with its artifacts and attempt limit.
    pub fn embedded(sched: &crate::sqlite::SqliteScheduler) -> Self {
        Self {
            scheduler: Arc::new(sched.clone()),
            workers: Arc::new(sched.clone()),
            artifacts: sched.artifacts().clone(),
            max_attempts: sched.options().max_attempts,
        }
    }

    /// A fresh kind, registered through the backend (so it is accepted at
    /// submit) by a worker host named after the test.
    pub(crate) async fn kind(&self, test: &str) -> StageKind {
        let kind = fresh_kind(test);
        let info = WorkerInfo::new(format!("conformance-{test}"), vec![(kind.clone(), 1)]);
        self.workers.register(&info).await.expect("register a worker");
        kind
    }

    /// A job of `stages` stages of `kind`.
    pub(crate) fn spec(kind: &StageKind, stages: usize) -> JobSpec {
        (0..stages).fold(JobSpec::new(), |s, i| s.stage(kind.clone(), &json!({ "i": i })))
    }

    /// A claim request for `kind` by `worker`, waiting up to `wait`.
    pub(crate) fn request(kind: &StageKind, worker: &str, wait: Duration) -> ClaimRequest {
        ClaimRequest { kind: kind.clone(), worker: format!("conformance/{worker}"), host: "conformance".into(), wait }
    }

    /// Claims the next stage of `kind`, which must come.
    pub(crate) async fn claim(&self, kind: &StageKind, worker: &str) -> Claim {
        let req = Self::request(kind, worker, MUST_HAPPEN);
        self.workers.claim(&req).await.expect("claim").unwrap_or_else(|| panic!("a {kind} stage should be ready"))
    }

    /// Claims with a short wait: `None` when nothing is ready.
    pub(crate) async fn try_claim(&self, kind: &StageKind, worker: &str) -> Option<Claim> {
        let req = Self::request(kind, worker, Duration::from_millis(300));
        self.workers.claim(&req).await.expect("claim")
    }
}
