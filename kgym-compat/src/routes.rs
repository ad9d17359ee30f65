//! The original kGym routes and payloads (kscheduler's REST API), so
//! kcomposer scripts keep working. Answers carry kGym's field names beside
//! ours; errors are 400/404/409 with `{detail}` (kGym answered 422/500).

use std::sync::Arc;

use axum::Router;
use axum::body::Body;
use axum::extract::State;
use axum::http::header;
use axum::response::Response;
use axum::routing::{self, MethodRouter};
use chrono::{DateTime, Utc};
use kgym_core::{StageIndex, StageKind, Tags};
use kgym_sched::Error;
use kgym_sched::Scheduler;
use kgym_sched::http::reply::{ApiError, ApiJson, ApiPath, ApiQuery, job_id, ok};
use kgym_sched::types::{ListQuery, LogQuery, MAX_PAGE, Order, Page, SystemLogQuery, TagMatch, TagQuery, TimeField};
use serde::Deserialize;
use serde_json::{Value, json};

use crate::{self as compat, CompatOptions, RawJob};

/// What every kGym handler gets.
#[derive(Clone)]
struct AppState {
    sched: Arc<dyn Scheduler>,
    compat: Arc<CompatOptions>,
}

/// kGym's routes as (method, path, handler).
fn routes() -> Vec<(&'static str, &'static str, MethodRouter<AppState>)> {
    vec![
        ("post", "/jobs/new_raw_job", routing::post(new_raw_job)),
        ("get", "/jobs/", routing::get(list)),
        ("get", "/jobs", routing::get(list)),
        ("get", "/jobs/{id}", routing::get(job)),
        ("get", "/jobs/{id}/log", routing::get(log)),
        ("post", "/jobs/{id}/abort", routing::post(abort)),
        ("post", "/jobs/{id}/restart", routing::post(restart)),
        ("post", "/jobs/{id}/reset", routing::post(reset)),
        ("get", "/jobs/{id}/keys", routing::get(keys)),
        ("post", "/jobs/{id}/keys", routing::post(update_keys)),
        ("get", "/jobs/{id}/keys/{key}", routing::get(key)),
        ("get", "/jobs/kv/{key}", routing::get(kv)),
        ("get", "/system/workers/types/{kind}/log", routing::get(worker_type_log)),
        ("get", "/system/workers/instances/{hostname}/log", routing::get(worker_instance_log)),
        ("get", "/system/displays/jobs/log", routing::get(jobs_display)),
        ("get", "/system/displays/workers/log", routing::get(workers_display)),
    ]
}

/// kGym's routes over `sched`, to merge into kgym's HTTP server
/// (`kgym_sched::http::HttpServer::builder(..).merge(router(..))`): the
/// server's token and body limit apply to them too.
pub fn router(sched: Arc<dyn Scheduler>, options: CompatOptions) -> Router {
    let state = AppState { sched, compat: Arc::new(options) };
    routes().into_iter().fold(Router::new(), |r, (_, path, route)| r.route(path, route)).with_state(state)
}

/// The (method, path) pairs of [`router`], for checking `openapi.json`.
pub fn route_table() -> Vec<(&'static str, &'static str)> {
    routes().into_iter().map(|(m, p, _)| (m, p)).collect()
}

type Reply = Result<Response, ApiError>;

/// kGym's page size limit.
const KGYM_MAX_LIMIT: u32 = 50;

fn convert(s: &AppState, raw: &RawJob) -> Result<kgym_core::JobSpec, ApiError> {
    compat::convert(raw, &s.compat).map_err(|problems| ApiError(Error::Validation { problems }))
}

async fn new_raw_job(State(s): State<AppState>, ApiJson(raw): ApiJson<RawJob>) -> Reply {
    let spec = convert(&s, &raw)?;
    let id = s.sched.submit(spec).await?;
    // kGym answers the bare id as a JSON string.
    Ok(ok(id))
}

