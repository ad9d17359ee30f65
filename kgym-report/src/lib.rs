//! Kernel crash report parser (API skeleton; the real parser replaces the
//! internals, the public API below stays).

use serde::{Deserialize, Serialize};

/// One stack frame of a report.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Frame {
    /// Function name, e.g. `do_sys_open`.
    pub function: String,
    /// Offset into the function (`+0x12`), when printed.
    pub offset: Option<u64>,
    /// Function size (`/0x40`), when printed.
    pub size: Option<u64>,
    /// Module name for module frames (`[ext4]`).
    pub module: Option<String>,
    /// `file:line`, filled by symbolization.
    pub location: Option<String>,
}

/// The first crash found in a console log.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct Report {
    /// syzkaller-format title.
    pub title: String,
    /// Alternative titles syzkaller gives.
    pub alt_titles: Vec<String>,
    /// Crash type, e.g. `KASAN`, `WARNING`, `NULL-POINTER-DEREFERENCE`.
    pub crash_type: String,
    /// Whether the report is corrupted.
    pub corrupted: bool,
    /// Why it was judged corrupted.
    pub corrupted_reason: Option<String>,
    /// Byte offset of the report's start in the log.
    pub start: usize,
    /// Byte offset of the report's end in the log.
    pub end: usize,
    /// The report text (prefixes stripped).
    pub text: String,
    /// Stack frames, in order.
    pub frames: Vec<Frame>,
}

/// Parses a whole console log; `None` when it holds no crash.
pub fn parse(log: &[u8]) -> Option<Report> {
    let mut p = StreamParser::new();
    for line in log.split_inclusive(|&b| b == b'\n') {
        if let StreamEvent::Complete(r) = p.feed(line) {
            return Some(*r);
        }
    }
    p.finish()
}

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
#[derive(Debug, Default)]
pub struct StreamParser {
    buf: Vec<u8>,
    started: bool,
    done: bool,
}

impl StreamParser {
    /// A fresh parser.
    pub fn new() -> Self {
        Self::default()
    }

    /// Feeds one line (with or without its trailing newline).
    pub fn feed(&mut self, line: &[u8]) -> StreamEvent {
        if self.done {
            return StreamEvent::Nothing;
        }
        self.buf.extend_from_slice(line);
        if !line.ends_with(b"\n") {
            self.buf.push(b'\n');
        }
        let text = String::from_utf8_lossy(line);
        if !self.started && (text.contains("BUG:") || text.contains("Kernel panic") || text.contains("WARNING:")) {
            self.started = true;
            return StreamEvent::Started;
        }
        if self.started && text.contains("end Kernel panic") {
            self.done = true;
            return self.finish().map(|r| StreamEvent::Complete(Box::new(r))).unwrap_or(StreamEvent::Nothing);
        }
        StreamEvent::Nothing
    }

    /// Whether a report has started and not yet completed.
    pub fn in_report(&self) -> bool {
        self.started && !self.done
    }

    /// Ends the stream (VM exited/killed): the report so far, if any.
    pub fn finish(&self) -> Option<Report> {
        if !self.started {
            return None;
        }
        let text = String::from_utf8_lossy(&self.buf).into_owned();
        let first = text.lines().find(|l| l.contains("BUG:") || l.contains("WARNING:") || l.contains("Kernel panic"))?;
        Some(Report {
            title: first.trim().to_owned(),
            alt_titles: Vec::new(),
            crash_type: "UNKNOWN".into(),
            corrupted: false,
            corrupted_reason: None,
            start: 0,
            end: self.buf.len(),
            text,
            frames: Vec::new(),
        })
    }
}
