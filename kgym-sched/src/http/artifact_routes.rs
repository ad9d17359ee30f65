//! The jobs' artifacts over HTTP: a job's artifact list with sizes, and
//! each artifact streamed (logs and configs as text a browser shows,
//! kernels as downloads).

use axum::body::Body;
use axum::extract::State;
use axum::http::{StatusCode, header};
use axum::response::Response;
use futures::TryStreamExt;
use kgym_core::{ArtifactKey, ArtifactStore};
use serde_json::json;

use super::reply::{ApiError, ApiPath, error_response, job_id, ok};
use super::server::AppState;
use crate::error::Error;

type Reply = Result<Response, ApiError>;

fn store(s: &AppState) -> Result<&ArtifactStore, Box<Response>> {
    s.artifacts.as_ref().ok_or_else(|| {
        Box::new(error_response(
            StatusCode::NOT_FOUND,
            "no-artifacts",
            "this server does not serve artifacts".into(),
            json!({}),
        ))
    })
}

/// `GET /api/v1/jobs/{id}/artifacts`: `[{key, size}]`.
pub(crate) async fn list(State(s): State<AppState>, ApiPath(id): ApiPath<String>) -> Result<Response, Response> {
    let id = job_id(&id).map_err(axum::response::IntoResponse::into_response)?;
    let store = store(&s).map_err(|b| *b)?;
    let listed: Reply = async {
        s.sched.tags(id).await?; // 404 for an unknown job
        let items = store.list_job_sizes(id).await.map_err(|e| Error::bad_request(e.to_string()))?;
        let items: Vec<_> = items.into_iter().map(|(key, size)| json!({"key": key, "size": size})).collect();
        Ok(ok(items))
    }
    .await;
    listed.map_err(axum::response::IntoResponse::into_response)
}

/// The content type an artifact is served with.
fn content_type(key: &ArtifactKey) -> &'static str {
    let name = key.file_name();
    let texty = [".log", ".txt", ".c", ".config", ".diff", ".patch"];
    if name.ends_with(".json") {
        "application/json"
    } else if texty.iter().any(|e| name.ends_with(e)) || ["log", "report", "config", "build.log"].contains(&name) {
        "text/plain; charset=utf-8"
    } else {
        "application/octet-stream"
    }
}

/// `GET /api/v1/artifacts/{*key}`: the artifact's bytes, streamed.
pub(crate) async fn download(State(s): State<AppState>, ApiPath(key): ApiPath<String>) -> Result<Response, Response> {
    let store = store(&s).map_err(|b| *b)?;
    let key = ArtifactKey::parse(key)
        .map_err(|e| error_response(StatusCode::BAD_REQUEST, "bad-request", e.to_string(), json!({})))?;
    let (size, stream) = store.stream(&key).await.map_err(|e| match e {
        kgym_core::Error::ArtifactNotFound { .. } => {
            error_response(StatusCode::NOT_FOUND, "not-found", format!("no artifact {key}"), json!({"key": key}))
        }
        other => error_response(
            StatusCode::INTERNAL_SERVER_ERROR,
            "internal",
            kgym_core::failure::error_chain(&other),
            json!({}),
        ),
    })?;
    let kind = content_type(&key);
    let mut resp = Response::builder()
        .header(header::CONTENT_TYPE, kind)
        .header(header::CONTENT_LENGTH, size)
        .header(header::CACHE_CONTROL, "private, max-age=3600");
    if kind == "application/octet-stream" {
        resp = resp.header(header::CONTENT_DISPOSITION, format!("attachment; filename=\"{}\"", key.file_name()));
    }
    let body = Body::from_stream(stream.map_err(std::io::Error::other));
    resp.body(body).map_err(|e| error_response(StatusCode::INTERNAL_SERVER_ERROR, "internal", e.to_string(), json!({})))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn logs_are_text_and_kernels_are_downloads() {
        let k = |s: &str| ArtifactKey::parse(s).unwrap();
        assert_eq!(content_type(&k("jobs/00000001/0_build/build.log")), "text/plain; charset=utf-8");
        assert_eq!(content_type(&k("jobs/00000001/1_reproduce/incidents/0-0/report")), "text/plain; charset=utf-8");
        assert_eq!(content_type(&k("jobs/00000001/0_build/config")), "text/plain; charset=utf-8");
        assert_eq!(content_type(&k("jobs/00000001/0_build/compile_commands.json")), "application/json");
        assert_eq!(content_type(&k("jobs/00000001/0_build/bzImage")), "application/octet-stream");
    }
}
