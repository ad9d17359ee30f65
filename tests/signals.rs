//! No process outlives the kgym process that started it, for real: the
//! `kgym` CLI (and the `kbuilder` service) is sent SIGTERM or SIGKILL while
//! `make` compiles or QEMU runs; within 2 s nothing it started may still
//! run, its scratch directory must be gone, and the next build of the same
//! warm tree must succeed and boot.

use std::path::{Path, PathBuf};
use std::process::{Child, Command, ExitStatus, Stdio};
use std::time::{Duration, Instant};

mod common;

use common::example;
use nix::sys::signal::Signal;
use nix::unistd::Pid;

/// How long the processes of a stopped kgym may take to disappear.
const GONE_WITHIN: Duration = Duration::from_secs(2);

fn tools_available() -> bool {
    kgym_testkit::test_kernel_available() && kgym_testkit::require_tool("qemu-system-x86_64").is_some()
}

/// One live process.
#[derive(Debug)]
#[allow(dead_code)] // pid is read through Debug, in failure messages
struct Proc {
    pid: i32,
    comm: String,
    cmdline: String,
}

/// Live processes whose command line mentions `dir` or whose working
/// directory is inside it (a compiler's command line may hold only
/// relative paths).
fn processes_under(dir: &Path) -> Vec<Proc> {
    let needle = dir.to_string_lossy().into_owned();
    let me = std::process::id() as i32;
    let mut found = Vec::new();
    for entry in std::fs::read_dir("/proc").unwrap().flatten() {
        let Some(pid) = entry.file_name().to_str().and_then(|n| n.parse::<i32>().ok()) else { continue };
        let stat = std::fs::read_to_string(entry.path().join("stat")).unwrap_or_default();
        if pid == me || stat.rsplit_once(") ").is_none_or(|(_, rest)| rest.starts_with('Z')) {
            continue;
        }
        let cmdline = String::from_utf8_lossy(&std::fs::read(entry.path().join("cmdline")).unwrap_or_default())
            .replace('\0', " ");
        let cwd = std::fs::read_link(entry.path().join("cwd")).unwrap_or_default();
        if cmdline.contains(&needle) || cwd.starts_with(dir) {
            let comm = std::fs::read_to_string(entry.path().join("comm")).unwrap_or_default().trim().to_owned();
            found.push(Proc { pid, comm, cmdline });
        }
    }
    found
}

fn wait_until(what: &str, limit: Duration, mut done: impl FnMut() -> bool) {
    let started = Instant::now();
    while !done() {
        assert!(started.elapsed() < limit, "{what}: not within {limit:?}");
        std::thread::sleep(Duration::from_millis(100));
    }
}

/// A `kgym` process, killed when dropped.
struct Kgym {
    child: Child,
    log: PathBuf,
}

impl Kgym {
    fn start(args: &[&std::ffi::OsStr], log: PathBuf) -> Self {
        let file = std::fs::File::create(&log).unwrap();
        let child = Command::new(env!("CARGO_BIN_EXE_kgym"))
            .args(args)
            .stdin(Stdio::null())
            .stdout(file.try_clone().unwrap())
            .stderr(file)
            .spawn()
            .unwrap();
        Self { child, log }
    }

    fn signal(&self, signal: Signal) {
        nix::sys::signal::kill(Pid::from_raw(self.child.id() as i32), signal).unwrap();
    }

    /// Waits for the exit (at most `limit`).
    fn wait(&mut self, limit: Duration) -> ExitStatus {
        let started = Instant::now();
        loop {
            if let Some(status) = self.child.try_wait().unwrap() {
                return status;
            }
            assert!(started.elapsed() < limit, "kgym did not exit within {limit:?}; log:\n{}", self.output());
            std::thread::sleep(Duration::from_millis(50));
        }
    }

    fn output(&self) -> String {
        std::fs::read_to_string(&self.log).unwrap_or_default()
    }
}

