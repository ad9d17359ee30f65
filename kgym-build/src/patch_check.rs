//! Patch check (kGymSuite's kprebuilder): on a built warm tree, for each
//! candidate patch — apply it, rebuild only the objects built from what it
//! touches (`make kernel/sys.o`; found in kbuild's `.cmd` dependency
//! records: a source's object, the objects that include a header or
//! `#include` a C file — [`patch_plan`](crate::patch_plan)), compare
//! per-function instruction counts before/after from `objdump -d` (GNU's,
//! or `llvm-objdump` on a machine with only the LLVM toolchain), then
//! revert. Each touched file gets a report (compiled, not built in this
//! config, failed); a patch none of whose files is built does not
//! "compile".
//!
//! The tree is left exactly as it was: the original objects (and their
//! `.cmd` files) are moved aside before the rebuild and moved back after
//! the revert, and the reverted sources get their old modification times
//! back, so the next build has nothing to redo. A patch touching anything
//! else (a Makefile, Kconfig) is compiled with a full incremental `make`
//! instead, and the tree is left for make to bring back.

use std::collections::BTreeMap;
use std::hash::{DefaultHasher, Hash, Hasher};
use std::path::{Path, PathBuf};
use std::time::{Instant, SystemTime};

use kgym_core::stage::patch_check::{FileCheck, FileKind, FileOutcome, FunctionChange, PatchVerdict};

use crate::blocking::run_blocking;
use crate::error::{Error, Result};
use crate::kbuild_deps::{self, Dependents};
use crate::log::BuildLog;
use crate::make::{MakeEnv, first_error};
use crate::patch;
use crate::patch_plan::{self, Plan, built_objects, cmd_file};
use crate::process::{self, Limits, find_tool};
use crate::warm_tree::{Busy, WarmTree};

/// One function's code as objdump shows it.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) struct FunctionCode {
    /// Instructions.
    pub instructions: u32,
    /// A digest of the normalized instruction text (addresses removed,
    /// relocation targets kept).
    pub digest: u64,
}

/// Parses `objdump -d -r --no-show-raw-insn` output into per-function code.
pub(crate) fn parse_objdump(text: &str) -> BTreeMap<String, FunctionCode> {
    let mut out = BTreeMap::new();
    let mut current: Option<(String, u32, DefaultHasher)> = None;
    let finish = |cur: Option<(String, u32, DefaultHasher)>, out: &mut BTreeMap<String, FunctionCode>| {
        if let Some((name, n, h)) = cur {
            let mut key = name.clone();
            let mut i = 2;
            while out.contains_key(&key) {
                key = format!("{name}#{i}");
                i += 1;
            }
            out.insert(key, FunctionCode { instructions: n, digest: h.finish() });
        }
    };
    for line in text.lines() {
        if let Some(name) = function_header(line) {
            finish(current.take(), &mut out);
            current = Some((name.to_owned(), 0, DefaultHasher::new()));
            continue;
        }
        if line.starts_with("Disassembly of section") {
            finish(current.take(), &mut out);
            continue;
        }
        let Some((_, n, h)) = current.as_mut() else { continue };
        let trimmed = line.trim_start();
        let Some((addr, rest)) = trimmed.split_once(':') else { continue };
        if addr.is_empty() || !addr.bytes().all(|b| b.is_ascii_hexdigit()) {
            continue;
        }
        let rest = rest.trim();
        if rest.starts_with("R_") {
            // A relocation: which symbol an instruction refers to.
            rest.hash(h);
        } else if !rest.is_empty() {
            *n += 1;
            normalize(rest).hash(h);
        }
    }
    finish(current, &mut out);
    out
}

/// `0000000000000010 <name>:` → `name`.
fn function_header(line: &str) -> Option<&str> {
    let (addr, rest) = line.split_once(' ')?;
    if addr.is_empty() || !addr.bytes().all(|b| b.is_ascii_hexdigit()) {
        return None;
    }
    rest.strip_prefix('<')?.strip_suffix(">:")
}

