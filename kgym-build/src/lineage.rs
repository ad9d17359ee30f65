//! Warm trees shared by the commits of one lineage
//! ([`BuildArgs::warm_lineage`](kgym_core::stage::build::BuildArgs::warm_lineage)):
//! the tree moves to the next commit in place — only the files that differ
//! are rewritten (so their mtimes tell `make` what to rebuild), the config
//! is regenerated when a Kconfig file changed, and a failed warm build can
//! start over from an empty build directory.

use std::path::Path;

use git2::{Oid, Repository};
use kgym_core::stage::build::KernelConfig;

use crate::backport::{self, Decision};
use crate::blocking::run_blocking;
use crate::checkout;
use crate::error::{Error, Result};
use crate::kconfig;
use crate::log::BuildLog;
use crate::make::MakeEnv;
use crate::pipeline::{Source, switch_patch};
use crate::process::Limits;
use crate::warm_tree::{Busy, WarmTree};

/// Whether a path is an input of the kernel's configuration: a change to
/// one means the `.config` must be generated again (`olddefconfig`).
fn is_config_input(path: &Path) -> bool {
    let name = path.file_name().map(|n| n.to_string_lossy()).unwrap_or_default();
    name.starts_with("Kconfig") || name.ends_with("defconfig") || name.ends_with(".config")
}

/// Whether the change from `from` to `to` touches a config input. Blocking.
fn config_inputs_changed(repo: &Repository, from: Oid, to: Oid) -> Result<bool> {
    let tree_of = |oid: Oid| {
        repo.find_commit(oid).and_then(|c| c.tree()).map_err(|e| Error::git(format!("read commit {oid}"), e))
    };
    let (old, new) = (tree_of(from)?, tree_of(to)?);
    let diff = repo
        .diff_tree_to_tree(Some(&old), Some(&new), None)
        .map_err(|e| Error::git(format!("compare {from} with {to}"), e))?;
    Ok(diff.deltas().any(|d| {
        [d.old_file().path(), d.new_file().path()].into_iter().flatten().any(is_config_input)
    }))
}

/// Moves a ready tree to the commit of `source`: reverts its patch, checks
/// the commit (plus backports) out in place over the previous one — files
/// that did not change keep their mtimes, untracked files are removed, the
/// ignored build directory stays — and regenerates the config when a
/// config input changed. The tree then needs a make.
pub(crate) async fn move_to_commit(
    tree: &mut WarmTree,
    source: Source,
    make: &MakeEnv,
    config: &KernelConfig,
    limits: &Limits,
    log: &BuildLog,
) -> Result<()> {
    let Source::Git { commit, backports, .. } = source else { return Ok(()) };
    switch_patch(tree, None, limits, log).await?;
    log.step(&format!("moving the warm tree from {} to {commit}", tree.state.commit.as_deref().unwrap_or("?")));
    tree.state.busy = Some(Busy::Patching);
    tree.state.built = false;
    tree.save()?;
    let src = tree.src();
    let (decisions, backports, config_changed) = run_blocking("move the checkout", move || {
        let repo = Repository::open(&src).map_err(|e| Error::git(format!("open work tree {}", src.display()), e))?;
        let from = repo.head().ok().and_then(|h| h.target());
        let (head, decisions) = backport::apply(&repo, commit, &backports)?;
        let config_changed = match from {
            Some(from) => config_inputs_changed(&repo, from, head)?,
            None => true,
        };
        checkout::checkout(&repo, head)?;
        Ok((decisions, backports, config_changed))
    })
    .await?;
    limits.check("checking out")?;
    let mut applied = Vec::new();
    for (d, bp) in decisions.iter().zip(&backports) {
        log.step(&format!("backport {} ({}): {d:?}", bp.spec.fix_hash, bp.spec.fix_title));
        if *d == Decision::Applied {
            applied.push(bp.spec.fix_hash.clone());
        }
    }
    tree.state.commit = Some(commit.to_string());
    tree.state.backports_applied = applied;
    if config_changed {
        log.step("a config input changed: generating the config again (olddefconfig)");
        tree.state.config_mismatches = kconfig::generate(make, config, limits, log).await?;
    } else {
        log.step("no config input changed: keeping the config");
    }
    tree.state.busy = None;
    tree.save()
}

/// Empties the tree's build directory and generates the config again: the
/// next make is a cold build of the same sources (ccache still helps).
pub(crate) async fn clear_build_dir(
    tree: &mut WarmTree,
    make: &MakeEnv,
    config: &KernelConfig,
    limits: &Limits,
    log: &BuildLog,
) -> Result<()> {
    let out = tree.out();
    tree.state.built = false;
    tree.save()?;
    run_blocking("empty the build directory", move || match std::fs::remove_dir_all(&out) {
        Ok(()) => Ok(()),
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => Ok(()),
        Err(e) => Err(Error::io(&out, e)),
    })
    .await?;
    tree.state.config_mismatches = kconfig::generate(make, config, limits, log).await?;
    tree.save()
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::repo_cache::tests::commit_files;

    #[test]
    fn config_inputs_are_kconfig_and_defconfig_files() {
        for p in ["init/Kconfig", "arch/x86/Kconfig.debug", "arch/x86/configs/x86_64_defconfig", "kernel/configs/tiny.config"] {
            assert!(is_config_input(Path::new(p)), "{p}");
        }
        for p in ["kernel/sys.c", "Makefile", "Documentation/kbuild/kconfig.rst"] {
            assert!(!is_config_input(Path::new(p)), "{p}");
        }
    }

    #[test]
    fn a_kconfig_change_between_commits_is_seen() {
        let dir = tempfile::tempdir().unwrap();
        let repo = Repository::init_bare(dir.path()).unwrap();
        let c1 = commit_files(&repo, None, &[("init/Kconfig", "config A\n"), ("kernel/sys.c", "1\n")], "one");
        let c2 = commit_files(&repo, Some(c1), &[("kernel/sys.c", "2\n")], "two");
        let c3 = commit_files(&repo, Some(c2), &[("init/Kconfig", "config B\n")], "three");
        assert!(!config_inputs_changed(&repo, c1, c2).unwrap());
        assert!(config_inputs_changed(&repo, c2, c3).unwrap());
        assert!(config_inputs_changed(&repo, c3, c1).unwrap());
    }
}
