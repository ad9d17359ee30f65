//! Finding programs on `PATH`.

use std::ffi::OsStr;
use std::path::PathBuf;

use crate::error::{Error, Result};

/// Finds `name` on `PATH`; a name with a `/` is taken as a path and only
/// checked.
///
/// ```
/// assert!(kgym_proc::find_tool("sh").is_some());
/// assert!(kgym_proc::find_tool("kgym-no-such-program").is_none());
/// ```
pub fn find_tool(name: &str) -> Option<PathBuf> {
    if name.contains('/') {
        let p = PathBuf::from(name);
        return p.is_file().then_some(p);
    }
    find_tool_in(name, &std::env::var_os("PATH")?)
}

/// Finds `name` in `path`, a `PATH`-style list of directories.
pub fn find_tool_in(name: &str, path: &OsStr) -> Option<PathBuf> {
    std::env::split_paths(path).map(|d| d.join(name)).find(|p| p.is_file())
}

/// [`find_tool`], or [`Error::MissingTool`].
pub fn require_tool(name: &str) -> Result<PathBuf> {
    find_tool(name).ok_or_else(|| Error::MissingTool { tool: name.to_owned() })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn finds_in_a_given_path_and_by_absolute_name() {
        let dir = tempfile::tempdir().unwrap();
        std::fs::write(dir.path().join("tool"), "").unwrap();
        assert_eq!(find_tool_in("tool", dir.path().as_os_str()), Some(dir.path().join("tool")));
        assert_eq!(find_tool_in("other", dir.path().as_os_str()), None);
        let abs = dir.path().join("tool").display().to_string();
        assert_eq!(find_tool(&abs), Some(dir.path().join("tool")));
        assert!(matches!(require_tool("kgym-no-such-program"), Err(Error::MissingTool { .. })));
    }
}
