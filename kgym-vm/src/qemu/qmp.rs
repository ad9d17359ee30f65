//! QEMU's QMP control socket, through the `qapi` crate: status queries and
//! a clean `quit`.
//!
//! One command at a time, and none after one was abandoned: when QEMU does
//! not offer out-of-band execution (`-qmp` sockets do not), qapi files every
//! command under id 0, and a command whose future was dropped (a timeout)
//! stays pending there; a second command would make qapi panic ("duplicate
//! command id"), which aborts the process. [`Qmp`] returns an error instead.

use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicBool, Ordering};
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
    /// A command is in flight, or was abandoned in flight.
    busy: AtomicBool,
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
                    return Ok(Self { socket: socket.to_owned(), service, events, busy: AtomicBool::new(false) });
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
        self.claim()?;
        let info = self.service.execute(qapi::qmp::query_status {}).await;
        self.release();
        let info = info.map_err(|e| self.err(e))?;
        let text = serde_json::to_value(info.status).ok().and_then(|v| v.as_str().map(str::to_owned));
        Ok(text.unwrap_or_else(|| "unknown".into()))
    }

    /// Asks QEMU to exit now.
    pub async fn quit(&self) -> Result<()> {
        self.claim()?;
        let res = self.service.execute(qapi::qmp::quit {}).await;
        self.release();
        match res {
            Ok(_) => Ok(()),
            // QEMU may close the socket before answering.
            Err(qapi::ExecuteError::Io(e)) if e.kind() == std::io::ErrorKind::UnexpectedEof => Ok(()),
            Err(e) => Err(self.err(e)),
        }
    }

    /// Marks a command in flight; an error when one is already (or was
    /// abandoned) in flight. Released only when the command completes, so
    /// a dropped command future keeps the connection claimed for good.
    fn claim(&self) -> Result<()> {
        if self.busy.swap(true, Ordering::AcqRel) {
            return Err(Error::Qmp {
                socket: self.socket.clone(),
                source: std::io::Error::other("an earlier command is still pending (abandoned or concurrent)"),
            });
        }
        Ok(())
    }

    fn release(&self) {
        self.busy.store(false, Ordering::Release);
    }

    fn err(&self, e: qapi::ExecuteError) -> Error {
        Error::Qmp { socket: self.socket.clone(), source: e.into() }
    }
}

#[cfg(test)]
mod tests {
    use tokio::io::{AsyncBufReadExt, AsyncWriteExt, BufReader};
    use tokio::net::UnixListener;

    use super::*;

    /// A QMP server like QEMU's `-qmp` socket (no `oob` capability) that
    /// answers the capabilities negotiation, answers `query-status` only
    /// when `answer_status`, and `quit`; returns the commands it received.
    fn fake_qemu(socket: &Path, answer_status: bool) -> tokio::task::JoinHandle<Vec<String>> {
        let listener = UnixListener::bind(socket).unwrap();
        tokio::spawn(async move {
            let (stream, _) = listener.accept().await.unwrap();
            let (read, mut write) = tokio::io::split(stream);
            let greeting = r#"{"QMP": {"version": {"qemu": {"micro": 0, "minor": 2, "major": 7}, "package": ""}, "capabilities": []}}"#;
            write.write_all(format!("{greeting}\r\n").as_bytes()).await.unwrap();
            let mut lines = BufReader::new(read).lines();
            let mut seen = Vec::new();
            while let Ok(Ok(Some(line))) = tokio::time::timeout(Duration::from_secs(2), lines.next_line()).await {
                let cmd: serde_json::Value = serde_json::from_str(&line).unwrap();
                let name = cmd["execute"].as_str().unwrap_or_default().to_owned();
                let reply = match name.as_str() {
                    "qmp_capabilities" | "quit" => Some(r#"{"return": {}}"#),
                    "query-status" if answer_status => Some(r#"{"return": {"status": "running", "running": true}}"#),
                    _ => None,
                };
                seen.push(name);
                if let Some(r) = reply {
                    write.write_all(format!("{r}\r\n").as_bytes()).await.unwrap();
                }
            }
            seen
        })
    }

    #[tokio::test]
    async fn status_then_quit() {
        let dir = tempfile::tempdir().unwrap();
        let socket = dir.path().join("qmp");
        let server = fake_qemu(&socket, true);
        let q = Qmp::connect(&socket, Duration::from_secs(5)).await.unwrap();
        assert_eq!(q.status().await.unwrap(), "running");
        q.quit().await.unwrap();
        drop(q);
        assert_eq!(server.await.unwrap(), ["qmp_capabilities", "query-status", "quit"]);
    }

    #[tokio::test]
    async fn a_command_after_an_abandoned_one_is_an_error_not_a_panic() {
        let dir = tempfile::tempdir().unwrap();
        let socket = dir.path().join("qmp");
        let server = fake_qemu(&socket, false);
        let q = Qmp::connect(&socket, Duration::from_secs(5)).await.unwrap();
        assert!(tokio::time::timeout(Duration::from_millis(200), q.status()).await.is_err(), "no answer expected");
        // qapi itself would panic here ("duplicate command id 0").
        let err = q.quit().await.unwrap_err();
        assert!(matches!(&err, Error::Qmp { .. }), "{err:?}");
        assert!(kgym_core::failure::error_chain(&err).contains("still pending"), "{err}");
        drop(q);
        assert_eq!(server.await.unwrap(), ["qmp_capabilities", "query-status"]);
    }
}
