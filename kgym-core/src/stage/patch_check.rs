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

/// The verdict on one candidate patch.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct PatchVerdict {
    /// The patch applied cleanly.
    pub applies: bool,
    /// The touched objects compiled.
    pub compiles: bool,
    /// Why it did not apply or compile (git's or the compiler's words).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub error: Option<String>,
    /// Source files the patch touches.
    pub files: Vec<String>,
    /// Functions whose code changed (added, removed, or a different
    /// instruction sequence).
    pub functions: Vec<FunctionChange>,
    /// Seconds spent on this patch.
    pub seconds: f64,
}

/// The result of a `patch-check` stage: one verdict per patch, in order.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct PatchCheckResult {
    /// Verdicts in patch order.
    pub verdicts: Vec<PatchVerdict>,
}
