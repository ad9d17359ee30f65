//! QEMU's QMP control socket, through the `qapi` crate: readiness, events,
//! status and a clean `quit`.
//!
//! kgym listens on the socket and QEMU connects to it while it starts
//! (`-qmp unix:PATH`, a client chardev), so [`QmpListener::accept`] returns
//! as soon as QEMU is ready: no polling for the socket file, no sleeps.
//! Events (`GUEST_PANICKED`, `SHUTDOWN`, `RESET`, `STOP`, ...) arrive on a
//! channel beside the console; [`Qmp::status`] tells a running guest from a
//! paused, panicked or failed one.
//!
//! QEMU offers out-of-band execution on a client socket, and then qapi
//! gives each command its own id. Without it (a `-qmp` server socket) qapi
//! files every command under id 0, and a command whose future was dropped
//! (a timeout) stays pending there: a second command would make qapi panic
//! ("duplicate command id"). [`Qmp`] refuses a command while an earlier one
//! is pending on such a connection, with an error instead.

use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicBool, Ordering};
use std::time::Duration;

use futures::StreamExt;
use qapi::futures::{QapiService, QmpStreamTokio};
use qapi::qmp::{Event, QMPCapability, RunState};
use tokio::io::WriteHalf;
use tokio::net::{UnixListener, UnixStream};
use tokio::sync::mpsc;

use crate::error::{Error, Result};

type Service = QapiService<QmpStreamTokio<WriteHalf<UnixStream>>>;

/// What QEMU reported about the VM, as far as a boot cares.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(crate) enum VmEvent {
    /// The guest reported a panic (pvpanic); `action` is what QEMU does
    /// next (`pause`, `poweroff`, `run`).
    GuestPanicked {
        /// QEMU's panic action.
        action: String,
    },
    /// QEMU is shutting the VM down (with `-no-reboot` a guest reset is one).
    Shutdown {
        /// QEMU's shutdown cause (`guest-reset`, `guest-panic`, `host-qmp-quit`...).
        reason: String,
    },
    /// The VM was reset (QEMU runs on with a fresh guest).
    Reset {
        /// QEMU's cause.
        reason: String,
    },
    /// The VM stopped running (paused, panicked, an internal error...).
    Stop,
    /// The VM runs again.
    Resume,
}

impl VmEvent {
    fn from_qapi(event: Event) -> Option<Self> {
        Some(match event {
            Event::GUEST_PANICKED { data, .. } => Self::GuestPanicked { action: name_of(&data.action) },
            Event::SHUTDOWN { data, .. } => Self::Shutdown { reason: name_of(&data.reason) },
            Event::RESET { data, .. } => Self::Reset { reason: name_of(&data.reason) },
            Event::STOP { .. } => Self::Stop,
            Event::RESUME { .. } => Self::Resume,
            _ => return None,
        })
    }

    /// A line for the console log.
    pub(crate) fn describe(&self) -> String {
        match self {
            Self::GuestPanicked { action } => format!("GUEST_PANICKED (action {action})"),
            Self::Shutdown { reason } => format!("SHUTDOWN ({reason})"),
            Self::Reset { reason } => format!("RESET ({reason})"),
            Self::Stop => "STOP".into(),
            Self::Resume => "RESUME".into(),
        }
    }
}

/// Whether the guest runs, as `query-status` says.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(crate) enum GuestState {
    /// The vCPUs run (a quiet console then means a hung or slow guest).
    Running,
    /// The guest panicked and QEMU holds it (`guest-panicked`).
    Panicked,
    /// QEMU is shutting it down (`shutdown`).
    Shutdown,
    /// Stopped for another reason: `paused`, `internal-error`, `io-error`...
    Stopped(String),
}

impl GuestState {
    fn from_run_state(state: RunState) -> Self {
        match state {
            RunState::running => Self::Running,
            RunState::guest_panicked => Self::Panicked,
            RunState::shutdown => Self::Shutdown,
            other => Self::Stopped(name_of(&other)),
        }
    }
}

/// QEMU's name of an enum value (its serde name).
fn name_of<T: serde::Serialize>(value: &T) -> String {
    serde_json::to_value(value).ok().and_then(|v| v.as_str().map(str::to_owned)).unwrap_or_else(|| "unknown".into())
}

/// The longest path a Unix socket can have: `sun_path` holds 108 bytes on
/// Linux, the terminating NUL included. QEMU, as the client, has the same
/// limit.
const SUN_PATH_MAX: usize = 107;

/// The socket QEMU connects to; bind it before starting QEMU.
#[derive(Debug)]
pub(crate) struct QmpListener {
    socket: PathBuf,
    listener: UnixListener,
    /// The short directory holding the socket when the run's own directory
    /// is too deep for one; removed with the listener or the connection.
    short_dir: Option<tempfile::TempDir>,
}

impl QmpListener {
    /// Listens on `socket` (which must not exist).
    pub(crate) fn bind(socket: &Path) -> Result<Self> {
        let listener = UnixListener::bind(socket).map_err(|source| Error::Qmp { socket: socket.to_owned(), source })?;
        Ok(Self { socket: socket.to_owned(), listener, short_dir: None })
    }