/// Drops absolute addresses in front of `<symbol+off>` (they move when an
/// earlier function in the section changes size): `cd8 <f+0x1e>` in GNU
/// objdump's output, `0xcd8 <f+0x1e>` in llvm-objdump's.
fn normalize(insn: &str) -> String {
    let words: Vec<&str> = insn.split_whitespace().collect();
    let mut out: Vec<&str> = Vec::with_capacity(words.len());
    for (i, w) in words.iter().enumerate() {
        let next_is_sym = words.get(i + 1).is_some_and(|n| n.starts_with('<'));
        let digits = w.strip_prefix("0x").unwrap_or(w);
        let is_addr = digits.bytes().all(|b| b.is_ascii_hexdigit() || b == b',') && !digits.is_empty();
        if next_is_sym && is_addr {
            continue;
        }
        out.push(w);
    }
    out.join(" ")
}

/// The functions that differ between two dumps of `object`.
pub(crate) fn diff_functions(
    object: &str,
    before: &BTreeMap<String, FunctionCode>,
    after: &BTreeMap<String, FunctionCode>,
) -> Vec<FunctionChange> {
    let mut names: Vec<&String> = before.keys().chain(after.keys()).collect();
    names.sort();
    names.dedup();
    names
        .into_iter()
        .filter_map(|name| {
            let (b, a) = (before.get(name), after.get(name));
            (b != a).then(|| FunctionChange {
                object: object.to_owned(),
                function: name.clone(),
                before: b.map(|c| c.instructions),
                after: a.map(|c| c.instructions),
            })
        })
        .collect()
}

/// The disassembler of patch checks: GNU `objdump`, else `llvm-objdump`
/// (both read x86 ELF objects of gcc and clang, and print the format
/// [`parse_objdump`] reads).
pub(crate) fn disassembler() -> Result<PathBuf> {
    find_tool("objdump")
        .or_else(|| find_tool("llvm-objdump"))
        .ok_or_else(|| Error::MissingTool { tool: "objdump".to_owned() })
}

/// The functions of `object` (relative to `out`) as `disassembler` shows
/// them.
async fn objdump(
    disassembler: &Path,
    out: &Path,
    object: &str,
    limits: &Limits,
) -> Result<BTreeMap<String, FunctionCode>> {
    let mut cmd = process::command(disassembler);
    cmd.args(["-d", "-r", "--no-show-raw-insn"]).arg(object).current_dir(out);
    let done = process::run(cmd, &format!("objdump {object}"), None, limits, None).await?;
    if !done.status.success() {
        return Err(Error::ToolFailed {
            program: format!("objdump -d {object}"),
            status: process::describe(&done.status),
            stderr: done.tail(10),
        });
    }
    Ok(parse_objdump(&done.text()))
}

/// What the check found for each file once make ran: compiled (make
/// rebuilt objects of it), failed (make failed), or nothing built.
fn file_checks(plan: &Plan, built: &[String], rescanned: &Dependents, ok: bool) -> Vec<FileCheck> {
    plan.files
        .iter()
        .map(|fp| {
            // A file nothing read before the patch (new, or newly included)
            // may be read now: kbuild rewrote the records of what it built.
            let objects: Vec<String> = if fp.objects.is_empty() {
                rescanned.of(&fp.file).iter().filter(|o| built.contains(o)).cloned().collect()
            } else {
                fp.objects.clone()
            };
            let outcome = if !ok && fp.builds_something() {
                FileOutcome::Failed
            } else if !ok {
                FileOutcome::NotBuilt
            } else if objects.iter().any(|o| built.contains(o)) || (fp.kind == FileKind::Other && fp.full_build) {
                FileOutcome::Compiled
            } else {
                FileOutcome::NotBuilt
            };
            fp.check(objects, outcome)
        })
        .collect()
}

/// Why nothing was compiled, file by file.
fn nothing_built(checks: &[FileCheck]) -> String {
    let why: Vec<String> = checks
        .iter()
        .map(|c| {
            let what = match (c.kind, c.new) {
                (_, true) => "a new file nothing built reads",
                (FileKind::Header, _) => "a header no built object includes",
                (FileKind::Source, _) => "not built in this config",
                _ => "not part of the build",
            };
            format!("{} ({what})", c.file)
        })
        .collect();
    format!("nothing this patch changes is compiled in this config: {}", why.join(", "))
}

