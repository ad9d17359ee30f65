//! ReproduceWorker end to end: the kernel comes from an earlier build
//! stage's artifacts, incidents are stored as artifacts, the result is the
//! stage's typed JSON.

mod common;

use std::sync::Arc;

use common::*;
use kgym_core::stage::build::{Arch, BuildResult, BuildTimings, CacheStatus};
use kgym_core::stage::reproduce::{CrashKind, KernelRef, ReproduceArgs, ReproduceResult, Reproducer};
use kgym_core::{
    ArtifactKey, ArtifactStore, CancellationToken, JobId, MemorySink, StageContext, StageIndex, StageKind, StageResult,
    StageSchema, StageSpec, Tags, Worker,
};
use kgym_vm::ReproduceWorker;

#[tokio::test]
async fn reproduce_stage_boots_the_kernel_of_the_build_stage_and_stores_incidents() {
    if !have_tools() {
        return;
    }
    let k = bug_kernel().await;
    let dir = tempfile::tempdir().unwrap();
    let store = ArtifactStore::local(dir.path().join("artifacts")).unwrap();
    let job = JobId::new(7);
    let key = |name: &str| ArtifactKey::for_stage(job, StageIndex(0), &StageKind::build(), name).unwrap();
    store.put_file(&key("bzImage"), &k.bzimage).await.unwrap();
    store.put_file(&key("vmlinux"), &k.vmlinux).await.unwrap();
    let build = BuildResult {
        bzimage: key("bzImage"),
        vmlinux: key("vmlinux"),
        config: key("config"),
        log: key("log"),
        compile_commands: None,
        commit: None,
        arch: Arch::X86_64,
        cmdline: None,
        timings: BuildTimings::default(),
        cache: CacheStatus::Hit,
        config_mismatches: vec![],
        backports_applied: vec![],
    };
    let mut args =
        ReproduceArgs::new(KernelRef::FromStage { stage: StageIndex(0) }, Reproducer::c(read_bug_file("repro.c")));
    args.budget = std::time::Duration::from_secs(240);
    let stages =
        vec![StageSpec::new(StageKind::build(), &serde_json::json!({})), StageSpec::new(StageKind::reproduce(), &args)];
    let previous = vec![StageResult::success("built", serde_json::to_value(&build).unwrap())];
    let sink = Arc::new(MemorySink::default());
    let ctx = StageContext::new(
        job,
        StageIndex(1),
        stages,
        previous,
        Tags::new(),
        store.clone(),
        CancellationToken::new(),
        "test",
        sink.clone(),
    )
    .unwrap();
    let runner = runner_in(dir.path()).build().unwrap();
    let worker = ReproduceWorker::new(Arc::new(runner)).scratch_dir(dir.path().join("scratch"));
    assert_eq!(worker.kind(), StageKind::reproduce());
    let value = worker.run(ctx).await.unwrap_or_else(|f| panic!("{f}: {:?}", sink.lines()));
    let result: ReproduceResult = serde_json::from_value(value).unwrap();
    assert!(result.crashed);
    assert_eq!(result.title.as_deref(), Some(BUG_TITLE));
    assert_eq!(result.message, "Crashes");
    let crash = &result.crashes[0];
    assert_eq!(crash.kind, CrashKind::Crash);
    assert!(crash.crash_type.as_deref().is_some_and(|t| t.starts_with("KASAN")), "{:?}", crash.crash_type);
    let incident = &crash.incidents[0];
    assert_eq!(incident.log.as_str(), "jobs/00000007/1_reproduce/incidents/0-0/log");
    let log = store.get(&incident.log).await.unwrap();
    assert!(String::from_utf8_lossy(&log).contains("BUG: KASAN: use-after-free in kgym_note_store"));
    let report = store.get(incident.report.as_ref().expect("report stored")).await.unwrap();
    let report = String::from_utf8_lossy(&report);
    assert!(report.contains("kernel/sys.c:"), "report not symbolized: {report}");
    assert!(sink.lines().iter().any(|l| l.contains("fetching the kernel built by stage 0")));
    // The downloaded kernel was a temporary copy.
    assert!(std::fs::read_dir(dir.path().join("scratch")).unwrap().next().is_none());
}
