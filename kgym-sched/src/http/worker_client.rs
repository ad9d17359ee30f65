//! [`HttpWorkerBackend`]: the worker protocol over HTTP, for worker
//! processes apart from the scheduler.

use async_trait::async_trait;
use kgym_core::StageKind;
use reqwest::{Method, StatusCode};
use serde::Deserialize;

use super::conn::{Conn, REQUEST_TIMEOUT, read_json};
use super::worker_routes::{EventBody, HostBody, LogBody, ReportBody};
use crate::error::Result;
use crate::worker_api::{Claim, ClaimRequest, Lease, LeaseStatus, ReportAck, StageOutcome, WorkerBackend, WorkerInfo};

/// The scheduler's worker protocol at `url`.
///
/// ```no_run
/// # async fn f() -> kgym_sched::Result<()> {
/// use std::sync::Arc;
/// use kgym_sched::http::HttpWorkerBackend;
/// use kgym_sched::runtime::WorkerRuntime;
/// # #[derive(Debug)] struct MyWorker;
/// # impl kgym_core::StageSchema for MyWorker { fn kind(&self) -> kgym_core::StageKind { kgym_core::StageKind::build() } }
/// # #[async_trait::async_trait] impl kgym_core::Worker for MyWorker {
/// #   async fn run(&self, _: kgym_core::StageContext) -> Result<serde_json::Value, kgym_core::StageFailure> { Ok(serde_json::Value::Null) } }
/// let backend = Arc::new(HttpWorkerBackend::new("http://sched:8000")?.with_token("secret"));
/// let runtime = WorkerRuntime::builder(backend).worker(Arc::new(MyWorker), 2).start().await?;
/// runtime.run_until_signal().await?; // SIGTERM hands running stages back
/// # Ok(()) }
/// ```
#[derive(Debug, Clone)]
pub struct HttpWorkerBackend {
    conn: Conn,
}

impl HttpWorkerBackend {
    /// A backend talking to the server at `url`.
    pub fn new(url: &str) -> Result<Self> {
        Ok(Self { conn: Conn::new(url, None)? })
    }

    /// Sends `Authorization: Bearer <token>` with every request.
    pub fn with_token(self, token: impl Into<String>) -> Self {
        Self { conn: Conn::new(self.conn.base(), Some(token.into())).unwrap_or(self.conn) }
    }
}

#[derive(Deserialize)]
struct StatusBody {
    status: LeaseStatus,
}

#[derive(Deserialize)]
struct AckBody {
    ack: ReportAck,
}

#[async_trait]
impl WorkerBackend for HttpWorkerBackend {
    async fn register(&self, info: &WorkerInfo) -> Result<()> {
        let _: serde_json::Value = self.conn.json(Method::POST, "/api/v1/workers/register", Some(info)).await?;
        Ok(())
    }

    async fn claim(&self, req: &ClaimRequest) -> Result<Option<Claim>> {
        let resp =
            self.conn.send(Method::POST, "/api/v1/workers/claim", Some(req), Some(req.wait + REQUEST_TIMEOUT)).await?;
        if resp.status() == StatusCode::NO_CONTENT {
            return Ok(None);
        }
        read_json("POST", resp).await.map(Some)
    }

    async fn heartbeat(&self, lease: &Lease) -> Result<LeaseStatus> {
        let b: StatusBody = self.conn.json(Method::POST, "/api/v1/workers/heartbeat", Some(lease)).await?;
        Ok(b.status)
    }

    async fn append_log(&self, lease: &Lease, worker: &str, lines: &[String]) -> Result<()> {
        let body = LogBody { lease: lease.clone(), worker: worker.to_owned(), lines: lines.to_vec() };
        let _: serde_json::Value = self.conn.json(Method::POST, "/api/v1/workers/log", Some(&body)).await?;
        Ok(())
    }

    async fn report(&self, lease: &Lease, outcome: StageOutcome) -> Result<ReportAck> {
        let body = ReportBody { lease: lease.clone(), outcome };
        let b: AckBody = self.conn.json(Method::POST, "/api/v1/workers/report", Some(&body)).await?;
        Ok(b.ack)
    }

    async fn yield_stage(&self, lease: &Lease) -> Result<()> {
        let _: serde_json::Value = self.conn.json(Method::POST, "/api/v1/workers/yield", Some(lease)).await?;
        Ok(())
    }

    async fn worker_event(&self, host: &str, kind: Option<&StageKind>, message: &str) -> Result<()> {
        let body = EventBody { host: host.to_owned(), kind: kind.cloned(), message: message.to_owned() };
        let _: serde_json::Value = self.conn.json(Method::POST, "/api/v1/workers/event", Some(&body)).await?;
        Ok(())
    }

    async fn deregister(&self, host: &str) -> Result<()> {
        let body = HostBody { host: host.to_owned() };
        let _: serde_json::Value = self.conn.json(Method::POST, "/api/v1/workers/deregister", Some(&body)).await?;
        Ok(())
    }
}
