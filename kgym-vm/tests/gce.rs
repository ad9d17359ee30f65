//! `GceRunner` and `ComputeClient` against a fake Compute Engine API on
//! 127.0.0.1 that checks every request: the bearer token (401 without
//! it), paths, JSON bodies, operations that stay `RUNNING` for a few polls,
//! and a real syzbot console log served in chunks by `start`/`next`.

#![cfg(feature = "gce")]

mod gce_api;

use std::collections::{BTreeMap, HashMap, HashSet};
use std::path::PathBuf;
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use axum::Router;
use axum::extract::{Json, Path, Query, Request, State};
use axum::http::StatusCode;
use axum::middleware::{self, Next};
use axum::response::{IntoResponse, Response};
use axum::routing::{delete, get, post};
use gce_api::{BUCKET, OBJECT, PROJECT, ZONE, google_error, has_bearer, unauthorized};
use kgym_core::MemorySink;
use kgym_core::stage::reproduce::{Accel, Reproducer};
use kgym_vm::gce::{ComputeClient, GceRunner, MachineRouter, MetadataToken, READ_ATTEMPTS, StaticToken};
use kgym_vm::outcome::BootEnd;
use kgym_vm::report::{StreamEvent, StreamParser};
use kgym_vm::{DiskImage, Error, RunContext, RunOutput, RunRequest, UserspaceSpec, VmRunner};
use serde_json::{Value, json};
use tokio_util::sync::CancellationToken;

const TOKEN: &str = "ya29.test-token";
const MACHINE_TYPE: &str = "e2-standard-2";
/// Polls of an operation answered `RUNNING` before `DONE`.
const RUNNING_POLLS: u32 = 2;
/// syzkaller's title of `kgym-report/testdata/syzkaller-reports/225` (its
/// `TITLE:` line).
const TITLE: &str = "KASAN: use-after-free Read in binder_release_work";

fn report_testdata(rel: &str) -> PathBuf {
    PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("../kgym-report/testdata").join(rel)
}

/// A real console log with a KASAN report, from a syzbot GCE instance
/// (the fixture's header and carriage returns dropped, as its test does).
fn crash_console() -> String {
    let text = std::fs::read_to_string(report_testdata("syzkaller-reports/225")).expect("fixture 225");
    let (header, log) = text.split_once("\n\n").expect("fixture header");
    assert!(header.contains(&format!("TITLE: {TITLE}")), "{header}");
    log.replace('\r', "")
}

/// A real boot log without any crash.
fn quiet_console() -> String {
    let bytes = std::fs::read(report_testdata("boot/qemu-6.1-tinyconfig.log")).expect("boot log");
    String::from_utf8_lossy(&bytes).into_owned()
}

/// The title the QEMU runner's console watch gives for `log`: its
/// `StreamParser` fed line by line, then finished at the console's end.
fn qemu_path_title(log: &str) -> Option<String> {
    let mut p = StreamParser::new();
    for line in log.as_bytes().split_inclusive(|&b| b == b'\n') {
        if let StreamEvent::Complete(r) = p.feed(line) {
            return Some(r.title);
        }
    }
    p.finish().map(|r| r.title)
}

