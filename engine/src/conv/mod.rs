//! The conversation owner, sans-IO: what a shard does for the conversations
//! it owns (`router::shard_of_conv`). It keeps each touched conversation's
//! metadata and members, and:
//! - **appends**: checks existence (`not_found`) and membership
//!   (`forbidden`), dedupes resends by `(sender device, client_msg_id)`,
//!   assigns `seq = last + 1` in arrival order, asks for the write, and once
//!   the write is durable acks the sender and fans the message out;
//! - **direct opens**: answers with the conversation, creating a direct
//!   conversation on its first open (one create, however many opens race it);
//! - **signals** (`recv`, `read`, `typing`): checks membership, clamps and
//!   dedupes cursors, asks for cursor writes and relays receipts and typing
//!   to the other members.
//! - **group operations** (`group.rs` holds the rules): planned at their
//!   turn in the group's queue, their events take the next seqs, the change
//!   applies in memory at once, and one atomic write stores metadata,
//!   member records and events; answered and fanned out once durable.
//!
//! It does no I/O: inputs are method calls, outputs are [`Action`]s the shard
//! carries out (storage reads and writes, router messages), and their results
//! come back as more inputs. Everything in an [`Action`] is `Send`: the
//! shard hands messages and member lists to other shards' threads.
//!
//! Ordering: appends and group operations to one conversation are processed
//! strictly in arrival order. Each waits for its dedupe lookup or group
//! counts (reads may complete in any order), but seqs are assigned only at
//! the head of the queues, so per-sender send order is the seq order. Opens
//! and signals wait only for the load (and opens for a create in flight);
//! they do not queue behind appends. Idle conversations are forgotten past
//! `convs_max`.
//!
//! What it is not: it does not read history, or keep
//! cursors beyond the monotonic check (the store holds them); it does not
//! know which devices are connected (the shard expands `Deliver` and
//! `Relay`).

use std::collections::{HashMap, VecDeque};
use std::sync::Arc;

use protocol::{
    ClientMsgId, Content, ConvId, ConvInfo, ConvKind, DeviceId, ErrorCode, Member, Message, MsgId,
    ReceiptKind, RequestId, Role, Seq, ServerMsg, UnixMillis, UserId,
};
use storage::{Conversation, Membership, SendOutcome};

/// Who sent an append or a signal, and where to answer.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Sender {
    pub user: UserId,
    pub device: DeviceId,
    /// The sender's home shard (where its connection lives).
    pub shard: u16,
    /// The connection on that shard.
    pub conn: u64,
}

/// Where to answer a request (`rid`) made on connection `conn` of shard `shard`.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Reply {
    pub shard: u16,
    pub conn: u64,
    pub rid: RequestId,
}

/// One `send` from a client, as the conversation owner receives it.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Append {
    pub conv: ConvId,
    pub sender: Sender,
    pub cmid: ClientMsgId,
    pub body: Arc<str>,
}

/// A dedupe key: the sending device and its client message id.
type SendKey = (UserId, DeviceId, ClientMsgId);

fn key(a: &Append) -> SendKey {
    (a.sender.user, a.sender.device, a.cmid)
}

/// A `recv`, `read` or `typing` from a device, as the owner receives it.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Signal {
    /// The device holds every message up to this seq.
    Recv(Seq),
    /// The user has read every message up to this seq.
    Read(Seq),
    /// The user started (`true`) or stopped (`false`) typing.
    Typing(bool),
}

/// A group operation: the protocol's `group_*` requests.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum GroupOp {
    Create {
        title: String,
        members: Vec<UserId>,
    },
    Rename {
        title: String,
    },
    Add {
        users: Vec<UserId>,
    },
    Remove {
        users: Vec<UserId>,
    },
    Leave,
    SetRole {
        user: UserId,
        role: Role,
    },
    SetHistory {
        visible: bool,
    },
    /// `conv_set_private`: any conversation, not only groups.
    SetPrivate {
        private: bool,
    },
}

