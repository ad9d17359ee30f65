//! # kgym-proc
//!
//! Subprocesses that never outlive the process that started them, and the
//! locks that keep two of them from working on one thing. Shared by
//! `kgym-build` (make, git, tar), `kgym-vm` (QEMU, ssh, compilers) and the
//! test kit.
//!
//! - [`command`] / [`tree_command`]: a `tokio::process::Command` in its own
//!   process group, killed on drop, with a parent-death signal — a tree
//!   command (make and its compilers) runs under a tiny guard that kills
//!   its whole group when the owner dies, even by SIGKILL. [`spawn`] forks
//!   from one long-lived thread, because Linux fires the parent-death
//!   signal when the forking *thread* exits.
//! - [`run_lines`] / [`output`]: run to completion bounded by [`Limits`]
//!   (deadline + cancellation): the group gets SIGTERM, then SIGKILL.
//!   [`GroupGuard`] kills a group when a future is dropped.
//! - [`GroupRecord`]: a group written down (e.g. in a warm tree's state),
//!   so the next owner can prove it is still running and stop it.
//! - [`FileLock`]: `flock` locks across processes, released by the kernel
//!   when the holder dies.
//! - [`RemoveOnExit`]: a directory removed when the process ends, however
//!   it ends.
//! - [`terminated`] / [`cancel_on_termination`]: SIGINT, SIGTERM and SIGHUP
//!   as one "stop" signal.
//!
//! ```
//! use std::time::Duration;
//! use kgym_proc::{Limits, RunOptions};
//!
//! # tokio::runtime::Runtime::new().unwrap().block_on(async {
//! let mut make = kgym_proc::tree_command("sh");
//! make.args(["-c", "echo compiling; sleep 30"]);
//! let limits = Limits::new(Duration::from_millis(300), Default::default());
//! let err = kgym_proc::run_lines(make, "make", &limits, RunOptions::default()).await.unwrap_err();
//! // The shell and its `sleep` were killed with their process group.
//! assert!(matches!(err, kgym_proc::Error::Timeout { .. }));
//! # });
//! ```

mod cleanup;
mod error;
mod group;
mod guard;
mod lock;
mod run;
mod signal;
mod spawn;
mod tool;

pub use cleanup::RemoveOnExit;
pub use error::{Error, Result};
pub use group::GroupRecord;
pub use guard::GroupGuard;
pub use lock::FileLock;
pub use run::{Finished, Limits, OnSpawn, RunOptions, TERM_GRACE, output, run_lines};
pub use signal::{Termination, cancel_on_termination, terminated};
pub use spawn::{command, program_of, spawn, tree_command};
pub use tool::{find_tool, find_tool_in, require_tool};

// The README's examples are compiled as doc tests.
#[cfg(doctest)]
#[doc = include_str!("../README.md")]
struct ReadmeDoctests;
