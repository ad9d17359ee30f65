//! The conformance suite of [`Scheduler`](crate::Scheduler)
//! implementations: the job state machine as a client sees it (submit,
//! read, list, abort, restart, reset, tags, logs, watch), with stages
//! moved on through the harness's worker backend.

use futures::StreamExt;
use kgym_core::failure::codes;
use kgym_core::{ArtifactKey, JobId, JobSpec, JobStatus, StageFailure, StageIndex, StageKind, Tags};
use serde_json::json;

use super::{Harness, MUST_HAPPEN};
use crate::error::Error;
use crate::scheduler::SchedulerExt;
use crate::types::{JobEvent, ListQuery, LogQuery, Order, SystemLogQuery, TagQuery, TimeField};
use crate::worker_api::StageOutcome;

/// Runs every test of the suite.
pub async fn run_all(h: &Harness) {
    a_job_runs_stage_by_stage_to_finished(h).await;
    a_failed_stage_finishes_the_job_with_its_failure(h).await;
    abort_cancels_the_holder_and_refuses_terminal_jobs(h).await;
    abort_of_a_queued_job_drops_its_stage(h).await;
    restart_reruns_from_a_stage_and_removes_later_artifacts(h).await;
    restart_without_a_stage_resumes_where_the_job_stopped(h).await;
    reset_replaces_stages_and_merges_tags(h).await;
    submit_refuses_bad_specs_with_every_problem(h).await;
    tags_can_be_read_set_merged_and_searched(h).await;
    logs_and_listings_page(h).await;
    watch_streams_status_and_log_lines_and_ends_at_the_terminal_status(h).await;
    unknown_jobs_are_not_found(h).await;
    listings_filter_by_tag_and_count_by_status(h).await;
    workers_are_listed_with_what_they_hold(h).await;
    stats_count_hours_durations_and_headlines(h).await;
    every_tag_write_follows_one_rule_set(h).await;
    pages_are_bounded_and_cursors_continue_them(h).await;
    kinds_are_accepted_while_their_workers_live(h).await;
}

/// Claims and succeeds `n` stages of `kind`, each storing one artifact.
async fn finish(h: &Harness, kind: &StageKind, n: usize) {
    for _ in 0..n {
        let c = h.claim(kind, "finisher").await;
        let key = ArtifactKey::for_stage(c.lease.job, c.lease.stage, &c.kind, "out").expect("key");
        h.artifacts.put(&key, format!("stage {}", c.lease.stage).into_bytes()).await.expect("store an artifact");
        h.workers.report(&c.lease, StageOutcome::Success(json!({"stage": c.lease.stage}))).await.expect("report");
    }
}

/// A job is pending, then in progress on the claiming worker, waiting
/// between stages, and finished with one result per stage.
pub async fn a_job_runs_stage_by_stage_to_finished(h: &Harness) {
    let kind = h.kind("stages").await;
    let s = &h.scheduler;
    let id = s.submit(Harness::spec(&kind, 2).tag("k", "v")).await.unwrap();
    let job = s.get(id).await.unwrap();
    assert_eq!((job.status, job.current_stage), (JobStatus::Pending, Some(StageIndex(0))));
    assert_eq!(job.tags["k"], "v");

    let c = h.claim(&kind, "w0").await;
    assert_eq!((c.lease.job, c.lease.stage), (id, StageIndex(0)));
    let job = s.get(id).await.unwrap();
    assert_eq!((job.status, job.worker.as_deref()), (JobStatus::InProgress, Some("conformance/w0")));
    h.workers.report(&c.lease, StageOutcome::Success(json!({"out": 0}))).await.unwrap();
    let job = s.get(id).await.unwrap();
    assert_eq!((job.status, job.current_stage), (JobStatus::Waiting, Some(StageIndex(1))));

    let c1 = h.claim(&kind, "w1").await;
    h.workers.report(&c1.lease, StageOutcome::Success(json!({"out": 1}))).await.unwrap();
    let job = s.get(id).await.unwrap();
    assert_eq!((job.status, job.current_stage), (JobStatus::Finished, None));
    assert!(job.succeeded());
    assert_eq!(job.results.len(), 2);
    assert_eq!(job.results[0].value["out"], 0);
    assert_eq!(job.results[1].worker.as_deref(), Some("conformance/w1"));
    assert!(job.results[1].started.is_some() && job.results[1].finished.is_some());
    assert!(job.modified >= job.created);
}

