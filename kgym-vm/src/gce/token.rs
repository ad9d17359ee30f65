//! [`MetadataToken`]: the access token of the instance's service account,
//! from the GCE metadata server (what a kgym worker running on a GCE VM
//! uses; `deploy/gce.sh` gives its VMs a service account).

use std::fmt;
use std::time::{Duration, Instant};

use async_trait::async_trait;
use serde::Deserialize;

use super::client::{TokenProvider, api_error};
use crate::error::{Error, Result};

/// The metadata server's token endpoint for the default service account.
pub const METADATA_TOKEN_URL: &str =
    "http://metadata.google.internal/computeMetadata/v1/instance/service-accounts/default/token";

/// A token is fetched again this long before it expires, so a request
/// never leaves with one that dies on the way.
const REFRESH_MARGIN: Duration = Duration::from_secs(60);

/// Tokens from the metadata server, cached until shortly before they
/// expire.
pub struct MetadataToken {
    http: reqwest::Client,
    url: String,
    cached: tokio::sync::Mutex<Option<(String, Instant)>>,
}

impl fmt::Debug for MetadataToken {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        // Never the token itself.
        f.debug_struct("MetadataToken").field("url", &self.url).finish_non_exhaustive()
    }
}

impl Default for MetadataToken {
    fn default() -> Self {
        Self::new()
    }
}

impl MetadataToken {
    /// Tokens from [`METADATA_TOKEN_URL`].
    pub fn new() -> Self {
        Self { http: reqwest::Client::new(), url: METADATA_TOKEN_URL.into(), cached: tokio::sync::Mutex::new(None) }
    }

    /// Tokens from another URL (a fake in tests).
    pub fn with_url(mut self, url: impl Into<String>) -> Self {
        self.url = url.into();
        self
    }

    async fn fetch(&self) -> Result<(String, Instant)> {
        let call = "metadata token";
        let transport = |reason: String| Error::GceTransport { call: call.into(), reason };
        let resp = self
            .http
            .get(&self.url)
            .header("Metadata-Flavor", "Google")
            .send()
            .await
            .map_err(|e| transport(format!("ask {}: {e}", self.url)))?;
        let status = resp.status().as_u16();
        let bytes = resp.bytes().await.map_err(|e| transport(format!("read the answer (HTTP {status}): {e}")))?;
        if !(200..300).contains(&status) {
            return Err(api_error(call, status, &bytes));
        }
        let t: TokenAnswer =
            serde_json::from_slice(&bytes).map_err(|e| transport(format!("decode the answer: {e}")))?;
        Ok((t.access_token, Instant::now() + Duration::from_secs(t.expires_in)))
    }
}

/// The metadata server's answer.
#[derive(Deserialize)]
struct TokenAnswer {
    access_token: String,
    expires_in: u64,
}

#[async_trait]
impl TokenProvider for MetadataToken {
    async fn token(&self) -> Result<String> {
        let mut cached = self.cached.lock().await;
        if let Some((token, expires)) = cached.as_ref()
            && Instant::now() + REFRESH_MARGIN < *expires
        {
            return Ok(token.clone());
        }
        let (token, expires) = self.fetch().await?;
        *cached = Some((token.clone(), expires));
        Ok(token)
    }
}
