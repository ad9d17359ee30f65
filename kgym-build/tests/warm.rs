//! Builds on the warm tree the tests share (the minimal x86_64 kernel of
//! kgym-testkit's config, built by kgym-build): incremental patch builds,
//! failures with real bad patches, patch check and the stage workers. The
//! tests of this file take turns (one warm tree).

mod common;

use std::sync::Arc;

use kgym_build::{BuildContext, BuildWorker, Error, KernelBuilder, PatchCheckWorker};
use kgym_core::failure::codes;
use kgym_core::stage::build::{BuildResult, CacheStatus};
use kgym_core::stage::patch_check::{PatchCheckArgs, PatchCheckResult};
use kgym_core::{ArtifactStore, StageKind, StageSchema, Worker};
use tokio::sync::Mutex;

use common::{
    HEADER_PATCH, INCLUDED_C_PATCH, NEW_FILE_BUILT_PATCH, NEW_FILE_PATCH, UNBUILT_C_PATCH, UNINCLUDED_HEADER_PATCH,
    broken_patch, contains, getpid_patch, marker_patch, misplaced_patch, scratch_data_dir, sink, source_objects,
    test_builder, test_kernel_available, warm_args, warm_base,
};
use kgym_build::PatchChecker;
use kgym_core::stage::patch_check::{FileKind, FileOutcome};

/// One warm tree: the tests of this binary use it one at a time, so each
/// knows the state it starts from.
static TREE: Mutex<()> = Mutex::const_new(());

#[tokio::test]
async fn patch_builds_recompile_only_the_touched_object_and_reverting_reproduces_the_base() {
    if !test_kernel_available() {
        return;
    }
    let _turn = TREE.lock().await;
    let scratch = scratch_data_dir();
    let base = warm_base(&warm_args(), scratch.path()).await;
    let builder = test_builder();

    let patched_req = warm_args().with_patch(getpid_patch(1));
    let log = sink();
    let ctx = BuildContext::new(scratch.path().join("patched")).with_logs(log.clone());
    let patched = builder.build(&patched_req, &ctx).await.unwrap();
    assert_eq!(patched.cache, CacheStatus::Hit);
    assert_eq!(source_objects(&patched.compiled), ["kernel/sys.o"], "a one-file patch must recompile one object");
    assert!(patched.timings.compile_secs > 0.0);
    assert!(log.lines().iter().any(|l| l.contains("CC      kernel/sys.o")), "progress lines reach the sink");
    let base_vmlinux = std::fs::read(&base.vmlinux).unwrap();
    assert_ne!(std::fs::read(&patched.vmlinux).unwrap(), base_vmlinux);

    // Back to the base: the patch is reverted, one object recompiled, and
    // the result is byte for byte the cold build's.
    let ctx = BuildContext::new(scratch.path().join("reverted"));
    let reverted = builder.build(&warm_args(), &ctx).await.unwrap();
    assert_eq!(reverted.cache, CacheStatus::Hit);
    assert_eq!(source_objects(&reverted.compiled), ["kernel/sys.o"]);
    assert!(
        std::fs::read(&reverted.vmlinux).unwrap() == base_vmlinux,
        "incremental revert differs from the cold build"
    );
    assert_eq!(std::fs::read(&reverted.bzimage).unwrap(), std::fs::read(&base.bzimage).unwrap());
    assert_eq!(std::fs::read_to_string(&reverted.config).unwrap(), std::fs::read_to_string(&base.config).unwrap());
    eprintln!(
        "patch build {:.1}s (compile {:.1}s), revert build {:.1}s",
        patched.timings.total_secs, patched.timings.compile_secs, reverted.timings.total_secs
    );
}

