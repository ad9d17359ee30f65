//! The conformance suites (`kgym_sched::conformance`) against every
//! implementation this crate has: the in-process queue; the SQLite
//! scheduler as its own worker backend; and both over HTTP (the
//! `HttpScheduler` client and the `HttpWorkerBackend`, against a real
//! server on loopback).

use std::sync::Arc;
use std::time::Duration;

use kgym_sched::conformance::{self, Harness};
use kgym_sched::http::{HttpScheduler, HttpServer, HttpWorkerBackend, ServerOptions};
use kgym_sched::queue::InProcessQueue;
use kgym_sched::sqlite::{SchedulerOptions, SqliteScheduler};

const MAX_ATTEMPTS: u32 = 2;
const TOKEN: &str = "conformance";

async fn sqlite() -> SqliteScheduler {
    let options = SchedulerOptions::default().lease_ttl(Duration::from_millis(400)).max_attempts(MAX_ATTEMPTS);
    SqliteScheduler::builder().options(options).build().await.unwrap()
}

#[tokio::test]
async fn the_in_process_queue() {
    conformance::queue::run_all(&InProcessQueue::new()).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_sqlite_scheduler_in_process() {
    let sched = sqlite().await;
    let h = Harness::embedded(&sched);
    assert_eq!(h.max_attempts, MAX_ATTEMPTS);
    conformance::scheduler::run_all(&h).await;
    conformance::workers::run_all(&h).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_http_client_and_worker_backend() {
    let sched = sqlite().await;
    let server = HttpServer::builder(Arc::new(sched.clone()))
        .worker_backend(Arc::new(sched.clone()))
        .options(ServerOptions::default().token(Some(TOKEN.into())))
        .serve("127.0.0.1:0".parse().unwrap())
        .await
        .unwrap();
    let h = Harness {
        scheduler: Arc::new(HttpScheduler::new(&server.url()).unwrap().with_token(TOKEN)),
        workers: Arc::new(HttpWorkerBackend::new(&server.url()).unwrap().with_token(TOKEN)),
        artifacts: sched.artifacts().clone(),
        max_attempts: MAX_ATTEMPTS,
    };
    conformance::scheduler::run_all(&h).await;
    conformance::workers::run_all(&h).await;
    server.shutdown().await;
}