/// A failed stage ends the job with that failure; later stages never run.
pub async fn a_failed_stage_finishes_the_job_with_its_failure(h: &Harness) {
    let kind = h.kind("failure").await;
    let id = h.scheduler.submit(Harness::spec(&kind, 3)).await.unwrap();
    let c = h.claim(&kind, "w").await;
    let failure = StageFailure::new(codes::BUILD_FAILED, "compile kernel/sys.c").with_detail("error: x");
    h.workers.report(&c.lease, StageOutcome::Failure(failure.clone())).await.unwrap();
    let job = h.scheduler.get(id).await.unwrap();
    assert_eq!(job.status, JobStatus::Finished);
    assert!(!job.succeeded());
    let (stage, f) = job.failure().unwrap();
    assert_eq!((stage, f), (StageIndex(0), &failure));
    assert_eq!(job.results.len(), 1);
    assert!(h.try_claim(&kind, "w").await.is_none(), "a stage after a failure was queued");
}

/// Abort ends a running job at once; the holder's result is refused; an
/// ended job cannot be aborted again.
pub async fn abort_cancels_the_holder_and_refuses_terminal_jobs(h: &Harness) {
    let kind = h.kind("abort").await;
    let id = h.scheduler.submit(Harness::spec(&kind, 2)).await.unwrap();
    let c = h.claim(&kind, "w").await;
    let job = h.scheduler.abort(id).await.unwrap();
    assert_eq!((job.status, job.current_stage), (JobStatus::Aborted, None));
    assert!(matches!(h.workers.report(&c.lease, StageOutcome::Success(json!(1))).await, Err(Error::LeaseLost { .. })));
    match h.scheduler.abort(id).await {
        Err(Error::InvalidState { status: JobStatus::Aborted, .. }) => {}
        other => panic!("aborting an aborted job: {other:?}"),
    }
    assert!(h.scheduler.get(id).await.unwrap().results.is_empty());
}

/// An aborted job's queued stage is never handed out.
pub async fn abort_of_a_queued_job_drops_its_stage(h: &Harness) {
    let kind = h.kind("abortq").await;
    let id = h.scheduler.submit(Harness::spec(&kind, 1)).await.unwrap();
    h.scheduler.abort(id).await.unwrap();
    assert!(h.try_claim(&kind, "w").await.is_none(), "an aborted job's stage was handed out");
}

/// Restart re-runs an ended job from a stage, keeping earlier results and
/// artifacts and removing later ones; not while it runs; not past its end.
pub async fn restart_reruns_from_a_stage_and_removes_later_artifacts(h: &Harness) {
    let kind = h.kind("restart").await;
    let s = &h.scheduler;
    let id = s.submit(Harness::spec(&kind, 3)).await.unwrap();
    assert!(matches!(s.restart(id, Some(StageIndex(0))).await, Err(Error::InvalidState { .. })));
    finish(h, &kind, 3).await;
    assert_eq!(h.artifacts.list_job(id).await.unwrap().len(), 3);
    assert!(matches!(s.restart(id, Some(StageIndex(3))).await, Err(Error::BadRequest { .. })));

    let job = s.restart(id, Some(StageIndex(1))).await.unwrap();
    assert_eq!((job.status, job.current_stage, job.results.len()), (JobStatus::Waiting, Some(StageIndex(1)), 1));
    let keys = h.artifacts.list_job(id).await.unwrap();
    assert_eq!(keys.len(), 1, "{keys:?}");
    assert!(keys[0].as_str().starts_with(&format!("jobs/{id}/0_{kind}/")), "{keys:?}");
    let c = h.claim(&kind, "again").await;
    assert_eq!((c.lease.stage, c.attempt, c.previous.len()), (StageIndex(1), 1, 1));
    h.workers.report(&c.lease, StageOutcome::Success(json!(1))).await.unwrap();
    finish(h, &kind, 1).await;
    assert!(s.get(id).await.unwrap().succeeded());
}

