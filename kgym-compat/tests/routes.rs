//! kGym's routes and payloads through a real kgym HTTP server: the
//! compatibility routes merged into `kgym_sched`'s server, over the SQLite
//! scheduler with stand-in build and reproduce workers (no kernel is built
//! here: `tests/kgym_compat.rs` of the facade does that for real).

use std::collections::BTreeSet;
use std::sync::Arc;
use std::time::Duration;

use kgym_compat::{CompatOptions, OPENAPI, route_table, router};
use kgym_core::stage::build::{Arch, BuildArgs, BuildResult, CacheStatus, KernelConfig, KernelSource};
use kgym_core::stage::reproduce::{
    Accel, CrashKind, CrashSummary, ImageAbility, Incident, ReproduceArgs, ReproduceResult,
};
use kgym_core::{JobId, JobSpec, JobStatus, StageContext, StageFailure, StageKind, StageWorker};
use kgym_sched::http::{HttpScheduler, HttpServer, ServerHandle, ServerOptions};
use kgym_sched::runtime::{RuntimeHandle, WorkerRuntime};
use kgym_sched::sqlite::SqliteScheduler;
use kgym_sched::{Scheduler, SchedulerExt, StageRegistry};
use reqwest::StatusCode;
use serde_json::{Value, json};

const TOKEN: &str = "s3cret";

/// A build worker that returns a canned result (no kernel is built).
#[derive(Debug)]
struct FakeBuild;

#[async_trait::async_trait]
impl StageWorker for FakeBuild {
    type Args = BuildArgs;
    async fn run(&self, _args: BuildArgs, ctx: &StageContext) -> Result<BuildResult, StageFailure> {
        let key = |n: &str| ctx.artifact_key(n);
        let r = BuildResult {
            bzimage: key("bzImage")?,
            vmlinux: key("vmlinux")?,
            config: key("config")?,
            log: key("build.log")?,
            compile_commands: None,
            commit: Some("abc".into()),
            arch: Arch::X86_64,
            cmdline: None,
            timings: Default::default(),
            cache: CacheStatus::Miss,
            config_mismatches: vec![],
            backports_applied: vec![],
        };
        Ok(r)
    }
}

/// A reproduce worker that "finds" a crash on instance 1.
#[derive(Debug)]
struct FakeRepro;

#[async_trait::async_trait]
impl StageWorker for FakeRepro {
    type Args = ReproduceArgs;
    async fn run(&self, _args: ReproduceArgs, ctx: &StageContext) -> Result<ReproduceResult, StageFailure> {
        let r = ReproduceResult {
            crashed: true,
            title: Some("KASAN: slab-use-after-free Read in foo".into()),
            crashes: vec![CrashSummary {
                title: "KASAN: slab-use-after-free Read in foo".into(),
                kind: CrashKind::Crash,
                crash_type: Some("KASAN".into()),
                corrupted: false,
                alt_titles: Vec::new(),
                guilty_file: None,
                incidents: vec![Incident {
                    instance: 1,
                    run: 0,
                    log: ctx.artifact_key("log1")?,
                    report: None,
                    seconds: 2.0,
                }],
            }],
            image_ability: ImageAbility::Normal,
            accel: Accel::Tcg,
            message: "Crashes".into(),
            boots: 2,
            seconds: 3.0,
            syzkaller_commit: None,
        };
        Ok(r)
    }
}

struct Fixture {
    sched: SqliteScheduler,
    runtime: RuntimeHandle,
    server: ServerHandle,
    url: String,
    http: reqwest::Client,
}

impl Fixture {
    async fn new() -> Self {
        let sched = SqliteScheduler::in_memory(StageRegistry::stock()).await.unwrap();
        let runtime = WorkerRuntime::builder(Arc::new(sched.clone()))
            .artifacts(sched.artifacts().clone())
            .worker(Arc::new(FakeBuild), 1)
            .worker(Arc::new(FakeRepro), 1)
            .start()
            .await
            .unwrap();
        let api: Arc<dyn Scheduler> = Arc::new(sched.clone());
        let server = HttpServer::builder(Arc::clone(&api))
            .options(ServerOptions::default().token(Some(TOKEN.into())))
            .merge(router(api, CompatOptions::default()))
            .serve("127.0.0.1:0".parse().unwrap())
            .await
            .unwrap();
        let url = server.url();
        Self { sched, runtime, server, url, http: reqwest::Client::new() }
    }

