//! The engine link: a Unix socket on which the engine offers jobs and
//! cancellations and pushd answers `Stored`/`Busy` and sends feedback.

use std::sync::Arc;
use std::sync::atomic::Ordering;
use std::time::Instant;

use protocol::push::{FRAME_MAX, LINK_VERSION, ToEngine, ToPushd, decode_frame, encode_frame};
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::UnixStream;
use tokio::net::unix::OwnedWriteHalf;
use tokio::sync::mpsc;

use crate::daemon::Ctx;

/// Frames queued towards the engine at most (feedback beyond it waits for
/// the next link; answers to offers wait for room).
const OUTBOUND_MAX: usize = 4096;

/// Serves one engine connection until it closes or breaks the protocol.
pub async fn serve(ctx: Arc<Ctx>, stream: UnixStream) {
    ctx.metrics.engine_links.fetch_add(1, Ordering::Relaxed);
    let (mut rd, wr) = stream.into_split();
    let (tx, rx) = mpsc::channel::<ToEngine>(OUTBOUND_MAX);
    let writer = tokio::spawn(write_loop(wr, rx));
    if tx
        .send(ToEngine::Hello {
            version: LINK_VERSION,
        })
        .await
        .is_err()
    {
        return;
    }
    match ctx.queue.feedback() {
        Ok(pending) => {
            for (id, fb) in pending {
                let msg = ToEngine::InvalidToken {
                    id,
                    user: fb.user,
                    device: fb.device,
                    token: fb.token,
                };
                if tx.send(msg).await.is_err() {
                    return;
                }
            }
        }
        Err(e) => tracing::error!(cause = %e, "cannot read pending feedback"),
    }
    *ctx.link.lock().expect("link lock is never poisoned") = Some(tx.clone());
    if let Err(e) = read_loop(&ctx, &mut rd, &tx).await {
        tracing::warn!(cause = %e, "engine link closed");
    } else {
        tracing::info!("engine link closed");
    }
    drop(tx);
    let mut link = ctx.link.lock().expect("link lock is never poisoned");
    if link.as_ref().is_some_and(mpsc::Sender::is_closed) {
        *link = None;
    }
    drop(link);
    writer.abort();
}

async fn write_loop(mut wr: OwnedWriteHalf, mut rx: mpsc::Receiver<ToEngine>) {
    let mut buf = Vec::new();
    while let Some(msg) = rx.recv().await {
        buf.clear();
        encode_frame(&msg, &mut buf);
        while let Ok(next) = rx.try_recv() {
            encode_frame(&next, &mut buf);
        }
        if let Err(e) = wr.write_all(&buf).await {
            tracing::warn!(cause = %e, "engine link write failed");
            return;
        }
    }
}

async fn read_loop(
    ctx: &Arc<Ctx>,
    rd: &mut tokio::net::unix::OwnedReadHalf,
    tx: &mpsc::Sender<ToEngine>,
) -> anyhow::Result<()> {
    let mut buf: Vec<u8> = Vec::with_capacity(64 * 1024);
    let mut hello = false;
    loop {
        let mut used = 0;
        while let Some((msg, n)) = decode_frame::<ToPushd>(&buf[used..])? {
            used += n;
            if !hello {
                anyhow::ensure!(
                    msg == ToPushd::Hello {
                        version: LINK_VERSION
                    },
                    "the engine must start with Hello version {LINK_VERSION}"
                );
                hello = true;
                continue;
            }
            on_msg(ctx, msg, tx).await?;
        }
        buf.drain(..used);
        anyhow::ensure!(buf.len() <= FRAME_MAX + 4, "frame too large");
        if buf.capacity() - buf.len() < 16 * 1024 {
            buf.reserve(64 * 1024);
        }
        if rd.read_buf(&mut buf).await? == 0 {
            return Ok(());
        }
    }
}

async fn on_msg(ctx: &Arc<Ctx>, msg: ToPushd, tx: &mpsc::Sender<ToEngine>) -> anyhow::Result<()> {
    match msg {
        ToPushd::Hello { .. } => anyhow::bail!("a second Hello"),
        ToPushd::Jobs(jobs) => {
            let offer = ctx.sched.offer(jobs, ctx.config.queue_max);
            let mut stored: Vec<u64> = offer.new.iter().map(|q| q.job.id).collect();
            if !offer.new.is_empty() {
                let c = Arc::clone(ctx);
                let new = offer.new;
                let new =
                    tokio::task::spawn_blocking(move || c.queue.take(&new).map(|()| new)).await??;
                ctx.metrics
                    .received
                    .fetch_add(new.len() as u64, Ordering::Relaxed);
                ctx.metrics.queue_depth.fetch_add(
                    i64::try_from(new.len()).unwrap_or(i64::MAX),
                    Ordering::Relaxed,
                );
                ctx.sched.insert(new, Instant::now());
            }
            ctx.metrics
                .duplicates
                .fetch_add(offer.known.len() as u64, Ordering::Relaxed);
            ctx.metrics
                .busy
                .fetch_add(offer.busy.len() as u64, Ordering::Relaxed);
            stored.extend(offer.known);
            if !stored.is_empty() {
                tx.send(ToEngine::Stored { ids: stored }).await?;
            }
            if !offer.busy.is_empty() {
                tx.send(ToEngine::Busy { ids: offer.busy }).await?;
            }
        }
        ToPushd::Cancel {
            user,
            device,
            before,
        } => {
            let ids = ctx.sched.cancel(user, device, before);
            if !ids.is_empty() {
                ctx.metrics
                    .cancelled
                    .fetch_add(ids.len() as u64, Ordering::Relaxed);
                ctx.metrics.queue_depth.fetch_sub(
                    i64::try_from(ids.len()).unwrap_or(i64::MAX),
                    Ordering::Relaxed,
                );
                tracing::debug!(
                    user = user.0,
                    device = device.0,
                    jobs = ids.len(),
                    "jobs cancelled"
                );
                ctx.queue.remove(&ids)?;
            }
        }
        ToPushd::FeedbackDone { ids } => ctx.queue.feedback_done(&ids)?,
    }
    Ok(())
}
