//! Bounded queues between every ordered pair of shards, with batched wake-ups.

use std::sync::Arc;
use std::task::{Context, Poll};

use atomic_waker::AtomicWaker;
use crossbeam_queue::ArrayQueue;

use crate::owner::ShardId;

/// A message refused because the destination queue is full; it is handed
/// back so the caller can apply back-pressure.
#[derive(Debug, PartialEq, Eq)]
pub struct Full<T>(pub T);

struct Mesh<T> {
    shards: usize,
    /// `queues[from * shards + to]`.
    queues: Vec<ArrayQueue<T>>,
    /// The waker of each receiving shard.
    wakers: Vec<AtomicWaker>,
}

impl<T> Mesh<T> {
    fn queue(&self, from: usize, to: usize) -> &ArrayQueue<T> {
        &self.queues[from * self.shards + to]
    }
}

/// Builds the mesh for `shards` shards, each queue holding at most `depth`
/// messages (worst case memory: `shards² × depth × size_of::<T>()`), and
/// returns each shard's [`Link`], in shard order.
///
/// # Panics
/// If `shards` is zero or `depth` is zero.
pub fn mesh<T>(shards: u16, depth: usize) -> Vec<Link<T>> {
    assert!(shards > 0, "a mesh has at least one shard");
    assert!(depth > 0, "queues hold at least one message");
    let n = usize::from(shards);
    let mesh = Arc::new(Mesh {
        shards: n,
        queues: (0..n * n).map(|_| ArrayQueue::new(depth)).collect(),
        wakers: (0..n).map(|_| AtomicWaker::new()).collect(),
    });
    (0..shards)
        .map(|i| Link {
            me: ShardId(i),
            mesh: mesh.clone(),
            dirty: vec![false; n],
            next_from: 0,
        })
        .collect()
}

/// One shard's end of the mesh. Not `Clone`: exactly one per shard, owned by
/// the shard's thread.
pub struct Link<T> {
    me: ShardId,
    mesh: Arc<Mesh<T>>,
    /// Destinations sent to since the last flush.
    dirty: Vec<bool>,
    /// Where the next receive starts, so no sender starves the others.
    next_from: usize,
}

impl<T> std::fmt::Debug for Link<T> {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Link")
            .field("me", &self.me)
            .field("shards", &self.mesh.shards)
            .finish_non_exhaustive()
    }
}

impl<T> Link<T> {
    pub fn me(&self) -> ShardId {
        self.me
    }

    pub fn shards(&self) -> u16 {
        u16::try_from(self.mesh.shards).expect("built from a u16 count")
    }

    /// Queues `msg` for shard `to` without waking it; call [`Link::flush`]
    /// before the shard next waits for events.
    pub fn try_send(&mut self, to: ShardId, msg: T) -> Result<(), Full<T>> {
        self.mesh
            .queue(self.me.index(), to.index())
            .push(msg)
            .map_err(Full)?;
        self.dirty[to.index()] = true;
        Ok(())
    }

    /// Wakes every shard sent to since the last flush, once each.
    pub fn flush(&mut self) {
        for (to, dirty) in self.dirty.iter_mut().enumerate() {
            if std::mem::take(dirty) {
                self.mesh.wakers[to].wake();
            }
        }
    }

    /// Takes one message from any sender, starting after the sender served
    /// last. Messages from one sender come out in the order they were sent.
    pub fn try_recv(&mut self) -> Option<(ShardId, T)> {
        let n = self.mesh.shards;
        for i in 0..n {
            let from = (self.next_from + i) % n;
            if let Some(msg) = self.mesh.queue(from, self.me.index()).pop() {
                self.next_from = (from + 1) % n;
                let from = u16::try_from(from).expect("built from a u16 count");
                return Some((ShardId(from), msg));
            }
        }
        None
    }

    /// Whether a message is waiting for this shard.
    pub fn has_incoming(&self) -> bool {
        let n = self.mesh.shards;
        (0..n).any(|from| !self.mesh.queue(from, self.me.index()).is_empty())
    }

    /// Ready when a message is waiting; otherwise registers the task to be
    /// woken by the next flush of a shard that sent here.
    pub fn poll_incoming(&self, cx: &mut Context<'_>) -> Poll<()> {
        if self.has_incoming() {
            return Poll::Ready(());
        }
        self.mesh.wakers[self.me.index()].register(cx.waker());
        // A sender may have pushed and flushed between the check and the
        // registration; look again so that wake-up is not lost.
        if self.has_incoming() {
            Poll::Ready(())
        } else {
            Poll::Pending
        }
    }

    /// Waits until a message is waiting for this shard.
    pub async fn incoming(&self) {
        std::future::poll_fn(|cx| self.poll_incoming(cx)).await;
    }

    /// Messages waiting in the queue from `from` to `to` (for metrics).
    pub fn depth(&self, from: ShardId, to: ShardId) -> usize {
        self.mesh.queue(from.index(), to.index()).len()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn full_queue_hands_the_message_back() {
        let mut links = mesh::<u32>(2, 2);
        let a = &mut links[0];
        assert_eq!(a.try_send(ShardId(1), 1), Ok(()));
        assert_eq!(a.try_send(ShardId(1), 2), Ok(()));
        assert_eq!(a.try_send(ShardId(1), 3), Err(Full(3)));
        // Other destinations are unaffected.
        assert_eq!(a.try_send(ShardId(0), 4), Ok(()));
        assert_eq!(a.depth(ShardId(0), ShardId(1)), 2);
    }

    #[test]
    fn fifo_per_sender_and_fair_across_senders() {
        let mut links = mesh::<u32>(3, 8);
        for v in 0..3 {
            links[0].try_send(ShardId(2), v).unwrap();
            links[1].try_send(ShardId(2), 10 + v).unwrap();
        }
        let mut got = Vec::new();
        while let Some(m) = links[2].try_recv() {
            got.push(m);
        }
        let from0: Vec<u32> = got.iter().filter(|(f, _)| f.0 == 0).map(|m| m.1).collect();
        let from1: Vec<u32> = got.iter().filter(|(f, _)| f.0 == 1).map(|m| m.1).collect();
        assert_eq!(from0, [0, 1, 2]);
        assert_eq!(from1, [10, 11, 12]);
        // Round robin: the first two messages come from different senders.
        assert_ne!(got[0].0, got[1].0);
    }

    #[test]
    fn a_shard_can_send_to_itself() {
        let mut links = mesh::<u32>(1, 4);
        links[0].try_send(ShardId(0), 7).unwrap();
        assert_eq!(links[0].try_recv(), Some((ShardId(0), 7)));
        assert_eq!(links[0].try_recv(), None);
    }
}
