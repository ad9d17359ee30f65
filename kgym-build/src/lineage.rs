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

/// The paths that differ between `from` and `to`. Blocking.
fn changed_paths(repo: &Repository, from: Oid, to: Oid) -> Result<Vec<String>> {
    let tree_of = |oid: Oid| {
        repo.find_commit(oid).and_then(|c| c.tree()).map_err(|e| Error::git(format!("read commit {oid}"), e))
    };
    let (old, new) = (tree_of(from)?, tree_of(to)?);
    let diff = repo
        .diff_tree_to_tree(Some(&old), Some(&new), None)
        .map_err(|e| Error::git(format!("compare {from} with {to}"), e))?;
    let mut paths: Vec<String> = diff
        .deltas()
        .flat_map(|d| [d.old_file().path(), d.new_file().path()])
        .flatten()
        .map(|p| p.to_string_lossy().into_owned())
        .collect();
    paths.dedup();
    Ok(paths)
}

/// Whether a compile error (make's first error line, `path:line:col:
/// error: ...`) is in a source file the last move changed: then the new
/// sources themselves are broken and a cold build would fail the same way.
pub(crate) fn error_in_changed_file(first_error: Option<&str>, changed: &[String]) -> bool {
    let Some(line) = first_error else { return false };
    let Some((file, _)) = line.split_once(':') else { return false };
    let file = file.trim().trim_start_matches("./").trim_start_matches("../");
    !file.is_empty() && changed.iter().any(|c| c == file || c.ends_with(&format!("/{file}")))
}

/// Moves a ready tree to the commit of `source`: reverts its patch, checks
/// the commit (plus backports) out in place over the previous one — files
/// that did not change keep their mtimes, untracked files are removed, the
/// ignored build directory stays — and regenerates the config when a
/// config input changed. The tree then needs a make. Returns the paths
/// that changed (`None`: unknown, the tree had no commit).
pub(crate) async fn move_to_commit(
    tree: &mut WarmTree,
    source: Source,
    make: &MakeEnv,
    config: &KernelConfig,
    limits: &Limits,
    log: &BuildLog,
) -> Result<Option<Vec<String>>> {
    let Source::Git { commit, backports, .. } = source else { return Ok(None) };
    switch_patch(tree, None, limits, log).await?;
    log.step(&format!("moving the warm tree from {} to {commit}", tree.state.commit.as_deref().unwrap_or("?")));
    tree.state.busy = Some(Busy::Patching);
    tree.state.built = false;
    tree.save()?;
    let src = tree.src();
    let (decisions, backports, changed) = run_blocking("move the checkout", move || {
        let repo = Repository::open(&src).map_err(|e| Error::git(format!("open work tree {}", src.display()), e))?;
        let from = repo.head().ok().and_then(|h| h.target());
        let (head, decisions) = backport::apply(&repo, commit, &backports)?;
        let changed = from.map(|from| changed_paths(&repo, from, head)).transpose()?;
        checkout::checkout(&repo, head)?;
        Ok((decisions, backports, changed))
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
    let config_changed = changed.as_ref().is_none_or(|c| c.iter().any(|p| is_config_input(Path::new(p))));
    log.step(&format!("{} files changed", changed.as_ref().map_or("unknown".to_owned(), |c| c.len().to_string())));
    if config_changed {
        log.step("a config input changed: generating the config again (olddefconfig)");
        tree.state.config_mismatches = kconfig::generate(make, config, limits, log).await?;
    } else {
        log.step("no config input changed: keeping the config");
    }
    tree.state.busy = None;
    tree.save()?;
    Ok(changed)
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
        for p in [
            "init/Kconfig",
            "arch/x86/Kconfig.debug",
            "arch/x86/configs/x86_64_defconfig",
            "kernel/configs/tiny.config",
        ] {
            assert!(is_config_input(Path::new(p)), "{p}");
        }
        for p in ["kernel/sys.c", "Makefile", "Documentation/kbuild/kconfig.rst"] {
            assert!(!is_config_input(Path::new(p)), "{p}");
        }
    }

    #[test]
    fn the_paths_changed_between_commits_are_listed() {
        let dir = tempfile::tempdir().unwrap();
        let repo = Repository::init_bare(dir.path()).unwrap();
        let c1 = commit_files(&repo, None, &[("init/Kconfig", "config A\n"), ("kernel/sys.c", "1\n")], "one");
        let c2 = commit_files(&repo, Some(c1), &[("kernel/sys.c", "2\n")], "two");
        let c3 = commit_files(&repo, Some(c2), &[("init/Kconfig", "config B\n")], "three");
        assert_eq!(changed_paths(&repo, c1, c2).unwrap(), ["kernel/sys.c"]);
        assert_eq!(changed_paths(&repo, c2, c3).unwrap(), ["init/Kconfig"]);
        assert_eq!(changed_paths(&repo, c3, c1).unwrap(), ["init/Kconfig", "kernel/sys.c"]);
    }

    #[test]
    fn errors_in_changed_files_need_no_cold_retry() {
        let changed = vec!["kernel/sys.c".to_owned()];
        assert!(error_in_changed_file(Some("../kernel/sys.c:12:1: error: expected ';'"), &changed));
        assert!(error_in_changed_file(Some("kernel/sys.c:12:1: error: x"), &changed));
        assert!(!error_in_changed_file(Some("kernel/fork.c:1:1: error: x"), &changed));
        assert!(!error_in_changed_file(Some("ld: undefined reference to `x'"), &changed));
        assert!(!error_in_changed_file(None, &changed));
    }
}
