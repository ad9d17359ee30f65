//! SLOW (about a minute; runs in CI): `GceRunner` end to end against a
//! fake Compute API whose instances are real: the disk is packed by
//! `pack_disk` (the buggy kernel in a dropbear image's `/boot`) into a
//! local directory standing for the bucket; `images.insert` reads that
//! tarball (a gzip'd tar holding exactly `disk.raw`, as GCE requires) and
//! `instances.insert` boots it in a local QEMU. Serial output and SSH are
//! real: `getSerialPortOutput` serves QEMU's serial console by offsets,
//! `instances.get` gives the instance's own loopback address as its
//! `networkIP`, where QEMU forwards the SSH port to the guest's dropbear.
//!
//! What stands in for GCE here: the fake loads the kernel from the disk's
//! `/boot/vmlinuz` itself (with `debugfs`) and boots it with a fixed
//! command line, where GCE's firmware would run the disk's bootloader; a
//! bootloader in the disk is not exercised. See `docs/gce.md`.

#![cfg(feature = "gce")]

mod common;
mod gce_api;

use std::collections::HashMap;
use std::path::PathBuf;
use std::process::Stdio;
use std::sync::{Arc, Mutex};
use std::time::Duration;

use axum::Router;
use axum::extract::{Json, Path as UrlPath, Query, Request, State};
use axum::http::StatusCode;
use axum::middleware::{self, Next};
use axum::response::{IntoResponse, Response};
use axum::routing::{get, post};
use common::image::build_image;
use common::*;
use gce_api::{BUCKET, OBJECT, PROJECT, ZONE, google_error, has_bearer, unauthorized};
use kgym_core::ArtifactStore;
use kgym_core::stage::reproduce::Reproducer;
use kgym_vm::gce::{ComputeClient, GceRunner, KERNEL_PATH, StaticToken, pack_disk};
use kgym_vm::outcome::BootEnd;
use kgym_vm::{DiskImage, Error, RunRequest, UserspaceSpec, VmRunner};
use serde_json::{Value, json};
use tokio::process::{Child, Command};
use tokio_util::sync::CancellationToken;

const TOKEN: &str = "ya29.qemu-backed";
/// What the fake's "bootloader" boots the disk's kernel with.
const CMDLINE: &str = "console=ttyS0 root=/dev/vda rw panic=-1";

/// An instance: a QEMU booting the image's disk.
struct Instance {
    qemu: Child,
    console: PathBuf,
    ip: String,
    gets: u32,
}

#[derive(Default)]
struct Fake {
    /// Where `gs://BUCKET/...` objects live.
    bucket: PathBuf,
    /// Where images are unpacked and instances keep their consoles.
    work: PathBuf,
    /// The SSH port QEMU forwards on each instance's address.
    ssh_port: u16,
    /// Image name → its unpacked `disk.raw` and kernel.
    images: HashMap<String, (PathBuf, PathBuf)>,
    /// Every `rawDisk.source` asked for.
    image_sources: Vec<String>,
    instances: HashMap<String, Instance>,
    created_instances: u32,
    deleted_instances: Vec<String>,
    deleted_images: Vec<String>,
    violations: Vec<String>,
}

type Shared = Arc<Mutex<Fake>>;

fn fake(f: &Shared) -> std::sync::MutexGuard<'_, Fake> {
    f.lock().unwrap()
}

fn violation(state: &Shared, what: String) -> Response {
    fake(state).violations.push(what.clone());
    google_error(StatusCode::BAD_REQUEST, "invalid", &what)
}

/// A finished operation (the other test file covers polling).
fn done(kind: &str, target: &str, error: Option<Value>) -> Response {
    let mut op = json!({"kind": "compute#operation", "name": format!("operation-{kind}-{target}"),
        "operationType": kind, "targetLink": target, "status": "DONE", "progress": 100});
    if let Some(e) = error {
        op["error"] = e;
    }
    Json(op).into_response()
}

