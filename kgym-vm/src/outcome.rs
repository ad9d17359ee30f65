//! From boots to a verdict: crash groups ranked real-before-special, kGym's
//! image ability and message, and the conversion to the stage result.

use std::collections::HashMap;

use kgym_core::ArtifactKey;
use kgym_core::stage::reproduce::{CrashKind, CrashSummary, ImageAbility, Incident, ReproduceResult};
use serde::{Deserialize, Serialize};

use crate::report::Report;
use crate::runner::RunOutput;

/// Verdicts about the test machine rather than the kernel (syzkaller's
/// special titles, plus `kernel did not boot`).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
#[non_exhaustive]
pub enum SpecialCrash {
    /// The console stayed silent for the no-output timeout.
    NoOutput,
    /// The VM or the SSH session went away without a crash report.
    LostConnection,
    /// kGym's `test machine is not executing programs`. kgym does not
    /// produce it: syzkaller merged it into `no output from test machine`
    /// in 2017 (its `vm/vm.go`), and kgym follows syzkaller; kept so older
    /// results still read.
    NotExecuting,
    /// The kernel never reached userspace (the console tail says why).
    DidNotBoot,
}

impl SpecialCrash {
    /// The title, exactly as syzkaller (and kGym) write it.
    pub fn title(self) -> &'static str {
        match self {
            Self::NoOutput => "no output from test machine",
            Self::LostConnection => "lost connection to test machine",
            Self::NotExecuting => "test machine is not executing programs",
            Self::DidNotBoot => "kernel did not boot",
        }
    }
}

/// How one boot ended.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(tag = "type", rename_all = "snake_case")]
#[non_exhaustive]
pub enum BootEnd {
    /// A kernel crash report.
    Crash {
        /// Its title.
        title: String,
    },
    /// A special verdict.
    Special {
        /// Which.
        special: SpecialCrash,
    },
    /// The run's budget ran out while the VM was fine.
    BudgetEnded,
    /// The stop policy ended the run (another instance crashed).
    Stopped,
}

/// One boot of one instance.
#[derive(Clone, Serialize, Deserialize)]
pub struct BootRecord {
    /// The instance (0-based).
    pub instance: u32,
    /// The boot of that instance (0-based).
    pub run: u32,
    /// Seconds from the run's start to this boot's start.
    pub started: f64,
    /// Seconds from the run's start to the VM being stopped.
    pub ended: f64,
    /// Seconds from this boot's start to userspace, when reached.
    pub userspace_after: Option<f64>,
    /// Seconds from the run's start to the crash (report start or special
    /// verdict), for crashes.
    pub crash_at: Option<f64>,
    /// How it ended.
    pub end: BootEnd,
    /// Seconds from the moment the end was known to QEMU being gone: for a
    /// crash report, from the host's read time of the last console line
    /// the report had (the line that completed it); else from the watchdog,
    /// budget or QEMU event that ended the boot.
    pub stop_seconds: f64,
    /// The crash report (symbolized when a vmlinux was given), also for a
    /// kernel that panicked before userspace.
    pub report: Option<Report>,
    /// The console log (serial output, plus the SSH session's output in
    /// disk-image mode).
    #[serde(skip)]
    pub log: Vec<u8>,
}

impl std::fmt::Debug for BootRecord {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        // The log is megabytes: show its size, not its bytes.
        f.debug_struct("BootRecord")
            .field("instance", &self.instance)
            .field("run", &self.run)
            .field("started", &self.started)
            .field("ended", &self.ended)
            .field("userspace_after", &self.userspace_after)
            .field("crash_at", &self.crash_at)
            .field("end", &self.end)
            .field("stop_seconds", &self.stop_seconds)
            .field("report", &self.report.as_ref().map(|r| &r.title))
            .field("log_bytes", &self.log.len())
            .finish()
    }
}

impl BootRecord {
    /// The crash title and kind, when the boot ended in one.
    pub fn crash(&self) -> Option<(&str, CrashKind)> {
        match &self.end {
            BootEnd::Crash { title } => Some((title, CrashKind::Crash)),
            BootEnd::Special { special } => Some((special.title(), CrashKind::Special)),
            BootEnd::BudgetEnded | BootEnd::Stopped => None,
        }
    }

