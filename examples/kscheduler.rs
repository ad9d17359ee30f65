//! The stock scheduler service: SQLite state, the HTTP API (kgym's and
//! kGym's routes) and the remote-worker protocol; no local workers — run
//! `kbuilder` and `kreproducer` next to it or on other machines.
//!
//! Environment: `KGYM_LISTEN` (default `127.0.0.1:8000`), `KGYM_TOKEN`
//! (required beyond loopback), `KGYM_DATA`, `KGYM_ARTIFACTS`
//! (`gs://bucket` or a shared directory).

#[path = "common/service.rs"]
#[allow(dead_code)] // the scheduler uses only part of the shared settings
mod service;

use kgym::core::StageKind;
use kgym::sched::Embedded;

#[tokio::main]
async fn main() -> Result<(), Box<dyn std::error::Error + Send + Sync>> {
    service::init_tracing();
    let listen = service::env_or("KGYM_LISTEN", "127.0.0.1:8000").parse()?;
    let gym = Embedded::builder()
        .data_dir(service::data_dir())
        .artifacts(service::artifacts()?)
        .accept_kind(StageKind::build())
        .accept_kind(StageKind::reproduce())
        .accept_kind(StageKind::patch_check())
        .serve_http(listen, service::token())
        .build()
        .await?;
    tracing::info!(url = gym.http_url().unwrap_or_default(), "kscheduler serving");
    gym.run_until_signal().await?;
    Ok(())
}
