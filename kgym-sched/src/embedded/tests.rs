//! State-machine tests of the embedded scheduler, driven through the
//! `Scheduler` and `WorkerBackend` traits.

use std::time::Duration;

use futures::StreamExt;
use kgym_core::failure::codes;
use kgym_core::{ArtifactKey, JobId, JobSpec, JobStatus, Outcome, StageFailure, StageIndex, StageKind, Tags};
use serde_json::json;

use super::*;
use crate::SchedulerExt;
use crate::types::{Order, TimeField};
use crate::worker_api::{ClaimRequest, LeaseStatus, ReportAck, StageOutcome, WorkerBackend};

fn echo() -> StageKind {
    StageKind::new("echo").unwrap()
}

fn spec(stages: usize) -> JobSpec {
    let mut s = JobSpec::new();
    for i in 0..stages {
        s = s.stage(echo(), &json!({"i": i}));
    }
    s
}

async fn sched() -> EmbeddedScheduler {
    EmbeddedScheduler::builder().accept_kind(echo()).lease_ttl(Duration::from_millis(300)).build().await.unwrap()
}

fn req(worker: &str) -> ClaimRequest {
    ClaimRequest { kind: echo(), worker: format!("host/{worker}"), host: "host".into(), wait: Duration::from_secs(2) }
}

async fn claim(s: &EmbeddedScheduler, worker: &str) -> crate::worker_api::Claim {
    s.claim(&req(worker)).await.unwrap().expect("a stage should be ready")
}

#[tokio::test]
async fn a_job_runs_stage_by_stage_to_finished() {
    let s = sched().await;
    let id = s.submit(spec(2).tag("k", "v")).await.unwrap();
    let job = s.get(id).await.unwrap();
    assert_eq!((job.status, job.current_stage), (JobStatus::Pending, Some(StageIndex(0))));

    let c = claim(&s, "w0").await;
    assert_eq!((c.lease.job, c.lease.stage, c.attempt), (id, StageIndex(0), 1));
    assert_eq!(c.tags["k"], "v");
    let job = s.get(id).await.unwrap();
    assert_eq!((job.status, job.worker.as_deref()), (JobStatus::InProgress, Some("host/w0")));

    assert_eq!(s.report(&c.lease, StageOutcome::Success(json!({"out": 0}))).await.unwrap(), ReportAck::Recorded);
    let job = s.get(id).await.unwrap();
    assert_eq!((job.status, job.current_stage), (JobStatus::Waiting, Some(StageIndex(1))));

    let c1 = claim(&s, "w1").await;
    assert_eq!(c1.lease.stage, StageIndex(1));
    assert_eq!(c1.previous.len(), 1);
    assert_eq!(c1.previous[0].value["out"], 0);
    s.report(&c1.lease, StageOutcome::Success(json!({"out": 1}))).await.unwrap();

    let job = s.get(id).await.unwrap();
    assert_eq!((job.status, job.current_stage), (JobStatus::Finished, None));
    assert!(job.succeeded());
    assert_eq!(job.results[1].worker.as_deref(), Some("host/w1"));
    assert!(job.results[1].started.is_some() && job.results[1].finished.is_some());
    // A report on a lease that is spent is refused.
    assert!(matches!(s.report(&c1.lease, StageOutcome::Success(json!(1))).await, Err(Error::LeaseLost { .. })));
}

#[tokio::test]
async fn a_failed_stage_finishes_the_job_with_its_failure() {
    let s = sched().await;
    let id = s.submit(spec(3)).await.unwrap();
    let c = claim(&s, "w").await;
    s.report(&c.lease, StageOutcome::Failure(StageFailure::new(codes::BUILD_FAILED, "compile kernel/sys.c")))
        .await
        .unwrap();
    let job = s.get(id).await.unwrap();
    assert_eq!(job.status, JobStatus::Finished);
    assert!(!job.succeeded());
    let (stage, f) = job.failure().unwrap();
    assert_eq!((stage, f.code.as_str()), (StageIndex(0), codes::BUILD_FAILED));
    assert_eq!(job.results.len(), 1);
    // Nothing else is queued.
    assert!(s.claim(&ClaimRequest { wait: Duration::from_millis(100), ..req("w") }).await.unwrap().is_none());
}

