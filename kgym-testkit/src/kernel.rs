//! The shared test kernels, built with plain `make` (not kgym-build, whose
//! own tests use them: no dependency cycle, and a test of the builder never
//! rests on the builder).
//!
//! Debian's kernel tarball is extracted once; each kernel (arch, compiler,
//! config fragment) gets a build tree: a hard-link copy of the extraction
//! with the build directory inside it (`src/.kgym-out`), configured with
//! `make tinyconfig`, the fragment appended, `make olddefconfig`, then
//! `make -jN bzImage vmlinux` through ccache. Patched variants are built
//! incrementally on the same tree: the patch is applied with `git apply`
//! (which replaces files instead of writing through the hard links), the
//! kernel rebuilt, its files copied out, and the patch reverted. Every
//! kernel's files are copied to `<cache>/kernels/<id>/` and never touched
//! again. File locks make all of this safe across test processes.
//!
//! The make invocation has the same shape as kgym-build's (relative build
//! directory, `-ffile-prefix-map` flags, `CCACHE_BASEDIR` at the tree,
//! fixed build timestamp/user/host): objects are path-independent and
//! ccache entries are shared with kgym-build's own builds of the same
//! configs. Nothing here depends on that for correctness.

use std::path::{Path, PathBuf};
use std::time::{Duration, UNIX_EPOCH};

use kgym_proc::{FileLock, Limits, RunOptions};
use sha2::{Digest, Sha256};

use crate::{KERNEL_TARBALL, KernelFiles, test_cache_dir, test_kernel_available};

/// Bumped when the way a kernel is built changes: old trees and kernels
/// are not reused.
const FORMAT: &str = "kgym-testkit make v1";

/// The build directory inside each tree's source directory (kbuild then
/// uses relative paths: `srctree` is `..`).
const OUT_DIR: &str = ".kgym-out";

/// Time limits of the steps.
const EXTRACT_LIMIT: Duration = Duration::from_secs(15 * 60);
const CONFIG_LIMIT: Duration = Duration::from_secs(10 * 60);
const BUILD_LIMIT: Duration = Duration::from_secs(90 * 60);
const PATCH_LIMIT: Duration = Duration::from_secs(2 * 60);

/// The programs `make LLVM=1` uses besides clang (the top Makefile's `LD`,
/// `AR`, `NM`, `OBJCOPY`, `OBJDUMP`, `READELF`, `STRIP`).
pub const LLVM_BINUTILS: [&str; 7] =
    ["ld.lld", "llvm-ar", "llvm-nm", "llvm-objcopy", "llvm-objdump", "llvm-readelf", "llvm-strip"];

/// The architecture of a test kernel.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum Arch {
    /// 64-bit x86 (`ARCH=x86_64`).
    X86_64,
    /// 32-bit x86 (`ARCH=i386`).
    I386,
}

impl Arch {
    /// The kernel's `ARCH=` value.
    pub fn make_arch(self) -> &'static str {
        match self {
            Self::X86_64 => "x86_64",
            Self::I386 => "i386",
        }
    }
}

/// The compiler of a test kernel.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum Compiler {
    /// gcc with GNU binutils.
    Gcc,
    /// clang with `LLVM=1` (lld and the LLVM binutils).
    Clang,
}

impl Compiler {
    fn program(self) -> &'static str {
        match self {
            Self::Gcc => "gcc",
            Self::Clang => "clang",
        }
    }
}

/// What a test kernel is: arch, compiler and the config fragment applied on
/// `tinyconfig`.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct KernelSpec {
    /// The architecture.
    pub arch: Arch,
    /// The compiler.
    pub compiler: Compiler,
    /// Appended to `tinyconfig`'s `.config` before `olddefconfig`.
    pub fragment: String,
}

fn short_hash(parts: &[&str]) -> String {
    let mut h = Sha256::new();
    for p in parts {
        h.update(p.as_bytes());
        h.update([0]);
    }
    hex::encode(&h.finalize()[..8])
}

