//! A bound on the event streams one client (peer address) holds open: each
//! costs the server a connection, a task and a subscription for as long
//! as the client keeps it, so one client cannot take them all. Past the
//! bound a new stream is refused with 429 (`too-many-streams`);
//! `SchedulerExt::wait` then polls instead.

use std::collections::HashMap;
use std::net::IpAddr;
use std::sync::{Arc, Mutex};

use crate::error::Error;

/// Open event streams per client.
#[derive(Debug)]
pub(crate) struct StreamLimits {
    limit: usize,
    open: Mutex<HashMap<IpAddr, usize>>,
}

/// One open stream, counted until dropped (the stream ended or the client
/// went away).
#[derive(Debug)]
pub(crate) struct StreamPermit {
    limits: Arc<StreamLimits>,
    client: IpAddr,
}

impl StreamLimits {
    /// At most `limit` open streams per client (at least 1).
    pub fn new(limit: usize) -> Arc<Self> {
        Arc::new(Self { limit: limit.max(1), open: Mutex::new(HashMap::new()) })
    }

    /// Counts a new stream of `client`, or refuses it. A request whose
    /// client is not known (the router served by someone else's listener)
    /// is not counted.
    pub fn acquire(self: &Arc<Self>, client: Option<IpAddr>) -> Result<Option<StreamPermit>, Error> {
        let Some(client) = client else { return Ok(None) };
        let mut open = self.open.lock().unwrap_or_else(|p| p.into_inner());
        let n = open.entry(client).or_insert(0);
        if *n >= self.limit {
            return Err(Error::TooManyStreams { limit: self.limit as u64 });
        }
        *n += 1;
        Ok(Some(StreamPermit { limits: Arc::clone(self), client }))
    }

    /// Streams `client` holds now.
    #[cfg(test)]
    pub fn open(&self, client: IpAddr) -> usize {
        self.open.lock().map(|m| m.get(&client).copied().unwrap_or(0)).unwrap_or(0)
    }
}

impl Drop for StreamPermit {
    fn drop(&mut self) {
        let mut open = self.limits.open.lock().unwrap_or_else(|p| p.into_inner());
        if let Some(n) = open.get_mut(&self.client) {
            *n = n.saturating_sub(1);
            if *n == 0 {
                open.remove(&self.client);
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn each_client_gets_its_own_bound_and_permits_give_back() {
        let limits = StreamLimits::new(2);
        let (a, b): (IpAddr, IpAddr) = ("10.0.0.1".parse().unwrap(), "10.0.0.2".parse().unwrap());
        let p1 = limits.acquire(Some(a)).unwrap();
        let _p2 = limits.acquire(Some(a)).unwrap();
        assert!(matches!(limits.acquire(Some(a)), Err(Error::TooManyStreams { limit: 2 })));
        assert!(limits.acquire(Some(b)).unwrap().is_some(), "another client is not affected");
        drop(p1);
        assert_eq!(limits.open(a), 1);
        assert!(limits.acquire(Some(a)).unwrap().is_some());
        assert!(limits.acquire(None).unwrap().is_none());
    }
}
