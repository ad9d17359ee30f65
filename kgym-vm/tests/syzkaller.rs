//! `SyzkallerProvider` for real: git, make and a Go toolchain build a small
//! syzkaller-like repository (same Makefile targets and output paths as
//! syzkaller, two stdlib-only Go programs) made by each test in a temp
//! directory. Proves the fallback from a commit that does not compile, the
//! per-commit cache, fetching commits the clone lacks, resolving branch
//! names, typed errors, cancellation and concurrent builds. Nothing touches
//! the network (`GOPROXY=off`, `GOTOOLCHAIN=local`, a module without
//! requirements).

mod common;

use std::os::unix::fs::MetadataExt;
use std::path::{Path, PathBuf};
use std::process::Command;
use std::time::{Duration, Instant};

use kgym_core::stage::build::Arch;
use kgym_core::stage::reproduce::{Reproducer, ReproducerKind};
use kgym_vm::repro::syz::SyzkallerProvider;
use kgym_vm::repro::{ReproTools, prepare};
use kgym_vm::{Error, QemuRunner, RunRequest, VmRunner};
use tokio_util::sync::CancellationToken;

const MAKEFILE: &str = r#"# A stand-in for syzkaller's Makefile: same targets, same output paths,
# the git revision stamped into the binaries.
TARGETARCH ?= amd64
OUT := bin/linux_$(TARGETARCH)
REV := $(shell git rev-parse HEAD)

execprog:
ifdef KGYM_TEST_HANG
	echo $$$$ > "$(KGYM_TEST_HANG)" && exec sleep 120
endif
	CGO_ENABLED=0 GOARCH=$(TARGETARCH) go build -ldflags "-X main.rev=$(REV)" -o $(OUT)/syz-execprog ./tools/syz-execprog

executor:
	CGO_ENABLED=0 GOARCH=$(TARGETARCH) go build -o $(OUT)/syz-executor ./executor

.PHONY: execprog executor
"#;

const GO_MOD: &str = "module github.com/google/syzkaller\n\ngo 1.21\n";

const EXECUTOR: &str = r#"package main

import "fmt"

func main() { fmt.Println("fake syz-executor") }
"#;

/// `syz-execprog` printing `greeting`, its revision and its arguments;
/// `extra` is pasted into the call (an undefined name breaks the build).
fn execprog_source(greeting: &str, extra: &str) -> String {
    format!(
        r#"package main

import (
	"fmt"
	"os"
	"strings"
)

var rev = "unknown"

func main() {{
	fmt.Println("{greeting}", rev, strings.Join(os.Args[1:], " "){extra})
}}
"#
    )
}

/// The name the broken commit's compile error mentions.
const UNDEFINED: &str = "kgymNotDefined";

/// The tools these tests need: git, make and Go.
fn tools() -> Option<PathBuf> {
    kgym_testkit::require_tool("git")?;
    kgym_testkit::require_tool("make")?;
    kgym_testkit::go_toolchain()
}

/// A syzkaller-like origin repository: `broken` (a Go compile error), then
/// `fixed` on top of it, on branch `master`.
struct FakeSyzkaller {
    dir: tempfile::TempDir,
    broken: String,
    fixed: String,
}

impl FakeSyzkaller {
    fn new() -> Self {
        let dir = tempfile::tempdir().unwrap();
        let f = Self { dir, broken: String::new(), fixed: String::new() };
        std::fs::create_dir_all(f.origin()).unwrap();
        f.git(&["init", "--quiet", "--initial-branch=master"]);
        f.write("Makefile", MAKEFILE);
        f.write("go.mod", GO_MOD);
        f.write("executor/main.go", EXECUTOR);
        f.write("tools/syz-execprog/main.go", &execprog_source("fake syz-execprog", &format!(", {UNDEFINED}")));
        let broken = f.commit("broken: calls an undefined function");
        f.write("tools/syz-execprog/main.go", &execprog_source("fake syz-execprog", ""));
        let fixed = f.commit("fixed");
        Self { broken, fixed, ..f }
    }

