//! The write vocabulary: ops, requests, and how completions come back.

use std::sync::Arc;

use protocol::{ClientMsgId, ConvId, DeviceId, Message, UserId};

use crate::error::Error;
use crate::model::{Conversation, Cursor, Device, Membership, PushJob};

/// One change to the store. A request's ops commit atomically, in order; a
/// later write to the same key wins.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum Op {
    /// Create or replace a conversation's metadata.
    PutConv(Conversation),
    /// Append a message (or event) at `msg.seq`, which must be the
    /// conversation's last seq + 1. With `dedupe`, also records the outcome
    /// under (`msg.from`, `msg.device`, `dedupe`) for resend detection.
    Append {
        msg: Message,
        dedupe: Option<ClientMsgId>,
    },
    /// Add a member or change its role (both directions of the index).
    PutMember {
        conv: ConvId,
        user: UserId,
        membership: Membership,
    },
    /// Remove a member (both directions of the index).
    RemoveMember {
        conv: ConvId,
        user: UserId,
    },
    PutDevice {
        user: UserId,
        device: DeviceId,
        record: Device,
    },
    /// Remove a device and nothing else (its cursors stay until overwritten).
    RemoveDevice {
        user: UserId,
        device: DeviceId,
    },
    PutCursor {
        user: UserId,
        device: DeviceId,
        conv: ConvId,
        cursor: Cursor,
    },
    PutOutbox {
        id: u64,
        job: PushJob,
    },
    RemoveOutbox {
        id: u64,
    },
}

/// The result of one [`WriteRequest`].
#[derive(Debug)]
pub struct Completion {
    /// The caller's ticket from the request.
    pub ticket: u64,
    /// `Ok` once the request's ops are committed with the store's durability.
    pub result: Result<(), Error>,
}

/// Where the writer delivers completions. Called once per group commit per
/// sink with every completion for that sink in submission order, so an
/// implementation can wake its owner once per batch (one eventfd write for a
/// shard, say).
pub trait CompletionSink: Send + Sync {
    fn complete(&self, done: Vec<Completion>);
}

/// A unit of atomic work for the writer.
pub struct WriteRequest {
    pub ops: Vec<Op>,
    pub ticket: u64,
    pub sink: Arc<dyn CompletionSink>,
}

impl WriteRequest {
    pub fn new(ops: Vec<Op>, ticket: u64, sink: Arc<dyn CompletionSink>) -> WriteRequest {
        WriteRequest { ops, ticket, sink }
    }
}

impl std::fmt::Debug for WriteRequest {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("WriteRequest")
            .field("ops", &self.ops.len())
            .field("ticket", &self.ticket)
            .finish_non_exhaustive()
    }
}

/// A sink that hands each completion to a crossbeam channel, for callers on
/// ordinary threads (tools, tests, benches).
#[derive(Debug)]
pub struct ChannelSink(pub crossbeam_channel::Sender<Completion>);

impl CompletionSink for ChannelSink {
    fn complete(&self, done: Vec<Completion>) {
        for c in done {
            // A caller that stopped waiting does not care about the outcome.
            let _ = self.0.send(c);
        }
    }
}