/// What the fake does and has seen.
#[derive(Debug, Default)]
struct Fake {
    console: String,
    /// The machine type instances must ask for.
    machine_type: String,
    chunk: usize,
    /// Serial bytes the instance's buffer no longer holds.
    lost_prefix: usize,
    quota_on_instance_insert: bool,
    image_operation_error: bool,
    /// What `instances.get` says once the console is all read (`RUNNING`
    /// when unset).
    status_after_console: Option<String>,
    instance_gets: u32,
    /// Serial reads still to answer with a 503 before serving output.
    failing_serial_reads: u32,
    images: HashSet<String>,
    instances: HashSet<String>,
    image_inserts: Vec<String>,
    instance_inserts: Vec<String>,
    image_deletes: Vec<String>,
    instance_deletes: Vec<String>,
    /// Operation name → (polls left answering RUNNING, errors when DONE).
    operations: HashMap<String, (u32, Option<Value>)>,
    running_answers: u32,
    done_answers: u32,
    /// Per instance, the `start` of each serial read.
    serial_starts: BTreeMap<String, Vec<usize>>,
    unauthorized: u32,
    /// Tokens handed out by the fake metadata server.
    metadata_tokens: u32,
    /// Requests that did not look like the real API's.
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

/// A new operation, `PENDING` (as inserts and deletes answer).
fn operation(state: &Shared, kind: &str, target: &str, error: Option<Value>) -> Response {
    let mut f = fake(state);
    let name = format!("operation-{}-{}", f.operations.len(), kind);
    f.operations.insert(name.clone(), (RUNNING_POLLS, error));
    Json(json!({"kind": "compute#operation", "name": name, "operationType": kind,
        "targetLink": target, "status": "PENDING", "progress": 0}))
    .into_response()
}

async fn get_operation(State(state): State<Shared>, Path(params): Path<HashMap<String, String>>) -> Response {
    let name = &params["op"];
    if params.get("project").map(String::as_str) != Some(PROJECT) {
        return violation(&state, format!("operation {name} polled in project {:?}", params.get("project")));
    }
    if let Some(zone) = params.get("zone")
        && zone != ZONE
    {
        return violation(&state, format!("operation {name} polled in zone {zone}"));
    }
    let mut f = fake(&state);
    let Some((left, error)) = f.operations.get_mut(name) else {
        drop(f);
        return google_error(StatusCode::NOT_FOUND, "notFound", &format!("operation {name} was not found"));
    };
    if *left > 0 {
        *left -= 1;
        f.running_answers += 1;
        return Json(json!({"name": name, "status": "RUNNING", "progress": 50})).into_response();
    }
    let error = error.clone();
    f.done_answers += 1;
    let mut op = json!({"name": name, "status": "DONE", "progress": 100});
    if let Some(e) = error {
        op["error"] = e;
    }
    Json(op).into_response()
}

async fn insert_image(State(state): State<Shared>, Path(project): Path<String>, Json(body): Json<Value>) -> Response {
    let want = format!("https://storage.googleapis.com/{BUCKET}/{OBJECT}");
    let Some(name) = body["name"].as_str().map(str::to_owned) else {
        return violation(&state, format!("images.insert without a name: {body}"));
    };
    if project != PROJECT || body["rawDisk"]["source"] != want {
        return violation(&state, format!("images.insert in {project}: {body}"));
    }
    let failed = {
        let mut f = fake(&state);
        f.image_inserts.push(name.clone());
        if !f.image_operation_error {
            f.images.insert(name.clone());
        }
        f.image_operation_error
    };
    let error = failed.then(|| {
        json!({"errors": [{"code": "RESOURCE_NOT_FOUND",
            "message": format!("The resource '{want}' of type 'storage object' was not found.")}]})
    });
    operation(&state, "insert", &format!("projects/{PROJECT}/global/images/{name}"), error)
}

async fn delete_image(State(state): State<Shared>, Path((_, name)): Path<(String, String)>) -> Response {
    let existed = {
        let mut f = fake(&state);
        f.image_deletes.push(name.clone());
        f.images.remove(&name)
    };
    if !existed {
        return google_error(
            StatusCode::NOT_FOUND,
            "notFound",
            &format!("The resource 'projects/{PROJECT}/global/images/{name}' was not found"),
        );
    }
    operation(&state, "delete", &format!("projects/{PROJECT}/global/images/{name}"), None)
}

/// Checks the instance body field by field against what kgym must send.
fn check_instance(f: &Fake, zone: &str, body: &Value) -> Result<String, String> {
    let name = body["name"].as_str().ok_or("no name")?.to_owned();
    if zone != ZONE {
        return Err(format!("zone {zone}"));
    }
    if body["machineType"] != format!("zones/{ZONE}/machineTypes/{}", f.machine_type) {
        return Err(format!("machineType {}", body["machineType"]));
    }
    let disk = &body["disks"][0];
    if disk["boot"] != true || disk["autoDelete"] != true {
        return Err(format!("boot disk {disk}"));
    }
    let image = disk["initializeParams"]["sourceImage"].as_str().unwrap_or_default();
    let image_name =
        image.strip_prefix(&format!("projects/{PROJECT}/global/images/")).ok_or(format!("sourceImage {image}"))?;
    if !f.images.contains(image_name) {
        return Err(format!("sourceImage {image} does not exist"));
    }
    if body["networkInterfaces"][0]["network"] != "global/networks/default" {
        return Err(format!("networkInterfaces {}", body["networkInterfaces"]));
    }
    let items = body["metadata"]["items"].as_array().ok_or("no metadata items")?;
    if !items.contains(&json!({"key": "serial-port-enable", "value": "true"})) {
        return Err(format!("metadata {items:?}"));
    }
    Ok(name)
}

async fn insert_instance(
    State(state): State<Shared>,
    Path((project, zone)): Path<(String, String)>,
    Json(body): Json<Value>,
) -> Response {
    let checked = {
        let f = fake(&state);
        if project != PROJECT { Err(format!("project {project}")) } else { check_instance(&f, &zone, &body) }
    };
    let name = match checked {
        Ok(name) => name,
        Err(e) => return violation(&state, format!("instances.insert: {e}: {body}")),
    };
    if fake(&state).quota_on_instance_insert {
        return google_error(
            StatusCode::FORBIDDEN,
            "quotaExceeded",
            "Quota 'CPUS' exceeded.  Limit: 8.0 in region us-central1.",
        );
    }
    {
        let mut f = fake(&state);
        f.instance_inserts.push(name.clone());
        f.instances.insert(name.clone());
    }
    operation(&state, "insert", &format!("projects/{PROJECT}/zones/{ZONE}/instances/{name}"), None)
}

async fn delete_instance(State(state): State<Shared>, Path((_, _, name)): Path<(String, String, String)>) -> Response {
    let existed = {
        let mut f = fake(&state);
        f.instance_deletes.push(name.clone());
        f.instances.remove(&name)
    };
    if !existed {
        return google_error(StatusCode::NOT_FOUND, "notFound", &format!("instance {name} was not found"));
    }
    operation(&state, "delete", &format!("projects/{PROJECT}/zones/{ZONE}/instances/{name}"), None)
}

/// Serial port 1 from `start`, at most `chunk` bytes; `start`/`next` as
/// the strings the real API writes its int64 fields as.
/// `instances.get`: `RUNNING` with an internal IP, or the status the test
/// set once the whole console was read.
async fn get_instance(State(state): State<Shared>, Path((_, _, name)): Path<(String, String, String)>) -> Response {
    let mut f = fake(&state);
    if !f.instances.contains(&name) {
        drop(f);
        return google_error(StatusCode::NOT_FOUND, "notFound", &format!("instance {name} was not found"));
    }
    f.instance_gets += 1;
    let read_all = f.serial_starts.get(&name).and_then(|s| s.last()).is_some_and(|&s| s >= f.console.len());
    let status = match &f.status_after_console {
        Some(s) if read_all => s.clone(),
        _ => "RUNNING".into(),
    };
    Json(json!({"kind": "compute#instance", "name": name, "status": status,
        "networkInterfaces": [{"network": "global/networks/default", "networkIP": "10.128.0.2"}]}))
    .into_response()
}

async fn serial_port(
    State(state): State<Shared>,
    Path((_, _, name)): Path<(String, String, String)>,
    Query(q): Query<HashMap<String, String>>,
) -> Response {
    if q.get("port").map(String::as_str) != Some("1") {
        return violation(&state, format!("serialPort of {name} with port {:?}", q.get("port")));
    }
    let Some(start) = q.get("start").and_then(|s| s.parse::<usize>().ok()) else {
        return violation(&state, format!("serialPort of {name} without a start"));
    };
    let mut f = fake(&state);
    if !f.instances.contains(&name) {
        drop(f);
        return google_error(StatusCode::NOT_FOUND, "notFound", &format!("instance {name} was not found"));
    }
    if f.failing_serial_reads > 0 {
        f.failing_serial_reads -= 1;
        drop(f);
        return google_error(StatusCode::SERVICE_UNAVAILABLE, "backendError", "Backend Error");
    }
    f.serial_starts.entry(name).or_default().push(start);
    let len = f.console.len();
    let from = start.max(f.lost_prefix).min(len);
    let mut to = (from + f.chunk).min(len);
    while !f.console.is_char_boundary(to) {
        to -= 1;
    }
    Json(json!({"kind": "compute#serialPortOutput", "contents": &f.console[from..to],
        "start": from.to_string(), "next": to.to_string()}))
    .into_response()
}

const METADATA_PATH: &str = "/computeMetadata/v1/instance/service-accounts/default/token";

/// The metadata server's token endpoint: refuses a request without
/// `Metadata-Flavor: Google`, as the real one does.
async fn metadata_token(State(state): State<Shared>, headers: axum::http::HeaderMap) -> Response {
    if headers.get("metadata-flavor").and_then(|v| v.to_str().ok()) != Some("Google") {
        return violation(&state, "metadata token asked without Metadata-Flavor: Google".into());
    }
    fake(&state).metadata_tokens += 1;
    Json(json!({"access_token": TOKEN, "expires_in": 3599, "token_type": "Bearer"})).into_response()
}

async fn require_token(State(state): State<Shared>, req: Request, next: Next) -> Response {
    if !has_bearer(req.headers(), TOKEN) {
        fake(&state).unauthorized += 1;
        return unauthorized();
    }
    next.run(req).await
}

/// Starts the fake; its endpoint.
async fn serve(state: Shared) -> String {
    let p = "/compute/v1/projects/{project}";
    let app = Router::new()
        .route(&format!("{p}/global/images"), post(insert_image))
        .route(&format!("{p}/global/images/{{image}}"), delete(delete_image))
        .route(&format!("{p}/global/operations/{{op}}"), get(get_operation))
        .route(&format!("{p}/zones/{{zone}}/instances"), post(insert_instance))
        .route(&format!("{p}/zones/{{zone}}/instances/{{name}}"), delete(delete_instance).get(get_instance))
        .route(&format!("{p}/zones/{{zone}}/instances/{{name}}/serialPort"), get(serial_port))
        .route(&format!("{p}/zones/{{zone}}/operations/{{op}}"), get(get_operation))
        .layer(middleware::from_fn_with_state(state.clone(), require_token))
        // The metadata server needs no token (it is where tokens come from).
        .route(METADATA_PATH, get(metadata_token))
        .with_state(state);
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let addr = listener.local_addr().unwrap();
    tokio::spawn(async move { axum::serve(listener, app).await.unwrap() });
    format!("http://{addr}")
}

fn new_fake(console: String) -> Shared {
    Arc::new(Mutex::new(Fake { console, chunk: 4096, machine_type: MACHINE_TYPE.into(), ..Fake::default() }))
}

fn client(endpoint: &str, token: &str) -> ComputeClient {
    ComputeClient::new(PROJECT, ZONE, Arc::new(StaticToken(token.into())))
        .with_endpoint(endpoint)
        .with_poll_interval(Duration::from_millis(5))
        .with_retry_backoff(Duration::from_millis(5))
}

/// A runner whose disk runs the reproducer at boot: these instances are
/// console logs only, with nothing to log in to (`gce_qemu.rs` has the
/// instances that boot and answer SSH).
fn runner(endpoint: &str) -> GceRunner {
    GceRunner::new(client(endpoint, TOKEN))
        .with_reproducer_in_image()
        .with_bucket(BUCKET)
        .with_machine_type(MACHINE_TYPE)
        .with_serial_poll(Duration::from_millis(10))
        .with_report_wait(Duration::from_millis(300))
}

fn request(instances: u32, budget: Duration) -> RunRequest {
    RunRequest::new("bzImage", Reproducer::c("int main(void) { return 0; }"))
        .userspace(UserspaceSpec::Image(DiskImage::new(OBJECT, "unused-key")))
        .instances(instances)
        .budget(budget)
}

/// Every resource created was deleted, and every request was well formed.
fn assert_all_deleted(state: &Shared) {
    let f = fake(state);
    assert!(f.violations.is_empty(), "malformed requests: {:#?}", f.violations);
    assert!(f.images.is_empty() && f.instances.is_empty(), "left behind: {:?} {:?}", f.images, f.instances);
    let sorted = |v: &[String]| {
        let mut v = v.to_vec();
        v.sort();
        v
    };
    assert_eq!(sorted(&f.instance_deletes), sorted(&f.instance_inserts), "instance deletes");
    assert_eq!(f.image_deletes, f.image_inserts, "image deletes");
}

async fn run(runner: &GceRunner, req: RunRequest) -> (kgym_vm::Result<RunOutput>, Vec<String>) {
    // The crash parser's first report compiles its patterns (over a second
    // in a debug build), which would eat the 300 ms report wait these
    // tests use: compile them before the clock matters.
    static WARM: std::sync::Once = std::sync::Once::new();
    WARM.call_once(|| drop(qemu_path_title(&crash_console())));
    let log = Arc::new(MemorySink::default());
    let ctx = RunContext::new().with_log(log.clone());
    let out = tokio::time::timeout(Duration::from_secs(60), runner.run(req, &ctx)).await.expect("run ends");
    (out, log.lines())
}

#[tokio::test]
async fn crash_in_the_serial_console_is_the_verdict_and_everything_is_deleted() {
    let console = crash_console();
    let qemu_title = qemu_path_title(&console);
    assert_eq!(qemu_title.as_deref(), Some(TITLE), "the QEMU path's title of the fixture");
    let state = new_fake(console.clone());
    let endpoint = serve(state.clone()).await;

    let (out, lines) = run(&runner(&endpoint), request(2, Duration::from_secs(30))).await;
    let out = out.expect("run");

    assert!(out.crashed, "{out:?}");
    assert_eq!(out.title, qemu_title);
    // The crash ended the run, not the 30 s budget.
    assert!(out.seconds < 15.0, "the run took {}s", out.seconds);
    assert_eq!(out.message, "Crashes");
    assert_eq!(out.accel, Accel::Cloud);
    assert_eq!(out.boots.len(), 2);
    let crashed = out.boots.iter().find(|b| matches!(b.end, BootEnd::Crash { .. })).expect("a crashed boot");
    assert_eq!(crashed.end, BootEnd::Crash { title: TITLE.into() });
    assert!(crashed.report.as_ref().is_some_and(|r| r.title == TITLE));
    assert!(String::from_utf8_lossy(&crashed.log).contains("BUG: KASAN: use-after-free in __list_del_entry"));
    assert_all_deleted(&state);

    let f = fake(&state);
    assert_eq!((f.image_inserts.len(), f.instance_inserts.len()), (1, 2));
    // 1 image + 2 instances created, 3 deleted: each operation polled
    // RUNNING_POLLS times before DONE.
    assert_eq!(f.running_answers, 6 * RUNNING_POLLS, "operations polled while RUNNING");
    assert_eq!(f.done_answers, 6);
    // Serial reads chain by `next`: 0, 4096, 8192... for each instance.
    let starts = f.serial_starts.get(&f.instance_inserts[0]).expect("serial reads of instance 0");
    assert!(starts.len() >= 2, "the console came in one read: {starts:?}");
    assert!(starts.iter().enumerate().all(|(i, &s)| s == (i * 4096).min(console.len())), "{starts:?}");
    assert!(lines.iter().any(|l| l.contains("cleanup: images.delete") && l.ends_with("done")), "{lines:#?}");
}

#[tokio::test]
async fn cancel_mid_run_deletes_instances_and_image() {
    let state = new_fake(quiet_console());
    let endpoint = serve(state.clone()).await;
    let cancel = CancellationToken::new();
    let ctx = RunContext::new().with_cancel(cancel.clone());
    let runner = runner(&endpoint);
    let task = tokio::spawn(async move { runner.run(request(2, Duration::from_secs(300)), &ctx).await });

    // Cancel once both instances' consoles are being read.
    let t0 = Instant::now();
    while fake(&state).serial_starts.len() < 2 {
        assert!(t0.elapsed() < Duration::from_secs(20), "the instances' consoles were never read");
        tokio::time::sleep(Duration::from_millis(10)).await;
    }
    assert_eq!(fake(&state).instances.len(), 2);
    cancel.cancel();
    let out = tokio::time::timeout(Duration::from_secs(20), task).await.expect("run ends after cancel").unwrap();
    assert!(matches!(out, Err(Error::Cancelled)), "{out:?}");
    assert_all_deleted(&state);
    assert_eq!(fake(&state).instance_deletes.len(), 2);
}

#[tokio::test]
async fn dropping_the_run_future_still_deletes_everything() {
    let state = new_fake(quiet_console());
    let endpoint = serve(state.clone()).await;
    let runner = runner(&endpoint);
    let task = tokio::spawn(async move { runner.run(request(1, Duration::from_secs(300)), &RunContext::new()).await });
    let t0 = Instant::now();
    while fake(&state).serial_starts.is_empty() {
        assert!(t0.elapsed() < Duration::from_secs(20), "the console was never read");
        tokio::time::sleep(Duration::from_millis(10)).await;
    }
    // Aborting drops the future mid-run, without the cancel token.
    task.abort();
    assert!(task.await.unwrap_err().is_cancelled());
    let t0 = Instant::now();
    while !(fake(&state).images.is_empty() && fake(&state).instances.is_empty()) {
        assert!(t0.elapsed() < Duration::from_secs(20), "the drop guard deleted nothing: {:?}", fake(&state));
        tokio::time::sleep(Duration::from_millis(10)).await;
    }
    assert_all_deleted(&state);
}

#[tokio::test]
async fn budget_end_without_a_crash_is_no_crash_and_deletes_everything() {
    let state = new_fake(quiet_console());
    let endpoint = serve(state.clone()).await;
    let (out, _) = run(&runner(&endpoint), request(1, Duration::from_secs(3))).await;
    let out = out.expect("run");
    assert!(!out.crashed && out.title.is_none(), "{out:?}");
    assert_eq!(out.message, "No crash reproduced");
    assert_eq!(out.boots[0].end, BootEnd::BudgetEnded);
    // The whole boot log was read before the budget ended.
    let (log, console) = (String::from_utf8_lossy(&out.boots[0].log).into_owned(), quiet_console());
    assert_eq!((log.len(), &log[log.len() - 40..]), (console.len(), &console[console.len() - 40..]));
    assert_all_deleted(&state);
}

#[tokio::test]
async fn quota_error_on_instances_insert_is_typed_and_the_image_is_deleted() {
    let state = new_fake(crash_console());
    fake(&state).quota_on_instance_insert = true;
    let endpoint = serve(state.clone()).await;
    let (out, _) = run(&runner(&endpoint), request(2, Duration::from_secs(30))).await;
    match out {
        Err(Error::GceQuota { call, status: 403, message }) => {
            assert!(call.starts_with("instances.insert kgym-"), "{call}");
            assert!(message.contains("Quota 'CPUS' exceeded"), "{message}");
        }
        other => panic!("not a quota error: {other:?}"),
    }
    let f = fake(&state);
    assert!(f.violations.is_empty(), "{:#?}", f.violations);
    assert_eq!(f.image_inserts.len(), 1);
    assert_eq!(f.image_deletes, f.image_inserts, "the image was not deleted");
    assert!(f.images.is_empty() && f.instances.is_empty());
}

#[tokio::test]
async fn failed_image_operation_is_an_operation_error_and_cleanup_still_runs() {
    let state = new_fake(crash_console());
    fake(&state).image_operation_error = true;
    let endpoint = serve(state.clone()).await;
    let (out, lines) = run(&runner(&endpoint), request(1, Duration::from_secs(30))).await;
    match out {
        Err(Error::GceOperation { call, operation, message }) => {
            assert!(call.starts_with("images.insert kgym-"), "{call}");
            assert!(operation.starts_with("operation-"), "{operation}");
            assert!(message.starts_with("RESOURCE_NOT_FOUND: The resource"), "{message}");
        }
        other => panic!("not an operation error: {other:?}"),
    }
    let f = fake(&state);
    assert_eq!(f.image_deletes, f.image_inserts, "deleting the maybe-created image was not tried");
    assert!(f.instance_inserts.is_empty());
    assert!(lines.iter().any(|l| l.contains("already gone")), "{lines:#?}");
}

#[tokio::test]
async fn lost_serial_output_is_noted_and_the_crash_still_found() {
    // A boot log before the crash: the lost bytes are boot messages.
    let state = new_fake(quiet_console() + &crash_console());
    fake(&state).lost_prefix = 1000;
    let endpoint = serve(state.clone()).await;
    let (out, lines) = run(&runner(&endpoint), request(1, Duration::from_secs(30))).await;
    let out = out.expect("run");
    assert_eq!(out.title.as_deref(), Some(TITLE));
    let log = String::from_utf8_lossy(&out.boots[0].log).into_owned();
    assert!(log.starts_with("[kgym: 1000 bytes of serial output lost (asked from 0, got from 1000)]\n"), "{log:.200}");
    assert!(lines.iter().any(|l| l.contains("1000 bytes of serial output lost")), "{lines:#?}");
    assert_all_deleted(&state);
}

#[tokio::test]
async fn not_found_and_a_bad_token_are_typed_errors() {
    let state = new_fake(String::new());
    let endpoint = serve(state.clone()).await;
    let c = client(&endpoint, TOKEN);
    match c.delete_image("no-such-image").await {
        Err(Error::GceNotFound { call, message }) => {
            assert_eq!(call, "images.delete no-such-image");
            assert!(message.contains("global/images/no-such-image' was not found"), "{message}");
        }
        other => panic!("{other:?}"),
    }
    assert!(matches!(c.serial_port_output("no-such-vm", 0).await, Err(Error::GceNotFound { .. })));
    match client(&endpoint, "wrong").delete_image("x").await {
        Err(Error::GceApi { status: 401, message, .. }) => assert!(message.contains("invalid authentication")),
        other => panic!("{other:?}"),
    }
    assert_eq!(fake(&state).unauthorized, 1);
    // The 401 stopped the request before the handler.
    assert_eq!(fake(&state).image_deletes, ["no-such-image"]);
}

#[tokio::test]
async fn a_run_needs_a_disk_tarball_in_cloud_storage() {
    let r = runner("http://127.0.0.1:9");
    let with =
        |path: &str| request(1, Duration::from_secs(1)).userspace(UserspaceSpec::Image(DiskImage::new(path, "k")));
    assert_eq!(r.disk_source_url(&with("gs://b/d/x.tar.gz")).unwrap(), "https://storage.googleapis.com/b/d/x.tar.gz");
    assert_eq!(r.disk_source_url(&with(OBJECT)).unwrap(), format!("https://storage.googleapis.com/{BUCKET}/{OBJECT}"));
    assert!(matches!(r.disk_source_url(&with("gs://b/disk.raw")), Err(Error::InvalidRequest { .. })));
    assert!(matches!(
        r.disk_source_url(&request(1, Duration::from_secs(1)).userspace(UserspaceSpec::Initramfs)),
        Err(Error::InvalidRequest { .. })
    ));
    // No bucket and an object key: refused before any call.
    let bare = GceRunner::new(client("http://127.0.0.1:9", TOKEN));
    assert!(matches!(bare.disk_source_url(&with(OBJECT)), Err(Error::InvalidRequest { .. })));
}

#[tokio::test]
async fn the_requests_gce_machine_type_is_used() {
    let state = new_fake(crash_console());
    fake(&state).machine_type = "n2-highmem-4".into();
    let endpoint = serve(state.clone()).await;
    let req = request(1, Duration::from_secs(30)).machine("gce:n2-highmem-4".parse().unwrap());
    let (out, _) = run(&runner(&endpoint), req).await;
    let out = out.expect("run (the fake refuses any other machine type)");
    assert_eq!(out.title.as_deref(), Some(TITLE));
    assert_eq!(out.accel_reason, format!("Compute Engine n2-highmem-4 in {ZONE}"));
    assert_all_deleted(&state);
}

/// A local runner that only counts its runs.
#[derive(Debug, Default)]
struct LocalStub(std::sync::atomic::AtomicU32);

#[async_trait::async_trait]
impl VmRunner for LocalStub {
    async fn run(&self, _req: RunRequest, _ctx: &RunContext) -> kgym_vm::Result<RunOutput> {
        self.0.fetch_add(1, std::sync::atomic::Ordering::SeqCst);
        Err(Error::InvalidRequest { reason: "local stub".into() })
    }
}

#[tokio::test]
async fn the_router_sends_gce_machines_to_gce_and_the_rest_to_the_local_runner() {
    let state = new_fake(crash_console());
    let endpoint = serve(state.clone()).await;
    let local = Arc::new(LocalStub::default());
    let router = MachineRouter::new(local.clone()).with_gce(Arc::new(runner(&endpoint)));
    let gce_req = || request(1, Duration::from_secs(30)).machine("gce:e2-standard-2".parse().unwrap());

    let out = router.run(gce_req(), &RunContext::new()).await.expect("the GCE run");
    assert_eq!(out.title.as_deref(), Some(TITLE));
    assert_eq!(local.0.load(std::sync::atomic::Ordering::SeqCst), 0);
    assert_eq!(fake(&state).instance_inserts.len(), 1);

    let local_req = request(1, Duration::from_secs(30)).machine("qemu:2-1024".parse().unwrap());
    let err = router.run(local_req, &RunContext::new()).await.unwrap_err();
    assert!(matches!(&err, Error::InvalidRequest { reason } if reason == "local stub"), "{err:?}");
    assert_eq!(local.0.load(std::sync::atomic::Ordering::SeqCst), 1);
    assert_eq!(fake(&state).instance_inserts.len(), 1, "a qemu machine reached GCE");

    let no_gce = MachineRouter::new(local.clone());
    match no_gce.run(gce_req(), &RunContext::new()).await {
        Err(Error::InvalidRequest { reason }) => assert!(reason.contains("no GCE runner"), "{reason}"),
        other => panic!("{other:?}"),
    }
    assert_eq!(local.0.load(std::sync::atomic::Ordering::SeqCst), 1);
    assert_all_deleted(&state);
}

#[tokio::test]
async fn an_instance_that_stops_ends_its_boot_at_the_next_quiet_check() {
    let state = new_fake(quiet_console());
    fake(&state).status_after_console = Some("TERMINATED".into());
    let endpoint = serve(state.clone()).await;
    let mut timeouts = kgym_vm::Timeouts::default();
    timeouts.quiet_check = Duration::from_millis(300);
    let runner = runner(&endpoint).with_timeouts(timeouts).with_report_wait(Duration::from_millis(300));
    let (out, lines) = run(&runner, request(1, Duration::from_secs(60))).await;
    let out = out.expect("run");
    // Not the 60 s budget, nor the 5 min no-output watchdog.
    assert!(out.seconds < 20.0, "the run took {}s", out.seconds);
    let boot = &out.boots[0];
    // The console came up (no SSH here), then the instance went away.
    assert_eq!(boot.end, BootEnd::Special { special: kgym_vm::outcome::SpecialCrash::LostConnection }, "{lines:#?}");
    let log = String::from_utf8_lossy(&boot.log);
    assert!(log.contains("[kgym: Compute Engine reports the instance TERMINATED]"), "{log}");
    assert!(fake(&state).instance_gets >= 1);
    assert_all_deleted(&state);
}

#[tokio::test]
async fn a_passing_serial_read_error_is_retried_and_a_lasting_one_fails_the_run() {
    let state = new_fake(crash_console());
    fake(&state).failing_serial_reads = READ_ATTEMPTS - 1;
    let endpoint = serve(state.clone()).await;
    let (out, _) = run(&runner(&endpoint), request(1, Duration::from_secs(30))).await;
    assert_eq!(out.expect("run despite two 503s").title.as_deref(), Some(TITLE));
    assert_eq!(fake(&state).failing_serial_reads, 0);
    assert_all_deleted(&state);

    fake(&state).failing_serial_reads = READ_ATTEMPTS;
    let (out, _) = run(&runner(&endpoint), request(1, Duration::from_secs(30))).await;
    match out {
        Err(Error::GceApi { call, status: 503, message }) => {
            assert!(call.starts_with("instances.getSerialPortOutput kgym-"), "{call}");
            assert_eq!(message, "Backend Error");
        }
        other => panic!("not the 503: {other:?}"),
    }
    assert_all_deleted(&state);
}

#[tokio::test]
async fn the_metadata_servers_token_is_used_and_cached() {
    let state = new_fake(crash_console());
    let endpoint = serve(state.clone()).await;
    let token = Arc::new(MetadataToken::new().with_url(format!("{endpoint}{METADATA_PATH}")));
    let client =
        ComputeClient::new(PROJECT, ZONE, token).with_endpoint(&endpoint).with_poll_interval(Duration::from_millis(5));
    let runner = GceRunner::new(client)
        .with_reproducer_in_image()
        .with_bucket(BUCKET)
        .with_serial_poll(Duration::from_millis(10));
    let runner = runner.with_report_wait(Duration::from_millis(300));
    let (out, _) = run(&runner, request(1, Duration::from_secs(30))).await;
    assert_eq!(out.expect("run with the metadata token").title.as_deref(), Some(TITLE));
    let f = fake(&state);
    assert_eq!(f.unauthorized, 0);
    // Dozens of calls, one token: it is valid for an hour.
    assert_eq!(f.metadata_tokens, 1);
    assert!(f.violations.is_empty(), "{:#?}", f.violations);
}
