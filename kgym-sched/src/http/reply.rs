//! How the server answers errors, and extractors that turn bad input into
//! 400s with messages (413 for bodies over the limit): every answer of the
//! API is JSON, errors included. Public so routes merged in from other
//! crates answer the same way.

use axum::extract::rejection::{JsonRejection, PathRejection, QueryRejection};
use axum::extract::{FromRequest, FromRequestParts, Request};
use axum::http::StatusCode;
use axum::http::request::Parts;
use axum::response::{IntoResponse, Response};
use serde::Serialize;
use serde::de::DeserializeOwned;
use serde_json::{Value, json};

use crate::error::Error;

/// An error as an HTTP answer: status + `{code, error, detail, ...}`.
#[derive(Debug)]
pub struct ApiError(pub Error);

impl From<Error> for ApiError {
    fn from(e: Error) -> Self {
        Self(e)
    }
}

/// The status and machine-readable code of an error.
pub fn classify(e: &Error) -> (StatusCode, &'static str) {
    match e {
        Error::JobNotFound { .. } => (StatusCode::NOT_FOUND, "not-found"),
        Error::Validation { .. } => (StatusCode::BAD_REQUEST, "validation"),
        Error::BadRequest { .. } => (StatusCode::BAD_REQUEST, "bad-request"),
        Error::InvalidState { .. } => (StatusCode::CONFLICT, "invalid-state"),
        Error::LeaseLost { .. } => (StatusCode::CONFLICT, "lease-lost"),
        Error::ShuttingDown => (StatusCode::SERVICE_UNAVAILABLE, "shutting-down"),
        Error::TooManyStreams { .. } => (StatusCode::TOO_MANY_REQUESTS, "too-many-streams"),
        _ => (StatusCode::INTERNAL_SERVER_ERROR, "internal"),
    }
}

/// An error answer with extra fields.
pub fn error_response(status: StatusCode, code: &str, message: String, extra: Value) -> Response {
    let mut body = json!({"code": code, "error": message, "detail": message});
    if let (Value::Object(b), Value::Object(x)) = (&mut body, extra) {
        b.extend(x);
    }
    (status, axum::Json(body)).into_response()
}

impl IntoResponse for ApiError {
    fn into_response(self) -> Response {
        let e = self.0;
        // A proxied remote error keeps its status and code.
        if let Error::Remote { status, code, message, .. } = &e {
            let status = StatusCode::from_u16(*status).unwrap_or(StatusCode::BAD_GATEWAY);
            return error_response(status, code, message.clone(), Value::Null);
        }
        let (status, code) = classify(&e);
        let extra = match &e {
            Error::JobNotFound { id } => json!({"job": id}),
            Error::Validation { problems } => json!({"problems": problems}),
            Error::InvalidState { id, action, status, reason } => {
                json!({"job": id, "action": action, "status": status, "reason": reason})
            }
            Error::LeaseLost { job, stage } => json!({"job": job, "stage": stage}),
            Error::BadRequest { message } => json!({"reason": message}),
            Error::TooManyStreams { limit } => json!({"limit": limit}),
            _ => Value::Null,
        };
        if status.is_server_error() {
            tracing::error!(error = %kgym_core::failure::error_chain(&e), "request failed");
        }
        error_response(status, code, kgym_core::failure::error_chain(&e), extra)
    }
}

/// `Json<T>` whose rejections are 400 (or 413) with our error body.
pub struct ApiJson<T>(pub T);

impl<S: Send + Sync, T: DeserializeOwned> FromRequest<S> for ApiJson<T> {
    type Rejection = Response;

    async fn from_request(req: Request, state: &S) -> Result<Self, Self::Rejection> {
        match axum::Json::<T>::from_request(req, state).await {
            Ok(axum::Json(v)) => Ok(Self(v)),
            Err(rej) => Err(json_rejection(rej)),
        }
    }
}

fn json_rejection(rej: JsonRejection) -> Response {
    if rej.status() == StatusCode::PAYLOAD_TOO_LARGE {
        return error_response(StatusCode::PAYLOAD_TOO_LARGE, "payload-too-large", rej.body_text(), Value::Null);
    }
    let status = if rej.status() == StatusCode::UNSUPPORTED_MEDIA_TYPE {
        StatusCode::UNSUPPORTED_MEDIA_TYPE
    } else {
        StatusCode::BAD_REQUEST
    };
    error_response(status, "bad-json", format!("read the JSON body: {}", rej.body_text()), Value::Null)
}

/// `Query<T>` whose rejections are 400 with our error body.
pub struct ApiQuery<T>(pub T);

impl<S: Send + Sync, T: DeserializeOwned> FromRequestParts<S> for ApiQuery<T> {
    type Rejection = Response;

    async fn from_request_parts(parts: &mut Parts, state: &S) -> Result<Self, Self::Rejection> {
        match axum::extract::Query::<T>::from_request_parts(parts, state).await {
            Ok(axum::extract::Query(v)) => Ok(Self(v)),
            Err(rej) => Err(query_rejection(rej)),
        }
    }
}

fn query_rejection(rej: QueryRejection) -> Response {
    error_response(StatusCode::BAD_REQUEST, "bad-request", format!("read the query: {}", rej.body_text()), Value::Null)
}

/// `Path<T>` whose rejections (a segment that is not UTF-8 once decoded,
/// or does not parse) are 400 with our error body.
pub struct ApiPath<T>(pub T);

impl<S: Send + Sync, T: DeserializeOwned + Send> FromRequestParts<S> for ApiPath<T> {
    type Rejection = Response;

    async fn from_request_parts(parts: &mut Parts, state: &S) -> Result<Self, Self::Rejection> {
        match axum::extract::Path::<T>::from_request_parts(parts, state).await {
            Ok(axum::extract::Path(v)) => Ok(Self(v)),
            Err(rej) => Err(path_rejection(rej)),
        }
    }
}

fn path_rejection(rej: PathRejection) -> Response {
    let status =
        if rej.status().is_server_error() { StatusCode::INTERNAL_SERVER_ERROR } else { StatusCode::BAD_REQUEST };
    error_response(status, "bad-request", format!("read the path: {}", rej.body_text()), Value::Null)
}

/// A JSON answer.
pub fn ok<T: Serialize>(v: T) -> Response {
    axum::Json(v).into_response()
}

/// Parses a job id path segment.
pub fn job_id(text: &str) -> Result<kgym_core::JobId, ApiError> {
    text.parse().map_err(|e: kgym_core::Error| ApiError(Error::bad_request(e.to_string())))
}
