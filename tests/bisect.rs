//! Cause and fix bisection for real: a 30-commit history on top of Debian's
//! linux-source-6.1 (imported once into a git repository kept in the test
//! cache) where commit 10 introduces the bug of `testdata/bugs/bug.patch`,
//! commit 22 reverts it and commit 12 does not compile. Every step builds
//! the commit on one warm tree (the sample config, so ccache from the other
//! tests helps) and runs the reproducer in QEMU.

use std::path::{Path, PathBuf};
use std::time::Duration;

use kgym::bisect::{BisectError, BisectKind, BisectRequest, Bisection, End, StepRole, TAG_BISECTION, Verdict, bisect};
use kgym::core::stage::reproduce::Reproducer;
use kgym::samples::{BUG_PATCH, BUG_TITLE, CONFIG_FRAGMENT, REPRO_C};
use kgym::sched::http::ServerOptions;
use kgym::sched::types::ListQuery;
use tokio_util::sync::CancellationToken;

/// Bumped when the synthetic history changes (a new cache directory).
const HISTORY: &str = "bisect-history-v1";
const COMMITS: usize = 30;
const BUG_AT: usize = 10;
const BROKEN_AT: usize = 12;
const FIX_AT: usize = 22;
const BROKEN_LINE: &str = "kgym_bisect_this_commit_does_not_compile\n";
/// The reproducer crashes the buggy kernel at once; the budget is how long
/// a kernel without the bug is watched.
const BUDGET: Duration = Duration::from_secs(10);

fn tools_available() -> bool {
    kgym_testkit::test_kernel_available() && kgym_testkit::require_tool("qemu-system-x86_64").is_some()
}

async fn run(dir: &Path, program: &str, args: &[&str], timeout: Duration) -> String {
    let mut cmd = kgym::proc::tree_command(program);
    cmd.args(args)
        .current_dir(dir)
        .env("GIT_AUTHOR_NAME", "kgym test")
        .env("GIT_AUTHOR_EMAIL", "test@kgym.invalid")
        .env("GIT_COMMITTER_NAME", "kgym test")
        .env("GIT_COMMITTER_EMAIL", "test@kgym.invalid")
        .env("GIT_AUTHOR_DATE", "2024-01-01T00:00:00Z")
        .env("GIT_COMMITTER_DATE", "2024-01-01T00:00:00Z");
    let out = kgym::proc::output(cmd, program, timeout, &CancellationToken::new()).await.unwrap();
    assert!(out.status.success(), "{program} {args:?}: {}", String::from_utf8_lossy(&out.stderr));
    String::from_utf8_lossy(&out.stdout).into_owned()
}

async fn git(dir: &Path, args: &[&str]) -> String {
    run(dir, "git", args, Duration::from_secs(600)).await
}

fn append(path: &Path, text: &str) {
    let mut s = std::fs::read_to_string(path).unwrap_or_default();
    s.push_str(text);
    std::fs::write(path, s).unwrap();
}

/// The synthetic history (cached; made once under a file lock): its
/// repository and the commits, `commits[0]` being the imported tarball.
async fn history() -> (PathBuf, Vec<String>) {
    let root = kgym_testkit::test_cache_dir().join(HISTORY);
    let lock_path = kgym_testkit::test_cache_dir().join(format!("{HISTORY}.lock"));
    std::fs::create_dir_all(kgym_testkit::test_cache_dir()).unwrap();
    let _lock = kgym::proc::FileLock::acquire(&lock_path, &CancellationToken::new()).await.unwrap();
    let repo = root.join("repo");
    let done = root.join("commits");
    if let Ok(list) = std::fs::read_to_string(&done) {
        return (repo, list.lines().map(str::to_owned).collect());
    }
    let _ = std::fs::remove_dir_all(&root);
    std::fs::create_dir_all(&repo).unwrap();
    let tarball = kgym::samples::DEBIAN_KERNEL_TARBALL;
    run(&repo, "tar", &["-xJf", tarball, "--strip-components=1"], Duration::from_secs(900)).await;
    git(&repo, &["init", "--quiet", "."]).await;
    git(&repo, &["-c", "core.compression=1", "add", "--all", "."]).await;
    git(&repo, &["commit", "--quiet", "-m", "import linux-source-6.1"]).await;
    let mut commits = vec![git(&repo, &["rev-parse", "HEAD"]).await.trim().to_owned()];
    let sys_c = repo.join("kernel/sys.c");
    let bug = root.join("bug.patch");
    std::fs::write(&bug, BUG_PATCH).unwrap();
    let bug = bug.to_str().unwrap();
    for i in 1..=COMMITS {
        append(&repo.join("Documentation/kgym-bisect.txt"), &format!("history step {i}\n"));
        let subject = match i {
            BUG_AT => {
                git(&repo, &["apply", bug]).await;
                "kernel/sys: add PR_KGYM_NOTE (introduces a use-after-free)".to_owned()
            }
            BROKEN_AT => {
                append(&sys_c, BROKEN_LINE);
                "kernel/sys: a commit that does not compile".to_owned()
            }
            n if n == BROKEN_AT + 1 => {
                let text = std::fs::read_to_string(&sys_c).unwrap().replace(BROKEN_LINE, "");
                std::fs::write(&sys_c, text).unwrap();
                "kernel/sys: fix the build".to_owned()
            }
            FIX_AT => {
                git(&repo, &["apply", "-R", bug]).await;
                "kernel/sys: revert PR_KGYM_NOTE (fixes the use-after-free)".to_owned()
            }
            n if n % 5 == 0 => {
                append(&sys_c, &format!("/* kgym bisect history: step {n} */\n"));
                format!("kernel/sys: comment {n}")
            }
            n => format!("Documentation: bisect history step {n}"),
        };
        git(&repo, &["add", "--all", "."]).await;
        git(&repo, &["commit", "--quiet", "-m", &subject]).await;
        commits.push(git(&repo, &["rev-parse", "HEAD"]).await.trim().to_owned());
    }
    std::fs::write(&done, commits.join("\n")).unwrap();
    (repo, commits)
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
    let (repo, commits) = history().await;
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
    let mut query = ListQuery::default();
    query.tag = Some(TAG_BISECTION.to_owned());
    query.tag_value = Some(cause.id.clone());
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
            ["--good", good, "--bad", bad, "--base", "tinyconfig", "--budget", "10s", "--json"].map(str::to_owned),
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
