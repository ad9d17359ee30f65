//! Jobs, results and logs shown with kGym's field names beside ours.

use kgym_core::stage::build::{BuildArgs, BuildResult, KernelConfig, KernelSource, Linker};
use kgym_core::stage::patch_check::{PatchCheckArgs, PatchCheckResult};
use kgym_core::stage::reproduce::{KernelRef, ReproduceArgs, ReproduceResult, ReproducerKind};
use kgym_core::{Job, Outcome, StageKind, StageResult, StageSpec};
use serde::Serialize;
use serde_json::{Map, Value, json};

use crate::kgym_time;
use kgym_sched::types::{JobLogEntry, JobSummary, Page, SystemLogEntry};

/// kGym's name for a stage kind (`build` → `kbuilder`, ...); other kinds
/// keep their name.
pub fn kgym_kind(kind: &StageKind) -> &str {
    match kind.as_str() {
        StageKind::BUILD => "kbuilder",
        StageKind::REPRODUCE => "kvmmanager",
        StageKind::PATCH_CHECK => "kprebuilder",
        other => other,
    }
}

/// Adds `extra`'s fields to `into`; where both hold an object under one
/// key the objects are merged, otherwise ours wins.
fn merge_into(into: &mut Map<String, Value>, extra: Map<String, Value>) {
    for (k, x) in extra {
        match (into.get_mut(&k), x) {
            (Some(Value::Object(mine)), Value::Object(theirs)) => merge_into(mine, theirs),
            (Some(_), _) => {}
            (None, x) => {
                into.insert(k, x);
            }
        }
    }
}

fn merge(base: impl Serialize, extra: Map<String, Value>) -> Value {
    let mut v = serde_json::to_value(base).unwrap_or(Value::Null);
    if let Value::Object(m) = &mut v {
        merge_into(m, extra);
        v
    } else if extra.is_empty() {
        v
    } else {
        // A non-object argument: keep it whole beside kGym's fields.
        let mut m = extra;
        m.insert("value".into(), v);
        Value::Object(m)
    }
}

fn obj(v: Value) -> Map<String, Value> {
    match v {
        Value::Object(m) => m,
        _ => Map::new(),
    }
}

/// A stage argument with kGym's fields added where they can be derived.
fn present_args(stage: &StageSpec) -> Value {
    let extra = match stage.kind.as_str() {
        StageKind::BUILD => match serde_json::from_value::<BuildArgs>(stage.arg.clone()) {
            Ok(b) => {
                let mut m = Map::new();
                if let KernelSource::Git { url, commit } = &b.source {
                    m.insert("kernel-git-url".into(), json!(url));
                    m.insert("kernel-commit-id".into(), json!(commit));
                }
                if let KernelConfig::Full { text } = &b.config {
                    m.insert("kernel-config".into(), json!(text));
                }
                m.insert("kernel-arch".into(), json!(b.arch.syz_name()));
                m.insert("compiler".into(), serde_json::to_value(b.compiler).unwrap_or_default());
                let linker = match b.linker {
                    Some(Linker::Lld) => "ld.lld",
                    _ => "ld",
                };
                m.insert("linker".into(), json!(linker));
                m.insert("userspace-image-name".into(), json!(""));
                if let Some(c) = &b.cmdline {
                    m.insert("kernel-cmdline".into(), json!(c));
                }
                m
            }
            Err(_) => Map::new(),
        },
        StageKind::REPRODUCE => match serde_json::from_value::<ReproduceArgs>(stage.arg.clone()) {
            Ok(r) => {
                let mut m = Map::new();
                let mut rep = Map::new();
                rep.insert(
                    "reproducer-type".into(),
                    json!(match r.reproducer.kind {
                        ReproducerKind::C => "c",
                        ReproducerKind::Syz => "log",
                    }),
                );
                rep.insert("reproducer-text".into(), json!(r.reproducer.text));
                if let Some(c) = &r.reproducer.syzkaller_commit {
                    rep.insert("syzkaller-checkout".into(), json!(c));
                }
                rep.insert(
                    "syzkaller-rollback-to-latest".into(),
                    json!(r.reproducer.syzkaller_fallback_commit.is_some()),
                );
                if let Some(n) = r.reproducer.nproc {
                    rep.insert("nproc".into(), json!(n));
                }
                rep.insert("restart-time".into(), json!(kgym_core::duration::format(r.budget)));
                rep.insert("ninstance".into(), json!(r.instances));
                m.insert("reproducer".into(), Value::Object(rep));
                if let KernelRef::FromStage { stage } = r.kernel {
                    m.insert("image-from-worker".into(), json!(stage.0));
                }
                let machine =
                    if r.machine.gce.is_some() { r.machine.to_string() } else { format!("qemu:{}", r.machine) };
                m.insert("machine-type".into(), json!(machine));
                m
            }
            Err(_) => Map::new(),
        },
        StageKind::PATCH_CHECK => match serde_json::from_value::<PatchCheckArgs>(stage.arg.clone()) {
            Ok(p) => obj(json!({"patches": p.patches})),
            Err(_) => Map::new(),
        },
        _ => Map::new(),
    };
    merge(&stage.arg, extra)
}

