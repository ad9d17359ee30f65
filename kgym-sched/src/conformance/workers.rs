//! The conformance suite of [`WorkerBackend`](crate::worker_api::WorkerBackend)
//! implementations: claims, leases, heartbeats, reports, hand-backs and
//! logs as a worker sees them, then the [`WorkerRuntime`] running real
//! (no-op, slow, logging) workers over the backend.

use std::sync::Arc;
use std::sync::atomic::{AtomicU32, Ordering};
use std::time::Duration;

use async_trait::async_trait;
use kgym_core::failure::codes;
use kgym_core::{
    JobSpec, JobStatus, Labels, StageContext, StageFailure, StageIndex, StageKind, StageSchema, StageSpec, Worker,
};
use serde_json::json;

use super::{Harness, MUST_HAPPEN};
use crate::error::Error;
use crate::runtime::{RuntimeOptions, WorkerRuntime};
use crate::scheduler::SchedulerExt;
use crate::worker_api::{ClaimRequest, LeaseStatus, ReportAck, StageOutcome, WorkerInfo};

/// Runs every test of the suite.
pub async fn run_all(h: &Harness) {
    a_claim_carries_the_job_context(h).await;
    a_spent_lease_is_refused(h).await;
    retryable_failures_are_retried_up_to_the_attempt_limit(h).await;
    expired_leases_requeue_then_fail_with_worker_lost(h).await;
    heartbeats_keep_a_lease_alive(h).await;
    yield_hands_the_stage_back_without_using_an_attempt(h).await;
    an_aborted_stage_hears_cancelled_and_keeps_its_last_lines(h).await;
    concurrent_claims_of_one_stage_have_one_winner(h).await;
    claims_of_another_kind_get_nothing(h).await;
    stages_go_to_the_workers_of_their_pool(h).await;
    the_runtime_runs_many_jobs_exactly_once(h).await;
    the_runtime_cancels_an_aborted_stage(h).await;
    the_runtime_hands_stages_back_on_shutdown(h).await;
}

/// A claim carries the job's stages, tags, the earlier results and the
/// attempt number; the job shows the claiming worker.
pub async fn a_claim_carries_the_job_context(h: &Harness) {
    let kind = h.kind("context").await;
    let id = h.scheduler.submit(Harness::spec(&kind, 2).tag("k", "v")).await.unwrap();
    let c = h.claim(&kind, "w0").await;
    assert_eq!((c.lease.job, c.lease.stage, c.attempt, c.kind.clone()), (id, StageIndex(0), 1, kind.clone()));
    assert_eq!((c.stages.len(), c.tags["k"].as_str(), c.previous.len()), (2, "v", 0));
    assert!(c.lease_ttl > Duration::ZERO);
    assert_eq!(
        h.workers.report(&c.lease, StageOutcome::Success(json!({"out": 7}))).await.unwrap(),
        ReportAck::Recorded
    );
    let c1 = h.claim(&kind, "w1").await;
    assert_eq!(c1.lease.stage, StageIndex(1));
    assert_eq!(c1.previous.len(), 1);
    assert_eq!(c1.previous[0].value["out"], 7);
    assert_ne!(c.lease.token, c1.lease.token);
    h.workers.report(&c1.lease, StageOutcome::Success(json!(null))).await.unwrap();
}

/// Reports and heartbeats on a lease that was spent are refused.
pub async fn a_spent_lease_is_refused(h: &Harness) {
    let kind = h.kind("spent").await;
    h.scheduler.submit(Harness::spec(&kind, 1)).await.unwrap();
    let c = h.claim(&kind, "w").await;
    h.workers.report(&c.lease, StageOutcome::Success(json!(1))).await.unwrap();
    assert!(matches!(h.workers.report(&c.lease, StageOutcome::Success(json!(2))).await, Err(Error::LeaseLost { .. })));
    assert_eq!(h.workers.heartbeat(&c.lease).await.unwrap(), LeaseStatus::Lost);
    let mut forged = c.lease.clone();
    forged.token = "forged".into();
    assert!(matches!(h.workers.report(&forged, StageOutcome::Success(json!(3))).await, Err(Error::LeaseLost { .. })));
}

