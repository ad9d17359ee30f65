//! The worker runtime in-process beyond the conformance suite
//! (`tests/conformance.rs`): hand-back across a restart of the whole gym,
//! log streaming, the stage context, panics, submit-time checks.

mod common;

use std::sync::Arc;
use std::sync::atomic::Ordering;
use std::time::Duration;

use common::{Sleepy, TestGym, TestGymConfig, finish, wait_until};
use futures::StreamExt;
use kgym_core::failure::codes;
use kgym_core::{
    ArtifactKey, JobSpec, JobStatus, StageContext, StageFailure, StageIndex, StageKind, StageSchema, Worker,
};
use kgym_sched::runtime::RuntimeOptions;
use kgym_sched::sqlite::SchedulerOptions;
use kgym_sched::types::JobEvent;
use kgym_sched::{Error, SchedulerExt};
use serde_json::json;

/// A gym with its database in `dir` and `worker`.
async fn gym_in(dir: &std::path::Path, worker: Arc<dyn Worker>, host: &str) -> TestGym {
    TestGym::start(TestGymConfig {
        database: Some(dir.join("jobs.sqlite3")),
        artifacts: Some(kgym_core::ArtifactStore::local(dir.join("artifacts")).unwrap()),
        workers: vec![(worker, 1)],
        runtime: Some(RuntimeOptions::default().host(host)),
        ..Default::default()
    })
    .await
}

#[tokio::test]
async fn shutdown_hands_running_stages_back_and_the_next_gym_finishes_them() {
    let dir = tempfile::tempdir().unwrap();
    let sleepy = Sleepy::new("sleepy", None);
    let gym = gym_in(dir.path(), sleepy.clone(), "first").await;
    let sched = gym.scheduler();
    let spec = JobSpec::new().stage(StageKind::new("sleepy").unwrap(), &json!({"sleep_ms": 60_000}));
    let id = sched.submit(spec).await.unwrap();
    wait_until(&*sched, id, Duration::from_secs(10), |j| j.status == JobStatus::InProgress).await;
    assert_eq!(gym.runtime.as_ref().unwrap().yielded(), 0);
    gym.shutdown().await;
    assert_eq!(sleepy.cancelled.load(Ordering::SeqCst), 1);

    let fast = Sleepy::new("sleepy", Some(10));
    let gym = gym_in(dir.path(), fast.clone(), "second").await;
    let sched = gym.scheduler();
    let job = finish(&*sched, id, Duration::from_secs(20)).await;
    assert!(job.succeeded(), "{job:#?}");
    assert!(job.results[0].worker.as_deref().unwrap().starts_with("second/"));
    let lines: Vec<String> = sched.all_logs(id).await.unwrap().into_iter().map(|l| l.line).collect();
    assert!(lines.iter().any(|l| l.contains("handed back")), "{lines:#?}");
    gym.shutdown().await;
}

#[tokio::test]
async fn worker_lines_stream_to_watchers_and_into_the_job_log() {
    let gym = TestGym::with_workers(vec![(Sleepy::new("sleepy", None), 1)]).await;
    let sched = gym.scheduler();
    let id =
        sched.submit(JobSpec::new().stage(StageKind::new("sleepy").unwrap(), &json!({"sleep_ms": 50}))).await.unwrap();
    let events: Vec<JobEvent> = sched.watch(id).await.unwrap().map(|e| e.unwrap()).collect().await;
    let logged: Vec<&str> = events
        .iter()
        .filter_map(|e| match e {
            JobEvent::Log(l) => Some(l.line.as_str()),
            _ => None,
        })
        .collect();
    assert!(logged.contains(&"woke up"), "{events:#?}");
    assert!(events.last().unwrap().is_terminal());
    let log = sched.all_logs(id).await.unwrap();
    let woke = log.iter().find(|l| l.line == "woke up").unwrap();
    assert_eq!(woke.stage, Some(StageIndex(0)));
    assert!(woke.worker.as_deref().unwrap().ends_with("/sleepy-0"));
    gym.shutdown().await;
}

/// Stage 0 writes an artifact; stage 1 reads it through the previous result.
#[derive(Debug)]
struct Relay;

