//! [`AmqpQueue`]: announcements on RabbitMQ.

use std::collections::HashSet;
use std::sync::Arc;
use std::time::Duration;

use async_trait::async_trait;
use futures::StreamExt;
use lapin::options::{
    BasicAckOptions, BasicConsumeOptions, BasicNackOptions, BasicPublishOptions, BasicQosOptions, ConfirmSelectOptions,
    QueueDeclareOptions,
};
use lapin::types::{AMQPValue, FieldTable};
use lapin::{BasicProperties, Channel};
use tokio::sync::Mutex;

use super::link::Link;
use crate::error::{Error, Result};
use crate::queue::{Acker, Announcement, Consumer, Delivery, Queue, Route, WorkerSignal};

/// Longest a publish waits for the broker (a connection being reopened
/// included) before it fails; the scheduler then keeps the announcement
/// and publishes it again later.
const PUBLISH_TIMEOUT: Duration = Duration::from_secs(10);
/// Unacked deliveries a consumer may hold (the scheduler's claimers of a
/// route share one consumer and ack each delivery once its claim is
/// recorded).
const PREFETCH: u16 = 64;
/// Longest queue name RabbitMQ takes (bytes).
const MAX_QUEUE_NAME: usize = 255;

/// Announcements on a RabbitMQ broker: one durable queue per [`Route`]
/// (`<prefix>.stage.<kind>`, `<prefix>.stage.<kind>.<k=v,...>` for a
/// pool), persistent messages, publisher confirms, manual acks. A message
/// nacked without requeue goes to the dead-letter queue `<prefix>.dead`
/// (RabbitMQ records why in its `x-death` header). A broken connection is
/// opened again, with backoff, by whoever needs it next; a consumer whose
/// channel died resumes on a new one (its unacked deliveries went back to
/// the queue with the old channel, as AMQP says).
#[derive(Debug, Clone)]
pub struct AmqpQueue {
    inner: Arc<Inner>,
}

#[derive(Debug)]
struct Inner {
    link: Arc<Link>,
    prefix: String,
    /// The confirm-mode channel publishes go through, and the queues
    /// declared on its connection.
    publisher: Mutex<Option<(Channel, HashSet<String>)>>,
}

impl AmqpQueue {
    /// Connects to the broker at `uri` (`amqp://user:password@host:5672/%2f`);
    /// queue names start with `prefix` (e.g. `kgym`), so several gyms can
    /// share a broker.
    pub async fn connect(uri: &str, prefix: &str) -> Result<Self> {
        super::check_prefix(prefix)?;
        let link = Link::connect(uri, &format!("kgym {prefix} queue")).await?;
        Ok(Self { inner: Arc::new(Inner { link, prefix: prefix.to_owned(), publisher: Mutex::new(None) }) })
    }

    /// The queue name of `route`.
    pub fn queue_name(&self, route: &Route) -> String {
        queue_name(&self.inner.prefix, route)
    }

    /// The dead-letter queue's name.
    pub fn dead_letter_queue(&self) -> String {
        dead_letter_queue(&self.inner.prefix)
    }

    /// Closes the connection (consumers and publishes fail from then on).
    pub async fn close(&self) {
        self.inner.link.close().await;
    }

    /// The confirm-mode publishing channel (and the queues declared on
    /// it), opened anew when there is none or it broke.
    async fn open_publisher<'a>(
        &self,
        publisher: &'a mut Option<(Channel, HashSet<String>)>,
    ) -> Result<&'a mut (Channel, HashSet<String>)> {
        if publisher.as_ref().is_none_or(|(ch, _)| !ch.status().connected()) {
            *publisher = None;
            let ch = self.inner.link.channel().await?;
            ch.confirm_select(ConfirmSelectOptions::default())
                .await
                .map_err(|e| self.inner.link.error("confirm_select", &e))?;
            *publisher = Some((ch, HashSet::new()));
        }
        let Some(open) = publisher.as_mut() else { unreachable!("opened above") };
        Ok(open)
    }

    async fn try_publish(&self, ann: &Announcement) -> Result<()> {
        let name = self.queue_name(&ann.route());
        let mut publisher = self.inner.publisher.lock().await;
        let (ch, declared) = self.open_publisher(&mut publisher).await?;
        if !declared.contains(&name) {
            declare(&self.inner.link, ch, &name, &self.dead_letter_queue()).await?;
            declared.insert(name.clone());
        }
        let body = serde_json::to_vec(ann).map_err(|e| Error::bad_request(format!("announcement: {e}")))?;
        let confirm = ch
            .basic_publish(
                "".into(),
                name.as_str().into(),
                // Mandatory: a queue deleted behind our back returns the
                // message instead of dropping it.
                BasicPublishOptions { mandatory: true, ..Default::default() },
                &body,
                BasicProperties::default().with_delivery_mode(2).with_content_type("application/json".into()),
            )
            .await
            .map_err(|e| self.inner.link.error("publish", &e))?
            .await
            .map_err(|e| self.inner.link.error("publish confirm", &e))?;
        if !confirm.is_ack() {
            return Err(queue_error("publish", ann, "the broker nacked the message"));
        }
        if confirm.take_message().is_some() {
            declared.remove(&name);
            return Err(queue_error("publish", ann, &format!("no queue {name} (returned unroutable)")));
        }
        Ok(())
    }
}

