//! Running a command to completion, bounded by a deadline and a
//! cancellation token: [`run_lines`] (output as interleaved lines, streamed
//! to a callback — a build log) and [`output`] (stdout and stderr apart, as
//! `wait_with_output` gives them).

use std::process::{ExitStatus, Output, Stdio};
use std::time::{Duration, Instant};

use nix::sys::signal::Signal;
use tokio::io::{AsyncBufReadExt, AsyncRead, AsyncReadExt, AsyncWriteExt, BufReader};
use tokio::process::{Child, Command};
use tokio::sync::mpsc;
use tokio_util::sync::CancellationToken;

use crate::error::{Error, Result};
use crate::group::GroupRecord;
use crate::guard::GroupGuard;
use crate::spawn::{program_of, spawn};

/// How long a group gets between SIGTERM and SIGKILL by default: long
/// enough for make to delete half-written targets.
pub const TERM_GRACE: Duration = Duration::from_secs(5);

/// How long output is still read after the main process exited.
const DRAIN_GRACE: Duration = Duration::from_secs(5);

/// When work must stop: a deadline and a cancellation token.
#[derive(Debug, Clone)]
pub struct Limits {
    /// Stop at this instant (`None`: no deadline).
    pub deadline: Option<Instant>,
    /// The whole time limit, for messages.
    pub limit: Duration,
    /// Stop when this fires.
    pub cancel: CancellationToken,
}

impl Limits {
    /// Limits starting now: `limit` from now, or `cancel`.
    pub fn new(limit: Duration, cancel: CancellationToken) -> Self {
        Self { deadline: Instant::now().checked_add(limit), limit, cancel }
    }

    /// An error if the work must stop now (call between steps); `what`
    /// names the work in it.
    pub fn check(&self, what: &str) -> Result<()> {
        if self.cancel.is_cancelled() {
            Err(Error::Cancelled { what: what.to_owned() })
        } else if self.deadline.is_some_and(|d| Instant::now() >= d) {
            Err(Error::Timeout { what: what.to_owned(), limit: self.limit })
        } else {
            Ok(())
        }
    }

    async fn expired(&self) -> Stop {
        let deadline = async {
            match self.deadline {
                Some(d) => tokio::time::sleep_until(tokio::time::Instant::from_std(d)).await,
                None => std::future::pending().await,
            }
        };
        tokio::select! {
            () = deadline => Stop::Timeout,
            () = self.cancel.cancelled() => Stop::Cancelled,
        }
    }

    fn error(&self, stop: Stop, what: &str) -> Error {
        match stop {
            Stop::Timeout => Error::Timeout { what: what.to_owned(), limit: self.limit },
            Stop::Cancelled => Error::Cancelled { what: what.to_owned() },
        }
    }
}

#[derive(Debug, Clone, Copy)]
enum Stop {
    Timeout,
    Cancelled,
}

/// What a command run by [`run_lines`] left behind.
#[derive(Debug)]
pub struct Finished {
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

/// Told the process group of a command once it runs (see
/// [`RunOptions::on_spawn`]).
pub type OnSpawn<'a> = Box<dyn FnOnce(&GroupRecord) + Send + 'a>;

/// Options of [`run_lines`].
#[derive(Default)]
pub struct RunOptions<'a> {
    /// Bytes written to the command's stdin (then closed).
    pub stdin: Option<Vec<u8>>,
    /// Receives each output line as it arrives.
    pub on_line: Option<&'a (dyn Fn(&str) + Sync)>,
    /// Called once the command runs, with its process group (e.g. to record
    /// it, so a later owner can stop it: [`GroupRecord::stop`]).
    pub on_spawn: Option<OnSpawn<'a>>,
    /// Time between SIGTERM and SIGKILL when stopping (default
    /// [`TERM_GRACE`]).
    pub term_grace: Option<Duration>,
}

impl std::fmt::Debug for RunOptions<'_> {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("RunOptions").field("term_grace", &self.term_grace).finish_non_exhaustive()
    }
}

