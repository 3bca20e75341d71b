//! The hub: one shard's chat state and the routing between shards.

use std::cell::{Cell, RefCell};
use std::collections::{HashMap, VecDeque};
use std::rc::Rc;
use std::sync::Arc;

use protocol::{ConvId, ErrorCode, ServerMsg, UnixMillis, UserId};
use router::{Link, ShardId};
use storage::{CompletionSink, Op, Store, WriteRequest};

use super::cursors::Cursors;
use super::jobs::{self, StoreEvent};
use super::presence::Presence;
use super::session::Session;
use super::{ShardMsg, Watcher};
use crate::conv::{Action, Owner, OwnerLimits};
use crate::metrics::ShardStats;
use crate::store_io::{Inbox, InboxSink, ReadHandle, Slots};

/// Storage operations a shard's conversation owner may have in flight.
pub(crate) const OWNER_CREDITS: usize = 4096;

/// Storage operations a shard's sessions may have in flight (catch-up and
/// history reads, cursor and device writes).
pub(crate) const SESSION_SLOTS: usize = 4096;

/// Inbox events per shard: every storage operation in flight has a slot.
pub(crate) const INBOX_CAPACITY: usize = OWNER_CREDITS + SESSION_SLOTS + super::notify::PUSH_SLOTS;

/// Messages a shard holds for one destination shard whose router queue is
/// full, before it drops (and counts) live traffic.
const BACKLOG_MAX: usize = 65_536;

/// Members one `Deliver` router message carries at most: a group's
/// fan-out to a shard is split so no single message stalls its pump.
pub(crate) const FANOUT_CHUNK: usize = 1024;

/// What a shard's hub is built from; everything in it can cross threads.
pub(crate) struct HubInit {
    pub link: Link<ShardMsg>,
    /// Every shard's published numbers; this hub writes its own.
    pub stats: Arc<[ShardStats]>,
    /// Dev fault injection: skip every Nth live delivery.
    pub drop_delivery_every: Option<u64>,
    pub store: Store,
    pub reads: ReadHandle<StoreEvent>,
    pub limits: OwnerLimits,
    /// Push: the shared forwarder state and the coalescing window.
    pub push: Option<(Arc<crate::push::PushShared>, std::time::Duration)>,
    pub abuse: AbuseLimits,
}

/// The session-side abuse limits (from the configuration).
#[derive(Clone, Copy, Debug)]
pub(crate) struct AbuseLimits {
    pub send_per_connection: crate::limits::Rate,
    pub send_per_user: crate::limits::Rate,
    /// Consecutive refused sends before 4003.
    pub close_after: u32,
    pub connections_per_user: usize,
}

/// What a write's completion is for.
#[derive(Clone, Copy, Debug)]
pub(crate) enum Ticket {
    Append {
        conv: ConvId,
        seq: protocol::Seq,
    },
    Create {
        conv: ConvId,
    },
    Cursors,
    /// A session's write (a push token); answer `ok` on `conn`.
    Reply {
        conn: u64,
        rid: protocol::RequestId,
    },
    /// A batch of push jobs' outbox records.
    Push {
        batch: u64,
    },
    /// Push jobs dropped because their device came online.
    PushRemoved,
}

/// One shard's chat state. Lives on the shard's thread only.
pub(crate) struct Hub {
    pub me: u16,
    pub shards: u16,
    link: RefCell<Link<ShardMsg>>,
    /// Per destination shard: messages waiting for room in its queue.
    backlog: RefCell<Vec<VecDeque<ShardMsg>>>,
    /// Every shard's published numbers (this one's at `me`).
    stats: Arc<[ShardStats]>,
    /// Dev fault injection: skip every Nth live delivery (`None`: never).
    drop_delivery_every: Option<u64>,
    /// Live deliveries counted towards `drop_delivery_every`.
    live_deliveries: Cell<u64>,
    pub owner: RefCell<Owner>,
    pub store: Store,
    pub reads: ReadHandle<StoreEvent>,
    pub inbox: Arc<Inbox<StoreEvent>>,
    sink: Arc<dyn CompletionSink>,
    /// Session storage operations in flight (the owner counts its own).
    pub slots: Slots,
    tickets: RefCell<HashMap<u64, Ticket>>,
    next_ticket: Cell<u64>,
    pub sessions: RefCell<HashMap<u64, Rc<Session>>>,
    /// Connection ids of each user homed here.
    pub by_user: RefCell<HashMap<UserId, Vec<u64>>>,
    next_conn: Cell<u64>,
    pub cursors: RefCell<Cursors>,
    pub presence: RefCell<Presence>,
    pub frames: super::session::FrameCache,
    fanout: RefCell<FanoutCache>,
    /// Shutting down: new sends are refused (retryable).
    sends_stopped: Cell<bool>,
    /// Push for offline devices; `None` when no pushd is configured.
    pub notify: Option<super::notify::Notify>,
    pub abuse: AbuseLimits,
    /// Each user's send bucket, while the user has a session here.
    pub user_buckets: RefCell<HashMap<UserId, crate::limits::Bucket>>,
}

