//! The AMQP transport against a real RabbitMQ (Debian's `rabbitmq-server`,
//! started by each test on its own ports, without systemd): the queue
//! conformance suite; the scheduler and worker-backend suites with the
//! SQLite scheduler announcing on RabbitMQ; a broker restart in the middle
//! of a run (queued stages survive, announcements made while it is down
//! are published when it is back, consumers resume); malformed messages go
//! to the dead-letter queue instead of looping.
//!
//! The tests run one at a time (a lock): several Erlang VMs booting at once
//! on 2 cores beside a parallel build made the suites' deadlines fail.

#![cfg(feature = "amqp")]

use std::sync::Arc;
use std::time::Duration;

use kgym_core::{JobId, JobSpec, JobStatus, StageKind};
use kgym_sched::amqp::{AmqpQueue, AmqpWorkerBackend, RpcServer};
use kgym_sched::conformance::{self, Harness};
use kgym_sched::queue::{Announcement, Queue, Route};
use kgym_sched::sqlite::{SchedulerOptions, SqliteScheduler};
use kgym_sched::worker_api::{ClaimRequest, StageOutcome, WorkerBackend, WorkerInfo};
use kgym_sched::{Scheduler, SchedulerExt};
use kgym_testkit::rabbitmq::Broker;

static ONE_AT_A_TIME: tokio::sync::Mutex<()> = tokio::sync::Mutex::const_new(());

const MAX_ATTEMPTS: u32 = 2;

