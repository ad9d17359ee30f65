//! The remote worker protocol under `/api/v1/workers`: what
//! [`super::HttpWorkerBackend`] calls.

use axum::extract::State;
use axum::http::StatusCode;
use axum::response::{IntoResponse, Response};
use kgym_core::StageKind;
use serde::{Deserialize, Serialize};
use serde_json::json;

use super::reply::{ApiError, ApiJson, ok};
use super::server::AppState;
use crate::error::Error;
use crate::worker_api::{ClaimRequest, Lease, StageOutcome, WorkerBackend, WorkerInfo};

type Reply = Result<Response, ApiError>;

/// Body of `POST /api/v1/workers/log`.
#[derive(Debug, Serialize, Deserialize)]
pub(crate) struct LogBody {
    pub lease: Lease,
    pub worker: String,
    pub lines: Vec<String>,
}

/// Body of `POST /api/v1/workers/report`.
#[derive(Debug, Serialize, Deserialize)]
pub(crate) struct ReportBody {
    pub lease: Lease,
    pub outcome: StageOutcome,
}

/// Body of `POST /api/v1/workers/event`.
#[derive(Debug, Serialize, Deserialize)]
pub(crate) struct EventBody {
    pub host: String,
    #[serde(default)]
    pub kind: Option<StageKind>,
    pub message: String,
}

fn backend(s: &AppState) -> Result<&dyn WorkerBackend, ApiError> {
    s.workers
        .as_deref()
        .ok_or_else(|| ApiError(Error::bad_request("this server does not hand stages to remote workers")))
}

pub(crate) async fn register(State(s): State<AppState>, ApiJson(info): ApiJson<WorkerInfo>) -> Reply {
    backend(&s)?.register(&info).await?;
    Ok(ok(json!({})))
}

pub(crate) async fn claim(State(s): State<AppState>, ApiJson(req): ApiJson<ClaimRequest>) -> Reply {
    match backend(&s)?.claim(&req).await? {
        Some(c) => Ok(ok(c)),
        None => Ok(StatusCode::NO_CONTENT.into_response()),
    }
}

pub(crate) async fn heartbeat(State(s): State<AppState>, ApiJson(lease): ApiJson<Lease>) -> Reply {
    let status = backend(&s)?.heartbeat(&lease).await?;
    Ok(ok(json!({"status": status})))
}

pub(crate) async fn log(State(s): State<AppState>, ApiJson(b): ApiJson<LogBody>) -> Reply {
    backend(&s)?.append_log(&b.lease, &b.worker, &b.lines).await?;
    Ok(ok(json!({})))
}

pub(crate) async fn report(State(s): State<AppState>, ApiJson(b): ApiJson<ReportBody>) -> Reply {
    let ack = backend(&s)?.report(&b.lease, b.outcome).await?;
    Ok(ok(json!({"ack": ack})))
}

pub(crate) async fn yield_stage(State(s): State<AppState>, ApiJson(lease): ApiJson<Lease>) -> Reply {
    backend(&s)?.yield_stage(&lease).await?;
    Ok(ok(json!({})))
}

/// Body of `POST /api/v1/workers/deregister`.
#[derive(Debug, Serialize, Deserialize)]
pub(crate) struct HostBody {
    pub host: String,
}

pub(crate) async fn deregister(State(s): State<AppState>, ApiJson(b): ApiJson<HostBody>) -> Reply {
    backend(&s)?.deregister(&b.host).await?;
    Ok(ok(json!({})))
}

pub(crate) async fn event(State(s): State<AppState>, ApiJson(b): ApiJson<EventBody>) -> Reply {
    backend(&s)?.worker_event(&b.host, b.kind.as_ref(), &b.message).await?;
    Ok(ok(json!({})))
}
