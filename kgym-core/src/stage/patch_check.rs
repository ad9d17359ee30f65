//! The `patch-check` stage (kGymSuite's kprebuilder): for each candidate
//! patch, does it apply and compile on a warm tree, and which functions did
//! it change?

use serde::{Deserialize, Serialize};

use crate::stage::StageArgs;
use crate::stage::build::BuildArgs;

/// The argument of a `patch-check` stage.
#[derive(Debug, Clone, PartialEq, Eq, Hash, Serialize, Deserialize)]
pub struct PatchCheckArgs {
    /// The base build whose warm tree the patches are checked on (its own
    /// `patch`, if any, is part of the base).
    pub base: BuildArgs,
    /// Candidate patches (unified diffs), checked one at a time.
    pub patches: Vec<String>,
}

impl StageArgs for PatchCheckArgs {
    const KIND: &'static str = "patch-check";
    type Output = PatchCheckResult;

    fn check(&self) -> Vec<String> {
        let mut problems: Vec<String> = self.base.check().into_iter().map(|p| format!("base: {p}")).collect();
        if self.patches.is_empty() {
            problems.push("patches is empty".to_owned());
        }
        for (i, p) in self.patches.iter().enumerate() {
            if p.trim().is_empty() {
                problems.push(format!("patches[{i}] is empty"));
            }
        }
        problems
    }
}

/// Instruction counts of one function before and after a patch.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct FunctionChange {
    /// The object file (relative to the build tree), e.g. `kernel/sys.o`.
    pub object: String,
    /// The function (symbol) name.
    pub function: String,
    /// Instructions before the patch; `None` when the function is new.
    pub before: Option<u32>,
    /// Instructions after the patch; `None` when the function is gone.
    pub after: Option<u32>,
}

/// What a touched file is to the build.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
#[non_exhaustive]
pub enum FileKind {
    /// A C or assembly file.
    Source,
    /// A header.
    Header,
    /// Anything else (Makefile, Kconfig, linker script, ...): checking it
    /// takes a full (incremental) build of the kernel.
    Other,
}

/// What happened to a touched file in the check.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
#[non_exhaustive]
pub enum FileOutcome {
    /// Compiled: the objects built from it were rebuilt without error (for
    /// an [`FileKind::Other`] file: the kernel was rebuilt without error).
    Compiled,
    /// Nothing built in this config reads it — a C file the config does not
    /// build, a header no built object includes, a new file nothing names —
    /// so nothing was compiled for it.
    NotBuilt,
    /// The build of what depends on it failed.
    Failed,
    /// The patch did not apply: nothing was built.
    NotChecked,
}

/// The check of one file a patch touches.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct FileCheck {
    /// The file, as the patch names it (`kernel/sys.c`).
    pub file: String,
    /// What it is to the build.
    pub kind: FileKind,
    /// The patch creates it.
    #[serde(default, skip_serializing_if = "std::ops::Not::not")]
    pub new: bool,
    /// The objects built from it, which the check rebuilt (relative to the
    /// build tree): a source file's own object (or the object that
    /// `#include`s it), the objects that include a header — as kbuild's
    /// dependency files record them.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub objects: Vec<String>,
    /// What happened.
    pub outcome: FileOutcome,
}

/// The verdict on one candidate patch.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct PatchVerdict {
    /// The patch applied cleanly.
    pub applies: bool,
    /// Something the patch touches was compiled, without error. `false`
    /// when nothing it touches is built in this config (see
    /// [`file_checks`](Self::file_checks) and `error`).
    pub compiles: bool,
    /// Why it did not apply or compile (git's or the compiler's words).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub error: Option<String>,
    /// Source files the patch touches.
    pub files: Vec<String>,
    /// Functions whose code changed (added, removed, or a different
    /// instruction sequence).
    pub functions: Vec<FunctionChange>,
    /// What the check did with each touched file, in the order of
    /// [`files`](Self::files) (absent in results of older workers).
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub file_checks: Vec<FileCheck>,
    /// Seconds spent on this patch.
    pub seconds: f64,
}

/// The result of a `patch-check` stage: one verdict per patch, in order.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct PatchCheckResult {
    /// Verdicts in patch order.
    pub verdicts: Vec<PatchVerdict>,
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn file_checks_are_additive() {
        // A verdict of a worker without file checks still reads.
        let old = r#"{"applies":true,"compiles":true,"files":["kernel/sys.c"],"functions":[],"seconds":1.5}"#;
        let v: PatchVerdict = serde_json::from_str(old).unwrap();
        assert!(v.file_checks.is_empty());
        let check = FileCheck {
            file: "include/linux/x.h".into(),
            kind: FileKind::Header,
            new: false,
            objects: vec!["kernel/sys.o".into()],
            outcome: FileOutcome::Compiled,
        };
        let json = serde_json::to_value(&check).unwrap();
        assert_eq!(
            json,
            serde_json::json!({"file": "include/linux/x.h", "kind": "header", "objects": ["kernel/sys.o"], "outcome": "compiled"})
        );
        let new_file = FileCheck { new: true, objects: vec![], outcome: FileOutcome::NotBuilt, ..check };
        assert_eq!(serde_json::to_value(&new_file).unwrap()["new"], true);
        assert_eq!(serde_json::to_value(&new_file).unwrap()["outcome"], "not_built");
    }
}