impl Hub {
    pub fn new(init: HubInit) -> Hub {
        let me = init.link.me().0;
        let shards = init.link.shards();
        let inbox = Inbox::new(INBOX_CAPACITY);
        Hub {
            me,
            shards,
            link: RefCell::new(init.link),
            backlog: RefCell::new((0..shards).map(|_| VecDeque::new()).collect()),
            stats: init.stats,
            drop_delivery_every: init.drop_delivery_every,
            live_deliveries: Cell::new(0),
            owner: RefCell::new(Owner::new(me, init.limits, OWNER_CREDITS)),
            store: init.store,
            reads: init.reads,
            sink: Arc::new(InboxSink(inbox.clone())),
            inbox,
            slots: Slots::new(SESSION_SLOTS),
            tickets: RefCell::new(HashMap::new()),
            next_ticket: Cell::new(0),
            sessions: RefCell::new(HashMap::new()),
            by_user: RefCell::new(HashMap::new()),
            next_conn: Cell::new(1),
            cursors: RefCell::new(Cursors::default()),
            presence: RefCell::new(Presence::default()),
            frames: super::session::FrameCache::default(),
            fanout: RefCell::new(FanoutCache::default()),
            sends_stopped: Cell::new(false),
            notify: init
                .push
                .map(|(shared, window)| super::notify::Notify::new(shared, me, window)),
            abuse: init.abuse,
            user_buckets: RefCell::new(HashMap::new()),
        }
    }

    /// This shard's published numbers.
    pub fn stats(&self) -> &ShardStats {
        &self.stats[usize::from(self.me)]
    }

    /// Every shard's numbers and this shard's index (for a session to keep).
    pub fn stats_handle(&self) -> (Arc<[ShardStats]>, u16) {
        (self.stats.clone(), self.me)
    }

    /// Publishes how many router messages wait for this shard (its incoming
    /// queues) plus its own backlog.
    pub fn publish_queue_depth(&self) {
        let link = self.link.borrow();
        let me = ShardId(self.me);
        let incoming: usize = (0..self.shards)
            .map(|from| link.depth(ShardId(from), me))
            .sum();
        let backlog: usize = self.backlog.borrow().iter().map(VecDeque::len).sum();
        ShardStats::set(&self.stats().router_queue_depth, incoming + backlog);
    }

    /// Counts a live delivery to a device; `false` if dev fault injection
    /// says to skip it silently (every Nth).
    pub fn keep_live_delivery(&self) -> bool {
        let Some(every) = self.drop_delivery_every else {
            return true;
        };
        let n = self.live_deliveries.get() + 1;
        self.live_deliveries.set(n);
        !n.is_multiple_of(every)
    }

    /// Refuses new sends from now on (shutdown).
    pub fn stop_sends(&self) {
        self.sends_stopped.set(true);
    }

    pub fn sends_stopped(&self) -> bool {
        self.sends_stopped.get()
    }

    /// Nothing of this shard's is on its way: no owner storage work, no
    /// router message waiting here or in the backlog, no cursor write.
    pub fn is_quiet(&self) -> bool {
        let cursors = self.cursors.borrow();
        self.owner.borrow().is_quiet()
            && !self.link.borrow().has_incoming()
            && self.backlog.borrow().iter().all(VecDeque::is_empty)
            && !cursors.in_flight()
            && cursors.is_empty()
    }

    pub fn link(&self) -> &RefCell<Link<ShardMsg>> {
        &self.link
    }

