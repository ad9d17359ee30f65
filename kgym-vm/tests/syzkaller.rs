//! syzkaller reproducers for real, with a stand-in for syzkaller
//! (`tests/fake-syzkaller`, see its README): git, make and a Go toolchain
//! build it per commit like syzkaller, and its `syz-execprog` prints what
//! the real one prints. Proves the provider (fallback from a commit that
//! does not compile, the per-commit cache, fetching commits the clone
//! lacks, branch names, typed errors, cancellation, concurrent builds), the
//! stand-in's output, and whole runs in QEMU: a syz program crashes the
//! buggy kernel with its title; a healthy one outlives the no-output
//! timeout without a verdict; one that stops the machine ends as `no
//! output from test machine`. Nothing touches the network (`GOPROXY=off`,
//! `GOTOOLCHAIN=local`, a module without requirements).

mod common;

use std::os::unix::fs::MetadataExt;
use std::path::{Path, PathBuf};
use std::process::{Command, Stdio};
use std::time::{Duration, Instant};

use common::*;
use kgym_core::stage::build::Arch;
use kgym_core::stage::reproduce::{CrashKind, ImageAbility, Reproducer, ReproducerKind};
use kgym_vm::outcome::{BootEnd, SpecialCrash};
use kgym_vm::{Error, QemuRunner, RunRequest, SyzkallerProvider, VmRunner};
use tokio_util::sync::CancellationToken;

/// The stand-in's sources.
fn stand_in_dir() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).join("tests/fake-syzkaller")
}

