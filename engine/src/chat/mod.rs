//! Chat: what a shard does with authenticated WebSocket sessions.
//!
//! Each shard has one [`Hub`]. It is two things at once:
//! - the **home** of the users `router::shard_of_user` gives it: their
//!   sessions (`session.rs`), their catch-up machines, their presence
//!   (`presence.rs`);
//! - the **owner** of the conversations `router::shard_of_conv` gives it: a
//!   `conv::Owner` that assigns seqs and fans out.
//!
//! Everything between shards is a [`ShardMsg`] on the router mesh, to self
//! included, so a shard handles a local and a remote peer the same way.
//! Storage work goes to the storage threads through `store_io` and comes
//! back as a [`StoreEvent`] in the shard's inbox (`pump.rs` is the loop that
//! reads both). Reads are closures in `jobs.rs`.
//!
//! Back-pressure: a client's request that cannot be queued to its
//! destination shard is refused with the retryable `overloaded` error. What
//! a shard must pass on (acks, deliveries, receipts) waits in a per-shard
//! backlog of `BACKLOG_MAX` messages when the router queue is full; past
//! that it is dropped and counted, which costs a live delivery, not data:
//! the message is durable and reaches the device by `sync` or `fetch`.

mod cursors;
mod hub;
mod jobs;
mod notify;
mod presence;
mod pump;
mod session;

use std::sync::Arc;

use protocol::token::Claims;
use protocol::{ConvId, Encoding, Message, ServerMsg, UserId};

use crate::conv::{Append, GroupRequest, Reply, Sender, Signal};
use crate::handoff::Detached;

pub(crate) use cursors::USER_ROW;
pub(crate) use hub::{AbuseLimits, Hub, HubInit, INBOX_CAPACITY, now_millis};
pub(crate) use jobs::StoreEvent;
pub(crate) use pump::pump;
pub(crate) use session::run as run_session;

/// Messages between shards.
#[derive(Debug)]
pub(crate) enum ShardMsg {
    /// An authenticated connection for a user homed on the receiving shard.
    Handoff(Box<Handoff>),
    /// To a conversation's owner: a `send`.
    Append(Append),
    /// To a conversation's owner: `direct_open`.
    OpenDirect {
        conv: ConvId,
        pair: (UserId, UserId),
        requester: UserId,
        reply: Reply,
    },
    /// To a group's owner: a `group_*` request.
    Group(GroupRequest),
    /// To a conversation's owner: `recv`, `read` or `typing`.
    Signal {
        conv: ConvId,
        from: Sender,
        signal: Signal,
    },
    /// To a home shard: a reply for one connection.
    ToConn { conn: u64, msg: ServerMsg },
    /// To a home shard: a conversation message for these users' devices.
    Deliver {
        msg: Arc<Message>,
        users: Arc<[UserId]>,
        /// The conversation is private: push without a preview.
        private: bool,
    },
    /// To a home shard: a receipt or typing notice for these users' devices.
    Relay {
        users: Arc<[UserId]>,
        msg: Arc<ServerMsg>,
    },
    /// To `target`'s home shard: `watcher` wants its presence.
    Watch { target: UserId, watcher: Watcher },
    /// To `target`'s home shard: `watcher` no longer wants its presence.
    Unwatch { target: UserId, watcher: Watcher },
}

/// A connection in transit to its home shard.
#[derive(Debug)]
pub(crate) struct Handoff {
    pub conn: Detached,
    pub claims: Claims,
    pub encoding: Encoding,
    /// The connection's place in the per-address count.
    pub ip: Option<crate::limits::IpSlot>,
}

/// A connection that watches a user's presence.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub(crate) struct Watcher {
    pub shard: u16,
    pub conn: u64,
}