    pub fn home_of(&self, user: UserId) -> u16 {
        router::shard_of_user(user, self.shards).0
    }

    pub fn owner_of(&self, conv: ConvId) -> u16 {
        router::shard_of_conv(conv, self.shards).0
    }

    pub fn next_conn_id(&self) -> u64 {
        let id = self.next_conn.get();
        self.next_conn.set(id + 1);
        id
    }

    /// Queues a client's request for shard `to`; a full queue hands it back
    /// (the caller answers `overloaded`).
    pub fn route(&self, to: u16, msg: ShardMsg) -> Result<(), ShardMsg> {
        if !self.backlog.borrow()[usize::from(to)].is_empty() {
            return Err(msg);
        }
        self.link
            .borrow_mut()
            .try_send(ShardId(to), msg)
            .map_err(|full| full.0)
    }

    /// Queues a message that must not be refused (an ack, a delivery):
    /// behind the backlog if there is one, into the backlog if the queue is
    /// full, dropped (and counted) only past `BACKLOG_MAX`.
    pub fn forward(&self, to: u16, msg: ShardMsg) {
        let mut backlog = self.backlog.borrow_mut();
        let queue = &mut backlog[usize::from(to)];
        let msg = if queue.is_empty() {
            match self.link.borrow_mut().try_send(ShardId(to), msg) {
                Ok(()) => return,
                Err(full) => full.0,
            }
        } else {
            msg
        };
        if queue.len() >= BACKLOG_MAX {
            ShardStats::bump(&self.stats().router_dropped);
            tracing::warn!(to, "router backlog full; dropping a live message");
            return;
        }
        queue.push_back(msg);
    }

    /// Moves backlogged messages into the router queues while there is room.
    /// Returns whether any backlog remains.
    pub fn drain_backlog(&self) -> bool {
        let mut backlog = self.backlog.borrow_mut();
        let mut link = self.link.borrow_mut();
        let mut left = false;
        for (to, queue) in backlog.iter_mut().enumerate() {
            let to = ShardId(u16::try_from(to).expect("shard ids are u16"));
            while let Some(msg) = queue.pop_front() {
                if let Err(full) = link.try_send(to, msg) {
                    queue.push_front(full.0);
                    left = true;
                    break;
                }
            }
        }
        left
    }

    /// Wakes the shards sent to since the last flush.
    pub fn flush(&self) {
        self.link.borrow_mut().flush();
    }

    /// Answers connection `conn` on shard `shard`.
    pub fn reply(&self, shard: u16, conn: u64, msg: ServerMsg) {
        self.forward(shard, ShardMsg::ToConn { conn, msg });
    }

    fn ticket(&self, t: Ticket) -> u64 {
        let id = self.next_ticket.get();
        self.next_ticket.set(id + 1);
        self.tickets.borrow_mut().insert(id, t);
        id
    }

    pub fn take_ticket(&self, id: u64) -> Option<Ticket> {
        self.tickets.borrow_mut().remove(&id)
    }

    /// Submits a write whose completion comes back as `ticket`. The caller
    /// holds a credit or slot for it. `false` if the store refused it.
    pub fn write(&self, ops: Vec<Op>, ticket: Ticket) -> bool {
        let id = self.ticket(ticket);
        match self
            .store
            .try_submit(WriteRequest::new(ops, id, self.sink.clone()))
        {
            Ok(()) => true,
            Err(e) => {
                self.tickets.borrow_mut().remove(&id);
                tracing::error!(cause = %e, "store refused a write");
                false
            }
        }
    }

    /// Carries out what the conversation owner asked for, until it has
    /// nothing more.
    pub fn run_owner(&self) {
        loop {
            let action = self.owner.borrow_mut().poll_action();
            let Some(action) = action else {
                return;
            };
            self.owner_action(action);
        }
    }

