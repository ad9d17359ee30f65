//! The conformance suite every [`Queue`] transport must pass (in the style of
//! `object_store`'s `integration.rs`): public async functions taking
//! `&dyn Queue` that panic on a violation. Each uses fresh queue names, so
//! they can run against a long-lived broker.
//!
//! ```
//! # tokio::runtime::Runtime::new().unwrap().block_on(async {
//! let queue = kgym_sched::queue::InProcessQueue::new();
//! kgym_sched::conformance::queue::run_all(&queue).await;
//! # });
//! ```

use std::collections::HashSet;
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::Duration;

use kgym_core::{JobId, Labels, StageIndex, StageKind};

use crate::queue::{Announcement, Consumer, Delivery, Queue, Route};

/// How long a test waits for a delivery that must come.
const MUST_ARRIVE: Duration = Duration::from_secs(10);
/// How long a test waits to be sure that nothing comes.
const QUIET: Duration = Duration::from_millis(200);

/// A queue name no earlier run used.
fn fresh_kind(test: &str) -> StageKind {
    static N: AtomicU64 = AtomicU64::new(0);
    let nanos =
        std::time::SystemTime::now().duration_since(std::time::UNIX_EPOCH).map(|d| d.as_nanos() as u64).unwrap_or(0);
    let n = N.fetch_add(1, Ordering::Relaxed);
    StageKind::new(format!("conf-{test}-{:x}-{n}", nanos & 0xffff_ffff_ffff)).expect("valid kind")
}

fn ann(kind: &StageKind, job: u64) -> Announcement {
    Announcement::new(JobId::new(job), StageIndex(0), kind.clone())
}

async fn next_within(consumer: &mut dyn Consumer, limit: Duration) -> Option<Delivery> {
    match tokio::time::timeout(limit, consumer.next()).await {
        Ok(d) => Some(d.expect("consumer failed")),
        Err(_) => None,
    }
}

/// Runs every test of the suite.
pub async fn run_all(queue: &dyn Queue) {
    delivers_in_order(queue).await;
    kinds_are_separate(queue).await;
    label_sets_are_separate(queue).await;
    competing_consumers_share_the_work(queue).await;
    nack_with_requeue_redelivers(queue).await;
    nack_without_requeue_drops(queue).await;
    unanswered_delivery_is_redelivered(queue).await;
    next_is_cancel_safe(queue).await;
}

/// Announcements published before a consumer exists are kept and arrive in
/// publish order; acked ones do not come back.
pub async fn delivers_in_order(queue: &dyn Queue) {
    let kind = fresh_kind("order");
    for job in 1..=5 {
        queue.publish(&ann(&kind, job)).await.expect("publish");
    }
    let mut c = queue.consume(&Route::of(&kind)).await.expect("consume");
    for job in 1..=5 {
        let d = next_within(c.as_mut(), MUST_ARRIVE).await.expect("announcement lost");
        assert_eq!(d.announcement, ann(&kind, job), "out of order");
        assert!(!d.redelivered, "first delivery marked redelivered");
        d.ack().await.expect("ack");
    }
    assert!(next_within(c.as_mut(), QUIET).await.is_none(), "acked announcement came back");
}

/// A consumer of one kind never sees another kind's announcements.
pub async fn kinds_are_separate(queue: &dyn Queue) {
    let a = fresh_kind("sep-a");
    let b = fresh_kind("sep-b");
    queue.publish(&ann(&a, 1)).await.expect("publish");
    let mut cb = queue.consume(&Route::of(&b)).await.expect("consume");
    assert!(next_within(cb.as_mut(), QUIET).await.is_none(), "kind b saw kind a's announcement");
    let mut ca = queue.consume(&Route::of(&a)).await.expect("consume");
    let d = next_within(ca.as_mut(), MUST_ARRIVE).await.expect("announcement lost");
    assert_eq!(d.announcement.kind, a);
    d.ack().await.expect("ack");
}

/// Announcements that require labels go on the queue of their kind and
/// label set only: not to the kind's plain queue, nor to another set's.
pub async fn label_sets_are_separate(queue: &dyn Queue) {
    let kind = fresh_kind("labels");
    let big: Labels = [("pool".to_owned(), "big".to_owned())].into();
    let big_arm: Labels = [("pool".to_owned(), "big".to_owned()), ("arch".to_owned(), "arm64".to_owned())].into();
    queue.publish(&ann(&kind, 1).labels(big_arm.clone())).await.expect("publish");
    queue.publish(&ann(&kind, 2).labels(big.clone())).await.expect("publish");
    let mut plain = queue.consume(&Route::of(&kind)).await.expect("consume");
    assert!(next_within(plain.as_mut(), QUIET).await.is_none(), "the plain queue saw a labelled announcement");
    let mut c_big = queue.consume(&Route::with_labels(&kind, big.clone())).await.expect("consume");
    let d = next_within(c_big.as_mut(), MUST_ARRIVE).await.expect("announcement lost");
    assert_eq!((d.announcement.job, &d.announcement.labels), (JobId::new(2), &big));
    d.ack().await.expect("ack");
    assert!(next_within(c_big.as_mut(), QUIET).await.is_none(), "pool=big saw pool=big,arch=arm64's announcement");
    let mut c_both = queue.consume(&Route::with_labels(&kind, big_arm.clone())).await.expect("consume");
    let d = next_within(c_both.as_mut(), MUST_ARRIVE).await.expect("announcement lost");
    assert_eq!((d.announcement.job, &d.announcement.labels), (JobId::new(1), &big_arm));
    d.ack().await.expect("ack");
}

