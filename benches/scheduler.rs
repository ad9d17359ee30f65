//! Scheduler throughput: stage transitions per second with no-op workers.
//!
//! `cargo bench --bench scheduler` prints a table:
//! - raw baseline: one SQLite transaction per transition (WAL,
//!   synchronous=NORMAL), the floor of "one transaction per transition";
//! - embedded: jobs submitted in-process, no-op workers in-process;
//! - HTTP submit: jobs submitted through `HttpScheduler`, workers
//!   in-process;
//! - remote workers: jobs submitted in-process, no-op workers talking the
//!   worker protocol over HTTP;
//! - with `--features amqp`: the same with the announcements on a real
//!   RabbitMQ the bench starts (`rabbitmq-server` installed), then with
//!   the workers on RabbitMQ too (they consume the queues and send claims
//!   and reports as requests through the broker).
//!
//! A "stage" is claimed (one transaction) and reported (one transaction);
//! submitting is one more. Stages/s counts finished stages.

use std::sync::Arc;
use std::time::{Duration, Instant};

use kgym::Gym;
use kgym::core::{JobSpec, StageContext, StageFailure, StageKind, StageSchema, Worker};
use kgym::sched::http::{HttpScheduler, HttpWorkerBackend, ServerOptions};
use kgym::sched::runtime::WorkerRuntime;
use kgym::sched::{Scheduler, SchedulerExt};

#[derive(Debug)]
struct Noop;

impl StageSchema for Noop {
    fn kind(&self) -> StageKind {
        StageKind::new("noop").expect("valid kind")
    }
}

#[async_trait::async_trait]
impl Worker for Noop {
    async fn run(&self, _ctx: StageContext) -> Result<serde_json::Value, StageFailure> {
        Ok(serde_json::Value::Null)
    }
}

/// A gym in `dir` with no stock workers and `noop` stages accepted.
fn gym(dir: &std::path::Path) -> kgym::GymBuilder {
    Gym::builder(dir).stock_workers(false).accept(Arc::new(Noop))
}

fn serve() -> (std::net::SocketAddr, ServerOptions) {
    ("127.0.0.1:0".parse().expect("addr"), ServerOptions::default().token(Some(TOKEN.into())))
}

const JOBS: usize = 1000;
const STAGES: usize = 3;
const SLOTS: u32 = 8;
const TOKEN: &str = "bench";

fn spec() -> JobSpec {
    let mut s = JobSpec::new();
    for _ in 0..STAGES {
        s = s.stage(StageKind::new("noop").expect("valid kind"), &serde_json::json!({}));
    }
    s
}

struct Row {
    name: &'static str,
    transitions: usize,
    stages: usize,
    secs: f64,
}

/// One UPDATE per transaction on a job table: the cost floor of a
/// transition.
fn raw_sqlite(n: usize) -> Row {
    let dir = tempfile::tempdir().expect("temp dir");
    let conn = rusqlite::Connection::open(dir.path().join("raw.sqlite3")).expect("open");
    conn.pragma_update(None, "journal_mode", "WAL").expect("wal");
    conn.pragma_update(None, "synchronous", "NORMAL").expect("sync");
    conn.execute_batch("CREATE TABLE jobs (id INTEGER PRIMARY KEY, status TEXT, cursor INTEGER)").expect("table");
    for i in 0..JOBS {
        conn.execute("INSERT INTO jobs VALUES (?1, 'pending', 0)", [i as i64]).expect("insert");
    }
    let start = Instant::now();
    for i in 0..n {
        let tx = conn.unchecked_transaction().expect("tx");
        tx.execute("UPDATE jobs SET status = 'in_progress', cursor = cursor + 1 WHERE id = ?1", [(i % JOBS) as i64])
            .expect("update");
        tx.commit().expect("commit");
    }
    Row { name: "raw SQLite transaction (baseline)", transitions: n, stages: 0, secs: start.elapsed().as_secs_f64() }
}

async fn run_jobs(name: &'static str, sched: Arc<dyn Scheduler>, concurrency: usize) -> Row {
    let start = Instant::now();
    let mut ids = Vec::with_capacity(JOBS);
    for chunk in (0..JOBS).collect::<Vec<_>>().chunks(concurrency) {
        let batch = futures::future::join_all(chunk.iter().map(|_| sched.submit(spec()))).await;
        ids.extend(batch.into_iter().map(|r| r.expect("submit")));
    }
    let jobs = futures::future::join_all(ids.iter().map(|id| {
        let sched = Arc::clone(&sched);
        async move { sched.wait_timeout(*id, Duration::from_secs(600)).await }
    }))
    .await;
    let secs = start.elapsed().as_secs_f64();
    for j in jobs {
        let j = j.expect("wait").expect("job ended in time");
        assert!(j.succeeded(), "{j:?}");
    }
    let stages = JOBS * STAGES;
    Row { name, transitions: JOBS + 2 * stages, stages, secs }
}

