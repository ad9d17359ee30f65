//! Nothing is lost when a process dies: a worker process killed with
//! SIGKILL, and the scheduler process killed mid-job and restarted.
//!
//! The child processes are this test binary re-run with
//! `child_process_entry` (an ignored test) and a role in the environment.

mod common;

use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::sync::Arc;
use std::time::{Duration, Instant};

use common::{Sleepy, TestGym, TestGymConfig, finish, wait_until};
use kgym_core::{JobSpec, JobStatus, StageKind};
use kgym_sched::http::{HttpScheduler, HttpWorkerBackend, ServerOptions};
use kgym_sched::runtime::{RuntimeOptions, WorkerRuntime};
use kgym_sched::sqlite::SchedulerOptions;
use kgym_sched::{Scheduler, SchedulerExt};
use serde_json::json;

const TOKEN: &str = "t0ken";
const ROLE: &str = "KGYM_SCHED_TEST_ROLE";

/// A child process, killed (SIGKILL) when dropped.
struct Proc(Child);

impl Proc {
    fn spawn(role: &str, env: &[(&str, String)]) -> Self {
        let exe = std::env::current_exe().unwrap();
        let mut cmd = Command::new(exe);
        cmd.args(["child_process_entry", "--exact", "--ignored", "--nocapture", "--test-threads=1"])
            .env(ROLE, role)
            .stdin(Stdio::null())
            .stdout(Stdio::null());
        for (k, v) in env {
            cmd.env(k, v);
        }
        Self(cmd.spawn().expect("spawn child"))
    }

    /// `kill -TERM` and wait for the exit.
    fn term(&mut self) -> std::process::ExitStatus {
        let pid = nix::unistd::Pid::from_raw(self.0.id() as i32);
        nix::sys::signal::kill(pid, nix::sys::signal::Signal::SIGTERM).expect("SIGTERM the child");
        self.0.wait().expect("reap the child")
    }

    /// `kill -9`.
    fn kill9(&mut self) {
        self.0.kill().expect("SIGKILL the child");
        self.0.wait().expect("reap the child");
    }
}

impl Drop for Proc {
    fn drop(&mut self) {
        let _ = self.0.kill();
        let _ = self.0.wait();
    }
}

/// A scheduler for remote `sleepy` workers, its database in `dir`.
async fn remote_gym(dir: &Path, lease: Duration) -> TestGym {
    TestGym::start(TestGymConfig {
        database: Some(dir.join("jobs.sqlite3")),
        kinds: vec![StageKind::new("sleepy").unwrap()],
        scheduler: SchedulerOptions::default().lease_ttl(lease),
        http: Some(ServerOptions::default().token(Some(TOKEN.into()))),
        ..Default::default()
    })
    .await
}

fn sleepy(ms: u64) -> JobSpec {
    JobSpec::new().stage(StageKind::new("sleepy").unwrap(), &json!({"sleep_ms": ms}))
}

/// The child's side: a worker process or a scheduler process.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
#[ignore = "entry point of the child processes of the other tests"]
async fn child_process_entry() {
    let role = std::env::var(ROLE).expect("run by the process tests only");
    let fast = std::env::var("FAST_MS").ok().map(|v| v.parse().unwrap());
    let host = std::env::var("HOST").unwrap();
    let worker = Sleepy::new("sleepy", fast);
    match role.as_str() {
        "worker" => {
            let url = std::env::var("URL").unwrap();
            let backend = Arc::new(HttpWorkerBackend::new(&url).unwrap().with_token(TOKEN));
            let options = RuntimeOptions::default()
                .host(host)
                .heartbeat(Duration::from_millis(100))
                .claim_wait(Duration::from_secs(2));
            let rt = WorkerRuntime::builder(backend).options(options).worker(worker, 1).start().await.unwrap();
            rt.run_until_signal().await.unwrap();
        }
        "scheduler" => {
            let dir = PathBuf::from(std::env::var("DIR").unwrap());
            let gym = TestGym::start(TestGymConfig {
                database: Some(dir.join("jobs.sqlite3")),
                workers: vec![(worker, 1)],
                scheduler: SchedulerOptions::default().lease_ttl(Duration::from_secs(1)),
                runtime: Some(RuntimeOptions::default().host(host).heartbeat(Duration::from_millis(100))),
                http: Some(ServerOptions::default().token(Some(TOKEN.into()))),
                ..Default::default()
            })
            .await;
            // Tell the parent where we listen (atomically).
            let tmp = dir.join("addr.tmp");
            std::fs::write(&tmp, gym.url()).unwrap();
            std::fs::rename(&tmp, dir.join("addr")).unwrap();
            kgym_sched::runtime::wait_for_signal().await.unwrap();
            gym.shutdown().await;
        }
        other => panic!("unknown role {other}"),
    }
}

