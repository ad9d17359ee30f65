//! kGym's raw job payload → [`JobSpec`].

use std::path::{Path, PathBuf};

use kgym_core::stage::build::{Arch, BuildArgs, Compiler, KernelConfig, KernelSource, Linker};
use kgym_core::stage::patch_check::PatchCheckArgs;
use kgym_core::stage::reproduce::{FileRef, KernelRef, ReproduceArgs, Reproducer, ReproducerKind, Userspace};
use kgym_core::{ArtifactKey, JobSpec, MachineSpec, StageIndex, StageKind, StageSpec};
use serde_json::{Map, Value};

use crate::{CompatOptions, RawJob};
use kgym_sched::Problem;

type Obj = Map<String, Value>;

/// What an earlier kbuilder stage produced, for the stages that use it.
#[derive(Clone)]
struct Built {
    args: BuildArgs,
    userspace: Userspace,
}

/// What each earlier stage is, as later stages see it.
#[derive(Clone)]
enum Earlier {
    /// Not a kbuilder.
    Other,
    /// A kbuilder whose argument did not convert (its problems are listed).
    BadBuild,
    /// A converted kbuilder.
    Build(Box<Built>),
}

/// Converts a kGym payload, listing every problem.
///
/// ```
/// use kgym_compat::{CompatOptions, RawJob, convert};
/// let raw: RawJob = serde_json::from_value(serde_json::json!({
///     "job_workers": ["kbuilder", "kvmmanager"],
///     "worker_arguments": [
///         {"kernel-git-url": "file:///src/linux", "kernel-commit-id": "v6.1",
///          "kernel-config": "CONFIG_KASAN=y\n", "userspace-image-name": "",
///          "kernel-arch": "amd64", "compiler": "gcc", "linker": "ld"},
///         {"reproducer": {"reproducer-type": "c", "reproducer-text": "int main(){}",
///                         "restart-time": "10m", "ninstance": 2, "nproc": 1},
///          "image-from-worker": 0, "machine-type": "qemu:2-1024"}
///     ],
///     "kv": {"bug-reproduction-for": "abc"}
/// })).unwrap();
/// let spec = convert(&raw, &CompatOptions::default()).unwrap();
/// assert_eq!(spec.stages[1].kind.as_str(), "reproduce");
/// assert_eq!(spec.stages[1].arg["instances"], 2);
/// ```
pub fn convert(raw: &RawJob, opts: &CompatOptions) -> Result<JobSpec, Vec<Problem>> {
    let mut problems = Vec::new();
    if raw.job_workers.is_empty() {
        problems.push(Problem::job("job_workers is empty: the job has no stages"));
    }
    if raw.job_workers.len() != raw.worker_arguments.len() {
        problems.push(Problem::job(format!(
            "job_workers has {} entries but worker_arguments has {}",
            raw.job_workers.len(),
            raw.worker_arguments.len()
        )));
    }
    let mut built: Vec<Earlier> = Vec::new();
    let mut stages = Vec::new();
    for (i, (name, arg)) in raw.job_workers.iter().zip(&raw.worker_arguments).enumerate() {
        let index = StageIndex(i as u32);
        let converted: Result<StageSpec, Vec<String>> = match name.as_str() {
            "kbuilder" => match build_args(arg, opts) {
                Ok(b) => {
                    let spec = StageSpec::new(StageKind::build(), &b.args);
                    built.push(Earlier::Build(Box::new(b)));
                    Ok(spec)
                }
                Err(e) => {
                    built.push(Earlier::BadBuild);
                    Err(e)
                }
            },
            "kvmmanager" => reproduce_args(i, arg, &built).map(|a| StageSpec::new(StageKind::reproduce(), &a)),
            "kprebuilder" => {
                patch_check_args(i, arg, &built, opts).map(|a| StageSpec::new(StageKind::patch_check(), &a))
            }
            other => match StageKind::new(other) {
                Ok(kind) => Ok(StageSpec::new(kind, arg)),
                Err(e) => Err(vec![e.to_string()]),
            },
        };
        if built.len() <= i {
            built.push(Earlier::Other);
        }
        match converted {
            Ok(s) => stages.push(s),
            Err(found) => problems.extend(found.into_iter().map(|m| Problem::stage(index, name, m))),
        }
    }
    if problems.is_empty() { Ok(JobSpec { stages, tags: raw.kv.clone() }) } else { Err(problems) }
}

