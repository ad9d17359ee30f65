//! Cause and fix bisection: which commit introduced a crash, which fixed it.
//!
//! [`bisect`] runs over any [`Scheduler`] (the embedded gym or a remote one
//! through `HttpScheduler`): each step is a build + reproduce job tagged
//! with the bisection's id ([`TAG_BISECTION`]), so the steps show up in the
//! API, the dashboard and `kgym status`. git chooses the commits — a real
//! `git bisect --no-checkout` session over the commit graph, merges and
//! skips included — and the builds of one bisection share a warm tree that
//! checks out each commit in place ([`BuildArgs::warm_lineage`]), so a step
//! rebuilds only what changed since the previous one.
//!
//! - The ends are checked first: for a cause bisection the bad (newer) end
//!   must crash and the good (older) one must not; for a fix bisection the
//!   older end must crash and the newer one must not. Otherwise
//!   [`BisectError::WrongEnd`] says which end is wrong.
//! - A commit that does not build or boot is skipped the way `git bisect
//!   skip` does; when skips leave several candidates, the result has no
//!   `culprit` but a `range`.
//! - A crash with another title than the original counts as a crash (for a
//!   cause bisection: bad), and its titles are listed.
//! - With `instances > 1` a step that crashed in only some instances is
//!   marked `flaky`, and [`Bisection::confidence`] says how likely every
//!   "no crash" verdict is right given the crash rate seen.
//! - Steps already run the same way (same commit, config, reproducer) are
//!   reused from earlier jobs unless [`BisectRequest::reuse_steps`] is off.
//!
//! ```no_run
//! use std::time::Duration;
//! use kgym::bisect::{BisectKind, BisectRequest, bisect};
//! use kgym::core::stage::reproduce::Reproducer;
//!
//! # async fn demo() -> Result<(), Box<dyn std::error::Error + Send + Sync>> {
//! let gym = kgym::Gym::embedded("/var/lib/kgym").await?;
//! let req = BisectRequest::new(
//!     BisectKind::Cause,
//!     "/src/linux",      // a local repository or a URL
//!     "v6.0",            // good: does not crash
//!     "v6.1",            // bad: crashes
//!     kgym::samples::config(),
//!     Reproducer::c(kgym::samples::REPRO_C),
//! )
//! .budget(Duration::from_secs(60));
//! let result = bisect(gym.scheduler().as_ref(), &req).await?;
//! println!("{result}"); // a table; serde_json::to_string(&result) for JSON
//! if let Some(c) = &result.culprit {
//!     println!("first bad commit: {} {}", c.hash, c.subject);
//! }
//! gym.shutdown().await;
//! # Ok(()) }
//! ```

mod git;
mod step;
mod table;

use std::path::PathBuf;
use std::time::Duration;

use kgym_core::stage::build::{Arch, KernelConfig};
use kgym_core::stage::reproduce::Reproducer;
use kgym_core::{JobId, JobStatus};
use kgym_sched::types::{Order, TagQuery};
use kgym_sched::{Scheduler, SchedulerExt};
use serde::{Deserialize, Serialize};
use tokio_util::sync::CancellationToken;

#[cfg(doc)]
use kgym_core::stage::build::BuildArgs;

use git::{BisectRepo, Next};
pub use step::{Outcome, TAG_BISECTION, TAG_COMMIT, TAG_FINGERPRINT};

/// More steps than any real history needs (2^64 commits); a guard against
/// a session that never ends.
const MAX_STEPS: usize = 64;

/// What is searched for.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Serialize, Deserialize, clap::ValueEnum)]
#[serde(rename_all = "lowercase")]
pub enum BisectKind {
    /// The first commit on which the reproducer crashes.
    Cause,
    /// The first commit on which the reproducer no longer crashes.
    Fix,
}

