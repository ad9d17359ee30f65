//! Live parsing: lines are fed as the VM prints them; the parser says when
//! a report starts and when it is complete, so the VM can be stopped early.
//!
//! Complete means the title can no longer change. The parser waits for
//! what ends each kind of report:
//! - the kernel stopped (`---[ end Kernel panic`, `Rebooting in`): always;
//! - oopses and `WARN_ON` splats: `---[ end trace`;
//! - sanitizer reports (KASAN, KMSAN, KCSAN, UBSAN, KFENCE): the closing
//!   `=====` line;
//! - reports that are a message plus `dump_stack()` (lockdep, hung tasks,
//!   stalls, leaks, ...): the end of a stack trace;
//!
//! and at each of these it names the report seen so far: if that is not
//! corrupted, the report is complete. Past [`MAX_REPORT_LINES`] lines or
//! [`MAX_REPORT_BYTES`] it is complete regardless; when the stream ends
//! first, [`StreamParser::finish`] gives the report so far.
//!
//! Memory is bounded whatever the input (an endless line, a report that
//! never ends, megabytes after it): see [`MAX_RETAINED_BYTES`].

use crate::Report;
use crate::capped::CappedLine;
use crate::console::{Console, OwnedContext, clean_line_into, context, strip_prefix};
use crate::frames::frame_of_line;
use crate::locate::line_oops;
use crate::parse::{Parsed, parse_console_detailed};

/// Lines after a report's start after which it is complete in any case.
pub const MAX_REPORT_LINES: usize = 1000;

/// Bytes after a report's start after which it is complete in any case
/// (a report of 1000 kernel lines is ~100 KiB).
pub const MAX_REPORT_BYTES: usize = 1 << 20;

/// Longest line kept: a longer one keeps its first and last
/// `MAX_LINE_BYTES / 2` bytes (the middle is dropped). Kernel lines are at
/// most ~1 KiB (printk's record limit); the rest is for userspace output on
/// the console, whose end may carry a kernel line printed after it.
pub const MAX_LINE_BYTES: usize = 64 << 10;

/// Raw bytes kept before a report starts: room for the lines before it
/// (syzkaller keeps 128 KiB of context before a crash).
const KEEP_BEFORE: usize = 128 << 10;

/// Raw bytes kept after completion, for [`StreamParser::finish`].
const KEEP_AFTER: usize = 1 << 20;

/// The most console bytes a [`StreamParser`] holds
/// ([`StreamParser::retained_bytes`]), whatever it is fed: the context
/// before a report, the report, the text after it, and a line in progress.
pub const MAX_RETAINED_BYTES: usize = 2 * KEEP_BEFORE + MAX_REPORT_BYTES + KEEP_AFTER + 4 * (MAX_LINE_BYTES + 1);

/// What feeding a line told.
#[derive(Debug, Clone, PartialEq)]
pub enum StreamEvent {
    /// Nothing new.
    Nothing,
    /// A crash report started (the VM should be kept until it completes).
    Started,
    /// The first crash's report is complete.
    Complete(Box<Report>),
}

/// Incremental parser: feed console lines as the VM prints them.
///
/// Offsets in the reports it gives count bytes from the start of the
/// stream, with a `\n` after each fed line that had none (bytes cut from
/// overlong lines count too).
///
/// Lines can be fed one by one ([`feed`](StreamParser::feed)) or as raw
/// chunks of any size ([`feed_bytes`](StreamParser::feed_bytes), then
/// [`flush`](StreamParser::flush) at the end of the stream).
///
/// Some reports have no end marker and may keep a title tentative (e.g. a
/// stall report of an old kernel without `RIP:` lines). syzkaller waits up
/// to 10 s for more output after a crash; a runner that saw
/// [`StreamEvent::Started`] but no [`StreamEvent::Complete`] for that long
/// should call [`StreamParser::complete_now`].
///
/// ```
/// use kgym_report::{StreamEvent, StreamParser};
///
/// let console = "\
/// [   5.000000] WARNING: CPU: 0 PID: 7 at fs/inode.c:12 iput+0x10/0x20
/// [   5.000001] Modules linked in:
/// [   5.000002] RIP: 0010:iput+0x10/0x20
/// [   5.000003] Call Trace:
/// [   5.000004]  evict_inodes+0x10/0x20
/// [   5.000005]  ext4_put_super+0x10/0x20
/// [   5.000006] ---[ end trace 0000000000000000 ]---
/// ";
/// let mut parser = StreamParser::new();
/// let mut events = Vec::new();
/// for line in console.lines() {
///     match parser.feed(line.as_bytes()) {
///         StreamEvent::Nothing => {}
///         StreamEvent::Started => events.push("started".to_owned()),
///         StreamEvent::Complete(report) => events.push(report.title),
///     }
/// }
/// assert_eq!(events, ["started", "WARNING in evict_inodes"]);
/// ```
#[derive(Debug, Default)]
pub struct StreamParser {
    /// The retained tail of the stream; each line ends with `\n`.
    buf: Vec<u8>,
    /// Stream offset of `buf[0]`.
    base: usize,
    /// Where bytes of overlong lines were cut from `buf`, in order: (offset
    /// in `buf` where the kept tail of the line starts, bytes dropped there).
    cuts: Vec<(usize, usize)>,
    /// The line [`feed_bytes`](StreamParser::feed_bytes) is gathering.
    partial: CappedLine,
    /// `buf.len()` when the report completed.
    done_at: usize,
    state: State,
}

