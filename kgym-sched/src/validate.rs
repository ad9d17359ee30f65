//! Submit-time validation of job specs: every problem is collected, so a
//! client fixes its job in one round trip.

use std::collections::{BTreeSet, HashMap};
use std::sync::Arc;

use kgym_core::{JobSpec, StageIndex, StageKind, Worker};

use crate::error::Problem;

/// Longest accepted tag key or value, in bytes.
const MAX_TAG_LEN: usize = 4096;

/// What a scheduler accepts: the kinds some worker runs, and the in-process
/// workers whose own `validate` checks arguments.
#[derive(Debug, Default, Clone)]
pub(crate) struct Accepted {
    pub kinds: BTreeSet<StageKind>,
    pub validators: HashMap<StageKind, Arc<dyn Worker>>,
}

/// Checks `spec` and lists every problem (empty when it is fine).
pub(crate) fn check_spec(spec: &JobSpec, accepted: &Accepted) -> Vec<Problem> {
    let mut problems = Vec::new();
    if spec.stages.is_empty() {
        problems.push(Problem::job("the job has no stages"));
    }
    for (key, value) in &spec.tags {
        if key.is_empty() {
            problems.push(Problem::job("a tag has an empty key"));
        }
        if key.len() > MAX_TAG_LEN || value.len() > MAX_TAG_LEN {
            problems.push(Problem::job(format!("tag {key:.40?} is longer than {MAX_TAG_LEN} bytes")));
        }
    }
    for (i, stage) in spec.stages.iter().enumerate() {
        let index = StageIndex(i as u32);
        let kind = &stage.kind;
        let mut push = |message: String| {
            let p = Problem::stage(index, kind, message);
            if !problems.contains(&p) {
                problems.push(p);
            }
        };
        if !accepted.kinds.contains(kind) {
            let known: Vec<&str> = accepted.kinds.iter().map(StageKind::as_str).collect();
            push(format!(
                "no worker runs stage kind {:?} (accepted kinds: {})",
                kind.as_str(),
                if known.is_empty() { "none".to_owned() } else { known.join(", ") }
            ));
        }
        if let Some(found) = kgym_core::stage::validate_stock(kind, &stage.arg) {
            for p in found {
                push(p);
            }
        }
        if let Some(worker) = accepted.validators.get(kind)
            && let Err(p) = worker.validate(&stage.arg)
        {
            push(p);
        }
        let mut refs = Vec::new();
        find_stage_refs(&stage.arg, "", &mut refs);
        for (path, target) in refs {
            let field = if path.is_empty() { "the argument".to_owned() } else { format!("field {path}") };
            if target >= spec.stages.len() as u64 {
                push(format!("{field} refers to stage {target}, but the job has {} stages", spec.stages.len()));
            } else if target >= i as u64 {
                push(format!("{field} refers to stage {target}, which does not run before stage {i}"));
            } else if kind.as_str() == StageKind::REPRODUCE && path == "/kernel" {
                let source = &spec.stages[target as usize].kind;
                if source.as_str() != StageKind::BUILD {
                    push(format!(
                        "field {path} takes the kernel of stage {target}, a {source} stage, not a build stage"
                    ));
                }
            }
        }
    }
    problems
}

