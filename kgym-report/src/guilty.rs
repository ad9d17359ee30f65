//! The guilty file: the source file a report blames, the way syzkaller
//! picks it to choose maintainers (`extractGuiltyFile` in
//! `pkg/report/linux.go`).
//!
//! The rule: among the `path/file.c:123` positions of the report (printed
//! by the kernel, e.g. `WARNING: ... at fs/inode.c:12`, or added by
//! symbolization), the first one that is not in a generic or infrastructure
//! file (headers, `lib/`, KASAN, the allocators, locking, printk, ...)
//! and not on a lockdep "last enabled at" line; then, further down the
//! stack, a file deeper in that file's directory tree wins (a driver's
//! helper file blames the driver's subdirectory). With no such position at
//! all, the first file named; with no file named, none.

use std::sync::LazyLock;

use memchr::memmem::Finder;
use path_clean::clean;
use regex::{Regex, RegexSet};

/// A source position: the file (`.c` or `.h`) and a line number.
static FILE_LINE: LazyLock<Regex> = LazyLock::new(|| re(r"([a-zA-Z0-9_\-\./]*[a-zA-Z0-9_\-]+\.(c|h)):[0-9]+"));

/// What every position has: `.c:` or `.h:`.
static DOT_C: LazyLock<Finder<'static>> = LazyLock::new(|| Finder::new(".c:"));
static DOT_H: LazyLock<Finder<'static>> = LazyLock::new(|| Finder::new(".h:"));

/// A path that goes at least one directory deeper than a given directory
/// (matched against what follows that directory's name).
static DEEPER: LazyLock<Regex> = LazyLock::new(|| re(r"^/[a-zA-Z0-9_\-\./]+/[a-zA-Z0-9_\-]+\.(c|h)$"));

/// Files that are never guilty: the crash is reported there, or passes
/// through there, but the bug is in the caller. Unanchored at the end, as
/// syzkaller matches them.
static GENERIC_FILES: LazyLock<RegexSet> = LazyLock::new(|| {
    RegexSet::new([
        r".*\.h",
        r"^lib/.*",
        r"^virt/lib/.*",
        r"^mm/kasan/.*",
        r"^mm/kmsan/.*",
        r"^kernel/kcov.c",
        r"^mm/sl.b.c",
        r"^mm/filemap.c",
        r"^mm/folio-compat.c",
        r"^mm/truncate.c",
        r"^mm/memory.c",
        r"^mm/percpu.*",
        r"^mm/vmalloc.c",
        r"^mm/page_alloc.c",
        r"^mm/mempool.c",
        r"^mm/util.c",
        r"^kernel/rcu/.*",
        r"^arch/.*/kernel/traps.c",
        r"^arch/.*/kernel/unwind.*.c",
        r"^arch/.*/mm/fault.c",
        r"^arch/.*/mm/physaddr.c",
        r"^arch/.*/kernel/stacktrace.c",
        r"^arch/.*/kernel/apic/apic.c",
        r"^arch/arm64/kernel/entry.*.c",
        r"^arch/arm64/kernel/process\.c",
        r"^kernel/locking/.*",
        r"^kernel/panic.c",
        r"^kernel/printk/printk.*.c",
        r"^kernel/softirq.c",
        r"^kernel/kthread.c",
        r"^kernel/sched/.*.c",
        r"^kernel/stacktrace.c",
        r"^kernel/time/timer.c",
        r"^kernel/workqueue.c",
        r"^net/core/dev.c",
        r"^net/core/sock.c",
        r"^net/core/skbuff.c",
        r"^fs/proc/generic.c",
        // Trusty's sources are not in the kernel tree.
        r"^trusty/",
        // A WARNING in urb.c usually means a bug in a USB driver.
        r"^drivers/usb/core/urb.c",
        // CRC helpers crash because of what their callers pass.
        r"^arch/.*/lib/crc.*",
    ])
    .unwrap_or_else(|e| panic!("generic file patterns: {e}"))
});