#[derive(Debug, Default)]
enum State {
    #[default]
    Idle,
    InReport(Progress),
    Done(Box<Report>),
}

/// How the end of a report shows.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum EndKind {
    /// `=====` closes the report (and `---[ end trace` may).
    Sanitizer,
    /// `---[ end trace` closes the report.
    Oops,
    /// The report is a message plus a stack dump.
    StackDump,
}

#[derive(Debug)]
struct Progress {
    ctx: OwnedContext,
    kind: EndKind,
    /// Lines fed since the start line.
    lines: usize,
    /// Of those, lines of the report's caller.
    own_lines: usize,
    /// Bytes of the lines fed since the start line.
    bytes: usize,
    /// The previous line of the report's caller named a frame.
    in_frames: bool,
}

impl StreamParser {
    /// A fresh parser.
    pub fn new() -> Self {
        Self::default()
    }

    /// Feeds one line (with or without its trailing newline); a line
    /// longer than [`MAX_LINE_BYTES`] keeps its first and last halves.
    ///
    /// A chunk of several lines is fed line by line; the result is then
    /// the weightiest event among them (`Complete`, else `Started`).
    /// (A stream is fed with this or with [`feed_bytes`](Self::feed_bytes),
    /// not both: a line `feed_bytes` holds would come after this one.)
    pub fn feed(&mut self, line: &[u8]) -> StreamEvent {
        let line = line.strip_suffix(b"\n").unwrap_or(line);
        if memchr::memchr(b'\n', line).is_none() {
            return self.feed_long_line(line);
        }
        let mut event = StreamEvent::Nothing;
        for one in line.split(|&b| b == b'\n') {
            event = weightier(event, self.feed_long_line(one));
        }
        event
    }

    /// Feeds raw console bytes as they arrive, in chunks of any size: a
    /// line is complete at its `\n`, the bytes after the last `\n` wait for
    /// the next chunk (at most [`MAX_LINE_BYTES`] of them are kept). The
    /// result is the weightiest event of the completed lines.
    pub fn feed_bytes(&mut self, chunk: &[u8]) -> StreamEvent {
        let mut event = StreamEvent::Nothing;
        let mut rest = chunk;
        while let Some(nl) = memchr::memchr(b'\n', rest) {
            let (line, after) = (&rest[..nl], &rest[nl + 1..]);
            rest = after;
            let e = if self.partial.is_empty() && line.len() <= MAX_LINE_BYTES {
                self.feed_line(line, 0)
            } else {
                self.partial.push(line);
                let (line, dropped) = self.partial.take();
                self.feed_line(&line, dropped)
            };
            event = weightier(event, e);
        }
        self.partial.push(rest);
        event
    }

    /// Ends a stream fed with [`feed_bytes`](StreamParser::feed_bytes): its
    /// last line, if it had no `\n`, is fed now.
    pub fn flush(&mut self) -> StreamEvent {
        if self.partial.is_empty() {
            return StreamEvent::Nothing;
        }
        let (line, dropped) = self.partial.take();
        self.feed_line(&line, dropped)
    }

    /// Whether more input can still change what [`finish`](StreamParser::finish)
    /// gives: `false` once a report is complete and the text kept after it
    /// is full. A reader of a finite log can stop reading then.
    pub fn wants_more(&self) -> bool {
        !matches!(self.state, State::Done(_)) || self.buf.len() - self.done_at < KEEP_AFTER
    }

    /// Bytes of console output held: the retained log and the line in
    /// progress. Never more than [`MAX_RETAINED_BYTES`] (the allocations
    /// holding them may be up to twice that).
    pub fn retained_bytes(&self) -> usize {
        self.buf.len() + self.partial.held()
    }

    /// Feeds one line without its `\n`, cut to [`MAX_LINE_BYTES`].
    fn feed_long_line(&mut self, line: &[u8]) -> StreamEvent {
        if line.len() <= MAX_LINE_BYTES {
            return self.feed_line(line, 0);
        }
        let mut capped = CappedLine::default();
        capped.push(line);
        let (line, dropped) = capped.take();
        self.feed_line(&line, dropped)
    }

