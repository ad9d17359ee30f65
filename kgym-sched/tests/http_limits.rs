//! What a slow, greedy or careless client meets: connections that send
//! their request head slowly (or nothing) are closed, a body that does not
//! arrive in time is answered 408 and its connection closed, event streams
//! are bounded per client, and every error the API answers is JSON.
//! Clients here speak raw HTTP over a `TcpStream` where a well-behaved
//! client library would not misbehave on purpose.

use std::sync::Arc;
use std::time::{Duration, Instant};

use axum::routing::get;
use futures::StreamExt;
use kgym_core::{JobSpec, JobStatus, StageKind};
use kgym_sched::http::{HttpScheduler, HttpServer, ServerHandle, ServerOptions};
use kgym_sched::sqlite::SqliteScheduler;
use kgym_sched::{Error, Scheduler, SchedulerExt, StageRegistry};
use reqwest::StatusCode;
use serde_json::{Value, json};
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::TcpStream;

const TOKEN: &str = "l1mits";

fn idle() -> StageKind {
    StageKind::new("idle").unwrap()
}

/// A handler with a bug.
async fn boom() -> &'static str {
    panic!("a handler bug")
}

/// A server with no workers (jobs of kind `idle` wait forever) and
/// `options` (plus the token).
async fn server(options: ServerOptions) -> (SqliteScheduler, ServerHandle) {
    let sched = SqliteScheduler::in_memory(StageRegistry::new().with_kind(idle())).await.unwrap();
    let boom = axum::Router::new().route("/boom", get(boom));
    let server = HttpServer::builder(Arc::new(sched.clone()))
        .options(options.token(Some(TOKEN.into())))
        .merge(boom)
        .serve("127.0.0.1:0".parse().unwrap())
        .await
        .unwrap();
    (sched, server)
}

/// Reads until the server closes the connection (or `limit` passes);
/// returns what came and when the connection closed.
async fn read_to_close(stream: &mut TcpStream, limit: Duration) -> (String, Option<Duration>) {
    let started = Instant::now();
    let mut got = Vec::new();
    let mut buf = [0u8; 4096];
    loop {
        let left = limit.saturating_sub(started.elapsed());
        match tokio::time::timeout(left, stream.read(&mut buf)).await {
            Ok(Ok(0)) | Ok(Err(_)) => return (String::from_utf8_lossy(&got).into_owned(), Some(started.elapsed())),
            Ok(Ok(n)) => got.extend_from_slice(&buf[..n]),
            Err(_) => return (String::from_utf8_lossy(&got).into_owned(), None),
        }
    }
}

/// The status and JSON body of a raw HTTP/1.1 answer.
fn parse_answer(text: &str) -> (u16, Value) {
    let status = text.split_whitespace().nth(1).and_then(|s| s.parse().ok()).unwrap_or(0);
    let body = text.split_once("\r\n\r\n").map(|(_, b)| b).unwrap_or("");
    (status, serde_json::from_str(body).unwrap_or(Value::String(body.to_owned())))
}

#[tokio::test]
async fn connections_that_send_their_head_slowly_or_nothing_are_closed() {
    let timeout = Duration::from_secs(1);
    let (sched, server) = server(ServerOptions::default().header_timeout(timeout)).await;
    let addr = server.local_addr();

    // Half a request head, then silence; and nothing at all. Both are
    // read until the server closes them, timed from their connect.
    let watch = |head: &'static [u8]| async move {
        let connected = Instant::now();
        let mut stream = TcpStream::connect(addr).await.unwrap();
        stream.write_all(head).await.unwrap();
        let (text, _) = read_to_close(&mut stream, Duration::from_secs(10)).await;
        (text, connected.elapsed())
    };
    let half = tokio::spawn(watch(b"GET /api/v1/health HTTP/1.1\r\nHost: kgym\r\n"));
    let silent = tokio::spawn(watch(b""));
    // A head trickling in a byte at a time, slower than the timeout allows.
    let mut trickle = TcpStream::connect(addr).await.unwrap();
    let trickler = tokio::spawn(async move {
        let started = Instant::now();
        for b in b"GET /api/v1/health HTTP/1.1\r\nHost: kgym\r\nX-Slow: yes\r\n\r\n" {
            if trickle.write_all(&[*b]).await.is_err() {
                return (true, started.elapsed());
            }
            tokio::time::sleep(Duration::from_millis(200)).await;
        }
        let (text, _) = read_to_close(&mut trickle, Duration::from_secs(1)).await;
        (text.is_empty(), started.elapsed())
    });
    for (name, task) in [("half a head", half), ("nothing", silent)] {
        let (text, closed) = task.await.unwrap();
        assert!(text.is_empty(), "{name}: {text}");
        assert!(
            closed >= timeout - Duration::from_millis(200) && closed < timeout * 4,
            "{name}: closed after {closed:?}"
        );
    }
    let (cut_off, after) = trickler.await.unwrap();
    assert!(cut_off, "a head trickling in for {after:?} was served");

    // A kept-alive connection that goes quiet after one request is closed
    // too.
    let mut kept = TcpStream::connect(addr).await.unwrap();
    kept.write_all(b"GET /api/v1/health HTTP/1.1\r\nHost: kgym\r\n\r\n").await.unwrap();
    let (text, closed) = read_to_close(&mut kept, Duration::from_secs(10)).await;
    assert!(text.starts_with("HTTP/1.1 200"), "{text}");
    assert!(closed.is_some_and(|c| c < timeout * 4), "an idle kept-alive connection stayed open");
    server.shutdown().await;
    sched.close();
}

