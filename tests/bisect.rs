//! Cause and fix bisection for real: `kgym_testkit::history`'s 30-commit
//! history on top of Debian's linux-source-6.1 (imported once into a git
//! repository kept in the test cache) where commit 10 introduces the bug of
//! `testdata/bugs/bug.patch`, commit 22 reverts it and commit 12 does not
//! compile. Every step builds
//! the commit on one warm tree (the sample config, so ccache from the other
//! tests helps) and runs the reproducer in QEMU.

use std::path::Path;
use std::time::Duration;

use kgym::bisect::{BisectError, BisectKind, BisectRequest, Bisection, End, StepRole, TAG_BISECTION, Verdict, bisect};
use kgym::core::stage::reproduce::Reproducer;
use kgym::samples::{BUG_PATCH, BUG_TITLE, CONFIG_FRAGMENT, REPRO_C};
use kgym::sched::http::ServerOptions;
use kgym::sched::types::ListQuery;
use kgym_testkit::history::{BROKEN_AT, BUG_AT, COMMITS, FIX_AT, History, synthetic_history};
use tokio_util::sync::CancellationToken;

/// The reproducer crashes the buggy kernel at once; the budget is how long
/// a kernel without the bug is watched (boot included: slow under TCG on a
/// loaded machine).
const BUDGET: Duration = Duration::from_secs(30);

fn tools_available() -> bool {
    kgym_testkit::test_kernel_available() && kgym_testkit::require_tool("qemu-system-x86_64").is_some()
}

fn request(kind: BisectKind, repo: &Path, good: &str, bad: &str, work: &Path) -> BisectRequest {
    BisectRequest::new(kind, repo.display().to_string(), good, bad, kgym::samples::config(), Reproducer::c(REPRO_C))
        .budget(BUDGET)
        .lineage("bisect-test")
        .work_dir(work)
}

fn limit(b: &Bisection) -> u32 {
    f64::from(b.candidates).log2().ceil() as u32 + 2
}

