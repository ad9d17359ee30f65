//! A kernel built by clang (`LLVM=1`: lld and the LLVM binutils) boots to
//! userspace and runs a reproducer: kgym-testkit's minimal x86_64 kernel,
//! shared with kgym-build's clang tests.

mod common;

use std::time::Duration;

use common::{context, have_tools, runner_in};
use kgym_core::stage::reproduce::{ImageAbility, Reproducer};
use kgym_testkit::{Arch, Compiler};
use kgym_vm::outcome::BootEnd;
use kgym_vm::{RunRequest, VmRunner};

/// Prints a marker and exits (the runner starts it again until the budget
/// ends).
const HELLO: &str =
    "#include <stdio.h>\nint main(void) { printf(\"kgym-clang: hello from userspace\\n\"); return 0; }\n";

#[tokio::test]
async fn a_clang_built_kernel_boots_and_runs_a_reproducer() {
    if !have_tools() || !kgym_testkit::clang_toolchain_available() {
        return;
    }
    let k = kgym_testkit::minimal_kernel(Arch::X86_64, Compiler::Clang).await;
    let config = std::fs::read_to_string(&k.config).unwrap();
    assert!(config.lines().any(|l| l == "CONFIG_CC_IS_CLANG=y"), "not a clang kernel");
    assert!(config.lines().any(|l| l == "CONFIG_LD_IS_LLD=y"), "not linked by lld");

    let work = tempfile::tempdir().unwrap();
    let runner = runner_in(work.path()).build().unwrap();
    let (ctx, progress) = context();
    let budget = Duration::from_secs(10);
    let req = RunRequest::new(&k.bzimage, Reproducer::c(HELLO)).vmlinux(&k.vmlinux).budget(budget);
    let out = runner.run(req, &ctx).await.unwrap();

    assert!(!out.crashed && out.crashes.is_empty(), "crashed: {:?}", out.crashes);
    assert_eq!(out.title, None);
    assert_eq!(out.message, "No crash reproduced");
    assert_eq!(out.image_ability, ImageAbility::Normal);
    assert_eq!(out.boots.len(), 1);
    let boot = &out.boots[0];
    assert_eq!(boot.end, BootEnd::BudgetEnded, "progress: {:?}", progress.lines());
    assert!(boot.userspace_after.is_some(), "userspace never came up");
    let log = String::from_utf8_lossy(&boot.log);
    // The kernel's banner names its compiler and linker.
    let banner = log.lines().find(|l| l.contains("Linux version")).unwrap_or_default();
    assert!(banner.contains("clang version") && banner.contains("LLD"), "banner: {banner}\n{log}");
    assert!(log.contains("kgym-clang: hello from userspace"), "the reproducer did not run: {log}");
    assert!(out.seconds >= budget.as_secs_f64(), "{}", out.seconds);
    eprintln!(
        "clang kernel: userspace after {:.1}s, run {:.1}s",
        boot.userspace_after.unwrap_or_default(),
        out.seconds
    );
}