async fn get_operation(UrlPath(params): UrlPath<HashMap<String, String>>) -> Response {
    Json(json!({"name": params["op"], "status": "DONE", "progress": 100})).into_response()
}

fn tool(program: &str, args: &[&str]) -> Result<String, String> {
    let out = std::process::Command::new(program).args(args).output().map_err(|e| format!("{program}: {e}"))?;
    if !out.status.success() {
        return Err(format!("{program} {args:?}: {}", String::from_utf8_lossy(&out.stderr)));
    }
    Ok(String::from_utf8_lossy(&out.stdout).into_owned())
}

/// `images.insert`: the tarball must be a gzip'd tar holding `disk.raw`
/// only; its kernel is taken from `/boot/vmlinuz`.
async fn insert_image(State(state): State<Shared>, Json(body): Json<Value>) -> Response {
    let Some(name) = body["name"].as_str().map(str::to_owned) else {
        return violation(&state, format!("images.insert without a name: {body}"));
    };
    let source = body["rawDisk"]["source"].as_str().unwrap_or_default().to_owned();
    let Some(object) = source.strip_prefix(&format!("https://storage.googleapis.com/{BUCKET}/")) else {
        return violation(&state, format!("images.insert from {source:?}"));
    };
    let (tarball, dir) = {
        let mut f = fake(&state);
        f.image_sources.push(source.clone());
        (f.bucket.join(object), f.work.join(&name))
    };
    let unpacked = tokio::task::spawn_blocking(move || -> Result<(PathBuf, PathBuf), String> {
        let listing = tool("tar", &["-tzf", &tarball.display().to_string()])?;
        if listing.lines().collect::<Vec<_>>() != ["disk.raw"] {
            return Err(format!("the tarball must hold disk.raw only, it holds {listing:?}"));
        }
        std::fs::create_dir_all(&dir).map_err(|e| e.to_string())?;
        tool("tar", &["-xSzf", &tarball.display().to_string(), "-C", &dir.display().to_string()])?;
        let (disk, kernel) = (dir.join("disk.raw"), dir.join("vmlinuz"));
        let dump = format!("dump {KERNEL_PATH} {}", kernel.display());
        tool("debugfs", &["-R", &dump, &disk.display().to_string()])?;
        if std::fs::metadata(&kernel).map_or(0, |m| m.len()) == 0 {
            return Err(format!("no kernel at {KERNEL_PATH}"));
        }
        Ok((disk, kernel))
    })
    .await
    .unwrap();
    let target = format!("projects/{PROJECT}/global/images/{name}");
    match unpacked {
        Ok(files) => {
            fake(&state).images.insert(name, files);
            done("insert", &target, None)
        }
        Err(reason) => done("insert", &target, Some(json!({"errors": [{"code": "INVALID_IMAGE", "message": reason}]}))),
    }
}

async fn delete_image(State(state): State<Shared>, UrlPath((_, name)): UrlPath<(String, String)>) -> Response {
    let mut f = fake(&state);
    f.deleted_images.push(name.clone());
    if f.images.remove(&name).is_none() {
        return google_error(StatusCode::NOT_FOUND, "notFound", &format!("image {name} was not found"));
    }
    done("delete", &format!("projects/{PROJECT}/global/images/{name}"), None)
}

