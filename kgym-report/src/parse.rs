//! Whole-log parsing: find the first crash, gather its lines, name it,
//! judge it.

use crate::Report;
use crate::console::Console;
use crate::corrupt::corrupted_reason;
use crate::describe::describe;
use crate::frames::frames_of;
use crate::guilty::guilty_file;
use crate::kind::crash_type;
use crate::locate::{collect, first_oops};
use crate::table::OOPSES;
use crate::title::clean_title;

/// Printed by GCE's serial console when it drops the connection, often
/// right after a panic: the report is probably cut.
const CONSOLE_HANGUP: &str = "serialport: VM disconnected.";

/// Parses a cleaned console; offsets in the result are in the raw log.
pub(crate) fn parse_console(con: &Console<'_>) -> Option<Report> {
    parse_console_detailed(con).map(|p| p.report)
}

/// A report and whether its title may still change with more text.
pub(crate) struct Parsed {
    pub report: Report,
    /// The guilty frame was chosen by a fallback rule only because the
    /// text ended early (see [`crate::stack::KeyFrames::tentative`]).
    pub tentative: bool,
}

/// [`parse_console`], also telling whether the title is tentative.
pub(crate) fn parse_console_detailed(con: &Console<'_>) -> Option<Parsed> {
    let text = con.text();
    let start = first_oops(text)?;
    let oops = &OOPSES[start.oops];
    let found = collect(text, &start);
    let mut prefix = found.prefix;
    let mut body: &str = &found.report;
    let mut desc = describe(&found.report[..found.report_end], oops);
    let end_pos = found.end_pos.max(start.line_end);
    if desc.title.is_empty() {
        // The header went missing from the stripped lines (a questionable
        // marker cut the line): name the raw lines instead.
        prefix.clear();
        body = &text[start.pos..end_pos];
        desc = describe(body, oops);
        if desc.title.is_empty() {
            desc.title = text[start.pos..start.line_end].to_owned();
        }
    }
    let mut corrupted = desc.corrupted.map(str::to_owned);
    if corrupted.is_none() {
        corrupted = corrupted_reason(&desc.title, body, desc.format).map(str::to_owned);
    }
    if text.contains(CONSOLE_HANGUP) {
        corrupted.get_or_insert_with(|| "console connection was lost".to_owned());
    }
    let title = clean_title(&desc.title);
    let mut alt_titles: Vec<String> = desc.alt_titles.iter().map(|t| clean_title(t)).collect();
    // syzkaller keeps them in the order its formats produce them, and its
    // tests and fixtures compare them sorted: a stable order for callers.
    alt_titles.sort_unstable();
    let mut report_text = String::with_capacity(body.len() + prefix.iter().map(|p| p.len() + 1).sum::<usize>());
    for line in &prefix {
        report_text.push_str(line);
        report_text.push('\n');
    }
    let context_len = report_text.len();
    report_text.push_str(body);
    let guilty_file = guilty_file(&title, body);
    let report = Report {
        crash_type: crash_type(&title).to_owned(),
        title,
        alt_titles,
        corrupted: corrupted.is_some(),
        corrupted_reason: corrupted,
        start: con.raw_offset(start.pos),
        end: con.raw_offset(end_pos),
        guilty_file,
        frames: frames_of(&report_text),
        text: report_text,
        context_len,
    };
    Some(Parsed { report, tentative: desc.tentative })
}
