//! Running one claimed stage: context, heartbeats, cancellation, report.

use std::sync::Arc;
use std::sync::atomic::Ordering;
use std::time::Duration;

use kgym_core::failure::codes;
use kgym_core::{LogSink, StageContext, StageFailure};
use tokio::time::Instant;
use tokio_util::sync::CancellationToken;
use tracing::Instrument;

use super::Slot;
use super::logs::{ChannelSink, flush_loop};
use crate::error::Error;
use crate::queue::SignalAction;
use crate::worker_api::{Claim, LeaseStatus, StageOutcome};

/// Why a running stage was cancelled.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Stop {
    /// The job was aborted: drop the result.
    Aborted,
    /// The lease is gone: drop the result.
    Lost,
    /// The runtime is shutting down: hand the stage back.
    Shutdown,
}

/// Runs `claim` on the slot's worker and reports (or hands back) the result.
pub(super) async fn run(slot: &Slot, claim: Claim) {
    let span = tracing::info_span!("stage", job = %claim.lease.job, stage = %claim.lease.stage, kind = %claim.kind, worker = %slot.name);
    run_in_span(slot, claim).instrument(span).await;
}

async fn run_in_span(slot: &Slot, claim: Claim) {
    // One line per hand-out: an operator (and the multi-process test) can
    // tell a stage that ran twice from the workers' logs alone.
    tracing::info!(attempt = claim.attempt, "stage started");
    let lease = claim.lease.clone();

    let cancel = CancellationToken::new();
    let (sink, lines) = ChannelSink::new(slot.name.clone());
    let close_logs = CancellationToken::new();
    let flusher = tokio::spawn(flush_loop(
        Arc::clone(&slot.backend),
        lease.clone(),
        slot.name.clone(),
        lines,
        close_logs.clone(),
    ));
    let ctx = StageContext::new(
        lease.job,
        lease.stage,
        claim.stages,
        claim.previous,
        claim.tags,
        slot.artifacts.clone(),
        cancel.clone(),
        slot.name.clone(),
        Arc::clone(&sink) as Arc<dyn LogSink>,
    );
    let worker = Arc::clone(&slot.worker);
    // A claim whose stage index is past its stages is a broken scheduler,
    // not a stage to run: it fails (retryably) like any worker error.
    let mut task = tokio::spawn(async move {
        match ctx {
            Ok(ctx) => worker.run(ctx).await,
            Err(e) => Err(StageFailure::internal(&e)),
        }
    });

    let every = slot.heartbeat.min(claim.lease_ttl / 3).max(Duration::from_millis(10));
    let mut beat = tokio::time::interval_at(Instant::now() + every, every);
    beat.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
    let mut last_renewed = Instant::now();
    let mut stop: Option<Stop> = None;
    let mut deadline: Option<Instant> = None;
    let mut beating = true;
    // A word from the scheduler between heartbeats (transports that reach
    // workers: an abort is heard at once, not a third of a lease later).
    let mut signal = slot.backend.signalled(&lease);
    let mut listening = true;

    let joined = loop {
        let grace_over = async {
            match deadline {
                Some(d) => tokio::time::sleep_until(d).await,
                None => std::future::pending().await,
            }
        };
        tokio::select! {
            res = &mut task => break res,
            _ = beat.tick(), if beating => {
                let status = slot.backend.heartbeat(&lease).await;
                let verdict = match status {
                    Ok(LeaseStatus::Active) => { last_renewed = Instant::now(); None }
                    Ok(LeaseStatus::Cancelled) => Some(Stop::Aborted),
                    Ok(LeaseStatus::Lost) => Some(Stop::Lost),
                    Err(e) => {
                        tracing::warn!(job = %lease.job, error = %e, "heartbeat failed");
                        (last_renewed.elapsed() > claim.lease_ttl).then_some(Stop::Lost)
                    }
                };
                if let Some(v) = verdict {
                    beating = false;
                    if stop.is_none() || stop == Some(Stop::Shutdown) {
                        stop = Some(v);
                    }
                    if !cancel.is_cancelled() {
                        sink.line(match v {
                            Stop::Aborted => "job aborted: cancelling the stage",
                            _ => "lease lost: cancelling the stage",
                        });
                        cancel.cancel();
                        deadline = Some(Instant::now() + slot.grace);
                    }
                }
            }
            action = &mut signal, if listening => {
                listening = false;
                match action {
                    // The heartbeat (now) says what changed.
                    SignalAction::Check => beat.reset_immediately(),
                    SignalAction::HandBack if stop.is_none() => {
                        stop = Some(Stop::Shutdown);
                        sink.line("the scheduler asked for the stage back: cancelling it to hand it back");
                        cancel.cancel();
                        deadline = Some(Instant::now() + slot.grace);
                    }
                    SignalAction::HandBack => {}
                }
            }
            _ = slot.shutdown.cancelled(), if stop.is_none() => {
                stop = Some(Stop::Shutdown);
                sink.line("worker shutting down: cancelling the stage to hand it back");
                cancel.cancel();
                deadline = Some(Instant::now() + slot.grace);
            }
            _ = grace_over => {
                tracing::warn!(job = %lease.job, "stage did not stop within its grace period; abandoning it");
                task.abort();
            }
        }
    };

    drop(signal);
    let outcome: Result<serde_json::Value, StageFailure> = match joined {
        Ok(r) => r,
        Err(e) if e.is_panic() => {
            let msg = e
                .into_panic()
                .downcast::<String>()
                .map(|s| *s)
                .or_else(|p| p.downcast::<&str>().map(|s| (*s).to_owned()))
                .unwrap_or_else(|_| "unknown panic".to_owned());
            Err(StageFailure::new(codes::INTERNAL, format!("the worker panicked: {msg}")).retryable())
        }
        Err(_) => Err(StageFailure::cancelled()),
    };
    if let Err(f) = &outcome {
        sink.line(&format!("stage failed: {f}"));
    }
    close_logs.cancel();
    let _ = flusher.await;

    match stop {
        // A stage that finished anyway while we were shutting down is
        // reported; an interrupted one goes back to the queue.
        Some(Stop::Shutdown) if outcome.is_err() => match slot.backend.yield_stage(&lease).await {
            Ok(()) => {
                slot.stats.yielded.fetch_add(1, Ordering::Relaxed);
            }
            Err(e) => {
                tracing::warn!(job = %lease.job, error = %e, "failed to hand the stage back; its lease will expire")
            }
        },
        Some(Stop::Aborted) | Some(Stop::Lost) => {
            tracing::info!(job = %lease.job, stage = %lease.stage, reason = ?stop, "stage stopped; result dropped");
        }
        _ => report(slot, &lease, outcome.into(), claim.lease_ttl).await,
    }
}

/// Reports, retrying transient failures for up to a lease's length.
async fn report(slot: &Slot, lease: &crate::worker_api::Lease, outcome: StageOutcome, ttl: Duration) {
    let until = Instant::now() + ttl.max(Duration::from_secs(1));
    let mut wait = Duration::from_millis(50);
    loop {
        match slot.backend.report(lease, outcome.clone()).await {
            Ok(_) => {
                slot.stats.reported.fetch_add(1, Ordering::Relaxed);
                let succeeded = matches!(outcome, StageOutcome::Success(_));
                tracing::info!(succeeded, "stage reported");
                return;
            }
            Err(e @ (Error::LeaseLost { .. } | Error::JobNotFound { .. })) => {
                tracing::warn!(job = %lease.job, error = %e, "result refused");
                return;
            }
            Err(e) if Instant::now() < until => {
                tracing::warn!(job = %lease.job, error = %e, "failed to report; retrying");
                tokio::time::sleep(wait).await;
                wait = (wait * 2).min(Duration::from_secs(2));
            }
            Err(e) => {
                tracing::error!(job = %lease.job, error = %e, "failed to report; the lease will expire and the stage re-run");
                return;
            }
        }
    }
}