/// Collects every `{"type": "from_stage", "stage": N}` object in `value`
/// (the stock way a stage points at an earlier one) with its JSON pointer.
fn find_stage_refs(value: &serde_json::Value, path: &str, out: &mut Vec<(String, u64)>) {
    match value {
        serde_json::Value::Object(map) => {
            if map.get("type").and_then(|t| t.as_str()) == Some("from_stage")
                && let Some(stage) = map.get("stage").and_then(serde_json::Value::as_u64)
            {
                out.push((path.to_owned(), stage));
            }
            for (k, v) in map {
                find_stage_refs(v, &format!("{path}/{k}"), out);
            }
        }
        serde_json::Value::Array(items) => {
            for (i, v) in items.iter().enumerate() {
                find_stage_refs(v, &format!("{path}/{i}"), out);
            }
        }
        _ => {}
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use kgym_core::stage::build::{BaseConfig, BuildArgs, KernelConfig, KernelSource};
    use kgym_core::stage::reproduce::{KernelRef, ReproduceArgs, Reproducer};
    use serde_json::json;

    fn accepted(kinds: &[&str]) -> Accepted {
        Accepted { kinds: kinds.iter().map(|k| StageKind::new(*k).unwrap()).collect(), validators: HashMap::new() }
    }

    fn build() -> BuildArgs {
        BuildArgs::new(
            KernelSource::git("file:///r", "abc"),
            KernelConfig::Base { base: BaseConfig::Tinyconfig, fragments: vec![] },
        )
    }

    fn repro(stage: u32) -> ReproduceArgs {
        ReproduceArgs::new(KernelRef::FromStage { stage: StageIndex(stage) }, Reproducer::c("int main(){}"))
    }

    #[test]
    fn a_good_spec_has_no_problems() {
        let spec = JobSpec::new().stage(StageKind::build(), &build()).stage(StageKind::reproduce(), &repro(0));
        assert_eq!(check_spec(&spec, &accepted(&["build", "reproduce"])), vec![]);
    }

    #[test]
    fn every_problem_is_listed() {
        let mut bad_args = build();
        bad_args.patch = Some(" ".into());
        let spec = JobSpec::new()
            .stage(StageKind::reproduce(), &repro(0)) // points at itself
            .stage(StageKind::build(), &bad_args) // bad argument
            .stage(StageKind::reproduce(), &repro(7)) // out of range
            .stage(StageKind::new("custom").unwrap(), &json!({"k": {"type": "from_stage", "stage": 3}})) // forward
            .stage(StageKind::reproduce(), &json!({"kernel": 1})) // does not parse
            .stage(StageKind::reproduce(), &repro(0)); // kernel from a reproduce stage
        let problems = check_spec(&spec, &accepted(&["build", "reproduce"]));
        let text: Vec<String> = problems.iter().map(ToString::to_string).collect();
        let has = |needle: &str| text.iter().any(|t| t.contains(needle));
        assert!(
            has("stage 0 (reproduce): field /kernel refers to stage 0, which does not run before stage 0"),
            "{text:#?}"
        );
        assert!(has("stage 1 (build): patch is empty"), "{text:#?}");
        assert!(has("stage 2 (reproduce): field /kernel refers to stage 7, but the job has 6 stages"), "{text:#?}");
        assert!(
            has("stage 3 (custom): no worker runs stage kind \"custom\" (accepted kinds: build, reproduce)"),
            "{text:#?}"
        );
        assert!(has("stage 3 (custom): field /k refers to stage 3, which does not run before stage 3"), "{text:#?}");
        assert!(has("stage 4 (reproduce): argument does not parse"), "{text:#?}");
        assert!(
            has("stage 5 (reproduce): field /kernel takes the kernel of stage 0, a reproduce stage, not a build stage"),
            "{text:#?}"
        );
        assert_eq!(problems.len(), 7, "{text:#?}");
    }

    #[test]
    fn empty_jobs_and_bad_tags_are_refused() {
        let spec = JobSpec::new().tag("", "x");
        let problems = check_spec(&spec, &accepted(&[]));
        assert_eq!(problems.len(), 2, "{problems:?}");
    }

    #[derive(Debug)]
    struct Picky;
    #[async_trait::async_trait]
    impl Worker for Picky {
        fn kind(&self) -> StageKind {
            StageKind::new("picky").unwrap()
        }
        fn validate(&self, arg: &serde_json::Value) -> Result<(), String> {
            if arg.get("n").and_then(|n| n.as_u64()).is_some() { Ok(()) } else { Err("n must be a number".into()) }
        }
        async fn run(&self, _: kgym_core::StageContext) -> Result<serde_json::Value, kgym_core::StageFailure> {
            Ok(json!(null))
        }
    }

    #[test]
    fn in_process_workers_validate_their_arguments() {
        let mut acc = accepted(&["picky"]);
        acc.validators.insert(Picky.kind(), Arc::new(Picky));
        let spec = JobSpec::new().stage(Picky.kind(), &json!({"n": "x"})).stage(Picky.kind(), &json!({"n": 1}));
        let problems = check_spec(&spec, &acc);
        assert_eq!(problems, vec![Problem::stage(StageIndex(0), "picky", "n must be a number")]);
    }
}
