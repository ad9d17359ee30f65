//! QEMU's QMP control socket, through the `qapi` crate: status queries and
//! a clean `quit`.

use std::path::{Path, PathBuf};
use std::time::{Duration, Instant};

use qapi::futures::{QapiService, QmpStreamTokio};
use tokio::io::WriteHalf;
use tokio::net::UnixStream;

use crate::error::{Error, Result};

type Service = QapiService<QmpStreamTokio<WriteHalf<UnixStream>>>;

/// A negotiated QMP connection.
pub struct Qmp {
    socket: PathBuf,
    service: Service,
    events: tokio::task::JoinHandle<()>,
}

impl std::fmt::Debug for Qmp {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Qmp").field("socket", &self.socket).finish_non_exhaustive()
    }
}

impl Drop for Qmp {
    fn drop(&mut self) {
        self.events.abort();
    }
}

impl Qmp {
    /// Connects to `socket`, retrying until QEMU has created it or `timeout`
    /// passes, and negotiates capabilities.
    pub async fn connect(socket: &Path, timeout: Duration) -> Result<Self> {
        let deadline = Instant::now() + timeout;
        let err = |source| Error::Qmp { socket: socket.to_owned(), source };
        loop {
            match QmpStreamTokio::open_uds(socket).await {
                Ok(negotiation) => {
                    let stream = negotiation.negotiate().await.map_err(err)?;
                    let (service, events) = stream.spawn_tokio();
                    return Ok(Self { socket: socket.to_owned(), service, events });
                }
                Err(e) if Instant::now() < deadline => {
                    tracing::trace!(error = %e, "qmp socket not ready");
                    tokio::time::sleep(Duration::from_millis(20)).await;
                }
                Err(e) => return Err(err(e)),
            }
        }
    }

    /// QEMU's run state (`running`, `paused`, `shutdown`, ...).
    pub async fn status(&self) -> Result<String> {
        let info = self.service.execute(qapi::qmp::query_status {}).await.map_err(|e| self.err(e))?;
        let text = serde_json::to_value(info.status).ok().and_then(|v| v.as_str().map(str::to_owned));
        Ok(text.unwrap_or_else(|| "unknown".into()))
    }

    /// Asks QEMU to exit now.
    pub async fn quit(&self) -> Result<()> {
        match self.service.execute(qapi::qmp::quit {}).await {
            Ok(_) => Ok(()),
            // QEMU may close the socket before answering.
            Err(qapi::ExecuteError::Io(e)) if e.kind() == std::io::ErrorKind::UnexpectedEof => Ok(()),
            Err(e) => Err(self.err(e)),
        }
    }

    fn err(&self, e: qapi::ExecuteError) -> Error {
        Error::Qmp { socket: self.socket.clone(), source: e.into() }
    }
}
