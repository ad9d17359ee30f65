//! Helpers shared by kgym-build's integration tests: the builders and build
//! requests of the tests, the warm tree they share, patches of
//! `kernel/sys.c`, and a process check.
#![allow(dead_code, unused_imports)]

use std::path::{Path, PathBuf};
use std::sync::Arc;

use kgym_build::{BuildArgs, BuildContext, BuildOutput, KernelBuilder, LocalBuilder, LocalBuilderConfig};
use kgym_core::MemorySink;
use kgym_core::stage::build::{Arch, BaseConfig, Compiler, KernelConfig, KernelSource, Linker};

pub use kgym_testkit::{KERNEL_TARBALL, scratch_data_dir, test_kernel_available};

/// The data directory of the builder these tests share (its warm trees
/// outlive a test run, like the test kernels).
pub fn builder_dir() -> PathBuf {
    kgym_testkit::test_cache_dir().join("kgym-build")
}

/// Where every builder of these tests keeps extracted tarballs (one
/// extraction for all; trees hard-link it, so it is on the same filesystem
/// as [`scratch_data_dir`]).
pub fn sources_dir() -> PathBuf {
    builder_dir().join("sources")
}

/// The builder the warm-tree tests share (data directory [`builder_dir`]).
pub fn test_builder() -> LocalBuilder {
    LocalBuilder::builder(builder_dir())
        .build()
        .unwrap_or_else(|e| panic!("create the test builder in {}: {e}", builder_dir().display()))
}

/// A builder with its own (scratch) data directory that shares the
/// extracted tarball: a cold build without paying the extraction.
pub fn scratch_builder(data_dir: &Path) -> LocalBuilderConfig {
    LocalBuilder::builder(data_dir).sources_dir(sources_dir())
}

/// Debian's kernel tarball with `tinyconfig` + `fragment`.
pub fn tarball_args(fragment: &str) -> BuildArgs {
    BuildArgs::new(
        KernelSource::tarball(KERNEL_TARBALL),
        KernelConfig::Base { base: BaseConfig::Tinyconfig, fragments: vec![fragment.to_owned()] },
    )
}

/// The request of kgym-testkit's KASAN test kernel (its config, built by
/// kgym-build): ccache holds its objects once the test kernel is built.
pub fn kasan_args() -> BuildArgs {
    tarball_args(kgym_testkit::TEST_KERNEL_FRAGMENT)
}

/// The request of kgym-testkit's minimal kernel for `arch` and `compiler`
/// (clang with lld, i.e. `LLVM=1`).
pub fn minimal_args(arch: Arch, compiler: Compiler) -> BuildArgs {
    let mut args = tarball_args(kgym_testkit::MINIMAL_BOOT_FRAGMENT);
    args.arch = arch;
    args.compiler = compiler;
    if compiler == Compiler::Clang {
        args.linker = Some(Linker::Lld);
    }
    args
}

/// The request whose warm tree the warm-tree tests share: the minimal
/// x86_64 gcc kernel (they test the tree, not KASAN; relinking it takes
/// seconds).
pub fn warm_args() -> BuildArgs {
    minimal_args(Arch::X86_64, Compiler::Gcc)
}

/// Prints kgym's steps and a few lines of a long build, so a waiting test
/// shows life.
#[derive(Debug, Default)]
struct Progress(std::sync::atomic::AtomicUsize);

impl kgym_core::LogSink for Progress {
    fn line(&self, line: &str) {
        let n = self.0.fetch_add(1, std::sync::atomic::Ordering::Relaxed);
        if line.starts_with("kgym:") || n % 500 == 0 {
            eprintln!("[warm tree] {line}");
        }
    }
}

