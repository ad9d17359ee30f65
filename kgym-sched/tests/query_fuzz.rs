//! The query parsers of every list route, fuzzed: random parameter names
//! and values (huge, negative, wrapped, malformed, not UTF-8) through the
//! real router over a scheduler holding jobs, tags and logs. No answer is
//! a server error, every answer is JSON, and a page's `next` is always
//! past its `start` (never wrapped) and within what a query may ask for.

use std::sync::{Arc, OnceLock};

use axum::Router;
use axum::body::Body;
use axum::http::Request;
use http_body_util::BodyExt;
use kgym_core::{JobSpec, StageKind};
use kgym_sched::http::HttpServer;
use kgym_sched::sqlite::SqliteScheduler;
use kgym_sched::types::MAX_START;
use kgym_sched::worker_api::{ClaimRequest, WorkerBackend};
use kgym_sched::{Scheduler, StageRegistry};
use proptest::prelude::*;
use serde_json::{Value, json};
use tower::ServiceExt;

/// The runtime and router every case drives.
fn fixture() -> &'static (tokio::runtime::Runtime, Router, String) {
    static FIXTURE: OnceLock<(tokio::runtime::Runtime, Router, String)> = OnceLock::new();
    FIXTURE.get_or_init(|| {
        let rt = tokio::runtime::Builder::new_multi_thread().worker_threads(1).enable_all().build().unwrap();
        let (router, id) = rt.block_on(async {
            let kind = StageKind::new("echo").unwrap();
            let sched = SqliteScheduler::in_memory(StageRegistry::new().with_kind(kind.clone())).await.unwrap();
            let mut first = None;
            for i in 0..40 {
                let spec = JobSpec::new().stage(kind.clone(), &json!({"i": i})).tag("bug", format!("b{}", i % 3));
                let id = sched.submit(spec).await.unwrap();
                first.get_or_insert(id);
            }
            let req = ClaimRequest {
                kind: kind.clone(),
                worker: "h/echo-0".into(),
                host: "h".into(),
                wait: std::time::Duration::from_secs(1),
            };
            let claim = sched.claim(&req).await.unwrap().unwrap();
            let lines: Vec<String> = (0..30).map(|i| format!("line {i}")).collect();
            sched.append_log(&claim.lease, "h/echo-0", &lines).await.unwrap();
            let router = HttpServer::builder(Arc::new(sched.clone())).worker_backend(Arc::new(sched)).router();
            (router, first.unwrap().to_string())
        });
        (rt, router, id)
    })
}

const NAMES: &[&str] = &[
    "start",
    "limit",
    "after",
    "order",
    "by",
    "status",
    "tag",
    "tag_value",
    "from",
    "to",
    "value",
    "kind",
    "host",
    "since",
    "top",
    "mode",
    "start_time",
    "end_time",
    "junk",
    "",
];

/// A parameter value, percent-encoded or (sometimes) malformed on purpose.
fn value() -> impl Strategy<Value = String> {
    prop_oneof![
        Just("0".to_owned()),
        Just("1".to_owned()),
        Just("-1".to_owned()),
        Just(u32::MAX.to_string()),
        Just((u32::MAX as u64 + 1).to_string()),
        Just(MAX_START.to_string()),
        Just((MAX_START + 1).to_string()),
        Just((MAX_START - 1).to_string()),
        Just(u64::MAX.to_string()),
        Just("18446744073709551616".to_owned()),
        Just("1e3".to_owned()),
        Just("newest_first".to_owned()),
        Just("oldest_first".to_owned()),
        Just("created".to_owned()),
        Just("modified".to_owned()),
        Just("pending".to_owned()),
        Just("finished".to_owned()),
        Just("bug".to_owned()),
        Just("b1".to_owned()),
        Just("i5".to_owned()),
        Just("i-9223372036854775808".to_owned()),
        Just("m1_2".to_owned()),
        Just("2024-05-01T12:00:00Z".to_owned()),
        Just("2024-13-45T99:00:00Z".to_owned()),
        Just("%FF%FE".to_owned()),
        Just("%".to_owned()),
        any::<u64>().prop_map(|n| n.to_string()),
        any::<i64>().prop_map(|n| n.to_string()),
        "[ -~]{0,12}".prop_map(|s| percent(&s)),
        any::<String>().prop_map(|s| percent(&s)),
    ]
}

