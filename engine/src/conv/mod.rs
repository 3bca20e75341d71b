//! The conversation owner, sans-IO: what a shard does for the conversations
//! it owns (`router::shard_of_conv`). It checks membership, dedupes resends
//! by `(sender device, client_msg_id)`, assigns `seq = last + 1` in arrival
//! order, asks for the write, and once the write is durable acks the sender
//! and fans the message out. It does no I/O: inputs are method calls, outputs
//! are [`Action`]s the shard carries out (storage reads and writes, router
//! messages), and their results come back as more inputs.
//!
//! Ordering: appends to one conversation are processed strictly in arrival
//! order. Each waits for its dedupe lookup (reads may complete in any order),
//! but seqs are assigned only at the head of the queue, so per-sender send
//! order is the seq order.

use std::collections::{HashMap, VecDeque};
use std::rc::Rc;

use protocol::{
    ClientMsgId, Content, ConvId, DeviceId, ErrorCode, Message, MsgId, Seq, UnixMillis, UserId,
};
use storage::{Conversation, Membership, SendOutcome};

/// Who sent an append, and where to answer.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Sender {
    pub user: UserId,
    pub device: DeviceId,
    /// The sender's home shard (where its connection lives).
    pub shard: u16,
    /// The connection on that shard.
    pub conn: u64,
}

/// One `send` from a client, as the conversation owner receives it.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Append {
    pub conv: ConvId,
    pub sender: Sender,
    pub cmid: ClientMsgId,
    pub body: Rc<str>,
}

/// A dedupe key: the sending device and its client message id.
type SendKey = (UserId, DeviceId, ClientMsgId);

fn key(a: &Append) -> SendKey {
    (a.sender.user, a.sender.device, a.cmid)
}

/// What the shard must do.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum Action {
    /// Read the conversation (metadata, members, last seq) and call
    /// [`Owner::on_loaded`].
    Load(ConvId),
    /// Look up an earlier outcome of this send and call [`Owner::on_lookup`].
    Lookup {
        conv: ConvId,
        user: UserId,
        device: DeviceId,
        cmid: ClientMsgId,
    },
    /// Commit the message (with its dedupe record) and call
    /// [`Owner::on_written`] when the write completes.
    Write { msg: Rc<Message>, cmid: ClientMsgId },
    /// Tell the sender its message is durable at `outcome`.
    Ack {
        to: Sender,
        cmid: ClientMsgId,
        outcome: SendOutcome,
    },
    /// Tell the sender its send failed.
    Refuse {
        to: Sender,
        cmid: ClientMsgId,
        code: ErrorCode,
    },
    /// Deliver the message to every member's devices (the sender's other
    /// devices too); the shard groups `members` by home shard.
    Deliver {
        msg: Rc<Message>,
        members: Rc<[UserId]>,
    },
}

/// A loaded conversation, as the store returned it.
#[derive(Clone, Debug)]
pub struct Loaded {
    pub meta: Conversation,
    pub members: Vec<(UserId, Membership)>,
    pub last_seq: Seq,
}

/// Bounds of one owner's memory.
#[derive(Clone, Copy, Debug)]
pub struct OwnerLimits {
    /// Appends queued in one conversation (waiting for load, lookup or their
    /// turn). Past it, new appends are refused with `overloaded`.
    pub queue_max: usize,
    /// Recent send outcomes remembered per conversation, answering resends
    /// without a storage lookup.
    pub recent_max: usize,
}

impl Default for OwnerLimits {
    fn default() -> OwnerLimits {
        OwnerLimits {
            queue_max: 4096,
            recent_max: 256,
        }
    }
}

/// How far a queued append's dedupe lookup has got.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Default)]
enum Lookup {
    #[default]
    NotSent,
    Sent,
    Done(Option<SendOutcome>),
}

#[derive(Debug)]
struct Queued {
    append: Append,
    ts: UnixMillis,
    lookup: Lookup,
}

#[derive(Debug, Default)]
struct Conv {
    members: Rc<[UserId]>,
    last_seq: Seq,
    load: Lookup,
    queue: VecDeque<Queued>,
    /// Sends written but not yet durable, with resends waiting on them.
    in_flight: HashMap<SendKey, Vec<Sender>>,
    /// Messages written but not yet durable, by seq.
    writing: HashMap<Seq, (Rc<Message>, Sender, ClientMsgId)>,
    /// Recently committed outcomes, oldest first.
    recent: VecDeque<(SendKey, SendOutcome)>,
}

impl Conv {
    fn recent(&self, k: &SendKey) -> Option<SendOutcome> {
        self.recent
            .iter()
            .rev()
            .find(|(rk, _)| rk == k)
            .map(|(_, o)| *o)
    }
}

