//! Deleting what a run created: its instances, then its image, then the
//! disk tarball it uploaded.
//!
//! Names are recorded in [`Created`] *before* the call that creates them
//! (a call cut by a timeout or a cancel may still have created the
//! resource); deleting one that never came to be is a 404, which is fine.
//! [`CleanupGuard::cleanup`] runs on every path of a run (success, error,
//! cancel); if the run's future is dropped before that, the guard's `Drop`
//! spawns the same deletion on the runtime.

use std::sync::{Arc, Mutex};
use std::time::Duration;

use kgym_core::{ArtifactKey, ArtifactStore};

use super::client::{ComputeClient, OperationScope};
use super::runner::lock;
use crate::error::{Error, Result};
use crate::runner::RunContext;

/// The resources a run has created (or may have).
#[derive(Debug, Default, Clone)]
pub(crate) struct Created {
    pub(crate) image: Option<String>,
    pub(crate) instances: Vec<String>,
    /// The disk tarball the run packed and uploaded.
    pub(crate) upload: Option<(ArtifactStore, ArtifactKey)>,
}

impl Created {
    fn is_empty(&self) -> bool {
        self.image.is_none() && self.instances.is_empty() && self.upload.is_none()
    }
}

/// Deletes a run's resources exactly once.
#[derive(Debug)]
pub(crate) struct CleanupGuard {
    client: ComputeClient,
    created: Arc<Mutex<Created>>,
    timeout: Duration,
    armed: bool,
}

impl CleanupGuard {
    pub(crate) fn new(client: ComputeClient, created: Arc<Mutex<Created>>, timeout: Duration) -> Self {
        Self { client, created, timeout, armed: true }
    }

    /// Deletes everything recorded; the first failure (a 404 is none).
    pub(crate) async fn cleanup(&mut self, ctx: &RunContext) -> Result<()> {
        self.armed = false;
        let created = std::mem::take(&mut *lock(&self.created));
        delete_all(&self.client, created, self.timeout, &|line| ctx.line(line)).await
    }
}

impl Drop for CleanupGuard {
    fn drop(&mut self) {
        if !self.armed {
            return;
        }
        let created = std::mem::take(&mut *lock(&self.created));
        if created.is_empty() {
            return;
        }
        let (client, timeout) = (self.client.clone(), self.timeout);
        match tokio::runtime::Handle::try_current() {
            Ok(rt) => {
                rt.spawn(async move {
                    let log = |line: String| tracing::warn!("{line}");
                    if let Err(e) = delete_all(&client, created, timeout, &log).await {
                        tracing::error!(error = %e, "cleanup of a dropped GCE run failed");
                    }
                });
            }
            Err(_) => tracing::error!(?created, "GCE run dropped outside a runtime: these resources are left"),
        }
    }
}

/// Deletes the instances (in parallel), then the image, then the upload.
async fn delete_all(
    client: &ComputeClient,
    created: Created,
    timeout: Duration,
    log: &(dyn Fn(String) + Sync),
) -> Result<()> {
    let deletions = created.instances.iter().map(|name| async move {
        let call = format!("instances.delete {name}");
        let r = bounded(timeout, &call, async {
            let op = client.delete_instance(name).await?;
            client.wait(OperationScope::Zone, op, &call).await
        })
        .await;
        settle(r, &call, log)
    });
    let mut first_err = futures::future::join_all(deletions).await.into_iter().find_map(Result::err);
    if let Some(image) = &created.image {
        let call = format!("images.delete {image}");
        let r = bounded(timeout, &call, async {
            let op = client.delete_image(image).await?;
            client.wait(OperationScope::Global, op, &call).await
        })
        .await;
        if let Err(e) = settle(r, &call, log) {
            first_err.get_or_insert(e);
        }
    }
    if let Some((store, key)) = &created.upload {
        // A tarball left behind costs storage only: noted, not a failure.
        match tokio::time::timeout(timeout, store.delete(key)).await {
            Ok(Ok(())) => log(format!("cleanup: deleted the uploaded disk {key}")),
            Ok(Err(e)) => log(format!("cleanup: deleting the uploaded disk {key} failed, it is left: {e}")),
            Err(_) => log(format!("cleanup: deleting the uploaded disk {key} timed out, it is left")),
        }
    }
    first_err.map_or(Ok(()), Err)
}

/// A deletion's result: gone (or never there) is success.
fn settle<T>(r: Result<T>, call: &str, log: &(dyn Fn(String) + Sync)) -> Result<()> {
    match r {
        Ok(_) => {
            log(format!("cleanup: {call} done"));
            Ok(())
        }
        Err(Error::GceNotFound { .. }) => {
            log(format!("cleanup: {call}: already gone"));
            Ok(())
        }
        Err(e) => {
            log(format!("cleanup: {call} FAILED, the resource may be left: {e}"));
            Err(e)
        }
    }
}

async fn bounded<T>(timeout: Duration, call: &str, f: impl Future<Output = Result<T>>) -> Result<T> {
    tokio::time::timeout(timeout, f).await.unwrap_or_else(|_| {
        Err(Error::GceTransport { call: call.to_owned(), reason: format!("no result after {timeout:?}") })
    })
}
