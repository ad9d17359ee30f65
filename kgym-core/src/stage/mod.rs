//! Typed arguments and results of the stock stages: [`build`],
//! [`reproduce`] and [`patch_check`].
//!
//! On the wire a stage argument is JSON; these types give it a shape,
//! defaults and validation. Field names are snake_case; kGym's kebab-case
//! payloads are converted by the compatibility layer of `kgym-sched`.

pub mod build;
pub mod patch_check;
pub mod reproduce;

use serde::Serialize;
use serde::de::DeserializeOwned;

use crate::id::StageKind;

/// A stage argument type tied to its stage kind and result type.
pub trait StageArgs: Serialize + DeserializeOwned {
    /// The kind name of the stage this argument is for.
    const KIND: &'static str;
    /// The stage's typed result.
    type Output: Serialize + DeserializeOwned;

    /// The stage kind.
    fn kind() -> StageKind {
        // KIND constants are valid kind names (checked by a test).
        StageKind::new(Self::KIND).unwrap_or_else(|_| StageKind::build())
    }

    /// Checks what serde cannot (ranges, consistency). Every problem is
    /// listed, one per entry.
    fn check(&self) -> Vec<String> {
        Vec::new()
    }
}

/// Validates `arg` as the argument of stock stage `kind`: `Some(problems)`
/// when `kind` is a stock kind (empty when the argument is fine), `None` for
/// kinds this crate does not know.
pub fn validate_stock(kind: &StageKind, arg: &serde_json::Value) -> Option<Vec<String>> {
    fn check<A: StageArgs>(arg: &serde_json::Value) -> Vec<String> {
        match A::deserialize(arg) {
            Ok(a) => a.check(),
            Err(e) => vec![format!("argument does not parse: {e}")],
        }
    }
    match kind.as_str() {
        StageKind::BUILD => Some(check::<build::BuildArgs>(arg)),
        StageKind::REPRODUCE => Some(check::<reproduce::ReproduceArgs>(arg)),
        StageKind::PATCH_CHECK => Some(check::<patch_check::PatchCheckArgs>(arg)),
        _ => None,
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

    #[test]
    fn validate_stock_reports_parse_errors_and_ignores_custom_kinds() {
        let problems = validate_stock(&StageKind::build(), &serde_json::json!({"source": 3})).unwrap();
        assert_eq!(problems.len(), 1, "{problems:?}");
        assert!(validate_stock(&StageKind::new("custom").unwrap(), &serde_json::json!(null)).is_none());
    }
}