fn percent(s: &str) -> String {
    s.bytes()
        .map(|b| {
            if b.is_ascii_alphanumeric() || b"-_.~".contains(&b) {
                (b as char).to_string()
            } else {
                format!("%{b:02X}")
            }
        })
        .collect()
}

fn query() -> impl Strategy<Value = String> {
    proptest::collection::vec((proptest::sample::select(NAMES), value()), 0..6)
        .prop_map(|pairs| pairs.into_iter().map(|(n, v)| format!("{n}={v}")).collect::<Vec<_>>().join("&"))
}

const ROUTES: &[&str] = &[
    "/api/v1/jobs",
    "/api/v1/jobs/counts",
    "/api/v1/logs",
    "/api/v1/jobs/{id}/log",
    "/api/v1/system/log",
    "/api/v1/tags/bug",
    "/api/v1/tags/%FF",
    "/api/v1/stats",
];

/// Sends `GET path?query` and checks the answer; returns its status.
fn check(path: &str, query: &str) -> Result<u16, TestCaseError> {
    let (rt, router, id) = fixture();
    let uri = format!("{}?{query}", path.replace("{id}", id));
    let (status, body) = rt.block_on(async {
        let req = Request::get(&uri).body(Body::empty()).unwrap();
        let resp = router.clone().oneshot(req).await.unwrap();
        let status = resp.status();
        let bytes = resp.into_body().collect().await.unwrap().to_bytes();
        (status, bytes)
    });
    prop_assert!(!status.is_server_error(), "{uri}: {status} {}", String::from_utf8_lossy(&body));
    let body: Value = serde_json::from_slice(&body)
        .map_err(|e| TestCaseError::fail(format!("{uri}: not JSON ({e}): {}", String::from_utf8_lossy(&body))))?;
    if status.is_success() {
        if let (Some(start), Some(next)) = (body["start"].as_u64(), body.get("next")) {
            if let Some(next) = next.as_u64() {
                prop_assert!(next > start && next <= MAX_START, "{uri}: next {next} after start {start}");
                prop_assert!(body["cursor"].is_string(), "{uri}: a next page without a cursor: {body}");
            } else {
                prop_assert!(next.is_null(), "{uri}: next {next}");
            }
            prop_assert!(start <= MAX_START, "{uri}: start {start}");
        }
    } else {
        prop_assert!(body["code"].is_string() && body["error"].is_string(), "{uri}: {body}");
    }
    Ok(status.as_u16())
}

proptest! {
    #![proptest_config(ProptestConfig { cases: 400, ..ProptestConfig::default() })]

    #[test]
    fn list_queries_never_fail_the_server_or_wrap(route in proptest::sample::select(ROUTES), q in query()) {
        check(route, &q)?;
    }
}

#[test]
fn the_edges_are_refused_or_served_without_wrapping() {
    for route in ROUTES {
        for (q, ok) in [
            (format!("start={MAX_START}"), true),
            (format!("start={}", MAX_START + 1), false),
            (format!("start={}", u64::MAX), false),
            ("start=-1".to_owned(), false),
            ("limit=0".to_owned(), false),
            ("limit=501".to_owned(), false),
        ] {
            let status = check(route, &q).unwrap();
            if route.contains("counts") || route.contains("stats") || route.contains("%FF") {
                continue;
            }
            assert_eq!(status == 200, ok, "{route}?{q}: {status}");
        }
    }
}
