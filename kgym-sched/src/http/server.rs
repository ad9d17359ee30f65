//! The axum server: routes (typed API, worker protocol, and whatever other
//! crates merge in), bearer-token auth on writes, body limits, and the
//! running server's handle.

use std::net::SocketAddr;
use std::sync::Arc;

use axum::Router;
use axum::extract::{DefaultBodyLimit, Request, State};
use axum::http::{Method, StatusCode, header};
use axum::middleware::{self, Next};
use axum::response::Response;
use axum::routing::{MethodRouter, get, patch, post, put};
use serde_json::Value;
use tokio::task::JoinHandle;
use tokio_util::sync::CancellationToken;

use super::reply::error_response;
use super::{api_routes as api, artifact_routes as artifacts, worker_routes as wk};
use kgym_core::ArtifactStore;

use crate::error::{Error, Result};
use crate::scheduler::Scheduler;
use crate::worker_api::WorkerBackend;

/// Default largest request body: kernel configs, patches and reproducers
/// fit with room to spare.
pub const DEFAULT_BODY_LIMIT: usize = 16 << 20;

/// What every handler gets.
#[derive(Clone)]
pub(crate) struct AppState {
    pub sched: Arc<dyn Scheduler>,
    pub workers: Option<Arc<dyn WorkerBackend>>,
    pub artifacts: Option<ArtifactStore>,
}

/// A router that remembers each (method, path) it serves, so the OpenAPI
/// document can be checked against it.
struct Routes {
    router: Router<AppState>,
    table: Vec<(&'static str, &'static str)>,
}

impl Routes {
    fn add(mut self, method: &'static str, path: &'static str, route: MethodRouter<AppState>) -> Self {
        self.table.push((method, path));
        self.router = self.router.route(path, route);
        self
    }
}

fn routes() -> Routes {
    let r = Routes { router: Router::new(), table: Vec::new() };
    r
        // Typed API.
        .add("get", "/api/v1/health", get(api::health))
        .add("post", "/api/v1/jobs", post(api::submit))
        .add("get", "/api/v1/jobs", get(api::list))
        .add("get", "/api/v1/jobs/counts", get(api::counts))
        .add("get", "/api/v1/jobs/{id}", get(api::get))
        .add("post", "/api/v1/jobs/{id}/abort", post(api::abort))
        .add("post", "/api/v1/jobs/{id}/restart", post(api::restart))
        .add("post", "/api/v1/jobs/{id}/reset", post(api::reset))
        .add("get", "/api/v1/jobs/{id}/tags", get(api::get_tags))
        .add("put", "/api/v1/jobs/{id}/tags", put(api::set_tags))
        .add("patch", "/api/v1/jobs/{id}/tags", patch(api::merge_tags))
        .add("get", "/api/v1/jobs/{id}/log", get(api::job_log))
        .add("get", "/api/v1/jobs/{id}/events", get(api::events))
        .add("get", "/api/v1/tags/{key}", get(api::tagged))
        .add("get", "/api/v1/logs", get(api::all_logs))
        .add("get", "/api/v1/system/log", get(api::system_log))
        .add("get", "/api/v1/stats", get(api::stats))
        .add("get", "/api/v1/workers", get(api::workers))
        .add("get", "/api/v1/jobs/{id}/artifacts", get(artifacts::list))
        .add("get", "/api/v1/artifacts/{*key}", get(artifacts::download))
        // Remote worker protocol.
        .add("post", "/api/v1/workers/register", post(wk::register))
        .add("post", "/api/v1/workers/claim", post(wk::claim))
        .add("post", "/api/v1/workers/heartbeat", post(wk::heartbeat))
        .add("post", "/api/v1/workers/log", post(wk::log))
        .add("post", "/api/v1/workers/report", post(wk::report))
        .add("post", "/api/v1/workers/yield", post(wk::yield_stage))
        .add("post", "/api/v1/workers/event", post(wk::event))
        .add("post", "/api/v1/workers/deregister", post(wk::deregister))
    // kGym's routes.
}

/// The (method, path) pairs the server itself serves (not the merged
/// routers'), for the OpenAPI check.
pub fn route_table() -> Vec<(&'static str, &'static str)> {
    routes().table
}

async fn no_route() -> Response {
    error_response(StatusCode::NOT_FOUND, "no-route", "no such route".into(), Value::Null)
}

async fn no_method() -> Response {
    error_response(
        StatusCode::METHOD_NOT_ALLOWED,
        "method-not-allowed",
        "method not allowed on this route".into(),
        Value::Null,
    )
}

/// Refuses writes without the right bearer token (when a token is set).
async fn require_token(State(token): State<Option<Arc<str>>>, req: Request, next: Next) -> Response {
    let Some(token) = token else { return next.run(req).await };
    let reads = [Method::GET, Method::HEAD, Method::OPTIONS];
    if reads.contains(req.method()) {
        return next.run(req).await;
    }
    let given =
        req.headers().get(header::AUTHORIZATION).and_then(|v| v.to_str().ok()).and_then(|v| v.strip_prefix("Bearer "));
    match given {
        Some(g) if constant_time_eq(g.as_bytes(), token.as_bytes()) => next.run(req).await,
        Some(_) => {
            error_response(StatusCode::UNAUTHORIZED, "unauthorized", "the bearer token is wrong".into(), Value::Null)
        }
        None => error_response(
            StatusCode::UNAUTHORIZED,
            "unauthorized",
            "writes need an Authorization: Bearer <token> header".into(),
            Value::Null,
        ),
    }
}

fn constant_time_eq(a: &[u8], b: &[u8]) -> bool {
    a.len() == b.len() && a.iter().zip(b).fold(0u8, |acc, (x, y)| acc | (x ^ y)) == 0
}