#[async_trait]
impl Queue for AmqpQueue {
    async fn publish(&self, announcement: &Announcement) -> Result<()> {
        match tokio::time::timeout(PUBLISH_TIMEOUT, self.try_publish(announcement)).await {
            Ok(Ok(())) => Ok(()),
            Ok(Err(e)) => {
                // The channel may be the cause: a fresh one next time.
                *self.inner.publisher.lock().await = None;
                Err(e)
            }
            Err(_) => {
                *self.inner.publisher.lock().await = None;
                Err(queue_error("publish", announcement, &format!("no broker confirm within {PUBLISH_TIMEOUT:?}")))
            }
        }
    }

    async fn signal(&self, signal: &WorkerSignal) -> Result<()> {
        let name = control_queue(&self.inner.prefix, &signal.host);
        let body = serde_json::to_vec(signal).map_err(|e| Error::bad_request(format!("signal: {e}")))?;
        let link = &self.inner.link;
        let sent = tokio::time::timeout(PUBLISH_TIMEOUT, async {
            let mut publisher = self.inner.publisher.lock().await;
            let (ch, _) = self.open_publisher(&mut publisher).await?;
            // Not mandatory: a worker that is gone has no queue, and then
            // there is nobody to tell.
            ch.basic_publish(
                "".into(),
                name.as_str().into(),
                BasicPublishOptions::default(),
                &body,
                BasicProperties::default().with_content_type("application/json".into()),
            )
            .await
            .map_err(|e| link.error("signal a worker", &e))?
            .await
            .map_err(|e| link.error("signal a worker", &e))?;
            Ok::<(), Error>(())
        })
        .await;
        match sent {
            Ok(r) => r,
            Err(_) => Err(Error::Amqp {
                op: "signal a worker",
                broker: super::link::redact(link.uri()),
                message: format!("no broker confirm within {PUBLISH_TIMEOUT:?}"),
            }),
        }
    }

    async fn consume(&self, route: &Route) -> Result<Box<dyn Consumer>> {
        let mut consumer = AmqpConsumer {
            link: Arc::clone(&self.inner.link),
            queue: self.queue_name(route),
            dead: self.dead_letter_queue(),
            open: None,
        };
        consumer.reopen().await?;
        Ok(Box::new(consumer))
    }
}

/// Declares the durable queue `name`, dead-lettering into `dead`.
pub(super) async fn declare(link: &Link, ch: &Channel, name: &str, dead: &str) -> Result<()> {
    let durable = QueueDeclareOptions { durable: true, ..Default::default() };
    ch.queue_declare(dead.into(), durable, FieldTable::default()).await.map_err(|e| link.error("declare", &e))?;
    let mut args = FieldTable::default();
    args.insert("x-dead-letter-exchange".into(), AMQPValue::LongString("".into()));
    args.insert("x-dead-letter-routing-key".into(), AMQPValue::LongString(dead.into()));
    ch.queue_declare(name.into(), durable, args).await.map_err(|e| link.error("declare", &e))?;
    Ok(())
}

/// The dead-letter queue under `prefix`.
pub(super) fn dead_letter_queue(prefix: &str) -> String {
    format!("{prefix}.dead")
}

/// The control queue of the worker process on `host` (see
/// [`crate::queue::WorkerSignal`]): readable while it fits, else by hash.
pub(super) fn control_queue(prefix: &str, host: &str) -> String {
    let readable = format!("{prefix}.worker.{host}");
    if readable.len() <= MAX_QUEUE_NAME { readable } else { format!("{prefix}.worker.host-{:016x}", fnv(host)) }
}

/// FNV-1a: stable across processes and versions (the std hasher is not).
fn fnv(text: &str) -> u64 {
    text.bytes().fold(0xcbf2_9ce4_8422_2325_u64, |h, b| (h ^ u64::from(b)).wrapping_mul(0x100_0000_01b3))
}

/// The queue name of `route` under `prefix`: readable while it fits
/// RabbitMQ's 255 bytes, else the label set by its hash.
pub(super) fn queue_name(prefix: &str, route: &Route) -> String {
    let base = format!("{prefix}.stage.{}", route.kind);
    if route.labels.is_empty() {
        return base;
    }
    let labels = crate::labels::display(&route.labels);
    let readable = format!("{base}.{labels}");
    if readable.len() <= MAX_QUEUE_NAME {
        return readable;
    }
    format!("{base}.labels-{:016x}", fnv(&labels))
}

fn queue_error(op: &'static str, ann: &Announcement, message: &str) -> Error {
    Error::Queue { op, kind: ann.kind.clone(), message: message.to_owned() }
}