/// Restart without a stage resumes where the job stopped, and not past a
/// failed stage.
pub async fn restart_without_a_stage_resumes_where_the_job_stopped(h: &Harness) {
    let kind = h.kind("resume").await;
    let id = h.scheduler.submit(Harness::spec(&kind, 3)).await.unwrap();
    finish(h, &kind, 1).await;
    let c = h.claim(&kind, "w").await;
    h.workers.report(&c.lease, StageOutcome::Failure(StageFailure::new("x", "boom"))).await.unwrap();
    assert!(matches!(h.scheduler.restart(id, Some(StageIndex(2))).await, Err(Error::InvalidState { .. })));
    let job = h.scheduler.restart(id, None).await.unwrap();
    assert_eq!((job.current_stage, job.results.len()), (Some(StageIndex(1)), 1));
    finish(h, &kind, 2).await;
    assert!(h.scheduler.get(id).await.unwrap().succeeded());
}

/// Reset replaces the stages, merges the tags and runs from a stage; a bad
/// new spec is refused with its problems.
pub async fn reset_replaces_stages_and_merges_tags(h: &Harness) {
    let kind = h.kind("reset").await;
    let s = &h.scheduler;
    let id = s.submit(Harness::spec(&kind, 1).tag("a", "1").tag("b", "1")).await.unwrap();
    finish(h, &kind, 1).await;
    let job = s.reset(id, Harness::spec(&kind, 2).tag("b", "2").tag("c", "3"), StageIndex(1)).await.unwrap();
    assert_eq!(job.stages.len(), 2);
    assert_eq!((job.current_stage, job.results.len()), (Some(StageIndex(1)), 1));
    let tags = s.tags(id).await.unwrap();
    assert_eq!(tags, Tags::from([("a".into(), "1".into()), ("b".into(), "2".into()), ("c".into(), "3".into())]));
    finish(h, &kind, 1).await;
    assert!(s.get(id).await.unwrap().succeeded());
    let bad = JobSpec::new().stage(super::fresh_kind("never-registered"), &json!(null));
    assert!(!s.reset(id, bad, StageIndex(0)).await.unwrap_err().problems().is_empty());
}

/// A bad spec is refused with every problem and nothing is stored.
pub async fn submit_refuses_bad_specs_with_every_problem(h: &Harness) {
    let kind = h.kind("refuse").await;
    let before = h.scheduler.list(&ListQuery::new()).await.unwrap().total;
    let bad = JobSpec::new()
        .stage(super::fresh_kind("unknown"), &json!({}))
        .stage(kind.clone(), &json!({"input": {"type": "from_stage", "stage": 5}}))
        .tag("", "empty key");
    let err = h.scheduler.submit(bad).await.unwrap_err();
    let text: Vec<String> = err.problems().iter().map(ToString::to_string).collect();
    assert_eq!(text.len(), 3, "{text:#?}");
    assert!(text.iter().any(|p| p.starts_with("stage 0 (conf-unknown-") && p.contains("no worker runs")), "{text:#?}");
    assert!(text.iter().any(|p| p.contains("refers to stage 5, but the job has 2 stages")), "{text:#?}");
    assert!(text.iter().any(|p| p.contains("empty key")), "{text:#?}");
    assert!(!h.scheduler.submit(JobSpec::new()).await.unwrap_err().problems().is_empty());
    assert_eq!(h.scheduler.list(&ListQuery::new()).await.unwrap().total, before, "a refused job was stored");
}

/// Tags are read, replaced, merged and looked up by key and value.
pub async fn tags_can_be_read_set_merged_and_searched(h: &Harness) {
    let kind = h.kind("tags").await;
    let s = &h.scheduler;
    let key = format!("bug-{kind}");
    let a = s.submit(Harness::spec(&kind, 1).tag(&key, "x").tag("by", "me")).await.unwrap();
    let b = s.submit(Harness::spec(&kind, 1).tag(&key, "y")).await.unwrap();
    assert_eq!(s.merge_tags(b, Tags::from([("extra".into(), "1".into())])).await.unwrap().len(), 2);
    assert_eq!(s.set_tags(a, Tags::from([(key.clone(), "x".into())])).await.unwrap().len(), 1);
    assert_eq!(s.tags(a).await.unwrap(), Tags::from([(key.clone(), "x".into())]));
    let all = s.jobs_with_tag(&TagQuery::new(&key, None)).await.unwrap();
    assert_eq!(all.items.iter().map(|m| (m.job, m.value.as_str())).collect::<Vec<_>>(), vec![(a, "x"), (b, "y")]);
    assert_eq!((all.total, all.next), (2, None));
    assert_eq!(s.jobs_with_tag(&TagQuery::new(&key, Some("y".into()))).await.unwrap().items.len(), 1);
    assert_eq!(s.jobs_with_tag(&TagQuery::new(format!("none-{kind}"), None)).await.unwrap().total, 0);
}