/// Checks one patch on a built tree; leaves the tree as it found it.
pub(crate) async fn check_one(
    tree: &mut WarmTree,
    make: &MakeEnv,
    patch_text: &str,
    limits: &Limits,
    log: &BuildLog,
) -> Result<PatchVerdict> {
    let started = Instant::now();
    let (src, out) = (tree.src(), tree.out());
    let files = patch::touched_files(patch_text);
    let mut verdict = PatchVerdict {
        applies: false,
        compiles: false,
        error: None,
        files: files.clone(),
        functions: Vec::new(),
        file_checks: Vec::new(),
        seconds: 0.0,
    };
    let plan = {
        let (s, o, f) = (src.clone(), out.clone(), files.clone());
        run_blocking("plan patch check", move || Ok(patch_plan::plan(&s, &o, &f))).await?
    };
    for fp in &plan.files {
        let what = match (fp.builds_something(), fp.full_build) {
            (false, _) => "nothing built reads it".to_owned(),
            (true, true) => format!("full build; objects {}", fp.objects.join(" ")),
            (true, false) => format!("objects {}", fp.objects.join(" ")),
        };
        log.step(&format!("{}{}: {what}", fp.file, if fp.new { " (new)" } else { "" }));
    }
    let disassembler = disassembler()?;
    let mut before = BTreeMap::new();
    for obj in &plan.objects {
        before.insert(obj.clone(), objdump(&disassembler, &out, obj, limits).await?);
    }
    let mtimes: Vec<(PathBuf, SystemTime)> = files
        .iter()
        .filter_map(|f| {
            let p = src.join(f);
            std::fs::metadata(&p).and_then(|m| m.modified()).ok().map(|t| (p, t))
        })
        .collect();

    tree.state.busy = Some(Busy::Patching);
    tree.save()?;
    match patch::apply(&src, patch_text, false, limits, log).await {
        Ok(()) => verdict.applies = true,
        Err(Error::PatchDoesNotApply { stderr }) => {
            tree.state.busy = None;
            tree.save()?;
            verdict.file_checks = plan.files.iter().map(|fp| fp.check(Vec::new(), FileOutcome::NotChecked)).collect();
            verdict.error = Some(stderr);
            verdict.seconds = started.elapsed().as_secs_f64();
            return Ok(verdict);
        }
        Err(e) => return Err(e),
    }

    // Move the original objects aside: make rebuilds them, and they come
    // back after the revert.
    let backup = tree.dir.join("patch-check-backup");
    let _ = std::fs::remove_dir_all(&backup);
    let mut moved: Vec<(PathBuf, PathBuf)> = Vec::new();
    if !plan.full_build {
        for (i, obj) in plan.objects.iter().enumerate() {
            for (j, rel) in [obj.clone(), cmd_file(obj)].into_iter().enumerate() {
                let from = out.join(&rel);
                let to = backup.join(format!("{i}-{j}"));
                std::fs::create_dir_all(&backup).map_err(|e| Error::io(&backup, e))?;
                if std::fs::rename(&from, &to).is_ok() {
                    moved.push((from, to));
                }
            }
        }
    }
    let targets: Vec<&str> =
        if plan.full_build { vec!["bzImage"] } else { plan.objects.iter().map(String::as_str).collect() };
    let built = if targets.is_empty() { None } else { Some(make.run(&targets, limits, log).await) };
    let result: Result<()> = async {
        match built {
            None => {
                verdict.file_checks = plan.files.iter().map(|fp| fp.check(Vec::new(), FileOutcome::NotBuilt)).collect();
                verdict.error = Some(nothing_built(&verdict.file_checks));
            }
            Some(Err(e)) => return Err(e),
            Some(Ok(done)) if done.status.success() => {
                let compiled = built_objects(&done.lines);
                let unplaced: Vec<String> =
                    plan.files.iter().filter(|fp| fp.objects.is_empty()).map(|fp| fp.file.clone()).collect();
                let rescanned = if unplaced.is_empty() {
                    Dependents::default()
                } else {
                    let (s, o) = (src.clone(), out.clone());
                    run_blocking("read kbuild's records", move || Ok(kbuild_deps::scan(&s, &o, &unplaced))).await?
                };
                verdict.file_checks = file_checks(&plan, &compiled, &rescanned, true);
                verdict.compiles = verdict.file_checks.iter().any(|c| c.outcome == FileOutcome::Compiled);
                if !verdict.compiles {
                    verdict.error = Some(nothing_built(&verdict.file_checks));
                }
                for obj in &plan.objects {
                    let after = objdump(&disassembler, &out, obj, limits).await?;
                    let empty = BTreeMap::new();
                    verdict.functions.extend(diff_functions(obj, before.get(obj).unwrap_or(&empty), &after));
                }
            }
            Some(Ok(done)) => {
                verdict.file_checks = file_checks(&plan, &[], &Dependents::default(), false);
                let first = first_error(&done.lines);
                verdict.error = Some(match first {
                    Some(f) => format!("{f}\n{}", done.tail(20)),
                    None => done.tail(20),
                });
            }
        }
        Ok(())
    }
    .await;

    // Revert whatever happened above, also after a cancel or timeout (a
    // `git apply -R` takes milliseconds; without it the tree is lost).
    let cleanup = Limits::new(std::time::Duration::from_secs(120), Default::default());
    patch::apply(&src, patch_text, true, &cleanup, log).await?;
    if !plan.full_build {
        for (path, mtime) in &mtimes {
            if let Ok(f) = std::fs::File::options().write(true).open(path) {
                let _ = f.set_modified(*mtime);
            }
        }
        for (orig, saved) in &moved {
            std::fs::rename(saved, orig).map_err(|e| Error::io(orig, e))?;
        }
    } else {
        tree.state.built = false;
    }
    let _ = std::fs::remove_dir_all(&backup);
    tree.state.busy = None;
    tree.save()?;
    result?;
    verdict.seconds = started.elapsed().as_secs_f64();
    Ok(verdict)
}

