//! What runs stages: [`StageWorker`], the typed trait a researcher
//! implements, and [`Worker`], the object-safe trait the runtime drives
//! (`Arc<dyn Worker>`). Every `StageWorker` is a `Worker` through one
//! blanket adapter, which parses and checks the argument once, runs the
//! stage and serializes its result.
//!
//! The runtime that claims stages, keeps leases alive and reports results
//! lives in `kgym-sched`; a worker only turns a context into a result.

use std::fmt;

use async_trait::async_trait;

use crate::context::StageContext;
use crate::failure::StageFailure;
use crate::id::StageKind;
use crate::stage::{ArgsSchema, InvalidArgs, StageArgs, StagePosition, StageSchema};

/// A stage kind with typed argument and result: the way to add a stage.
///
/// Its kind, argument checks and result type come from
/// [`Args`](Self::Args); the blanket adapter makes it a [`Worker`] (so
/// `Arc::new(MyWorker)` runs in any gym) and a [`StageSchema`] (so a
/// scheduler refuses bad arguments at submit).
///
/// A new stage kind in ~20 lines:
///
/// ```
/// use kgym_core::stage::StageArgs;
/// use kgym_core::{StageContext, StageFailure, StageWorker};
/// use serde::{Deserialize, Serialize};
///
/// #[derive(Serialize, Deserialize)]
/// struct GrepArgs { pattern: String, text: String }
///
/// impl StageArgs for GrepArgs {
///     const KIND: &'static str = "grep";
///     type Output = Vec<String>;
///     fn check(&self) -> Vec<String> {
///         if self.pattern.is_empty() { vec!["pattern is empty".into()] } else { vec![] }
///     }
/// }
///
/// #[derive(Debug)]
/// struct Grep;
///
/// #[kgym_core::async_trait]
/// impl StageWorker for Grep {
///     type Args = GrepArgs;
///     async fn run(&self, args: GrepArgs, ctx: &StageContext) -> Result<Vec<String>, StageFailure> {
///         ctx.log(format!("grepping for {}", args.pattern));
///         Ok(args.text.lines().filter(|l| l.contains(&args.pattern)).map(str::to_owned).collect())
///     }
/// }
///
/// // The runtime sees it as any other worker:
/// use kgym_core::Worker;
/// let arg = serde_json::json!({"pattern": "KASAN", "text": "ok\nBUG: KASAN: use-after-free"});
/// let (ctx, log) = StageContext::for_test(GrepArgs::kind(), arg);
/// let out = tokio::runtime::Runtime::new().unwrap().block_on(Worker::run(&Grep, ctx)).unwrap();
/// assert_eq!(out, serde_json::json!(["BUG: KASAN: use-after-free"]));
/// assert_eq!(log.lines(), vec!["grepping for KASAN"]);
///
/// // A bad argument is refused before `run`, with every problem listed:
/// let (ctx, _) = StageContext::for_test(GrepArgs::kind(), serde_json::json!({"pattern": "", "text": ""}));
/// let failure = tokio::runtime::Runtime::new().unwrap().block_on(Worker::run(&Grep, ctx)).unwrap_err();
/// assert_eq!(failure.code, "bad-argument");
/// assert_eq!(failure.message, "pattern is empty");
/// ```
#[async_trait]
pub trait StageWorker: Send + Sync + fmt::Debug + 'static {
    /// The stage's argument (and through it, its kind and result type).
    type Args: StageArgs;

    /// Runs one stage with its parsed and checked argument. `Err` is a
    /// failure that ends the job (or, when `retryable`, that the scheduler
    /// may hand to another worker). The worker must stop promptly, killing
    /// its subprocesses, once `ctx.cancel` fires.
    async fn run(
        &self,
        args: Self::Args,
        ctx: &StageContext,
    ) -> Result<<Self::Args as StageArgs>::Output, StageFailure>;
}

/// Runs stages of one kind, with JSON in and out: what the runtime drives.
/// Object safe (`Arc<dyn Worker>`); its [`StageSchema`] half names the kind
/// and checks arguments at submit.
///
/// Implement [`StageWorker`] instead unless the argument has no fixed shape.
#[async_trait]
pub trait Worker: StageSchema {
    /// Runs one stage. `Ok` carries the result serialized; `Err` a failure
    /// that ends the job (or, when `retryable`, that the scheduler may hand
    /// to another worker). The worker must stop promptly, killing its
    /// subprocesses, once `ctx.cancel` fires.
    async fn run(&self, ctx: StageContext) -> Result<serde_json::Value, StageFailure>;
}

