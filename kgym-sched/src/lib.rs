//! # kgym-sched
//!
//! Ties stages into jobs and runs them, with nothing lost when a process
//! dies. It never needs to know what a build is: a stage is a kind plus a
//! JSON argument, checked at submit by the [`StageSchema`](kgym_core::StageSchema)
//! registered for its kind ([`StageRegistry`]).
//!
//! - [`Scheduler`]: the trait clients program against (submit, get, list,
//!   abort, restart, reset, tags, logs, watch), with conveniences in
//!   [`SchedulerExt`] (`wait`, `run`). Used as `Arc<dyn Scheduler>`.
//! - [`sqlite::SqliteScheduler`]: state in SQLite (WAL, embedded
//!   migrations, one transaction per transition); ready stages announced on
//!   a [`queue::Queue`]; workers claim a stage with a compare-and-set and
//!   hold a lease renewed by heartbeats; an expired lease puts the stage
//!   back on its queue (bounded attempts, then a `worker-lost` failure); at
//!   start, queued stages are announced again.
//! - [`worker_api::WorkerBackend`]: the scheduler as workers see it;
//!   [`runtime::WorkerRuntime`] runs any [`kgym_core::Worker`] with N slots
//!   over it (the SQLite scheduler in-process, or
//!   [`http::HttpWorkerBackend`] from another process): cancellation on
//!   abort, log streaming, hand-back on SIGTERM.
//! - [`http`]: the axum server (typed API and worker protocol, see
//!   `openapi.json`; other crates [`merge`](http::ServerBuilder::merge)
//!   their routes in) and [`http::HttpScheduler`], the same trait over
//!   HTTP: switching a harness from local to remote is one line.
//! - [`conformance`]: the suites every queue, scheduler and worker backend
//!   must pass.
//!
//! The whole gym of one machine (scheduler + local workers + HTTP API) is
//! wired in one place, the `kgym` facade's `Gym`; here is the same by hand:
//!
//! ```
//! use std::sync::Arc;
//! use kgym_core::stage::StageArgs;
//! use kgym_core::{JobSpec, StageContext, StageFailure, StageWorker};
//! use kgym_sched::runtime::WorkerRuntime;
//! use kgym_sched::sqlite::SqliteScheduler;
//! use kgym_sched::{Scheduler, SchedulerExt, StageRegistry};
//! use serde::{Deserialize, Serialize};
//!
//! #[derive(Serialize, Deserialize)]
//! struct NoopArgs {}
//! impl StageArgs for NoopArgs {
//!     const KIND: &'static str = "noop";
//!     type Output = u32;
//! }
//!
//! #[derive(Debug)]
//! struct Noop;
//!
//! #[kgym_core::async_trait]
//! impl StageWorker for Noop {
//!     type Args = NoopArgs;
//!     async fn run(&self, _args: NoopArgs, ctx: &StageContext) -> Result<u32, StageFailure> {
//!         ctx.log("nothing to do");
//!         Ok(ctx.stage.0)
//!     }
//! }
//!
//! # tokio::runtime::Runtime::new().unwrap().block_on(async {
//! let dir = tempfile::tempdir().unwrap();
//! let noop = Arc::new(Noop);
//! let sched = SqliteScheduler::builder()
//!     .database(dir.path().join("jobs.sqlite3"))
//!     .stages(StageRegistry::new().with_schema(noop.clone()))   // checked at submit
//!     .build()
//!     .await?;
//! let workers = WorkerRuntime::builder(Arc::new(sched.clone())).worker(noop, 2).start().await?;
//! let spec = JobSpec::new().stage(NoopArgs::kind(), &NoopArgs {}).stage(NoopArgs::kind(), &NoopArgs {});
//! let job = sched.run(spec).await?;      // submit + an event stream, no polling
//! assert!(job.succeeded());
//! assert_eq!(job.results[1].value, 1);
//! workers.shutdown().await;              // running stages would be handed back
//! # Ok::<(), kgym_sched::Error>(())
//! # }).unwrap();
//! ```

#[cfg(feature = "amqp")]
pub mod amqp;
pub mod conformance;
mod error;
pub mod http;
pub mod labels;
pub mod queue;
mod registry;
pub mod runtime;
mod scheduler;
pub mod sqlite;
mod store;
pub mod tags;
pub mod types;
pub mod worker_api;

pub use error::{Error, Problem, Result};
pub use registry::StageRegistry;
pub use scheduler::{EventStream, Scheduler, SchedulerExt};
