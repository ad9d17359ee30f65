//! Shared helpers for kgym's integration tests (API skeleton; kgym-build's
//! owner fills in the kernel fixture).
//!
//! - tool discovery that fails loudly in CI (`CI=true`) and skips with a
//!   printed reason elsewhere;
//! - the shared test kernel: built once per checkout with `LocalBuilder`,
//!   cached under `<workspace>/target/kgym-test-cache`, shared by every test
//!   binary (cross-process lock), plus patched variants built on its warm
//!   tree.

use std::path::{Path, PathBuf};

/// The files of a built test kernel.
#[derive(Debug, Clone)]
pub struct KernelFiles {
    /// `arch/x86/boot/bzImage`.
    pub bzimage: PathBuf,
    /// `vmlinux` with debug info.
    pub vmlinux: PathBuf,
    /// The final `.config`.
    pub config: PathBuf,
}

/// `true` when running in CI (`CI=true`): missing tools are failures there.
pub fn in_ci() -> bool {
    std::env::var("CI").is_ok_and(|v| v == "true" || v == "1")
}

/// The workspace root (for shared test data and caches).
pub fn workspace_root() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).parent().map(Path::to_path_buf).unwrap_or_default()
}

/// Finds `name` on `PATH`. Outside CI a missing tool returns `None` after
/// printing why the test is skipped; in CI it panics with a clear message.
pub fn require_tool(name: &str) -> Option<PathBuf> {
    let found = std::env::var_os("PATH")
        .and_then(|paths| std::env::split_paths(&paths).map(|d| d.join(name)).find(|p| p.is_file()));
    if found.is_none() {
        skip_or_fail(&format!("{name} is not installed (run .ci/run or apt-get install it)"));
    }
    found
}

/// Panics in CI, prints a skip notice elsewhere.
pub fn skip_or_fail(reason: &str) {
    assert!(!in_ci(), "required for this test in CI: {reason}");
    eprintln!("SKIPPED (not in CI): {reason}");
}

/// The shared test kernel. Skeleton: reads `KGYM_TEST_KERNEL` (a build
/// directory with `vmlinux`, `.config`, `arch/x86/boot/bzImage`) until the
/// cached LocalBuilder-based fixture lands.
pub async fn test_kernel() -> KernelFiles {
    let dir = PathBuf::from(std::env::var_os("KGYM_TEST_KERNEL").expect("KGYM_TEST_KERNEL is not set"));
    KernelFiles {
        bzimage: dir.join("arch/x86/boot/bzImage"),
        vmlinux: dir.join("vmlinux"),
        config: dir.join(".config"),
    }
}

/// The shared test kernel with `patch` applied, built on the same warm tree
/// and cached by the patch's hash. Skeleton: not available yet.
pub async fn test_kernel_with_patch(patch: &str) -> KernelFiles {
    let _ = patch;
    panic!("test_kernel_with_patch is not available yet (kgym-build's LocalBuilder is being written)")
}
