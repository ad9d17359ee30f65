//! How fast the dashboard shows a long history, measured in a real
//! browser (headless Chromium over WebDriver): the job list, a filter, the
//! last page and a job page with 100,000 jobs stored, side by side with the
//! same pages over 100 jobs (the baseline). The goal is under a second
//! each with 100,000 jobs.
//!
//! `cargo bench -p kgym-dashboard --bench dashboard` (release) prints a
//! table. `KGYM_DASHBOARD_JOBS=N` changes the big history's size. Under
//! `cargo test --all-targets` (no `--bench` argument) it only checks that it
//! works: 20 and 200 jobs, one run each. The
//! jobs are real: submitted to a gym's SQLite scheduler and run by the
//! worker runtime (a `note` stage: a title for some, a typed failure for
//! others, tags on all); times come from the page's own User Timing marks
//! (`kgym:rendered`, set once a page's data is on screen), from the
//! action (navigation start, or the filter's submit) to that mark.
//! Filling 100,000 jobs takes ~8 minutes on the 2-core reference machine.

#[path = "../tests/common/mod.rs"]
mod common;

use std::sync::Arc;
use std::time::{Duration, Instant};

use common::browser::{self, Browser};
use common::workers::{Note, NoteArgs};
use futures::StreamExt;
use kgym::Gym;
use kgym::core::stage::StageArgs;
use kgym::core::{JobId, JobSpec};
use kgym::sched::SchedulerExt;
use kgym::sched::http::ServerOptions;
use kgym::sched::types::ListQuery;
use serde_json::{Value, json};

const BASELINE_JOBS: usize = 100;
const BIG_JOBS: usize = 100_000;

/// Crash-like titles, so listings and stats have headlines to show.
fn title(i: usize) -> Option<String> {
    (i % 3 == 0).then(|| format!("KASAN: use-after-free Read in kgym_func_{}", i % 97))
}

fn spec(i: usize) -> JobSpec {
    let args = NoteArgs { title: title(i), fail: i % 20 == 7 };
    JobSpec::new()
        .stage(NoteArgs::kind(), &args)
        .tag("batch", format!("{}", i / 1000))
        .tag("bug", format!("bug-{}", i % 500))
}

/// A gym with `n` jobs run to the end.
async fn filled_gym(dir: &std::path::Path, n: usize) -> Gym {
    let gym = Gym::builder(dir)
        .stock_workers(false)
        .worker(Arc::new(Note), 8)
        .serve_http("127.0.0.1:0".parse().unwrap(), ServerOptions::default())
        .start()
        .await
        .expect("start the gym");
    let sched = gym.scheduler();
    let started = Instant::now();
    let mut last = None;
    let mut submitted = futures::stream::iter(0..n)
        .map(|i| {
            let sched = Arc::clone(&sched);
            async move { sched.submit(spec(i)).await.expect("submit") }
        })
        .buffered(64);
    let mut k = 0;
    while let Some(id) = submitted.next().await {
        last = Some(id);
        k += 1;
        if k % 20_000 == 0 {
            eprintln!("  {k} jobs submitted ({:.0} s)", started.elapsed().as_secs_f64());
        }
    }
    if let Some(id) = last {
        sched.wait(id).await.expect("the last job ends");
    }
    // Every job ended (in order, with 8 slots the last one ends last or
    // nearly: wait for the stragglers).
    loop {
        let page = sched
            .list(&ListQuery { limit: 1, ..ListQuery::new() }.status(kgym::core::JobStatus::Pending))
            .await
            .unwrap();
        let running = sched
            .list(&ListQuery { limit: 1, ..ListQuery::new() }.status(kgym::core::JobStatus::InProgress))
            .await
            .unwrap();
        if page.total == 0 && running.total == 0 {
            break;
        }
        tokio::time::sleep(Duration::from_millis(200)).await;
    }
    eprintln!("  {n} jobs run in {:.1} s", started.elapsed().as_secs_f64());
    gym
}

/// Milliseconds from the page's navigation start to its `kgym:rendered`
/// mark, after opening `url`.
async fn load_ms(b: &Browser, url: &str) -> f64 {
    b.client.goto(url).await.expect("open the page");
    let script = "const done = arguments[arguments.length - 1];
        const poll = () => {
          const m = performance.getEntriesByName('kgym:rendered');
          if (m.length) done(m[0].startTime); else setTimeout(poll, 2);
        };
        poll();";
    let v = tokio::time::timeout(browser::WAIT, b.client.execute_async(script, vec![])).await.expect("render").unwrap();
    v.as_f64().expect("a time")
}

/// Milliseconds from running `action` (a JS statement) in the page to the
/// next `kgym:rendered` mark.
async fn action_ms(b: &Browser, action: &str) -> f64 {
    let script = format!(
        "const done = arguments[arguments.length - 1];
         const before = performance.getEntriesByName('kgym:rendered').length;
         const t0 = performance.now();
         {action};
         const poll = () => {{
           const m = performance.getEntriesByName('kgym:rendered');
           if (m.length > before) done(m[m.length - 1].startTime - t0); else setTimeout(poll, 2);
         }};
         poll();"
    );
    let v =
        tokio::time::timeout(browser::WAIT, b.client.execute_async(&script, vec![])).await.expect("render").unwrap();
    v.as_f64().expect("a time")
}

