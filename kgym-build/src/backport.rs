//! Backports with kGym's semantics: a build fix is cherry-picked only when
//! the checkout lacks it (neither the fix commit is an ancestor nor a commit
//! with the fix's title is in the history) and, when a guilty commit is
//! named, the checkout contains that commit.
//!
//! Cherry-picks are committed (with a fixed committer and the base's
//! commit time, so the resulting hash — which ends up in the kernel's
//! version string — is reproducible) into the work tree's own repository;
//! the cache is never written.

use git2::{FileFavor, MergeOptions, Oid, Repository, Signature};
use kgym_core::stage::build::Backport;

use crate::error::{Error, Result};

/// A backport whose commits were looked up in the cache.
#[derive(Debug, Clone)]
pub(crate) struct ResolvedBackport {
    /// The request.
    pub spec: Backport,
    /// The fix commit.
    pub fix: Oid,
    /// The guilty commit: `None` when none was named; `Some(None)` when it
    /// was named but does not exist (then it cannot be an ancestor).
    pub guilty: Option<Option<Oid>>,
}

/// Why a backport was skipped or applied (for the build log).
#[derive(Debug, Clone, PartialEq, Eq)]
pub(crate) enum Decision {
    /// The checkout already has the fix (by ancestry or by title).
    AlreadyFixed,
    /// The guilty commit is not in the checkout.
    NotGuilty,
    /// Cherry-picked.
    Applied,
}

/// Whether the history of `head` contains `fix` or a commit titled `title`.
fn has_fix(repo: &Repository, head: Oid, fix: Oid, title: &str) -> Result<bool> {
    if head == fix || repo.graph_descendant_of(head, fix).map_err(|e| Error::git("compare history", e))? {
        return Ok(true);
    }
    let title = title.trim();
    if title.is_empty() {
        return Ok(false);
    }
    let mut walk = repo.revwalk().map_err(|e| Error::git("walk history", e))?;
    walk.push(head).map_err(|e| Error::git("walk history", e))?;
    for oid in walk {
        let oid = oid.map_err(|e| Error::git("walk history", e))?;
        let commit = repo.find_commit(oid).map_err(|e| Error::git("walk history", e))?;
        if commit.summary().ok().flatten().is_some_and(|s| s.trim() == title) {
            return Ok(true);
        }
    }
    Ok(false)
}

fn contains(repo: &Repository, head: Oid, ancestor: Oid) -> Result<bool> {
    Ok(head == ancestor || repo.graph_descendant_of(head, ancestor).map_err(|e| Error::git("compare history", e))?)
}