    fn owner_action(&self, action: Action) {
        match action {
            Action::Load(conv) => self.owner_read(move |s| StoreEvent::Loaded {
                conv,
                loaded: jobs::load_conv(s, conv),
            }),
            Action::Lookup {
                conv,
                user,
                device,
                cmid,
            } => self.owner_read(move |s| StoreEvent::Looked {
                conv,
                key: (user, device, cmid),
                found: s.dedupe(user, device, cmid),
            }),
            Action::Write { msg, cmid } => {
                let (conv, seq) = (msg.conv, msg.seq);
                let ops = vec![Op::Append {
                    msg: (*msg).clone(),
                    dedupe: Some(cmid),
                }];
                if !self.write(ops, Ticket::Append { conv, seq }) {
                    self.owner.borrow_mut().on_written(conv, seq, false);
                }
            }
            Action::Create { meta, members } => {
                let conv = meta.id;
                let mut ops = vec![Op::PutConv(meta)];
                ops.extend(members.into_iter().map(|(user, membership)| Op::PutMember {
                    conv,
                    user,
                    membership,
                }));
                if !self.write(ops, Ticket::Create { conv }) {
                    self.owner.borrow_mut().on_created(conv, false);
                }
            }
            Action::CountGroups { conv, order, users } => {
                self.owner_read(move |s| StoreEvent::Counted {
                    conv,
                    order,
                    counts: jobs::group_counts(s, &users),
                });
            }
            Action::WriteEvents {
                msgs,
                meta,
                put,
                remove,
            } => self.write_events(&msgs, meta, put, remove),
            other => self.owner_reply(other),
        }
    }

    /// Commits a group change: metadata, member records and its events, in
    /// one atomic write.
    fn write_events(
        &self,
        msgs: &[Arc<protocol::Message>],
        meta: storage::Conversation,
        put: Vec<(UserId, storage::Membership)>,
        remove: Vec<UserId>,
    ) {
        let conv = meta.id;
        let seq = msgs.last().map_or(protocol::Seq::ZERO, |m| m.seq);
        let mut ops = vec![Op::PutConv(meta)];
        ops.extend(put.into_iter().map(|(user, membership)| Op::PutMember {
            conv,
            user,
            membership,
        }));
        ops.extend(
            remove
                .into_iter()
                .map(|user| Op::RemoveMember { conv, user }),
        );
        ops.extend(msgs.iter().map(|m| Op::Append {
            msg: (**m).clone(),
            dedupe: None,
        }));
        if !self.write(ops, Ticket::Append { conv, seq }) {
            self.owner.borrow_mut().on_written(conv, seq, false);
        }
    }

    /// Sends `msg` to the home shards of `members`. Chunked: a huge group's
    /// fan-out is many router messages, each a bounded amount of work for
    /// the receiving pump; a conversation's chunks are computed once.
    fn deliver(&self, msg: &Arc<protocol::Message>, members: &Arc<[UserId]>, private: bool) {
        let chunks = self
            .fanout
            .borrow_mut()
            .chunks(msg.conv, members, |m| self.by_home(m, None));
        for (shard, users) in chunks.iter() {
            let (msg, users) = (msg.clone(), users.clone());
            self.forward(
                *shard,
                ShardMsg::Deliver {
                    msg,
                    users,
                    private,
                },
            );
        }
    }

    /// The owner's answers and fan-out: router messages only.
    fn owner_reply(&self, action: Action) {
        match action {
            Action::Ack { to, cmid, outcome } => self.reply(
                to.shard,
                to.conn,
                ServerMsg::Ack {
                    cmid,
                    conv: outcome.conv,
                    seq: outcome.seq,
                    id: outcome.id,
                    ts: outcome.ts,
                },
            ),
            Action::Refuse { to, cmid, code } => {
                let msg = error(None, Some(cmid), code, send_refusal(code));
                self.reply(to.shard, to.conn, msg);
            }
            Action::Deliver {
                msg,
                members,
                private,
            } => {
                // Every message made durable is delivered exactly once.
                ShardStats::bump(&self.stats().messages_appended);
                self.deliver(&msg, &members, private);
            }
            Action::Done { to } => self.reply(to.shard, to.conn, ServerMsg::Ok { rid: to.rid }),
            Action::Info { to, info } => {
                let msg = ServerMsg::Conv {
                    rid: to.rid,
                    conv: info,
                };
                self.reply(to.shard, to.conn, msg);
            }
            Action::Fail { to, code } => {
                let msg = error(Some(to.rid), None, code, request_refusal(code));
                self.reply(to.shard, to.conn, msg);
            }
            Action::Cursor {
                user,
                device,
                conv,
                kind,
                seq,
            } => self.cursors.borrow_mut().set(user, device, conv, kind, seq),
            Action::Relay {
                members,
                except,
                msg,
            } => {
                let msg = Arc::new(msg);
                for (shard, users) in self.by_home(&members, except) {
                    let (msg, users) = (msg.clone(), users.into());
                    self.forward(shard, ShardMsg::Relay { users, msg });
                }
            }
            Action::SignalRefused { to, conv, code } => {
                let text = format!(
                    "cannot signal conversation {}: {}",
                    conv.0,
                    send_refusal(code)
                );
                self.reply(to.shard, to.conn, error_text(None, None, code, text));
            }
            Action::Load(_)
            | Action::Lookup { .. }
            | Action::Write { .. }
            | Action::Create { .. }
            | Action::CountGroups { .. }
            | Action::WriteEvents { .. } => unreachable!("storage actions are handled above"),
        }
    }