#[cfg(test)]
mod tests {
    use super::*;

    const DUMP: &str = "
kernel/sys.o:     file format elf64-x86-64


Disassembly of section .text:

0000000000000000 <f>:
   0:\tcall   5 <f+0x5>
\t\t\t1: R_X86_64_PLT32\t__fentry__-0x4
   5:\tmov    $0x1,%eax
   a:\tret

000000000000000b <g>:
   b:\tjmp    10 <g+0x5>
  10:\tret

Disassembly of section .init.text:

0000000000000000 <f>:
   0:\tret
";

    #[test]
    fn parses_functions_and_ignores_addresses() {
        let m = parse_objdump(DUMP);
        assert_eq!(m.keys().collect::<Vec<_>>(), ["f", "f#2", "g"]);
        assert_eq!(m["f"].instructions, 3);
        assert_eq!(m["g"].instructions, 2);

        // g moves (f grew) but is the same code; f changed.
        let shifted = DUMP.replace("   a:\tret\n", "   a:\tnop\n   b:\tret\n").replace(
            "000000000000000b <g>:\n   b:\tjmp    10 <g+0x5>\n  10:\tret",
            "000000000000000c <g>:\n   c:\tjmp    11 <g+0x5>\n  11:\tret",
        );
        let after = parse_objdump(&shifted);
        assert_eq!(after["g"], m["g"]);
        let changes = diff_functions("kernel/sys.o", &m, &after);
        assert_eq!(
            changes,
            vec![FunctionChange {
                object: "kernel/sys.o".into(),
                function: "f".into(),
                before: Some(3),
                after: Some(4)
            }]
        );

        // A different call target with the same length is a change too.
        let retargeted = DUMP.replace("__fentry__-0x4", "other-0x4");
        assert_eq!(diff_functions("o", &m, &parse_objdump(&retargeted)).len(), 1);

        // Added and removed functions.
        let mut fewer = m.clone();
        fewer.remove("g");
        let c = diff_functions("o", &m, &fewer);
        assert_eq!((c[0].before, c[0].after), (Some(2), None));
    }

