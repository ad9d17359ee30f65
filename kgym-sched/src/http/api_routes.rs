//! The typed API under `/api/v1`: kgym-core's types as JSON.

use std::convert::Infallible;

use std::net::SocketAddr;

use axum::Extension;
use axum::extract::{ConnectInfo, State};
use axum::response::sse::{Event, KeepAlive, Sse};
use axum::response::{IntoResponse, Response};
use chrono::{DateTime, Utc};
use futures::StreamExt;
use kgym_core::{JobSpec, JobStatus, StageIndex, Tags};
use serde::Deserialize;
use serde_json::json;

use super::reply::{ApiError, ApiJson, ApiPath, ApiQuery, job_id, ok};
use super::server::AppState;
use crate::types::{DEFAULT_PAGE, ListQuery, LogQuery, Order, StatsQuery, SystemLogQuery, TagQuery, TimeField};

type Reply = Result<Response, ApiError>;

pub(crate) async fn health() -> Response {
    ok(json!({"ok": true, "version": env!("CARGO_PKG_VERSION")}))
}

pub(crate) async fn submit(State(s): State<AppState>, ApiJson(spec): ApiJson<JobSpec>) -> Reply {
    let id = s.sched.submit(spec).await?;
    Ok(ok(json!({"id": id})))
}

/// Query of `GET /api/v1/jobs` (and `/api/v1/jobs/counts`).
#[derive(Debug, Deserialize)]
pub(crate) struct ListParams {
    #[serde(default)]
    by: TimeField,
    from: Option<DateTime<Utc>>,
    to: Option<DateTime<Utc>>,
    status: Option<JobStatus>,
    tag: Option<String>,
    tag_value: Option<String>,
    #[serde(default)]
    order: Order,
    #[serde(default)]
    start: u64,
    limit: Option<u32>,
    after: Option<String>,
}

impl ListParams {
    fn query(self) -> ListQuery {
        ListQuery {
            by: self.by,
            from: self.from,
            to: self.to,
            status: self.status,
            tag: self.tag,
            tag_value: self.tag_value,
            order: self.order,
            start: self.start,
            limit: self.limit.unwrap_or(DEFAULT_PAGE),
            after: self.after,
        }
    }
}

pub(crate) async fn list(State(s): State<AppState>, ApiQuery(p): ApiQuery<ListParams>) -> Reply {
    Ok(ok(s.sched.list(&p.query()).await?))
}

pub(crate) async fn counts(State(s): State<AppState>, ApiQuery(p): ApiQuery<ListParams>) -> Reply {
    Ok(ok(s.sched.status_counts(&p.query()).await?))
}

pub(crate) async fn workers(State(s): State<AppState>) -> Reply {
    Ok(ok(s.sched.workers().await?))
}

pub(crate) async fn stats(State(s): State<AppState>, ApiQuery(q): ApiQuery<StatsQuery>) -> Reply {
    Ok(ok(s.sched.stats(&q).await?))
}

pub(crate) async fn get(State(s): State<AppState>, ApiPath(id): ApiPath<String>) -> Reply {
    Ok(ok(s.sched.get(job_id(&id)?).await?))
}

pub(crate) async fn abort(State(s): State<AppState>, ApiPath(id): ApiPath<String>) -> Reply {
    Ok(ok(s.sched.abort(job_id(&id)?).await?))
}

/// Query of restart/reset.
#[derive(Debug, Deserialize)]
pub(crate) struct FromParam {
    from: Option<u32>,
}

pub(crate) async fn restart(
    State(s): State<AppState>,
    ApiPath(id): ApiPath<String>,
    ApiQuery(p): ApiQuery<FromParam>,
) -> Reply {
    Ok(ok(s.sched.restart(job_id(&id)?, p.from.map(StageIndex)).await?))
}

pub(crate) async fn reset(
    State(s): State<AppState>,
    ApiPath(id): ApiPath<String>,
    ApiQuery(p): ApiQuery<FromParam>,
    ApiJson(spec): ApiJson<JobSpec>,
) -> Reply {
    Ok(ok(s.sched.reset(job_id(&id)?, spec, StageIndex(p.from.unwrap_or(0))).await?))
}

