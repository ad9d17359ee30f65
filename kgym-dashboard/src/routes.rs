//! The dashboard's routes: the page shell for every page path, the assets
//! under [`ASSET_PREFIX`], with caching and security headers.

use axum::Router;
use axum::extract::Path;
use axum::http::StatusCode;
use axum::http::header::{self, HeaderMap, HeaderValue};
use axum::response::{IntoResponse, Response};
use axum::routing::get;

use crate::assets::{self, Asset};

/// Where the pages other than the job list live (`/ui/job/{id}`,
/// `/ui/workers`, `/ui/overview`); the job list is `/`.
pub const PAGE_PREFIX: &str = "/ui/";

/// Where the assets are served (`/ui/assets/app.css`, ...).
pub const ASSET_PREFIX: &str = "/ui/assets/";

/// What the pages may load and talk to: only this origin, no inline
/// scripts or styles, no framing.
const CONTENT_SECURITY_POLICY: &str = "default-src 'none'; script-src 'self'; style-src 'self'; \
     img-src 'self' data: blob:; connect-src 'self'; base-uri 'none'; form-action 'self'; frame-ancestors 'none'";

/// The dashboard as a router to merge into the scheduler's HTTP server:
/// `GET /`, `GET /ui/{*page}` (the page shell; the page is chosen in the
/// browser) and `GET /ui/assets/{*file}`. It uses no other path, so it
/// does not collide with `/api/v1`, kGym's `/jobs` and `/system`.
pub fn router() -> Router {
    Router::new()
        .route("/", get(shell))
        .route("/ui", get(shell))
        .route("/ui/{*page}", get(shell))
        .route("/ui/assets/{*file}", get(asset))
}

/// The HTML every page starts from.
async fn shell(headers: HeaderMap) -> Response {
    match assets::find("index.html") {
        Some((a, etag)) => serve(a, etag, &headers),
        None => not_found("index.html"),
    }
}

async fn asset(Path(file): Path<String>, headers: HeaderMap) -> Response {
    match assets::find(&file) {
        // The shell is served at page paths only.
        Some((a, etag)) if a.path != "index.html" => serve(a, etag, &headers),
        _ => not_found(&file),
    }
}

/// The file, or `304 Not Modified` when the browser has it.
fn serve(a: &'static Asset, etag: &'static str, request: &HeaderMap) -> Response {
    let mut out = HeaderMap::new();
    out.insert(header::ETAG, HeaderValue::from_static(etag));
    // Revalidate every time (a 304 on loopback costs nothing): a new kgym
    // binary must never run against the old scripts.
    out.insert(header::CACHE_CONTROL, HeaderValue::from_static("no-cache"));
    out.insert(header::X_CONTENT_TYPE_OPTIONS, HeaderValue::from_static("nosniff"));
    out.insert(header::REFERRER_POLICY, HeaderValue::from_static("no-referrer"));
    if a.path == "index.html" {
        out.insert(header::CONTENT_SECURITY_POLICY, HeaderValue::from_static(CONTENT_SECURITY_POLICY));
        out.insert(header::X_FRAME_OPTIONS, HeaderValue::from_static("DENY"));
    }
    let fresh = request
        .get(header::IF_NONE_MATCH)
        .and_then(|v| v.to_str().ok())
        .is_some_and(|tags| tags.split(',').any(|t| t.trim() == etag || t.trim() == "*"));
    if fresh {
        return (StatusCode::NOT_MODIFIED, out).into_response();
    }
    out.insert(header::CONTENT_TYPE, HeaderValue::from_static(a.mime));
    (out, a.body).into_response()
}

fn not_found(file: &str) -> Response {
    let body = format!("{{\"code\":\"not-found\",\"error\":\"no dashboard asset {file:?}\"}}");
    (StatusCode::NOT_FOUND, [(header::CONTENT_TYPE, "application/json")], body).into_response()
}

#[cfg(test)]
mod tests {
    use super::*;
    use axum::body::Body;
    use axum::http::Request;
    use http_body_util::BodyExt;
    use tower::ServiceExt;

    async fn get(path: &str, etag: Option<&str>) -> (StatusCode, HeaderMap, String) {
        let mut req = Request::get(path);
        if let Some(t) = etag {
            req = req.header(header::IF_NONE_MATCH, t);
        }
        let resp = router().oneshot(req.body(Body::empty()).unwrap()).await.unwrap();
        let (parts, body) = resp.into_parts();
        let bytes = body.collect().await.unwrap().to_bytes();
        (parts.status, parts.headers, String::from_utf8_lossy(&bytes).into_owned())
    }

    #[tokio::test]
    async fn pages_get_the_shell_and_assets_their_types() {
        for page in ["/", "/ui", "/ui/job/0000002a", "/ui/workers", "/ui/overview", "/ui/no/such/page"] {
            let (status, headers, body) = get(page, None).await;
            assert_eq!(status, StatusCode::OK, "{page}");
            assert_eq!(headers[header::CONTENT_TYPE], "text/html; charset=utf-8", "{page}");
            assert!(body.contains("<script type=\"module\" src=\"/ui/assets/js/main.js\">"), "{page}: {body}");
            assert!(headers[header::CONTENT_SECURITY_POLICY].to_str().unwrap().contains("script-src 'self'"));
        }
        let (status, headers, body) = get("/ui/assets/js/main.js", None).await;
        assert_eq!(status, StatusCode::OK);
        assert_eq!(headers[header::CONTENT_TYPE], "text/javascript; charset=utf-8");
        assert!(body.contains("import "));
        let (_, headers, _) = get("/ui/assets/app.css", None).await;
        assert_eq!(headers[header::CONTENT_TYPE], "text/css; charset=utf-8");
    }

    #[tokio::test]
    async fn unknown_assets_are_404_and_the_shell_is_not_an_asset() {
        for path in ["/ui/assets/nope.js", "/ui/assets/index.html", "/ui/assets/../Cargo.toml"] {
            let (status, _, body) = get(path, None).await;
            assert_eq!(status, StatusCode::NOT_FOUND, "{path}");
            assert!(body.contains("not-found"), "{path}: {body}");
        }
    }

    #[tokio::test]
    async fn a_known_etag_gets_304() {
        let (_, headers, _) = get("/ui/assets/app.css", None).await;
        let etag = headers[header::ETAG].to_str().unwrap().to_owned();
        let (status, _, body) = get("/ui/assets/app.css", Some(&etag)).await;
        assert_eq!(status, StatusCode::NOT_MODIFIED);
        assert!(body.is_empty());
        let (status, _, _) = get("/ui/assets/app.css", Some("\"other\"")).await;
        assert_eq!(status, StatusCode::OK);
    }
}