/// kGym's time window and page.
#[derive(Debug, Deserialize)]
struct Window {
    start_time: Option<String>,
    end_time: Option<String>,
    #[serde(default)]
    start: u64,
    limit: Option<u32>,
}

/// A parsed window: from, to, start, limit.
type Bounds = (Option<DateTime<Utc>>, Option<DateTime<Utc>>, u64, u32);

impl Window {
    fn time(text: &Option<String>, name: &str) -> Result<Option<DateTime<Utc>>, ApiError> {
        match text.as_deref() {
            None | Some("") => Ok(None),
            // kGym's defaults (`0000-00-00T...`, `9999-99-99T...`) are not
            // real dates: they mean "unbounded".
            Some(t) if t.starts_with("0000-") || t.starts_with("9999-") => Ok(None),
            Some(t) => compat::parse_time(t).map(Some).ok_or_else(|| {
                ApiError(Error::bad_request(format!("{name} {t:?} is not a time like 2024-05-01T12:00:00.000000")))
            }),
        }
    }

    fn parts(&self) -> Result<Bounds, ApiError> {
        let limit = self.limit.unwrap_or(20);
        if limit > KGYM_MAX_LIMIT {
            return Err(ApiError(Error::bad_request(format!("limit must be at most {KGYM_MAX_LIMIT}, got {limit}"))));
        }
        Ok((Self::time(&self.start_time, "start_time")?, Self::time(&self.end_time, "end_time")?, self.start, limit))
    }
}

/// Query of `GET /jobs/`.
#[derive(Debug, Deserialize)]
struct ListParams {
    mode: Option<String>,
    // Not `#[serde(flatten)] Window`: flattening breaks numbers in query
    // strings.
    start_time: Option<String>,
    end_time: Option<String>,
    #[serde(default)]
    start: u64,
    limit: Option<u32>,
}

async fn list(State(s): State<AppState>, ApiQuery(p): ApiQuery<ListParams>) -> Reply {
    let by = match p.mode.as_deref() {
        None | Some("by_created_time") => TimeField::Created,
        Some("by_modified_time") => TimeField::Modified,
        Some(m) => {
            return Err(ApiError(Error::bad_request(format!(
                "mode {m:?} must be by_created_time or by_modified_time"
            ))));
        }
    };
    let window = Window { start_time: p.start_time, end_time: p.end_time, start: p.start, limit: p.limit };
    let (from, to, start, limit) = window.parts()?;
    if limit == 0 {
        return Ok(ok(json!({"result": [], "size": 0, "next": -1, "total": 0})));
    }
    let q = ListQuery { by, from, to, order: Order::NewestFirst, start, limit, ..ListQuery::default() };
    let page = s.sched.list(&q).await?;
    Ok(ok(compat::present_page(&page, compat::present_summary)))
}

async fn job(State(s): State<AppState>, ApiPath(id): ApiPath<String>) -> Reply {
    let job = s.sched.get(job_id(&id)?).await?;
    Ok(ok(compat::present_job(&job)))
}

async fn log(State(s): State<AppState>, ApiPath(id): ApiPath<String>, ApiQuery(w): ApiQuery<Window>) -> Reply {
    let id = job_id(&id)?;
    let (from, to, start, limit) = w.parts()?;
    if limit == 0 {
        // Still a 404 for unknown jobs.
        s.sched.get(id).await?;
        return Ok(ok(json!({"result": [], "size": 0, "next": -1, "total": 0})));
    }
    let q = LogQuery { job: Some(id), from, to, order: Order::NewestFirst, start, limit, after: None };
    let page = s.sched.logs(&q).await?;
    Ok(ok(compat::present_page(&page, compat::present_log_entry)))
}

async fn abort(State(s): State<AppState>, ApiPath(id): ApiPath<String>) -> Reply {
    s.sched.abort(job_id(&id)?).await?;
    Ok(ok(Value::Null))
}