/// Every conversation one shard owns that has been touched.
///
/// Storage operations are paid for with credits: the shard grants as many
/// as it can have in flight ([`Owner::new`]); each `Load`, `Lookup` and
/// `Write` action takes one, and each `on_loaded`, `on_lookup` and
/// `on_written` call gives it back. Without credit, work waits in the
/// conversation's queue, which is bounded (`queue_max`): the shard never
/// has more storage work in flight than it granted.
#[derive(Debug)]
pub struct Owner {
    convs: HashMap<ConvId, Conv>,
    limits: OwnerLimits,
    /// Folded into message ids so they are unique across shards.
    shard: u16,
    /// The millisecond and counter of the last message id (see `next_id`).
    id_clock: (u64, u64),
    credits: usize,
    /// Conversations with work waiting for credit, in the order they ran out.
    starved: VecDeque<ConvId>,
    actions: VecDeque<Action>,
}

impl Owner {
    pub fn new(shard: u16, limits: OwnerLimits, credits: usize) -> Owner {
        Owner {
            convs: HashMap::new(),
            limits,
            shard,
            id_clock: (0, 0),
            credits,
            starved: VecDeque::new(),
            actions: VecDeque::new(),
        }
    }

    /// The next action to carry out, in order.
    pub fn poll_action(&mut self) -> Option<Action> {
        self.actions.pop_front()
    }

    /// Conversations held in memory.
    pub fn conv_count(&self) -> usize {
        self.convs.len()
    }

    /// A `send` arrived; `now` stamps the message if it is accepted.
    pub fn on_append(&mut self, append: Append, now: UnixMillis) {
        let conv_id = append.conv;
        let conv = self.convs.entry(conv_id).or_default();
        if conv.queue.len() >= self.limits.queue_max {
            let (to, cmid) = (append.sender, append.cmid);
            self.actions.push_back(Action::Refuse {
                to,
                cmid,
                code: ErrorCode::Overloaded,
            });
            return;
        }
        conv.queue.push_back(Queued {
            append,
            ts: now,
            lookup: Lookup::NotSent,
        });
        self.pump(conv_id);
    }

    /// The conversation's load finished; `None` means it does not exist.
    pub fn on_loaded(&mut self, conv_id: ConvId, loaded: Option<Loaded>) {
        self.credits += 1;
        if let Some(conv) = self.convs.get_mut(&conv_id) {
            conv.load = Lookup::Done(None);
            if let Some(l) = loaded {
                conv.members = l.members.iter().map(|(u, _)| *u).collect();
                conv.last_seq = l.last_seq;
            }
            self.pump(conv_id);
        }
        self.feed_starved();
    }

    /// A dedupe lookup finished.
    pub fn on_lookup(&mut self, conv_id: ConvId, k: SendKey, found: Option<SendOutcome>) {
        self.credits += 1;
        if let Some(conv) = self.convs.get_mut(&conv_id) {
            let q = conv
                .queue
                .iter_mut()
                .find(|q| key(&q.append) == k && q.lookup == Lookup::Sent);
            if let Some(q) = q {
                q.lookup = Lookup::Done(found);
            }
            self.pump(conv_id);
        }
        self.feed_starved();
    }

    /// The write of `seq` completed. On success the sender (and any resend
    /// waiting on it) is acked and the message fanned out; on failure they
    /// are refused with `internal` (the store is poisoned: the process
    /// should stop).
    pub fn on_written(&mut self, conv_id: ConvId, seq: Seq, ok: bool) {
        self.credits += 1;
        self.finish_write(conv_id, seq, ok);
        if let Some(conv) = self.convs.get(&conv_id)
            && !conv.queue.is_empty()
        {
            self.pump(conv_id);
        }
        self.feed_starved();
    }

    fn finish_write(&mut self, conv_id: ConvId, seq: Seq, ok: bool) {
        let Some(conv) = self.convs.get_mut(&conv_id) else {
            return;
        };
        let Some((msg, sender, cmid)) = conv.writing.remove(&seq) else {
            return;
        };
        let k = (sender.user, sender.device, cmid);
        let waiters = conv.in_flight.remove(&k).unwrap_or_default();
        let everyone = std::iter::once(sender).chain(waiters);
        if !ok {
            for to in everyone {
                self.actions.push_back(Action::Refuse {
                    to,
                    cmid,
                    code: ErrorCode::Internal,
                });
            }
            return;
        }
        let outcome = SendOutcome {
            conv: conv_id,
            seq,
            id: msg.id,
            ts: msg.ts,
        };
        conv.recent.push_back((k, outcome));
        if conv.recent.len() > self.limits.recent_max {
            conv.recent.pop_front();
        }
        for to in everyone {
            self.actions.push_back(Action::Ack { to, cmid, outcome });
        }
        self.actions.push_back(Action::Deliver {
            msg,
            members: conv.members.clone(),
        });
    }

