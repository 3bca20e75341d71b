//! The bridge between shards and the store: shards never touch the disk.
//!
//! - Writes: a shard submits a `WriteRequest` whose sink is its [`Inbox`];
//!   the storage writer pushes each completion there and wakes the shard once
//!   per group commit.
//! - Reads: a shard hands a closure to the [`ReadPool`]; one of its threads
//!   runs it against the store and pushes the closure's result into the
//!   shard's inbox.
//!
//! Bounds: an inbox holds at most `capacity` events, and a shard keeps at
//! most that many storage operations in flight ([`Inbox::try_reserve`]), so
//! a storage thread never finds an inbox full and never blocks on a shard.
//! The read queue is bounded too: a full one hands the job back.

use std::cell::Cell;
use std::sync::Arc;
use std::task::Poll;
use std::thread::JoinHandle;

use atomic_waker::AtomicWaker;
use std::collections::VecDeque;
use std::sync::{Condvar, Mutex, PoisonError};

use crossbeam_queue::ArrayQueue;
use storage::{Completion, CompletionSink, Store};

/// Events for one shard from storage threads.
pub struct Inbox<E> {
    queue: ArrayQueue<E>,
    waker: AtomicWaker,
}

impl<E> Inbox<E> {
    pub fn new(capacity: usize) -> Arc<Inbox<E>> {
        Arc::new(Inbox {
            queue: ArrayQueue::new(capacity.max(1)),
            waker: AtomicWaker::new(),
        })
    }

    /// Pushes an event reserved with [`Slots::try_reserve`] (no wake-up).
    fn push(&self, event: E) {
        // Every push was reserved by the shard, so there is room.
        if self.queue.push(event).is_err() {
            unreachable!("an inbox push without a reservation");
        }
    }

    fn wake(&self) {
        self.waker.wake();
    }

    /// Takes the next event, if any.
    pub fn pop(&self) -> Option<E> {
        self.queue.pop()
    }

    /// Waits until an event is waiting.
    pub async fn ready(&self) {
        std::future::poll_fn(|cx| self.poll_ready(cx)).await;
    }

    /// Ready when an event is waiting; otherwise registers the task to be
    /// woken by the next push.
    pub fn poll_ready(&self, cx: &mut std::task::Context<'_>) -> Poll<()> {
        if !self.queue.is_empty() {
            return Poll::Ready(());
        }
        self.waker.register(cx.waker());
        // A push may have landed between the check and the registration.
        if self.queue.is_empty() {
            Poll::Pending
        } else {
            Poll::Ready(())
        }
    }
}

impl<E> std::fmt::Debug for Inbox<E> {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Inbox")
            .field("len", &self.queue.len())
            .finish_non_exhaustive()
    }
}

/// The shard-side count of operations in flight towards one inbox.
#[derive(Debug)]
pub struct Slots {
    used: Cell<usize>,
    capacity: usize,
}

impl Slots {
    pub fn new(capacity: usize) -> Slots {
        Slots {
            used: Cell::new(0),
            capacity: capacity.max(1),
        }
    }

    /// Claims room for one future event; `false` means back-pressure.
    pub fn try_reserve(&self) -> bool {
        if self.used.get() == self.capacity {
            return false;
        }
        self.used.set(self.used.get() + 1);
        true
    }

    /// Returns the room of an event that was popped (or never submitted).
    pub fn release(&self) {
        debug_assert!(self.used.get() > 0, "release without a reservation");
        self.used.set(self.used.get().saturating_sub(1));
    }

    pub fn in_flight(&self) -> usize {
        self.used.get()
    }
}

/// Delivers write completions into a shard's inbox.
#[derive(Debug)]
pub struct InboxSink<E>(pub Arc<Inbox<E>>);

impl<E: From<Completion> + Send> CompletionSink for InboxSink<E> {
    fn complete(&self, done: Vec<Completion>) {
        for c in done {
            self.0.push(E::from(c));
        }
        self.0.wake();
    }
}

type Job<E> = Box<dyn FnOnce(&Store) -> E + Send>;

struct ReadJob<E> {
    inbox: Arc<Inbox<E>>,
    job: Job<E>,
}

/// The read queue: a mutex-guarded deque and a condvar. A reader that finds
/// it empty sleeps on the condvar at once (a channel's spin-then-yield
/// backoff costs a `sched_yield` storm per job at low rates), and a submit
/// wakes a reader only if one is asleep.
struct JobQueue<E> {
    state: Mutex<QueueState<E>>,
    ready: Condvar,
    capacity: usize,
}

struct QueueState<E> {
    jobs: VecDeque<ReadJob<E>>,
    /// Readers asleep on `ready`.
    sleeping: usize,
    /// The pool is dropping: readers finish the queue, then exit.
    stopping: bool,
}