/// Query of restart/reset.
#[derive(Debug, Deserialize)]
struct RestartParams {
    restart_from: Option<i64>,
}

fn restart_from(p: &RestartParams, allow_current: bool) -> Result<Option<StageIndex>, ApiError> {
    match p.restart_from {
        None if allow_current => Ok(None),
        None => Ok(Some(StageIndex(0))),
        Some(-1) if allow_current => Ok(None),
        Some(i) if i >= 0 && i <= i64::from(u32::MAX) => Ok(Some(StageIndex(i as u32))),
        Some(i) => Err(ApiError(Error::bad_request(format!("restart_from must be a stage index, got {i}")))),
    }
}

async fn restart(
    State(s): State<AppState>,
    ApiPath(id): ApiPath<String>,
    ApiQuery(p): ApiQuery<RestartParams>,
) -> Reply {
    s.sched.restart(job_id(&id)?, restart_from(&p, true)?).await?;
    Ok(ok(Value::Null))
}

async fn reset(
    State(s): State<AppState>,
    ApiPath(id): ApiPath<String>,
    ApiQuery(p): ApiQuery<RestartParams>,
    ApiJson(raw): ApiJson<RawJob>,
) -> Reply {
    let id = job_id(&id)?;
    let from = restart_from(&p, false)?.unwrap_or(StageIndex(0));
    let spec = convert(&s, &raw)?;
    s.sched.reset(id, spec, from).await?;
    Ok(ok(Value::Null))
}

/// Query of `GET /jobs/{id}/keys`.
#[derive(Debug, Deserialize)]
struct KeysParams {
    #[serde(default)]
    with_values: bool,
}

async fn keys(State(s): State<AppState>, ApiPath(id): ApiPath<String>, ApiQuery(p): ApiQuery<KeysParams>) -> Reply {
    let tags = s.sched.tags(job_id(&id)?).await?;
    if p.with_values { Ok(ok(tags)) } else { Ok(ok(tags.keys().collect::<Vec<_>>())) }
}

async fn key(State(s): State<AppState>, ApiPath((id, key)): ApiPath<(String, String)>) -> Reply {
    let tags = s.sched.tags(job_id(&id)?).await?;
    Ok(ok(tags.get(&key)))
}

async fn update_keys(State(s): State<AppState>, ApiPath(id): ApiPath<String>, ApiJson(kv): ApiJson<Tags>) -> Reply {
    s.sched.merge_tags(job_id(&id)?, kv).await?;
    Ok(ok(Value::Null))
}

/// Query of `GET /jobs/kv/{key}`.
#[derive(Debug, Deserialize)]
struct KvParams {
    start: Option<u64>,
    limit: Option<u32>,
}

fn kv_item(m: &TagMatch) -> Value {
    json!({"job-id": m.job, "key": m.key, "value": m.value})
}

/// `GET /jobs/kv/{key}`: kGym's array of `{job-id, key, value}`. With
/// `start`/`limit`, one page of it; without, every match, streamed page by
/// page (following cursors), so memory stays bounded however many jobs
/// carry the key.
async fn kv(State(s): State<AppState>, ApiPath(key): ApiPath<String>, ApiQuery(p): ApiQuery<KvParams>) -> Reply {
    if p.start.is_some() || p.limit.is_some() {
        let limit = p.limit.unwrap_or(20);
        if limit == 0 {
            return Ok(ok(Vec::<Value>::new()));
        }
        let q = TagQuery { start: p.start.unwrap_or(0), limit, ..TagQuery::new(key, None) };
        let page = s.sched.jobs_with_tag(&q).await?;
        return Ok(ok(page.items.iter().map(kv_item).collect::<Vec<_>>()));
    }
    // The first page before answering, so a bad request is still a 4xx.
    let query = TagQuery { limit: MAX_PAGE, ..TagQuery::new(key, None) };
    let first = s.sched.jobs_with_tag(&query).await?;
    let state = KvStream { sched: Arc::clone(&s.sched), query, page: Some(first), opened: false };
    let body = Body::from_stream(futures::stream::unfold(state, KvStream::next_chunk));
    Response::builder()
        .header(header::CONTENT_TYPE, "application/json")
        .body(body)
        .map_err(|e| ApiError(Error::bad_request(e.to_string())))
}

