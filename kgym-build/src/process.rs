//! Running subprocesses the way a build needs: in their own process group,
//! output captured line by line (and streamed to the build log), bounded by
//! a deadline and a cancellation token, and the whole group killed when the
//! run is aborted or its future dropped.

use std::path::PathBuf;
use std::process::{ExitStatus, Stdio};
use std::time::Duration;

use nix::sys::signal::{Signal, killpg};
use nix::unistd::Pid;
use std::time::Instant;
use tokio::io::{AsyncBufReadExt, AsyncRead, AsyncWriteExt, BufReader};
use tokio::process::Command;
use tokio::sync::mpsc;
use tokio_util::sync::CancellationToken;

use crate::error::{Error, Result};
use crate::log::BuildLog;

/// How long a group gets between SIGTERM and SIGKILL: long enough for make
/// to delete half-written targets (so a warm tree stays consistent).
const TERM_GRACE: Duration = Duration::from_secs(5);

/// How long to keep reading output after the main process exited.
const DRAIN_GRACE: Duration = Duration::from_secs(5);

/// Finds `name` on `PATH`.
pub fn find_tool(name: &str) -> Option<PathBuf> {
    find_tool_in(name, &std::env::var_os("PATH")?)
}

/// Finds `name` in `path`, a `PATH`-style list of directories.
pub(crate) fn find_tool_in(name: &str, path: &std::ffi::OsStr) -> Option<PathBuf> {
    std::env::split_paths(path).map(|d| d.join(name)).find(|p| p.is_file())
}

/// Finds `name` on `PATH` or fails with [`Error::MissingTool`].
pub fn require_tool(name: &str) -> Result<PathBuf> {
    find_tool(name).ok_or_else(|| Error::MissingTool { tool: name.to_owned() })
}

/// When a build must stop: its deadline and its cancellation token.
#[derive(Debug, Clone)]
pub(crate) struct Limits {
    /// Kill the work at this instant.
    pub deadline: Option<Instant>,
    /// The whole build's time limit (for the error message).
    pub limit: Duration,
    /// Kill the work when this fires.
    pub cancel: CancellationToken,
}

impl Limits {
    /// Limits starting now: `limit` from now, stopped by `cancel`.
    pub fn new(limit: Duration, cancel: CancellationToken) -> Self {
        Self { deadline: Instant::now().checked_add(limit), limit, cancel }
    }

    /// An error if the work must stop (call between steps).
    pub fn check(&self, phase: &str) -> Result<()> {
        if self.cancel.is_cancelled() {
            Err(Error::Cancelled { phase: phase.to_owned() })
        } else if self.deadline.is_some_and(|d| Instant::now() >= d) {
            Err(Error::Timeout { phase: phase.to_owned(), limit: self.limit })
        } else {
            Ok(())
        }
    }
}

/// What a finished subprocess left behind.
#[derive(Debug)]
pub(crate) struct Finished {
    /// The exit status.
    pub status: ExitStatus,
    /// Every output line (stdout and stderr interleaved as they arrived).
    pub lines: Vec<String>,
}

impl Finished {
    /// The output as one text.
    pub fn text(&self) -> String {
        self.lines.join("\n")
    }

    /// The last `n` lines.
    pub fn tail(&self, n: usize) -> String {
        let start = self.lines.len().saturating_sub(n);
        self.lines[start..].join("\n")
    }
}

/// Kills a process group on drop unless disarmed: a dropped build future
/// must not leave `make` and its compilers running. Disarmed once the
/// group leader is reaped: its id may then be reused.
struct GroupGuard {
    pgid: Option<Pid>,
}

impl GroupGuard {
    fn signal(&self, sig: Signal) {
        if let Some(pgid) = self.pgid {
            // ESRCH (group already gone) is the expected case after exit.
            let _ = killpg(pgid, sig);
        }
    }

    fn disarm(&mut self) {
        self.pgid = None;
    }
}

impl Drop for GroupGuard {
    fn drop(&mut self) {
        self.signal(Signal::SIGKILL);
    }
}