    /// Groups `users` (but `except`) by home shard.
    fn by_home(&self, users: &[UserId], except: Option<UserId>) -> Vec<(u16, Vec<UserId>)> {
        let mut groups: Vec<Vec<UserId>> = vec![Vec::new(); usize::from(self.shards)];
        for &u in users {
            if Some(u) != except {
                groups[usize::from(self.home_of(u))].push(u);
            }
        }
        groups
            .into_iter()
            .enumerate()
            .filter(|(_, g)| !g.is_empty())
            .map(|(s, g)| (u16::try_from(s).expect("shard ids are u16"), g))
            .collect()
    }

    /// Runs an owner read (paid for with the owner's credit).
    fn owner_read(&self, job: impl FnOnce(&Store) -> StoreEvent + Send + 'static) {
        // The read queue holds every shard's whole inbox capacity, so it can
        // refuse only once the pool has stopped (at shutdown).
        if self.reads.try_read(&self.inbox, job).is_err() {
            tracing::error!("storage read pool refused an owner read");
        }
    }

    /// Runs a session read: a slot for it, or `false` (back-pressure).
    pub fn session_read(&self, job: impl FnOnce(&Store) -> StoreEvent + Send + 'static) -> bool {
        if !self.slots.try_reserve() {
            return false;
        }
        if self.reads.try_read(&self.inbox, job).is_err() {
            self.slots.release();
            return false;
        }
        true
    }

    /// Writes the cursors gathered since the last flush, one write at a time.
    pub fn flush_cursors(&self) {
        let mut cursors = self.cursors.borrow_mut();
        if cursors.in_flight() || cursors.is_empty() || !self.slots.try_reserve() {
            return;
        }
        let ops = cursors.take_ops();
        if !self.write(ops, Ticket::Cursors) {
            self.slots.release();
            return;
        }
        cursors.set_in_flight(true);
    }
}

/// Member lists of large conversations, split by home shard into chunks of
/// at most `FANOUT_CHUNK`, kept while the list is unchanged (the owner
/// makes a new `Arc` for every membership change).
#[derive(Default)]
struct FanoutCache {
    /// The member list each entry was split from (held, so its address is
    /// not reused while cached), and its chunks.
    map: HashMap<ConvId, Split>,
}

type Split = (Arc<[UserId]>, Rc<[Chunk]>);

/// A destination shard and the members there it delivers to.
type Chunk = (u16, Arc<[UserId]>);

/// Conversations smaller than this are split afresh each time.
const FANOUT_CACHE_MEMBERS_MIN: usize = 64;

/// Conversations whose chunks are kept; past it the cache starts over.
const FANOUT_CACHE_CONVS_MAX: usize = 4096;

impl FanoutCache {
    fn chunks(
        &mut self,
        conv: ConvId,
        members: &Arc<[UserId]>,
        by_home: impl FnOnce(&[UserId]) -> Vec<(u16, Vec<UserId>)>,
    ) -> Rc<[Chunk]> {
        if let Some((list, chunks)) = self.map.get(&conv)
            && Arc::ptr_eq(list, members)
        {
            return chunks.clone();
        }
        let chunks: Rc<[Chunk]> = by_home(members)
            .into_iter()
            .flat_map(|(shard, users)| {
                users
                    .chunks(FANOUT_CHUNK)
                    .map(|c| (shard, Arc::from(c)))
                    .collect::<Vec<_>>()
            })
            .collect();
        if members.len() >= FANOUT_CACHE_MEMBERS_MIN {
            if self.map.len() >= FANOUT_CACHE_CONVS_MAX {
                self.map.clear();
            }
            self.map.insert(conv, (members.clone(), chunks.clone()));
        }
        chunks
    }
}