    fn scheduler(&self) -> Arc<dyn Scheduler> {
        Arc::new(self.sched.clone())
    }

    async fn shutdown(self) {
        self.server.shutdown().await;
        self.runtime.shutdown().await;
        self.sched.close();
    }

    async fn call(&self, method: &str, path: &str, body: Option<Value>) -> (StatusCode, Value) {
        self.call_with(method, path, body, Some(TOKEN)).await
    }

    async fn call_with(
        &self,
        method: &str,
        path: &str,
        body: Option<Value>,
        token: Option<&str>,
    ) -> (StatusCode, Value) {
        let mut rb = self.http.request(method.parse().unwrap(), format!("{}{path}", self.url));
        if let Some(t) = token {
            rb = rb.bearer_auth(t);
        }
        if let Some(b) = body {
            rb = rb.json(&b);
        }
        let resp = rb.send().await.unwrap();
        let status = resp.status();
        let text = resp.text().await.unwrap();
        (status, serde_json::from_str(&text).unwrap_or(Value::String(text)))
    }
}

fn build_args() -> BuildArgs {
    BuildArgs::new(KernelSource::git("file:///src/linux", "v6.1"), KernelConfig::Full { text: "CONFIG_X=y\n".into() })
}

/// Waits for the job to end, with a limit.
async fn finish(sched: &dyn Scheduler, id: JobId, limit: Duration) -> kgym_core::Job {
    sched.wait_timeout(id, limit).await.unwrap().unwrap_or_else(|| panic!("job {id} did not end in {limit:?}"))
}

