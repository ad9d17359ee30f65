//! The commit choice: a real `git bisect --no-checkout` session in a private
//! bare repository that borrows the source's objects (a local repository)
//! or fetched the history without file contents (a URL). git decides which
//! commit to test next — merges and `skip` handled exactly as git does.

use std::path::{Path, PathBuf};
use std::time::Duration;

use tokio_util::sync::CancellationToken;

use super::{BisectError, CommitInfo};

/// Time limit of one git command that only reads or updates the history.
const GIT_TIMEOUT: Duration = Duration::from_secs(120);
/// Time limit of fetching the history of a remote source.
const FETCH_TIMEOUT: Duration = Duration::from_secs(3600);

/// What git said after a `good`, `bad` or `skip`.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(crate) enum Next {
    /// Test this commit next.
    Test(String),
    /// This commit is the first bad one.
    Found(String),
    /// Only skipped commits are left: the first bad one is one of these.
    Range(Vec<String>),
}

/// A private repository holding one bisection session.
#[derive(Debug)]
pub(crate) struct BisectRepo {
    dir: PathBuf,
    cancel: CancellationToken,
}

impl BisectRepo {
    /// Creates the session repository in `dir` (which must not exist or be
    /// empty) for the commits `ends` of `source` (hashes, branches or
    /// tags): a local repository is borrowed from (git's alternates), a URL
    /// is fetched without blobs. Returns the repository and the full hash
    /// of each end.
    pub async fn open(
        dir: &Path,
        source: &str,
        ends: &[&str],
        cancel: CancellationToken,
    ) -> Result<(Self, Vec<String>), BisectError> {
        std::fs::create_dir_all(dir).map_err(|e| BisectError::Io { path: dir.to_owned(), source: e })?;
        let repo = Self { dir: dir.to_owned(), cancel };
        repo.git(&["init", "--quiet", "--bare"], GIT_TIMEOUT).await?;
        let local = Path::new(source);
        let mut hashes = Vec::with_capacity(ends.len());
        if local.is_dir() {
            let objects = local_objects(local)?;
            let alternates = dir.join("objects/info/alternates");
            std::fs::write(&alternates, format!("{}\n", objects.display()))
                .map_err(|e| BisectError::Io { path: alternates, source: e })?;
            // Names (branches, tags) are the source's: resolve them there.
            for end in ends {
                let spec = format!("{end}^{{commit}}");
                let out = repo.run_in(local, &["rev-parse", "--verify", "--quiet", &spec], GIT_TIMEOUT).await?;
                let hash = String::from_utf8_lossy(&out.stdout).trim().to_owned();
                if !out.status.success() || hash.is_empty() {
                    return Err(BisectError::UnknownCommit { commit: (*end).to_owned() });
                }
                hashes.push(hash);
            }
        } else {
            let specs: Vec<String> = ends.iter().enumerate().map(|(i, e)| format!("+{e}:refs/kgym/end-{i}")).collect();
            let mut args = vec!["fetch", "--quiet", "--no-tags", "--filter=blob:none", "--", source];
            args.extend(specs.iter().map(String::as_str));
            repo.git(&args, FETCH_TIMEOUT).await?;
            for (i, end) in ends.iter().enumerate() {
                let hash = repo.resolve(&format!("refs/kgym/end-{i}")).await;
                hashes.push(hash.map_err(|_| BisectError::UnknownCommit { commit: (*end).to_owned() })?);
            }
        }
        Ok((repo, hashes))
    }

    /// The full hash of `rev`, or a typed error naming it.
    pub async fn resolve(&self, rev: &str) -> Result<String, BisectError> {
        let spec = format!("{rev}^{{commit}}");
        match self.git(&["rev-parse", "--verify", "--quiet", &spec], GIT_TIMEOUT).await {
            Ok(out) if !out.trim().is_empty() => Ok(out.trim().to_owned()),
            _ => Err(BisectError::UnknownCommit { commit: rev.to_owned() }),
        }
    }

    /// Whether `ancestor` is an ancestor of (or equal to) `of`.
    pub async fn is_ancestor(&self, ancestor: &str, of: &str) -> Result<bool, BisectError> {
        let out = self.run(&["merge-base", "--is-ancestor", ancestor, of], GIT_TIMEOUT).await?;
        Ok(out.status.success())
    }

    /// How many commits `good..bad` holds.
    pub async fn count(&self, good: &str, bad: &str) -> Result<u32, BisectError> {
        let range = format!("{good}..{bad}");
        let out = self.git(&["rev-list", "--count", &range], GIT_TIMEOUT).await?;
        out.trim()
            .parse()
            .map_err(|_| BisectError::Git { command: format!("git rev-list --count {range}"), stderr: out })
    }

