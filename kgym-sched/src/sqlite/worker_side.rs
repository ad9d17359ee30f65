//! The SQLite scheduler as workers see it ([`WorkerBackend`]).

use async_trait::async_trait;
use kgym_core::StageKind;

use super::SqliteScheduler;
use crate::error::{Error, Result};
use crate::queue::{Announcement, Delivery, Route};
use crate::store::{self, logs::LogLine};
use crate::types::JobEvent;
use crate::worker_api::{
    Claim, ClaimRequest, Lease, LeaseStatus, ReportAck, StageOutcome, WorkerBackend, WorkerInfo, finish_claim,
};

/// Longest a claim may wait for a stage.
pub(crate) const MAX_CLAIM_WAIT: std::time::Duration = std::time::Duration::from_secs(60);

impl SqliteScheduler {
    /// [`append_log`](WorkerBackend::append_log) of a request that may be
    /// delivered more than once (an RPC redelivered after a scheduler
    /// restart): with `request`, an id unique to the request, the lines
    /// are appended the first time only.
    pub async fn append_log_once(
        &self,
        lease: &Lease,
        worker: &str,
        lines: &[String],
        request: Option<&str>,
    ) -> Result<()> {
        if lines.is_empty() {
            return Ok(());
        }
        let (lease, worker, lines) = (lease.clone(), worker.to_owned(), lines.to_vec());
        let request = request.map(str::to_owned);
        let hub = std::sync::Arc::clone(&self.inner.hub);
        self.inner
            .store
            .run(move |c| {
                let now = store::now_us();
                for e in store::logs::append_worker_lines(c, &lease, &worker, &lines, request.as_deref(), now)? {
                    hub.emit(&JobEvent::Log(e));
                }
                Ok(())
            })
            .await
    }

    /// Claims the stage `ann` announces for `worker` on `host`, if it is
    /// still ready (`None` when the announcement is stale: the stage was
    /// claimed, aborted or finished meanwhile). For transports whose
    /// workers consume the announcement queues themselves
    /// ([`crate::amqp::AmqpWorkerBackend`]): the claim is a sign of life of
    /// the worker, as [`WorkerBackend::claim`] is.
    pub async fn claim_announcement(&self, ann: &Announcement, worker: &str, host: &str) -> Result<Option<Claim>> {
        if self.inner.shutdown.is_cancelled() {
            return Err(Error::ShuttingDown);
        }
        self.seen(host).await?;
        self.claim_now(ann.clone(), worker, host).await
    }

    /// A claim from `host`: a sign of life of a registered worker (its
    /// kinds stay accepted; claiming a kind does not make it accepted),
    /// recorded to within a hundredth of the worker TTL. Returns the labels
    /// it registered.
    async fn seen(&self, host: &str) -> Result<kgym_core::Labels> {
        let host = host.to_owned();
        let resolution = i64::try_from(self.inner.options.worker_ttl.as_micros() / 100).unwrap_or(i64::MAX);
        self.inner
            .store
            .run(move |c| {
                let now = store::now_us();
                store::workers::seen(c, &host, now, now.saturating_sub(resolution))
            })
            .await
    }

    /// The claim transaction on the stage `ann` names.
    async fn claim_now(&self, ann: Announcement, worker: &str, host: &str) -> Result<Option<Claim>> {
        let token = uuid::Uuid::new_v4().simple().to_string();
        let (worker, host, ttl) = (worker.to_owned(), host.to_owned(), self.inner.options.lease_ttl);
        self.transition(move |c| {
            Ok(match store::jobs::claim(c, &ann, &worker, &host, &token, ttl, store::now_us())? {
                Some((claim, effects)) => (Some(claim), effects),
                None => (None, Default::default()),
            })
        })
        .await
    }

    /// Turns a delivery into a claim (or `None` when it was stale). The
    /// delivery is acked once the claim is committed, or when it is stale;
    /// nacked (requeued) when the database failed.
    async fn claim_delivery(&self, delivery: Delivery, req: &ClaimRequest) -> Result<Option<Claim>> {
        let claimed = self.claim_now(delivery.announcement.clone(), &req.worker, &req.host).await;
        match claimed {
            Ok(claim) => {
                if let Err(e) = delivery.ack().await {
                    // The claim is recorded; a redelivery would be stale.
                    tracing::warn!(error = %e, "failed to ack a claimed announcement");
                }
                Ok(claim)
            }
            Err(e) => {
                let _ = delivery.nack(true).await;
                Err(e)
            }
        }
    }
}