/// A stage result with kGym's fields (`result`, `message`,
/// `kernel-image-url`, `crash-description`, `image-ability`, ...) beside
/// ours. Artifact "URLs" are artifact keys.
pub fn present_result(kind: &StageKind, r: &StageResult) -> Value {
    let mut m = Map::new();
    m.insert(
        "result".into(),
        json!(match r.outcome {
            Outcome::Success => "success",
            Outcome::Failure => "failure",
        }),
    );
    if r.outcome == Outcome::Success {
        match kind.as_str() {
            StageKind::BUILD => {
                if let Ok(b) = r.decode::<BuildResult>() {
                    m.insert("kernel-image-url".into(), json!(b.bzimage));
                    // kGym's disk image has no equivalent: our kernels boot
                    // directly, so the kernel stands in for it.
                    m.insert("vm-image-url".into(), json!(b.bzimage));
                    m.insert("vmlinux-url".into(), json!(b.vmlinux));
                    m.insert("kernel-config-url".into(), json!(b.config));
                    m.insert("build-log-url".into(), json!(b.log));
                    if let Some(cc) = &b.compile_commands {
                        m.insert("kernel-compile-commands-url".into(), json!(cc));
                    }
                    m.insert("kernel-arch".into(), json!(b.arch.syz_name()));
                }
            }
            StageKind::REPRODUCE => {
                if let Ok(x) = r.decode::<ReproduceResult>() {
                    if let Some(first) = x.crashes.first() {
                        m.insert("crash-description".into(), json!(first.title));
                        if let Some(inc) = first.incidents.first() {
                            m.insert("picked-crash-id".into(), json!(inc.instance));
                        }
                    }
                    m.insert("image-ability".into(), serde_json::to_value(x.image_ability).unwrap_or_default());
                    if let Some(c) = &x.syzkaller_commit {
                        m.insert("final-syzkaller-checkout".into(), json!(c));
                    }
                }
            }
            StageKind::PATCH_CHECK => {
                if let Ok(x) = r.decode::<PatchCheckResult>() {
                    let patches: Vec<Value> = x
                        .verdicts
                        .iter()
                        .map(|v| {
                            let status = if !v.applies {
                                "patch-unapplicable"
                            } else if !v.compiles {
                                "compilation-error"
                            } else {
                                "success"
                            };
                            let mut files: Vec<(String, Vec<String>)> = Vec::new();
                            for f in &v.functions {
                                let file =
                                    f.object.strip_suffix(".o").map(|s| format!("{s}.c")).unwrap_or(f.object.clone());
                                match files.iter_mut().find(|(n, _)| *n == file) {
                                    Some((_, fns)) => fns.push(f.function.clone()),
                                    None => files.push((file, vec![f.function.clone()])),
                                }
                            }
                            let files: Vec<Value> = files
                                .into_iter()
                                .map(|(f, fns)| json!({"filename": f, "modified-functions": fns}))
                                .collect();
                            json!({"patch-status": status, "modified-files": files})
                        })
                        .collect();
                    m.insert("patches".into(), json!(patches));
                }
            }
            _ => {}
        }
    }
    merge(r, m)
}

/// kGym's `current-worker` of a job.
fn current_worker(job: &Job) -> usize {
    if let Some(s) = job.current_stage {
        return s.as_usize();
    }
    match job.results.last() {
        Some(r) if r.outcome == Outcome::Failure => job.results.len() - 1,
        _ => job.results.len(),
    }
}