impl<E> JobQueue<E> {
    fn lock(&self) -> std::sync::MutexGuard<'_, QueueState<E>> {
        // A reader panicking inside a job does not hold the lock; a
        // poisoned queue is still consistent.
        self.state.lock().unwrap_or_else(PoisonError::into_inner)
    }

    fn try_push(&self, job: ReadJob<E>) -> Result<(), ReadRefused> {
        let mut state = self.lock();
        if state.stopping || state.jobs.len() >= self.capacity {
            return Err(ReadRefused);
        }
        state.jobs.push_back(job);
        let wake = state.sleeping > 0;
        drop(state);
        if wake {
            self.ready.notify_one();
        }
        Ok(())
    }

    /// The next job, or `None` once stopping and empty.
    fn pop(&self) -> Option<ReadJob<E>> {
        let mut state = self.lock();
        loop {
            if let Some(job) = state.jobs.pop_front() {
                return Some(job);
            }
            if state.stopping {
                return None;
            }
            state.sleeping += 1;
            state = self
                .ready
                .wait(state)
                .unwrap_or_else(PoisonError::into_inner);
            state.sleeping -= 1;
        }
    }

    fn stop(&self) {
        self.lock().stopping = true;
        self.ready.notify_all();
    }
}

/// Threads that run blocking reads for the shards.
pub struct ReadPool<E> {
    queue: Arc<JobQueue<E>>,
    threads: Vec<JoinHandle<()>>,
}

impl<E: Send + 'static> ReadPool<E> {
    /// Starts `threads` readers sharing a queue of `queue_depth` jobs.
    pub fn start(
        store: &Store,
        threads: usize,
        queue_depth: usize,
    ) -> std::io::Result<ReadPool<E>> {
        let queue = Arc::new(JobQueue {
            state: Mutex::new(QueueState {
                jobs: VecDeque::new(),
                sleeping: 0,
                stopping: false,
            }),
            ready: Condvar::new(),
            capacity: queue_depth.max(1),
        });
        let threads = (0..threads.max(1))
            .map(|i| {
                let (store, queue) = (store.clone(), queue.clone());
                std::thread::Builder::new()
                    .name(format!("storage-reader-{i}"))
                    .spawn(move || read_loop(&store, &queue))
            })
            .collect::<std::io::Result<Vec<_>>>()?;
        Ok(ReadPool { queue, threads })
    }

    /// A handle shards use to submit reads.
    pub fn handle(&self) -> ReadHandle<E> {
        ReadHandle {
            queue: self.queue.clone(),
        }
    }
}

impl<E> std::fmt::Debug for ReadPool<E> {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("ReadPool")
            .field("threads", &self.threads.len())
            .finish_non_exhaustive()
    }
}

impl<E> Drop for ReadPool<E> {
    fn drop(&mut self) {
        // Queued reads run first; shards may still hold handles, whose
        // later submissions are refused.
        self.queue.stop();
        for t in self.threads.drain(..) {
            if t.join().is_err() {
                tracing::error!("a storage reader thread panicked");
            }
        }
    }
}

fn read_loop<E>(store: &Store, queue: &JobQueue<E>) {
    while let Some(ReadJob { inbox, job }) = queue.pop() {
        inbox.push(job(store));
        inbox.wake();
    }
}

/// Submits reads to a [`ReadPool`]; cheap to clone, one per shard.
pub struct ReadHandle<E> {
    queue: Arc<JobQueue<E>>,
}

impl<E> std::fmt::Debug for ReadHandle<E> {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("ReadHandle")
            .field("queued", &self.queue.lock().jobs.len())
            .finish()
    }
}

impl<E> Clone for ReadHandle<E> {
    fn clone(&self) -> Self {
        ReadHandle {
            queue: self.queue.clone(),
        }
    }
}

/// A read refused because the read queue is full or the pool has stopped.
#[derive(Debug)]
pub struct ReadRefused;

impl<E> ReadHandle<E> {
    /// Queues `job`, whose result goes to `inbox`. The caller has reserved a
    /// slot for it; on refusal it must release that slot.
    pub fn try_read(
        &self,
        inbox: &Arc<Inbox<E>>,
        job: impl FnOnce(&Store) -> E + Send + 'static,
    ) -> Result<(), ReadRefused> {
        self.queue.try_push(ReadJob {
            inbox: inbox.clone(),
            job: Box::new(job),
        })
    }
}

#[cfg(test)]
mod tests {
    use std::task::{Context, Wake, Waker};
    use std::time::{Duration, Instant};

    use protocol::{Content, ConvId, DeviceId, Message, MsgId, Seq, UnixMillis, UserId};
    use storage::{Op, WriteRequest};

    use super::*;

    #[derive(Debug)]
    enum Event {
        Written(u64, bool),
        LastSeq(Seq),
    }

    impl From<Completion> for Event {
        fn from(c: Completion) -> Event {
            Event::Written(c.ticket, c.result.is_ok())
        }
    }

    struct Unpark(std::thread::Thread);

    impl Wake for Unpark {
        fn wake(self: Arc<Self>) {
            self.0.unpark();
        }
    }