async fn scheduler_on(queue: AmqpQueue) -> SqliteScheduler {
    let options = SchedulerOptions::default().lease_ttl(Duration::from_millis(400)).max_attempts(MAX_ATTEMPTS);
    SqliteScheduler::builder().options(options).queue(Arc::new(queue)).build().await.unwrap()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_queue_suite_passes_on_rabbitmq() {
    let _one = ONE_AT_A_TIME.lock().await;
    let Some(broker) = Broker::start() else { return };
    let queue = AmqpQueue::connect(&broker.uri(), "conf").await.unwrap();
    conformance::queue::run_all(&queue).await;
    queue.close().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_scheduler_and_worker_suites_pass_with_announcements_on_rabbitmq() {
    let _one = ONE_AT_A_TIME.lock().await;
    let Some(broker) = Broker::start() else { return };
    let sched = scheduler_on(AmqpQueue::connect(&broker.uri(), "kgym").await.unwrap()).await;
    let h = Harness::embedded(&sched);
    assert_eq!(h.max_attempts, MAX_ATTEMPTS);
    conformance::scheduler::run_all(&h).await;
    conformance::workers::run_all(&h).await;
}

/// Workers on RabbitMQ too: the worker-backend suite (then the
/// scheduler suite, whose worker listings it drives) through
/// `AmqpWorkerBackend`, which consumes the announcement queues itself and
/// asks the scheduler's `RpcServer` for claims, heartbeats and reports.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_worker_and_scheduler_suites_pass_with_workers_on_rabbitmq() {
    let _one = ONE_AT_A_TIME.lock().await;
    let Some(broker) = Broker::start() else { return };
    let sched = scheduler_on(AmqpQueue::connect(&broker.uri(), "kgym").await.unwrap()).await;
    let server = RpcServer::start(&broker.uri(), "kgym", sched.clone()).await.unwrap();
    let backend = AmqpWorkerBackend::connect(&broker.uri(), "kgym").await.unwrap();
    let h = Harness { workers: Arc::new(backend.clone()), ..Harness::embedded(&sched) };
    conformance::workers::run_all(&h).await;
    conformance::scheduler::run_all(&h).await;
    backend.close().await;
    server.stop().await;
}

/// A worker on RabbitMQ holds the announcement of its running stage
/// unacked: the broker gives it back the moment the worker's connection
/// dies, and it leaves the queue only once the scheduler recorded the
/// stage's result.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_running_stage_keeps_its_announcement_until_the_result_is_recorded() {
    let _one = ONE_AT_A_TIME.lock().await;
    let Some(broker) = Broker::start() else { return };
    // A lease longer than the broker's tools take to answer (a re-announced
    // expired stage would be a second message).
    let options = SchedulerOptions::default().lease_ttl(Duration::from_secs(5));
    let queue = Arc::new(AmqpQueue::connect(&broker.uri(), "kgym").await.unwrap());
    let sched = SqliteScheduler::builder().options(options).queue(queue).build().await.unwrap();
    let server = RpcServer::start(&broker.uri(), "kgym", sched.clone()).await.unwrap();
    let kind = StageKind::new("held").unwrap();
    let queue = "kgym.stage.held";
    let req = |host: &str| ClaimRequest {
        kind: kind.clone(),
        worker: format!("{host}/held-0"),
        host: host.into(),
        wait: Duration::from_secs(10),
    };
    // Ready (not delivered) messages, as the broker counts them.
    let conn = lapin::Connection::connect(&broker.uri(), Default::default()).await.unwrap();
    let ch = conn.create_channel().await.unwrap();
    let ready = || async {
        let passive = lapin::options::QueueDeclareOptions { passive: true, ..Default::default() };
        ch.queue_declare(queue.into(), passive, Default::default()).await.unwrap().message_count()
    };
    let held_in_broker = || broker.queues().into_iter().find(|(q, _)| q == queue).map_or(0, |(_, n)| n);

    let a = AmqpWorkerBackend::connect(&broker.uri(), "kgym").await.unwrap();
    a.register(&WorkerInfo::new("held-a", vec![(kind.clone(), 1)])).await.unwrap();
    let id = sched.submit(JobSpec::new().stage(kind.clone(), &serde_json::json!({}))).await.unwrap();
    let first = a.claim(&req("held-a")).await.unwrap().expect("worker a gets the stage");
    assert_eq!((first.lease.job, first.attempt), (id, 1));
    assert_eq!((ready().await, held_in_broker()), (0, 1), "the running stage's announcement is held, unacked");

    // Worker a dies: the broker has the announcement ready again at once.
    a.close().await;
    tokio::time::timeout(Duration::from_secs(10), async {
        while ready().await != 1 {
            tokio::time::sleep(Duration::from_millis(50)).await;
        }
    })
    .await
    .expect("the dead worker's announcement back on its queue");

    // Worker b gets the stage once a's lease is over (the lease decides,
    // not the redelivery): the second hand-out.
    let b = AmqpWorkerBackend::connect(&broker.uri(), "kgym").await.unwrap();
    b.register(&WorkerInfo::new("held-b", vec![(kind.clone(), 1)])).await.unwrap();
    let second = b.claim(&req("held-b")).await.unwrap().expect("worker b gets the stage");
    assert_eq!((second.lease.job, second.attempt), (id, 2));
    assert_eq!(sched.heartbeat(&first.lease).await.unwrap(), kgym_sched::worker_api::LeaseStatus::Lost);
    assert_eq!(held_in_broker(), 1, "held while b runs it");
    let ack = b.report(&second.lease, StageOutcome::Success(serde_json::json!(null))).await.unwrap();
    assert_eq!(ack, kgym_sched::worker_api::ReportAck::Recorded);
    assert!(sched.get(id).await.unwrap().succeeded());
    assert_eq!((ready().await, held_in_broker()), (0, 0), "acked once the result was recorded");
    b.close().await;
    server.stop().await;
}

