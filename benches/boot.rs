//! `cargo bench --bench boot`: QemuRunner against raw QEMU on the same
//! kernel (the test kernel with testdata/bugs/bug.patch, built by
//! kgym-testkit), side by side:
//!
//! 1. boot to userspace: a raw `qemu-system-x86_64` with a minimal busybox
//!    initramfs (made by the `cpio` tool) whose init prints a marker,
//!    spawn → marker, versus QemuRunner's own boot → userspace time (goal:
//!    ratio ≤ 1.1);
//! 2. the whole `run()` (reproducer compile, initramfs, boot, crash, stop);
//! 3. the early stop, on a guest that keeps running after its crash
//!    (`panic_on_warn=0`, a reproducer that prints the guest's clock every
//!    20 ms after triggering the bug), so only kgym can end it: the host's
//!    read time of the report's last console line → QEMU's exit
//!    (`BootRecord::stop_seconds`), and, from the guest's own clock, how
//!    long it ran on after the report (goal: < 1 s);
//! 4. wall time of N = 1, 2, 4 parallel instances until every instance
//!    crashed once.
//!
//! Without `--bench` (as `cargo test --all-targets` runs it) it does one
//! quick round so the code stays exercised.

use std::path::{Path, PathBuf};
use std::process::Stdio;
use std::time::{Duration, Instant};

use kgym_core::stage::build::Arch;
use kgym_core::stage::reproduce::{Reproducer, StopPolicy};
use kgym_vm::{KernelCmdline, QemuRunner, RunContext, RunRequest, VmRunner};
use tokio::io::{AsyncBufReadExt, BufReader};

const MARKER: &str = "KGYM-RAW-BOOT-MARKER";

/// Triggers the injected bug, then prints the guest's monotonic clock every
/// 20 ms (the kernel survives the report with `panic_on_warn=0`).
const CRASH_THEN_TICK: &str = r#"#include <stdio.h>
#include <sys/prctl.h>
#include <time.h>
#include <unistd.h>

int main(void) {
    struct timespec t;
    prctl(0x6b67796d, 0xdead, 0, 0, 0);
    for (;;) {
        clock_gettime(CLOCK_MONOTONIC, &t);
        printf("kgym-tick %ld.%09ld\n", (long)t.tv_sec, t.tv_nsec);
        fflush(stdout);
        usleep(20000);
    }
}
"#;

/// Seconds of guest clock between the first and the last tick after the
/// report's closing line.
fn ran_on_after_report(log: &[u8]) -> f64 {
    let log = String::from_utf8_lossy(log);
    let end = log.rfind("==================================================================").expect("report");
    let ticks: Vec<f64> =
        log[end..].lines().filter_map(|l| l.strip_prefix("kgym-tick ")).filter_map(|t| t.trim().parse().ok()).collect();
    ticks.last().zip(ticks.first()).map_or(0.0, |(l, f)| l - f)
}

/// The raw baseline's initramfs, made by the `cpio` tool from a directory:
/// busybox and an init that mounts the pseudo file systems and prints
/// [`MARKER`].
fn raw_initramfs(busybox: &Path, dir: &Path) -> PathBuf {
    let root = dir.join("raw-root");
    for d in ["bin", "dev", "proc", "sys"] {
        std::fs::create_dir_all(root.join(d)).expect("mkdir");
    }
    std::fs::copy(busybox, root.join("bin/busybox")).expect("copy busybox");
    // No device node in the archive (that needs root): init mounts
    // devtmpfs first and points its output at the console.
    let init = format!(
        "#!/bin/busybox sh\n/bin/busybox mount -t devtmpfs devtmpfs /dev\nexec >/dev/console 2>&1\n\
         /bin/busybox mount -t proc proc /proc\n/bin/busybox mount -t sysfs sysfs /sys\n\
         echo {MARKER}\nwhile true; do /bin/busybox sleep 60; done\n"
    );
    let init_path = root.join("init");
    std::fs::write(&init_path, init).expect("write init");
    std::fs::set_permissions(&init_path, std::os::unix::fs::PermissionsExt::from_mode(0o755)).expect("chmod");
    let cpio = dir.join("raw.cpio");
    let out = std::process::Command::new("sh")
        .arg("-c")
        .arg(format!("cd '{}' && find . | cpio --quiet -o -H newc > '{}'", root.display(), cpio.display()))
        .output()
        .expect("run cpio");
    assert!(out.status.success(), "cpio: {}", String::from_utf8_lossy(&out.stderr));
    cpio
}

fn median(mut v: Vec<f64>) -> f64 {
    v.sort_by(f64::total_cmp);
    v[v.len() / 2]
}

async fn kernel() -> (PathBuf, PathBuf) {
    if let Some(dir) = std::env::var_os("KGYM_VM_BUG_KERNEL") {
        let d = PathBuf::from(dir);
        return (d.join("arch/x86/boot/bzImage"), d.join("vmlinux"));
    }
    let patch =
        std::fs::read_to_string(kgym_testkit::workspace_root().join("testdata/bugs/bug.patch")).expect("bug.patch");
    let k = kgym_testkit::test_kernel_with_patch(&patch).await;
    (k.bzimage, k.vmlinux)
}

