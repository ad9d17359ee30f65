//! The build log: every line of every subprocess of a build, written to a
//! file (an output of the build) and forwarded to the caller's
//! [`LogSink`] (job log, progress bar).

use std::fs::File;
use std::io::{BufWriter, Write};
use std::path::{Path, PathBuf};
use std::sync::{Arc, Mutex};

use kgym_core::LogSink;

use crate::error::{Error, Result};

/// A line sink writing to a file and to a [`LogSink`].
#[derive(Debug)]
pub(crate) struct BuildLog {
    started: std::time::Instant,
    path: PathBuf,
    file: Mutex<BufWriter<File>>,
    sink: Arc<dyn LogSink>,
}

impl BuildLog {
    /// Creates (truncates) the log file at `path`.
    pub fn create(path: &Path, sink: Arc<dyn LogSink>) -> Result<Self> {
        let file = File::create(path).map_err(|e| Error::io(path, e))?;
        Ok(Self {
            started: std::time::Instant::now(),
            path: path.to_owned(),
            file: Mutex::new(BufWriter::new(file)),
            sink,
        })
    }

    /// The log file.
    pub fn path(&self) -> &Path {
        &self.path
    }

    /// Records one line of subprocess output.
    pub fn line(&self, line: &str) {
        if let Ok(mut f) = self.file.lock() {
            // A full disk shows up in the build itself; the log is best effort.
            let _ = writeln!(f, "{line}");
        }
        self.sink.line(line);
    }

    /// Records one of kgym's own steps with the time since the log was
    /// created (`kgym: applying the patch [12.3s]`).
    pub fn step(&self, what: &str) {
        tracing::debug!(target: "kgym_build", "{what}");
        self.line(&format!("kgym: {what} [{:.1}s]", self.started.elapsed().as_secs_f64()));
    }

    /// Flushes the file.
    pub fn flush(&self) {
        if let Ok(mut f) = self.file.lock() {
            let _ = f.flush();
        }
    }
}

impl Drop for BuildLog {
    fn drop(&mut self) {
        self.flush();
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use kgym_core::MemorySink;

    #[test]
    fn writes_file_and_sink() {
        let dir = tempfile::tempdir().unwrap();
        let sink = Arc::new(MemorySink::default());
        let path = dir.path().join("build.log");
        let log = BuildLog::create(&path, sink.clone()).unwrap();
        log.line("  CC      kernel/sys.o");
        log.step("applying patch");
        log.flush();
        let text = std::fs::read_to_string(&path).unwrap();
        assert!(text.starts_with("  CC      kernel/sys.o\nkgym: applying patch ["), "{text}");
        assert!(text.ends_with("s]\n"), "{text}");
        assert_eq!(sink.lines().len(), 2);
        assert_eq!(log.path(), path);
    }
}
