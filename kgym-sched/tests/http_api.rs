//! The HTTP API as a client sees it beyond the conformance suites
//! (`tests/conformance.rs` runs those over HTTP): auth, bad input, body
//! limits, routes merged in from other crates and the OpenAPI document.

mod common;

use std::collections::BTreeSet;
use std::sync::Arc;

use axum::routing::get;
use common::{Noop, Sleepy, TestGym, TestGymConfig};
use kgym_core::{JobSpec, StageKind};
use kgym_sched::http::{HttpScheduler, HttpServer, OPENAPI, ServerOptions, route_table};
use kgym_sched::sqlite::SqliteScheduler;
use kgym_sched::{Error, Scheduler, StageRegistry};
use reqwest::StatusCode;
use serde_json::{Value, json};

const TOKEN: &str = "s3cret";

struct Fixture {
    gym: TestGym,
    url: String,
    http: reqwest::Client,
}

impl Fixture {
    async fn new() -> Self {
        let gym = TestGym::start(TestGymConfig {
            workers: vec![(Noop::new("echo"), 2), (Sleepy::new("sleepy", None), 1)],
            kinds: vec![StageKind::build()],
            http: Some(ServerOptions::default().token(Some(TOKEN.into()))),
            ..Default::default()
        })
        .await;
        let url = gym.url();
        Self { gym, url, http: reqwest::Client::new() }
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
async fn the_token_guards_reads_and_writes_but_not_health() {
    let f = Fixture::new().await;
    let spec = serde_json::to_value(echo_spec()).unwrap();
    let (s, b) = f.call_with("POST", "/api/v1/jobs", Some(spec.clone()), None).await;
    assert_eq!((s, b["code"].as_str()), (StatusCode::UNAUTHORIZED, Some("unauthorized")));
    let (s, _) = f.call_with("POST", "/api/v1/jobs", Some(spec.clone()), Some("wrong")).await;
    assert_eq!(s, StatusCode::UNAUTHORIZED);
    let (s, _) = f.call_with("POST", "/api/v1/workers/claim", Some(json!({})), None).await;
    assert_eq!(s, StatusCode::UNAUTHORIZED);
    let (s, b) = f.call_with("POST", "/api/v1/jobs", Some(spec), Some(TOKEN)).await;
    assert_eq!(s, StatusCode::OK, "{b}");
    let id = b["id"].as_str().unwrap().to_owned();

    // Every read but health needs the token too.
    let reads: Vec<String> = route_table()
        .into_iter()
        .filter(|(m, _)| *m == "get")
        .map(|(_, p)| {
            p.replace("{id}", &id).replace("{key}", "suite").replace("{*key}", &format!("jobs/{id}/0_echo/x"))
        })
        .collect();
    assert!(reads.len() >= 14, "{reads:?}");
    for path in &reads {
        let (s, b) = f.call_with("GET", path, None, None).await;
        if path == "/api/v1/health" {
            assert_eq!(s, StatusCode::OK, "{path}");
            continue;
        }
        assert_eq!((s, b["code"].as_str()), (StatusCode::UNAUTHORIZED, Some("unauthorized")), "{path}: {b}");
        let (s, _) = f.call_with("GET", path, None, Some("wrong")).await;
        assert_eq!(s, StatusCode::UNAUTHORIZED, "{path} with a wrong token");
    }
    for path in
        ["/api/v1/jobs", &format!("/api/v1/jobs/{id}"), "/api/v1/system/log", "/api/v1/workers", "/api/v1/stats"]
    {
        let (s, b) = f.call_with("GET", path, None, Some(TOKEN)).await;
        assert_eq!(s, StatusCode::OK, "{path}: {b}");
    }

    // Scheme names are case-insensitive; Basic auth carries the token as
    // its password (any user), also from a URL's user info.
    let http = &f.http;
    let list = format!("{}/api/v1/jobs", f.url);
    for header in [format!("bearer {TOKEN}"), format!("BEARER {TOKEN}")] {
        let s = http.get(&list).header("authorization", header.clone()).send().await.unwrap().status();
        assert_eq!(s, StatusCode::OK, "{header}");
    }
    let s = http.get(&list).basic_auth("kgym", Some(TOKEN)).send().await.unwrap().status();
    assert_eq!(s, StatusCode::OK);
    let s = http.get(&list).basic_auth("kgym", Some("wrong")).send().await.unwrap().status();
    assert_eq!(s, StatusCode::UNAUTHORIZED);
    let s = http.get(&list).basic_auth(TOKEN, None::<&str>).send().await.unwrap().status();
    assert_eq!(s, StatusCode::UNAUTHORIZED, "the token is the password, not the user");
    let with_user_info = f.url.replace("http://", &format!("http://kgym:{TOKEN}@"));
    let s = http.get(format!("{with_user_info}/api/v1/jobs/{id}")).send().await.unwrap().status();
    assert_eq!(s, StatusCode::OK);
    let via_url = HttpScheduler::new(&with_user_info).unwrap();
    assert_eq!(via_url.get(id.parse().unwrap()).await.unwrap().id.to_string(), id);

    // A client without the token gets a typed error, for reads too.
    let anon = HttpScheduler::new(&f.url).unwrap();
    for result in [anon.submit(echo_spec()).await.map(drop), anon.get(id.parse().unwrap()).await.map(drop)] {
        match result {
            Err(Error::Remote { status: 401, code, .. }) => assert_eq!(code, "unauthorized"),
            other => panic!("unexpected {other:?}"),
        }
    }
    f.gym.shutdown().await;
}

#[tokio::test]
async fn public_reads_open_reads_and_keep_writes_closed() {
    let gym = TestGym::start(TestGymConfig {
        kinds: vec![StageKind::new("echo").unwrap()],
        http: Some(ServerOptions::default().token(Some(TOKEN.into())).public_reads(true)),
        ..Default::default()
    })
    .await;
    let http = reqwest::Client::new();
    let id = gym.sched.submit(echo_spec()).await.unwrap();
    for path in ["/api/v1/jobs".to_owned(), format!("/api/v1/jobs/{id}"), "/api/v1/jobs/counts".into()] {
        let s = http.get(format!("{}{path}", gym.url())).send().await.unwrap().status();
        assert_eq!(s, StatusCode::OK, "{path}");
    }
    let s = http.post(format!("{}/api/v1/jobs/{id}/abort", gym.url())).send().await.unwrap().status();
    assert_eq!(s, StatusCode::UNAUTHORIZED);
    gym.shutdown().await;
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
            Some(json!({"stages": [{"kind": "nope", "arg": {}}, {"kind": "sleepy", "arg": {"sleep_ms": "x"}}]})),
        )
        .await;
    assert_eq!((s, b["code"].as_str()), (StatusCode::BAD_REQUEST, Some("validation")));
    assert_eq!(b["problems"].as_array().unwrap().len(), 2, "{b}");
    assert!(b["error"].as_str().unwrap().contains("no worker runs stage kind \"nope\""), "{b}");
    assert_eq!(b["problems"][1]["message"], "sleep_ms must be a number of milliseconds", "{b}");
    // Bad ids, queries, unknown jobs and routes, wrong methods.
    let (s, b) = f.call("GET", "/api/v1/jobs/not-hex", None).await;
    assert_eq!((s, b["code"].as_str()), (StatusCode::BAD_REQUEST, Some("bad-request")));
    let (s, _) = f.call("GET", "/api/v1/jobs?limit=lots", None).await;
    assert_eq!(s, StatusCode::BAD_REQUEST);
    let (s, b) = f.call("GET", "/api/v1/jobs?limit=100000", None).await;
    assert_eq!((s, b["code"].as_str()), (StatusCode::BAD_REQUEST, Some("bad-request")));
    let (s, b) = f.call("GET", "/api/v1/jobs/0000beef", None).await;
    assert_eq!(
        (s, b["code"].as_str(), b["job"].as_str()),
        (StatusCode::NOT_FOUND, Some("not-found"), Some("0000beef"))
    );
    let (s, b) = f.call("GET", "/no/such/route", None).await;
    assert_eq!((s, b["code"].as_str()), (StatusCode::NOT_FOUND, Some("no-route")));
    let (s, b) = f.call("DELETE", "/api/v1/jobs", None).await;
    assert_eq!((s, b["code"].as_str()), (StatusCode::METHOD_NOT_ALLOWED, Some("method-not-allowed")));
    let (s, b) = f.call("POST", "/api/v1/jobs/00000001/restart", None).await;
    assert_eq!(s, StatusCode::NOT_FOUND, "{b}");
    f.gym.shutdown().await;

    // Bodies over the limit.
    let sched = SqliteScheduler::in_memory(StageRegistry::new().with_kind(StageKind::new("echo").unwrap())).await;
    let server = HttpServer::builder(Arc::new(sched.unwrap()))
        .options(ServerOptions::default().body_limit(1024))
        .serve("127.0.0.1:0".parse().unwrap())
        .await
        .unwrap();
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
    let sched = SqliteScheduler::in_memory(StageRegistry::new()).await.unwrap();
    let err = HttpServer::builder(Arc::new(sched.clone())).serve("0.0.0.0:0".parse().unwrap()).await.unwrap_err();
    assert!(matches!(err, Error::InsecureListen { .. }), "{err:?}");
    let empty = ServerOptions::default().token(Some(String::new()));
    let err = HttpServer::builder(Arc::new(sched)).options(empty).serve("0.0.0.0:0".parse().unwrap()).await;
    assert!(matches!(err, Err(Error::InsecureListen { .. })), "an empty token is no token");
}

#[tokio::test]
async fn merged_routes_are_served_behind_the_same_token() {
    let sched = SqliteScheduler::in_memory(StageRegistry::new()).await.unwrap();
    let extra = axum::Router::new().route("/extra/hello", get(|| async { "hello" }).post(|| async { "posted" }));
    let server = HttpServer::builder(Arc::new(sched))
        .options(ServerOptions::default().token(Some(TOKEN.into())))
        .merge(extra)
        .serve("127.0.0.1:0".parse().unwrap())
        .await
        .unwrap();
    let http = reqwest::Client::new();
    let got = http.get(format!("{}/extra/hello", server.url())).send().await.unwrap();
    assert_eq!(got.status(), StatusCode::UNAUTHORIZED, "a merged read needs the token");
    let got = http.get(format!("{}/extra/hello", server.url())).bearer_auth(TOKEN).send().await.unwrap();
    assert_eq!((got.status(), got.text().await.unwrap().as_str()), (StatusCode::OK, "hello"));
    let post = http.post(format!("{}/extra/hello", server.url())).send().await.unwrap();
    assert_eq!(post.status(), StatusCode::UNAUTHORIZED, "a merged write needs the token");
    let post = http.post(format!("{}/extra/hello", server.url())).bearer_auth(TOKEN).send().await.unwrap();
    assert_eq!(post.status(), StatusCode::OK);
    let missing = http.get(format!("{}/extra/nope", server.url())).bearer_auth(TOKEN).send().await.unwrap();
    assert_eq!(missing.status(), StatusCode::NOT_FOUND);
    server.shutdown().await;
}

#[tokio::test]
async fn public_merged_routes_need_no_token_but_keep_the_limits() {
    let sched = SqliteScheduler::in_memory(StageRegistry::new()).await.unwrap();
    let page = axum::Router::new()
        .route("/", get(|| async { "<html>shell</html>" }))
        .route("/ui/echo", axum::routing::post(|body: String| async move { body }));
    let server = HttpServer::builder(Arc::new(sched))
        .options(ServerOptions::default().token(Some(TOKEN.into())).body_limit(64).max_uri(256))
        .merge_public(page)
        .serve("127.0.0.1:0".parse().unwrap())
        .await
        .unwrap();
    let http = reqwest::Client::new();
    let url = server.url();
    let shell = http.get(format!("{url}/")).send().await.unwrap();
    assert_eq!((shell.status(), shell.text().await.unwrap().as_str()), (StatusCode::OK, "<html>shell</html>"));
    let echoed = http.post(format!("{url}/ui/echo")).body("hi").send().await.unwrap();
    assert_eq!(echoed.text().await.unwrap(), "hi");
    let big = http.post(format!("{url}/ui/echo")).body("x".repeat(100)).send().await.unwrap();
    assert_eq!(big.status(), StatusCode::PAYLOAD_TOO_LARGE);
    let long = http.get(format!("{url}/?q={}", "x".repeat(300))).send().await.unwrap();
    assert_eq!(long.status(), StatusCode::URI_TOO_LONG);
    // The API beside them still needs the token.
    let api = http.get(format!("{url}/api/v1/jobs")).send().await.unwrap();
    assert_eq!(api.status(), StatusCode::UNAUTHORIZED);
    let api = http.get(format!("{url}/api/v1/jobs")).bearer_auth(TOKEN).send().await.unwrap();
    assert_eq!(api.status(), StatusCode::OK);
    server.shutdown().await;
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
    // OpenAPI spells axum's catch-all `{*key}` as `{key}`.
    let served: BTreeSet<(String, String)> =
        route_table().into_iter().map(|(m, p)| (m.to_owned(), p.replace("{*", "{"))).collect();
    let missing: Vec<_> = served.difference(&documented).collect();
    let extra: Vec<_> = documented.difference(&served).collect();
    assert!(missing.is_empty(), "served but not documented: {missing:?}");
    assert!(extra.is_empty(), "documented but not served: {extra:?}");

    // And the router really answers each of them (not with "no route" or
    // "method not allowed").
    let f = Fixture::new().await;
    let id = f.gym.sched.submit(echo_spec()).await.unwrap();
    for (method, path) in &documented {
        let concrete = path.replace("{id}", &id.to_string()).replace("{key}", "suite");
        let body = if method == "get" { None } else { Some(json!({})) };
        let (s, b) = f.call(&method.to_uppercase(), &concrete, body).await;
        assert_ne!(s, StatusCode::METHOD_NOT_ALLOWED, "{method} {path}: {b}");
        assert!(!(s == StatusCode::NOT_FOUND && b["code"] == "no-route"), "{method} {path} is not routed");
    }
    f.gym.shutdown().await;
}

#[tokio::test]
async fn artifacts_are_listed_and_served_with_their_type() {
    use kgym_core::{ArtifactKey, ArtifactStore, StageIndex};
    let store = ArtifactStore::in_memory();
    let sched = SqliteScheduler::builder()
        .stages(StageRegistry::new().with_kind(StageKind::new("echo").unwrap()))
        .artifacts(store.clone())
        .build()
        .await
        .unwrap();
    let id = sched.submit(echo_spec()).await.unwrap();
    let echo = StageKind::new("echo").unwrap();
    let log = ArtifactKey::for_stage(id, StageIndex(0), &echo, "build.log").unwrap();
    let kernel = ArtifactKey::for_stage(id, StageIndex(0), &echo, "bzImage").unwrap();
    store.put(&log, b"make: done\n".to_vec()).await.unwrap();
    store.put(&kernel, vec![0xeb_u8; 70_000]).await.unwrap();
    let server =
        HttpServer::builder(Arc::new(sched)).artifacts(store).serve("127.0.0.1:0".parse().unwrap()).await.unwrap();
    let http = reqwest::Client::new();
    let url = server.url();
    let list: Value = http.get(format!("{url}/api/v1/jobs/{id}/artifacts")).send().await.unwrap().json().await.unwrap();
    assert_eq!(list, json!([{"key": log, "size": 11}, {"key": kernel, "size": 70000}]));
    let resp = http.get(format!("{url}/api/v1/artifacts/{log}")).send().await.unwrap();
    assert_eq!(resp.headers()["content-type"], "text/plain; charset=utf-8");
    assert_eq!(resp.text().await.unwrap(), "make: done\n");
    let resp = http.get(format!("{url}/api/v1/artifacts/{kernel}")).send().await.unwrap();
    assert_eq!(resp.headers()["content-disposition"], "attachment; filename=\"bzImage\"");
    assert_eq!(resp.bytes().await.unwrap().len(), 70_000);
    let missing = http.get(format!("{url}/api/v1/artifacts/jobs/{id}/0_echo/none")).send().await.unwrap();
    assert_eq!(missing.status(), StatusCode::NOT_FOUND);
    let escape = http.get(format!("{url}/api/v1/artifacts/jobs/{id}/..%2F..%2Fetc%2Fpasswd")).send().await.unwrap();
    assert_eq!(escape.status(), StatusCode::BAD_REQUEST);
    let unknown = http.get(format!("{url}/api/v1/jobs/0000beef/artifacts")).send().await.unwrap();
    assert_eq!(unknown.status(), StatusCode::NOT_FOUND);
    server.shutdown().await;
}
