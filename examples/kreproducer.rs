//! The stock reproduce worker service: claims `reproduce` stages from a
//! scheduler over HTTP and runs them in local QEMU VMs (KVM when it works,
//! TCG otherwise); SIGTERM hands running stages back.
//!
//! Environment: `KGYM_SERVER` (default `http://127.0.0.1:8000`),
//! `KGYM_TOKEN`, `KGYM_DATA` (scratch), `KGYM_ARTIFACTS` (`gs://bucket` or a
//! shared directory), `KGYM_SLOTS`.

#[path = "common/service.rs"]
mod service;

use std::sync::Arc;

use kgym::vm::{QemuRunner, ReproduceWorker};

fn main() -> std::process::ExitCode {
    service::main(run)
}

async fn run() -> Result<(), service::BoxError> {
    let data = service::data_dir();
    let runner = QemuRunner::builder().work_dir(data.join("scratch/vm")).build()?;
    let worker = ReproduceWorker::new(Arc::new(runner)).scratch_dir(data.join("scratch/reproduce"));
    let runtime = service::worker_runtime()?.worker(Arc::new(worker), service::slots()).start().await?;
    runtime.run_until_signal().await?;
    Ok(())
}