#[tokio::test]
async fn retryable_failures_are_retried_up_to_the_attempt_limit() {
    let s = EmbeddedScheduler::builder().accept_kind(echo()).max_attempts(2).build().await.unwrap();
    let id = s.submit(spec(1)).await.unwrap();
    let broke = StageFailure::new(codes::INTERNAL, "disk full").retryable();
    let c = claim(&s, "a").await;
    assert_eq!(s.report(&c.lease, StageOutcome::Failure(broke.clone())).await.unwrap(), ReportAck::Requeued);
    assert_eq!(s.get(id).await.unwrap().status, JobStatus::Pending);
    let c = claim(&s, "b").await;
    assert_eq!(c.attempt, 2);
    assert_eq!(s.report(&c.lease, StageOutcome::Failure(broke)).await.unwrap(), ReportAck::Recorded);
    let job = s.get(id).await.unwrap();
    assert_eq!(job.status, JobStatus::Finished);
    assert_eq!(job.failure().unwrap().1.code, codes::INTERNAL);
}

#[tokio::test]
async fn expired_leases_requeue_then_fail_with_worker_lost() {
    let s = EmbeddedScheduler::builder()
        .accept_kind(echo())
        .lease_ttl(Duration::from_millis(150))
        .max_attempts(2)
        .build()
        .await
        .unwrap();
    let id = s.submit(spec(1)).await.unwrap();
    let first = claim(&s, "dies-1").await;
    // No heartbeat: the lease expires and the stage comes back.
    let second = claim(&s, "dies-2").await;
    assert_eq!((second.lease.job, second.attempt), (id, 2));
    assert_ne!(first.lease.token, second.lease.token);
    assert_eq!(s.heartbeat(&first.lease).await.unwrap(), LeaseStatus::Lost);
    // The second worker dies too: attempts are used up.
    let job = tokio::time::timeout(Duration::from_secs(5), s.wait(id)).await.unwrap().unwrap();
    assert_eq!(job.status, JobStatus::Finished);
    let (_, f) = job.failure().unwrap();
    assert_eq!(f.code, codes::WORKER_LOST);
    assert!(f.message.contains("handed out 2 times"), "{}", f.message);
}

#[tokio::test]
async fn heartbeats_keep_a_lease_alive() {
    let s =
        EmbeddedScheduler::builder().accept_kind(echo()).lease_ttl(Duration::from_millis(150)).build().await.unwrap();
    let id = s.submit(spec(1)).await.unwrap();
    let c = claim(&s, "alive").await;
    for _ in 0..8 {
        tokio::time::sleep(Duration::from_millis(50)).await;
        assert_eq!(s.heartbeat(&c.lease).await.unwrap(), LeaseStatus::Active);
    }
    assert_eq!(s.get(id).await.unwrap().status, JobStatus::InProgress);
    s.report(&c.lease, StageOutcome::Success(json!(null))).await.unwrap();
    assert!(s.get(id).await.unwrap().succeeded());
}

#[tokio::test]
async fn yield_hands_the_stage_back_without_using_an_attempt() {
    let s = sched().await;
    let id = s.submit(spec(1)).await.unwrap();
    let c = claim(&s, "leaving").await;
    s.yield_stage(&c.lease).await.unwrap();
    assert_eq!(s.get(id).await.unwrap().status, JobStatus::Pending);
    let again = claim(&s, "next").await;
    assert_eq!(again.attempt, 1);
}

#[tokio::test]
async fn abort_cancels_the_holder_and_refuses_terminal_jobs() {
    let s = sched().await;
    let id = s.submit(spec(2)).await.unwrap();
    let c = claim(&s, "w").await;
    let job = s.abort(id).await.unwrap();
    assert_eq!((job.status, job.current_stage), (JobStatus::Aborted, None));
    assert_eq!(s.heartbeat(&c.lease).await.unwrap(), LeaseStatus::Cancelled);
    // The worker's last lines are kept, its result is not.
    s.append_log(&c.lease, "host/w", &["killed make".into()]).await.unwrap();
    assert!(matches!(s.report(&c.lease, StageOutcome::Success(json!(1))).await, Err(Error::LeaseLost { .. })));
    match s.abort(id).await {
        Err(Error::InvalidState { status: JobStatus::Aborted, .. }) => {}
        other => panic!("unexpected {other:?}"),
    }
    let lines: Vec<String> = s.all_logs(id).await.unwrap().into_iter().map(|l| l.line).collect();
    assert!(lines.iter().any(|l| l == "killed make"), "{lines:?}");
    assert!(matches!(s.abort(JobId::new(999)).await, Err(Error::JobNotFound { .. })));
}