    fn origin(&self) -> PathBuf {
        self.dir.path().join("origin")
    }

    fn url(&self) -> String {
        format!("file://{}", self.origin().display())
    }

    fn write(&self, path: &str, text: &str) {
        let p = self.origin().join(path);
        std::fs::create_dir_all(p.parent().unwrap()).unwrap();
        std::fs::write(p, text).unwrap();
    }

    fn git(&self, args: &[&str]) -> String {
        let out = Command::new("git")
            .args(["-c", "user.name=kgym", "-c", "user.email=kgym@localhost", "-c", "commit.gpgsign=false"])
            .args(args)
            .current_dir(self.origin())
            .env("GIT_CONFIG_NOSYSTEM", "1")
            .output()
            .unwrap();
        assert!(out.status.success(), "git {args:?}: {}", String::from_utf8_lossy(&out.stderr));
        String::from_utf8(out.stdout).unwrap().trim().to_owned()
    }

    fn commit(&self, message: &str) -> String {
        self.git(&["add", "--all"]);
        self.git(&["commit", "--quiet", "-m", message]);
        self.git(&["rev-parse", "HEAD"])
    }

    /// A provider over this repository caching in `cache`, building with
    /// `go`, every Go setting pointed away from the network and the user's
    /// files (the compile cache is shared between tests and runs).
    fn provider(&self, cache: &Path, go: &Path) -> SyzkallerProvider {
        let home = self.dir.path().join("home");
        let go_cache = kgym_testkit::test_cache_dir().join("go-build");
        SyzkallerProvider::new(self.url(), cache)
            .with_go(go)
            .with_build_env("HOME", home.display().to_string())
            .with_build_env("GOPATH", home.join("go").display().to_string())
            .with_build_env("GOCACHE", go_cache.display().to_string())
            .with_build_env("GOENV", "off")
            .with_build_env("GOPROXY", "off")
            .with_build_env("GOTOOLCHAIN", "local")
            .with_build_env("GOFLAGS", "-mod=mod")
    }
}

/// Runs a built binary on the host and returns its stdout.
fn run(bin: &Path, args: &[&str]) -> String {
    let out = Command::new(bin).args(args).output().unwrap();
    assert!(out.status.success(), "{}: {}", bin.display(), String::from_utf8_lossy(&out.stderr));
    String::from_utf8(out.stdout).unwrap()
}

/// Scratch trees of unfinished builds left in the cache.
fn scratch_left(cache: &Path) -> Vec<String> {
    std::fs::read_dir(cache)
        .map(|d| d.flatten().map(|e| e.file_name().to_string_lossy().into_owned()).collect::<Vec<_>>())
        .unwrap_or_default()
        .into_iter()
        .filter(|n| n.starts_with("build-") || n == "repo.partial")
        .collect()
}

fn mtime_and_inode(p: &Path) -> (i64, i64, u64) {
    let m = std::fs::metadata(p).unwrap();
    (m.mtime(), m.mtime_nsec(), m.ino())
}

