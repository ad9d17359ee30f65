//! The dashboard in a real browser (Debian's chromium + chromedriver,
//! driven over WebDriver) against a real gym: the stock build and
//! reproduce workers and the shared test kernel's warm tree, SQLite, the
//! HTTP server with a token. Jobs: a quick one that finishes, a build that
//! fails with a typed error, a build + reproduce that crashes the kernel,
//! and one that runs until it is aborted from the page.
//!
//! On failure a screenshot is saved under `target/kgym-dashboard/` (the
//! path is printed). `KGYM_DASHBOARD_SCREENSHOT=path.png` also saves the
//! crash job's page there (the README's picture).

mod common;

use std::panic::AssertUnwindSafe;
use std::sync::Arc;
use std::time::Duration;

use common::browser::{self, Browser};
use common::workers::{Hold, HoldArgs, Note, NoteArgs};
use futures::FutureExt;
use kgym::Gym;
use kgym::core::stage::StageArgs;
use kgym::core::stage::build::{BuildArgs, KernelSource};
use kgym::core::{JobId, JobSpec, JobStatus, StageKind};
use kgym::samples::{BUG_PATCH, BUG_TITLE, DEBIAN_KERNEL_TARBALL, evaluation_job};
use kgym::sched::http::ServerOptions;
use kgym::sched::{Scheduler, SchedulerExt};
use serde_json::json;

const TOKEN: &str = "dashboard-test-token";

/// A patch whose context is not in kernel/sys.c: the build fails with
/// `patch-does-not-apply`.
const BAD_PATCH: &str = "diff --git a/kernel/sys.c b/kernel/sys.c
--- a/kernel/sys.c
+++ b/kernel/sys.c
@@ -1,3 +1,3 @@
 this context
-is not in
+the kernel's
 kernel/sys.c
";

/// The jobs the scenario looks at.
struct Jobs {
    quick: JobId,
    failing: JobId,
    crash: JobId,
    running: JobId,
}

fn tools_available() -> bool {
    browser::tools().is_some()
        && kgym_testkit::test_kernel_available()
        && kgym_testkit::require_tool("qemu-system-x86_64").is_some()
}

fn tagged(spec: JobSpec, case: &str) -> JobSpec {
    spec.tag("suite", "dashboard").tag("case", case)
}

async fn submit_jobs(sched: &Arc<dyn Scheduler>) -> Jobs {
    let note = |title: &str| NoteArgs { title: Some(title.into()), fail: false };
    let quick =
        sched.submit(tagged(JobSpec::new().stage(NoteArgs::kind(), &note("a quick note")), "quick")).await.unwrap();
    let bad =
        BuildArgs::new(KernelSource::tarball(DEBIAN_KERNEL_TARBALL), kgym::samples::config()).with_patch(BAD_PATCH);
    let failing = sched.submit(tagged(JobSpec::new().stage(StageKind::build(), &bad), "failing")).await.unwrap();
    let spec = evaluation_job(KernelSource::tarball(DEBIAN_KERNEL_TARBALL), BUG_PATCH, Duration::from_secs(60));
    let crash = sched.submit(tagged(spec, "crash")).await.unwrap();
    let running = sched
        .submit(tagged(JobSpec::new().stage(HoldArgs::kind(), &HoldArgs { seconds: 900 }), "running"))
        .await
        .unwrap();
    Jobs { quick, failing, crash, running }
}

