//! The worker runtime with the embedded scheduler: throughput, cancellation,
//! hand-back on shutdown, log streaming, context.

mod common;

use std::collections::HashSet;
use std::sync::Arc;
use std::sync::atomic::Ordering;
use std::time::Duration;

use common::{Noop, Sleepy, finish, wait_until};
use futures::StreamExt;
use kgym_core::failure::codes;
use kgym_core::{ArtifactKey, JobSpec, JobStatus, StageContext, StageFailure, StageIndex, StageKind, Worker};
use kgym_sched::types::{JobEvent, ListQuery};
use kgym_sched::{Embedded, Error, SchedulerExt};
use serde_json::json;

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_thousand_concurrent_noop_jobs_all_finish_exactly_once() {
    let dir = tempfile::tempdir().unwrap();
    let noop = Noop::new("noop");
    let gym = Embedded::builder().data_dir(dir.path()).worker(noop.clone(), 8).build().await.unwrap();
    let sched = gym.scheduler();
    let ids =
        futures::future::join_all((0..1000).map(|i| {
            let sched = Arc::clone(&sched);
            async move {
                sched.submit(JobSpec::new().stage(StageKind::new("noop").unwrap(), &json!({"i": i}))).await.unwrap()
            }
        }))
        .await;
    assert_eq!(ids.iter().collect::<HashSet<_>>().len(), 1000, "duplicate ids");
    let jobs = futures::future::join_all(ids.iter().map(|id| {
        let sched = Arc::clone(&sched);
        async move { common::finish(&*sched, *id, Duration::from_secs(120)).await }
    }))
    .await;
    for job in &jobs {
        assert!(job.succeeded(), "{job:#?}");
        assert_eq!(job.results.len(), 1);
        assert_eq!(job.results[0].value["job"], json!(job.id));
    }
    assert_eq!(noop.runs(), 1000, "some stage ran twice or never");
    assert_eq!(sched.list(&ListQuery::new()).await.unwrap().total, 1000);
    gym.shutdown().await;
}

#[tokio::test]
async fn abort_reaches_the_running_worker_as_cancellation() {
    let sleepy = Sleepy::new("sleepy", None);
    let gym = Embedded::builder()
        .worker(sleepy.clone(), 1)
        .heartbeat_interval(Duration::from_millis(50))
        .build()
        .await
        .unwrap();
    let sched = gym.scheduler();
    let id = sched
        .submit(JobSpec::new().stage(StageKind::new("sleepy").unwrap(), &json!({"sleep_ms": 60_000})))
        .await
        .unwrap();
    wait_until(&*sched, id, Duration::from_secs(10), |j| j.status == JobStatus::InProgress).await;
    while sleepy.started.load(Ordering::SeqCst) == 0 {
        tokio::time::sleep(Duration::from_millis(10)).await;
    }
    let started = std::time::Instant::now();
    let job = sched.abort(id).await.unwrap();
    assert_eq!(job.status, JobStatus::Aborted);
    while sleepy.cancelled.load(Ordering::SeqCst) == 0 {
        assert!(started.elapsed() < Duration::from_secs(5), "the worker never saw the cancellation");
        tokio::time::sleep(Duration::from_millis(10)).await;
    }
    // The worker's last lines reach the job log.
    let mut lines = Vec::new();
    for _ in 0..100 {
        lines = sched.all_logs(id).await.unwrap().into_iter().map(|l| l.line).collect::<Vec<_>>();
        if lines.iter().any(|l| l == "cancelled: stopping") {
            break;
        }
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    assert!(lines.iter().any(|l| l == "cancelled: stopping"), "{lines:#?}");
    let job = sched.get(id).await.unwrap();
    assert_eq!((job.status, job.results.len()), (JobStatus::Aborted, 0));
    gym.shutdown().await;
}

#[tokio::test]
async fn shutdown_hands_running_stages_back_and_the_next_gym_finishes_them() {
    let dir = tempfile::tempdir().unwrap();
    let sleepy = Sleepy::new("sleepy", None);
    let gym = Embedded::builder().data_dir(dir.path()).worker(sleepy.clone(), 1).build().await.unwrap();
    let sched = gym.scheduler();
    let spec = JobSpec::new().stage(StageKind::new("sleepy").unwrap(), &json!({"sleep_ms": 60_000}));
    let id = sched.submit(spec).await.unwrap();
    wait_until(&*sched, id, Duration::from_secs(10), |j| j.status == JobStatus::InProgress).await;
    assert_eq!(gym.runtime().unwrap().yielded(), 0);
    gym.shutdown().await;
    assert_eq!(sleepy.cancelled.load(Ordering::SeqCst), 1);

    let fast = Sleepy::new("sleepy", Some(10));
    let gym = Embedded::builder().data_dir(dir.path()).worker(fast.clone(), 1).host("second").build().await.unwrap();
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
    let gym = Embedded::builder().worker(Sleepy::new("sleepy", None), 1).build().await.unwrap();
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

#[async_trait::async_trait]
impl Worker for Relay {
    fn kind(&self) -> StageKind {
        StageKind::new("relay").unwrap()
    }
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
    let gym = Embedded::builder().data_dir(dir.path()).worker(Arc::new(Relay), 2).build().await.unwrap();
    let sched = gym.scheduler();
    let kind = StageKind::new("relay").unwrap();
    let job = sched.run(JobSpec::new().stage(kind.clone(), &json!({})).stage(kind, &json!({}))).await.unwrap();
    assert!(job.succeeded(), "{job:#?}");
    assert_eq!(job.results[1].value["read"], "hello");
    let key = ArtifactKey::parse(format!("jobs/{}/0_relay/data", job.id)).unwrap();
    assert!(gym.artifacts().local_path(&key).unwrap().exists(), "artifacts live in the data dir");
    gym.shutdown().await;
}

#[derive(Debug)]
struct Panics;

#[async_trait::async_trait]
impl Worker for Panics {
    fn kind(&self) -> StageKind {
        StageKind::new("panics").unwrap()
    }
    async fn run(&self, _: StageContext) -> Result<serde_json::Value, StageFailure> {
        panic!("worker bug")
    }
}

#[tokio::test]
async fn a_panicking_worker_is_retried_then_fails_as_internal() {
    let gym = Embedded::builder().worker(Arc::new(Panics), 1).max_attempts(2).build().await.unwrap();
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
    let gym = Embedded::builder().worker(Sleepy::new("sleepy", None), 1).build().await.unwrap();
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

#[tokio::test]
async fn listening_beyond_loopback_needs_a_token() {
    let err = Embedded::builder().serve_http("0.0.0.0:0".parse().unwrap(), None).build().await.unwrap_err();
    assert!(matches!(err, Error::InsecureListen { .. }), "{err:?}");
}
