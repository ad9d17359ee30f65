//! The steps of a [`LocalBuilder`](crate::LocalBuilder) build: resolve the
//! source, lock the warm tree of the request's key, (cold) check out and
//! configure, move the tree to the requested patch, `make`, and hand out
//! copies of the outputs.

use std::path::{Path, PathBuf};
use std::time::{Instant, SystemTime, UNIX_EPOCH};

use kgym_core::stage::StageArgs;
use kgym_core::stage::build::{
    Arch, Backport, BuildArgs, BuildTimings, CacheStatus, Compiler, KernelConfig, KernelSource, Linker,
};
use kgym_core::stage::patch_check::PatchVerdict;
use serde::Serialize;
use tracing::Instrument;

use crate::backport::{self, Decision, ResolvedBackport};
use crate::blocking::run_blocking;
use crate::builder::Settings;
use crate::checkout;
use crate::error::{Error, Result};
use crate::kconfig;
use crate::lineage;
use crate::log::BuildLog;
use crate::make::{self, MakeEnv};
use crate::patch;
use crate::patch_check;
use crate::process::{self, Limits, require_tool};
use crate::repo_cache::normalize_url;
use crate::tarball;
use crate::warm_tree::{self, Busy, WarmTree};
use crate::{BuildContext, BuildOutput};

/// Bumped when the way a tree is prepared changes (old trees are rebuilt).
const KEY_FORMAT: u32 = 3;

/// The make target of a build (builds `vmlinux` too).
const IMAGE_TARGET: &str = "bzImage";

/// Where the source of a tree comes from, once resolved.
pub(crate) enum Source {
    Git { repo_dir: PathBuf, commit: git2::Oid, backports: Vec<ResolvedBackport> },
    Tarball { pristine: PathBuf },
}

/// Everything that determines a tree's content except the patch.
#[derive(Serialize)]
struct KeyMaterial<'a> {
    format: u32,
    source: SourceKey,
    backports: &'a [Backport],
    config: &'a KernelConfig,
    arch: Arch,
    compiler: Compiler,
    linker: Option<Linker>,
    make_args: &'a [String],
}

#[derive(Serialize)]
#[serde(tag = "type", rename_all = "snake_case")]
enum SourceKey {
    Git {
        url: String,
        commit: String,
    },
    /// A tree shared by the commits of one lineage ([`BuildArgs::warm_lineage`]).
    GitLineage {
        url: String,
        lineage: String,
    },
    Tarball {
        identity: String,
    },
}

/// A locked, built tree and what is known about the build.
struct Prepared {
    tree: WarmTree,
    make: MakeEnv,
    limits: Limits,
    cache: CacheStatus,
    timings: BuildTimings,
    compiled: Vec<String>,
}

fn now_secs() -> u64 {
    SystemTime::now().duration_since(UNIX_EPOCH).map(|d| d.as_secs()).unwrap_or_default()
}

fn validate(req: &BuildArgs) -> Result<()> {
    let mut problems = req.check();
    if matches!(req.source, KernelSource::Tarball { .. }) && !req.backports.is_empty() {
        problems.push("backports need a git source (a tarball has no history to check)".to_owned());
    }
    if problems.is_empty() { Ok(()) } else { Err(Error::InvalidRequest { problems }) }
}

async fn resolve_source(s: &Settings, req: &BuildArgs, limits: &Limits, log: &BuildLog) -> Result<(Source, SourceKey)> {
    match &req.source {
        KernelSource::Git { url, commit } => {
            log.step(&format!("resolving {commit} in {url}"));
            let resolved = s.repos.resolve(url, commit, limits).await?;
            let mut backports = Vec::new();
            for bp in &req.backports {
                let fix = match s.repos.resolve(url, &bp.fix_hash, limits).await {
                    Ok(r) => r.oid,
                    Err(Error::CommitNotFound { .. }) => {
                        return Err(Error::BackportFailed {
                            fix: bp.fix_hash.clone(),
                            title: bp.fix_title.clone(),
                            reason: format!("the fix commit is not in {url}"),
                        });
                    }
                    Err(e) => return Err(e),
                };
                let guilty = match &bp.guilty_hash {
                    None => None,
                    Some(g) => match s.repos.resolve(url, g, limits).await {
                        Ok(r) => Some(Some(r.oid)),
                        Err(Error::CommitNotFound { .. }) => Some(None),
                        Err(e) => return Err(e),
                    },
                };
                backports.push(ResolvedBackport { spec: bp.clone(), fix, guilty });
            }
            let key = SourceKey::Git { url: normalize_url(url), commit: resolved.oid.to_string() };
            Ok((Source::Git { repo_dir: resolved.repo_dir, commit: resolved.oid, backports }, key))
        }
        KernelSource::Tarball { path } => {
            let identity = {
                let p = path.clone();
                run_blocking("identify tarball", move || tarball::identity(&p)).await?
            };
            let pristine = tarball::ensure_extracted(&s.sources_dir(), path, limits, log).await?;
            Ok((Source::Tarball { pristine }, SourceKey::Tarball { identity }))
        }
    }
}

