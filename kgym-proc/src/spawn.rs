//! Commands whose processes never outlive their owner, and how they are
//! spawned.
//!
//! Every command runs in its own process group (so a whole tree — `make`,
//! its sub-makes, `gcc`, `cc1` — is signalled at once) and is killed when
//! its [`Child`] is dropped. Two more things cover the owner's death,
//! which no destructor sees (SIGKILL, a crash):
//!
//! - the direct child gets a parent-death signal (`PR_SET_PDEATHSIG`):
//!   SIGKILL for a [`command`], a signal the guard of a [`tree_command`]
//!   turns into SIGKILL of its whole group;
//! - Linux sends the parent-death signal when the *thread* that forked the
//!   child exits, not the process. tokio's blocking pool retires idle
//!   threads, and a child spawned from one would be killed seconds later
//!   with its owner alive. [`spawn`] therefore forks from one thread that
//!   lives as long as the process.

use std::ffi::OsStr;
use std::process::Stdio;
use std::sync::OnceLock;
use std::sync::mpsc;

use nix::sys::signal::Signal;
use tokio::process::{Child, Command};

use crate::error::{Error, Result};

/// The shell that runs a [`tree_command`]'s guard.
const SHELL: &str = "/bin/sh";

/// `$0` of the guard (also how [`program_of`] recognizes it).
const GUARD_NAME: &str = "kgym-proc-guard";

/// The guard of a [`tree_command`]: runs the command as its child, in its
/// own process group, and waits for it. When the owner dies the guard gets
/// SIGUSR1 (its parent-death signal) and kills the whole group with
/// SIGKILL. SIGTERM/SIGINT/SIGHUP sent to the group reach the command,
/// which handles them as usual (make deletes half-written targets); the
/// guard only keeps waiting. The command's exit status is passed on (a
/// death by signal is re-raised). The original stdin is handed to the
/// command through fd 3, because an asynchronous list of a non-interactive
/// shell otherwise reads `/dev/null`.
const GUARD_SCRIPT: &str = r#"trap 'kill -KILL 0' USR1
trap : TERM INT HUP
exec 3<&0
"$@" <&3 3<&- &
pid=$!
exec 3<&-
while :; do
  wait "$pid"
  status=$?
  kill -0 "$pid" 2>/dev/null || break
done
if [ "$status" -gt 128 ]; then
  trap - TERM INT HUP USR1
  kill -s "$(kill -l "$status")" $$ 2>/dev/null
fi
exit "$status""#;

/// A command for `program`: own process group, stdin closed, killed when
/// its [`Child`] is dropped, and killed (SIGKILL) when this process dies.
/// For a program that starts processes of its own (make, gcc, tar with a
/// decompressor) use [`tree_command`]. Spawn it with [`spawn`].
pub fn command(program: impl AsRef<OsStr>) -> Command {
    let mut cmd = Command::new(program);
    cmd.process_group(0).stdin(Stdio::null()).kill_on_drop(true);
    pdeathsig(&mut cmd, Signal::SIGKILL);
    cmd
}

/// Like [`command`], for a program that starts a tree of processes: it runs
/// under a small `sh` guard that kills the whole process group (`make`,
/// `cc1`, ...) when this process dies, however it dies. Arguments added to
/// the returned command go to `program`. The guard is the group leader:
/// `Child::id` is its pid.
pub fn tree_command(program: impl AsRef<OsStr>) -> Command {
    let mut cmd = Command::new(SHELL);
    cmd.arg("-c").arg(GUARD_SCRIPT).arg(GUARD_NAME).arg(program.as_ref());
    cmd.process_group(0).stdin(Stdio::null()).kill_on_drop(true);
    pdeathsig(&mut cmd, Signal::SIGUSR1);
    cmd
}

/// The program a command runs, for messages: the guarded program of a
/// [`tree_command`], else the command's own program.
pub fn program_of(cmd: &Command) -> String {
    let std = cmd.as_std();
    let args: Vec<&OsStr> = std.get_args().take(4).collect();
    if std.get_program() == SHELL && args.len() == 4 && args[0] == "-c" && args[2] == GUARD_NAME {
        return args[3].to_string_lossy().into_owned();
    }
    std.get_program().to_string_lossy().into_owned()
}

/// Sets the parent-death signal of the child, between fork and exec.
#[allow(unsafe_code)]
fn pdeathsig(cmd: &mut Command, signal: Signal) {
    let parent = std::process::id();
    // SAFETY: the closure runs in the forked child before exec; it only
    // makes the async-signal-safe syscalls prctl(2) and getppid(2) and
    // builds an io::Error from a raw code (no allocation, no locks).
    unsafe {
        cmd.pre_exec(move || {
            nix::sys::prctl::set_pdeathsig(signal).map_err(|e| std::io::Error::from_raw_os_error(e as i32))?;
            // The parent died before the signal was armed: do not start.
            if u32::try_from(nix::unistd::getppid().as_raw()).ok() != Some(parent) {
                return Err(std::io::Error::from_raw_os_error(nix::libc::ESRCH));
            }
            Ok(())
        });
    }
}

