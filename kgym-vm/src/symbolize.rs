//! Report symbolization: `func+0xoff/0xsize` frames get `file:line` from
//! `vmlinux`, with inlined callers spelled out the way syzkaller does
//! (`inlined_fn kernel/sys.c:2707 [inline]`).
//!
//! Uses binutils' `nm` (symbol table, once per vmlinux) and `addr2line`
//! (once per report, all frames in one call).

use std::collections::HashMap;
use std::path::{Path, PathBuf};
use std::sync::LazyLock;
use std::time::Duration;

use regex::Regex;
use tokio_util::sync::CancellationToken;

use crate::error::Result;
use crate::process;
use crate::report::Report;

/// Top-level directories of the kernel tree, to cut host-specific prefixes
/// off source paths.
const KERNEL_TOP_DIRS: &[&str] = &[
    "arch", "block", "certs", "crypto", "drivers", "fs", "include", "init", "io_uring", "ipc", "kernel", "lib", "mm",
    "net", "rust", "samples", "security", "sound", "tools", "usr", "virt",
];

static FRAME_LINE: LazyLock<Regex> = LazyLock::new(|| {
    Regex::new(
        r"^(?P<pre>\s*(?:\?\s+)?|.*RIP: [0-9a-f]{4}:)(?P<func>[A-Za-z_][A-Za-z0-9_.$]*)\+0x(?P<off>[0-9a-f]+)/0x(?P<size>[0-9a-f]+)(?P<module>\s+\[[^\]]+\])?\s*$",
    )
    .unwrap_or_else(|e| panic!("frame regex: {e}"))
});

/// One source position of a program counter (innermost inline first).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct SourcePos {
    /// The function.
    pub function: String,
    /// `file:line`, relative to the kernel tree.
    pub location: String,
}

/// A loaded `vmlinux` symbol table.
#[derive(Debug, Clone)]
pub struct Symbolizer {
    vmlinux: PathBuf,
    addr2line: PathBuf,
    /// name → (address, size) of every text symbol with that name.
    symbols: HashMap<String, Vec<(u64, u64)>>,
    source_root: Option<String>,
}

impl Symbolizer {
    /// Reads `vmlinux`'s symbol table with `nm`.
    pub async fn load(vmlinux: &Path, cancel: &CancellationToken) -> Result<Self> {
        let nm = process::require_program("nm", "install binutils")?;
        let addr2line = process::require_program("addr2line", "install binutils")?;
        let mut cmd = process::command(nm);
        cmd.arg("-S").arg(vmlinux);
        let out = process::run_checked(cmd, "nm", Duration::from_secs(120), cancel).await?;
        let symbols = parse_nm(&String::from_utf8_lossy(&out.stdout));
        Ok(Self { vmlinux: vmlinux.to_owned(), addr2line, symbols, source_root: None })
    }

    /// The address of `function` whose size is `size` (static functions may
    /// share a name), or the only one with that name.
    pub fn address(&self, function: &str, size: Option<u64>) -> Option<u64> {
        let cands = self.symbols.get(function)?;
        size.and_then(|s| cands.iter().find(|(_, sz)| *sz == s))
            .or_else(|| (cands.len() == 1).then(|| &cands[0]))
            .map(|(a, _)| *a)
    }

    /// Source positions of `pcs` (one list per pc, innermost inline first).
    pub async fn lookup(&mut self, pcs: &[u64], cancel: &CancellationToken) -> Result<Vec<Vec<SourcePos>>> {
        if pcs.is_empty() {
            return Ok(Vec::new());
        }
        let mut cmd = process::command(&self.addr2line);
        cmd.arg("-e").arg(&self.vmlinux).args(["-a", "-f", "-i"]);
        cmd.args(pcs.iter().map(|pc| format!("{pc:#x}")));
        let out = process::run_checked(cmd, "addr2line", Duration::from_secs(120), cancel).await?;
        let text = String::from_utf8_lossy(&out.stdout);
        if self.source_root.is_none() {
            self.source_root = text.lines().find(|l| l.starts_with('/')).and_then(find_source_root);
        }
        Ok(parse_addr2line(&text, pcs.len(), self.source_root.as_deref()))
    }

