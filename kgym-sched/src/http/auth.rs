//! Who may call the API: with a token set, every route but
//! `/api/v1/health` needs it — reads too, since jobs carry configs, git
//! URLs that may hold credentials, and reproducers — unless the server
//! opens reads to a trusted network (`public_reads`).
//!
//! The token comes as `Authorization: Bearer <token>`, or as the password
//! of HTTP Basic auth (`Authorization: Basic base64(user:token)`, any
//! user), which is what a client sends for a base URL like
//! `http://kgym:TOKEN@host:8000` — kGym's Python client through `requests`,
//! unchanged. Scheme names are case-insensitive (RFC 9110).

use std::sync::Arc;

use axum::extract::{Request, State};
use axum::http::{HeaderMap, HeaderValue, Method, StatusCode, header};
use axum::middleware::Next;
use axum::response::Response;
use base64::Engine;
use serde_json::Value;

use super::reply::error_response;

/// The one route open without the token.
pub(crate) const HEALTH: &str = "/api/v1/health";

/// The server's auth settings.
#[derive(Debug, Clone)]
pub(crate) struct Auth {
    /// The token, when one is set.
    pub token: Option<Arc<str>>,
    /// Whether GET/HEAD need no token.
    pub public_reads: bool,
}

/// What a request's `Authorization` header holds.
#[derive(Debug, PartialEq, Eq)]
enum Credentials {
    /// No header.
    None,
    /// A token (Bearer, or Basic's password).
    Token(String),
    /// A header that is not a Bearer or Basic credential we can read.
    Unreadable(&'static str),
}

fn credentials(headers: &HeaderMap) -> Credentials {
    let Some(value) = headers.get(header::AUTHORIZATION) else { return Credentials::None };
    let Ok(value) = value.to_str() else { return Credentials::Unreadable("the Authorization header is not text") };
    let (scheme, rest) = value.trim().split_once(' ').unwrap_or((value.trim(), ""));
    let rest = rest.trim();
    if scheme.eq_ignore_ascii_case("bearer") {
        return Credentials::Token(rest.to_owned());
    }
    if scheme.eq_ignore_ascii_case("basic") {
        let Ok(decoded) = base64::engine::general_purpose::STANDARD.decode(rest) else {
            return Credentials::Unreadable("the Basic credentials are not base64");
        };
        let Ok(text) = String::from_utf8(decoded) else {
            return Credentials::Unreadable("the Basic credentials are not UTF-8");
        };
        return match text.split_once(':') {
            Some((_user, password)) => Credentials::Token(password.to_owned()),
            None => Credentials::Unreadable("the Basic credentials have no password (user:token)"),
        };
    }
    Credentials::Unreadable("the Authorization scheme must be Bearer or Basic")
}

/// Compares without stopping at the first difference (the time taken
/// tells nothing about how much of a guess was right).
fn constant_time_eq(a: &[u8], b: &[u8]) -> bool {
    a.len() == b.len() && a.iter().zip(b).fold(0u8, |acc, (x, y)| acc | (x ^ y)) == 0
}

fn unauthorized(message: &str) -> Response {
    let mut resp = error_response(StatusCode::UNAUTHORIZED, "unauthorized", message.to_owned(), Value::Null);
    // Bearer only: a Basic challenge would make browsers pop up a login
    // dialog over the dashboard's own token prompt.
    resp.headers_mut().insert(header::WWW_AUTHENTICATE, HeaderValue::from_static("Bearer realm=\"kgym\""));
    resp
}

/// Refuses requests without the token (when one is set).
pub(crate) async fn require_token(State(auth): State<Auth>, req: Request, next: Next) -> Response {
    let Some(token) = &auth.token else { return next.run(req).await };
    let read = [Method::GET, Method::HEAD].contains(req.method());
    if req.uri().path() == HEALTH || (read && auth.public_reads) {
        return next.run(req).await;
    }
    match credentials(req.headers()) {
        Credentials::Token(given) if constant_time_eq(given.as_bytes(), token.as_bytes()) => next.run(req).await,
        Credentials::Token(_) => unauthorized("the token is wrong"),
        Credentials::Unreadable(why) => unauthorized(why),
        Credentials::None => unauthorized(
            "this server needs its token: send Authorization: Bearer <token>, or use it as the password of \
             HTTP Basic auth (http://user:<token>@host/)",
        ),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn with(value: &str) -> HeaderMap {
        let mut h = HeaderMap::new();
        h.insert(header::AUTHORIZATION, HeaderValue::from_str(value).unwrap());
        h
    }

    fn basic(user_pass: &str) -> String {
        format!("Basic {}", base64::engine::general_purpose::STANDARD.encode(user_pass))
    }

    #[test]
    fn bearer_and_basic_carry_the_token_whatever_the_scheme_case() {
        assert_eq!(credentials(&HeaderMap::new()), Credentials::None);
        for v in ["Bearer t0k", "bearer t0k", "BEARER  t0k "] {
            assert_eq!(credentials(&with(v)), Credentials::Token("t0k".into()), "{v}");
        }
        assert_eq!(credentials(&with(&basic("kgym:t0k"))), Credentials::Token("t0k".into()));
        assert_eq!(credentials(&with(&basic("kgym:t0k:with:colons"))), Credentials::Token("t0k:with:colons".into()));
        let mixed_case = basic("anyone:t0k").replacen("Basic", "bAsIc", 1);
        assert_eq!(credentials(&with(&mixed_case)), Credentials::Token("t0k".into()));
        assert!(matches!(credentials(&with("Basic !!!")), Credentials::Unreadable(_)));
        assert!(matches!(credentials(&with(&basic("no-colon"))), Credentials::Unreadable(_)));
        assert!(matches!(credentials(&with("Digest x")), Credentials::Unreadable(_)));
        assert!(
            constant_time_eq(b"abc", b"abc") && !constant_time_eq(b"abc", b"abd") && !constant_time_eq(b"a", b"ab")
        );
    }
}
