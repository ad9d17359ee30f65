//! Naming a report: choosing the title rule that matches earliest and
//! filling its template with captures and guilty frames.

use crate::skip::STRIP_PREFIXES;
use crate::stack::{KeyFrame, key_frames};
use crate::table::{Format, Oops};

/// Why a report with a recognised title is corrupted: its frames were not found.
pub(crate) const NO_FRAMES: &str = "extracted no frames";

/// The title of a report before clean-up, and what came with it.
#[derive(Debug)]
pub(crate) struct Description {
    /// Empty when the report text has no line with the header at all.
    pub title: String,
    pub alt_titles: Vec<String>,
    pub corrupted: Option<&'static str>,
    /// The rule that named the report (none: titled by its raw line).
    pub format: Option<&'static Format>,
    /// The frames may change when more of the report is seen.
    pub tentative: bool,
}

/// Names `text` (a report starting at its header line) with the rules of `oops`.
pub(crate) fn describe(text: &str, oops: &'static Oops) -> Description {
    let mut best_pos = text.len();
    let mut title = String::new();
    let mut alt_titles: Vec<String> = Vec::new();
    let mut corrupted = None;
    let mut format = None;
    let mut matched_title = false;
    let mut tentative = false;
    for f in &oops.formats {
        let Some(m) = f.title.find(text) else { continue };
        if m.start() > best_pos || (m.start() == best_pos && !title.is_empty()) {
            continue;
        }
        if m.start() < best_pos {
            title.clear();
            format = None;
            best_pos = m.start();
        }
        matched_title = true;
        let caps = match &f.report {
            Some(report) => match report.captures(text) {
                Some(c) => c,
                None => continue,
            },
            None => f.title.captures_at(text, m.start()).expect("title matched"),
        };
        let captured: Vec<String> =
            caps.iter().skip(1).map(|g| g.map_or(String::new(), |g| g.as_str().to_owned())).collect();
        let from = caps.get(0).map_or(0, |g| g.start());
        corrupted = None;
        let mut frames = Vec::new();
        tentative = false;
        if let Some(rule) = &f.stack {
            let keys = key_frames(rule, &text[from..]);
            if !keys.ok {
                corrupted = Some(NO_FRAMES);
            }
            tentative = keys.tentative;
            frames = keys.frames;
        }
        let args: Vec<&str> =
            captured.iter().map(String::as_str).chain(frames.iter().map(|k| k.canonical.as_str())).collect();
        title = render(f.fmt, &args);
        alt_titles.extend(f.alt.iter().map(|a| render(a, &args)));
        // Titles with the frames as printed, and with each syscall prefix
        // removed, help match reports from other arches and kernels.
        for list in partially_stripped(&frames) {
            let args: Vec<&str> = captured.iter().map(String::as_str).chain(list.iter().copied()).collect();
            let t = render(f.fmt, &args);
            if t != title {
                alt_titles.push(t);
            }
            alt_titles.extend(f.alt.iter().map(|a| render(a, &args)));
        }
        dedup_keep_order(&mut alt_titles);
        format = Some(f);
    }
    if title.is_empty() {
        if matched_title {
            corrupted = Some("matched title but not report regexp");
        }
        if let Some(pos) = text.find(oops.header) {
            let end = text[pos..].find('\n').map_or(text.len(), |i| pos + i);
            title = text[pos..end].to_owned();
        }
    }
    if corrupted.is_none() && format.is_some_and(|f| f.corrupted) {
        corrupted = Some("report format is marked as corrupted");
    }
    Description { title, alt_titles, corrupted, format, tentative }
}

/// The raw frame names, then for each syscall prefix that some frame has,
/// the names with that prefix removed.
fn partially_stripped(frames: &[KeyFrame]) -> Vec<Vec<&str>> {
    let mut out = vec![frames.iter().map(|k| k.raw.as_str()).collect()];
    for prefix in STRIP_PREFIXES {
        if frames.iter().any(|k| k.raw.starts_with(prefix)) {
            out.push(frames.iter().map(|k| k.raw.strip_prefix(prefix).unwrap_or(&k.raw)).collect());
        }
    }
    out
}

fn dedup_keep_order(v: &mut Vec<String>) {
    let mut seen = std::collections::HashSet::new();
    v.retain(|s| seen.insert(s.clone()));
}

/// Fills `{N}` (1-based) in a template. A missing argument renders as Go's
/// `fmt` does (`%!v(BADINDEX)`), so titles stay comparable with syzkaller's.
pub(crate) fn render(template: &str, args: &[&str]) -> String {
    let mut out = String::with_capacity(template.len() + 32);
    let mut rest = template;
    while let Some(open) = rest.find('{') {
        let Some(close) = rest[open..].find('}').map(|c| open + c) else {
            break;
        };
        let Ok(n) = rest[open + 1..close].parse::<usize>() else {
            out.push_str(&rest[..=open]);
            rest = &rest[open + 1..];
            continue;
        };
        out.push_str(&rest[..open]);
        match n.checked_sub(1).and_then(|i| args.get(i)) {
            Some(a) => out.push_str(a),
            None => out.push_str("%!v(BADINDEX)"),
        }
        rest = &rest[close + 1..];
    }
    out.push_str(rest);
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn renders_templates() {
        assert_eq!(render("KASAN: {1} {3} in {4}", &["uaf", "f", "Read", "g"]), "KASAN: uaf Read in g");
        assert_eq!(render("x {2}", &["a"]), "x %!v(BADINDEX)");
        assert_eq!(render("BUG: using {1}() in", &["smp_processor_id"]), "BUG: using smp_processor_id() in");
        assert_eq!(render("[{1} of {2}]", &["unmount", "ext4"]), "[unmount of ext4]");
    }
}