/// Job logs, the job list and the system log page and filter.
pub async fn logs_and_listings_page(h: &Harness) {
    let kind = h.kind("pages").await;
    let s = &h.scheduler;
    let mut ids = Vec::new();
    for _ in 0..5 {
        ids.push(s.submit(Harness::spec(&kind, 1)).await.unwrap());
    }
    let c = h.claim(&kind, "logger").await;
    let lines: Vec<String> = (0..30).map(|i| format!("line {i}")).collect();
    h.workers.append_log(&c.lease, "conformance/logger", &lines).await.unwrap();
    let q = LogQuery { limit: 10, ..LogQuery::job(c.lease.job) };
    let p1 = s.logs(&q).await.unwrap();
    // The claim line, then the worker's lines.
    assert_eq!(p1.total, 31, "{p1:?}");
    assert_eq!((p1.items.len(), p1.next), (10, Some(10)));
    assert_eq!(p1.items[1].line, "line 0");
    assert_eq!(p1.items[1].worker.as_deref(), Some("conformance/logger"));
    let last = s.logs(&LogQuery { start: 30, ..q.clone() }).await.unwrap();
    assert_eq!((last.items.len(), last.next), (1, None));
    let newest = s.logs(&LogQuery { order: Order::NewestFirst, limit: 1, ..q }).await.unwrap();
    assert_eq!(newest.items[0].line, "line 29");

    let page = s.list(&ListQuery { limit: 2, ..ListQuery::new() }).await.unwrap();
    assert!(page.total >= 5 && page.items.len() == 2 && page.next == Some(2), "{page:?}");
    assert_eq!(page.items[0].id, ids[4], "newest first");
    let by_mod = s.list(&ListQuery { by: TimeField::Modified, limit: 1, ..ListQuery::new() }).await.unwrap();
    assert_eq!(by_mod.items[0].id, c.lease.job, "the claimed job changed last");
    let running = s.list(&ListQuery { status: Some(JobStatus::InProgress), ..ListQuery::new() }).await.unwrap();
    assert!(running.items.iter().any(|j| j.id == c.lease.job), "{running:?}");
    assert!(running.items.iter().all(|j| j.status == JobStatus::InProgress), "{running:?}");
    assert!(s.list(&ListQuery { limit: 0, ..ListQuery::new() }).await.is_err());

    let sys = s.system_log(&SystemLogQuery { kind: Some(kind.clone()), limit: 50, ..Default::default() }).await;
    let sys = sys.unwrap();
    assert!(sys.items.iter().any(|e| e.message.contains("handed to conformance/logger")), "{sys:?}");
    assert!(sys.items.iter().all(|e| e.kind.as_ref() == Some(&kind)), "{sys:?}");
    assert_eq!(sys.total as usize, sys.items.len(), "the total of a kind's lines: {sys:?}");
    h.workers.report(&c.lease, StageOutcome::Success(json!(null))).await.unwrap();
    for id in ids {
        if id != c.lease.job {
            h.scheduler.abort(id).await.unwrap();
        }
    }
}

