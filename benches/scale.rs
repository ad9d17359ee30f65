//! The API at scale: 100,000 kGym-format jobs in a worker-less scheduler
//! (what `examples/kscheduler.rs` runs: the SQLite scheduler, the typed
//! API and kGym's routes, no local workers), measured over HTTP from
//! another process.
//!
//! `cargo bench --bench scale` fills the server through kGym's
//! `POST /jobs/new_raw_job` (kbuilder + kvmmanager jobs as kcomposer posts
//! them, tagged with a bug id shared by ~20 jobs and a `composed-by` key
//! every job carries), aborts every tenth job, then prints each list and
//! lookup route's median time beside the goal (≤ 10 ms), one unpaged kGym
//! tag lookup of all 100,000 matches, and the server's resident memory
//! idle and at its peak (goal ≤ 100 MB). Then remote no-op workers (over
//! HTTP) run every job that was not aborted, and the routes that read
//! results (statistics, finished jobs) are measured again.
//! `KGYM_SCALE_JOBS` changes the number of jobs; without `--bench` (as
//! `cargo test --all-targets` runs it) it does a quick round of 300.
//!
//! The server is this binary run again with `KGYM_SCALE_ROLE=server`, so
//! its memory is measured alone.

use std::process::Command;
use std::time::{Duration, Instant};

use std::sync::Arc;

use futures::StreamExt;
use kgym::Gym;
use kgym::core::{StageContext, StageFailure, StageKind, StageSchema, Worker};
use kgym::sched::http::{HttpWorkerBackend, ServerOptions};
use kgym::sched::runtime::{RuntimeOptions, WorkerRuntime};
use kgym_testkit::server::ServerProcess;
use serde_json::{Value, json};

const TOKEN: &str = "scale";
const ROLE: &str = "KGYM_SCALE_ROLE";
const DATA: &str = "KGYM_SCALE_DATA";
/// Jobs per bug id (kBench bugs are reproduced over and over).
const JOBS_PER_BUG: usize = 20;
/// Requests per route.
const RUNS: usize = 31;
/// The goal of every list and lookup route.
const GOAL_MS: f64 = 10.0;
const GOAL_RSS_MB: f64 = 100.0;

/// `KGYM_SCALE_JOBS`, else 100,000 under `cargo bench`; without `--bench`
/// (as `cargo test --all-targets` runs it) a quick round of 300 jobs, so
/// the code stays exercised without filling a debug build for minutes.
fn jobs() -> usize {
    let full = std::env::args().any(|a| a == "--bench");
    std::env::var("KGYM_SCALE_JOBS").ok().and_then(|n| n.parse().ok()).unwrap_or(if full { 100_000 } else { 300 })
}

/// The server role: a kscheduler on loopback until SIGTERM.
fn serve() {
    let rt = tokio::runtime::Runtime::new().expect("runtime");
    rt.block_on(async {
        let data = std::env::var(DATA).expect("data dir");
        let options = ServerOptions::default().token(Some(TOKEN.into()));
        let gym = Gym::builder(data)
            .stock_workers(false)
            .serve_http("127.0.0.1:0".parse().expect("addr"), options)
            .start()
            .await
            .expect("start the scheduler");
        println!("{}", gym.http_url().expect("url"));
        gym.run_until_signal().await.expect("serve");
    });
}

/// The server process (this binary in the server role); SIGTERM'd and
/// reaped when dropped.
fn start_server(data: &std::path::Path) -> ServerProcess {
    let mut cmd = Command::new(std::env::current_exe().expect("own path"));
    cmd.env(ROLE, "server").env(DATA, data).env("RUST_LOG", "warn");
    ServerProcess::url_on_stdout(cmd)
}

/// The server's (VmRSS, VmHWM) in MB.
fn rss(server: &ServerProcess) -> (f64, f64) {
    let status = std::fs::read_to_string(format!("/proc/{}/status", server.pid())).unwrap_or_default();
    let kb = |name: &str| {
        status
            .lines()
            .find_map(|l| l.strip_prefix(name))
            .and_then(|v| v.split_whitespace().next()?.parse::<f64>().ok())
            .unwrap_or(0.0)
    };
    (kb("VmRSS:") / 1024.0, kb("VmHWM:") / 1024.0)
}

