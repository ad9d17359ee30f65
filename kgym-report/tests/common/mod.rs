//! Reading syzkaller's report fixtures (format in testdata/syzkaller-reports/NOTICE.md).

#![allow(dead_code)]

use std::path::{Path, PathBuf};

/// One fixture: a console log and what syzkaller says about it.
#[derive(Debug, Clone)]
pub struct Fixture {
    pub name: String,
    /// `None`: no crash expected.
    pub title: Option<String>,
    pub alt_titles: Vec<String>,
    /// `None` when the header is absent (syzkaller's unknown type).
    pub crash_type: Option<String>,
    pub corrupted: bool,
    pub log: Vec<u8>,
    /// The expected report text, for fixtures that have a `REPORT:` section.
    pub report: Option<String>,
}

pub fn fixtures_dir() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).join("testdata/syzkaller-reports")
}

/// All fixtures, sorted by name.
pub fn load_all() -> Vec<Fixture> {
    let mut names: Vec<String> = std::fs::read_dir(fixtures_dir())
        .expect("fixture directory exists")
        .map(|e| e.expect("readable entry").file_name().to_string_lossy().into_owned())
        .filter(|n| !n.is_empty() && n.bytes().all(|b| b.is_ascii_digit()))
        .collect();
    names.sort_by_key(|n| n.parse::<u32>().unwrap_or(0));
    names.into_iter().map(|n| load(&n)).collect()
}

pub fn load(name: &str) -> Fixture {
    let data = std::fs::read(fixtures_dir().join(name)).expect("readable fixture");
    // Like syzkaller's test, carriage returns go (its log merger drops them).
    let data: Vec<u8> = data.into_iter().filter(|&b| b != b'\r').collect();
    let mut fx = Fixture {
        name: name.to_owned(),
        title: None,
        alt_titles: Vec::new(),
        crash_type: None,
        corrupted: false,
        log: Vec::new(),
        report: None,
    };
    let mut lines = data.split(|&b| b == b'\n').peekable();
    for line in lines.by_ref() {
        if line.is_empty() {
            break;
        }
        let line = String::from_utf8_lossy(line);
        if let Some(v) = line.strip_prefix("TITLE: ") {
            fx.title = Some(v.to_owned());
        } else if let Some(v) = line.strip_prefix("ALT: ") {
            fx.alt_titles.push(v.to_owned());
        } else if let Some(v) = line.strip_prefix("TYPE: ") {
            fx.crash_type = Some(v.to_owned());
        } else if let Some(v) = line.strip_prefix("CORRUPTED: ") {
            fx.corrupted = v == "Y";
        }
    }
    let mut prev_empty = false;
    let mut report: Option<String> = None;
    let body: Vec<&[u8]> = lines.collect();
    // The split leaves one empty piece after a final newline.
    let n = if body.last().is_some_and(|l| l.is_empty()) { body.len() - 1 } else { body.len() };
    for line in &body[..n] {
        if let Some(r) = &mut report {
            r.push_str(&String::from_utf8_lossy(line));
            r.push('\n');
            continue;
        }
        if prev_empty && *line == b"REPORT:" {
            report = Some(String::new());
            continue;
        }
        fx.log.extend_from_slice(line);
        fx.log.push(b'\n');
        prev_empty = line.is_empty();
    }
    fx.report = report;
    fx.alt_titles.sort();
    fx
}
