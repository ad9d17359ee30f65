//! [`Embedded`]: a whole gym in one process: the embedded scheduler,
//! in-process workers and, optionally, the HTTP API.

use std::net::SocketAddr;
use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::time::Duration;

use kgym_core::{ArtifactStore, StageKind, Worker};

use super::{DEFAULT_LEASE_TTL, DEFAULT_MAX_ATTEMPTS, EmbeddedScheduler};
use crate::compat::CompatOptions;
use crate::error::{Error, Result};
use crate::http::{DEFAULT_BODY_LIMIT, HttpServer, ServerHandle};
use crate::queue::Queue;
use crate::runtime::{DEFAULT_HEARTBEAT, RuntimeHandle, WorkerRuntime};
use crate::scheduler::Scheduler;

/// The database file inside a data directory.
pub const DATABASE_FILE: &str = "jobs.sqlite3";
/// The artifact folder inside a data directory.
pub const ARTIFACTS_DIR: &str = "artifacts";

/// Configures an [`Embedded`] gym.
#[derive(Debug)]
pub struct EmbeddedBuilder {
    data_dir: Option<PathBuf>,
    artifacts: Option<ArtifactStore>,
    queue: Option<Arc<dyn Queue>>,
    workers: Vec<(Arc<dyn Worker>, u32)>,
    kinds: Vec<StageKind>,
    lease_ttl: Duration,
    max_attempts: u32,
    heartbeat: Duration,
    host: Option<String>,
    http: Option<(SocketAddr, Option<String>)>,
    body_limit: usize,
    compat: CompatOptions,
}

impl EmbeddedBuilder {
    /// Keeps state under `dir`: the SQLite database `dir/jobs.sqlite3` and,
    /// unless [`artifacts`](Self::artifacts) says otherwise, artifacts in
    /// `dir/artifacts`. Without a data directory everything lives in memory.
    pub fn data_dir(mut self, dir: impl Into<PathBuf>) -> Self {
        self.data_dir = Some(dir.into());
        self
    }

    /// Where artifacts live (handed to every stage; restart cleans it).
    pub fn artifacts(mut self, artifacts: ArtifactStore) -> Self {
        self.artifacts = Some(artifacts);
        self
    }

    /// The announcement transport (default: in-process).
    pub fn queue(mut self, queue: Arc<dyn Queue>) -> Self {
        self.queue = Some(queue);
        self
    }

    /// Runs `worker` in-process with `slots` concurrent slots; its kind is
    /// accepted at submit and its [`Worker::validate`] checks arguments.
    pub fn worker(mut self, worker: Arc<dyn Worker>, slots: u32) -> Self {
        self.workers.push((worker, slots));
        self
    }

    /// Accepts stages of `kind` at submit although no in-process worker runs
    /// it (remote workers will).
    pub fn accept_kind(mut self, kind: StageKind) -> Self {
        self.kinds.push(kind);
        self
    }

    /// How long a lease lasts without a heartbeat (default 30 s).
    pub fn lease_ttl(mut self, ttl: Duration) -> Self {
        self.lease_ttl = ttl;
        self
    }

    /// Hand-outs of a stage before it fails with `worker-lost` (default 3).
    pub fn max_attempts(mut self, n: u32) -> Self {
        self.max_attempts = n;
        self
    }

    /// Time between the in-process workers' heartbeats (default 1 s; also
    /// how fast an abort reaches them).
    pub fn heartbeat_interval(mut self, every: Duration) -> Self {
        self.heartbeat = every;
        self
    }

    /// The host name in-process workers are named after (default: the
    /// machine's).
    pub fn host(mut self, host: impl Into<String>) -> Self {
        self.host = Some(host.into());
        self
    }

    /// Also serves the HTTP API (and the remote worker protocol) on `addr`.
    /// Writes need `token` when one is given; listening beyond loopback
    /// without a token is refused at [`build`](Self::build).
    pub fn serve_http(mut self, addr: SocketAddr, token: Option<String>) -> Self {
        self.http = Some((addr, token));
        self
    }

    /// The largest HTTP request body (default 16 MiB).
    pub fn body_limit(mut self, bytes: usize) -> Self {
        self.body_limit = bytes;
        self
    }

    /// Settings of the kGym payload conversion.
    pub fn compat(mut self, compat: CompatOptions) -> Self {
        self.compat = compat;
        self
    }

