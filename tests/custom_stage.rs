//! `examples/custom_stage.rs` runs: a user-defined stage kind in a gym,
//! its argument checked at submit.

#[path = "../examples/custom_stage.rs"]
mod example;

use kgym::core::stage::StageArgs;
use kgym::core::{JobSpec, StageSchema};

#[tokio::test]
async fn the_custom_stage_example_runs_and_refuses_bad_arguments() {
    assert_eq!(example::run().await.unwrap(), 2);
    // The worker is its own schema: what the gym checks at submit.
    let bad = JobSpec::new().stage(example::CountArgs::kind(), &serde_json::json!({"pattern": "", "log": ""}));
    let err = example::CountLines.validate_alone(&bad.stages[0].arg).unwrap_err();
    assert_eq!(err.problems, vec!["pattern is empty"]);
}
