//! [`ComputeClient`]: the few calls of the Compute Engine REST API v1 that
//! a run needs (images, instances, serial port output, operations), typed
//! errors from Google's JSON error body.
//!
//! Every path is `{endpoint}/compute/v1/projects/{project}/...`, every
//! request carries `Authorization: Bearer <token>` from a
//! [`TokenProvider`]. Shapes follow the API reference
//! (<https://cloud.google.com/compute/docs/reference/rest/v1>): `int64`
//! fields such as the serial port's `start`/`next` are JSON strings there,
//! so both strings and numbers are read.

use std::fmt;
use std::sync::Arc;
use std::time::Duration;

use async_trait::async_trait;
use serde::de::{self, Deserializer};
use serde::{Deserialize, Serialize};
use serde_json::{Value, json};

use crate::error::{Error, Result};

/// The public Compute Engine endpoint.
pub const DEFAULT_ENDPOINT: &str = "https://compute.googleapis.com";

/// Gives the OAuth2 access token each request carries.
///
/// Called before every request, so an implementation that refreshes
/// tokens (the metadata server's, a service account's) stays correct over
/// long runs; [`StaticToken`] is for tests and short-lived tokens.
#[async_trait]
pub trait TokenProvider: Send + Sync + fmt::Debug + 'static {
    /// The bearer token (without the `Bearer ` prefix).
    async fn token(&self) -> Result<String>;
}

/// A fixed token.
#[derive(Clone)]
pub struct StaticToken(pub String);

impl fmt::Debug for StaticToken {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        // A token in a log is a credential leak.
        f.write_str("StaticToken(..)")
    }
}

#[async_trait]
impl TokenProvider for StaticToken {
    async fn token(&self) -> Result<String> {
        Ok(self.0.clone())
    }
}

/// Where an operation lives: images are global resources, instances zonal.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum OperationScope {
    /// `.../global/operations/{op}` (images).
    Global,
    /// `.../zones/{zone}/operations/{op}` (instances).
    Zone,
}

/// A Compute Engine long-running operation (the fields kgym reads).
#[derive(Debug, Clone, Default, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct Operation {
    /// The operation's name, used to poll it.
    pub name: String,
    /// `PENDING`, `RUNNING` or `DONE`.
    #[serde(default)]
    pub status: String,
    /// The resource it acts on.
    #[serde(default)]
    pub target_link: Option<String>,
    /// Set when the operation failed (only meaningful once `DONE`).
    #[serde(default)]
    pub error: Option<OperationErrors>,
}

/// An operation's `error` field.
#[derive(Debug, Clone, Default, Deserialize)]
pub struct OperationErrors {
    /// The errors.
    #[serde(default)]
    pub errors: Vec<OperationError>,
}

/// One error of an operation.
#[derive(Debug, Clone, Default, Deserialize)]
pub struct OperationError {
    /// The error type (`QUOTA_EXCEEDED`, `RESOURCE_NOT_FOUND`...).
    #[serde(default)]
    pub code: String,
    /// What happened.
    #[serde(default)]
    pub message: String,
}

/// One read of an instance's serial port (`instances.getSerialPortOutput`).
#[derive(Debug, Clone, Default, Deserialize)]
pub struct SerialPortOutput {
    /// The console text from `start` to `next`.
    #[serde(default)]
    pub contents: String,
    /// Where `contents` starts: more than asked when the instance's
    /// buffer no longer held the bytes asked for.
    #[serde(default, deserialize_with = "int64")]
    pub start: u64,
    /// The `start` of the next read.
    #[serde(default, deserialize_with = "int64")]
    pub next: u64,
}

/// An instance as `instances.get` describes it (the fields kgym reads).
#[derive(Debug, Clone, Default, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct Instance {
    /// `PROVISIONING`, `STAGING`, `RUNNING`, `STOPPING`, `TERMINATED`...
    #[serde(default)]
    pub status: String,
    /// Its network interfaces.
    #[serde(default)]
    pub network_interfaces: Vec<NetworkInterface>,
}

/// One network interface of an [`Instance`].
#[derive(Debug, Clone, Default, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct NetworkInterface {
    /// The address inside the VPC.
    #[serde(default, rename = "networkIP")]
    pub network_ip: Option<String>,
}