fn object(arg: &Value) -> Result<&Obj, Vec<String>> {
    arg.as_object().ok_or_else(|| vec!["the argument must be a JSON object".to_owned()])
}

/// A string field; numbers are accepted as their text.
fn text<'a>(o: &'a Obj, key: &str) -> Option<std::borrow::Cow<'a, str>> {
    match o.get(key)? {
        Value::String(s) => Some(s.as_str().into()),
        Value::Number(n) => Some(n.to_string().into()),
        _ => None,
    }
}

fn non_empty(o: &Obj, key: &str) -> Option<String> {
    text(o, key).map(|s| s.trim().to_owned()).filter(|s| !s.is_empty())
}

fn required(o: &Obj, key: &str, problems: &mut Vec<String>) -> String {
    non_empty(o, key).unwrap_or_else(|| {
        problems.push(format!("{key} is missing or empty"));
        String::new()
    })
}

/// A non-negative integer field; numeric strings are accepted.
fn number(o: &Obj, key: &str, problems: &mut Vec<String>) -> Option<u64> {
    let v = o.get(key)?;
    let n = v.as_u64().or_else(|| v.as_str().and_then(|s| s.trim().parse().ok()));
    if n.is_none() && !v.is_null() {
        problems.push(format!("{key} must be a non-negative integer, got {v}"));
    }
    n
}

fn build_args(arg: &Value, opts: &CompatOptions) -> Result<Built, Vec<String>> {
    let o = object(arg)?;
    let mut p = Vec::new();
    let url = required(o, "kernel-git-url", &mut p);
    let commit = required(o, "kernel-commit-id", &mut p);
    let config = match text(o, "kernel-config") {
        Some(c) if !c.trim().is_empty() => c.into_owned(),
        _ => {
            p.push("kernel-config is missing or empty (it must be the full .config text)".into());
            String::new()
        }
    };
    let mut args = BuildArgs::new(KernelSource::git(url, commit), KernelConfig::Full { text: config });
    args.arch = match non_empty(o, "kernel-arch") {
        None => Arch::X86_64,
        Some(name) => Arch::from_name(&name).unwrap_or_else(|| {
            p.push(format!("kernel-arch {name:?} is not supported (amd64 or 386)"));
            Arch::X86_64
        }),
    };
    args.compiler = match non_empty(o, "compiler") {
        None => Compiler::Gcc,
        Some(c) if c.starts_with("gcc") => Compiler::Gcc,
        Some(c) if c.starts_with("clang") => Compiler::Clang,
        Some(c) => {
            p.push(format!("compiler {c:?} is not supported (gcc or clang)"));
            Compiler::Gcc
        }
    };
    args.linker = match non_empty(o, "linker").as_deref() {
        None => None,
        Some("ld") | Some("ld.bfd") => Some(Linker::Ld),
        Some("ld.lld") | Some("lld") => Some(Linker::Lld),
        Some(l) => {
            p.push(format!("linker {l:?} is not supported (ld or ld.lld)"));
            None
        }
    };
    args.patch = text(o, "patch").filter(|s| !s.trim().is_empty()).map(|s| s.into_owned());
    args.cmdline = non_empty(o, "kernel-cmdline");
    let userspace = match non_empty(o, "userspace-image-name") {
        None => Userspace::Initramfs,
        Some(name) => match &opts.image_dir {
            Some(dir) if !name.contains('/') && name != ".." => named_image(dir, &name),
            Some(_) => {
                p.push(format!("userspace-image-name {name:?} must be a file name"));
                Userspace::Initramfs
            }
            None => {
                p.push(format!(
                    "userspace image {name:?} is not available here: leave userspace-image-name empty to boot \
                     the generated initramfs, or start the server with an image directory"
                ));
                Userspace::Initramfs
            }
        },
    };
    if p.is_empty() { Ok(Built { args, userspace }) } else { Err(p) }
}

fn named_image(dir: &Path, name: &str) -> Userspace {
    let stem = Path::new(name).file_stem().and_then(|s| s.to_str()).unwrap_or(name);
    Userspace::Image {
        image: FileRef::Path(dir.join(name)),
        ssh_key: FileRef::Path(dir.join(format!("{stem}.id_rsa"))),
        ssh_user: "root".into(),
        root_device: "/dev/vda".into(),
    }
}

