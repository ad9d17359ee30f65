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

use kgym_core::{JobSpec, JobStatus, StageKind};
use kgym_sched::amqp::AmqpQueue;
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
