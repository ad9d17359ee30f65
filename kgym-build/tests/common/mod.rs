//! Helpers shared by kgym-build's integration tests: patches of the test
//! kernel's `kernel/sys.c`, and a process check.
#![allow(dead_code)]

use std::sync::Arc;

use kgym_core::MemorySink;

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