/// `instances.insert`: boots the image's disk in QEMU, SSH forwarded on
/// the instance's own loopback address.
async fn insert_instance(
    State(state): State<Shared>,
    UrlPath((_, zone)): UrlPath<(String, String)>,
    Json(body): Json<Value>,
) -> Response {
    let name = body["name"].as_str().unwrap_or_default().to_owned();
    let source = body["disks"][0]["initializeParams"]["sourceImage"].as_str().unwrap_or_default();
    let image = source.strip_prefix(&format!("projects/{PROJECT}/global/images/")).unwrap_or_default().to_owned();
    let mut f = fake(&state);
    let Some((disk, kernel)) = f.images.get(&image).cloned() else {
        drop(f);
        return violation(&state, format!("instances.insert {name} from unknown image {source:?}"));
    };
    if zone != ZONE || body["disks"][0]["boot"] != true {
        drop(f);
        return violation(&state, format!("instances.insert in {zone}: {body}"));
    }
    f.created_instances += 1;
    let ip = format!("127.0.0.{}", 10 + f.created_instances);
    let console = f.work.join(format!("{name}.console"));
    let forward = format!("user,id=net0,hostfwd=tcp:{ip}:{}-:22", f.ssh_port);
    let qemu = Command::new("qemu-system-x86_64")
        .args(["-m", "512", "-smp", "1", "-accel", "tcg", "-display", "none", "-no-reboot", "-monitor", "none"])
        .arg("-kernel")
        .arg(&kernel)
        .args(["-append", CMDLINE])
        .arg("-drive")
        .arg(format!("file={},format=raw,if=virtio,snapshot=on", disk.display()))
        .args(["-netdev", &forward, "-device", "virtio-net-pci,netdev=net0"])
        .arg("-serial")
        .arg(format!("file:{}", console.display()))
        .stdin(Stdio::null())
        .stdout(Stdio::null())
        .stderr(Stdio::null())
        .kill_on_drop(true)
        .spawn()
        .expect("start qemu");
    f.instances.insert(name.clone(), Instance { qemu, console, ip, gets: 0 });
    drop(f);
    done("insert", &format!("projects/{PROJECT}/zones/{ZONE}/instances/{name}"), None)
}

/// `instances.get`: `STAGING` at first, then `RUNNING` with its address.
async fn get_instance(
    State(state): State<Shared>,
    UrlPath((_, _, name)): UrlPath<(String, String, String)>,
) -> Response {
    let mut f = fake(&state);
    let Some(i) = f.instances.get_mut(&name) else {
        drop(f);
        return google_error(StatusCode::NOT_FOUND, "notFound", &format!("instance {name} was not found"));
    };
    i.gets += 1;
    let status = if i.gets == 1 { "STAGING" } else { "RUNNING" };
    Json(json!({"kind": "compute#instance", "name": name, "status": status,
        "networkInterfaces": [{"network": "global/networks/default", "networkIP": i.ip}]}))
    .into_response()
}

async fn delete_instance(
    State(state): State<Shared>,
    UrlPath((_, _, name)): UrlPath<(String, String, String)>,
) -> Response {
    let removed = {
        let mut f = fake(&state);
        f.deleted_instances.push(name.clone());
        f.instances.remove(&name)
    };
    let Some(mut i) = removed else {
        return google_error(StatusCode::NOT_FOUND, "notFound", &format!("instance {name} was not found"));
    };
    let _ = i.qemu.kill().await;
    done("delete", &format!("projects/{PROJECT}/zones/{ZONE}/instances/{name}"), None)
}

/// `getSerialPortOutput`: QEMU's serial console from `start`, at most
/// 64 KiB per answer, `start`/`next` as the int64 strings Google sends.
async fn serial_port(
    State(state): State<Shared>,
    UrlPath((_, _, name)): UrlPath<(String, String, String)>,
    Query(q): Query<HashMap<String, String>>,
) -> Response {
    let start: usize = q.get("start").and_then(|s| s.parse().ok()).unwrap_or(0);
    let Some(console) = fake(&state).instances.get(&name).map(|i| i.console.clone()) else {
        return google_error(StatusCode::NOT_FOUND, "notFound", &format!("instance {name} was not found"));
    };
    let bytes = std::fs::read(&console).unwrap_or_default();
    let from = start.min(bytes.len());
    let to = (from + (64 << 10)).min(bytes.len());
    let contents = String::from_utf8_lossy(&bytes[from..to]).into_owned();
    Json(json!({"kind": "compute#serialPortOutput", "contents": contents,
        "start": from.to_string(), "next": to.to_string()}))
    .into_response()
}

