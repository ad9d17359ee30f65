//! A synthetic kernel git history for bisection tests and benches: Debian's
//! linux-source-6.1 imported once into a repository cached under
//! [`test_cache_dir`](crate::test_cache_dir), then [`COMMITS`] small
//! commits: most touch a text file that is not built, every fifth adds a
//! comment to `kernel/sys.c`, commit [`BUG_AT`] applies the caller's bug
//! patch, commit [`BROKEN_AT`] does not compile (commit `BROKEN_AT + 1`
//! repairs it) and commit [`FIX_AT`] reverts the bug patch. Author and
//! committer dates are fixed, so the hashes are the same on every machine.

use std::path::{Path, PathBuf};
use std::time::Duration;

use tokio_util::sync::CancellationToken;

/// Bumped when the history changes (a new cache directory).
const VERSION: &str = "bisect-history-v1";
/// Commits on top of the imported tarball.
pub const COMMITS: usize = 30;
/// The commit that applies the bug patch.
pub const BUG_AT: usize = 10;
/// The commit that does not compile.
pub const BROKEN_AT: usize = 12;
/// The commit that reverts the bug patch.
pub const FIX_AT: usize = 22;
/// The line that breaks the build of `kernel/sys.c` at [`BROKEN_AT`].
const BROKEN_LINE: &str = "kgym_bisect_this_commit_does_not_compile\n";

/// The cached history.
#[derive(Debug, Clone)]
pub struct History {
    /// The repository (a work tree at the last commit; treat it as read-only).
    pub repo: PathBuf,
    /// Full hashes: `commits[0]` is the import, `commits[i]` the i-th commit.
    pub commits: Vec<String>,
}

async fn run(dir: &Path, program: &str, args: &[&str], timeout: Duration) -> String {
    let mut cmd = kgym_proc::tree_command(program);
    cmd.args(args)
        .current_dir(dir)
        .env("GIT_AUTHOR_NAME", "kgym test")
        .env("GIT_AUTHOR_EMAIL", "test@kgym.invalid")
        .env("GIT_COMMITTER_NAME", "kgym test")
        .env("GIT_COMMITTER_EMAIL", "test@kgym.invalid")
        .env("GIT_AUTHOR_DATE", "2024-01-01T00:00:00Z")
        .env("GIT_COMMITTER_DATE", "2024-01-01T00:00:00Z");
    let out = kgym_proc::output(cmd, program, timeout, &CancellationToken::new())
        .await
        .unwrap_or_else(|e| panic!("{program} {args:?}: {e}"));
    assert!(out.status.success(), "{program} {args:?}: {}", String::from_utf8_lossy(&out.stderr));
    String::from_utf8_lossy(&out.stdout).into_owned()
}

async fn git(dir: &Path, args: &[&str]) -> String {
    run(dir, "git", args, Duration::from_secs(900)).await
}

fn append(path: &Path, text: &str) {
    let mut s = std::fs::read_to_string(path).unwrap_or_default();
    s.push_str(text);
    std::fs::write(path, s).unwrap_or_else(|e| panic!("write {}: {e}", path.display()));
}

/// The history with `bug_patch` (a diff against the pristine tree, like
/// `testdata/bugs/bug.patch`), made once per cache under a file lock.
/// Panics when it cannot be made; check
/// [`test_kernel_available`](crate::test_kernel_available) first.
pub async fn synthetic_history(bug_patch: &str) -> History {
    let cache = crate::test_cache_dir();
    std::fs::create_dir_all(&cache).unwrap_or_else(|e| panic!("create {}: {e}", cache.display()));
    let root = cache.join(VERSION);
    let lock = kgym_proc::FileLock::acquire(&cache.join(format!("{VERSION}.lock")), &CancellationToken::new())
        .await
        .unwrap_or_else(|e| panic!("lock the history: {e}"));
    let repo = root.join("repo");
    let done = root.join("commits");
    if let Ok(list) = std::fs::read_to_string(&done) {
        drop(lock);
        return History { repo, commits: list.lines().map(str::to_owned).collect() };
    }
    let _ = std::fs::remove_dir_all(&root);
    std::fs::create_dir_all(&repo).unwrap_or_else(|e| panic!("create {}: {e}", repo.display()));
    run(&repo, "tar", &["-xJf", crate::KERNEL_TARBALL, "--strip-components=1"], Duration::from_secs(1800)).await;
    // Debian's tarball ignores everything at the top level (its packaging
    // repository tracks only debian/): keep the kernel's own rules only.
    let gitignore = repo.join(".gitignore");
    let rules = std::fs::read_to_string(&gitignore).unwrap_or_default();
    let kept: Vec<&str> = rules.lines().filter(|l| *l != "/*" && *l != "!/debian/").collect();
    std::fs::write(&gitignore, kept.join("\n") + "\n").unwrap_or_else(|e| panic!("write {}: {e}", gitignore.display()));
    git(&repo, &["init", "--quiet", "."]).await;
    git(&repo, &["-c", "core.compression=1", "add", "--all", "."]).await;
    git(&repo, &["commit", "--quiet", "-m", "import linux-source-6.1"]).await;
    let mut commits = vec![git(&repo, &["rev-parse", "HEAD"]).await.trim().to_owned()];
    let sys_c = repo.join("kernel/sys.c");
    let bug = root.join("bug.patch");
    std::fs::write(&bug, bug_patch).unwrap_or_else(|e| panic!("write {}: {e}", bug.display()));
    let bug = bug.to_string_lossy().into_owned();
    for i in 1..=COMMITS {
        append(&repo.join("Documentation/kgym-bisect.txt"), &format!("history step {i}\n"));
        let subject = match i {
            BUG_AT => {
                git(&repo, &["apply", &bug]).await;
                "kernel/sys: add PR_KGYM_NOTE (introduces a use-after-free)".to_owned()
            }
            BROKEN_AT => {
                append(&sys_c, BROKEN_LINE);
                "kernel/sys: a commit that does not compile".to_owned()
            }
            n if n == BROKEN_AT + 1 => {
                let text = std::fs::read_to_string(&sys_c).unwrap_or_default().replace(BROKEN_LINE, "");
                std::fs::write(&sys_c, text).unwrap_or_else(|e| panic!("write {}: {e}", sys_c.display()));
                "kernel/sys: fix the build".to_owned()
            }
            FIX_AT => {
                git(&repo, &["apply", "-R", &bug]).await;
                "kernel/sys: revert PR_KGYM_NOTE (fixes the use-after-free)".to_owned()
            }
            n if n % 5 == 0 => {
                append(&sys_c, &format!("/* kgym bisect history: step {n} */\n"));
                format!("kernel/sys: comment {n}")
            }
            n => format!("Documentation: bisect history step {n}"),
        };
        git(&repo, &["add", "--all", "."]).await;
        git(&repo, &["commit", "--quiet", "-m", &subject]).await;
        commits.push(git(&repo, &["rev-parse", "HEAD"]).await.trim().to_owned());
    }
    std::fs::write(&done, commits.join("\n")).unwrap_or_else(|e| panic!("write {}: {e}", done.display()));
    drop(lock);
    History { repo, commits }
}
