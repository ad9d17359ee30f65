//! The whole gym, for real: a kernel built from Debian's linux-source-6.1
//! with an injected bug, booted in QEMU, the crash reproduced and titled,
//! a fix judged fixed; the `kgym` CLI on the same path; and an abort that
//! must kill the running `make`.
//!
//! Builds share one warm tree under `target/kgym-test-cache` (the sample
//! config, built once by `LocalBuilder` — from ccache, which kgym-testkit's
//! test kernel of the same config filled), so later builds recompile only
//! the patched objects.

use std::path::{Path, PathBuf};
use std::process::Command;
use std::time::{Duration, Instant};

use futures::StreamExt;
use kgym::Gym;
use kgym::compose::{PatchVerdict, patch_verdict};
use kgym::core::stage::build::{BuildArgs, KernelSource};
use kgym::core::stage::reproduce::ReproduceResult;
use kgym::core::{JobSpec, JobStatus, StageKind};
use kgym::samples::{BUG_PATCH, BUG_TITLE, DEBIAN_KERNEL_TARBALL, FIXED_PATCH, evaluation_job};
use kgym::sched::SchedulerExt;
use kgym::sched::types::JobEvent;

/// The kernel tarball, build tools and QEMU are here (else skip; CI fails).
fn tools_available() -> bool {
    kgym_testkit::test_kernel_available() && kgym_testkit::require_tool("qemu-system-x86_64").is_some()
}

