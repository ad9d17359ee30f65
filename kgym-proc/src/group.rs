//! [`GroupRecord`]: a process group written down, so that whoever comes
//! next — after its owner died — can make sure it no longer runs.
//!
//! A record holds the group id, its leader's start time and the boot id.
//! Linux does not hand out a pid that is still some group's id, so while
//! any member lives the id names the same group; the start time and the
//! boot id tell a recorded group from a new one with a reused id after the
//! old one died out (or the machine rebooted). [`GroupRecord::stop`] kills
//! a recorded group only when it can show it is that group: the leader is
//! alive with the recorded start time, or a member works inside the
//! directory the caller names.

use std::path::Path;
use std::time::{Duration, Instant};

use nix::sys::signal::{Signal, killpg};
use nix::unistd::Pid;
use serde::{Deserialize, Serialize};

use crate::error::{Error, Result};

/// A process group as written down when it started.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct GroupRecord {
    /// The process group id (the leader's pid).
    pub pgid: i32,
    /// The leader's start time (clock ticks after boot, `/proc/PID/stat`
    /// field 22); 0 when it could not be read.
    pub leader_start: u64,
    /// `/proc/sys/kernel/random/boot_id` when the group started.
    pub boot_id: String,
}

/// One live process, as `/proc` shows it.
#[derive(Debug, Clone)]
struct ProcStat {
    pid: i32,
    state: char,
    pgrp: i32,
    start: u64,
}

fn read_stat(pid: i32) -> Option<ProcStat> {
    let text = std::fs::read_to_string(format!("/proc/{pid}/stat")).ok()?;
    // `pid (comm) state ppid pgrp ...`: comm may hold spaces and parens.
    let (_, rest) = text.rsplit_once(") ")?;
    let fields: Vec<&str> = rest.split_whitespace().collect();
    Some(ProcStat {
        pid,
        state: fields.first()?.chars().next()?,
        pgrp: fields.get(2)?.parse().ok()?,
        start: fields.get(19)?.parse().ok()?,
    })
}

fn boot_id() -> String {
    std::fs::read_to_string("/proc/sys/kernel/random/boot_id").map(|s| s.trim().to_owned()).unwrap_or_default()
}

/// Live (not zombie) members of group `pgid`.
fn members(pgid: i32) -> Vec<ProcStat> {
    let Ok(entries) = std::fs::read_dir("/proc") else { return Vec::new() };
    entries
        .flatten()
        .filter_map(|e| e.file_name().to_str().and_then(|n| n.parse::<i32>().ok()))
        .filter_map(read_stat)
        .filter(|p| p.pgrp == pgid && p.state != 'Z' && p.state != 'X')
        .collect()
}

impl GroupRecord {
    /// The record of the running group `pgid` (led by process `pgid`).
    pub fn of(pgid: i32) -> Self {
        let leader_start = read_stat(pgid).map_or(0, |s| s.start);
        Self { pgid, leader_start, boot_id: boot_id() }
    }

    /// The pids of the group's live members, if the group is provably the
    /// recorded one (see the module docs); `within` is a directory its
    /// members work in (their current directory is inside it).
    pub fn running_members(&self, within: Option<&Path>) -> Vec<i32> {
        if self.pgid <= 1 || self.boot_id != boot_id() {
            return Vec::new();
        }
        let live = members(self.pgid);
        let leader_is_ours =
            self.leader_start != 0 && live.iter().any(|p| p.pid == self.pgid && p.start == self.leader_start);
        let works_within = |p: &ProcStat| {
            within.is_some_and(|dir| {
                std::fs::read_link(format!("/proc/{}/cwd", p.pid)).is_ok_and(|cwd| cwd.starts_with(dir))
            })
        };
        if leader_is_ours || live.iter().any(works_within) { live.iter().map(|p| p.pid).collect() } else { Vec::new() }
    }

    /// Kills the group (SIGKILL) if it still runs and is provably the
    /// recorded one, and waits until no member is left (at most `wait`).
    /// Returns how many members were running. Blocking: call it from a
    /// blocking thread.
    pub fn stop(&self, within: Option<&Path>, wait: Duration) -> Result<usize> {
        let found = self.running_members(within).len();
        if found == 0 {
            return Ok(0);
        }
        tracing::warn!(pgid = self.pgid, members = found, "stopping a process group left by an earlier owner");
        let started = Instant::now();
        loop {
            // ESRCH: gone meanwhile.
            let _ = killpg(Pid::from_raw(self.pgid), Signal::SIGKILL);
            if members(self.pgid).is_empty() {
                return Ok(found);
            }
            if started.elapsed() >= wait {
                return Err(Error::GroupSurvived { pgid: self.pgid, waited: wait });
            }
            std::thread::sleep(Duration::from_millis(20));
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::process::{Command, Stdio};

    fn spawn_group(dir: &Path) -> std::process::Child {
        use std::os::unix::process::CommandExt;
        Command::new("sh")
            .args(["-c", "sleep 300 & sleep 300 & wait"])
            .current_dir(dir)
            .process_group(0)
            .stdin(Stdio::null())
            .spawn()
            .unwrap()
    }

    #[test]
    fn a_recorded_group_is_found_and_stopped_and_a_stale_record_is_left_alone() {
        let dir = tempfile::tempdir().unwrap();
        let mut child = spawn_group(dir.path());
        let pgid = child.id() as i32;
        std::thread::sleep(Duration::from_millis(200));
        let record = GroupRecord::of(pgid);
        assert!(record.leader_start > 0 && !record.boot_id.is_empty());
        assert_eq!(record.running_members(None).len(), 3, "sh and two sleeps");

        // Another boot, or another leader with the same id: not ours.
        let other_boot = GroupRecord { boot_id: "other".into(), ..record.clone() };
        assert_eq!(other_boot.stop(Some(dir.path()), Duration::from_secs(1)).unwrap(), 0);
        let reused = GroupRecord { leader_start: record.leader_start + 1, ..record.clone() };
        assert!(reused.running_members(None).is_empty());
        let elsewhere = tempfile::tempdir().unwrap();
        assert!(reused.running_members(Some(elsewhere.path())).is_empty());
        // ...unless its members work in the directory named.
        assert_eq!(reused.running_members(Some(dir.path())).len(), 3);

        assert_eq!(record.stop(None, Duration::from_secs(5)).unwrap(), 3);
        let _ = child.wait();
        assert!(members(pgid).is_empty());
        assert_eq!(record.stop(None, Duration::from_secs(1)).unwrap(), 0, "nothing left to stop");
    }
}
