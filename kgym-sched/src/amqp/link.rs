//! [`Link`]: one AMQP connection that is opened again when it breaks.
//!
//! lapin's own recovery (`enable_auto_recover`) was tried first and left
//! its I/O thread spinning at 100% CPU after a broker restart, never
//! delivering again (kgym's previous AMQP attempt, 2026-12). So kgym keeps
//! the policy here: whoever needs a channel asks the link; a broken
//! connection is dropped and a new one opened, with backoff, until it
//! works or the link is closed. Each user then re-declares what it needs.

use std::sync::Arc;
use std::time::Duration;

use lapin::{Channel, Connection, ConnectionProperties};
use tokio::sync::Mutex;
use tokio_util::sync::CancellationToken;

use crate::error::{Error, Result};

/// First wait between attempts to reach the broker.
const FIRST_BACKOFF: Duration = Duration::from_millis(100);
/// Longest wait between attempts.
const MAX_BACKOFF: Duration = Duration::from_secs(5);

/// A connection to one broker, reopened on demand.
pub(crate) struct Link {
    uri: String,
    name: String,
    conn: Mutex<Option<Arc<Connection>>>,
    closed: CancellationToken,
}

impl std::fmt::Debug for Link {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Link").field("uri", &redact(&self.uri)).field("name", &self.name).finish_non_exhaustive()
    }
}

impl Link {
    /// Connects to `uri` (once: an unreachable broker at start is an error
    /// the caller sees, not a silent wait).
    pub(crate) async fn connect(uri: &str, name: &str) -> Result<Arc<Self>> {
        let link = Arc::new(Self {
            uri: uri.to_owned(),
            name: name.to_owned(),
            conn: Mutex::new(None),
            closed: CancellationToken::new(),
        });
        let conn = link.open().await?;
        *link.conn.lock().await = Some(conn);
        Ok(link)
    }

    async fn open(&self) -> Result<Arc<Connection>> {
        let props = ConnectionProperties::default().with_connection_name(self.name.clone().into());
        let conn = Connection::connect(&self.uri, props).await.map_err(|e| self.error("connect", &e))?;
        Ok(Arc::new(conn))
    }

    /// The broker's URI (with its password: redact before showing it).
    pub(crate) fn uri(&self) -> &str {
        &self.uri
    }

    pub(crate) fn error(&self, op: &'static str, e: &lapin::Error) -> Error {
        Error::Amqp { op, broker: redact(&self.uri), message: e.to_string() }
    }

    /// A new channel on a working connection: the current one, or a new
    /// one (with backoff) when it broke. Waits while the broker is away;
    /// fails only once the link is closed.
    pub(crate) async fn channel(&self) -> Result<Channel> {
        let mut backoff = FIRST_BACKOFF;
        loop {
            if self.closed.is_cancelled() {
                return Err(Error::Amqp { op: "open a channel", broker: redact(&self.uri), message: "closed".into() });
            }
            match self.try_channel().await {
                Ok(ch) => return Ok(ch),
                Err(e) => {
                    tracing::debug!(error = %e, ?backoff, "AMQP broker unreachable; trying again");
                    tokio::select! {
                        () = tokio::time::sleep(backoff) => {}
                        () = self.closed.cancelled() => {}
                    }
                    backoff = (backoff * 2).min(MAX_BACKOFF);
                }
            }
        }
    }

    async fn try_channel(&self) -> Result<Channel> {
        let mut conn = self.conn.lock().await;
        if let Some(c) = conn.as_ref().filter(|c| c.status().connected())
            && let Ok(ch) = c.create_channel().await
        {
            return Ok(ch);
        }
        // Broken (or never opened): a new connection.
        *conn = None;
        let fresh = self.open().await?;
        let ch = fresh.create_channel().await.map_err(|e| self.error("open a channel", &e))?;
        tracing::info!(name = %self.name, "connected to the AMQP broker");
        *conn = Some(fresh);
        Ok(ch)
    }

    /// Closes the connection; later [`channel`](Self::channel) calls fail.
    pub(crate) async fn close(&self) {
        self.closed.cancel();
        if let Some(c) = self.conn.lock().await.take() {
            let _ = c.close(200, "bye".into()).await;
        }
    }
}

/// `uri` without its password (for errors and logs).
pub fn redact(uri: &str) -> String {
    match (uri.find("://"), uri.rfind('@')) {
        (Some(scheme), Some(at)) if at > scheme => {
            let creds = &uri[scheme + 3..at];
            let user = creds.split(':').next().unwrap_or("");
            format!("{}{user}:***{}", &uri[..scheme + 3], &uri[at..])
        }
        _ => uri.to_owned(),
    }
}

#[cfg(test)]
mod tests {
    use super::redact;

    #[test]
    fn passwords_are_redacted() {
        assert_eq!(redact("amqp://kgym:s3cret@10.0.0.2:5672/%2f"), "amqp://kgym:***@10.0.0.2:5672/%2f");
        assert_eq!(redact("amqp://127.0.0.1:5672"), "amqp://127.0.0.1:5672");
    }
}