#[tokio::test]
async fn bad_patches_fail_with_gits_words_and_the_first_compiler_error() {
    if !test_kernel_available() {
        return;
    }
    let _turn = TREE.lock().await;
    let scratch = scratch_data_dir();
    warm_base(&warm_args(), scratch.path()).await;
    let builder = test_builder();

    let req = warm_args().with_patch(misplaced_patch());
    let err = builder.build(&req, &BuildContext::new(scratch.path().join("a"))).await.unwrap_err();
    match &err {
        Error::PatchDoesNotApply { stderr } => {
            assert!(stderr.contains("patch failed: kernel/sys.c:951"), "{stderr}");
            assert!(stderr.contains("patch does not apply"), "{stderr}");
        }
        other => panic!("expected PatchDoesNotApply, got {other:?}"),
    }
    assert_eq!(err.to_stage_failure().code, codes::PATCH_DOES_NOT_APPLY);

    let req = warm_args().with_patch(broken_patch());
    let err = builder.build(&req, &BuildContext::new(scratch.path().join("b"))).await.unwrap_err();
    match &err {
        Error::CompileFailed { first_error, log_tail, log, .. } => {
            let first = first_error.as_deref().unwrap_or_default();
            assert!(first.contains("kernel/sys.c") && first.contains("error:"), "{first}");
            assert!(log_tail.contains("Error"), "{log_tail}");
            let full = std::fs::read_to_string(log.as_ref().unwrap()).unwrap();
            assert!(full.contains(first), "the log file has the error");
        }
        other => panic!("expected CompileFailed, got {other:?}"),
    }
    let failure = err.to_stage_failure();
    assert_eq!(failure.code, codes::BUILD_FAILED);
    assert!(failure.message.contains("error:"), "{}", failure.message);
    assert!(!failure.retryable);
}

#[tokio::test]
async fn patch_check_gives_verdicts_in_seconds_and_leaves_the_tree_warm() {
    if !test_kernel_available() {
        return;
    }
    let _turn = TREE.lock().await;
    let scratch = scratch_data_dir();
    warm_base(&warm_args(), scratch.path()).await;
    let builder = Arc::new(test_builder());
    let store = ArtifactStore::local(scratch.path().join("artifacts")).unwrap();

    let args = PatchCheckArgs { base: warm_args(), patches: vec![getpid_patch(2), misplaced_patch(), broken_patch()] };
    let worker = PatchCheckWorker::new(builder.clone(), scratch.path().join("work"));
    assert_eq!(worker.kind(), StageKind::patch_check());
    assert!(worker.validate_alone(&serde_json::json!({"base": warm_args(), "patches": []})).is_err());
    let arg = serde_json::to_value(&args).unwrap();
    worker.validate_alone(&arg).unwrap();
    let (ctx, log) = kgym_core::StageContext::for_test(StageKind::patch_check(), arg);
    let ctx = ctx.with_artifacts(store.clone());
    let result: PatchCheckResult = serde_json::from_value(worker.run(ctx.clone()).await.unwrap()).unwrap();
    let v = &result.verdicts;
    assert_eq!(v.len(), 3);

    assert!(v[0].applies && v[0].compiles && v[0].error.is_none(), "{:?}", v[0]);
    assert_eq!(v[0].files, ["kernel/sys.c"]);
    let getpid: Vec<_> = v[0].functions.iter().filter(|f| f.function.contains("getpid")).collect();
    assert!(!getpid.is_empty(), "getpid not among the changed functions: {:?}", v[0].functions);
    assert!(getpid.iter().all(|f| f.object == "kernel/sys.o"));
    assert!(getpid.iter().any(|f| f.before.is_some() && f.after > f.before), "{getpid:?}");

    assert!(!v[1].applies && !v[1].compiles);
    assert!(v[1].error.as_deref().unwrap_or_default().contains("patch does not apply"), "{:?}", v[1]);

    assert!(v[2].applies && !v[2].compiles);
    assert!(v[2].error.as_deref().unwrap_or_default().contains("error:"), "{:?}", v[2]);
    assert!(v[2].functions.is_empty());
    for (i, verdict) in v.iter().enumerate() {
        eprintln!("patch check {i}: {:.2}s", verdict.seconds);
        assert!(verdict.seconds > 0.0);
    }
    assert!(log.lines().iter().any(|l| l.contains("checking patch 3/3")));
    assert!(store.exists(&ctx.artifact_key("patch-check.log").unwrap()).await.unwrap());

    // The tree is exactly as before the check: a patch build recompiles
    // only the patched object.
    let out = builder
        .build(&warm_args().with_patch(getpid_patch(3)), &BuildContext::new(scratch.path().join("after")))
        .await
        .unwrap();
    assert_eq!(out.cache, CacheStatus::Hit);
    assert_eq!(source_objects(&out.compiled), ["kernel/sys.o"]);
}