/// A worker that ends its stage at once: a build with no kernel, a
/// reproduce with a crash title (so results carry headlines).
#[derive(Debug)]
struct Quick(StageKind);

impl StageSchema for Quick {
    fn kind(&self) -> StageKind {
        self.0.clone()
    }
}

#[async_trait::async_trait]
impl Worker for Quick {
    async fn run(&self, ctx: StageContext) -> Result<Value, StageFailure> {
        match self.0.as_str() {
            StageKind::REPRODUCE => {
                Ok(json!({"crashed": true, "title": format!("KASAN: use-after-free in f{}", ctx.job.get() % 300)}))
            }
            _ => Ok(json!({"message": "built"})),
        }
    }
}

fn bug(i: usize) -> String {
    format!("{:040x}", (i / JOBS_PER_BUG) as u128 * 0x9e37_79b9_7f4a_7c15)
}

/// A kGym job as kcomposer posts it: build, then reproduce.
fn raw_job(i: usize) -> Value {
    json!({
        "job_workers": ["kbuilder", "kvmmanager"],
        "worker_arguments": [
            {"kernel-git-url": "https://git.kernel.org/pub/scm/linux/kernel/git/torvalds/linux.git",
             "kernel-commit-id": format!("{:040x}", i), "kernel-config": "CONFIG_KASAN=y\nCONFIG_KCOV=y\n".repeat(20),
             "userspace-image-name": "", "kernel-arch": "amd64", "compiler": "gcc", "linker": "ld"},
            {"reproducer": {"reproducer-type": "c", "reproducer-text": "int main(void) { return 0; }\n".repeat(10),
                            "nproc": 1, "restart-time": "10m", "syzkaller-checkout": "master",
                            "syzkaller-rollback-to-latest": true, "ninstance": 2},
             "image-from-worker": 0, "machine-type": "qemu:2-1024", "crash-collecting-policy": "first"}
        ],
        "kv": {"bug-reproduction-for": bug(i), "composed-by": "scale-bench"}
    })
}

async fn fill(http: &reqwest::Client, url: &str, n: usize) -> (Vec<String>, f64) {
    let started = Instant::now();
    let mut ids: Vec<(usize, String)> = futures::stream::iter(0..n)
        .map(|i| {
            let http = http.clone();
            let url = format!("{url}/jobs/new_raw_job");
            async move {
                let resp = http.post(url).bearer_auth(TOKEN).json(&raw_job(i)).send().await.expect("submit");
                assert!(resp.status().is_success(), "submit {i}: {}", resp.text().await.unwrap_or_default());
                (i, resp.json::<String>().await.expect("the job id"))
            }
        })
        .buffer_unordered(16)
        .collect()
        .await;
    let rate = n as f64 / started.elapsed().as_secs_f64();
    ids.sort();
    (ids.into_iter().map(|(_, id)| id).collect(), rate)
}

async fn get(http: &reqwest::Client, url: &str) -> (Duration, usize, Value) {
    let started = Instant::now();
    let resp = http.get(url).bearer_auth(TOKEN).send().await.expect("request");
    let status = resp.status();
    let bytes = resp.bytes().await.expect("body");
    let took = started.elapsed();
    assert!(status.is_success(), "{url}: {status} {}", String::from_utf8_lossy(&bytes));
    (took, bytes.len(), serde_json::from_slice(&bytes).unwrap_or(Value::Null))
}

/// The median of `RUNS` requests, in ms.
async fn median(http: &reqwest::Client, url: &str) -> f64 {
    let mut times = Vec::with_capacity(RUNS);
    for _ in 0..RUNS {
        times.push(get(http, url).await.0.as_secs_f64() * 1000.0);
    }
    times.sort_by(f64::total_cmp);
    times[RUNS / 2]
}

