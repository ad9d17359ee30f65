//! [`LogSink`]: where a stage's log lines go, with the two stock sinks.

use std::fmt;
use std::sync::Mutex;

/// Where a stage's log lines go (the scheduler's job log, a progress bar, a
/// test's buffer).
pub trait LogSink: Send + Sync + fmt::Debug {
    /// Records one line (without trailing newline).
    fn line(&self, line: &str);
}

/// A sink that forwards to `tracing` only.
#[derive(Debug, Default)]
pub struct TracingSink;

impl LogSink for TracingSink {
    fn line(&self, line: &str) {
        tracing::info!(target: "kgym::stage", "{line}");
    }
}

/// A sink that keeps lines in memory (tests, embedded runs).
#[derive(Debug, Default)]
pub struct MemorySink(Mutex<Vec<String>>);

impl MemorySink {
    /// The lines so far.
    pub fn lines(&self) -> Vec<String> {
        self.0.lock().map(|l| l.clone()).unwrap_or_default()
    }
}

impl LogSink for MemorySink {
    fn line(&self, line: &str) {
        if let Ok(mut l) = self.0.lock() {
            l.push(line.to_owned());
        }
    }
}