/// What a step found on its commit.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Serialize, Deserialize)]
#[serde(rename_all = "kebab-case")]
pub enum Verdict {
    /// A real kernel crash (any title).
    Crash,
    /// The reproducer ran its budget without a crash.
    NoCrash,
    /// The kernel did not compile (skipped).
    BuildFailed,
    /// The kernel did not boot or the reproducer could not run (skipped).
    BootFailed,
    /// kgym itself failed (timeout, lost worker, cancelled): skipped.
    InfraError,
}

impl Verdict {
    /// The name used in tables and JSON.
    pub fn as_str(self) -> &'static str {
        match self {
            Self::Crash => "crash",
            Self::NoCrash => "no-crash",
            Self::BuildFailed => "build-failed",
            Self::BootFailed => "boot-failed",
            Self::InfraError => "infra-error",
        }
    }
}

/// Which end of the range.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum End {
    /// `--good`: the older end.
    Good,
    /// `--bad`: the newer end.
    Bad,
}

impl std::fmt::Display for End {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(match self {
            Self::Good => "good (older)",
            Self::Bad => "bad (newer)",
        })
    }
}

/// Why a bisection could not run or finish.
#[derive(Debug, thiserror::Error)]
pub enum BisectError {
    /// The request itself is wrong.
    #[error("invalid bisection request: {0}")]
    Invalid(String),
    /// A commit is not in the source.
    #[error("commit {commit} is not in the source")]
    UnknownCommit {
        /// The commit as given.
        commit: String,
    },
    /// The good end is not an ancestor of the bad end.
    #[error("the good commit {good} is not an ancestor of the bad commit {bad}")]
    NotAncestor {
        /// The good end.
        good: String,
        /// The bad end.
        bad: String,
    },
    /// An end does not behave as the bisection kind needs.
    #[error("the {end} end {commit} should {expected} but its step says {got}{}", titles_note(.titles))]
    WrongEnd {
        /// Which end.
        end: End,
        /// Its commit.
        commit: String,
        /// What it should do (`crash`, `not crash`).
        expected: &'static str,
        /// What it did.
        got: &'static str,
        /// Crash titles seen on it.
        titles: Vec<String>,
        /// The step job.
        job: JobId,
    },
    /// An end could not be tested (build or boot failed, infra error).
    #[error("the {end} end {commit} cannot be tested: {verdict} ({detail})", verdict = .verdict.as_str())]
    EndUntestable {
        /// Which end.
        end: End,
        /// Its commit.
        commit: String,
        /// What happened.
        verdict: Verdict,
        /// Why.
        detail: String,
        /// The step job.
        job: JobId,
    },
    /// A git command failed.
    #[error("{command}: {stderr}")]
    Git {
        /// The command.
        command: String,
        /// Its stderr's tail.
        stderr: String,
    },
    /// A file operation failed.
    #[error("{}: {source}", path.display())]
    Io {
        /// The path.
        path: PathBuf,
        /// The error.
        source: std::io::Error,
    },
    /// The scheduler refused or failed.
    #[error("scheduler: {0}")]
    Scheduler(#[from] kgym_sched::Error),
    /// The bisection was cancelled (its running step was aborted).
    #[error("bisection cancelled")]
    Cancelled,
    /// git never converged (a guard; should not happen).
    #[error("no answer after {0} steps")]
    TooManySteps(usize),
}

fn titles_note(titles: &[String]) -> String {
    if titles.is_empty() { String::new() } else { format!(" ({})", titles.join("; ")) }
}

/// A bisection to run (see the [module docs](self)).
#[derive(Debug, Clone)]
#[must_use]
pub struct BisectRequest {
    /// Cause or fix.
    pub kind: BisectKind,
    /// A local git repository (path) or a URL the workers can fetch.
    pub source: String,
    /// The older end (cause: does not crash; fix: crashes).
    pub good: String,
    /// The newer end (cause: crashes; fix: does not crash).
    pub bad: String,
    /// The kernel config of every step.
    pub config: KernelConfig,
    /// The reproducer.
    pub reproducer: Reproducer,
    /// Target architecture.
    pub arch: Arch,
    /// VM instances per step (more for flaky reproducers).
    pub instances: u32,
    /// Reproducer time budget per step.
    pub budget: Duration,
    /// The warm-tree lineage the builds share ([`BuildArgs::warm_lineage`]).
    pub lineage: String,
    /// Build every step on the lineage's warm tree (default). Off, each
    /// commit gets a tree of its own: cold builds (for comparison).
    pub warm_trees: bool,
    /// Reuse the result of an earlier job that tested a commit the same way.
    pub reuse_steps: bool,
    /// Where the private git session repository is made (a fresh
    /// subdirectory, removed afterwards). Default: the system's temp dir.
    pub work_dir: Option<PathBuf>,
    /// Stops the bisection (aborting its running step).
    pub cancel: CancellationToken,
}

impl BisectRequest {
    /// A bisection with one instance per step, a 2-minute budget, the
    /// default lineage `bisect` and step reuse on.
    pub fn new(
        kind: BisectKind,
        source: impl Into<String>,
        good: impl Into<String>,
        bad: impl Into<String>,
        config: KernelConfig,
        reproducer: Reproducer,
    ) -> Self {
        Self {
            kind,
            source: source.into(),
            good: good.into(),
            bad: bad.into(),
            config,
            reproducer,
            arch: Arch::default(),
            instances: 1,
            budget: Duration::from_secs(120),
            lineage: "bisect".to_owned(),
            warm_trees: true,
            reuse_steps: true,
            work_dir: None,
            cancel: CancellationToken::new(),
        }
    }