#[async_trait]
impl WorkerBackend for SqliteScheduler {
    async fn register(&self, info: &WorkerInfo) -> Result<()> {
        let problems = crate::labels::check(&info.labels);
        if !problems.is_empty() {
            return Err(Error::bad_request(format!("worker {}: {}", info.host, problems.join("; "))));
        }
        // The kinds become accepted at submit while the worker is live (the
        // roster in the store says so; nothing is declared for good).
        let kinds: Vec<String> = info.kinds.iter().map(|(k, n)| format!("{k} x{n}")).collect();
        let message = format!("worker host {} started: {}", info.host, kinds.join(", "));
        let info = info.clone();
        self.inner
            .store
            .run(move |c| {
                let now = store::now_us();
                store::workers::register(c, &info, now)?;
                store::logs::sys_line(c, None, now, &LogLine::new(&message).host(&info.host))
            })
            .await
    }

    async fn deregister(&self, host: &str) -> Result<()> {
        let host = host.to_owned();
        self.inner
            .store
            .run(move |c| {
                let now = store::now_us();
                store::workers::stopped(c, &host, now)?;
                let message = format!("worker host {host} stopped");
                store::logs::sys_line(c, None, now, &LogLine::new(&message).host(&host))
            })
            .await
    }

    async fn claim(&self, req: &ClaimRequest) -> Result<Option<Claim>> {
        if self.inner.shutdown.is_cancelled() {
            return Err(Error::ShuttingDown);
        }
        let labels = self.seen(&req.host).await?;
        // The worker's pool: the queues of every label set it satisfies.
        let mut consumers = Vec::new();
        for subset in crate::labels::subsets(&labels) {
            consumers.push(self.consumer_or_open(&Route::with_labels(&req.kind, subset)).await?);
        }
        let deadline = tokio::time::Instant::now() + req.wait.min(MAX_CLAIM_WAIT);
        loop {
            // Waiting is cancel safe (lock and `next` both are): the first
            // delivery of any of the queues wins, the other waits are
            // dropped without losing anything.
            let waits = consumers.iter().map(|consumer| {
                Box::pin(async move {
                    let mut c = consumer.lock().await;
                    c.next().await
                })
            });
            let delivery = match tokio::time::timeout_at(deadline, futures::future::select_all(waits)).await {
                Ok((d, _, _)) => d?,
                Err(_) => return Ok(None),
            };
            let (this, req2) = (self.clone(), req.clone());
            let claimed = finish_claim(self.clone(), async move { this.claim_delivery(delivery, &req2).await });
            match claimed.await? {
                Some(claim) => return Ok(Some(claim)),
                None => continue, // stale announcement
            }
        }
    }

    async fn heartbeat(&self, lease: &Lease) -> Result<LeaseStatus> {
        let (lease, ttl) = (lease.clone(), self.inner.options.lease_ttl);
        self.inner
            .store
            .run(move |c| {
                let now = store::now_us();
                let status = store::jobs::heartbeat(c, &lease, ttl, now)?;
                if status == LeaseStatus::Active {
                    store::workers::seen_holder(c, lease.job, now)?;
                }
                Ok(status)
            })
            .await
    }

    async fn append_log(&self, lease: &Lease, worker: &str, lines: &[String]) -> Result<()> {
        self.append_log_once(lease, worker, lines, None).await
    }

    async fn report(&self, lease: &Lease, outcome: StageOutcome) -> Result<ReportAck> {
        let (lease, max) = (lease.clone(), self.inner.options.max_attempts);
        self.transition(move |c| store::jobs::report(c, &lease, outcome, max, store::now_us())).await
    }

    async fn yield_stage(&self, lease: &Lease) -> Result<()> {
        let lease = lease.clone();
        self.transition(move |c| Ok(((), store::jobs::yield_stage(c, &lease, store::now_us())?))).await
    }

    async fn worker_event(&self, host: &str, kind: Option<&StageKind>, message: &str) -> Result<()> {
        let (host, kind, message) = (host.to_owned(), kind.cloned(), message.to_owned());
        self.inner
            .store
            .run(move |c| {
                let line = LogLine::new(&message).host(&host);
                let line = match &kind {
                    Some(k) => line.kind(k),
                    None => line,
                };
                store::logs::sys_line(c, None, store::now_us(), &line)
            })
            .await
    }
}
