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
