//! [`RpcServer`]: the scheduler answering the worker protocol on RabbitMQ.

use std::sync::Arc;

use futures::StreamExt;
use lapin::options::{BasicAckOptions, BasicConsumeOptions, BasicPublishOptions, BasicQosOptions};
use lapin::types::FieldTable;
use lapin::{BasicProperties, Channel};
use tokio_util::sync::CancellationToken;

use super::link::Link;
use super::rpc::{Reply, Request, WireError, declare_rpc_queue, rpc_queue};
use crate::error::{Error, Result};
use crate::sqlite::SqliteScheduler;
use crate::worker_api::WorkerBackend;

/// Requests answered at once (unacked deliveries of the request queue).
const CONCURRENT_REQUESTS: u16 = 64;

/// Serves [`super::AmqpWorkerBackend`]s: consumes `<prefix>.rpc` and
/// answers each request from the scheduler's own [`WorkerBackend`]. A
/// request is acked once answered; one whose connection broke first is
/// delivered again (every request is safe to repeat: a claim of a stage
/// already claimed is refused, a second report of a lease is refused with
/// `lease-lost`, and log lines are recorded with their request's
/// correlation id, so a redelivered batch is not appended twice).
///
/// ```no_run
/// # async fn run(scheduler: kgym_sched::sqlite::SqliteScheduler) -> kgym_sched::Result<()> {
/// use kgym_sched::amqp::RpcServer;
/// let server = RpcServer::start("amqp://kgym:secret@10.0.0.2:5672/%2f", "kgym", scheduler).await?;
/// // ... workers connect with AmqpWorkerBackend ...
/// server.stop().await;
/// # Ok(()) }
/// ```
#[derive(Debug)]
pub struct RpcServer {
    link: Arc<Link>,
    stop: CancellationToken,
    task: tokio::task::JoinHandle<()>,
}

impl RpcServer {
    /// Connects to the broker at `uri` and answers requests on
    /// `<prefix>.rpc` from `scheduler` until [`stop`](Self::stop).
    pub async fn start(uri: &str, prefix: &str, scheduler: SqliteScheduler) -> Result<Self> {
        super::check_prefix(prefix)?;
        let link = Link::connect(uri, &format!("kgym {prefix} scheduler rpc")).await?;
        let stop = CancellationToken::new();
        // The first consumer opens here, so a broker refusing it is an
        // error the caller sees.
        let first = open(&link, &rpc_queue(prefix)).await?;
        let task = tokio::spawn(serve(Arc::clone(&link), rpc_queue(prefix), scheduler, stop.clone(), first));
        Ok(Self { link, stop, task })
    }

    /// Stops answering and closes the connection (requests in flight are
    /// delivered again to the next server).
    pub async fn stop(self) {
        self.stop.cancel();
        let _ = self.task.await;
        self.link.close().await;
    }
}

async fn open(link: &Link, queue: &str) -> Result<(Channel, lapin::Consumer)> {
    let ch = link.channel().await?;
    ch.basic_qos(CONCURRENT_REQUESTS, BasicQosOptions::default()).await.map_err(|e| link.error("qos", &e))?;
    declare_rpc_queue(link, &ch, queue).await?;
    let consumer = ch
        .basic_consume(queue.into(), "".into(), BasicConsumeOptions::default(), FieldTable::default())
        .await
        .map_err(|e| link.error("consume requests", &e))?;
    Ok((ch, consumer))
}