fn main() {
    if std::env::var(ROLE).is_ok_and(|r| r == "server") {
        return serve();
    }
    let n = jobs();
    let dir = tempfile::tempdir().expect("temp dir");
    let server = start_server(dir.path());
    let url = server.url().to_owned();
    let rt = tokio::runtime::Builder::new_multi_thread().enable_all().build().expect("runtime");
    rt.block_on(async move {
        let http = reqwest::Client::new();
        let (ids, rate) = fill(&http, &url, n).await;
        let aborted = futures::stream::iter(ids.iter().step_by(10))
            .map(|id| {
                let (http, url) = (http.clone(), format!("{url}/jobs/{id}/abort"));
                async move { http.post(url).bearer_auth(TOKEN).send().await.expect("abort").status().is_success() }
            })
            .buffer_unordered(16)
            .filter(|ok| futures::future::ready(*ok))
            .count()
            .await;
        tokio::time::sleep(Duration::from_secs(2)).await;
        let (idle, _) = rss(&server);

        let mid = &ids[n / 2];
        let a_bug = bug(n / 2);
        let deep = n.saturating_sub(20);
        // The cursor of the page before the deep page.
        let (_, _, before) = get(&http, &format!("{url}/api/v1/jobs?start={}&limit=20", deep.saturating_sub(20))).await;
        let cursor = before["cursor"].as_str().unwrap_or("").to_owned();
        let newest = ids.len().saturating_sub(1000);
        let (_, _, job) = get(&http, &format!("{url}/api/v1/jobs/{}", ids[newest])).await;
        let recent = job["created"].as_str().unwrap_or("").replace('+', "%2B");
        let routes: Vec<(&str, String)> = vec![
            ("health (the HTTP round trip: floor)", "/api/v1/health".into()),
            ("jobs: first page", "/api/v1/jobs".into()),
            ("jobs: status=pending", "/api/v1/jobs?status=pending".into()),
            ("jobs: status=aborted", "/api/v1/jobs?status=aborted".into()),
            ("jobs: status=finished (no match)", "/api/v1/jobs?status=finished".into()),
            ("jobs: deep page by start", format!("/api/v1/jobs?start={deep}")),
            ("jobs: deep page by cursor", format!("/api/v1/jobs?start={deep}&after={cursor}")),
            ("jobs: by=modified", "/api/v1/jobs?by=modified".into()),
            ("jobs: by=modified, deep page by start", format!("/api/v1/jobs?by=modified&start={deep}")),
            ("jobs: tag (every job)", "/api/v1/jobs?tag=composed-by".into()),
            ("jobs: tag + value (20 jobs)", format!("/api/v1/jobs?tag=bug-reproduction-for&tag_value={a_bug}")),
            ("jobs: tag + status=aborted", "/api/v1/jobs?tag=composed-by&status=aborted".into()),
            ("jobs: by=modified, tag + value", format!("/api/v1/jobs?by=modified&tag=bug-reproduction-for&tag_value={a_bug}")),
            ("jobs: window of the newest 1,000", format!("/api/v1/jobs?from={recent}")),
            ("jobs: window of all (counted)", "/api/v1/jobs?from=2000-01-01T00:00:00Z".into()),
            ("jobs/counts", "/api/v1/jobs/counts".into()),
            ("jobs/counts: tag", "/api/v1/jobs/counts?tag=composed-by".into()),
            ("jobs/{id}", format!("/api/v1/jobs/{mid}")),
            ("tags/{key}: first page (every job)", "/api/v1/tags/composed-by".into()),
            ("tags/{key}: value", format!("/api/v1/tags/bug-reproduction-for?value={a_bug}")),
            ("system/log", "/api/v1/system/log".into()),
            ("system/log: deep page by start", format!("/api/v1/system/log?start={deep}")),
            ("logs (every job's)", "/api/v1/logs".into()),
            ("stats", "/api/v1/stats".into()),
            ("workers", "/api/v1/workers".into()),
            ("kGym jobs/?mode=by_created_time", "/jobs/?mode=by_created_time&start=0&limit=20".into()),
            ("kGym jobs/?mode=by_modified_time, deep", format!("/jobs/?mode=by_modified_time&start={deep}&limit=20")),
            ("kGym jobs/{id}", format!("/jobs/{mid}")),
            ("kGym jobs/kv/{key}: a page", "/jobs/kv/composed-by?start=0&limit=20".into()),
            ("kGym system/displays/workers/log", "/system/displays/workers/log".into()),
        ];
        println!();
        println!(
            "scheduler at scale: {n} kGym jobs (kbuilder + kvmmanager, {aborted} aborted), worker-less kscheduler, \
             over HTTP; filled at {rate:.0} submits/s"
        );
        println!("{:<46} {:>12} {:>8}", "route", "median ms", "goal");
        let mut over = 0;
        for (name, path) in &routes {
            let ms = median(&http, &format!("{url}{path}")).await;
            let goal = if name.starts_with("health") { "floor".to_owned() } else { format!("≤ {GOAL_MS}") };
            if ms > GOAL_MS {
                over += 1;
            }
            println!("{name:<46} {ms:>12.2} {goal:>8}");
        }
        let (took, bytes, all) = get(&http, &format!("{url}/jobs/kv/composed-by")).await;
        let matches = all.as_array().map_or(0, Vec::len);
        assert_eq!(matches, n, "the unpaged kv lookup returned every match");
        println!(
            "{:<46} {:>12.2} {:>8}",
            format!("kGym jobs/kv/{{key}} unpaged: {matches} matches, {:.1} MB", bytes as f64 / 1e6),
            took.as_secs_f64() * 1000.0,
            "streamed"
        );
        let (now, peak) = rss(&server);
        println!(
            "server RSS: idle {idle:.1} MB, after the unpaged lookup {now:.1} MB, peak {peak:.1} MB (goal ≤ {GOAL_RSS_MB})"
        );

        // Every job that was not aborted runs, on remote no-op workers.
        let started = Instant::now();
        let backend = Arc::new(HttpWorkerBackend::new(&url).expect("backend").with_token(TOKEN));
        let options = RuntimeOptions::default().host("scale-bench").claim_wait(Duration::from_secs(1));
        let runtime = WorkerRuntime::builder(backend)
            .options(options)
            .worker(Arc::new(Quick(StageKind::build())), 8)
            .worker(Arc::new(Quick(StageKind::reproduce())), 8)
            .start()
            .await
            .expect("workers");
        loop {
            let (_, _, c) = get(&http, &format!("{url}/api/v1/jobs/counts")).await;
            let open: u64 = ["pending", "waiting", "in_progress"].iter().map(|k| c[k].as_u64().unwrap_or(0)).sum();
            if open == 0 {
                break;
            }
            tokio::time::sleep(Duration::from_millis(500)).await;
        }
        runtime.shutdown().await;
        let ran = n - aborted;
        println!(
            "{ran} jobs ({} stages) ran on remote no-op workers in {:.0} s",
            2 * ran,
            started.elapsed().as_secs_f64()
        );
        let after: Vec<(&str, String)> = vec![
            ("stats (7 days: every job ran in it)", "/api/v1/stats".into()),
            ("stats: top 100 headlines", "/api/v1/stats?top=100".into()),
            ("jobs: status=finished", "/api/v1/jobs?status=finished".into()),
            ("jobs: by=modified", "/api/v1/jobs?by=modified".into()),
            ("jobs/counts", "/api/v1/jobs/counts".into()),
            ("jobs/{id} (two results)", format!("/api/v1/jobs/{mid}")),
            ("logs (every job's)", "/api/v1/logs".into()),
            ("system/log: kind=build", "/api/v1/system/log?kind=build".into()),
            ("kGym system/workers/types/kbuilder/log", "/system/workers/types/kbuilder/log".into()),
        ];
        for (name, path) in &after {
            let ms = median(&http, &format!("{url}{path}")).await;
            if ms > GOAL_MS {
                over += 1;
            }
            println!("{name:<46} {ms:>12.2} {:>8}", format!("≤ {GOAL_MS}"));
        }
        let (_, peak) = rss(&server);
        println!("server RSS peak after the runs: {peak:.1} MB (goal ≤ {GOAL_RSS_MB})");
        println!("routes over {GOAL_MS} ms: {over}");
    });
}