impl Instance {
    /// The address a worker inside the same VPC reaches it at (the first
    /// interface's internal IP, as syzkaller's `vm/gce` uses), once the
    /// instance runs.
    pub fn internal_ip(&self) -> Option<&str> {
        if self.status != "RUNNING" {
            return None;
        }
        self.network_interfaces.iter().find_map(|n| n.network_ip.as_deref()).filter(|ip| !ip.is_empty())
    }
}

/// An instance to create.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct InstanceSpec {
    /// The instance name (`[a-z]([-a-z0-9]*[a-z0-9])?`, at most 63).
    pub name: String,
    /// The machine type (`e2-standard-2`).
    pub machine_type: String,
    /// The boot disk's image in the client's project.
    pub image: String,
}

/// A client of the Compute Engine API for one project and zone.
#[derive(Debug, Clone)]
pub struct ComputeClient {
    http: reqwest::Client,
    endpoint: String,
    project: String,
    zone: String,
    token: Arc<dyn TokenProvider>,
    poll_interval: Duration,
    retry_backoff: Duration,
}

impl ComputeClient {
    /// A client of `project` in `zone` at [`DEFAULT_ENDPOINT`], polling
    /// operations every 2 seconds.
    pub fn new(project: impl Into<String>, zone: impl Into<String>, token: Arc<dyn TokenProvider>) -> Self {
        Self {
            http: reqwest::Client::new(),
            endpoint: DEFAULT_ENDPOINT.into(),
            project: project.into(),
            zone: zone.into(),
            token,
            poll_interval: Duration::from_secs(2),
            retry_backoff: Duration::from_secs(1),
        }
    }

    /// Uses another endpoint (a fake in tests, a private endpoint).
    pub fn with_endpoint(mut self, endpoint: impl Into<String>) -> Self {
        self.endpoint = endpoint.into().trim_end_matches('/').to_owned();
        self
    }

    /// Polls operations every `every`.
    pub fn with_poll_interval(mut self, every: Duration) -> Self {
        self.poll_interval = every;
        self
    }

    /// Waits `first`, then twice as long, between the retries of a read
    /// (`GET`) that failed for a passing reason (builder style).
    pub fn with_retry_backoff(mut self, first: Duration) -> Self {
        self.retry_backoff = first;
        self
    }

    /// The project.
    pub fn project(&self) -> &str {
        &self.project
    }

    /// The zone.
    pub fn zone(&self) -> &str {
        &self.zone
    }

    fn project_url(&self) -> String {
        format!("{}/compute/v1/projects/{}", self.endpoint, self.project)
    }

    fn zone_url(&self) -> String {
        format!("{}/zones/{}", self.project_url(), self.zone)
    }

    /// `images.insert` from a gzip'd tar holding `disk.raw` at
    /// `https://storage.googleapis.com/{bucket}/{object}`.
    pub async fn insert_image(&self, name: &str, source_url: &str) -> Result<Operation> {
        let body = json!({ "name": name, "rawDisk": { "source": source_url } });
        let url = format!("{}/global/images", self.project_url());
        self.send(&format!("images.insert {name}"), reqwest::Method::POST, &url, Some(body)).await
    }

    /// `images.delete`.
    pub async fn delete_image(&self, name: &str) -> Result<Operation> {
        let url = format!("{}/global/images/{name}", self.project_url());
        self.send(&format!("images.delete {name}"), reqwest::Method::DELETE, &url, None).await
    }

    /// `instances.insert`: one boot disk from `spec.image` (deleted with
    /// the instance), the default network, the serial port readable.
    pub async fn insert_instance(&self, spec: &InstanceSpec) -> Result<Operation> {
        let body = json!({
            "name": spec.name,
            "machineType": format!("zones/{}/machineTypes/{}", self.zone, spec.machine_type),
            "disks": [{
                "boot": true,
                "autoDelete": true,
                "type": "PERSISTENT",
                "initializeParams": {
                    "sourceImage": format!("projects/{}/global/images/{}", self.project, spec.image),
                },
            }],
            "networkInterfaces": [{ "network": "global/networks/default" }],
            "metadata": { "items": [{ "key": "serial-port-enable", "value": "true" }] },
        });
        let url = format!("{}/instances", self.zone_url());
        self.send(&format!("instances.insert {}", spec.name), reqwest::Method::POST, &url, Some(body)).await
    }

