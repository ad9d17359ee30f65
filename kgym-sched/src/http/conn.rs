//! What the two HTTP clients share: base URL, token, requests, and turning
//! error answers back into typed [`Error`]s.

use std::time::Duration;

use reqwest::{Method, RequestBuilder, StatusCode};
use serde::Serialize;
use serde::de::DeserializeOwned;
use serde_json::Value;

use crate::error::{Error, Problem, Result};

/// Default time limit of one request (long polls get their wait on top).
pub(crate) const REQUEST_TIMEOUT: Duration = Duration::from_secs(60);

#[derive(Debug, Clone)]
pub(crate) struct Conn {
    base: String,
    token: Option<String>,
    http: reqwest::Client,
}

impl Conn {
    pub fn new(base: &str, token: Option<String>) -> Result<Self> {
        let base = base.trim_end_matches('/').to_owned();
        if !(base.starts_with("http://") || base.starts_with("https://")) {
            return Err(Error::bad_request(format!("server URL {base:?} must start with http:// or https://")));
        }
        let http = reqwest::Client::builder()
            .connect_timeout(Duration::from_secs(10))
            .build()
            .map_err(|source| Error::Http { method: "build".into(), url: base.clone(), source })?;
        Ok(Self { base, token: token.filter(|t| !t.is_empty()), http })
    }

    pub fn base(&self) -> &str {
        &self.base
    }

    pub fn request(&self, method: Method, path: &str) -> (RequestBuilder, String) {
        let url = format!("{}{path}", self.base);
        let mut rb = self.http.request(method, &url);
        if let Some(t) = &self.token {
            rb = rb.bearer_auth(t);
        }
        (rb, url)
    }

    /// Sends and returns the successful response (error answers become
    /// typed errors).
    pub async fn send(
        &self,
        method: Method,
        path: &str,
        body: Option<&(impl Serialize + ?Sized)>,
        timeout: Option<Duration>,
    ) -> Result<reqwest::Response> {
        let (mut rb, url) = self.request(method.clone(), path);
        if let Some(b) = body {
            rb = rb.json(b);
        }
        if let Some(t) = timeout {
            rb = rb.timeout(t);
        }
        let resp =
            rb.send().await.map_err(|source| Error::Http { method: method.to_string(), url: url.clone(), source })?;
        if resp.status().is_success() {
            return Ok(resp);
        }
        Err(decode_error(method.as_str(), &url, resp).await)
    }

    /// Sends and decodes a JSON answer.
    pub async fn json<T: DeserializeOwned>(
        &self,
        method: Method,
        path: &str,
        body: Option<&(impl Serialize + ?Sized)>,
    ) -> Result<T> {
        let resp = self.send(method.clone(), path, body, Some(REQUEST_TIMEOUT)).await?;
        read_json(method.as_str(), resp).await
    }
}

pub(crate) async fn read_json<T: DeserializeOwned>(method: &str, resp: reqwest::Response) -> Result<T> {
    let url = resp.url().to_string();
    let bytes = resp.bytes().await.map_err(|source| Error::Http { method: method.into(), url: url.clone(), source })?;
    serde_json::from_slice(&bytes).map_err(|source| Error::Decode { method: method.into(), url, source })
}

/// Rebuilds the server's typed error from its answer.
async fn decode_error(method: &str, url: &str, resp: reqwest::Response) -> Error {
    let status = resp.status();
    let body: Value = resp.json().await.unwrap_or(Value::Null);
    let code = body.get("code").and_then(Value::as_str).unwrap_or("").to_owned();
    let field = |k: &str| body.get(k).cloned().unwrap_or(Value::Null);
    let typed = match (status, code.as_str()) {
        (StatusCode::NOT_FOUND, "not-found") => {
            serde_json::from_value(field("job")).ok().map(|id| Error::JobNotFound { id })
        }
        (StatusCode::BAD_REQUEST, "validation") => serde_json::from_value::<Vec<Problem>>(field("problems"))
            .ok()
            .map(|problems| Error::Validation { problems }),
        (StatusCode::BAD_REQUEST, "bad-request") => {
            field("reason").as_str().map(|m| Error::BadRequest { message: m.to_owned() })
        }
        (StatusCode::CONFLICT, "invalid-state") => (|| {
            Some(Error::InvalidState {
                id: serde_json::from_value(field("job")).ok()?,
                action: field("action").as_str()?.to_owned(),
                status: serde_json::from_value(field("status")).ok()?,
                reason: field("reason").as_str()?.to_owned(),
            })
        })(),
        (StatusCode::CONFLICT, "lease-lost") => (|| {
            Some(Error::LeaseLost {
                job: serde_json::from_value(field("job")).ok()?,
                stage: serde_json::from_value(field("stage")).ok()?,
            })
        })(),
        (StatusCode::SERVICE_UNAVAILABLE, "shutting-down") => Some(Error::ShuttingDown),
        (StatusCode::TOO_MANY_REQUESTS, "too-many-streams") => {
            field("limit").as_u64().map(|limit| Error::TooManyStreams { limit })
        }
        _ => None,
    };
    typed.unwrap_or_else(|| Error::Remote {
        method: method.to_owned(),
        url: url.to_owned(),
        status: status.as_u16(),
        code: if code.is_empty() { "unknown".into() } else { code },
        message: body
            .get("error")
            .or_else(|| body.get("detail"))
            .and_then(Value::as_str)
            .unwrap_or_else(|| status.canonical_reason().unwrap_or("error"))
            .to_owned(),
    })
}
