//! Real runs: the injected KASAN bug of testdata/bugs crashes the kernel
//! built with bug.patch and not the one built with its fix; a guest that
//! keeps running after its crash is stopped at once; kernels that cannot
//! reach userspace, hanging, silent and rebooting reproducers get their
//! special verdicts; a guest paused behind kgym's back is detected over
//! QMP; compile errors and cancellation behave.

mod common;

use std::time::{Duration, Instant};

use common::*;
use kgym_core::stage::reproduce::{Accel, CrashKind, ImageAbility, Reproducer, StopPolicy};
use kgym_vm::outcome::{BootEnd, SpecialCrash};
use kgym_vm::{Error, RunContext, RunRequest, VmRunner};

const HANG: &str = "#include <unistd.h>\nint main(void) { for (;;) pause(); }\n";

#[tokio::test]
async fn injected_use_after_free_crashes_with_a_kasan_title() {
    if !have_tools() {
        return;
    }
    let k = bug_kernel().await;
    let work = tempfile::tempdir().unwrap();
    let runner = runner_in(work.path()).build().unwrap();
    let (ctx, log) = context();
    let req = RunRequest::new(&k.bzimage, Reproducer::c(read_bug_file("repro.c")))
        .vmlinux(&k.vmlinux)
        .budget(Duration::from_secs(240));
    let out = runner.run(req, &ctx).await.unwrap();
    assert!(out.crashed, "no crash; progress: {:?}", log.lines());
    assert_eq!(out.title.as_deref(), Some(BUG_TITLE), "crashes: {:?}", out.crashes);
    assert_eq!(out.message, "Crashes");
    assert_eq!(out.image_ability, ImageAbility::Normal);
    assert!(matches!(out.accel, Accel::Kvm | Accel::Tcg));
    // First crash stops the run: one boot, one crash group.
    assert_eq!(out.boots.len(), 1);
    let boot = &out.boots[0];
    assert_eq!(out.crashes[0].kind, CrashKind::Crash);
    assert_eq!(out.crashes[0].boots, vec![0]);
    assert!(boot.userspace_after.is_some());
    let log_text = String::from_utf8_lossy(&boot.log);
    assert!(log_text.contains("kgym-repro: valid note: 0"), "the reproducer did not run: {log_text}");
    // The report is symbolized from vmlinux.
    let report = boot.report.as_ref().expect("a crash has a report");
    assert!(report.text.contains("kgym_note_store"), "{}", report.text);
    assert!(report.text.contains("kernel/sys.c:"), "not symbolized: {}", report.text);
    // Paths as syzkaller prints them: cleaned (no `./` of an in-tree build).
    assert!(!report.text.contains(" ./"), "{}", report.text);
    // What syzkaller derives from it: the guilty file (found through the
    // symbolized frames) and the alternative titles, also in the result.
    assert_eq!(report.guilty_file.as_deref(), Some("kernel/sys.c"), "{}", report.text);
    assert_eq!(report.alt_titles, ["bad-access in kgym_note_store"]);
    assert_eq!(out.crashes[0].guilty_file.as_deref(), Some("kernel/sys.c"));
    assert_eq!(out.crashes[0].alt_titles, report.alt_titles);
    // The VM was stopped promptly after the crash, not left to its budget.
    assert!(out.seconds < 200.0, "took {}s", out.seconds);
    assert!(std::fs::read_dir(work.path()).unwrap().next().is_none(), "temporary files left behind");
}

#[tokio::test]
async fn the_fix_survives_the_budget() {
    if !have_tools() {
        return;
    }
    let k = fixed_kernel().await;
    let work = tempfile::tempdir().unwrap();
    let runner = runner_in(work.path()).build().unwrap();
    let (ctx, _log) = context();
    let budget = Duration::from_secs(30);
    let req = RunRequest::new(&k.bzimage, Reproducer::c(read_bug_file("repro.c"))).budget(budget);
    let out = runner.run(req, &ctx).await.unwrap();
    assert!(!out.crashed, "crashed: {:?}", out.crashes);
    assert_eq!(out.title, None);
    assert_eq!(out.message, "No crash reproduced");
    assert_eq!(out.image_ability, ImageAbility::Normal);
    assert_eq!(out.boots.len(), 1);
    assert_eq!(out.boots[0].end, BootEnd::BudgetEnded);
    let log = String::from_utf8_lossy(&out.boots[0].log);
    // The rejected note now fails cleanly (-EINVAL), run after run.
    assert!(log.contains("kgym-repro: rejected note: -1"), "{log}");
    assert!(log.matches("kgym: running the reproducer").count() >= 2, "{log}");
    assert!(out.seconds >= budget.as_secs_f64());
}