    /// Subject, author and date of `hash`.
    pub async fn describe(&self, hash: &str) -> Result<CommitInfo, BisectError> {
        let out = self.git(&["show", "--no-patch", "--format=%H%x00%s%x00%an <%ae>%x00%aI", hash], GIT_TIMEOUT).await?;
        let mut parts = out.trim_end_matches('\n').splitn(4, '\0');
        let mut next = || parts.next().unwrap_or_default().to_owned();
        Ok(CommitInfo { hash: next(), subject: next(), author: next(), date: next() })
    }

    /// Starts the session: `bad` is the first bad commit or has one among
    /// its ancestors that `good` does not have.
    pub async fn start(&self, bad: &str, good: &str) -> Result<Next, BisectError> {
        // `git bisect` needs a HEAD that names a commit, even without a checkout.
        self.git(&["update-ref", "--no-deref", "HEAD", bad], GIT_TIMEOUT).await?;
        let out = self.git(&["bisect", "start", "--no-checkout", bad, good], GIT_TIMEOUT).await?;
        self.next(&out).await
    }

    /// Tells git the verdict on `commit` (`good`, `bad` or `skip`).
    pub async fn mark(&self, term: &str, commit: &str) -> Result<Next, BisectError> {
        let out = self.run(&["bisect", term, commit], GIT_TIMEOUT).await?;
        let stdout = String::from_utf8_lossy(&out.stdout).into_owned();
        // Exit status 2: only skipped commits are left (parsed below).
        if !out.status.success() && out.status.code() != Some(2) {
            return Err(self.failure(&["bisect", term, commit], &out));
        }
        self.next(&stdout).await
    }

    async fn next(&self, stdout: &str) -> Result<Next, BisectError> {
        if let Some(line) = stdout.lines().find(|l| l.ends_with(" is the first bad commit")) {
            return Ok(Next::Found(line.split_whitespace().next().unwrap_or_default().to_owned()));
        }
        if stdout.contains("only 'skip'ped commits left") {
            let hashes = stdout
                .lines()
                .skip_while(|l| !l.starts_with("The first bad commit could be any of"))
                .skip(1)
                .take_while(|l| !l.starts_with("We cannot bisect more"))
                .filter_map(|l| l.split_whitespace().next())
                .filter(|h| h.len() >= 40 && h.bytes().all(|b| b.is_ascii_hexdigit()))
                .map(str::to_owned)
                .collect();
            return Ok(Next::Range(hashes));
        }
        let head = self.git(&["rev-parse", "--verify", "BISECT_HEAD"], GIT_TIMEOUT).await?;
        Ok(Next::Test(head.trim().to_owned()))
    }

    async fn run(&self, args: &[&str], timeout: Duration) -> Result<std::process::Output, BisectError> {
        let mut full = vec!["--git-dir", self.dir.to_str().unwrap_or_default()];
        full.extend_from_slice(args);
        self.run_in(&self.dir, &full, timeout).await
    }

    /// Runs git in `dir` with a timeout (killed with its group on cancel).
    async fn run_in(&self, dir: &Path, args: &[&str], timeout: Duration) -> Result<std::process::Output, BisectError> {
        let git = kgym_proc::require_tool("git")
            .map_err(|e| BisectError::Git { command: args.join(" "), stderr: e.to_string() })?;
        let mut cmd = kgym_proc::tree_command(git);
        cmd.current_dir(dir)
            .args(args)
            .env("LC_ALL", "C")
            .env("GIT_TERMINAL_PROMPT", "0")
            .env_remove("GIT_DIR")
            .env_remove("GIT_WORK_TREE");
        kgym_proc::output(cmd, "git", timeout, &self.cancel)
            .await
            .map_err(|e| BisectError::Git { command: args.join(" "), stderr: e.to_string() })
    }

    async fn git(&self, args: &[&str], timeout: Duration) -> Result<String, BisectError> {
        let out = self.run(args, timeout).await?;
        if !out.status.success() {
            return Err(self.failure(args, &out));
        }
        Ok(String::from_utf8_lossy(&out.stdout).into_owned())
    }

    fn failure(&self, args: &[&str], out: &std::process::Output) -> BisectError {
        let stderr = String::from_utf8_lossy(&out.stderr);
        let tail: Vec<&str> = stderr.lines().rev().take(10).collect();
        BisectError::Git {
            command: format!("git {}", args.join(" ")),
            stderr: tail.into_iter().rev().collect::<Vec<_>>().join("\n"),
        }
    }
}