/// Applies `backports` in order on top of `head`; returns the new head and
/// one decision per backport. Blocking.
pub(crate) fn apply(repo: &Repository, head: Oid, backports: &[ResolvedBackport]) -> Result<(Oid, Vec<Decision>)> {
    let base = repo.find_commit(head).map_err(|e| Error::git(format!("read commit {head}"), e))?;
    let committer_time = base.committer().when();
    let mut current = head;
    let mut decisions = Vec::with_capacity(backports.len());
    for bp in backports {
        let fail = |reason: String| Error::BackportFailed {
            fix: bp.spec.fix_hash.clone(),
            title: bp.spec.fix_title.clone(),
            reason,
        };
        // Decide on the original checkout, like kGym: earlier backports do
        // not make a later guilty commit "present".
        if has_fix(repo, head, bp.fix, &bp.spec.fix_title)? {
            decisions.push(Decision::AlreadyFixed);
            continue;
        }
        match bp.guilty {
            Some(None) => {
                decisions.push(Decision::NotGuilty);
                continue;
            }
            Some(Some(g)) if !contains(repo, head, g)? => {
                decisions.push(Decision::NotGuilty);
                continue;
            }
            _ => {}
        }
        let fix = repo.find_commit(bp.fix).map_err(|e| fail(format!("read the fix commit: {e}")))?;
        let ours = repo.find_commit(current).map_err(|e| Error::git(format!("read commit {current}"), e))?;
        let mainline = if fix.parent_count() > 1 { 1 } else { 0 };
        let mut opts = MergeOptions::new();
        if bp.spec.force_merge {
            opts.file_favor(FileFavor::Theirs);
        }
        let mut index = repo
            .cherrypick_commit(&fix, &ours, mainline, Some(&opts))
            .map_err(|e| fail(format!("cherry-pick: {e}")))?;
        if index.has_conflicts() {
            let paths: Vec<String> = index
                .conflicts()
                .map_err(|e| Error::git("list conflicts", e))?
                .filter_map(|c| c.ok())
                .filter_map(|c| c.our.or(c.their).or(c.ancestor))
                .map(|e| String::from_utf8_lossy(&e.path).into_owned())
                .collect();
            return Err(fail(format!("conflicts in {}", paths.join(", "))));
        }
        let tree_id = index.write_tree_to(repo).map_err(|e| Error::git("write backport tree", e))?;
        let tree = repo.find_tree(tree_id).map_err(|e| Error::git("read backport tree", e))?;
        let committer =
            Signature::new("kgym", "kgym@localhost", &committer_time).map_err(|e| Error::git("make signature", e))?;
        let message = fix.message_raw().unwrap_or("backport");
        current = repo
            .commit(None, &fix.author(), &committer, message, &tree, &[&ours])
            .map_err(|e| Error::git("commit backport", e))?;
        decisions.push(Decision::Applied);
    }
    Ok((current, decisions))
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::repo_cache::tests::commit_files;

    fn spec(fix: Oid, title: &str, guilty: Option<Oid>, force: bool) -> Backport {
        Backport {
            fix_hash: fix.to_string(),
            fix_title: title.to_owned(),
            guilty_hash: guilty.map(|g| g.to_string()),
            force_merge: force,
        }
    }

    fn file_at(repo: &Repository, commit: Oid, path: &str) -> String {
        let tree = repo.find_commit(commit).unwrap().tree().unwrap();
        let entry = tree.get_path(std::path::Path::new(path)).unwrap();
        String::from_utf8(repo.find_blob(entry.id()).unwrap().content().to_vec()).unwrap()
    }

    /// History: base ─ guilty ─ head (on main); a fix branched off guilty.
    #[test]
    fn applies_only_where_needed_with_kgym_semantics() {
        let dir = tempfile::tempdir().unwrap();
        let repo = Repository::init(dir.path()).unwrap();
        let base = commit_files(&repo, None, &[("a.c", "a\n"), ("b.c", "b\n")], "base");
        let guilty = commit_files(&repo, Some(base), &[("a.c", "broken\n")], "break a");
        let head = commit_files(&repo, Some(guilty), &[("b.c", "b2\n")], "touch b");
        let fix = commit_files(&repo, Some(guilty), &[("a.c", "fixed\n")], "fix a");
        let other_guilty = commit_files(&repo, Some(base), &[("c.c", "c\n")], "elsewhere");

        // Lacks the fix, contains the guilty commit: applied.
        let bps = [ResolvedBackport { spec: spec(fix, "fix a", Some(guilty), false), fix, guilty: Some(Some(guilty)) }];
        let (new_head, d) = apply(&repo, head, &bps).unwrap();
        assert_eq!(d, vec![Decision::Applied]);
        assert_eq!(file_at(&repo, new_head, "a.c"), "fixed\n");
        assert_eq!(file_at(&repo, new_head, "b.c"), "b2\n");
        // Reproducible: same inputs give the same commit.
        assert_eq!(apply(&repo, head, &bps).unwrap().0, new_head);

        // Guilty commit not in the checkout, or unknown: skipped.
        let bps = [
            ResolvedBackport {
                spec: spec(fix, "fix a", Some(other_guilty), false),
                fix,
                guilty: Some(Some(other_guilty)),
            },
            ResolvedBackport { spec: spec(fix, "fix a", None, false), fix, guilty: Some(None) },
        ];
        let (h, d) = apply(&repo, head, &bps).unwrap();
        assert_eq!((h, d), (head, vec![Decision::NotGuilty, Decision::NotGuilty]));

        // Already fixed by ancestry, and by title (a different commit with the same title).
        let on_fix = commit_files(&repo, Some(fix), &[("d.c", "d\n")], "later");
        let same_title = commit_files(&repo, Some(head), &[("a.c", "fixed too\n")], "fix a");
        let bp = [ResolvedBackport { spec: spec(fix, "fix a", None, false), fix, guilty: None }];
        assert_eq!(apply(&repo, on_fix, &bp).unwrap(), (on_fix, vec![Decision::AlreadyFixed]));
        assert_eq!(apply(&repo, same_title, &bp).unwrap(), (same_title, vec![Decision::AlreadyFixed]));
    }

    #[test]
    fn conflicts_fail_unless_force_merge() {
        let dir = tempfile::tempdir().unwrap();
        let repo = Repository::init(dir.path()).unwrap();
        let base = commit_files(&repo, None, &[("a.c", "1\n2\n3\n")], "base");
        let head = commit_files(&repo, Some(base), &[("a.c", "1\nours\n3\n")], "ours");
        let fix = commit_files(&repo, Some(base), &[("a.c", "1\ntheirs\n3\n")], "the fix");

        let bp = [ResolvedBackport { spec: spec(fix, "the fix", None, false), fix, guilty: None }];
        let err = apply(&repo, head, &bp).unwrap_err();
        assert!(matches!(err, Error::BackportFailed { ref reason, .. } if reason.contains("a.c")), "{err}");
        assert_eq!(err.code(), kgym_core::failure::codes::BUILD_FAILED);

        let bp = [ResolvedBackport { spec: spec(fix, "the fix", None, true), fix, guilty: None }];
        let (h, d) = apply(&repo, head, &bp).unwrap();
        assert_eq!(d, vec![Decision::Applied]);
        assert_eq!(file_at(&repo, h, "a.c"), "1\ntheirs\n3\n");
    }
}