    /// VM instances per step.
    pub fn instances(mut self, n: u32) -> Self {
        self.instances = n.max(1);
        self
    }

    /// Reproducer budget per step.
    pub fn budget(mut self, budget: Duration) -> Self {
        self.budget = budget;
        self
    }

    /// Target architecture.
    pub fn arch(mut self, arch: Arch) -> Self {
        self.arch = arch;
        self
    }

    /// The warm-tree lineage name.
    pub fn lineage(mut self, name: impl Into<String>) -> Self {
        self.lineage = name.into();
        self
    }

    /// Whether steps build on the lineage's warm tree (off: cold builds).
    pub fn warm_trees(mut self, on: bool) -> Self {
        self.warm_trees = on;
        self
    }

    /// Whether earlier jobs of the same step are reused.
    pub fn reuse_steps(mut self, on: bool) -> Self {
        self.reuse_steps = on;
        self
    }

    /// Where the git session repository is made.
    pub fn work_dir(mut self, dir: impl Into<PathBuf>) -> Self {
        self.work_dir = Some(dir.into());
        self
    }

    /// A token that stops the bisection.
    pub fn cancel(mut self, token: CancellationToken) -> Self {
        self.cancel = token;
        self
    }

    /// git's term for a verdict in this kind of bisection (`None`: skip).
    fn term(&self, verdict: Verdict) -> &'static str {
        match (self.kind, verdict) {
            (BisectKind::Cause, Verdict::Crash) | (BisectKind::Fix, Verdict::NoCrash) => "bad",
            (BisectKind::Cause, Verdict::NoCrash) | (BisectKind::Fix, Verdict::Crash) => "good",
            _ => "skip",
        }
    }
}

/// A commit, as the result names it.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct CommitInfo {
    /// Full hash.
    pub hash: String,
    /// First line of the message.
    pub subject: String,
    /// `Name <email>`.
    pub author: String,
    /// Author date, ISO 8601.
    pub date: String,
}

/// Why a step ran.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "kebab-case")]
pub enum StepRole {
    /// Checking the bad (newer) end.
    BadEnd,
    /// Checking the good (older) end.
    GoodEnd,
    /// A commit git chose.
    Search,
}