/// The pages of an unpaged `/jobs/kv/{key}` as chunks of one JSON array.
struct KvStream {
    sched: Arc<dyn Scheduler>,
    query: TagQuery,
    /// The page to write next; `None` once the array is closed.
    page: Option<Page<TagMatch>>,
    opened: bool,
}

impl KvStream {
    async fn next_chunk(mut self) -> Option<(Result<String, std::io::Error>, Self)> {
        let page = self.page.take()?;
        let mut chunk = String::new();
        for item in &page.items {
            chunk.push(if self.opened { ',' } else { '[' });
            self.opened = true;
            chunk.push_str(&kv_item(item).to_string());
        }
        match (page.next, page.cursor) {
            (Some(next), Some(cursor)) => {
                self.query.start = next;
                self.query.after = Some(cursor);
                match self.sched.jobs_with_tag(&self.query).await {
                    Ok(p) => self.page = Some(p),
                    Err(e) => {
                        // The answer has begun: all that is left is to cut it.
                        tracing::warn!(error = %kgym_core::failure::error_chain(&e), "cut a /jobs/kv stream");
                        return Some((Err(std::io::Error::other(e.to_string())), self));
                    }
                }
            }
            _ => chunk.push_str(if self.opened { "]" } else { "[]" }),
        }
        Some((Ok(chunk), self))
    }
}

/// kGym's worker names as our kinds.
fn our_kind(name: &str) -> Result<StageKind, ApiError> {
    let name = match name {
        "kbuilder" => StageKind::BUILD,
        "kvmmanager" => StageKind::REPRODUCE,
        "kprebuilder" => StageKind::PATCH_CHECK,
        other => other,
    };
    StageKind::new(name).map_err(|e| ApiError(Error::bad_request(e.to_string())))
}

async fn sys_page(s: &AppState, kind: Option<StageKind>, host: Option<String>, w: Window) -> Reply {
    let (from, to, start, limit) = w.parts()?;
    if limit == 0 {
        return Ok(ok(json!({"result": [], "size": 0, "next": -1, "total": 0})));
    }
    let q = SystemLogQuery { kind, host, from, to, order: Order::NewestFirst, start, limit, after: None };
    let page = s.sched.system_log(&q).await?;
    Ok(ok(compat::present_page(&page, compat::present_sys_entry)))
}

async fn worker_type_log(
    State(s): State<AppState>,
    ApiPath(kind): ApiPath<String>,
    ApiQuery(w): ApiQuery<Window>,
) -> Reply {
    let kind = our_kind(&kind)?;
    sys_page(&s, Some(kind), None, w).await
}

async fn worker_instance_log(
    State(s): State<AppState>,
    ApiPath(host): ApiPath<String>,
    ApiQuery(w): ApiQuery<Window>,
) -> Reply {
    sys_page(&s, None, Some(host), w).await
}

async fn workers_display(State(s): State<AppState>, ApiQuery(w): ApiQuery<Window>) -> Reply {
    sys_page(&s, None, None, w).await
}

async fn jobs_display(State(s): State<AppState>, ApiQuery(w): ApiQuery<Window>) -> Reply {
    let (from, to, start, limit) = w.parts()?;
    if limit == 0 {
        return Ok(ok(json!({"result": [], "size": 0, "next": -1, "total": 0})));
    }
    let q = LogQuery { job: None, from, to, order: Order::NewestFirst, start, limit, after: None };
    let page = s.sched.logs(&q).await?;
    Ok(ok(compat::present_page(&page, compat::present_log_entry)))
}
