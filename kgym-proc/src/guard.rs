//! [`GroupGuard`]: kills a child's whole process group when dropped.

use nix::sys::signal::{Signal, killpg};
use nix::unistd::Pid;
use tokio::process::Child;

/// Kills a child's whole process group when dropped, unless disarmed: a
/// dropped future must not leave `make` and its compilers (or QEMU)
/// running. Disarm it once the group leader is reaped and the group is
/// known to be empty: its id may then be reused.
#[derive(Debug)]
pub struct GroupGuard(Option<i32>);

impl GroupGuard {
    /// Guards the group led by `child` (spawned in its own group, as
    /// [`command`](crate::command) does).
    pub fn new(child: &Child) -> Self {
        Self(child.id().and_then(|id| i32::try_from(id).ok()))
    }

    /// The guarded process group's id.
    pub fn pgid(&self) -> Option<i32> {
        self.0
    }

    /// Sends `signal` to the group (ignored when it is gone).
    pub fn signal(&self, signal: Signal) {
        if let Some(pgid) = self.0 {
            // ESRCH (group already gone) is the expected case after exit.
            let _ = killpg(Pid::from_raw(pgid), signal);
        }
    }

    /// Sends SIGKILL to the group now and disarms the guard.
    pub fn kill(&mut self) {
        self.signal(Signal::SIGKILL);
        self.0 = None;
    }

    /// Forgets the group without signalling it.
    pub fn disarm(&mut self) {
        self.0 = None;
    }
}

impl Drop for GroupGuard {
    fn drop(&mut self) {
        self.kill();
    }
}