#[tokio::test]
async fn abort_of_a_queued_job_drops_its_announcement() {
    let s = sched().await;
    let id = s.submit(spec(1)).await.unwrap();
    s.abort(id).await.unwrap();
    assert!(s.claim(&ClaimRequest { wait: Duration::from_millis(100), ..req("w") }).await.unwrap().is_none());
}

async fn finish_all(s: &EmbeddedScheduler, n: usize) {
    for _ in 0..n {
        let c = claim(s, "w").await;
        let stage = c.lease.stage.0;
        let key = ArtifactKey::for_stage(c.lease.job, c.lease.stage, &c.kind, "out").unwrap();
        s.artifacts().put(&key, format!("stage {stage}").into_bytes()).await.unwrap();
        s.report(&c.lease, StageOutcome::Success(json!({"stage": stage}))).await.unwrap();
    }
}

#[tokio::test]
async fn restart_reruns_from_a_stage_and_removes_later_artifacts() {
    let s = sched().await;
    let id = s.submit(spec(3)).await.unwrap();
    // Not while it runs.
    assert!(matches!(s.restart(id, Some(StageIndex(0))).await, Err(Error::InvalidState { .. })));
    finish_all(&s, 3).await;
    assert_eq!(s.artifacts().list_job(id).await.unwrap().len(), 3);
    // Out of range.
    assert!(matches!(s.restart(id, Some(StageIndex(3))).await, Err(Error::BadRequest { .. })));

    let job = s.restart(id, Some(StageIndex(1))).await.unwrap();
    assert_eq!((job.status, job.current_stage, job.results.len()), (JobStatus::Waiting, Some(StageIndex(1)), 1));
    let keys = s.artifacts().list_job(id).await.unwrap();
    assert_eq!(keys.len(), 1, "{keys:?}");
    assert!(keys[0].as_str().starts_with(&format!("jobs/{id}/0_echo/")));
    let c = claim(&s, "again").await;
    assert_eq!((c.lease.stage, c.attempt, c.previous.len()), (StageIndex(1), 1, 1));
    s.report(&c.lease, StageOutcome::Success(json!(1))).await.unwrap();
    finish_all(&s, 1).await;
    assert!(s.get(id).await.unwrap().succeeded());
}

#[tokio::test]
async fn restart_without_a_stage_resumes_where_the_job_stopped_and_not_past_a_failure() {
    let s = sched().await;
    let id = s.submit(spec(3)).await.unwrap();
    finish_all(&s, 1).await;
    let c = claim(&s, "w").await;
    s.report(&c.lease, StageOutcome::Failure(StageFailure::new("x", "boom"))).await.unwrap();
    assert!(matches!(s.restart(id, Some(StageIndex(2))).await, Err(Error::InvalidState { .. })));
    let job = s.restart(id, None).await.unwrap();
    assert_eq!((job.current_stage, job.results.len()), (Some(StageIndex(1)), 1));
}

#[tokio::test]
async fn reset_replaces_stages_and_merges_tags() {
    let s = sched().await;
    let id = s.submit(spec(1).tag("a", "1").tag("b", "1")).await.unwrap();
    finish_all(&s, 1).await;
    let new = spec(2).tag("b", "2").tag("c", "3");
    let job = s.reset(id, new, StageIndex(1)).await.unwrap();
    assert_eq!(job.stages.len(), 2);
    assert_eq!((job.current_stage, job.results.len()), (Some(StageIndex(1)), 1));
    let tags = s.tags(id).await.unwrap();
    assert_eq!(tags, Tags::from([("a".into(), "1".into()), ("b".into(), "2".into()), ("c".into(), "3".into())]));
    finish_all(&s, 1).await;
    assert!(s.get(id).await.unwrap().succeeded());
    // A bad new spec is refused with every problem.
    let bad = JobSpec::new().stage(StageKind::new("nope").unwrap(), &json!(null));
    assert!(matches!(s.reset(id, bad, StageIndex(0)).await, Err(Error::Validation { .. })));
}