    /// `instances.delete`.
    pub async fn delete_instance(&self, name: &str) -> Result<Operation> {
        let url = format!("{}/instances/{name}", self.zone_url());
        self.send(&format!("instances.delete {name}"), reqwest::Method::DELETE, &url, None).await
    }

    /// `instances.get`.
    pub async fn get_instance(&self, name: &str) -> Result<Instance> {
        let url = format!("{}/instances/{name}", self.zone_url());
        self.send(&format!("instances.get {name}"), reqwest::Method::GET, &url, None).await
    }

    /// `instances.getSerialPortOutput` of port 1 from byte `start`.
    pub async fn serial_port_output(&self, name: &str, start: u64) -> Result<SerialPortOutput> {
        let url = format!("{}/instances/{name}/serialPort?port=1&start={start}", self.zone_url());
        self.send(&format!("instances.getSerialPortOutput {name}"), reqwest::Method::GET, &url, None).await
    }

    /// `globalOperations.get` or `zoneOperations.get`.
    pub async fn get_operation(&self, scope: OperationScope, name: &str) -> Result<Operation> {
        let url = match scope {
            OperationScope::Global => format!("{}/global/operations/{name}", self.project_url()),
            OperationScope::Zone => format!("{}/operations/{name}", self.zone_url()),
        };
        self.send(&format!("operations.get {name}"), reqwest::Method::GET, &url, None).await
    }

    /// Polls `op` until it is `DONE`; its `error.errors` are then an
    /// [`Error::GceOperation`] naming `call`.
    pub async fn wait(&self, scope: OperationScope, op: Operation, call: &str) -> Result<Operation> {
        let mut op = op;
        while op.status != "DONE" {
            tokio::time::sleep(self.poll_interval).await;
            op = self.get_operation(scope, &op.name).await?;
        }
        match &op.error {
            Some(errs) if !errs.errors.is_empty() => {
                let message = errs.errors.iter().map(|e| format!("{}: {}", e.code, e.message)).collect::<Vec<_>>();
                Err(Error::GceOperation {
                    call: call.to_owned(),
                    operation: op.name.clone(),
                    message: message.join("; "),
                })
            }
            _ => Ok(op),
        }
    }

    /// One call; reads (`GET`: serial output, operations) are retried
    /// [`READ_ATTEMPTS`] times in all on a passing failure (no answer, 5xx,
    /// 429), so a run of many minutes survives one bad answer. Inserts and
    /// deletes are not: a retried insert could create twice.
    async fn send<T: for<'de> Deserialize<'de>>(
        &self,
        call: &str,
        method: reqwest::Method,
        url: &str,
        body: Option<Value>,
    ) -> Result<T> {
        let attempts = if method == reqwest::Method::GET { READ_ATTEMPTS } else { 1 };
        let mut backoff = self.retry_backoff;
        let mut attempt = 1;
        loop {
            match self.send_once(call, method.clone(), url, body.clone()).await {
                Err(e) if attempt < attempts && is_passing(&e) => {
                    tracing::warn!(error = %e, attempt, "retrying a compute read");
                    tokio::time::sleep(backoff).await;
                    backoff *= 2;
                    attempt += 1;
                }
                result => return result,
            }
        }
    }

    async fn send_once<T: for<'de> Deserialize<'de>>(
        &self,
        call: &str,
        method: reqwest::Method,
        url: &str,
        body: Option<Value>,
    ) -> Result<T> {
        let transport = |reason: String| Error::GceTransport { call: call.to_owned(), reason };
        let token = self.token.token().await?;
        let mut req = self.http.request(method, url).bearer_auth(token);
        if let Some(body) = body {
            req = req.json(&body);
        }
        let resp = req.send().await.map_err(|e| transport(format!("send the request: {e}")))?;
        let status = resp.status().as_u16();
        let bytes = resp.bytes().await.map_err(|e| transport(format!("read the answer (HTTP {status}): {e}")))?;
        if !(200..300).contains(&status) {
            return Err(api_error(call, status, &bytes));
        }
        serde_json::from_slice(&bytes).map_err(|e| transport(format!("decode the answer: {e}")))
    }
}

