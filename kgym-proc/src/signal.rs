//! Waiting for the signals that ask a program to stop.

/// A signal that asks the process to stop.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
#[non_exhaustive]
pub enum Termination {
    /// SIGINT (Ctrl-C).
    Interrupt,
    /// SIGTERM (`kill`, `timeout`, systemd).
    Terminate,
    /// SIGHUP (the terminal went away).
    Hangup,
}

impl Termination {
    /// The signal's name (`SIGTERM`).
    pub fn name(self) -> &'static str {
        match self {
            Self::Interrupt => "SIGINT",
            Self::Terminate => "SIGTERM",
            Self::Hangup => "SIGHUP",
        }
    }

    /// The exit code a shell reports for a process ended by this signal
    /// (128 + its number): a command that stops cleanly on a signal exits
    /// with it.
    pub fn exit_code(self) -> u8 {
        let signal = match self {
            Self::Interrupt => nix::sys::signal::Signal::SIGINT,
            Self::Terminate => nix::sys::signal::Signal::SIGTERM,
            Self::Hangup => nix::sys::signal::Signal::SIGHUP,
        };
        128 + signal as u8
    }
}

/// Waits until SIGINT, SIGTERM or SIGHUP arrives, and says which. The
/// handlers are installed on the first call: until then the signals keep
/// their default action (end the process), so call it early (e.g. spawn
/// it before starting work).
///
/// ```no_run
/// # async fn f() -> std::io::Result<()> {
/// let stop = kgym_proc::terminated().await?;
/// eprintln!("{}: stopping", stop.name());
/// # Ok(()) }
/// ```
pub async fn terminated() -> std::io::Result<Termination> {
    use tokio::signal::unix::{SignalKind, signal};
    let mut int = signal(SignalKind::interrupt())?;
    let mut term = signal(SignalKind::terminate())?;
    let mut hup = signal(SignalKind::hangup())?;
    Ok(tokio::select! {
        _ = int.recv() => Termination::Interrupt,
        _ = term.recv() => Termination::Terminate,
        _ = hup.recv() => Termination::Hangup,
    })
}

/// Fires `cancel` when SIGINT, SIGTERM or SIGHUP arrives; returns the
/// task, which ends with the signal. The handlers are installed before
/// this returns.
pub fn cancel_on_termination(
    cancel: tokio_util::sync::CancellationToken,
) -> std::io::Result<tokio::task::JoinHandle<Termination>> {
    use tokio::signal::unix::{SignalKind, signal};
    let mut int = signal(SignalKind::interrupt())?;
    let mut term = signal(SignalKind::terminate())?;
    let mut hup = signal(SignalKind::hangup())?;
    Ok(tokio::spawn(async move {
        let got = tokio::select! {
            _ = int.recv() => Termination::Interrupt,
            _ = term.recv() => Termination::Terminate,
            _ = hup.recv() => Termination::Hangup,
        };
        cancel.cancel();
        got
    }))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[tokio::test]
    async fn sighup_cancels() {
        let cancel = tokio_util::sync::CancellationToken::new();
        let task = cancel_on_termination(cancel.clone()).unwrap();
        nix::sys::signal::raise(nix::sys::signal::Signal::SIGHUP).unwrap();
        let got = tokio::time::timeout(std::time::Duration::from_secs(5), task).await.unwrap().unwrap();
        assert_eq!(got, Termination::Hangup);
        assert!(cancel.is_cancelled());
        assert_eq!(got.exit_code(), 129);
        assert_eq!(Termination::Terminate.exit_code(), 143);
    }
}