/// Runs `cmd` (from [`command`](crate::command) or
/// [`tree_command`](crate::tree_command)) to completion and returns its
/// exit status (any status, not an error) and output lines. `what` names
/// the work in [`Error::Timeout`] / [`Error::Cancelled`]. When `limits`
/// stop the work, the whole process group gets SIGTERM, then SIGKILL after
/// the grace period; a dropped future kills the group at once.
pub async fn run_lines(mut cmd: Command, what: &str, limits: &Limits, opts: RunOptions<'_>) -> Result<Finished> {
    let program = program_of(&cmd);
    limits.check(what)?;
    cmd.stdin(if opts.stdin.is_some() { Stdio::piped() } else { Stdio::null() })
        .stdout(Stdio::piped())
        .stderr(Stdio::piped());
    let mut child = spawn(&mut cmd, &program)?;
    let mut guard = GroupGuard::new(&child);
    if let (Some(pgid), Some(on_spawn)) = (guard.pgid(), opts.on_spawn) {
        on_spawn(&GroupRecord::of(pgid));
    }
    if let (Some(data), Some(mut pipe)) = (opts.stdin, child.stdin.take()) {
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
        if let Some(f) = opts.on_line {
            f(&line);
        }
        lines.push(line);
    };
    let mut output_open = true;
    let outcome: std::result::Result<ExitStatus, Stop> = {
        let expired = limits.expired();
        tokio::pin!(expired);
        loop {
            tokio::select! {
                line = rx.recv(), if output_open => match line {
                    Some(l) => keep(l, &mut lines),
                    None => output_open = false,
                },
                status = child.wait() => break Ok(status.map_err(|source| Error::Wait { program: program.clone(), source })?),
                stop = &mut expired => break Err(stop),
            }
        }
    };
    match outcome {
        Ok(status) => {
            // Whatever the leader left running in its group goes too.
            guard.kill();
            // The main process is gone; its output may still be in flight.
            let _ = tokio::time::timeout(DRAIN_GRACE, async {
                while let Some(l) = rx.recv().await {
                    keep(l, &mut lines);
                }
            })
            .await;
            Ok(Finished { status, lines })
        }
        Err(stop) => {
            tracing::info!(%program, what, "stopping process group");
            stop_group(&mut child, &mut guard, opts.term_grace.unwrap_or(TERM_GRACE)).await;
            while let Ok(l) = rx.try_recv() {
                keep(l, &mut lines);
            }
            Err(limits.error(stop, what))
        }
    }
}

