//! The HTTP API: every route, auth, bad input, kGym payloads, the client,
//! the remote worker protocol and the OpenAPI document.

mod common;

use std::collections::BTreeSet;
use std::sync::Arc;
use std::time::Duration;

use common::{Noop, Sleepy, finish, wait_until};
use futures::StreamExt;
use kgym_core::stage::build::{Arch, BuildResult, CacheStatus};
use kgym_core::stage::reproduce::{Accel, CrashKind, CrashSummary, ImageAbility, Incident, ReproduceResult};
use kgym_core::{JobId, JobSpec, JobStatus, StageContext, StageFailure, StageIndex, StageKind, Tags, Worker};
use kgym_sched::http::{HttpScheduler, HttpServer, HttpWorkerBackend, OPENAPI, route_table};
use kgym_sched::runtime::WorkerRuntime;
use kgym_sched::types::{ListQuery, LogQuery, SystemLogQuery};
use kgym_sched::{Embedded, EmbeddedScheduler, Error, Scheduler, SchedulerExt};
use reqwest::StatusCode;
use serde_json::{Value, json};

const TOKEN: &str = "s3cret";

/// A build worker that returns a canned result (no kernel is built).
#[derive(Debug)]
struct FakeBuild;

#[async_trait::async_trait]
impl Worker for FakeBuild {
    fn kind(&self) -> StageKind {
        StageKind::build()
    }
    async fn run(&self, ctx: StageContext) -> Result<Value, StageFailure> {
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
        Ok(serde_json::to_value(r).unwrap())
    }
}

/// A reproduce worker that "finds" a crash on instance 1.
#[derive(Debug)]
struct FakeRepro;

