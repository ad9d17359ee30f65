//! syzkaller's guilty-file fixtures (testdata/syzkaller-guilty): every
//! report blames exactly the file syzkaller blames.
//!
//! The reports are already symbolized (`func+0x1/0x2 path/file.c:123`).
//! Like syzkaller's `TestGuiltyFile`, each is parsed, and the guilty file
//! is taken from the parsed report without its context lines; where parsing
//! cut the report short (a duplicated crash line from an inlined frame
//! looks like a second report), the whole input stands in for the report
//! text, as syzkaller's test does.

use std::path::{Path, PathBuf};

/// The 40 fixtures of the set; a loader that skips files fails here.
const FIXTURES: usize = 40;

fn fixtures_dir() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).join("testdata/syzkaller-guilty")
}

/// The fixture's `FILE:` header and its report.
fn load(path: &Path) -> (String, String) {
    let data = std::fs::read_to_string(path).unwrap_or_else(|e| panic!("read {}: {e}", path.display()));
    let (header, report) = data.split_once("\n\n").unwrap_or_else(|| panic!("{}: no empty line", path.display()));
    let file = header
        .lines()
        .map(str::trim)
        .filter(|l| !l.is_empty() && !l.starts_with('#'))
        .find_map(|l| l.strip_prefix("FILE:"))
        .unwrap_or_else(|| panic!("{}: no FILE: header", path.display()));
    (file.trim().to_owned(), report.to_owned())
}

#[test]
fn every_guilty_file_fixture_blames_syzkallers_file() {
    let mut names: Vec<String> = std::fs::read_dir(fixtures_dir())
        .expect("fixture directory exists")
        .map(|e| e.expect("readable entry").file_name().to_string_lossy().into_owned())
        .filter(|n| n.bytes().all(|b| b.is_ascii_digit()))
        .collect();
    names.sort_by_key(|n| n.parse::<u32>().unwrap_or(0));
    assert_eq!(names.len(), FIXTURES, "guilty fixtures found");
    let mut misses = Vec::new();
    for name in &names {
        let (want, input) = load(&fixtures_dir().join(name));
        let report = kgym_report::parse(input.as_bytes()).unwrap_or_else(|| panic!("{name}: no crash found"));
        let whole_input = !input.ends_with(&report.text);
        let got = if whole_input {
            // syzkaller's test: the whole input, past the context length
            // the parse found.
            kgym_report::guilty_file(&report.title, input.get(report.context_len..).unwrap_or(""))
        } else {
            report.guilty_file.clone()
        };
        println!("{name}: {got:?}{}", if whole_input { " (whole input)" } else { "" });
        if got.as_deref() != Some(want.as_str()) {
            misses.push(format!("{name}: want {want:?}, got {got:?} (title {:?})", report.title));
        }
    }
    assert!(misses.is_empty(), "guilty files that differ from syzkaller's:\n{}", misses.join("\n"));
}