/// The tarball's identity: its path, size and modification time.
fn tarball_identity() -> String {
    let meta = std::fs::metadata(KERNEL_TARBALL).unwrap_or_else(|e| panic!("read {KERNEL_TARBALL}: {e}"));
    let mtime = meta.modified().ok().and_then(|t| t.duration_since(UNIX_EPOCH).ok()).unwrap_or_default();
    short_hash(&[KERNEL_TARBALL, &meta.len().to_string(), &mtime.as_nanos().to_string()])
}

impl KernelSpec {
    /// A short description for messages (the fragment by its hash).
    pub fn describe(&self) -> String {
        format!("{:?} {:?}, fragment {}", self.arch, self.compiler, short_hash(&[&self.fragment]))
    }

    /// The id of its tree (and of its unpatched kernel).
    fn id(&self) -> String {
        short_hash(&[FORMAT, &tarball_identity(), self.arch.make_arch(), self.compiler.program(), &self.fragment])
    }
}

fn root() -> PathBuf {
    test_cache_dir().join("testkit")
}

fn io_panic(what: &str, path: &Path, e: impl std::fmt::Display) -> ! {
    panic!("{what} {}: {e}", path.display())
}

/// Runs `cmd`, printing a little of its output, and panics with its output
/// tail when it fails.
async fn run(cmd: tokio::process::Command, what: &str, limit: Duration, log: &Path) {
    let log_file = std::sync::Mutex::new(
        std::fs::OpenOptions::new().create(true).append(true).open(log).unwrap_or_else(|e| io_panic("open", log, e)),
    );
    let lines = std::sync::atomic::AtomicUsize::new(0);
    let on_line = |line: &str| {
        use std::io::Write;
        if let Ok(mut f) = log_file.lock() {
            let _ = writeln!(f, "{line}");
        }
        if lines.fetch_add(1, std::sync::atomic::Ordering::Relaxed) % 500 == 0 {
            eprintln!("[test kernel] {line}");
        }
    };
    let limits = Limits::new(limit, Default::default());
    let opts = RunOptions { on_line: Some(&on_line), ..RunOptions::default() };
    let done = kgym_proc::run_lines(cmd, what, &limits, opts)
        .await
        .unwrap_or_else(|e| panic!("{what}: {e} (log: {})", log.display()));
    assert!(done.status.success(), "{what}: {}\n{}\n(log: {})", done.status, done.tail(40), log.display());
}

/// The pristine source tree: the tarball extracted once.
async fn pristine_source() -> PathBuf {
    let id = tarball_identity();
    let dir = root().join(format!("source-{id}"));
    let done = root().join(format!("source-{id}.done"));
    if done.is_file() {
        return dir;
    }
    let _lock = FileLock::acquire(&root().join(format!("source-{id}.lock")), &Default::default())
        .await
        .unwrap_or_else(|e| panic!("lock the source extraction: {e}"));
    if done.is_file() {
        return dir;
    }
    let tmp = root().join(format!("source-{id}.tmp"));
    for stale in [&tmp, &dir] {
        let _ = std::fs::remove_dir_all(stale);
    }
    std::fs::create_dir_all(&tmp).unwrap_or_else(|e| io_panic("create", &tmp, e));
    eprintln!("[test kernel] extracting {KERNEL_TARBALL}");
    let mut tar = kgym_proc::tree_command("tar");
    tar.arg("-xf").arg(KERNEL_TARBALL).arg("-C").arg(&tmp);
    run(tar, "extract the kernel tarball", EXTRACT_LIMIT, &root().join("extract.log")).await;
    // Debian's tarball holds one directory, linux-source-6.1/.
    let mut entries: Vec<PathBuf> =
        std::fs::read_dir(&tmp).unwrap_or_else(|e| io_panic("read", &tmp, e)).flatten().map(|e| e.path()).collect();
    let top = if entries.len() == 1 && entries[0].is_dir() { entries.remove(0) } else { tmp.clone() };
    std::fs::rename(&top, &dir).unwrap_or_else(|e| io_panic("rename to", &dir, e));
    let _ = std::fs::remove_dir_all(&tmp);
    std::fs::write(&done, "").unwrap_or_else(|e| io_panic("write", &done, e));
    dir
}

