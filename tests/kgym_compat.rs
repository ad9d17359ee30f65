//! A kGym job as kcomposer posts it, run for real: `kgym serve` (the
//! binary) receives a raw `kbuilder` + `kvmmanager` job over HTTP with a
//! `file://` kernel git URL, the full `.config` text and a bug patch; its
//! local workers fetch and build the kernel with `make`, boot it under QEMU
//! with the generated initramfs (`userspace-image-name: ""`) and the
//! results come back with kGym's field names.
//!
//! The kernel repository is Debian's linux-source-6.1 committed into a bare
//! git repository once per checkout (under `target/kgym-test-cache`); the build
//! shares the test kernel's ccache, so compiling is mostly cache hits.

use std::path::{Path, PathBuf};
use std::process::Command;
use std::time::{Duration, Instant};

use kgym::samples::{BUG_PATCH, BUG_TITLE, DEBIAN_KERNEL_TARBALL, REPRO_C};
use kgym_testkit::server::ServerProcess;
use serde_json::{Value, json};

const TOKEN: &str = "compat-test-token";

/// Runs a command, panicking with its stderr when it fails.
fn run(cmd: &mut Command, what: &str) -> String {
    let out = cmd.output().unwrap_or_else(|e| panic!("{what}: {e}"));
    assert!(out.status.success(), "{what} failed: {}", String::from_utf8_lossy(&out.stderr));
    String::from_utf8_lossy(&out.stdout).trim().to_owned()
}

/// A bare git repository holding the kernel source as one commit (made
/// once; later runs reuse it). Returns the repository and the commit.
fn kernel_git_repo() -> (PathBuf, String) {
    let cache = kgym_testkit::test_cache_dir();
    let repo = cache.join("linux-6.1.git");
    let done = cache.join("linux-6.1.git.commit");
    if let Ok(commit) = std::fs::read_to_string(&done) {
        return (repo, commit.trim().to_owned());
    }
    eprintln!("[compat] committing {DEBIAN_KERNEL_TARBALL} into {}", repo.display());
    let staging = cache.join("linux-6.1.git.partial");
    let files = cache.join("linux-6.1.files.partial");
    for dir in [&staging, &files] {
        let _ = std::fs::remove_dir_all(dir);
        std::fs::create_dir_all(dir).unwrap();
    }
    run(
        Command::new("tar").arg("-xf").arg(DEBIAN_KERNEL_TARBALL).arg("--strip-components=1").arg("-C").arg(&files),
        "extract the kernel tarball",
    );
    let git = |args: &[&str]| {
        let mut cmd = Command::new("git");
        cmd.arg("--git-dir")
            .arg(&staging)
            .arg("--work-tree")
            .arg(&files)
            // Fast zlib: the repository is written once and read by one
            // file:// fetch, which sends the packed objects as they are.
            .args(["-c", "user.name=kgym", "-c", "user.email=kgym@localhost", "-c", "core.compression=1"])
            .args(["-c", "pack.compression=1", "-c", "pack.window=0"])
            .args(args)
            .env("GIT_AUTHOR_DATE", "2024-01-01T00:00:00Z")
            .env("GIT_COMMITTER_DATE", "2024-01-01T00:00:00Z");
        run(&mut cmd, &format!("git {}", args.join(" ")))
    };
    run(Command::new("git").args(["init", "-q", "--bare"]).arg(&staging), "git init --bare");
    // Debian's tarball ships the kernel's .gitignore files; commit every file anyway.
    git(&["add", "-A", "-f"]);
    git(&["commit", "-q", "-m", "linux-source-6.1"]);
    git(&["repack", "-a", "-d", "-q"]);
    let commit = git(&["rev-parse", "HEAD"]);
    std::fs::remove_dir_all(&files).unwrap();
    let _ = std::fs::remove_dir_all(&repo);
    std::fs::rename(&staging, &repo).unwrap();
    std::fs::write(&done, &commit).unwrap();
    (repo, commit)
}