async fn require_token(req: Request, next: Next) -> Response {
    if !has_bearer(req.headers(), TOKEN) {
        return unauthorized();
    }
    next.run(req).await
}

async fn serve(state: Shared) -> String {
    let base = "/compute/v1/projects/{project}";
    let app = Router::new()
        .route(&format!("{base}/global/images"), post(insert_image))
        .route(&format!("{base}/global/images/{{name}}"), axum::routing::delete(delete_image))
        .route(&format!("{base}/global/operations/{{op}}"), get(get_operation))
        .route(&format!("{base}/zones/{{zone}}/operations/{{op}}"), get(get_operation))
        .route(&format!("{base}/zones/{{zone}}/instances"), post(insert_instance))
        .route(&format!("{base}/zones/{{zone}}/instances/{{name}}"), get(get_instance).delete(delete_instance))
        .route(&format!("{base}/zones/{{zone}}/instances/{{name}}/serialPort"), get(serial_port))
        .layer(middleware::from_fn(require_token))
        .with_state(state);
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let addr = listener.local_addr().unwrap();
    tokio::spawn(async move { axum::serve(listener, app).await.unwrap() });
    format!("http://{addr}")
}

fn have_gce_tools() -> bool {
    have_tools()
        && ["dropbear", "ssh", "ssh-keygen", "mkfs.ext4", "ldd", "debugfs", "tar"]
            .iter()
            .all(|t| kgym_testkit::require_tool(t).is_some())
}

fn free_port() -> u16 {
    std::net::TcpListener::bind("127.0.0.1:0").unwrap().local_addr().unwrap().port()
}

