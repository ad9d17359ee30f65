//! Finding a report in a console log: its first line, and the lines that
//! belong to it (same printk caller, no questionable frames, no trailing
//! panic noise).

use std::sync::LazyLock;

use aho_corasick::{AhoCorasick, MatchKind};

use crate::console::{Context, context, lines_from, strip_prefix};
use crate::table::OOPSES;

/// Messages that are not crashes but print a stack trace; seen inside a
/// report, they mean a second report starts there.
const INFO_WITH_STACK: &[&str] =
    &["vmalloc: allocation failure:", "FAULT_INJECTION: forcing a failure", "FAULT_FLAG_ALLOW_RETRY missing"];

/// Crash headers that can come in the middle of another report without
/// starting a new one.
const NOT_A_NEW_REPORT: &[&str] = &[
    "invalid opcode: 0000",
    "Kernel panic - not syncing",
    "unregister_netdevice: waiting for",
    // A double fault may come while handling a fault with badly corrupted
    // memory; it usually happens synchronously.
    "PANIC: double fault",
    "Internal error:",
];

/// Printed when the previous printk line is printed again after a console
/// takeover: the line before it is a duplicate cut short.
const REPLAY: &str = "** replaying previous printk message **";

const DISABLING_LOCKDEP: &str = "Disabling lock debugging due to kernel taint";
const NMI_BACKTRACE: &str = "Sending NMI from CPU";
const PANIC: &str = "Kernel panic - not syncing";
const CIRCULAR: &str = "WARNING: possible circular locking dependency detected";

/// Every substring a line of a report is checked for, one automaton.
/// Marks (bits of a line's mask): the crash headers (by table index), then
/// the info messages, then the four markers.
struct Marks {
    all: AhoCorasick,
    /// Pattern id in `all` → the mark bits it stands for.
    masks: Vec<u64>,
    headers_only: AhoCorasick,
    n_headers: usize,
}

static MARKS: LazyLock<Marks> = LazyLock::new(|| {
    let headers: Vec<&str> = OOPSES.iter().map(|o| o.header).collect();
    let n = headers.len();
    let mut marks = headers.clone();
    marks.extend(INFO_WITH_STACK);
    marks.extend([DISABLING_LOCKDEP, NMI_BACKTRACE, PANIC, CIRCULAR]);
    assert!(marks.len() <= 64, "marks fit a u64");
    // Leftmost-first search (the fast one) reports a marker rather than the
    // header inside it: markers go first and carry their header's bit too.
    let order: Vec<usize> = (n..marks.len()).chain(0..n).collect();
    let header_bit = |h: &str| 1u64 << headers.iter().position(|x| *x == h).expect("header in table");
    let masks = order
        .iter()
        .map(|&m| match marks[m] {
            PANIC => (1 << m) | header_bit("Kernel panic"),
            CIRCULAR => (1 << m) | header_bit("WARNING:"),
            _ => 1 << m,
        })
        .collect();
    Marks {
        all: AhoCorasick::builder()
            .match_kind(MatchKind::LeftmostFirst)
            .build(order.iter().map(|&m| marks[m]))
            .expect("patterns build"),
        masks,
        headers_only: AhoCorasick::builder()
            .match_kind(MatchKind::LeftmostFirst)
            .build(&headers)
            .expect("headers build"),
        n_headers: headers.len(),
    }
});

impl Marks {
    fn header_bits(&self) -> u64 {
        (1u64 << self.n_headers) - 1
    }
    fn info_bits(&self) -> u64 {
        ((1u64 << INFO_WITH_STACK.len()) - 1) << self.n_headers
    }
    fn bit(&self, k: usize) -> u64 {
        1u64 << (self.n_headers + INFO_WITH_STACK.len() + k)
    }
}

/// The crash kind of a line: the first in table order whose header it has
/// and whose suppressions it does not match.
pub(crate) fn line_oops(line: &str) -> Option<usize> {
    if !MARKS.headers_only.is_match(line) {
        return None;
    }
    OOPSES.iter().position(|o| line.contains(o.header) && !o.suppressions.iter().any(|s| s.is_match(line)))
}

/// Whether the line after the one ending at `line_end` is a replay marker.
fn replayed_next(text: &str, line_end: usize) -> bool {
    if line_end >= text.len() {
        return false;
    }
    let next = &text[line_end + 1..];
    let next = &next[..next.find('\n').unwrap_or(next.len())];
    next.contains(REPLAY)
}

/// The first line of a report.
#[derive(Debug, Clone, Copy)]
pub(crate) struct Start<'t> {
    /// Index in [`OOPSES`].
    pub oops: usize,
    /// Offset of the line.
    pub pos: usize,
    /// End of the line (its `\n`).
    pub line_end: usize,
    pub ctx: Context<'t>,
}