enum Abort {
    Timeout,
    Cancelled,
}

/// Runs `cmd` to completion (any exit status is returned, not an error) and
/// feeds each output line to `log`. `phase` names the run in errors.
/// Timeout and cancellation kill the whole process group (SIGTERM, then
/// SIGKILL after a grace period) and return [`Error::Timeout`] /
/// [`Error::Cancelled`].
pub(crate) async fn run(
    mut cmd: Command,
    phase: &str,
    stdin: Option<Vec<u8>>,
    limits: &Limits,
    log: Option<&BuildLog>,
) -> Result<Finished> {
    let program = cmd.as_std().get_program().to_string_lossy().into_owned();
    limits.check(phase)?;
    cmd.process_group(0)
        .stdin(if stdin.is_some() { Stdio::piped() } else { Stdio::null() })
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .kill_on_drop(true);
    let mut child = cmd.spawn().map_err(|e| match e.kind() {
        std::io::ErrorKind::NotFound => Error::MissingTool { tool: program.clone() },
        _ => Error::io(&program, e),
    })?;
    let mut guard = GroupGuard { pgid: child.id().map(|id| Pid::from_raw(id as i32)) };

    if let (Some(data), Some(mut pipe)) = (stdin, child.stdin.take()) {
        tokio::spawn(async move {
            // A process that exits without reading its input is fine.
            let _ = pipe.write_all(&data).await;
            let _ = pipe.shutdown().await;
        });
    }
    let (tx, mut rx) = mpsc::unbounded_channel::<String>();
    if let Some(out) = child.stdout.take() {
        tokio::spawn(forward_lines(out, tx.clone()));
    }
    if let Some(err) = child.stderr.take() {
        tokio::spawn(forward_lines(err, tx.clone()));
    }
    drop(tx);

    let mut lines = Vec::new();
    let keep = |line: String, lines: &mut Vec<String>| {
        if let Some(log) = log {
            log.line(&line);
        }
        lines.push(line);
    };
    let deadline = limits.deadline;
    let sleep_until_deadline = async move {
        match deadline {
            Some(d) => tokio::time::sleep_until(tokio::time::Instant::from_std(d)).await,
            None => std::future::pending().await,
        }
    };
    tokio::pin!(sleep_until_deadline);
    let mut output_open = true;
    let outcome: std::result::Result<ExitStatus, Abort> = loop {
        tokio::select! {
            line = rx.recv(), if output_open => match line {
                Some(l) => keep(l, &mut lines),
                None => output_open = false,
            },
            status = child.wait() => break status.map_err(|e| Error::io(&program, e)).map(Ok)?,
            () = &mut sleep_until_deadline => break Err(Abort::Timeout),
            () = limits.cancel.cancelled() => break Err(Abort::Cancelled),
        }
    };
    match outcome {
        Ok(status) => {
            // The leader is reaped; the rest of the group (if anything) is
            // left to finish: make waits for its children.
            guard.disarm();
            // The main process is gone; its output may still be in flight.
            let _ = tokio::time::timeout(DRAIN_GRACE, async {
                while let Some(l) = rx.recv().await {
                    keep(l, &mut lines);
                }
            })
            .await;
            Ok(Finished { status, lines })
        }
        Err(abort) => {
            tracing::info!(%program, phase, "stopping process group");
            guard.signal(Signal::SIGTERM);
            if tokio::time::timeout(TERM_GRACE, child.wait()).await.is_err() {
                guard.signal(Signal::SIGKILL);
            }
            // Stragglers that ignored SIGTERM, or outlived their parent.
            guard.signal(Signal::SIGKILL);
            let _ = child.wait().await;
            guard.disarm();
            while let Ok(l) = rx.try_recv() {
                keep(l, &mut lines);
            }
            match abort {
                Abort::Timeout => Err(Error::Timeout { phase: phase.to_owned(), limit: limits.limit }),
                Abort::Cancelled => Err(Error::Cancelled { phase: phase.to_owned() }),
            }
        }
    }
}

