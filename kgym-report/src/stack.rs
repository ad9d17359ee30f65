//! Finding the guilty frame: walking a report's lines through the steps of
//! a [`StackRule`] and collecting the frames that are not generic.

use std::sync::LazyLock;

use aho_corasick::AhoCorasick;
use regex::{Captures, Regex};

use crate::skip;
use crate::table::{Part, Pick, StackRule, re};

/// arm's frame lines, `[<pc>] (caller) from [<pc>] (callee+0x..)`, which
/// name both the current and the calling frame.
static ARM_FRAME_LINE: LazyLock<Regex> = LazyLock::new(|| re(r"^ *%PC% \(([a-zA-Z0-9_.]+)\) from %PC% \(%FUNC%"));

/// Lines that start a stack trace.
const TRACE_STARTS: &[&str] = &[
    "Call (?:T|t)race",
    "Allocated:",
    "Allocated by task [0-9]+:",
    "Freed:",
    "Freed by task [0-9]+:",
    // `backtrace:` of kmemleak (with its optional crc), not `stack backtrace:`.
    r"[^k] backtrace(?: \(crc [[:xdigit:]]*\))?:",
    "Backtrace:",
    "Uninit was stored to memory at",
    RISCV_TRACE_START,
];

/// riscv's `show_regs()` prints no stack header: its last register line
/// stands for one.
pub(crate) const RISCV_TRACE_START: &str = "status: [0-9a-f]{16} badaddr: [0-9a-f]{16} cause: [0-9a-f]{16}";

/// Each stack-trace start, alone (for the corruption checks).
pub(crate) static TRACE_START_RES: LazyLock<Vec<Regex>> =
    LazyLock::new(|| TRACE_STARTS.iter().map(|p| Regex::new(p).expect("trace start compiles")).collect());

static ANY_TRACE_START: LazyLock<Regex> =
    LazyLock::new(|| Regex::new(&TRACE_STARTS.join("|")).expect("trace starts compile"));

/// Fault-injection frames: their stacks get mixed into crash reports, so
/// a report that shows one is corrupted. The symbol may carry suffixes like
/// `.isra.7` or `.cold`.
static INJECTED_FAULT: LazyLock<Regex> =
    LazyLock::new(|| re(r"^( \[<?(?:0x)?[0-9a-f]+>?\])? should_fail(slab)?(\.[a-z0-9.]+)?\+0x"));

/// Literals one of which every stack-trace start has: a cheap first check.
static TRACE_START_HINTS: LazyLock<AhoCorasick> = LazyLock::new(|| {
    AhoCorasick::new([
        "Call T",
        "Call t",
        "Allocated",
        "Freed",
        "backtrace",
        "Backtrace:",
        "Uninit was stored",
        "badaddr: ",
    ])
    .expect("hints build")
});

/// Whether a line starts a stack trace.
pub(crate) fn is_trace_start(line: &str) -> bool {
    TRACE_START_HINTS.is_match(line) && ANY_TRACE_START.is_match(line)
}

/// Whether a line is a fault-injection frame.
fn is_injected_fault(line: &str) -> bool {
    line.contains("should_fail") && INJECTED_FAULT.is_match(line)
}

/// Whether a line names a frame.
pub(crate) fn is_frame_line(line: &str) -> bool {
    frame_name(line).is_some() || (line.contains(" from ") && ARM_FRAME_LINE.is_match(line))
}

/// The frame named at the start of a line: spaces, up to two PCs
/// (`[<ffffffff81234567>] `), then a name followed by `.` or `+`.
fn frame_name(line: &str) -> Option<&str> {
    let b = line.as_bytes();
    let mut i = b.iter().take_while(|&&c| c == b' ').count();
    for _ in 0..2 {
        match pc_len(&b[i..]) {
            Some(n) if b.get(i + n) == Some(&b' ') => i += n + 1,
            _ => break,
        }
    }
    let n = b[i..].iter().take_while(|c| c.is_ascii_alphanumeric() || **c == b'_').count();
    (n > 0 && matches!(b.get(i + n), Some(b'.' | b'+'))).then(|| &line[i..i + n])
}