/// Checks out the sources of a cold tree; returns (commit, applied backports).
async fn populate(
    tree: &WarmTree,
    source: Source,
    limits: &Limits,
    log: &BuildLog,
) -> Result<(Option<String>, Vec<String>)> {
    let src = tree.src();
    match source {
        Source::Git { repo_dir, commit, backports } => {
            log.step(&format!("checking out {commit}"));
            let (decisions, specs) = run_blocking("check out", move || {
                let repo = checkout::init_worktree(&repo_dir, &src)?;
                let (head, decisions) = backport::apply(&repo, commit, &backports)?;
                checkout::checkout(&repo, head)?;
                Ok((decisions, backports))
            })
            .await?;
            let mut applied = Vec::new();
            for (d, bp) in decisions.iter().zip(&specs) {
                log.step(&format!("backport {} ({}): {d:?}", bp.spec.fix_hash, bp.spec.fix_title));
                if *d == Decision::Applied {
                    applied.push(bp.spec.fix_hash.clone());
                }
            }
            limits.check("checking out")?;
            Ok((Some(commit.to_string()), applied))
        }
        Source::Tarball { pristine } => {
            log.step("linking the source tree");
            tarball::link_copy(&pristine, &src, limits).await?;
            Ok((None, Vec::new()))
        }
    }
}

/// Deletes build products written since `since` (Unix seconds): after make
/// was killed, a half-written object newer than its source would otherwise
/// be taken as up to date.
async fn remove_partial_outputs(out: &Path, since: u64) -> Result<usize> {
    let out = out.to_owned();
    run_blocking("remove partial outputs", move || {
        let mut removed = 0;
        let mut stack = vec![out];
        while let Some(dir) = stack.pop() {
            let Ok(entries) = std::fs::read_dir(&dir) else { continue };
            for e in entries.flatten() {
                let path = e.path();
                let Ok(meta) = path.symlink_metadata() else { continue };
                if meta.is_dir() {
                    stack.push(path);
                    continue;
                }
                let name = e.file_name().to_string_lossy().into_owned();
                let product = [".o", ".a", ".ko", ".bin", ".elf"].iter().any(|ext| name.ends_with(ext))
                    || ["vmlinux", "bzImage", "System.map"].contains(&name.as_str())
                    || name.starts_with(".tmp_vmlinux");
                let mtime = meta.modified().ok().and_then(|t| t.duration_since(UNIX_EPOCH).ok()).map(|d| d.as_secs());
                if product && mtime.is_some_and(|m| m >= since) && std::fs::remove_file(&path).is_ok() {
                    removed += 1;
                }
            }
        }
        Ok(removed)
    })
    .await
}

/// Brings the tree's sources from the patch they carry to `want`.
pub(crate) async fn switch_patch(
    tree: &mut WarmTree,
    want: Option<&str>,
    limits: &Limits,
    log: &BuildLog,
) -> Result<()> {
    if tree.state.applied_patch.as_deref() == want {
        return Ok(());
    }
    let src = tree.src();
    tree.state.busy = Some(Busy::Patching);
    tree.save()?;
    if let Some(prev) = tree.state.applied_patch.clone() {
        patch::apply(&src, &prev, true, limits, log).await?;
        tree.state.applied_patch = None;
        tree.state.built = false;
    }
    if let Some(p) = want {
        if let Err(e) = patch::apply(&src, p, false, limits, log).await {
            // git apply is all-or-nothing: the tree is clean again.
            if matches!(e, Error::PatchDoesNotApply { .. }) {
                tree.state.busy = None;
                tree.save()?;
            }
            return Err(e);
        }
        tree.state.applied_patch = Some(p.to_owned());
        tree.state.built = false;
    }
    tree.state.busy = None;
    tree.save()
}

