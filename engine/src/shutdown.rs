//! Process-wide shutdown: any thread requests it, every shard wakes.

use std::sync::atomic::{AtomicBool, AtomicUsize, Ordering};
use std::task::Poll;

use atomic_waker::AtomicWaker;

/// Shared by the signal handler thread and the shards.
#[derive(Debug)]
pub struct Shutdown {
    requested: AtomicBool,
    wakers: Vec<AtomicWaker>,
    /// Shards whose conversation owners have finished their in-flight work.
    quiesced: AtomicUsize,
}

impl Shutdown {
    pub fn new(shards: u16) -> Shutdown {
        Shutdown {
            requested: AtomicBool::new(false),
            wakers: (0..shards).map(|_| AtomicWaker::new()).collect(),
            quiesced: AtomicUsize::new(0),
        }
    }

    /// Asks every shard to stop; idempotent.
    pub fn request(&self) {
        self.requested.store(true, Ordering::Release);
        for w in &self.wakers {
            w.wake();
        }
    }

    /// A shard has no storage work of its own in flight any more.
    pub(crate) fn quiesce(&self) {
        self.quiesced.fetch_add(1, Ordering::AcqRel);
    }

    /// Every shard has quiesced: no ack or delivery is still on its way.
    pub(crate) fn all_quiesced(&self) -> bool {
        self.quiesced.load(Ordering::Acquire) >= self.wakers.len()
    }

    pub fn is_requested(&self) -> bool {
        self.requested.load(Ordering::Acquire)
    }

    /// Completes once shutdown is requested; `shard` is the caller's index.
    pub async fn requested(&self, shard: usize) {
        std::future::poll_fn(|cx| {
            if self.is_requested() {
                return Poll::Ready(());
            }
            self.wakers[shard].register(cx.waker());
            if self.is_requested() {
                Poll::Ready(())
            } else {
                Poll::Pending
            }
        })
        .await;
    }
}
