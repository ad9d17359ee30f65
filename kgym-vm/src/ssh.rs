//! Reaching a test machine over SSH with the `ssh` binary (OpenSSH client),
//! the way syzkaller does: key login, no host-key checks, batch mode.
//!
//! Nothing here is QEMU-specific: a GCE VM is a [`SshTarget`] with its
//! external address and port 22. Files are copied by streaming them into
//! `cat` over an `ssh` session rather than with `scp`, because OpenSSH 9's
//! `scp` needs an SFTP server that minimal images (dropbear, buildroot)
//! lack.

use std::path::{Path, PathBuf};
use std::process::Stdio;
use std::time::{Duration, Instant};

use tokio::io::AsyncWriteExt;
use tokio::process::Command;
use tokio_util::sync::CancellationToken;

use crate::error::{Error, Result};
use crate::process::{self, GroupGuard};

/// One machine reachable over SSH.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct SshTarget {
    /// Host name or address.
    pub host: String,
    /// TCP port.
    pub port: u16,
    /// Login user.
    pub user: String,
    /// Private key file (mode 0600; see [`SshTarget::with_private_key_copy`]).
    pub key: PathBuf,
    /// Connect timeout of one attempt.
    pub connect_timeout: Duration,
}

impl SshTarget {
    /// A target at `host:port` logging in as `user` with `key`.
    pub fn new(host: impl Into<String>, port: u16, user: impl Into<String>, key: impl Into<PathBuf>) -> Self {
        Self { host: host.into(), port, user: user.into(), key: key.into(), connect_timeout: Duration::from_secs(10) }
    }

    /// Copies the key into `dir` with mode 0600 (ssh refuses readable keys,
    /// and keys from artifacts or images rarely have the right mode) and
    /// uses the copy.
    pub fn with_private_key_copy(mut self, dir: &Path) -> Result<Self> {
        use std::os::unix::fs::PermissionsExt;
        let dst = dir.join("ssh-key");
        std::fs::copy(&self.key, &dst).map_err(Error::io(&self.key))?;
        std::fs::set_permissions(&dst, std::fs::Permissions::from_mode(0o600)).map_err(Error::io(&dst))?;
        self.key = dst;
        Ok(self)
    }

    /// The options every `ssh` invocation gets (syzkaller's set).
    pub fn ssh_args(&self) -> Vec<String> {
        let mut a: Vec<String> = vec!["-p".into(), self.port.to_string(), "-i".into(), self.key.display().to_string()];
        for o in [
            "BatchMode=yes",
            "IdentitiesOnly=yes",
            "StrictHostKeyChecking=no",
            "UserKnownHostsFile=/dev/null",
            "LogLevel=ERROR",
            "ServerAliveInterval=5",
            "ServerAliveCountMax=3",
        ] {
            a.push("-o".into());
            a.push(o.into());
        }
        a.push("-o".into());
        a.push(format!("ConnectTimeout={}", self.connect_timeout.as_secs().max(1)));
        a.push("-F".into());
        a.push("/dev/null".into());
        a
    }

    /// `user@host`.
    pub fn destination(&self) -> String {
        format!("{}@{}", self.user, self.host)
    }

    /// An `ssh` command that runs `remote` on the target (not started).
    pub fn command(&self, remote: &str) -> Result<Command> {
        let ssh = process::require_program("ssh", "install openssh-client")?;
        let mut cmd = process::command(ssh);
        cmd.args(self.ssh_args()).arg(self.destination()).arg(remote);
        Ok(cmd)
    }

    /// Runs `remote` and returns its output; a non-zero exit is an error.
    pub async fn run(
        &self,
        remote: &str,
        timeout: Duration,
        cancel: &CancellationToken,
    ) -> Result<std::process::Output> {
        let cmd = self.command(remote)?;
        process::run_checked(cmd, &format!("ssh {}", self.destination()), timeout, cancel).await
    }

    /// Tries `true` over SSH until it works or `deadline` passes; returns
    /// whether it worked. Between attempts waits `interval`.
    pub async fn wait_ready(&self, deadline: Instant, interval: Duration, cancel: &CancellationToken) -> Result<bool> {
        loop {
            let left = deadline.saturating_duration_since(Instant::now());
            if left.is_zero() {
                return Ok(false);
            }
            match self.run("true", left.min(self.connect_timeout + Duration::from_secs(5)), cancel).await {
                Ok(_) => return Ok(true),
                Err(Error::Cancelled) => return Err(Error::Cancelled),
                Err(e) => tracing::trace!(error = %e, "ssh not ready yet"),
            }
            tokio::select! {
                () = tokio::time::sleep(interval) => {}
                () = cancel.cancelled() => return Err(Error::Cancelled),
            }
        }
    }

