//! What the fake Compute APIs of `gce.rs` and `gce_qemu.rs` share: the
//! project they serve and Google's error body.
#![allow(dead_code)]

use axum::extract::Json;
use axum::http::StatusCode;
use axum::response::{IntoResponse, Response};
use serde_json::json;

pub const PROJECT: &str = "kgym-test";
pub const ZONE: &str = "us-central1-a";
pub const BUCKET: &str = "kgym-disks";
pub const OBJECT: &str = "disks/bug.tar.gz";

/// An error as Compute Engine answers one: `{"error": {code, message,
/// errors: [{message, domain, reason}]}}`.
pub fn google_error(status: StatusCode, reason: &str, message: &str) -> Response {
    let body = json!({"error": {"code": status.as_u16(), "message": message,
        "errors": [{"message": message, "domain": "global", "reason": reason}]}});
    (status, Json(body)).into_response()
}

/// The 401 of a request without the expected bearer token.
pub fn unauthorized() -> Response {
    google_error(StatusCode::UNAUTHORIZED, "authError", "Request had invalid authentication credentials.")
}

/// Whether `headers` carry `Authorization: Bearer {token}`.
pub fn has_bearer(headers: &axum::http::HeaderMap, token: &str) -> bool {
    headers.get("authorization").and_then(|v| v.to_str().ok()) == Some(&format!("Bearer {token}"))
}