#[tokio::test]
async fn a_body_that_does_not_arrive_in_time_is_answered_408_and_the_connection_closed() {
    let timeout = Duration::from_secs(1);
    let (sched, server) = server(ServerOptions::default().body_timeout(timeout)).await;
    let mut stream = TcpStream::connect(server.local_addr()).await.unwrap();
    let head = format!(
        "POST /api/v1/jobs HTTP/1.1\r\nHost: kgym\r\nAuthorization: Bearer {TOKEN}\r\n\
         Content-Type: application/json\r\nContent-Length: 1000\r\n\r\n{{\"stages\": ["
    );
    stream.write_all(head.as_bytes()).await.unwrap();
    let started = Instant::now();
    let (text, closed) = read_to_close(&mut stream, Duration::from_secs(10)).await;
    let (status, body) = parse_answer(&text);
    assert_eq!((status, body["code"].as_str()), (408, Some("request-timeout")), "{text}");
    assert!(body["error"].as_str().unwrap().contains("did not arrive within 1 s"), "{body}");
    assert!(closed.is_some(), "the connection stayed open after the 408");
    assert!(started.elapsed() < timeout * 4, "answered after {:?}", started.elapsed());
    assert_eq!(sched.list(&Default::default()).await.unwrap().total, 0, "half a job was stored");
    server.shutdown().await;
    sched.close();
}

#[tokio::test]
async fn event_streams_are_bounded_per_client_and_waiting_falls_back_to_polling() {
    const LIMIT: usize = 5;
    let (sched, server) = server(ServerOptions::default().streams_per_client(LIMIT)).await;
    let id = sched.submit(JobSpec::new().stage(idle(), &json!({}))).await.unwrap();
    let client = HttpScheduler::new(&server.url()).unwrap().with_token(TOKEN);
    // Idle streams: each has seen the job's first event and then waits.
    let mut open = Vec::new();
    for _ in 0..LIMIT {
        let mut events = client.watch(id).await.unwrap();
        assert_eq!(events.next().await.unwrap().unwrap().status(), Some(JobStatus::Pending));
        open.push(events);
    }
    match client.watch(id).await {
        Err(Error::TooManyStreams { limit }) => assert_eq!(limit, LIMIT as u64),
        Err(e) => panic!("unexpected error {e}"),
        Ok(_) => panic!("a stream past the bound was opened"),
    }
    let raw = reqwest::Client::new()
        .get(format!("{}/api/v1/jobs/{id}/events", server.url()))
        .bearer_auth(TOKEN)
        .send()
        .await
        .unwrap();
    assert_eq!(raw.status(), StatusCode::TOO_MANY_REQUESTS);
    let body: Value = raw.json().await.unwrap();
    assert_eq!((body["code"].as_str(), body["limit"].as_u64()), (Some("too-many-streams"), Some(LIMIT as u64)));
    assert!(body["error"].as_str().unwrap().contains("already holds 5"), "{body}");

    // `wait` still learns the end, by polling.
    let waiter = {
        let client = client.clone();
        tokio::spawn(async move { client.wait(id).await })
    };
    tokio::time::sleep(Duration::from_millis(300)).await;
    sched.abort(id).await.unwrap();
    let job = tokio::time::timeout(Duration::from_secs(10), waiter).await.expect("wait ends").unwrap().unwrap();
    assert_eq!(job.status, JobStatus::Aborted);

    // The open streams end with the job; their slots come back.
    for mut events in open.drain(..) {
        let rest: Vec<_> =
            tokio::time::timeout(Duration::from_secs(10), events.by_ref().collect::<Vec<_>>()).await.unwrap();
        assert!(rest.last().unwrap().as_ref().unwrap().is_terminal());
    }
    let other = sched.submit(JobSpec::new().stage(idle(), &json!({}))).await.unwrap();
    let started = Instant::now();
    let mut again = loop {
        match client.watch(other).await {
            Ok(events) => break events,
            Err(Error::TooManyStreams { .. }) if started.elapsed() < Duration::from_secs(10) => {
                tokio::time::sleep(Duration::from_millis(50)).await;
            }
            Err(e) => panic!("the slots did not come back: {e}"),
        }
    };
    assert!(again.next().await.is_some());
    // Stopping the server ends its streams at once.
    let stopping = Instant::now();
    server.shutdown().await;
    assert!(stopping.elapsed() < Duration::from_secs(3), "shutdown waited {:?} for a stream", stopping.elapsed());
    assert!(tokio::time::timeout(Duration::from_secs(5), again.next()).await.expect("the stream ended").is_none());
    sched.close();
}