#[tokio::test]
async fn a_commit_that_does_not_build_falls_back_and_the_build_is_cached() {
    let Some(go) = tools() else { return };
    let repo = FakeSyzkaller::new();
    let cache = tempfile::tempdir().unwrap();
    let p = repo.provider(cache.path(), &go);
    let cancel = CancellationToken::new();

    let b = p.binaries(Some(&repo.broken), Some(&repo.fixed), Arch::X86_64, &cancel).await.unwrap();
    assert_eq!(b.commit, repo.fixed);
    assert_eq!(b.skipped.len(), 1, "{:?}", b.skipped);
    assert_eq!(b.skipped[0].commit, repo.broken);
    let why = &b.skipped[0].reason;
    assert!(why.contains("make execprog executor") && why.contains(&format!("undefined: {UNDEFINED}")), "{why}");
    let bin_dir = p.build_dir(&repo.fixed).join("bin/linux_amd64");
    assert_eq!(b.execprog, bin_dir.join("syz-execprog"));
    assert_eq!(b.executor, bin_dir.join("syz-executor"));
    // Built from a real checkout of the fixed commit.
    assert_eq!(run(&b.execprog, &["-x"]), format!("fake syz-execprog {} -x\n", repo.fixed));
    assert_eq!(run(&b.executor, &[]), "fake syz-executor\n");
    assert!(!p.build_dir(&repo.broken).exists(), "a failed build left a cache entry");
    assert!(scratch_left(cache.path()).is_empty(), "{:?}", scratch_left(cache.path()));

    // Again, with the origin gone: the broken commit is tried again from the
    // clone (failures are not remembered), the fixed one comes from the cache.
    let before = mtime_and_inode(&b.execprog);
    std::fs::remove_dir_all(repo.origin()).unwrap();
    let again = p.binaries(Some(&repo.broken), Some(&repo.fixed), Arch::X86_64, &cancel).await.unwrap();
    assert_eq!(again.execprog, b.execprog);
    assert_eq!(mtime_and_inode(&again.execprog), before, "the cached binary was rebuilt");
    assert!(again.skipped[0].reason.contains(UNDEFINED), "{:?}", again.skipped);

    // Without the clone and with no Go at all, a built hash is still served.
    std::fs::remove_dir_all(cache.path().join("repo")).unwrap();
    let no_go = p.clone().with_go(cache.path().join("no-such-go"));
    let cached = no_go.binaries(Some(&repo.fixed), None, Arch::X86_64, &cancel).await.unwrap();
    assert_eq!(cached.execprog, b.execprog);
    assert_eq!(mtime_and_inode(&cached.execprog), before);
    assert!(cached.skipped.is_empty());
    // ...while anything needing a build says Go is missing.
    let err = no_go.binaries(Some(&repo.broken), None, Arch::X86_64, &cancel).await.unwrap_err();
    assert!(matches!(&err, Error::ToolMissing { tool, .. } if tool == "go"), "{err:?}");
}

#[tokio::test]
async fn a_commit_that_is_not_in_the_repository_is_a_typed_error() {
    let Some(go) = tools() else { return };
    let repo = FakeSyzkaller::new();
    let cache = tempfile::tempdir().unwrap();
    let p = repo.provider(cache.path(), &go);
    let missing = "0123456789abcdef0123456789abcdef01234567";
    let err = p.binaries(Some(missing), None, Arch::X86_64, &CancellationToken::new()).await.unwrap_err();
    match err {
        Error::Syzkaller { commit, reason } => {
            assert_eq!(commit, missing);
            assert!(reason.contains(&format!("{missing} is not in {}", repo.url())), "{reason}");
        }
        other => panic!("unexpected {other:?}"),
    }
    assert!(!p.build_dir(missing).exists());
    assert!(scratch_left(cache.path()).is_empty(), "{:?}", scratch_left(cache.path()));
    // The broken commit alone: its compile error is the reason.
    let err = p.binaries(Some(&repo.broken), None, Arch::X86_64, &CancellationToken::new()).await.unwrap_err();
    assert!(matches!(&err, Error::Syzkaller { reason, .. } if reason.contains(UNDEFINED)), "{err:?}");
}

#[tokio::test]
async fn commits_made_after_the_clone_are_fetched_and_branch_names_follow_the_origin() {
    let Some(go) = tools() else { return };
    let repo = FakeSyzkaller::new();
    let cache = tempfile::tempdir().unwrap();
    let p = repo.provider(cache.path(), &go);
    let cancel = CancellationToken::new();
    let first = p.binaries(Some("master"), None, Arch::X86_64, &cancel).await.unwrap();
    assert_eq!(first.commit, repo.fixed, "master resolves to its hash");
    assert!(cache.path().join("repo/HEAD").is_file());

    // Two new commits in the origin; the first is no branch's tip.
    repo.write("tools/syz-execprog/main.go", &execprog_source("fake syz-execprog v2", ""));
    let v2 = repo.commit("v2");
    repo.write("tools/syz-execprog/main.go", &execprog_source("fake syz-execprog v3", ""));
    let v3 = repo.commit("v3");

    let b = p.binaries(Some(&v2), None, Arch::X86_64, &cancel).await.unwrap();
    assert_eq!(b.commit, v2);
    assert_eq!(run(&b.execprog, &[]), format!("fake syz-execprog v2 {v2} \n"));
    // A branch name is fetched again: master has moved on to v3.
    let m = p.binaries(Some("master"), None, Arch::X86_64, &cancel).await.unwrap();
    assert_eq!(m.commit, v3);
    assert_eq!(run(&m.execprog, &[]), format!("fake syz-execprog v3 {v3} \n"));
    // The first build is still there, untouched.
    assert_eq!(run(&first.execprog, &[]), format!("fake syz-execprog {} \n", repo.fixed));
}