/// Waits until `pred` holds for the job (polling; only for test set-up).
async fn wait_until(sched: &dyn Scheduler, id: JobId, limit: Duration, pred: impl Fn(&kgym_core::Job) -> bool) {
    let start = std::time::Instant::now();
    while !pred(&sched.get(id).await.unwrap()) {
        assert!(start.elapsed() < limit, "condition not reached in {limit:?}");
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
}

#[tokio::test]
async fn kgym_routes_need_the_token_for_reads_and_writes() {
    let f = Fixture::new().await;
    let (s, _) =
        f.call_with("POST", "/jobs/new_raw_job", Some(json!({"job_workers": [], "worker_arguments": []})), None).await;
    assert_eq!(s, StatusCode::UNAUTHORIZED);
    for path in ["/jobs/?mode=by_created_time", "/jobs/00000001", "/jobs/kv/x", "/system/displays/jobs/log"] {
        let (s, b) = f.call_with("GET", path, None, None).await;
        assert_eq!((s, b["code"].as_str()), (StatusCode::UNAUTHORIZED, Some("unauthorized")), "{path}");
    }
    // kGym's Python client puts the token in the base URL: HTTP Basic.
    let s = f.http.get(format!("{}/jobs/?mode=by_created_time", f.url)).basic_auth("kgym", Some(TOKEN)).send().await;
    assert_eq!(s.unwrap().status(), StatusCode::OK);
    f.shutdown().await;
}

/// A scheduler with no workers (its `idle` jobs wait) behind kGym's routes.
async fn idle_server() -> (SqliteScheduler, ServerHandle) {
    let sched = SqliteScheduler::in_memory(StageRegistry::new().with_kind(StageKind::new("idle").unwrap())).await;
    let sched = sched.unwrap();
    let api: Arc<dyn Scheduler> = Arc::new(sched.clone());
    let server = HttpServer::builder(Arc::clone(&api))
        .options(ServerOptions::default().token(Some(TOKEN.into())))
        .merge(router(api, CompatOptions::default()))
        .serve("127.0.0.1:0".parse().unwrap())
        .await
        .unwrap();
    (sched, server)
}

#[tokio::test]
async fn kv_lookups_page_with_start_and_limit_and_stream_every_match_without() {
    let (sched, server) = idle_server().await;
    let idle = StageKind::new("idle").unwrap();
    // More matches than one internal page (500), so the stream spans pages.
    let mut ids = Vec::new();
    for i in 0..1203 {
        let spec = JobSpec::new().stage(idle.clone(), &json!({})).tag("bug", format!("b{}", i % 7));
        ids.push(sched.submit(spec).await.unwrap());
        if i % 400 == 0 {
            sched.submit(JobSpec::new().stage(idle.clone(), &json!({})).tag("other", "x")).await.unwrap();
        }
    }
    let http = reqwest::Client::new();
    let get = |path: String| {
        let http = http.clone();
        let url = server.url();
        async move { http.get(format!("{url}{path}")).bearer_auth(TOKEN).send().await.unwrap() }
    };
    let resp = get("/jobs/kv/bug".into()).await;
    assert_eq!(resp.status(), StatusCode::OK);
    assert_eq!(resp.headers()["content-type"], "application/json");
    assert!(resp.headers().get("content-length").is_none(), "the unpaged answer is streamed");
    let all: Vec<Value> = resp.json().await.unwrap();
    let got: Vec<JobId> = all.iter().map(|m| serde_json::from_value(m["job-id"].clone()).unwrap()).collect();
    assert_eq!(got, ids, "every match once, in job order");
    assert_eq!(all[8], json!({"job-id": ids[8], "key": "bug", "value": "b1"}));
    let page: Vec<Value> = get("/jobs/kv/bug?start=1200&limit=10".into()).await.json().await.unwrap();
    assert_eq!(page.len(), 3);
    assert_eq!(page[0]["job-id"], json!(ids[1200]));
    let page: Vec<Value> = get("/jobs/kv/bug?limit=2".into()).await.json().await.unwrap();
    assert_eq!(page.iter().map(|m| m["job-id"].clone()).collect::<Vec<_>>(), vec![json!(ids[0]), json!(ids[1])]);
    let none: Vec<Value> = get("/jobs/kv/missing".into()).await.json().await.unwrap();
    assert!(none.is_empty());
    let resp = get("/jobs/kv/bug?start=18446744073709551615".into()).await;
    assert_eq!(resp.status(), StatusCode::BAD_REQUEST);
    server.shutdown().await;
    sched.close();
}

#[tokio::test]
async fn kgym_key_writes_follow_the_tag_rules_and_errors_are_json() {
    let (sched, server) = idle_server().await;
    let id = sched.submit(JobSpec::new().stage(StageKind::new("idle").unwrap(), &json!({})).tag("a", "1")).await;
    let id = id.unwrap();
    let http = reqwest::Client::new();
    let post = |body: Value| {
        let http = http.clone();
        let url = format!("{}/jobs/{id}/keys", server.url());
        async move {
            let resp = http.post(url).bearer_auth(TOKEN).json(&body).send().await.unwrap();
            (resp.status(), resp.json::<Value>().await.unwrap())
        }
    };
    for bad in [json!({"": "x"}), json!({"big": "v".repeat(1 << 20)}), json!({"k\u{0}": "x"})] {
        let (s, b) = post(bad).await;
        assert_eq!((s, b["code"].as_str()), (StatusCode::BAD_REQUEST, Some("validation")), "{b}");
    }
    let many: serde_json::Map<String, Value> = (0..200).map(|i| (format!("k{i}"), json!("v"))).collect();
    let (s, b) = post(Value::Object(many)).await;
    assert_eq!(s, StatusCode::BAD_REQUEST, "{b}");
    assert_eq!(sched.tags(id).await.unwrap().len(), 1, "a refused write changed the tags");
    let (s, _) = post(json!({"b": "2"})).await;
    assert_eq!(s, StatusCode::OK);
    // Invalid UTF-8 in a path segment: a JSON 400.
    for path in ["/jobs/%FF", "/jobs/%FF/keys/x", "/jobs/kv/%C3%28", "/system/workers/types/%FF/log"] {
        let resp = http.get(format!("{}{path}", server.url())).bearer_auth(TOKEN).send().await.unwrap();
        assert_eq!(resp.status(), StatusCode::BAD_REQUEST, "{path}");
        let b: Value = resp.json().await.unwrap();
        assert_eq!(b["code"], "bad-request", "{path}");
    }
    server.shutdown().await;
    sched.close();
}

#[tokio::test]
async fn kgym_bad_queries_and_unknown_jobs_are_400_and_404() {
    let f = Fixture::new().await;
    let (s, _) = f.call("GET", "/jobs/?limit=51", None).await;
    assert_eq!(s, StatusCode::BAD_REQUEST);
    let (s, _) = f.call("GET", "/jobs/?mode=by_color", None).await;
    assert_eq!(s, StatusCode::BAD_REQUEST);
    let (s, _) = f.call("GET", "/jobs/0000beef", None).await;
    assert_eq!(s, StatusCode::NOT_FOUND);
    let (s, _) = f.call("GET", "/jobs/0000beef/log", None).await;
    assert_eq!(s, StatusCode::NOT_FOUND);
    f.shutdown().await;
}

#[tokio::test]
async fn the_client_helper_submits_raw_jobs() {
    let f = Fixture::new().await;
    let client = HttpScheduler::new(&f.url).unwrap().with_token(TOKEN);
    let raw = serde_json::from_value(json!({"job_workers": ["kbuilder"], "worker_arguments": [kbuilder()], "kv": {}}));
    let id = kgym_compat::submit_raw_job(&client, &raw.unwrap()).await.unwrap();
    assert!(finish(&client, id, Duration::from_secs(20)).await.succeeded());
    f.shutdown().await;
}

fn kbuilder() -> Value {
    json!({"kernel-git-url": "file:///src/linux", "kernel-commit-id": "v6.1", "kernel-config": "CONFIG_KASAN=y\n",
           "userspace-image-name": "", "kernel-arch": "amd64", "compiler": "gcc", "linker": "ld"})
}

fn kvmmanager() -> Value {
    json!({"reproducer": {"reproducer-type": "c", "reproducer-text": "int main(){}", "nproc": 1,
                          "restart-time": "10m", "syzkaller-checkout": "master", "syzkaller-rollback-to-latest": true,
                          "ninstance": 2},
           "image-from-worker": 0, "machine-type": "qemu:2-1024", "crash-collecting-policy": "random"})
}

#[tokio::test]
async fn kgym_payloads_are_converted_run_and_shown_with_kgym_names() {
    let f = Fixture::new().await;
    let raw = json!({"job_workers": ["kbuilder", "kvmmanager"], "worker_arguments": [kbuilder(), kvmmanager()],
                     "kv": {"bug-reproduction-for": "abc123", "composed-by": "test"}});
    let (s, id) = f.call("POST", "/jobs/new_raw_job", Some(raw.clone())).await;
    assert_eq!(s, StatusCode::OK, "{id}");
    let id: JobId = id.as_str().expect("the id as a JSON string").parse().unwrap();
    let job = finish(&*f.scheduler(), id, Duration::from_secs(20)).await;
    assert!(job.succeeded(), "{job:#?}");
    // Our model: converted arguments.
    assert_eq!(job.stages[0].arg["source"], json!({"type": "git", "url": "file:///src/linux", "commit": "v6.1"}));
    assert_eq!(job.stages[1].arg["instances"], 2);
    assert_eq!(job.stages[1].arg["machine"], "2-1024");

    let (s, v) = f.call("GET", &format!("/jobs/{id}"), None).await;
    assert_eq!(s, StatusCode::OK);
    assert_eq!(v["job-id"], json!(id));
    assert_eq!(v["status"], "finished");
    assert_eq!(v["job-workers"], json!(["kbuilder", "kvmmanager"]));
    assert_eq!(v["current-worker"], 2);
    assert_eq!(v["kv"]["bug-reproduction-for"], "abc123");
    assert_eq!(v["worker-arguments"][0]["kernel-git-url"], "file:///src/linux");
    assert_eq!(v["worker-arguments"][1]["image-from-worker"], 0);
    let b = &v["worker-results"][0];
    assert_eq!(b["result"], "success");
    assert_eq!(b["kernel-image-url"], format!("jobs/{id}/0_build/bzImage"));
    assert_eq!(b["vmlinux-url"], format!("jobs/{id}/0_build/vmlinux"));
    assert_eq!(b["kernel-config-url"], format!("jobs/{id}/0_build/config"));
    let r = &v["worker-results"][1];
    assert_eq!(r["crash-description"], "KASAN: slab-use-after-free Read in foo");
    assert_eq!(r["picked-crash-id"], 1);
    assert_eq!(r["image-ability"], "normal");
    assert_eq!(r["message"], "Crashes");
    assert_eq!(r["outcome"], "success", "our fields stay beside kGym's");

    // Listings, logs, keys.
    let (_, page) = f.call("GET", "/jobs/?mode=by_modified_time&start=0&limit=10", None).await;
    assert_eq!((page["size"].as_u64(), page["next"].as_i64(), page["total"].as_u64()), (Some(1), Some(-1), Some(1)));
    assert_eq!(page["result"][0]["job-workers"], json!(["kbuilder", "kvmmanager"]));
    let (_, page) = f
        .call(
            "GET",
            "/jobs/?mode=by_created_time&start_time=2000-01-01T00:00:00.000000&end_time=2001-01-01T00:00:00.000000",
            None,
        )
        .await;
    assert_eq!(page["total"], 0);
    let (_, log) = f.call("GET", &format!("/jobs/{id}/log?start=0&limit=50"), None).await;
    assert!(log["size"].as_u64().unwrap() >= 4, "{log}");
    assert_eq!(log["result"][0]["job-id"], json!(id));
    assert!(log["result"][0]["log-time"].as_str().unwrap().len() == 26, "{log}");
    let (_, keys) = f.call("GET", &format!("/jobs/{id}/keys"), None).await;
    assert_eq!(keys, json!(["bug-reproduction-for", "composed-by"]));
    let (_, kv) = f.call("GET", &format!("/jobs/{id}/keys?with_values=true"), None).await;
    assert_eq!(kv["composed-by"], "test");
    let (_, val) = f.call("GET", &format!("/jobs/{id}/keys/composed-by"), None).await;
    assert_eq!(val, "test");
    let (_, val) = f.call("GET", &format!("/jobs/{id}/keys/missing"), None).await;
    assert_eq!(val, Value::Null);
    let (s, _) = f.call("POST", &format!("/jobs/{id}/keys"), Some(json!({"extra": "1"}))).await;
    assert_eq!(s, StatusCode::OK);
    let (_, all) = f.call("GET", "/jobs/kv/extra", None).await;
    assert_eq!(all, json!([{"job-id": id, "key": "extra", "value": "1"}]));

    // System logs.
    for path in [
        "/system/workers/types/kbuilder/log",
        "/system/workers/types/kvmmanager/log?limit=50",
        &format!("/system/workers/instances/{}/log", kgym_sched::runtime::hostname()),
        "/system/displays/workers/log",
        "/system/displays/jobs/log",
    ] {
        let (s, page) = f.call("GET", path, None).await;
        assert_eq!(s, StatusCode::OK, "{path}");
        assert!(page["total"].as_u64().unwrap() >= 1, "{path}: {page}");
        assert!(page["result"][0]["log-time"].is_string(), "{path}: {page}");
    }

    // Restart (-1: where it stopped is past the end) and reset.
    let (s, b) = f.call("POST", &format!("/jobs/{id}/restart"), None).await;
    assert_eq!(s, StatusCode::BAD_REQUEST, "{b}");
    let (s, _) = f.call("POST", &format!("/jobs/{id}/restart?restart_from=1"), None).await;
    assert_eq!(s, StatusCode::OK);
    let job = finish(&*f.scheduler(), id, Duration::from_secs(20)).await;
    assert!(job.succeeded());
    let (s, b) = f.call("POST", &format!("/jobs/{id}/reset?restart_from=0"), Some(raw)).await;
    assert_eq!(s, StatusCode::OK, "{b}");
    assert!(finish(&*f.scheduler(), id, Duration::from_secs(20)).await.succeeded());
    let (s, _) = f.call("POST", &format!("/jobs/{id}/abort"), None).await;
    assert_eq!(s, StatusCode::CONFLICT);

    // Abort a pending one (no worker runs patch-check here).
    let pc = json!({"job_workers": ["kbuilder", "kprebuilder"],
                    "worker_arguments": [kbuilder(), {"kcache-from-worker": 0, "patches": ["--- a/x\n+++ b/x\n"]}], "kv": {}});
    let (s, pid) = f.call("POST", "/jobs/new_raw_job", Some(pc)).await;
    assert_eq!(s, StatusCode::OK, "{pid}");
    let pid = pid.as_str().unwrap().to_owned();
    wait_until(&*f.scheduler(), pid.parse().unwrap(), Duration::from_secs(10), |j| j.status == JobStatus::Waiting)
        .await;
    let (s, _) = f.call("POST", &format!("/jobs/{pid}/abort"), None).await;
    assert_eq!(s, StatusCode::OK);
    let (_, v) = f.call("GET", &format!("/jobs/{pid}"), None).await;
    assert_eq!((v["status"].as_str(), v["job-workers"][1].as_str()), (Some("aborted"), Some("kprebuilder")));
    f.shutdown().await;
}

#[tokio::test]
async fn kgym_payload_problems_are_400_with_every_message() {
    let f = Fixture::new().await;
    let mut vm = kvmmanager();
    vm["machine-type"] = json!("gce:e2-standard-2");
    let mut kb = kbuilder();
    kb["userspace-image-name"] = json!("bullseye.raw");
    let (s, b) = f
        .call(
            "POST",
            "/jobs/new_raw_job",
            Some(json!({"job_workers": ["kbuilder", "kvmmanager"], "worker_arguments": [kb, vm], "kv": {}})),
        )
        .await;
    assert_eq!((s, b["code"].as_str()), (StatusCode::BAD_REQUEST, Some("validation")));
    let text = b["detail"].as_str().unwrap();
    // gce: is understood, but an instance boots a disk, and there is none.
    assert!(text.contains("machine-type \"gce:e2-standard-2\" boots a disk image"), "{text}");
    assert!(text.contains("userspace image \"bullseye.raw\" is not available"), "{text}");
    let (s, _) = f.call("POST", "/jobs/new_raw_job", Some(json!({"job_workers": ["kbuilder"]}))).await;
    assert_eq!(s, StatusCode::BAD_REQUEST);
    f.shutdown().await;
}

/// Every route in openapi.json is served, and every served route is in
/// openapi.json.
#[tokio::test]
async fn the_openapi_document_matches_the_routes() {
    let doc: Value = serde_json::from_str(OPENAPI).expect("openapi.json parses");
    let mut documented = BTreeSet::new();
    for (path, item) in doc["paths"].as_object().unwrap() {
        for method in item.as_object().unwrap().keys() {
            documented.insert((method.clone(), path.clone()));
        }
    }
    let served: BTreeSet<(String, String)> =
        route_table().into_iter().map(|(m, p)| (m.to_owned(), p.to_owned())).collect();
    assert!(!served.is_empty());
    let missing: Vec<_> = served.difference(&documented).collect();
    let extra: Vec<_> = documented.difference(&served).collect();
    assert!(missing.is_empty(), "served but not documented: {missing:?}");
    assert!(extra.is_empty(), "documented but not served: {extra:?}");

    // And the router really answers each of them (not with "no route" or
    // "method not allowed").
    let f = Fixture::new().await;
    let id = f.scheduler().submit(JobSpec::new().stage(StageKind::build(), &build_args()).tag("suite", "compat")).await;
    let id = id.unwrap();
    for (method, path) in &documented {
        let concrete = path
            .replace("{id}", &id.to_string())
            .replace("{key}", "suite")
            .replace("{kind}", "kbuilder")
            .replace("{hostname}", "localhost");
        let body = if method == "get" { None } else { Some(json!({})) };
        let (s, b) = f.call(&method.to_uppercase(), &concrete, body).await;
        assert_ne!(s, StatusCode::METHOD_NOT_ALLOWED, "{method} {path}: {b}");
        assert!(!(s == StatusCode::NOT_FOUND && b["code"] == "no-route"), "{method} {path} is not routed");
    }
    f.shutdown().await;
}