/// A worker that waits for its stage to be cancelled, saying when it
/// started and when it heard.
#[derive(Debug)]
struct Waits {
    kind: StageKind,
    events: tokio::sync::mpsc::UnboundedSender<(&'static str, kgym_core::JobId, std::time::Instant)>,
}

impl kgym_core::StageSchema for Waits {
    fn kind(&self) -> StageKind {
        self.kind.clone()
    }
}

#[async_trait::async_trait]
impl kgym_core::Worker for Waits {
    async fn run(&self, ctx: kgym_core::StageContext) -> Result<serde_json::Value, kgym_core::StageFailure> {
        let _ = self.events.send(("started", ctx.job, std::time::Instant::now()));
        ctx.cancel.cancelled().await;
        let _ = self.events.send(("cancelled", ctx.job, std::time::Instant::now()));
        Err(kgym_core::StageFailure::cancelled())
    }
}

/// The control queue: an abort reaches a worker on RabbitMQ at once, not
/// at its next heartbeat (10 s away here), and a worker asked to hand a
/// stage back does so without using an attempt.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn aborts_and_hand_backs_reach_the_worker_before_its_heartbeat() {
    let _one = ONE_AT_A_TIME.lock().await;
    let Some(broker) = Broker::start() else { return };
    let options = SchedulerOptions::default().lease_ttl(Duration::from_secs(30));
    let queue = Arc::new(AmqpQueue::connect(&broker.uri(), "kgym").await.unwrap());
    let sched = SqliteScheduler::builder().options(options).queue(queue).build().await.unwrap();
    let server = RpcServer::start(&broker.uri(), "kgym", sched.clone()).await.unwrap();
    let backend = AmqpWorkerBackend::connect(&broker.uri(), "kgym").await.unwrap();
    let kind = StageKind::new("signalled").unwrap();
    let (tx, mut events) = tokio::sync::mpsc::unbounded_channel();
    // Heartbeats every 10 s (a third of the lease): what the signal beats.
    let runtime = kgym_sched::runtime::WorkerRuntime::builder(Arc::new(backend.clone()))
        .options(
            kgym_sched::runtime::RuntimeOptions::default().host("signalled-host").heartbeat(Duration::from_secs(10)),
        )
        .worker(Arc::new(Waits { kind: kind.clone(), events: tx }), 1)
        .start()
        .await
        .unwrap();
    let mut next = async || tokio::time::timeout(Duration::from_secs(20), events.recv()).await.unwrap().unwrap();
    let spec = || JobSpec::new().stage(kind.clone(), &serde_json::json!({}));

    let id = sched.submit(spec()).await.unwrap();
    let (what, job, _) = next().await;
    assert_eq!((what, job), ("started", id));
    let asked = std::time::Instant::now();
    sched.abort(id).await.unwrap();
    let (what, job, heard) = next().await;
    assert_eq!((what, job), ("cancelled", id));
    let took = heard - asked;
    assert!(took < Duration::from_secs(5), "the abort took {took:?}: it waited for a heartbeat");

    let id = sched.submit(spec()).await.unwrap();
    assert_eq!(next().await.0, "started");
    assert!(sched.hand_back(id).await.unwrap(), "a running stage to hand back");
    let (what, job, _) = next().await;
    assert_eq!((what, job), ("cancelled", id));
    // Handed back, then claimed again (the one worker): still attempt 1.
    let (what, job, _) = next().await;
    assert_eq!((what, job), ("started", id));
    assert_eq!(runtime.yielded(), 1);
    let lines: Vec<String> = sched.all_logs(id).await.unwrap().into_iter().map(|l| l.line).collect();
    let handed = lines.iter().filter(|l| l.contains("handed to") && l.ends_with("(attempt 1)")).count();
    assert_eq!(handed, 2, "{lines:?}");
    assert!(!sched.hand_back(JobId::new(999)).await.is_ok_and(|sent| sent), "no such job, nothing sent");
    sched.abort(id).await.unwrap();
    runtime.shutdown().await;
    backend.close().await;
    server.stop().await;
}

