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
//! - `disk`: [`pack_disk`], a GCE-bootable disk tarball from a userspace
//!   image and a kernel (in its `/boot`);
//! - `serial`: one instance's serial port read by `start`/`next` offsets
//!   (the text goes to the QEMU runner's console watch);
//! - `cleanup`: deleting the run's instances, image and upload on every
//!   path;
//! - `runner`: [`GceRunner`], the [`VmRunner`](crate::VmRunner): the
//!   reproducer delivered over SSH, the console watched with the QEMU
//!   runner's rules;
//! - `route`: [`MachineRouter`], a local runner and a GCE one behind one
//!   `VmRunner`, picked by the request's machine (`gce:<type>` or not).
//!
//! ```no_run
//! use std::sync::Arc;
//! use std::time::Duration;
//! use kgym_core::ArtifactStore;
//! use kgym_core::stage::reproduce::Reproducer;
//! use kgym_vm::gce::{ComputeClient, GceRunner, MetadataToken};
//! use kgym_vm::{DiskImage, RunContext, RunRequest, UserspaceSpec, VmRunner};
//!
//! # async fn demo() -> kgym_vm::Result<()> {
//! let client = ComputeClient::new("my-project", "us-central1-a", Arc::new(MetadataToken::new()));
//! // Local disks are packed with the kernel and uploaded to this bucket.
//! let uploads = ArtifactStore::local("/mnt/bucket").unwrap(); // ArtifactStore::gcs("my-bucket") in a deployment
//! let runner = GceRunner::new(client).with_bucket("my-bucket").with_disk_uploads(uploads);
//! let req = RunRequest::new("bzImage", Reproducer::c("int main(void) { return 0; }"))
//!     .vmlinux("vmlinux")
//!     .userspace(UserspaceSpec::Image(DiskImage::new("bullseye.raw", "bullseye.id_rsa")))
//!     .machine("gce:e2-standard-2".parse().unwrap())
//!     .instances(2)
//!     .budget(Duration::from_secs(600));
//! let out = runner.run(req, &RunContext::new()).await?;
//! println!("{}", out.title.as_deref().unwrap_or("no crash"));
//! # Ok(()) }
//! ```
//!
//! ## What is tested, and what is not
//!
//! `tests/gce.rs` runs against a fake Compute API on 127.0.0.1 that
//! checks each request (paths, bearer token, JSON bodies: the image's
//! `rawDisk.source`, the instance's `machineType`, `sourceImage`, boot
//! disk, network and `serial-port-enable`), answers operations `RUNNING`
//! before `DONE`, and serves a real syzbot console log in chunks by
//! `start`/`next`. `tests/gce_qemu.rs` runs against a fake whose instances
//! are QEMU VMs booting the packed disk: serial output and SSH are real.
//! Nothing here has been run against live Compute Engine: the request and
//! answer shapes follow the API reference, but real quotas, operation
//! latencies, the serial buffer's size (and the lost-output path against
//! it), image creation from a real tarball, a bootloader in the disk and
//! OAuth tokens are not exercised. See `docs/gce.md` in the repository.

mod cleanup;
mod client;
mod disk;
mod route;
mod runner;
mod serial;
mod token;

pub use client::{
    ComputeClient, DEFAULT_ENDPOINT, Instance, InstanceSpec, NetworkInterface, Operation, OperationError,
    OperationErrors, OperationScope, READ_ATTEMPTS, SerialPortOutput, StaticToken, TokenProvider,
};
pub use disk::{KERNEL_PATH, pack_disk};
pub use route::MachineRouter;
pub use runner::{DEFAULT_MACHINE_TYPE, GceRunner};
pub use token::{METADATA_TOKEN_URL, MetadataToken};
