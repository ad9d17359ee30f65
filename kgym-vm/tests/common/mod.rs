//! Shared helpers of kgym-vm's integration tests: the test kernels (built
//! by kgym-testkit from Debian's linux-source-6.1, with and without the
//! injected bug), the reproducers of testdata/bugs, a runner per test.
#![allow(dead_code)]

pub mod image;

use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::time::Duration;

use kgym_core::MemorySink;
use kgym_testkit::KernelFiles;
use kgym_vm::{QemuRunner, QemuRunnerBuilder, RunContext};

/// The syzkaller title the injected bug must get (6.1's KASAN says
/// `use-after-free`; `slab-use-after-free` came with 6.4).
pub const BUG_TITLE: &str = "KASAN: use-after-free Read in kgym_note_store";

pub fn bugs_dir() -> PathBuf {
    kgym_testkit::workspace_root().join("testdata/bugs")
}

pub fn read_bug_file(name: &str) -> String {
    let p = bugs_dir().join(name);
    std::fs::read_to_string(&p).unwrap_or_else(|e| panic!("read {}: {e}", p.display()))
}

/// Whether the machine can run these tests (QEMU, busybox, gcc, and what
/// building the test kernels needs); in CI a missing tool fails the test.
pub fn have_tools() -> bool {
    let tools = ["qemu-system-x86_64", "busybox", "gcc", "nm", "addr2line"];
    tools.iter().all(|t| kgym_testkit::require_tool(t).is_some())
        && (std::env::var_os("KGYM_VM_BUG_KERNEL").is_some() || kgym_testkit::test_kernel_available())
}

fn kernel_from_env(var: &str) -> Option<KernelFiles> {
    // Local iteration only: a prebuilt kernel directory instead of the
    // testkit build (CI leaves these unset and builds everything).
    let dir = PathBuf::from(std::env::var_os(var)?);
    Some(KernelFiles {
        bzimage: dir.join("arch/x86/boot/bzImage"),
        vmlinux: dir.join("vmlinux"),
        config: dir.join(".config"),
    })
}

/// The test kernel with testdata/bugs/bug.patch applied.
pub async fn bug_kernel() -> KernelFiles {
    if let Some(k) = kernel_from_env("KGYM_VM_BUG_KERNEL") {
        return k;
    }
    kgym_testkit::test_kernel_with_patch(&read_bug_file("bug.patch")).await
}

/// The test kernel with the bug and its fix (testdata/bugs/fixed.patch).
pub async fn fixed_kernel() -> KernelFiles {
    if let Some(k) = kernel_from_env("KGYM_VM_FIXED_KERNEL") {
        return k;
    }
    kgym_testkit::test_kernel_with_patch(&read_bug_file("fixed.patch")).await
}

/// The plain test kernel.
pub async fn plain_kernel() -> KernelFiles {
    if let Some(k) = kernel_from_env("KGYM_VM_PLAIN_KERNEL") {
        return k;
    }
    kgym_testkit::test_kernel().await
}

/// A runner whose temporary files go under `work` (so a test can check
/// they are removed), with the accelerator decision cached under target/.
pub fn runner_in(work: &Path) -> QemuRunnerBuilder {
    QemuRunner::builder()
        .work_dir(work)
        .accel_cache(Some(kgym_testkit::workspace_root().join("target/kgym-test-cache/accel.json")))
        .accel_probe_timeout(Duration::from_secs(10))
}

/// A context whose progress lines are kept.
pub fn context() -> (RunContext, Arc<MemorySink>) {
    let sink = Arc::new(MemorySink::default());
    (RunContext::new().with_log(sink.clone()), sink)
}

/// Every live process whose command line mentions `needle`.
pub fn processes_mentioning(needle: &str) -> Vec<String> {
    let mut found = Vec::new();
    let Ok(entries) = std::fs::read_dir("/proc") else { return found };
    for e in entries.flatten() {
        let name = e.file_name();
        let Some(pid) = name.to_str().filter(|s| s.chars().all(|c| c.is_ascii_digit())) else { continue };
        let Ok(cmd) = std::fs::read(format!("/proc/{pid}/cmdline")) else { continue };
        let cmd = String::from_utf8_lossy(&cmd).replace('\0', " ");
        let zombie = std::fs::read_to_string(format!("/proc/{pid}/stat"))
            .is_ok_and(|s| s.rsplit(')').next().is_some_and(|r| r.trim_start().starts_with('Z')));
        if cmd.contains(needle) && !zombie {
            found.push(format!("{pid}: {cmd}"));
        }
    }
    found
}