fn read_addr(dir: &Path, limit: Duration) -> String {
    let start = Instant::now();
    loop {
        if let Ok(a) = std::fs::read_to_string(dir.join("addr")) {
            return a;
        }
        assert!(start.elapsed() < limit, "the scheduler process did not start");
        std::thread::sleep(Duration::from_millis(20));
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_worker_killed_with_sigkill_loses_its_lease_and_the_job_still_finishes() {
    let dir = tempfile::tempdir().unwrap();
    let gym = remote_gym(dir.path(), Duration::from_secs(1)).await;
    let url = gym.url();
    let sched = gym.scheduler();
    let id = sched.submit(sleepy(600_000)).await.unwrap();

    let mut a = Proc::spawn("worker", &[("URL", url.clone()), ("HOST", "child-a".into())]);
    wait_until(&*sched, id, Duration::from_secs(60), |j| {
        j.status == JobStatus::InProgress && j.worker.as_deref().is_some_and(|w| w.starts_with("child-a/"))
    })
    .await;
    a.kill9();

    // Another worker process picks the stage up once the lease expired.
    let _b = Proc::spawn("worker", &[("URL", url), ("HOST", "child-b".into()), ("FAST_MS", "50".into())]);
    let job = finish(&*sched, id, Duration::from_secs(60)).await;
    assert!(job.succeeded(), "{job:#?}");
    assert!(job.results[0].worker.as_deref().unwrap().starts_with("child-b/"), "{job:#?}");
    let lines: Vec<String> = sched.all_logs(id).await.unwrap().into_iter().map(|l| l.line).collect();
    assert!(lines.iter().any(|l| l.contains("lease of child-a/sleepy-0") && l.contains("expired")), "{lines:#?}");
    assert!(lines.iter().any(|l| l.contains("(attempt 2)")), "{lines:#?}");
    gym.shutdown().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_scheduler_killed_mid_job_and_restarted_finishes_every_job() {
    let dir = tempfile::tempdir().unwrap();
    let mut first = Proc::spawn("scheduler", &[("DIR", dir.path().display().to_string()), ("HOST", "first".into())]);
    let url = read_addr(dir.path(), Duration::from_secs(60));
    let sched = HttpScheduler::new(&url).unwrap().with_token(TOKEN);
    // One job runs (one slot), one waits behind it.
    let running =
        sched.submit(sleepy(600_000).stage(StageKind::new("sleepy").unwrap(), &json!({"sleep_ms": 1}))).await.unwrap();
    wait_until(&sched, running, Duration::from_secs(30), |j| j.status == JobStatus::InProgress).await;
    let queued = sched.submit(sleepy(600_000)).await.unwrap();
    assert_eq!(sched.get(queued).await.unwrap().status, JobStatus::Pending);

    std::fs::remove_file(dir.path().join("addr")).unwrap();
    first.kill9();

    let _second = Proc::spawn(
        "scheduler",
        &[("DIR", dir.path().display().to_string()), ("HOST", "second".into()), ("FAST_MS", "20".into())],
    );
    let url = read_addr(dir.path(), Duration::from_secs(60));
    let sched: Arc<dyn Scheduler> = Arc::new(HttpScheduler::new(&url).unwrap().with_token(TOKEN));
    for id in [running, queued] {
        let job = sched.wait_timeout(id, Duration::from_secs(60)).await.unwrap().expect("job ended");
        assert!(job.succeeded(), "{job:#?}");
        assert!(job.results.iter().all(|r| r.worker.as_deref().unwrap().starts_with("second/")), "{job:#?}");
    }
    let lines: Vec<String> = sched.all_logs(running).await.unwrap().into_iter().map(|l| l.line).collect();
    assert!(lines.iter().any(|l| l.contains("lease of first/sleepy-0") && l.contains("expired")), "{lines:#?}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_worker_sent_sigterm_hands_its_stage_back_at_once() {
    let dir = tempfile::tempdir().unwrap();
    // A long lease: only a hand-back can put the stage back quickly.
    let gym = remote_gym(dir.path(), Duration::from_secs(600)).await;
    let url = gym.url();
    let sched = gym.scheduler();
    let id = sched.submit(sleepy(600_000)).await.unwrap();
    let mut a = Proc::spawn("worker", &[("URL", url.clone()), ("HOST", "child-a".into())]);
    wait_until(&*sched, id, Duration::from_secs(60), |j| j.status == JobStatus::InProgress).await;
    let status = a.term();
    assert!(status.success(), "the worker should exit cleanly on SIGTERM: {status:?}");
    let job = sched.get(id).await.unwrap();
    assert_eq!(job.status, JobStatus::Pending, "{job:#?}");
    let _b = Proc::spawn("worker", &[("URL", url), ("HOST", "child-b".into()), ("FAST_MS", "20".into())]);
    let job = finish(&*sched, id, Duration::from_secs(60)).await;
    assert!(job.succeeded(), "{job:#?}");
    let lines: Vec<String> = sched.all_logs(id).await.unwrap().into_iter().map(|l| l.line).collect();
    assert!(lines.iter().any(|l| l.contains("handed back by child-a/sleepy-0")), "{lines:#?}");
    assert!(lines.iter().any(|l| l.contains("cancelled: stopping")), "the worker saw the cancellation: {lines:#?}");
    assert_eq!(
        lines.iter().filter(|l| l.contains("(attempt 1)")).count(),
        2,
        "a hand-back uses no attempt: {lines:#?}"
    );
    gym.shutdown().await;
}
