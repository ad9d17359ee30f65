//! The stock build worker service: claims `build` and `patch-check` stages
//! from a scheduler over HTTP (or RabbitMQ) and runs them with `LocalBuilder`; SIGTERM,
//! SIGHUP and ctrl-c hand running stages back (make stopped, scratch
//! removed). Killed outright, its make dies with it and its scratch goes.
//!
//! Environment: `KGYM_SERVER` (scheduler URL, default
//! `http://127.0.0.1:8000`), `KGYM_TOKEN`, `KGYM_AMQP` and `KGYM_AMQP_PREFIX` (take stages
//! from RabbitMQ instead), `KGYM_DATA` (repository cache and
//! warm trees), `KGYM_ARTIFACTS` (`gs://bucket` or a shared directory),
//! `KGYM_SLOTS`, `KGYM_HOST` (the worker's name, default the
//! machine's host name; one per process), `KGYM_LABELS` (`pool=big,...`: its
//! worker pool).

#[path = "common/service.rs"]
mod service;

use std::sync::Arc;

use kgym::build::{BuildWorker, LocalBuilder, PatchCheckWorker};

const ABOUT: &str = "kbuilder: the stock build worker of kgym. Claims build and patch-check \
stages from a scheduler and runs them with LocalBuilder (make, ccache, warm trees). SIGTERM, \
SIGHUP and ctrl-c hand running stages back.";

fn main() -> std::process::ExitCode {
    service::main(ABOUT, service::WORKER_SETTINGS, run)
}

async fn run() -> Result<(), service::BoxError> {
    let data = service::data_dir();
    let builder = Arc::new(LocalBuilder::builder(data.join("build")).build()?);
    let scratch = kgym::proc::RemoveOnExit::unique_in(&data.join("scratch"), "kbuilder-")?;
    let runtime = service::worker_runtime()
        .await?
        .worker(Arc::new(BuildWorker::new(builder.clone(), scratch.path().join("build"))), service::slots())
        .worker(Arc::new(PatchCheckWorker::new(builder, scratch.path().join("patch-check"))), 1)
        .start()
        .await?;
    service::run_until_signal(runtime).await?;
    Ok(())
}
