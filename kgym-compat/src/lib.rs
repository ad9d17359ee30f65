//! # kgym-compat
//!
//! Compatibility with the original kGym, kept out of the scheduler (which
//! knows no stage schema):
//!
//! - [`convert`]: kGym's raw job payload (`{job_workers, worker_arguments,
//!   kv}`) into a [`JobSpec`](kgym_core::JobSpec). Worker kinds map as
//!   `kbuilder` → `build`, `kvmmanager` → `reproduce`, `kprebuilder` →
//!   `patch-check`; any other name is taken as one of our kinds with its
//!   argument passed through unchanged.
//! - [`present_job`] and friends: our jobs, results and logs shown with
//!   kGym's field names (`crash-description`, `kernel-image-url`, ...)
//!   beside ours.
//! - [`router`]: kGym's REST routes (`POST /jobs/new_raw_job`,
//!   `GET /jobs/?mode=...`, `/jobs/{id}/...`, `/system/...`) over any
//!   [`Scheduler`](kgym_sched::Scheduler), merged into kgym's HTTP server so
//!   kcomposer scripts keep working. The routes are described in this
//!   crate's `openapi.json`.
//! - [`kbench`]: kBench/syzbot bug records as jobs (bug reproduction, cross
//!   reproduction, patch evaluation) and the verdict of a patch.
//!
//! ```
//! use kgym_compat::{CompatOptions, RawJob, convert};
//!
//! let raw: RawJob = serde_json::from_value(serde_json::json!({
//!     "job_workers": ["kbuilder"],
//!     "worker_arguments": [{
//!         "kernel-git-url": "https://git.kernel.org/pub/scm/linux/kernel/git/torvalds/linux.git",
//!         "kernel-commit-id": "830b3c68c1fb1e9176028d02ef86f3cf76aa2476",
//!         "kernel-config": "CONFIG_KASAN=y\n",
//!         "userspace-image-name": "",
//!         "kernel-arch": "amd64"
//!     }],
//!     "kv": {"composed-by": "me"}
//! })).unwrap();
//! let spec = convert(&raw, &CompatOptions::default()).unwrap();
//! assert_eq!(spec.stages[0].kind.as_str(), "build");
//! assert_eq!(spec.tags["composed-by"], "me");
//! ```

mod convert;
pub mod kbench;
mod present;
mod routes;

use std::path::PathBuf;

use chrono::{DateTime, NaiveDateTime, Utc};
use kgym_core::Tags;
use serde::{Deserialize, Serialize};

pub use convert::convert;
pub use present::{
    kgym_kind, present_job, present_log_entry, present_page, present_result, present_summary, present_sys_entry,
};
pub use routes::{route_table, router};

/// The OpenAPI document of kGym's routes.
pub const OPENAPI: &str = include_str!("../openapi.json");

/// Submits a kGym payload to a kgym server (`POST /jobs/new_raw_job`),
/// which converts it as [`convert`] does.
pub async fn submit_raw_job(
    client: &kgym_sched::http::HttpScheduler,
    raw: &RawJob,
) -> kgym_sched::Result<kgym_core::JobId> {
    client.call(kgym_sched::http::Method::POST, "/jobs/new_raw_job", Some(raw)).await
}

/// kGym's job payload (`POST /jobs/new_raw_job`, `POST /jobs/{id}/reset`).
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct RawJob {
    /// Worker kinds, one per stage (`kbuilder`, `kvmmanager`, `kprebuilder`).
    pub job_workers: Vec<String>,
    /// Their arguments, in kGym's kebab-case form.
    pub worker_arguments: Vec<serde_json::Value>,
    /// Tags.
    #[serde(default)]
    pub kv: Tags,
}

/// Settings of the conversion.
#[derive(Debug, Clone, Default)]
pub struct CompatOptions {
    /// Where named userspace images live: a kbuilder's non-empty
    /// `userspace-image-name` `N` becomes the disk image `DIR/N` with the SSH
    /// key `DIR/<N without extension>.id_rsa`. Without it, only the empty
    /// name (the generated initramfs) is accepted.
    pub image_dir: Option<PathBuf>,
}

/// kGym's time format: `2024-05-01T12:00:00.000000` (UTC, no zone).
pub fn kgym_time(t: &DateTime<Utc>) -> String {
    t.format("%Y-%m-%dT%H:%M:%S%.6f").to_string()
}

/// Reads kGym's time format or RFC 3339.
pub fn parse_time(text: &str) -> Option<DateTime<Utc>> {
    if let Ok(t) = DateTime::parse_from_rfc3339(text) {
        return Some(t.with_timezone(&Utc));
    }
    NaiveDateTime::parse_from_str(text, "%Y-%m-%dT%H:%M:%S%.f").ok().map(|n| n.and_utc())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn times_round_trip_in_kgym_format() {
        let t = parse_time("2024-05-01T12:00:00.123456").unwrap();
        assert_eq!(kgym_time(&t), "2024-05-01T12:00:00.123456");
        assert_eq!(parse_time("2024-05-01T12:00:00Z").unwrap().timestamp(), t.timestamp());
        assert!(parse_time("yesterday").is_none());
    }
}