/// Length of a `[<0xffff...>]` PC at the start of `b` (`<`, `>`, `0x` optional).
fn pc_len(b: &[u8]) -> Option<usize> {
    let mut i = 1;
    if b.first() != Some(&b'[') {
        return None;
    }
    if b.get(i) == Some(&b'<') {
        i += 1;
    }
    if b[i..].starts_with(b"0x") {
        i += 2;
    }
    let hex = b[i..].iter().take_while(|c| c.is_ascii_digit() || (b'a'..=b'f').contains(*c)).count();
    if hex == 0 {
        return None;
    }
    i += hex;
    if b.get(i) == Some(&b'>') {
        i += 1;
    }
    (b.get(i) == Some(&b']')).then_some(i + 1)
}

/// A guilty frame as it goes into a title.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(crate) struct KeyFrame {
    /// Name without the syscall prefixes (`sys_read` for `__x64_sys_read`).
    pub canonical: String,
    /// Name as printed (demangled).
    pub raw: String,
}

impl KeyFrame {
    fn corrupted() -> Self {
        Self { canonical: "corrupted".into(), raw: "corrupted".into() }
    }
}

/// The key frames of a report.
#[derive(Debug, Default)]
pub(crate) struct KeyFrames {
    /// One per stack trace of the rule.
    pub frames: Vec<KeyFrame>,
    /// All were found cleanly.
    pub ok: bool,
    /// The rule's main steps failed only because the text ended: with more
    /// text (a report still being printed) the frames may change.
    pub tentative: bool,
}

/// Runs a rule over `text` (which starts at the title line).
pub(crate) fn key_frames(rule: &StackRule, text: &str) -> KeyFrames {
    let (frames, ok, ran_out) = walk(rule, &rule.parts, text);
    if ok || rule.parts2.is_empty() {
        return KeyFrames { frames, ok, tentative: !ok && ran_out };
    }
    let (frames, ok, _) = walk(rule, &rule.parts2, text);
    KeyFrames { frames, ok, tentative: ran_out }
}

/// Returns the key frames, whether all were found, and whether the text
/// ran out before the steps did.
fn walk(rule: &StackRule, parts: &[Part], text: &str) -> (Vec<KeyFrame>, bool, bool) {
    let mut lines = text.split('\n');
    let mut found = Found::new(rule);
    let mut keys = Vec::new();
    let mut ok = true;
    let mut traces = 0;
    let mut idx = 0;
    let mut ran_out = false;
    loop {
        // A key frame is chosen at the end and before each later trace.
        if idx == parts.len() || (matches!(parts[idx], Part::Trace) && traces > 0) {
            let key = pick(rule.pick, &found.names).unwrap_or_else(|| {
                ok = false;
                KeyFrame::corrupted()
            });
            keys.push(key);
            found.clear();
        }
        let Some(part) = parts.get(idx) else { break };
        match part {
            Part::Trace => {
                traces += 1;
                ran_out = true;
                for ln in lines.by_ref() {
                    if is_injected_fault(ln) {
                        ok = false;
                        ran_out = false;
                        break;
                    }
                    if is_trace_start(ln) {
                        ran_out = false;
                        break;
                    }
                    if let Some(Part::Line(next)) = parts.get(idx + 1)
                        && let Some(caps) = next.captures(ln)
                    {
                        found.push_captures(&caps);
                        idx += 1;
                        ran_out = false;
                        break;
                    }
                    if let Some(name) = frame_name(ln) {
                        found.push(name);
                    } else if ln.contains(" from ")
                        && let Some(caps) = ARM_FRAME_LINE.captures(ln)
                    {
                        found.push_captures(&caps);
                    }
                }
            }
            Part::Line(want) => {
                ran_out = true;
                for ln in lines.by_ref() {
                    if is_injected_fault(ln) {
                        ok = false;
                        ran_out = false;
                        break;
                    }
                    if let Some(caps) = want.captures(ln) {
                        found.push_captures(&caps);
                        ran_out = false;
                        break;
                    }
                }
            }
        }
        idx += 1;
    }
    (keys, ok, ran_out)
}

/// The frames of one stack trace, as far as they matter for the pick.
struct Found<'r> {
    rule: &'r StackRule,
    names: Vec<String>,
    /// More frames cannot change the pick: they are not even looked at.
    settled: bool,
}

impl<'r> Found<'r> {
    fn new(rule: &'r StackRule) -> Self {
        Self { rule, names: Vec::new(), settled: false }
    }

