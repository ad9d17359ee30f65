//! [`MachineRouter`]: one [`VmRunner`] for a worker that has both a local
//! runner and a GCE one, picking by the request's machine.

use std::sync::Arc;

use async_trait::async_trait;

use crate::error::{Error, Result};
use crate::runner::{RunContext, RunOutput, RunRequest, VmRunner};

/// Sends runs on a `gce:<type>` machine ([`kgym_core::MachineSpec::gce`])
/// to the GCE runner, every other run to the local runner (QEMU).
#[derive(Debug, Clone)]
pub struct MachineRouter {
    local: Arc<dyn VmRunner>,
    gce: Option<Arc<dyn VmRunner>>,
}

impl MachineRouter {
    /// A router with only a local runner: `gce:` machines are refused.
    pub fn new(local: Arc<dyn VmRunner>) -> Self {
        Self { local, gce: None }
    }

    /// Runs `gce:` machines on `gce` (builder style).
    pub fn with_gce(mut self, gce: Arc<dyn VmRunner>) -> Self {
        self.gce = Some(gce);
        self
    }
}

#[async_trait]
impl VmRunner for MachineRouter {
    async fn run(&self, req: RunRequest, ctx: &RunContext) -> Result<RunOutput> {
        match (req.machine.gce, &self.gce) {
            (None, _) => self.local.run(req, ctx).await,
            (Some(_), Some(gce)) => gce.run(req, ctx).await,
            (Some(t), None) => Err(Error::InvalidRequest {
                reason: format!("machine gce:{t} runs on Compute Engine, and this worker has no GCE runner"),
            }),
        }
    }
}