#[tokio::test]
async fn an_unreachable_broker_is_a_typed_error() {
    let port = std::net::TcpListener::bind("127.0.0.1:0").unwrap().local_addr().unwrap().port();
    let err = AmqpQueue::connect(&format!("amqp://kgym:secret@127.0.0.1:{port}/%2f"), "kgym").await.unwrap_err();
    let text = err.to_string();
    assert!(matches!(err, kgym_sched::Error::Amqp { op: "connect", .. }), "{err:?}");
    assert!(text.contains(&port.to_string()) && !text.contains("secret"), "{text}");
    let err = AmqpQueue::connect("amqp://127.0.0.1:1/%2f", "no spaces please").await.unwrap_err();
    assert!(err.to_string().contains("prefix"), "{err}");
}

/// The broker goes away and comes back while jobs are queued and workers
/// wait: nothing queued is lost (durable queues, persistent messages), a
/// job submitted while it is down is announced once it is back, and the
/// claims that were waiting resume on new channels.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn jobs_survive_a_broker_restart() {
    let _one = ONE_AT_A_TIME.lock().await;
    let Some(mut broker) = Broker::start() else { return };
    let sched = scheduler_on(AmqpQueue::connect(&broker.uri(), "kgym").await.unwrap()).await;
    let kind = StageKind::new("restart-noop").unwrap();
    sched.register(&WorkerInfo::new("restart-host", vec![(kind.clone(), 1)])).await.unwrap();
    let claim = |wait: Duration| ClaimRequest {
        kind: kind.clone(),
        worker: "restart-host/noop-0".into(),
        host: "restart-host".into(),
        wait,
    };
    let job = || JobSpec::new().stage(kind.clone(), &serde_json::json!({}));
    // Open the consumer first, so a live channel breaks under it.
    assert!(sched.claim(&claim(Duration::from_millis(200))).await.unwrap().is_none());
    let before = sched.submit(job()).await.unwrap();

    broker.stop();
    // Down: the transition commits, its announcement is kept.
    let during = sched.submit(job()).await.unwrap();
    assert_eq!(sched.get(during).await.unwrap().status, JobStatus::Pending);
    broker.start_again();

    let mut done = Vec::new();
    for _ in 0..2 {
        let c = tokio::time::timeout(Duration::from_secs(60), async {
            loop {
                match sched.claim(&claim(Duration::from_secs(5))).await {
                    Ok(Some(c)) => return c,
                    Ok(None) => {}
                    Err(e) => {
                        eprintln!("claim while the broker comes back: {e}");
                        tokio::time::sleep(Duration::from_millis(200)).await;
                    }
                }
            }
        })
        .await
        .expect("a queued stage was lost in the broker restart");
        sched.report(&c.lease, StageOutcome::Success(serde_json::json!(null))).await.unwrap();
        done.push(c.lease.job);
    }
    done.sort();
    assert_eq!(done, vec![before, during]);
    for id in [before, during] {
        let j = tokio::time::timeout(Duration::from_secs(10), sched.wait(id)).await.unwrap().unwrap();
        assert_eq!(j.status, JobStatus::Finished);
    }
    // Nothing ran twice: no third delivery turns into a claim.
    assert!(sched.claim(&claim(Duration::from_millis(500))).await.unwrap().is_none());
}