/// Lines whose positions say where something was done earlier, not where
/// the crash is: lockdep's `hardirqs last enabled at`, its held-lock lists
/// (`#0: ..., at: ...`), and register dumps.
/// (Go's `\s` and `\d` are ASCII: spelled out here.)
static NOT_A_CRASH_SITE: LazyLock<Regex> = LazyLock::new(|| {
    re(concat!(
        r"(hardirqs|softirqs)[\t\n\f\r ]+last[\t\n\f\r ]+(enabled|disabled)|",
        r",[\t\n\f\r ]+at:[\t\n\f\r ]+|",
        r"^[\t\n\f\r ]*#[0-9]+:|",
        r"^Register r[0-9]+ information",
    ))
});

/// Where an RCU stall report's interesting part starts: the stall is
/// detected in the timer interrupt, so the frames before the interrupt
/// entry are the detector's own.
const RCU_STALL_ENTRY_POINTS: &[&str] = &["apic_timer_interrupt+0x", "el1h_64_irq+0x", "Exception stack"];

fn re(pattern: &str) -> Regex {
    Regex::new(pattern).unwrap_or_else(|e| panic!("guilty-file regex {pattern:?}: {e}"))
}

/// The file a crash report blames, as syzkaller's `ReportToGuiltyFile`
/// picks it: `report` is the report text from its crash line on (without
/// the lines of context before it), `title` its title. `None` when the
/// report names no `.c`/`.h` position.
///
/// Positions come from the kernel's own lines (`WARNING: ... at
/// fs/inode.c:12`, `kernel BUG at mm/slub.c:300!`) and from symbolized
/// frames (`iput+0x10/0x20 fs/inode.c:1234`): an unsymbolized report often
/// blames nothing or the generic file it names.
///
/// ```
/// let report = "\
/// BUG: KASAN: use-after-free in ip6_send_skb+0x2f5/0x330 net/ipv6/ip6_output.c:1748
/// Call Trace:
///  dump_stack+0x292/0x395 lib/dump_stack.c:52
///  kasan_report+0x230/0x340 mm/kasan/report.c:408
///  ip6_send_skb+0x2f5/0x330 net/ipv6/ip6_output.c:1748
///  rawv6_sendmsg+0x2ede/0x4400 net/ipv6/raw.c:932
/// ";
/// let title = "KASAN: use-after-free Read in ip6_send_skb";
/// assert_eq!(kgym_report::guilty_file(title, report).as_deref(), Some("net/ipv6/ip6_output.c"));
/// ```
pub fn guilty_file(title: &str, report: &str) -> Option<String> {
    if title.starts_with("INFO: rcu detected stall") {
        for entry in RCU_STALL_ENTRY_POINTS {
            if let Some(pos) = report.find(entry)
                && let Some(file) = guilty_in(&report[pos..])
            {
                return Some(file);
            }
        }
    }
    guilty_in(report)
}

/// A file whose blame can be passed on: generic, or named on a line that
/// is not the crash site.
fn passes_blame(file: &str, line: &str) -> bool {
    GENERIC_FILES.is_match(file) || NOT_A_CRASH_SITE.is_match(line)
}

fn guilty_in(report: &str) -> Option<String> {
    let mut lines = report.split('\n');
    // The first file that does not pass the blame on; failing that, the
    // first file named (as written, not cleaned: syzkaller's fallback).
    let mut guilty: Option<String> = None;
    for line in lines.by_ref() {
        let Some(file) = file_of(line) else { continue };
        let first = guilty.is_none();
        if passes_blame(file, line) {
            if first {
                guilty = Some(file.to_owned());
            }
            continue;
        }
        guilty = Some(clean_path(file));
        break;
    }
    let mut guilty = guilty?;
    // Below it in the stack, a file deeper in the same directory tree is
    // the more specific culprit.
    let mut deepest_dir = dir_of(&guilty);
    for line in lines {
        let Some(file) = file_of(line) else { continue };
        if passes_blame(file, line) {
            continue;
        }
        let file = clean_path(file);
        if file.strip_prefix(deepest_dir.as_str()).is_some_and(|rest| DEEPER.is_match(rest)) {
            deepest_dir = dir_of(&file);
            guilty = file;
        }
    }
    Some(guilty)
}