#[tokio::test]
async fn concurrent_claims_of_one_stage_have_one_winner() {
    let s = sched().await;
    let id = s.submit(spec(1)).await.unwrap();
    // Duplicate announcements, as a redelivering transport could produce.
    let ann = crate::queue::Announcement { job: id, stage: StageIndex(0), kind: echo() };
    for _ in 0..30 {
        s.inner.queue.publish(&ann).await.unwrap();
    }
    let claims =
        futures::future::join_all((0..32).map(|i| {
            let s = s.clone();
            async move {
                s.claim(&ClaimRequest { wait: Duration::from_millis(300), ..req(&format!("w{i}")) }).await.unwrap()
            }
        }))
        .await;
    let winners: Vec<_> = claims.into_iter().flatten().collect();
    assert_eq!(winners.len(), 1, "{winners:?}");
    // And at the database level: the compare-and-set itself.
    let id2 = s.submit(spec(1)).await.unwrap();
    let ann2 = crate::queue::Announcement { job: id2, stage: StageIndex(0), kind: echo() };
    let wins: Vec<bool> = futures::future::join_all((0..16).map(|i| {
        let (s, ann2) = (s.clone(), ann2.clone());
        async move {
            s.inner
                .store
                .run(move |c| {
                    let w = format!("w{i}");
                    Ok(store::jobs::claim(
                        c,
                        &ann2,
                        &w,
                        "h",
                        &format!("t{i}"),
                        Duration::from_secs(9),
                        store::now_us(),
                    )?
                    .is_some())
                })
                .await
                .unwrap()
        }
    }))
    .await;
    assert_eq!(wins.iter().filter(|w| **w).count(), 1);
}

#[tokio::test]
async fn submit_refuses_bad_specs_with_every_problem() {
    let s = sched().await;
    let bad = JobSpec::new()
        .stage(StageKind::new("unknown").unwrap(), &json!({}))
        .stage(StageKind::reproduce(), &json!({"kernel": {"type": "from_stage", "stage": 5}}));
    match s.submit(bad).await {
        Err(Error::Validation { problems }) => assert!(problems.len() >= 3, "{problems:?}"),
        other => panic!("unexpected {other:?}"),
    }
    assert_eq!(s.list(&ListQuery::new()).await.unwrap().total, 0);
}

#[tokio::test]
async fn tags_can_be_read_set_merged_and_searched() {
    let s = sched().await;
    let a = s.submit(spec(1).tag("bug", "x").tag("by", "me")).await.unwrap();
    let b = s.submit(spec(1).tag("bug", "y")).await.unwrap();
    assert_eq!(s.merge_tags(b, Tags::from([("extra".into(), "1".into())])).await.unwrap().len(), 2);
    assert_eq!(s.set_tags(a, Tags::from([("bug".into(), "x".into())])).await.unwrap().len(), 1);
    let all = s.jobs_with_tag("bug", None).await.unwrap();
    assert_eq!(all.iter().map(|m| (m.job, m.value.as_str())).collect::<Vec<_>>(), vec![(a, "x"), (b, "y")]);
    assert_eq!(s.jobs_with_tag("bug", Some("y")).await.unwrap().len(), 1);
    assert!(s.jobs_with_tag("by", None).await.unwrap().is_empty());
    assert!(s.tags(JobId::new(77)).await.unwrap_err().is_not_found());
}