    /// Listens on `dir/qmp`; when that path is too long for a Unix socket
    /// (a data directory deep in a CI checkout), on a socket in a private
    /// short directory under `/tmp` instead, which lives as long as the
    /// listener or the connection it accepts.
    pub(crate) fn bind_in(dir: &Path) -> Result<Self> {
        let socket = dir.join("qmp");
        if socket.as_os_str().len() <= SUN_PATH_MAX {
            return Self::bind(&socket);
        }
        let short = tempfile::Builder::new()
            .prefix("kgym-qmp-")
            .tempdir_in("/tmp")
            .map_err(|source| Error::Qmp { socket: socket.clone(), source })?;
        let mut listener = Self::bind(&short.path().join("qmp"))?;
        tracing::debug!(deep = %socket.display(), socket = %listener.socket.display(), "qmp socket path too long; using a short one");
        listener.short_dir = Some(short);
        Ok(listener)
    }

    /// Where QEMU connects (`-qmp unix:PATH`).
    pub(crate) fn socket(&self) -> &Path {
        &self.socket
    }

    /// Waits up to `timeout` for QEMU to connect, negotiates capabilities,
    /// and returns the connection and its event channel.
    pub(crate) async fn accept(self, timeout: Duration) -> Result<(Qmp, mpsc::UnboundedReceiver<VmEvent>)> {
        let socket = self.socket.clone();
        let err = |source| Error::Qmp { socket: socket.clone(), source };
        let connect = async {
            let (stream, _) = self.listener.accept().await?;
            let negotiation = QmpStreamTokio::open(stream).await?;
            let oob = negotiation.capabilities.capabilities().any(|c| c == QMPCapability::oob);
            let stream = negotiation.negotiate().await?;
            std::io::Result::Ok((stream, oob))
        };
        let (stream, oob) = tokio::time::timeout(timeout, connect)
            .await
            .map_err(|_| {
                err(std::io::Error::new(std::io::ErrorKind::TimedOut, format!("no connection in {timeout:?}")))
            })?
            .map_err(err)?;
        let (service, events) = stream.into_parts();
        // From now on, dropping the service ends the event stream.
        let _ = events.release();
        let (tx, rx) = mpsc::unbounded_channel();
        let task = tokio::spawn(async move {
            let mut events = Box::pin(events);
            // Polling the stream also delivers the commands' responses, so
            // it runs until the connection ends, listened to or not.
            while let Some(event) = events.next().await {
                match event {
                    Ok(event) => {
                        if let Some(e) = VmEvent::from_qapi(event) {
                            let _ = tx.send(e);
                        }
                    }
                    Err(e) => {
                        tracing::debug!(error = %e, "qmp stream ended");
                        break;
                    }
                }
            }
        });
        let qmp = Qmp {
            socket: self.socket,
            service,
            task,
            ids: oob,
            busy: AtomicBool::new(false),
            _short_dir: self.short_dir,
        };
        Ok((qmp, rx))
    }
}

/// A negotiated QMP connection.
pub(crate) struct Qmp {
    socket: PathBuf,
    service: Service,
    task: tokio::task::JoinHandle<()>,
    /// Commands carry ids (QEMU offered `oob`): abandoned ones are harmless.
    ids: bool,
    /// A command is in flight, or was abandoned in flight (without ids).
    busy: AtomicBool,
    /// The short socket directory ([`QmpListener::bind_in`]), if any.
    _short_dir: Option<tempfile::TempDir>,
}

impl std::fmt::Debug for Qmp {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Qmp").field("socket", &self.socket).field("ids", &self.ids).finish_non_exhaustive()
    }
}

impl Drop for Qmp {
    fn drop(&mut self) {
        self.task.abort();
    }
}

impl Qmp {
    /// Whether the guest runs (`query-status`).
    pub(crate) async fn status(&self) -> Result<GuestState> {
        self.claim()?;
        let info = self.service.execute(qapi::qmp::query_status {}).await;
        self.release();
        let info = info.map_err(|e| self.err(e))?;
        Ok(GuestState::from_run_state(info.status))
    }

    /// Asks QEMU to exit now.
    pub(crate) async fn quit(&self) -> Result<()> {
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

    /// Starts a VM created with `-S`.
    #[cfg(test)]
    pub(crate) async fn cont(&self) -> Result<()> {
        self.claim()?;
        let res = self.service.execute(qapi::qmp::cont {}).await;
        self.release();
        res.map(|_| ()).map_err(|e| self.err(e))
    }

    /// Pauses the VM.
    #[cfg(test)]
    pub(crate) async fn stop(&self) -> Result<()> {
        self.claim()?;
        let res = self.service.execute(qapi::qmp::stop {}).await;
        self.release();
        res.map(|_| ()).map_err(|e| self.err(e))
    }

    /// Resets the VM.
    #[cfg(test)]
    pub(crate) async fn system_reset(&self) -> Result<()> {
        self.claim()?;
        let res = self.service.execute(qapi::qmp::system_reset {}).await;
        self.release();
        res.map(|_| ()).map_err(|e| self.err(e))
    }

    /// Marks a command in flight; on a connection without command ids, an
    /// error when one is already (or was abandoned) in flight. Released
    /// only when the command completes, so a dropped command future keeps
    /// such a connection claimed for good.
    fn claim(&self) -> Result<()> {
        if self.busy.swap(true, Ordering::AcqRel) && !self.ids {
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
mod tests;
