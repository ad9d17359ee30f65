//! The dashboard as the facade's `Gym` serves it: beside the typed API and
//! kGym's routes (no path taken from them), off when the builder says so.

use std::net::SocketAddr;

use kgym::Gym;
use kgym::sched::http::ServerOptions;

fn loopback() -> SocketAddr {
    "127.0.0.1:0".parse().unwrap()
}

async fn get(url: &str) -> (u16, String, String) {
    get_as(url, None).await
}

/// GET, with `Authorization: Bearer <token>` when a token is given.
async fn get_as(url: &str, token: Option<&str>) -> (u16, String, String) {
    let mut req = reqwest::Client::new().get(url);
    if let Some(token) = token {
        req = req.bearer_auth(token);
    }
    let resp = req.send().await.unwrap_or_else(|e| panic!("GET {url}: {e}"));
    let status = resp.status().as_u16();
    let kind = resp.headers().get("content-type").map(|v| v.to_str().unwrap().to_owned()).unwrap_or_default();
    (status, kind, resp.text().await.unwrap())
}

#[tokio::test]
async fn the_gym_serves_the_dashboard_beside_the_apis() {
    let dir = tempfile::tempdir().unwrap();
    let gym = Gym::builder(dir.path())
        .stock_workers(false)
        .serve_http(loopback(), ServerOptions::default().token(Some("t".into())))
        .start()
        .await
        .unwrap();
    let url = gym.http_url().unwrap();
    for page in ["/", "/ui/job/00000001", "/ui/workers", "/ui/overview"] {
        let (status, kind, body) = get(&format!("{url}{page}")).await;
        assert_eq!((status, kind.as_str()), (200, "text/html; charset=utf-8"), "{page}");
        assert!(body.contains("/ui/assets/js/main.js"), "{page}");
    }
    // The page shell and its scripts carry no data: served without the
    // token (the page asks for it and sends it with every API call).
    // The page shell is served at page paths only.
    for asset in kgym::dashboard::asset_paths().filter(|a| *a != "index.html") {
        let (status, _, _) = get(&format!("{url}{}{asset}", kgym::dashboard::ASSET_PREFIX)).await;
        assert_eq!(status, 200, "{asset}");
    }
    // The APIs keep their paths (the typed API, kGym's job list) and the
    // token still guards their data.
    let (status, kind, body) = get(&format!("{url}/api/v1/health")).await;
    assert_eq!((status, kind.as_str()), (200, "application/json"), "{body}");
    let jobs = format!("{url}/jobs/?mode=by_created_time");
    let (status, kind, body) = get(&jobs).await;
    assert_eq!((status, kind.as_str()), (401, "application/json"), "{body}");
    let (status, kind, body) = get_as(&jobs, Some("t")).await;
    assert_eq!((status, kind.as_str()), (200, "application/json"), "{body}");
    gym.shutdown().await;
}

#[tokio::test]
async fn the_dashboard_can_be_left_out() {
    let dir = tempfile::tempdir().unwrap();
    let gym = Gym::builder(dir.path())
        .stock_workers(false)
        .dashboard(false)
        .serve_http(loopback(), ServerOptions::default())
        .start()
        .await
        .unwrap();
    let url = gym.http_url().unwrap();
    let (status, _, body) = get(&format!("{url}/")).await;
    assert_eq!(status, 404, "{body}");
    assert!(body.contains("no-route"), "{body}");
    let (status, _, _) = get(&format!("{url}/api/v1/health")).await;
    assert_eq!(status, 200);
    gym.shutdown().await;
}