/// Watch yields the current status, then status changes and log lines, and
/// ends after the terminal status; an ended job's watch yields one event.
pub async fn watch_streams_status_and_log_lines_and_ends_at_the_terminal_status(h: &Harness) {
    let kind = h.kind("watch").await;
    let id = h.scheduler.submit(Harness::spec(&kind, 1)).await.unwrap();
    let mut events = h.scheduler.watch(id).await.unwrap();
    let first = events.next().await.unwrap().unwrap();
    assert_eq!(first.status(), Some(JobStatus::Pending));
    let c = h.claim(&kind, "w").await;
    h.workers.append_log(&c.lease, "conformance/w", &["hello".into()]).await.unwrap();
    h.workers.report(&c.lease, StageOutcome::Success(json!(null))).await.unwrap();
    let rest: Vec<JobEvent> =
        tokio::time::timeout(MUST_HAPPEN, events.map(|e| e.unwrap()).collect()).await.expect("the watch ends");
    assert!(rest.iter().any(|e| matches!(e, JobEvent::Log(l) if l.line == "hello")), "{rest:?}");
    assert!(rest.iter().any(|e| e.status() == Some(JobStatus::InProgress)), "{rest:?}");
    assert!(rest.last().unwrap().is_terminal(), "{rest:?}");
    let again: Vec<_> = h.scheduler.watch(id).await.unwrap().collect().await;
    assert_eq!(again.len(), 1);
    let job = tokio::time::timeout(MUST_HAPPEN, h.scheduler.wait(id)).await.unwrap().unwrap();
    assert!(job.succeeded());
}

/// Every read and write of a job that does not exist is "not found".
pub async fn unknown_jobs_are_not_found(h: &Harness) {
    let s = &h.scheduler;
    let id = JobId::new(0xffff_fff0);
    assert!(s.get(id).await.unwrap_err().is_not_found());
    assert!(s.abort(id).await.unwrap_err().is_not_found());
    assert!(s.tags(id).await.unwrap_err().is_not_found());
    assert!(s.merge_tags(id, Tags::new()).await.unwrap_err().is_not_found());
    assert!(s.logs(&LogQuery::job(id)).await.unwrap_err().is_not_found());
    assert!(s.watch(id).await.is_err());
    assert!(s.restart(id, None).await.unwrap_err().is_not_found());
}

/// Listings narrow to a tag (and value); counts per status follow the same
/// filter; summaries carry the latest result headline.
pub async fn listings_filter_by_tag_and_count_by_status(h: &Harness) {
    let kind = h.kind("filter").await;
    let key = format!("batch-{kind}");
    let s = &h.scheduler;
    let a = s.submit(Harness::spec(&kind, 1).tag(&key, "a")).await.unwrap();
    let b = s.submit(Harness::spec(&kind, 1).tag(&key, "b")).await.unwrap();
    let _other = s.submit(Harness::spec(&kind, 1)).await.unwrap();
    let c = h.claim(&kind, "w").await;
    h.workers
        .report(&c.lease, StageOutcome::Success(json!({"title": "KASAN: use-after-free Read in f"})))
        .await
        .unwrap();
    assert_eq!(c.lease.job, a, "jobs are handed out in submit order");
    s.abort(b).await.unwrap();

    let tagged = s.list(&ListQuery::new().tagged(&key, None)).await.unwrap();
    assert_eq!(tagged.items.iter().map(|j| j.id).collect::<Vec<_>>(), vec![b, a], "{tagged:?}");
    assert_eq!(tagged.total, 2);
    assert_eq!(tagged.items[1].headline.as_deref(), Some("KASAN: use-after-free Read in f"));
    assert_eq!(tagged.items[0].headline, None);
    let only_b = s.list(&ListQuery::new().tagged(&key, Some("b".into()))).await.unwrap();
    assert_eq!(only_b.items.iter().map(|j| j.id).collect::<Vec<_>>(), vec![b]);
    let finished = s.list(&ListQuery::new().tagged(&key, None).status(JobStatus::Finished)).await.unwrap();
    assert_eq!(finished.items.iter().map(|j| j.id).collect::<Vec<_>>(), vec![a]);

    let counts = s.status_counts(&ListQuery::new().tagged(&key, None)).await.unwrap();
    assert_eq!((counts.finished, counts.aborted, counts.pending, counts.total()), (1, 1, 0, 2), "{counts:?}");
    let all = s.status_counts(&ListQuery::new()).await.unwrap();
    assert!(all.total() >= 3 && all.pending >= 1, "{all:?}");
    let job = s.get(a).await.unwrap();
    assert_eq!(job.results[0].headline.as_deref(), Some("KASAN: use-after-free Read in f"));
    s.abort(_other).await.unwrap();
}

