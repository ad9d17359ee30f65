//! The clang toolchain for real: the minimal kernel of kgym-testkit's
//! config built by kgym-build with clang and `LLVM=1` (lld and the LLVM
//! binutils), then patch builds, a patch check and a compile error on its
//! warm tree. The tests of this file take turns (one warm tree).

mod common;

use std::sync::Arc;

use kgym_build::{BuildContext, BuildOutput, Error, KernelBuilder, PatchChecker};
use kgym_core::failure::codes;
use kgym_core::stage::build::{Arch, BuildArgs, CacheStatus, Compiler};
use tokio::sync::Mutex;

use common::{
    broken_patch, getpid_patch, minimal_args, misplaced_patch, scratch_data_dir, sink, source_objects, test_builder,
    warm_base,
};

/// One warm tree: the tests of this binary use it one at a time, so each
/// knows the state it starts from.
static TREE: Mutex<()> = Mutex::const_new(());

/// Whether the clang kernel can be built here; prints why not (and fails
/// in CI).
fn clang_available() -> bool {
    kgym_testkit::clang_toolchain_available()
}

fn clang_args() -> BuildArgs {
    minimal_args(Arch::X86_64, Compiler::Clang)
}

/// The unpatched clang kernel, built on the shared warm tree.
async fn clang_kernel(scratch: &std::path::Path) -> BuildOutput {
    warm_base(&clang_args(), scratch).await
}

/// The `.comment` section of an ELF file, as `llvm-readelf -p` prints it.
fn elf_comment(path: &std::path::Path) -> String {
    let out = std::process::Command::new("llvm-readelf").arg("-p").arg(".comment").arg(path).output().unwrap();
    assert!(out.status.success(), "llvm-readelf: {}", String::from_utf8_lossy(&out.stderr));
    String::from_utf8_lossy(&out.stdout).into_owned()
}

#[tokio::test]
async fn clang_builds_a_kernel_with_lld_and_rebuilds_one_object_for_a_patch() {
    if !clang_available() {
        return;
    }
    let _turn = TREE.lock().await;
    let scratch = scratch_data_dir();
    let base = clang_kernel(scratch.path()).await;

    let config = std::fs::read_to_string(&base.config).unwrap();
    for want in ["CONFIG_CC_IS_CLANG=y", "CONFIG_LD_IS_LLD=y", "CONFIG_AS_IS_LLVM=y"] {
        assert!(config.lines().any(|l| l == want), "{want} missing from the final config");
    }
    assert!(!config.lines().any(|l| l == "CONFIG_CC_IS_GCC=y"), "the config was made for gcc");
    let comment = elf_comment(&base.vmlinux);
    assert!(comment.contains("clang version"), "vmlinux was not compiled by clang: {comment}");
    assert!(comment.contains("Linker:") && comment.contains("LLD"), "vmlinux was not linked by lld: {comment}");
    assert!(!comment.contains("GCC:"), "gcc-compiled code in vmlinux: {comment}");

    let builder = test_builder();
    let log = sink();
    let ctx = BuildContext::new(scratch.path().join("patched")).with_logs(log.clone());
    let patched = builder.build(&clang_args().with_patch(getpid_patch(11)), &ctx).await.unwrap();
    assert_eq!(patched.cache, CacheStatus::Hit);
    assert_eq!(source_objects(&patched.compiled), ["kernel/sys.o"], "a one-file patch must recompile one object");
    assert!(elf_comment(&patched.vmlinux).contains("clang version"));
    assert_ne!(std::fs::read(&patched.vmlinux).unwrap(), std::fs::read(&base.vmlinux).unwrap());

    // Back to the base: one object again, and the cold build's bytes.
    let reverted = builder.build(&clang_args(), &BuildContext::new(scratch.path().join("reverted"))).await.unwrap();
    assert_eq!(reverted.cache, CacheStatus::Hit);
    assert_eq!(source_objects(&reverted.compiled), ["kernel/sys.o"]);
    assert!(
        std::fs::read(&reverted.vmlinux).unwrap() == std::fs::read(&base.vmlinux).unwrap(),
        "incremental revert differs from the cold clang build"
    );
    eprintln!(
        "clang patch build {:.1}s (compile {:.1}s), revert {:.1}s",
        patched.timings.total_secs, patched.timings.compile_secs, reverted.timings.total_secs
    );
}

#[tokio::test]
async fn clang_compile_errors_are_typed_with_clangs_first_error() {
    if !clang_available() {
        return;
    }
    let _turn = TREE.lock().await;
    let scratch = scratch_data_dir();
    clang_kernel(scratch.path()).await;
    let builder = test_builder();

    let req = clang_args().with_patch(broken_patch());
    let err = builder.build(&req, &BuildContext::new(scratch.path().join("broken"))).await.unwrap_err();
    match &err {
        Error::CompileFailed { first_error, log, .. } => {
            let first = first_error.as_deref().unwrap_or_default();
            eprintln!("clang's first error: {first}");
            // clang's words: gcc reports "unknown type name 'this'" instead.
            assert!(
                first.contains("kernel/sys.c:") && first.contains(": error: use of undeclared identifier 'this'"),
                "{first}"
            );
            let full = std::fs::read_to_string(log.as_ref().unwrap()).unwrap();
            assert!(full.contains(first), "the log file has the error");
            assert!(full.contains("error generated.") || full.contains("errors generated."), "not clang's output");
        }
        other => panic!("expected CompileFailed, got {other:?}"),
    }
    assert_eq!(err.to_stage_failure().code, codes::BUILD_FAILED);

    // The tree is fine afterwards: the base builds again from one object.
    let out = builder.build(&clang_args(), &BuildContext::new(scratch.path().join("after"))).await.unwrap();
    assert_eq!(out.cache, CacheStatus::Hit);
}

#[tokio::test]
async fn clang_patch_check_names_the_changed_function() {
    if !clang_available() {
        return;
    }
    let _turn = TREE.lock().await;
    let scratch = scratch_data_dir();
    clang_kernel(scratch.path()).await;
    let builder = Arc::new(test_builder());
    let ctx = BuildContext::new(scratch.path().join("check"));
    let patches = [getpid_patch(12), misplaced_patch(), broken_patch()];
    let v = builder.check_patches(&clang_args(), &patches, &ctx).await.unwrap();
    assert_eq!(v.len(), 3);

    assert!(v[0].applies && v[0].compiles && v[0].error.is_none(), "{:?}", v[0]);
    let getpid: Vec<_> = v[0].functions.iter().filter(|f| f.function.contains("getpid")).collect();
    assert!(!getpid.is_empty(), "getpid not among the changed functions: {:?}", v[0].functions);
    assert!(getpid.iter().all(|f| f.object == "kernel/sys.o"));
    assert!(getpid.iter().any(|f| f.before.is_some() && f.after > f.before), "{getpid:?}");
    assert!(v[0].functions.len() < 10, "unchanged functions reported as changed: {:?}", v[0].functions);

    assert!(!v[1].applies && !v[1].compiles);
    assert!(v[2].applies && !v[2].compiles);
    assert!(v[2].error.as_deref().unwrap_or_default().contains("error:"), "{:?}", v[2]);
    for (i, verdict) in v.iter().enumerate() {
        eprintln!("clang patch check {i}: {:.2}s", verdict.seconds);
    }

    // The tree is as before the check.
    let out = builder
        .build(&clang_args().with_patch(getpid_patch(13)), &BuildContext::new(scratch.path().join("after")))
        .await
        .unwrap();
    assert_eq!(out.cache, CacheStatus::Hit);
    assert_eq!(source_objects(&out.compiled), ["kernel/sys.o"]);
}
