//! Fan-out of job events to watchers: one broadcast channel per watched job,
//! created on the first watch and dropped when its last watcher leaves.

use std::collections::HashMap;
use std::sync::Mutex;

use kgym_core::JobId;
use tokio::sync::broadcast;

use crate::types::JobEvent;

/// Events buffered per job before a slow watcher lags (it then re-reads the
/// job's status instead of the missed events).
const CAPACITY: usize = 1024;

#[derive(Debug, Default)]
pub(crate) struct EventHub {
    senders: Mutex<HashMap<JobId, broadcast::Sender<JobEvent>>>,
}

impl EventHub {
    /// A receiver of the job's future events.
    pub fn subscribe(&self, id: JobId) -> broadcast::Receiver<JobEvent> {
        let mut map = self.senders.lock().unwrap_or_else(|p| p.into_inner());
        map.entry(id).or_insert_with(|| broadcast::channel(CAPACITY).0).subscribe()
    }

    /// Sends `ev` to the job's watchers, if any.
    pub fn emit(&self, ev: &JobEvent) {
        let id = match ev {
            JobEvent::Status { job, .. } => *job,
            JobEvent::Log(l) => l.job,
        };
        let mut map = self.senders.lock().unwrap_or_else(|p| p.into_inner());
        if let Some(tx) = map.get(&id)
            && tx.send(ev.clone()).is_err()
        {
            // Nobody listens any more.
            map.remove(&id);
        }
    }

    /// Drops the job's channel when nobody listens any more.
    pub fn prune(&self, id: JobId) {
        let mut map = self.senders.lock().unwrap_or_else(|p| p.into_inner());
        if map.get(&id).is_some_and(|tx| tx.receiver_count() == 0) {
            map.remove(&id);
        }
    }

    /// Number of jobs with a channel (tests).
    #[cfg(test)]
    pub fn channels(&self) -> usize {
        self.senders.lock().map(|m| m.len()).unwrap_or(0)
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use kgym_core::JobStatus;

    fn ev(job: u64) -> JobEvent {
        JobEvent::Status {
            job: JobId::new(job),
            status: JobStatus::Pending,
            stage: None,
            worker: None,
            time: chrono::Utc::now(),
        }
    }

    #[tokio::test]
    async fn events_reach_only_their_job_and_channels_are_dropped() {
        let hub = EventHub::default();
        let mut rx = hub.subscribe(JobId::new(1));
        hub.emit(&ev(2));
        hub.emit(&ev(1));
        match rx.recv().await.unwrap() {
            JobEvent::Status { job, .. } => assert_eq!(job, JobId::new(1)),
            other => panic!("unexpected {other:?}"),
        }
        assert!(rx.try_recv().is_err(), "job 2's event reached job 1's watcher");
        drop(rx);
        hub.emit(&ev(1));
        assert_eq!(hub.channels(), 0);
    }
}
