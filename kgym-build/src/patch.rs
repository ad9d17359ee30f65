//! Patches: applied and reverted with `git apply`, so that a patch that
//! does not apply fails with git's own explanation. `git apply` also works
//! on a tree that is not a repository (an extracted tarball); repository
//! discovery is fenced at the tree so an enclosing repository is never
//! used.

use std::path::Path;

use crate::error::{Error, Result};
use crate::log::BuildLog;
use crate::process::{self, Limits, require_tool};

/// The files a unified diff touches (new paths; old paths of deletions),
/// without the `a/` `b/` prefixes, in order, without duplicates.
pub(crate) fn touched_files(patch: &str) -> Vec<String> {
    let mut files: Vec<String> = Vec::new();
    let mut old: Option<String> = None;
    let strip = |p: &str| -> Option<String> {
        let p = p.split('\t').next().unwrap_or(p).trim();
        if p == "/dev/null" {
            return None;
        }
        Some(p.strip_prefix("a/").or_else(|| p.strip_prefix("b/")).unwrap_or(p).to_owned())
    };
    for line in patch.lines() {
        if let Some(p) = line.strip_prefix("--- ") {
            old = strip(p);
        } else if let Some(p) = line.strip_prefix("+++ ") {
            if let Some(f) = strip(p).or_else(|| old.take()) {
                if !files.contains(&f) {
                    files.push(f);
                }
            }
            old = None;
        }
    }
    files
}

/// Applies (or with `reverse`, reverts) `patch` in the source tree `src`.
/// A refusal is [`Error::PatchDoesNotApply`] with git's words; the tree is
/// untouched then (`git apply` is all-or-nothing).
pub(crate) async fn apply(src: &Path, patch: &str, reverse: bool, limits: &Limits, log: &BuildLog) -> Result<()> {
    let git = require_tool("git")?;
    let mut cmd = process::command(git);
    cmd.current_dir(src)
        .env("GIT_CEILING_DIRECTORIES", src.parent().unwrap_or(src))
        .env_remove("GIT_DIR")
        .env_remove("GIT_WORK_TREE")
        .args(["apply", "--whitespace=nowarn"]);
    if reverse {
        cmd.arg("-R");
    }
    cmd.arg("-");
    let phase = if reverse { "reverting the patch" } else { "applying the patch" };
    log.step(phase);
    let mut data = patch.as_bytes().to_vec();
    if !data.ends_with(b"\n") {
        // A diff pasted without its last newline is "corrupt" to git.
        data.push(b'\n');
    }
    let done = process::run(cmd, phase, Some(data), limits, Some(log)).await?;
    if done.status.success() {
        Ok(())
    } else {
        let words = done.text();
        Err(Error::PatchDoesNotApply {
            stderr: if words.trim().is_empty() { process::describe(&done.status) } else { words },
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::sync::Arc;
    use std::time::Duration;

    pub(crate) const PATCH: &str = "\
diff --git a/kernel/sys.c b/kernel/sys.c
--- a/kernel/sys.c
+++ b/kernel/sys.c
@@ -1,3 +1,3 @@
 one
-two
+TWO
 three
diff --git a/new.h b/new.h
new file mode 100644
--- /dev/null
+++ b/new.h
@@ -0,0 +1 @@
+#define NEW 1
diff --git a/old.c b/old.c
deleted file mode 100644
--- a/old.c
+++ /dev/null
@@ -1 +0,0 @@
-gone
";

    #[test]
    fn lists_touched_files() {
        assert_eq!(touched_files(PATCH), ["kernel/sys.c", "new.h", "old.c"]);
        assert!(touched_files("not a diff").is_empty());
    }

    #[tokio::test]
    async fn applies_reverts_and_reports_gits_words_even_inside_another_repo() {
        // The tree lives inside an unrelated repository: git must not use it.
        let outer = tempfile::tempdir().unwrap();
        git2::Repository::init(outer.path()).unwrap();
        let src = outer.path().join("trees/t/src");
        std::fs::create_dir_all(src.join("kernel")).unwrap();
        std::fs::write(src.join("kernel/sys.c"), "one\ntwo\nthree\n").unwrap();
        std::fs::write(src.join("old.c"), "gone\n").unwrap();
        let sink = Arc::new(kgym_core::MemorySink::default());
        let log = BuildLog::create(&outer.path().join("log"), sink).unwrap();
        let limits = Limits::new(Duration::from_secs(30), Default::default());

        apply(&src, PATCH.trim_end(), false, &limits, &log).await.unwrap();
        assert_eq!(std::fs::read_to_string(src.join("kernel/sys.c")).unwrap(), "one\nTWO\nthree\n");
        assert!(src.join("new.h").exists() && !src.join("old.c").exists());

        let err = apply(&src, PATCH, false, &limits, &log).await.unwrap_err();
        match &err {
            Error::PatchDoesNotApply { stderr } => assert!(stderr.contains("kernel/sys.c"), "{stderr}"),
            other => panic!("unexpected {other}"),
        }
        assert_eq!(err.code(), kgym_core::failure::codes::PATCH_DOES_NOT_APPLY);

        apply(&src, PATCH, true, &limits, &log).await.unwrap();
        assert_eq!(std::fs::read_to_string(src.join("kernel/sys.c")).unwrap(), "one\ntwo\nthree\n");
        assert!(!src.join("new.h").exists() && src.join("old.c").exists());

        let err = apply(&src, "garbage\n", false, &limits, &log).await.unwrap_err();
        assert!(matches!(err, Error::PatchDoesNotApply { .. }), "{err}");
    }
}
