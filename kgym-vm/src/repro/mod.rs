//! Turning a [`Reproducer`] into files for the guest and the command that
//! runs it once: [`c`] compiles C programs, [`syz`] provides syzkaller's
//! `syz-execprog`/`syz-executor`.

pub mod c;
pub mod syz;

use std::path::{Path, PathBuf};

use kgym_core::stage::build::Arch;
use kgym_core::stage::reproduce::{Reproducer, ReproducerKind};
use tokio_util::sync::CancellationToken;

use crate::error::{Error, Result};

/// A reproducer ready to be copied into a guest.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct PreparedRepro {
    /// Files for the guest: (name in the guest's work directory, host path).
    pub files: Vec<(String, PathBuf)>,
    /// The shell command that runs the reproducer once, from the guest's
    /// work directory.
    pub command: String,
    /// Whether the program reports its executions itself (syz-execprog's
    /// `executed programs: N`), so that their absence means it is stuck.
    pub prints_executions: bool,
    /// The syzkaller commit used (syz programs).
    pub syzkaller_commit: Option<String>,
    /// What the user should hear about the preparation: syzkaller commits
    /// passed over for the fallback, and why.
    pub notes: Vec<String>,
}

/// What preparing a reproducer needs from the host.
#[derive(Debug, Clone)]
pub struct ReproTools {
    /// The C compiler (`gcc`).
    pub cc: PathBuf,
    /// Where syzkaller binaries come from.
    pub syzkaller: syz::SyzkallerProvider,
}

/// Prepares `repro` for `arch` in `dir`.
pub async fn prepare(
    repro: &Reproducer,
    arch: Arch,
    tools: &ReproTools,
    dir: &Path,
    cancel: &CancellationToken,
) -> Result<PreparedRepro> {
    if repro.text.trim().is_empty() {
        return Err(Error::InvalidRequest { reason: "the reproducer is empty".into() });
    }
    match repro.kind {
        ReproducerKind::C => {
            let bin = c::compile(&tools.cc, &repro.text, arch, dir, cancel).await?;
            Ok(PreparedRepro {
                files: vec![("kgym-repro".into(), bin)],
                command: "./kgym-repro".into(),
                prints_executions: false,
                syzkaller_commit: None,
                notes: Vec::new(),
            })
        }
        ReproducerKind::Syz => {
            let opts = syz::SyzOptions::from_program(&repro.text)?;
            let bins = tools
                .syzkaller
                .binaries(repro.syzkaller_commit.as_deref(), repro.syzkaller_fallback_commit.as_deref(), arch, cancel)
                .await?;
            let prog = dir.join("repro.syz");
            tokio::fs::write(&prog, &repro.text).await.map_err(Error::io(&prog))?;
            Ok(PreparedRepro {
                files: vec![
                    ("syz-execprog".into(), bins.execprog.clone()),
                    ("syz-executor".into(), bins.executor.clone()),
                    ("repro.syz".into(), prog),
                ],
                command: syz::execprog_command(
                    "./syz-execprog",
                    "./syz-executor",
                    arch,
                    &opts,
                    repro.nproc,
                    "repro.syz",
                ),
                prints_executions: true,
                notes: bins
                    .skipped
                    .iter()
                    .map(|s| {
                        format!("syzkaller {} cannot be used, using {} instead: {}", s.commit, bins.commit, s.reason)
                    })
                    .collect(),
                syzkaller_commit: Some(bins.commit),
            })
        }
    }
}
