//! [`AmqpWorkerBackend`]: a worker that takes its stages from RabbitMQ.

use std::collections::{HashMap, HashSet};
use std::sync::Arc;
use std::time::Duration;

use async_trait::async_trait;
use futures::StreamExt;
use futures::stream::SelectAll;
use kgym_core::StageKind;
use lapin::Channel;
use lapin::options::{
    BasicAckOptions, BasicCancelOptions, BasicConsumeOptions, BasicNackOptions, BasicQosOptions, QueueDeclareOptions,
};
use lapin::types::{FieldTable, ShortString};
use tokio::sync::{Mutex, oneshot};
use tokio_util::sync::CancellationToken;

use super::link::Link;
use super::queue::{control_queue, dead_letter_queue, declare, queue_name};
use super::rpc::{Request, RpcClient};
use crate::error::{Error, Result};
use crate::queue::{Announcement, Route, SignalAction, WorkerSignal};
use crate::worker_api::{
    Claim, ClaimRequest, Lease, LeaseStatus, ReportAck, StageOutcome, WorkerBackend, WorkerInfo, finish_claim,
};

/// How long a claim's cancelled consumers are drained for deliveries
/// that crossed the cancel.
const CANCEL_DRAIN: Duration = Duration::from_millis(200);

/// The worker protocol over RabbitMQ, for worker processes that reach the
/// broker but not the scheduler's HTTP port.
///
/// Each stage kind the worker runs has one consumer channel on the
/// broker, reading every queue of the kind the worker's labels satisfy
/// (its pool), with `basic.qos` = the worker's slots of that kind: the
/// broker hands it at most as many announcements as it can run, so a busy
/// worker leaves the rest to idle ones. A delivered announcement is
/// claimed through the scheduler (a request on `<prefix>.rpc`, answered by
/// [`super::RpcServer`]) and stays unacked while the stage runs; it is
/// acked only once the scheduler recorded the stage's result (or took it
/// back). A worker that dies closes its channel and the broker hands the
/// announcement to another worker at once; the scheduler's lease decides
/// whether that one may have it yet. Heartbeats, logs and reports are
/// requests too.
///
/// RabbitMQ closes a channel that holds a delivery longer than its
/// `consumer_timeout` (30 minutes by default): a broker serving stages
/// longer than that needs it raised (`deploy/` does). Nothing is lost if it
/// is not: the announcement goes to another worker, which the lease keeps
/// from running the stage while its holder is alive.
///
/// ```no_run
/// # async fn f() -> kgym_sched::Result<()> {
/// use std::sync::Arc;
/// use kgym_sched::amqp::AmqpWorkerBackend;
/// use kgym_sched::runtime::WorkerRuntime;
/// # #[derive(Debug)] struct MyWorker;
/// # impl kgym_core::StageSchema for MyWorker { fn kind(&self) -> kgym_core::StageKind { kgym_core::StageKind::build() } }
/// # #[async_trait::async_trait] impl kgym_core::Worker for MyWorker {
/// #   async fn run(&self, _: kgym_core::StageContext) -> Result<serde_json::Value, kgym_core::StageFailure> { Ok(serde_json::Value::Null) } }
/// let backend = Arc::new(AmqpWorkerBackend::connect("amqp://kgym:secret@10.0.0.2:5672/%2f", "kgym").await?);
/// let runtime = WorkerRuntime::builder(backend).worker(Arc::new(MyWorker), 2).start().await?;
/// runtime.run_until_signal().await?;
/// # Ok(()) }
/// ```
#[derive(Debug, Clone)]
pub struct AmqpWorkerBackend {
    inner: Arc<Inner>,
}

#[derive(Debug)]
struct Inner {
    link: Arc<Link>,
    prefix: String,
    rpc: RpcClient,
    /// What each worker host registered as (its labels: its pool).
    hosts: std::sync::Mutex<HashMap<String, WorkerInfo>>,
    /// One channel per slot (worker name), opened at its first claim.
    slots: std::sync::Mutex<HashMap<String, Arc<Mutex<SlotChannel>>>>,
    /// Announcements of the stages running, by lease token: acked when
    /// the scheduler recorded their end.
    held: std::sync::Mutex<HashMap<String, (String, lapin::Acker)>>,
    /// Signals from the scheduler for running stages, by lease token.
    signals: std::sync::Mutex<HashMap<String, Signal>>,
    /// Hosts whose control queue is being consumed.
    listening: std::sync::Mutex<HashSet<String>>,
    closed: CancellationToken,
}