impl Drop for Kgym {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

/// Asserts that within [`GONE_WITHIN`] nothing runs under `dir`.
fn assert_nothing_left(dir: &Path, after: &str) {
    let started = Instant::now();
    loop {
        let left = processes_under(dir);
        if left.is_empty() {
            eprintln!("{after}: nothing left after {:?}", started.elapsed());
            return;
        }
        assert!(started.elapsed() < GONE_WITHIN, "{after}: still running after {GONE_WITHIN:?}: {left:#?}");
        std::thread::sleep(Duration::from_millis(50));
    }
}

/// Whether `make bzImage` (the kernel's compile, after the config) is among
/// `procs`.
fn making_bzimage(procs: &[Proc]) -> bool {
    procs.iter().any(|p| p.comm == "make" && p.cmdline.split_whitespace().any(|w| w == "bzImage"))
}

/// The entries of `dir` (none when it does not exist).
fn entries(dir: &Path) -> Vec<String> {
    std::fs::read_dir(dir)
        .map(|d| d.flatten().map(|e| e.file_name().to_string_lossy().into_owned()).collect())
        .unwrap_or_default()
}

fn os(s: &str) -> &std::ffi::OsStr {
    std::ffi::OsStr::new(s)
}

/// A C reproducer that prints a line and sleeps: the guest keeps running.
const SLEEPER: &str = "#include <stdio.h>\n#include <unistd.h>\nint main(void) { printf(\"kgym-signals: running\\n\"); fflush(stdout); sleep(600); return 0; }\n";

/// `kgym build` is stopped mid-compile by SIGTERM, then (started again) by
/// SIGKILL; each time its make tree is gone within 2 s. Then the same warm
/// tree builds to the end and the kernel boots.
#[test]
fn kgym_build_stopped_mid_compile_leaves_nothing_and_the_tree_builds_again() {
    if !tools_available() {
        return;
    }
    let scratch = kgym_testkit::scratch_data_dir();
    let (data, cache, out) = (scratch.path().join("data"), scratch.path().join("cache"), scratch.path().join("out"));
    let fragment = scratch.path().join("minimal.frag");
    std::fs::write(&fragment, kgym_testkit::MINIMAL_BOOT_FRAGMENT).unwrap();
    let args = |ccache: bool| -> Vec<&std::ffi::OsStr> {
        let mut a = vec![os("--data"), data.as_os_str(), os("--build-cache"), cache.as_os_str(), os("build")];
        a.extend([os("--source"), os(kgym_testkit::KERNEL_TARBALL), os("--base"), os("tinyconfig")]);
        a.extend([os("--fragment"), fragment.as_os_str(), os("--out"), out.as_os_str(), os("--json")]);
        if !ccache {
            // Without ccache, make really compiles for minutes.
            a.push(os("--no-ccache"));
        }
        a
    };
    let trees = cache.join("trees");
    // The kernel compile itself (cc1 also runs earlier, for kconfig's tools).
    let compiling = || {
        let procs = processes_under(&trees);
        making_bzimage(&procs) && procs.iter().any(|p| p.comm == "cc1" && p.cmdline.contains("__KERNEL__"))
    };

    for (round, signal) in [Signal::SIGTERM, Signal::SIGKILL].into_iter().enumerate() {
        let mut kgym = Kgym::start(&args(false), scratch.path().join(format!("build-{round}.log")));
        wait_until("cc1 compiles the kernel in the warm tree", Duration::from_secs(900), || {
            if let Ok(Some(status)) = kgym.child.try_wait() {
                panic!("kgym build ended early ({status}):\n{}", kgym.output());
            }
            compiling()
        });
        std::thread::sleep(Duration::from_secs(2));
        kgym.signal(signal);
        let status = kgym.wait(Duration::from_secs(60));
        eprintln!("kgym build after {signal}: {status}");
        if signal == Signal::SIGTERM {
            use std::os::unix::process::ExitStatusExt;
            assert_eq!(status.code(), Some(143), "{status}; log:\n{}", kgym.output());
            assert!(kgym.output().contains("cancelled"), "the error says the build was cancelled:\n{}", kgym.output());
            assert!(status.signal().is_none());
        }
        assert_nothing_left(&cache, &format!("kgym build + {signal}"));
        assert!(entries(&data.join("tmp")).is_empty(), "temp dirs left: {:?}", entries(&data.join("tmp")));
        assert!(entries(&cache.join("sources")).iter().all(|e| !e.ends_with(".tmp")), "a half extraction was left");
    }

    // The interrupted tree builds to the end (ccache from here on) ...
    let mut kgym = Kgym::start(&args(true), scratch.path().join("build-final.log"));
    let status = kgym.wait(Duration::from_secs(3600));
    let output = kgym.output();
    assert!(status.success(), "the build after the interruptions failed:\n{output}");
    let json: serde_json::Value =
        serde_json::from_str(output.lines().rev().find(|l| l.starts_with('{')).expect("the JSON line")).unwrap();
    assert_eq!(json["cache"], "hit", "the interrupted warm tree was not reused: {json}");

    // ... and boots.
    let repro = scratch.path().join("hello.c");
    std::fs::write(&repro, SLEEPER).unwrap();
    let kernel = out.join("bzImage");
    let boot = Kgym::start(
        &[
            os("--data"),
            data.as_os_str(),
            os("reproduce"),
            os("--kernel"),
            kernel.as_os_str(),
            os("--repro"),
            repro.as_os_str(),
            os("--budget"),
            os("20s"),
            os("--accel"),
            os("tcg"),
            os("--json"),
        ],
        scratch.path().join("boot.log"),
    );
    let mut boot = boot;
    let status = boot.wait(Duration::from_secs(300));
    let output = boot.output();
    assert!(status.success(), "{output}");
    let start = output.find("{\n").expect("the JSON verdict");
    let verdict: serde_json::Value =
        serde_json::Deserializer::from_str(&output[start..]).into_iter().next().expect("a JSON object").unwrap();
    assert_eq!(verdict["crashed"], false, "{verdict}");
    assert!(verdict["boots"].as_u64().unwrap_or(0) >= 1, "{verdict}");
    assert_eq!(verdict["image_ability"], "normal", "the kernel did not boot to userspace: {verdict}");
}

/// `kgym reproduce` is stopped by SIGTERM and by SIGKILL while QEMU runs:
/// QEMU is gone within 2 s, and so is the run's scratch directory.
#[test]
fn kgym_reproduce_stopped_mid_boot_leaves_no_qemu_and_no_scratch() {
    if !tools_available() {
        return;
    }
    let rt = tokio::runtime::Runtime::new().unwrap();
    let kernel = rt.block_on(kgym_testkit::minimal_kernel(kgym_testkit::Arch::X86_64, kgym_testkit::Compiler::Gcc));
    let scratch = kgym_testkit::scratch_data_dir();
    let data = scratch.path().join("data");
    let repro = scratch.path().join("sleeper.c");
    std::fs::write(&repro, SLEEPER).unwrap();
    for (round, signal) in [Signal::SIGTERM, Signal::SIGKILL].into_iter().enumerate() {
        let mut kgym = Kgym::start(
            &[
                os("--data"),
                data.as_os_str(),
                os("reproduce"),
                os("--kernel"),
                kernel.bzimage.as_os_str(),
                os("--repro"),
                repro.as_os_str(),
                os("--budget"),
                os("5m"),
                os("--accel"),
                os("tcg"),
            ],
            scratch.path().join(format!("reproduce-{round}.log")),
        );
        let qemu_runs = || processes_under(&data).iter().any(|p| p.comm.starts_with("qemu-system"));
        wait_until("QEMU runs", Duration::from_secs(300), || {
            if let Ok(Some(status)) = kgym.child.try_wait() {
                panic!("kgym reproduce ended early ({status}):\n{}", kgym.output());
            }
            qemu_runs()
        });
        assert!(!entries(&data.join("tmp")).is_empty(), "the run's scratch directory is not under <data>/tmp");
        std::thread::sleep(Duration::from_secs(1));
        kgym.signal(signal);
        let status = kgym.wait(Duration::from_secs(30));
        eprintln!("kgym reproduce after {signal}: {status}");
        if signal == Signal::SIGTERM {
            assert_eq!(status.code(), Some(143), "{status}; log:\n{}", kgym.output());
        }
        assert_nothing_left(&data, &format!("kgym reproduce + {signal}"));
        let started = Instant::now();
        while !entries(&data.join("tmp")).is_empty() {
            assert!(
                started.elapsed() < GONE_WITHIN,
                "kgym reproduce + {signal}: scratch left: {:?}",
                entries(&data.join("tmp"))
            );
            std::thread::sleep(Duration::from_millis(50));
        }
    }
}

/// A service process, killed when dropped.
struct Service(Kgym);

impl Service {
    fn start(program: &Path, env: &[(&str, &Path)], server: &str, log: PathBuf) -> Self {
        let file = std::fs::File::create(&log).unwrap();
        let mut cmd = Command::new(program);
        cmd.env("KGYM_SERVER", server).env_remove("KGYM_TOKEN").env("RUST_LOG", "info");
        for (k, v) in env {
            cmd.env(k, v);
        }
        let child = cmd.stdin(Stdio::null()).stdout(file.try_clone().unwrap()).stderr(file).spawn().unwrap();
        Self(Kgym { child, log })
    }
}

/// The `kbuilder` service is stopped by SIGTERM (the stage is handed back)
/// and by SIGKILL while make runs for a stage: make is gone within 2 s and
/// so is the service's scratch; then a build of the same tree by a fresh
/// `kbuilder` succeeds and boots.
#[test]
fn kbuilder_stopped_mid_stage_leaves_nothing_and_the_tree_builds_again() {
    use kgym::core::stage::build::{BaseConfig, BuildArgs, KernelConfig, KernelSource};
    use kgym::core::{JobSpec, JobStatus, StageKind};
    use kgym::sched::{Scheduler, SchedulerExt};

    if !tools_available() {
        return;
    }
    let (Some(kscheduler), Some(kbuilder)) = (example("kscheduler"), example("kbuilder")) else { return };
    let scratch = kgym_testkit::scratch_data_dir();
    let (sched_data, builder_data, artifacts) =
        (scratch.path().join("sched"), scratch.path().join("builder"), scratch.path().join("artifacts"));
    let port = std::net::TcpListener::bind("127.0.0.1:0").unwrap().local_addr().unwrap().port();
    let server = format!("http://127.0.0.1:{port}");
    let listen = PathBuf::from(format!("127.0.0.1:{port}"));
    let _scheduler = Service::start(
        &kscheduler,
        &[("KGYM_LISTEN", &listen), ("KGYM_DATA", &sched_data), ("KGYM_ARTIFACTS", &artifacts)],
        &server,
        scratch.path().join("kscheduler.log"),
    );
    let rt = tokio::runtime::Runtime::new().unwrap();
    let sched = kgym::sched::http::HttpScheduler::new(&server).unwrap();
    wait_until("kscheduler answers", Duration::from_secs(60), || rt.block_on(sched.list(&Default::default())).is_ok());

    let args = BuildArgs::new(
        KernelSource::tarball(kgym_testkit::KERNEL_TARBALL),
        KernelConfig::Base {
            base: BaseConfig::Tinyconfig,
            fragments: vec![kgym_testkit::MINIMAL_BOOT_FRAGMENT.to_owned()],
        },
    );
    let job = || JobSpec::new().stage(StageKind::build(), &args);
    let first = rt.block_on(sched.submit(job())).unwrap();
    let env = [("KGYM_DATA", builder_data.as_path()), ("KGYM_ARTIFACTS", artifacts.as_path())];
    let trees = builder_data.join("build/trees");
    let making = || making_bzimage(&processes_under(&trees));
    let scratch_dirs = || entries(&builder_data.join("scratch"));

    for (round, signal) in [Signal::SIGTERM, Signal::SIGKILL].into_iter().enumerate() {
        let mut service =
            Service::start(&kbuilder, &env, &server, scratch.path().join(format!("kbuilder-{round}.log")));
        wait_until("make bzImage runs for the stage", Duration::from_secs(900), || {
            if let Ok(Some(status)) = service.0.child.try_wait() {
                panic!("kbuilder ended early ({status}):\n{}", service.0.output());
            }
            making()
        });
        assert_eq!(scratch_dirs().len(), 1, "the service's scratch: {:?}", scratch_dirs());
        std::thread::sleep(Duration::from_secs(2));
        service.0.signal(signal);
        let status = service.0.wait(Duration::from_secs(60));
        eprintln!("kbuilder after {signal}: {status}");
        if signal == Signal::SIGTERM {
            assert!(status.success(), "kbuilder did not stop cleanly: {status}\n{}", service.0.output());
            let job = rt.block_on(sched.get(first)).unwrap();
            assert!(!job.status.is_terminal(), "the stage was not handed back: {:?}", job.status);
        }
        assert_nothing_left(&builder_data, &format!("kbuilder + {signal}"));
        let started = Instant::now();
        while !scratch_dirs().is_empty() {
            assert!(started.elapsed() < GONE_WITHIN, "kbuilder + {signal}: scratch left: {:?}", scratch_dirs());
            std::thread::sleep(Duration::from_millis(50));
        }
    }

    // The killed worker's lease would take its time to expire: a new job.
    rt.block_on(sched.abort(first)).unwrap();
    let second = rt.block_on(sched.submit(job())).unwrap();
    let _service = Service::start(&kbuilder, &env, &server, scratch.path().join("kbuilder-final.log"));
    let done = rt.block_on(async { tokio::time::timeout(Duration::from_secs(3600), sched.wait(second)).await });
    let done = done.expect("the build did not finish within an hour").unwrap();
    assert_eq!(done.status, JobStatus::Finished);
    assert!(done.succeeded(), "the build after the interruptions failed: {:#?}", done.failure());
    assert_eq!(done.results[0].value["cache"], "hit", "the interrupted warm tree was not reused");
    let bzimage = artifacts.join(done.results[0].value["bzimage"].as_str().expect("a bzImage artifact key"));
    assert!(bzimage.is_file(), "{} is not in the shared artifact directory", bzimage.display());

    // The kernel boots.
    let repro = scratch.path().join("hello.c");
    std::fs::write(&repro, SLEEPER).unwrap();
    let data = scratch.path().join("data");
    let mut boot = Kgym::start(
        &[
            os("--data"),
            data.as_os_str(),
            os("reproduce"),
            os("--kernel"),
            bzimage.as_os_str(),
            os("--repro"),
            repro.as_os_str(),
            os("--budget"),
            os("20s"),
            os("--accel"),
            os("tcg"),
            os("--json"),
        ],
        scratch.path().join("boot.log"),
    );
    let status = boot.wait(Duration::from_secs(300));
    let output = boot.output();
    assert!(status.success(), "{output}");
    assert!(output.contains("\"image_ability\": \"normal\""), "the kernel did not boot to userspace:\n{output}");
}