/// A message that is not an announcement is dead-lettered with RabbitMQ's
/// reason, not redelivered forever; the good one behind it still arrives.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn malformed_messages_go_to_the_dead_letter_queue() {
    let _one = ONE_AT_A_TIME.lock().await;
    let Some(broker) = Broker::start() else { return };
    let queue = AmqpQueue::connect(&broker.uri(), "dlq").await.unwrap();
    let kind = StageKind::new("dlq-kind").unwrap();
    let route = Route::of(&kind);
    let mut consumer = queue.consume(&route).await.unwrap();
    // A stranger publishes garbage on the stage queue.
    let conn = lapin::Connection::connect(&broker.uri(), Default::default()).await.unwrap();
    let ch = conn.create_channel().await.unwrap();
    ch.basic_publish(
        "".into(),
        queue.queue_name(&route).as_str().into(),
        Default::default(),
        b"{not json",
        Default::default(),
    )
    .await
    .unwrap()
    .await
    .unwrap();
    let good = Announcement::new(kgym_core::JobId::new(5), kgym_core::StageIndex(0), kind.clone());
    queue.publish(&good).await.unwrap();
    let d = tokio::time::timeout(Duration::from_secs(10), consumer.next()).await.unwrap().unwrap();
    assert_eq!(d.announcement, good);
    d.ack().await.unwrap();
    let dead = tokio::time::timeout(Duration::from_secs(10), async {
        loop {
            let got = ch
                .basic_get(queue.dead_letter_queue().as_str().into(), lapin::options::BasicGetOptions { no_ack: true })
                .await
                .unwrap();
            if let Some(m) = got {
                return m;
            }
            tokio::time::sleep(Duration::from_millis(50)).await;
        }
    })
    .await
    .expect("the malformed message is not in the dead-letter queue");
    assert_eq!(dead.delivery.data, b"{not json");
    let headers = dead.delivery.properties.headers().clone().unwrap_or_default();
    let reason = match headers.inner().get("x-first-death-reason") {
        Some(lapin::types::AMQPValue::LongString(s)) => String::from_utf8_lossy(s.as_bytes()).into_owned(),
        other => panic!("no x-first-death-reason: {other:?}"),
    };
    assert_eq!(reason, "rejected");
}

/// A log request the broker delivers twice (a scheduler killed after
/// appending, before its ack, gets it again on restart) appends its lines
/// once: the request's correlation id is recorded with them. Another
/// request with the same lines is another request.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_redelivered_log_request_appends_its_lines_once() {
    let _one = ONE_AT_A_TIME.lock().await;
    let Some(broker) = Broker::start() else { return };
    let options = SchedulerOptions::default().lease_ttl(Duration::from_secs(30));
    let queue = Arc::new(AmqpQueue::connect(&broker.uri(), "once").await.unwrap());
    let sched = SqliteScheduler::builder().options(options).queue(queue).build().await.unwrap();
    let server = RpcServer::start(&broker.uri(), "once", sched.clone()).await.unwrap();
    let kind = StageKind::new("logs").unwrap();
    sched.register(&WorkerInfo::new("logs-w", vec![(kind.clone(), 1)])).await.unwrap();
    let id = sched.submit(JobSpec::new().stage(kind.clone(), &serde_json::json!({}))).await.unwrap();
    let req = ClaimRequest { kind, worker: "logs-w/0".into(), host: "logs-w".into(), wait: Duration::from_secs(10) };
    let claim = sched.claim(&req).await.unwrap().expect("the stage");
    let body = serde_json::to_vec(&serde_json::json!({
        "op": "append_log", "lease": claim.lease, "worker": "logs-w/0", "lines": ["only once"]
    }))
    .unwrap();
    let conn = lapin::Connection::connect(&broker.uri(), Default::default()).await.unwrap();
    let ch = conn.create_channel().await.unwrap();
    for correlation in ["request-1", "request-1", "request-2"] {
        let props = lapin::BasicProperties::default().with_correlation_id(correlation.into());
        ch.basic_publish("".into(), "once.rpc".into(), Default::default(), &body, props).await.unwrap().await.unwrap();
    }
    let count = || async { sched.all_logs(id).await.unwrap().iter().filter(|l| l.line == "only once").count() };
    tokio::time::timeout(Duration::from_secs(10), async {
        while broker.queues().into_iter().any(|(q, n)| q == "once.rpc" && n > 0) || count().await < 2 {
            tokio::time::sleep(Duration::from_millis(50)).await;
        }
    })
    .await
    .expect("the requests answered");
    // Every request was taken off the queue and answered: one append per
    // request id.
    tokio::time::sleep(Duration::from_millis(500)).await;
    assert_eq!(count().await, 2, "{:#?}", sched.all_logs(id).await.unwrap());
    server.stop().await;
}
