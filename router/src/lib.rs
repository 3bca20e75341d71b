//! The shard mesh: who owns what, and how shards talk.
//!
//! - [`shard_of_user`] / [`shard_of_conv`]: ownership, a fixed 64-bit hash of
//!   the id modulo the shard count. The owner is the only writer of that
//!   user's sessions or that conversation's seqs.
//! - [`mesh`]: one [`Link`] per shard. Between every ordered pair of shards
//!   (a shard to itself included) there is one bounded lock-free FIFO queue
//!   (crossbeam `ArrayQueue`), so messages from one shard to another arrive in
//!   the order they were sent. A full queue hands the message back
//!   ([`Full`]): back-pressure, never an unbounded buffer, never a blocked
//!   thread.
//! - Wake-ups are batched: [`Link::try_send`] only marks the destination;
//!   [`Link::flush`] (once per event-loop tick) wakes each marked shard once,
//!   through its registered `std::task::Waker`. The receiver's runtime
//!   decides what a wake costs (monoio's cross-thread wake writes an eventfd
//!   only when the thread is parked).
//!
//! What it is not: it knows nothing of messages' meaning, does no I/O, and
//! never touches disk. Routing across hosts (later) goes behind this same
//! interface.
#![forbid(unsafe_code)]

mod mesh;
mod owner;

pub use mesh::{Full, Link, mesh};
pub use owner::{ShardId, shard_of_conv, shard_of_user};
