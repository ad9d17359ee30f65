//! Delivering the reproducer to a disk-image guest over SSH: wait for
//! login, copy the files, run the reproducer in a loop and forward its
//! output. (An initramfs guest has everything in its initrd already.)

use std::path::PathBuf;
use std::time::{Duration, Instant};

use tokio_util::sync::CancellationToken;

use super::boot::{Event, forward};
use crate::initramfs::RUN_MARKER;
use crate::ssh::SshTarget;

/// The shell loop that runs `command` over and over, announcing each run.
pub(crate) fn reproducer_loop(command: &str) -> String {
    format!(
        "n=0; while true; do echo \"kgym: {RUN_MARKER} (run $n)\"; {command}; echo \"kgym: program exited with status $?\"; n=$((n+1)); sleep 1; done"
    )
}

/// The SSH side of a disk-image boot; ends with the session or `cancel`.
pub(crate) async fn over_ssh(
    target: SshTarget,
    files: Vec<(String, PathBuf)>,
    command: String,
    deadline: Instant,
    tx: tokio::sync::mpsc::Sender<Event>,
    cancel: CancellationToken,
) {
    match target.wait_ready(deadline, Duration::from_secs(1), &cancel).await {
        Ok(true) => {}
        // Not up by the boot deadline: the boot watchdog reports it.
        Ok(false) | Err(_) => return,
    }
    let _ = tx.send(Event::SshReady).await;
    for (name, path) in &files {
        if let Err(e) = target.copy_to(path, name, Duration::from_secs(300), &cancel).await {
            let _ = tx.send(Event::SetupFailed(kgym_core::failure::error_chain(&e))).await;
            return;
        }
    }
    let (mut child, _guard) = match target.spawn(&reproducer_loop(&command)) {
        Ok(c) => c,
        Err(e) => {
            let _ = tx.send(Event::SetupFailed(kgym_core::failure::error_chain(&e))).await;
            return;
        }
    };
    let mut tasks = tokio::task::JoinSet::new();
    if let Some(o) = child.stdout.take() {
        tasks.spawn(forward(o, tx.clone(), Event::Session, None));
    }
    if let Some(e) = child.stderr.take() {
        tasks.spawn(forward(e, tx.clone(), Event::Session, None));
    }
    tokio::select! {
        status = child.wait() => {
            while tasks.join_next().await.is_some() {}
            let status = status.map_or_else(|e| e.to_string(), |s| s.to_string());
            let _ = tx.send(Event::SessionEnded(status)).await;
        }
        () = cancel.cancelled() => {}
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_loop_announces_runs_without_an_execution_marker() {
        let l = reproducer_loop("./kgym-repro");
        assert!(l.contains("kgym: running the reproducer (run $n)") && l.contains("./kgym-repro;"), "{l}");
        for m in super::super::watch::EXECUTION_MARKERS {
            assert!(!l.contains(m), "{l} contains {m}");
        }
    }
}