fn tarball() -> KernelSource {
    KernelSource::tarball(DEBIAN_KERNEL_TARBALL)
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn quickstart_loop_reproduces_the_bug_and_judges_the_fix_fixed() {
    if !tools_available() {
        return;
    }
    let dir = tempfile::tempdir().unwrap();
    let gym = Gym::builder(dir.path()).build_cache(kgym_testkit::test_cache_dir()).start().await.unwrap();
    let sched = gym.scheduler();

    let bug = sched.run(evaluation_job(tarball(), BUG_PATCH, Duration::from_secs(60))).await.unwrap();
    assert!(bug.succeeded(), "the bug job failed: {:#?}", bug.failure());
    let repro: ReproduceResult = bug.results[1].decode().unwrap();
    assert!(repro.crashed, "no crash: {repro:#?}");
    assert_eq!(repro.title.as_deref(), Some(BUG_TITLE));
    // The incident is stored: its console log holds the KASAN report.
    let incident = &repro.crashes[0].incidents[0];
    let log = gym.artifacts().get(&incident.log).await.unwrap();
    assert!(String::from_utf8_lossy(&log).contains("BUG: KASAN: use-after-free in kgym_note_store"));
    // The kernel itself is an artifact of the build stage.
    let keys = gym.artifacts().list_job(bug.id).await.unwrap();
    assert!(keys.iter().any(|k| k.as_str().ends_with("0_build/bzImage")), "{keys:?}");

    let fix = sched.run(evaluation_job(tarball(), FIXED_PATCH, Duration::from_secs(20))).await.unwrap();
    assert_eq!(patch_verdict(&fix, BUG_TITLE), PatchVerdict::Fixed, "{fix:#?}");
    // The fix was built on the warm tree of the same source/config.
    assert_eq!(fix.results[0].value["cache"], "hit");
    gym.shutdown().await;
}

#[test]
fn cli_runs_a_job_and_reports_its_title_as_json() {
    if !tools_available() {
        return;
    }
    let dir = tempfile::tempdir().unwrap();
    let job_file = dir.path().join("job.json");
    let spec = evaluation_job(tarball(), BUG_PATCH, Duration::from_secs(60));
    std::fs::write(&job_file, serde_json::to_string_pretty(&spec).unwrap()).unwrap();
    let out = Command::new(env!("CARGO_BIN_EXE_kgym"))
        .arg("--data")
        .arg(dir.path().join("gym"))
        .arg("--build-cache")
        .arg(kgym_testkit::test_cache_dir())
        .args(["run", "--json"])
        .arg(&job_file)
        .output()
        .unwrap();
    let stdout = String::from_utf8_lossy(&out.stdout);
    assert!(out.status.success(), "kgym run failed: {}\n{stdout}", String::from_utf8_lossy(&out.stderr));
    let job: serde_json::Value = serde_json::from_str(stdout.trim()).expect("one JSON object on stdout");
    assert_eq!(job["status"], "finished");
    assert_eq!(job["results"][1]["value"]["title"], BUG_TITLE);
    let artifacts = job["artifacts"].as_object().unwrap();
    let log_path = artifacts
        .iter()
        .find(|(k, _)| k.contains("1_reproduce/incidents/") && k.ends_with("/log"))
        .and_then(|(_, v)| v.as_str())
        .map(PathBuf::from)
        .expect("an incident log among the artifacts");
    assert!(log_path.is_file());

    // The stored console log gives the same title through `kgym report`.
    let out = Command::new(env!("CARGO_BIN_EXE_kgym")).args(["report", "--json"]).arg(&log_path).output().unwrap();
    assert!(out.status.success());
    let report: serde_json::Value = serde_json::from_slice(&out.stdout).unwrap();
    assert_eq!(report["title"], BUG_TITLE);
    assert_eq!(report["corrupted"], false);
}

/// Processes whose command line or working directory mention `dir`.
fn processes_under(dir: &Path) -> Vec<String> {
    let needle = dir.to_string_lossy().into_owned();
    let mut found = Vec::new();
    for entry in std::fs::read_dir("/proc").unwrap().flatten() {
        let name = entry.file_name();
        let Some(pid) = name.to_str().filter(|n| n.bytes().all(|b| b.is_ascii_digit())) else {
            continue;
        };
        let cmdline = std::fs::read(entry.path().join("cmdline")).unwrap_or_default();
        let cmdline = String::from_utf8_lossy(&cmdline).replace('\0', " ");
        let cwd = std::fs::read_link(entry.path().join("cwd")).unwrap_or_default();
        if cmdline.contains(&needle) || cwd.starts_with(dir) {
            found.push(format!("{pid}: {cmdline}"));
        }
    }
    found
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn aborting_a_running_build_kills_make() {
    if !tools_available() {
        return;
    }
    let scratch = kgym_testkit::scratch_data_dir();
    // No ccache: the cold build must really compile for minutes. The
    // extracted tarball is the one the other tests' builder uses.
    let builder = kgym::build::LocalBuilder::builder(scratch.path().join("build"))
        .sources_dir(kgym_testkit::test_cache_dir().join("sources"))
        .ccache(false)
        .build()
        .unwrap();
    let gym = Gym::builder(scratch.path().join("gym")).local_builder(builder).start().await.unwrap();
    let sched = gym.scheduler();
    let spec = JobSpec::new().stage(StageKind::build(), &BuildArgs::new(tarball(), kgym::samples::config()));
    let id = sched.submit(spec).await.unwrap();

    // Wait until the compiler runs under the scratch directory.
    let build_dir = scratch.path().join("build");
    let mut events = sched.watch(id).await.unwrap();
    let deadline = Instant::now() + Duration::from_secs(300);
    while processes_under(&build_dir).iter().filter(|p| p.contains("cc1") || p.contains("gcc")).count() == 0 {
        assert!(Instant::now() < deadline, "make never started");
        tokio::select! {
            ev = events.next() => {
                if let Some(Ok(JobEvent::Status { status, .. })) = ev {
                    assert!(!status.is_terminal(), "the build ended before it could be aborted");
                }
            }
            _ = tokio::time::sleep(Duration::from_millis(200)) => {}
        }
    }
    sched.abort(id).await.unwrap();
    let job = sched.wait(id).await.unwrap();
    assert_eq!(job.status, JobStatus::Aborted);

    let deadline = Instant::now() + Duration::from_secs(15);
    loop {
        let left = processes_under(&build_dir);
        if left.is_empty() {
            break;
        }
        assert!(Instant::now() < deadline, "processes survived the abort:\n{}", left.join("\n"));
        tokio::time::sleep(Duration::from_millis(200)).await;
    }
    gym.shutdown().await;
}
