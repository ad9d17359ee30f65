//! The RabbitMQ transport (feature `amqp`): [`AmqpQueue`] carries the
//! scheduler's announcements on durable queues of a broker, so they
//! survive the scheduler's process and can be watched and drained with
//! RabbitMQ's own tools. It passes [`crate::conformance::queue`] against a
//! real `rabbitmq-server` (`kgym-sched/tests/amqp.rs`).
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

pub use queue::AmqpQueue;
