//! The worker protocol as request/reply messages on RabbitMQ: the wire
//! types and [`RpcClient`].
//!
//! A request is one JSON message on the queue `<prefix>.rpc`, carrying a
//! `correlation_id` and `reply_to = amq.rabbitmq.reply-to` (RabbitMQ's
//! direct reply-to: the answer comes back on the requesting channel without
//! a reply queue); [`super::RpcServer`] in the scheduler answers each with
//! one JSON [`Reply`]. Requests expire from the queue after
//! [`RPC_TIMEOUT`], the time a caller waits: a scheduler that was away
//! does not answer questions nobody waits for any more.

use std::collections::HashMap;
use std::sync::Arc;
use std::time::Duration;

use futures::StreamExt;
use kgym_core::{JobId, StageIndex, StageKind};
use lapin::options::{BasicConsumeOptions, BasicPublishOptions, QueueDeclareOptions};
use lapin::types::{AMQPValue, FieldTable, ShortString};
use lapin::{BasicProperties, Channel};
use serde::{Deserialize, Serialize};
use tokio::sync::{Mutex, oneshot};

use super::link::Link;
use crate::error::{Error, Result};
use crate::queue::Announcement;
use crate::worker_api::{Lease, StageOutcome, WorkerInfo};

/// Longest a caller waits for the scheduler's answer (and how long a
/// request stays on the queue).
pub(crate) const RPC_TIMEOUT: Duration = Duration::from_secs(30);
/// RabbitMQ's pseudo-queue for direct replies.
const DIRECT_REPLY_TO: &str = "amq.rabbitmq.reply-to";

/// The queue requests go to.
pub(crate) fn rpc_queue(prefix: &str) -> String {
    format!("{prefix}.rpc")
}

/// Declares the request queue (the server and every client do, with the
/// same arguments, so requests wait there while the scheduler restarts).
pub(crate) async fn declare_rpc_queue(link: &Link, ch: &Channel, name: &str) -> Result<()> {
    let mut args = FieldTable::default();
    // Requests nobody waits for any more expire.
    args.insert("x-message-ttl".into(), AMQPValue::LongUInt(RPC_TIMEOUT.as_millis() as u32));
    ch.queue_declare(name.into(), QueueDeclareOptions { durable: true, ..Default::default() }, args)
        .await
        .map_err(|e| link.error("declare", &e))?;
    Ok(())
}

/// One call of the worker protocol.
#[derive(Debug, Clone, Serialize, Deserialize)]
#[serde(tag = "op", rename_all = "snake_case")]
pub(crate) enum Request {
    /// [`crate::WorkerBackend::register`].
    Register { info: WorkerInfo },
    /// Claim the stage this announcement (delivered to the worker) names.
    Claim { announcement: Announcement, worker: String, host: String },
    /// [`crate::WorkerBackend::heartbeat`].
    Heartbeat { lease: Lease },
    /// [`crate::WorkerBackend::append_log`].
    AppendLog { lease: Lease, worker: String, lines: Vec<String> },
    /// [`crate::WorkerBackend::report`].
    Report { lease: Lease, outcome: StageOutcome },
    /// [`crate::WorkerBackend::yield_stage`].
    Yield { lease: Lease },
    /// [`crate::WorkerBackend::worker_event`].
    WorkerEvent { host: String, kind: Option<StageKind>, message: String },
    /// [`crate::WorkerBackend::deregister`].
    Deregister { host: String },
}

impl Request {
    /// The operation's name (for errors and logs).
    pub(crate) fn op(&self) -> &'static str {
        match self {
            Self::Register { .. } => "register",
            Self::Claim { .. } => "claim",
            Self::Heartbeat { .. } => "heartbeat",
            Self::AppendLog { .. } => "append_log",
            Self::Report { .. } => "report",
            Self::Yield { .. } => "yield",
            Self::WorkerEvent { .. } => "worker_event",
            Self::Deregister { .. } => "deregister",
        }
    }
}

/// The answer to a [`Request`]: its value, or the error, typed where the
/// worker acts on the type.
#[derive(Debug, Clone, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub(crate) enum Reply {
    /// The call's value.
    Ok(serde_json::Value),
    /// The call failed.
    Err(WireError),
}

/// An [`Error`] on the wire.
#[derive(Debug, Clone, Serialize, Deserialize)]
#[serde(tag = "code", rename_all = "kebab-case")]
pub(crate) enum WireError {
    /// [`Error::LeaseLost`].
    LeaseLost { job: JobId, stage: StageIndex },
    /// [`Error::JobNotFound`].
    NotFound { job: JobId },
    /// [`Error::ShuttingDown`].
    ShuttingDown,
    /// [`Error::BadRequest`].
    BadRequest { message: String },
    /// Anything else, as text.
    Internal { message: String },
}

impl From<&Error> for WireError {
    fn from(e: &Error) -> Self {
        match e {
            Error::LeaseLost { job, stage } => Self::LeaseLost { job: *job, stage: *stage },
            Error::JobNotFound { id } => Self::NotFound { job: *id },
            Error::ShuttingDown => Self::ShuttingDown,
            Error::BadRequest { message } => Self::BadRequest { message: message.clone() },
            other => Self::Internal { message: kgym_core::failure::error_chain(other) },
        }
    }
}