#[tokio::test]
async fn logs_and_listings_page() {
    let s = sched().await;
    let mut ids = Vec::new();
    for _ in 0..5 {
        ids.push(s.submit(spec(1)).await.unwrap());
    }
    let c = claim(&s, "logger").await;
    let lines: Vec<String> = (0..30).map(|i| format!("line {i}")).collect();
    s.append_log(&c.lease, "host/logger", &lines).await.unwrap();
    let q = LogQuery { limit: 10, ..LogQuery::job(c.lease.job) };
    let p1 = s.logs(&q).await.unwrap();
    // The claim line, then the worker's lines.
    assert_eq!(p1.total, 31);
    assert_eq!((p1.items.len(), p1.next), (10, Some(10)));
    assert_eq!(p1.items[1].line, "line 0");
    assert_eq!(p1.items[1].worker.as_deref(), Some("host/logger"));
    let last = s.logs(&LogQuery { start: 30, ..q.clone() }).await.unwrap();
    assert_eq!((last.items.len(), last.next), (1, None));
    let newest = s.logs(&LogQuery { order: Order::NewestFirst, limit: 1, ..q }).await.unwrap();
    assert_eq!(newest.items[0].line, "line 29");
    assert!(s.logs(&LogQuery::job(JobId::new(99))).await.unwrap_err().is_not_found());

    let page = s.list(&ListQuery { limit: 2, ..ListQuery::new() }).await.unwrap();
    assert_eq!((page.total, page.items.len(), page.next), (5, 2, Some(2)));
    assert_eq!(page.items[0].id, ids[4], "newest first");
    let by_mod = s.list(&ListQuery { by: TimeField::Modified, limit: 1, ..ListQuery::new() }).await.unwrap();
    assert_eq!(by_mod.items[0].id, c.lease.job, "the claimed job changed last");
    let running = s.list(&ListQuery { status: Some(JobStatus::InProgress), ..ListQuery::new() }).await.unwrap();
    assert_eq!(running.total, 1);
    assert!(s.list(&ListQuery { limit: 0, ..ListQuery::new() }).await.is_err());

    let sys = s.system_log(&SystemLogQuery { kind: Some(echo()), limit: 50, ..Default::default() }).await.unwrap();
    assert!(sys.items.iter().any(|e| e.message.contains("handed to host/logger")), "{sys:?}");
    let by_host =
        s.system_log(&SystemLogQuery { host: Some("host".into()), limit: 50, ..Default::default() }).await.unwrap();
    assert_eq!(by_host.total, 1);
}

#[tokio::test]
async fn watch_streams_status_and_log_lines_and_ends_at_the_terminal_status() {
    let s = sched().await;
    let id = s.submit(spec(1)).await.unwrap();
    let mut events = s.watch(id).await.unwrap();
    let first = events.next().await.unwrap().unwrap();
    assert_eq!(first.status(), Some(JobStatus::Pending));
    let c = claim(&s, "w").await;
    s.append_log(&c.lease, "host/w", &["hello".into()]).await.unwrap();
    s.report(&c.lease, StageOutcome::Success(json!(null))).await.unwrap();
    let rest: Vec<JobEvent> = events.map(|e| e.unwrap()).collect().await;
    assert!(rest.iter().any(|e| matches!(e, JobEvent::Log(l) if l.line == "hello")), "{rest:?}");
    assert!(rest.iter().any(|e| e.status() == Some(JobStatus::InProgress)), "{rest:?}");
    assert!(rest.last().unwrap().is_terminal(), "{rest:?}");
    // Watching an ended job yields its status and ends.
    let again: Vec<_> = s.watch(id).await.unwrap().collect().await;
    assert_eq!(again.len(), 1);
    assert_eq!(s.inner.hub.channels(), 0, "watch channels leak");
    assert!(s.watch(JobId::new(1234)).await.is_err());
}

#[tokio::test]
async fn state_survives_reopening_the_database_and_queued_stages_are_reannounced() {
    let dir = tempfile::tempdir().unwrap();
    let db = dir.path().join("jobs.sqlite3");
    let (done, queued, held) = {
        let s = EmbeddedScheduler::builder()
            .database(&db)
            .accept_kind(echo())
            .lease_ttl(Duration::from_millis(300))
            .build()
            .await
            .unwrap();
        let done = s.submit(spec(1)).await.unwrap();
        finish_all(&s, 1).await;
        let held = s.submit(spec(1)).await.unwrap();
        let _c = claim(&s, "gone").await; // its worker "dies" with the process
        let queued = s.submit(spec(2)).await.unwrap();
        s.close();
        (done, queued, held)
    };
    let s = EmbeddedScheduler::builder()
        .database(&db)
        .accept_kind(echo())
        .lease_ttl(Duration::from_millis(300))
        .build()
        .await
        .unwrap();
    assert!(s.get(done).await.unwrap().succeeded());
    assert_eq!(s.get(held).await.unwrap().status, JobStatus::InProgress, "held stages keep their lease");
    // The queued job was re-announced; the held one comes back once its
    // lease expires.
    let mut got = Vec::new();
    for _ in 0..3 {
        let c = claim(&s, "new").await;
        got.push(c.lease.job);
        s.report(&c.lease, StageOutcome::Success(json!(null))).await.unwrap();
    }
    got.sort();
    assert_eq!(got, vec![held, queued, queued]);
    for id in [done, held, queued] {
        assert!(s.get(id).await.unwrap().results.iter().all(|r| r.outcome == Outcome::Success));
        assert_eq!(s.get(id).await.unwrap().status, JobStatus::Finished);
    }
}
