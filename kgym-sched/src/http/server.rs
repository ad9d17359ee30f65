//! The axum server: routes (typed API, worker protocol, and whatever other
//! crates merge in), the layers every route sits behind (auth, request
//! limits, JSON errors), and the running server's handle.

use std::net::SocketAddr;
use std::sync::Arc;
use std::time::Duration;

use axum::Router;
use axum::extract::DefaultBodyLimit;
use axum::http::StatusCode;
use axum::middleware;
use axum::response::Response;
use axum::routing::{MethodRouter, get, patch, post, put};
use serde_json::Value;
use tokio::task::JoinHandle;
use tokio_util::sync::CancellationToken;
use tower_http::catch_panic::CatchPanicLayer;

use super::auth::{Auth, require_token};
use super::guard::{Limits, limit_uri, panic_response, read_body};
use super::listen::ConnOptions;
use super::reply::error_response;
use super::streams::StreamLimits;
use super::{api_routes as api, artifact_routes as artifacts, worker_routes as wk};
use kgym_core::ArtifactStore;

use crate::error::{Error, Result};
use crate::scheduler::Scheduler;
use crate::worker_api::WorkerBackend;

/// Default largest request body: kernel configs, patches and reproducers
/// fit with room to spare.
pub const DEFAULT_BODY_LIMIT: usize = 16 << 20;

/// Default time a client has to send a request head.
pub const DEFAULT_HEADER_TIMEOUT: Duration = Duration::from_secs(30);

/// Default time a client has to send a request body.
pub const DEFAULT_BODY_TIMEOUT: Duration = Duration::from_secs(60);

/// Default longest URI (path and query): room for a 4 KiB tag value,
/// percent-encoded, in a query.
pub const DEFAULT_MAX_URI: usize = 16 << 10;

/// Default bound on the event streams one client holds open.
pub const DEFAULT_STREAMS_PER_CLIENT: usize = 100;

/// Largest request head (request line and headers) a connection buffers.
const MAX_HEAD: usize = 64 << 10;

/// What every handler gets.
#[derive(Clone)]
pub(crate) struct AppState {
    pub sched: Arc<dyn Scheduler>,
    pub workers: Option<Arc<dyn WorkerBackend>>,
    pub artifacts: Option<ArtifactStore>,
    /// Open event streams per client.
    pub streams: Arc<StreamLimits>,
    /// Fires when the server stops (event streams end then).
    pub stop: CancellationToken,
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

/// How the server treats requests: one value passed whole from the
/// facade's `GymBuilder` down to the server.
#[derive(Debug, Clone, PartialEq, Eq)]
#[non_exhaustive]
pub struct ServerOptions {
    /// The token every request needs when set (an empty token counts as
    /// none): `Authorization: Bearer <token>`, or the token as the password
    /// of HTTP Basic auth. `/api/v1/health` is always open. Mandatory when
    /// listening beyond loopback.
    pub token: Option<String>,
    /// Reads (GET, HEAD) need no token; writes still do. For a trusted
    /// network: jobs carry configs, git URLs and reproducers.
    pub public_reads: bool,
    /// The largest accepted request body (413 beyond).
    pub body_limit: usize,
    /// How long a client may take to send a request head; the connection
    /// is closed after it (also an idle kept-alive connection).
    pub header_timeout: Duration,
    /// How long a client may take to send a request body (408 and the
    /// connection closed after it).
    pub body_timeout: Duration,
    /// The longest URI, path and query (414 beyond).
    pub max_uri: usize,
    /// How many event streams one client (peer address) may hold open
    /// (429 beyond).
    pub streams_per_client: usize,
}

impl Default for ServerOptions {
    fn default() -> Self {
        Self {
            token: None,
            public_reads: false,
            body_limit: DEFAULT_BODY_LIMIT,
            header_timeout: DEFAULT_HEADER_TIMEOUT,
            body_timeout: DEFAULT_BODY_TIMEOUT,
            max_uri: DEFAULT_MAX_URI,
            streams_per_client: DEFAULT_STREAMS_PER_CLIENT,
        }
    }
}

impl ServerOptions {
    /// Sets [`token`](Self::token).
    pub fn token(mut self, token: Option<String>) -> Self {
        self.token = token.filter(|t| !t.is_empty());
        self
    }

    /// Sets [`public_reads`](Self::public_reads).
    pub fn public_reads(mut self, on: bool) -> Self {
        self.public_reads = on;
        self
    }

    /// Sets [`body_limit`](Self::body_limit).
    pub fn body_limit(mut self, bytes: usize) -> Self {
        self.body_limit = bytes;
        self
    }

    /// Sets [`header_timeout`](Self::header_timeout).
    pub fn header_timeout(mut self, limit: Duration) -> Self {
        self.header_timeout = limit;
        self
    }

