//! What a patch check rebuilds for each file a patch touches, from what
//! kbuild recorded about the built tree ([`kbuild_deps`]): a C or assembly
//! file's object (or the object that `#include`s it), the objects that
//! include a header, a full build for build files (Makefile, Kconfig,
//! linker scripts) — and nothing, said so, for a file nothing built reads.

use std::path::Path;

use kgym_core::stage::patch_check::{FileCheck, FileKind, FileOutcome};

use crate::kbuild_deps::{self, Dependents};

/// Directories whose objects x86 builds through its own sub-make (bzImage's
/// decompressor, the real-mode trampoline): kbuild's single-target builds
/// (`make kernel/sys.o`) do not reach them, so they are rebuilt by a full
/// build.
const NOT_SINGLE_TARGETS: [&str; 2] = ["arch/x86/boot/", "arch/x86/realmode/rm/"];

/// The plan for one touched file.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(crate) struct FilePlan {
    /// The file, as the patch names it.
    pub file: String,
    /// What it is.
    pub kind: FileKind,
    /// The patch creates it (it is not in the tree yet).
    pub new: bool,
    /// The built kernel objects that read it (to rebuild and compare).
    pub objects: Vec<String>,
    /// Checking it takes a full build: a build file, or products a
    /// single-target build cannot make.
    pub full_build: bool,
}

impl FilePlan {
    /// Whether anything is built for this file.
    pub fn builds_something(&self) -> bool {
        self.full_build || !self.objects.is_empty()
    }

    /// The report of this file with `outcome`.
    pub fn check(&self, objects: Vec<String>, outcome: FileOutcome) -> FileCheck {
        FileCheck { file: self.file.clone(), kind: self.kind, new: self.new, objects, outcome }
    }
}

/// What to rebuild for a patch.
#[derive(Debug, Default, PartialEq, Eq)]
pub(crate) struct Plan {
    /// Objects (relative to the build directory) to rebuild and compare,
    /// without duplicates.
    pub objects: Vec<String>,
    /// Something needs a full build (`make bzImage`).
    pub full_build: bool,
    /// One entry per touched file, in the patch's order.
    pub files: Vec<FilePlan>,
}

/// What `file` is to the build.
pub(crate) fn kind_of(file: &str) -> FileKind {
    if file.ends_with(".lds.S") {
        FileKind::Other
    } else if [".c", ".S", ".s"].iter().any(|e| file.ends_with(e)) {
        FileKind::Source
    } else if file.ends_with(".h") {
        FileKind::Header
    } else {
        FileKind::Other
    }
}

/// Whether a change to `file` can change the build itself (so it is
/// checked with a full build even when no product records reading it).
fn is_build_file(file: &str) -> bool {
    let name = file.rsplit('/').next().unwrap_or(file);
    matches!(name, "Makefile" | "Kbuild")
        || name.starts_with("Kconfig")
        || name.ends_with(".mk")
        || name.ends_with(".lds.S")
        || file.starts_with("scripts/")
}

fn single_target(product: &str) -> bool {
    product.ends_with(".o") && !NOT_SINGLE_TARGETS.iter().any(|d| product.starts_with(d))
}

/// The plan of one file from what reads it.
fn plan_file(src: &Path, file: &str, products: &[String]) -> FilePlan {
    let kind = kind_of(file);
    let objects: Vec<String> = products.iter().filter(|p| single_target(p)).cloned().collect();
    let full_build = products.iter().any(|p| !single_target(p)) || (kind == FileKind::Other && is_build_file(file));
    FilePlan { file: file.to_owned(), kind, new: !src.join(file).exists(), objects, full_build }
}

/// Plans the check of a patch touching `files`, on the built tree `src`
/// (build directory `out`). Blocking (reads kbuild's records).
pub(crate) fn plan(src: &Path, out: &Path, files: &[String]) -> Plan {
    let deps = kbuild_deps::scan(src, out, files);
    plan_with(src, files, &deps)
}