/// One kernel's build tree (locked while this value lives).
struct Tree {
    spec: KernelSpec,
    dir: PathBuf,
    _lock: FileLock,
}

impl Tree {
    fn src(&self) -> PathBuf {
        self.dir.join("src")
    }

    fn out(&self) -> PathBuf {
        self.src().join(OUT_DIR)
    }

    fn log(&self) -> PathBuf {
        self.dir.join("build.log")
    }

    /// A patch left applied by a test process that died mid-build.
    fn applied_patch(&self) -> PathBuf {
        self.dir.join("applied.patch")
    }

    /// Present while make runs: a test process that died mid-make (make
    /// killed with it) may have left half-written objects.
    fn making(&self) -> PathBuf {
        self.dir.join("making")
    }

    /// Removes build products written since `since`: a half-written object
    /// newer than its source would pass for up to date.
    fn remove_products_since(&self, since: std::time::SystemTime) -> usize {
        let mut removed = 0;
        let mut stack = vec![self.out()];
        while let Some(dir) = stack.pop() {
            let Ok(entries) = std::fs::read_dir(&dir) else { continue };
            for e in entries.flatten() {
                let Ok(meta) = e.path().symlink_metadata() else { continue };
                if meta.is_dir() {
                    stack.push(e.path());
                    continue;
                }
                let name = e.file_name().to_string_lossy().into_owned();
                let product = [".o", ".a", ".ko", ".bin", ".elf"].iter().any(|ext| name.ends_with(ext))
                    || ["vmlinux", "bzImage", "System.map"].contains(&name.as_str());
                if product && meta.modified().is_ok_and(|m| m >= since) && std::fs::remove_file(e.path()).is_ok() {
                    removed += 1;
                }
            }
        }
        removed
    }

    /// `make` in this tree for `targets`, shaped like kgym-build's.
    fn make(&self, targets: &[&str]) -> tokio::process::Command {
        let (src, out) = (self.src(), self.out());
        let cc = self.spec.compiler.program();
        let maps = format!(
            "-ffile-prefix-map={}/= -ffile-prefix-map={}=. -ffile-prefix-map=../=",
            src.display(),
            out.display()
        );
        let mut cmd = kgym_proc::tree_command("make");
        for var in ["ARCH", "CROSS_COMPILE", "KCFLAGS", "KBUILD_OUTPUT", "LLVM", "MAKEFLAGS", "MFLAGS", "MAKELEVEL"] {
            cmd.env_remove(var);
        }
        let jobs = std::thread::available_parallelism().map_or(1, |n| n.get());
        cmd.arg("-C").arg(&src).arg(format!("O={}", out.display())).arg(format!("-j{jobs}"));
        cmd.arg(format!("ARCH={}", self.spec.arch.make_arch()));
        match kgym_proc::find_tool("ccache") {
            Some(ccache) => {
                cmd.arg(format!("CC={} {cc}", ccache.display())).arg(format!("HOSTCC={} {cc}", ccache.display()));
                cmd.env("CCACHE_BASEDIR", &self.dir).env("CCACHE_NOHASHDIR", "1");
            }
            None => {
                cmd.arg(format!("CC={cc}")).arg(format!("HOSTCC={cc}"));
            }
        }
        if self.spec.compiler == Compiler::Clang {
            cmd.arg("LLVM=1");
        }
        cmd.arg(format!("KCFLAGS={maps}")).arg(format!("KAFLAGS={maps}")).args(targets);
        cmd.env("KBUILD_BUILD_TIMESTAMP", "Sat Jan  1 00:00:00 UTC 2000")
            .env("KBUILD_BUILD_USER", "kgym")
            .env("KBUILD_BUILD_HOST", "kgym")
            .env("KBUILD_BUILD_VERSION", "1")
            .env("SOURCE_DATE_EPOCH", "946684800")
            .env("LC_ALL", "C")
            .env("TZ", "UTC")
            .env("GIT_CEILING_DIRECTORIES", &self.dir)
            .current_dir(&src);
        cmd
    }

