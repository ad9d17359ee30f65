//! syzkaller's own report fixtures, every one exact: titles, alternative
//! titles (in syzkaller's order), crash types, corruption, report texts,
//! and no report at all on the logs without a crash. One regressed fixture
//! fails the test, with the list of every miss.

mod common;

use common::{Fixture, load_all};

/// The fixture set the README's numbers are about: 500 logs, 478 with a
/// crash. A loader that silently skips files would fail here.
const FIXTURES: usize = 500;
const WITH_CRASH: usize = 478;

struct Tally {
    what: &'static str,
    checked: usize,
    misses: Vec<String>,
}

impl Tally {
    fn new(what: &'static str) -> Self {
        Self { what, checked: 0, misses: Vec::new() }
    }
    fn check(&mut self, fx: &Fixture, ok: bool, detail: impl FnOnce() -> String) {
        self.checked += 1;
        if !ok {
            self.misses.push(format!("{}: {}", fx.name, detail()));
        }
    }
    fn summary(&self) -> String {
        let mut s = format!("{}: {}/{}", self.what, self.checked - self.misses.len(), self.checked);
        for m in &self.misses {
            s.push_str(&format!("\n  miss {m}"));
        }
        s
    }
}

#[test]
fn every_syzkaller_fixture_is_exact() {
    let fixtures = load_all();
    assert_eq!(fixtures.len(), FIXTURES, "fixture files found");
    assert_eq!(fixtures.iter().filter(|f| f.title.is_some()).count(), WITH_CRASH, "fixtures with a TITLE:");
    let mut titles = Tally::new("exact titles");
    let mut no_crash = Tally::new("no-crash logs without a report");
    let mut types = Tally::new("crash types");
    let mut corrupted = Tally::new("corrupted flags");
    let mut alts = Tally::new("alternative titles");
    let mut texts = Tally::new("report texts (REPORT: sections)");
    for fx in &fixtures {
        let got = kgym_report::parse(&fx.log);
        let Some(want) = &fx.title else {
            no_crash.check(fx, got.is_none(), || format!("reported {:?}", got.as_ref().map(|r| &r.title)));
            continue;
        };
        let Some(got) = got else {
            titles.check(fx, false, || format!("want {want:?}, got no crash"));
            continue;
        };
        titles.check(fx, &got.title == want, || format!("want {want:?}, got {:?}", got.title));
        let want_type = fx.crash_type.as_deref().unwrap_or(kgym_report::UNKNOWN_TYPE);
        types.check(fx, got.crash_type == want_type, || format!("want {want_type}, got {}", got.crash_type));
        corrupted.check(fx, got.corrupted == fx.corrupted, || {
            format!("want {}, got {} ({:?})", fx.corrupted, got.corrupted, got.corrupted_reason)
        });
        // Compared as given: the parser sorts them as syzkaller's tests do.
        alts.check(fx, got.alt_titles == fx.alt_titles, || {
            format!("want {:?}, got {:?}", fx.alt_titles, got.alt_titles)
        });
        if let Some(want_text) = &fx.report {
            texts.check(fx, &got.text == want_text, || "text differs".to_owned());
        }
    }
    let all = [&titles, &no_crash, &types, &corrupted, &alts, &texts];
    for t in all {
        println!("{}", t.summary());
    }
    assert_eq!(titles.checked, WITH_CRASH);
    assert_eq!(no_crash.checked, FIXTURES - WITH_CRASH);
    let failed: Vec<String> = all.iter().filter(|t| !t.misses.is_empty()).map(|t| t.summary()).collect();
    assert!(failed.is_empty(), "fixtures that differ from syzkaller:\n{}", failed.join("\n"));
}