/// How many times a read is tried before its error is the call's.
pub const READ_ATTEMPTS: u32 = 3;

/// A failure the next attempt may not have: no answer, a server error, a
/// rate limit.
fn is_passing(e: &Error) -> bool {
    match e {
        Error::GceTransport { .. } => true,
        Error::GceApi { status, .. } => *status >= 500,
        Error::GceQuota { status, .. } => *status == 429,
        _ => false,
    }
}

/// Google's JSON error body: `{"error": {"code", "message", "errors": [{"reason"}]}}`.
#[derive(Debug, Default, Deserialize, Serialize)]
struct ErrorBody {
    error: ErrorDetail,
}

#[derive(Debug, Default, Deserialize, Serialize)]
struct ErrorDetail {
    #[serde(default)]
    message: String,
    #[serde(default)]
    errors: Vec<ErrorReason>,
}

#[derive(Debug, Default, Deserialize, Serialize)]
struct ErrorReason {
    #[serde(default)]
    reason: String,
}

/// Types an HTTP error: 429 and 403 for quota or rate → quota, other 403
/// → permission, 404 → not found, the rest → API error.
pub(crate) fn api_error(call: &str, status: u16, body: &[u8]) -> Error {
    let (message, reasons) = match serde_json::from_slice::<ErrorBody>(body) {
        Ok(b) => (b.error.message, b.error.errors.into_iter().map(|e| e.reason).collect::<Vec<_>>()),
        // Not Google's JSON (a proxy's page): its start says enough.
        Err(_) => (String::from_utf8_lossy(&body[..body.len().min(300)]).into_owned(), Vec::new()),
    };
    let call = call.to_owned();
    let quota = reasons.iter().any(|r| r.contains("quotaExceeded") || r.contains("rateLimitExceeded"));
    match status {
        429 => Error::GceQuota { call, status, message },
        403 if quota => Error::GceQuota { call, status, message },
        403 => Error::GcePermission { call, message },
        404 => Error::GceNotFound { call, message },
        _ => Error::GceApi { call, status, message },
    }
}

/// An `int64` field: Google's JSON writes them as strings.
fn int64<'de, D: Deserializer<'de>>(d: D) -> std::result::Result<u64, D::Error> {
    match Value::deserialize(d)? {
        Value::String(s) => s.parse().map_err(de::Error::custom),
        Value::Number(n) => n.as_u64().ok_or_else(|| de::Error::custom(format!("not a byte offset: {n}"))),
        Value::Null => Ok(0),
        other => Err(de::Error::custom(format!("not an int64: {other}"))),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn body(reason: &str) -> Vec<u8> {
        serde_json::to_vec(&json!({"error": {"code": 403, "message": "nope", "errors": [{"reason": reason}]}})).unwrap()
    }

    #[test]
    fn http_errors_are_typed_from_googles_body() {
        assert!(matches!(api_error("c", 403, &body("quotaExceeded")), Error::GceQuota { status: 403, .. }));
        assert!(matches!(api_error("c", 403, &body("rateLimitExceeded")), Error::GceQuota { .. }));
        assert!(matches!(api_error("c", 429, b"too many"), Error::GceQuota { status: 429, .. }));
        assert!(matches!(api_error("c", 403, &body("forbidden")), Error::GcePermission { .. }));
        match api_error("instances.delete x", 404, &body("notFound")) {
            Error::GceNotFound { call, message } => {
                assert_eq!((call.as_str(), message.as_str()), ("instances.delete x", "nope"))
            }
            e => panic!("{e:?}"),
        }
        match api_error("c", 502, b"<html>bad gateway</html>") {
            Error::GceApi { status: 502, message, .. } => assert!(message.contains("bad gateway")),
            e => panic!("{e:?}"),
        }
    }

    #[test]
    fn serial_offsets_read_as_strings_or_numbers() {
        let s: SerialPortOutput = serde_json::from_str(r#"{"contents":"a","start":"10","next":"11"}"#).unwrap();
        assert_eq!((s.start, s.next), (10, 11));
        let s: SerialPortOutput = serde_json::from_str(r#"{"contents":"a","start":10,"next":11}"#).unwrap();
        assert_eq!((s.start, s.next), (10, 11));
    }
}