/// A consumer of one queue, on its own channel (prefetch [`PREFETCH`]).
struct AmqpConsumer {
    link: Arc<Link>,
    queue: String,
    dead: String,
    open: Option<(Channel, lapin::Consumer)>,
}

impl std::fmt::Debug for AmqpConsumer {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("AmqpConsumer").field("queue", &self.queue).finish_non_exhaustive()
    }
}

impl AmqpConsumer {
    /// A new channel and consumer (the link waits for the broker).
    async fn reopen(&mut self) -> Result<()> {
        self.close_channel();
        let ch = self.link.channel().await?;
        ch.basic_qos(PREFETCH, BasicQosOptions::default()).await.map_err(|e| self.link.error("qos", &e))?;
        declare(&self.link, &ch, &self.queue, &self.dead).await?;
        let consumer = ch
            .basic_consume(
                self.queue.as_str().into(),
                "".into(),
                BasicConsumeOptions { no_ack: false, ..Default::default() },
                FieldTable::default(),
            )
            .await
            .map_err(|e| self.link.error("consume", &e))?;
        self.open = Some((ch, consumer));
        Ok(())
    }

    /// Closes the channel: its unacked deliveries go back to the queue.
    fn close_channel(&mut self) {
        if let Some((ch, _)) = self.open.take() {
            tokio::spawn(async move {
                let _ = ch.close(200, "consumer closed".into()).await;
            });
        }
    }
}

#[async_trait]
impl Consumer for AmqpConsumer {
    async fn next(&mut self) -> Result<Delivery> {
        loop {
            if self.open.is_none() {
                // Cancel safe: an abandoned reopen leaves `open` empty
                // and the next call starts over.
                self.reopen().await?;
            }
            let Some((_, consumer)) = self.open.as_mut() else { continue };
            // `StreamExt::next` on lapin's consumer is cancel safe: a
            // delivery not yet taken stays in its buffer.
            match consumer.next().await {
                Some(Ok(d)) => match serde_json::from_slice::<Announcement>(&d.data) {
                    Ok(announcement) => {
                        let acker = AmqpAcker { link: Arc::clone(&self.link), acker: Some(d.acker) };
                        return Ok(Delivery::new(announcement, d.redelivered, Box::new(acker)));
                    }
                    Err(e) => {
                        // Not ours to understand: dead-lettered, not looped.
                        tracing::warn!(queue = %self.queue, error = %e, "malformed announcement dead-lettered");
                        let _ = d.acker.nack(BasicNackOptions { requeue: false, ..Default::default() }).await;
                    }
                },
                Some(Err(e)) => {
                    tracing::info!(queue = %self.queue, error = %e, "AMQP consumer broke; reopening");
                    self.close_channel();
                }
                None => {
                    // A consumer that ended (channel closed, broker gone)
                    // never delivers again: a new one.
                    tracing::info!(queue = %self.queue, "AMQP consumer ended; reopening");
                    self.close_channel();
                }
            }
        }
    }
}

impl Drop for AmqpConsumer {
    fn drop(&mut self) {
        self.close_channel();
    }
}

/// Acks or nacks one delivery; dropped unanswered, the delivery stays
/// unacked until its channel closes (then the broker redelivers it).
#[derive(Debug)]
struct AmqpAcker {
    link: Arc<Link>,
    acker: Option<lapin::Acker>,
}

#[async_trait]
impl Acker for AmqpAcker {
    async fn ack(mut self: Box<Self>) -> Result<()> {
        if let Some(a) = self.acker.take() {
            a.ack(BasicAckOptions::default()).await.map_err(|e| self.link.error("ack", &e))?;
        }
        Ok(())
    }

    async fn nack(mut self: Box<Self>, requeue: bool) -> Result<()> {
        if let Some(a) = self.acker.take() {
            a.nack(BasicNackOptions { requeue, ..Default::default() })
                .await
                .map_err(|e| self.link.error("nack", &e))?;
        }
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use kgym_core::{Labels, StageKind};

    use super::*;

    #[test]
    fn queue_names_are_readable_and_fit() {
        let kind = StageKind::build();
        assert_eq!(queue_name("kgym", &Route::of(&kind)), "kgym.stage.build");
        let big: Labels = [("pool".to_owned(), "big".to_owned())].into();
        assert_eq!(queue_name("kgym", &Route::with_labels(&kind, big)), "kgym.stage.build.pool=big");
        let long: Labels = (0..6).map(|i| (format!("k{i}{}", "x".repeat(60)), "v".repeat(63))).collect();
        let name = queue_name("kgym", &Route::with_labels(&kind, long.clone()));
        assert!(name.len() <= MAX_QUEUE_NAME && name.starts_with("kgym.stage.build.labels-"), "{name}");
        assert_eq!(name, queue_name("kgym", &Route::with_labels(&kind, long)), "not stable");
    }
}