    /// Whether the boot reached userspace.
    pub fn came_up(&self) -> bool {
        self.userspace_after.is_some()
    }
}

/// A distinct crash title and the boots that showed it.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct CrashGroup {
    /// The title.
    pub title: String,
    /// Crash or special.
    pub kind: CrashKind,
    /// The crash type from the first report (`KASAN`, `WARNING`, ...).
    pub crash_type: Option<String>,
    /// Whether the first report was judged corrupted.
    pub corrupted: bool,
    /// syzkaller's alternative titles of the first report.
    #[serde(default)]
    pub alt_titles: Vec<String>,
    /// The file syzkaller blames for the first report.
    #[serde(default)]
    pub guilty_file: Option<String>,
    /// Indices into [`RunOutput::boots`].
    pub boots: Vec<usize>,
    /// Seconds from the run's start to the first occurrence.
    pub first_at: f64,
}

/// Groups crashing boots by title: real crashes first, then special ones,
/// each in the order they first happened.
pub fn group_crashes(boots: &[BootRecord]) -> Vec<CrashGroup> {
    let mut groups: Vec<CrashGroup> = Vec::new();
    for (i, b) in boots.iter().enumerate() {
        let Some((title, kind)) = b.crash() else { continue };
        let at = b.crash_at.unwrap_or(b.ended);
        if let Some(g) = groups.iter_mut().find(|g| g.title == title && g.kind == kind) {
            g.boots.push(i);
            g.first_at = g.first_at.min(at);
        } else {
            let report = b.report.as_ref().filter(|_| kind == CrashKind::Crash);
            groups.push(CrashGroup {
                title: title.to_owned(),
                kind,
                crash_type: report.map(|r| r.crash_type.clone()),
                corrupted: report.is_some_and(|r| r.corrupted),
                alt_titles: report.map(|r| r.alt_titles.clone()).unwrap_or_default(),
                guilty_file: report.and_then(|r| r.guilty_file.clone()),
                boots: vec![i],
                first_at: at,
            });
        }
    }
    groups.sort_by(|a, b| {
        let rank = |k: CrashKind| u8::from(k == CrashKind::Special);
        rank(a.kind).cmp(&rank(b.kind)).then(a.first_at.total_cmp(&b.first_at))
    });
    groups
}

/// kGym's image ability: `error` when no instance came up; `warning` when
/// every instance that came up hit crashes and all of them were special
/// (boots cut by the budget or the stop policy hit nothing); else `normal`.
pub fn image_ability(boots: &[BootRecord]) -> ImageAbility {
    #[derive(Default)]
    struct Seen {
        up: bool,
        real: bool,
        special: bool,
    }
    let mut per_instance: HashMap<u32, Seen> = HashMap::new();
    for b in boots {
        let e = per_instance.entry(b.instance).or_default();
        e.up |= b.came_up();
        match b.crash() {
            Some((_, CrashKind::Crash)) => e.real = true,
            Some((_, CrashKind::Special)) if b.came_up() => e.special = true,
            _ => {}
        }
    }
    let up: Vec<&Seen> = per_instance.values().filter(|s| s.up).collect();
    if up.is_empty() {
        ImageAbility::Error
    } else if up.iter().all(|s| s.special && !s.real) {
        ImageAbility::Warning
    } else {
        ImageAbility::Normal
    }
}

/// kGym's message for a set of crash groups.
pub fn message(groups: &[CrashGroup]) -> &'static str {
    if groups.iter().any(|g| g.kind == CrashKind::Crash) {
        "Crashes"
    } else if groups.is_empty() {
        "No crash reproduced"
    } else {
        "Special crashes"
    }
}

/// The picked title: the first real crash, else the first special one.
pub fn picked_title(groups: &[CrashGroup]) -> Option<String> {
    groups.first().map(|g| g.title.clone())
}

