//! Settings shared by the stock services, read from the environment
//! (12-factor style, so a systemd unit or a GCE metadata startup script can
//! configure them).

use std::future::Future;
use std::path::PathBuf;
use std::process::ExitCode;
use std::sync::Arc;

use kgym::core::ArtifactStore;
use kgym::sched::http::HttpWorkerBackend;
use kgym::sched::runtime::{RuntimeBuilder, RuntimeOptions, WorkerRuntime};
use kgym::sched::worker_api::WorkerBackend;

/// Any error a service's start-up returns.
pub type BoxError = Box<dyn std::error::Error + Send + Sync>;

/// The settings every worker service reads (`--help` shows them).
pub const WORKER_SETTINGS: &str = "\
  KGYM_SERVER     the scheduler's URL (default http://127.0.0.1:8000)
  KGYM_TOKEN      the scheduler's API token
  KGYM_AMQP       amqp://user:password@host:5672/%2f: take stages from this
                  RabbitMQ and talk to the scheduler through it instead of
                  KGYM_SERVER (built with --features kgym/amqp; kscheduler
                  needs the same KGYM_AMQP)
  KGYM_AMQP_PREFIX its queues' name prefix (default kgym)
  KGYM_DATA       local data: caches, scratch (default ~/.local/share/kgym)
  KGYM_ARTIFACTS  gs://bucket (with --features gcp) or a directory every
                  service shares (default $KGYM_DATA/artifacts)
  KGYM_SLOTS      concurrent stages (default 1)
  KGYM_HOST       this worker's name (default the host name; one per process)
  KGYM_LABELS     its labels, key=value,... (pool=big,arch=x86_64): stages
                  that require labels run only on workers that have them all
  RUST_LOG        log filter (default info)
";

/// Runs a service: answers `--help` with `about` and the `settings`
/// (other arguments are refused with status 2: settings come from the
/// environment), logs to stderr, runs `service` on a Tokio runtime, and
/// prints an error as one readable line with its causes (`error: listen on
/// 0.0.0.0:8000 without a token: ...`), exiting with status 1.
pub fn main<F: Future<Output = Result<(), BoxError>>>(
    about: &str,
    settings: &str,
    service: impl FnOnce() -> F,
) -> ExitCode {
    let args: Vec<String> = std::env::args().skip(1).collect();
    match args.first().map(String::as_str) {
        None => {}
        Some("-h" | "--help") => {
            print!("{about}\n\nUsage: {} [--help]\n\nSettings (environment):\n{settings}", program());
            return ExitCode::SUCCESS;
        }
        Some(other) => {
            eprintln!("error: unexpected argument {other:?}: settings come from the environment (see --help)");
            return ExitCode::from(2);
        }
    }
    init_tracing();
    let outcome = tokio::runtime::Runtime::new().map_err(BoxError::from).and_then(|rt| rt.block_on(service()));
    match outcome {
        Ok(()) => ExitCode::SUCCESS,
        Err(e) => {
            eprintln!("error: {}", kgym::core::failure::error_chain(e.as_ref()));
            ExitCode::FAILURE
        }
    }
}

/// This program's name, as it was called.
fn program() -> String {
    let arg0 = std::env::args().next().unwrap_or_default();
    std::path::Path::new(&arg0).file_name().map(|n| n.to_string_lossy().into_owned()).unwrap_or(arg0)
}

/// A setting from the environment, or its default.
pub fn env_or(name: &str, default: &str) -> String {
    std::env::var(name).unwrap_or_else(|_| default.to_owned())
}

/// `KGYM_DATA`: the local data directory (caches, scratch, database).
pub fn data_dir() -> PathBuf {
    kgym::default_data_dir()
}

/// `KGYM_ARTIFACTS`: `gs://bucket` (needs `--features gcp`) or a directory
/// shared by every service (default `$KGYM_DATA/artifacts`).
pub fn artifacts() -> Result<ArtifactStore, BoxError> {
    let default = data_dir().join("artifacts").display().to_string();
    Ok(kgym::artifact_store_from_url(&env_or("KGYM_ARTIFACTS", &default))?)
}

/// `KGYM_TOKEN`: the token of the scheduler's API.
pub fn token() -> Option<String> {
    std::env::var("KGYM_TOKEN").ok().filter(|t| !t.is_empty())
}

