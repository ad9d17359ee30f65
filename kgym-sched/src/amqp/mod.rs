//! The RabbitMQ transport (feature `amqp`): [`AmqpQueue`] carries the
//! scheduler's announcements on durable queues of a broker, so they
//! survive the scheduler's process and can be watched and drained with
//! RabbitMQ's own tools. It passes [`crate::conformance::queue`] against a
//! real `rabbitmq-server` (`kgym-sched/tests/amqp.rs`).
//!
//! Workers may take their stages from the broker too:
//! [`AmqpWorkerBackend`] consumes the announcement queues of its kinds and
//! pool itself (prefetch = its slots, each announcement acked only once
//! the scheduler recorded the stage's end) and speaks the rest of the
//! worker protocol as requests on `<prefix>.rpc`, which the scheduler's
//! [`RpcServer`] answers. It passes [`crate::conformance::workers`] the
//! same way.
//!
//! ```no_run
//! # async fn run() -> kgym_sched::Result<()> {
//! use std::sync::Arc;
//! use kgym_sched::amqp::AmqpQueue;
//! use kgym_sched::sqlite::SqliteScheduler;
//!
//! let queue = AmqpQueue::connect("amqp://kgym:secret@10.0.0.2:5672/%2f", "kgym").await?;
//! let scheduler = SqliteScheduler::builder().database("kgym.db").queue(Arc::new(queue)).build().await?;
//! # Ok(()) }
//! ```

mod link;
mod queue;
mod rpc;
mod server;
mod worker;

pub use link::redact;
pub use queue::AmqpQueue;
pub use server::RpcServer;
pub use worker::AmqpWorkerBackend;

use crate::error::{Error, Result};

/// Refuses a queue-name prefix RabbitMQ tools would find hard to read.
fn check_prefix(prefix: &str) -> Result<()> {
    if prefix.is_empty() || !prefix.bytes().all(|b| b.is_ascii_alphanumeric() || matches!(b, b'.' | b'_' | b'-')) {
        return Err(Error::bad_request(format!(
            "AMQP queue prefix {prefix:?} must be letters, digits, '.', '_' or '-'"
        )));
    }
    Ok(())
}