async fn serve(
    link: Arc<Link>,
    queue: String,
    scheduler: SqliteScheduler,
    stop: CancellationToken,
    first: (Channel, lapin::Consumer),
) {
    let mut open_now = Some(first);
    loop {
        let (ch, mut consumer) = match open_now.take() {
            Some(o) => o,
            None => {
                let reopened = tokio::select! {
                    o = open(&link, &queue) => o,
                    () = stop.cancelled() => return,
                };
                match reopened {
                    Ok(o) => o,
                    Err(e) => {
                        tracing::warn!(error = %e, "AMQP request queue unavailable; trying again");
                        tokio::time::sleep(std::time::Duration::from_secs(1)).await;
                        continue;
                    }
                }
            }
        };
        loop {
            let delivery = tokio::select! {
                d = consumer.next() => d,
                () = stop.cancelled() => {
                    let _ = ch.close(200, "scheduler stopping".into()).await;
                    return;
                }
            };
            match delivery {
                Some(Ok(d)) => {
                    let (ch, scheduler, link) = (ch.clone(), scheduler.clone(), Arc::clone(&link));
                    tokio::spawn(async move { answer(&link, &ch, &scheduler, d).await });
                }
                Some(Err(e)) => {
                    tracing::info!(error = %e, "AMQP request consumer broke; reopening");
                    break;
                }
                None => {
                    tracing::info!("AMQP request consumer ended; reopening");
                    break;
                }
            }
        }
        let _ = ch.close(200, "reopening".into()).await;
    }
}

/// Answers one request and acks it.
async fn answer(link: &Link, ch: &Channel, scheduler: &SqliteScheduler, d: lapin::message::Delivery) {
    let reply = match serde_json::from_slice::<Request>(&d.data) {
        Ok(req) => {
            let op = req.op();
            let id = d.properties.correlation_id().as_ref().map(|id| id.as_str().to_owned());
            match dispatch(scheduler, req, id.as_deref()).await {
                Ok(v) => Reply::Ok(v),
                Err(e) => {
                    if matches!(WireError::from(&e), WireError::Internal { .. }) {
                        tracing::error!(op, error = %kgym_core::failure::error_chain(&e), "worker request failed");
                    }
                    Reply::Err(WireError::from(&e))
                }
            }
        }
        // Malformed or an operation this scheduler does not know: an
        // answer saying so, not a loop.
        Err(e) => Reply::Err(WireError::BadRequest { message: format!("read the request: {e}") }),
    };
    if let Some(to) = d.properties.reply_to().as_ref() {
        let mut props = BasicProperties::default().with_content_type("application/json".into());
        if let Some(id) = d.properties.correlation_id().clone() {
            props = props.with_correlation_id(id);
        }
        let body = serde_json::to_vec(&reply).unwrap_or_default();
        // The asker may be gone (its channel closed): then the broker
        // drops the answer, which is what we want.
        if let Err(e) =
            ch.basic_publish("".into(), to.as_str().into(), BasicPublishOptions::default(), &body, props).await
        {
            tracing::info!(error = %link.error("answer a request", &e), "answer not sent");
            return; // unacked: delivered again on a new channel
        }
    }
    if let Err(e) = d.acker.ack(BasicAckOptions::default()).await {
        tracing::info!(error = %link.error("ack a request", &e), "request not acked");
    }
}

/// Runs one request; `id` is its correlation id, unique per request (a
/// redelivered request has the same one).
async fn dispatch(s: &SqliteScheduler, req: Request, id: Option<&str>) -> Result<serde_json::Value> {
    fn json<T: serde::Serialize>(v: T) -> Result<serde_json::Value> {
        serde_json::to_value(v).map_err(|e| Error::bad_request(format!("encode the answer: {e}")))
    }
    match req {
        Request::Register { info } => json(s.register(&info).await?),
        Request::Claim { announcement, worker, host } => {
            json(s.claim_announcement(&announcement, &worker, &host).await?)
        }
        Request::Heartbeat { lease } => json(s.heartbeat(&lease).await?),
        // The one request whose repetition would change the state: the
        // lines of a redelivered request are not appended again.
        Request::AppendLog { lease, worker, lines } => {
            let request = id.map(|id| format!("rpc:{id}"));
            json(s.append_log_once(&lease, &worker, &lines, request.as_deref()).await?)
        }
        Request::Report { lease, outcome } => json(s.report(&lease, outcome).await?),
        Request::Yield { lease } => json(s.yield_stage(&lease).await?),
        Request::WorkerEvent { host, kind, message } => json(s.worker_event(&host, kind.as_ref(), &message).await?),
        Request::Deregister { host } => json(s.deregister(&host).await?),
    }
}
