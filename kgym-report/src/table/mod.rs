//! The catalogue of kernel crash messages: for each message header, the
//! ways its first lines are turned into a title.
//!
//! The facts (which headers exist, what their lines look like, which title
//! syzkaller gives each, which frames are generic) follow syzkaller's
//! `pkg/report/linux.go`; this module only holds them as data and compiles
//! them once.

mod bug;
mod info;
mod misc;
mod warning;

use std::sync::LazyLock;

use regex::Regex;

use crate::skip;

/// One kind of crash message, found by a plain substring of its first line.
#[derive(Debug)]
pub(crate) struct Oops {
    /// Substring that marks the message (`BUG:`, `WARNING:`, ...).
    pub header: &'static str,
    /// Title rules, tried in order.
    pub formats: Vec<Format>,
    /// Lines with the header that are not crashes.
    pub suppressions: Vec<Regex>,
}

/// One title rule.
#[derive(Debug)]
pub(crate) struct Format {
    /// Matches the message's title line; its captures are title arguments.
    pub title: Regex,
    /// When present, must also match (captures replace the title's); when
    /// it does not, the report is corrupted.
    pub report: Option<Regex>,
    /// Title template: `{N}` is argument N (1-based): captures first, then
    /// one guilty frame per stack trace of `stack`.
    pub fmt: &'static str,
    /// Alternative title templates.
    pub alt: &'static [&'static str],
    /// How to find the guilty frame(s).
    pub stack: Option<StackRule>,
    /// The message has no stack trace by design: not corrupted for lacking one.
    pub no_stack_trace: bool,
    /// The format itself means a corrupted report.
    pub corrupted: bool,
}

/// How the guilty frame is found in a report.
#[derive(Debug)]
pub(crate) struct StackRule {
    /// Steps matched one after another through the report lines.
    pub parts: Vec<Part>,
    /// Tried when `parts` finds no frame.
    pub parts2: Vec<Part>,
    /// Frames never chosen: the generic list plus the rule's own.
    pub skip: skip::FrameSkip,
    /// How the guilty frame is chosen among the frames found.
    pub pick: Pick,
}

/// One step of a [`StackRule`].
#[derive(Debug)]
pub(crate) enum Part {
    /// Advance to the next line matching this; its captures are frames.
    Line(Regex),
    /// Read a stack trace from here until the next stack trace starts.
    Trace,
}

/// How the guilty frame is chosen among the non-skipped frames.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum Pick {
    /// The first one.
    First,
    /// Stalls and lockups: the frame just above the first dispatch point
    /// (syscall entry, workqueue, timer, ...).
    Stall,
    /// Hung tasks: group RCU and rtnl waits, else the first frame that is
    /// not waiting machinery.
    Hang,
}

/// Expands the shorthands used in the table's patterns and compiles.
///
/// `%ADDR%` a hex address, `%PC%` a bracketed PC (`[<ffffffff81234567>]`),
/// `%FUNC%` a function name followed by `.` or `+` (captured), `%SRC%` a
/// `file.c:123` location (captured), `%TASK%` a task name and pid (up to
/// 100 characters, lazily).
pub(crate) fn re(pattern: &str) -> Regex {
    let expanded = pattern
        .replace("%ADDR%", "0x[0-9a-f]+")
        .replace("%PC%", r"\[<?(?:0x)?[0-9a-f]+>?\]")
        .replace("%FUNC%", r"([a-zA-Z0-9_]+)(?:\.|\+)")
        .replace("%SRC%", r"([a-zA-Z0-9-_/.]+\.[a-z]+:[0-9]+)")
        .replace("%TASK%", r"[\s\S]{0,100}?");
    Regex::new(&expanded).unwrap_or_else(|e| panic!("bad table pattern {pattern:?}: {e}"))
}

/// The line naming the instruction pointer (`RIP:`, `IP:`, `pc :`, ...),
/// capturing the function when it is symbolized.
pub(crate) const RIP: &str = r"(?:IP|NIP|pc |PC is at):? (?:(?:[0-9]+:)?(?:%PC% +){0,2}%FUNC%|(?:[0-9]+:)?0x[0-9a-f]+|(?:[0-9]+:)?%PC% +\[< *\(null\)>\] +\(null\)|[0-9]+: +\(null\))";

/// The line that starts a call trace.
pub(crate) const CALL_TRACE: &str = r"(?:Call (?:T|t)race:)|(?:Backtrace:)";

/// Builder for a [`Format`].
pub(crate) struct F(Format);

/// A format whose title line matches `title` and is named by `fmt`.
pub(crate) fn f(title: &str, fmt: &'static str) -> F {
    F(Format { title: re(title), report: None, fmt, alt: &[], stack: None, no_stack_trace: false, corrupted: false })
}

impl F {
    pub(crate) fn report(mut self, pattern: &str) -> Self {
        self.0.report = Some(re(pattern));
        self
    }
    pub(crate) fn alt(mut self, alt: &'static [&'static str]) -> Self {
        self.0.alt = alt;
        self
    }
    pub(crate) fn stack(mut self, stack: StackRule) -> Self {
        self.0.stack = Some(stack);
        self
    }
    pub(crate) fn no_trace(mut self) -> Self {
        self.0.no_stack_trace = true;
        self
    }
    pub(crate) fn corrupted(mut self) -> Self {
        self.0.corrupted = true;
        self
    }
    pub(crate) fn done(self) -> Format {
        self.0
    }
}

/// A part that advances to a line matching `pattern`.
pub(crate) fn line(pattern: &str) -> Part {
    Part::Line(re(pattern))
}

/// A stack rule from its parts, with extra frames to skip.
pub(crate) fn stack(parts: Vec<Part>, skip_extra: &[&str]) -> StackRule {
    StackRule { parts, parts2: Vec::new(), skip: skip::FrameSkip::new(skip_extra), pick: Pick::First }
}

impl StackRule {
    pub(crate) fn pick(mut self, pick: Pick) -> Self {
        self.pick = pick;
        self
    }
    pub(crate) fn or(mut self, parts2: Vec<Part>) -> Self {
        self.parts2 = parts2;
        self
    }
}

/// The common shape: the RIP line, then the call trace.
pub(crate) fn rip_then_trace(skip_extra: &[&str]) -> StackRule {
    stack(vec![line(RIP), line(CALL_TRACE), Part::Trace], skip_extra)
}

/// Just the call trace.
pub(crate) fn trace(skip_extra: &[&str]) -> StackRule {
    stack(vec![line(CALL_TRACE), Part::Trace], skip_extra)
}

/// A suppression list.
pub(crate) fn res(patterns: &[&str]) -> Vec<Regex> {
    patterns.iter().map(|p| re(p)).collect()
}

/// All crash kinds, in the order they are tried on a line.
pub(crate) static OOPSES: LazyLock<Vec<Oops>> = LazyLock::new(|| {
    let mut all = vec![bug::oops(), warning::oops(), info::oops()];
    all.extend(misc::oopses());
    all
});

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn table_compiles() {
        assert!(OOPSES.len() > 20);
        assert!(OOPSES.iter().all(|o| !o.formats.is_empty()));
    }
}