/// SIGTERM to the group, SIGKILL after `grace`, the leader reaped.
async fn stop_group(child: &mut Child, guard: &mut GroupGuard, grace: Duration) {
    guard.signal(Signal::SIGTERM);
    let _ = tokio::time::timeout(grace, child.wait()).await;
    // Stragglers that ignored SIGTERM, or outlived their parent.
    guard.kill();
    let _ = child.wait().await;
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

/// Runs `cmd` to completion with stdout and stderr captured apart (any
/// exit status is returned). After `timeout` or when `cancel` fires, the
/// whole process group is killed and the result is [`Error::Timeout`] /
/// [`Error::Cancelled`] naming `program`.
pub async fn output(mut cmd: Command, program: &str, timeout: Duration, cancel: &CancellationToken) -> Result<Output> {
    let limits = Limits::new(timeout, cancel.clone());
    limits.check(program)?;
    cmd.stdout(Stdio::piped()).stderr(Stdio::piped());
    let mut child = spawn(&mut cmd, program)?;
    let mut guard = GroupGuard::new(&child);
    let (mut stdout, mut stderr) = (child.stdout.take(), child.stderr.take());
    let collect = async {
        let (mut out, mut err) = (Vec::new(), Vec::new());
        let read_out = async {
            if let Some(s) = stdout.as_mut() {
                let _ = s.read_to_end(&mut out).await;
            }
        };
        let read_err = async {
            if let Some(s) = stderr.as_mut() {
                let _ = s.read_to_end(&mut err).await;
            }
        };
        let ((), (), status) = tokio::join!(read_out, read_err, child.wait());
        (status, out, err)
    };
    let expired = limits.expired();
    let result = tokio::select! {
        (status, stdout, stderr) = collect => {
            let status = status.map_err(|source| Error::Wait { program: program.to_owned(), source })?;
            Ok(Output { status, stdout, stderr })
        }
        stop = expired => Err(limits.error(stop, program)),
    };
    guard.kill();
    if result.is_err() {
        let _ = child.wait().await;
    }
    result
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::spawn::{command, tree_command};
    use std::sync::Mutex;

    fn limits(token: &CancellationToken, secs: u64) -> Limits {
        Limits::new(Duration::from_secs(secs), token.clone())
    }

    pub(crate) fn pid_alive(pid: i32) -> bool {
        std::fs::read_to_string(format!("/proc/{pid}/stat"))
            .is_ok_and(|s| s.rsplit_once(") ").is_some_and(|(_, rest)| !rest.starts_with('Z')))
    }

    #[tokio::test]
    async fn captures_both_streams_stdin_and_reports_the_group() {
        let token = CancellationToken::new();
        let mut cmd = tree_command("sh");
        cmd.arg("-c").arg("cat; echo out; echo err >&2; exit 3");
        let seen = Mutex::new(Vec::new());
        let on_line = |l: &str| seen.lock().unwrap().push(l.to_owned());
        let group = Mutex::new(None);
        let opts = RunOptions {
            stdin: Some(b"from stdin\n".to_vec()),
            on_line: Some(&on_line),
            on_spawn: Some(Box::new(|g: &GroupRecord| *group.lock().unwrap() = Some(g.clone()))),
            term_grace: None,
        };
        let f = run_lines(cmd, "sh", &limits(&token, 30), opts).await.unwrap();
        assert_eq!(f.status.code(), Some(3));
        for want in ["from stdin", "out", "err"] {
            assert!(f.lines.contains(&want.to_owned()), "{want} missing from {:?}", f.lines);
        }
        assert_eq!(*seen.lock().unwrap(), f.lines);
        assert_eq!(f.tail(1).lines().count(), 1);
        assert!(group.into_inner().unwrap().is_some_and(|g| g.pgid > 1));
    }

    #[tokio::test]
    async fn missing_program_is_a_missing_tool() {
        let token = CancellationToken::new();
        let err = run_lines(command("kgym-no-such-program"), "x", &limits(&token, 5), RunOptions::default())
            .await
            .unwrap_err();
        assert!(matches!(err, Error::MissingTool { ref tool } if tool == "kgym-no-such-program"), "{err}");
    }

    /// A grandchild (`sleep` started by `sh`) must die with the group.
    async fn assert_group_killed(cancel_after: Option<Duration>, secs: u64) {
        let dir = tempfile::tempdir().unwrap();
        let pidfile = dir.path().join("pid");
        let mut cmd = tree_command("sh");
        cmd.arg("-c").arg(format!("sleep 300 & echo $! > {}; wait", pidfile.display()));
        let token = CancellationToken::new();
        if let Some(after) = cancel_after {
            let canceller = token.clone();
            tokio::spawn(async move {
                tokio::time::sleep(after).await;
                canceller.cancel();
            });
        }
        let started = Instant::now();
        let err = run_lines(cmd, "sleeping", &limits(&token, secs), RunOptions::default()).await.unwrap_err();
        assert!(started.elapsed() < Duration::from_secs(20), "took {:?}", started.elapsed());
        if cancel_after.is_some() {
            assert!(matches!(err, Error::Cancelled { ref what } if what == "sleeping"), "{err}");
        } else {
            assert!(matches!(err, Error::Timeout { .. }), "{err}");
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
        assert_group_killed(Some(Duration::from_millis(500)), 60).await;
    }

    #[tokio::test]
    async fn timeout_kills_the_whole_group() {
        assert_group_killed(None, 2).await;
    }

    #[tokio::test]
    async fn output_keeps_streams_apart_and_stops_on_timeout_and_cancel() {
        let mut cmd = command("sh");
        cmd.args(["-c", "echo out; echo err >&2; exit 4"]);
        let out = output(cmd, "sh", Duration::from_secs(10), &CancellationToken::new()).await.unwrap();
        assert_eq!(
            (out.stdout.as_slice(), out.stderr.as_slice(), out.status.code()),
            (&b"out\n"[..], &b"err\n"[..], Some(4))
        );

        let mut cmd = command("sleep");
        cmd.arg("30");
        let err = output(cmd, "sleep", Duration::from_millis(300), &CancellationToken::new()).await.unwrap_err();
        assert!(matches!(err, Error::Timeout { .. }), "{err}");

        let cancel = CancellationToken::new();
        let c2 = cancel.clone();
        tokio::spawn(async move {
            tokio::time::sleep(Duration::from_millis(100)).await;
            c2.cancel();
        });
        let mut cmd = command("sleep");
        cmd.arg("30");
        let started = Instant::now();
        let err = output(cmd, "sleep", Duration::from_secs(30), &cancel).await.unwrap_err();
        assert!(matches!(err, Error::Cancelled { .. }), "{err}");
        assert!(started.elapsed() < Duration::from_secs(5));
    }

    #[tokio::test]
    async fn a_dropped_run_kills_the_group() {
        let dir = tempfile::tempdir().unwrap();
        let pidfile = dir.path().join("pid");
        let mut cmd = tree_command("sh");
        cmd.arg("-c").arg(format!("sleep 300 & echo $! > {}; wait", pidfile.display()));
        let token = CancellationToken::new();
        let limits = limits(&token, 60);
        let run = run_lines(cmd, "sleeping", &limits, RunOptions::default());
        let _ = tokio::time::timeout(Duration::from_millis(500), run).await;
        let pid: i32 = std::fs::read_to_string(&pidfile).unwrap().trim().parse().unwrap();
        for _ in 0..50 {
            if !pid_alive(pid) {
                return;
            }
            tokio::time::sleep(Duration::from_millis(100)).await;
        }
        panic!("grandchild {pid} survived the dropped future");
    }
}