/// A job as kGym shows it (`job-id`, `created-time`, `job-workers`,
/// `worker-arguments`, `worker-results`, `current-worker`,
/// `current-worker-hostname`, `status`, `kv`), with our fields beside.
pub fn present_job(job: &Job) -> Value {
    let mut m = Map::new();
    m.insert("job-id".into(), json!(job.id));
    m.insert("created-time".into(), json!(kgym_time(&job.created)));
    m.insert("modified-time".into(), json!(kgym_time(&job.modified)));
    m.insert("job-workers".into(), json!(job.stages.iter().map(|s| kgym_kind(&s.kind)).collect::<Vec<_>>()));
    m.insert("worker-arguments".into(), Value::Array(job.stages.iter().map(present_args).collect()));
    m.insert(
        "worker-results".into(),
        Value::Array(job.results.iter().zip(&job.stages).map(|(r, s)| present_result(&s.kind, r)).collect()),
    );
    m.insert("current-worker".into(), json!(current_worker(job)));
    m.insert(
        "current-worker-hostname".into(),
        json!(job.worker.as_deref().map(|w| w.split('/').next().unwrap_or(w)).unwrap_or("")),
    );
    m.insert("kv".into(), json!(job.tags));
    merge(job, m)
}

/// A job summary as kGym's listings show it.
pub fn present_summary(s: &JobSummary) -> Value {
    let mut m = Map::new();
    m.insert("job-id".into(), json!(s.id));
    m.insert("created-time".into(), json!(kgym_time(&s.created)));
    m.insert("modified-time".into(), json!(kgym_time(&s.modified)));
    m.insert("job-workers".into(), json!(s.kinds.iter().map(kgym_kind).collect::<Vec<_>>()));
    if let Some(c) = s.current_stage {
        m.insert("current-worker".into(), json!(c.0));
    }
    m.insert(
        "current-worker-hostname".into(),
        json!(s.worker.as_deref().map(|w| w.split('/').next().unwrap_or(w)).unwrap_or("")),
    );
    merge(s, m)
}

/// A job log line as kGym shows it (`job-id`, `log-time`, `worker`,
/// `worker-hostname`, `log`).
pub fn present_log_entry(e: &JobLogEntry) -> Value {
    let mut m = Map::new();
    m.insert("job-id".into(), json!(e.job));
    m.insert("log-time".into(), json!(kgym_time(&e.time)));
    m.insert("worker".into(), json!(e.kind.as_ref().map(kgym_kind).unwrap_or("kscheduler")));
    m.insert("worker-hostname".into(), json!(e.host.as_deref().unwrap_or("")));
    m.insert("log".into(), json!(e.line));
    merge(e, m)
}

/// A system log entry as kGym shows it (`log-time`, `worker`,
/// `worker-hostname`, `log`).
pub fn present_sys_entry(e: &SystemLogEntry) -> Value {
    let mut m = Map::new();
    m.insert("log-time".into(), json!(kgym_time(&e.time)));
    m.insert("worker".into(), json!(e.kind.as_ref().map(kgym_kind).unwrap_or("kscheduler")));
    m.insert("worker-hostname".into(), json!(e.host.as_deref().unwrap_or("")));
    m.insert("log".into(), json!(e.message));
    merge(e, m)
}

/// kGym's paginated answer: `{result, size, next, total}` with `next` -1 at
/// the end.
pub fn present_page<T>(page: &Page<T>, item: impl Fn(&T) -> Value) -> Value {
    json!({
        "result": page.items.iter().map(item).collect::<Vec<_>>(),
        "size": page.items.len(),
        "next": page.next.map_or(-1, |n| n as i64),
        "total": page.total,
    })
}

#[cfg(test)]
mod tests {
    use super::*;
    use chrono::Utc;
    use kgym_core::stage::build::Arch;
    use kgym_core::stage::reproduce::{Accel, CrashKind, CrashSummary, ImageAbility, Incident};
    use kgym_core::{ArtifactKey, JobId, JobStatus, StageIndex, Tags};

    fn key(s: &str) -> ArtifactKey {
        ArtifactKey::parse(s).unwrap()
    }