/// Runs make for `targets`, keeping the tree consistent if it is stopped.
async fn run_make(
    tree: &mut WarmTree,
    make: &MakeEnv,
    targets: &[&str],
    limits: &Limits,
    log: &BuildLog,
) -> Result<Vec<String>> {
    let started = now_secs();
    tree.state.busy = Some(Busy::Making { started });
    tree.save()?;
    let res = make.run(targets, limits, log).await;
    let done = match res {
        Ok(done) => done,
        Err(e) => {
            let removed = remove_partial_outputs(&tree.out(), started).await?;
            log.step(&format!("make stopped; removed {removed} possibly partial outputs"));
            tree.state.busy = None;
            tree.state.built = false;
            tree.save()?;
            return Err(e);
        }
    };
    tree.state.busy = None;
    if !done.status.success() {
        tree.state.built = false;
        tree.save()?;
        log.flush();
        return Err(Error::CompileFailed {
            status: process::describe(&done.status),
            first_error: make::first_error(&done.lines),
            log_tail: done.tail(40),
            log: Some(log.path().to_owned()),
        });
    }
    tree.save()?;
    Ok(make::compiled_objects(&done.lines))
}

async fn prepare(s: &Settings, req: &BuildArgs, ctx: &BuildContext, log: &BuildLog) -> Result<Prepared> {
    let started = Instant::now();
    validate(req)?;
    let limits = Limits::new(req.timeout.unwrap_or(s.timeout), ctx.cancel.clone());
    let mut make = MakeEnv {
        src: PathBuf::new(),
        out: PathBuf::new(),
        arch: req.arch,
        compiler: req.compiler,
        linker: req.linker,
        ccache: s.ccache.clone(),
        jobs: s.jobs,
        make_args: req.make_args.clone(),
        seed_script: Some(s.seed_script.clone()),
    };
    make.check_tools_in(&std::env::var_os("PATH").unwrap_or_default())?;
    if req.patch.is_some() {
        require_tool("git")?;
    }

    let (source, mut source_key) = resolve_source(s, req, &limits, log).await?;
    if let (Some(lineage), KernelSource::Git { url, .. }) = (&req.warm_lineage, &req.source) {
        source_key = SourceKey::GitLineage { url: normalize_url(url), lineage: lineage.clone() };
    }
    let material = KeyMaterial {
        format: KEY_FORMAT,
        source: source_key,
        backports: &req.backports,
        config: &req.config,
        arch: req.arch,
        compiler: req.compiler,
        linker: req.linker,
        make_args: &req.make_args,
    };
    let (key, description) = warm_tree::key_of(&material);
    log.step(&format!("waiting for warm tree {key}"));
    let mut tree = s.trees.open(&key, &description, &ctx.cancel).await?;
    if tree.stopped_earlier_make > 0 {
        log.step(&format!(
            "killed {} processes of an earlier make of this tree whose owner died",
            tree.stopped_earlier_make
        ));
    }
    make.src = tree.src();
    make.out = tree.out();
    if let Some(Busy::Making { started }) = tree.state.busy {
        let removed = remove_partial_outputs(&tree.out(), started).await?;
        log.step(&format!("previous make on this tree was interrupted; removed {removed} possibly partial outputs"));
        tree.state.busy = None;
        tree.save()?;
    }

    let mut timings = BuildTimings::default();
    let mut moved: Option<Vec<String>> = None;
    let mut cache = if tree.state.ready {
        log.step(&format!("reusing warm tree {key}"));
        if let Source::Git { commit, .. } = &source
            && tree.state.commit.as_deref() != Some(commit.to_string().as_str())
        {
            let changed = lineage::move_to_commit(&mut tree, source, &make, &req.config, &limits, log).await?;
            timings.checkout_secs = started.elapsed().as_secs_f64();
            moved = Some(changed.unwrap_or_default());
        }
        CacheStatus::Hit
    } else {
        log.step(&format!("preparing cold tree {key}"));
        tree.reset(description.clone()).await?;
        let (commit, applied) = populate(&tree, source, &limits, log).await?;
        timings.checkout_secs = started.elapsed().as_secs_f64();
        let t = Instant::now();
        let mismatches = kconfig::generate(&make, &req.config, &limits, log).await?;
        timings.config_secs = t.elapsed().as_secs_f64();
        tree.state.ready = true;
        tree.state.commit = commit;
        tree.state.backports_applied = applied;
        tree.state.config_mismatches = mismatches;
        tree.save()?;
        CacheStatus::Miss
    };

    for m in &tree.state.config_mismatches {
        let actual = m.actual.as_deref().unwrap_or("absent");
        log.step(&format!("warning: CONFIG_{}={} was requested, the final config has {actual}", m.symbol, m.requested));
    }
    if req.strict_config && !tree.state.config_mismatches.is_empty() {
        return Err(Error::UnknownConfig { mismatches: tree.state.config_mismatches.clone() });
    }

    let t = Instant::now();
    switch_patch(&mut tree, req.patch.as_deref(), &limits, log).await?;
    timings.checkout_secs += t.elapsed().as_secs_f64();

    let t = Instant::now();
    let mut compiled = Vec::new();
    if !tree.state.built {
        compiled = match run_make(&mut tree, &make, &[IMAGE_TARGET], &limits, log).await {
            Ok(compiled) => compiled,
            // Objects of the tree's earlier commit may be what broke the
            // build: a step must never fail because of them, so the same
            // sources are built once more from an empty build directory —
            // unless the error is in a file the move rewrote (then the new
            // sources are broken, and a cold build fails the same way).
            Err(Error::CompileFailed { first_error, .. })
                if moved.as_ref().is_some_and(|c| !lineage::error_in_changed_file(first_error.as_deref(), c)) =>
            {
                log.step(&format!(
                    "the warm build after moving commits failed ({}); building cold to rule out stale objects",
                    first_error.as_deref().unwrap_or("no error line")
                ));
                cache = CacheStatus::Miss;
                lineage::clear_build_dir(&mut tree, &make, &req.config, &limits, log).await?;
                run_make(&mut tree, &make, &[IMAGE_TARGET], &limits, log).await?
            }
            Err(e) => return Err(e),
        };
        tree.state.built = true;
        tree.save()?;
    } else {
        log.step("the tree is already built for this request");
    }
    if req.compile_commands {
        run_make(&mut tree, &make, &["compile_commands.json"], &limits, log).await?;
    }
    timings.compile_secs = t.elapsed().as_secs_f64();
    Ok(Prepared { tree, make, limits, cache, timings, compiled })
}