/// One tested commit.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct Step {
    /// The commit.
    pub commit: String,
    /// Why it was tested.
    pub role: StepRole,
    /// The job that tested it.
    pub job: JobId,
    /// `true` when an earlier job's result was reused (nothing was built).
    pub reused: bool,
    /// What the job found.
    #[serde(flatten)]
    pub outcome: Outcome,
    /// Crashed in some but not all instances.
    pub flaky: bool,
    /// What git was told: `good`, `bad` or `skip` (ends: their role).
    pub marked: String,
}

/// The answer of a bisection.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct Bisection {
    /// The id its step jobs are tagged with ([`TAG_BISECTION`]).
    pub id: String,
    /// Cause or fix.
    pub kind: BisectKind,
    /// The good (older) end, resolved.
    pub good: String,
    /// The bad (newer) end, resolved.
    pub bad: String,
    /// Commits in `good..bad` (the candidates, N).
    pub candidates: u32,
    /// The first bad commit (cause: first crashing; fix: first not
    /// crashing); `None` when skips leave a range.
    pub culprit: Option<CommitInfo>,
    /// The candidates left when skips made the answer ambiguous (else empty).
    pub range: Vec<CommitInfo>,
    /// Every step, in order (the two end checks first).
    pub steps: Vec<Step>,
    /// Kernels built by this bisection (reused steps not counted).
    pub builds: u32,
    /// The crash title of the crashing end.
    pub original_title: Option<String>,
    /// Every distinct crash title seen.
    pub titles: Vec<String>,
    /// How likely every "no crash" verdict is right, given the fraction of
    /// instances that crashed on crashing steps (1.0 when every crashing
    /// step crashed in every instance).
    pub confidence: f64,
}

/// Runs a bisection on `sched` (see the [module docs](self)).
pub async fn bisect(sched: &dyn Scheduler, req: &BisectRequest) -> Result<Bisection, BisectError> {
    bisect_with_progress(sched, req, &mut |_| {}).await
}

/// Like [`bisect`], calling `progress` after each step.
pub async fn bisect_with_progress(
    sched: &dyn Scheduler,
    req: &BisectRequest,
    progress: &mut (dyn FnMut(&Step) + Send),
) -> Result<Bisection, BisectError> {
    if req.source.trim().is_empty() || req.good.trim().is_empty() || req.bad.trim().is_empty() {
        return Err(BisectError::Invalid("source, good and bad must be given".to_owned()));
    }
    let parent = req.work_dir.clone().unwrap_or_else(std::env::temp_dir);
    std::fs::create_dir_all(&parent).map_err(|e| BisectError::Io { path: parent.clone(), source: e })?;
    let scratch = kgym_proc::RemoveOnExit::unique_in(&parent, "bisect-")
        .map_err(|e| BisectError::Io { path: parent.clone(), source: std::io::Error::other(e) })?;
    let (repo, ends) =
        BisectRepo::open(scratch.path(), &req.source, &[&req.good, &req.bad], req.cancel.clone()).await?;
    let (good, bad) = (ends[0].clone(), ends[1].clone());
    if !repo.is_ancestor(&good, &bad).await? || good == bad {
        return Err(BisectError::NotAncestor { good, bad });
    }
    let candidates = repo.count(&good, &bad).await?;
    let id = bisection_id(req.kind);
    let mut run = Run { sched, req, id: id.clone(), steps: Vec::new() };

    let crashing_end = match req.kind {
        BisectKind::Cause => End::Bad,
        BisectKind::Fix => End::Good,
    };
    for (end, commit) in [(End::Bad, &bad), (End::Good, &good)] {
        let role = if end == End::Bad { StepRole::BadEnd } else { StepRole::GoodEnd };
        let step = run.test(commit, role).await?;
        progress(&step);
        let should_crash = end == crashing_end;
        match step.outcome.verdict {
            Verdict::Crash if should_crash => {}
            Verdict::NoCrash if !should_crash => {}
            v @ (Verdict::Crash | Verdict::NoCrash) => {
                return Err(BisectError::WrongEnd {
                    end,
                    commit: commit.clone(),
                    expected: if should_crash { "crash" } else { "not crash" },
                    got: v.as_str(),
                    titles: step.outcome.titles.clone(),
                    job: step.job,
                });
            }
            v => {
                return Err(BisectError::EndUntestable {
                    end,
                    commit: commit.clone(),
                    verdict: v,
                    detail: step.outcome.detail.clone().unwrap_or_default(),
                    job: step.job,
                });
            }
        }
    }

    let mut next = repo.start(&bad, &good).await?;
    let answer = loop {
        match next {
            Next::Test(commit) => {
                if run.steps.len() >= MAX_STEPS {
                    return Err(BisectError::TooManySteps(MAX_STEPS));
                }
                let step = run.test(&commit, StepRole::Search).await?;
                progress(&step);
                next = repo.mark(&step.marked, &commit).await?;
            }
            found @ (Next::Found(_) | Next::Range(_)) => break found,
        }
    };
    let (culprit, range) = match answer {
        Next::Found(hash) => (Some(repo.describe(&hash).await?), Vec::new()),
        Next::Range(hashes) => {
            let mut range = Vec::with_capacity(hashes.len());
            for h in &hashes {
                range.push(repo.describe(h).await?);
            }
            (None, range)
        }
        Next::Test(_) => unreachable!("the loop ends on an answer"),
    };
    let steps = run.steps;
    let original_title = steps
        .iter()
        .find(|s| s.role == if crashing_end == End::Bad { StepRole::BadEnd } else { StepRole::GoodEnd })
        .and_then(|s| s.outcome.titles.first().cloned());
    let mut titles: Vec<String> = Vec::new();
    for s in steps.iter().filter(|s| s.outcome.verdict == Verdict::Crash) {
        for t in &s.outcome.titles {
            if !titles.contains(t) {
                titles.push(t.clone());
            }
        }
    }
    let builds = steps
        .iter()
        .filter(|s| !s.reused && (s.outcome.warm.is_some() || s.outcome.verdict == Verdict::BuildFailed))
        .count() as u32;
    let confidence = confidence(&steps);
    drop(scratch);
    Ok(Bisection {
        id,
        kind: req.kind,
        good,
        bad,
        candidates,
        culprit,
        range,
        steps,
        builds,
        original_title,
        titles,
        confidence,
    })
}