/// A group operation as the group's owner receives it.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct GroupRequest {
    pub conv: ConvId,
    pub by: Sender,
    pub rid: RequestId,
    pub op: GroupOp,
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
    Write {
        msg: Arc<Message>,
        cmid: ClientMsgId,
    },
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
        msg: Arc<Message>,
        members: Arc<[UserId]>,
        /// The conversation is private: push notifications without preview.
        private: bool,
    },
    /// Create the conversation: commit `Op::PutConv` and one `Op::PutMember`
    /// per member in one atomic write, and call [`Owner::on_created`] when it
    /// completes.
    Create {
        meta: Conversation,
        members: Vec<(UserId, Membership)>,
    },
    /// Answer the request with the conversation (`conv`).
    Info { to: Reply, info: ConvInfo },
    /// Answer the request with an error.
    Fail { to: Reply, code: ErrorCode },
    /// Persist a cursor (the shard may batch these). For `Read` the device is
    /// the one that sent it; the shard decides where the user's read cursor
    /// lives.
    Cursor {
        user: UserId,
        device: DeviceId,
        conv: ConvId,
        kind: ReceiptKind,
        seq: Seq,
    },
    /// Send `msg` to every connected device of every member but `except`
    /// (the user whose signal it is; `None` for a `read` receipt, which the
    /// user's own devices take to keep their unread counts in step).
    Relay {
        members: Arc<[UserId]>,
        except: Option<UserId>,
        msg: ServerMsg,
    },
    /// Tell the signal's sender it was refused: `forbidden` (not a member)
    /// or `not_found` (no such conversation).
    SignalRefused {
        to: Sender,
        conv: ConvId,
        code: ErrorCode,
    },
    /// Count the groups each of `users` is in and call
    /// [`Owner::on_counted`] with `order`.
    CountGroups {
        conv: ConvId,
        order: u64,
        users: Vec<UserId>,
    },
    /// Commit a group change atomically: the metadata, the member records
    /// to put and to remove, and the event messages (consecutive seqs, no
    /// dedupe); call [`Owner::on_written`] with the last event's seq.
    WriteEvents {
        msgs: Vec<Arc<Message>>,
        meta: Conversation,
        put: Vec<(UserId, Membership)>,
        remove: Vec<UserId>,
    },
    /// Answer the request with `ok`.
    Done { to: Reply },
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
    /// turn), and separately opens waiting for its load or create. Past it,
    /// a new append or open is refused with `overloaded`.
    pub queue_max: usize,
    /// Recent send outcomes remembered per conversation, answering resends
    /// without a storage lookup.
    pub recent_max: usize,
    /// Signals waiting for one conversation's load (48 bytes each: 12 KiB
    /// per loading conversation by default). Past it, a new signal is
    /// dropped and counted ([`Owner::signals_dropped`]): signals are best
    /// effort. A lost `recv` or `read` only means a redelivery (the device
    /// gets those messages again at its next sync) and a late receipt; a lost
    /// `typing` expires on the clients.
    pub signals_max: usize,
    /// Conversations held in memory. Past it, idle ones (loaded, with no
    /// work queued or in flight) are forgotten, an eighth of the bound at a
    /// time; the next message reloads them. What is lost is a cache: recent
    /// outcomes (resends then look up the store) and the cursors seen since
    /// the load (a stale `recv` may then be stored once more).
    pub convs_max: usize,
    /// Members of one group, its creator included (`group_full` past it).
    pub group_members_max: usize,
    /// Groups one user may be in (`too_many_groups` past it).
    pub groups_per_user_max: usize,
}

impl Default for OwnerLimits {
    fn default() -> OwnerLimits {
        OwnerLimits {
            queue_max: 4096,
            recent_max: 256,
            signals_max: 256,
            convs_max: 100_000,
            group_members_max: protocol::limits::GROUP_MEMBERS_MAX,
            groups_per_user_max: 10_000,
        }
    }
}

/// How far a conversation's load has got.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Default)]
enum Load {
    #[default]
    NotSent,
    Sent,
    Done,
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
    /// Arrival order among the conversation's appends and group operations.
    order: u64,
}

/// A group operation waiting for its turn (and its group counts).
#[derive(Debug)]
struct QueuedOp {
    req: GroupRequest,
    ts: UnixMillis,
    order: u64,
    counts: Counts,
}

#[derive(Debug)]
enum Counts {
    NotSent,
    Sent,
    Done(HashMap<UserId, usize>),
}

/// A group change written and not yet durable.
#[derive(Debug)]
struct EventWrite {
    msgs: Vec<Arc<Message>>,
    /// Members before and after the change: they get its first event (so a
    /// removed or leaving member's devices learn of it).
    fanout: Arc<[UserId]>,
    /// Members after the change: they get any further event (a promotion).
    after: Arc<[UserId]>,
    reply: Reply,
    answer_ok: bool,
}

/// A text message written and not yet durable: the message, its sender and
/// cmid, and the members when its seq was assigned (who must get it).
type Writing = (Arc<Message>, Sender, ClientMsgId, Arc<[UserId]>);

/// A `direct_open` waiting for the load or the create.
#[derive(Clone, Copy, Debug)]
struct Open {
    requester: UserId,
    /// The two users, lower id first.
    pair: (UserId, UserId),
    reply: Reply,
    now: UnixMillis,
}