    /// `git apply` (or, `reverse`, `git apply -R`) of `patch` on the
    /// sources; the exit status says whether it applied.
    async fn git_apply(&self, patch: &Path, reverse: bool) -> bool {
        let mut git = kgym_proc::command("git");
        git.args(["apply", "--whitespace=nowarn"]);
        if reverse {
            git.arg("-R");
        }
        git.arg(patch).current_dir(self.src()).env("GIT_CEILING_DIRECTORIES", &self.dir);
        let limits = Limits::new(PATCH_LIMIT, Default::default());
        match kgym_proc::run_lines(git, "git apply", &limits, RunOptions::default()).await {
            Ok(done) if done.status.success() => true,
            Ok(done) => {
                eprintln!("[test kernel] git apply{} failed: {}", if reverse { " -R" } else { "" }, done.tail(10));
                false
            }
            Err(e) => panic!("git apply: {e}"),
        }
    }

    /// Makes the tree a configured, unpatched copy of the sources.
    async fn prepare(&self) {
        let configured = self.dir.join("configured");
        let leftover = self.applied_patch();
        if leftover.is_file() && configured.is_file() {
            eprintln!("[test kernel] reverting a patch left applied in {}", self.dir.display());
            if self.git_apply(&leftover, true).await {
                let _ = std::fs::remove_file(&leftover);
            } else {
                let _ = std::fs::remove_file(&configured);
            }
        }
        if let Ok(since) = std::fs::metadata(self.making()).and_then(|m| m.modified()) {
            let removed = self.remove_products_since(since);
            eprintln!("[test kernel] an earlier make was interrupted; removed {removed} possibly partial objects");
            let _ = std::fs::remove_file(self.making());
        }
        if configured.is_file() {
            return;
        }
        let pristine = pristine_source().await;
        eprintln!("[test kernel] configuring {} in {}", self.spec.describe(), self.dir.display());
        let _ = std::fs::remove_dir_all(self.dir.join("src"));
        let _ = std::fs::remove_file(&leftover);
        let _ = std::fs::remove_file(self.log());
        let mut cp = kgym_proc::command("cp");
        cp.arg("-al").arg(&pristine).arg(self.src());
        run(cp, "hard-link the kernel sources", EXTRACT_LIMIT, &self.log()).await;
        std::fs::create_dir_all(self.out()).unwrap_or_else(|e| io_panic("create", &self.out(), e));
        run(self.make(&["tinyconfig"]), "make tinyconfig", CONFIG_LIMIT, &self.log()).await;
        let dot_config = self.out().join(".config");
        let mut text = std::fs::read_to_string(&dot_config).unwrap_or_else(|e| io_panic("read", &dot_config, e));
        text.push('\n');
        text.push_str(&self.spec.fragment);
        text.push('\n');
        std::fs::write(&dot_config, text).unwrap_or_else(|e| io_panic("write", &dot_config, e));
        run(self.make(&["olddefconfig"]), "make olddefconfig", CONFIG_LIMIT, &self.log()).await;
        std::fs::write(&configured, "").unwrap_or_else(|e| io_panic("write", &configured, e));
    }

