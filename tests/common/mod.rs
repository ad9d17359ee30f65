//! Helpers shared by the workspace's integration tests.

use std::path::PathBuf;

/// A stock service built from `examples/` by `cargo build --examples`
/// (`scripts/test.sh` does it first), next to this test's own binary.
/// `cargo test --all-targets` alone is not enough: it builds each example
/// as a test harness (`examples/<name>-<hash>` runs zero tests).
pub fn example(name: &str) -> Option<PathBuf> {
    let exe = std::env::current_exe().ok()?;
    let path = exe.parent()?.parent()?.join("examples").join(name);
    if path.is_file() {
        Some(path)
    } else {
        kgym_testkit::skip_or_fail(&format!(
            "{} is not built (cargo build --examples builds it; scripts/test.sh does)",
            path.display()
        ));
        None
    }
}