#[tokio::test]
async fn build_worker_stores_artifacts_and_reports_typed_failures() {
    if !test_kernel_available() {
        return;
    }
    let _turn = TREE.lock().await;
    let scratch = scratch_data_dir();
    warm_base(&warm_args(), scratch.path()).await;
    let store = ArtifactStore::local(scratch.path().join("artifacts")).unwrap();
    let worker = BuildWorker::new(Arc::new(test_builder()), scratch.path().join("work"));
    assert_eq!(worker.kind(), StageKind::build());

    let mut req = warm_args().with_patch(getpid_patch(4));
    // The kernel's compile_commands.json generator is a python3 script.
    req.compile_commands = kgym_testkit::require_tool("python3").is_some();
    let arg = serde_json::to_value(&req).unwrap();
    worker.validate_alone(&arg).unwrap();
    let (ctx, log) = kgym_core::StageContext::for_test(StageKind::build(), arg);
    let ctx = ctx.with_artifacts(store.clone());
    let result: BuildResult = serde_json::from_value(worker.run(ctx.clone()).await.unwrap()).unwrap();
    assert_eq!(result.cache, CacheStatus::Hit);
    assert_eq!(result.bzimage, ctx.artifact_key("bzImage").unwrap());
    for key in [&result.bzimage, &result.vmlinux, &result.config, &result.log] {
        let path = store.local_path(key).unwrap();
        assert!(std::fs::metadata(&path).unwrap().len() > 0, "{key} is empty");
    }
    if req.compile_commands {
        let key = result.compile_commands.as_ref().expect("compile_commands.json was requested");
        let json: serde_json::Value = serde_json::from_slice(&store.get(key).await.unwrap()).unwrap();
        let entries = json.as_array().unwrap();
        assert!(entries.len() > 200, "{} entries", entries.len());
        assert!(entries.iter().any(|e| e["file"].as_str().unwrap_or_default().ends_with("kernel/sys.c")));
    }
    let config = String::from_utf8(store.get(&result.config).await.unwrap().to_vec()).unwrap();
    assert!(config.contains("CONFIG_SERIAL_8250_CONSOLE=y"));
    assert!(log.lines().iter().any(|l| l.contains("kernel/sys.o")));
    assert!(!scratch.path().join("work").read_dir().unwrap().any(|_| true), "scratch folder left behind");

    // A failing build: typed failure, and its log is still stored.
    let arg = serde_json::to_value(warm_args().with_patch(broken_patch())).unwrap();
    let (ctx, _) = kgym_core::StageContext::for_test(StageKind::build(), arg);
    let ctx = ctx.with_artifacts(store.clone());
    let failure = worker.run(ctx.clone()).await.unwrap_err();
    assert_eq!(failure.code, codes::BUILD_FAILED);
    assert!(failure.detail.as_deref().unwrap_or_default().contains("error"), "{failure:?}");
    let stored_log = store.get(&ctx.artifact_key("build.log").unwrap()).await.unwrap();
    assert!(String::from_utf8_lossy(&stored_log).contains("this is not C"));

    // Bad arguments are refused before anything runs.
    assert!(worker.validate_alone(&serde_json::json!({"source": {"type": "git", "url": "", "commit": ""}})).is_err());
    let (ctx, _) = kgym_core::StageContext::for_test(StageKind::build(), serde_json::json!({"nonsense": true}));
    assert_eq!(worker.run(ctx).await.unwrap_err().code, codes::BAD_ARGUMENT);
}