    /// Adds `file:line` to every frame of `report` (its text and its
    /// [`frames`](Report::frames)), then names its
    /// [`guilty_file`](Report::guilty_file) again from those positions.
    /// Frames of modules and unknown symbols are left as they are.
    pub async fn symbolize(&mut self, report: &mut Report, cancel: &CancellationToken) -> Result<()> {
        struct LineFrame {
            line: usize,
            pc: u64,
        }
        let lines: Vec<String> = report.text.lines().map(str::to_owned).collect();
        let mut found = Vec::new();
        for (i, l) in lines.iter().enumerate() {
            let Some(c) = FRAME_LINE.captures(l) else { continue };
            if c.name("module").is_some() {
                continue;
            }
            let (Ok(off), Ok(size)) = (u64::from_str_radix(&c["off"], 16), u64::from_str_radix(&c["size"], 16)) else {
                continue;
            };
            let Some(base) = self.address(&c["func"], Some(size)) else { continue };
            // A stack frame's offset is a return address: the call is the
            // byte before. A RIP is exact.
            let pc = if c["pre"].contains("RIP:") || off == 0 { base + off } else { base + off - 1 };
            found.push(LineFrame { line: i, pc });
        }
        let pcs: Vec<u64> = found.iter().map(|f| f.pc).collect();
        let positions = self.lookup(&pcs, cancel).await?;
        let mut at_line: HashMap<usize, &Vec<SourcePos>> = HashMap::new();
        for (f, pos) in found.iter().zip(&positions) {
            at_line.insert(f.line, pos);
        }
        let mut out = String::with_capacity(report.text.len() * 2);
        // The context lines before the crash line grow too: keep the
        // boundary (the guilty file is looked for after it).
        let (mut old_pos, mut context_len) = (0, None);
        for (i, l) in lines.iter().enumerate() {
            if old_pos >= report.context_len && context_len.is_none() {
                context_len = Some(out.len());
            }
            old_pos += l.len() + 1;
            match at_line.get(&i) {
                Some(pos) if !pos.is_empty() => {
                    let indent: String = l.chars().take_while(|c| c.is_whitespace()).collect();
                    let (outer, inlined) = pos.split_last().unwrap_or((&pos[0], &[]));
                    for p in inlined {
                        out.push_str(&format!("{indent}{} {} [inline]\n", p.function, p.location));
                    }
                    out.push_str(&format!("{} {}\n", l.trim_end(), outer.location));
                }
                _ => {
                    out.push_str(l);
                    out.push('\n');
                }
            }
        }
        report.context_len = context_len.unwrap_or(out.len());
        report.text = out;
        // The parser's frames: same lookup by name and offset.
        let mut frame_pcs = Vec::new();
        let mut which = Vec::new();
        for (i, f) in report.frames.iter().enumerate() {
            if f.module.is_some() || f.location.is_some() {
                continue;
            }
            if let (Some(base), Some(off)) = (self.address(&f.function, f.size), f.offset) {
                frame_pcs.push(if off == 0 { base } else { base + off - 1 });
                which.push(i);
            }
        }
        let positions = self.lookup(&frame_pcs, cancel).await?;
        for (i, pos) in which.into_iter().zip(positions) {
            let frame = &mut report.frames[i];
            frame.location =
                pos.iter().find(|p| p.function == frame.function).or_else(|| pos.last()).map(|p| p.location.clone());
        }
        // Positions are what syzkaller blames files by.
        report.refresh_guilty_file();
        Ok(())
    }
}

fn parse_nm(text: &str) -> HashMap<String, Vec<(u64, u64)>> {
    let mut map: HashMap<String, Vec<(u64, u64)>> = HashMap::new();
    for line in text.lines() {
        let parts: Vec<&str> = line.split_whitespace().collect();
        let (addr, size, kind, name) = match parts.as_slice() {
            [a, s, k, n] => (*a, *s, *k, *n),
            _ => continue,
        };
        if !matches!(kind, "t" | "T" | "w" | "W") {
            continue;
        }
        if let (Ok(a), Ok(s)) = (u64::from_str_radix(addr, 16), u64::from_str_radix(size, 16)) {
            map.entry(name.to_owned()).or_default().push((a, s));
        }
    }
    map
}

/// The kernel tree containing `path` (an absolute source path from the
/// debug info): the nearest ancestor holding `Kconfig` and `MAINTAINERS`.
fn find_source_root(path: &str) -> Option<String> {
    let p = Path::new(path.split_whitespace().next()?.rsplit_once(':')?.0);
    p.ancestors()
        .skip(1)
        .find(|d| d.join("Kconfig").is_file() && d.join("MAINTAINERS").is_file())
        .map(|d| format!("{}/", d.display()))
}