async fn embedded() -> Row {
    let dir = tempfile::tempdir().expect("temp dir");
    let gym = gym(dir.path()).worker(Arc::new(Noop), SLOTS).start().await.expect("gym");
    let row = run_jobs("embedded (in-process workers)", gym.scheduler(), JOBS).await;
    gym.shutdown().await;
    row
}

async fn http_submit() -> Row {
    let dir = tempfile::tempdir().expect("temp dir");
    let (addr, options) = serve();
    let gym = gym(dir.path()).worker(Arc::new(Noop), SLOTS).serve_http(addr, options).start().await.expect("gym");
    let client = HttpScheduler::new(&gym.http_url().expect("url")).expect("client").with_token(TOKEN);
    let row = run_jobs("HTTP submit + watch, in-process workers", Arc::new(client), 64).await;
    gym.shutdown().await;
    row
}

/// No-op workers over HTTP; announcements on `queue` (default: in memory).
async fn remote_workers(name: &'static str, queue: Option<Arc<dyn kgym::sched::queue::Queue>>) -> Row {
    let dir = tempfile::tempdir().expect("temp dir");
    let (addr, options) = serve();
    let mut builder = gym(dir.path()).serve_http(addr, options);
    if let Some(q) = queue {
        builder = builder.queue(q);
    }
    let gym = builder.start().await.expect("gym");
    let backend = Arc::new(HttpWorkerBackend::new(&gym.http_url().expect("url")).expect("backend").with_token(TOKEN));
    let rt = WorkerRuntime::builder(backend).worker(Arc::new(Noop), SLOTS).start().await.expect("runtime");
    let row = run_jobs(name, gym.scheduler(), JOBS).await;
    rt.shutdown().await;
    gym.shutdown().await;
    row
}

/// Announcements on a real RabbitMQ (a broker of the bench's own, started
/// without systemd), workers over HTTP: the distributed set-up's path.
#[cfg(feature = "amqp")]
async fn remote_workers_amqp(uri: &str) -> Row {
    let queue = kgym::sched::amqp::AmqpQueue::connect(uri, "bench").await.expect("broker");
    remote_workers("remote workers over HTTP, RabbitMQ queues", Some(Arc::new(queue))).await
}

/// Workers on RabbitMQ too: announcements consumed by the workers
/// themselves, claims and reports as requests on the broker answered by
/// the scheduler's `RpcServer` (nothing over HTTP).
#[cfg(feature = "amqp")]
async fn amqp_workers(uri: &str) -> Row {
    use kgym::sched::amqp::{AmqpQueue, AmqpWorkerBackend, RpcServer};
    let dir = tempfile::tempdir().expect("temp dir");
    let queue = AmqpQueue::connect(uri, "bench-workers").await.expect("broker");
    let gym = gym(dir.path()).queue(Arc::new(queue)).start().await.expect("gym");
    let server = RpcServer::start(uri, "bench-workers", gym.sqlite().clone()).await.expect("rpc server");
    let backend = AmqpWorkerBackend::connect(uri, "bench-workers").await.expect("worker backend");
    let rt =
        WorkerRuntime::builder(Arc::new(backend.clone())).worker(Arc::new(Noop), SLOTS).start().await.expect("runtime");
    let row = run_jobs("workers on RabbitMQ (queues + RPC)", gym.scheduler(), JOBS).await;
    rt.shutdown().await;
    backend.close().await;
    server.stop().await;
    gym.shutdown().await;
    row
}

fn main() {
    let rt = tokio::runtime::Builder::new_multi_thread().enable_all().build().expect("runtime");
    let mut rows = vec![raw_sqlite(JOBS * (1 + 2 * STAGES))];
    rows.push(rt.block_on(embedded()));
    rows.push(rt.block_on(http_submit()));
    rows.push(rt.block_on(remote_workers("remote workers over HTTP", None)));
    #[cfg(feature = "amqp")]
    if let Some(broker) = kgym_testkit::rabbitmq::Broker::start() {
        rows.push(rt.block_on(remote_workers_amqp(&broker.uri())));
        rows.push(rt.block_on(amqp_workers(&broker.uri())));
    }
    let base = rows[0].transitions as f64 / rows[0].secs;
    println!();
    println!("scheduler throughput: {JOBS} jobs x {STAGES} no-op stages, {SLOTS} worker slots");
    println!("{:<42} {:>12} {:>12} {:>14} {:>10}", "setup", "seconds", "stages/s", "transitions/s", "vs raw");
    for r in &rows {
        let tps = r.transitions as f64 / r.secs;
        let sps = if r.stages == 0 { "-".to_owned() } else { format!("{:.0}", r.stages as f64 / r.secs) };
        println!("{:<42} {:>12.3} {:>12} {:>14.0} {:>9.2}x", r.name, r.secs, sps, tps, tps / base);
    }
}