/// The chance that no "no crash" verdict is a missed crash: with crash
/// rate p per instance (seen on crashing steps) and N instances, one such
/// verdict is wrong with probability (1 - p)^N.
fn confidence(steps: &[Step]) -> f64 {
    let crashing = steps.iter().filter(|s| s.outcome.verdict == Verdict::Crash);
    let (crashed, ran) =
        crashing.fold((0u32, 0u32), |(c, r), s| (c + s.outcome.crashed_instances, r + s.outcome.instances));
    if ran == 0 {
        return 0.0;
    }
    let p = f64::from(crashed) / f64::from(ran);
    steps
        .iter()
        .filter(|s| s.outcome.verdict == Verdict::NoCrash)
        .map(|s| 1.0 - (1.0 - p).powi(s.outcome.instances as i32))
        .product()
}

fn bisection_id(kind: BisectKind) -> String {
    let now = std::time::SystemTime::now().duration_since(std::time::UNIX_EPOCH).unwrap_or_default();
    let kind = match kind {
        BisectKind::Cause => "cause",
        BisectKind::Fix => "fix",
    };
    format!("{kind}-{:x}-{:x}", now.as_millis(), std::process::id())
}

/// The state of a running bisection.
struct Run<'a> {
    sched: &'a dyn Scheduler,
    req: &'a BisectRequest,
    id: String,
    steps: Vec<Step>,
}