#[async_trait::async_trait]
impl Worker for FakeRepro {
    fn kind(&self) -> StageKind {
        StageKind::reproduce()
    }
    async fn run(&self, ctx: StageContext) -> Result<Value, StageFailure> {
        let r = ReproduceResult {
            crashed: true,
            title: Some("KASAN: slab-use-after-free Read in foo".into()),
            crashes: vec![CrashSummary {
                title: "KASAN: slab-use-after-free Read in foo".into(),
                kind: CrashKind::Crash,
                crash_type: Some("KASAN".into()),
                corrupted: false,
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
        Ok(serde_json::to_value(r).unwrap())
    }
}

struct Fixture {
    gym: Embedded,
    url: String,
    http: reqwest::Client,
}

impl Fixture {
    async fn new() -> Self {
        let gym = Embedded::builder()
            .worker(Noop::new("echo"), 2)
            .worker(Sleepy::new("sleepy", None), 1)
            .worker(Arc::new(FakeBuild), 1)
            .worker(Arc::new(FakeRepro), 1)
            .accept_kind(StageKind::patch_check())
            .heartbeat_interval(Duration::from_millis(50))
            .serve_http("127.0.0.1:0".parse().unwrap(), Some(TOKEN.into()))
            .build()
            .await
            .unwrap();
        let url = gym.http_url().unwrap();
        Self { gym, url, http: reqwest::Client::new() }
    }

    fn client(&self) -> HttpScheduler {
        HttpScheduler::new(&self.url).unwrap().with_token(TOKEN)
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

fn echo_spec() -> JobSpec {
    JobSpec::new().stage(StageKind::new("echo").unwrap(), &json!({"x": 1})).tag("suite", "http")
}

#[tokio::test]
async fn the_client_implements_the_whole_scheduler_trait() {
    let f = Fixture::new().await;
    let sched: Arc<dyn Scheduler> = Arc::new(f.client());
    let id = sched.submit(echo_spec()).await.unwrap();
    let job = sched.wait(id).await.unwrap(); // server-sent events
    assert!(job.succeeded(), "{job:#?}");
    assert_eq!(job.results[0].value["job"], json!(id));

    let page = sched.list(&ListQuery::new()).await.unwrap();
    assert_eq!((page.total, page.items[0].id), (1, id));
    let logs = sched.logs(&LogQuery::job(id)).await.unwrap();
    assert!(logs.items.iter().any(|l| l.line.contains("handed to")), "{logs:?}");
    assert!(sched.logs(&LogQuery::default()).await.unwrap().total >= 2);
    let sys = sched
        .system_log(&SystemLogQuery { kind: Some(StageKind::new("echo").unwrap()), limit: 50, ..Default::default() })
        .await
        .unwrap();
    assert!(sys.total >= 1);

    assert_eq!(sched.merge_tags(id, Tags::from([("k".into(), "v".into())])).await.unwrap().len(), 2);
    assert_eq!(sched.tags(id).await.unwrap()["suite"], "http");
    assert_eq!(sched.set_tags(id, Tags::from([("only".into(), "one".into())])).await.unwrap().len(), 1);
    let tagged = sched.jobs_with_tag("only", Some("one")).await.unwrap();
    assert_eq!((tagged.len(), tagged[0].job), (1, id));

    let job = sched.restart(id, Some(StageIndex(0))).await.unwrap();
    assert!(!job.status.is_terminal());
    let job = sched.wait(id).await.unwrap();
    assert!(job.succeeded());
    let job =
        sched.reset(id, echo_spec().stage(StageKind::new("echo").unwrap(), &json!({})), StageIndex(1)).await.unwrap();
    assert_eq!(job.stages.len(), 2);
    assert!(sched.wait(id).await.unwrap().succeeded());

    // Typed errors survive the trip.
    assert!(matches!(sched.abort(id).await, Err(Error::InvalidState { status: JobStatus::Finished, .. })));
    assert!(matches!(sched.get(JobId::new(0xdead)).await, Err(Error::JobNotFound { id }) if id == JobId::new(0xdead)));
    let bad =
        JobSpec::new().stage(StageKind::new("nope").unwrap(), &json!(null)).stage(StageKind::reproduce(), &json!({}));
    match sched.submit(bad).await {
        Err(Error::Validation { problems }) => assert!(problems.len() >= 2, "{problems:?}"),
        other => panic!("unexpected {other:?}"),
    }
    assert!(matches!(sched.watch(JobId::new(0xdead)).await, Err(Error::JobNotFound { .. })));
    f.gym.shutdown().await;
}

#[tokio::test]
async fn abort_over_http_cancels_the_running_stage() {
    let f = Fixture::new().await;
    let sched = f.client();
    let id = sched
        .submit(JobSpec::new().stage(StageKind::new("sleepy").unwrap(), &json!({"sleep_ms": 60000})))
        .await
        .unwrap();
    wait_until(&sched, id, Duration::from_secs(10), |j| j.status == JobStatus::InProgress).await;
    let mut events = sched.watch(id).await.unwrap();
    assert_eq!(events.next().await.unwrap().unwrap().status(), Some(JobStatus::InProgress));
    assert_eq!(sched.abort(id).await.unwrap().status, JobStatus::Aborted);
    let rest: Vec<_> = events.map(|e| e.unwrap()).collect().await;
    assert_eq!(rest.last().unwrap().status(), Some(JobStatus::Aborted));
    let mut seen = false;
    for _ in 0..100 {
        let lines = sched.all_logs(id).await.unwrap();
        if lines.iter().any(|l| l.line == "cancelled: stopping") {
            seen = true;
            break;
        }
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    assert!(seen, "the worker never logged its cancellation");
    f.gym.shutdown().await;
}

#[tokio::test]
async fn writes_need_the_token_and_reads_do_not() {
    let f = Fixture::new().await;
    let spec = serde_json::to_value(echo_spec()).unwrap();
    let (s, b) = f.call_with("POST", "/api/v1/jobs", Some(spec.clone()), None).await;
    assert_eq!((s, b["code"].as_str()), (StatusCode::UNAUTHORIZED, Some("unauthorized")));
    let (s, _) = f.call_with("POST", "/api/v1/jobs", Some(spec.clone()), Some("wrong")).await;
    assert_eq!(s, StatusCode::UNAUTHORIZED);
    let (s, _) =
        f.call_with("POST", "/jobs/new_raw_job", Some(json!({"job_workers": [], "worker_arguments": []})), None).await;
    assert_eq!(s, StatusCode::UNAUTHORIZED);
    let (s, _) = f.call_with("POST", "/api/v1/workers/claim", Some(json!({})), None).await;
    assert_eq!(s, StatusCode::UNAUTHORIZED);
    let (s, b) = f.call_with("POST", "/api/v1/jobs", Some(spec), Some(TOKEN)).await;
    assert_eq!(s, StatusCode::OK, "{b}");
    let (s, _) = f.call_with("GET", "/api/v1/jobs", None, None).await;
    assert_eq!(s, StatusCode::OK);
    let (s, _) = f.call_with("GET", "/jobs/?mode=by_created_time", None, None).await;
    assert_eq!(s, StatusCode::OK);
    // A client without the token gets a typed error.
    let anon = HttpScheduler::new(&f.url).unwrap();
    match anon.submit(echo_spec()).await {
        Err(Error::Remote { status: 401, code, .. }) => assert_eq!(code, "unauthorized"),
        other => panic!("unexpected {other:?}"),
    }
    f.gym.shutdown().await;
}

#[tokio::test]
async fn bad_input_gets_400_404_405_and_413_with_messages() {
    let f = Fixture::new().await;
    // Malformed JSON.
    let resp = f
        .http
        .post(format!("{}/api/v1/jobs", f.url))
        .bearer_auth(TOKEN)
        .header("content-type", "application/json")
        .body("{not json")
        .send()
        .await
        .unwrap();
    assert_eq!(resp.status(), StatusCode::BAD_REQUEST);
    let b: Value = resp.json().await.unwrap();
    assert_eq!(b["code"], "bad-json");
    assert!(b["error"].as_str().unwrap().contains("JSON"), "{b}");
    // Wrong shape.
    let (s, b) = f.call("POST", "/api/v1/jobs", Some(json!({"stages": "many"}))).await;
    assert_eq!((s, b["code"].as_str()), (StatusCode::BAD_REQUEST, Some("bad-json")), "{b}");
    // Unknown kinds and bad arguments: every problem listed.
    let (s, b) = f
        .call(
            "POST",
            "/api/v1/jobs",
            Some(json!({"stages": [{"kind": "nope", "arg": {}}, {"kind": "build", "arg": {"source": 1}}]})),
        )
        .await;
    assert_eq!((s, b["code"].as_str()), (StatusCode::BAD_REQUEST, Some("validation")));
    assert_eq!(b["problems"].as_array().unwrap().len(), 2, "{b}");
    assert!(b["error"].as_str().unwrap().contains("no worker runs stage kind \"nope\""), "{b}");
    // Bad ids, queries, unknown jobs and routes, wrong methods.
    let (s, b) = f.call("GET", "/api/v1/jobs/not-hex", None).await;
    assert_eq!((s, b["code"].as_str()), (StatusCode::BAD_REQUEST, Some("bad-request")));
    let (s, _) = f.call("GET", "/api/v1/jobs?limit=lots", None).await;
    assert_eq!(s, StatusCode::BAD_REQUEST);
    let (s, b) = f.call("GET", "/api/v1/jobs?limit=100000", None).await;
    assert_eq!((s, b["code"].as_str()), (StatusCode::BAD_REQUEST, Some("bad-request")));
    let (s, _) = f.call("GET", "/jobs/?limit=51", None).await;
    assert_eq!(s, StatusCode::BAD_REQUEST);
    let (s, _) = f.call("GET", "/jobs/?mode=by_color", None).await;
    assert_eq!(s, StatusCode::BAD_REQUEST);
    let (s, b) = f.call("GET", "/api/v1/jobs/0000beef", None).await;
    assert_eq!(
        (s, b["code"].as_str(), b["job"].as_str()),
        (StatusCode::NOT_FOUND, Some("not-found"), Some("0000beef"))
    );
    let (s, _) = f.call("GET", "/jobs/0000beef", None).await;
    assert_eq!(s, StatusCode::NOT_FOUND);
    let (s, _) = f.call("GET", "/jobs/0000beef/log", None).await;
    assert_eq!(s, StatusCode::NOT_FOUND);
    let (s, b) = f.call("GET", "/no/such/route", None).await;
    assert_eq!((s, b["code"].as_str()), (StatusCode::NOT_FOUND, Some("no-route")));
    let (s, b) = f.call("DELETE", "/api/v1/jobs", None).await;
    assert_eq!((s, b["code"].as_str()), (StatusCode::METHOD_NOT_ALLOWED, Some("method-not-allowed")));
    let (s, b) = f.call("POST", "/api/v1/jobs/00000001/restart", None).await;
    assert_eq!(s, StatusCode::NOT_FOUND, "{b}");
    f.gym.shutdown().await;

    // Bodies over the limit.
    let sched = EmbeddedScheduler::builder().accept_kind(StageKind::new("echo").unwrap()).build().await.unwrap();
    let server =
        HttpServer::builder(Arc::new(sched)).body_limit(1024).serve("127.0.0.1:0".parse().unwrap()).await.unwrap();
    let big = json!({"stages": [{"kind": "echo", "arg": {"pad": "x".repeat(4096)}}]});
    let resp = reqwest::Client::new().post(format!("{}/api/v1/jobs", server.url())).json(&big).send().await.unwrap();
    assert_eq!(resp.status(), StatusCode::PAYLOAD_TOO_LARGE);
    let b: Value = resp.json().await.unwrap();
    assert_eq!(b["code"], "payload-too-large");
    let resp = reqwest::Client::new()
        .post(format!("{}/api/v1/workers/claim", server.url()))
        .json(&json!({"kind": "echo", "worker": "w", "host": "h", "wait": 10}))
        .send()
        .await
        .unwrap();
    assert_eq!(resp.status(), StatusCode::BAD_REQUEST, "no worker backend configured");
    server.shutdown().await;
}

#[tokio::test]
async fn the_server_refuses_to_listen_beyond_loopback_without_a_token() {
    let sched = EmbeddedScheduler::in_memory().await.unwrap();
    let err = HttpServer::builder(Arc::new(sched)).serve("0.0.0.0:0".parse().unwrap()).await.unwrap_err();
    assert!(matches!(err, Error::InsecureListen { .. }), "{err:?}");
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
    let job = finish(&*f.gym.scheduler(), id, Duration::from_secs(20)).await;
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
    let job = finish(&*f.gym.scheduler(), id, Duration::from_secs(20)).await;
    assert!(job.succeeded());
    let (s, b) = f.call("POST", &format!("/jobs/{id}/reset?restart_from=0"), Some(raw)).await;
    assert_eq!(s, StatusCode::OK, "{b}");
    assert!(finish(&*f.gym.scheduler(), id, Duration::from_secs(20)).await.succeeded());
    let (s, _) = f.call("POST", &format!("/jobs/{id}/abort"), None).await;
    assert_eq!(s, StatusCode::CONFLICT);

    // Abort a pending one (no worker runs patch-check here).
    let pc = json!({"job_workers": ["kbuilder", "kprebuilder"],
                    "worker_arguments": [kbuilder(), {"kcache-from-worker": 0, "patches": ["--- a/x\n+++ b/x\n"]}], "kv": {}});
    let (s, pid) = f.call("POST", "/jobs/new_raw_job", Some(pc)).await;
    assert_eq!(s, StatusCode::OK, "{pid}");
    let pid = pid.as_str().unwrap().to_owned();
    wait_until(&*f.gym.scheduler(), pid.parse().unwrap(), Duration::from_secs(10), |j| j.status == JobStatus::Waiting)
        .await;
    let (s, _) = f.call("POST", &format!("/jobs/{pid}/abort"), None).await;
    assert_eq!(s, StatusCode::OK);
    let (_, v) = f.call("GET", &format!("/jobs/{pid}"), None).await;
    assert_eq!((v["status"].as_str(), v["job-workers"][1].as_str()), (Some("aborted"), Some("kprebuilder")));
    f.gym.shutdown().await;
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
    assert!(text.contains("needs a GCE runner"), "{text}");
    assert!(text.contains("userspace image \"bullseye.raw\" is not available"), "{text}");
    let (s, _) = f.call("POST", "/jobs/new_raw_job", Some(json!({"job_workers": ["kbuilder"]}))).await;
    assert_eq!(s, StatusCode::BAD_REQUEST);
    f.gym.shutdown().await;
}

#[tokio::test]
async fn remote_workers_run_stages_over_http_and_only_one_wins_a_claim() {
    let f = Fixture::new().await;
    f.gym.embedded().accept_kind(StageKind::new("remote").unwrap());
    let backend = Arc::new(HttpWorkerBackend::new(&f.url).unwrap().with_token(TOKEN));
    // One job, many concurrent HTTP claims for it.
    let sched = f.client();
    let id = sched.submit(JobSpec::new().stage(StageKind::new("remote").unwrap(), &json!({}))).await.unwrap();
    let claims = futures::future::join_all((0..12).map(|i| {
        let backend = Arc::clone(&backend);
        async move {
            use kgym_sched::worker_api::{ClaimRequest, WorkerBackend};
            backend
                .claim(&ClaimRequest {
                    kind: StageKind::new("remote").unwrap(),
                    worker: format!("racer/{i}"),
                    host: "racer".into(),
                    wait: Duration::from_millis(500),
                })
                .await
                .unwrap()
        }
    }))
    .await;
    let winners: Vec<_> = claims.into_iter().flatten().collect();
    assert_eq!(winners.len(), 1);
    assert_eq!(winners[0].lease.job, id);
    {
        use kgym_sched::worker_api::{StageOutcome, WorkerBackend};
        backend.append_log(&winners[0].lease, "racer/0", &["from afar".into()]).await.unwrap();
        backend.report(&winners[0].lease, StageOutcome::Success(json!({"remote": true}))).await.unwrap();
        assert!(matches!(
            backend.report(&winners[0].lease, StageOutcome::Success(json!(null))).await,
            Err(Error::LeaseLost { .. })
        ));
    }
    let job = finish(&sched, id, Duration::from_secs(10)).await;
    assert_eq!(job.results[0].value["remote"], true);

    // A whole runtime over HTTP.
    let noop = Noop::new("remote");
    let runtime = WorkerRuntime::builder(backend)
        .host("far-away")
        .worker(noop.clone(), 2)
        .claim_wait(Duration::from_millis(500))
        .start()
        .await
        .unwrap();
    let ids = futures::future::join_all(
        (0..20).map(|_| sched.submit(JobSpec::new().stage(StageKind::new("remote").unwrap(), &json!({})))),
    )
    .await;
    for id in ids {
        let job = finish(&sched, id.unwrap(), Duration::from_secs(20)).await;
        assert!(job.results[0].worker.as_deref().unwrap().starts_with("far-away/remote-"), "{job:#?}");
    }
    assert_eq!(noop.runs(), 20);
    runtime.shutdown().await;
    let (_, page) = f.call("GET", "/system/workers/instances/far-away/log?limit=50", None).await;
    assert!(
        page["result"].as_array().unwrap().iter().any(|e| e["log"].as_str().unwrap().contains("started")),
        "{page}"
    );
    f.gym.shutdown().await;
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
    let missing: Vec<_> = served.difference(&documented).collect();
    let extra: Vec<_> = documented.difference(&served).collect();
    assert!(missing.is_empty(), "served but not documented: {missing:?}");
    assert!(extra.is_empty(), "documented but not served: {extra:?}");

    // And the router really answers each of them (not with "no route" or
    // "method not allowed").
    let f = Fixture::new().await;
    let id = f.client().submit(echo_spec()).await.unwrap();
    for (method, path) in &documented {
        let concrete = path
            .replace("{id}", &id.to_string())
            .replace("{key}", "suite")
            .replace("{kind}", "echo")
            .replace("{hostname}", "localhost");
        let body = if method == "get" { None } else { Some(json!({})) };
        let (s, b) = f.call(&method.to_uppercase(), &concrete, body).await;
        assert_ne!(s, StatusCode::METHOD_NOT_ALLOWED, "{method} {path}: {b}");
        assert!(!(s == StatusCode::NOT_FOUND && b["code"] == "no-route"), "{method} {path} is not routed");
    }
    f.gym.shutdown().await;
}