    /// Builds and copies the kernel's files into `dest` (atomically).
    async fn build_into(&self, dest: &Path) -> KernelFiles {
        std::fs::write(self.making(), "").unwrap_or_else(|e| io_panic("write", &self.making(), e));
        run(self.make(&["bzImage", "vmlinux"]), "make bzImage vmlinux", BUILD_LIMIT, &self.log()).await;
        let _ = std::fs::remove_file(self.making());
        let tmp = dest.with_extension("tmp");
        let _ = std::fs::remove_dir_all(&tmp);
        std::fs::create_dir_all(&tmp).unwrap_or_else(|e| io_panic("create", &tmp, e));
        let files = KernelFiles::in_dir(&tmp);
        let out = self.out();
        for (from, to) in
            [("arch/x86/boot/bzImage", &files.bzimage), ("vmlinux", &files.vmlinux), (".config", &files.config)]
        {
            std::fs::copy(out.join(from), to).unwrap_or_else(|e| io_panic("copy", &out.join(from), e));
        }
        std::fs::write(tmp.join("spec"), format!("{:#?}\n", self.spec)).unwrap_or_else(|e| io_panic("write", &tmp, e));
        let _ = std::fs::remove_dir_all(dest);
        std::fs::rename(&tmp, dest).unwrap_or_else(|e| io_panic("rename to", dest, e));
        KernelFiles::in_dir(dest)
    }
}

fn kernel_id(spec: &KernelSpec, patch: Option<&str>) -> String {
    match patch {
        Some(p) => format!("{}-patch-{}", spec.id(), short_hash(&[p])),
        None => spec.id(),
    }
}

fn present(f: &KernelFiles) -> bool {
    f.bzimage.is_file() && f.vmlinux.is_file() && f.config.is_file()
}

/// The files of the kernel `spec` (with `patch`) if they are already in the
/// cache; never builds.
pub fn already_built(spec: &KernelSpec, patch: Option<&str>) -> Option<KernelFiles> {
    std::path::Path::new(KERNEL_TARBALL).is_file().then_some(())?;
    let files = KernelFiles::in_dir(&test_cache_dir().join("kernels").join(kernel_id(spec, patch)));
    present(&files).then_some(files)
}

/// The files of the kernel `spec` with `patch` applied (if any): built on
/// first use (once, whatever the number of test processes asking), then
/// read from the cache.
pub async fn cached_kernel(spec: &KernelSpec, patch: Option<&str>) -> KernelFiles {
    assert!(
        test_kernel_available(),
        "the test kernel cannot be built here (see the SKIPPED line above); check test_kernel_available() first"
    );
    let id = spec.id();
    let kernel_id = kernel_id(spec, patch);
    let dest = test_cache_dir().join("kernels").join(&kernel_id);
    let files = KernelFiles::in_dir(&dest);
    if present(&files) {
        return files;
    }
    let dir = root().join("trees").join(&id);
    let lock = FileLock::acquire(&dir.with_extension("lock"), &Default::default())
        .await
        .unwrap_or_else(|e| panic!("lock the test kernel tree {}: {e}", dir.display()));
    if present(&files) {
        return files;
    }
    std::fs::create_dir_all(&dir).unwrap_or_else(|e| io_panic("create", &dir, e));
    let tree = Tree { spec: spec.clone(), dir, _lock: lock };
    let started = std::time::Instant::now();
    eprintln!("[test kernel] building {kernel_id} ({}; a cold build takes minutes)", spec.describe());
    tree.prepare().await;
    let files = match patch {
        None => tree.build_into(&dest).await,
        Some(p) => {
            let patch_file = tree.applied_patch();
            let mut text = p.to_owned();
            if !text.ends_with('\n') {
                text.push('\n');
            }
            std::fs::write(&patch_file, text).unwrap_or_else(|e| io_panic("write", &patch_file, e));
            assert!(tree.git_apply(&patch_file, false).await, "the patch does not apply to the test kernel");
            let files = tree.build_into(&dest).await;
            assert!(tree.git_apply(&patch_file, true).await, "the patch does not revert");
            std::fs::remove_file(&patch_file).unwrap_or_else(|e| io_panic("remove", &patch_file, e));
            files
        }
    };
    eprintln!("[test kernel] {kernel_id} built in {:.0}s", started.elapsed().as_secs_f64());
    files
}