async fn copy_output(from: PathBuf, to: PathBuf) -> Result<PathBuf> {
    run_blocking("copy build output", move || {
        if !from.is_file() {
            return Err(Error::MissingOutput { path: from });
        }
        std::fs::copy(&from, &to).map_err(|e| Error::io(&to, e))?;
        Ok(to)
    })
    .await
}

async fn release(s: &Settings, mut tree: WarmTree) -> Result<()> {
    tree.measure().await?;
    tree.save()?;
    let (key, size) = (tree.key.clone(), tree.state.size_bytes);
    drop(tree);
    let evicted = s.trees.evict(&key, size).await?;
    if !evicted.is_empty() {
        tracing::info!(?evicted, "evicted warm trees");
    }
    Ok(())
}

fn describe_source(req: &BuildArgs) -> String {
    match &req.source {
        KernelSource::Git { url, commit } => format!("{url}@{commit}"),
        KernelSource::Tarball { path } => path.display().to_string(),
    }
}

/// A build into `ctx.out_dir`.
pub(crate) async fn build(s: &Settings, req: &BuildArgs, ctx: &BuildContext) -> Result<BuildOutput> {
    let span = tracing::info_span!("kgym_build", source = %describe_source(req), patched = req.patch.is_some());
    async {
        let started = Instant::now();
        tokio::fs::create_dir_all(&ctx.out_dir).await.map_err(|e| Error::io(&ctx.out_dir, e))?;
        let out_dir = ctx.out_dir.canonicalize().map_err(|e| Error::io(&ctx.out_dir, e))?;
        let log = BuildLog::create(&out_dir.join("build.log"), ctx.logs.clone())?;
        let p = prepare(s, req, ctx, &log).await?;
        let out = p.tree.out();
        log.step("copying outputs");
        let bzimage = copy_output(out.join("arch/x86/boot/bzImage"), out_dir.join("bzImage")).await?;
        let vmlinux = copy_output(out.join("vmlinux"), out_dir.join("vmlinux")).await?;
        let config = copy_output(out.join(".config"), out_dir.join("config")).await?;
        let compile_commands = if req.compile_commands {
            Some(copy_output(out.join("compile_commands.json"), out_dir.join("compile_commands.json")).await?)
        } else {
            None
        };
        let state = p.tree.state.clone();
        release(s, p.tree).await?;
        let mut timings = p.timings;
        timings.total_secs = started.elapsed().as_secs_f64();
        log.step(&format!("done in {:.1}s ({:?}, {} objects compiled)", timings.total_secs, p.cache, p.compiled.len()));
        Ok(BuildOutput {
            bzimage,
            vmlinux,
            config,
            log: log.path().to_owned(),
            compile_commands,
            commit: state.commit,
            arch: req.arch,
            cmdline: req.cmdline.clone(),
            timings,
            cache: p.cache,
            config_mismatches: state.config_mismatches,
            backports_applied: state.backports_applied,
            compiled: p.compiled,
        })
    }
    .instrument(span)
    .await
}