/// `KGYM_PUBLIC_READS`: `1`/`true`/`yes` opens the API's reads without the
/// token (a trusted network); writes still need it.
#[allow(dead_code)] // a scheduler setting; the worker services serve nothing
pub fn public_reads() -> Result<bool, BoxError> {
    match env_or("KGYM_PUBLIC_READS", "").trim().to_ascii_lowercase().as_str() {
        "" | "0" | "false" | "no" | "off" => Ok(false),
        "1" | "true" | "yes" | "on" => Ok(true),
        other => Err(format!("KGYM_PUBLIC_READS={other:?} is not a yes or no (1/0, true/false)").into()),
    }
}

/// `KGYM_SLOTS`: concurrent stages of this worker (default 1).
pub fn slots() -> u32 {
    env_or("KGYM_SLOTS", "1").parse().unwrap_or(1)
}

/// Logs to stderr (`RUST_LOG` overrides `info`).
pub fn init_tracing() {
    let filter = tracing_subscriber::EnvFilter::try_from_default_env()
        .unwrap_or_else(|_| tracing_subscriber::EnvFilter::new("info"));
    let _ = tracing_subscriber::fmt().with_env_filter(filter).try_init();
}

/// Runs `runtime` until SIGINT, SIGTERM or SIGHUP, then shuts it down
/// (running stages are cancelled and handed back).
pub async fn run_until_signal(
    runtime: kgym::sched::runtime::RuntimeHandle,
) -> Result<(), Box<dyn std::error::Error + Send + Sync>> {
    let signal = kgym::proc::terminated().await?;
    tracing::info!(signal = signal.name(), "handing running stages back");
    runtime.shutdown().await;
    Ok(())
}

/// A worker runtime claiming stages from the scheduler at `KGYM_SERVER`
/// (default `http://127.0.0.1:8000`) with `KGYM_TOKEN`, or from RabbitMQ
/// when `KGYM_AMQP` is set, storing artifacts in `KGYM_ARTIFACTS`; add
/// workers, then start it.
pub async fn worker_runtime() -> Result<RuntimeBuilder, BoxError> {
    let mut options = RuntimeOptions::default();
    if let Ok(host) = std::env::var("KGYM_HOST")
        && !host.trim().is_empty()
    {
        options = options.host(host.trim());
    }
    options.labels = labels()?;
    let labels = kgym::sched::labels::display(&options.labels);
    let backend: Arc<dyn WorkerBackend> = match amqp_uri() {
        Some(uri) => {
            let prefix = env_or("KGYM_AMQP_PREFIX", "kgym");
            tracing::info!(prefix, host = %options.host, %labels, "claiming stages from RabbitMQ");
            amqp_backend(&uri, &prefix).await?
        }
        None => {
            let server = env_or("KGYM_SERVER", "http://127.0.0.1:8000");
            let mut backend = HttpWorkerBackend::new(&server)?;
            if let Some(token) = token() {
                backend = backend.with_token(token);
            }
            tracing::info!(%server, host = %options.host, %labels, "claiming stages");
            Arc::new(backend)
        }
    };
    Ok(WorkerRuntime::builder(backend).options(options).artifacts(artifacts()?))
}

/// `KGYM_AMQP`, when set.
pub fn amqp_uri() -> Option<String> {
    std::env::var("KGYM_AMQP").ok().map(|u| u.trim().to_owned()).filter(|u| !u.is_empty())
}

#[cfg(feature = "amqp")]
async fn amqp_backend(uri: &str, prefix: &str) -> Result<Arc<dyn WorkerBackend>, BoxError> {
    tracing::info!(broker = %kgym::sched::amqp::redact(uri), "connecting to RabbitMQ");
    Ok(Arc::new(kgym::sched::amqp::AmqpWorkerBackend::connect(uri, prefix).await?))
}

/// Without the `amqp` feature, `KGYM_AMQP` is refused rather than ignored.
#[cfg(not(feature = "amqp"))]
async fn amqp_backend(_uri: &str, _prefix: &str) -> Result<Arc<dyn WorkerBackend>, BoxError> {
    Err("KGYM_AMQP is set but this worker was built without the amqp feature \
         (cargo build --examples --features kgym/amqp)"
        .into())
}

/// `KGYM_LABELS`: this worker's labels, `key=value` separated by commas
/// (`pool=big,arch=x86_64`); stages that require labels run only on
/// workers that have them all.
pub fn labels() -> Result<kgym::core::Labels, BoxError> {
    let text = env_or("KGYM_LABELS", "");
    let labels = kgym::sched::labels::parse(&text).map_err(|e| format!("KGYM_LABELS={text:?}: {e}"))?;
    let problems = kgym::sched::labels::check(&labels);
    if !problems.is_empty() {
        return Err(format!("KGYM_LABELS={text:?}: {}", problems.join("; ")).into());
    }
    Ok(labels)
}
