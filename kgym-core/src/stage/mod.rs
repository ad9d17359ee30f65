//! Typed arguments and results of the stock stages: [`build`],
//! [`reproduce`] and [`patch_check`], and what makes an argument type a
//! stage: [`StageArgs`] (its kind, result type and checks) and
//! [`StageSchema`] (the object-safe check a scheduler runs at submit).
//!
//! On the wire a stage argument is JSON; these types give it a shape,
//! defaults and validation. Field names are snake_case; kGym's kebab-case
//! payloads are converted by `kgym-compat`.

pub mod build;
pub mod patch_check;
mod position;
pub mod reproduce;
mod schema;

use serde::Serialize;
use serde::de::DeserializeOwned;

use crate::id::StageKind;

pub use position::{StagePosition, stage_refs};
pub use schema::{ArgsSchema, InvalidArgs, StageSchema, schema_of, stock_schemas};

/// A stage argument type tied to its stage kind and result type.
///
/// ```
/// use kgym_core::stage::StageArgs;
/// use serde::{Deserialize, Serialize};
///
/// #[derive(Serialize, Deserialize)]
/// struct CountArgs { up_to: u32 }
///
/// impl StageArgs for CountArgs {
///     const KIND: &'static str = "count"; // "Count" would not compile
///     type Output = Vec<u32>;
///     fn check(&self) -> Vec<String> {
///         if self.up_to > 1000 { vec!["up_to must be at most 1000".into()] } else { vec![] }
///     }
/// }
/// assert_eq!(CountArgs::kind().as_str(), "count");
/// ```
pub trait StageArgs: Serialize + DeserializeOwned + Send + Sync + 'static {
    /// The kind name of the stage this argument is for: 1–64 characters of
    /// `[a-z0-9_-]`, checked when the program is compiled.
    const KIND: &'static str;
    /// The stage's typed result.
    type Output: Serialize + DeserializeOwned + Send + 'static;

    /// The stage kind.
    fn kind() -> StageKind {
        // A bad KIND is a compile error where this is instantiated, not a
        // silent fallback to another kind at run time.
        const { assert!(StageKind::is_valid_name(Self::KIND), "StageArgs::KIND must be 1-64 characters of [a-z0-9_-]") };
        StageKind::from_checked(Self::KIND)
    }

    /// Checks what serde cannot (ranges, consistency). Every problem is
    /// listed, one per entry.
    fn check(&self) -> Vec<String> {
        Vec::new()
    }

    /// [`check`](Self::check) plus what depends on the stage's place in its
    /// job (e.g. that the stage it takes its kernel from is a build). The
    /// default is `check`.
    fn check_at(&self, _at: &StagePosition<'_>) -> Vec<String> {
        self.check()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn stock_kinds_are_valid_names() {
        assert_eq!(build::BuildArgs::kind().as_str(), "build");
        assert_eq!(reproduce::ReproduceArgs::kind().as_str(), "reproduce");
        assert_eq!(patch_check::PatchCheckArgs::kind().as_str(), "patch-check");
    }
}