/// Milliseconds one API call takes from the page (fetch to parsed JSON).
async fn api_ms(b: &Browser, path: &str) -> f64 {
    let script = "const done = arguments[arguments.length - 1];
        const t0 = performance.now();
        fetch(arguments[0]).then(r => r.json()).then(() => done(performance.now() - t0));";
    let v = b.client.execute_async(script, vec![json!(path)]).await.expect("fetch");
    v.as_f64().expect("a time")
}

fn median(mut v: Vec<f64>) -> f64 {
    v.sort_by(f64::total_cmp);
    v[v.len() / 2]
}

/// The measurements of one history: (name, median ms).
async fn measure(b: &Browser, url: &str, n: usize, middle: JobId, runs: usize) -> Vec<(&'static str, f64)> {
    let mut rows: Vec<(&'static str, Vec<f64>)> = Vec::new();
    let mut add = |name: &'static str, ms: f64| match rows.iter_mut().find(|(n, _)| *n == name) {
        Some((_, v)) => v.push(ms),
        None => rows.push((name, vec![ms])),
    };
    let bug = format!("bug-{}", (n / 2) % 500);
    let last_start = (n.saturating_sub(1) / 20) * 20;
    for _ in 0..runs {
        add("job list, first page (load)", load_ms(b, &format!("{url}/")).await);
        let filter = format!(
            "document.getElementById('f-tag').value = 'bug'; document.getElementById('f-tag-value').value = '{bug}';
             document.querySelector('form.filters').requestSubmit()"
        );
        add("filter by tag value (submit → rows)", action_ms(b, &filter).await);
        add(
            "filter by status (click → rows)",
            action_ms(b, "document.querySelector('a.chip[data-status=aborted], a.chip[data-status=finished]').click()")
                .await,
        );
        add("job list, last page (load)", load_ms(b, &format!("{url}/?start={last_start}")).await);
        add("job list, 200 per page (load)", load_ms(b, &format!("{url}/?limit=200")).await);
        add("job page (load)", load_ms(b, &format!("{url}/ui/job/{middle}")).await);
        add("job page from the list (click → page)", {
            load_ms(b, &format!("{url}/")).await;
            action_ms(b, "document.querySelector('table.jobs tbody a.job-id').click()").await
        });
        add("API: GET /api/v1/jobs", api_ms(b, "/api/v1/jobs?limit=20").await);
        add("API: GET /api/v1/jobs/counts", api_ms(b, "/api/v1/jobs/counts").await);
        add(
            "API: GET /api/v1/jobs?tag=bug&tag_value=…",
            api_ms(b, &format!("/api/v1/jobs?tag=bug&tag_value={bug}")).await,
        );
    }
    let errors: Value = b.js("return window.kgymErrors || [];", vec![]).await;
    assert_eq!(errors, json!([]), "the page's scripts threw");
    rows.into_iter().map(|(name, v)| (name, median(v))).collect()
}

async fn history(b: &Browser, n: usize, runs: usize) -> Vec<(&'static str, f64)> {
    let dir = tempfile::tempdir().expect("temp dir");
    eprintln!("filling {n} jobs");
    let gym = filled_gym(dir.path(), n).await;
    let url = gym.http_url().unwrap();
    let middle = JobId::new((n as u64 / 2).max(1));
    // Warm up: the browser has the assets and the database its pages.
    load_ms(b, &format!("{url}/")).await;
    let rows = measure(b, &url, n, middle, runs).await;
    gym.shutdown().await;
    rows
}

fn main() {
    let Some((chromium, driver)) = browser::tools() else { return };
    // `cargo bench` passes `--bench`; `cargo test --all-targets` does not.
    let full = std::env::args().any(|a| a == "--bench");
    let (small, big, runs) = if full {
        let big = std::env::var("KGYM_DASHBOARD_JOBS").ok().and_then(|v| v.parse().ok()).unwrap_or(BIG_JOBS);
        (BASELINE_JOBS, big, 5)
    } else {
        (20, 200, 1)
    };
    let rt = tokio::runtime::Builder::new_multi_thread().worker_threads(2).enable_all().build().unwrap();
    rt.block_on(async {
        let b = Browser::start(&chromium, &driver, 1280, 900).await;
        let base = history(&b, small, runs).await;
        let large = history(&b, big, runs).await;
        b.close().await;
        println!();
        println!("dashboard in Chromium (median of {runs}; ms from the action to the page's data on screen)");
        println!("| measurement | {small} jobs | {big} jobs | ratio | goal |");
        println!("|---|---|---|---|---|");
        for ((name, small), (_, large)) in base.iter().zip(&large) {
            let goal = if name.starts_with("API") { "" } else { "< 1000 ms" };
            println!("| {name} | {small:.0} ms | {large:.0} ms | {:.2} | {goal} |", large / small.max(0.001));
        }
    });
}
