//! Whether a named report is too damaged to trust: a title with a
//! timestamp glued into it, or stack traces announced but missing.

use std::sync::LazyLock;

use regex::Regex;

use crate::stack::{RISCV_TRACE_START, TRACE_START_RES, is_frame_line};
use crate::table::Format;

/// A timestamp inside a title: two printk lines were merged.
static TIMESTAMP_IN_TITLE: LazyLock<Regex> = LazyLock::new(|| Regex::new(r"\[ *[0-9]+\.[0-9]+\]").expect("compiles"));

/// The reason `report` (titled `title` by `format`) is corrupted, if it is.
pub(crate) fn corrupted_reason(title: &str, report: &str, format: Option<&Format>) -> Option<&'static str> {
    if TIMESTAMP_IN_TITLE.is_match(title) {
        return Some("title matches corrupted regexp");
    }
    // Titled by its raw line or by a message without a stack: nothing to check.
    let format = format?;
    if format.no_stack_trace {
        return None;
    }
    // Every announced stack trace (`Call Trace:`, `Allocated by task`, ...)
    // must show at least one frame soon after.
    let mut has_trace = false;
    for start in TRACE_START_RES.iter() {
        let Some(m) = start.find(report) else { continue };
        let mut lines = report[m.start()..].split('\n');
        if report[m.start()..].split('\n').take(4).count() < 4 {
            return Some("call trace is missed");
        }
        lines.next();
        let mut framed = false;
        for ln in lines.take(15) {
            if TRACE_START_RES.iter().any(|r| r.is_match(ln)) {
                break;
            }
            if ln.contains("(stack is not available)") || is_frame_line(ln) {
                framed = true;
                break;
            }
        }
        if framed {
            has_trace = true;
        } else if start.as_str() != RISCV_TRACE_START {
            return Some("no frames in a stack trace");
        }
    }
    if !has_trace {
        return Some("no stack trace in report");
    }
    None
}
