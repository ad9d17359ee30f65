//! syzkaller's own report fixtures: exact titles, types, corruption and
//! alternative titles, reported as accuracies with the list of misses.

mod common;

use common::{Fixture, load_all};

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
    fn accuracy(&self) -> f64 {
        if self.checked == 0 { 1.0 } else { 1.0 - self.misses.len() as f64 / self.checked as f64 }
    }
    fn print(&self) {
        println!(
            "{}: {}/{} = {:.2}%",
            self.what,
            self.checked - self.misses.len(),
            self.checked,
            100.0 * self.accuracy()
        );
        for m in &self.misses {
            println!("  miss {m}");
        }
    }
}

#[test]
fn syzkaller_fixtures() {
    let fixtures = load_all();
    assert!(fixtures.len() >= 500, "expected the 500 fixtures, found {}", fixtures.len());
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
        let mut got_alts = got.alt_titles.clone();
        got_alts.sort();
        alts.check(fx, got_alts == fx.alt_titles, || format!("want {:?}, got {got_alts:?}", fx.alt_titles));
        if let Some(want_text) = &fx.report {
            texts.check(fx, &got.text == want_text, || "text differs".to_owned());
        }
    }
    for t in [&titles, &no_crash, &types, &corrupted, &alts, &texts] {
        t.print();
    }
    assert!(no_crash.misses.is_empty(), "crashes reported on no-crash logs");
    assert!(titles.accuracy() >= 0.95, "title accuracy below 95%");
    assert!(types.accuracy() >= 0.97, "crash type accuracy below 97%");
    assert!(corrupted.accuracy() >= 0.95, "corrupted flag accuracy below 95%");
    assert!(alts.accuracy() >= 0.95, "alternative title accuracy below 95%");
    assert!(texts.misses.is_empty(), "report texts differ from syzkaller's");
}
