//! Tests of what only the SQLite scheduler has: its database, its queue
//! and its event hub. The behaviour every scheduler and worker backend
//! shares is in [`crate::conformance`], run against this one in
//! `tests/conformance.rs`.

use std::time::Duration;

use futures::StreamExt;
use kgym_core::{JobSpec, JobStatus, Outcome, StageIndex, StageKind};
use serde_json::json;

use super::*;
use crate::scheduler::Scheduler;
use crate::worker_api::{ClaimRequest, StageOutcome, WorkerBackend, WorkerInfo};

fn echo() -> StageKind {
    StageKind::new("echo").unwrap()
}

fn spec(stages: usize) -> JobSpec {
    (0..stages).fold(JobSpec::new(), |s, i| s.stage(echo(), &json!({"i": i})))
}

fn options() -> SchedulerOptions {
    SchedulerOptions::default().lease_ttl(Duration::from_millis(300))
}

async fn sched() -> SqliteScheduler {
    SqliteScheduler::builder().stages(StageRegistry::new().with_kind(echo())).options(options()).build().await.unwrap()
}

fn req(worker: &str) -> ClaimRequest {
    ClaimRequest { kind: echo(), worker: format!("host/{worker}"), host: "host".into(), wait: Duration::from_secs(2) }
}

async fn claim(s: &SqliteScheduler, worker: &str) -> crate::worker_api::Claim {
    s.claim(&req(worker)).await.unwrap().expect("a stage should be ready")
}

#[tokio::test]
async fn options_are_clamped_to_sane_minimums() {
    let s = SqliteScheduler::builder()
        .options(SchedulerOptions::default().lease_ttl(Duration::ZERO).max_attempts(0))
        .build()
        .await
        .unwrap();
    assert_eq!(s.options().lease_ttl, Duration::from_millis(100));
    assert_eq!(s.options().max_attempts, 1);
}

#[tokio::test]
async fn duplicate_announcements_and_racing_claims_have_one_winner() {
    // A lease far longer than the race: with the usual 300 ms one, a loaded
    // machine let the winner's lease expire while the other claimers still
    // waited, and the reaper's fresh announcement (attempt 2) was a second,
    // legitimate winner (seen in CI).
    let s = SqliteScheduler::builder()
        .stages(StageRegistry::new().with_kind(echo()))
        .options(options().lease_ttl(Duration::from_secs(60)))
        .build()
        .await
        .unwrap();
    let id = s.submit(spec(1)).await.unwrap();
    // Duplicate announcements, as a redelivering transport could produce.
    let ann = crate::queue::Announcement::new(id, StageIndex(0), echo());
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
    let ann2 = crate::queue::Announcement::new(id2, StageIndex(0), echo());
    let wins: Vec<bool> = futures::future::join_all((0..16).map(|i| {
        let (s, ann2) = (s.clone(), ann2.clone());
        async move {
            s.inner
                .store
                .run(move |c| {
                    let w = format!("w{i}");
                    let claimed = store::jobs::claim(
                        c,
                        &ann2,
                        &w,
                        "h",
                        &format!("t{i}"),
                        Duration::from_secs(9),
                        store::now_us(),
                    )?;
                    Ok(claimed.is_some())
                })
                .await
                .unwrap()
        }
    }))
    .await;
    assert_eq!(wins.iter().filter(|w| **w).count(), 1);
}

#[tokio::test]
async fn watch_channels_do_not_leak() {
    let s = sched().await;
    let id = s.submit(spec(1)).await.unwrap();
    let events = s.watch(id).await.unwrap();
    let c = claim(&s, "w").await;
    s.report(&c.lease, StageOutcome::Success(json!(null))).await.unwrap();
    let all: Vec<_> = events.collect().await;
    assert!(all.last().unwrap().as_ref().unwrap().is_terminal());
    let again: Vec<_> = s.watch(id).await.unwrap().collect().await;
    assert_eq!(again.len(), 1);
    assert_eq!(s.inner.hub.channels(), 0, "watch channels leak");
}

#[tokio::test]
async fn kinds_of_live_workers_are_accepted_until_they_go_quiet() {
    let options = options().worker_ttl(Duration::from_secs(1));
    let s = SqliteScheduler::builder().options(options).build().await.unwrap();
    let refused =
        |e: crate::Error| e.problems().iter().any(|p| p.message.contains("no worker runs stage kind \"echo\""));
    // Claiming a kind does not make it accepted.
    assert!(s.claim(&ClaimRequest { wait: Duration::from_millis(10), ..req("w") }).await.unwrap().is_none());
    assert!(refused(s.submit(spec(1)).await.unwrap_err()));
    // Registering does, while the worker is live.
    s.register(&WorkerInfo::new("host", vec![(echo(), 1)])).await.unwrap();
    let id = s.submit(spec(1)).await.unwrap();
    assert_eq!(s.get(id).await.unwrap().no_worker_for, None);
    // Quiet past the TTL: the kind is refused again, and the queued job
    // says what it waits for.
    tokio::time::sleep(Duration::from_millis(1300)).await;
    assert!(refused(s.submit(spec(1)).await.unwrap_err()));
    assert_eq!(s.get(id).await.unwrap().no_worker_for, Some(echo()));
    let listed = s.list(&crate::types::ListQuery::new()).await.unwrap();
    assert_eq!(listed.items[0].no_worker_for, Some(echo()));
    // A claim is a sign of life: live again, and the job runs.
    let c = claim(&s, "w").await;
    assert_eq!(s.get(id).await.unwrap().no_worker_for, None);
    s.report(&c.lease, StageOutcome::Success(json!(null))).await.unwrap();
    s.submit(spec(1)).await.unwrap();
    // A kind the deployment declares is accepted with no worker at all.
    s.deregister("host").await.unwrap();
    assert!(refused(s.submit(spec(1)).await.unwrap_err()));
    s.accept_kind(echo());
    let waiting = s.submit(spec(1)).await.unwrap();
    assert_eq!(s.get(waiting).await.unwrap().no_worker_for, Some(echo()));
}

#[tokio::test]
async fn state_survives_reopening_the_database_and_queued_stages_are_reannounced() {
    let dir = tempfile::tempdir().unwrap();
    let db = dir.path().join("jobs.sqlite3");
    let open = || {
        SqliteScheduler::builder()
            .database(&db)
            .stages(StageRegistry::new().with_kind(echo()))
            .options(options())
            .build()
    };
    let (done, queued, held) = {
        let s = open().await.unwrap();
        let done = s.submit(spec(1)).await.unwrap();
        let c = claim(&s, "w").await;
        s.report(&c.lease, StageOutcome::Success(json!(null))).await.unwrap();
        let held = s.submit(spec(1)).await.unwrap();
        let _c = claim(&s, "gone").await; // its worker "dies" with the process
        let queued = s.submit(spec(2)).await.unwrap();
        s.close();
        (done, queued, held)
    };
    let s = open().await.unwrap();
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