async fn wait_for_status(sched: &Arc<dyn Scheduler>, id: JobId, status: JobStatus, within: Duration) {
    let deadline = std::time::Instant::now() + within;
    loop {
        let job = sched.get(id).await.unwrap();
        if job.status == status {
            return;
        }
        assert!(std::time::Instant::now() < deadline, "job {id} is {:?}, not {status:?}", job.status);
        tokio::time::sleep(Duration::from_millis(200)).await;
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn dashboard_shows_real_jobs_and_acts_on_them() {
    if !tools_available() {
        return;
    }
    let (chromium, driver) = browser::tools().unwrap();
    let dir = tempfile::tempdir().unwrap();
    let gym = Gym::builder(dir.path())
        .build_cache(kgym_testkit::test_cache_dir())
        .worker(Arc::new(Note), 1)
        .worker(Arc::new(Hold), 1)
        .serve_http("127.0.0.1:0".parse().unwrap(), ServerOptions::default().token(Some(TOKEN.into())))
        .start()
        .await
        .unwrap();
    let sched = gym.scheduler();
    let started = std::time::Instant::now();
    let jobs = submit_jobs(&sched).await;

    // The crash job builds on the shared warm tree (a cold cache compiles
    // the whole kernel first) and boots it once.
    let crash = tokio::time::timeout(Duration::from_secs(40 * 60), sched.wait(jobs.crash))
        .await
        .expect("the crash job did not end in 40 minutes")
        .unwrap();
    assert!(crash.succeeded(), "the crash job failed: {:#?}", crash.failure());
    assert_eq!(crash.results[1].headline.as_deref(), Some(BUG_TITLE));
    let failing = sched.wait(jobs.failing).await.unwrap();
    assert_eq!(failing.failure().map(|(_, f)| f.code.as_str()), Some("patch-does-not-apply"), "{failing:#?}");
    assert!(sched.wait(jobs.quick).await.unwrap().succeeded());
    wait_for_status(&sched, jobs.running, JobStatus::InProgress, Duration::from_secs(60)).await;

    eprintln!("[dashboard test] jobs ready after {:.0} s", started.elapsed().as_secs_f64());
    let url = gym.http_url().unwrap();
    let b = Browser::start(&chromium, &driver, 1280, 900).await;
    let outcome = AssertUnwindSafe(scenario(&b, &url, &sched, &jobs)).catch_unwind().await;
    eprintln!("[dashboard test] browser part done after {:.0} s", started.elapsed().as_secs_f64());
    if outcome.is_err() {
        b.failure_screenshot("browser").await;
    }
    b.close().await;
    gym.shutdown().await;
    if let Err(panic) = outcome {
        std::panic::resume_unwind(panic);
    }
}

async fn scenario(b: &Browser, url: &str, sched: &Arc<dyn Scheduler>, jobs: &Jobs) {
    // The token for this tab (reads may need it; the abort part takes it
    // away and puts it back through the page's own dialog).
    b.client.goto(&format!("{url}/")).await.unwrap();
    b.js("sessionStorage.setItem('kgym.token', arguments[0]);", vec![json!(TOKEN)]).await;

    job_list(b, url, sched, jobs).await;
    crash_page(b, url, jobs).await;
    failure_and_quick_pages(b, url, jobs).await;
    abort_from_the_page(b, url, sched, jobs).await;
    edit_tags(b, url, sched, jobs).await;
    workers_and_overview(b, url).await;
    assert_eq!(b.page_errors().await, Vec::<String>::new(), "the page's scripts threw");
}

fn rows_are(ids: &[JobId]) -> (String, Vec<serde_json::Value>) {
    let ids: Vec<String> = ids.iter().map(ToString::to_string).collect();
    (
        "const ids = [...document.querySelectorAll('table.jobs tbody tr[data-job]')].map(r => r.dataset.job);
         return JSON.stringify(ids) === JSON.stringify(arguments[0]);"
            .into(),
        vec![json!(ids)],
    )
}

async fn wait_rows(b: &Browser, what: &str, ids: &[JobId]) {
    let (script, args) = rows_are(ids);
    b.wait_js(what, &script, args).await;
}

async fn job_list(b: &Browser, url: &str, sched: &Arc<dyn Scheduler>, jobs: &Jobs) {
    b.open(&format!("{url}/"), "table.jobs tbody tr[data-job]").await;
    // Newest first by default.
    wait_rows(b, "the four jobs, newest first", &[jobs.running, jobs.crash, jobs.failing, jobs.quick]).await;
    let count = |status: &str| format!("a.chip[data-status={status}] b");
    assert_eq!(b.texts(&count("finished")).await, ["3"]);
    assert_eq!(b.texts(&count("in_progress")).await, ["1"]);
    assert_eq!(b.texts(&count("all")).await, ["4"]);
    // The crash title is the crash job's headline in the list.
    let headline = b.texts(&format!("tr[data-job='{}'] td.headline", jobs.crash)).await;
    assert_eq!(headline, [BUG_TITLE]);
    let status = b.texts(&format!("tr[data-job='{}'] .badge", jobs.running)).await;
    assert_eq!(status, ["running"]);

    // Filter by tag key and value.
    b.type_into("#f-tag", "case").await;
    b.type_into("#f-tag-value", "crash").await;
    b.click("form.filters button[type=submit]").await;
    wait_rows(b, "only the crash job", &[jobs.crash]).await;
    let here = b.client.current_url().await.unwrap();
    assert!(here.query().unwrap_or("").contains("tag_value=crash"), "{here}");
    // Counts follow the tag filter.
    b.wait_js(
        "counts of the tag filter",
        "return document.querySelector('a.chip[data-status=all] b').textContent === '1';",
        vec![],
    )
    .await;

    // Filter by status with the counts' chips.
    b.client.goto(&format!("{url}/")).await.unwrap();
    wait_rows(b, "all jobs again", &[jobs.running, jobs.crash, jobs.failing, jobs.quick]).await;
    b.click("a.chip[data-status=in_progress]").await;
    wait_rows(b, "only the running job", &[jobs.running]).await;

    // A time range that ends before the jobs were submitted shows none.
    b.client.goto(&format!("{url}/?to=2001-01-01T00:00:00Z")).await.unwrap();
    b.wait_css("table.jobs tbody .empty").await;

    // Sort: oldest first.
    b.client.goto(&format!("{url}/")).await.unwrap();
    wait_rows(b, "newest first", &[jobs.running, jobs.crash, jobs.failing, jobs.quick]).await;
    b.click("th[aria-sort=descending] a.sort").await;
    wait_rows(b, "oldest first", &[jobs.quick, jobs.failing, jobs.crash, jobs.running]).await;

    // Live: a job submitted while the page is open appears and finishes
    // there without a reload.
    let note = NoteArgs { title: None, fail: false };
    let late = sched.submit(tagged(JobSpec::new().stage(NoteArgs::kind(), &note), "late")).await.unwrap();
    b.wait_js(
        "the late job to show up finished",
        "const r = document.querySelector(`tr[data-job='${arguments[0]}']`); return !!r && r.dataset.status === 'finished';",
        vec![json!(late.to_string())],
    )
    .await;
    b.wait_js(
        "the counts to follow",
        "return document.querySelector('a.chip[data-status=finished] b').textContent === '4';",
        vec![],
    )
    .await;

    // A quick time range from the form: every job is from the last hour.
    b.client.goto(&format!("{url}/")).await.unwrap();
    b.click("form.filters .quick button").await;
    wait_rows(b, "the last hour's jobs", &[late, jobs.running, jobs.crash, jobs.failing, jobs.quick]).await;
    let here = b.client.current_url().await.unwrap();
    assert!(here.query().unwrap_or("").contains("from="), "{here}");
}

async fn crash_page(b: &Browser, url: &str, jobs: &Jobs) {
    // From the list, by clicking the job.
    b.open(&format!("{url}/"), &format!("tr[data-job='{}'] a.job-id", jobs.crash)).await;
    b.click(&format!("tr[data-job='{}'] a.job-id", jobs.crash)).await;
    b.wait_css(".crash-headline").await;
    assert!(b.client.current_url().await.unwrap().path().ends_with(&format!("/ui/job/{}", jobs.crash)));
    assert_eq!(b.texts(".crash-headline").await, [BUG_TITLE]);
    assert_eq!(b.texts(".crash-title").await, [BUG_TITLE]);
    assert_eq!(b.texts("li.stage .badge").await, ["succeeded", "succeeded"]);
    // The report is fetched and its symbolized frames are listed.
    b.wait_css("ol.frames li").await;
    let frames = b.texts("ol.frames li .fn").await;
    assert!(frames.iter().any(|f| f == "kgym_note_store"), "{frames:?}");
    let locations = b.texts("ol.frames li .loc").await;
    // (The symbolizer may prefix paths with `./`.)
    assert!(locations.iter().any(|l| l.trim_start_matches("./").starts_with("kernel/sys.c:")), "{locations:?}");
    let report = b.texts("pre.report").await.concat();
    assert!(report.contains("BUG: KASAN: use-after-free in kgym_note_store"), "{report}");
    // Build timings and artifacts.
    b.wait_css("svg.timing rect").await;
    let legend = b.texts(".timings .legend li").await.join(" | ");
    assert!(legend.contains("compile") && legend.contains("total"), "{legend}");
    b.wait_css("table.artifacts").await;
    let artifacts = b.texts("table.artifacts a.artifact").await;
    for want in ["0_build/bzImage", "0_build/build.log", "0_build/config", "1_reproduce/incidents/0-0/report"] {
        assert!(artifacts.iter().any(|a| a.ends_with(want)), "{want} not in {artifacts:?}");
    }
    if let Ok(path) = std::env::var("KGYM_DASHBOARD_SCREENSHOT") {
        if let Ok(h) = std::env::var("KGYM_DASHBOARD_SCREENSHOT_HEIGHT") {
            b.client.set_window_size(1280, h.parse().unwrap()).await.unwrap();
            tokio::time::sleep(Duration::from_millis(500)).await;
        }
        let saved = b.screenshot_to(std::path::Path::new(&path)).await.expect("save the README screenshot");
        eprintln!("saved the job page to {}", saved.display());
    }
}

async fn failure_and_quick_pages(b: &Browser, url: &str, jobs: &Jobs) {
    b.open(&format!("{url}/ui/job/{}", jobs.failing), ".failure .code").await;
    assert_eq!(b.texts(".failure .code").await, ["patch-does-not-apply"]);
    assert_eq!(b.texts("li.stage .badge").await, ["failed"]);
    assert_eq!(b.texts(".job-status .badge").await, ["failed"]);
    b.open(&format!("{url}/ui/job/{}", jobs.quick), "li.stage dl.json").await;
    assert_eq!(b.texts("li.stage .badge").await, ["succeeded"]);
    assert_eq!(b.texts(".crash-headline").await, ["a quick note"]);
    b.wait_css("pre.log .line").await;
    let log = b.texts("pre.log .line").await.join("\n");
    assert!(log.contains("note: done"), "{log}");
}

async fn edit_tags(b: &Browser, url: &str, sched: &Arc<dyn Scheduler>, jobs: &Jobs) {
    b.open(&format!("{url}/ui/job/{}", jobs.quick), "form.tags-form").await;
    b.click("#add-tag").await;
    b.type_into("form.tags-form tbody tr:last-child .tag-key", "reviewed").await;
    b.type_into("form.tags-form tbody tr:last-child .tag-value", "yes").await;
    b.click("#save-tags").await;
    b.wait_css(".action-status.ok").await;
    let tags = sched.tags(jobs.quick).await.unwrap();
    assert_eq!(tags.get("reviewed").map(String::as_str), Some("yes"), "{tags:?}");
    assert_eq!(tags.get("case").map(String::as_str), Some("quick"), "{tags:?}");
}

async fn abort_from_the_page(b: &Browser, url: &str, sched: &Arc<dyn Scheduler>, jobs: &Jobs) {
    b.open(&format!("{url}/ui/job/{}", jobs.running), "#abort").await;
    // The log tail is live: new lines arrive over the event stream.
    let seconds = "return [...document.querySelectorAll('pre.log .line')].filter(l => l.textContent.includes('hold: second')).length;";
    b.wait_js("log lines", &format!("return ((() => {{ {seconds} }})()) > 0;"), vec![]).await;
    let before = b.js(seconds, vec![]).await.as_u64().unwrap();
    b.wait_js(
        "more log lines while the page is open",
        &format!("return ((() => {{ {seconds} }})()) > arguments[0];"),
        vec![json!(before)],
    )
    .await;

    // Without a token: refused, and the page says so.
    b.click("#auth-button").await;
    b.click("#token-forget").await;
    b.wait_texts("#auth-state", &["No token"]).await;
    b.click("#abort").await;
    b.wait_js(
        "the refusal without a token",
        "const s = document.querySelector('.action-status.error'); return !!s && s.textContent.includes('refused') && s.textContent.includes('needs a token');",
        vec![],
    )
    .await;
    assert_eq!(sched.get(jobs.running).await.unwrap().status, JobStatus::InProgress);

    // With a wrong token: refused too.
    b.click("#auth-button").await;
    // (Enter in the field saves, as the dialog's first button.)
    b.type_into("#token-input", "not-the-token\u{E007}").await;
    b.wait_texts("#auth-state", &["Token set"]).await;
    b.click("#abort").await;
    b.wait_js(
        "the refusal of a wrong token",
        "const s = document.querySelector('.action-status.error'); return !!s && s.textContent.includes('refused this tab') ;",
        vec![],
    )
    .await;
    assert_eq!(sched.get(jobs.running).await.unwrap().status, JobStatus::InProgress);

    // With the token: the job stops.
    b.click("#auth-button").await;
    b.type_into("#token-input", TOKEN).await;
    b.click("#token-save").await;
    // The dialog's `close` event stores it, a task after the click.
    b.wait_js(
        "the token to be stored",
        "return sessionStorage.getItem('kgym.token') === arguments[0];",
        vec![json!(TOKEN)],
    )
    .await;
    b.click("#abort").await;
    b.wait_js(
        "the job to show aborted",
        "const s = document.querySelector('.job-status .badge'); return !!s && s.textContent === 'aborted';",
        vec![],
    )
    .await;
    let job = sched.get(jobs.running).await.unwrap();
    assert_eq!(job.status, JobStatus::Aborted);
    // The page offers a restart now, and the stage shows it was stopped.
    b.wait_css("#restart").await;
    b.wait_js(
        "the stage to show aborted",
        "const s = document.querySelector('li.stage .badge'); return !!s && s.textContent === 'aborted';",
        vec![],
    )
    .await;

    // Restart from stage 0: it runs again (and is aborted again).
    b.click("#restart").await;
    b.wait_css("#abort").await;
    wait_for_status(sched, jobs.running, JobStatus::InProgress, Duration::from_secs(30)).await;
    b.click("#abort").await;
    b.wait_js(
        "the restarted job to show aborted",
        "const s = document.querySelector('.job-status .badge'); return !!s && s.textContent === 'aborted';",
        vec![],
    )
    .await;
    assert_eq!(sched.get(jobs.running).await.unwrap().status, JobStatus::Aborted);
}

async fn workers_and_overview(b: &Browser, url: &str) {
    b.open(&format!("{url}/ui/workers"), "table.workers tbody tr").await;
    let kinds = b.texts("table.workers .kind").await;
    for want in ["build", "reproduce", "note", "hold"] {
        assert!(kinds.iter().any(|k| k == want), "{want} not in {kinds:?}");
    }
    assert_eq!(b.texts("table.workers .badge").await, ["live"]);
    b.wait_css("table.syslog tbody tr[data-seq]").await;
    let host = b.texts("table.workers tbody th").await.remove(0);
    // The system log narrowed to one host.
    b.wait_js("the host filter", "return document.querySelectorAll('#log-host option').length > 1;", vec![]).await;
    b.wait_css("#log-host").await.select_by_value(&host).await.unwrap();
    b.click("form.filters button[type=submit]").await;
    b.wait_js(
        "log entries of that host only",
        "const rows = [...document.querySelectorAll('table.syslog tbody tr[data-seq]')];
         return location.search.includes('host=') && rows.length > 0 && rows.every(r => r.children[2].textContent === arguments[0]);",
        vec![json!(host)],
    )
    .await;

    b.open(&format!("{url}/ui/overview"), "svg.chart rect").await;
    let titles = b.texts("table.titles td.crash").await;
    assert!(titles.iter().any(|t| t == BUG_TITLE), "{titles:?}");
    let kinds = b.texts("svg.chart .label").await.join(" ");
    assert!(kinds.contains("build") && kinds.contains("reproduce"), "{kinds}");
}