/// A registered worker is listed live with its kinds and labels and the
/// stage it holds; after it deregisters it is listed as stopped.
pub async fn workers_are_listed_with_what_they_hold(h: &Harness) {
    use crate::worker_api::WorkerInfo;
    let kind = super::fresh_kind("roster");
    let host = format!("roster-{kind}");
    let mut info = WorkerInfo::new(&host, vec![(kind.clone(), 3)]);
    info.labels.insert("pool".into(), "big".into());
    h.workers.register(&info).await.unwrap();
    let id = h.scheduler.submit(Harness::spec(&kind, 1)).await.unwrap();
    let req = crate::worker_api::ClaimRequest {
        kind: kind.clone(),
        worker: format!("{host}/{kind}-0"),
        host: host.clone(),
        wait: MUST_HAPPEN,
    };
    let c = h.workers.claim(&req).await.unwrap().expect("a stage");
    let listed = h.scheduler.workers().await.unwrap();
    let me = listed.iter().find(|w| w.host == host).unwrap_or_else(|| panic!("{host} not in {listed:?}"));
    assert!(me.live, "{me:?}");
    assert_eq!(me.kinds, vec![(kind.clone(), 3)]);
    assert_eq!(me.labels.get("pool").map(String::as_str), Some("big"));
    assert_eq!(me.running.len(), 1, "{me:?}");
    assert_eq!((me.running[0].job, me.running[0].stage, me.running[0].attempt), (id, StageIndex(0), 1));
    assert_eq!(me.running[0].worker, format!("{host}/{kind}-0"));
    assert!(me.running[0].lease_expires.is_some());
    h.workers.report(&c.lease, StageOutcome::Success(json!(null))).await.unwrap();
    h.workers.deregister(&host).await.unwrap();
    let listed = h.scheduler.workers().await.unwrap();
    let me = listed.iter().find(|w| w.host == host).unwrap();
    assert!(!me.live && me.stopped.is_some() && me.running.is_empty(), "{me:?}");
}

/// Statistics count finished jobs per hour (with failures), stage
/// durations per kind and the most frequent headlines.
pub async fn stats_count_hours_durations_and_headlines(h: &Harness) {
    use crate::types::StatsQuery;
    let kind = h.kind("stats").await;
    let since = chrono::Utc::now() - chrono::Duration::seconds(1);
    let title = format!("WARNING in {kind}");
    for i in 0..3 {
        h.scheduler.submit(Harness::spec(&kind, 1)).await.unwrap();
        let c = h.claim(&kind, "w").await;
        tokio::time::sleep(std::time::Duration::from_millis(20)).await;
        let outcome = if i < 2 {
            StageOutcome::Success(json!({"title": title}))
        } else {
            StageOutcome::Failure(StageFailure::new("x", "boom"))
        };
        h.workers.report(&c.lease, outcome).await.unwrap();
    }
    let stats = h.scheduler.stats(&StatsQuery { since: Some(since), top: 100 }).await.unwrap();
    let (finished, failed) = stats.finished_per_hour.iter().fold((0, 0), |(f, x), hc| (f + hc.finished, x + hc.failed));
    assert!(finished >= 3 && failed >= 1, "{stats:?}");
    let d = stats.durations.iter().find(|d| d.kind == kind).unwrap_or_else(|| panic!("{stats:?}"));
    assert_eq!(d.count, 2, "{d:?}");
    assert!(d.p50_seconds >= 0.015 && d.max_seconds >= d.p90_seconds && d.p90_seconds >= d.p50_seconds, "{d:?}");
    let t = stats.headlines.iter().find(|x| x.headline == title).unwrap_or_else(|| panic!("{stats:?}"));
    assert_eq!(t.count, 2);
    let later = h.scheduler.stats(&StatsQuery { since: Some(chrono::Utc::now()), top: 10 }).await.unwrap();
    assert!(later.headlines.iter().all(|x| x.headline != title), "the window is honoured: {later:?}");
}

