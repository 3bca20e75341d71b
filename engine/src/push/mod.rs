//! Push notifications, engine side: coalescing per shard, the durable
//! outbox, and the forwarder that streams due jobs to pushd.
//!
//! A delivery to a user's home shard finds the user's devices with a push
//! token that have no connection there; each gets a job per conversation
//! ([`coalesce`]), written to the outbox at once. When its window closes the
//! shard hands it to the [`forwarder`] thread, which fills in the unread
//! count, sends it to pushd over the Unix socket and deletes the record only
//! after pushd answers `Stored`. A device that reconnects drops its open jobs
//! and cancels the ones pushd still holds. Tokens pushd reports as invalid are
//! removed from the device, and the home shard's cache forgets them.

pub mod coalesce;
pub mod forwarder;

use std::sync::Arc;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};

use crossbeam_channel::{Receiver, Sender, TrySendError};
use crossbeam_queue::ArrayQueue;
use protocol::push::Job;
use protocol::{DeviceId, UnixMillis, UserId};

/// Jobs and cancellations queued from the shards to the forwarder. Past
/// it, a due job stays in the outbox and the forwarder finds it by a scan.
pub const FORWARD_QUEUE_MAX: usize = 65_536;

/// Invalid-token notices queued per shard; past it the shard's whole
/// device cache is dropped instead (it reloads from the store).
pub const FEEDBACK_QUEUE_MAX: usize = 4096;

/// From a shard to the forwarder.
#[derive(Debug)]
pub enum Forward {
    Due(Job),
    /// The device is back: pushd drops its jobs created before `before`.
    Cancel {
        user: UserId,
        device: DeviceId,
        before: UnixMillis,
    },
}

/// A token pushd reported invalid, for the device's home shard's cache.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Gone {
    pub user: UserId,
    pub device: DeviceId,
    pub token: String,
}

/// The forwarder's counters, for `/metrics` (the shards' own push counters
/// are in their `ShardStats`).
#[derive(Debug, Default)]
pub struct PushStats {
    /// Jobs sent to pushd (a job offered again counts again).
    pub forwarded: AtomicU64,
    /// Jobs pushd acknowledged as stored.
    pub acked: AtomicU64,
    /// Jobs skipped because the user had read the conversation elsewhere.
    pub read_elsewhere: AtomicU64,
    /// Tokens removed after pushd reported them invalid.
    pub invalid_tokens: AtomicU64,
    /// Whether the forwarder has a link to pushd (0 or 1).
    pub linked: AtomicU64,
    /// Outbox records found at start, and removed by the forwarder since
    /// (the depth adds the shards' writes and removals).
    pub outbox_found: AtomicU64,
    pub outbox_removed: AtomicU64,
}

/// What the shards and the forwarder share.
#[derive(Debug)]
pub struct PushShared {
    tx: Sender<Forward>,
    /// Per shard: tokens to forget.
    gone: Box<[ArrayQueue<Gone>]>,
    /// Per shard: the feedback queue overflowed; drop the device cache.
    gone_overflow: Box<[AtomicBool]>,
    /// A due job or cancellation did not fit the queue: the forwarder scans
    /// the outbox.
    pub rescan: AtomicBool,
    pub stats: PushStats,
}

impl PushShared {
    /// The shared state for `shards` shards, and the forwarder's end of the queue.
    pub fn new(shards: u16) -> (Arc<PushShared>, Receiver<Forward>) {
        let (tx, rx) = crossbeam_channel::bounded(FORWARD_QUEUE_MAX);
        let shared = PushShared {
            tx,
            gone: (0..shards)
                .map(|_| ArrayQueue::new(FEEDBACK_QUEUE_MAX))
                .collect(),
            gone_overflow: (0..shards).map(|_| AtomicBool::new(false)).collect(),
            rescan: AtomicBool::new(false),
            stats: PushStats::default(),
        };
        (Arc::new(shared), rx)
    }

    /// Queues for the forwarder; a full queue sets the rescan flag.
    pub fn forward(&self, f: Forward) {
        match self.tx.try_send(f) {
            Ok(()) => {}
            Err(TrySendError::Full(_)) => self.rescan.store(true, Ordering::Release),
            Err(TrySendError::Disconnected(_)) => {
                tracing::warn!("push forwarder gone; the job stays in the outbox");
            }
        }
    }

    /// Tells `shard` to forget a token.
    pub fn token_gone(&self, shard: u16, gone: Gone) {
        let i = usize::from(shard);
        if self.gone[i].push(gone).is_err() {
            self.gone_overflow[i].store(true, Ordering::Release);
        }
    }

    /// The next token `shard` must forget; `Err(())` when the shard must
    /// drop its whole cache.
    #[allow(clippy::result_unit_err)] // Reason: one meaning, documented above.
    pub fn next_gone(&self, shard: u16) -> Result<Option<Gone>, ()> {
        let i = usize::from(shard);
        if self.gone_overflow[i].swap(false, Ordering::AcqRel) {
            while self.gone[i].pop().is_some() {}
            return Err(());
        }
        Ok(self.gone[i].pop())
    }
}

pub(crate) fn bump(c: &AtomicU64, n: u64) {
    c.fetch_add(n, Ordering::Relaxed);
}