#[tokio::test]
async fn concurrent_builds_of_one_tree_take_turns() {
    if !test_kernel_available() {
        return;
    }
    let _turn = TREE.lock().await;
    let scratch = scratch_data_dir();
    warm_base(&warm_args(), scratch.path()).await;
    // Two builders (as two processes would have) on the same data directory.
    let (one, two) = (test_builder(), test_builder());
    let req_a = warm_args().with_patch(marker_patch("A"));
    let req_b = warm_args().with_patch(marker_patch("B"));
    let ctx_a = BuildContext::new(scratch.path().join("a"));
    let ctx_b = BuildContext::new(scratch.path().join("b"));
    let (a, b) = tokio::join!(one.build(&req_a, &ctx_a), two.build(&req_b, &ctx_b));
    let (a, b) = (a.unwrap(), b.unwrap());
    assert_eq!((a.cache, b.cache), (CacheStatus::Hit, CacheStatus::Hit));
    let (va, vb) = (std::fs::read(&a.vmlinux).unwrap(), std::fs::read(&b.vmlinux).unwrap());
    assert!(contains(&va, "kgym-marker-A") && !contains(&va, "kgym-marker-B"), "build A got the wrong tree");
    assert!(contains(&vb, "kgym-marker-B") && !contains(&vb, "kgym-marker-A"), "build B got the wrong tree");
}

#[tokio::test]
async fn patch_check_says_per_file_what_compiled_and_never_compiles_nothing() {
    if !test_kernel_available() {
        return;
    }
    let _turn = TREE.lock().await;
    let scratch = scratch_data_dir();
    warm_base(&warm_args(), scratch.path()).await;
    let builder = test_builder();
    let patches = [
        HEADER_PATCH,
        UNBUILT_C_PATCH,
        NEW_FILE_PATCH,
        UNINCLUDED_HEADER_PATCH,
        INCLUDED_C_PATCH,
        NEW_FILE_BUILT_PATCH,
    ]
    .map(str::to_owned);
    let ctx = BuildContext::new(scratch.path().join("check"));
    let v = builder.check_patches(&warm_args(), &patches, &ctx).await.unwrap();
    for (i, verdict) in v.iter().enumerate() {
        eprintln!(
            "patch {i}: compiles={} {:?} error={:?} ({:.1}s)",
            verdict.compiles, verdict.file_checks, verdict.error, verdict.seconds
        );
    }

    // A header: the objects including it (kbuild's records) are rebuilt.
    let header = &v[0].file_checks[0];
    assert!(v[0].applies && v[0].compiles, "{:?}", v[0]);
    assert_eq!((header.kind, header.outcome), (FileKind::Header, FileOutcome::Compiled));
    assert_eq!(header.objects, ["arch/x86/entry/vdso/vgetcpu.o", "kernel/sys.o"]);

    // Nothing built reads it: applies, but does not "compile", and says why.
    for (i, why) in [
        (1, "not built in this config"),
        (2, "a new file nothing built reads"),
        (3, "a header no built object includes"),
    ] {
        let check = &v[i].file_checks[0];
        assert!(v[i].applies && !v[i].compiles, "patch {i}: {:?}", v[i]);
        assert_eq!(check.outcome, FileOutcome::NotBuilt, "patch {i}");
        assert!(check.objects.is_empty() && v[i].functions.is_empty(), "patch {i}: {:?}", v[i]);
        assert!(v[i].error.as_deref().unwrap_or_default().contains(why), "patch {i}: {:?}", v[i].error);
    }
    assert!(v[2].file_checks[0].new);

    // A C file compiled inside another one.
    let included = &v[4].file_checks[0];
    assert!(v[4].compiles, "{:?}", v[4]);
    assert_eq!((included.kind, included.outcome), (FileKind::Source, FileOutcome::Compiled));
    assert_eq!(included.objects, ["kernel/sched/build_policy.o"]);

    // A new file its Makefile builds: a full build, and its object found.
    let (new, makefile) = (&v[5].file_checks[0], &v[5].file_checks[1]);
    assert!(v[5].compiles, "{:?}", v[5]);
    assert_eq!((new.new, new.outcome), (true, FileOutcome::Compiled));
    assert_eq!(new.objects, ["kernel/kgym_new.o"]);
    assert_eq!((makefile.kind, makefile.outcome), (FileKind::Other, FileOutcome::Compiled));

    // The tree is the base again: one object for a patch build.
    let out = builder
        .build(&warm_args().with_patch(getpid_patch(5)), &BuildContext::new(scratch.path().join("after")))
        .await
        .unwrap();
    assert_eq!(out.cache, CacheStatus::Hit);
    assert!(source_objects(&out.compiled).contains(&"kernel/sys.o"), "{:?}", out.compiled);
    assert!(!out.compiled.iter().any(|o| o.contains("kgym_new")), "the new file's object outlived the check");
}