/// Submit, replace, merge and reset apply one rule set to tags: keys not
/// empty, keys and values bounded, a bounded number of tags per job (also
/// after a merge); a refused write changes nothing.
pub async fn every_tag_write_follows_one_rule_set(h: &Harness) {
    use crate::tags::{MAX_KEY_LEN, MAX_TAGS, MAX_VALUE_LEN};
    let kind = h.kind("tagrules").await;
    let s = &h.scheduler;
    let refused = |r: crate::Result<Tags>, what: &str| match r {
        Err(Error::Validation { problems }) => assert!(!problems.is_empty(), "{what}"),
        other => panic!("{what}: {other:?}"),
    };
    let many: Tags = (0..=MAX_TAGS).map(|i| (format!("k{i}"), String::new())).collect();
    let err = s.submit(Harness::spec(&kind, 1).tag("", "x")).await.unwrap_err();
    assert!(err.problems().iter().any(|p| p.message.contains("empty key")), "{err}");
    let err = s.submit(JobSpec { tags: many.clone(), ..Harness::spec(&kind, 1) }).await.unwrap_err();
    assert!(err.problems().iter().any(|p| p.message.contains(&format!("at most {MAX_TAGS} tags"))), "{err}");

    let id = s.submit(Harness::spec(&kind, 1).tag("keep", "me")).await.unwrap();
    let big = "v".repeat(MAX_VALUE_LEN + 1);
    refused(s.merge_tags(id, Tags::from([(String::new(), "x".into())])).await, "merge an empty key");
    refused(s.set_tags(id, Tags::from([("k".into(), big.clone())])).await, "set a huge value");
    refused(s.merge_tags(id, Tags::from([("k".repeat(MAX_KEY_LEN + 1), "x".into())])).await, "merge a long key");
    refused(s.set_tags(id, many.clone()).await, "set too many");
    // Alone each merge is fine; together with the job's tag they are one
    // too many.
    let fill: Tags = (0..MAX_TAGS).map(|i| (format!("k{i}"), "v".into())).collect();
    refused(s.merge_tags(id, fill.clone()).await, "merge past the limit");
    assert_eq!(s.tags(id).await.unwrap(), Tags::from([("keep".into(), "me".into())]), "a refused write changed tags");
    assert_eq!(s.set_tags(id, fill.clone()).await.unwrap().len(), MAX_TAGS, "exactly the limit is fine");
    finish(h, &kind, 1).await;
    let err = s.reset(id, Harness::spec(&kind, 1).tag("one-more", "x"), StageIndex(0)).await.unwrap_err();
    assert!(err.problems().iter().any(|p| p.message.contains(&format!("at most {MAX_TAGS} tags"))), "{err}");
    assert_eq!(s.get(id).await.unwrap().status, JobStatus::Finished, "a refused reset changed the job");
}

