//! The HTTP API (axum) and its clients.
//!
//! - [`HttpServer`]: serves any [`Scheduler`](crate::Scheduler): the typed
//!   API under `/api/v1` (kgym-core's types as JSON, watch as server-sent
//!   events) and the remote worker protocol under `/api/v1/workers`; other
//!   crates [`merge`](ServerBuilder::merge) their routes in (kgym-compat's
//!   kGym routes, the dashboard). Writes need a bearer token whenever one is
//!   set, and one must be set to listen beyond loopback. The routes are
//!   described in the crate's `openapi.json`.
//! - [`reply`]: the error answers and extractors handlers share, for
//!   routes merged in from other crates.
//! - [`HttpScheduler`]: the [`Scheduler`](crate::Scheduler) trait over HTTP.
//! - [`HttpWorkerBackend`]: the [`WorkerBackend`](crate::worker_api::WorkerBackend)
//!   trait over HTTP, for worker processes.

mod api_routes;
mod artifact_routes;
mod client;
mod conn;
pub mod reply;
mod server;
mod worker_client;
mod worker_routes;

pub use client::HttpScheduler;
/// HTTP methods, for [`HttpScheduler::call`].
pub use reqwest::Method;
pub use server::{
    DEFAULT_BODY_LIMIT, HttpServer, ServerBuilder, ServerHandle, ServerOptions, check_listen, route_table,
};
pub use worker_client::HttpWorkerBackend;

/// The OpenAPI document describing every route.
pub const OPENAPI: &str = include_str!("../../openapi.json");