/// A retryable failure goes back on the queue until the attempts are used
/// up; then it is the stage's result.
pub async fn retryable_failures_are_retried_up_to_the_attempt_limit(h: &Harness) {
    let kind = h.kind("retry").await;
    let id = h.scheduler.submit(Harness::spec(&kind, 1)).await.unwrap();
    let broke = StageFailure::new(codes::INTERNAL, "disk full").retryable();
    for attempt in 1..h.max_attempts {
        let c = h.claim(&kind, &format!("w{attempt}")).await;
        assert_eq!(c.attempt, attempt);
        let ack = h.workers.report(&c.lease, StageOutcome::Failure(broke.clone())).await.unwrap();
        assert_eq!(ack, ReportAck::Requeued);
        assert_eq!(h.scheduler.get(id).await.unwrap().status, JobStatus::Pending);
    }
    let c = h.claim(&kind, "last").await;
    assert_eq!(c.attempt, h.max_attempts);
    assert_eq!(h.workers.report(&c.lease, StageOutcome::Failure(broke)).await.unwrap(), ReportAck::Recorded);
    let job = h.scheduler.get(id).await.unwrap();
    assert_eq!(job.status, JobStatus::Finished);
    assert_eq!(job.failure().unwrap().1.code, codes::INTERNAL);
}

/// A lease without heartbeats expires: the stage is handed out again, and
/// after the last attempt the job fails with `worker-lost`.
pub async fn expired_leases_requeue_then_fail_with_worker_lost(h: &Harness) {
    let kind = h.kind("expire").await;
    let id = h.scheduler.submit(Harness::spec(&kind, 1)).await.unwrap();
    let first = h.claim(&kind, "dies-1").await;
    assert!(first.lease_ttl <= Duration::from_secs(1), "the suite needs a lease of at most 1 s");
    let mut previous = first.clone();
    for attempt in 2..=h.max_attempts {
        let next = h.claim(&kind, &format!("dies-{attempt}")).await;
        assert_eq!((next.lease.job, next.attempt), (id, attempt));
        assert_ne!(previous.lease.token, next.lease.token);
        assert_eq!(h.workers.heartbeat(&previous.lease).await.unwrap(), LeaseStatus::Lost);
        previous = next;
    }
    let job = tokio::time::timeout(MUST_HAPPEN, h.scheduler.wait(id)).await.expect("worker-lost in time").unwrap();
    assert_eq!(job.status, JobStatus::Finished);
    let (_, f) = job.failure().unwrap();
    assert_eq!(f.code, codes::WORKER_LOST);
    assert!(f.message.contains(&format!("handed out {} times", h.max_attempts)), "{}", f.message);
}

/// Heartbeats keep a lease alive well past its length.
pub async fn heartbeats_keep_a_lease_alive(h: &Harness) {
    let kind = h.kind("alive").await;
    let id = h.scheduler.submit(Harness::spec(&kind, 1)).await.unwrap();
    let c = h.claim(&kind, "alive").await;
    let every = c.lease_ttl / 3;
    for _ in 0..9 {
        tokio::time::sleep(every).await;
        assert_eq!(h.workers.heartbeat(&c.lease).await.unwrap(), LeaseStatus::Active);
    }
    assert_eq!(h.scheduler.get(id).await.unwrap().status, JobStatus::InProgress);
    h.workers.report(&c.lease, StageOutcome::Success(json!(null))).await.unwrap();
    assert!(h.scheduler.get(id).await.unwrap().succeeded());
}

/// A stage handed back goes to the next worker without using an attempt.
pub async fn yield_hands_the_stage_back_without_using_an_attempt(h: &Harness) {
    let kind = h.kind("yield").await;
    let id = h.scheduler.submit(Harness::spec(&kind, 1)).await.unwrap();
    let c = h.claim(&kind, "leaving").await;
    h.workers.yield_stage(&c.lease).await.unwrap();
    assert_eq!(h.scheduler.get(id).await.unwrap().status, JobStatus::Pending);
    let again = h.claim(&kind, "next").await;
    assert_eq!((again.lease.job, again.attempt), (id, 1));
    h.workers.report(&again.lease, StageOutcome::Success(json!(null))).await.unwrap();
}

