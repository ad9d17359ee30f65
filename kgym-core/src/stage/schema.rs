//! [`StageSchema`]: the object-safe check of one stage kind's argument,
//! which a scheduler runs at submit (so a bad job is refused before it
//! runs, with every problem listed), and [`ArgsSchema`], the schema of any
//! [`StageArgs`] type.

use std::fmt;
use std::marker::PhantomData;
use std::sync::Arc;

use super::{StageArgs, StagePosition};
use crate::failure::StageFailure;
use crate::id::StageKind;

/// A stage argument that does not parse or does not pass its checks.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("check the argument of a {kind} stage: {}", problems.join("; "))]
pub struct InvalidArgs {
    /// The stage kind.
    pub kind: StageKind,
    /// Every problem found, one per entry.
    pub problems: Vec<String>,
}

impl InvalidArgs {
    /// `Ok` when `problems` is empty.
    pub fn check(kind: StageKind, problems: Vec<String>) -> Result<(), Self> {
        if problems.is_empty() { Ok(()) } else { Err(Self { kind, problems }) }
    }

    /// The bad-argument failure a worker reports for it.
    pub fn to_failure(&self) -> StageFailure {
        StageFailure::bad_argument(self.problems.join("; "))
    }
}

impl From<InvalidArgs> for StageFailure {
    fn from(e: InvalidArgs) -> Self {
        e.to_failure()
    }
}

/// The argument check of one stage kind. Object safe: a scheduler keeps
/// `Arc<dyn StageSchema>` per kind. Every [`Worker`](crate::Worker) is one;
/// [`schema_of`] gives the schema of an argument type without a worker (for
/// kinds run by remote workers).
pub trait StageSchema: Send + Sync + fmt::Debug + 'static {
    /// The kind checked.
    fn kind(&self) -> StageKind;

    /// Checks `arg` as the argument of the stage at `at`. The default
    /// accepts every argument.
    fn validate(&self, _arg: &serde_json::Value, _at: &StagePosition<'_>) -> Result<(), InvalidArgs> {
        Ok(())
    }

    /// [`validate`](Self::validate)s `arg` as the only stage of a job (what
    /// a CLI or a test checks before it submits).
    fn validate_alone(&self, arg: &serde_json::Value) -> Result<(), InvalidArgs> {
        let stages = [crate::StageSpec::new(self.kind(), arg)];
        self.validate(arg, &StagePosition::new(crate::StageIndex(0), &stages))
    }
}

/// The schema of argument type `A`: parses the JSON as `A`, then runs
/// [`StageArgs::check_at`].
pub struct ArgsSchema<A>(PhantomData<fn() -> A>);

impl<A> Default for ArgsSchema<A> {
    fn default() -> Self {
        Self(PhantomData)
    }
}

impl<A> fmt::Debug for ArgsSchema<A> {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "ArgsSchema<{}>", std::any::type_name::<A>())
    }
}

impl<A: StageArgs> ArgsSchema<A> {
    /// Parses and checks `arg`: the typed argument, or every problem.
    pub fn parse(arg: &serde_json::Value, at: &StagePosition<'_>) -> Result<A, InvalidArgs> {
        let parsed = A::deserialize(arg)
            .map_err(|e| InvalidArgs { kind: A::kind(), problems: vec![format!("argument does not parse: {e}")] })?;
        InvalidArgs::check(A::kind(), parsed.check_at(at))?;
        Ok(parsed)
    }
}

impl<A: StageArgs> StageSchema for ArgsSchema<A> {
    fn kind(&self) -> StageKind {
        A::kind()
    }

    fn validate(&self, arg: &serde_json::Value, at: &StagePosition<'_>) -> Result<(), InvalidArgs> {
        Self::parse(arg, at).map(drop)
    }
}

/// The schema of argument type `A`, as a scheduler registers it.
pub fn schema_of<A: StageArgs>() -> Arc<dyn StageSchema> {
    Arc::new(ArgsSchema::<A>::default())
}

/// The schemas of the stock stages (`build`, `reproduce`, `patch-check`),
/// for a scheduler whose workers run elsewhere.
pub fn stock_schemas() -> Vec<Arc<dyn StageSchema>> {
    vec![
        schema_of::<super::build::BuildArgs>(),
        schema_of::<super::reproduce::ReproduceArgs>(),
        schema_of::<super::patch_check::PatchCheckArgs>(),
    ]
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::id::StageIndex;

    #[test]
    fn stock_schemas_report_parse_errors_and_checks() {
        let stages = [crate::StageSpec::new(StageKind::build(), &serde_json::Value::Null)];
        let at = StagePosition::new(StageIndex(0), &stages);
        let build = &stock_schemas()[0];
        assert_eq!(build.kind(), StageKind::build());
        let err = build.validate(&serde_json::json!({"source": 3}), &at).unwrap_err();
        assert_eq!(err.problems.len(), 1, "{err:?}");
        assert!(err.problems[0].starts_with("argument does not parse"), "{err}");
        assert!(err.to_string().starts_with("check the argument of a build stage: "), "{err}");
        let kinds: Vec<StageKind> = stock_schemas().iter().map(|s| s.kind()).collect();
        assert_eq!(kinds, vec![StageKind::build(), StageKind::reproduce(), StageKind::patch_check()]);
    }
}
