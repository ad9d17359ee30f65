//! Workers and helpers shared by the integration tests.
#![allow(dead_code)]

use std::sync::Arc;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::time::Duration;

use kgym_core::{StageContext, StageFailure, StageKind, Worker};
use kgym_sched::{Scheduler, SchedulerExt};
use serde_json::json;

/// Returns at once; counts its runs.
#[derive(Debug)]
pub struct Noop {
    pub kind: StageKind,
    pub runs: AtomicUsize,
}

impl Noop {
    pub fn new(kind: &str) -> Arc<Self> {
        Arc::new(Self { kind: StageKind::new(kind).unwrap(), runs: AtomicUsize::new(0) })
    }
    pub fn runs(&self) -> usize {
        self.runs.load(Ordering::SeqCst)
    }
}

#[async_trait::async_trait]
impl Worker for Noop {
    fn kind(&self) -> StageKind {
        self.kind.clone()
    }
    async fn run(&self, ctx: StageContext) -> Result<serde_json::Value, StageFailure> {
        self.runs.fetch_add(1, Ordering::SeqCst);
        Ok(json!({"job": ctx.job, "stage": ctx.stage}))
    }
}

/// Sleeps `arg.sleep_ms` (or `fast_ms` when set) unless cancelled; counts
/// cancellations.
#[derive(Debug)]
pub struct Sleepy {
    pub kind: StageKind,
    pub fast_ms: Option<u64>,
    pub started: AtomicUsize,
    pub cancelled: AtomicUsize,
}

impl Sleepy {
    pub fn new(kind: &str, fast_ms: Option<u64>) -> Arc<Self> {
        Arc::new(Self {
            kind: StageKind::new(kind).unwrap(),
            fast_ms,
            started: AtomicUsize::new(0),
            cancelled: AtomicUsize::new(0),
        })
    }
}

#[async_trait::async_trait]
impl Worker for Sleepy {
    fn kind(&self) -> StageKind {
        self.kind.clone()
    }
    fn validate(&self, arg: &serde_json::Value) -> Result<(), String> {
        match arg.get("sleep_ms") {
            Some(v) if v.is_u64() => Ok(()),
            _ => Err("sleep_ms must be a number of milliseconds".into()),
        }
    }
    async fn run(&self, ctx: StageContext) -> Result<serde_json::Value, StageFailure> {
        self.started.fetch_add(1, Ordering::SeqCst);
        let ms = self.fast_ms.unwrap_or_else(|| ctx.arg["sleep_ms"].as_u64().unwrap_or(0));
        ctx.log(format!("sleeping {ms} ms on {}", ctx.worker));
        tokio::select! {
            _ = tokio::time::sleep(Duration::from_millis(ms)) => {
                ctx.log("woke up");
                Ok(json!({"slept_ms": ms, "worker": ctx.worker}))
            }
            _ = ctx.cancel.cancelled() => {
                self.cancelled.fetch_add(1, Ordering::SeqCst);
                ctx.log("cancelled: stopping");
                Err(StageFailure::cancelled())
            }
        }
    }
}

/// Waits until `pred` holds for the job (polling; only for test set-up).
pub async fn wait_until(
    sched: &dyn Scheduler,
    id: kgym_core::JobId,
    limit: Duration,
    pred: impl Fn(&kgym_core::Job) -> bool,
) -> kgym_core::Job {
    let start = std::time::Instant::now();
    loop {
        let job = sched.get(id).await.expect("get job");
        if pred(&job) {
            return job;
        }
        assert!(start.elapsed() < limit, "condition not reached in {limit:?}: {job:#?}");
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
}

/// Waits for the job to end, with a limit.
pub async fn finish(sched: &dyn Scheduler, id: kgym_core::JobId, limit: Duration) -> kgym_core::Job {
    sched
        .wait_timeout(id, limit)
        .await
        .expect("wait")
        .unwrap_or_else(|| panic!("job {id} did not end within {limit:?}"))
}