/// An existing conversation's metadata and members.
#[derive(Debug)]
struct Meta {
    kind: ConvKind,
    title: String,
    /// The two users of a direct conversation, lower id first.
    participants: Option<(UserId, UserId)>,
    /// Members with role and joined seq, as `conv` replies list them.
    members: Vec<Member>,
    /// The same users, shared by every `Deliver` and `Relay`.
    fanout: Arc<[UserId]>,
    creator: UserId,
    created: UnixMillis,
    history_visible: bool,
    private: bool,
}

impl Meta {
    fn new(meta: Conversation, members: &[(UserId, Membership)]) -> Meta {
        Meta {
            kind: meta.kind,
            title: meta.title,
            participants: meta.participants,
            creator: meta.creator,
            created: meta.created,
            history_visible: meta.history_visible,
            private: meta.private,
            members: members
                .iter()
                .map(|&(user, m)| Member {
                    user,
                    role: m.role,
                    joined: m.joined,
                })
                .collect(),
            fanout: members.iter().map(|(user, _)| *user).collect(),
        }
    }

    fn is_member(&self, user: UserId) -> bool {
        self.fanout.contains(&user)
    }

    /// A new group, as a plan creates it.
    fn group(by: UserId, now: UnixMillis, plan: &group::Plan) -> Meta {
        Meta {
            kind: ConvKind::Group,
            title: plan.title.clone(),
            participants: None,
            members: plan.members.clone(),
            fanout: plan.members.iter().map(|m| m.user).collect(),
            creator: by,
            created: now,
            history_visible: false,
            private: false,
        }
    }

    /// Takes the title and members a plan leaves.
    fn apply(&mut self, plan: &group::Plan) {
        if let Some(visible) = plan.history_visible {
            self.history_visible = visible;
        }
        if let Some(private) = plan.private {
            self.private = private;
        }
        self.title.clone_from(&plan.title);
        self.members.clone_from(&plan.members);
        self.fanout = plan.members.iter().map(|m| m.user).collect();
    }

    /// The stored form of the metadata.
    fn record(&self, id: ConvId) -> Conversation {
        Conversation {
            id,
            kind: self.kind,
            title: self.title.clone(),
            creator: self.creator,
            created: self.created,
            members: u32::try_from(self.members.len()).unwrap_or(u32::MAX),
            history_visible: self.history_visible,
            private: self.private,
            participants: self.participants,
        }
    }

    fn info(&self, conv: ConvId, last_seq: Seq) -> ConvInfo {
        ConvInfo {
            conv,
            kind: self.kind,
            title: self.title.clone(),
            members: self.members.clone(),
            last_seq,
        }
    }
}

#[derive(Debug, Default)]
struct Conv {
    load: Load,
    /// Set once loaded (or created) if the conversation exists.
    meta: Option<Meta>,
    /// The last seq assigned (durable or being written).
    last_seq: Seq,
    /// The last durable seq: what `conv` replies report, and the ceiling of
    /// cursors.
    durable_seq: Seq,
    queue: VecDeque<Queued>,
    /// Sends written but not yet durable, with resends waiting on them.
    in_flight: HashMap<SendKey, Vec<Sender>>,
    /// Messages written but not yet durable, by seq.
    writing: HashMap<Seq, Writing>,
    /// Group operations waiting, in arrival order.
    ops: VecDeque<QueuedOp>,
    /// Group changes written but not yet durable, by their last seq.
    events: HashMap<Seq, EventWrite>,
    /// The next arrival number (orders appends against group operations).
    arrivals: u64,
    /// Recently committed outcomes, oldest first.
    recent: VecDeque<(SendKey, SendOutcome)>,
    /// Opens waiting for the load or the create.
    opens: VecDeque<Open>,
    /// The create in flight, if any.
    creating: Option<(Conversation, Vec<(UserId, Membership)>)>,
    /// Signals waiting for the load.
    signals: VecDeque<(Sender, Signal)>,
    /// Since the load: the highest `recv` seq per device, and the highest
    /// `read` seq per user. At most one entry per member device (or member).
    delivered: HashMap<(UserId, DeviceId), Seq>,
    read: HashMap<UserId, Seq>,
}

impl Conv {
    /// Loaded, with nothing queued, waiting or in flight: safe to forget.
    fn is_idle(&self) -> bool {
        self.load == Load::Done
            && self.queue.is_empty()
            && self.in_flight.is_empty()
            && self.writing.is_empty()
            && self.ops.is_empty()
            && self.events.is_empty()
            && self.opens.is_empty()
            && self.creating.is_none()
            && self.signals.is_empty()
    }