type Job = Box<dyn FnOnce() + Send>;

/// The thread every child is forked from (see the module docs).
fn spawner() -> &'static mpsc::Sender<Job> {
    static SPAWNER: OnceLock<mpsc::Sender<Job>> = OnceLock::new();
    SPAWNER.get_or_init(|| {
        let (tx, rx) = mpsc::channel::<Job>();
        std::thread::Builder::new()
            .name("kgym-proc-spawner".into())
            .spawn(move || {
                for job in rx {
                    job();
                }
            })
            .expect("start the kgym-proc spawner thread");
        tx
    })
}

/// Spawns `cmd` (from [`command`] or [`tree_command`]) from a thread that
/// lives as long as the process, so the parent-death signal fires when the
/// process dies and not when the calling thread does. Must be called
/// within a tokio runtime (the child is reaped by it). `program` names the
/// program in errors.
pub fn spawn(cmd: &mut Command, program: &str) -> Result<Child> {
    let handle = tokio::runtime::Handle::try_current().map_err(|e| Error::Spawn {
        program: program.to_owned(),
        source: std::io::Error::other(format!("not inside a tokio runtime: {e}")),
    })?;
    let mut owned = std::mem::replace(cmd, Command::new(SHELL));
    let (reply, result) = mpsc::sync_channel(1);
    let job: Job = Box::new(move || {
        let _runtime = handle.enter();
        let spawned = owned.spawn();
        let _ = reply.send((owned, spawned));
    });
    spawner().send(job).map_err(|_| Error::Spawn {
        program: program.to_owned(),
        source: std::io::Error::other("the spawner thread is gone"),
    })?;
    let (back, spawned) = result.recv().map_err(|_| Error::Spawn {
        program: program.to_owned(),
        source: std::io::Error::other("the spawner thread did not answer"),
    })?;
    *cmd = back;
    spawned.map_err(|e| Error::spawn(program, e))
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::time::Duration;

    #[tokio::test]
    async fn the_guard_passes_arguments_stdin_and_exit_status() {
        let mut cmd = tree_command("sh");
        cmd.args(["-c", "read line; echo \"got $line $1\"; exit 7", "sh", "arg1"])
            .stdin(Stdio::piped())
            .stdout(Stdio::piped());
        assert_eq!(program_of(&cmd), "sh");
        let mut child = spawn(&mut cmd, "sh").unwrap();
        use tokio::io::AsyncWriteExt;
        let mut stdin = child.stdin.take().unwrap();
        stdin.write_all(b"hello\n").await.unwrap();
        drop(stdin);
        let out = child.wait_with_output().await.unwrap();
        assert_eq!(String::from_utf8_lossy(&out.stdout), "got hello arg1\n");
        assert_eq!(out.status.code(), Some(7));
    }

    #[tokio::test]
    async fn a_death_by_signal_is_passed_on() {
        use std::os::unix::process::ExitStatusExt;
        let mut cmd = tree_command("sh");
        cmd.args(["-c", "kill -TERM $$"]);
        let status = spawn(&mut cmd, "sh").unwrap().wait().await.unwrap();
        assert_eq!(status.signal(), Some(15), "{status}");
        assert_eq!(program_of(&command("ls")), "ls");
    }

    #[tokio::test]
    async fn missing_programs_are_missing_tools() {
        let err = spawn(&mut command("kgym-no-such-program"), "kgym-no-such-program").unwrap_err();
        assert!(matches!(err, Error::MissingTool { ref tool } if tool == "kgym-no-such-program"), "{err}");
    }

    /// A child spawned from a blocking-pool thread survives that thread's
    /// exit (the parent-death signal is bound to the spawner thread).
    #[test]
    fn children_survive_the_exit_of_the_thread_that_asked_for_them() {
        let rt = tokio::runtime::Builder::new_multi_thread()
            .worker_threads(1)
            .max_blocking_threads(1)
            .thread_keep_alive(Duration::from_millis(50))
            .enable_all()
            .build()
            .unwrap();
        rt.block_on(async {
            let child = tokio::task::spawn_blocking(|| {
                let mut cmd = command("sleep");
                cmd.arg("30");
                spawn(&mut cmd, "sleep").unwrap()
            })
            .await
            .unwrap();
            // The blocking thread retires after 50 ms of idleness.
            tokio::time::sleep(Duration::from_millis(600)).await;
            let mut child = child;
            assert!(child.try_wait().unwrap().is_none(), "the child died with the thread that spawned it");
            child.kill().await.unwrap();
        });
    }
}