/// After an abort the holder's heartbeat says "cancelled", its last log
/// lines are kept and its result is refused.
pub async fn an_aborted_stage_hears_cancelled_and_keeps_its_last_lines(h: &Harness) {
    let kind = h.kind("aborted").await;
    let id = h.scheduler.submit(Harness::spec(&kind, 1)).await.unwrap();
    let c = h.claim(&kind, "w").await;
    h.scheduler.abort(id).await.unwrap();
    assert_eq!(h.workers.heartbeat(&c.lease).await.unwrap(), LeaseStatus::Cancelled);
    h.workers.append_log(&c.lease, "conformance/w", &["killed make".into()]).await.unwrap();
    assert!(matches!(h.workers.report(&c.lease, StageOutcome::Success(json!(1))).await, Err(Error::LeaseLost { .. })));
    let lines: Vec<String> = h.scheduler.all_logs(id).await.unwrap().into_iter().map(|l| l.line).collect();
    assert!(lines.iter().any(|l| l == "killed make"), "{lines:?}");
}

/// Of many workers claiming at once, one gets the stage (the claims wait
/// less than a lease lasts, so the winner's lease cannot expire meanwhile).
pub async fn concurrent_claims_of_one_stage_have_one_winner(h: &Harness) {
    let kind = h.kind("race").await;
    let id = h.scheduler.submit(Harness::spec(&kind, 1)).await.unwrap();
    let claims = futures::future::join_all((0..16).map(|i| {
        let (workers, kind) = (Arc::clone(&h.workers), kind.clone());
        async move { workers.claim(&Harness::request(&kind, &format!("w{i}"), Duration::from_millis(150))).await }
    }))
    .await;
    let winners: Vec<_> = claims.into_iter().filter_map(|c| c.expect("claim")).collect();
    assert_eq!(winners.len(), 1, "{winners:?}");
    assert_eq!(winners[0].lease.job, id);
    h.workers.report(&winners[0].lease, StageOutcome::Success(json!(null))).await.unwrap();
}

/// A claim only gets stages of its own kind.
pub async fn claims_of_another_kind_get_nothing(h: &Harness) {
    let kind = h.kind("mine").await;
    let other = h.kind("other").await;
    h.scheduler.submit(Harness::spec(&kind, 1)).await.unwrap();
    assert!(h.try_claim(&other, "w").await.is_none());
    let c = h.claim(&kind, "w").await;
    h.workers.report(&c.lease, StageOutcome::Success(json!(null))).await.unwrap();
}

/// A worker that counts its runs and optionally sleeps.
#[derive(Debug)]
struct Counting {
    kind: StageKind,
    runs: AtomicU32,
    sleep: Duration,
}

impl StageSchema for Counting {
    fn kind(&self) -> StageKind {
        self.kind.clone()
    }
}

#[async_trait]
impl Worker for Counting {
    async fn run(&self, ctx: StageContext) -> Result<serde_json::Value, StageFailure> {
        self.runs.fetch_add(1, Ordering::SeqCst);
        ctx.log(format!("running stage {}", ctx.stage));
        tokio::select! {
            _ = ctx.cancel.cancelled() => Err(StageFailure::cancelled()),
            _ = tokio::time::sleep(self.sleep) => Ok(json!({"job": ctx.job, "stage": ctx.stage})),
        }
    }
}

fn counting(kind: StageKind, sleep: Duration) -> Arc<Counting> {
    Arc::new(Counting { kind, runs: AtomicU32::new(0), sleep })
}

fn runtime_options(test: &str) -> RuntimeOptions {
    RuntimeOptions::default()
        .host(format!("conformance-{test}"))
        .heartbeat(Duration::from_millis(50))
        .claim_wait(Duration::from_millis(500))
        .grace(Duration::from_secs(5))
}

