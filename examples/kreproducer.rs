//! The stock reproduce worker service: claims `reproduce` stages from a
//! scheduler over HTTP and runs them in local QEMU VMs (KVM when it works,
//! TCG otherwise); SIGTERM, SIGHUP and ctrl-c hand running stages back.
//! Killed outright, its VMs die with it and its scratch goes.
//!
//! Environment: `KGYM_SERVER` (default `http://127.0.0.1:8000`),
//! `KGYM_TOKEN`, `KGYM_AMQP` and `KGYM_AMQP_PREFIX` (take stages
//! from RabbitMQ instead), `KGYM_DATA` (scratch), `KGYM_ARTIFACTS` (`gs://bucket` or a
//! shared directory), `KGYM_SLOTS`, `KGYM_HOST` (the worker's name, default the
//! machine's host name; one per process), `KGYM_LABELS` (`pool=big,...`: its
//! worker pool).

#[path = "common/service.rs"]
mod service;

use std::sync::Arc;

use kgym::vm::{QemuRunner, ReproduceWorker};

const ABOUT: &str = "kreproducer: the stock reproduce worker of kgym. Claims reproduce \
stages from a scheduler and runs them in local QEMU VMs (KVM when it works, TCG otherwise). \
SIGTERM, SIGHUP and ctrl-c hand running stages back.";

fn main() -> std::process::ExitCode {
    service::main(ABOUT, service::WORKER_SETTINGS, run)
}

async fn run() -> Result<(), service::BoxError> {
    let data = service::data_dir();
    let scratch = kgym::proc::RemoveOnExit::unique_in(&data.join("scratch"), "kreproducer-")?;
    let runner = QemuRunner::builder().work_dir(scratch.path().join("vm")).build()?;
    let worker = ReproduceWorker::new(Arc::new(runner)).scratch_dir(scratch.path().join("reproduce"));
    let runtime = service::worker_runtime().await?.worker(Arc::new(worker), service::slots()).start().await?;
    service::run_until_signal(runtime).await?;
    Ok(())
}