impl<W: StageWorker> StageSchema for W {
    fn kind(&self) -> StageKind {
        W::Args::kind()
    }

    fn validate(&self, arg: &serde_json::Value, at: &StagePosition<'_>) -> Result<(), InvalidArgs> {
        ArgsSchema::<W::Args>::parse(arg, at).map(drop)
    }
}

#[async_trait]
impl<W: StageWorker> Worker for W {
    async fn run(&self, ctx: StageContext) -> Result<serde_json::Value, StageFailure> {
        if ctx.kind != W::Args::kind() {
            return Err(StageFailure::bad_argument(format!(
                "a {} worker was handed a {} stage",
                W::Args::kind(),
                ctx.kind
            )));
        }
        let args = ArgsSchema::<W::Args>::parse(&ctx.arg, &ctx.position())?;
        let output = StageWorker::run(self, args, &ctx).await?;
        serde_json::to_value(&output).map_err(|e| StageFailure::internal(&e))
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::job::StageSpec;
    use crate::{JobId, StageIndex};
    use serde::{Deserialize, Serialize};

    #[derive(Serialize, Deserialize)]
    struct Add {
        a: i64,
        b: i64,
    }

    impl StageArgs for Add {
        const KIND: &'static str = "add";
        type Output = i64;
        fn check(&self) -> Vec<String> {
            let mut p = Vec::new();
            if self.a < 0 {
                p.push("a is negative".to_owned());
            }
            if self.b < 0 {
                p.push("b is negative".to_owned());
            }
            p
        }
    }

    #[derive(Debug)]
    struct Adder;

    #[async_trait]
    impl StageWorker for Adder {
        type Args = Add;
        async fn run(&self, args: Add, _ctx: &StageContext) -> Result<i64, StageFailure> {
            Ok(args.a + args.b)
        }
    }

    fn rt() -> tokio::runtime::Runtime {
        tokio::runtime::Builder::new_current_thread().build().unwrap()
    }

    #[test]
    fn the_adapter_parses_checks_runs_and_serializes() {
        let worker: std::sync::Arc<dyn Worker> = std::sync::Arc::new(Adder);
        assert_eq!(worker.kind().as_str(), "add");
        let (ctx, _) = StageContext::for_test(Add::kind(), serde_json::json!({"a": 2, "b": 3}));
        assert_eq!(rt().block_on(worker.run(ctx)).unwrap(), serde_json::json!(5));

        let (ctx, _) = StageContext::for_test(Add::kind(), serde_json::json!({"a": -1, "b": -2}));
        let f = rt().block_on(worker.run(ctx)).unwrap_err();
        assert_eq!(f.code, crate::failure::codes::BAD_ARGUMENT);
        assert_eq!(f.message, "a is negative; b is negative");

        let (ctx, _) = StageContext::for_test(Add::kind(), serde_json::json!({"a": "x"}));
        let f = rt().block_on(worker.run(ctx)).unwrap_err();
        assert!(f.message.starts_with("argument does not parse"), "{f}");
    }

    #[test]
    fn a_stage_of_another_kind_is_refused() {
        let (ctx, _) = StageContext::for_test(StageKind::build(), serde_json::json!({"a": 1, "b": 1}));
        let f = rt().block_on(Worker::run(&Adder, ctx)).unwrap_err();
        assert_eq!(f.message, "a add worker was handed a build stage");
    }

    #[test]
    fn the_schema_half_validates_at_submit() {
        let schema: std::sync::Arc<dyn StageSchema> = std::sync::Arc::new(Adder);
        let stages = [StageSpec::new(Add::kind(), &serde_json::json!({"a": 1, "b": -1}))];
        let err = schema.validate(&stages[0].arg, &StagePosition::new(StageIndex(0), &stages)).unwrap_err();
        assert_eq!(err.problems, vec!["b is negative"]);
    }

    #[test]
    fn a_context_for_a_missing_stage_is_an_error() {
        let err = StageContext::new(
            JobId::new(7),
            StageIndex(1),
            vec![StageSpec::new(Add::kind(), &serde_json::Value::Null)],
            Vec::new(),
            Default::default(),
            crate::ArtifactStore::in_memory(),
            Default::default(),
            "w",
            std::sync::Arc::new(crate::TracingSink),
        )
        .unwrap_err();
        assert_eq!(err.to_string(), "find stage 1 of job 00000007: the job has 1 stages");
    }
}
