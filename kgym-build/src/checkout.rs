//! Work trees of cached repositories: a non-bare repository per warm tree
//! whose object store borrows the cache's (git's `alternates`, like
//! `git clone --shared`), so a checkout copies no history.

use std::path::Path;

use git2::build::CheckoutBuilder;
use git2::{Oid, Repository};

use crate::error::{Error, Result};

/// Creates a work-tree repository at `src` (which must not exist yet or be
/// empty) that reads objects from the bare repository `bare`. Blocking.
pub(crate) fn init_worktree(bare: &Path, src: &Path) -> Result<Repository> {
    let repo = Repository::init(src).map_err(|e| Error::git(format!("create work tree {}", src.display()), e))?;
    let objects = bare.join("objects");
    let objects = objects.canonicalize().map_err(|e| Error::io(&objects, e))?;
    let alternates = src.join(".git/objects/info/alternates");
    if let Some(parent) = alternates.parent() {
        std::fs::create_dir_all(parent).map_err(|e| Error::io(parent, e))?;
    }
    std::fs::write(&alternates, format!("{}\n", objects.display())).map_err(|e| Error::io(&alternates, e))?;
    // Reopen so libgit2 reads the alternates file.
    drop(repo);
    Repository::open(src).map_err(|e| Error::git(format!("open work tree {}", src.display()), e))
}

/// Checks out `oid` into the work tree (detached HEAD), overwriting
/// whatever is there. Blocking.
pub(crate) fn checkout(repo: &Repository, oid: Oid) -> Result<()> {
    let what = || format!("check out {oid}");
    let commit = repo.find_commit(oid).map_err(|e| Error::git(what(), e))?;
    let mut opts = CheckoutBuilder::new();
    opts.force().remove_untracked(true);
    repo.checkout_tree(commit.as_object(), Some(&mut opts)).map_err(|e| Error::git(what(), e))?;
    repo.set_head_detached(oid).map_err(|e| Error::git(what(), e))?;
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::repo_cache::tests::commit_files;

    #[test]
    fn work_tree_borrows_objects_and_checks_out_files() {
        let dir = tempfile::tempdir().unwrap();
        let bare = Repository::init_bare(dir.path().join("cache.git")).unwrap();
        let c1 = commit_files(&bare, None, &[("kernel/sys.c", "int x;\n"), ("Makefile", "all:\n")], "one");
        let c2 = commit_files(&bare, Some(c1), &[("kernel/sys.c", "int y;\n")], "two");

        let src = dir.path().join("tree/src");
        let repo = init_worktree(bare.path(), &src).unwrap();
        checkout(&repo, c2).unwrap();
        assert_eq!(std::fs::read_to_string(src.join("kernel/sys.c")).unwrap(), "int y;\n");
        assert_eq!(repo.head().unwrap().target(), Some(c2));
        // No objects were copied: the work tree's own store is empty.
        let own = std::fs::read_dir(src.join(".git/objects"))
            .unwrap()
            .filter(|e| e.as_ref().unwrap().file_name().len() == 2)
            .count();
        assert_eq!(own, 0, "objects were copied into the work tree");

        std::fs::write(src.join("stray.o"), "x").unwrap();
        checkout(&repo, c1).unwrap();
        assert_eq!(std::fs::read_to_string(src.join("kernel/sys.c")).unwrap(), "int x;\n");
        assert!(!src.join("stray.o").exists());
    }
}
