//! # kgym-core
//!
//! The contract of kgym: what a job is, what each stock stage takes and
//! returns, how artifacts are named and stored, and what a worker is. Every
//! other kgym crate, every remote worker and every client speaks these types.
//!
//! - [`JobSpec`] / [`Job`]: ordered stages (kind + JSON argument), tags,
//!   status and per-stage [`StageResult`]s.
//! - [`stage`]: typed arguments/results of `build`, `reproduce` and
//!   `patch-check`.
//! - [`ArtifactStore`]: `object_store`-backed storage with the key layout
//!   `jobs/{job}/{stage}_{kind}/{name}`.
//! - [`StageWorker`] (typed) / [`Worker`] (object safe) + [`StageContext`]:
//!   what a stage runner implements and gets; [`StageSchema`]: the argument
//!   check a scheduler runs at submit.
//!
//! Enums follow one rule for growth. What a worker *reports* (job status,
//! crash kinds, cache status, events) is `#[non_exhaustive]`: a client built
//! against this version keeps working when a newer worker reports more.
//! What a stage *asks for* (kernel source and config, compiler, reproducer
//! and userspace kinds, stop policy, accelerator) is exhaustive on purpose:
//! a new variant is a request every implementation must handle, so adding
//! one is a breaking change the compiler points out in each runner instead
//! of a silent fallback at run time. The one exception is
//! [`Arch`](stage::build::Arch), `#[non_exhaustive]` because new
//! architectures are certain to come and most code only passes it on: a
//! runner converts it once into the architectures it supports and refuses
//! the others with a typed error (kgym-vm's guest arch check).
//!
//! ```
//! use kgym_core::stage::build::{BaseConfig, BuildArgs, KernelConfig, KernelSource};
//! use kgym_core::stage::reproduce::{KernelRef, ReproduceArgs, Reproducer};
//! use kgym_core::{JobSpec, StageIndex, StageKind};
//!
//! let build = BuildArgs::new(
//!     KernelSource::tarball("/usr/src/linux-source-6.1.tar.xz"),
//!     KernelConfig::Base { base: BaseConfig::Tinyconfig, fragments: vec!["CONFIG_KASAN=y".into()] },
//! );
//! let repro = ReproduceArgs::new(
//!     KernelRef::FromStage { stage: StageIndex(0) },
//!     Reproducer::c("int main(void) { return 0; }"),
//! );
//! let spec = JobSpec::new()
//!     .stage(StageKind::build(), &build)
//!     .stage(StageKind::reproduce(), &repro)
//!     .tag("bug-reproduction-for", "example");
//! let json = serde_json::to_string_pretty(&spec).unwrap();
//! assert!(json.contains("\"kind\": \"reproduce\""));
//! ```

pub mod artifact;
mod context;
pub mod duration;
mod error;
pub mod failure;
mod id;
pub mod job;
mod logs;
mod machine;
pub mod stage;
pub mod worker;

pub use artifact::{ArtifactKey, ArtifactStore};
pub use context::StageContext;
pub use error::{Error, Result};
pub use failure::StageFailure;
pub use id::{JobId, StageIndex, StageKind};
pub use job::{Job, JobSpec, JobStatus, Labels, Outcome, StageResult, StageSpec, Tags};
pub use logs::{LogSink, MemorySink, TracingSink};
pub use machine::{GceMachineType, MachineSpec};
pub use stage::{InvalidArgs, StageArgs, StageSchema};
pub use worker::{StageWorker, Worker};

/// Re-exported so implementors of [`Worker`] need no extra dependency.
pub use async_trait::async_trait;
pub use tokio_util::sync::CancellationToken;
