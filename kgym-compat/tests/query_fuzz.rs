//! kGym's list routes, fuzzed like kgym-sched's (`tests/query_fuzz.rs`
//! there): random parameters through the real router, merged into kgym's
//! server over a scheduler holding jobs, tags and logs. No answer is a
//! server error, every answer is JSON, and kGym's `next` is -1 or a start
//! past zero within what a query may ask for.

use std::sync::{Arc, OnceLock};

use axum::Router;
use axum::body::Body;
use axum::http::Request;
use http_body_util::BodyExt;
use kgym_compat::{CompatOptions, router};
use kgym_core::{JobSpec, StageKind};
use kgym_sched::http::HttpServer;
use kgym_sched::sqlite::SqliteScheduler;
use kgym_sched::types::MAX_START;
use kgym_sched::{Scheduler, StageRegistry};
use proptest::prelude::*;
use serde_json::{Value, json};
use tower::ServiceExt;

fn fixture() -> &'static (tokio::runtime::Runtime, Router, String) {
    static FIXTURE: OnceLock<(tokio::runtime::Runtime, Router, String)> = OnceLock::new();
    FIXTURE.get_or_init(|| {
        let rt = tokio::runtime::Builder::new_multi_thread().worker_threads(1).enable_all().build().unwrap();
        let (router, id) = rt.block_on(async {
            let kind = StageKind::new("idle").unwrap();
            let sched = SqliteScheduler::in_memory(StageRegistry::new().with_kind(kind.clone())).await.unwrap();
            let mut first = None;
            for i in 0..40 {
                let spec = JobSpec::new().stage(kind.clone(), &json!({"i": i})).tag("bug", format!("b{}", i % 3));
                first.get_or_insert(sched.submit(spec).await.unwrap());
            }
            let api: Arc<dyn Scheduler> = Arc::new(sched);
            let router = HttpServer::builder(Arc::clone(&api)).merge(router(api, CompatOptions::default())).router();
            (router, first.unwrap().to_string())
        });
        (rt, router, id)
    })
}

const NAMES: &[&str] = &["start", "limit", "mode", "start_time", "end_time", "with_values", "restart_from", "junk"];

fn value() -> impl Strategy<Value = String> {
    prop_oneof![
        Just("0".to_owned()),
        Just("-1".to_owned()),
        Just("50".to_owned()),
        Just("51".to_owned()),
        Just(MAX_START.to_string()),
        Just((MAX_START + 1).to_string()),
        Just(u64::MAX.to_string()),
        Just("18446744073709551616".to_owned()),
        Just("by_created_time".to_owned()),
        Just("by_modified_time".to_owned()),
        Just("0000-00-00T00:00:00.000000".to_owned()),
        Just("9999-99-99T99:99:99.999999".to_owned()),
        Just("2024-05-01T12:00:00.000000".to_owned()),
        Just("2024-05-01T12:00:00Z".to_owned()),
        Just("%FF".to_owned()),
        any::<u64>().prop_map(|n| n.to_string()),
        any::<i64>().prop_map(|n| n.to_string()),
        any::<String>().prop_map(|s| {
            s.bytes()
                .map(|b| if b.is_ascii_alphanumeric() { (b as char).to_string() } else { format!("%{b:02X}") })
                .collect()
        }),
    ]
}

fn query() -> impl Strategy<Value = String> {
    proptest::collection::vec((proptest::sample::select(NAMES), value()), 0..5)
        .prop_map(|pairs| pairs.into_iter().map(|(n, v)| format!("{n}={v}")).collect::<Vec<_>>().join("&"))
}

const ROUTES: &[&str] = &[
    "/jobs/",
    "/jobs",
    "/jobs/{id}/log",
    "/jobs/kv/bug",
    "/jobs/kv/%FF",
    "/jobs/{id}/keys",
    "/system/workers/types/kbuilder/log",
    "/system/workers/instances/h/log",
    "/system/displays/jobs/log",
    "/system/displays/workers/log",
];

fn check(path: &str, query: &str) -> Result<u16, TestCaseError> {
    let (rt, router, id) = fixture();
    let uri = format!("{}?{query}", path.replace("{id}", id));
    let (status, body) = rt.block_on(async {
        let resp = router.clone().oneshot(Request::get(&uri).body(Body::empty()).unwrap()).await.unwrap();
        let status = resp.status();
        (status, resp.into_body().collect().await.unwrap().to_bytes())
    });
    prop_assert!(!status.is_server_error(), "{uri}: {status} {}", String::from_utf8_lossy(&body));
    let body: Value = serde_json::from_slice(&body)
        .map_err(|e| TestCaseError::fail(format!("{uri}: not JSON ({e}): {}", String::from_utf8_lossy(&body))))?;
    if status.is_success() {
        if let Some(next) = body.get("next") {
            let next = next.as_i64().unwrap_or(-2);
            prop_assert!(next == -1 || (next > 0 && next as u64 <= MAX_START), "{uri}: next {next}");
            prop_assert!(body["total"].as_u64() >= body["size"].as_u64(), "{uri}: {body}");
        }
    } else {
        prop_assert!(body["detail"].is_string(), "{uri}: {body}");
    }
    Ok(status.as_u16())
}

proptest! {
    #![proptest_config(ProptestConfig { cases: 300, ..ProptestConfig::default() })]

    #[test]
    fn kgym_list_queries_never_fail_the_server_or_wrap(route in proptest::sample::select(ROUTES), q in query()) {
        check(route, &q)?;
    }
}

#[test]
fn kgym_edges_are_refused_or_served_without_wrapping() {
    for route in ["/jobs/", "/jobs/{id}/log", "/system/displays/jobs/log", "/jobs/kv/bug"] {
        assert_eq!(check(route, &format!("start={MAX_START}&limit=5")).unwrap(), 200, "{route}");
        assert_eq!(check(route, &format!("start={}&limit=5", u64::MAX)).unwrap(), 400, "{route}");
        assert_eq!(check(route, "start=-1").unwrap(), 400, "{route}");
    }
}