/// An image or vmlinux location as kGym wrote it.
fn file_ref(field: &str, url: &str) -> Result<FileRef, String> {
    let artifact =
        |key: &str| ArtifactKey::parse(key).map(FileRef::Artifact).map_err(|e| format!("{field} {url:?}: {e}"));
    if let Some(path) = url.strip_prefix("file://") {
        return Ok(FileRef::Path(PathBuf::from(path)));
    }
    if url.starts_with('/') {
        return Ok(FileRef::Path(PathBuf::from(url)));
    }
    for prefix in ["gs://", "https://storage.cloud.google.com/", "https://storage.googleapis.com/"] {
        if let Some(rest) = url.strip_prefix(prefix) {
            // bucket/key: the store is the bucket.
            return match rest.split_once('/') {
                Some((_, key)) => artifact(key),
                None => Err(format!("{field} {url:?} names a bucket but no object")),
            };
        }
    }
    if url.starts_with("jobs/") {
        return artifact(url);
    }
    Err(format!("{field} {url:?} is not a local path, file:// URL, gs:// URL or artifact key (jobs/...)"))
}

/// The earlier kbuilder stage named by `key`, with its index.
fn earlier_build<'a>(
    i: usize,
    o: &Obj,
    key: &str,
    built: &'a [Earlier],
    p: &mut Vec<String>,
) -> Option<(usize, &'a Built)> {
    let j = number(o, key, p)? as usize;
    if j >= i {
        p.push(format!("{key} is {j}, which does not run before this stage ({i})"));
        return None;
    }
    match built.get(j) {
        Some(Earlier::Build(b)) => Some((j, b)),
        // Its own problems are listed already.
        Some(Earlier::BadBuild) => None,
        _ => {
            p.push(format!("{key} is {j}, which is not a kbuilder stage"));
            None
        }
    }
}