#[tokio::test]
async fn a_bogus_init_means_the_kernel_did_not_boot() {
    if !have_tools() {
        return;
    }
    let k = plain_kernel().await;
    let work = tempfile::tempdir().unwrap();
    let runner = runner_in(work.path()).build().unwrap();
    let (ctx, _log) = context();
    let req = RunRequest::new(&k.bzimage, Reproducer::c(HANG))
        .cmdline("rdinit=/does-not-exist init=/does-not-exist")
        .budget(Duration::from_secs(120));
    let out = runner.run(req, &ctx).await.unwrap();
    assert!(!out.crashed);
    assert_eq!(out.title.as_deref(), Some("kernel did not boot"));
    assert_eq!(out.crashes[0].kind, CrashKind::Special);
    assert_eq!(out.message, "Special crashes");
    assert_eq!(out.image_ability, ImageAbility::Error);
    // The instance does not retry a kernel that cannot boot.
    assert_eq!(out.boots.len(), 1);
    let b = &out.boots[0];
    assert_eq!(b.end, BootEnd::Special { special: SpecialCrash::DidNotBoot });
    assert!(b.userspace_after.is_none());
    let log = String::from_utf8_lossy(&b.log);
    assert!(log.contains("/does-not-exist"), "console tail should say why: {log}");
    assert!(out.seconds < 100.0, "the panic should end the boot early, took {}s", out.seconds);
}

#[tokio::test]
async fn a_console_elsewhere_means_the_kernel_did_not_boot() {
    if !have_tools() {
        return;
    }
    let k = plain_kernel().await;
    let work = tempfile::tempdir().unwrap();
    let runner = runner_in(work.path()).boot_timeout(Duration::from_secs(20)).build().unwrap();
    let (ctx, _log) = context();
    // /dev/console on the (absent) VGA console: init's marker never reaches
    // the serial port.
    let req = RunRequest::new(&k.bzimage, Reproducer::c(HANG)).cmdline("console=tty0").budget(Duration::from_secs(60));
    let out = runner.run(req, &ctx).await.unwrap();
    assert_eq!(out.title.as_deref(), Some("kernel did not boot"));
    assert_eq!(out.image_ability, ImageAbility::Error);
    assert!(out.boots[0].ended < 45.0, "the boot timeout should fire, ended at {}", out.boots[0].ended);
}

#[tokio::test]
async fn a_hanging_reproducer_runs_into_the_budget() {
    if !have_tools() {
        return;
    }
    let k = plain_kernel().await;
    let work = tempfile::tempdir().unwrap();
    let runner = runner_in(work.path()).build().unwrap();
    let (ctx, _log) = context();
    let budget = Duration::from_secs(20);
    let req = RunRequest::new(&k.bzimage, Reproducer::c(HANG)).budget(budget);
    let out = runner.run(req, &ctx).await.unwrap();
    assert!(!out.crashed && out.crashes.is_empty(), "{:?}", out.crashes);
    assert_eq!(out.boots.len(), 1);
    assert_eq!(out.boots[0].end, BootEnd::BudgetEnded);
    assert!(out.boots[0].userspace_after.is_some());
    assert!(out.seconds >= budget.as_secs_f64() && out.seconds < budget.as_secs_f64() + 15.0, "{}", out.seconds);
}

#[tokio::test]
async fn silence_and_power_off_are_special_crashes() {
    if !have_tools() {
        return;
    }
    let k = plain_kernel().await;
    let work = tempfile::tempdir().unwrap();
    let runner = runner_in(work.path()).no_output_timeout(Duration::from_secs(8)).tcg_timeout_scale(1).build().unwrap();
    // Silence: the hanging reproducer prints nothing.
    let (ctx, _log) = context();
    let req =
        RunRequest::new(&k.bzimage, Reproducer::c(HANG)).budget(Duration::from_secs(30)).policy(StopPolicy::FirstCrash);
    let out = runner.run(req, &ctx).await.unwrap();
    assert_eq!(out.title.as_deref(), Some("no output from test machine"), "{:?}", out.boots);
    assert_eq!(out.image_ability, ImageAbility::Warning, "special crashes only");
    // A reboot (QEMU runs with -no-reboot): the VM goes away without a report.
    let poweroff = "#include <sys/reboot.h>\n#include <unistd.h>\nint main(void) { return reboot(RB_AUTOBOOT); }\n";
    let req = RunRequest::new(&k.bzimage, Reproducer::c(poweroff)).budget(Duration::from_secs(60));
    let out = runner.run(req, &ctx).await.unwrap();
    assert!(!out.crashed);
    assert_eq!(out.title.as_deref(), Some("lost connection to test machine"), "{:?}", out.boots);
    // QEMU said why over QMP: with -no-reboot, the guest's reset is a shutdown.
    let console = String::from_utf8_lossy(&out.boots[0].log);
    assert!(console.contains("[kgym: QEMU event SHUTDOWN (guest-reset)]"), "{console}");
    // Special crashes do not stop the run: fresh VMs until the budget ends.
    assert!(out.boots.len() >= 2, "{:?}", out.boots.iter().map(|b| &b.end).collect::<Vec<_>>());
    assert_eq!(out.crashes.len(), 1);
    assert_eq!(out.crashes[0].boots.len(), out.boots.iter().filter(|b| b.crash().is_some()).count());
}