impl StageSchema for Relay {
    fn kind(&self) -> StageKind {
        StageKind::new("relay").unwrap()
    }
}

#[async_trait::async_trait]
impl Worker for Relay {
    async fn run(&self, ctx: StageContext) -> Result<serde_json::Value, StageFailure> {
        if ctx.stage == StageIndex(0) {
            let key = ctx.artifact_key("data")?;
            ctx.artifacts.put(&key, b"hello".to_vec()).await.map_err(|e| StageFailure::internal(&e))?;
            Ok(json!({"key": key}))
        } else {
            #[derive(serde::Deserialize)]
            struct Prev {
                key: ArtifactKey,
            }
            let prev: Prev = ctx.previous_result(StageIndex(0))?;
            let data = ctx.artifacts.get(&prev.key).await.map_err(|e| StageFailure::internal(&e))?;
            Ok(json!({"read": String::from_utf8_lossy(&data)}))
        }
    }
}

#[tokio::test]
async fn stages_get_previous_results_and_the_artifact_store() {
    let dir = tempfile::tempdir().unwrap();
    let gym = gym_in(dir.path(), Arc::new(Relay), "relay").await;
    let sched = gym.scheduler();
    let kind = StageKind::new("relay").unwrap();
    let job = sched.run(JobSpec::new().stage(kind.clone(), &json!({})).stage(kind, &json!({}))).await.unwrap();
    assert!(job.succeeded(), "{job:#?}");
    assert_eq!(job.results[1].value["read"], "hello");
    let key = ArtifactKey::parse(format!("jobs/{}/0_relay/data", job.id)).unwrap();
    assert!(gym.sched.artifacts().local_path(&key).unwrap().exists(), "artifacts live in the data dir");
    gym.shutdown().await;
}

#[derive(Debug)]
struct Panics;

impl StageSchema for Panics {
    fn kind(&self) -> StageKind {
        StageKind::new("panics").unwrap()
    }
}

#[async_trait::async_trait]
impl Worker for Panics {
    async fn run(&self, _: StageContext) -> Result<serde_json::Value, StageFailure> {
        panic!("worker bug")
    }
}

#[tokio::test]
async fn a_panicking_worker_is_retried_then_fails_as_internal() {
    let gym = TestGym::start(TestGymConfig {
        workers: vec![(Arc::new(Panics), 1)],
        scheduler: SchedulerOptions::default().max_attempts(2),
        ..Default::default()
    })
    .await;
    let sched = gym.scheduler();
    let job = sched.run(JobSpec::new().stage(StageKind::new("panics").unwrap(), &json!({}))).await.unwrap();
    let (_, f) = job.failure().unwrap();
    assert_eq!(f.code, codes::INTERNAL);
    assert!(f.message.contains("worker bug"), "{f:?}");
    let lines: Vec<String> = sched.all_logs(job.id).await.unwrap().into_iter().map(|l| l.line).collect();
    assert!(lines.iter().any(|l| l.contains("will retry")), "{lines:#?}");
    gym.shutdown().await;
}

#[tokio::test]
async fn in_process_workers_validate_arguments_at_submit() {
    let gym = TestGym::with_workers(vec![(Sleepy::new("sleepy", None), 1)]).await;
    let err = gym
        .scheduler()
        .submit(JobSpec::new().stage(StageKind::new("sleepy").unwrap(), &json!({"sleep_ms": "long"})))
        .await
        .unwrap_err();
    match err {
        Error::Validation { problems } => assert_eq!(problems[0].message, "sleep_ms must be a number of milliseconds"),
        other => panic!("unexpected {other:?}"),
    }
    gym.shutdown().await;
}

/// A scheduler whose claim answers take `delay` to reach the worker (a
/// slow network): the stage is already the worker's at the scheduler while
/// the answer is on its way.
#[derive(Debug)]
struct SlowAnswers {
    inner: kgym_sched::sqlite::SqliteScheduler,
    delay: Duration,
    handed_out: tokio::sync::Notify,
}