    /// Opens the database, re-announces queued stages, starts the workers
    /// and the HTTP server.
    pub async fn build(self) -> Result<Embedded> {
        if let Some((addr, None)) = &self.http
            && !addr.ip().is_loopback()
        {
            return Err(Error::InsecureListen { addr: *addr });
        }
        let artifacts = match (&self.artifacts, &self.data_dir) {
            (Some(a), _) => a.clone(),
            (None, Some(dir)) => {
                let path = dir.join(ARTIFACTS_DIR);
                ArtifactStore::local(&path).map_err(|e| Error::Io {
                    path,
                    source: std::io::Error::other(kgym_core::failure::error_chain(&e)),
                })?
            }
            (None, None) => ArtifactStore::in_memory(),
        };
        let mut sb = EmbeddedScheduler::builder()
            .artifacts(artifacts.clone())
            .lease_ttl(self.lease_ttl)
            .max_attempts(self.max_attempts);
        if let Some(dir) = &self.data_dir {
            sb = sb.database(dir.join(DATABASE_FILE));
        }
        if let Some(q) = self.queue {
            sb = sb.queue(q);
        }
        for k in self.kinds {
            sb = sb.accept_kind(k);
        }
        let sched = sb.build().await?;
        for (w, _) in &self.workers {
            sched.add_validator(Arc::clone(w));
        }
        let runtime = if self.workers.is_empty() {
            None
        } else {
            let mut rb = WorkerRuntime::builder(Arc::new(sched.clone()))
                .artifacts(artifacts.clone())
                .heartbeat_interval(self.heartbeat)
                .claim_wait(Duration::from_secs(5));
            if let Some(h) = &self.host {
                rb = rb.host(h.clone());
            }
            for (w, n) in self.workers {
                rb = rb.worker(w, n);
            }
            Some(rb.start().await?)
        };
        let server = match self.http {
            Some((addr, token)) => Some(
                HttpServer::builder(Arc::new(sched.clone()))
                    .worker_backend(Arc::new(sched.clone()))
                    .token(token)
                    .body_limit(self.body_limit)
                    .compat(self.compat)
                    .serve(addr)
                    .await?,
            ),
            None => None,
        };
        let database = self.data_dir.map(|d| d.join(DATABASE_FILE));
        Ok(Embedded { sched, runtime, server, artifacts, database })
    }
}

/// A running gym: scheduler, in-process workers, optional HTTP API.
///
/// Call [`shutdown`](Embedded::shutdown) to stop it: running stages are
/// handed back (the next gym opened on the same data directory runs them).
#[derive(Debug)]
pub struct Embedded {
    sched: EmbeddedScheduler,
    runtime: Option<RuntimeHandle>,
    server: Option<ServerHandle>,
    artifacts: ArtifactStore,
    database: Option<PathBuf>,
}

impl Embedded {
    /// Configures a gym.
    pub fn builder() -> EmbeddedBuilder {
        EmbeddedBuilder {
            data_dir: None,
            artifacts: None,
            queue: None,
            workers: Vec::new(),
            kinds: Vec::new(),
            lease_ttl: DEFAULT_LEASE_TTL,
            max_attempts: DEFAULT_MAX_ATTEMPTS,
            heartbeat: DEFAULT_HEARTBEAT,
            host: None,
            http: None,
            body_limit: DEFAULT_BODY_LIMIT,
            compat: CompatOptions::default(),
        }
    }

    /// The scheduler, as the trait harnesses program against.
    pub fn scheduler(&self) -> Arc<dyn Scheduler> {
        Arc::new(self.sched.clone())
    }

    /// The embedded scheduler itself (worker backend, accepted kinds).
    pub fn embedded(&self) -> &EmbeddedScheduler {
        &self.sched
    }

    /// The artifact store.
    pub fn artifacts(&self) -> &ArtifactStore {
        &self.artifacts
    }

    /// The SQLite file, unless the gym lives in memory.
    pub fn database(&self) -> Option<&Path> {
        self.database.as_deref()
    }

    /// The HTTP API's address, when serving.
    pub fn http_addr(&self) -> Option<SocketAddr> {
        self.server.as_ref().map(ServerHandle::local_addr)
    }

    /// The HTTP API's base URL (`http://ADDR`), when serving.
    pub fn http_url(&self) -> Option<String> {
        self.server.as_ref().map(ServerHandle::url)
    }

    /// The in-process worker runtime, when there are workers.
    pub fn runtime(&self) -> Option<&RuntimeHandle> {
        self.runtime.as_ref()
    }

    /// Stops the HTTP server, hands running stages back, stops the
    /// scheduler's lease watch.
    pub async fn shutdown(self) {
        if let Some(s) = self.server {
            s.shutdown().await;
        }
        if let Some(r) = self.runtime {
            r.shutdown().await;
        }
        self.sched.close();
    }

    /// Runs until SIGTERM or ctrl-c, then shuts down.
    pub async fn run_until_signal(self) -> Result<()> {
        crate::runtime::wait_for_signal().await?;
        tracing::info!("signal received; shutting down");
        self.shutdown().await;
        Ok(())
    }
}
