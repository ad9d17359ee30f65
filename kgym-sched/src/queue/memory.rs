//! [`InProcessQueue`]: announcements in memory, for the embedded gym.

use std::collections::HashMap;
use std::fmt;
use std::sync::{Arc, Mutex};

use async_trait::async_trait;
use tokio::sync::mpsc;

use super::{Acker, Announcement, Consumer, Delivery, Queue, Route};
use crate::error::{Error, Result};

/// One message in a queue: the announcement and whether it was handed out
/// before.
type Msg = (Announcement, bool);

#[derive(Debug)]
struct Channel {
    tx: mpsc::UnboundedSender<Msg>,
    rx: Arc<tokio::sync::Mutex<mpsc::UnboundedReceiver<Msg>>>,
}

/// An in-memory queue per route (kind and required labels). Competing consumers share one receiver, so
/// each announcement goes to exactly one of them; an unacked delivery is put
/// back when dropped or nacked with requeue. Nothing survives the process:
/// the embedded scheduler re-announces queued stages from its database at
/// start.
#[derive(Clone, Default)]
pub struct InProcessQueue {
    channels: Arc<Mutex<HashMap<Route, Arc<Channel>>>>,
}

impl fmt::Debug for InProcessQueue {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let routes: Vec<String> =
            self.channels.lock().map(|c| c.keys().map(ToString::to_string).collect()).unwrap_or_default();
        f.debug_struct("InProcessQueue").field("routes", &routes).finish()
    }
}

impl InProcessQueue {
    /// An empty queue set.
    pub fn new() -> Self {
        Self::default()
    }

    fn channel(&self, route: &Route) -> Arc<Channel> {
        let mut map = self.channels.lock().unwrap_or_else(|p| p.into_inner());
        Arc::clone(map.entry(route.clone()).or_insert_with(|| {
            let (tx, rx) = mpsc::unbounded_channel();
            Arc::new(Channel { tx, rx: Arc::new(tokio::sync::Mutex::new(rx)) })
        }))
    }
}

#[async_trait]
impl Queue for InProcessQueue {
    async fn publish(&self, announcement: &Announcement) -> Result<()> {
        let ch = self.channel(&announcement.route());
        ch.tx.send((announcement.clone(), false)).map_err(|_| Error::Queue {
            op: "publish",
            kind: announcement.kind.clone(),
            message: "the queue is closed".into(),
        })
    }

    async fn consume(&self, route: &Route) -> Result<Box<dyn Consumer>> {
        Ok(Box::new(InProcessConsumer { channel: self.channel(route), kind: route.kind.clone() }))
    }
}

#[derive(Debug)]
struct InProcessConsumer {
    channel: Arc<Channel>,
    kind: kgym_core::StageKind,
}

#[async_trait]
impl Consumer for InProcessConsumer {
    async fn next(&mut self) -> Result<Delivery> {
        // Both the lock and `recv` are cancel safe.
        let mut rx = self.channel.rx.lock().await;
        let (announcement, redelivered) = rx.recv().await.ok_or_else(|| Error::Queue {
            op: "consume",
            kind: self.kind.clone(),
            message: "the queue is closed".into(),
        })?;
        let acker = InProcessAcker { msg: Some(announcement.clone()), tx: self.channel.tx.clone() };
        Ok(Delivery::new(announcement, redelivered, Box::new(acker)))
    }
}

/// Puts the announcement back unless acked or nacked without requeue.
#[derive(Debug)]
struct InProcessAcker {
    msg: Option<Announcement>,
    tx: mpsc::UnboundedSender<Msg>,
}

impl InProcessAcker {
    fn requeue(&mut self) {
        if let Some(a) = self.msg.take() {
            // The receiver lives as long as the channel map; a send fails
            // only while the queue set is being dropped.
            let _ = self.tx.send((a, true));
        }
    }
}

#[async_trait]
impl Acker for InProcessAcker {
    async fn ack(mut self: Box<Self>) -> Result<()> {
        self.msg = None;
        Ok(())
    }

    async fn nack(mut self: Box<Self>, requeue: bool) -> Result<()> {
        if requeue {
            self.requeue();
        } else {
            self.msg = None;
        }
        Ok(())
    }
}

impl Drop for InProcessAcker {
    fn drop(&mut self) {
        self.requeue();
    }
}