#[async_trait::async_trait]
impl kgym_sched::worker_api::WorkerBackend for SlowAnswers {
    async fn register(&self, info: &kgym_sched::worker_api::WorkerInfo) -> kgym_sched::Result<()> {
        self.inner.register(info).await
    }
    async fn claim(
        &self,
        req: &kgym_sched::worker_api::ClaimRequest,
    ) -> kgym_sched::Result<Option<kgym_sched::worker_api::Claim>> {
        let claim = self.inner.claim(req).await?;
        if claim.is_some() {
            self.handed_out.notify_one();
            tokio::time::sleep(self.delay).await;
        }
        Ok(claim)
    }
    async fn heartbeat(
        &self,
        lease: &kgym_sched::worker_api::Lease,
    ) -> kgym_sched::Result<kgym_sched::worker_api::LeaseStatus> {
        self.inner.heartbeat(lease).await
    }
    async fn append_log(
        &self,
        lease: &kgym_sched::worker_api::Lease,
        worker: &str,
        lines: &[String],
    ) -> kgym_sched::Result<()> {
        self.inner.append_log(lease, worker, lines).await
    }
    async fn report(
        &self,
        lease: &kgym_sched::worker_api::Lease,
        outcome: kgym_sched::worker_api::StageOutcome,
    ) -> kgym_sched::Result<kgym_sched::worker_api::ReportAck> {
        self.inner.report(lease, outcome).await
    }
    async fn yield_stage(&self, lease: &kgym_sched::worker_api::Lease) -> kgym_sched::Result<()> {
        self.inner.yield_stage(lease).await
    }
    async fn worker_event(&self, host: &str, kind: Option<&StageKind>, message: &str) -> kgym_sched::Result<()> {
        self.inner.worker_event(host, kind, message).await
    }
    async fn deregister(&self, host: &str) -> kgym_sched::Result<()> {
        self.inner.deregister(host).await
    }
}

/// A worker told to stop while the answer to its claim is on its way (the
/// stage is already its own at the scheduler) takes the answer and hands
/// the stage back, instead of leaving it leased to nobody until the lease
/// (10 minutes here) expires. CI caught the race with a worker process
/// sent SIGTERM right after the scheduler showed its stage in progress.
#[tokio::test]
async fn a_claim_answered_as_the_worker_stops_is_handed_back() {
    use kgym_sched::Scheduler;
    use kgym_sched::worker_api::WorkerBackend;
    let sched = kgym_sched::sqlite::SqliteScheduler::builder()
        .options(SchedulerOptions::default().lease_ttl(Duration::from_secs(600)))
        .build()
        .await
        .unwrap();
    let kind = StageKind::new("slow-answer").unwrap();
    let backend = Arc::new(SlowAnswers {
        inner: sched.clone(),
        delay: Duration::from_millis(200),
        handed_out: tokio::sync::Notify::new(),
    });
    let runtime = kgym_sched::runtime::WorkerRuntime::builder(backend.clone())
        .options(RuntimeOptions::default().host("stopping"))
        .worker(common::Sleepy::new("slow-answer", None), 1)
        .start()
        .await
        .unwrap();
    let id = sched.submit(JobSpec::new().stage(kind, &json!({"sleep_ms": 60_000}))).await.unwrap();
    tokio::time::timeout(Duration::from_secs(10), backend.handed_out.notified()).await.expect("the stage handed out");
    assert_eq!(sched.get(id).await.unwrap().status, JobStatus::InProgress);
    runtime.shutdown().await;
    let job = sched.get(id).await.unwrap();
    assert_eq!(job.status, JobStatus::Pending, "the stage stays leased to a stopped worker: {job:#?}");
    let lines: Vec<String> = sched.all_logs(id).await.unwrap().into_iter().map(|l| l.line).collect();
    assert!(lines.iter().any(|l| l.contains("handed back")), "{lines:#?}");
    // Handing back used no attempt: the next worker runs attempt 1 again.
    let next = sched
        .claim(&kgym_sched::worker_api::ClaimRequest {
            kind: StageKind::new("slow-answer").unwrap(),
            worker: "next/slow-answer-0".into(),
            host: "next".into(),
            wait: Duration::from_secs(5),
        })
        .await
        .unwrap()
        .expect("the stage is ready again");
    assert_eq!((next.lease.job, next.attempt), (id, 1));
}