/// `path` relative to the kernel tree: cut at `root` when known, else at
/// the first top-level kernel directory. A relative path (an in-tree build
/// records `./kernel/sys.c`) is cleaned as syzkaller cleans it
/// (`kernel/sys.c`): its guilty-file rules match from the path's start.
pub fn kernel_relative(path: &str, root: Option<&str>) -> String {
    if let Some(rest) = root.and_then(|r| path.strip_prefix(r)) {
        return rest.to_owned();
    }
    if !path.starts_with('/') {
        return path_clean::clean(path).to_string_lossy().into_owned();
    }
    let mut best: Option<usize> = None;
    for d in KERNEL_TOP_DIRS {
        if let Some(i) = path.find(&format!("/{d}/")) {
            best = Some(best.map_or(i, |b| b.min(i)));
        }
    }
    best.map_or_else(|| path.to_owned(), |i| path[i + 1..].to_owned())
}

fn parse_addr2line(text: &str, count: usize, root: Option<&str>) -> Vec<Vec<SourcePos>> {
    let mut out: Vec<Vec<SourcePos>> = Vec::with_capacity(count);
    let mut lines = text.lines().peekable();
    while let Some(l) = lines.next() {
        if l.starts_with("0x") {
            out.push(Vec::new());
            continue;
        }
        let Some(cur) = out.last_mut() else { continue };
        let Some(loc) = lines.next() else { break };
        if l == "??" || loc.starts_with("??") {
            continue;
        }
        // "file:line (discriminator N)" → "file:line"
        let loc = loc.split(" (").next().unwrap_or(loc);
        cur.push(SourcePos { function: l.to_owned(), location: kernel_relative(loc, root) });
    }
    out.resize_with(count, Vec::new);
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn paths_become_kernel_relative() {
        assert_eq!(kernel_relative("/work/kernels/src/linux-6.1/kernel/sys.c:2420", None), "kernel/sys.c:2420");
        assert_eq!(kernel_relative("/home/u/linux/arch/x86/kernel/traps.c:10", None), "arch/x86/kernel/traps.c:10");
        assert_eq!(kernel_relative("/x/y/kernel/fs/a.c:1", Some("/x/y/kernel/")), "fs/a.c:1");
        assert_eq!(kernel_relative("mm/slub.c:3", None), "mm/slub.c:3");
        assert_eq!(kernel_relative("./lib/dump_stack.c:91", None), "lib/dump_stack.c:91");
    }

    #[test]
    fn addr2line_output_with_inlines_parses() {
        let text = "0xffffffff8106395d\nkgym_note_store\n/s/linux/kernel/sys.c:2420 (discriminator 2)\n\
                    0xffffffff81067d10\n__do_sys_prctl\n/s/linux/kernel/sys.c:2707\n__x64_sys_prctl\n/s/linux/kernel/sys.c:2426\n\
                    0xffffffff00000000\n??\n??:0\n";
        let p = parse_addr2line(text, 3, None);
        assert_eq!(p[0], vec![SourcePos { function: "kgym_note_store".into(), location: "kernel/sys.c:2420".into() }]);
        assert_eq!(p[1].len(), 2);
        assert_eq!(p[1][1].function, "__x64_sys_prctl");
        assert!(p[2].is_empty());
    }

    #[test]
    fn nm_text_symbols_are_indexed_by_name() {
        let m = parse_nm(
            "ffffffff810638ec 0000000000000092 t kgym_note_store\nffffffff82000000 0000000000000010 D data\nffffffff81000000 T _text\n",
        );
        assert_eq!(m["kgym_note_store"], vec![(0xffffffff810638ec, 0x92)]);
        assert!(!m.contains_key("data") && !m.contains_key("_text"));
    }

    #[test]
    fn frame_lines_match_kernel_formats() {
        for l in [" kgym_note_store+0x72/0x92", " ? kgym_note_store+0x72/0x92", "RIP: 0010:kgym_note_store+0x72/0x92"] {
            let c = FRAME_LINE.captures(l).unwrap_or_else(|| panic!("{l}"));
            assert_eq!(&c["func"], "kgym_note_store");
        }
        assert!(FRAME_LINE.captures(" ext4_x+0x1/0x2 [ext4]").unwrap().name("module").is_some());
        assert!(FRAME_LINE.captures("Read of size 8 at addr ffff888002df6500 by task repro/23").is_none());
    }
}
