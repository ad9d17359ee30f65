//! Kernel crash report parser: finds the first crash in a Linux console log
//! and names it the way syzkaller does, so that a title produced here can
//! be compared with the title of a syzbot bug.
//!
//! - [`parse`] reads a whole log; [`StreamParser`] reads it line by line as
//!   a VM prints it and says when a report starts and when it is complete.
//! - A [`Report`] has the title (`KASAN: use-after-free Read in foo`,
//!   `WARNING in bar`, `INFO: task hung in baz`, ...), syzkaller's
//!   alternative titles, the crash type, whether the report is corrupted and
//!   why, the guilty file syzkaller would blame, where it is in the log, its
//!   text and its stack [`Frame`]s (for symbolization, see
//!   [`Report::symbolized_text`]).
//! - [`guilty_file`] names the file a report blames (syzkaller's
//!   `ReportToGuiltyFile`), also for a report text from elsewhere.
//! - Memory stays bounded on any input: [`StreamParser`] keeps at most
//!   about [`MAX_RETAINED_BYTES`] of console output, lines longer than
//!   [`MAX_LINE_BYTES`] are cut.
//! - Console noise is handled: printk timestamps or none, caller ids
//!   (`[ T123]`, `[ C1]`) and lines of several CPUs interleaved, ANSI
//!   escapes, CRLF, long lines, bytes that are not UTF-8.
//!
//! The title rules (crash headers, formats, the generic frames that are
//! never guilty, the corruption checks) follow syzkaller's
//! `pkg/report/linux.go`; the test suite runs syzkaller's own fixtures
//! (titles, alternative titles, types, corruption, report texts, guilty
//! files), every one exact.
//!
//! ```
//! let log = b"\
//! [   10.000000][ T100] ==================================================================
//! [   10.000001][ T100] BUG: KASAN: use-after-free in ext4_xattr_set+0x12/0x40
//! [   10.000002][ T100] Read of size 8 at addr ffff888012345678 by task syz-executor/100
//! [   10.000003][ T100] Call Trace:
//! [   10.000004][ T100]  dump_stack+0x10/0x20
//! [   10.000005][ T100]  kasan_report+0x10/0x20
//! [   10.000006][ T100]  ext4_xattr_set+0x12/0x40
//! [   10.000007][ T100]  __x64_sys_setxattr+0x10/0x20
//! ";
//! let report = kgym_report::parse(log).expect("a crash");
//! assert_eq!(report.title, "KASAN: use-after-free Read in ext4_xattr_set");
//! assert_eq!(report.crash_type, "KASAN-USE-AFTER-FREE-READ");
//! assert_eq!(report.frames[0].function, "ext4_xattr_set");
//!
//! assert!(kgym_report::parse(b"[    1.0] Linux version 6.1\n").is_none());
//! ```

use serde::{Deserialize, Serialize};

mod capped;
mod console;
mod corrupt;
mod describe;
mod frames;
mod guilty;
mod kind;
mod locate;
mod parse;
mod skip;
mod stack;
mod stream;
mod table;
mod title;

pub use guilty::guilty_file;
pub use kind::{UNKNOWN as UNKNOWN_TYPE, crash_type};
pub use stream::{MAX_LINE_BYTES, MAX_REPORT_BYTES, MAX_REPORT_LINES, MAX_RETAINED_BYTES, StreamEvent, StreamParser};

/// One stack frame of a report.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Frame {
    /// Function name as printed, e.g. `do_sys_open` (Rust symbols mangled).
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
    /// Alternative titles syzkaller gives (two crashes sharing any title
    /// are the same bug), sorted bytewise as syzkaller's tests sort them;
    /// often empty.
    pub alt_titles: Vec<String>,
    /// Crash type in syzkaller's words, e.g. `KASAN-USE-AFTER-FREE-READ`,
    /// `WARNING`, `NULL-POINTER-DEREFERENCE`, `HANG`; [`UNKNOWN_TYPE`]
    /// when none fits.
    pub crash_type: String,
    /// Whether the report is corrupted (truncated, interleaved, no usable
    /// frame): its title is less reliable.
    pub corrupted: bool,
    /// Why it was judged corrupted.
    pub corrupted_reason: Option<String>,
    /// The source file syzkaller blames for the crash (see [`guilty_file`]),
    /// e.g. `fs/ext4/xattr.c`: from the `file:line` positions in `text`
    /// after the crash line, so an unsymbolized report often has none, or
    /// only the file the kernel named in a `WARNING`/`BUG` line.
    /// [`Report::refresh_guilty_file`] recomputes it after symbolization.
    #[serde(default)]
    pub guilty_file: Option<String>,
    /// Byte offset of the report's first line in the log.
    pub start: usize,
    /// Byte offset of the end of the last crash line of the report in the log.
    pub end: usize,
    /// The report text (printk prefixes stripped): a few lines of the same
    /// caller before the crash line, then the crash line and the lines of
    /// the same caller after it.
    pub text: String,
    /// Bytes of `text` before the crash line: the lines of context. A
    /// symbolizer that rewrites those lines updates it.
    #[serde(default)]
    pub context_len: usize,
    /// Stack frames named in `text`, in order (one per line that has
    /// `func+0xoff/0xsize`).
    pub frames: Vec<Frame>,
}

impl Report {
    /// `text` with each frame's `location` (filled by a symbolizer) added
    /// after its `func+0xoff/0xsize`, as syzkaller prints symbolized
    /// reports: ` do_sys_open+0x12/0x40 fs/open.c:1234`.
    pub fn symbolized_text(&self) -> String {
        frames::with_locations(&self.text, &self.frames)
    }

    /// `text` from the crash line on (without the lines of context).
    pub fn crash_text(&self) -> &str {
        self.text.get(self.context_len..).unwrap_or(&self.text)
    }

    /// Recomputes [`guilty_file`](Report::guilty_file) from `text`, e.g.
    /// after a symbolizer added `file:line` to the frames.
    pub fn refresh_guilty_file(&mut self) {
        self.guilty_file = guilty_file(&self.title, self.crash_text());
    }

    /// Whether frame `index` names the exact faulting instruction (`RIP:`,
    /// `pc :` lines) rather than a return address. A symbolizer looks up
    /// `offset` for exact frames and `offset - 1` for return addresses.
    pub fn frame_is_exact_pc(&self, index: usize) -> bool {
        self.text
            .lines()
            .filter(|l| frames::frame_of_line(l).is_some())
            .nth(index)
            .is_some_and(frames::is_exact_pc_line)
    }
}

/// The README's examples, run as doc tests.
#[cfg(doctest)]
#[doc = include_str!("../README.md")]
pub struct ReadmeDoctests;

/// Parses a whole console log; `None` when it holds no crash.
pub fn parse(log: &[u8]) -> Option<Report> {
    parse::parse_console(&console::Console::new(log))
}