async fn forward_lines(pipe: impl AsyncRead + Unpin, tx: mpsc::UnboundedSender<String>) {
    let mut reader = BufReader::new(pipe);
    let mut buf = Vec::new();
    loop {
        buf.clear();
        match reader.read_until(b'\n', &mut buf).await {
            Ok(0) | Err(_) => break,
            Ok(_) => {
                while buf.last().is_some_and(|b| *b == b'\n' || *b == b'\r') {
                    buf.pop();
                }
                if tx.send(String::from_utf8_lossy(&buf).into_owned()).is_err() {
                    break;
                }
            }
        }
    }
}

/// Describes an exit status for messages (`exit status: 2`, `signal: 9`).
pub(crate) fn describe(status: &ExitStatus) -> String {
    status.to_string()
}

#[cfg(test)]
mod tests {
    use super::*;

    fn limits(token: &CancellationToken, secs: u64) -> Limits {
        Limits::new(Duration::from_secs(secs), token.clone())
    }

    fn pid_alive(pid: i32) -> bool {
        std::path::Path::new(&format!("/proc/{pid}")).exists()
            && std::fs::read_to_string(format!("/proc/{pid}/stat")).map(|s| !s.contains(") Z ")).unwrap_or(false)
    }

    #[tokio::test]
    async fn captures_both_streams_and_stdin() {
        let token = CancellationToken::new();
        let mut cmd = Command::new("sh");
        cmd.arg("-c").arg("cat; echo out; echo err >&2; exit 3");
        let f = run(cmd, "sh", Some(b"from stdin\n".to_vec()), &limits(&token, 30), None).await.unwrap();
        assert_eq!(f.status.code(), Some(3));
        assert!(f.lines.contains(&"from stdin".to_owned()), "{:?}", f.lines);
        assert!(f.lines.contains(&"out".to_owned()));
        assert!(f.lines.contains(&"err".to_owned()));
        assert_eq!(f.tail(1).lines().count(), 1);
    }

    #[tokio::test]
    async fn missing_program_is_a_missing_tool() {
        let token = CancellationToken::new();
        let cmd = Command::new("kgym-no-such-program");
        let err = run(cmd, "x", None, &limits(&token, 5), None).await.unwrap_err();
        assert!(matches!(err, Error::MissingTool { ref tool } if tool == "kgym-no-such-program"), "{err}");
    }

    /// A grandchild (`sleep` started by `sh`) must die with the group.
    async fn assert_group_killed(token: CancellationToken, secs: u64, expect_timeout: bool) {
        let dir = tempfile::tempdir().unwrap();
        let pidfile = dir.path().join("pid");
        let mut cmd = Command::new("sh");
        cmd.arg("-c").arg(format!("sleep 300 & echo $! > {}; wait", pidfile.display()));
        let canceller = token.clone();
        tokio::spawn(async move {
            tokio::time::sleep(Duration::from_millis(500)).await;
            if !expect_timeout {
                canceller.cancel();
            }
        });
        let started = std::time::Instant::now();
        let err = run(cmd, "sleeping", None, &limits(&token, secs), None).await.unwrap_err();
        assert!(started.elapsed() < Duration::from_secs(20), "took {:?}", started.elapsed());
        if expect_timeout {
            assert!(matches!(err, Error::Timeout { .. }), "{err}");
        } else {
            assert!(matches!(err, Error::Cancelled { .. }), "{err}");
        }
        let pid: i32 = std::fs::read_to_string(&pidfile).unwrap().trim().parse().unwrap();
        // The kernel reaps the orphan asynchronously; give it a moment.
        for _ in 0..50 {
            if !pid_alive(pid) {
                return;
            }
            tokio::time::sleep(Duration::from_millis(100)).await;
        }
        panic!("grandchild {pid} survived");
    }

    #[tokio::test]
    async fn cancel_kills_the_whole_group() {
        assert_group_killed(CancellationToken::new(), 60, false).await;
    }

    #[tokio::test]
    async fn timeout_kills_the_whole_group() {
        assert_group_killed(CancellationToken::new(), 2, true).await;
    }
}