/// Pages refuse a `start` past [`MAX_START`](crate::types::MAX_START) and
/// empty or oversized pages; `next` is always past `start`; following
/// cursors gives the same pages as following `next`, for jobs (by
/// submission and by modification), tags and logs.
pub async fn pages_are_bounded_and_cursors_continue_them(h: &Harness) {
    use crate::types::{MAX_PAGE, MAX_START, TagQuery};
    let kind = h.kind("cursor").await;
    let s = &h.scheduler;
    let key = format!("page-{kind}");
    let mut ids = Vec::new();
    for i in 0..7 {
        ids.push(s.submit(Harness::spec(&kind, 1).tag(&key, if i % 2 == 0 { "even" } else { "odd" })).await.unwrap());
    }
    let bad = |r: crate::Result<()>, what: &str| assert!(matches!(r, Err(Error::BadRequest { .. })), "{what}: {r:?}");
    let tagged = ListQuery::new().tagged(&key, None);
    bad(s.list(&ListQuery { start: MAX_START + 1, ..tagged.clone() }).await.map(drop), "start past MAX_START");
    bad(s.list(&ListQuery { start: u64::MAX, ..tagged.clone() }).await.map(drop), "start u64::MAX");
    bad(s.list(&ListQuery { limit: MAX_PAGE + 1, ..tagged.clone() }).await.map(drop), "limit past MAX_PAGE");
    bad(s.list(&ListQuery { after: Some("junk".into()), ..tagged.clone() }).await.map(drop), "a junk cursor");
    bad(
        s.list(&ListQuery { tag: None, tag_value: Some("x".into()), ..ListQuery::new() }).await.map(drop),
        "value alone",
    );
    let far = s.list(&ListQuery { start: MAX_START, ..tagged.clone() }).await.unwrap();
    assert!(far.items.is_empty() && far.next.is_none(), "{far:?}");
    bad(s.jobs_with_tag(&TagQuery { start: u64::MAX, ..TagQuery::new(&key, None) }).await.map(drop), "tags start");
    bad(s.logs(&LogQuery { start: u64::MAX, ..LogQuery::default() }).await.map(drop), "logs start");

    // Jobs by submission: pages of 3 by offset and by cursor agree.
    for by in [TimeField::Created, TimeField::Modified] {
        for order in [Order::NewestFirst, Order::OldestFirst] {
            let q = ListQuery { by, order, limit: 3, ..tagged.clone() };
            let (mut by_offset, mut by_cursor) = (Vec::new(), Vec::new());
            let (mut a, mut b) = (q.clone(), q.clone());
            loop {
                let p = s.list(&a).await.unwrap();
                assert_eq!(p.total, 7);
                by_offset.extend(p.items.iter().map(|j| j.id));
                match p.next {
                    Some(n) => {
                        assert!(n > a.start, "next {n} is not past start {}", a.start);
                        a.start = n;
                    }
                    None => break,
                }
            }
            loop {
                let p = s.list(&b).await.unwrap();
                by_cursor.extend(p.items.iter().map(|j| j.id));
                match (p.next, p.cursor) {
                    (Some(n), Some(c)) => (b.start, b.after) = (n, Some(c)),
                    (None, None) => break,
                    other => panic!("next and cursor disagree: {other:?}"),
                }
            }
            let mut expected = ids.clone();
            if order == Order::NewestFirst && by == TimeField::Created {
                expected.reverse();
            }
            if by == TimeField::Created {
                assert_eq!(by_offset, expected, "{by:?} {order:?}");
            }
            assert_eq!(by_cursor, by_offset, "{by:?} {order:?}");
        }
    }
    // Tags: cursor pages cover every match once.
    let mut q = TagQuery { limit: 2, ..TagQuery::new(&key, Some("even".into())) };
    let mut seen = Vec::new();
    loop {
        let p = s.jobs_with_tag(&q).await.unwrap();
        assert_eq!(p.total, 4);
        seen.extend(p.items.iter().map(|m| m.job));
        match p.next {
            Some(n) => (q.start, q.after) = (n, p.cursor),
            None => break,
        }
    }
    assert_eq!(seen, vec![ids[0], ids[2], ids[4], ids[6]]);
    let newest = s.jobs_with_tag(&TagQuery { order: Order::NewestFirst, limit: 1, ..TagQuery::new(&key, None) }).await;
    assert_eq!(newest.unwrap().items[0].job, ids[6]);
    for id in ids {
        s.abort(id).await.unwrap();
    }
}

/// A kind no deployment declares is accepted at submit while a live
/// worker runs it; when its workers are gone it is refused, and a queued
/// job of it says it waits for a worker.
pub async fn kinds_are_accepted_while_their_workers_live(h: &Harness) {
    use crate::worker_api::WorkerInfo;
    let kind = super::fresh_kind("live");
    let host = format!("live-{kind}");
    let s = &h.scheduler;
    let err = s.submit(Harness::spec(&kind, 1)).await.unwrap_err();
    assert!(err.problems().iter().any(|p| p.message.contains("no worker runs")), "{err}");
    h.workers.register(&WorkerInfo::new(&host, vec![(kind.clone(), 1)])).await.unwrap();
    let id = s.submit(Harness::spec(&kind, 1)).await.unwrap();
    assert_eq!(s.get(id).await.unwrap().no_worker_for, None);
    h.workers.deregister(&host).await.unwrap();
    let err = s.submit(Harness::spec(&kind, 1)).await.unwrap_err();
    assert!(err.problems().iter().any(|p| p.message.contains("no worker runs")), "{err}");
    let job = s.get(id).await.unwrap();
    assert_eq!((job.status, job.no_worker_for.as_ref()), (JobStatus::Pending, Some(&kind)));
    let listed = s.list(&ListQuery { status: Some(JobStatus::Pending), limit: 500, ..ListQuery::new() }).await.unwrap();
    let mine = listed.items.iter().find(|j| j.id == id).unwrap_or_else(|| panic!("{id} not listed"));
    assert_eq!(mine.no_worker_for.as_ref(), Some(&kind));
    s.abort(id).await.unwrap();
    assert_eq!(s.get(id).await.unwrap().no_worker_for, None, "an ended job waits for nothing");
}