fn reproduce_args(i: usize, arg: &Value, built: &[Earlier]) -> Result<ReproduceArgs, Vec<String>> {
    let o = object(arg)?;
    let mut p = Vec::new();
    let empty = Obj::new();
    let r = match o.get("reproducer") {
        Some(Value::Object(r)) => r,
        _ => {
            p.push("reproducer is missing (an object with reproducer-type and reproducer-text)".into());
            &empty
        }
    };
    let kind = match non_empty(r, "reproducer-type").as_deref() {
        Some("c") => ReproducerKind::C,
        Some("log") | Some("syz") => ReproducerKind::Syz,
        Some(other) => {
            p.push(format!("reproducer-type {other:?} is not supported (c or log)"));
            ReproducerKind::C
        }
        None if r.is_empty() => ReproducerKind::C,
        None => {
            p.push("reproducer-type is missing (c or log)".into());
            ReproducerKind::C
        }
    };
    let text_ = match text(r, "reproducer-text") {
        Some(t) if !t.trim().is_empty() => t.into_owned(),
        _ if r.is_empty() => String::new(),
        _ => {
            p.push("reproducer-text is missing or empty".into());
            String::new()
        }
    };
    let mut reproducer = Reproducer::c(text_);
    reproducer.kind = kind;
    reproducer.syzkaller_commit = non_empty(r, "syzkaller-checkout");
    if r.get("syzkaller-rollback-to-latest").and_then(Value::as_bool).unwrap_or(false) {
        reproducer.syzkaller_fallback_commit = Some("master".into());
    }
    reproducer.nproc = number(r, "nproc", &mut p).map(|n| n as u32);

    let (kernel, userspace) = match (o.get("image-from-worker"), o.get("image")) {
        (Some(_), Some(_)) => {
            p.push("give either image-from-worker or image, not both".into());
            (None, Userspace::Initramfs)
        }
        (Some(_), None) => match earlier_build(i, o, "image-from-worker", built, &mut p) {
            Some((j, b)) => (Some(KernelRef::FromStage { stage: StageIndex(j as u32) }), b.userspace.clone()),
            None => (None, Userspace::Initramfs),
        },
        (None, Some(Value::Object(img))) => {
            let bz = non_empty(img, "image-url").map(|u| file_ref("image-url", &u));
            let vm = non_empty(img, "vmlinux-url").map(|u| file_ref("vmlinux-url", &u));
            match (bz, vm) {
                (Some(Ok(bzimage)), vm) => match vm.transpose() {
                    Ok(vmlinux) => (Some(KernelRef::Files { bzimage, vmlinux }), Userspace::Initramfs),
                    Err(e) => {
                        p.push(e);
                        (None, Userspace::Initramfs)
                    }
                },
                (Some(Err(e)), _) => {
                    p.push(e);
                    (None, Userspace::Initramfs)
                }
                (None, _) => {
                    p.push("image.image-url is missing".into());
                    (None, Userspace::Initramfs)
                }
            }
        }
        (None, Some(_)) => {
            p.push("image must be an object with image-url".into());
            (None, Userspace::Initramfs)
        }
        (None, None) => {
            p.push("the kernel is missing: give image-from-worker (a kbuilder stage) or image {image-url}".into());
            (None, Userspace::Initramfs)
        }
    };
    let machine = match non_empty(o, "machine-type") {
        None => MachineSpec::default(),
        Some(m) if m == "qemu" || m == "local:qemu" => MachineSpec::default(),
        Some(m) => m.parse().unwrap_or_else(|_| {
            p.push(format!(
                "machine-type {m:?} is not understood (qemu:<cpus>-<memMB>, e.g. qemu:2-1024, or gce:<type>)"
            ));
            MachineSpec::default()
        }),
    };
    // A Compute Engine instance boots a disk (the image with the kernel in
    // its /boot, packed by the reproduce worker), never an initramfs.
    if let (Some(gce), Userspace::Initramfs) = (machine.gce, &userspace) {
        p.push(format!(
            "machine-type \"gce:{gce}\" boots a disk image: give the kbuilder a userspace-image-name \
             (GCE instances cannot boot the generated initramfs)"
        ));
    }
    // kGym keeps these in the reproducer object; accept them beside it too.
    let (mut instances, mut budget) = (None, None);
    for src in [r, o] {
        if let Some(n) = number(src, "ninstance", &mut p) {
            instances = Some(n as u32);
        }
        if let Some(t) = non_empty(src, "restart-time") {
            match kgym_core::duration::parse(&t) {
                Ok(d) => budget = Some(d),
                Err(_) => p.push(format!("restart-time {t:?} is not a duration (e.g. 10m)")),
            }
        }
    }
    let Some(kernel) = kernel else { return Err(p) };
    let mut args = ReproduceArgs::new(kernel, reproducer);
    args.userspace = userspace;
    args.machine = machine;
    if let Some(n) = instances {
        args.instances = n;
    }
    if let Some(d) = budget {
        args.budget = d;
    }
    if p.is_empty() { Ok(args) } else { Err(p) }
}

