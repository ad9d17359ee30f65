//! Helpers shared by the workspace's integration tests.
#![allow(dead_code)] // each test crate uses part of these

use std::path::PathBuf;

/// A stock service built from `examples/` by `cargo build --examples`
/// (`scripts/test.sh` does it first), next to this test's own binary.
/// `cargo test --all-targets` alone is not enough: it builds each example
/// as a test harness (`examples/<name>-<hash>` runs zero tests).
pub fn example(name: &str) -> Option<PathBuf> {
    let exe = std::env::current_exe().ok()?;
    let path = exe.parent()?.parent()?.join("examples").join(name);
    if path.is_file() {
        Some(path)
    } else {
        kgym_testkit::skip_or_fail(&format!(
            "{} is not built (cargo build --examples builds it; scripts/test.sh does)",
            path.display()
        ));
        None
    }
}

/// A service process (a stock service from `examples/`), killed when
/// dropped; its stdout and stderr go to a log file kept for failures.
pub struct Service {
    /// The process.
    pub child: std::process::Child,
    log: PathBuf,
}

impl Service {
    /// Starts `program` with `env` added to this process's environment
    /// (`KGYM_TOKEN` removed, `RUST_LOG=info`, no colours in the log).
    pub fn start(program: &std::path::Path, env: &[(&str, &str)], log: PathBuf) -> Self {
        let file = std::fs::File::create(&log).unwrap();
        let mut cmd = std::process::Command::new(program);
        cmd.env_remove("KGYM_TOKEN").env("RUST_LOG", "info").env("NO_COLOR", "1");
        for (k, v) in env {
            cmd.env(k, v);
        }
        let child = cmd
            .stdin(std::process::Stdio::null())
            .stdout(file.try_clone().unwrap())
            .stderr(file)
            .spawn()
            .unwrap_or_else(|e| panic!("{}: {e}", program.display()));
        Self { child, log }
    }

    /// What it printed so far.
    pub fn output(&self) -> String {
        std::fs::read_to_string(&self.log).unwrap_or_default()
    }
}

impl Drop for Service {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

/// Polls `done` every 100 ms; panics with `what` (and `context()`) when it
/// is not true within `limit`.
pub fn wait_until(
    what: &str,
    limit: std::time::Duration,
    context: impl Fn() -> String,
    mut done: impl FnMut() -> bool,
) {
    let started = std::time::Instant::now();
    while !done() {
        assert!(started.elapsed() < limit, "{what}: not within {limit:?}\n{}", context());
        std::thread::sleep(std::time::Duration::from_millis(100));
    }
}
