//! Reproducer runs on Compute Engine (feature `gce`).
//!
//! - `client`: [`ComputeClient`], the Compute Engine REST API v1 calls a
//!   run needs (images, instances, serial port output, operations) with
//!   typed errors ([`Error::GceQuota`](crate::Error::GceQuota),
//!   [`GcePermission`](crate::Error::GcePermission),
//!   [`GceNotFound`](crate::Error::GceNotFound),
//!   [`GceApi`](crate::Error::GceApi)...);
//! - `token`: [`MetadataToken`], the VM's service-account token from the
//!   metadata server ([`StaticToken`] for a fixed one);
//! - `serial`: one instance's serial port read by `start`/`next` offsets
//!   and fed to the same live crash parser as the QEMU runner's console;
//! - `cleanup`: deleting the run's instances and image on every path;
//! - `runner`: [`GceRunner`], the [`VmRunner`](crate::VmRunner);
//! - `route`: [`MachineRouter`], a local runner and a GCE one behind one
//!   `VmRunner`, picked by the request's machine (`gce:<type>` or not).
//!
//! ```no_run
//! use std::sync::Arc;
//! use std::time::Duration;
//! use kgym_core::stage::reproduce::Reproducer;
//! use kgym_vm::gce::{ComputeClient, GceRunner, StaticToken};
//! use kgym_vm::{DiskImage, RunContext, RunRequest, UserspaceSpec, VmRunner};
//!
//! # async fn demo() -> kgym_vm::Result<()> {
//! let token = Arc::new(StaticToken(std::env::var("TOKEN").unwrap()));
//! let client = ComputeClient::new("my-project", "us-central1-a", token);
//! let runner = GceRunner::new(client).with_machine_type("e2-standard-2");
//! // The disk (with the kernel and a reproducer started at boot) is
//! // already in Cloud Storage as a gzip'd tar holding disk.raw.
//! let disk = DiskImage::new("gs://my-bucket/disks/bug.tar.gz", "unused-key");
//! let req = RunRequest::new("bzImage", Reproducer::c(String::new()))
//!     .userspace(UserspaceSpec::Image(disk))
//!     .instances(2)
//!     .budget(Duration::from_secs(600));
//! let out = runner.run(req, &RunContext::new()).await?;
//! println!("{}", out.title.as_deref().unwrap_or("no crash"));
//! # Ok(()) }
//! ```
//!
//! ## What is tested, and what is not
//!
//! `tests/gce.rs` runs everything against a fake Compute API on
//! 127.0.0.1 that checks each request (paths, bearer token, JSON bodies:
//! the image's `rawDisk.source`, the instance's `machineType`,
//! `sourceImage`, boot disk, network and `serial-port-enable`), answers
//! operations `RUNNING` before `DONE`, and serves a real syzbot console
//! log in chunks by `start`/`next`. Nothing here has been run against live
//! Compute Engine: the request and answer shapes follow the API reference,
//! but real quotas, operation latencies, the serial buffer's size (and the
//! lost-output path against it), image creation from a real tarball and
//! OAuth tokens are not exercised. See `docs/gce.md` in the repository.

mod cleanup;
mod client;
mod route;
mod runner;
mod serial;
mod token;

pub use client::{
    ComputeClient, DEFAULT_ENDPOINT, InstanceSpec, Operation, OperationError, OperationErrors, OperationScope,
    READ_ATTEMPTS, SerialPortOutput, StaticToken, TokenProvider,
};
pub use route::MachineRouter;
pub use runner::{DEFAULT_MACHINE_TYPE, GceRunner};
pub use token::{METADATA_TOKEN_URL, MetadataToken};