    fn recent(&self, k: &SendKey) -> Option<SendOutcome> {
        self.recent
            .iter()
            .rev()
            .find(|(rk, _)| rk == k)
            .map(|(_, o)| *o)
    }

    fn is_member(&self, user: UserId) -> bool {
        self.meta.as_ref().is_some_and(|m| m.is_member(user))
    }

    /// Checks one signal of the loaded conversation `conv` and says what to
    /// do with it: a `recv` or `read` is clamped to the last durable seq and
    /// dropped unless it advances the cursor seen since the load.
    fn signal(&mut self, conv: ConvId, from: Sender, signal: Signal, out: &mut VecDeque<Action>) {
        let Some(meta) = &self.meta else {
            let code = ErrorCode::NotFound;
            out.push_back(Action::SignalRefused {
                to: from,
                conv,
                code,
            });
            return;
        };
        if !meta.is_member(from.user) {
            let code = ErrorCode::Forbidden;
            out.push_back(Action::SignalRefused {
                to: from,
                conv,
                code,
            });
            return;
        }
        let members = meta.fanout.clone();
        let user = from.user;
        let (kind, seq) = match signal {
            Signal::Typing(_) if members.len() > RELAY_MEMBERS_MAX => return,
            Signal::Typing(active) => {
                let msg = ServerMsg::Typing { conv, user, active };
                out.push_back(Action::Relay {
                    members,
                    except: Some(user),
                    msg,
                });
                return;
            }
            Signal::Recv(seq) => (ReceiptKind::Delivered, seq),
            Signal::Read(seq) => (ReceiptKind::Read, seq),
        };
        let seq = seq.min(self.durable_seq);
        if seq == Seq::ZERO {
            return;
        }
        let best = match kind {
            ReceiptKind::Delivered => self.delivered.entry((user, from.device)).or_default(),
            ReceiptKind::Read => self.read.entry(user).or_default(),
        };
        if seq <= *best {
            return;
        }
        *best = seq;
        let device = from.device;
        out.push_back(Action::Cursor {
            user,
            device,
            conv,
            kind,
            seq,
        });
        if members.len() > RELAY_MEMBERS_MAX {
            return;
        }
        let msg = ServerMsg::Receipt {
            conv,
            user,
            kind,
            seq,
        };
        // A read also reaches the reader's own devices (their unread counts).
        let except = (kind == ReceiptKind::Delivered).then_some(user);
        out.push_back(Action::Relay {
            members,
            except,
            msg,
        });
    }
}

/// The create that a direct conversation's first open asks for.
fn direct(conv: ConvId, open: Open) -> (Conversation, Vec<(UserId, Membership)>) {
    let meta = Conversation {
        id: conv,
        kind: ConvKind::Direct,
        title: String::new(),
        creator: open.requester,
        created: open.now,
        members: 2,
        history_visible: true,
        private: false,
        participants: Some(open.pair),
    };
    let member = Membership {
        role: Role::Member,
        joined: Seq::ZERO,
    };
    (meta, vec![(open.pair.0, member), (open.pair.1, member)])
}

/// The answer to an open of an existing conversation. A member whose pair
/// does not match the conversation's participants hit a `ConvId::direct`
/// collision: `conflict`.
fn answer(conv: ConvId, meta: &Meta, last_seq: Seq, open: Open) -> Action {
    let code = if !meta.is_member(open.requester) {
        ErrorCode::Forbidden
    } else if meta.participants != Some(open.pair) {
        ErrorCode::Conflict
    } else {
        let info = meta.info(conv, last_seq);
        return Action::Info {
            to: open.reply,
            info,
        };
    };
    Action::Fail {
        to: open.reply,
        code,
    }
}

/// Every conversation one shard owns that has been touched.
///
/// Storage operations are paid for with credits: the shard grants as many
/// as it can have in flight ([`Owner::new`]); each `Load`, `Lookup`, `Write`
/// and `Create` action takes one, and each `on_loaded`, `on_lookup`,
/// `on_written` and `on_created` call gives it back. Without credit, work
/// waits in the conversation's queues, which are bounded (`queue_max`,
/// `signals_max`): the shard never has more storage work in flight than it
/// granted. Signals take no credit: their `Cursor` writes are the shard's
/// business.
#[derive(Debug)]
pub struct Owner {
    convs: HashMap<ConvId, Conv>,
    limits: OwnerLimits,
    /// Folded into message ids so they are unique across shards.
    shard: u16,
    /// The millisecond and counter of the last message id (see `next_id`).
    id_clock: (u64, u64),
    credits: usize,
    /// The credit granted at the start, to tell when nothing is in flight.
    credits_granted: usize,
    /// Conversations with work waiting for credit, in the order they ran out.
    starved: VecDeque<ConvId>,
    actions: VecDeque<Action>,
    signals_dropped: u64,
}

