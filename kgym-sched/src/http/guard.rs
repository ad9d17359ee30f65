//! What one request may take, answered in JSON like every other error: a
//! URI of bounded length (414), a body within the size limit (413) that
//! arrives within a deadline (408, and the connection is closed), and no
//! panic escaping as an empty answer (500). A client that sends its
//! headers too slowly never gets this far: the connection's header-read
//! timeout cuts it off (see `listen`).

use std::time::Duration;

use axum::body::Body;
use axum::extract::{Request, State};
use axum::http::{HeaderValue, StatusCode, header};
use axum::middleware::Next;
use axum::response::Response;
use http_body_util::{BodyExt, LengthLimitError, Limited};
use serde_json::{Value, json};

use super::reply::error_response;

/// The limits of one request.
#[derive(Debug, Clone, Copy)]
pub(crate) struct Limits {
    /// Longest path + query, in bytes.
    pub max_uri: usize,
    /// Largest body, in bytes.
    pub body_limit: usize,
    /// How long the whole body may take to arrive.
    pub body_timeout: Duration,
}

/// Refuses URIs longer than the limit.
pub(crate) async fn limit_uri(State(limits): State<Limits>, req: Request, next: Next) -> Response {
    let len = req.uri().path_and_query().map_or(0, |p| p.as_str().len());
    if len > limits.max_uri {
        return error_response(
            StatusCode::URI_TOO_LONG,
            "uri-too-long",
            format!("the URI is {len} bytes, more than {} (send long values in a body)", limits.max_uri),
            json!({"limit": limits.max_uri}),
        );
    }
    next.run(req).await
}

fn has_body(req: &Request) -> bool {
    let headers = req.headers();
    headers.contains_key(header::TRANSFER_ENCODING)
        || headers
            .get(header::CONTENT_LENGTH)
            .and_then(|v| v.to_str().ok())
            .is_some_and(|v| v.trim().parse::<u64>().map_or(true, |n| n > 0))
}

/// Reads the whole body within the deadline and the size limit, then
/// hands the request on with the body in memory (every route with a body
/// reads it whole anyway).
pub(crate) async fn read_body(State(limits): State<Limits>, req: Request, next: Next) -> Response {
    if !has_body(&req) {
        return next.run(req).await;
    }
    let (parts, body) = req.into_parts();
    let read = tokio::time::timeout(limits.body_timeout, Limited::new(body, limits.body_limit).collect()).await;
    let bytes = match read {
        Ok(Ok(collected)) => collected.to_bytes(),
        Ok(Err(e)) if e.downcast_ref::<LengthLimitError>().is_some() => {
            return error_response(
                StatusCode::PAYLOAD_TOO_LARGE,
                "payload-too-large",
                format!("the body is larger than {} bytes", limits.body_limit),
                json!({"limit": limits.body_limit}),
            );
        }
        Ok(Err(e)) => {
            return error_response(StatusCode::BAD_REQUEST, "bad-body", format!("read the body: {e}"), Value::Null);
        }
        Err(_) => {
            let mut resp = error_response(
                StatusCode::REQUEST_TIMEOUT,
                "request-timeout",
                format!("the request body did not arrive within {} s", limits.body_timeout.as_secs_f64()),
                Value::Null,
            );
            // The rest of the body may still come: this connection is done.
            resp.headers_mut().insert(header::CONNECTION, HeaderValue::from_static("close"));
            return resp;
        }
    };
    next.run(Request::from_parts(parts, Body::from(bytes))).await
}

/// A handler's panic as a JSON 500 (the server keeps serving).
pub(crate) fn panic_response(panic: Box<dyn std::any::Any + Send + 'static>) -> Response {
    let what = panic
        .downcast_ref::<String>()
        .map(String::as_str)
        .or_else(|| panic.downcast_ref::<&str>().copied())
        .unwrap_or("a panic");
    tracing::error!(panic = what, "request handler panicked");
    error_response(StatusCode::INTERNAL_SERVER_ERROR, "internal", format!("the server failed: {what}"), Value::Null)
}