async fn cli(data: &Path, args: &[&str]) -> std::process::Output {
    let mut cmd = kgym::proc::command(env!("CARGO_BIN_EXE_kgym"));
    cmd.arg("--data").arg(data).args(args);
    kgym::proc::output(cmd, "kgym", Duration::from_secs(600), &CancellationToken::new()).await.unwrap()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn cause_and_fix_bisections_name_the_commits_skip_the_broken_one_and_check_the_ends() {
    if !tools_available() {
        return;
    }
    let History { repo, commits } = synthetic_history(BUG_PATCH).await;
    let dir = tempfile::tempdir().unwrap();
    let gym = kgym::Gym::builder(dir.path().join("gym"))
        .build_cache(kgym_testkit::test_cache_dir())
        .serve_http("127.0.0.1:0".parse().unwrap(), ServerOptions::default())
        .start()
        .await
        .unwrap();
    let sched = gym.scheduler();
    let work = dir.path().join("work");

    // Cause: good = the import, bad = commit 16 (bug present, build fixed).
    let cause = bisect(sched.as_ref(), &request(BisectKind::Cause, &repo, &commits[0], &commits[16], &work))
        .await
        .unwrap_or_else(|e| panic!("cause bisection: {e}"));
    println!("{cause}");
    let culprit = cause.culprit.as_ref().unwrap_or_else(|| panic!("no culprit: {cause:#?}"));
    assert_eq!(culprit.hash, commits[BUG_AT], "{cause}");
    assert!(culprit.subject.contains("introduces a use-after-free"), "{culprit:?}");
    assert_eq!(cause.original_title.as_deref(), Some(BUG_TITLE));
    assert_eq!(cause.candidates, 16);
    assert!(cause.builds <= limit(&cause), "{} builds for {} candidates:\n{cause}", cause.builds, cause.candidates);
    let broken = cause.steps.iter().find(|s| s.commit == commits[BROKEN_AT]).expect("the broken commit was not tested");
    assert_eq!(broken.outcome.verdict, Verdict::BuildFailed, "{broken:?}");
    assert_eq!(broken.marked, "skip");
    assert!(cause.steps.iter().filter(|s| s.role == StepRole::Search).all(|s| !s.reused));
    // After the first (possibly cold) build, steps rebuilt the warm tree.
    assert!(
        cause.steps[1..].iter().filter(|s| s.outcome.warm.is_some()).all(|s| s.outcome.warm == Some(true)),
        "{cause}"
    );
    assert_eq!(cause.confidence, 1.0);

    // Every step is a job tagged with the bisection.
    let query =
        ListQuery { tag: Some(TAG_BISECTION.to_owned()), tag_value: Some(cause.id.clone()), ..ListQuery::default() };
    let tagged = sched.list(&query).await.unwrap();
    assert_eq!(tagged.total, cause.steps.len() as u64);

    // Fix: good = the bug's commit (it crashes), bad = the last commit.
    let fix = bisect(sched.as_ref(), &request(BisectKind::Fix, &repo, &commits[BUG_AT], &commits[COMMITS], &work))
        .await
        .unwrap_or_else(|e| panic!("fix bisection: {e}"));
    println!("{fix}");
    assert_eq!(fix.culprit.as_ref().map(|c| c.hash.as_str()), Some(commits[FIX_AT].as_str()), "{fix}");
    assert!(fix.builds <= limit(&fix), "{} builds for {} candidates:\n{fix}", fix.builds, fix.candidates);
    // The crashing end was tested by the cause bisection already.
    assert!(fix.steps.iter().any(|s| s.role == StepRole::GoodEnd && s.reused), "{fix}");

    // A "good" end that crashes is refused with the typed error.
    let err = bisect(sched.as_ref(), &request(BisectKind::Cause, &repo, &commits[BUG_AT], &commits[16], &work))
        .await
        .unwrap_err();
    assert!(matches!(err, BisectError::WrongEnd { end: End::Good, got: "crash", .. }), "{err}");

    // The CLI, against the same gym over HTTP: steps are jobs `kgym status` shows...
    let url = gym.http_url().unwrap();
    let data = dir.path().join("cli");
    let job = cause.steps[2].job.to_string();
    let out = cli(&data, &["status", "--server", &url, &job, "--json"]).await;
    assert!(out.status.success(), "{}", String::from_utf8_lossy(&out.stderr));
    let status: serde_json::Value = serde_json::from_slice(&out.stdout).unwrap();
    assert_eq!(status["tags"][TAG_BISECTION], cause.id.as_str(), "{status}");
    // ... and `kgym bisect` answers from the jobs already run.
    let fragment = dir.path().join("test-kernel.frag");
    std::fs::write(&fragment, CONFIG_FRAGMENT).unwrap();
    let repro = dir.path().join("repro.c");
    std::fs::write(&repro, REPRO_C).unwrap();
    let common = |good: &str, bad: &str| -> Vec<String> {
        let mut v: Vec<String> = ["bisect", "--server", &url, "--source"].map(str::to_owned).to_vec();
        v.push(repo.display().to_string());
        v.extend(
            ["--good", good, "--bad", bad, "--base", "tinyconfig", "--budget", "30s", "--json"].map(str::to_owned),
        );
        v.extend([
            "--fragment".to_owned(),
            fragment.display().to_string(),
            "--repro".to_owned(),
            repro.display().to_string(),
        ]);
        v
    };
    let args = common(&commits[0], &commits[16]);
    let out = cli(&data, &args.iter().map(String::as_str).collect::<Vec<_>>()).await;
    assert!(out.status.success(), "{}", String::from_utf8_lossy(&out.stderr));
    let json: serde_json::Value = serde_json::from_slice(&out.stdout).unwrap();
    assert_eq!(json["culprit"]["hash"], commits[BUG_AT].as_str(), "{json}");
    for key in ["subject", "author", "date"] {
        assert!(json["culprit"][key].is_string(), "{json}");
    }
    assert!(json["range"].as_array().unwrap().is_empty());
    let steps = json["steps"].as_array().unwrap();
    assert!(steps.iter().all(|s| s["commit"].is_string() && s["verdict"].is_string() && s["build_secs"].is_number()));
    assert!(json["builds"].is_number());

    let args = common(&commits[BUG_AT], &commits[16]);
    let out = cli(&data, &args.iter().map(String::as_str).collect::<Vec<_>>()).await;
    assert!(!out.status.success());
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert!(stderr.contains("good (older) end") && stderr.contains("should not crash"), "{stderr}");
    gym.shutdown().await;
}