impl Owner {
    pub fn new(shard: u16, limits: OwnerLimits, credits: usize) -> Owner {
        Owner {
            convs: HashMap::new(),
            limits,
            shard,
            id_clock: (0, 0),
            credits,
            credits_granted: credits,
            starved: VecDeque::new(),
            actions: VecDeque::new(),
            signals_dropped: 0,
        }
    }

    /// The next action to carry out, in order.
    pub fn poll_action(&mut self) -> Option<Action> {
        self.actions.pop_front()
    }

    /// No storage work in flight and no action waiting to be taken.
    pub fn is_quiet(&self) -> bool {
        self.credits == self.credits_granted && self.actions.is_empty()
    }

    /// Conversations held in memory.
    pub fn conv_count(&self) -> usize {
        self.convs.len()
    }

    /// Signals dropped so far because their conversation's wait queue was
    /// full (`signals_max`).
    pub fn signals_dropped(&self) -> u64 {
        self.signals_dropped
    }

    /// A `send` arrived; `now` stamps the message if it is accepted.
    pub fn on_append(&mut self, append: Append, now: UnixMillis) {
        self.evict_idle();
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
        let order = conv.arrivals;
        conv.arrivals += 1;
        conv.queue.push_back(Queued {
            append,
            ts: now,
            lookup: Lookup::NotSent,
            order,
        });
        self.pump(conv_id);
    }

    /// A group operation arrived; it takes its turn among the group's
    /// appends, then is answered with `Info`, `Done` (a leave) or `Fail`.
    /// `now` stamps its events.
    pub fn on_group(&mut self, req: GroupRequest, now: UnixMillis) {
        self.evict_idle();
        let conv_id = req.conv;
        let conv = self.convs.entry(conv_id).or_default();
        if conv.ops.len() >= self.limits.queue_max {
            let to = reply_to(&req);
            let code = ErrorCode::Overloaded;
            self.actions.push_back(Action::Fail { to, code });
            return;
        }
        let order = conv.arrivals;
        conv.arrivals += 1;
        conv.ops.push_back(QueuedOp {
            req,
            ts: now,
            order,
            counts: Counts::NotSent,
        });
        self.pump(conv_id);
    }

    /// The `CountGroups` of the operation `order` finished.
    pub fn on_counted(&mut self, conv_id: ConvId, order: u64, counts: HashMap<UserId, usize>) {
        self.credits += 1;
        if let Some(conv) = self.convs.get_mut(&conv_id) {
            if let Some(op) = conv.ops.iter_mut().find(|o| o.order == order) {
                op.counts = Counts::Done(counts);
            }
            self.pump(conv_id);
        }
        self.feed_starved();
    }

    /// `requester` opens the direct conversation `conv` (==
    /// `ConvId::direct(pair.0, pair.1)`, computed by the caller) with the
    /// other user of `pair`. Answered with `Info`, or `Fail`: `forbidden`
    /// (not a member), `conflict` (an id collision), `overloaded`,
    /// `internal` (the create failed) or `bad_request` (both users are the
    /// same). `now` stamps the conversation if this open creates it.
    pub fn on_open_direct(
        &mut self,
        conv: ConvId,
        pair: (UserId, UserId),
        requester: UserId,
        reply: Reply,
        now: UnixMillis,
    ) {
        assert_eq!(conv, ConvId::direct(pair.0, pair.1), "the caller's id");
        self.evict_idle();
        assert!(
            requester == pair.0 || requester == pair.1,
            "the requester is one of the pair"
        );
        if pair.0 == pair.1 {
            let code = ErrorCode::BadRequest;
            self.actions.push_back(Action::Fail { to: reply, code });
            return;
        }
        let pair = (pair.0.min(pair.1), pair.0.max(pair.1));
        let c = self.convs.entry(conv).or_default();
        if c.opens.len() >= self.limits.queue_max {
            let code = ErrorCode::Overloaded;
            self.actions.push_back(Action::Fail { to: reply, code });
            return;
        }
        c.opens.push_back(Open {
            requester,
            pair,
            reply,
            now,
        });
        self.pump(conv);
    }

