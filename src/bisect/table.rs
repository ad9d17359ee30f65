//! The human-readable form of a [`Bisection`]: a summary and one table row
//! per step.

use std::fmt;

use super::{BisectKind, Bisection, Step, StepRole};

fn short(hash: &str) -> &str {
    &hash[..hash.len().min(12)]
}

fn role(step: &Step) -> &'static str {
    match step.role {
        StepRole::BadEnd => "bad end",
        StepRole::GoodEnd => "good end",
        StepRole::Search => "search",
    }
}

fn build_kind(step: &Step) -> &'static str {
    match (step.reused, step.outcome.warm) {
        (true, _) => "reused",
        (false, Some(true)) => "warm",
        (false, Some(false)) => "cold",
        (false, None) => "-",
    }
}

impl fmt::Display for Bisection {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let kind = match self.kind {
            BisectKind::Cause => "cause",
            BisectKind::Fix => "fix",
        };
        writeln!(
            f,
            "{kind} bisection {} of {}..{} ({} commits)",
            self.id,
            short(&self.good),
            short(&self.bad),
            self.candidates
        )?;
        writeln!(
            f,
            "{:<12}  {:<8}  {:<12}  {:<6}  {:>8}  {:>8}  {:<6}  {:<8}  titles",
            "commit", "role", "verdict", "marked", "build s", "repro s", "build", "job"
        )?;
        for s in &self.steps {
            let mut verdict = s.outcome.verdict.as_str().to_owned();
            if s.outcome.instances > 1 && s.outcome.crashed_instances > 0 {
                verdict = format!("{verdict} {}/{}", s.outcome.crashed_instances, s.outcome.instances);
            }
            if s.flaky {
                verdict.push('*');
            }
            let titles = if s.outcome.titles.is_empty() {
                s.outcome.detail.clone().unwrap_or_default()
            } else {
                s.outcome.titles.join("; ")
            };
            writeln!(
                f,
                "{:<12}  {:<8}  {:<12}  {:<6}  {:>8.1}  {:>8.1}  {:<6}  {}  {titles}",
                short(&s.commit),
                role(s),
                verdict,
                s.marked,
                s.outcome.build_secs,
                s.outcome.reproduce_secs,
                build_kind(s),
                s.job,
            )?;
        }
        if self.steps.iter().any(|s| s.flaky) {
            writeln!(f, "(* crashed in only some instances)")?;
        }
        match &self.culprit {
            Some(c) => {
                let what = match self.kind {
                    BisectKind::Cause => "first commit that crashes",
                    BisectKind::Fix => "first commit that no longer crashes",
                };
                writeln!(f, "{what}: {} {}", c.hash, c.subject)?;
                writeln!(f, "  author {}, {}", c.author, c.date)?;
            }
            None => {
                writeln!(f, "skipped commits leave {} candidates:", self.range.len())?;
                for c in &self.range {
                    writeln!(f, "  {} {}", short(&c.hash), c.subject)?;
                }
            }
        }
        if let Some(t) = &self.original_title {
            writeln!(f, "original crash: {t}")?;
        }
        let others: Vec<&String> = self.titles.iter().filter(|t| Some(*t) != self.original_title.as_ref()).collect();
        if !others.is_empty() {
            writeln!(
                f,
                "other crash titles seen: {}",
                others.iter().map(|t| t.as_str()).collect::<Vec<_>>().join("; ")
            )?;
        }
        write!(f, "{} kernels built, {} steps, confidence {:.2}", self.builds, self.steps.len(), self.confidence)
    }
}