    /// Waits (bounded) for the next event the way a shard would.
    fn next(inbox: &Inbox<Event>) -> Event {
        let waker = Waker::from(Arc::new(Unpark(std::thread::current())));
        let mut cx = Context::from_waker(&waker);
        let deadline = Instant::now() + Duration::from_secs(10);
        loop {
            if let Some(e) = inbox.pop() {
                return e;
            }
            let ready = std::pin::pin!(inbox.ready()).as_mut().poll(&mut cx);
            if ready.is_pending() {
                assert!(
                    Instant::now() < deadline,
                    "no event within 10 s: a lost wake-up"
                );
                std::thread::park_timeout(Duration::from_millis(100));
            }
        }
    }

    fn msg(seq: u64) -> Message {
        Message {
            conv: ConvId(1),
            seq: Seq(seq),
            id: MsgId(seq),
            from: UserId(1),
            device: DeviceId(1),
            ts: UnixMillis(0),
            content: Content::Text("hi".into()),
        }
    }

    #[test]
    fn writes_and_reads_come_back_through_the_inbox() {
        let dir = tempfile::tempdir().unwrap();
        let store = Store::open(storage::Config::new(dir.path())).unwrap();
        let inbox = Inbox::<Event>::new(8);
        let slots = Slots::new(8);
        let sink: Arc<dyn CompletionSink> = Arc::new(InboxSink(inbox.clone()));
        for seq in 1..=3 {
            assert!(slots.try_reserve());
            let ops = vec![Op::Append {
                msg: msg(seq),
                dedupe: None,
            }];
            store
                .try_submit(WriteRequest::new(ops, seq, sink.clone()))
                .unwrap();
        }
        let mut tickets = Vec::new();
        for _ in 0..3 {
            let Event::Written(t, ok) = next(&inbox) else {
                panic!("want a write completion")
            };
            assert!(ok);
            tickets.push(t);
            slots.release();
        }
        assert_eq!(tickets, [1, 2, 3]);

        let pool = ReadPool::<Event>::start(&store, 2, 4).unwrap();
        assert!(slots.try_reserve());
        pool.handle()
            .try_read(&inbox, |s| Event::LastSeq(s.last_seq(ConvId(1)).unwrap()))
            .unwrap();
        assert!(matches!(next(&inbox), Event::LastSeq(Seq(3))));
        slots.release();
        assert_eq!(slots.in_flight(), 0);
    }

    #[test]
    fn slots_bound_what_is_in_flight() {
        let slots = Slots::new(2);
        assert!(slots.try_reserve());
        assert!(slots.try_reserve());
        assert!(!slots.try_reserve(), "a third reservation is back-pressure");
        slots.release();
        assert!(slots.try_reserve());
    }

    #[test]
    fn a_full_read_queue_refuses() {
        let dir = tempfile::tempdir().unwrap();
        let store = Store::open(storage::Config::new(dir.path())).unwrap();
        let inbox = Inbox::<Event>::new(64);
        let pool = ReadPool::<Event>::start(&store, 1, 1).unwrap();
        let (block_tx, block_rx) = crossbeam_channel::bounded::<()>(0);
        // Occupy the only reader, fill the one-slot queue, then overflow it.
        pool.handle()
            .try_read(&inbox, move |_| {
                let _ = block_rx.recv_timeout(Duration::from_secs(10));
                Event::LastSeq(Seq(0))
            })
            .unwrap();
        let deadline = Instant::now() + Duration::from_secs(10);
        while pool
            .handle()
            .try_read(&inbox, |_| Event::LastSeq(Seq(1)))
            .is_err()
        {
            assert!(Instant::now() < deadline);
            std::thread::sleep(Duration::from_millis(1));
        }
        assert!(
            pool.handle()
                .try_read(&inbox, |_| Event::LastSeq(Seq(2)))
                .is_err()
        );
        block_tx.send(()).unwrap();
        assert!(matches!(next(&inbox), Event::LastSeq(Seq(0))));
        assert!(matches!(next(&inbox), Event::LastSeq(Seq(1))));
    }

    #[test]
    fn dropping_the_pool_stops_its_readers_while_handles_live() {
        let dir = tempfile::tempdir().unwrap();
        let store = Store::open(storage::Config::new(dir.path())).unwrap();
        let inbox = Inbox::<Event>::new(8);
        let pool = ReadPool::<Event>::start(&store, 2, 4).unwrap();
        let handle = pool.handle();
        handle.try_read(&inbox, |_| Event::LastSeq(Seq(7))).unwrap();
        let (done_tx, done_rx) = crossbeam_channel::bounded(1);
        std::thread::spawn(move || {
            drop(pool);
            let _ = done_tx.send(());
        });
        done_rx
            .recv_timeout(Duration::from_secs(10))
            .expect("the pool's drop returns although a shard still holds a handle");
        assert!(
            matches!(next(&inbox), Event::LastSeq(Seq(7))),
            "queued reads ran first"
        );
        assert!(handle.try_read(&inbox, |_| Event::LastSeq(Seq(8))).is_err());
    }
}