    /// Gives returned credit to conversations that were waiting for it.
    fn feed_starved(&mut self) {
        while self.credits > 0 {
            let Some(conv_id) = self.starved.pop_front() else {
                return;
            };
            self.pump(conv_id);
        }
    }

    fn take_credit(&mut self) -> bool {
        if self.credits == 0 {
            return false;
        }
        self.credits -= 1;
        true
    }

    /// Moves one conversation forward as far as credit allows: its load,
    /// then its lookups, then its head appends in order.
    fn pump(&mut self, conv_id: ConvId) {
        if !self.send_reads(conv_id) {
            self.starve(conv_id);
            return;
        }
        loop {
            let Some(conv) = self.convs.get_mut(&conv_id) else {
                return;
            };
            let Some(Lookup::Done(stored)) = conv.queue.front().map(|q| q.lookup) else {
                return;
            };
            let k = key(&conv.queue[0].append);
            if let Some(outcome) = stored.or_else(|| conv.recent(&k)) {
                let a = conv.queue.pop_front().expect("the front exists").append;
                self.actions.push_back(Action::Ack {
                    to: a.sender,
                    cmid: a.cmid,
                    outcome,
                });
            } else if let Some(waiters) = conv.in_flight.get_mut(&k) {
                let a = conv.queue.pop_front().expect("the front exists").append;
                waiters.push(a.sender);
            } else if !conv.members.contains(&k.0) {
                let a = conv.queue.pop_front().expect("the front exists").append;
                let code = ErrorCode::Forbidden;
                self.actions.push_back(Action::Refuse {
                    to: a.sender,
                    cmid: a.cmid,
                    code,
                });
            } else if self.take_credit() {
                self.write_head(conv_id);
            } else {
                self.starve(conv_id);
                return;
            }
        }
    }

    /// Sends the load and any unsent lookups; `false` if credit ran out.
    fn send_reads(&mut self, conv_id: ConvId) -> bool {
        let Some(conv) = self.convs.get(&conv_id) else {
            return true;
        };
        match conv.load {
            Lookup::Sent => return true,
            Lookup::NotSent => {
                if !self.take_credit() {
                    return false;
                }
                let conv = self.convs.get_mut(&conv_id).expect("checked above");
                conv.load = Lookup::Sent;
                self.actions.push_back(Action::Load(conv_id));
                return true;
            }
            Lookup::Done(_) => {}
        }
        let unsent = conv
            .queue
            .iter()
            .filter(|q| q.lookup == Lookup::NotSent)
            .count();
        for _ in 0..unsent {
            if !self.take_credit() {
                return false;
            }
            let conv = self.convs.get_mut(&conv_id).expect("checked above");
            let q = conv
                .queue
                .iter_mut()
                .find(|q| q.lookup == Lookup::NotSent)
                .expect("counted above");
            q.lookup = Lookup::Sent;
            let a = &q.append;
            self.actions.push_back(Action::Lookup {
                conv: conv_id,
                user: a.sender.user,
                device: a.sender.device,
                cmid: a.cmid,
            });
        }
        true
    }

    fn starve(&mut self, conv_id: ConvId) {
        if !self.starved.contains(&conv_id) {
            self.starved.push_back(conv_id);
        }
    }

    /// Assigns the next seq to the queue head and asks for its write.
    fn write_head(&mut self, conv_id: ConvId) {
        let conv = self.convs.get_mut(&conv_id).expect("the caller found it");
        let q = conv.queue.pop_front().expect("the caller saw the front");
        let a = q.append;
        let seq = conv.last_seq.next();
        conv.last_seq = seq;
        let id = next_id(&mut self.id_clock, self.shard, q.ts);
        let conv = self.convs.get_mut(&conv_id).expect("the caller found it");
        let msg = Rc::new(Message {
            conv: conv_id,
            seq,
            id,
            from: a.sender.user,
            device: a.sender.device,
            ts: q.ts,
            content: Content::Text(a.body.to_string()),
        });
        conv.in_flight.insert(key(&a), Vec::new());
        conv.writing.insert(seq, (msg.clone(), a.sender, a.cmid));
        self.actions.push_back(Action::Write { msg, cmid: a.cmid });
    }
}

/// Message ids are snowflakes: milliseconds (42 bits), shard (10 bits),
/// counter (12 bits). The clock never goes back within a shard's run: past
/// 4,096 ids in one millisecond it borrows the next millisecond.
fn next_id(clock: &mut (u64, u64), shard: u16, now: UnixMillis) -> MsgId {
    let (ms, counter) = clock;
    if now.0 > *ms {
        *ms = now.0;
        *counter = 0;
    } else {
        *counter += 1;
        if *counter == 1 << 12 {
            *ms += 1;
            *counter = 0;
        }
    }
    MsgId(((*ms & ((1 << 42) - 1)) << 22) | ((u64::from(shard) & 0x3ff) << 12) | *counter)
}

#[cfg(test)]
mod test;
