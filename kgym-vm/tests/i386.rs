//! i386 guests, for real: a minimal 32-bit kernel (kgym-testkit's
//! `minimal_kernel(Arch::I386, Gcc)`: tinyconfig + minimal-boot.frag,
//! `ARCH=i386`) boots the generated initramfs with the 32-bit busybox found
//! by the default lookup, in `qemu-system-i386`, and runs C reproducers
//! compiled `-m32 -static -pthread`. A crash through `/proc/sysrq-trigger`
//! gets the report parser's title; a harmless program runs until the budget
//! ends; a 64-bit busybox or a kernel of the other arch is refused before
//! QEMU starts.

mod common;

use std::path::Path;
use std::time::Duration;

use common::*;
use kgym_core::stage::build::Arch;
use kgym_core::stage::reproduce::{Accel, CrashKind, ImageAbility, Reproducer};
use kgym_testkit::KernelFiles;
use kgym_vm::outcome::BootEnd;
use kgym_vm::{BUSYBOX_I386, Error, QemuRunner, RunRequest, VmRunner};

/// What the generated init prints when userspace is up.
const USERSPACE_MARKER: &str = "KGYM-USERSPACE-READY";

/// Says what it runs on (a 32-bit userspace prints `4-byte pointers`),
/// then crashes the kernel from a second thread (so `-pthread` is used for
/// real) by writing `c` to `/proc/sysrq-trigger`.
const SYSRQ_CRASH: &str = r#"#include <errno.h>
#include <fcntl.h>
#include <linux/futex.h>
#include <pthread.h>
#include <stdio.h>
#include <sys/syscall.h>
#include <sys/utsname.h>
#include <unistd.h>

static void *crash(void *arg) {
    int fd = open("/proc/sysrq-trigger", O_WRONLY);
    if (fd < 0) {
        perror("kgym-i386: open /proc/sysrq-trigger");
        return arg;
    }
    write(fd, "c", 1);
    perror("kgym-i386: the kernel survived sysrq-c");
    return arg;
}

int main(void) {
    struct utsname u;
    pthread_t t;
    int word = 0;
    long woken;
    uname(&u);
    printf("kgym-i386: %s kernel, %zu-byte pointers\n", u.machine, sizeof(void *));
    /* glibc's untimed futex waits (contended locks) use this 32-bit-time
       futex, which a kernel without CONFIG_COMPAT_32BIT_TIME lacks. */
    woken = syscall(SYS_futex, &word, FUTEX_WAKE, 1, NULL, NULL, 0);
    printf("kgym-i386: futex %ld errno %d\n", woken, woken < 0 ? errno : 0);
    fflush(stdout);
    pthread_create(&t, NULL, crash, NULL);
    pthread_join(t, NULL);
    return 1;
}
"#;

/// Prints and exits.
const HARMLESS: &str = r#"#include <stdio.h>
int main(void) {
    printf("kgym-i386: harmless run, %zu-byte pointers\n", sizeof(void *));
    return 0;
}
"#;

/// The title kgym-report gives a `sysrq-c` panic on 6.1.
const SYSRQ_TITLE: &str = "kernel panic: sysrq triggered crash";

/// Whether this machine can boot i386 guests (in CI a missing piece fails).
fn have_i386_tools() -> bool {
    let tools = ["qemu-system-i386", "gcc"].iter().all(|t| kgym_testkit::require_tool(t).is_some());
    if !Path::new(BUSYBOX_I386).is_file() {
        kgym_testkit::skip_or_fail(&format!("{BUSYBOX_I386} is missing (run scripts/setup.sh)"));
        return false;
    }
    tools && kgym_testkit::test_kernel_available()
}

async fn i386_kernel() -> KernelFiles {
    kgym_testkit::minimal_kernel(kgym_testkit::Arch::I386, kgym_testkit::Compiler::Gcc).await
}

#[tokio::test]
async fn the_minimal_i386_kernel_is_32_bit() {
    if !have_i386_tools() {
        return;
    }
    let k = i386_kernel().await;
    let config = std::fs::read_to_string(&k.config).unwrap();
    assert!(config.lines().any(|l| l == "CONFIG_X86_32=y"), "not a 32-bit kernel: {}", k.config.display());
    assert!(!config.lines().any(|l| l == "CONFIG_X86_64=y"));
    // The futex glibc's 32-bit locks wait on (see minimal-boot.frag).
    assert!(config.lines().any(|l| l == "CONFIG_COMPAT_32BIT_TIME=y"), "{}", k.config.display());
    // The boot header says so too: that is how `kgym reproduce` picks the arch.
    assert_eq!(kgym_vm::detect_arch(&k.bzimage).unwrap(), Some(Arch::I386));
}

