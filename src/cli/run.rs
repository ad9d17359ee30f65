//! `kgym run JOB.json`: run one job in the embedded gym, with progress, and
//! print the final job.

use std::path::PathBuf;
use std::process::ExitCode;

use futures::StreamExt;
use kgym::Gym;
use kgym::compat::{CompatOptions, RawJob};
use kgym::core::{Job, JobSpec, JobStatus, Outcome};
use kgym::sched::types::JobEvent;
use kgym::sched::{Scheduler, SchedulerExt};

use super::progress::JobProgress;
use super::{CmdResult, Common};

/// Arguments of `kgym run`.
#[derive(Debug, clap::Args)]
pub struct Args {
    /// The job: a kgym job spec (`{"stages": [...], "tags": {...}}`) or a
    /// kGym raw job (`{"job_workers": [...], "worker_arguments": [...], "kv": {...}}`).
    pub job: PathBuf,
    /// Print the final job as one JSON object (with an `artifacts` map of
    /// artifact key → local path).
    #[arg(long)]
    pub json: bool,
}

/// Reads a job file in either format.
pub fn read_spec(path: &std::path::Path) -> Result<JobSpec, Box<dyn std::error::Error + Send + Sync>> {
    let text = std::fs::read_to_string(path).map_err(|e| format!("read job file {}: {e}", path.display()))?;
    let value: serde_json::Value =
        serde_json::from_str(&text).map_err(|e| format!("parse job file {}: {e}", path.display()))?;
    if value.get("job_workers").is_some() {
        let raw: RawJob =
            serde_json::from_value(value).map_err(|e| format!("parse kGym job {}: {e}", path.display()))?;
        return kgym::compat::convert(&raw, &CompatOptions::default()).map_err(|problems| {
            let list: Vec<String> = problems.iter().map(|p| format!("  - {p}")).collect();
            format!("convert kGym job {}:\n{}", path.display(), list.join("\n")).into()
        });
    }
    serde_json::from_value(value).map_err(|e| format!("parse job spec {}: {e}", path.display()).into())
}

/// Runs the subcommand.
pub async fn run(args: Args, common: &Common) -> CmdResult {
    let spec = read_spec(&args.job)?;
    // Installed before anything starts, so a signal never finds the
    // default action (which would skip the cleanup).
    let signals = super::Signals::install()?;
    let gym = common.gym().start().await?;
    let sched = gym.scheduler();
    let id = sched.submit(spec).await?;
    let outcome = follow(sched.as_ref(), id, &signals.cancel).await;
    let stopped_by = signals.received().await;
    let job = match outcome {
        Ok(job) => job,
        Err(e) => {
            gym.shutdown().await;
            return Err(e);
        }
    };
    print_job(&gym, &job, args.json).await?;
    gym.shutdown().await;
    Ok(match stopped_by {
        Some(signal) => ExitCode::from(signal.exit_code()),
        None if job.succeeded() => ExitCode::SUCCESS,
        None => ExitCode::FAILURE,
    })
}

/// Shows the job's progress until it ends; ctrl-c, SIGTERM and SIGHUP
/// abort the job (its running stage is cancelled: make or QEMU stopped,
/// scratch removed) and the command waits for that to finish.
async fn follow(
    sched: &dyn Scheduler,
    id: kgym::core::JobId,
    stop: &tokio_util::sync::CancellationToken,
) -> Result<Job, Box<dyn std::error::Error + Send + Sync>> {
    let job = sched.get(id).await?;
    let mut progress = JobProgress::new(&job);
    let mut events = sched.watch(id).await?;
    let mut stopping = false;
    loop {
        tokio::select! {
            ev = events.next() => match ev {
                Some(Ok(JobEvent::Status { status, stage, .. })) => {
                    progress.status(status, stage);
                    if status.is_terminal() {
                        break;
                    }
                }
                Some(Ok(JobEvent::Log(entry))) => progress.log(entry.stage, &entry.line),
                // An event kind newer than this client: nothing to show.
                Some(Ok(_)) => {}
                Some(Err(e)) => {
                    tracing::debug!(error = %e, "watch broke; waiting for the job instead");
                    break;
                }
                None => break,
            },
            () = stop.cancelled(), if !stopping => {
                stopping = true;
                progress.message("interrupted: aborting the job");
                let _ = sched.abort(id).await;
            }
        }
    }
    let job = sched.wait(id).await?;
    progress.finish(&job);
    Ok(job)
}

/// Prints the job: a summary per stage with its artifacts, or JSON.
pub async fn print_job(gym: &Gym, job: &Job, json: bool) -> Result<(), Box<dyn std::error::Error + Send + Sync>> {
    let keys = gym.artifacts().list_job(job.id).await?;
    let paths: Vec<(String, Option<PathBuf>)> =
        keys.iter().map(|k| (k.to_string(), gym.artifacts().local_path(k))).collect();
    if json {
        let mut value = serde_json::to_value(job)?;
        let map: serde_json::Map<String, serde_json::Value> =
            paths.iter().map(|(k, p)| (k.clone(), p.as_ref().map(|p| p.display().to_string()).into())).collect();
        value["artifacts"] = serde_json::Value::Object(map);
        println!("{}", serde_json::to_string(&value)?);
        return Ok(());
    }
    println!("job {}: {}", job.id, job.status.as_str());
    for (i, stage) in job.stages.iter().enumerate() {
        let result = job.results.get(i);
        let state = match result {
            Some(r) if r.outcome == Outcome::Success => "success",
            Some(_) => "failure",
            None if job.status == JobStatus::Aborted => "aborted",
            None => "not run",
        };
        println!("  stage {i} {}: {state}", stage.kind);
        if let Some(r) = result {
            if !r.message.is_empty() {
                println!("    {}", r.message);
            }
            if let Some(f) = &r.failure {
                println!("    {} ({})", f.message, f.code);
                if let Some(d) = &f.detail {
                    for line in kgym::core::failure::tail_lines(d, 15).lines() {
                        println!("    | {line}");
                    }
                }
            }
            if let Some(title) = r.value.get("title").and_then(|t| t.as_str()) {
                println!("    title: {title}");
            }
        }
        let prefix = format!("jobs/{}/{}_", job.id, i);
        for (key, path) in paths.iter().filter(|(k, _)| k.starts_with(&prefix)) {
            match path {
                Some(p) => println!("    {}", p.display()),
                None => println!("    {key}"),
            }
        }
    }
    Ok(())
}