/// A stage's signal: awaited, or arrived before anyone waited.
#[derive(Debug)]
enum Signal {
    Waiting(oneshot::Sender<SignalAction>),
    Arrived(SignalAction),
}

/// A slot's channel (`basic.qos` 1: the slot's one stage) and the queues
/// declared on it.
#[derive(Debug, Default)]
struct SlotChannel {
    open: Option<(Channel, HashSet<String>)>,
}

impl AmqpWorkerBackend {
    /// Connects to the broker at `uri`; queue names start with `prefix`,
    /// as the scheduler's [`super::AmqpQueue`] and [`super::RpcServer`]
    /// were given.
    pub async fn connect(uri: &str, prefix: &str) -> Result<Self> {
        super::check_prefix(prefix)?;
        let link = Link::connect(uri, &format!("kgym {prefix} worker")).await?;
        Ok(Self {
            inner: Arc::new(Inner {
                rpc: RpcClient::new(Arc::clone(&link), prefix),
                link,
                prefix: prefix.to_owned(),
                hosts: std::sync::Mutex::new(HashMap::new()),
                slots: std::sync::Mutex::new(HashMap::new()),
                held: std::sync::Mutex::new(HashMap::new()),
                signals: std::sync::Mutex::new(HashMap::new()),
                listening: std::sync::Mutex::new(HashSet::new()),
                closed: CancellationToken::new(),
            }),
        })
    }

    /// Closes the connection (announcements not acked go back to their
    /// queues).
    pub async fn close(&self) {
        self.inner.closed.cancel();
        self.inner.link.close().await;
    }

    /// The queues a claim of `req` reads: its kind's, for every label set
    /// the host's labels satisfy.
    fn queues(&self, req: &ClaimRequest) -> Vec<String> {
        let labels =
            self.inner.hosts.lock().unwrap_or_else(|p| p.into_inner()).get(&req.host).map(|i| i.labels.clone());
        crate::labels::subsets(&labels.unwrap_or_default())
            .into_iter()
            .map(|subset| queue_name(&self.inner.prefix, &Route::with_labels(&req.kind, subset)))
            .collect()
    }

    fn slot(&self, worker: &str) -> Arc<Mutex<SlotChannel>> {
        let mut slots = self.inner.slots.lock().unwrap_or_else(|p| p.into_inner());
        Arc::clone(slots.entry(worker.to_owned()).or_default())
    }

    /// Waits up to `deadline` for one announcement on `queues`, consuming
    /// them only meanwhile (a slot that is not claiming holds nothing).
    async fn next_announcement(
        &self,
        slot: &mut SlotChannel,
        queues: &[String],
        deadline: tokio::time::Instant,
    ) -> Result<Option<lapin::message::Delivery>> {
        if slot.open.as_ref().is_none_or(|(ch, _)| !ch.status().connected()) {
            slot.open = None;
            let Ok(ch) = tokio::time::timeout_at(deadline, self.inner.link.channel()).await else { return Ok(None) };
            let ch = ch?;
            // Global: one unacked delivery on the channel, whichever
            // queue of the pool it came from.
            ch.basic_qos(1, BasicQosOptions { global: true }).await.map_err(|e| self.inner.link.error("qos", &e))?;
            slot.open = Some((ch, HashSet::new()));
        }
        let Some((ch, declared)) = slot.open.as_mut() else { unreachable!("set above") };
        let dead = dead_letter_queue(&self.inner.prefix);
        let mut taking = Taking { ch: ch.clone(), tags: Vec::new(), deliveries: SelectAll::new(), stopped: false };
        let started: Result<()> = async {
            for q in queues {
                if !declared.contains(q) {
                    declare(&self.inner.link, ch, q, &dead).await?;
                    declared.insert(q.clone());
                }
                let c = ch
                    .basic_consume(q.as_str().into(), "".into(), BasicConsumeOptions::default(), FieldTable::default())
                    .await
                    .map_err(|e| self.inner.link.error("consume", &e))?;
                taking.tags.push(c.tag());
                taking.deliveries.push(c);
            }
            Ok(())
        }
        .await;
        if let Err(e) = started {
            slot.open = None;
            return Err(e);
        }
        let got = tokio::time::timeout_at(deadline, taking.deliveries.next()).await;
        // Whatever came while the consumers were being cancelled is ours
        // too (at most one: the channel's prefetch).
        let late = taking.stop().await;
        match got {
            Ok(Some(Ok(d))) => {
                if let Some(extra) = late {
                    let _ = extra.acker.nack(BasicNackOptions { requeue: true, ..Default::default() }).await;
                }
                Ok(Some(d))
            }
            Ok(Some(Err(e))) => {
                slot.open = None;
                Err(self.inner.link.error("consume", &e))
            }
            // A consumer ended: the channel broke (broker restart).
            Ok(None) => {
                slot.open = None;
                Ok(late)
            }
            Err(_) => Ok(late),
        }
    }