#[tokio::test]
async fn sysrq_crash_in_a_32_bit_userspace() {
    if !have_i386_tools() {
        return;
    }
    let k = i386_kernel().await;
    let work = tempfile::tempdir().unwrap();
    // Default busybox lookup: the i386 guest gets the 32-bit one.
    let runner = runner_in(work.path()).build().unwrap();
    assert_eq!(runner.busybox(Arch::I386).unwrap(), Path::new(BUSYBOX_I386));
    let (ctx, log) = context();
    let req = RunRequest::new(&k.bzimage, Reproducer::c(SYSRQ_CRASH)).arch(Arch::I386).budget(Duration::from_secs(120));
    let out = runner.run(req, &ctx).await.unwrap();
    let console = out.boots.first().map(|b| String::from_utf8_lossy(&b.log).into_owned()).unwrap_or_default();
    eprintln!(
        "i386 sysrq run: {:.1}s, userspace after {:?}s, {:?} ({})",
        out.seconds,
        out.boots.first().and_then(|b| b.userspace_after),
        out.accel,
        out.accel_reason
    );
    assert!(out.crashed, "no crash; progress: {:?}\nconsole: {console}", log.lines());
    assert_eq!(out.title.as_deref(), Some(SYSRQ_TITLE), "crashes: {:?}\nconsole: {console}", out.crashes);
    assert_eq!(out.message, "Crashes");
    assert_eq!(out.crashes[0].kind, CrashKind::Crash);
    assert_eq!(out.image_ability, ImageAbility::Normal);
    assert!(matches!(out.accel, Accel::Kvm | Accel::Tcg));
    assert!(!out.accel_reason.is_empty());
    assert!(log.lines().iter().any(|l| l.starts_with("accelerator: ")), "{:?}", log.lines());
    // One boot (first crash stops the run), which reached the 32-bit
    // userspace and ran the reproducer there.
    assert_eq!(out.boots.len(), 1);
    assert!(out.boots[0].userspace_after.is_some());
    assert!(console.contains(USERSPACE_MARKER), "{console}");
    assert!(console.contains("kernel, 4-byte pointers"), "the 32-bit reproducer did not run: {console}");
    // The kernel has the 32-bit-time futex glibc's i386 locks wait on.
    assert!(console.contains("kgym-i386: futex 0 errno 0"), "{console}");
    assert!(console.contains("sysrq: Trigger a crash"), "{console}");
    assert!(std::fs::read_dir(work.path()).unwrap().next().is_none(), "temporary files left behind");
}

#[tokio::test]
async fn a_harmless_program_runs_until_the_budget_ends() {
    if !have_i386_tools() {
        return;
    }
    let k = i386_kernel().await;
    let work = tempfile::tempdir().unwrap();
    let runner = runner_in(work.path()).build().unwrap();
    let (ctx, log) = context();
    let budget = Duration::from_secs(15);
    let req = RunRequest::new(&k.bzimage, Reproducer::c(HARMLESS)).arch(Arch::I386).budget(budget);
    let out = runner.run(req, &ctx).await.unwrap();
    assert!(!out.crashed, "crashed: {:?}", out.crashes);
    assert_eq!(out.title, None, "progress: {:?}", log.lines());
    assert_eq!(out.message, "No crash reproduced");
    assert_eq!(out.image_ability, ImageAbility::Normal);
    assert_eq!(out.boots.len(), 1);
    assert_eq!(out.boots[0].end, BootEnd::BudgetEnded);
    let console = String::from_utf8_lossy(&out.boots[0].log);
    // init runs it again after each exit.
    assert!(console.matches("kgym-i386: harmless run, 4-byte pointers").count() >= 2, "{console}");
    assert!(out.seconds >= budget.as_secs_f64());
}

#[tokio::test]
async fn a_64_bit_busybox_is_refused_before_qemu_starts() {
    if !have_i386_tools() {
        return;
    }
    let Some(host_busybox) = kgym_testkit::require_tool("busybox") else { return };
    let host_busybox = std::fs::canonicalize(host_busybox).unwrap();
    let plain = QemuRunner::builder().busybox(&host_busybox).build().unwrap();
    assert_eq!(plain.busybox(Arch::X86_64).unwrap(), host_busybox, "fine for an x86_64 guest");
    let k = i386_kernel().await;
    let work = tempfile::tempdir().unwrap();
    // A QEMU that does not exist: had the run got as far as starting one,
    // the error would be about it.
    let runner = runner_in(work.path())
        .qemu_i386(work.path().join("no-qemu-system-i386"))
        .busybox_for(Arch::I386, &host_busybox)
        .build()
        .unwrap();
    let (ctx, log) = context();
    let req = RunRequest::new(&k.bzimage, Reproducer::c(HARMLESS)).arch(Arch::I386).budget(Duration::from_secs(15));
    let err = runner.run(req, &ctx).await.unwrap_err();
    let msg = err.to_string();
    match &err {
        Error::GuestBinaryArch { what, path, found, guest, .. } => {
            assert_eq!(
                (what.as_str(), path, found.as_str(), *guest),
                ("busybox", &host_busybox, "an x86_64 binary", Arch::I386)
            );
        }
        other => panic!("expected GuestBinaryArch, got {other:?}"),
    }
    assert!(
        msg.contains(&format!(
            "{} is an x86_64 binary; an i386 guest needs a static 32-bit busybox: run scripts/setup.sh, which \
             installs one at {BUSYBOX_I386}",
            host_busybox.display()
        )),
        "{msg}"
    );
    assert!(log.lines().is_empty(), "nothing should have been prepared: {:?}", log.lines());
    assert!(std::fs::read_dir(work.path()).unwrap().next().is_none(), "temporary files left behind");
}

#[tokio::test]
async fn an_i386_kernel_run_as_x86_64_is_refused() {
    if !have_i386_tools() {
        return;
    }
    let k = i386_kernel().await;
    let work = tempfile::tempdir().unwrap();
    let runner = runner_in(work.path()).build().unwrap();
    let (ctx, _log) = context();
    // RunRequest::new defaults to x86_64.
    let req = RunRequest::new(&k.bzimage, Reproducer::c(HARMLESS)).budget(Duration::from_secs(15));
    let err = runner.run(req, &ctx).await.unwrap_err();
    assert!(matches!(err, Error::InvalidRequest { .. }), "{err:?}");
    let msg = err.to_string();
    assert!(msg.contains("is an i386 kernel") && msg.contains("run is for x86_64 guests"), "{msg}");
}