    /// Sets [`body_timeout`](Self::body_timeout).
    pub fn body_timeout(mut self, limit: Duration) -> Self {
        self.body_timeout = limit;
        self
    }

    /// Sets [`max_uri`](Self::max_uri).
    pub fn max_uri(mut self, bytes: usize) -> Self {
        self.max_uri = bytes;
        self
    }

    /// Sets [`streams_per_client`](Self::streams_per_client).
    pub fn streams_per_client(mut self, n: usize) -> Self {
        self.streams_per_client = n;
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
    public: Vec<Router>,
}

/// Entry point: `HttpServer::builder(scheduler)...serve(addr)`.
#[derive(Debug)]
pub struct HttpServer;

impl HttpServer {
    /// A server over `sched`.
    pub fn builder(sched: Arc<dyn Scheduler>) -> ServerBuilder {
        ServerBuilder {
            sched,
            workers: None,
            artifacts: None,
            options: ServerOptions::default(),
            merged: Vec::new(),
            public: Vec::new(),
        }
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

    /// Token, public reads, limits and timeouts.
    pub fn options(mut self, options: ServerOptions) -> Self {
        self.options = ServerOptions { token: options.token.filter(|t| !t.is_empty()), ..options };
        self
    }

    /// Serves `router`'s routes beside the server's own (e.g. kGym's routes
    /// from `kgym-compat`, or a dashboard). They sit behind the same token
    /// check and limits; a path both serve is a programming error (axum
    /// panics when the server is built).
    pub fn merge(mut self, router: Router) -> Self {
        self.merged.push(router);
        self
    }

    /// Serves `router`'s routes beside the server's own *without* the
    /// token check (still under the request limits): for what carries no
    /// job data and must load before a user can give a token, such as a
    /// dashboard's page and scripts. Everything else belongs in
    /// [`merge`](Self::merge).
    pub fn merge_public(mut self, router: Router) -> Self {
        self.public.push(router);
        self
    }

    /// The router, to serve or to nest in another axum app. Served by
    /// another listener, it knows no peer addresses: its event streams are
    /// not bounded per client, and the header-read timeout is that
    /// listener's business.
    pub fn router(&self) -> Router {
        self.app(CancellationToken::new())
    }

    fn app(&self, stop: CancellationToken) -> Router {
        let o = &self.options;
        let state = AppState {
            sched: Arc::clone(&self.sched),
            workers: self.workers.clone(),
            artifacts: self.artifacts.clone(),
            streams: StreamLimits::new(o.streams_per_client),
            stop,
        };
        let auth = Auth { token: o.token.as_deref().map(Arc::from), public_reads: o.public_reads };
        let limits = Limits { max_uri: o.max_uri, body_limit: o.body_limit, body_timeout: o.body_timeout };
        let own: Router = routes().router.with_state(state);
        // Layers run outside in (the last added first), and `layer` wraps
        // the routes there are so far: the guarded routes get the token
        // check, public ones only the body limits.
        let body_limits = |r: Router| {
            r.layer(DefaultBodyLimit::max(o.body_limit)).layer(middleware::from_fn_with_state(limits, read_body))
        };
        let guarded = body_limits(self.merged.iter().cloned().fold(own, Router::merge))
            .layer(middleware::from_fn_with_state(auth, require_token));
        self.public
            .iter()
            .cloned()
            .map(body_limits)
            .fold(guarded, Router::merge)
            .fallback(no_route)
            .method_not_allowed_fallback(no_method)
            .layer(middleware::from_fn_with_state(limits, limit_uri))
            .layer(CatchPanicLayer::custom(panic_response))
    }

    /// Binds `addr` and serves until [`ServerHandle::shutdown`]. Refuses to
    /// listen beyond loopback without a token.
    pub async fn serve(self, addr: SocketAddr) -> Result<ServerHandle> {
        check_listen(addr, &self.options)?;
        let listener = tokio::net::TcpListener::bind(addr).await.map_err(|source| Error::Bind { addr, source })?;
        let local = listener.local_addr().map_err(|source| Error::Bind { addr, source })?;
        let stop = CancellationToken::new();
        let app = self.app(stop.clone());
        let conn = ConnOptions { header_timeout: self.options.header_timeout, max_head: MAX_HEAD };
        let task = tokio::spawn(super::listen::serve(listener, app, conn, stop.clone()));
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

    /// Stops accepting connections, ends the event streams and gives open
    /// requests (long polls) a few seconds to finish.
    pub async fn shutdown(self) {
        self.stop.cancel();
        if let Err(e) = self.task.await {
            tracing::warn!(error = %e, "the HTTP server task failed");
        }
    }
}