/// How the server treats requests: one value passed whole from the
/// facade's `GymBuilder` down to the server.
#[derive(Debug, Clone, PartialEq, Eq)]
#[non_exhaustive]
pub struct ServerOptions {
    /// Requires `Authorization: Bearer <token>` on every write (POST, PUT,
    /// PATCH, DELETE) when set (an empty token counts as none). Mandatory
    /// when listening beyond loopback.
    pub token: Option<String>,
    /// The largest accepted request body (413 beyond).
    pub body_limit: usize,
}

impl Default for ServerOptions {
    fn default() -> Self {
        Self { token: None, body_limit: DEFAULT_BODY_LIMIT }
    }
}

impl ServerOptions {
    /// Sets [`token`](Self::token).
    pub fn token(mut self, token: Option<String>) -> Self {
        self.token = token.filter(|t| !t.is_empty());
        self
    }

    /// Sets [`body_limit`](Self::body_limit).
    pub fn body_limit(mut self, bytes: usize) -> Self {
        self.body_limit = bytes;
        self
    }
}

/// Configures the HTTP server.
#[derive(Debug)]
pub struct ServerBuilder {
    sched: Arc<dyn Scheduler>,
    workers: Option<Arc<dyn WorkerBackend>>,
    artifacts: Option<ArtifactStore>,
    options: ServerOptions,
    merged: Vec<Router>,
}

/// Entry point: `HttpServer::builder(scheduler)...serve(addr)`.
#[derive(Debug)]
pub struct HttpServer;

impl HttpServer {
    /// A server over `sched`.
    pub fn builder(sched: Arc<dyn Scheduler>) -> ServerBuilder {
        ServerBuilder { sched, workers: None, artifacts: None, options: ServerOptions::default(), merged: Vec::new() }
    }
}

impl ServerBuilder {
    /// Serves the remote worker protocol from `backend` (without it,
    /// `/api/v1/workers/*` answer 400).
    pub fn worker_backend(mut self, backend: Arc<dyn WorkerBackend>) -> Self {
        self.workers = Some(backend);
        self
    }

    /// Serves the jobs' artifacts from `store` (without it,
    /// `/api/v1/jobs/{id}/artifacts` and `/api/v1/artifacts/...` answer 404).
    pub fn artifacts(mut self, store: ArtifactStore) -> Self {
        self.artifacts = Some(store);
        self
    }

    /// Token and body limit.
    pub fn options(mut self, options: ServerOptions) -> Self {
        self.options = ServerOptions { token: options.token.filter(|t| !t.is_empty()), ..options };
        self
    }

    /// Serves `router`'s routes beside the server's own (e.g. kGym's routes
    /// from `kgym-compat`, or a dashboard). They sit behind the same token
    /// check and body limit; a path both serve is a programming error
    /// (axum panics when the server is built).
    pub fn merge(mut self, router: Router) -> Self {
        self.merged.push(router);
        self
    }

    /// The router, to serve or to nest in another axum app.
    pub fn router(&self) -> Router {
        let state = AppState {
            sched: Arc::clone(&self.sched),
            workers: self.workers.clone(),
            artifacts: self.artifacts.clone(),
        };
        let token: Option<Arc<str>> = self.options.token.as_deref().map(Arc::from);
        let own: Router = routes().router.with_state(state);
        self.merged
            .iter()
            .cloned()
            .fold(own, Router::merge)
            .fallback(no_route)
            .method_not_allowed_fallback(no_method)
            .layer(middleware::from_fn_with_state(token, require_token))
            .layer(DefaultBodyLimit::max(self.options.body_limit))
    }

    /// Binds `addr` and serves until [`ServerHandle::shutdown`]. Refuses to
    /// listen beyond loopback without a token.
    pub async fn serve(self, addr: SocketAddr) -> Result<ServerHandle> {
        check_listen(addr, &self.options)?;
        let listener = tokio::net::TcpListener::bind(addr).await.map_err(|source| Error::Bind { addr, source })?;
        let local = listener.local_addr().map_err(|source| Error::Bind { addr, source })?;
        let app = self.router();
        let stop = CancellationToken::new();
        let stopped = stop.clone();
        let task = tokio::spawn(async move {
            let res = axum::serve(listener, app).with_graceful_shutdown(async move { stopped.cancelled().await }).await;
            if let Err(e) = res {
                tracing::error!(error = %e, "HTTP server failed");
            }
        });
        tracing::info!(addr = %local, "HTTP API listening");
        Ok(ServerHandle { addr: local, stop, task })
    }
}

/// Refuses to listen beyond loopback without a token. Call it before
/// anything else starts, so a refused setting changes nothing.
pub fn check_listen(addr: SocketAddr, options: &ServerOptions) -> Result<()> {
    if !addr.ip().is_loopback() && options.token.as_deref().is_none_or(str::is_empty) {
        return Err(Error::InsecureListen { addr });
    }
    Ok(())
}

/// A running server.
#[derive(Debug)]
pub struct ServerHandle {
    addr: SocketAddr,
    stop: CancellationToken,
    task: JoinHandle<()>,
}

impl ServerHandle {
    /// The address it listens on (the real port when bound to port 0).
    pub fn local_addr(&self) -> SocketAddr {
        self.addr
    }

    /// `http://ADDR`.
    pub fn url(&self) -> String {
        format!("http://{}", self.addr)
    }

    /// Stops accepting connections and waits for the open ones to finish
    /// (watch streams end when the server stops).
    pub async fn shutdown(self) {
        self.stop.cancel();
        // Long polls and event streams may hold connections; don't wait
        // forever for them.
        let mut task = self.task;
        if tokio::time::timeout(std::time::Duration::from_secs(5), &mut task).await.is_err() {
            task.abort();
        }
    }
}