#[tokio::test]
async fn crashes_are_reproduced_again_in_fresh_vms_until_the_budget_ends() {
    if !have_tools() {
        return;
    }
    let k = bug_kernel().await;
    let work = tempfile::tempdir().unwrap();
    let runner = runner_in(work.path()).build().unwrap();
    let (ctx, _log) = context();
    let req = RunRequest::new(&k.bzimage, Reproducer::c(read_bug_file("repro.c")))
        .instances(2)
        .policy(StopPolicy::Budget)
        .budget(Duration::from_secs(45));
    let out = runner.run(req, &ctx).await.unwrap();
    assert!(out.crashed);
    assert_eq!(out.crashes.len(), 1, "{:?}", out.crashes);
    let crashing: Vec<_> = out.boots.iter().filter(|b| matches!(b.end, BootEnd::Crash { .. })).collect();
    assert!(crashing.len() >= 4, "expected at least two crashes per instance, got {}", crashing.len());
    for i in 0..2 {
        let runs: Vec<u32> = out.boots.iter().filter(|b| b.instance == i).map(|b| b.run).collect();
        assert!(runs.len() >= 2 && runs.windows(2).all(|w| w[1] == w[0] + 1), "instance {i}: {runs:?}");
    }
    assert_eq!(out.crashes[0].boots.len(), crashing.len());
}

#[tokio::test]
async fn a_reproducer_that_does_not_compile_is_a_typed_error() {
    if kgym_testkit::require_tool("gcc").is_none() {
        return;
    }
    let work = tempfile::tempdir().unwrap();
    // Never booted: only the x86 boot header a run checks before anything
    // else (`HdrS` at 0x202), so the reproducer's compile comes next.
    let kernel = work.path().join("bzImage");
    let mut header = vec![0u8; 0x240];
    header[0x202..0x206].copy_from_slice(b"HdrS");
    std::fs::write(&kernel, header).unwrap();
    let runner = runner_in(work.path()).build().unwrap();
    let req = RunRequest::new(&kernel, Reproducer::c("int main(void) { return nope; }"));
    let err = runner.run(req, &RunContext::new()).await.unwrap_err();
    match err {
        Error::ReproducerDoesNotCompile { output, .. } => assert!(output.contains("nope"), "{output}"),
        other => panic!("unexpected {other:?}"),
    }
    let f = kgym_vm::failure_of(&Error::ReproducerDoesNotCompile {
        compiler: "gcc".into(),
        status: "exit status: 1".into(),
        output: "x".into(),
    });
    assert_eq!(f.code, "reproducer-does-not-compile");
}

#[tokio::test]
async fn cancelling_a_run_kills_every_vm_and_removes_its_files() {
    if !have_tools() {
        return;
    }
    let k = plain_kernel().await;
    let work = tempfile::tempdir().unwrap();
    let runner = runner_in(work.path()).build().unwrap();
    let (ctx, log) = context();
    let cancel = ctx.cancel.clone();
    let req = RunRequest::new(&k.bzimage, Reproducer::c(HANG)).instances(2).budget(Duration::from_secs(300));
    let run = tokio::spawn(async move { runner.run(req, &ctx).await });
    // Wait until both VMs are in userspace.
    let started = Instant::now();
    while log.lines().iter().filter(|l| l.contains("userspace up")).count() < 2 {
        assert!(started.elapsed() < Duration::from_secs(200), "VMs did not come up: {:?}", log.lines());
        tokio::time::sleep(Duration::from_millis(200)).await;
    }
    let needle = work.path().display().to_string();
    assert_eq!(processes_mentioning(&needle).len(), 2, "two QEMUs should run: {:?}", processes_mentioning(&needle));
    let cancelled_at = Instant::now();
    cancel.cancel();
    let err = run.await.unwrap().unwrap_err();
    assert!(matches!(err, Error::Cancelled), "{err:?}");
    assert!(cancelled_at.elapsed() < Duration::from_secs(10), "cancel took {:?}", cancelled_at.elapsed());
    assert!(processes_mentioning(&needle).is_empty(), "left running: {:?}", processes_mentioning(&needle));
    assert!(std::fs::read_dir(work.path()).unwrap().next().is_none(), "temporary files left behind");
}