#[tokio::test]
async fn every_error_the_api_answers_is_json() {
    let (sched, server) = server(ServerOptions::default().body_limit(1024).max_uri(2048)).await;
    let http = reqwest::Client::new();
    let url = server.url();
    let call = |method: reqwest::Method, path: String| {
        let http = http.clone();
        let url = url.clone();
        async move {
            let resp = http.request(method, format!("{url}{path}")).bearer_auth(TOKEN).send().await.unwrap();
            let status = resp.status();
            let kind = resp.headers().get("content-type").map(|v| v.to_str().unwrap().to_owned());
            let text = resp.text().await.unwrap();
            let body: Value = serde_json::from_str(&text).unwrap_or_else(|_| panic!("{path}: not JSON: {text:?}"));
            assert_eq!(kind.as_deref(), Some("application/json"), "{path}");
            (status, body)
        }
    };
    let cases = [
        (reqwest::Method::GET, "/api/v1/jobs/%FF%FE".to_owned(), 400, "bad-request"),
        (reqwest::Method::GET, "/api/v1/jobs/%FF/log".to_owned(), 400, "bad-request"),
        (reqwest::Method::GET, "/api/v1/tags/%C3%28".to_owned(), 400, "bad-request"),
        (reqwest::Method::GET, "/api/v1/jobs/zzz".to_owned(), 400, "bad-request"),
        (reqwest::Method::GET, format!("/api/v1/jobs?tag={}", "x".repeat(3000)), 414, "uri-too-long"),
        (reqwest::Method::GET, "/api/v1/jobs?start=99999999999999999999999".to_owned(), 400, "bad-request"),
        (reqwest::Method::GET, "/api/v1/jobs?start=9223372036854775808".to_owned(), 400, "bad-request"),
        (reqwest::Method::GET, "/api/v1/jobs?after=nope".to_owned(), 400, "bad-request"),
        (reqwest::Method::GET, "/nowhere".to_owned(), 404, "no-route"),
        (reqwest::Method::DELETE, "/api/v1/jobs".to_owned(), 405, "method-not-allowed"),
        (reqwest::Method::GET, "/boom".to_owned(), 500, "internal"),
    ];
    for (method, path, status, code) in cases {
        let (s, b) = call(method, path.clone()).await;
        assert_eq!((s.as_u16(), b["code"].as_str()), (status, Some(code)), "{path}: {b}");
        assert!(b["error"].as_str().is_some_and(|e| !e.is_empty()), "{path}: {b}");
    }
    // Without the token.
    let resp = http.get(format!("{url}/api/v1/jobs")).send().await.unwrap();
    assert_eq!(resp.status(), StatusCode::UNAUTHORIZED);
    assert_eq!(resp.headers()["www-authenticate"], "Bearer realm=\"kgym\"");
    assert_eq!(resp.json::<Value>().await.unwrap()["code"], "unauthorized");
    // A body over the limit.
    let big = json!({"stages": [{"kind": "idle", "arg": {"pad": "x".repeat(4096)}}]});
    let resp = http.post(format!("{url}/api/v1/jobs")).bearer_auth(TOKEN).json(&big).send().await.unwrap();
    assert_eq!(resp.status(), StatusCode::PAYLOAD_TOO_LARGE);
    assert_eq!(resp.json::<Value>().await.unwrap()["code"], "payload-too-large");
    // The server survived the panic.
    let (s, _) = call(reqwest::Method::GET, "/api/v1/health".to_owned()).await;
    assert_eq!(s, StatusCode::OK);
    server.shutdown().await;
    sched.close();
}