    /// Feeds one line (at most [`MAX_LINE_BYTES`], without its `\n`) from
    /// whose middle `dropped` bytes were cut.
    fn feed_line(&mut self, raw: &[u8], dropped: usize) -> StreamEvent {
        if let State::Done(_) = self.state {
            if self.buf.len() - self.done_at < KEEP_AFTER {
                self.push_raw(raw, dropped);
            }
            return StreamEvent::Nothing;
        }
        self.push_raw(raw, dropped);
        let mut clean = String::with_capacity(raw.len());
        clean_line_into(raw, &mut clean);
        match &mut self.state {
            State::Idle => {
                if let Some(oops) = line_oops(&clean) {
                    self.state = State::InReport(Progress {
                        ctx: context(&clean).to_owned_ctx(),
                        kind: end_kind(&clean, oops),
                        lines: 0,
                        own_lines: 0,
                        bytes: 0,
                        in_frames: false,
                    });
                    return StreamEvent::Started;
                }
                self.trim_idle();
                StreamEvent::Nothing
            }
            State::InReport(p) => {
                if p.lines == 0 && clean.contains("** replaying previous printk message **") {
                    // The start line was a duplicate cut short: not a report.
                    self.state = State::Idle;
                    return StreamEvent::Nothing;
                }
                match p.observe(&clean) {
                    Verdict::Wait => StreamEvent::Nothing,
                    Verdict::TryComplete => self.try_complete(false),
                    Verdict::Complete => self.try_complete(true),
                }
            }
            State::Done(_) => StreamEvent::Nothing,
        }
    }

    /// Whether a report has started and not yet completed.
    pub fn in_report(&self) -> bool {
        matches!(self.state, State::InReport(_))
    }

    /// Completes a started report now with what was seen, e.g. when the
    /// console has been quiet for a while. [`StreamEvent::Nothing`] when no
    /// report is in progress.
    pub fn complete_now(&mut self) -> StreamEvent {
        if self.in_report() { self.try_complete(true) } else { StreamEvent::Nothing }
    }

    /// Ends the stream (VM exited/killed): the report so far, if any.
    ///
    /// After [`StreamEvent::Complete`], this is the same report with the
    /// lines fed since then added to its text (its title never changes).
    pub fn finish(&self) -> Option<Report> {
        match &self.state {
            State::Idle => None,
            State::InReport(_) => self.parse_buf(),
            State::Done(done) => match self.parse_buf() {
                Some(fuller) if fuller.title == done.title => Some(fuller),
                _ => Some((**done).clone()),
            },
        }
    }

    fn push_raw(&mut self, raw: &[u8], dropped: usize) {
        if dropped > 0 {
            self.cuts.push((self.buf.len() + MAX_LINE_BYTES / 2, dropped));
        }
        self.buf.extend_from_slice(raw);
        self.buf.push(b'\n');
    }

    /// The stream offset of `pos` in `buf`.
    fn stream_offset(&self, pos: usize) -> usize {
        let dropped: usize = self.cuts.iter().take_while(|(at, _)| *at <= pos).map(|(_, n)| n).sum();
        self.base + pos + dropped
    }

    fn parse_buf(&self) -> Option<Report> {
        self.parse_buf_detailed().map(|p| p.report)
    }

    fn parse_buf_detailed(&self) -> Option<Parsed> {
        let mut parsed = parse_console_detailed(&Console::new(&self.buf))?;
        parsed.report.start = self.stream_offset(parsed.report.start);
        parsed.report.end = self.stream_offset(parsed.report.end);
        Some(parsed)
    }

    /// Completes when forced, or when the report so far is named cleanly.
    fn try_complete(&mut self, force: bool) -> StreamEvent {
        match self.parse_buf_detailed() {
            Some(p) if force || !(p.report.corrupted || p.tentative) => {
                self.state = State::Done(Box::new(p.report.clone()));
                self.done_at = self.buf.len();
                StreamEvent::Complete(Box::new(p.report))
            }
            None if force => {
                // Nothing to name after all (the start line does not parse
                // as a report in context): back to waiting, so that the
                // retained text is trimmed again.
                self.state = State::Idle;
                StreamEvent::Nothing
            }
            _ => StreamEvent::Nothing,
        }
    }

