//! Process-wide shutdown: any thread requests it, every shard wakes.

use std::sync::atomic::{AtomicBool, Ordering};
use std::task::Poll;

use atomic_waker::AtomicWaker;

/// Shared by the signal handler thread and the shards.
#[derive(Debug)]
pub struct Shutdown {
    requested: AtomicBool,
    wakers: Vec<AtomicWaker>,
}

impl Shutdown {
    pub fn new(shards: u16) -> Shutdown {
        Shutdown {
            requested: AtomicBool::new(false),
            wakers: (0..shards).map(|_| AtomicWaker::new()).collect(),
        }
    }

    /// Asks every shard to stop; idempotent.
    pub fn request(&self) {
        self.requested.store(true, Ordering::Release);
        for w in &self.wakers {
            w.wake();
        }
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