    /// Keeps the announcement of a stage claimed by slot `worker` unacked
    /// until its end.
    fn hold(&self, lease: &Lease, worker: &str, acker: lapin::Acker) {
        let mut held = self.inner.held.lock().unwrap_or_else(|p| p.into_inner());
        held.insert(lease.token.clone(), (worker.to_owned(), acker));
    }

    /// Slot `worker` claims again, so its earlier stage is over for it,
    /// even if the scheduler never heard (a report that failed for a
    /// lease's length): that announcement goes, or the slot's channel
    /// (prefetch 1) would never deliver again. The lease decides what
    /// happens to the stage.
    async fn drop_stale(&self, worker: &str) {
        let stale: Vec<lapin::Acker> = {
            let mut held = self.inner.held.lock().unwrap_or_else(|p| p.into_inner());
            let tokens: Vec<String> = held.iter().filter(|(_, (w, _))| w == worker).map(|(t, _)| t.clone()).collect();
            tokens.iter().filter_map(|t| held.remove(t)).map(|(_, a)| a).collect()
        };
        for acker in stale {
            tracing::info!(worker, "an unreported stage's announcement dropped; its lease decides");
            let _ = acker.ack(BasicAckOptions::default()).await;
        }
    }

    /// The stage of `lease` ended for the scheduler: its announcement goes.
    async fn release(&self, lease: &Lease) {
        self.inner.signals.lock().unwrap_or_else(|p| p.into_inner()).remove(&lease.token);
        let acker = self.inner.held.lock().unwrap_or_else(|p| p.into_inner()).remove(&lease.token);
        if let Some((_, a)) = acker {
            // A channel closed meanwhile already gave it back to the
            // queue; the scheduler refuses the stale claim it leads to.
            let _ = a.ack(BasicAckOptions::default()).await;
        }
    }

    /// Claims the stage `d` announces through the scheduler. Runs in a
    /// task: it finishes even if the claimer went away.
    async fn claim_delivery(&self, d: lapin::message::Delivery, req: &ClaimRequest) -> Result<Option<Claim>> {
        let announcement = match serde_json::from_slice::<Announcement>(&d.data) {
            Ok(a) => a,
            Err(e) => {
                tracing::warn!(error = %e, "malformed announcement dead-lettered");
                let _ = d.acker.nack(BasicNackOptions { requeue: false, ..Default::default() }).await;
                return Ok(None);
            }
        };
        let asked = Request::Claim { announcement, worker: req.worker.clone(), host: req.host.clone() };
        let res = self.inner.rpc.call::<Option<Claim>>(&asked).await;
        match &res {
            Ok(Some(claim)) => self.hold(&claim.lease, &req.worker, d.acker),
            // Stale: the stage is someone else's, or done.
            Ok(None) => {
                let _ = d.acker.ack(BasicAckOptions::default()).await;
            }
            Err(_) => {
                let _ = d.acker.nack(BasicNackOptions { requeue: true, ..Default::default() }).await;
            }
        }
        res
    }
}

