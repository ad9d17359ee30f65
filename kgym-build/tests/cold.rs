//! Failures of cold builds with real bad input: unknown config symbols in
//! strict mode, cancellation and timeout in the middle of `make` (the whole
//! process tree must die), bad commits, unreachable repositories. Each test
//! uses its own scratch data directory (sharing the extracted tarball).

mod common;

use std::time::{Duration, Instant};

use common::{KERNEL_TARBALL, processes_mentioning, scratch_builder, scratch_data_dir, test_kernel_available};
use kgym_build::{BuildContext, Error, KernelBuilder};
use kgym_core::failure::codes;
use kgym_core::stage::build::{Backport, BaseConfig, BuildArgs, KernelConfig, KernelSource};

fn tiny(fragment: &str) -> BuildArgs {
    BuildArgs::new(
        KernelSource::tarball(KERNEL_TARBALL),
        KernelConfig::Base { base: BaseConfig::Tinyconfig, fragments: vec![fragment.to_owned()] },
    )
}

#[tokio::test]
async fn strict_config_rejects_symbols_that_do_not_survive() {
    if !test_kernel_available() {
        return;
    }
    let data = scratch_data_dir();
    let builder = scratch_builder(data.path()).build().unwrap();
    let mut req = tiny("CONFIG_64BIT=y\nCONFIG_KGYM_NO_SUCH_OPTION=y\n# CONFIG_SMP is not set\n");
    req.strict_config = true;
    let err = builder.build(&req, &BuildContext::new(data.path().join("out"))).await.unwrap_err();
    match &err {
        Error::UnknownConfig { mismatches } => {
            assert_eq!(mismatches.len(), 1, "{mismatches:?}");
            assert_eq!(mismatches[0].symbol, "KGYM_NO_SUCH_OPTION");
            assert_eq!(mismatches[0].requested, "y");
            assert_eq!(mismatches[0].actual, None);
        }
        other => panic!("expected UnknownConfig, got {other:?}"),
    }
    let failure = err.to_stage_failure();
    assert_eq!(failure.code, codes::UNKNOWN_CONFIG);
    assert!(failure.message.contains("CONFIG_KGYM_NO_SUCH_OPTION=y"), "{}", failure.message);
    let log = std::fs::read_to_string(data.path().join("out/build.log")).unwrap();
    assert!(log.contains("CONFIG_KGYM_NO_SUCH_OPTION=y was requested"), "the warning is in the log");
}

fn compiling(log: &kgym_core::MemorySink) -> usize {
    log.lines().iter().filter(|l| l.trim_start().starts_with("CC ")).count()
}

/// Runs `build`, cancelling `cancel` once `stop_when` holds for the log;
/// returns the result and how long the build took.
async fn run_until<F>(
    builder: &kgym_build::LocalBuilder,
    req: &BuildArgs,
    ctx: &BuildContext,
    log: &kgym_core::MemorySink,
    stop_when: F,
) -> (Result<kgym_build::BuildOutput, Error>, Duration)
where
    F: Fn(&kgym_core::MemorySink) -> bool,
{
    let build = builder.build(req, ctx);
    tokio::pin!(build);
    let started = Instant::now();
    loop {
        tokio::select! {
            r = &mut build => return (r, started.elapsed()),
            () = tokio::time::sleep(Duration::from_millis(200)) => {
                if stop_when(log) && !ctx.cancel.is_cancelled() {
                    ctx.cancel.cancel();
                }
                assert!(started.elapsed() < Duration::from_secs(600), "the build was not stopped");
            }
        }
    }
}

fn assert_nothing_left(data: &std::path::Path) {
    // make, its sub-makes, gcc, cc1 and as all mention the tree's path.
    let left = processes_mentioning(&data.display().to_string());
    assert!(left.is_empty(), "processes survived the stop: {left:#?}");
}

/// The KASAN test kernel without ccache: minutes of make, stopped early.
fn long_build() -> BuildArgs {
    tiny(kgym_testkit::TEST_KERNEL_FRAGMENT)
}

#[tokio::test]
async fn cancel_kills_the_whole_make_tree() {
    if !test_kernel_available() {
        return;
    }
    let data = scratch_data_dir();
    let builder = scratch_builder(data.path()).ccache(false).build().unwrap();
    let log = common::sink();
    let ctx = BuildContext::new(data.path().join("out")).with_logs(log.clone());
    let (result, _) = run_until(&builder, &long_build(), &ctx, &log, |l| compiling(l) >= 20).await;
    let err = result.unwrap_err();
    assert!(matches!(err, Error::Cancelled { ref phase } if phase.contains("make")), "{err:?}");
    assert_eq!(err.to_stage_failure().code, codes::CANCELLED);
    assert_nothing_left(data.path());
}

