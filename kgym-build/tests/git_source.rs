//! A real kernel built from a git repository the test creates with git2:
//! the repository holds linux-source-6.1 (commit A on `main`); the build
//! asks for commit B, which is on no ref at all (dangling), so it can only
//! be fetched on its own by hash. (The repository cache's unit tests cover
//! a commit pushed after the cache was populated, on small repositories.) A backport
//! whose fix is on a side branch is cherry-picked because the guilty commit
//! (A) is in the checkout. The tree is a lineage tree (as bisection's): the
//! next commit, C, moves it in place, and a stale object planted in its
//! build directory makes the warm build fail, which must be retried cold.
//! ccache (warmed by the shared test kernel) keeps the makes cheap; the
//! config is the test kernel's.

mod common;

use std::path::Path;

use common::{kasan_args, scratch_builder, scratch_data_dir, test_kernel_available};
use git2::{Oid, Repository, Signature};
use kgym_build::{BuildContext, KernelBuilder};
use kgym_core::stage::build::{Backport, BuildArgs, CacheStatus, KernelSource};
use kgym_testkit::test_kernel;

/// Writes `dir` as a git tree (files, executables, symlinks), reading it
/// only.
fn write_tree(repo: &Repository, dir: &Path) -> Oid {
    use std::os::unix::fs::PermissionsExt;
    let mut builder = repo.treebuilder(None).unwrap();
    for entry in std::fs::read_dir(dir).unwrap() {
        let entry = entry.unwrap();
        let path = entry.path();
        let meta = path.symlink_metadata().unwrap();
        let name = entry.file_name();
        let (id, mode) = if meta.is_dir() {
            (write_tree(repo, &path), 0o040000)
        } else if meta.file_type().is_symlink() {
            let target = std::fs::read_link(&path).unwrap();
            (repo.blob(target.as_os_str().as_encoded_bytes()).unwrap(), 0o120000)
        } else {
            let mode = if meta.permissions().mode() & 0o111 != 0 { 0o100755 } else { 0o100644 };
            (repo.blob_path(&path).unwrap(), mode)
        };
        builder.insert(name, id, mode).unwrap();
    }
    builder.write().unwrap()
}

fn commit_dir(repo: &Repository, dir: &Path, message: &str) -> Oid {
    let tree = repo.find_tree(write_tree(repo, dir)).unwrap();
    let sig = Signature::new("kgym test", "test@kgym", &git2::Time::new(1_700_000_000, 0)).unwrap();
    repo.commit(None, &sig, &sig, message, &tree, &[]).unwrap()
}

/// A commit on top of `parent` that changes one file's text (the tree is
/// updated in place, without scanning a work tree).
fn commit_edit(repo: &Repository, parent: Oid, file: &str, from: &str, to: &str, message: &str) -> Oid {
    let parent = repo.find_commit(parent).unwrap();
    let tree = parent.tree().unwrap();
    let entry = tree.get_path(Path::new(file)).unwrap();
    let text = String::from_utf8(repo.find_blob(entry.id()).unwrap().content().to_vec()).unwrap();
    assert!(text.contains(from), "{file} lacks {from:?}");
    let blob = repo.blob(text.replacen(from, to, 1).as_bytes()).unwrap();
    let mut update = git2::build::TreeUpdateBuilder::new();
    update.upsert(file, blob, git2::FileMode::Blob);
    let new_tree = repo.find_tree(update.create_updated(repo, &tree).unwrap()).unwrap();
    let sig = Signature::new("kgym test", "test@kgym", &git2::Time::new(1_700_000_000, 0)).unwrap();
    repo.commit(None, &sig, &sig, message, &new_tree, &[&parent]).unwrap()
}

