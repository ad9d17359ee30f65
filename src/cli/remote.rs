//! `kgym submit|status|logs|abort|restart --server URL [--token T]`: talk to
//! a `kgym serve` (or any kgym HTTP API) through `HttpScheduler`.

use std::path::PathBuf;
use std::process::ExitCode;

use futures::StreamExt;
use kgym::compat::RawJob;
use kgym::core::{Job, JobId, JobSpec, Outcome, StageIndex};
use kgym::sched::http::HttpScheduler;
use kgym::sched::types::{JobEvent, JobLogEntry, LogQuery, MAX_PAGE};
use kgym::sched::{Scheduler, SchedulerExt};

use super::{CmdResult, Common};

/// Where the server is.
#[derive(Debug, clap::Args)]
pub struct ServerArgs {
    /// The server's base URL.
    #[arg(long, env = "KGYM_SERVER", default_value = "http://127.0.0.1:8000")]
    pub server: String,
    /// The server's token (`--token` of `kgym serve`), sent with every
    /// request; a token in the URL (`http://user:TOKEN@host`) works too.
    #[arg(long, env = "KGYM_TOKEN", hide_env_values = true)]
    pub token: Option<String>,
}

impl ServerArgs {
    fn client(&self) -> Result<HttpScheduler, kgym::sched::Error> {
        let c = HttpScheduler::new(&self.server)?;
        Ok(match &self.token {
            Some(t) => c.with_token(t.clone()),
            None => c,
        })
    }
}

/// `kgym submit` arguments.
#[derive(Debug, clap::Args)]
pub struct SubmitArgs {
    #[command(flatten)]
    pub server: ServerArgs,
    /// The job: a JobSpec JSON file, or a kGym payload
    /// (`{job_workers, worker_arguments, kv}`); `-` reads standard input.
    pub job: PathBuf,
    /// Wait for the job to end, streaming its log to stderr; exit 1 unless
    /// every stage succeeded.
    #[arg(long)]
    pub wait: bool,
    /// Print the final job as JSON (with --wait).
    #[arg(long)]
    pub json: bool,
}

/// `kgym status` arguments.
#[derive(Debug, clap::Args)]
pub struct StatusArgs {
    #[command(flatten)]
    pub server: ServerArgs,
    /// The job id (8 hex digits).
    pub id: JobId,
    /// Print the whole job as JSON.
    #[arg(long)]
    pub json: bool,
}

/// `kgym logs` arguments.
#[derive(Debug, clap::Args)]
pub struct LogsArgs {
    #[command(flatten)]
    pub server: ServerArgs,
    /// The job id.
    pub id: JobId,
    /// Keep printing new lines until the job ends.
    #[arg(short, long)]
    pub follow: bool,
}

/// `kgym abort` arguments.
#[derive(Debug, clap::Args)]
pub struct AbortArgs {
    #[command(flatten)]
    pub server: ServerArgs,
    /// The job id.
    pub id: JobId,
}

/// `kgym restart` arguments.
#[derive(Debug, clap::Args)]
pub struct RestartArgs {
    #[command(flatten)]
    pub server: ServerArgs,
    /// The job id.
    pub id: JobId,
    /// The stage to run again from (default: where the job stopped).
    #[arg(long)]
    pub from: Option<u32>,
}

fn read_job(path: &PathBuf) -> Result<serde_json::Value, Box<dyn std::error::Error + Send + Sync>> {
    let text = if path.as_os_str() == "-" {
        std::io::read_to_string(std::io::stdin())?
    } else {
        std::fs::read_to_string(path).map_err(|e| format!("read {}: {e}", path.display()))?
    };
    Ok(serde_json::from_str(&text).map_err(|e| format!("parse {} as JSON: {e}", path.display()))?)
}

/// Prints a log line to stdout (`kgym logs`) or stderr (`kgym submit
/// --wait`, whose stdout is the result).
fn print_line(l: &JobLogEntry, to_stderr: bool) {
    let who = match (&l.stage, &l.kind) {
        (Some(s), Some(k)) => format!("{s} {k}"),
        _ => "scheduler".to_owned(),
    };
    let text = format!("{} [{who}] {}", l.time.format("%H:%M:%S%.3f"), l.line);
    if to_stderr {
        eprintln!("{text}");
    } else {
        println!("{text}");
    }
}

