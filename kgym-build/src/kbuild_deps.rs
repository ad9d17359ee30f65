//! What kbuild's dependency records say: for every kernel build product
//! (`kernel/sys.o`, `arch/x86/kernel/vmlinux.lds`), the source it was made
//! from and every file it read (headers, `#include`d C files), from the
//! `.<target>.cmd` files the kernel build writes next to each product
//! (`source_<target> := ../kernel/sys.c`, `deps_<target> := \` + one file
//! per line, `fixdep`'s rewrite of gcc's `-MMD` `.d` file).
//!
//! Host programs (`scripts/`, `tools/`, `arch/x86/tools/relocs`, ...) are
//! left out: they are not part of the kernel, and are told apart by their
//! compile command, which lacks `-D__KERNEL__`.

use std::collections::{BTreeMap, BTreeSet};
use std::path::Path;

/// A product's name relative to the build directory, e.g. `kernel/sys.o`.
pub(crate) type Target = String;

/// Which kernel build products read each of a set of source files.
#[derive(Debug, Default, PartialEq, Eq)]
pub(crate) struct Dependents {
    /// Source file (relative to the source tree, as a patch names it) →
    /// the products that read it, sorted.
    pub by_file: BTreeMap<String, Vec<Target>>,
}

impl Dependents {
    /// The products that read `file` (none when nothing built does).
    pub fn of(&self, file: &str) -> &[Target] {
        self.by_file.get(file).map_or(&[], Vec::as_slice)
    }
}

/// The source-tree file a dependency line names, if it is one: kbuild
/// writes `../kernel/sys.c` (build directory inside the source tree), the
/// absolute path (other layouts), or a path relative to the build directory
/// for generated files (`include/generated/...`).
fn source_path<'a>(dep: &'a str, src_prefix: &str) -> &'a str {
    dep.strip_prefix("../").or_else(|| dep.strip_prefix(src_prefix)).unwrap_or(dep)
}

/// Reads one `.cmd` file: `(kernel product, files it read)`, or `None` for
/// a host program or a file without dependency lists.
fn read_cmd(text: &str, target: &str, src_prefix: &str) -> Option<Vec<String>> {
    let mut lines = text.lines();
    let command = lines.next()?;
    // `cmd_x :=` in 6.1, `savedcmd_x :=` since 6.3.
    if !(command.starts_with("cmd_") || command.starts_with("savedcmd_")) || !command.contains("-D__KERNEL__") {
        return None;
    }
    let mut files = Vec::new();
    let mut in_deps = false;
    for line in lines {
        if let Some(source) = line.strip_prefix(&format!("source_{target} := ")) {
            files.push(source_path(source.trim(), src_prefix).to_owned());
        } else if line.starts_with(&format!("deps_{target} :=")) {
            in_deps = true;
        } else if in_deps {
            let trimmed = line.trim();
            let dep = trimmed.trim_end_matches('\\').trim();
            // `$(wildcard include/config/...)`: config dependencies, not files.
            if !dep.is_empty() && !dep.starts_with("$(") {
                files.push(source_path(dep, src_prefix).to_owned());
            }
            in_deps = trimmed.ends_with('\\');
        }
    }
    Some(files)
}