/// Hands `signal` to the stage it is about, if it runs here.
fn deliver(inner: &Inner, signal: WorkerSignal) {
    if !inner.held.lock().unwrap_or_else(|p| p.into_inner()).contains_key(&signal.lease.token) {
        return; // not (or no longer) a stage of this process
    }
    let mut signals = inner.signals.lock().unwrap_or_else(|p| p.into_inner());
    match signals.remove(&signal.lease.token) {
        Some(Signal::Waiting(tx)) => {
            let _ = tx.send(signal.action);
        }
        _ => {
            signals.insert(signal.lease.token, Signal::Arrived(signal.action));
        }
    }
}

/// Consumes the control queue of `host` (exclusive to this connection,
/// gone with it) until the backend closes, opening it again after a
/// broker restart.
async fn listen(inner: std::sync::Weak<Inner>, queue: String, closed: CancellationToken) {
    let mut backoff = Duration::from_millis(100);
    loop {
        let Some(link) = inner.upgrade().map(|i| Arc::clone(&i.link)) else { return };
        let opened = tokio::select! {
            o = open_control(&link, &queue) => o,
            () = closed.cancelled() => return,
        };
        drop(link);
        let mut consumer = match opened {
            Ok(c) => {
                backoff = Duration::from_millis(100);
                c
            }
            Err(e) => {
                tracing::warn!(queue, error = %e, "control queue unavailable (another worker with this host name?); trying again");
                tokio::select! {
                    () = tokio::time::sleep(backoff) => {}
                    () = closed.cancelled() => return,
                }
                backoff = (backoff * 2).min(Duration::from_secs(30));
                continue;
            }
        };
        loop {
            let next = tokio::select! {
                d = consumer.next() => d,
                () = closed.cancelled() => return,
            };
            let Some(Ok(d)) = next else { break };
            let Some(inner) = inner.upgrade() else { return };
            match serde_json::from_slice::<WorkerSignal>(&d.data) {
                Ok(signal) => deliver(&inner, signal),
                Err(e) => tracing::warn!(queue, error = %e, "malformed signal ignored"),
            }
        }
        tracing::info!(queue, "control queue consumer ended; reopening");
    }
}

async fn open_control(link: &Link, queue: &str) -> Result<lapin::Consumer> {
    let ch = link.channel().await?;
    let only_ours = QueueDeclareOptions { exclusive: true, auto_delete: true, ..Default::default() };
    ch.queue_declare(queue.into(), only_ours, FieldTable::default()).await.map_err(|e| link.error("declare", &e))?;
    ch.basic_consume(
        queue.into(),
        "".into(),
        // Signals are hints (the heartbeat decides): no acks.
        BasicConsumeOptions { no_ack: true, ..Default::default() },
        FieldTable::default(),
    )
    .await
    .map_err(|e| link.error("consume", &e))
}

/// Consumers of a slot's queues for the length of one claim.
struct Taking {
    ch: Channel,
    tags: Vec<ShortString>,
    deliveries: SelectAll<lapin::Consumer>,
    stopped: bool,
}

impl Taking {
    /// Cancels the consumers; returns a delivery that arrived meanwhile.
    async fn stop(&mut self) -> Option<lapin::message::Delivery> {
        self.stopped = true;
        for tag in std::mem::take(&mut self.tags) {
            let _ = self.ch.basic_cancel(tag, BasicCancelOptions::default()).await;
        }
        let mut late = None;
        // Deliveries sent before the cancel arrive before its end.
        while let Ok(Some(item)) = tokio::time::timeout(CANCEL_DRAIN, self.deliveries.next()).await {
            if let Ok(d) = item {
                match late {
                    None => late = Some(d),
                    Some(_) => {
                        let _ = d.acker.nack(BasicNackOptions { requeue: true, ..Default::default() }).await;
                    }
                }
            }
        }
        late
    }
}

impl Drop for Taking {
    fn drop(&mut self) {
        if self.stopped {
            return;
        }
        // A claimer that went away mid-wait: cancel its consumers and give
        // back what they got.
        let mut rest = Taking {
            ch: self.ch.clone(),
            tags: std::mem::take(&mut self.tags),
            deliveries: std::mem::replace(&mut self.deliveries, SelectAll::new()),
            stopped: true,
        };
        tokio::spawn(async move {
            if let Some(d) = rest.stop().await {
                let _ = d.acker.nack(BasicNackOptions { requeue: true, ..Default::default() }).await;
            }
        });
    }
}