/// A file that breaks the build of `syz-execprog` (an undefined name).
const BROKEN_FILE: &str = "tools/syz-execprog/broken.go";
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
        copy_tree(&stand_in_dir(), &f.origin());
        f.write(BROKEN_FILE, &format!("package main\n\nvar _ = {UNDEFINED}\n"));
        let broken = f.commit("broken: uses an undefined name");
        std::fs::remove_file(f.origin().join(BROKEN_FILE)).unwrap();
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

    /// A new commit that changes nothing but a file of notes.
    fn another_commit(&self, note: &str) -> String {
        self.write("NOTES", note);
        self.commit(note)
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

fn copy_tree(from: &Path, to: &Path) {
    for e in std::fs::read_dir(from).unwrap().flatten() {
        let dst = to.join(e.file_name());
        if e.file_type().unwrap().is_dir() {
            std::fs::create_dir_all(&dst).unwrap();
            copy_tree(&e.path(), &dst);
        } else {
            std::fs::copy(e.path(), dst).unwrap();
        }
    }
}

/// The git revision a binary was built at: syzkaller's Makefile stamps it
/// into `prog.GitRevision`, so its 40 hex digits are in the binary.
fn built_at(bin: &Path, commit: &str) -> bool {
    let bytes = std::fs::read(bin).unwrap();
    bytes.windows(commit.len()).any(|w| w == commit.as_bytes())
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
    assert!(built_at(&b.execprog, &repo.fixed) && built_at(&b.executor, &repo.fixed));
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
    let v2 = repo.another_commit("v2");
    let v3 = repo.another_commit("v3");

    let b = p.binaries(Some(&v2), None, Arch::X86_64, &cancel).await.unwrap();
    assert_eq!(b.commit, v2);
    assert!(built_at(&b.execprog, &v2));
    // A branch name is fetched again: master has moved on to v3.
    let m = p.binaries(Some("master"), None, Arch::X86_64, &cancel).await.unwrap();
    assert_eq!(m.commit, v3);
    assert!(built_at(&m.execprog, &v3));
    // The first build is still there, untouched.
    assert!(built_at(&first.execprog, &repo.fixed));
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
    assert!(built_at(&b.execprog, &repo.fixed));
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
    assert!(built_at(&x.execprog, &repo.fixed));
    assert!(scratch_left(cache.path()).is_empty(), "{:?}", scratch_left(cache.path()));
}

/// A harmless program: the valid note of testdata/bugs and a getpid.
const HARMLESS: &str = "# https://syzkaller.appspot.com/bug?id=kgym\n\
#{Threaded:true Repeat:true RepeatTimes:0 Procs:1 Slowdown:1 Sandbox:none SandboxArg:0}\n\
r0 = getpid()\n\
prctl$PR_KGYM_NOTE(0x6b67796d, 0x1234, 0x0, 0x0, 0x0)\n";

/// Checks that `line` reads `YYYY/MM/DD hh:mm:ss <message>` (Go's `log`
/// with its default flags, as syzkaller's `pkg/log` prints) and returns
/// the time of day in seconds and the message.
fn go_log_line(line: &str) -> (u32, &str) {
    let (date, rest) = line.split_at(11);
    let (time, message) = rest.split_at(9);
    let digits = |s: &str, at: &[usize]| s.char_indices().all(|(i, c)| at.contains(&i) || c.is_ascii_digit());
    assert!(date.len() == 11 && digits(date, &[4, 7, 10]) && &date[4..5] == "/" && &date[7..8] == "/", "{line:?}");
    assert!(digits(time, &[2, 5, 8]) && time.ends_with(' '), "{line:?}");
    let secs = time.trim().split(':').fold(0, |acc, n| acc * 60 + n.parse::<u32>().unwrap());
    (secs, message)
}

/// Runs the built stand-in on this host for `secs` and returns its stdout
/// and stderr.
fn run_stand_in(execprog: &Path, executor: &Path, args: &[&str], prog: &Path, secs: u32) -> (String, String) {
    let out = Command::new("timeout")
        .arg(secs.to_string())
        .arg(execprog)
        .arg(format!("-executor={}", executor.display()))
        .args(args)
        .arg(prog)
        .stdin(Stdio::null())
        .output()
        .unwrap();
    (String::from_utf8(out.stdout).unwrap(), String::from_utf8(out.stderr).unwrap())
}

/// The stand-in, run on the host with kgym's command line and with
/// `-output`, prints what syzkaller's syz-execprog prints: Go log lines on
/// stderr, `executed programs: N` at once and then 5 s apart, and with
/// `-output` each program before it runs. A flag it does not know is
/// refused, as Go's `flag` package does in the real one.
#[tokio::test]
async fn the_stand_in_prints_what_syz_execprog_prints() {
    let Some(go) = tools() else { return };
    let repo = FakeSyzkaller::new();
    let cache = tempfile::tempdir().unwrap();
    let provider = repo.provider(cache.path(), &go);
    let b = provider.binaries(Some(&repo.fixed), None, Arch::X86_64, &CancellationToken::new()).await.unwrap();
    let prog = cache.path().join("repro.syz");
    std::fs::write(&prog, HARMLESS).unwrap();
    let kgym_args =
        ["-arch=amd64", "-sandbox=none", "-procs=1", "-repeat=0", "-threaded=true", "-collide=false", "-cover=0"];

    let (stdout, stderr) = run_stand_in(&b.execprog, &b.executor, &kgym_args, &prog, 7);
    assert_eq!(stdout, "", "syz-execprog logs to stderr");
    let lines: Vec<(u32, &str)> = stderr.lines().map(go_log_line).collect();
    assert_eq!(lines[0].1, "parsed 1 programs", "{stderr}");
    assert!(lines[1].1.strip_prefix("serving rpc on tcp://").is_some_and(|p| p.parse::<u16>().is_ok()), "{stderr}");
    let executed: Vec<(u32, u64)> = lines[2..]
        .iter()
        .map(|(t, m)| (*t, m.strip_prefix("executed programs: ").unwrap_or_else(|| panic!("{m:?}")).parse().unwrap()))
        .collect();
    assert_eq!(executed.len(), 2, "at once, then once in the following 5 s: {stderr}");
    assert_eq!(executed[0].1, 0);
    assert!(executed[1].1 > 0, "programs ran: {stderr}");
    assert!((executed[1].0 + 86400 - executed[0].0) % 86400 >= 5, "printed at most every 5 s: {stderr}");

    let (_, stderr) = run_stand_in(&b.execprog, &b.executor, &["-output", "-repeat=2", "-procs=1"], &prog, 10);
    let executing: Vec<usize> =
        stderr.lines().enumerate().filter(|(_, l)| l.ends_with(" executing program:")).map(|(i, _)| i).collect();
    assert_eq!(executing.len(), 2, "once per execution with -output: {stderr}");
    let lines: Vec<&str> = stderr.lines().collect();
    for i in executing {
        go_log_line(lines[i]);
        assert_eq!(
            &lines[i + 1..i + 3],
            ["getpid()", "prctl$PR_KGYM_NOTE(0x6b67796d, 0x1234, 0x0, 0x0, 0x0)"],
            "{stderr}"
        );
    }

    let (_, stderr) = run_stand_in(&b.execprog, &b.executor, &["-fault_call=1"], &prog, 5);
    assert!(stderr.starts_with("flag provided but not defined: -fault_call"), "{stderr}");
}

/// No VM is booted: the reproducer is prepared before QEMU starts.
#[tokio::test]
async fn a_syz_program_with_no_commit_and_no_prebuilt_syzkaller_is_a_typed_error() {
    let work = tempfile::tempdir().unwrap();
    // Never booted: only the x86 boot header a run checks first.
    let kernel = work.path().join("bzImage");
    let mut header = vec![0u8; 0x240];
    header[0x202..0x206].copy_from_slice(b"HdrS");
    std::fs::write(&kernel, header).unwrap();
    let runner = QemuRunner::builder()
        .qemu_x86_64("/nonexistent/qemu-system-x86_64")
        .accel(kgym_vm::AccelMode::Tcg)
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

// Whole runs in QEMU: the stand-in inside the guest, on the test kernels.

/// A syz reproducer asking for the broken commit, falling back to the
/// fixed one.
fn syz(repo: &FakeSyzkaller, text: &str) -> Reproducer {
    Reproducer {
        kind: ReproducerKind::Syz,
        text: text.into(),
        syzkaller_commit: Some(repo.broken.clone()),
        syzkaller_fallback_commit: Some(repo.fixed.clone()),
        nproc: None,
    }
}

/// The no-output timeout these runs use (syzkaller's is 5 min, ×3 under TCG).
const NO_OUTPUT: Duration = Duration::from_secs(15);
/// The budget of a run: room for a slow boot on a busy machine, then a few
/// no-output periods.
const BUDGET: Duration = Duration::from_secs(120);

/// A provider whose cache already holds the build the runs use, so the
/// runs' budgets go to the VM, not to Go.
async fn built(repo: &FakeSyzkaller, dir: &Path, go: &Path) -> SyzkallerProvider {
    let p = repo.provider(&dir.join("syzkaller"), go);
    p.binaries(Some(&repo.broken), Some(&repo.fixed), Arch::X86_64, &CancellationToken::new()).await.unwrap();
    p
}

fn vm_tools() -> Option<PathBuf> {
    if !have_tools() {
        return None;
    }
    tools()
}

#[tokio::test]
async fn a_syz_reproducer_crashes_the_buggy_kernel_with_its_title() {
    let Some(go) = vm_tools() else { return };
    let repo = FakeSyzkaller::new();
    let k = bug_kernel().await;
    let work = tempfile::tempdir().unwrap();
    let runner = runner_in(&work.path().join("runs")).syzkaller(built(&repo, work.path(), &go).await).build().unwrap();
    let (ctx, log) = context();
    let text = HARMLESS.replace("0x1234", "0xdead");
    let req = RunRequest::new(&k.bzimage, syz(&repo, &text)).vmlinux(&k.vmlinux).budget(Duration::from_secs(240));
    let out = runner.run(req, &ctx).await.unwrap();
    assert_eq!(out.title.as_deref(), Some(BUG_TITLE), "{:?}", out.boots);
    assert_eq!(out.syzkaller_commit.as_deref(), Some(repo.fixed.as_str()));
    let notes = log.lines();
    assert!(
        notes.iter().any(|l| l.contains(&repo.broken) && l.contains(&repo.fixed) && l.contains(UNDEFINED)),
        "the skipped commit is named: {notes:?}"
    );
    let console = String::from_utf8_lossy(&out.boots[0].log);
    assert!(console.contains("parsed 1 programs") && console.contains("executed programs: 0"), "{console}");
}

#[tokio::test]
async fn a_healthy_syz_reproducer_outlives_the_no_output_timeout_without_a_verdict() {
    let Some(go) = vm_tools() else { return };
    let repo = FakeSyzkaller::new();
    let k = fixed_kernel().await;
    let work = tempfile::tempdir().unwrap();
    let runner = runner_in(&work.path().join("runs"))
        .syzkaller(built(&repo, work.path(), &go).await)
        .no_output_timeout(NO_OUTPUT)
        .tcg_timeout_scale(1)
        .build()
        .unwrap();
    let (ctx, _log) = context();
    let req = RunRequest::new(&k.bzimage, syz(&repo, &HARMLESS.replace("0x1234", "0xdead"))).budget(BUDGET);
    let out = runner.run(req, &ctx).await.unwrap();
    assert!(!out.crashed && out.crashes.is_empty(), "{:?}", out.crashes);
    assert_eq!(out.title, None);
    assert_eq!(out.message, "No crash reproduced");
    assert_eq!(out.image_ability, ImageAbility::Normal);
    assert_eq!(out.boots.len(), 1);
    let b = &out.boots[0];
    assert_eq!(b.end, BootEnd::BudgetEnded);
    // It ran for longer than the no-output timeout after userspace, alive
    // only through syz-execprog's `executed programs:` lines.
    let up = b.userspace_after.unwrap() + b.started;
    assert!(b.ended - up > NO_OUTPUT.as_secs_f64() * 2.0, "too slow a boot to tell: {b:?}");
    let console = String::from_utf8_lossy(&b.log);
    let executed = console.lines().filter(|l| l.contains(" executed programs: ")).count();
    assert!(executed >= 6, "{executed} `executed programs:` lines: {console}");
    assert_eq!(console.matches("kgym: running the reproducer").count(), 1, "syz-execprog never exited: {console}");
}

#[tokio::test]
async fn a_syz_reproducer_that_stops_the_machine_ends_as_no_output() {
    let Some(go) = vm_tools() else { return };
    let repo = FakeSyzkaller::new();
    let k = fixed_kernel().await;
    let work = tempfile::tempdir().unwrap();
    let runner = runner_in(&work.path().join("runs"))
        .syzkaller(built(&repo, work.path(), &go).await)
        .no_output_timeout(NO_OUTPUT)
        .tcg_timeout_scale(1)
        .build()
        .unwrap();
    let (ctx, _log) = context();
    // reboot(LINUX_REBOOT_MAGIC1, LINUX_REBOOT_MAGIC2, LINUX_REBOOT_CMD_HALT):
    // the kernel halts, QEMU keeps the halted machine, nothing executes.
    let halt = HARMLESS.replace(
        "prctl$PR_KGYM_NOTE(0x6b67796d, 0x1234, 0x0, 0x0, 0x0)",
        "reboot(0xfee1dead, 0x28121969, 0xcdef0123, 0x0)",
    );
    let req = RunRequest::new(&k.bzimage, syz(&repo, &halt)).budget(BUDGET);
    let out = runner.run(req, &ctx).await.unwrap();
    assert_eq!(out.title.as_deref(), Some("no output from test machine"), "{:?}", out.boots);
    assert_eq!(out.crashes[0].kind, CrashKind::Special);
    assert_eq!(out.image_ability, ImageAbility::Warning);
    let b = &out.boots[0];
    assert_eq!(b.end, BootEnd::Special { special: SpecialCrash::NoOutput });
    let console = String::from_utf8_lossy(&b.log);
    assert!(console.contains("executed programs: 0") && console.contains("System halted"), "{console}");
    // Not before the timeout: the halted guest's vCPU counts as running
    // when QEMU is asked, so the quiet console only waits.
    let silent_for = b.crash_at.unwrap() - (b.started + b.userspace_after.unwrap());
    assert!(silent_for >= NO_OUTPUT.as_secs_f64(), "ended after {silent_for:.1}s");
}
