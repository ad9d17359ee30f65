//! The stock reproduce worker service: claims `reproduce` stages from a
//! scheduler over HTTP and runs them in local QEMU VMs (KVM when it works,
//! TCG otherwise), or, for `gce:<type>` machines, on Compute Engine
//! instances; SIGTERM, SIGHUP and ctrl-c hand running stages back.
//! Killed outright, its VMs die with it and its scratch goes.
//!
//! Environment: `KGYM_SERVER` (default `http://127.0.0.1:8000`),
//! `KGYM_TOKEN`, `KGYM_AMQP` and `KGYM_AMQP_PREFIX` (take stages
//! from RabbitMQ instead), `KGYM_DATA` (scratch), `KGYM_ARTIFACTS` (`gs://bucket` or a
//! shared directory), `KGYM_SLOTS`, `KGYM_HOST` (the worker's name, default the
//! machine's host name; one per process), `KGYM_LABELS` (`pool=big,...`: its
//! worker pool), `KGYM_GCE_PROJECT`, `KGYM_GCE_ZONE`, `KGYM_GCE_BUCKET`
//! (run `gce:` machines on Compute Engine; `--features kgym/gce,kgym/gcp`).

#[path = "common/service.rs"]
mod service;

use std::sync::Arc;

use kgym::vm::{QemuRunner, ReproduceWorker, VmRunner};

const ABOUT: &str = "kreproducer: the stock reproduce worker of kgym. Claims reproduce \
stages from a scheduler and runs them in local QEMU VMs (KVM when it works, TCG otherwise), \
or on Compute Engine instances for gce:<type> machines. SIGTERM, SIGHUP and ctrl-c hand \
running stages back.";

/// The settings of the GCE runner, after the shared ones.
const GCE_SETTINGS: &str = "\
  KGYM_GCE_PROJECT the Compute Engine project of gce:<type> machines (unset:
                  they are refused); needs --features kgym/gce,kgym/gcp and
                  the VM's service account (metadata server) for tokens
  KGYM_GCE_ZONE   their zone (default us-central1-a)
  KGYM_GCE_BUCKET the bucket local disk images are packed and uploaded to
                  (with the kernel in /boot) for images.insert
";

fn main() -> std::process::ExitCode {
    service::main(ABOUT, &format!("{}{GCE_SETTINGS}", service::WORKER_SETTINGS), run)
}

async fn run() -> Result<(), service::BoxError> {
    let data = service::data_dir();
    let scratch = kgym::proc::RemoveOnExit::unique_in(&data.join("scratch"), "kreproducer-")?;
    let qemu = QemuRunner::builder().work_dir(scratch.path().join("vm")).build()?;
    let runner = machines(qemu, scratch.path())?;
    let worker = ReproduceWorker::new(runner).scratch_dir(scratch.path().join("reproduce"));
    let runtime = service::worker_runtime().await?.worker(Arc::new(worker), service::slots()).start().await?;
    service::run_until_signal(runtime).await?;
    Ok(())
}

/// `KGYM_GCE_PROJECT`, when set.
fn gce_project() -> Option<String> {
    std::env::var("KGYM_GCE_PROJECT").ok().map(|p| p.trim().to_owned()).filter(|p| !p.is_empty())
}

/// The local runner, with a Compute Engine one for `gce:` machines when
/// `KGYM_GCE_PROJECT` is set.
#[cfg(feature = "gce")]
fn machines(qemu: QemuRunner, scratch: &std::path::Path) -> Result<Arc<dyn VmRunner>, service::BoxError> {
    use kgym::vm::gce::{ComputeClient, GceRunner, MachineRouter, MetadataToken};
    let router = MachineRouter::new(Arc::new(qemu));
    let Some(project) = gce_project() else {
        return Ok(Arc::new(router));
    };
    let zone = service::env_or("KGYM_GCE_ZONE", "us-central1-a");
    let bucket = service::env_or("KGYM_GCE_BUCKET", "");
    if bucket.is_empty() {
        return Err("KGYM_GCE_PROJECT is set but KGYM_GCE_BUCKET is not: GCE images come from a bucket".into());
    }
    let client = ComputeClient::new(&project, &zone, Arc::new(MetadataToken::new()));
    let uploads = kgym::artifact_store_from_url(&format!("gs://{bucket}"))?;
    let gce = GceRunner::new(client).with_bucket(&bucket).with_disk_uploads(uploads).with_work_dir(scratch.join("gce"));
    tracing::info!(%project, %zone, %bucket, "gce: machines run on Compute Engine");
    Ok(Arc::new(router.with_gce(Arc::new(gce))))
}

/// Without the `gce` feature, `KGYM_GCE_PROJECT` is refused rather than
/// ignored.
#[cfg(not(feature = "gce"))]
fn machines(qemu: QemuRunner, _scratch: &std::path::Path) -> Result<Arc<dyn VmRunner>, service::BoxError> {
    if gce_project().is_some() {
        return Err("KGYM_GCE_PROJECT is set but this worker was built without the gce feature \
                    (cargo build --features kgym/gce,kgym/gcp)"
            .into());
    }
    Ok(Arc::new(qemu))
}