    #[test]
    fn a_finished_job_shows_kgym_fields_beside_ours() {
        let build = BuildResult {
            bzimage: key("jobs/00000001/0_build/bzImage"),
            vmlinux: key("jobs/00000001/0_build/vmlinux"),
            config: key("jobs/00000001/0_build/config"),
            log: key("jobs/00000001/0_build/build.log"),
            compile_commands: None,
            commit: Some("abc".into()),
            arch: Arch::X86_64,
            cmdline: None,
            timings: Default::default(),
            cache: kgym_core::stage::build::CacheStatus::Miss,
            config_mismatches: vec![],
            backports_applied: vec![],
        };
        let repro = ReproduceResult {
            crashed: true,
            title: Some("KASAN: use-after-free Read in foo".into()),
            crashes: vec![CrashSummary {
                title: "KASAN: use-after-free Read in foo".into(),
                kind: CrashKind::Crash,
                crash_type: Some("KASAN".into()),
                corrupted: false,
                alt_titles: Vec::new(),
                guilty_file: None,
                incidents: vec![Incident {
                    instance: 2,
                    run: 0,
                    log: key("jobs/00000001/1_reproduce/log0"),
                    report: None,
                    seconds: 3.0,
                }],
            }],
            image_ability: ImageAbility::Normal,
            accel: Accel::Tcg,
            message: "Crashes".into(),
            boots: 1,
            seconds: 5.0,
            syzkaller_commit: None,
        };
        let job = Job {
            id: JobId::new(1),
            created: Utc::now(),
            modified: Utc::now(),
            stages: vec![
                StageSpec::new(
                    StageKind::build(),
                    &json!({"source": {"type": "git", "url": "u", "commit": "c"},
                            "config": {"type": "full", "text": "CONFIG_X=y"}}),
                ),
                StageSpec::new(
                    StageKind::reproduce(),
                    &json!({"kernel": {"type": "from_stage", "stage": 0},
                            "reproducer": {"kind": "c", "text": "int main(){}"}}),
                ),
            ],
            tags: Tags::from([("k".to_owned(), "v".to_owned())]),
            status: JobStatus::Finished,
            current_stage: None,
            worker: None,
            no_worker_for: None,
            results: vec![
                StageResult::success("success", serde_json::to_value(&build).unwrap()),
                StageResult::success("Crashes", serde_json::to_value(&repro).unwrap()),
            ],
        };
        let v = present_job(&job);
        assert_eq!(v["job-id"], "00000001");
        assert_eq!(v["id"], "00000001");
        assert_eq!(v["job-workers"], json!(["kbuilder", "kvmmanager"]));
        assert_eq!(v["current-worker"], 2);
        assert_eq!(v["kv"]["k"], "v");
        assert_eq!(v["worker-arguments"][0]["kernel-git-url"], "u");
        assert_eq!(v["worker-arguments"][0]["kernel-config"], "CONFIG_X=y");
        assert_eq!(v["worker-arguments"][1]["image-from-worker"], 0);
        assert_eq!(v["worker-arguments"][1]["reproducer"]["reproducer-type"], "c");
        assert_eq!(v["worker-arguments"][1]["machine-type"], "qemu:1-512");
        let r0 = &v["worker-results"][0];
        assert_eq!(r0["result"], "success");
        assert_eq!(r0["kernel-image-url"], "jobs/00000001/0_build/bzImage");
        assert_eq!(r0["vmlinux-url"], "jobs/00000001/0_build/vmlinux");
        assert_eq!(r0["kernel-config-url"], "jobs/00000001/0_build/config");
        let r1 = &v["worker-results"][1];
        assert_eq!(r1["crash-description"], "KASAN: use-after-free Read in foo");
        assert_eq!(r1["picked-crash-id"], 2);
        assert_eq!(r1["image-ability"], "normal");
        assert_eq!(r1["message"], "Crashes");
        assert_eq!(r1["outcome"], "success");
        assert_eq!(r1["value"]["crashed"], true);
        let _ = StageIndex(0);
    }

    #[test]
    fn failures_show_result_failure_and_the_failed_stage_as_current() {
        let f = kgym_core::StageFailure::new("build-failed", "compile kernel/sys.c");
        let job = Job {
            id: JobId::new(2),
            created: Utc::now(),
            modified: Utc::now(),
            stages: vec![StageSpec::new(StageKind::build(), &json!({}))],
            tags: Tags::new(),
            status: JobStatus::Finished,
            current_stage: None,
            worker: None,
            no_worker_for: None,
            results: vec![StageResult::failure(f)],
        };
        let v = present_job(&job);
        assert_eq!(v["current-worker"], 0);
        assert_eq!(v["worker-results"][0]["result"], "failure");
        assert_eq!(v["worker-results"][0]["message"], "compile kernel/sys.c");
        assert_eq!(v["worker-results"][0]["failure"]["code"], "build-failed");
    }

    #[test]
    fn pages_use_minus_one_at_the_end() {
        let page = Page::new(vec![1, 2], 0, 5, 2);
        assert_eq!(present_page(&page, |i| json!(i)), json!({"result": [1, 2], "size": 2, "next": -1, "total": 2}));
    }
}
