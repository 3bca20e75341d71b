//! Per-provider dispatchers: take due jobs, pick an endpoint by its circuit,
//! send within the provider's concurrency limit, and act on the outcome.

use std::sync::Arc;
use std::sync::atomic::Ordering;
use std::time::{Duration, Instant, SystemTime, UNIX_EPOCH};

use protocol::UnixMillis;
use protocol::push::{Job, ToEngine};
use tokio::sync::Semaphore;

use crate::backoff;
use crate::circuit::Permit;
use crate::daemon::Ctx;
use crate::provider::apns::Apns;
use crate::provider::fcm::Fcm;
use crate::provider::{Endpoint, Outcome};
use crate::queue::{Dead, Feedback, Queued};

/// A configured provider client.
#[derive(Debug)]
pub enum Client {
    Apns(Apns),
    Fcm(Fcm),
}

impl Client {
    async fn send(&self, ep: Endpoint, job: &Job, expires: UnixMillis) -> Outcome {
        match self {
            Client::Apns(c) => c.send(ep, job, expires).await,
            Client::Fcm(c) => c.send(ep, job, expires).await,
        }
    }

    fn has_secondary(&self) -> bool {
        match self {
            Client::Apns(c) => c.has_secondary(),
            Client::Fcm(c) => c.has_secondary(),
        }
    }
}

pub fn now_millis() -> UnixMillis {
    let d = SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .unwrap_or_default();
    UnixMillis(u64::try_from(d.as_millis()).unwrap_or(u64::MAX))
}

fn now_micros() -> u64 {
    let d = SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .unwrap_or_default();
    u64::try_from(d.as_micros()).unwrap_or(u64::MAX)
}

fn endpoint_ix(ep: Endpoint) -> usize {
    match ep {
        Endpoint::Primary => 0,
        Endpoint::Secondary => 1,
    }
}

/// Runs provider `p`'s dispatcher for as long as the daemon runs. Without a
/// client for the provider, its jobs are dead-lettered as they come due.
pub async fn run(ctx: Arc<Ctx>, p: usize, client: Option<Arc<Client>>, concurrency: usize) {
    let sem = Arc::new(Semaphore::new(concurrency));
    loop {
        let permit = Arc::clone(&sem)
            .acquire_owned()
            .await
            .expect("the semaphore is never closed");
        let (q, ep) = next_job(&ctx, p, client.as_deref()).await;
        let ctx = Arc::clone(&ctx);
        let Some(client) = client.clone() else {
            bury(&ctx, p, q, "provider_not_configured").await;
            continue;
        };
        tokio::spawn(async move {
            send_one(&ctx, p, &client, q, ep).await;
            drop(permit);
        });
    }
}

/// Waits for a due job and an endpoint whose circuit lets it through.
async fn next_job(ctx: &Ctx, p: usize, client: Option<&Client>) -> (Queued, Endpoint) {
    loop {
        let now = Instant::now();
        let wait_until = match ctx.sched.pop_due(p, now) {
            Ok(q) => {
                let Some(client) = client else {
                    return (q, Endpoint::Primary);
                };
                match choose(ctx, p, client, now) {
                    Ok(ep) => return (q, ep),
                    Err(retry_at) => {
                        // Not an attempt: every endpoint is known down.
                        let id = q.job.id;
                        if !ctx.sched.reschedule(q, retry_at) {
                            cancelled(ctx, id);
                        }
                        Some(retry_at)
                    }
                }
            }
            Err(next) => next,
        };
        let notified = ctx.sched.notify[p].notified();
        match wait_until {
            Some(at) => {
                let _ = tokio::time::timeout_at(at.into(), notified).await;
            }
            None => notified.await,
        }
    }
}

/// The primary if its circuit lets a request through, else the secondary;
/// else when to look again.
fn choose(ctx: &Ctx, p: usize, client: &Client, now: Instant) -> Result<Endpoint, Instant> {
    let circuits = &ctx.circuits[p];
    let mut retry_at = now + Duration::from_secs(1);
    let eps: &[Endpoint] = if client.has_secondary() {
        &[Endpoint::Primary, Endpoint::Secondary]
    } else {
        &[Endpoint::Primary]
    };
    for &ep in eps {
        let c = &circuits[endpoint_ix(ep)];
        let permit = c.try_acquire(now);
        ctx.metrics.providers[p].circuit[endpoint_ix(ep)]
            .store(c.state().as_gauge(), Ordering::Relaxed);
        match permit {
            Permit::Allowed | Permit::Probe => return Ok(ep),
            Permit::Rejected { retry_at: at } => retry_at = retry_at.min(at),
        }
    }
    Err(retry_at)
}

