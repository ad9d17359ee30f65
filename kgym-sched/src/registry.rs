//! [`StageRegistry`]: the stage kinds a deployment declares, each with the
//! [`StageSchema`] that checks its argument — the scheduler itself knows no
//! stage's argument. A scheduler accepts at submit the declared kinds and
//! the kinds its live workers run ([`StageRegistry::check_served`]).
//! Submit-time validation collects every problem, so a client fixes its
//! job in one round trip.

use std::collections::{BTreeMap, BTreeSet};
use std::fmt;
use std::sync::Arc;

use kgym_core::stage::{StagePosition, stage_refs};
use kgym_core::{JobSpec, StageIndex, StageKind, StageSchema};

use crate::error::Problem;

/// The kinds a scheduler accepts, each with the schema that checks its
/// arguments (or none: any argument is taken as it is).
///
/// ```
/// use kgym_core::StageKind;
/// use kgym_sched::StageRegistry;
///
/// let stages = StageRegistry::stock().with_kind(StageKind::new("lint").unwrap());
/// assert_eq!(stages.kinds().map(|k| k.as_str()).collect::<Vec<_>>(), ["build", "lint", "patch-check", "reproduce"]);
/// ```
#[derive(Clone, Default)]
pub struct StageRegistry {
    kinds: BTreeMap<StageKind, Option<Arc<dyn StageSchema>>>,
}

impl fmt::Debug for StageRegistry {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_map().entries(self.kinds.iter().map(|(k, s)| (k.as_str(), s.is_some()))).finish()
    }
}

impl StageRegistry {
    /// No kinds: every submit is refused until kinds are added.
    pub fn new() -> Self {
        Self::default()
    }

    /// The stock kinds (`build`, `reproduce`, `patch-check`) with their
    /// schemas: what a scheduler of stock workers declares.
    pub fn stock() -> Self {
        let mut r = Self::new();
        for s in kgym_core::stage::stock_schemas() {
            r.insert_schema(s);
        }
        r
    }

    /// Adds a kind checked by `schema` (builder style).
    pub fn with_schema(mut self, schema: Arc<dyn StageSchema>) -> Self {
        self.insert_schema(schema);
        self
    }

    /// Adds a kind whose argument is not checked (builder style).
    pub fn with_kind(mut self, kind: StageKind) -> Self {
        self.insert_kind(kind);
        self
    }

    /// Adds (or replaces) a kind checked by `schema`.
    pub fn insert_schema(&mut self, schema: Arc<dyn StageSchema>) {
        self.kinds.insert(schema.kind(), Some(schema));
    }

    /// Adds a kind whose argument is not checked; a kind that has a schema
    /// keeps it.
    pub fn insert_kind(&mut self, kind: StageKind) {
        self.kinds.entry(kind).or_insert(None);
    }

    /// Whether `kind` is accepted.
    pub fn contains(&self, kind: &StageKind) -> bool {
        self.kinds.contains_key(kind)
    }

    /// The accepted kinds, in name order.
    pub fn kinds(&self) -> impl Iterator<Item = &StageKind> {
        self.kinds.keys()
    }

    /// Checks `spec` against the declared kinds and lists every problem
    /// (empty when it is fine).
    pub fn check(&self, spec: &JobSpec) -> Vec<Problem> {
        self.check_served(spec, &BTreeSet::new())
    }