/// Builds `args` unpatched with [`test_builder`] into a scratch folder: on
/// first use this builds the warm tree (cold), later it reverts whatever
/// patch the tree carries. Returns the output (files in `scratch`).
pub async fn warm_base(args: &BuildArgs, scratch: &Path) -> BuildOutput {
    assert!(args.patch.is_none());
    let ctx = BuildContext::new(scratch.join("base")).with_logs(Arc::new(Progress::default()));
    test_builder()
        .build(args, &ctx)
        .await
        .unwrap_or_else(|e| panic!("build the warm base ({}): {}", e.code(), kgym_core::failure::error_chain(&e)))
}

/// A patch that changes the code of `getpid` (stores `marker` in a static
/// variable), so a different marker gives a different object.
pub fn getpid_patch(marker: u32) -> String {
    format!(
        "diff --git a/kernel/sys.c b/kernel/sys.c
--- a/kernel/sys.c
+++ b/kernel/sys.c
@@ -949,8 +949,11 @@
  * This is SMP safe as current->tgid does not change.
  */
 SYSCALL_DEFINE0(getpid)
 {{
+\tstatic int kgym_test_marker;
+
+\tWRITE_ONCE(kgym_test_marker, {marker});
 \treturn task_tgid_vnr(current);
 }}
 
 /* Thread ID - the internal kernel \"pid\" */
"
    )
}

/// A patch that adds the string `kgym-marker-<tag>` to the kernel image.
pub fn marker_patch(tag: &str) -> String {
    format!(
        "diff --git a/kernel/sys.c b/kernel/sys.c
--- a/kernel/sys.c
+++ b/kernel/sys.c
@@ -953,4 +953,6 @@
 \treturn task_tgid_vnr(current);
 }}
 
+static const char kgym_marker[] __used = \"kgym-marker-{tag}\";
+
 /* Thread ID - the internal kernel \"pid\" */
"
    )
}

/// Whether `haystack` contains `needle`.
pub fn contains(haystack: &[u8], needle: &str) -> bool {
    haystack.windows(needle.len()).any(|w| w == needle.as_bytes())
}

/// A patch that applies but does not compile.
pub fn broken_patch() -> String {
    "diff --git a/kernel/sys.c b/kernel/sys.c
--- a/kernel/sys.c
+++ b/kernel/sys.c
@@ -951,5 +951,6 @@
 SYSCALL_DEFINE0(getpid)
 {
+\tthis is not C;
 \treturn task_tgid_vnr(current);
 }
 
"
    .to_owned()
}

/// A patch whose context is not in the file.
pub fn misplaced_patch() -> String {
    "diff --git a/kernel/sys.c b/kernel/sys.c
--- a/kernel/sys.c
+++ b/kernel/sys.c
@@ -951,4 +951,5 @@
 SYSCALL_DEFINE0(getpid_in_another_kernel)
 {
+\treturn 0;
 \treturn task_tgid_vnr(current);
 }
"
    .to_owned()
}

/// The compiled objects that come from the kernel's sources: the x86
/// decompressor (`arch/x86/boot/compressed/misc.o`) is rebuilt after every
/// change of vmlinux (it includes offsets generated from it), in raw make
/// as well.
pub fn source_objects(compiled: &[String]) -> Vec<&str> {
    compiled.iter().map(String::as_str).filter(|o| !o.starts_with("arch/x86/boot/")).collect()
}

/// A log sink whose lines a test can read.
pub fn sink() -> Arc<MemorySink> {
    Arc::new(MemorySink::default())
}

/// Every live process whose command line mentions `needle`.
pub fn processes_mentioning(needle: &str) -> Vec<String> {
    let mut found = Vec::new();
    let me = std::process::id().to_string();
    for entry in std::fs::read_dir("/proc").into_iter().flatten().flatten() {
        let name = entry.file_name().to_string_lossy().into_owned();
        if !name.bytes().all(|b| b.is_ascii_digit()) || name == me {
            continue;
        }
        let Ok(raw) = std::fs::read(entry.path().join("cmdline")) else { continue };
        let cmdline = String::from_utf8_lossy(&raw).replace('\0', " ");
        // Zombies have an empty command line; they are already dead.
        if cmdline.contains(needle) {
            found.push(format!("{name}: {cmdline}"));
        }
    }
    found
}