/// Milliseconds since the Unix epoch.
pub(crate) fn now_millis() -> UnixMillis {
    let ms = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map_or(0, |d| d.as_millis());
    UnixMillis(u64::try_from(ms).unwrap_or(u64::MAX))
}

pub(crate) fn error(
    rid: Option<protocol::RequestId>,
    cmid: Option<protocol::ClientMsgId>,
    code: ErrorCode,
    message: &str,
) -> ServerMsg {
    error_text(rid, cmid, code, message.to_owned())
}

pub(crate) fn error_text(
    rid: Option<protocol::RequestId>,
    cmid: Option<protocol::ClientMsgId>,
    code: ErrorCode,
    mut message: String,
) -> ServerMsg {
    let max = protocol::limits::ERROR_TEXT_BYTES_MAX;
    if message.len() > max {
        let mut cut = max;
        while !message.is_char_boundary(cut) {
            cut -= 1;
        }
        message.truncate(cut);
    }
    ServerMsg::Error {
        rid,
        cmid,
        code,
        message,
    }
}

fn send_refusal(code: ErrorCode) -> &'static str {
    match code {
        ErrorCode::Forbidden => "not a member of this conversation",
        ErrorCode::NotFound => "no such conversation",
        ErrorCode::Overloaded => "the conversation is busy; retry",
        ErrorCode::Internal => "the message could not be stored; retry",
        _ => "refused",
    }
}

fn request_refusal(code: ErrorCode) -> &'static str {
    match code {
        ErrorCode::Forbidden => "not a member, or not an admin of this group",
        ErrorCode::NotFound => "no such conversation or member",
        ErrorCode::Overloaded => "the conversation is busy; retry",
        ErrorCode::Internal => "the request failed; retry",
        ErrorCode::Conflict => "conflicts with the conversation's state",
        ErrorCode::GroupFull => "the group is at its member limit",
        ErrorCode::TooManyGroups => "a user is in the maximum number of groups",
        ErrorCode::BadRequest => "not possible for this conversation",
        _ => "refused",
    }
}

impl Hub {
    /// Tells the watchers of `user` its new presence.
    pub fn announce(&self, user: UserId, online: bool, last_seen: Option<UnixMillis>) {
        let watchers: Vec<Watcher> = self.presence.borrow().watchers(user).to_vec();
        let status = if online {
            protocol::PresenceStatus::Online
        } else {
            protocol::PresenceStatus::Offline
        };
        for w in watchers {
            let msg = ServerMsg::Presence {
                user,
                status,
                last_seen,
            };
            self.reply(w.shard, w.conn, msg);
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn split(users: &[UserId]) -> Vec<(u16, Vec<UserId>)> {
        let (even, odd): (Vec<UserId>, Vec<UserId>) = users.iter().partition(|u| u.0 % 2 == 0);
        vec![(0, even), (1, odd)]
    }

    #[test]
    fn fanout_chunks_are_bounded_and_reused_while_the_list_is_unchanged() {
        let mut cache = FanoutCache::default();
        let conv = ConvId::group(1);
        let members: Arc<[UserId]> = (0..5_000).map(UserId).collect();
        let a = cache.chunks(conv, &members, split);
        let sizes: Vec<(u16, usize)> = a.iter().map(|(s, u)| (*s, u.len())).collect();
        assert_eq!(
            sizes,
            [
                (0, 1024),
                (0, 1024),
                (0, 452),
                (1, 1024),
                (1, 1024),
                (1, 452)
            ]
        );
        let b = cache.chunks(conv, &members, |_| panic!("cached: not split again"));
        assert!(Rc::ptr_eq(&a, &b));
        // A membership change makes a new list: split afresh.
        let changed: Arc<[UserId]> = (0..10).map(UserId).collect();
        let c = cache.chunks(conv, &changed, split);
        assert_eq!(c.iter().map(|(_, u)| u.len()).sum::<usize>(), 10);
        // Small lists are not kept.
        let mut calls = 0;
        for _ in 0..2 {
            cache.chunks(conv, &changed, |m| {
                calls += 1;
                split(m)
            });
        }
        assert_eq!(calls, 2);
    }
}