    /// Adds each captured name.
    fn push_captures(&mut self, caps: &Captures<'_>) {
        for name in caps.iter().skip(1).flatten() {
            self.push(name.as_str());
        }
    }

    /// Adds a name if it is not a generic frame.
    fn push(&mut self, name: &str) {
        if self.settled {
            return;
        }
        let name = demangle(name);
        if !self.rule.skip.is_match(&name) {
            self.settled = skip::settles(self.rule.pick, skip::strip_frame(&name));
            self.names.push(name);
        }
    }

    fn clear(&mut self) {
        self.names.clear();
        self.settled = false;
    }
}

/// Mangled symbols are titled by their readable name: Rust paths without
/// hashes, C++ names without parameters.
pub(crate) fn demangle(name: &str) -> String {
    if name.starts_with("_R") || name.starts_with("_ZN") {
        if let Ok(d) = rustc_demangle::try_demangle(name) {
            return format!("{d:#}");
        }
    }
    if name.starts_with("_Z") {
        let options = cpp_demangle::DemangleOptions::new().no_params();
        if let Some(d) = cpp_demangle::Symbol::new(name).ok().and_then(|s| s.demangle_with_options(&options).ok()) {
            return d;
        }
    }
    name.to_owned()
}

fn pick(how: Pick, found: &[String]) -> Option<KeyFrame> {
    if found.is_empty() {
        return None;
    }
    let stripped: Vec<&str> = found.iter().map(|f| skip::strip_frame(f)).collect();
    let (canonical, idx) = match how {
        Pick::First => (stripped[0].to_owned(), 0),
        Pick::Stall => skip::pick_stall(&stripped)?,
        Pick::Hang => skip::pick_hang(&stripped)?,
    };
    if canonical.is_empty() {
        return None;
    }
    Some(KeyFrame { canonical, raw: found[idx].clone() })
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::table::{CALL_TRACE, line, stack};

    #[test]
    fn picks_first_non_generic_frame_after_call_trace() {
        let rule = stack(vec![line(CALL_TRACE), Part::Trace], &[]);
        let text = "BUG: x\nCall Trace:\n dump_stack+0x1/0x2\n kasan_report+0x1/0x2\n __x64_sys_foo+0x1/0x2\n";
        let k = key_frames(&rule, text);
        assert!(k.ok);
        assert_eq!(k.frames, vec![KeyFrame { canonical: "sys_foo".into(), raw: "__x64_sys_foo".into() }]);
    }

    #[test]
    fn no_frames_is_corrupted() {
        let rule = stack(vec![line(CALL_TRACE), Part::Trace], &[]);
        let k = key_frames(&rule, "BUG: x\nCall Trace:\nnothing here\n");
        assert!(!k.ok && k.tentative);
        assert_eq!(k.frames[0].canonical, "corrupted");
    }

    #[test]
    fn reads_frame_lines() {
        assert_eq!(frame_name("  [<ffffffff81234567>] [<0xffff>] foo_bar+0x1/0x2"), Some("foo_bar"));
        assert_eq!(frame_name(" kasan_report.cold+0x1/0x2"), Some("kasan_report"));
        assert_eq!(frame_name(" ? foo+0x1/0x2"), None);
        assert_eq!(frame_name("RIP: 0010:foo+0x1"), None);
        assert_eq!(frame_name("[<ffff>] bad"), None);
        assert!(is_frame_line("[<8011218c>] (unwind_backtrace) from [<8010e300>] (show_stack+0x18/0x1c)"));
        assert!(is_trace_start("Call Trace:") && is_trace_start("  backtrace (crc 1f2e):"));
        assert!(!is_trace_start("stack backtrace:") && !is_trace_start("nothing"));
    }

    #[test]
    fn demangles_rust_symbols() {
        assert_eq!(
            demangle("_RNvXCsktjF9JQNZ8U_5rnullNtB2_13NullBlkModuleNtCs43vyB533jt3_6kernel13InPlaceModule4init"),
            "<rnull::NullBlkModule as kernel::InPlaceModule>::init"
        );
        assert_eq!(demangle("_Z8fakeNameiii"), "fakeName");
        assert_eq!(demangle("do_sys_open"), "do_sys_open");
    }
}