    /// Checks `spec`, accepting the declared kinds and `live` (the kinds
    /// live workers run; their arguments are not checked unless a schema is
    /// declared), and lists every problem. Tags follow [`crate::tags`].
    pub fn check_served(&self, spec: &JobSpec, live: &BTreeSet<StageKind>) -> Vec<Problem> {
        let mut problems = Vec::new();
        if spec.stages.is_empty() {
            problems.push(Problem::job("the job has no stages"));
        }
        problems.extend(crate::tags::check(&spec.tags));
        for (i, stage) in spec.stages.iter().enumerate() {
            let at = StagePosition::new(StageIndex(i as u32), &spec.stages);
            let mut push = |message: String| {
                let p = Problem::stage(at.index, &stage.kind, message);
                if !problems.contains(&p) {
                    problems.push(p);
                }
            };
            match self.kinds.get(&stage.kind) {
                None if live.contains(&stage.kind) => {}
                None => {
                    let known: BTreeSet<&str> = self.kinds().chain(live).map(StageKind::as_str).collect();
                    let known: Vec<&str> = known.into_iter().collect();
                    push(format!(
                        "no worker runs stage kind {:?} (accepted kinds: {})",
                        stage.kind.as_str(),
                        if known.is_empty() { "none".to_owned() } else { known.join(", ") }
                    ));
                }
                Some(Some(schema)) => {
                    if let Err(e) = schema.validate(&stage.arg, &at) {
                        e.problems.into_iter().for_each(&mut push);
                    }
                }
                Some(None) => {}
            }
            // Its pool: labels a worker can declare.
            crate::labels::check(&stage.labels).into_iter().for_each(&mut push);
            // Whatever the kind, a stage may only take input from stages
            // that exist and run before it.
            for (path, target) in stage_refs(&stage.arg) {
                if let Some(p) = at.check_input(&path, target, None) {
                    push(p);
                }
            }
        }
        problems
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use kgym_core::stage::StageArgs;
    use kgym_core::stage::build::{BaseConfig, BuildArgs, KernelConfig, KernelSource};
    use kgym_core::stage::reproduce::{KernelRef, ReproduceArgs, Reproducer};
    use serde_json::json;

    fn build() -> BuildArgs {
        BuildArgs::new(
            KernelSource::git("file:///r", "abc"),
            KernelConfig::Base { base: BaseConfig::Tinyconfig, fragments: vec![] },
        )
    }

    fn repro(stage: u32) -> ReproduceArgs {
        ReproduceArgs::new(KernelRef::FromStage { stage: StageIndex(stage) }, Reproducer::c("int main(){}"))
    }

    fn stock_without_patch_check() -> StageRegistry {
        StageRegistry::new()
            .with_schema(kgym_core::stage::schema_of::<BuildArgs>())
            .with_schema(kgym_core::stage::schema_of::<ReproduceArgs>())
    }

    #[test]
    fn a_good_spec_has_no_problems() {
        let spec = JobSpec::new().stage(StageKind::build(), &build()).stage(StageKind::reproduce(), &repro(0));
        assert_eq!(StageRegistry::stock().check(&spec), vec![]);
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
        let problems = stock_without_patch_check().check(&spec);
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
            has(
                "stage 5 (reproduce): field /kernel takes its input from stage 0, a reproduce stage, not a build stage"
            ),
            "{text:#?}"
        );
        assert_eq!(problems.len(), 7, "{text:#?}");
    }

    #[test]
    fn empty_jobs_and_bad_tags_are_refused() {
        let spec = JobSpec::new().tag("", "x");
        let problems = StageRegistry::new().check(&spec);
        assert_eq!(problems.len(), 2, "{problems:?}");
    }

    #[test]
    fn kinds_of_live_workers_are_accepted_beside_the_declared_ones() {
        let lint = StageKind::new("lint").unwrap();
        let spec = JobSpec::new().stage(lint.clone(), &json!({"any": "thing"}));
        let problems = StageRegistry::stock().check(&spec);
        assert_eq!(problems.len(), 1, "{problems:?}");
        let live = BTreeSet::from([lint, StageKind::new("fuzz").unwrap()]);
        assert_eq!(StageRegistry::stock().check_served(&spec, &live), vec![]);
        let other = JobSpec::new().stage(StageKind::new("other").unwrap(), &json!(null));
        let text = StageRegistry::new().check_served(&other, &live)[0].to_string();
        assert!(text.ends_with("no worker runs stage kind \"other\" (accepted kinds: fuzz, lint)"), "{text}");
    }

    #[derive(serde::Serialize, serde::Deserialize)]
    struct Picky {
        n: u64,
    }

    impl StageArgs for Picky {
        const KIND: &'static str = "picky";
        type Output = ();
        fn check(&self) -> Vec<String> {
            if self.n == 0 { vec!["n must be positive".into()] } else { vec![] }
        }
    }

    #[test]
    fn schemas_check_their_kinds_and_unchecked_kinds_take_anything() {
        let r = StageRegistry::new()
            .with_schema(kgym_core::stage::schema_of::<Picky>())
            .with_kind(StageKind::new("free").unwrap());
        let spec = JobSpec::new()
            .stage(Picky::kind(), &json!({"n": "x"}))
            .stage(Picky::kind(), &json!({"n": 0}))
            .stage(Picky::kind(), &json!({"n": 1}))
            .stage(StageKind::new("free").unwrap(), &json!([1, 2, 3]));
        let problems = r.check(&spec);
        assert_eq!(problems.len(), 2, "{problems:?}");
        assert!(problems[0].message.starts_with("argument does not parse"), "{problems:?}");
        assert_eq!(problems[1], Problem::stage(StageIndex(1), "picky", "n must be positive"));
        // Adding a bare kind keeps a schema that is there.
        let mut r2 = r.clone();
        r2.insert_kind(Picky::kind());
        assert_eq!(r2.check(&spec).len(), 2);
    }
}