/// The runtime, with several slots over the backend, runs 200 two-stage
/// jobs: every stage exactly once (or again only after its lease was
/// lost), with its log lines in the job log.
pub async fn the_runtime_runs_many_jobs_exactly_once(h: &Harness) {
    let kind = h.kind("many").await;
    let worker = counting(kind.clone(), Duration::ZERO);
    let runtime = WorkerRuntime::builder(Arc::clone(&h.workers))
        .options(runtime_options("many"))
        .artifacts(h.artifacts.clone())
        .worker(worker.clone(), 8)
        .start()
        .await
        .unwrap();
    let ids = futures::future::join_all((0..200).map(|_| h.scheduler.submit(Harness::spec(&kind, 2)))).await;
    let ids: Vec<_> = ids.into_iter().map(|r| r.unwrap()).collect();
    for id in &ids {
        let job = tokio::time::timeout(MUST_HAPPEN * 3, h.scheduler.wait(*id)).await.expect("in time").unwrap();
        assert!(job.succeeded(), "{job:?}");
        assert_eq!(job.results[1].value["stage"], 1);
    }
    // A stage runs again only after its lease expired (a worker too slow
    // to renew it on a loaded machine); every such case is in the job log.
    let mut expired = 0u32;
    for id in &ids {
        let lines: Vec<String> = h.scheduler.all_logs(*id).await.unwrap().into_iter().map(|l| l.line).collect();
        assert!(lines.iter().any(|l| l == "running stage 1"), "{lines:?}");
        expired += lines.iter().filter(|l| l.starts_with("lease of ") && l.contains("expired")).count() as u32;
    }
    assert_eq!(worker.runs.load(Ordering::SeqCst), 400 + expired, "a stage ran twice without a lost lease");
    runtime.shutdown().await;
}

