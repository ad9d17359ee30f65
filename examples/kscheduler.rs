//! The stock scheduler service: SQLite state, the HTTP API (kgym's and
//! kGym's routes) and the remote-worker protocol; no local workers — run
//! `kbuilder` and `kreproducer` next to it or on other machines.
//!
//! Environment: `KGYM_LISTEN` (default `127.0.0.1:8000`), `KGYM_TOKEN`
//! (required beyond loopback; every request but `/api/v1/health` needs it),
//! `KGYM_PUBLIC_READS` (`1`: reads need no token, for a trusted network),
//! `KGYM_DATA`, `KGYM_ARTIFACTS` (`gs://bucket` or a shared directory),
//! `KGYM_AMQP` and `KGYM_AMQP_PREFIX` (announcements on RabbitMQ),
//! `KGYM_LEASE_TTL` (how soon a silent worker's stage goes to another).

#[path = "common/service.rs"]
#[allow(dead_code)] // the scheduler uses only part of the shared settings
mod service;

use kgym::Gym;
use kgym::sched::http::ServerOptions;

const ABOUT: &str = "kscheduler: the stock scheduler of kgym. Keeps jobs in SQLite, serves \
the HTTP API (kgym's and kGym's routes) and the worker protocol; run kbuilder and \
kreproducer beside it or on other machines.";

const SETTINGS: &str = "\
  KGYM_LISTEN        address to serve on (default 127.0.0.1:8000)
  KGYM_TOKEN         the API token (required beyond loopback)
  KGYM_PUBLIC_READS  1: reads need no token (a trusted network)
  KGYM_DATA          local data: the database (default ~/.local/share/kgym)
  KGYM_AMQP          amqp://user:password@host:5672/%2f: announce ready stages
                     on this RabbitMQ and answer workers that take them from
                     it (built with --features kgym/amqp)
  KGYM_AMQP_PREFIX   its queues' name prefix (default kgym)
  KGYM_ARTIFACTS     gs://bucket (with --features gcp) or a directory every
                     service shares (default $KGYM_DATA/artifacts)
  KGYM_LEASE_TTL     how long a stage stays with a worker that stopped
                     sending heartbeats (default 30s): then another one
                     gets it
  RUST_LOG           log filter (default info)
";

fn main() -> std::process::ExitCode {
    service::main(ABOUT, SETTINGS, run)
}

async fn run() -> Result<(), service::BoxError> {
    let listen = service::env_or("KGYM_LISTEN", "127.0.0.1:8000");
    let listen =
        listen.parse().map_err(|e| format!("KGYM_LISTEN={listen:?} is not an address like 0.0.0.0:8000: {e}"))?;
    let options = ServerOptions::default().token(service::token()).public_reads(service::public_reads()?);
    // Refused settings create nothing (not even the artifact directory).
    kgym::sched::http::check_listen(listen, &options)?;
    // The stock kinds are accepted (and their arguments checked) at submit;
    // remote kbuilder/kreproducer workers run them.
    let mut gym = Gym::builder(service::data_dir())
        .stock_workers(false)
        .artifacts(service::artifacts()?)
        .scheduler_options(scheduler_options()?)
        .serve_http(listen, options);
    if let Some(queue) = amqp_queue().await? {
        gym = gym.queue(queue);
    }
    let gym = gym.start().await?;
    let rpc = amqp_rpc(&gym).await?;
    tracing::info!(url = gym.http_url().unwrap_or_default(), "kscheduler serving");
    let signal = kgym::proc::terminated().await?;
    tracing::info!(signal = signal.name(), "stopping");
    stop_rpc(rpc).await;
    gym.shutdown().await;
    Ok(())
}

/// `KGYM_LEASE_TTL` (`30s`, `2m`): a killed worker's stage waits this
/// long before another worker gets it.
fn scheduler_options() -> Result<kgym::sched::sqlite::SchedulerOptions, service::BoxError> {
    let options = kgym::sched::sqlite::SchedulerOptions::default();
    let Some(text) = std::env::var("KGYM_LEASE_TTL").ok().filter(|t| !t.trim().is_empty()) else {
        return Ok(options);
    };
    let ttl = humantime::parse_duration(text.trim())
        .map_err(|e| format!("KGYM_LEASE_TTL={text:?} is not a duration like 30s: {e}"))?;
    if ttl < std::time::Duration::from_secs(1) {
        return Err(format!("KGYM_LEASE_TTL={text:?}: at least 1s (heartbeats come every third of it)").into());
    }
    Ok(options.lease_ttl(ttl))
}

/// `KGYM_AMQP`: announcements on this RabbitMQ broker instead of in
/// memory (queues named `$KGYM_AMQP_PREFIX.stage.<kind>`, prefix `kgym` by
/// default); they survive the scheduler and can be watched with RabbitMQ's
/// tools.
#[cfg(feature = "amqp")]
async fn amqp_queue() -> Result<Option<std::sync::Arc<dyn kgym::sched::queue::Queue>>, service::BoxError> {
    let Some(uri) = std::env::var("KGYM_AMQP").ok().filter(|u| !u.trim().is_empty()) else { return Ok(None) };
    let prefix = service::env_or("KGYM_AMQP_PREFIX", "kgym");
    let queue = kgym::sched::amqp::AmqpQueue::connect(uri.trim(), &prefix).await?;
    tracing::info!(prefix, "announcing stages on RabbitMQ");
    Ok(Some(std::sync::Arc::new(queue)))
}

/// With `KGYM_AMQP`, workers may take stages from RabbitMQ themselves
/// (`kbuilder`/`kreproducer` with `KGYM_AMQP`): their requests on
/// `$KGYM_AMQP_PREFIX.rpc` are answered from this scheduler.
#[cfg(feature = "amqp")]
async fn amqp_rpc(gym: &Gym) -> Result<Option<kgym::sched::amqp::RpcServer>, service::BoxError> {
    let Some(uri) = std::env::var("KGYM_AMQP").ok().filter(|u| !u.trim().is_empty()) else { return Ok(None) };
    let prefix = service::env_or("KGYM_AMQP_PREFIX", "kgym");
    let server = kgym::sched::amqp::RpcServer::start(uri.trim(), &prefix, gym.sqlite().clone()).await?;
    tracing::info!(queue = format!("{prefix}.rpc"), "answering workers on RabbitMQ");
    Ok(Some(server))
}

#[cfg(feature = "amqp")]
async fn stop_rpc(rpc: Option<kgym::sched::amqp::RpcServer>) {
    if let Some(server) = rpc {
        server.stop().await;
    }
}

#[cfg(not(feature = "amqp"))]
async fn amqp_rpc(_gym: &Gym) -> Result<Option<()>, service::BoxError> {
    Ok(None)
}

#[cfg(not(feature = "amqp"))]
async fn stop_rpc(_rpc: Option<()>) {}

/// Without the `amqp` feature, `KGYM_AMQP` is refused rather than ignored.
#[cfg(not(feature = "amqp"))]
async fn amqp_queue() -> Result<Option<std::sync::Arc<dyn kgym::sched::queue::Queue>>, service::BoxError> {
    match std::env::var("KGYM_AMQP") {
        Ok(u) if !u.trim().is_empty() => Err("KGYM_AMQP is set but kscheduler was built without the amqp feature \
             (cargo build --examples --features kgym/amqp)"
            .into()),
        _ => Ok(None),
    }
}
