//! Workers and helpers shared by the integration tests.
#![allow(dead_code)]

use std::sync::Arc;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::time::Duration;

use kgym_core::stage::StagePosition;
use kgym_core::{InvalidArgs, StageContext, StageFailure, StageKind, StageSchema, Worker};
use kgym_sched::http::{HttpServer, ServerHandle, ServerOptions};
use kgym_sched::runtime::{RuntimeHandle, RuntimeOptions, WorkerRuntime};
use kgym_sched::sqlite::{SchedulerOptions, SqliteScheduler};
use kgym_sched::{Scheduler, SchedulerExt, StageRegistry};
use serde_json::json;

/// A scheduler with in-process workers and, optionally, the HTTP API: the
/// wiring the `kgym` facade's `Gym` does, by hand, for these tests.
pub struct TestGym {
    pub sched: SqliteScheduler,
    pub runtime: Option<RuntimeHandle>,
    pub server: Option<ServerHandle>,
}

/// Settings of a [`TestGym`].
#[derive(Default)]
pub struct TestGymConfig {
    /// The SQLite file (in memory without it).
    pub database: Option<std::path::PathBuf>,
    /// Artifacts (in memory without it).
    pub artifacts: Option<kgym_core::ArtifactStore>,
    /// In-process workers and their slots.
    pub workers: Vec<(Arc<dyn Worker>, u32)>,
    /// Kinds accepted beyond the workers'.
    pub kinds: Vec<StageKind>,
    pub scheduler: SchedulerOptions,
    pub runtime: Option<RuntimeOptions>,
    /// Serve HTTP on 127.0.0.1 with these options.
    pub http: Option<ServerOptions>,
}

impl TestGym {
    pub async fn start(config: TestGymConfig) -> Self {
        let mut stages = StageRegistry::new();
        for (w, _) in &config.workers {
            stages.insert_schema(Arc::clone(w) as Arc<dyn StageSchema>);
        }
        for k in config.kinds {
            stages.insert_kind(k);
        }
        let artifacts = config.artifacts.unwrap_or_else(kgym_core::ArtifactStore::in_memory);
        let mut b = SqliteScheduler::builder().stages(stages).options(config.scheduler).artifacts(artifacts.clone());
        if let Some(db) = config.database {
            b = b.database(db);
        }
        let sched = b.build().await.expect("scheduler");
        let runtime = if config.workers.is_empty() {
            None
        } else {
            let mut rb = WorkerRuntime::builder(Arc::new(sched.clone()))
                .options(config.runtime.unwrap_or_default())
                .artifacts(artifacts);
            for (w, n) in config.workers {
                rb = rb.worker(w, n);
            }
            Some(rb.start().await.expect("runtime"))
        };
        let server = match config.http {
            Some(options) => Some(
                HttpServer::builder(Arc::new(sched.clone()))
                    .worker_backend(Arc::new(sched.clone()))
                    .options(options)
                    .serve("127.0.0.1:0".parse().unwrap())
                    .await
                    .expect("server"),
            ),
            None => None,
        };
        Self { sched, runtime, server }
    }

    /// In memory, with `workers`.
    pub async fn with_workers(workers: Vec<(Arc<dyn Worker>, u32)>) -> Self {
        Self::start(TestGymConfig { workers, ..Default::default() }).await
    }

    pub fn scheduler(&self) -> Arc<dyn Scheduler> {
        Arc::new(self.sched.clone())
    }

    pub fn url(&self) -> String {
        self.server.as_ref().expect("serving").url()
    }

    pub async fn shutdown(self) {
        if let Some(s) = self.server {
            s.shutdown().await;
        }
        if let Some(r) = self.runtime {
            r.shutdown().await;
        }
        self.sched.close();
    }
}

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

impl StageSchema for Noop {
    fn kind(&self) -> StageKind {
        self.kind.clone()
    }
}

#[async_trait::async_trait]
impl Worker for Noop {
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

impl StageSchema for Sleepy {
    fn kind(&self) -> StageKind {
        self.kind.clone()
    }
    fn validate(&self, arg: &serde_json::Value, _at: &StagePosition<'_>) -> Result<(), InvalidArgs> {
        match arg.get("sleep_ms") {
            Some(v) if v.is_u64() => Ok(()),
            _ => Err(InvalidArgs {
                kind: self.kind.clone(),
                problems: vec!["sleep_ms must be a number of milliseconds".into()],
            }),
        }
    }
}

#[async_trait::async_trait]
impl Worker for Sleepy {
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