/// An abort reaches the stage running in the runtime as cancellation; its
/// result is dropped.
pub async fn the_runtime_cancels_an_aborted_stage(h: &Harness) {
    let kind = h.kind("cancel").await;
    let worker = counting(kind.clone(), Duration::from_secs(60));
    let runtime = WorkerRuntime::builder(Arc::clone(&h.workers))
        .options(runtime_options("cancel"))
        .worker(worker.clone(), 1)
        .start()
        .await
        .unwrap();
    let id = h.scheduler.submit(Harness::spec(&kind, 1)).await.unwrap();
    wait_for_status(h, id, JobStatus::InProgress).await;
    h.scheduler.abort(id).await.unwrap();
    let started = std::time::Instant::now();
    loop {
        let lines: Vec<String> = h.scheduler.all_logs(id).await.unwrap().into_iter().map(|l| l.line).collect();
        if lines.iter().any(|l| l.contains("job aborted: cancelling the stage")) {
            break;
        }
        assert!(started.elapsed() < MUST_HAPPEN, "the stage never heard of the abort: {lines:?}");
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    let job = h.scheduler.get(id).await.unwrap();
    assert_eq!(job.status, JobStatus::Aborted);
    assert!(job.results.is_empty());
    runtime.shutdown().await;
}

/// Shutting the runtime down hands its running stage back; another
/// runtime finishes it, and the stage used one attempt.
pub async fn the_runtime_hands_stages_back_on_shutdown(h: &Harness) {
    let kind = h.kind("handback").await;
    let slow = counting(kind.clone(), Duration::from_secs(60));
    let first = WorkerRuntime::builder(Arc::clone(&h.workers))
        .options(runtime_options("handback-1"))
        .worker(slow.clone(), 1)
        .start()
        .await
        .unwrap();
    let id = h.scheduler.submit(Harness::spec(&kind, 1)).await.unwrap();
    wait_for_status(h, id, JobStatus::InProgress).await;
    // Claimed is not yet running: wait until the stage is under way.
    let started = std::time::Instant::now();
    while slow.runs.load(Ordering::SeqCst) == 0 {
        assert!(started.elapsed() < MUST_HAPPEN, "the claimed stage never started");
        tokio::time::sleep(Duration::from_millis(10)).await;
    }
    first.shutdown().await;
    assert_eq!(h.scheduler.get(id).await.unwrap().status, JobStatus::Pending, "the stage was not handed back");
    let fast = counting(kind.clone(), Duration::ZERO);
    let second = WorkerRuntime::builder(Arc::clone(&h.workers))
        .options(runtime_options("handback-2"))
        .worker(fast.clone(), 1)
        .start()
        .await
        .unwrap();
    let job = tokio::time::timeout(MUST_HAPPEN, h.scheduler.wait(id)).await.expect("in time").unwrap();
    assert!(job.succeeded(), "{job:?}");
    assert_eq!((slow.runs.load(Ordering::SeqCst), fast.runs.load(Ordering::SeqCst)), (1, 1));
    second.shutdown().await;
}

async fn wait_for_status(h: &Harness, id: kgym_core::JobId, status: JobStatus) {
    let started = std::time::Instant::now();
    while h.scheduler.get(id).await.unwrap().status != status {
        assert!(started.elapsed() < MUST_HAPPEN, "job {id} never reached {status:?}");
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
}

/// Worker pools: a stage that requires labels goes only to a worker that
/// registered every one of them with the same value, and that worker runs
/// the kind's stages without labels too; labels a worker cannot declare,
/// or a stage cannot require, are refused.
pub async fn stages_go_to_the_workers_of_their_pool(h: &Harness) {
    let kind = h.kind("pool").await;
    let labels =
        |pairs: &[(&str, &str)]| -> Labels { pairs.iter().map(|(k, v)| ((*k).to_owned(), (*v).to_owned())).collect() };
    let worker = |name: &str, l: Labels| WorkerInfo {
        host: format!("conformance-{name}-{kind}"),
        kinds: vec![(kind.clone(), 1)],
        labels: l,
    };
    let big = worker("big", labels(&[("pool", "big"), ("arch", "x86_64")]));
    let small = worker("small", labels(&[("pool", "small"), ("arch", "x86_64")]));
    let plain = worker("plain", Labels::new());
    for w in [&big, &small, &plain] {
        h.workers.register(w).await.expect("register");
    }
    let claim_as = |w: &WorkerInfo, wait: Duration| ClaimRequest {
        kind: kind.clone(),
        worker: format!("{}/{kind}-0", w.host),
        host: w.host.clone(),
        wait,
    };
    let short = Duration::from_millis(300);

    let pooled = JobSpec::new().tag("case", "pool");
    let pooled = JobSpec { stages: vec![StageSpec::new(kind.clone(), &json!({})).label("pool", "big")], ..pooled };
    let id = h.scheduler.submit(pooled).await.unwrap();
    for other in [&small, &plain] {
        let got = h.workers.claim(&claim_as(other, short)).await.expect("claim");
        assert!(got.is_none(), "{} got a stage of pool=big", other.host);
    }
    let c = h.workers.claim(&claim_as(&big, MUST_HAPPEN)).await.expect("claim").expect("pool=big's worker gets it");
    assert_eq!(c.lease.job, id);
    assert_eq!(c.stages[0].labels, labels(&[("pool", "big")]));
    h.workers.report(&c.lease, StageOutcome::Success(json!(null))).await.unwrap();
    assert_eq!(h.scheduler.get(id).await.unwrap().status, JobStatus::Finished);

    // A stage without labels: any worker of the kind, the pool's included.
    let id = h.scheduler.submit(Harness::spec(&kind, 1)).await.unwrap();
    let c = h.workers.claim(&claim_as(&big, MUST_HAPPEN)).await.expect("claim").expect("a plain stage");
    assert_eq!(c.lease.job, id);
    h.workers.report(&c.lease, StageOutcome::Success(json!(null))).await.unwrap();

    // A label with another value is another pool.
    let arm =
        JobSpec { stages: vec![StageSpec::new(kind.clone(), &json!({})).label("arch", "arm64")], ..JobSpec::new() };
    let id = h.scheduler.submit(arm).await.unwrap();
    for w in [&big, &small, &plain] {
        assert!(h.workers.claim(&claim_as(w, short)).await.expect("claim").is_none(), "{} ran arch=arm64", w.host);
    }
    h.scheduler.abort(id).await.unwrap();

    // Refused: labels nobody can have.
    let bad_worker = worker("bad", labels(&[("no spaces", "x")]));
    assert!(h.workers.register(&bad_worker).await.is_err(), "a label key with a space was registered");
    let bad_stage =
        JobSpec { stages: vec![StageSpec::new(kind.clone(), &json!({})).label("pool", "a b")], ..JobSpec::new() };
    match h.scheduler.submit(bad_stage).await {
        Err(Error::Validation { problems }) => {
            assert!(problems.iter().any(|p| p.message.contains("\"pool\"")), "{problems:?}")
        }
        other => panic!("a label value with a space: {other:?}"),
    }
}
