//! The kBench loop end to end, on this machine, in a few minutes:
//!
//! 1. build a real kernel (Debian's linux-source-6.1 by default, or
//!    `--git URL --commit SHA`) with a known bug injected by a patch
//!    (`testdata/bugs/bug.patch`: a use-after-free behind a `prctl`);
//! 2. boot it in QEMU and run the C reproducer: the crash comes back with
//!    its syzkaller title;
//! 3. evaluate a fix: build the same kernel with the fixed patch (the warm
//!    tree makes this a few seconds), re-run the reproducer, print "fixed".
//!
//! Run: `cargo run --release --example quickstart [-- --data DIR]`.

use std::path::PathBuf;
use std::time::{Duration, Instant};

use futures::StreamExt;
use indicatif::{ProgressBar, ProgressStyle};
use kgym::Gym;
use kgym::compose::{PatchVerdict, patch_verdict};
use kgym::core::stage::build::KernelSource;
use kgym::core::stage::reproduce::ReproduceResult;
use kgym::core::{Job, JobSpec};
use kgym::samples::{BUG_PATCH, BUG_TITLE, DEBIAN_KERNEL_TARBALL, FIXED_PATCH, evaluation_job};
use kgym::sched::types::JobEvent;
use kgym::sched::{Scheduler, SchedulerExt};

type BoxError = Box<dyn std::error::Error + Send + Sync>;

struct Options {
    data: PathBuf,
    source: KernelSource,
    budget: Duration,
}

fn parse_args() -> Result<Options, BoxError> {
    let mut data = kgym::default_data_dir();
    let mut git = None;
    let mut commit = None;
    let mut tarball = PathBuf::from(DEBIAN_KERNEL_TARBALL);
    let mut budget = Duration::from_secs(30);
    let mut args = std::env::args().skip(1);
    while let Some(flag) = args.next() {
        let mut value = || args.next().ok_or_else(|| format!("{flag} needs a value"));
        match flag.as_str() {
            "--data" => data = PathBuf::from(value()?),
            "--git" => git = Some(value()?),
            "--commit" => commit = Some(value()?),
            "--tarball" => tarball = PathBuf::from(value()?),
            "--budget" => budget = kgym::core::duration::parse(&value()?)?,
            "-h" | "--help" => {
                println!("usage: quickstart [--data DIR] [--tarball FILE | --git URL --commit SHA] [--budget 30s]");
                std::process::exit(0);
            }
            other => return Err(format!("unknown flag {other} (see --help)").into()),
        }
    }
    let source = match (git, commit) {
        (Some(url), Some(commit)) => KernelSource::git(url, commit),
        (Some(_), None) | (None, Some(_)) => return Err("--git and --commit go together".into()),
        (None, None) => {
            if !tarball.exists() {
                return Err(format!(
                    "{} is missing: run ./scripts/quickstart.sh (it installs linux-source-6.1) or pass --git/--commit",
                    tarball.display()
                )
                .into());
            }
            KernelSource::tarball(tarball)
        }
    };
    Ok(Options { data, source, budget })
}

/// The sample job (build with `patch`, reproduce), tagged.
fn job(opts: &Options, patch: &str, what: &str) -> JobSpec {
    evaluation_job(opts.source.clone(), patch, opts.budget)
        .tag("composed-by", "kgym quickstart")
        .tag("quickstart", what)
}

/// Submits `spec`, shows the latest log line of the running stage, returns
/// the finished job.
async fn run_job(sched: &dyn Scheduler, spec: JobSpec, title: &str) -> Result<Job, BoxError> {
    let id = sched.submit(spec).await?;
    let bar = ProgressBar::new_spinner();
    bar.set_style(ProgressStyle::with_template("{spinner} [{elapsed}] {prefix:.bold} {wide_msg}")?);
    bar.set_prefix(format!("{title} (job {id})"));
    bar.enable_steady_tick(Duration::from_millis(120));
    let mut events = sched.watch(id).await?;
    while let Some(ev) = events.next().await {
        match ev? {
            JobEvent::Log(entry) => bar.set_message(entry.line.trim().to_owned()),
            ev if ev.is_terminal() => break,
            _ => {}
        }
    }
    bar.finish_and_clear();
    Ok(sched.wait(id).await?)
}

fn describe(job: &Job) -> String {
    let secs = |i: usize| {
        job.results
            .get(i)
            .and_then(|r| Some((r.finished? - r.started?).num_milliseconds() as f64 / 1000.0))
            .unwrap_or(0.0)
    };
    let cache = job.results.first().and_then(|r| r.value.get("cache")).and_then(|c| c.as_str()).unwrap_or("-");
    format!("build {:.1} s (warm tree: {cache}), reproduce {:.1} s", secs(0), secs(1))
}

#[tokio::main]
async fn main() -> Result<(), BoxError> {
    let opts = parse_args()?;
    println!("kgym quickstart: data in {}", opts.data.display());
    let gym = Gym::embedded(&opts.data).await?;
    let sched = gym.scheduler();
    let start = Instant::now();

    // 1+2. The buggy kernel crashes, and the crash gets its syzkaller title.
    let bug = run_job(sched.as_ref(), job(&opts, BUG_PATCH, "bug"), "build + reproduce the bug").await?;
    if let Some((stage, failure)) = bug.failure() {
        gym.shutdown().await;
        return Err(format!("stage {stage} of the bug job failed: {failure}").into());
    }
    let repro: ReproduceResult = bug.results[1].decode()?;
    println!("bug reproduced: {}  [{}]", repro.crashed, describe(&bug));
    println!("  title: {}", repro.title.as_deref().unwrap_or("(none)"));
    println!("  accel: {:?}, image ability: {:?}", repro.accel, repro.image_ability);
    if let Some(incident) = repro.crashes.first().and_then(|c| c.incidents.first()) {
        let report = incident.report.as_ref().and_then(|k| gym.artifacts().local_path(k));
        if let Some(path) = report {
            println!("  report: {}", path.display());
        }
    }

    // 3. Evaluate the fix on the warm tree.
    let fix = run_job(sched.as_ref(), job(&opts, FIXED_PATCH, "fix"), "evaluate the fix").await?;
    let verdict = patch_verdict(&fix, BUG_TITLE);
    println!("fix: {verdict}  [{}]", describe(&fix));
    println!("total {:.0} s", start.elapsed().as_secs_f64());
    gym.shutdown().await;

    let reproduced = repro.crashed && repro.title.as_deref() == Some(BUG_TITLE);
    if !reproduced {
        return Err(format!("expected the crash {BUG_TITLE:?}, got {:?}", repro.title).into());
    }
    if verdict != PatchVerdict::Fixed {
        return Err(format!("expected the fix to be judged fixed, got: {verdict}").into());
    }
    Ok(())
}