/// Patch check on the warm tree of `base`.
pub(crate) async fn check_patches(
    s: &Settings,
    base: &BuildArgs,
    patches: &[String],
    ctx: &BuildContext,
) -> Result<Vec<PatchVerdict>> {
    if patches.is_empty() || patches.iter().any(|p| p.trim().is_empty()) {
        return Err(Error::InvalidRequest {
            problems: vec!["patches must be a non-empty list of non-empty diffs".into()],
        });
    }
    let span = tracing::info_span!("kgym_patch_check", source = %describe_source(base), patches = patches.len());
    async {
        patch_check::disassembler()?;
        require_tool("git")?;
        tokio::fs::create_dir_all(&ctx.out_dir).await.map_err(|e| Error::io(&ctx.out_dir, e))?;
        let log = BuildLog::create(&ctx.out_dir.join("patch-check.log"), ctx.logs.clone())?;
        let mut base = base.clone();
        base.compile_commands = false;
        let mut p = prepare(s, &base, ctx, &log).await?;
        let mut verdicts = Vec::with_capacity(patches.len());
        for (i, patch) in patches.iter().enumerate() {
            log.step(&format!("checking patch {}/{}", i + 1, patches.len()));
            let v = patch_check::check_one(&mut p.tree, &p.make, patch, &p.limits, &log).await?;
            log.step(&format!(
                "patch {}: applies={} compiles={} functions changed={} ({:.1}s)",
                i + 1,
                v.applies,
                v.compiles,
                v.functions.len(),
                v.seconds
            ));
            verdicts.push(v);
        }
        release(s, p.tree).await?;
        Ok(verdicts)
    }
    .instrument(span)
    .await
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn requests_are_validated() {
        let mut req = BuildArgs::new(
            KernelSource::tarball("/x.tar.xz"),
            KernelConfig::Base { base: kgym_core::stage::build::BaseConfig::Tinyconfig, fragments: vec![] },
        );
        assert!(validate(&req).is_ok());
        req.backports.push(Backport {
            fix_hash: "a".into(),
            fix_title: "t".into(),
            guilty_hash: None,
            force_merge: false,
        });
        req.patch = Some(" ".into());
        let err = validate(&req).unwrap_err();
        match &err {
            Error::InvalidRequest { problems } => assert_eq!(problems.len(), 2, "{problems:?}"),
            other => panic!("{other}"),
        }
        assert_eq!(err.code(), kgym_core::failure::codes::BAD_ARGUMENT);
    }

    #[tokio::test]
    async fn partial_outputs_newer_than_the_make_are_removed() {
        let dir = tempfile::tempdir().unwrap();
        let out = dir.path();
        std::fs::create_dir_all(out.join("kernel")).unwrap();
        for f in ["kernel/old.o", "kernel/.old.o.cmd", "kernel/new.o", "kernel/.new.o.cmd", "vmlinux", "include.h"] {
            std::fs::write(out.join(f), "x").unwrap();
        }
        let old = SystemTime::now() - std::time::Duration::from_secs(3600);
        std::fs::File::options().write(true).open(out.join("kernel/old.o")).unwrap().set_modified(old).unwrap();
        let since = now_secs() - 5;
        assert_eq!(remove_partial_outputs(out, since).await.unwrap(), 2);
        assert!(out.join("kernel/old.o").exists() && out.join("kernel/.new.o.cmd").exists());
        assert!(!out.join("kernel/new.o").exists() && !out.join("vmlinux").exists());
        assert!(out.join("include.h").exists());
    }
}