#[tokio::test]
async fn cancelling_a_build_kills_make_and_leaves_no_cache_entry() {
    let Some(go) = tools() else { return };
    let repo = FakeSyzkaller::new();
    let cache = tempfile::tempdir().unwrap();
    let marker = repo.dir.path().join("make-pid");
    // The Makefile's execprog target writes its pid there and sleeps.
    let p = repo.provider(cache.path(), &go).with_build_env("KGYM_TEST_HANG", marker.display().to_string());
    let cancel = CancellationToken::new();
    let build = {
        let (p, cancel, fixed) = (p.clone(), cancel.clone(), repo.fixed.clone());
        tokio::spawn(async move { p.binaries(Some(&fixed), None, Arch::X86_64, &cancel).await })
    };
    let started = Instant::now();
    let pid = loop {
        if let Some(pid) = std::fs::read_to_string(&marker).ok().filter(|s| s.ends_with('\n')) {
            break pid.trim().to_owned();
        }
        assert!(started.elapsed() < Duration::from_secs(120), "make never started");
        assert!(!build.is_finished(), "the build ended early: {:?}", build.await);
        tokio::time::sleep(Duration::from_millis(50)).await;
    };
    assert!(alive(&pid), "the hanging make recipe {pid} is not running");
    let cancelled_at = Instant::now();
    cancel.cancel();
    let err = build.await.unwrap().unwrap_err();
    assert!(matches!(err, Error::Cancelled), "{err:?}");
    assert!(cancelled_at.elapsed() < Duration::from_secs(10), "cancel took {:?}", cancelled_at.elapsed());
    for _ in 0..100 {
        if !alive(&pid) {
            break;
        }
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    assert!(!alive(&pid), "the build's process {pid} survived the cancellation");
    assert!(!p.build_dir(&repo.fixed).exists(), "a cancelled build left a cache entry");
    assert!(scratch_left(cache.path()).is_empty(), "{:?}", scratch_left(cache.path()));
    // The clone itself is intact: a build without the hang now succeeds.
    let plain = repo.provider(cache.path(), &go);
    let b = plain.binaries(Some(&repo.fixed), None, Arch::X86_64, &CancellationToken::new()).await.unwrap();
    assert!(run(&b.execprog, &[]).starts_with("fake syz-execprog"));
}

#[tokio::test]
async fn concurrent_builds_of_one_commit_share_the_cache() {
    let Some(go) = tools() else { return };
    let repo = FakeSyzkaller::new();
    let cache = tempfile::tempdir().unwrap();
    let (a, b) = (repo.provider(cache.path(), &go), repo.provider(cache.path(), &go));
    let cancel = CancellationToken::new();
    let (x, y) = tokio::join!(
        a.binaries(Some(&repo.fixed), None, Arch::X86_64, &cancel),
        b.binaries(Some("master"), None, Arch::X86_64, &cancel)
    );
    let (x, y) = (x.unwrap(), y.unwrap());
    assert_eq!((x.commit.as_str(), y.commit.as_str()), (repo.fixed.as_str(), repo.fixed.as_str()));
    assert_eq!(x.execprog, y.execprog);
    assert!(run(&x.execprog, &[]).starts_with("fake syz-execprog"));
    assert!(scratch_left(cache.path()).is_empty(), "{:?}", scratch_left(cache.path()));
}

#[tokio::test]
async fn preparing_a_syz_program_names_the_skipped_commit_and_a_working_command() {
    let Some(go) = tools() else { return };
    let repo = FakeSyzkaller::new();
    let cache = tempfile::tempdir().unwrap();
    let work = tempfile::tempdir().unwrap();
    let tools = ReproTools { cc: PathBuf::from("gcc"), syzkaller: repo.provider(cache.path(), &go) };
    let reproducer = Reproducer {
        kind: ReproducerKind::Syz,
        text: "#{Threaded:true Repeat:true Procs:2 Sandbox:none}\nr0 = socket$inet(0x2, 0x1, 0x0)\n".into(),
        syzkaller_commit: Some(repo.broken.clone()),
        syzkaller_fallback_commit: Some(repo.fixed.clone()),
        nproc: None,
    };
    let prepared = prepare(&reproducer, Arch::X86_64, &tools, work.path(), &CancellationToken::new()).await.unwrap();
    assert_eq!(prepared.syzkaller_commit.as_deref(), Some(repo.fixed.as_str()));
    assert_eq!(prepared.notes.len(), 1, "{:?}", prepared.notes);
    let note = &prepared.notes[0];
    assert!(note.contains(&repo.broken) && note.contains(&repo.fixed) && note.contains(UNDEFINED), "{note}");
    // The guest's view: the files side by side, the command run from there.
    let guest = work.path().join("guest");
    std::fs::create_dir(&guest).unwrap();
    for (name, src) in &prepared.files {
        std::fs::copy(src, guest.join(name)).unwrap();
    }
    let out = Command::new("sh").arg("-c").arg(&prepared.command).current_dir(&guest).output().unwrap();
    assert!(out.status.success(), "{}: {}", prepared.command, String::from_utf8_lossy(&out.stderr));
    let printed = String::from_utf8(out.stdout).unwrap();
    assert!(printed.starts_with(&format!("fake syz-execprog {} -executor=./syz-executor", repo.fixed)), "{printed}");
    assert!(printed.contains("-procs=2") && printed.trim_end().ends_with("repro.syz"), "{printed}");
}

/// No VM is booted: the reproducer is prepared before QEMU starts.
#[tokio::test]
async fn a_syz_program_with_no_commit_and_no_prebuilt_syzkaller_is_a_typed_error() {
    let work = tempfile::tempdir().unwrap();
    let kernel = work.path().join("bzImage");
    std::fs::write(&kernel, b"never booted").unwrap();
    let runner = QemuRunner::builder()
        .qemu_x86_64("/nonexistent/qemu-system-x86_64")
        .accel(kgym_vm::accel::AccelMode::Tcg)
        .work_dir(work.path().join("runs"))
        .syzkaller_cache(work.path().join("syzkaller"))
        .build()
        .unwrap();
    let reproducer = Reproducer {
        kind: ReproducerKind::Syz,
        text: "r0 = socket$inet(0x2, 0x1, 0x0)\n".into(),
        syzkaller_commit: None,
        syzkaller_fallback_commit: None,
        nproc: None,
    };
    let (ctx, _log) = common::context();
    let err = runner.run(RunRequest::new(&kernel, reproducer), &ctx).await.unwrap_err();
    match &err {
        Error::Syzkaller { commit, reason } => {
            assert_eq!(commit, "(none)");
            assert!(reason.contains("no syzkaller commit"), "{reason}");
        }
        other => panic!("unexpected {other:?}"),
    }
    let failure = kgym_vm::failure_of(&err);
    assert_eq!(failure.code, "internal");
    assert!(failure.detail.as_deref().is_some_and(|d| d.contains("no prebuilt syzkaller directory")), "{failure:?}");
    assert!(std::fs::read_dir(work.path().join("runs")).unwrap().next().is_none(), "temporary files left behind");
    assert!(!work.path().join("syzkaller").exists(), "nothing should have been cloned");
}

fn alive(pid: &str) -> bool {
    std::fs::read_to_string(format!("/proc/{pid}/stat"))
        .is_ok_and(|s| s.rsplit(')').next().is_some_and(|r| !r.trim_start().starts_with('Z')))
}