fn describe(job: &Job) {
    println!("job {}: {}", job.id, job.status.as_str());
    for (i, stage) in job.stages.iter().enumerate() {
        let state = match job.results.get(i) {
            Some(r) if r.outcome == Outcome::Success => format!("ok: {}", r.message),
            Some(r) => match &r.failure {
                Some(f) => format!("FAILED: {f}"),
                None => format!("FAILED: {}", r.message),
            },
            None if job.current_stage == Some(StageIndex(i as u32)) => match (&job.worker, &job.no_worker_for) {
                (Some(w), _) => format!("running on {w}"),
                (None, Some(kind)) => format!("queued, waiting for a worker: no live worker runs {kind} stages"),
                (None, None) => "queued".to_owned(),
            },
            None => "-".to_owned(),
        };
        println!("  stage {i} ({}): {state}", stage.kind);
    }
    if !job.tags.is_empty() {
        let tags: Vec<String> = job.tags.iter().map(|(k, v)| format!("{k}={v}")).collect();
        println!("  tags: {}", tags.join(", "));
    }
}

fn exit_for(job: &Job) -> ExitCode {
    if job.succeeded() { ExitCode::SUCCESS } else { ExitCode::FAILURE }
}

/// Prints every log line of `id`, then (with `follow`) new ones until the
/// job ends; returns the final job when following.
async fn stream_logs(
    sched: &HttpScheduler,
    id: JobId,
    follow: bool,
    to_stderr: bool,
) -> Result<Option<Job>, kgym::sched::Error> {
    // Subscribe before reading the backlog, so no line falls between.
    let events = if follow { Some(sched.watch(id).await?) } else { None };
    let mut q = LogQuery { limit: MAX_PAGE, ..LogQuery::job(id) };
    let mut last = 0;
    loop {
        let page = sched.logs(&q).await?;
        for l in &page.items {
            print_line(l, to_stderr);
            last = last.max(l.seq);
        }
        match page.next {
            Some(n) => q.start = n,
            None => break,
        }
    }
    let Some(mut events) = events else {
        return Ok(None);
    };
    while let Some(ev) = events.next().await {
        match ev? {
            JobEvent::Log(l) if l.seq > last => {
                last = l.seq;
                print_line(&l, to_stderr);
            }
            ev if ev.is_terminal() => break,
            _ => {}
        }
    }
    Ok(Some(sched.get(id).await?))
}

/// Submits a job.
pub async fn submit(a: SubmitArgs, _c: &Common) -> CmdResult {
    let sched = a.server.client()?;
    let value = read_job(&a.job)?;
    let id = if value.get("job_workers").is_some() {
        let raw: RawJob = serde_json::from_value(value).map_err(|e| format!("read the kGym payload: {e}"))?;
        kgym::compat::submit_raw_job(&sched, &raw).await?
    } else {
        let spec: JobSpec = serde_json::from_value(value).map_err(|e| format!("read the job spec: {e}"))?;
        sched.submit(spec).await?
    };
    if !a.wait {
        println!("{id}");
        return Ok(ExitCode::SUCCESS);
    }
    eprintln!("submitted job {id}");
    let job = match stream_logs(&sched, id, true, true).await? {
        Some(j) => j,
        None => sched.wait(id).await?,
    };
    if a.json {
        println!("{}", serde_json::to_string_pretty(&job)?);
    } else {
        describe(&job);
    }
    Ok(exit_for(&job))
}

/// Shows a job.
pub async fn status(a: StatusArgs, _c: &Common) -> CmdResult {
    let job = a.server.client()?.get(a.id).await?;
    if a.json {
        println!("{}", serde_json::to_string_pretty(&job)?);
    } else {
        describe(&job);
    }
    Ok(ExitCode::SUCCESS)
}

/// Prints a job's log.
pub async fn logs(a: LogsArgs, _c: &Common) -> CmdResult {
    let sched = a.server.client()?;
    match stream_logs(&sched, a.id, a.follow, false).await? {
        Some(job) => {
            describe(&job);
            Ok(exit_for(&job))
        }
        None => Ok(ExitCode::SUCCESS),
    }
}

/// Aborts a job.
pub async fn abort(a: AbortArgs, _c: &Common) -> CmdResult {
    let job = a.server.client()?.abort(a.id).await?;
    describe(&job);
    Ok(ExitCode::SUCCESS)
}

/// Restarts a job.
pub async fn restart(a: RestartArgs, _c: &Common) -> CmdResult {
    let job = a.server.client()?.restart(a.id, a.from.map(StageIndex)).await?;
    describe(&job);
    Ok(ExitCode::SUCCESS)
}