/// A comment added to `include/linux/getcpu.h`, which (in the minimal
/// config) `kernel/sys.o` and the vDSO's `vgetcpu.o` include.
pub const HEADER_PATCH: &str = "diff --git a/include/linux/getcpu.h b/include/linux/getcpu.h
--- a/include/linux/getcpu.h
+++ b/include/linux/getcpu.h
@@ -1,6 +1,8 @@
 /* SPDX-License-Identifier: GPL-2.0 */
 #ifndef _LINUX_GETCPU_H
 #define _LINUX_GETCPU_H 1
 
+/* kgym: a header change */
+
 /* Cache for getcpu() to speed it up. Results might be a short time
    out of date, but will be faster.
";

/// A change to `kernel/kexec.c`, which tinyconfig does not build.
pub const UNBUILT_C_PATCH: &str = "diff --git a/kernel/kexec.c b/kernel/kexec.c
--- a/kernel/kexec.c
+++ b/kernel/kexec.c
@@ -1,5 +1,6 @@
 // SPDX-License-Identifier: GPL-2.0-only
+/* kgym: a change to a file this config does not build */
 /*
  * kexec.c - kexec_load system call
  * Copyright (C) 2002-2004 Eric Biederman  <ebiederm@xmission.com>
  */
";

/// A new C file no Makefile names.
pub const NEW_FILE_PATCH: &str = "diff --git a/kernel/kgym_new.c b/kernel/kgym_new.c
new file mode 100644
--- /dev/null
+++ b/kernel/kgym_new.c
@@ -0,0 +1,2 @@
+// SPDX-License-Identifier: GPL-2.0
+int kgym_new_file;
";

/// [`NEW_FILE_PATCH`] with the Makefile line that builds it.
pub const NEW_FILE_BUILT_PATCH: &str = "diff --git a/kernel/kgym_new.c b/kernel/kgym_new.c
new file mode 100644
--- /dev/null
+++ b/kernel/kgym_new.c
@@ -0,0 +1,2 @@
+// SPDX-License-Identifier: GPL-2.0
+int kgym_new_file;
diff --git a/kernel/Makefile b/kernel/Makefile
--- a/kernel/Makefile
+++ b/kernel/Makefile
@@ -15,6 +15,7 @@
 obj-$(CONFIG_USERMODE_DRIVER) += usermode_driver.o
 obj-$(CONFIG_MODULES) += kmod.o
 obj-$(CONFIG_MULTIUSER) += groups.o
+obj-y += kgym_new.o
 
 ifdef CONFIG_FUNCTION_TRACER
 # Do not trace internal ftrace files
";

/// A change to `include/linux/nvme.h`, which nothing in the minimal
/// config includes.
pub const UNINCLUDED_HEADER_PATCH: &str = "diff --git a/include/linux/nvme.h b/include/linux/nvme.h
--- a/include/linux/nvme.h
+++ b/include/linux/nvme.h
@@ -1,5 +1,6 @@
 /* SPDX-License-Identifier: GPL-2.0 */
+/* kgym: a header nothing built includes */
 /*
  * Definitions for the NVM Express interface
  * Copyright (c) 2011-2014, Intel Corporation.
  */
";

/// A change to `kernel/sched/rt.c`, which has no object of its own: it is
/// compiled inside `kernel/sched/build_policy.c` (`#include "rt.c"`).
pub const INCLUDED_C_PATCH: &str = "diff --git a/kernel/sched/rt.c b/kernel/sched/rt.c
--- a/kernel/sched/rt.c
+++ b/kernel/sched/rt.c
@@ -1,5 +1,6 @@
 // SPDX-License-Identifier: GPL-2.0
+/* kgym: rt.c is compiled inside build_policy.c */
 /*
  * Real-Time Scheduling Class (mapped to the SCHED_FIFO and SCHED_RR
  * policies)
  */
";