#[tokio::test]
async fn builds_a_commit_only_reachable_by_fetch_with_a_backport_then_moves_on_and_retries_cold() {
    if !test_kernel_available() {
        return;
    }
    // Warms ccache with the same config (testkit's make has kgym-build's
    // shape: same flags, same relative layout).
    let base = test_kernel().await;
    let data = scratch_data_dir();
    let t0 = std::time::Instant::now();

    // The origin: a bare repository holding the tarball's tree (the shared
    // extraction, only read), committed with git2.
    let builder = scratch_builder(&data.path().join("data")).build().unwrap();
    let pristine = builder
        .source_tree(Path::new(kgym_testkit::KERNEL_TARBALL), &BuildContext::new(data.path().join("x")))
        .await
        .unwrap();
    let origin_dir = data.path().join("origin.git");
    let origin = Repository::init_bare(&origin_dir).unwrap();
    let a = commit_dir(&origin, &pristine, "linux-source-6.1");
    assert!(!pristine.join(".git").exists(), "the shared source tree was written to");
    origin.reference("refs/heads/main", a, true, "").unwrap();
    eprintln!("origin commit A after {:.0}s", t0.elapsed().as_secs_f64());

    // A fix on a side branch (a new comment line: a harmless real change).
    let fix = commit_edit(
        &origin,
        a,
        "kernel/sys.c",
        "SYSCALL_DEFINE0(getpid)\n{\n",
        "SYSCALL_DEFINE0(getpid)\n{\n\t/* fixed by kgym's backport */\n",
        "kgym: test fix",
    );
    origin.reference("refs/heads/fixes", fix, true, "").unwrap();
    // Commit B, on top of A, on no ref at all (dangling in the origin).
    let b = commit_edit(
        &origin,
        a,
        "kernel/sys.c",
        "SYSCALL_DEFINE0(getppid)\n{\n",
        "SYSCALL_DEFINE0(getppid)\n{\n\t/* commit B */\n",
        "kgym: commit B",
    );

    let url = format!("file://{}", origin_dir.display());
    // A lineage tree (as bisection uses): the next commit moves it in place.
    let mut req = BuildArgs {
        source: KernelSource::git(&url, b.to_string()),
        warm_lineage: Some("git-source-test".into()),
        ..kasan_args()
    };
    req.backports.push(Backport {
        fix_hash: fix.to_string(),
        fix_title: "kgym: test fix".into(),
        guilty_hash: Some(a.to_string()),
        force_merge: false,
    });
    let log = common::sink();
    let out = builder.build(&req, &BuildContext::new(data.path().join("out")).with_logs(log.clone())).await.unwrap();
    for step in log.lines().iter().filter(|l| l.starts_with("kgym:")) {
        eprintln!("{step}");
    }
    assert_eq!(out.cache, CacheStatus::Miss);
    assert_eq!(out.commit.as_deref(), Some(b.to_string().as_str()));
    assert_eq!(out.backports_applied, [fix.to_string()]);
    let tree_src = log
        .lines()
        .iter()
        .find_map(|l| l.strip_prefix("kgym: preparing cold tree "))
        .and_then(|rest| rest.split_whitespace().next())
        .map(|key| data.path().join("data/trees").join(key).join("src"))
        .expect("the tree key is logged");
    let sys_c = std::fs::read_to_string(tree_src.join("kernel/sys.c")).unwrap();
    assert!(sys_c.contains("/* commit B */") && sys_c.contains("/* fixed by kgym's backport */"));
    // Same sources and config as the test kernel up to comments: same code.
    let config = std::fs::read_to_string(&out.config).unwrap();
    assert!(config.contains("CONFIG_KASAN=y"));
    assert!(std::fs::metadata(&out.vmlinux).unwrap().len() > 1 << 20);
    assert_ne!(
        std::fs::read(&out.vmlinux).unwrap(),
        std::fs::read(&base.vmlinux).unwrap(),
        "git builds carry their commit in the version"
    );
    eprintln!(
        "git build: checkout {:.0}s, config {:.0}s, compile {:.0}s, total {:.0}s, {} objects compiled",
        out.timings.checkout_secs,
        out.timings.config_secs,
        out.timings.compile_secs,
        out.timings.total_secs,
        out.compiled.len()
    );

    // A stale object the move to the next commit does not rebuild (an
    // object of a file the commit leaves alone, newer than its source, but
    // garbage): the warm link fails outside the changed files, so the
    // builder builds the same sources once more from an empty build
    // directory and the step succeeds.
    let stale = tree_src.join(".kgym-out/kernel/fork.o");
    assert!(stale.is_file(), "{} is built", stale.display());
    std::fs::write(&stale, b"not an object file").unwrap();
    let c = commit_edit(
        &origin,
        b,
        "kernel/sys.c",
        "SYSCALL_DEFINE0(getuid)\n{\n",
        "SYSCALL_DEFINE0(getuid)\n{\n\t/* commit C */\n",
        "kgym: commit C",
    );
    origin.reference("refs/heads/main", c, true, "").unwrap();
    let req_c = BuildArgs { source: KernelSource::git(&url, c.to_string()), ..req.clone() };
    let log_c = common::sink();
    let out_c =
        builder.build(&req_c, &BuildContext::new(data.path().join("out-c")).with_logs(log_c.clone())).await.unwrap();
    let lines = log_c.lines();
    assert!(lines.iter().any(|l| l.contains("moving the warm tree from")), "the lineage tree moved in place");
    assert!(
        lines.iter().any(|l| l.contains("building cold to rule out stale objects")),
        "the failed warm build is retried cold:\n{}",
        lines.iter().filter(|l| l.starts_with("kgym:")).cloned().collect::<Vec<_>>().join("\n")
    );
    assert_eq!(out_c.cache, CacheStatus::Miss, "a cold retry is reported as a miss");
    assert_eq!(out_c.commit.as_deref(), Some(c.to_string().as_str()));
    let sys_c = std::fs::read_to_string(tree_src.join("kernel/sys.c")).unwrap();
    assert!(sys_c.contains("/* commit C */") && sys_c.contains("/* commit B */"));
    assert_ne!(std::fs::read(&stale).unwrap(), b"not an object file", "the stale object was rebuilt");
    assert!(std::fs::metadata(&out_c.vmlinux).unwrap().len() > 1 << 20);
    eprintln!("cold retry after the failed warm build: total {:.0}s", out_c.timings.total_secs);
}