/// `kgym serve` on a free loopback port, sharing the tests' build cache;
/// stopped when dropped.
fn serve(data: &Path) -> ServerProcess {
    let mut cmd = Command::new(env!("CARGO_BIN_EXE_kgym"));
    cmd.arg("--data").arg(data).arg("--build-cache").arg(kgym_testkit::test_cache_dir()).args([
        "serve",
        "--listen",
        "127.0.0.1:0",
        "--token",
        TOKEN,
    ]);
    ServerProcess::kgym_serve(cmd)
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_kgym_raw_job_is_built_and_reproduced_for_real_through_kgym_serve() {
    if !kgym_testkit::test_kernel_available()
        || kgym_testkit::require_tool("qemu-system-x86_64").is_none()
        || kgym_testkit::require_tool("git").is_none()
    {
        return;
    }
    // kGym's kernel-config is the full .config text: take the test kernel's.
    let config = std::fs::read_to_string(kgym_testkit::test_kernel().await.config).unwrap();
    let (repo, commit) = kernel_git_repo();
    let data = tempfile::tempdir().unwrap();
    let server = serve(data.path());
    let http = reqwest::Client::new();

    let raw = json!({
        "job_workers": ["kbuilder", "kvmmanager"],
        "worker_arguments": [
            {"kernel-git-url": format!("file://{}", repo.display()), "kernel-commit-id": commit,
             "kernel-config": config, "patch": BUG_PATCH, "userspace-image-name": "",
             "kernel-arch": "amd64", "compiler": "gcc", "linker": "ld"},
            {"reproducer": {"reproducer-type": "c", "reproducer-text": REPRO_C, "nproc": 1,
                            "restart-time": "1m", "ninstance": 1},
             "image-from-worker": 0, "machine-type": "qemu:1-512", "crash-collecting-policy": "first"}
        ],
        "kv": {"bug-reproduction-for": "kgym-note-uaf", "composed-by": "kgym-compat-test"}
    });
    // Writes need the token (a small body: the server answers 401 without
    // reading the rest, which a big upload would see as a broken pipe).
    let tiny = json!({"job_workers": [], "worker_arguments": []});
    let resp = http.post(format!("{}/jobs/new_raw_job", server.url())).json(&tiny).send().await.unwrap();
    assert_eq!(resp.status(), 401);
    let resp =
        http.post(format!("{}/jobs/new_raw_job", server.url())).bearer_auth(TOKEN).json(&raw).send().await.unwrap();
    assert_eq!(resp.status(), 200);
    let id: String = resp.json().await.unwrap();
    assert_eq!(id.len(), 8, "kGym shows job ids as 8 hex digits: {id}");

    // Poll as kcomposer does (reads need the token too).
    let deadline = Instant::now() + Duration::from_secs(30 * 60);
    let job: Value = loop {
        let job: Value = http
            .get(format!("{}/jobs/{id}", server.url()))
            .bearer_auth(TOKEN)
            .send()
            .await
            .unwrap()
            .json()
            .await
            .unwrap();
        if matches!(job["status"].as_str(), Some("finished" | "aborted")) {
            break job;
        }
        assert!(Instant::now() < deadline, "the job did not finish in 30 minutes: {job:#}");
        tokio::time::sleep(Duration::from_secs(2)).await;
    };
    assert_eq!(job["status"], "finished", "{job:#}");
    assert_eq!(job["job-workers"], json!(["kbuilder", "kvmmanager"]));
    assert_eq!(job["kv"]["bug-reproduction-for"], "kgym-note-uaf");

    let build = &job["worker-results"][0];
    assert_eq!(build["result"], "success", "{build:#}");
    assert_eq!(build["kernel-image-url"], format!("jobs/{id}/0_build/bzImage"));
    let repro = &job["worker-results"][1];
    assert_eq!(repro["crash-description"], BUG_TITLE, "{repro:#}");
    assert_eq!(repro["image-ability"], "normal");
    assert_eq!(repro["value"]["title"], BUG_TITLE, "our fields stay beside kGym's");
    assert_eq!(repro["value"]["crashed"], true);

    // The kernel, its log and the incidents are stored where the results say.
    let artifacts = data.path().join("artifacts");
    let stored = |key: &Value| artifacts.join(key.as_str().unwrap_or_else(|| panic!("not a key: {key}")));
    assert!(std::fs::metadata(stored(&build["kernel-image-url"])).map(|m| m.len() > 100_000).unwrap_or(false));
    let build_log = std::fs::read_to_string(stored(&build["build-log-url"])).unwrap();
    assert!(build_log.contains(&format!("resolving {commit}")), "{build_log}");
    let incidents = std::fs::read_dir(artifacts.join(format!("jobs/{id}/1_reproduce/incidents"))).unwrap().count();
    assert!(incidents >= 1);
    // kGym's kv routes: the job's keys, and the job found by its tag.
    let keys: Value = http
        .get(format!("{}/jobs/{id}/keys", server.url()))
        .bearer_auth(TOKEN)
        .send()
        .await
        .unwrap()
        .json()
        .await
        .unwrap();
    assert!(keys.to_string().contains("composed-by"), "{keys:#}");
    let tagged =
        http.get(format!("{}/jobs/kv/bug-reproduction-for", server.url())).bearer_auth(TOKEN).send().await.unwrap();
    let tagged: Value = tagged.json().await.unwrap();
    assert!(tagged.to_string().contains(&id), "{tagged:#}");
    // The job log holds the stages' lines.
    let log: Value = http
        .get(format!("{}/jobs/{id}/log", server.url()))
        .bearer_auth(TOKEN)
        .send()
        .await
        .unwrap()
        .json()
        .await
        .unwrap();
    assert!(log["total"].as_u64().unwrap_or(0) > 0, "{log:#}");
    drop(server);
}