#[async_trait]
impl WorkerBackend for AmqpWorkerBackend {
    async fn register(&self, info: &WorkerInfo) -> Result<()> {
        self.inner.rpc.call::<()>(&Request::Register { info: info.clone() }).await?;
        self.inner.hosts.lock().unwrap_or_else(|p| p.into_inner()).insert(info.host.clone(), info.clone());
        if self.inner.listening.lock().unwrap_or_else(|p| p.into_inner()).insert(info.host.clone()) {
            let queue = control_queue(&self.inner.prefix, &info.host);
            tokio::spawn(listen(Arc::downgrade(&self.inner), queue, self.inner.closed.clone()));
        }
        Ok(())
    }

    async fn claim(&self, req: &ClaimRequest) -> Result<Option<Claim>> {
        if self.inner.closed.is_cancelled() {
            return Err(Error::ShuttingDown);
        }
        self.drop_stale(&req.worker).await;
        let queues = self.queues(req);
        let slot = self.slot(&req.worker);
        let deadline = tokio::time::Instant::now() + req.wait;
        loop {
            let delivery = {
                let mut slot = slot.lock().await;
                match self.next_announcement(&mut slot, &queues, deadline).await? {
                    Some(d) => d,
                    None if tokio::time::Instant::now() >= deadline => return Ok(None),
                    None => continue,
                }
            };
            let (this, req2) = (self.clone(), req.clone());
            let claimed = finish_claim(self.clone(), async move { this.claim_delivery(delivery, &req2).await });
            match claimed.await? {
                Some(claim) => return Ok(Some(claim)),
                None if tokio::time::Instant::now() < deadline => continue, // stale
                None => return Ok(None),
            }
        }
    }

    async fn heartbeat(&self, lease: &Lease) -> Result<LeaseStatus> {
        let status = self.inner.rpc.call(&Request::Heartbeat { lease: lease.clone() }).await?;
        if status != LeaseStatus::Active {
            // The scheduler took the stage back (aborted, or handed out
            // again): this worker's announcement of it is done.
            self.release(lease).await;
        }
        Ok(status)
    }

    async fn append_log(&self, lease: &Lease, worker: &str, lines: &[String]) -> Result<()> {
        if lines.is_empty() {
            return Ok(());
        }
        let req = Request::AppendLog { lease: lease.clone(), worker: worker.to_owned(), lines: lines.to_vec() };
        self.inner.rpc.call(&req).await
    }

    async fn report(&self, lease: &Lease, outcome: StageOutcome) -> Result<ReportAck> {
        let res = self.inner.rpc.call(&Request::Report { lease: lease.clone(), outcome }).await;
        // Recorded, requeued (the scheduler announced it anew), or no
        // longer ours: the announcement this worker holds is done with.
        if matches!(res, Ok(_) | Err(Error::LeaseLost { .. } | Error::JobNotFound { .. })) {
            self.release(lease).await;
        }
        res
    }

    async fn yield_stage(&self, lease: &Lease) -> Result<()> {
        let res = self.inner.rpc.call(&Request::Yield { lease: lease.clone() }).await;
        if matches!(res, Ok(()) | Err(Error::LeaseLost { .. } | Error::JobNotFound { .. })) {
            self.release(lease).await;
        }
        res
    }

    async fn worker_event(&self, host: &str, kind: Option<&StageKind>, message: &str) -> Result<()> {
        let req = Request::WorkerEvent { host: host.to_owned(), kind: kind.cloned(), message: message.to_owned() };
        self.inner.rpc.call(&req).await
    }

    async fn deregister(&self, host: &str) -> Result<()> {
        self.inner.rpc.call(&Request::Deregister { host: host.to_owned() }).await
    }

    async fn signalled(&self, lease: &Lease) -> SignalAction {
        let rx = {
            let mut signals = self.inner.signals.lock().unwrap_or_else(|p| p.into_inner());
            if let Some(Signal::Arrived(action)) = signals.remove(&lease.token) {
                return action;
            }
            let (tx, rx) = oneshot::channel();
            signals.insert(lease.token.clone(), Signal::Waiting(tx));
            rx
        };
        match rx.await {
            Ok(action) => action,
            // The stage ended here first: nothing more to hear.
            Err(_) => std::future::pending().await,
        }
    }
}