/// The stage result of a run. `incidents` gives the stored log and report
/// keys of each crashing boot, by (instance, run); boots without keys are
/// left out of the incidents.
pub fn to_reproduce_result(
    out: &RunOutput,
    incidents: &HashMap<(u32, u32), (ArtifactKey, Option<ArtifactKey>)>,
) -> ReproduceResult {
    let crashes = out
        .crashes
        .iter()
        .map(|g| CrashSummary {
            title: g.title.clone(),
            kind: g.kind,
            crash_type: g.crash_type.clone(),
            corrupted: g.corrupted,
            alt_titles: g.alt_titles.clone(),
            guilty_file: g.guilty_file.clone(),
            incidents: g
                .boots
                .iter()
                .filter_map(|&i| {
                    let b = out.boots.get(i)?;
                    let (log, report) = incidents.get(&(b.instance, b.run))?;
                    Some(Incident {
                        instance: b.instance,
                        run: b.run,
                        log: log.clone(),
                        report: report.clone(),
                        seconds: b.crash_at.unwrap_or(b.ended),
                    })
                })
                .collect(),
        })
        .collect();
    ReproduceResult {
        crashed: out.crashed,
        title: out.title.clone(),
        crashes,
        image_ability: out.image_ability,
        accel: out.accel,
        message: out.message.clone(),
        boots: out.boots.len() as u32,
        seconds: out.seconds,
        syzkaller_commit: out.syzkaller_commit.clone(),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn boot(instance: u32, run: u32, up: bool, end: BootEnd, at: f64) -> BootRecord {
        BootRecord {
            instance,
            run,
            started: 0.0,
            ended: at + 1.0,
            userspace_after: up.then_some(2.0),
            crash_at: Some(at),
            end,
            stop_seconds: 0.1,
            report: None,
            log: Vec::new(),
        }
    }

    fn crash(t: &str) -> BootEnd {
        BootEnd::Crash { title: t.into() }
    }

    fn special(s: SpecialCrash) -> BootEnd {
        BootEnd::Special { special: s }
    }

    #[test]
    fn real_crashes_rank_before_specials_even_when_later() {
        let boots = vec![
            boot(0, 0, true, special(SpecialCrash::LostConnection), 1.0),
            boot(1, 0, true, special(SpecialCrash::NoOutput), 2.0),
            boot(0, 1, true, crash("KASAN: use-after-free Read in f"), 9.0),
            boot(1, 1, true, crash("WARNING in g"), 5.0),
            boot(1, 2, true, crash("WARNING in g"), 7.0),
        ];
        let g = group_crashes(&boots);
        let titles: Vec<_> = g.iter().map(|g| g.title.as_str()).collect();
        assert_eq!(
            titles,
            [
                "WARNING in g",
                "KASAN: use-after-free Read in f",
                "lost connection to test machine",
                "no output from test machine"
            ]
        );
        assert_eq!(g[0].boots, vec![3, 4]);
        assert_eq!(picked_title(&g).as_deref(), Some("WARNING in g"));
        assert_eq!(message(&g), "Crashes");
    }

    #[test]
    fn budget_and_stop_ends_are_not_crashes() {
        let boots = vec![boot(0, 0, true, BootEnd::BudgetEnded, 1.0), boot(1, 0, true, BootEnd::Stopped, 1.0)];
        let g = group_crashes(&boots);
        assert!(g.is_empty());
        assert_eq!(message(&g), "No crash reproduced");
        assert_eq!(image_ability(&boots), ImageAbility::Normal);
    }

    #[test]
    fn image_ability_follows_kgym_rules() {
        // No instance came up: error.
        let none_up = vec![
            boot(0, 0, false, special(SpecialCrash::DidNotBoot), 1.0),
            boot(1, 0, false, special(SpecialCrash::DidNotBoot), 1.0),
        ];
        assert_eq!(image_ability(&none_up), ImageAbility::Error);
        assert_eq!(message(&group_crashes(&none_up)), "Special crashes");
        // Those that came up only hit special crashes: warning.
        let specials = vec![
            boot(0, 0, false, special(SpecialCrash::DidNotBoot), 1.0),
            boot(1, 0, true, special(SpecialCrash::LostConnection), 1.0),
            boot(1, 1, true, special(SpecialCrash::NoOutput), 3.0),
        ];
        assert_eq!(image_ability(&specials), ImageAbility::Warning);
        // One instance ran normally: normal.
        let mut mixed = specials.clone();
        mixed.push(boot(2, 0, true, crash("BUG: x"), 4.0));
        assert_eq!(image_ability(&mixed), ImageAbility::Normal);
        // A boot cut by the budget hit nothing: the special crash before it
        // is still all the instance hit.
        let cut = vec![
            boot(0, 0, true, special(SpecialCrash::LostConnection), 1.0),
            boot(0, 1, true, BootEnd::BudgetEnded, 9.0),
        ];
        assert_eq!(image_ability(&cut), ImageAbility::Warning);
        // An instance that hit nothing at all is a normal one.
        let mut quiet = cut.clone();
        quiet.push(boot(1, 0, true, BootEnd::BudgetEnded, 9.0));
        assert_eq!(image_ability(&quiet), ImageAbility::Normal);
    }

    #[test]
    fn results_carry_incident_keys() {
        let boots = vec![boot(0, 0, true, crash("BUG: x"), 3.5), boot(0, 1, true, BootEnd::BudgetEnded, 9.0)];
        let crashes = group_crashes(&boots);
        let out = RunOutput {
            crashed: true,
            title: picked_title(&crashes),
            message: message(&crashes).into(),
            image_ability: image_ability(&boots),
            crashes,
            boots,
            accel: kgym_core::stage::reproduce::Accel::Tcg,
            accel_reason: String::new(),
            seconds: 10.0,
            syzkaller_commit: None,
        };
        let log = ArtifactKey::parse("jobs/00000001/1_reproduce/incidents/0-0/log").unwrap();
        let mut keys = HashMap::new();
        keys.insert((0, 0), (log.clone(), None));
        let r = to_reproduce_result(&out, &keys);
        assert_eq!(r.boots, 2);
        assert_eq!(r.crashes[0].incidents[0].log, log);
        assert_eq!(r.crashes[0].incidents[0].seconds, 3.5);
        assert_eq!(r.title.as_deref(), Some("BUG: x"));
    }

    #[test]
    fn results_carry_alt_titles_and_the_guilty_file_of_the_first_report() {
        let log = b"[ 1.0] BUG: KASAN: use-after-free in ext4_xattr_set+0x12/0x40 fs/ext4/xattr.c:12\n\
                    [ 1.1] Read of size 8 at addr ffff888012345678 by task repro/100\n";
        let report = crate::report::parse(log).expect("a crash");
        let title = report.title.clone();
        let mut crashed = boot(0, 0, true, crash(&title), 2.0);
        crashed.report = Some(report);
        let boots = vec![crashed, boot(1, 0, true, special(SpecialCrash::NoOutput), 3.0)];
        let crashes = group_crashes(&boots);
        let out = RunOutput {
            crashed: true,
            title: picked_title(&crashes),
            message: message(&crashes).into(),
            image_ability: image_ability(&boots),
            crashes,
            boots,
            accel: kgym_core::stage::reproduce::Accel::Tcg,
            accel_reason: String::new(),
            seconds: 10.0,
            syzkaller_commit: None,
        };
        let r = to_reproduce_result(&out, &HashMap::new());
        assert_eq!(r.crashes[0].title, title);
        assert_eq!(r.crashes[0].alt_titles, ["bad-access in ext4_xattr_set"]);
        assert_eq!(r.crashes[0].guilty_file.as_deref(), Some("fs/ext4/xattr.c"));
        // Special crashes have no report: nothing derived.
        assert!(r.crashes[1].alt_titles.is_empty() && r.crashes[1].guilty_file.is_none());
        // Old results without the fields still parse.
        let mut old = serde_json::to_value(&r).expect("serializes");
        for c in old["crashes"].as_array_mut().expect("crashes") {
            let c = c.as_object_mut().expect("object");
            c.remove("alt_titles");
            c.remove("guilty_file");
        }
        let back: ReproduceResult = serde_json::from_value(old).expect("old result parses");
        assert!(back.crashes[0].alt_titles.is_empty() && back.crashes[0].guilty_file.is_none());
    }
}