/// The first `file.c:123` position named on `line`: its file.
fn file_of(line: &str) -> Option<&str> {
    // Most lines name no position: skip the regex for them (reports are
    // named several times while streaming).
    if DOT_C.find(line.as_bytes()).is_none() && DOT_H.find(line.as_bytes()).is_none() {
        return None;
    }
    // The match is `file:line`; the file is all before the last colon (a
    // plain search is much cheaper than one with capture groups).
    let m = FILE_LINE.find(line)?.as_str();
    m.rsplit_once(':').map(|(file, _)| file)
}

/// `path` cleaned lexically (`a//b/./c/../d.c` → `a/b/d.c`), like Go's
/// `filepath.Clean`.
fn clean_path(path: &str) -> String {
    clean(path).to_string_lossy().into_owned()
}

/// The directory of `path`, cleaned (`.` for a bare name), like Go's
/// `filepath.Dir`.
fn dir_of(path: &str) -> String {
    clean_path(path.rfind('/').map_or("", |i| &path[..=i]))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn paths_clean_and_split_like_go() {
        assert_eq!(clean_path("./fs//ext4/../ext4/inode.c"), "fs/ext4/inode.c");
        assert_eq!(dir_of("fs/ext4/inode.c"), "fs/ext4");
        assert_eq!(dir_of("inode.c"), ".");
        assert_eq!(dir_of("/inode.c"), "/");
    }

    #[test]
    fn generic_files_and_lockdep_lines_pass_the_blame() {
        assert!(passes_blame("include/linux/spinlock.h", " spin_lock+0x1/0x2 include/linux/spinlock.h:12"));
        assert!(passes_blame("mm/slub.c", " kfree+0x1/0x2 mm/slub.c:3000"));
        assert!(passes_blame("mm/slab.c", ""));
        assert!(passes_blame("lib/refcount.c", ""));
        assert!(!passes_blame("fs/ext4/inode.c", " ext4_iget+0x1/0x2 fs/ext4/inode.c:12"));
        assert!(passes_blame(
            "fs/ext4/inode.c",
            "hardirqs last  enabled at (123): [<ffff>] f+0x1/0x2 fs/ext4/inode.c:12"
        ));
        assert!(passes_blame(
            "fs/ext4/inode.c",
            " #0: ffff8880 (&sb->s_type->i_mutex_key#9), at: f+0x1/0x2 fs/ext4/inode.c:12"
        ));
    }

    #[test]
    fn no_position_blames_nothing() {
        assert_eq!(guilty_file("WARNING in foo", "WARNING: CPU: 0 PID: 1\n foo+0x1/0x2\n"), None);
    }

    #[test]
    fn only_generic_files_blame_the_first_as_written() {
        let report = " a+0x1/0x2 ./include/linux/list.h:10\n b+0x1/0x2 mm/slub.c:20\n";
        assert_eq!(guilty_file("t", report).as_deref(), Some("./include/linux/list.h"));
    }

    #[test]
    fn a_deeper_file_in_the_same_tree_wins() {
        let report = "\
 usb_submit+0x1/0x2 drivers/net/wireless/core.c:10
 ath_rx+0x1/0x2 drivers/net/wireless/ath/ath9k/hif_usb.c:20
 other+0x1/0x2 fs/read_write.c:30
 deeper_elsewhere+0x1/0x2 drivers/net/ethernet/x/y.c:40
";
        assert_eq!(guilty_file("t", report).as_deref(), Some("drivers/net/wireless/ath/ath9k/hif_usb.c"));
    }

    #[test]
    fn rcu_stalls_look_from_the_interrupt_entry() {
        let report = "\
INFO: rcu_sched self-detected stall on CPU
 rcu_check_callbacks+0x1/0x2 kernel/rcu/tree.c:10
 update_process_times+0x1/0x2 kernel/time/timer.c:20
 tick_sched_timer+0x1/0x2 kernel/time/tick-sched.c:30
 apic_timer_interrupt+0x1/0x2 arch/x86/entry/entry_64.S:40
 spin_loop+0x1/0x2 drivers/foo/bar.c:50
";
        assert_eq!(guilty_file("INFO: rcu detected stall in spin_loop", report).as_deref(), Some("drivers/foo/bar.c"));
        // Any other title: the first non-generic file.
        assert_eq!(guilty_file("BUG: soft lockup in spin_loop", report).as_deref(), Some("kernel/time/tick-sched.c"));
    }
}
