//! # kgym
//!
//! Build Linux kernels at any commit, config and patch, boot them in VMs,
//! run crash reproducers and get verdicts you can trust — on one machine by
//! default, on RabbitMQ + GCS + GCE when one machine is not enough.
//!
//! This facade re-exports the workspace crates:
//! [`core`] (job model, artifacts, `StageWorker`/`Worker`), [`build`]
//! (`KernelBuilder`), [`vm`] (`VmRunner`, crash reports), [`sched`]
//! (`Scheduler`, worker runtime, HTTP API), [`compat`] (kGym's payloads
//! and routes, kBench composers), [`proc`] (subprocesses that never
//! outlive their owner, termination signals), [`dashboard`] (the web
//! pages the HTTP server shows at `/`); and wires them into a [`Gym`].
//!
//! ```no_run
//! use std::time::Duration;
//! use kgym::compose::{patch_verdict, PatchVerdict};
//! use kgym::core::stage::build::KernelSource;
//! use kgym::samples::{evaluation_job, BUG_TITLE, DEBIAN_KERNEL_TARBALL, FIXED_PATCH};
//! use kgym::sched::SchedulerExt;
//!
//! # async fn demo() -> Result<(), Box<dyn std::error::Error + Send + Sync>> {
//! let gym = kgym::Gym::embedded("/var/lib/kgym").await?; // SQLite + local workers + artifacts
//! let sched = gym.scheduler(); // Arc<dyn Scheduler>
//! // against a remote gym instead, one line changes:
//! // let sched = std::sync::Arc::new(kgym::sched::http::HttpScheduler::new("http://gym:8000")?);
//! let spec = evaluation_job(KernelSource::tarball(DEBIAN_KERNEL_TARBALL), FIXED_PATCH, Duration::from_secs(60));
//! let job = sched.run(spec).await?; // submit + await (an event stream, no polling)
//! assert_eq!(patch_verdict(&job, BUG_TITLE), PatchVerdict::Fixed);
//! gym.shutdown().await;
//! # Ok(()) }
//! ```

use std::path::PathBuf;

pub use kgym_build as build;
pub use kgym_compat as compat;
pub use kgym_core as core;
pub use kgym_dashboard as dashboard;
pub use kgym_proc as proc;
pub use kgym_sched as sched;
pub use kgym_vm as vm;

/// Composers: kBench/syzbot bug records as jobs, and the verdict of a
/// patch-evaluation job (from [`kgym_compat::kbench`]).
pub mod compose {
    pub use kgym_compat::kbench::*;
}
pub mod bisect;
mod gym;
pub mod samples;

pub use gym::{ARTIFACTS_DIR, DATABASE_FILE, Gym, GymBuilder, GymError};

/// The default data directory: `$KGYM_DATA`, else the user's data
/// directory + `/kgym` (e.g. `~/.local/share/kgym`).
pub fn default_data_dir() -> PathBuf {
    if let Some(d) = std::env::var_os("KGYM_DATA") {
        return PathBuf::from(d);
    }
    dirs::data_dir().unwrap_or_else(std::env::temp_dir).join("kgym")
}

/// Opens the artifact store named by `url`: `gs://bucket` (GCS, needs the
/// `gcp` feature; credentials from the environment), `memory:` (in-memory),
/// or a local directory path (created if missing).
pub fn artifact_store_from_url(url: &str) -> Result<core::ArtifactStore, GymError> {
    let wrap = |source| GymError::Artifacts { url: url.to_owned(), source };
    if let Some(bucket) = url.strip_prefix("gs://") {
        #[cfg(feature = "gcp")]
        return core::ArtifactStore::gcs(bucket.trim_end_matches('/')).map_err(wrap);
        #[cfg(not(feature = "gcp"))]
        {
            let _ = bucket;
            return Err(GymError::GcsDisabled { url: url.to_owned() });
        }
    }
    if url == "memory:" {
        return Ok(core::ArtifactStore::in_memory());
    }
    core::ArtifactStore::local(url.strip_prefix("file://").unwrap_or(url)).map_err(wrap)
}