    /// A signal arrived from `from`. It waits for the conversation's load
    /// (dropped if `signals_max` are already waiting), then is refused
    /// (`SignalRefused`), relayed, or for a cursor that advances, written
    /// and relayed.
    pub fn on_signal(&mut self, conv: ConvId, from: Sender, signal: Signal) {
        self.evict_idle();
        let c = self.convs.entry(conv).or_default();
        if c.signals.len() >= self.limits.signals_max {
            self.signals_dropped += 1;
            return;
        }
        c.signals.push_back((from, signal));
        self.pump(conv);
    }

    /// Past `convs_max`, forgets idle conversations until an eighth of the
    /// bound is free (one pass over the table per `convs_max / 8` new
    /// conversations at most).
    fn evict_idle(&mut self) {
        let max = self.limits.convs_max;
        if self.convs.len() < max {
            return;
        }
        let mut excess = self.convs.len() - (max - max / 8);
        self.convs.retain(|_, c| {
            if excess > 0 && c.is_idle() {
                excess -= 1;
                return false;
            }
            true
        });
    }

    /// The conversation's load finished; `None` means it does not exist.
    pub fn on_loaded(&mut self, conv_id: ConvId, loaded: Option<Loaded>) {
        self.credits += 1;
        if let Some(conv) = self.convs.get_mut(&conv_id) {
            conv.load = Load::Done;
            if let Some(l) = loaded {
                assert_eq!(l.meta.id, conv_id, "the load answers its conversation");
                conv.meta = Some(Meta::new(l.meta, &l.members));
                conv.last_seq = l.last_seq;
                conv.durable_seq = l.last_seq;
            }
            self.pump(conv_id);
        }
        self.feed_starved();
    }