#[tokio::test]
async fn slow_a_packed_disk_boots_on_fake_gce_and_the_reproducer_runs_over_ssh() {
    if !have_gce_tools() {
        return;
    }
    let k = bug_kernel().await;
    let dir = tempfile::tempdir().unwrap();
    let (image, key) = build_image(dir.path());
    let bucket = dir.path().join("bucket");
    std::fs::create_dir_all(bucket.join("disks")).unwrap();
    pack_disk(&image, &k.bzimage, &bucket.join(OBJECT), &CancellationToken::new()).await.expect("pack the disk");
    // The userspace image itself is left as it was.
    assert!(
        tool("debugfs", &["-R", &format!("stat {KERNEL_PATH}"), &image.display().to_string()])
            .is_ok_and(|out| !out.contains("Inode:"))
    );

    let work = dir.path().join("fake");
    std::fs::create_dir_all(&work).unwrap();
    let ssh_port = free_port();
    let state = Arc::new(Mutex::new(Fake { bucket, work: work.clone(), ssh_port, ..Fake::default() }));
    let endpoint = serve(state.clone()).await;
    let client = ComputeClient::new(PROJECT, ZONE, Arc::new(StaticToken(TOKEN.into())))
        .with_endpoint(&endpoint)
        .with_poll_interval(Duration::from_millis(50));
    let runner = GceRunner::new(client)
        .with_bucket(BUCKET)
        .with_ssh_port(ssh_port)
        .with_serial_poll(Duration::from_millis(250))
        .with_work_dir(dir.path().join("runner"));
    let (ctx, log) = context();
    let disk = || UserspaceSpec::Image(DiskImage::new(OBJECT, &key));

    // A reproducer that does not compile fails before anything is created.
    let bad = RunRequest::new(&k.bzimage, Reproducer::c("int main(void) { return }")).userspace(disk());
    let err = runner.run(bad, &ctx).await.unwrap_err();
    assert!(matches!(err, Error::ReproducerDoesNotCompile { .. }), "{err:?}");
    assert_eq!(fake(&state).created_instances, 0);
    assert!(fake(&state).images.is_empty());

    let req = RunRequest::new(&k.bzimage, Reproducer::c(read_bug_file("repro.c")))
        .vmlinux(&k.vmlinux)
        .userspace(disk())
        .instances(2)
        .budget(Duration::from_secs(300));
    let out = tokio::time::timeout(Duration::from_secs(400), runner.run(req, &ctx)).await.expect("run ends");
    let lines = log.lines();
    let out = out.unwrap_or_else(|e| panic!("{e:?}\nprogress: {lines:#?}"));
    assert!(out.crashed, "{:?}\nprogress: {lines:#?}", out.boots);
    assert_eq!(out.title.as_deref(), Some(BUG_TITLE));
    let boot = out.boots.iter().find(|b| matches!(b.end, BootEnd::Crash { .. })).expect("a crashed instance");
    let console = String::from_utf8_lossy(&boot.log);
    // Booted from the packed disk, reached over SSH, ran the reproducer.
    assert!(console.contains("test image: sshd started"), "{console}");
    assert!(boot.userspace_after.is_some(), "ssh never answered: {lines:#?}");
    assert!(lines.iter().any(|l| l.contains("ssh up after")), "{lines:#?}");
    assert!(console.contains("kgym: running the reproducer (run 0)"), "{console}");
    assert!(console.contains("kgym-repro: valid note: 0"), "{console}");
    // The report is symbolized from the vmlinux.
    let report = boot.report.as_ref().expect("a crash has a report");
    assert!(report.text.contains("kernel/sys.c:"), "not symbolized: {}", report.text);

    // Everything created was deleted, and no QEMU outlives its instance.
    {
        let f = fake(&state);
        assert!(f.violations.is_empty(), "{:#?}", f.violations);
        assert_eq!(f.created_instances, 2);
        assert!(f.instances.is_empty(), "instances left: {:?}", f.instances.keys().collect::<Vec<_>>());
        assert!(f.images.is_empty(), "images left: {:?}", f.images.keys().collect::<Vec<_>>());
        assert_eq!(f.deleted_images.len(), 1);
    }
    assert!(processes_mentioning(&work.display().to_string()).is_empty(), "QEMU left running");

    // The kreproducer's way: a local raw disk (kGym's bullseye.raw) and the
    // kernel of the build; the runner packs and uploads them itself.
    let bucket_dir = fake(&state).bucket.clone();
    let uploads = ArtifactStore::local(&bucket_dir).unwrap();
    let runner = runner.with_disk_uploads(uploads);
    let req = RunRequest::new(&k.bzimage, Reproducer::c(read_bug_file("repro.c")))
        .userspace(UserspaceSpec::Image(DiskImage::new(&image, &key)))
        .budget(Duration::from_secs(300));
    let out = tokio::time::timeout(Duration::from_secs(400), runner.run(req, &ctx)).await.expect("run ends");
    let lines = log.lines();
    let out = out.unwrap_or_else(|e| panic!("{e:?}\nprogress: {lines:#?}"));
    assert_eq!(out.title.as_deref(), Some(BUG_TITLE), "{:?}\nprogress: {lines:#?}", out.boots);
    let source = {
        let f = fake(&state);
        let source = f.image_sources.last().expect("an image was made").clone();
        assert!(source.starts_with(&format!("https://storage.googleapis.com/{BUCKET}/gce-disks/kgym-")), "{source}");
        assert!(f.instances.is_empty() && f.images.is_empty());
        source
    };
    // The uploaded tarball is gone; the pre-packed one is still there.
    let uploaded = bucket_dir.join(source.rsplit_once(&format!("{BUCKET}/")).unwrap().1);
    assert!(!uploaded.exists(), "{} left", uploaded.display());
    assert!(bucket_dir.join(OBJECT).is_file());
    assert!(lines.iter().any(|l| l.contains("cleanup: deleted the uploaded disk")), "{lines:#?}");
}