    /// Drops old lines while no report is in progress.
    fn trim_idle(&mut self) {
        if self.buf.len() <= 2 * KEEP_BEFORE {
            return;
        }
        let from = self.buf.len() - KEEP_BEFORE;
        let cut = memchr::memchr(b'\n', &self.buf[from..]).map_or(self.buf.len(), |i| from + i + 1);
        self.buf.drain(..cut);
        // Cuts in the dropped part move into `base`; the others shift.
        let gone = self.cuts.iter().take_while(|(at, _)| *at < cut).count();
        self.base += cut + self.cuts.drain(..gone).map(|(_, n)| n).sum::<usize>();
        for (at, _) in &mut self.cuts {
            *at -= cut;
        }
    }
}

/// The event that matters more: `Complete`, then `Started`, then
/// `Nothing`; of two equal ones the first.
fn weightier(a: StreamEvent, b: StreamEvent) -> StreamEvent {
    match (&a, &b) {
        (StreamEvent::Complete(_), _) | (StreamEvent::Started, StreamEvent::Nothing | StreamEvent::Started) => a,
        _ => b,
    }
}

enum Verdict {
    Wait,
    /// A point where the report may be complete: check it.
    TryComplete,
    /// The kernel stopped or the report is long enough.
    Complete,
}

impl Progress {
    fn observe(&mut self, line: &str) -> Verdict {
        self.lines += 1;
        self.bytes += line.len() + 1;
        if line.contains("---[ end Kernel panic")
            || line.contains("Rebooting in ")
            || self.lines >= MAX_REPORT_LINES
            || self.bytes >= MAX_REPORT_BYTES
        {
            return Verdict::Complete;
        }
        let ctx = context(line);
        let own = ctx == self.ctx.as_ctx() || !self.ctx.as_ctx().has_prefix();
        if !own {
            return Verdict::Wait;
        }
        self.own_lines += 1;
        let (body, questionable) = strip_prefix(line, ctx);
        let framed = questionable || frame_of_line(body).is_some();
        let stack_ended = self.in_frames && !framed;
        self.in_frames = framed;
        let ended = match self.kind {
            EndKind::Oops => body.contains("---[ end trace"),
            EndKind::Sanitizer => body.contains("---[ end trace") || (self.own_lines >= 3 && is_separator(body)),
            EndKind::StackDump => stack_ended,
        };
        if ended { Verdict::TryComplete } else { Verdict::Wait }
    }
}

/// The `=====` line that closes sanitizer reports.
fn is_separator(body: &str) -> bool {
    let body = body.trim();
    body.len() >= 40 && body.bytes().all(|b| b == b'=')
}

/// How the report starting with `line` (of crash kind `oops`) ends.
fn end_kind(line: &str, oops: usize) -> EndKind {
    const SANITIZERS: &[&str] = &["KASAN:", "KMSAN:", "KCSAN:", "UBSAN:", "KFENCE:"];
    const OOPSES: &[&str] = &[
        "general protection fault",
        "BUG: unable to handle",
        "BUG: kernel NULL pointer",
        "BUG: Unable to handle",
        "Unable to handle kernel",
        "kernel BUG",
        "invalid opcode:",
        "divide error:",
        "divide_error:",
        "stack segment:",
        "int3:",
        "Internal error:",
        "Unhandled fault:",
        "Alignment trap:",
        "PANIC: double fault",
    ];
    if SANITIZERS.iter().any(|s| line.contains(s)) {
        EndKind::Sanitizer
    } else if OOPSES.iter().any(|s| line.contains(s)) || is_warn_splat(line, oops) {
        EndKind::Oops
    } else {
        EndKind::StackDump
    }
}

/// A `WARN_ON` splat (`WARNING: CPU: 0 PID: 1 at file.c:12 func+0x..`,
/// or `WARNING: file.c:12 at func..`), which ends with `---[ end trace`;
/// lockdep's `WARNING:` reports are stack dumps.
fn is_warn_splat(line: &str, oops: usize) -> bool {
    crate::table::OOPSES[oops].header == "WARNING:"
        && (line.contains("WARNING: CPU:") || (line.contains(" at ") && line.contains(".c:")))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn separator_lines() {
        assert!(is_separator("=================================================================="));
        assert!(!is_separator("===="));
        assert!(!is_separator("== x =="));
    }

    #[test]
    fn end_kinds() {
        assert_eq!(end_kind("BUG: KASAN: use-after-free in foo", 0), EndKind::Sanitizer);
        assert_eq!(end_kind("general protection fault: 0000 [#1]", 0), EndKind::Oops);
        let warning = crate::table::OOPSES.iter().position(|o| o.header == "WARNING:").unwrap();
        assert_eq!(end_kind("WARNING: CPU: 0 PID: 1 at fs/x.c:1 f+0x1/0x2", warning), EndKind::Oops);
        assert_eq!(end_kind("WARNING: possible circular locking dependency detected", warning), EndKind::StackDump);
    }
}