impl Run<'_> {
    /// Tests `commit` (or reuses an earlier job that did) and records it.
    async fn test(&mut self, commit: &str, role: StepRole) -> Result<Step, BisectError> {
        let (spec, fingerprint) = step::job_for(self.req, &self.id, commit);
        let earlier = if self.req.reuse_steps { self.earlier(&fingerprint).await? } else { None };
        let (job, reused) = match earlier {
            Some(job) => (job, true),
            None => {
                let id = self.sched.submit(spec).await?;
                tokio::select! {
                    job = self.sched.wait(id) => (job?, false),
                    () = self.req.cancel.cancelled() => {
                        let _ = self.sched.abort(id).await;
                        return Err(BisectError::Cancelled);
                    }
                }
            }
        };
        let outcome = step::classify(&job, self.req.instances);
        let flaky = outcome.verdict == Verdict::Crash && outcome.crashed_instances < outcome.instances;
        let marked = match role {
            StepRole::BadEnd => "bad".to_owned(),
            StepRole::GoodEnd => "good".to_owned(),
            StepRole::Search => self.req.term(outcome.verdict).to_owned(),
        };
        let step = Step { commit: commit.to_owned(), role, job: job.id, reused, outcome, flaky, marked };
        self.steps.push(step.clone());
        Ok(step)
    }

    /// The newest finished job with the same stages whose verdict says
    /// something about the commit (not an infra error).
    async fn earlier(&self, fingerprint: &str) -> Result<Option<kgym_core::Job>, BisectError> {
        let mut query = TagQuery::new(TAG_FINGERPRINT, Some(fingerprint.to_owned()));
        query.order = Order::NewestFirst;
        query.limit = 5;
        for m in self.sched.jobs_with_tag(&query).await?.items {
            let job = self.sched.get(m.job).await?;
            if job.status == JobStatus::Finished
                && step::classify(&job, self.req.instances).verdict != Verdict::InfraError
            {
                return Ok(Some(job));
            }
        }
        Ok(None)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn step(verdict: Verdict, crashed: u32, instances: u32) -> Step {
        Step {
            commit: "c".into(),
            role: StepRole::Search,
            job: "00000001".parse().unwrap(),
            reused: false,
            outcome: Outcome {
                verdict,
                titles: Vec::new(),
                crashed_instances: crashed,
                instances,
                build_secs: 0.0,
                reproduce_secs: 0.0,
                warm: Some(true),
                detail: None,
            },
            flaky: crashed > 0 && crashed < instances,
            marked: String::new(),
        }
    }

    #[test]
    fn verdicts_map_to_git_terms_by_kind() {
        let req = |kind| {
            BisectRequest::new(
                kind,
                "s",
                "g",
                "b",
                kgym_core::stage::build::KernelConfig::Full { text: "x".into() },
                Reproducer::c("int main(){}"),
            )
        };
        let (cause, fix) = (req(BisectKind::Cause), req(BisectKind::Fix));
        assert_eq!(cause.term(Verdict::Crash), "bad");
        assert_eq!(cause.term(Verdict::NoCrash), "good");
        assert_eq!(fix.term(Verdict::Crash), "good");
        assert_eq!(fix.term(Verdict::NoCrash), "bad");
        for v in [Verdict::BuildFailed, Verdict::BootFailed, Verdict::InfraError] {
            assert_eq!(cause.term(v), "skip");
            assert_eq!(fix.term(v), "skip");
        }
    }

    #[test]
    fn confidence_follows_the_crash_rate_of_crashing_steps() {
        // Every crashing step crashed in every instance: sure.
        let sure = [step(Verdict::Crash, 2, 2), step(Verdict::NoCrash, 0, 2)];
        assert_eq!(confidence(&sure), 1.0);
        // Half the instances crashed: each 2-instance "no crash" misses
        // with probability 1/4.
        let flaky = [step(Verdict::Crash, 1, 2), step(Verdict::NoCrash, 0, 2), step(Verdict::NoCrash, 0, 2)];
        assert!((confidence(&flaky) - 0.75 * 0.75).abs() < 1e-9, "{}", confidence(&flaky));
        // Skipped steps say nothing either way.
        let skipped = [step(Verdict::Crash, 1, 2), step(Verdict::BuildFailed, 0, 2)];
        assert_eq!(confidence(&skipped), 1.0);
    }
}
