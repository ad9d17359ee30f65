//! [`StagePosition`]: where a stage sits in its job, for checks that look
//! at the stages it refers to; [`stage_refs`]: the stock way one stage
//! points at an earlier one (`{"type": "from_stage", "stage": N}`).

use crate::id::StageIndex;
use crate::job::StageSpec;

/// Where a stage sits in its job: its index among all the job's stages.
#[derive(Debug, Clone, Copy)]
pub struct StagePosition<'a> {
    /// The stage being checked.
    pub index: StageIndex,
    /// All the job's stages, in order.
    pub stages: &'a [StageSpec],
}

impl<'a> StagePosition<'a> {
    /// The position of stage `index` among `stages`.
    pub fn new(index: StageIndex, stages: &'a [StageSpec]) -> Self {
        Self { index, stages }
    }

    /// Checks that `field` may take its input from stage `target`: the
    /// target exists, runs before this stage and (when `kind` is given) is
    /// of that kind. `None` when it may.
    pub fn check_input(&self, field: &str, target: StageIndex, kind: Option<&str>) -> Option<String> {
        let field = if field.is_empty() { "the argument".to_owned() } else { format!("field {field}") };
        if target.as_usize() >= self.stages.len() {
            return Some(format!("{field} refers to stage {target}, but the job has {} stages", self.stages.len()));
        }
        if target >= self.index {
            return Some(format!("{field} refers to stage {target}, which does not run before stage {}", self.index));
        }
        let actual = &self.stages[target.as_usize()].kind;
        match kind {
            Some(k) if actual.as_str() != k => {
                Some(format!("{field} takes its input from stage {target}, a {actual} stage, not a {k} stage"))
            }
            _ => None,
        }
    }
}

/// Every `{"type": "from_stage", "stage": N}` object in `arg` (the stock
/// way a stage points at an earlier one), as (JSON pointer, N).
pub fn stage_refs(arg: &serde_json::Value) -> Vec<(String, StageIndex)> {
    let mut out = Vec::new();
    collect(arg, "", &mut out);
    out
}

fn collect(value: &serde_json::Value, path: &str, out: &mut Vec<(String, StageIndex)>) {
    match value {
        serde_json::Value::Object(map) => {
            if map.get("type").and_then(|t| t.as_str()) == Some("from_stage")
                && let Some(stage) = map.get("stage").and_then(serde_json::Value::as_u64)
            {
                out.push((path.to_owned(), StageIndex(u32::try_from(stage).unwrap_or(u32::MAX))));
            }
            for (k, v) in map {
                collect(v, &format!("{path}/{k}"), out);
            }
        }
        serde_json::Value::Array(items) => {
            for (i, v) in items.iter().enumerate() {
                collect(v, &format!("{path}/{i}"), out);
            }
        }
        _ => {}
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::id::StageKind;
    use serde_json::json;

    #[test]
    fn inputs_must_exist_run_before_and_have_the_right_kind() {
        let stage = |k: StageKind| StageSpec::new(k, &json!({}));
        let kinds = [stage(StageKind::build()), stage(StageKind::reproduce()), stage(StageKind::reproduce())];
        let at = StagePosition::new(StageIndex(1), &kinds);
        assert_eq!(at.check_input("/kernel", StageIndex(0), Some("build")), None);
        let forward = at.check_input("/kernel", StageIndex(2), None).unwrap();
        assert_eq!(forward, "field /kernel refers to stage 2, which does not run before stage 1");
        let missing = at.check_input("", StageIndex(9), None).unwrap();
        assert_eq!(missing, "the argument refers to stage 9, but the job has 3 stages");
        let at2 = StagePosition::new(StageIndex(2), &kinds);
        let wrong = at2.check_input("/kernel", StageIndex(1), Some("build")).unwrap();
        assert_eq!(wrong, "field /kernel takes its input from stage 1, a reproduce stage, not a build stage");
    }

    #[test]
    fn refs_are_found_anywhere_in_the_argument() {
        let arg = json!({"a": {"type": "from_stage", "stage": 0}, "b": [{"type": "from_stage", "stage": 3}]});
        assert_eq!(stage_refs(&arg), vec![("/a".to_owned(), StageIndex(0)), ("/b/0".to_owned(), StageIndex(3))]);
        assert!(stage_refs(&json!({"type": "files"})).is_empty());
    }
}