    /// The same functions as [`DUMP`], as llvm-objdump prints them.
    const LLVM_DUMP: &str = "
kernel/sys.o:\tfile format elf64-x86-64

Disassembly of section .text:

0000000000000000 <f>:
       0:      \tcallq\t0x5 <f+0x5>
\t\t0000000000000001:  R_X86_64_PLT32\t__fentry__-0x4
       5:      \tmovl\t$1, %eax
       a:      \tretq

000000000000000b <g>:
       b:      \tjmp\t0x10 <g+0x5>
      10:      \tretq
";

    #[test]
    fn reads_llvm_objdump_output_too() {
        let m = parse_objdump(LLVM_DUMP);
        assert_eq!(m.keys().collect::<Vec<_>>(), ["f", "g"]);
        assert_eq!((m["f"].instructions, m["g"].instructions), (3, 2));
        let shifted =
            LLVM_DUMP.replace("       a:      \tretq\n", "       a:      \tnop\n       b:      \tretq\n").replace(
                "000000000000000b <g>:\n       b:      \tjmp\t0x10 <g+0x5>\n      10:",
                "000000000000000c <g>:\n       c:      \tjmp\t0x11 <g+0x5>\n      11:",
            );
        let after = parse_objdump(&shifted);
        assert_eq!(after["g"], m["g"], "a moved function is not a changed one");
        let changes = diff_functions("kernel/sys.o", &m, &after);
        assert_eq!(changes.len(), 1);
        assert_eq!((changes[0].function.as_str(), changes[0].before, changes[0].after), ("f", Some(3), Some(4)));
    }

    /// Compiles `source` with `cc` into `dir/name.o`.
    fn compile(cc: &str, dir: &Path, name: &str, source: &str) -> PathBuf {
        let (c, o) = (dir.join(format!("{name}.c")), dir.join(format!("{name}.o")));
        std::fs::write(&c, source).unwrap();
        let st = std::process::Command::new(cc).args(["-O2", "-c", "-o"]).arg(&o).arg(&c).status().unwrap();
        assert!(st.success(), "{cc} failed");
        o
    }

    #[tokio::test]
    async fn both_disassemblers_agree_on_clang_and_gcc_objects() {
        let tools = ["clang", "gcc", "objdump", "llvm-objdump"];
        if !tools.iter().all(|t| kgym_testkit::require_tool(t).is_some()) {
            return;
        }
        let dir = tempfile::tempdir().unwrap();
        let limits = Limits::new(std::time::Duration::from_secs(60), Default::default());
        // g calls f (a relocation) and follows it: f growing moves g.
        let g = "int g(int x) { return f(x) + 1; }\n";
        let base = format!("int k;\n__attribute__((noinline)) int f(int x) {{ return x * 3 + k; }}\n{g}");
        let grown = format!("int k;\n__attribute__((noinline)) int f(int x) {{ k = x; return x * 3 + k / 7; }}\n{g}");
        for cc in ["clang", "gcc"] {
            let mut dumps = Vec::new();
            for dis in ["objdump", "llvm-objdump"] {
                let dis = find_tool(dis).unwrap();
                let before = compile(cc, dir.path(), "before", &base);
                let after = compile(cc, dir.path(), "after", &grown);
                let b = objdump(&dis, dir.path(), before.to_str().unwrap(), &limits).await.unwrap();
                let a = objdump(&dis, dir.path(), after.to_str().unwrap(), &limits).await.unwrap();
                let changed: Vec<String> = diff_functions("o", &b, &a).into_iter().map(|c| c.function).collect();
                assert_eq!(changed, ["f"], "{cc} objects, {}: only f changed", dis.display());
                dumps.push(b.iter().map(|(name, code)| (name.clone(), code.instructions)).collect::<Vec<_>>());
            }
            assert_eq!(dumps[0], dumps[1], "{cc} objects: objdump and llvm-objdump count differently");
        }
    }
}