/// The object directory of the local repository at `path` (bare or not).
fn local_objects(path: &Path) -> Result<PathBuf, BisectError> {
    let candidates = [path.join(".git/objects"), path.join("objects")];
    let found = candidates.iter().find(|p| p.is_dir()).ok_or_else(|| BisectError::Git {
        command: format!("open {}", path.display()),
        stderr: "not a git repository (no objects directory)".to_owned(),
    })?;
    found.canonicalize().map_err(|e| BisectError::Io { path: found.clone(), source: e })
}

#[cfg(test)]
mod tests {
    use super::*;

    /// A linear history of `n` commits in a scratch repository; returns
    /// their hashes, oldest first.
    fn history(dir: &Path, n: usize) -> Vec<String> {
        let git = |args: &[&str]| {
            let out = std::process::Command::new("git")
                .arg("-C")
                .arg(dir)
                .args(args)
                .env("GIT_AUTHOR_NAME", "t")
                .env("GIT_AUTHOR_EMAIL", "t@example.com")
                .env("GIT_COMMITTER_NAME", "t")
                .env("GIT_COMMITTER_EMAIL", "t@example.com")
                .output()
                .unwrap();
            assert!(out.status.success(), "{}", String::from_utf8_lossy(&out.stderr));
            String::from_utf8(out.stdout).unwrap()
        };
        git(&["init", "--quiet", "."]);
        (0..n)
            .map(|i| {
                std::fs::write(dir.join("f"), format!("{i}\n")).unwrap();
                git(&["add", "f"]);
                git(&["commit", "--quiet", "-m", &format!("commit {i}")]);
                git(&["rev-parse", "HEAD"]).trim().to_owned()
            })
            .collect()
    }

    #[tokio::test]
    async fn finds_the_first_bad_commit_and_reports_a_range_when_skips_remain() {
        if kgym_testkit::require_tool("git").is_none() {
            return;
        }
        let dir = tempfile::tempdir().unwrap();
        let src = dir.path().join("src");
        std::fs::create_dir_all(&src).unwrap();
        let commits = history(&src, 12);
        let first_bad = 7;
        let verdict = |hash: &str| {
            let i = commits.iter().position(|c| c == hash).unwrap();
            if i >= first_bad { "bad" } else { "good" }
        };
        let ends = [&commits[0][..10], "HEAD"];
        let (repo, hashes) =
            BisectRepo::open(&dir.path().join("s1"), src.to_str().unwrap(), &ends, CancellationToken::new())
                .await
                .unwrap();
        assert_eq!(hashes, [commits[0].clone(), commits[11].clone()]);
        let s3 = dir.path().join("s3");
        let missing = BisectRepo::open(&s3, src.to_str().unwrap(), &["v9"], CancellationToken::new());
        assert!(matches!(missing.await, Err(BisectError::UnknownCommit { .. })));
        assert_eq!(repo.resolve(&commits[3][..10]).await.unwrap(), commits[3]);
        assert!(matches!(repo.resolve("nope").await, Err(BisectError::UnknownCommit { .. })));
        assert!(repo.is_ancestor(&commits[0], &commits[11]).await.unwrap());
        assert!(!repo.is_ancestor(&commits[11], &commits[0]).await.unwrap());
        assert_eq!(repo.describe(&commits[2]).await.unwrap().subject, "commit 2");
        let mut next = repo.start(&commits[11], &commits[0]).await.unwrap();
        let mut tested = 0;
        let found = loop {
            match next {
                Next::Test(c) => {
                    tested += 1;
                    next = repo.mark(verdict(&c), &c).await.unwrap();
                }
                Next::Found(c) => break c,
                Next::Range(r) => panic!("range {r:?}"),
            }
        };
        assert_eq!(found, commits[first_bad]);
        assert!(tested <= 4, "{tested} tests for 11 candidates");

        // Skipping every commit around the first bad one leaves a range.
        let (repo, _) = BisectRepo::open(&dir.path().join("s2"), src.to_str().unwrap(), &[], CancellationToken::new())
            .await
            .unwrap();
        let mut next = repo.start(&commits[11], &commits[0]).await.unwrap();
        let range = loop {
            match next {
                Next::Test(c) => {
                    let i = commits.iter().position(|x| *x == c).unwrap();
                    let term = if (6..=8).contains(&i) { "skip" } else { verdict(&c) };
                    next = repo.mark(term, &c).await.unwrap();
                }
                Next::Found(c) => panic!("found {c} despite skips"),
                Next::Range(r) => break r,
            }
        };
        assert!(range.contains(&commits[first_bad]), "{range:?}");
        assert!(range.len() >= 2, "{range:?}");
    }
}
