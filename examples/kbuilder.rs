//! The stock build worker service: claims `build` and `patch-check` stages
//! from a scheduler over HTTP and runs them with `LocalBuilder`; SIGTERM
//! hands running stages back.
//!
//! Environment: `KGYM_SERVER` (scheduler URL, default
//! `http://127.0.0.1:8000`), `KGYM_TOKEN`, `KGYM_DATA` (repository cache and
//! warm trees), `KGYM_ARTIFACTS` (`gs://bucket` or a shared directory),
//! `KGYM_SLOTS`.

#[path = "common/service.rs"]
mod service;

use std::sync::Arc;

use kgym::build::{BuildWorker, LocalBuilder, PatchCheckWorker};

fn main() -> std::process::ExitCode {
    service::main(run)
}

async fn run() -> Result<(), service::BoxError> {
    let data = service::data_dir();
    let builder = Arc::new(LocalBuilder::builder(data.join("build")).build()?);
    let runtime = service::worker_runtime()?
        .worker(Arc::new(BuildWorker::new(builder.clone(), data.join("scratch/build"))), service::slots())
        .worker(Arc::new(PatchCheckWorker::new(builder, data.join("scratch/patch-check"))), 1)
        .start()
        .await?;
    runtime.run_until_signal().await?;
    Ok(())
}
