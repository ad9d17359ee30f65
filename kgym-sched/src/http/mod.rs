//! The HTTP API (axum) and its clients.
//!
//! - [`HttpServer`]: serves any [`Scheduler`](crate::Scheduler): the typed
//!   API under `/api/v1` (kgym-core's types as JSON, watch as server-sent
//!   events) and the remote worker protocol under `/api/v1/workers`; other
//!   crates [`merge`](ServerBuilder::merge) their routes in (kgym-compat's
//!   kGym routes, the dashboard). With a token set every route but
//!   `/api/v1/health` needs it (Bearer, or HTTP Basic with the token as the
//!   password), reads too unless `public_reads`; one must be set to listen
//!   beyond loopback. Slow clients are cut off (header and body timeouts),
//!   event streams are bounded per client, and every answer is JSON. The
//!   routes are described in the crate's `openapi.json`.
//! - [`reply`]: the error answers and extractors handlers share, for
//!   routes merged in from other crates.
//! - [`HttpScheduler`]: the [`Scheduler`](crate::Scheduler) trait over HTTP.
//! - [`HttpWorkerBackend`]: the [`WorkerBackend`](crate::worker_api::WorkerBackend)
//!   trait over HTTP, for worker processes.

mod api_routes;
mod artifact_routes;
mod auth;
mod client;
mod conn;
mod guard;
mod listen;
pub mod reply;
mod server;
mod streams;
mod worker_client;
mod worker_routes;

pub use client::HttpScheduler;
/// HTTP methods, for [`HttpScheduler::call`].
pub use reqwest::Method;
pub use server::{
    DEFAULT_BODY_LIMIT, DEFAULT_BODY_TIMEOUT, DEFAULT_HEADER_TIMEOUT, DEFAULT_MAX_URI, DEFAULT_STREAMS_PER_CLIENT,
    HttpServer, ServerBuilder, ServerHandle, ServerOptions, check_listen, route_table,
};
pub use worker_client::HttpWorkerBackend;

/// The OpenAPI document describing every route.
pub const OPENAPI: &str = include_str!("../../openapi.json");