/// Scans the build directory `out` (of the source tree `src`) for the
/// kernel products that read any of `files`. Blocking: walks the whole
/// build directory (tens of MB of `.cmd` text for a big config).
pub(crate) fn scan(src: &Path, out: &Path, files: &[String]) -> Dependents {
    let wanted: BTreeSet<&str> = files.iter().map(String::as_str).collect();
    let src_prefix = format!("{}/", src.display());
    let mut by_file: BTreeMap<String, Vec<Target>> = BTreeMap::new();
    let mut stack = vec![out.to_owned()];
    while let Some(dir) = stack.pop() {
        let Ok(entries) = std::fs::read_dir(&dir) else { continue };
        for e in entries.flatten() {
            let name = e.file_name().to_string_lossy().into_owned();
            let Ok(kind) = e.file_type() else { continue };
            if kind.is_dir() {
                // Host tools only (a shortcut: their commands would be
                // skipped anyway); `source` is kbuild's link to the sources.
                let top_level_host = dir == out && matches!(name.as_str(), "scripts" | "tools" | "source");
                if !top_level_host {
                    stack.push(e.path());
                }
                continue;
            }
            let Some(product) = name.strip_prefix('.').and_then(|n| n.strip_suffix(".cmd")) else { continue };
            let rel_dir = dir.strip_prefix(out).unwrap_or(Path::new(""));
            let target = rel_dir.join(product).to_string_lossy().into_owned();
            let Ok(text) = std::fs::read_to_string(e.path()) else { continue };
            let Some(read) = read_cmd(&text, &target, &src_prefix) else { continue };
            for file in read {
                if wanted.contains(file.as_str()) {
                    let list = by_file.entry(file).or_default();
                    if !list.contains(&target) {
                        list.push(target.clone());
                    }
                }
            }
        }
    }
    for list in by_file.values_mut() {
        list.sort();
    }
    Dependents { by_file }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn cmd(target: &str, kernel: bool, source: &str, deps: &[&str]) -> String {
        let define = if kernel { "-D__KERNEL__ " } else { "" };
        let mut text =
            format!("cmd_{target} := gcc {define}-c -o {target} {source}\n\nsource_{target} := {source}\n\n");
        text.push_str(&format!("deps_{target} := \\\n"));
        for d in deps {
            text.push_str(&format!("  {d} \\\n"));
        }
        text.push_str(&format!("\n{target}: $(deps_{target})\n\n$(deps_{target}):\n"));
        text
    }

    #[test]
    fn finds_sources_headers_and_included_c_files_of_kernel_products_only() {
        let dir = tempfile::tempdir().unwrap();
        let (src, out) = (dir.path().join("src"), dir.path().join("src/.out"));
        let write = |rel: &str, text: String| {
            let p = out.join(rel);
            std::fs::create_dir_all(p.parent().unwrap()).unwrap();
            std::fs::write(p, text).unwrap();
        };
        write(
            "kernel/.sys.o.cmd",
            cmd(
                "kernel/sys.o",
                true,
                "../kernel/sys.c",
                &["../include/linux/x.h", "$(wildcard include/config/SMP)", "include/generated/autoconf.h"],
            ),
        );
        write(
            "kernel/sched/.build_policy.o.cmd",
            cmd(
                "kernel/sched/build_policy.o",
                true,
                "../kernel/sched/build_policy.c",
                &["../kernel/sched/rt.c", "../include/linux/x.h"],
            ),
        );
        let abs = format!("{}/include/linux/y.h", src.display());
        write(
            "arch/x86/kernel/.vmlinux.lds.cmd",
            cmd("arch/x86/kernel/vmlinux.lds", true, "../arch/x86/kernel/vmlinux.lds.S", &[&abs]),
        );
        // A host program reading the same header, inside and outside scripts/.
        write(
            "arch/x86/tools/.relocs_64.o.cmd",
            cmd("arch/x86/tools/relocs_64.o", false, "../arch/x86/tools/relocs_64.c", &["../include/linux/x.h"]),
        );
        write("scripts/.fixdep.o.cmd", cmd("scripts/fixdep.o", true, "../scripts/fixdep.c", &["../include/linux/x.h"]));

        let files: Vec<String> = [
            "kernel/sys.c",
            "include/linux/x.h",
            "include/linux/y.h",
            "kernel/sched/rt.c",
            "include/generated/autoconf.h",
            "mm/absent.c",
            "include/config/SMP",
        ]
        .iter()
        .map(|s| (*s).to_owned())
        .collect();
        let d = scan(&src, &out, &files);
        assert_eq!(d.of("kernel/sys.c"), ["kernel/sys.o"]);
        assert_eq!(d.of("include/linux/x.h"), ["kernel/sched/build_policy.o", "kernel/sys.o"]);
        assert_eq!(d.of("include/linux/y.h"), ["arch/x86/kernel/vmlinux.lds"]);
        assert_eq!(d.of("kernel/sched/rt.c"), ["kernel/sched/build_policy.o"], "an #included C file");
        assert_eq!(d.of("include/generated/autoconf.h"), ["kernel/sys.o"]);
        assert!(d.of("mm/absent.c").is_empty() && d.of("include/config/SMP").is_empty());
    }
}