/// Finds the first crash line of `text`.
pub(crate) fn first_oops(text: &str) -> Option<Start<'_>> {
    let marks = &*MARKS;
    let mut from = 0;
    while from < text.len() {
        let hit = from + marks.headers_only.find(&text[from..])?.start();
        let pos = memchr::memrchr(b'\n', &text.as_bytes()[..hit]).map_or(0, |i| i + 1);
        let line_end = memchr::memchr(b'\n', &text.as_bytes()[hit..]).map_or(text.len(), |i| hit + i);
        let line = &text[pos..line_end];
        if let Some(oops) = line_oops(line)
            && !replayed_next(text, line_end)
        {
            return Some(Start { oops, pos, line_end, ctx: context(line) });
        }
        from = line_end + 1;
    }
    None
}

/// A report's lines, gathered from the log.
#[derive(Debug, Default)]
pub(crate) struct Collected {
    /// Up to 5 (50 with a task caller id) lines of the same caller before
    /// the report: they often explain it.
    pub prefix: Vec<String>,
    /// The report's lines, prefixes stripped.
    pub report: String,
    /// End of the part of `report` before a second report starts.
    pub report_end: usize,
    /// End (in the log) of the last crash line seen.
    pub end_pos: usize,
}

/// Gathers the report that starts at `start`.
pub(crate) fn collect(text: &str, start: &Start<'_>) -> Collected {
    let ctx = start.ctx;
    let mut out = Collected { prefix: prefix_lines(text, start), ..Default::default() };
    let marks = &*MARKS;
    // Markers of the report's lines, ordered by their end offsets.
    let mut hits =
        marks.all.find_iter(&text[start.pos..]).map(|m| (start.pos + m.end(), marks.masks[m.pattern().as_usize()]));
    let mut pending = hits.next();
    let oops_line = &text[start.pos..start.line_end];
    let min_lines = if oops_line.contains("BUG: KMSAN:") { 16 } else { 22 };
    let mut second_report: Option<usize> = None;
    let mut text_lines = 0;
    let (mut skip_rest, mut nmi_traceback) = (false, false);
    for (pos, end, line) in lines_from(text, start.pos) {
        let mut mask = 0u64;
        while let Some((hit_end, bits)) = pending {
            if hit_end > end {
                break;
            }
            mask |= bits;
            pending = hits.next();
        }
        let is_oops_line = pos == start.pos;
        if mask & marks.header_bits() != 0 && line_oops(line).is_some() && !replayed_next(text, end) {
            out.end_pos = end;
            if !is_oops_line && second_report.is_none() && !NOT_A_NEW_REPORT.iter().any(|p| line.contains(p)) {
                second_report = Some(pos);
            }
        }
        if !is_oops_line && second_report.is_none() && mask & marks.info_bits() != 0 {
            second_report = Some(pos);
        }
        let ctx1 = context(line);
        let (stripped, questionable) = strip_prefix(line, ctx1);
        if !is_oops_line && (questionable || (ctx1 != ctx && !(nmi_traceback && ctx1.is_cpu()))) {
            continue;
        }
        text_lines += 1;
        let mut skip_line = skip_rest;
        if mask & marks.bit(0) != 0 {
            skip_line = true;
        } else if mask & marks.bit(1) != 0 {
            // A backtrace of all CPUs: keep the other CPUs' lines too.
            nmi_traceback = true;
        } else if mask & (marks.bit(2) | marks.bit(3)) != 0 && text_lines > min_lines {
            // With panic_on_warn the panic repeats the stack just shown; an
            // oops often triggers a lockdep report. With enough of the
            // report seen, the rest is noise.
            skip_rest = true;
            skip_line = true;
        }
        if !is_oops_line && skip_line {
            continue;
        }
        out.report.push_str(stripped);
        out.report.push('\n');
        if second_report.is_none() || matches!(ctx, Context::Caller(_)) {
            out.report_end = out.report.len();
        }
    }
    out
}

/// The lines before the report printed by the same caller.
fn prefix_lines(text: &str, start: &Start<'_>) -> Vec<String> {
    let max = if start.ctx.is_task() { 50 } else { 5 };
    let mut prefix = Vec::new();
    let mut end = start.pos;
    while end > 0 && prefix.len() < max {
        // `end` is a line start; the line before ends at end - 1.
        let line_end = end - 1;
        let line_start = memchr::memrchr(b'\n', &text.as_bytes()[..line_end]).map_or(0, |i| i + 1);
        let line = &text[line_start..line_end];
        let ctx1 = context(line);
        let (stripped, questionable) = strip_prefix(line, ctx1);
        if ctx1 == start.ctx && !stripped.is_empty() && !questionable {
            prefix.push(stripped.to_owned());
        }
        end = line_start;
    }
    prefix.reverse();
    prefix
}