async fn send_one(ctx: &Arc<Ctx>, p: usize, client: &Client, q: Queued, ep: Endpoint) {
    let now = now_millis();
    let ttl = ctx.config.job_ttl;
    let expires = UnixMillis(
        q.job
            .created
            .0
            .saturating_add(u64::try_from(ttl.as_millis()).unwrap_or(u64::MAX)),
    );
    if now >= expires {
        bury(ctx, p, q, "expired").await;
        return;
    }
    let m = &ctx.metrics.providers[p];
    ctx.metrics.in_flight.fetch_add(1, Ordering::Relaxed);
    let started = Instant::now();
    let outcome = client.send(ep, &q.job, expires).await;
    let done = Instant::now();
    ctx.metrics.in_flight.fetch_sub(1, Ordering::Relaxed);
    m.latency(done - started);
    let circuit = &ctx.circuits[p][endpoint_ix(ep)];
    match &outcome {
        Outcome::Retry {
            endpoint_fault: true,
            ..
        } => circuit.on_failure(done),
        _ => circuit.on_success(done),
    }
    m.circuit[endpoint_ix(ep)].store(circuit.state().as_gauge(), Ordering::Relaxed);
    match outcome {
        Outcome::Sent { .. } => {
            m.sent.fetch_add(1, Ordering::Relaxed);
            // The job's creation time has millisecond resolution.
            let created_us = q.job.created.0.saturating_mul(1000);
            m.delivery(Duration::from_micros(
                now_micros().saturating_sub(created_us),
            ));
            let id = q.job.id;
            ctx.sched.finish(id);
            ctx.metrics.queue_depth.fetch_sub(1, Ordering::Relaxed);
            if let Err(e) = ctx.queue.remove(&[id]) {
                tracing::error!(cause = %e, "cannot remove a sent job");
            }
        }
        Outcome::InvalidToken { reason } => {
            m.failed(&reason);
            m.invalid_tokens.fetch_add(1, Ordering::Relaxed);
            invalid_token(ctx, q).await;
        }
        Outcome::Retry {
            reason,
            retry_after,
            ..
        } => retry(ctx, p, q, &reason, retry_after).await,
        Outcome::AuthRejected { reason } => retry(ctx, p, q, &reason, None).await,
        Outcome::Rejected { reason } => {
            m.failed(&reason);
            bury(ctx, p, q, &reason).await;
        }
    }
}

async fn retry(
    ctx: &Arc<Ctx>,
    p: usize,
    mut q: Queued,
    reason: &str,
    retry_after: Option<Duration>,
) {
    let m = &ctx.metrics.providers[p];
    m.failed(reason);
    q.attempts += 1;
    if q.attempts >= ctx.config.attempts_max {
        bury(ctx, p, q, &format!("attempts_exhausted:{reason}")).await;
        return;
    }
    m.retried.fetch_add(1, Ordering::Relaxed);
    let c = &ctx.config;
    let delay = backoff::delay(
        q.attempts - 1,
        c.backoff_base,
        c.backoff_max,
        retry_after,
        backoff::jitter(),
    );
    tracing::debug!(
        job = q.job.id,
        attempts = q.attempts,
        reason,
        ?delay,
        "send to retry"
    );
    if let Err(e) = ctx.queue.update(&q) {
        tracing::error!(cause = %e, "cannot record a job's attempt");
    }
    let id = q.job.id;
    if !ctx.sched.reschedule(q, Instant::now() + delay) {
        cancelled(ctx, id);
    }
}

/// A job cancelled while it was in flight, now dropped.
fn cancelled(ctx: &Ctx, id: u64) {
    ctx.metrics.cancelled.fetch_add(1, Ordering::Relaxed);
    ctx.metrics.queue_depth.fetch_sub(1, Ordering::Relaxed);
    if let Err(e) = ctx.queue.remove(&[id]) {
        tracing::error!(cause = %e, "cannot remove a cancelled job");
    }
}

/// Dead-letters a held job (synced), keeping the newest `dead_max`.
async fn bury(ctx: &Arc<Ctx>, p: usize, q: Queued, reason: &str) {
    ctx.metrics.providers[p]
        .dead
        .fetch_add(1, Ordering::Relaxed);
    tracing::warn!(
        job = q.job.id,
        attempts = q.attempts,
        reason,
        "job dead-lettered"
    );
    let id = q.job.id;
    let dead = Dead {
        job: q.job,
        attempts: q.attempts,
        reason: reason.to_owned(),
        at: now_millis(),
    };
    let seq = ctx.dead_seq.fetch_add(1, Ordering::Relaxed);
    let c = Arc::clone(ctx);
    let stored =
        tokio::task::spawn_blocking(move || c.queue.bury(seq, &dead, c.config.dead_max)).await;
    if let Err(e) = stored.map_err(anyhow::Error::from).and_then(|r| r) {
        tracing::error!(cause = %e, "cannot dead-letter a job");
    }
    ctx.sched.finish(id);
    ctx.metrics.queue_depth.fetch_sub(1, Ordering::Relaxed);
}

/// Records the token's feedback durably, then tells the engine if linked.
async fn invalid_token(ctx: &Arc<Ctx>, q: Queued) {
    let id = q.job.id;
    let fb = Feedback {
        user: q.job.user,
        device: q.job.device,
        token: q.job.token,
    };
    let c = Arc::clone(ctx);
    let f = fb.clone();
    let stored = tokio::task::spawn_blocking(move || c.queue.give_feedback(id, &f)).await;
    if let Err(e) = stored.map_err(anyhow::Error::from).and_then(|r| r) {
        tracing::error!(cause = %e, "cannot record invalid-token feedback");
    }
    ctx.sched.finish(id);
    ctx.metrics.queue_depth.fetch_sub(1, Ordering::Relaxed);
    let link = ctx
        .link
        .lock()
        .expect("link lock is never poisoned")
        .clone();
    if let Some(link) = link {
        // A full or closed link is fine: feedback is resent on the next link.
        let _ = link.try_send(ToEngine::InvalidToken {
            id,
            user: fb.user,
            device: fb.device,
            token: fb.token,
        });
    }
}