pub(crate) async fn get_tags(State(s): State<AppState>, ApiPath(id): ApiPath<String>) -> Reply {
    Ok(ok(s.sched.tags(job_id(&id)?).await?))
}

pub(crate) async fn set_tags(
    State(s): State<AppState>,
    ApiPath(id): ApiPath<String>,
    ApiJson(tags): ApiJson<Tags>,
) -> Reply {
    Ok(ok(s.sched.set_tags(job_id(&id)?, tags).await?))
}

pub(crate) async fn merge_tags(
    State(s): State<AppState>,
    ApiPath(id): ApiPath<String>,
    ApiJson(tags): ApiJson<Tags>,
) -> Reply {
    Ok(ok(s.sched.merge_tags(job_id(&id)?, tags).await?))
}

/// Query of `GET /api/v1/tags/{key}`.
#[derive(Debug, Deserialize)]
pub(crate) struct TagParams {
    value: Option<String>,
    order: Option<Order>,
    #[serde(default)]
    start: u64,
    limit: Option<u32>,
    after: Option<String>,
}

pub(crate) async fn tagged(
    State(s): State<AppState>,
    ApiPath(key): ApiPath<String>,
    ApiQuery(p): ApiQuery<TagParams>,
) -> Reply {
    let q = TagQuery {
        key,
        value: p.value,
        order: p.order.unwrap_or(Order::OldestFirst),
        start: p.start,
        limit: p.limit.unwrap_or(DEFAULT_PAGE),
        after: p.after,
    };
    Ok(ok(s.sched.jobs_with_tag(&q).await?))
}

/// Query of the log routes.
#[derive(Debug, Deserialize)]
pub(crate) struct LogParams {
    from: Option<DateTime<Utc>>,
    to: Option<DateTime<Utc>>,
    order: Option<Order>,
    #[serde(default)]
    start: u64,
    limit: Option<u32>,
    after: Option<String>,
}

impl LogParams {
    fn query(self, job: Option<kgym_core::JobId>) -> LogQuery {
        LogQuery {
            job,
            from: self.from,
            to: self.to,
            order: self.order.unwrap_or(Order::OldestFirst),
            start: self.start,
            limit: self.limit.unwrap_or(DEFAULT_PAGE),
            after: self.after,
        }
    }
}

pub(crate) async fn job_log(
    State(s): State<AppState>,
    ApiPath(id): ApiPath<String>,
    ApiQuery(p): ApiQuery<LogParams>,
) -> Reply {
    Ok(ok(s.sched.logs(&p.query(Some(job_id(&id)?))).await?))
}

pub(crate) async fn all_logs(State(s): State<AppState>, ApiQuery(p): ApiQuery<LogParams>) -> Reply {
    Ok(ok(s.sched.logs(&p.query(None)).await?))
}

pub(crate) async fn system_log(State(s): State<AppState>, ApiQuery(q): ApiQuery<SystemLogQuery>) -> Reply {
    Ok(ok(s.sched.system_log(&q).await?))
}

/// `GET /api/v1/jobs/{id}/events`: the watch stream as server-sent events
/// (`event: job`, JSON data); it ends after the terminal status, or when
/// the server stops. A client holds a bounded number of them open (429
/// beyond).
pub(crate) async fn events(
    State(s): State<AppState>,
    peer: Option<Extension<ConnectInfo<SocketAddr>>>,
    ApiPath(id): ApiPath<String>,
) -> Reply {
    let id = job_id(&id)?;
    let permit = s.streams.acquire(peer.map(|Extension(ConnectInfo(addr))| addr.ip()))?;
    let stream = s.sched.watch(id).await?;
    let stop = s.stop.clone();
    let events = stream.take_until(async move { stop.cancelled().await }).map(move |ev| {
        // The permit lives as long as the stream.
        let _held = &permit;
        Ok::<_, Infallible>(match ev {
            Ok(ev) => Event::default()
                .event("job")
                .json_data(&ev)
                .unwrap_or_else(|e| Event::default().event("error").data(e.to_string())),
            Err(e) => Event::default().event("error").data(kgym_core::failure::error_chain(&e)),
        })
    });
    Ok(Sse::new(events).keep_alive(KeepAlive::default()).into_response())
}