fn plan_with(src: &Path, files: &[String], deps: &Dependents) -> Plan {
    let mut plan = Plan::default();
    for f in files {
        let fp = plan_file(src, f, deps.of(f));
        plan.full_build |= fp.full_build;
        for o in &fp.objects {
            if !plan.objects.contains(o) {
                plan.objects.push(o.clone());
            }
        }
        plan.files.push(fp);
    }
    plan
}

/// kbuild's command file of an object: `kernel/.sys.o.cmd`.
pub(crate) fn cmd_file(object: &str) -> String {
    match object.rsplit_once('/') {
        Some((dir, name)) => format!("{dir}/.{name}.cmd"),
        None => format!(".{object}.cmd"),
    }
}

/// The objects make reported building (`  CC      kernel/sys.o`, `  AS
/// arch/x86/entry/entry_64.o`).
pub(crate) fn built_objects(lines: &[String]) -> Vec<String> {
    lines
        .iter()
        .filter_map(|l| {
            let mut words = l.split_whitespace();
            if !matches!(words.next(), Some("CC" | "AS")) {
                return None;
            }
            let mut target = words.next()?;
            if target == "[M]" {
                target = words.next()?;
            }
            (target.ends_with(".o") && words.next().is_none()).then(|| target.to_owned())
        })
        .collect()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn plans_objects_headers_build_files_and_nothing() {
        let dir = tempfile::tempdir().unwrap();
        let src = dir.path();
        for f in ["kernel/sys.c", "include/linux/x.h", "kernel/Makefile", "Documentation/x.rst", "mm/absent.c"] {
            std::fs::create_dir_all(src.join(f).parent().unwrap()).unwrap();
            std::fs::write(src.join(f), "").unwrap();
        }
        let mut deps = Dependents::default();
        deps.by_file.insert("kernel/sys.c".into(), vec!["kernel/sys.o".into()]);
        deps.by_file.insert(
            "include/linux/x.h".into(),
            vec!["arch/x86/boot/compressed/misc.o".into(), "kernel/fork.o".into(), "kernel/sys.o".into()],
        );
        let files: Vec<String> =
            ["kernel/sys.c", "include/linux/x.h", "mm/absent.c", "mm/new.c", "Documentation/x.rst"]
                .iter()
                .map(|s| (*s).to_owned())
                .collect();
        let p = plan_with(src, &files, &deps);
        assert_eq!(p.objects, ["kernel/sys.o", "kernel/fork.o"]);
        assert!(p.full_build, "the decompressor's object needs a full build");
        assert_eq!(p.files[0].objects, ["kernel/sys.o"]);
        assert_eq!((p.files[1].kind, p.files[1].full_build), (FileKind::Header, true));
        assert_eq!(p.files[1].objects, ["kernel/fork.o", "kernel/sys.o"]);
        for (fp, new) in [(&p.files[2], false), (&p.files[3], true), (&p.files[4], false)] {
            assert!(!fp.builds_something(), "{fp:?}");
            assert_eq!(fp.new, new, "{fp:?}");
        }
        let only_sys = plan_with(src, &files[..1], &deps);
        assert_eq!((only_sys.objects.len(), only_sys.full_build), (1, false));
        let makefile = plan_with(src, &["kernel/Makefile".to_owned()], &deps);
        assert!(makefile.full_build && makefile.objects.is_empty());
        assert_eq!(kind_of("arch/x86/kernel/vmlinux.lds.S"), FileKind::Other);
        assert_eq!(kind_of("arch/x86/entry/entry_64.S"), FileKind::Source);
        assert_eq!(cmd_file("kernel/sys.o"), "kernel/.sys.o.cmd");
        assert_eq!(cmd_file("x.o"), ".x.o.cmd");
    }

    #[test]
    fn reads_built_objects() {
        let lines: Vec<String> =
            ["  CC      kernel/sys.o", "  AS      arch/x86/entry/entry_64.o", "  LD      vmlinux", "  CC [M]  m.o"]
                .iter()
                .map(|s| (*s).to_owned())
                .collect();
        assert_eq!(built_objects(&lines), ["kernel/sys.o", "arch/x86/entry/entry_64.o", "m.o"]);
    }
}