/// Spawn → marker of a raw QEMU boot, seconds.
async fn raw_boot(kernel: &Path, initrd: &Path, accel: &str) -> f64 {
    let started = Instant::now();
    let mut child = tokio::process::Command::new("qemu-system-x86_64")
        .args(["-accel", accel, "-m", "512", "-smp", "1", "-nodefaults", "-no-user-config", "-display", "none"])
        .args(["-serial", "stdio", "-no-reboot", "-kernel"])
        .arg(kernel)
        .arg("-initrd")
        .arg(initrd)
        .args(["-append", &KernelCmdline::crash_finding().render()])
        .stdout(Stdio::piped())
        .stderr(Stdio::null())
        .kill_on_drop(true)
        .spawn()
        .expect("start qemu");
    let mut lines = BufReader::new(child.stdout.take().expect("stdout")).lines();
    while let Ok(Some(l)) = lines.next_line().await {
        if l.contains(MARKER) {
            let t = started.elapsed().as_secs_f64();
            let _ = child.kill().await;
            return t;
        }
    }
    panic!("raw boot never printed the marker");
}

#[tokio::main]
async fn main() {
    let full = std::env::args().any(|a| a == "--bench");
    let missing: Vec<_> = ["qemu-system-x86_64", "busybox", "gcc", "cpio"]
        .into_iter()
        .filter(|t| kgym_testkit::require_tool(t).is_none())
        .collect();
    if !missing.is_empty() {
        eprintln!("boot bench skipped: missing {missing:?} (run .ci/run)");
        return;
    }
    let reps = if full { 5 } else { 1 };
    let (bzimage, vmlinux) = kernel().await;
    let work = tempfile::tempdir().expect("tempdir");
    let repro = std::fs::read_to_string(kgym_testkit::workspace_root().join("testdata/bugs/repro.c")).expect("repro.c");

    let runner = QemuRunner::builder()
        .work_dir(work.path())
        .accel_cache(Some(kgym_testkit::workspace_root().join("target/kgym-test-cache/accel.json")))
        .build()
        .expect("runner");

    // One warm-up run decides the accelerator (probe, cached) and warms
    // the page cache; the raw baseline uses the same accelerator.
    let warm = runner
        .run(RunRequest::new(&bzimage, Reproducer::c(repro.clone())), &RunContext::new())
        .await
        .expect("warm-up run");
    let accel = if warm.accel == kgym_core::stage::reproduce::Accel::Kvm { "kvm" } else { "tcg" };

    let busybox = runner.busybox(Arch::X86_64).expect("busybox");
    let initrd = raw_initramfs(&busybox, work.path());

    let mut raw = Vec::new();
    let mut ours = Vec::new();
    let mut whole = Vec::new();
    for _ in 0..reps {
        raw.push(raw_boot(&bzimage, &initrd, accel).await);
        let t = Instant::now();
        let out = runner
            .run(RunRequest::new(&bzimage, Reproducer::c(repro.clone())).vmlinux(&vmlinux), &RunContext::new())
            .await
            .expect("run");
        whole.push(t.elapsed().as_secs_f64());
        assert!(out.crashed, "the bug kernel must crash: {:?}", out.boots);
        ours.push(out.boots[0].userspace_after.expect("userspace"));
    }
    let (raw_m, ours_m) = (median(raw), median(ours));

    // The early stop, on a guest that would run on forever.
    let mut stop = Vec::new();
    let mut ran_on = Vec::new();
    for _ in 0..reps {
        let req = RunRequest::new(&bzimage, Reproducer::c(CRASH_THEN_TICK)).cmdline("panic_on_warn=0");
        let out = runner.run(req, &RunContext::new()).await.expect("run");
        assert!(out.crashed, "the bug kernel must crash: {:?}", out.boots);
        let b = &out.boots[0];
        stop.push(b.stop_seconds);
        ran_on.push(ran_on_after_report(&b.log));
    }

    let mut parallel = Vec::new();
    let ns: &[u32] = if full { &[1, 2, 4] } else { &[1] };
    for &n in ns {
        let t = Instant::now();
        let out = runner
            .run(
                RunRequest::new(&bzimage, Reproducer::c(repro.clone()))
                    .instances(n)
                    .policy(StopPolicy::AllInstances)
                    .budget(Duration::from_secs(600)),
                &RunContext::new(),
            )
            .await
            .expect("parallel run");
        assert!(out.crashed);
        let boots_up: Vec<f64> = out.boots.iter().filter_map(|b| b.userspace_after).collect();
        parallel.push((n, t.elapsed().as_secs_f64(), median(boots_up)));
    }

    println!();
    println!("kgym boot benchmark: test kernel + bug.patch, accel {accel}, 1 vCPU / 512 MB, median of {reps}");
    println!("| measurement | raw qemu | QemuRunner | ratio |");
    println!("|---|---|---|---|");
    println!("| spawn → userspace marker | {raw_m:.2} s | {ours_m:.2} s | {:.2} (goal ≤ 1.1) |", ours_m / raw_m);
    println!("| whole run(): compile + initramfs + boot + crash + stop | – | {:.2} s | – |", median(whole));
    println!(
        "| report's last line read → QEMU gone (guest keeps running after its crash) | – | {:.3} s | (goal < 1 s) |",
        median(stop)
    );
    println!(
        "| guest's own clock: report → its last tick before QEMU died | – | {:.3} s | (goal < 1 s) |",
        median(ran_on)
    );
    for (n, wall, up) in &parallel {
        println!(
            "| {n} instance(s) in parallel, until each crashed | – | {wall:.2} s wall (boot {up:.2} s) | {:.2}× of N=1 |",
            wall / parallel[0].1
        );
    }
}