    /// The `Create` of `conv` completed (`ok` = durable). On success the
    /// conversation exists and every waiting open is answered; on failure
    /// they are refused with `internal` and the conversation still does not
    /// exist (a later open tries again).
    pub fn on_created(&mut self, conv: ConvId, ok: bool) {
        self.credits += 1;
        if let Some(c) = self.convs.get_mut(&conv)
            && let Some((meta, members)) = c.creating.take()
        {
            if ok {
                c.meta = Some(Meta::new(meta, &members));
            } else {
                for open in c.opens.drain(..) {
                    let code = ErrorCode::Internal;
                    self.actions.push_back(Action::Fail {
                        to: open.reply,
                        code,
                    });
                }
            }
            self.pump(conv);
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
        if let Some(ev) = conv.events.remove(&seq) {
            if ok {
                conv.durable_seq = conv.durable_seq.max(seq);
            }
            let meta = conv.meta.as_ref().expect("a group with changes exists");
            let answer = match (ok, ev.answer_ok) {
                (false, _) => Action::Fail {
                    to: ev.reply,
                    code: ErrorCode::Internal,
                },
                (true, true) => Action::Done { to: ev.reply },
                (true, false) => Action::Info {
                    to: ev.reply,
                    info: meta.info(conv_id, conv.durable_seq),
                },
            };
            self.actions.push_back(answer);
            if ok {
                let private = meta.private;
                for (i, msg) in ev.msgs.into_iter().enumerate() {
                    let members = if i == 0 { &ev.fanout } else { &ev.after };
                    let members = members.clone();
                    self.actions.push_back(Action::Deliver {
                        msg,
                        members,
                        private,
                    });
                }
            }
            return;
        }
        let Some((msg, sender, cmid, fanout)) = conv.writing.remove(&seq) else {
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
        conv.durable_seq = conv.durable_seq.max(seq);
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
        let private = conv.meta.as_ref().is_some_and(|m| m.private);
        self.actions.push_back(Action::Deliver {
            msg,
            members: fanout,
            private,
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

    fn starve(&mut self, conv_id: ConvId) {
        if !self.starved.contains(&conv_id) {
            self.starved.push_back(conv_id);
        }
    }

    /// Moves one conversation forward as far as credit allows: its load,
    /// then its signals, its opens and its appends.
    fn pump(&mut self, conv_id: ConvId) {
        if self.load(conv_id) {
            self.serve_signals(conv_id);
            self.serve_opens(conv_id);
            self.serve_queue(conv_id);
        }
    }

    /// Sends the load if it is not sent yet; `true` once it is done.
    fn load(&mut self, conv_id: ConvId) -> bool {
        let Some(conv) = self.convs.get(&conv_id) else {
            return false;
        };
        match conv.load {
            Load::Done => return true,
            Load::Sent => {}
            Load::NotSent => {
                if self.take_credit() {
                    let conv = self.convs.get_mut(&conv_id).expect("found above");
                    conv.load = Load::Sent;
                    self.actions.push_back(Action::Load(conv_id));
                } else {
                    self.starve(conv_id);
                }
            }
        }
        false
    }

    fn serve_signals(&mut self, conv_id: ConvId) {
        let conv = self.convs.get_mut(&conv_id).expect("a pumped conv exists");
        while let Some((from, signal)) = conv.signals.pop_front() {
            conv.signal(conv_id, from, signal, &mut self.actions);
        }
    }

    /// Answers the opens waiting for the load or the create, or if the
    /// conversation does not exist, creates it for them (once).
    fn serve_opens(&mut self, conv_id: ConvId) {
        let conv = self.convs.get_mut(&conv_id).expect("a pumped conv exists");
        if conv.creating.is_some() {
            return;
        }
        let Some(&first) = conv.opens.front() else {
            return;
        };
        if let Some(meta) = &conv.meta {
            for open in conv.opens.drain(..) {
                let action = answer(conv_id, meta, conv.durable_seq, open);
                self.actions.push_back(action);
            }
            return;
        }
        if !self.take_credit() {
            self.starve(conv_id);
            return;
        }
        let (meta, members) = direct(conv_id, first);
        let conv = self.convs.get_mut(&conv_id).expect("a pumped conv exists");
        conv.creating = Some((meta.clone(), members.clone()));
        self.actions.push_back(Action::Create { meta, members });
    }

    /// Sends the appends' lookups and the group operations' counts, then
    /// serves the heads of both queues in arrival order. Appends to a
    /// conversation that does not exist (and is not being created) are
    /// refused without a lookup.
    fn serve_queue(&mut self, conv_id: ConvId) {
        let conv = self.convs.get_mut(&conv_id).expect("a pumped conv exists");
        if conv.meta.is_none() && conv.ops.is_empty() {
            for q in conv.queue.drain(..) {
                self.actions.push_back(Action::Refuse {
                    to: q.append.sender,
                    cmid: q.append.cmid,
                    code: ErrorCode::NotFound,
                });
            }
            return;
        }
        if !self.send_lookups(conv_id) || !self.send_counts(conv_id) {
            self.starve(conv_id);
            return;
        }
        loop {
            let conv = self.convs.get(&conv_id).expect("a pumped conv exists");
            let op_first = match (conv.queue.front(), conv.ops.front()) {
                (Some(a), Some(o)) => o.order < a.order,
                (None, Some(_)) => true,
                (_, None) => false,
            };
            let served = if op_first {
                self.serve_op(conv_id)
            } else {
                self.serve_head(conv_id)
            };
            if !served {
                return;
            }
        }
    }

    /// Asks for the group counts the waiting operations need; `false` if
    /// credit ran out.
    fn send_counts(&mut self, conv_id: ConvId) -> bool {
        let conv = self.convs.get_mut(&conv_id).expect("a pumped conv exists");
        for i in 0..conv.ops.len() {
            let op = &conv.ops[i];
            if !matches!(op.counts, Counts::NotSent) {
                continue;
            }
            let users = group::newcomers(conv.meta.as_ref(), op.req.by.user, &op.req.op);
            if users.is_empty() {
                conv.ops[i].counts = Counts::Done(HashMap::new());
                continue;
            }
            if self.credits == 0 {
                return false;
            }
            self.credits -= 1;
            let order = op.order;
            conv.ops[i].counts = Counts::Sent;
            self.actions.push_back(Action::CountGroups {
                conv: conv_id,
                order,
                users,
            });
        }
        true
    }

    /// Plans the head group operation once its counts are in, and answers
    /// or writes it; `true` if it was taken off the queue.
    fn serve_op(&mut self, conv_id: ConvId) -> bool {
        let conv = self.convs.get(&conv_id).expect("a pumped conv exists");
        let op = conv.ops.front().expect("the caller saw it");
        let Counts::Done(counts) = &op.counts else {
            return false;
        };
        let plan = group::plan(
            conv.meta.as_ref(),
            op.req.by.user,
            &op.req.op,
            &self.limits,
            counts,
        );
        match plan {
            Err(code) => {
                let conv = self.convs.get_mut(&conv_id).expect("found above");
                let op = conv.ops.pop_front().expect("the front exists");
                let to = reply_to(&op.req);
                self.actions.push_back(Action::Fail { to, code });
            }
            Ok(plan) => {
                if !self.take_credit() {
                    self.starve(conv_id);
                    return false;
                }
                self.write_op(conv_id, plan);
            }
        }
        true
    }

    /// Assigns seqs to a planned group change, applies it to the in-memory
    /// group (later operations and messages see it), and asks for the write.
    fn write_op(&mut self, conv_id: ConvId, mut plan: group::Plan) {
        let conv = self.convs.get_mut(&conv_id).expect("the caller found it");
        let q = conv.ops.pop_front().expect("the caller saw the front");
        let by = q.req.by;
        plan.settle(conv.last_seq.next());
        let mut msgs = Vec::with_capacity(plan.events.len());
        for event in std::mem::take(&mut plan.events) {
            let seq = conv.last_seq.next();
            conv.last_seq = seq;
            msgs.push(Arc::new(Message {
                conv: conv_id,
                seq,
                id: next_id(&mut self.id_clock, self.shard, q.ts),
                from: by.user,
                device: by.device,
                ts: q.ts,
                content: Content::Event(event),
            }));
        }
        let before = conv.meta.as_ref().map(|m| m.fanout.clone());
        match &mut conv.meta {
            Some(meta) => meta.apply(&plan),
            None => conv.meta = Some(Meta::group(by.user, q.ts, &plan)),
        }
        let meta = conv.meta.as_ref().expect("set above");
        let mut fanout: Vec<UserId> = before.as_deref().unwrap_or(&[]).to_vec();
        fanout.extend(
            meta.fanout
                .iter()
                .filter(|u| !fanout.contains(u))
                .copied()
                .collect::<Vec<_>>(),
        );
        let put = plan
            .members
            .iter()
            .filter(|m| plan.put.contains(&m.user))
            .map(|m| {
                (
                    m.user,
                    Membership {
                        role: m.role,
                        joined: m.joined,
                    },
                )
            })
            .collect();
        let last = conv.last_seq;
        conv.events.insert(
            last,
            EventWrite {
                msgs: msgs.clone(),
                fanout: fanout.into(),
                after: meta.fanout.clone(),
                reply: reply_to(&q.req),
                answer_ok: plan.answer_ok,
            },
        );
        self.actions.push_back(Action::WriteEvents {
            msgs,
            meta: meta.record(conv_id),
            put,
            remove: plan.removed,
        });
    }

    /// Answers or writes the head append if it is ready; `true` if it was
    /// taken off the queue.
    fn serve_head(&mut self, conv_id: ConvId) -> bool {
        let conv = self.convs.get_mut(&conv_id).expect("a pumped conv exists");
        let Some(Lookup::Done(stored)) = conv.queue.front().map(|q| q.lookup) else {
            return false;
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
        } else if !conv.is_member(k.0) {
            let a = conv.queue.pop_front().expect("the front exists").append;
            let code = if conv.meta.is_none() {
                ErrorCode::NotFound
            } else {
                ErrorCode::Forbidden
            };
            self.actions.push_back(Action::Refuse {
                to: a.sender,
                cmid: a.cmid,
                code,
            });
        } else if self.take_credit() {
            self.write_head(conv_id);
        } else {
            self.starve(conv_id);
            return false;
        }
        true
    }

    /// Sends any unsent lookups; `false` if credit ran out.
    fn send_lookups(&mut self, conv_id: ConvId) -> bool {
        loop {
            let conv = self.convs.get(&conv_id).expect("a pumped conv exists");
            if !conv.queue.iter().any(|q| q.lookup == Lookup::NotSent) {
                return true;
            }
            if !self.take_credit() {
                return false;
            }
            let conv = self.convs.get_mut(&conv_id).expect("a pumped conv exists");
            let q = conv
                .queue
                .iter_mut()
                .find(|q| q.lookup == Lookup::NotSent)
                .expect("found above");
            q.lookup = Lookup::Sent;
            let a = &q.append;
            self.actions.push_back(Action::Lookup {
                conv: conv_id,
                user: a.sender.user,
                device: a.sender.device,
                cmid: a.cmid,
            });
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
        let msg = Arc::new(Message {
            conv: conv_id,
            seq,
            id,
            from: a.sender.user,
            device: a.sender.device,
            ts: q.ts,
            content: Content::Text(a.body.to_string()),
        });
        conv.in_flight.insert(key(&a), Vec::new());
        let fanout = conv
            .meta
            .as_ref()
            .expect("only members' appends are written")
            .fanout
            .clone();
        conv.writing
            .insert(seq, (msg.clone(), a.sender, a.cmid, fanout));
        self.actions.push_back(Action::Write { msg, cmid: a.cmid });
    }
}

/// Conversations with more members than this relay no receipts and no
/// typing (each would go to every member: quadratic in the group's size);
/// cursors are still stored.
pub const RELAY_MEMBERS_MAX: usize = 256;

/// Where to answer a group request.
fn reply_to(req: &GroupRequest) -> Reply {
    Reply {
        shard: req.by.shard,
        conn: req.by.conn,
        rid: req.rid,
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

mod group;
#[cfg(test)]
mod test;