/// Triggers the injected bug, then keeps printing the guest's monotonic
/// clock every 20 ms: with `panic_on_warn=0` the kernel survives the KASAN
/// report, so only kgym stops this guest.
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

/// The guest's tick times (seconds) after the report, from the console log.
fn ticks_after_report(log: &str) -> Vec<f64> {
    let end = log
        .rfind("==================================================================")
        .expect("the report's last line");
    log[end..].lines().filter_map(|l| l.strip_prefix("kgym-tick ")).filter_map(|t| t.trim().parse().ok()).collect()
}

#[tokio::test]
async fn a_guest_that_runs_on_after_its_crash_is_stopped_within_a_second_of_the_report() {
    if !have_tools() {
        return;
    }
    let k = bug_kernel().await;
    let work = tempfile::tempdir().unwrap();
    let runner = runner_in(work.path()).build().unwrap();
    let (ctx, _log) = context();
    let req = RunRequest::new(&k.bzimage, Reproducer::c(CRASH_THEN_TICK))
        .cmdline("panic_on_warn=0")
        .budget(Duration::from_secs(240));
    let out = runner.run(req, &ctx).await.unwrap();
    assert_eq!(out.title.as_deref(), Some(BUG_TITLE), "{:?}", out.boots);
    let b = &out.boots[0];
    let console = String::from_utf8_lossy(&b.log);
    assert!(!console.contains("Kernel panic"), "the kernel should survive the report: {console}");
    // The guest's own clock: how long it ran on after printing the report.
    let ticks = ticks_after_report(&console);
    let ran_on = ticks.last().zip(ticks.first()).map_or(0.0, |(l, f)| l - f);
    eprintln!("guest ran on for {ran_on:.3}s ({} ticks); kgym: report → QEMU gone {:.3}s", ticks.len(), b.stop_seconds);
    // A generous bound that still fails if the guest were left running.
    assert!(ran_on < 1.0, "the guest ran on for {ran_on:.3}s after its report");
    assert!(b.stop_seconds < 1.0, "report → QEMU gone took {:.3}s", b.stop_seconds);
    assert!(std::fs::read_dir(work.path()).unwrap().next().is_none(), "temporary files left behind");
}

/// Sends `command` to a QMP server socket (QEMU's `-qmp ...,server=on`) and
/// returns QEMU's answer.
async fn qmp_command(socket: &std::path::Path, command: &str) -> String {
    use tokio::io::{AsyncBufReadExt, AsyncWriteExt, BufReader};
    let stream = tokio::net::UnixStream::connect(socket).await.unwrap();
    let (read, mut write) = tokio::io::split(stream);
    let mut lines = BufReader::new(read).lines();
    let _greeting = lines.next_line().await.unwrap();
    for c in ["qmp_capabilities", command] {
        write.write_all(format!("{{\"execute\": \"{c}\"}}\n").as_bytes()).await.unwrap();
        loop {
            let line = lines.next_line().await.unwrap().unwrap();
            if line.contains("\"return\"") || line.contains("\"error\"") {
                if c == command {
                    return line;
                }
                break;
            }
        }
    }
    unreachable!()
}

#[tokio::test]
async fn a_guest_paused_behind_kgyms_back_ends_the_run_with_a_typed_error() {
    if !have_tools() {
        return;
    }
    let k = plain_kernel().await;
    let work = tempfile::tempdir().unwrap();
    let monitor = work.path().join("test-monitor");
    let runner = runner_in(&work.path().join("runs"))
        .extra_qemu_args(["-qmp".to_owned(), format!("unix:{},server=on,wait=off", monitor.display())])
        .build()
        .unwrap();
    let (ctx, log) = context();
    let req = RunRequest::new(&k.bzimage, Reproducer::c(HANG)).budget(Duration::from_secs(300));
    let run = tokio::spawn(async move { runner.run(req, &ctx).await });
    let started = Instant::now();
    while !log.lines().iter().any(|l| l.contains("userspace up")) {
        assert!(started.elapsed() < Duration::from_secs(200), "the VM did not come up: {:?}", log.lines());
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    let answer = qmp_command(&monitor, "stop").await;
    assert!(answer.contains("\"return\""), "{answer}");
    let paused_at = Instant::now();
    let err = tokio::time::timeout(Duration::from_secs(30), run).await.expect("the run ends").unwrap().unwrap_err();
    assert!(matches!(&err, Error::VmStopped { status, .. } if status == "paused"), "{err:?}");
    assert!(paused_at.elapsed() < Duration::from_secs(5), "noticed after {:?}", paused_at.elapsed());
    let needle = work.path().display().to_string();
    assert!(processes_mentioning(&needle).is_empty(), "left running: {:?}", processes_mentioning(&needle));
}
