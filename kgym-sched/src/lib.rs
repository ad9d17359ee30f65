//! # kgym-sched
//!
//! Ties stages into jobs and runs them, on one machine by default, with
//! nothing lost when a process dies:
//!
//! - [`Scheduler`]: the trait clients program against (submit, get, list,
//!   abort, restart, reset, tags, logs, watch), with conveniences in
//!   [`SchedulerExt`] (`wait`, `run`). Used as `Arc<dyn Scheduler>`.
//! - [`EmbeddedScheduler`]: state in SQLite (WAL, embedded migrations, one
//!   transaction per transition); ready stages are announced on a
//!   [`queue::Queue`]; workers claim a stage with a compare-and-set and hold
//!   a lease renewed by heartbeats; an expired lease puts the stage back on
//!   its queue (bounded attempts, then a `worker-lost` failure); at start,
//!   queued stages are announced again and held ones keep their lease until
//!   it expires.
//! - [`runtime::WorkerRuntime`]: runs any [`kgym_core::Worker`] with N slots
//!   against a [`worker_api::WorkerBackend`]: the embedded scheduler
//!   in-process, or [`http::HttpWorkerBackend`] in another process.
//!   Cancellation on abort, log streaming, hand-back on SIGTERM.
//! - [`http`]: the axum server (typed API, worker protocol, kGym's routes;
//!   see `openapi.json`) and [`http::HttpScheduler`], the same trait over
//!   HTTP: switching a harness from embedded to remote is one line.
//! - [`compat`]: kGym payloads (`kbuilder`, `kvmmanager`, `kprebuilder`) to
//!   job specs, and our jobs shown with kGym's field names.
//! - [`Embedded`]: all of it wired in one process (the embedding API of the
//!   `kgym` facade).
//!
//! The scheduler never needs to know what a build is: a stage is a kind plus
//! a JSON argument. Stock kinds (`build`, `reproduce`, `patch-check`) are
//! validated at submit with [`kgym_core::stage::validate_stock`].
//!
//! ```
//! use std::sync::Arc;
//! use kgym_core::{JobSpec, StageContext, StageFailure, StageKind, Worker};
//! use kgym_sched::{Embedded, Scheduler, SchedulerExt};
//!
//! #[derive(Debug)]
//! struct Noop;
//!
//! #[kgym_core::async_trait]
//! impl Worker for Noop {
//!     fn kind(&self) -> StageKind {
//!         StageKind::new("noop").unwrap()
//!     }
//!     async fn run(&self, ctx: StageContext) -> Result<serde_json::Value, StageFailure> {
//!         ctx.log("nothing to do");
//!         Ok(serde_json::json!({"stage": ctx.stage}))
//!     }
//! }
//!
//! # tokio::runtime::Runtime::new().unwrap().block_on(async {
//! let dir = tempfile::tempdir().unwrap();
//! let gym = Embedded::builder()
//!     .data_dir(dir.path())            // jobs.sqlite3 + artifacts/
//!     .worker(Arc::new(Noop), 2)       // in-process, 2 slots
//!     // .serve_http("127.0.0.1:8000".parse().unwrap(), Some("token".into()))
//!     .build()
//!     .await?;
//! let sched: Arc<dyn Scheduler> = gym.scheduler();
//! let spec = JobSpec::new()
//!     .stage(StageKind::new("noop").unwrap(), &serde_json::json!({}))
//!     .stage(StageKind::new("noop").unwrap(), &serde_json::json!({}))
//!     .tag("example", "yes");
//! let id = sched.submit(spec).await?;
//! let job = sched.wait(id).await?;     // an event stream, no polling
//! assert!(job.succeeded());
//! assert_eq!(job.results[1].value["stage"], 1);
//! gym.shutdown().await;                // running stages would be handed back
//! # Ok::<(), kgym_sched::Error>(())
//! # }).unwrap();
//! ```

pub mod compat;
pub mod embedded;
mod error;
pub mod http;
pub mod queue;
pub mod runtime;
mod scheduler;
mod store;
pub mod types;
mod validate;
pub mod worker_api;

pub use embedded::{Embedded, EmbeddedBuilder, EmbeddedScheduler, SchedulerBuilder};
pub use error::{Error, Problem, Result};
pub use scheduler::{EventStream, Scheduler, SchedulerExt};
