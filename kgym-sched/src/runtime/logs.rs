//! Streams a stage's log lines into the job log in batches.

use std::sync::Arc;
use std::time::Duration;

use kgym_core::LogSink;
use tokio::sync::mpsc;
use tokio_util::sync::CancellationToken;

use crate::worker_api::{Lease, WorkerBackend};

/// Lines sent in one batch at most.
const BATCH: usize = 256;
/// Longest a line waits before it is sent.
const LINGER: Duration = Duration::from_millis(100);

/// The [`LogSink`] a stage writes to: lines go to a channel drained by
/// [`flush_loop`], and to `tracing` at debug level.
#[derive(Debug)]
pub(crate) struct ChannelSink {
    tx: mpsc::UnboundedSender<String>,
    worker: String,
}

impl ChannelSink {
    pub fn new(worker: String) -> (Arc<Self>, mpsc::UnboundedReceiver<String>) {
        let (tx, rx) = mpsc::unbounded_channel();
        (Arc::new(Self { tx, worker }), rx)
    }
}

impl LogSink for ChannelSink {
    fn line(&self, line: &str) {
        tracing::debug!(target: "kgym::stage", worker = %self.worker, "{line}");
        // After the stage ended the flusher is gone; late lines are dropped.
        let _ = self.tx.send(line.to_owned());
    }
}

/// Sends lines from `rx` to the job log until `close` fires, then sends
/// what is left and returns.
pub(crate) async fn flush_loop(
    backend: Arc<dyn WorkerBackend>,
    lease: Lease,
    worker: String,
    mut rx: mpsc::UnboundedReceiver<String>,
    close: CancellationToken,
) {
    let mut buf: Vec<String> = Vec::new();
    loop {
        let closing = tokio::select! {
            biased;
            line = rx.recv() => match line {
                Some(l) => { buf.push(l); false }
                None => true,
            },
            _ = tokio::time::sleep(LINGER), if !buf.is_empty() => {
                send(&*backend, &lease, &worker, &mut buf).await;
                false
            }
            _ = close.cancelled() => true,
        };
        if buf.len() >= BATCH {
            send(&*backend, &lease, &worker, &mut buf).await;
        }
        if closing {
            while let Ok(l) = rx.try_recv() {
                buf.push(l);
                if buf.len() >= BATCH {
                    send(&*backend, &lease, &worker, &mut buf).await;
                }
            }
            send(&*backend, &lease, &worker, &mut buf).await;
            return;
        }
    }
}

async fn send(backend: &dyn WorkerBackend, lease: &Lease, worker: &str, buf: &mut Vec<String>) {
    if buf.is_empty() {
        return;
    }
    let lines = std::mem::take(buf);
    if let Err(e) = backend.append_log(lease, worker, &lines).await {
        tracing::warn!(job = %lease.job, stage = %lease.stage, error = %e, lines = lines.len(), "failed to store log lines");
    }
}