fn patch_check_args(
    i: usize,
    arg: &Value,
    built: &[Earlier],
    opts: &CompatOptions,
) -> Result<PatchCheckArgs, Vec<String>> {
    let o = object(arg)?;
    let mut p = Vec::new();
    let patches: Vec<String> = match o.get("patches") {
        Some(Value::Array(items)) => items
            .iter()
            .enumerate()
            .filter_map(|(k, v)| match v.as_str() {
                Some(s) => Some(s.to_owned()),
                None => {
                    p.push(format!("patches[{k}] must be a string (a unified diff)"));
                    None
                }
            })
            .collect(),
        _ => {
            p.push("patches is missing (a list of unified diffs)".into());
            Vec::new()
        }
    };
    let from_key =
        ["kcache-from-worker", "cache-from-worker", "image-from-worker"].into_iter().find(|k| o.contains_key(*k));
    let base = if let Some(key) = from_key {
        earlier_build(i, o, key, built, &mut p).map(|(_, b)| b.args.clone())
    } else if o.contains_key("kernel-git-url") {
        match build_args(arg, opts) {
            Ok(b) => Some(b.args),
            Err(e) => {
                p.extend(e);
                None
            }
        }
    } else if o.contains_key("cacheKey") || o.contains_key("cache-key") {
        p.push("kcache keys are not supported: name the kbuilder stage with kcache-from-worker: <index>, or give the kbuilder fields inline".into());
        None
    } else {
        p.push(
            "the base build is missing: give kcache-from-worker: <kbuilder stage> or the kbuilder fields inline".into(),
        );
        None
    };
    match base {
        Some(base) if p.is_empty() => Ok(PatchCheckArgs { base, patches }),
        _ => Err(p),
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    fn kbuilder() -> Value {
        json!({"kernel-git-url": "https://git.kernel.org/pub/scm/linux/kernel/git/torvalds/linux.git",
               "kernel-commit-id": "abc123", "kernel-config": "CONFIG_KASAN=y\n",
               "userspace-image-name": "", "kernel-arch": "386", "compiler": "clang", "linker": "ld.lld",
               "patch": "", "kernel-cmdline": "nokaslr"})
    }

    fn raw(workers: &[&str], args: Vec<Value>) -> RawJob {
        RawJob {
            job_workers: workers.iter().map(|s| s.to_string()).collect(),
            worker_arguments: args,
            kv: Default::default(),
        }
    }

    #[test]
    fn kbuilder_and_kvmmanager_convert_field_by_field() {
        let spec = convert(
            &raw(
                &["kbuilder", "kvmmanager"],
                vec![
                    kbuilder(),
                    json!({"reproducer": {"reproducer-type": "log", "reproducer-text": "r0 = open()",
                                          "syzkaller-checkout": "deadbeef", "syzkaller-rollback-to-latest": true,
                                          "nproc": "4", "restart-time": "5m", "ninstance": 3},
                           "image-from-worker": "0", "machine-type": "qemu:2-2048", "crash-collecting-policy": "random"}),
                ],
            ),
            &CompatOptions::default(),
        )
        .unwrap();
        let b: BuildArgs = serde_json::from_value(spec.stages[0].arg.clone()).unwrap();
        assert_eq!(
            b.source,
            KernelSource::git("https://git.kernel.org/pub/scm/linux/kernel/git/torvalds/linux.git", "abc123")
        );
        assert_eq!(b.config, KernelConfig::Full { text: "CONFIG_KASAN=y\n".into() });
        assert_eq!((b.arch, b.compiler, b.linker), (Arch::I386, Compiler::Clang, Some(Linker::Lld)));
        assert_eq!((b.patch, b.cmdline.as_deref()), (None, Some("nokaslr")));
        let r: ReproduceArgs = serde_json::from_value(spec.stages[1].arg.clone()).unwrap();
        assert_eq!(r.kernel, KernelRef::FromStage { stage: StageIndex(0) });
        assert_eq!(r.reproducer.kind, ReproducerKind::Syz);
        assert_eq!(r.reproducer.syzkaller_commit.as_deref(), Some("deadbeef"));
        assert_eq!(r.reproducer.syzkaller_fallback_commit.as_deref(), Some("master"));
        assert_eq!(r.reproducer.nproc, Some(4));
        assert_eq!((r.instances, r.budget.as_secs()), (3, 300));
        assert_eq!((r.machine.cpus, r.machine.memory_mb), (2, 2048));
        assert_eq!(r.userspace, Userspace::Initramfs);
    }

    #[test]
    fn images_from_urls_and_named_userspace_images() {
        let opts = CompatOptions { image_dir: Some("/images".into()) };
        let mut b = kbuilder();
        b["userspace-image-name"] = json!("bullseye.raw");
        let spec = convert(
            &raw(
                &["kbuilder", "kvmmanager", "kvmmanager"],
                vec![
                    b,
                    json!({"reproducer": {"reproducer-type": "c", "reproducer-text": "int main(){}"}, "image-from-worker": 0,
                           "machine-type": "gce:e2-standard-2"}),
                    json!({"reproducer": {"reproducer-type": "c", "reproducer-text": "int main(){}"},
                           "image": {"image-url": "gs://bucket/jobs/0000002a/0_build/bzImage", "arch": "amd64",
                                     "vmlinux-url": "file:///k/vmlinux"}}),
                ],
            ),
            &opts,
        )
        .unwrap();
        let r1: ReproduceArgs = serde_json::from_value(spec.stages[1].arg.clone()).unwrap();
        // kGym's GCE machine types, for the worker's GCE runner.
        assert_eq!(r1.machine.to_string(), "gce:e2-standard-2");
        match r1.userspace {
            Userspace::Image { image, ssh_key, .. } => {
                assert_eq!(image, FileRef::Path("/images/bullseye.raw".into()));
                assert_eq!(ssh_key, FileRef::Path("/images/bullseye.id_rsa".into()));
            }
            other => panic!("unexpected {other:?}"),
        }
        let r2: ReproduceArgs = serde_json::from_value(spec.stages[2].arg.clone()).unwrap();
        assert_eq!(
            r2.kernel,
            KernelRef::Files {
                bzimage: FileRef::Artifact(ArtifactKey::parse("jobs/0000002a/0_build/bzImage").unwrap()),
                vmlinux: Some(FileRef::Path("/k/vmlinux".into())),
            }
        );
    }

    #[test]
    fn every_problem_is_listed_with_its_stage() {
        let mut b = kbuilder();
        b["kernel-arch"] = json!("arm64");
        b["userspace-image-name"] = json!("bullseye.raw");
        let problems = convert(
            &raw(
                &["kbuilder", "kvmmanager", "kvmmanager", "kprebuilder", "Bad Kind"],
                vec![
                    b,
                    json!({"reproducer": {"reproducer-type": "c", "reproducer-text": "x"}, "image-from-worker": 2,
                           "machine-type": "gce:e2-standard-2"}),
                    json!({"reproducer": {"reproducer-type": "py", "reproducer-text": ""}, "image-from-worker": 0,
                           "restart-time": "soon"}),
                    json!({"cacheKey": "kcache/abc", "patches": ["diff"]}),
                    json!({}),
                ],
            ),
            &CompatOptions::default(),
        )
        .unwrap_err();
        let text: Vec<String> = problems.iter().map(ToString::to_string).collect();
        let has = |s: &str| text.iter().any(|t| t.contains(s));
        assert!(has("stage 0 (kbuilder): kernel-arch \"arm64\" is not supported"), "{text:#?}");
        assert!(has("stage 0 (kbuilder): userspace image \"bullseye.raw\" is not available here"), "{text:#?}");
        assert!(
            has("stage 1 (kvmmanager): image-from-worker is 2, which does not run before this stage (1)"),
            "{text:#?}"
        );
        assert!(has("stage 1 (kvmmanager): machine-type \"gce:e2-standard-2\" boots a disk image"), "{text:#?}");
        assert!(has("stage 2 (kvmmanager): reproducer-type \"py\" is not supported"), "{text:#?}");
        assert!(has("stage 2 (kvmmanager): reproducer-text is missing or empty"), "{text:#?}");
        assert!(has("stage 2 (kvmmanager): restart-time \"soon\" is not a duration"), "{text:#?}");
        assert!(has("stage 3 (kprebuilder): kcache keys are not supported"), "{text:#?}");
        assert!(has("stage 4 (Bad Kind): parse stage kind"), "{text:#?}");
        assert_eq!(text.len(), 9, "{text:#?}");
    }

    #[test]
    fn kprebuilder_takes_its_base_from_an_earlier_kbuilder() {
        let spec = convert(
            &raw(
                &["kbuilder", "kprebuilder"],
                vec![kbuilder(), json!({"kcache-from-worker": 0, "patches": ["--- a\n+++ b\n"]})],
            ),
            &CompatOptions::default(),
        )
        .unwrap();
        let pc: PatchCheckArgs = serde_json::from_value(spec.stages[1].arg.clone()).unwrap();
        assert_eq!(
            pc.base.source,
            KernelSource::git("https://git.kernel.org/pub/scm/linux/kernel/git/torvalds/linux.git", "abc123")
        );
        assert_eq!(pc.patches.len(), 1);
    }

    #[test]
    fn mismatched_lengths_and_our_own_kinds() {
        let problems = convert(&raw(&["kbuilder"], vec![]), &CompatOptions::default()).unwrap_err();
        assert_eq!(problems[0].message, "job_workers has 1 entries but worker_arguments has 0");
        let spec = convert(&raw(&["echo"], vec![json!({"x": 1})]), &CompatOptions::default()).unwrap();
        assert_eq!(spec.stages[0].kind.as_str(), "echo");
        assert_eq!(spec.stages[0].arg, json!({"x": 1}));
    }
}