impl WireError {
    /// The error the caller of `op` sees.
    pub(crate) fn into_error(self, op: &'static str) -> Error {
        match self {
            Self::LeaseLost { job, stage } => Error::LeaseLost { job, stage },
            Self::NotFound { job } => Error::JobNotFound { id: job },
            Self::ShuttingDown => Error::ShuttingDown,
            Self::BadRequest { message } => Error::BadRequest { message },
            Self::Internal { message } => Error::RpcFailed { op, message },
        }
    }
}

/// Callers waiting for answers, by correlation id.
type Pending = Arc<std::sync::Mutex<HashMap<String, oneshot::Sender<Vec<u8>>>>>;

/// Sends requests to the scheduler and waits for their answers. One
/// channel carries every call (direct reply-to answers on the channel that
/// asked); a broken channel fails the calls in flight and the next call
/// opens a new one.
#[derive(Debug)]
pub(crate) struct RpcClient {
    link: Arc<Link>,
    queue: String,
    open: Mutex<Option<(Channel, Pending)>>,
}

impl RpcClient {
    pub(crate) fn new(link: Arc<Link>, prefix: &str) -> Self {
        Self { link, queue: rpc_queue(prefix), open: Mutex::new(None) }
    }

    /// Sends `req` and decodes its answer as `T`.
    pub(crate) async fn call<T: serde::de::DeserializeOwned>(&self, req: &Request) -> Result<T> {
        let op = req.op();
        let body = serde_json::to_vec(req).map_err(|e| Error::bad_request(format!("encode {op}: {e}")))?;
        let answer = match tokio::time::timeout(RPC_TIMEOUT, self.send(op, &body)).await {
            Ok(answer) => answer?,
            Err(_) => {
                return Err(Error::RpcFailed {
                    op,
                    message: format!("no answer from the scheduler within {RPC_TIMEOUT:?}"),
                });
            }
        };
        let reply: Reply = serde_json::from_slice(&answer)
            .map_err(|e| Error::RpcFailed { op, message: format!("undecodable answer: {e}") })?;
        match reply {
            Reply::Ok(v) => serde_json::from_value(v)
                .map_err(|e| Error::RpcFailed { op, message: format!("undecodable answer: {e}") }),
            Reply::Err(e) => Err(e.into_error(op)),
        }
    }

    async fn send(&self, op: &'static str, body: &[u8]) -> Result<Vec<u8>> {
        let id = uuid::Uuid::new_v4().simple().to_string();
        let (tx, rx) = oneshot::channel();
        {
            let mut open = self.open.lock().await;
            if open.as_ref().is_none_or(|(ch, _)| !ch.status().connected()) {
                *open = Some(self.open_channel().await?);
            }
            let Some((ch, pending)) = open.as_ref() else { unreachable!("set above") };
            pending.lock().unwrap_or_else(|p| p.into_inner()).insert(id.clone(), tx);
            let props = BasicProperties::default()
                .with_content_type("application/json".into())
                .with_correlation_id(ShortString::from(id.clone()))
                .with_reply_to(DIRECT_REPLY_TO.into())
                .with_expiration(RPC_TIMEOUT.as_millis().to_string().into());
            let sent = ch
                .basic_publish("".into(), self.queue.as_str().into(), BasicPublishOptions::default(), body, props)
                .await;
            if let Err(e) = sent {
                pending.lock().unwrap_or_else(|p| p.into_inner()).remove(&id);
                *open = None;
                return Err(self.link.error("publish a request", &e));
            }
        }
        rx.await.map_err(|_| Error::RpcFailed { op, message: "the connection to the broker broke".into() })
    }

    /// A channel consuming direct replies, with a task handing each to its
    /// caller.
    async fn open_channel(&self) -> Result<(Channel, Pending)> {
        let ch = self.link.channel().await?;
        declare_rpc_queue(&self.link, &ch, &self.queue).await?;
        let mut replies = ch
            .basic_consume(
                DIRECT_REPLY_TO.into(),
                "".into(),
                // Direct reply-to requires no-ack mode.
                BasicConsumeOptions { no_ack: true, ..Default::default() },
                FieldTable::default(),
            )
            .await
            .map_err(|e| self.link.error("consume replies", &e))?;
        let pending: Pending = Arc::default();
        let waiting = Arc::clone(&pending);
        tokio::spawn(async move {
            while let Some(Ok(d)) = replies.next().await {
                let Some(id) = d.properties.correlation_id().as_ref().map(|s| s.as_str().to_owned()) else { continue };
                if let Some(tx) = waiting.lock().unwrap_or_else(|p| p.into_inner()).remove(&id) {
                    let _ = tx.send(d.data);
                }
            }
            // The channel is gone: callers still waiting learn it now
            // (dropping their senders), not at their timeout.
            waiting.lock().unwrap_or_else(|p| p.into_inner()).clear();
        });
        Ok((ch, pending))
    }
}