    /// Copies local file `src` to `dst` on the target, mode 0755.
    pub async fn copy_to(&self, src: &Path, dst: &str, timeout: Duration, cancel: &CancellationToken) -> Result<()> {
        let data = tokio::fs::read(src).await.map_err(Error::io(src))?;
        let quoted =
            shlex::try_quote(dst).map_err(|_| Error::InvalidRequest { reason: format!("remote path {dst:?}") })?;
        let mut cmd = self.command(&format!("cat > {quoted} && chmod 0755 {quoted}"))?;
        cmd.stdin(Stdio::piped());
        let program = format!("ssh {} (copy {})", self.destination(), src.display());
        let (mut child, mut guard) = process::spawn_piped(&mut cmd, &program)?;
        let mut stdin = child
            .stdin
            .take()
            .ok_or_else(|| Error::Spawn { program: program.clone(), source: std::io::Error::other("no stdin pipe") })?;
        let work = async {
            stdin.write_all(&data).await.map_err(|source| Error::Spawn { program: program.clone(), source })?;
            drop(stdin);
            child.wait_with_output().await.map_err(|source| Error::Spawn { program: program.clone(), source })
        };
        let out = tokio::select! {
            out = work => out?,
            () = tokio::time::sleep(timeout) => {
                guard.kill();
                return Err(Error::CommandTimeout { program, timeout });
            }
            () = cancel.cancelled() => {
                guard.kill();
                return Err(Error::Cancelled);
            }
        };
        if !out.status.success() {
            return Err(Error::CommandFailed {
                program,
                status: out.status.to_string(),
                stderr_tail: process::output_tail(&out, 10),
            });
        }
        Ok(())
    }

    /// Starts `remote` with its stdout and stderr piped, for streaming (the
    /// reproducer loop); the session dies with the returned guard.
    pub fn spawn(&self, remote: &str) -> Result<(tokio::process::Child, GroupGuard)> {
        let mut cmd = self.command(remote)?;
        process::spawn_piped(&mut cmd, &format!("ssh {}", self.destination()))
    }
}

/// A free TCP port on 127.0.0.1 (for QEMU's `hostfwd`). Another process may
/// take it before QEMU does; callers retry on QEMU's "could not set up host
/// forwarding rule".
pub fn free_local_port() -> Result<u16> {
    let l = std::net::TcpListener::bind("127.0.0.1:0").map_err(Error::io("127.0.0.1:0"))?;
    Ok(l.local_addr().map_err(Error::io("127.0.0.1:0"))?.port())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn args_match_syzkaller_batch_login() {
        let t = SshTarget::new("localhost", 10022, "root", "/k/key");
        let a = t.ssh_args();
        assert_eq!(&a[..4], ["-p", "10022", "-i", "/k/key"]);
        for o in ["BatchMode=yes", "StrictHostKeyChecking=no", "UserKnownHostsFile=/dev/null", "ConnectTimeout=10"] {
            assert!(a.iter().any(|x| x == o), "missing {o}");
        }
        assert_eq!(t.destination(), "root@localhost");
    }

    #[test]
    fn key_copies_get_mode_0600() {
        use std::os::unix::fs::PermissionsExt;
        let dir = tempfile::tempdir().unwrap();
        let key = dir.path().join("k");
        std::fs::write(&key, "KEY").unwrap();
        std::fs::set_permissions(&key, std::fs::Permissions::from_mode(0o644)).unwrap();
        let sub = dir.path().join("run");
        std::fs::create_dir(&sub).unwrap();
        let t = SshTarget::new("h", 22, "u", &key).with_private_key_copy(&sub).unwrap();
        let mode = std::fs::metadata(&t.key).unwrap().permissions().mode() & 0o777;
        assert_eq!(mode, 0o600);
        assert_eq!(std::fs::read_to_string(&t.key).unwrap(), "KEY");
    }

    #[test]
    fn ports_are_free() {
        let p = free_local_port().unwrap();
        assert!(p > 0);
        std::net::TcpListener::bind(("127.0.0.1", p)).unwrap();
    }
}
