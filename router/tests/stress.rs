//! Every shard sends to every shard (itself included) from its own thread
//! through small queues, so `Full` back-pressure is hit constantly; each
//! receiver checks per-sender FIFO order and that nothing is lost, and that
//! it is never left parked with messages waiting (a lost wake-up).
#![allow(
    clippy::unwrap_used,
    reason = "test code: a failed unwrap is a failed test"
)]

use std::sync::Arc;
use std::task::{Context, Poll, Wake, Waker};
use std::thread::Thread;
use std::time::{Duration, Instant};

use router::{ShardId, mesh};

const SHARDS: u16 = 4;
const PER_PAIR: u64 = 20_000;
const DEPTH: usize = 16;
const PARK_LIMIT: Duration = Duration::from_secs(2);

struct Unpark(Thread);

impl Wake for Unpark {
    fn wake(self: Arc<Self>) {
        self.0.unpark();
    }
}

#[test]
fn all_to_all_under_backpressure_loses_nothing() {
    let links = mesh::<(u16, u64)>(SHARDS, DEPTH);
    let started = Instant::now();
    let handles: Vec<_> = links
        .into_iter()
        .map(|mut link| {
            std::thread::spawn(move || {
                let waker = Waker::from(Arc::new(Unpark(std::thread::current())));
                let mut cx = Context::from_waker(&waker);
                let me = link.me().0;
                let mut next_out = vec![0u64; usize::from(SHARDS)];
                let mut next_in = vec![0u64; usize::from(SHARDS)];
                let mut full_hits = 0u64;
                let expected = PER_PAIR * u64::from(SHARDS);
                let mut received = 0u64;
                while received < expected || next_out.iter().any(|&n| n < PER_PAIR) {
                    let mut progressed = false;
                    for to in 0..SHARDS {
                        let n = &mut next_out[usize::from(to)];
                        for _ in 0..8 {
                            if *n == PER_PAIR {
                                break;
                            }
                            if link.try_send(ShardId(to), (me, *n)).is_ok() {
                                *n += 1;
                                progressed = true;
                            } else {
                                full_hits += 1;
                                break;
                            }
                        }
                    }
                    link.flush();
                    while let Some((from, (sender, n))) = link.try_recv() {
                        assert_eq!(from.0, sender);
                        assert_eq!(n, next_in[usize::from(sender)], "FIFO from {sender}");
                        next_in[usize::from(sender)] += 1;
                        received += 1;
                        progressed = true;
                    }
                    if progressed {
                        continue;
                    }
                    let sending = next_out.iter().any(|&n| n < PER_PAIR);
                    if link.poll_incoming(&mut cx) == Poll::Pending {
                        let parked = Instant::now();
                        std::thread::park_timeout(if sending {
                            Duration::from_millis(1)
                        } else {
                            PARK_LIMIT
                        });
                        let lost = !sending
                            && parked.elapsed() >= PARK_LIMIT
                            && link.poll_incoming(&mut cx).is_ready();
                        assert!(!lost, "shard {me} parked with messages waiting");
                    }
                }
                assert!(next_in.iter().all(|&n| n == PER_PAIR));
                full_hits
            })
        })
        .collect();
    let full_hits: u64 = handles.into_iter().map(|h| h.join().unwrap()).sum();
    assert!(full_hits > 0, "the test must exercise back-pressure");
    assert!(started.elapsed() < Duration::from_secs(120));
}