/// Several consumers of one kind together receive every announcement
/// exactly once.
pub async fn competing_consumers_share_the_work(queue: &dyn Queue) {
    let kind = fresh_kind("compete");
    const N: u64 = 200;
    let mut tasks = Vec::new();
    let (tx, mut rx) = tokio::sync::mpsc::unbounded_channel();
    let mut consumers = Vec::new();
    for _ in 0..4 {
        consumers.push(queue.consume(&Route::of(&kind)).await.expect("consume"));
    }
    for mut c in consumers {
        let tx = tx.clone();
        tasks.push(tokio::spawn(async move {
            while let Some(d) = next_within(c.as_mut(), Duration::from_millis(500)).await {
                tx.send(d.announcement.job.get()).expect("collector gone");
                d.ack().await.expect("ack");
            }
        }));
    }
    drop(tx);
    for job in 1..=N {
        queue.publish(&ann(&kind, job)).await.expect("publish");
    }
    let mut seen = HashSet::new();
    let mut count = 0;
    while let Some(job) = rx.recv().await {
        count += 1;
        assert!(seen.insert(job), "announcement {job} delivered twice");
    }
    for t in tasks {
        t.await.expect("consumer task panicked");
    }
    assert_eq!(count, N, "announcements lost");
}

/// A nacked-with-requeue delivery comes back, marked redelivered.
pub async fn nack_with_requeue_redelivers(queue: &dyn Queue) {
    let kind = fresh_kind("nack-requeue");
    queue.publish(&ann(&kind, 7)).await.expect("publish");
    let mut c = queue.consume(&Route::of(&kind)).await.expect("consume");
    let d = next_within(c.as_mut(), MUST_ARRIVE).await.expect("announcement lost");
    d.nack(true).await.expect("nack");
    let again = next_within(c.as_mut(), MUST_ARRIVE).await.expect("requeued announcement lost");
    assert_eq!(again.announcement, ann(&kind, 7));
    assert!(again.redelivered, "redelivery not marked");
    again.ack().await.expect("ack");
}

/// A nacked-without-requeue delivery is gone.
pub async fn nack_without_requeue_drops(queue: &dyn Queue) {
    let kind = fresh_kind("nack-drop");
    queue.publish(&ann(&kind, 8)).await.expect("publish");
    let mut c = queue.consume(&Route::of(&kind)).await.expect("consume");
    let d = next_within(c.as_mut(), MUST_ARRIVE).await.expect("announcement lost");
    d.nack(false).await.expect("nack");
    assert!(next_within(c.as_mut(), QUIET).await.is_none(), "dropped announcement came back");
}

/// A delivery dropped without ack or nack (its consumer then closed, as a
/// crashed worker's would be) is redelivered to another consumer.
pub async fn unanswered_delivery_is_redelivered(queue: &dyn Queue) {
    let kind = fresh_kind("unanswered");
    queue.publish(&ann(&kind, 9)).await.expect("publish");
    {
        let mut c = queue.consume(&Route::of(&kind)).await.expect("consume");
        let d = next_within(c.as_mut(), MUST_ARRIVE).await.expect("announcement lost");
        drop(d);
        drop(c);
    }
    let mut c2 = queue.consume(&Route::of(&kind)).await.expect("consume");
    let d = next_within(c2.as_mut(), MUST_ARRIVE).await.expect("unanswered announcement lost");
    assert_eq!(d.announcement, ann(&kind, 9));
    assert!(d.redelivered, "redelivery not marked");
    d.ack().await.expect("ack");
}

/// Abandoning `next()` (a timeout) while announcements arrive loses none.
pub async fn next_is_cancel_safe(queue: &dyn Queue) {
    let kind = fresh_kind("cancel-safe");
    let mut c = queue.consume(&Route::of(&kind)).await.expect("consume");
    let mut got = HashSet::new();
    for job in 1..=50u64 {
        // A poll that gives up (usually before the announcement exists)...
        if let Some(d) = next_within(c.as_mut(), Duration::from_millis(1)).await {
            assert!(got.insert(d.announcement.job.get()), "announcement delivered twice");
            d.ack().await.expect("ack");
        }
        queue.publish(&ann(&kind, job)).await.expect("publish");
        // ...and one that gives up almost at once, racing the delivery.
        if let Some(d) = next_within(c.as_mut(), Duration::from_micros(50)).await {
            assert!(got.insert(d.announcement.job.get()), "announcement delivered twice");
            d.ack().await.expect("ack");
        }
    }
    while got.len() < 50 {
        let d = next_within(c.as_mut(), MUST_ARRIVE).await.expect("announcement lost after a cancelled next()");
        assert!(got.insert(d.announcement.job.get()), "announcement delivered twice");
        d.ack().await.expect("ack");
    }
}