#[tokio::test]
async fn timeout_kills_the_whole_make_tree_and_the_tree_recovers() {
    if !test_kernel_available() {
        return;
    }
    let data = scratch_data_dir();
    let builder = scratch_builder(data.path()).ccache(false).build().unwrap();
    // First: stop as soon as make compiles the kernel, leaving a configured
    // tree whose host tools and generated headers are made (so the second
    // build compiles at once, even on a busy machine).
    let log = common::sink();
    let ctx = BuildContext::new(data.path().join("out")).with_logs(log.clone());
    let (result, _) = run_until(&builder, &long_build(), &ctx, &log, |l| compiling(l) >= 1).await;
    assert!(matches!(result, Err(Error::Cancelled { .. })), "{result:?}");

    // Then: the same build with a time limit far below make's time. It
    // resumes the interrupted tree (no new checkout or config) and is
    // stopped mid-make.
    let mut req = long_build();
    req.timeout = Some(Duration::from_secs(25));
    let log = common::sink();
    let ctx = BuildContext::new(data.path().join("out")).with_logs(log.clone());
    let (result, took) = run_until(&builder, &req, &ctx, &log, |_| false).await;
    let err = result.unwrap_err();
    assert!(matches!(err, Error::Timeout { ref phase, .. } if phase.contains("make")), "{err:?}");
    assert_eq!(err.to_stage_failure().code, codes::TIMEOUT);
    assert!(took < Duration::from_secs(25 + 20), "{took:?}");
    assert!(log.lines().iter().any(|l| l.contains("reusing warm tree")), "the configured tree was not reused");
    assert!(compiling(&log) > 0, "make never compiled anything: the test proves nothing");
    assert_nothing_left(data.path());
}

#[tokio::test]
async fn git_sources_fail_with_commit_not_found_and_fetch_failed() {
    let data = tempfile::tempdir().unwrap();
    let origin = git2::Repository::init(data.path().join("origin")).unwrap();
    let sig = git2::Signature::now("t", "t@example.com").unwrap();
    let tree = {
        let mut index = origin.index().unwrap();
        let id = index.write_tree().unwrap();
        origin.find_tree(id).unwrap()
    };
    let head = origin.commit(Some("refs/heads/main"), &sig, &sig, "empty", &tree, &[]).unwrap();
    let url = format!("file://{}", data.path().join("origin").display());
    let builder = kgym_build::LocalBuilder::builder(data.path().join("data")).build().unwrap();
    let config = KernelConfig::Base { base: BaseConfig::Tinyconfig, fragments: vec![] };
    let ctx = BuildContext::new(data.path().join("out"));

    let missing = "1111111111111111111111111111111111111111";
    let req = BuildArgs::new(KernelSource::git(&url, missing), config.clone());
    let err = builder.build(&req, &ctx).await.unwrap_err();
    assert!(matches!(&err, Error::CommitNotFound { commit, .. } if commit == missing), "{err:?}");
    assert_eq!(err.to_stage_failure().code, codes::COMMIT_NOT_FOUND);

    let gone = format!("file://{}", data.path().join("no-such-repo").display());
    let req = BuildArgs::new(KernelSource::git(&gone, head.to_string()), config.clone());
    let err = builder.build(&req, &ctx).await.unwrap_err();
    assert!(matches!(err, Error::FetchFailed { .. }), "{err:?}");
    assert_eq!(err.to_stage_failure().code, codes::FETCH_FAILED);

    // A backport whose fix is nowhere.
    let mut req = BuildArgs::new(KernelSource::git(&url, head.to_string()), config.clone());
    req.backports.push(Backport {
        fix_hash: missing.into(),
        fix_title: "fix".into(),
        guilty_hash: None,
        force_merge: false,
    });
    let err = builder.build(&req, &ctx).await.unwrap_err();
    assert!(matches!(err, Error::BackportFailed { .. }), "{err:?}");

    // Backports on a tarball are refused up front.
    let mut req = BuildArgs::new(KernelSource::tarball(KERNEL_TARBALL), config);
    req.backports.push(Backport {
        fix_hash: head.to_string(),
        fix_title: "x".into(),
        guilty_hash: None,
        force_merge: false,
    });
    let err = builder.build(&req, &ctx).await.unwrap_err();
    assert_eq!(err.to_stage_failure().code, codes::BAD_ARGUMENT);
}
