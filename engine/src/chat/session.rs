//! One device's session on its user's home shard: what its client messages
//! do, and the queue of frames waiting to be written to it.

use std::cell::{Cell, RefCell};
use std::collections::HashMap;
use std::rc::Rc;
use std::sync::Arc;
use std::time::Instant;

use monoio::net::TcpStream;
use protocol::token::Claims;
use protocol::{
    ClientMsg, ClientMsgId, ConvId, DeviceId, Encoding, ErrorCode, Message, ServerMsg, UserId,
    close, limits,
};

use super::hub::{Hub, Ticket, error, now_millis};
use super::jobs::{self, StoreEvent};
use super::{ShardMsg, Watcher};
use crate::catchup::{self, CatchUp, CatchUpLimits};
use crate::conv::{Append, GroupOp, GroupRequest, Reply, Sender, Signal};
use crate::metrics::ShardStats;
use crate::shard::{ConnGuard, ConnHandle, Shard};
use crate::websocket::{self, Data, Handler};
use crate::ws;

/// Bytes of frames queued for one connection that it has not taken off the
/// socket; past it the connection is a slow consumer and is closed with
/// 4002 (it reconnects and syncs: nothing is lost).
const SEND_QUEUE_BYTES_MAX: usize = 4 << 20;

/// Undecodable messages a connection may send (each answered by `error`)
/// before it is closed with 4006.
const BAD_MESSAGES_MAX: u32 = 16;

/// Limits of the chat WebSocket: the protocol's.
const CHAT_LIMITS: ws::Limits = ws::Limits::new(
    limits::FRAME_PAYLOAD_BYTES_MAX,
    limits::CLIENT_MESSAGE_BYTES_MAX,
    limits::FRAGMENTS_MAX,
);

/// One device's catch-up. What it queues for the connection at once is
/// at most `send_window + reads_in_flight_max * page_limit` messages (384:
/// 6 MiB at the largest body, more only for bodies JSON must escape).
const CATCHUP_LIMITS: CatchUpLimits = CatchUpLimits {
    page_limit: 128,
    reads_in_flight_max: 2,
    buffered_max: 1024,
    send_window: 128,
};

type CloseReason = (u16, &'static str);

/// A running catch-up and the generation its storage results carry.
struct Sync {
    generation: u32,
    machine: CatchUp,
    /// `synced` has been queued: what the machine sends now is live.
    live: bool,
}

/// Appends `msg` as one WebSocket frame in `encoding` to `out`.
fn write_frame(encoding: Encoding, msg: &impl serde::Serialize, out: &mut Vec<u8>) {
    let mut payload = Vec::new();
    encoding.encode(msg, &mut payload);
    match encoding {
        Encoding::Json => ws::write_frame(out, ws::OpCode::Text, &payload),
        Encoding::Binary => ws::write_binary(out, &payload),
    }
}

/// The frame of the last message encoded, per encoding: a fan-out writes
/// the same message to many devices in a row, and encodes it once.
#[derive(Default)]
pub(crate) struct FrameCache {
    last: RefCell<[Option<CachedFrame>; 2]>,
}

/// A message (by conversation and seq) and its encoded frame.
type CachedFrame = (ConvId, protocol::Seq, Rc<[u8]>);

impl FrameCache {
    /// The `msg` frame of `m` in `encoding`, encoded at most once in a row.
    pub fn frame(&self, m: &Message, encoding: Encoding) -> Rc<[u8]> {
        let slot = usize::from(encoding == Encoding::Binary);
        let mut last = self.last.borrow_mut();
        if let Some((conv, seq, frame)) = &last[slot]
            && (*conv, *seq) == (m.conv, m.seq)
        {
            return frame.clone();
        }
        let mut bytes = Vec::new();
        write_frame(encoding, &protocol::MsgRef(m), &mut bytes);
        let frame: Rc<[u8]> = bytes.into();
        last[slot] = Some((m.conv, m.seq, frame.clone()));
        frame
    }
}

/// One connected device.
pub(crate) struct Session {
    pub id: u64,
    pub user: UserId,
    pub device: DeviceId,
    encoding: Encoding,
    handle: Rc<ConnHandle>,
    out: RefCell<Vec<u8>>,
    /// Set when the hub wants the connection closed.
    close: Cell<Option<CloseReason>>,
    /// Catch-up `msg`s queued in `out` and not yet reported written.
    sends_queued: Cell<usize>,
    /// Bytes of `out` that are catch-up `msg`s.
    catchup_bytes: Cell<usize>,
    sync: RefCell<Option<Sync>>,
    generation: Cell<u32>,
    bad_messages: Cell<u32>,
    /// Users this connection watches for presence.
    watching: RefCell<Vec<UserId>>,
    send_bucket: Cell<crate::limits::Bucket>,
    /// Sends refused in a row (rate limits); past the limit, 4003.
    refused_sends: Cell<u32>,
    /// When each unanswered `send` arrived (for the send→ack histogram;
    /// at most `ACK_TIMES_MAX`).
    ack_times: RefCell<HashMap<ClientMsgId, Instant>>,
    /// Every shard's numbers and this shard's index.
    stats: (Arc<[ShardStats]>, u16),
}

/// Unanswered sends timed per connection; more go untimed.
const ACK_TIMES_MAX: usize = 1024;

/// What a session queues to its client: counted by kind.
pub(crate) trait Outbound: serde::Serialize {
    /// The error code, if this is an error frame.
    fn error_code(&self) -> Option<ErrorCode> {
        None
    }
}

impl Outbound for ServerMsg {
    fn error_code(&self) -> Option<ErrorCode> {
        match self {
            ServerMsg::Error { code, .. } => Some(*code),
            _ => None,
        }
    }
}

impl Outbound for protocol::MsgRef<'_> {}

impl Session {
    /// Queues `msg` for the client. Live traffic is bounded by
    /// `SEND_QUEUE_BYTES_MAX`; a connection past it is a slow consumer.
    pub fn push(&self, msg: &impl Outbound) {
        if self.close.get().is_some() {
            return;
        }
        let stats = self.shard_stats();
        ShardStats::bump(&stats.messages_out);
        if let Some(code) = msg.error_code() {
            stats.error(code);
        }
        let mut frame = Vec::new();
        write_frame(self.encoding, msg, &mut frame);
        self.queue_frame(&frame, false);
    }

    /// Queues an encoded frame (shared by every device that gets the same
    /// message in the same encoding). Catch-up frames are bounded by the
    /// catch-up machine's window, so they do not count towards the
    /// slow-consumer bound.
    fn queue_frame(&self, frame: &[u8], catchup: bool) {
        if self.close.get().is_some() {
            return;
        }
        let mut out = self.out.borrow_mut();
        out.extend_from_slice(frame);
        if catchup {
            self.catchup_bytes
                .set(self.catchup_bytes.get() + frame.len());
        }
        if out.len() - self.catchup_bytes.get() > SEND_QUEUE_BYTES_MAX {
            out.clear();
            drop(out);
            self.close_with(close::SLOW_CONSUMER, "send queue overflow");
            return;
        }
        drop(out);
        self.handle.notify();
    }

    fn shard_stats(&self) -> &ShardStats {
        &self.stats.0[usize::from(self.stats.1)]
    }

    /// Notes when a `send` arrived, to time its answer.
    fn sent(&self, cmid: ClientMsgId) {
        let mut times = self.ack_times.borrow_mut();
        if times.len() < ACK_TIMES_MAX {
            times.insert(cmid, Instant::now());
        }
    }

    /// An answer from another shard: an `ack` completes a send's timing
    /// (an error for a send just ends it).
    pub fn answered(&self, msg: &ServerMsg) {
        let cmid = match msg {
            ServerMsg::Ack { cmid, .. } => *cmid,
            ServerMsg::Error {
                cmid: Some(cmid), ..
            } => {
                self.ack_times.borrow_mut().remove(cmid);
                return;
            }
            _ => return,
        };
        if let Some(at) = self.ack_times.borrow_mut().remove(&cmid) {
            self.shard_stats().send_ack.record(at.elapsed());
        }
    }

    /// Asks the connection to close with `code`.
    pub fn close_with(&self, code: u16, reason: &'static str) {
        if self.close.get().is_none() {
            self.close.set(Some((code, reason)));
        }
        self.handle.notify();
    }

    /// A live message for this device (from the conversation's owner). The
    /// sending device's own message goes through the machine too, so its
    /// position moves past it; [`Session::drive`] keeps it off the wire.
    pub fn deliver(&self, hub: &Hub, msg: Arc<Message>) {
        let mut sync = self.sync.borrow_mut();
        // Before `sync` the device gets nothing live: its catch-up will
        // read everything from its cursor.
        let Some(s) = sync.as_mut() else {
            return;
        };
        s.machine.on_live(msg);
        drop(sync);
        self.drive(hub);
    }

    /// Carries out what the catch-up machine asks for. Once `synced` is out,
    /// the device's own messages are not sent back: it has them as acks
    /// (during the catch-up they are sent like any other, PROTOCOL.md).
    pub fn drive(&self, hub: &Hub) {
        let mut skipped = 0;
        loop {
            let (generation, live, action) = {
                let mut sync = self.sync.borrow_mut();
                let Some(s) = sync.as_mut() else {
                    return;
                };
                let mut action = s.machine.poll_action();
                if action.is_none() && skipped > 0 {
                    // Skipped sends count as written for the machine's window.
                    s.machine.on_written(std::mem::take(&mut skipped));
                    action = s.machine.poll_action();
                }
                match &action {
                    Some(catchup::Action::Send(m)) if s.live && self.is_own(m) => {
                        skipped += 1;
                        continue;
                    }
                    // Dev fault injection: lost on the way, as far as the
                    // device can tell (it is durable and fetchable).
                    Some(catchup::Action::Send(_)) if s.live && !hub.keep_live_delivery() => {
                        skipped += 1;
                        continue;
                    }
                    _ => {}
                }
                let live = s.live;
                if let Some(catchup::Action::Synced { .. }) = &action {
                    s.live = true;
                }
                (s.generation, live, action)
            };
            let Some(action) = action else {
                return;
            };
            self.catchup_action(hub, generation, live, action);
        }
    }

    fn is_own(&self, m: &Message) -> bool {
        m.from == self.user && m.device == self.device
    }

    /// `live`: `synced` is out, so a `msg` is live traffic.
    fn catchup_action(&self, hub: &Hub, generation: u32, live: bool, action: catchup::Action) {
        let (conn, user, device) = (self.id, self.user, self.device);
        match action {
            catchup::Action::LoadConvs => {
                let ok = hub.session_read(move |s| StoreEvent::Convs {
                    conn,
                    generation,
                    list: jobs::conv_starts(s, user, device),
                });
                if !ok {
                    self.close_with(close::TRY_AGAIN_LATER, "server busy");
                }
            }
            catchup::Action::ReadAfter { conv, after, limit } => {
                let user = self.user;
                let ok = hub.session_read(move |s| StoreEvent::Page {
                    conn,
                    generation,
                    conv,
                    msgs: jobs::catchup_page(s, user, conv, after, limit),
                });
                if !ok {
                    self.close_with(close::TRY_AGAIN_LATER, "server busy");
                }
            }
            catchup::Action::Send(msg) => {
                if live {
                    ShardStats::bump(&hub.stats().deliveries);
                }
                let frame = hub.frames.frame(&msg, self.encoding);
                self.queue_frame(&frame, !live);
                self.sends_queued.set(self.sends_queued.get() + 1);
            }
            catchup::Action::Synced { rid, convs } => self.push(&ServerMsg::Synced { rid, convs }),
        }
    }

    /// Feeds a storage result to the catch-up of `generation` (stale ones
    /// from a replaced catch-up are dropped).
    pub fn on_catchup_result(&self, hub: &Hub, generation: u32, feed: impl FnOnce(&mut CatchUp)) {
        {
            let mut sync = self.sync.borrow_mut();
            match sync.as_mut() {
                Some(s) if s.generation == generation => feed(&mut s.machine),
                _ => return,
            }
        }
        self.drive(hub);
    }

    /// The users this connection watches, replaced by `users`.
    pub fn replace_watching(&self, users: Vec<UserId>) -> Vec<UserId> {
        self.watching.replace(users)
    }

    fn sender(&self, hub: &Hub) -> Sender {
        Sender {
            user: self.user,
            device: self.device,
            shard: hub.me,
            conn: self.id,
        }
    }
}

/// Runs a session on its home shard until the connection ends.
pub(crate) async fn run(
    shard: Rc<Shard>,
    stream: TcpStream,
    leftover: Vec<u8>,
    guard: ConnGuard,
    claims: Claims,
    encoding: Encoding,
) {
    let hub = &shard.chat;
    guard.handle.expire_at(claims.expires);
    let session = Rc::new(Session {
        id: hub.next_conn_id(),
        user: claims.user,
        device: claims.device,
        encoding,
        handle: guard.handle.clone(),
        out: RefCell::new(Vec::new()),
        close: Cell::new(None),
        sends_queued: Cell::new(0),
        catchup_bytes: Cell::new(0),
        sync: RefCell::new(None),
        generation: Cell::new(0),
        bad_messages: Cell::new(0),
        watching: RefCell::new(Vec::new()),
        send_bucket: Cell::new(crate::limits::Bucket::default()),
        refused_sends: Cell::new(0),
        ack_times: RefCell::new(HashMap::new()),
        stats: hub.stats_handle(),
    });
    session.push(&ServerMsg::Welcome {
        user: claims.user,
        device: claims.device,
        version: protocol::VERSION,
        time: now_millis(),
    });
    let open = hub.by_user.borrow().get(&claims.user).map_or(0, Vec::len);
    if open >= hub.abuse.connections_per_user {
        // The welcome is queued; the close follows it, and no session is
        // registered: the user's other connections are untouched.
        ShardStats::bump(&hub.stats().user_limit_closes);
        session.close_with(
            close::TOO_MANY_CONNECTIONS,
            "too many connections for this user",
        );
    } else {
        register(hub, &session);
    }
    let handler = ChatHandler {
        shard: shard.clone(),
        session: session.clone(),
        in_write: 0,
    };
    websocket::run(
        stream,
        leftover,
        &shard,
        &guard.handle,
        &CHAT_LIMITS,
        handler,
    )
    .await;
    drop(guard);
}

fn register(hub: &Hub, session: &Rc<Session>) {
    {
        let mut sessions = hub.sessions.borrow_mut();
        sessions.insert(session.id, session.clone());
        ShardStats::set(&hub.stats().sessions, sessions.len());
    }
    let first = {
        let mut by_user = hub.by_user.borrow_mut();
        let conns = by_user.entry(session.user).or_default();
        conns.push(session.id);
        conns.len() == 1
    };
    if first {
        hub.announce(session.user, true, None);
    }
    super::notify::on_online(hub, session.user, session.device);
}

fn unregister(hub: &Hub, session: &Session) {
    {
        let mut sessions = hub.sessions.borrow_mut();
        if sessions.remove(&session.id).is_none() {
            // Never registered (refused at the per-user limit).
            return;
        }
        ShardStats::set(&hub.stats().sessions, sessions.len());
    }
    let last = {
        let mut by_user = hub.by_user.borrow_mut();
        let conns = by_user.entry(session.user).or_default();
        conns.retain(|c| *c != session.id);
        let last = conns.is_empty();
        if last {
            by_user.remove(&session.user);
        }
        last
    };
    if last {
        hub.user_buckets.borrow_mut().remove(&session.user);
        let now = now_millis();
        hub.presence.borrow_mut().went_offline(session.user, now);
        hub.announce(session.user, false, Some(now));
    }
    let watcher = Watcher {
        shard: hub.me,
        conn: session.id,
    };
    for target in session.replace_watching(Vec::new()) {
        hub.forward(hub.home_of(target), ShardMsg::Unwatch { target, watcher });
    }
    hub.flush();
}

/// The WebSocket handler of a chat session.
struct ChatHandler {
    shard: Rc<Shard>,
    session: Rc<Session>,
    /// Catch-up `msg`s in the write in progress.
    in_write: usize,
}

impl Drop for ChatHandler {
    fn drop(&mut self) {
        unregister(&self.shard.chat, &self.session);
    }
}

impl Handler for ChatHandler {
    fn on_message(&mut self, data: Data, _out: &mut Vec<u8>) -> Result<(), CloseReason> {
        if self.session.close.get().is_some() {
            // Closing: what the client says now is not acted on.
            return Ok(());
        }
        ShardStats::bump(&self.shard.chat.stats().messages_in);
        let decoded = match &data {
            Data::Text(t) => Encoding::Json.decode_client_unvalidated(t.as_bytes()),
            Data::Binary(b) => Encoding::Binary.decode_client_unvalidated(b),
        };
        let s = &self.session;
        let refusal = match decoded {
            Ok(msg) => match msg.validate() {
                Ok(()) => {
                    on_client(&self.shard.chat, s, msg);
                    return Ok(());
                }
                // Well-formed but out of bounds: name the request.
                Err(e) => {
                    let cmid = match &msg {
                        ClientMsg::Send { cmid, .. } => Some(*cmid),
                        _ => None,
                    };
                    super::hub::error_text(msg.rid(), cmid, ErrorCode::BadRequest, e.to_string())
                }
            },
            Err(e) => super::hub::error_text(None, None, e.error_code(), e.to_string()),
        };
        s.push(&refusal);
        s.bad_messages.set(s.bad_messages.get() + 1);
        if s.bad_messages.get() > BAD_MESSAGES_MAX {
            return Err((close::BAD_MESSAGES, "too many bad messages"));
        }
        Ok(())
    }

    fn poll_out(&mut self, out: &mut Vec<u8>) -> Result<(), CloseReason> {
        self.shard.chat.flush();
        let s = &self.session;
        if let Some(reason) = s.close.get() {
            // Called no more once it has answered `Err`: counted once.
            if reason.0 == close::SLOW_CONSUMER {
                ShardStats::bump(&self.shard.chat.stats().slow_consumer_closes);
            } else {
                // What was queued before the close (the errors that explain
                // a policy close, say) goes out before the close frame.
                out.append(&mut s.out.borrow_mut());
            }
            return Err(reason);
        }
        let mut queued = s.out.borrow_mut();
        if out.is_empty() {
            std::mem::swap(out, &mut queued);
        } else {
            out.extend_from_slice(&queued);
            // An idle connection keeps no write buffer.
            *queued = Vec::new();
        }
        self.in_write += s.sends_queued.replace(0);
        s.catchup_bytes.set(0);
        Ok(())
    }

    fn on_written(&mut self) {
        let n = std::mem::take(&mut self.in_write);
        if n > 0 {
            let s = &self.session;
            if let Some(sync) = s.sync.borrow_mut().as_mut() {
                sync.machine.on_written(n);
            }
            s.drive(&self.shard.chat);
        }
    }
}

/// What a decoded client message does.
fn on_client(hub: &Hub, s: &Rc<Session>, msg: ClientMsg) {
    match msg {
        ClientMsg::Send { conv, cmid, body } => send(hub, s, conv, cmid, body),
        ClientMsg::Recv { conv, seq } => signal(hub, s, conv, Signal::Recv(seq)),
        ClientMsg::Read { conv, seq } => signal(hub, s, conv, Signal::Read(seq)),
        ClientMsg::Typing { conv, active } => signal(hub, s, conv, Signal::Typing(active)),
        ClientMsg::Fetch {
            rid,
            conv,
            from,
            limit,
        } => reply_read(hub, s, rid, move |st, user| {
            jobs::fetch(st, user, rid, conv, from, limit)
        }),
        ClientMsg::ConvGet { rid, conv } => conv_read(hub, s, rid, conv, jobs::conv_get),
        ClientMsg::ReceiptsGet { rid, conv } => conv_read(hub, s, rid, conv, jobs::receipts),
        ClientMsg::Sync { rid, since } => start_sync(hub, s, rid, since),
        ClientMsg::DirectOpen { rid, user } => direct_open(hub, s, rid, user),
        ClientMsg::PushRegister {
            rid,
            platform,
            token,
        } => {
            let push = Some(storage::PushToken { platform, token });
            put_device(hub, s, rid, push);
        }
        ClientMsg::PushUnregister { rid } => put_device(hub, s, rid, None),
        ClientMsg::PresenceSubscribe { rid, users } => {
            let (conn, user) = (s.id, s.user);
            read_for(hub, s, rid, move |st| StoreEvent::Watchable {
                conn,
                rid,
                users: jobs::watchable(st, user, &users),
            });
        }
        ClientMsg::GroupCreate {
            rid,
            title,
            members,
        } => match new_group_id() {
            Some(conv) => group(hub, s, rid, conv, GroupOp::Create { title, members }),
            None => s.push(&error(Some(rid), None, ErrorCode::Internal, "no group id")),
        },
        ClientMsg::GroupRename { rid, conv, title } => {
            group(hub, s, rid, conv, GroupOp::Rename { title });
        }
        ClientMsg::GroupAdd { rid, conv, users } => {
            group(hub, s, rid, conv, GroupOp::Add { users });
        }
        ClientMsg::GroupRemove { rid, conv, users } => {
            group(hub, s, rid, conv, GroupOp::Remove { users });
        }
        ClientMsg::GroupLeave { rid, conv } => group(hub, s, rid, conv, GroupOp::Leave),
        ClientMsg::GroupSetRole {
            rid,
            conv,
            user,
            role,
        } => group(hub, s, rid, conv, GroupOp::SetRole { user, role }),
        ClientMsg::GroupSetHistory { rid, conv, visible } => {
            group(hub, s, rid, conv, GroupOp::SetHistory { visible });
        }
        ClientMsg::ConvSetPrivate { rid, conv, private } => {
            group(hub, s, rid, conv, GroupOp::SetPrivate { private });
        }
    }
}

/// A fresh random group id (top bit set); `None` if the OS has no
/// randomness to give.
fn new_group_id() -> Option<ConvId> {
    let mut bytes = [0u8; 8];
    getrandom::fill(&mut bytes).ok()?;
    Some(ConvId::group(u64::from_le_bytes(bytes)))
}

fn group(hub: &Hub, s: &Session, rid: protocol::RequestId, conv: ConvId, op: GroupOp) {
    if !conv.is_group() && !matches!(op, GroupOp::SetPrivate { .. }) {
        let text = "not a group conversation";
        s.push(&error(Some(rid), None, ErrorCode::BadRequest, text));
        return;
    }
    let req = GroupRequest {
        conv,
        by: s.sender(hub),
        rid,
        op,
    };
    if hub.route(hub.owner_of(conv), ShardMsg::Group(req)).is_err() {
        s.push(&error(
            Some(rid),
            None,
            ErrorCode::Overloaded,
            "server busy; retry",
        ));
    }
}

/// Takes a token from the connection's and the user's send buckets; on
/// refusal answers `rate_limited` (and closes with 4003 past the limit).
fn admit_send(hub: &Hub, s: &Session, cmid: ClientMsgId) -> bool {
    let now = std::time::Instant::now();
    let limits = hub.abuse;
    let mut conn = s.send_bucket.get();
    let mut ok = conn.take(now, limits.send_per_connection);
    if ok {
        let mut buckets = hub.user_buckets.borrow_mut();
        ok = buckets
            .entry(s.user)
            .or_default()
            .take(now, limits.send_per_user);
    }
    s.send_bucket.set(conn);
    if ok {
        s.refused_sends.set(0);
        return true;
    }
    ShardStats::bump(&hub.stats().rate_limited_sends);
    let refused = s.refused_sends.get() + 1;
    s.refused_sends.set(refused);
    if refused >= limits.close_after {
        ShardStats::bump(&hub.stats().rate_limit_closes);
        s.close_with(close::RATE_LIMITED, "too many sends after rate_limited");
        return false;
    }
    let text = "sending too fast; resend after a pause";
    s.push(&error(None, Some(cmid), ErrorCode::RateLimited, text));
    false
}

fn send(hub: &Hub, s: &Session, conv: ConvId, cmid: ClientMsgId, body: String) {
    if !admit_send(hub, s, cmid) {
        return;
    }
    if hub.sends_stopped() {
        let text = "server shutting down; resend after reconnecting";
        s.push(&error(None, Some(cmid), ErrorCode::Overloaded, text));
        return;
    }
    let append = Append {
        conv,
        sender: s.sender(hub),
        cmid,
        body: Arc::from(body),
    };
    s.sent(cmid);
    if hub
        .route(hub.owner_of(conv), ShardMsg::Append(append))
        .is_err()
    {
        s.push(&error(
            None,
            Some(cmid),
            ErrorCode::Overloaded,
            "server busy; retry",
        ));
    }
}

/// Runs a read that answers request `rid`, or answers `overloaded`.
fn read_for(
    hub: &Hub,
    s: &Session,
    rid: protocol::RequestId,
    job: impl FnOnce(&storage::Store) -> StoreEvent + Send + 'static,
) {
    if !hub.session_read(job) {
        s.push(&error(
            Some(rid),
            None,
            ErrorCode::Overloaded,
            "server busy; retry",
        ));
    }
}

/// Answers request `rid` with the reply `job` reads from the store for the
/// session's user (`fetch`, `conv_get`, `receipts_get`).
fn reply_read(
    hub: &Hub,
    s: &Session,
    rid: protocol::RequestId,
    job: impl FnOnce(&storage::Store, UserId) -> ServerMsg + Send + 'static,
) {
    let (conn, user) = (s.id, s.user);
    read_for(hub, s, rid, move |st| StoreEvent::Reply {
        conn,
        msg: job(st, user),
    });
}

/// A store read that answers request `rid` about `conv` for the session's
/// user (`conv_get`, `receipts_get`).
type ConvJob = fn(&storage::Store, UserId, protocol::RequestId, ConvId) -> ServerMsg;

fn conv_read(hub: &Hub, s: &Session, rid: protocol::RequestId, conv: ConvId, job: ConvJob) {
    reply_read(hub, s, rid, move |st, user| job(st, user, rid, conv));
}

fn signal(hub: &Hub, s: &Session, conv: protocol::ConvId, signal: Signal) {
    let from = s.sender(hub);
    let msg = ShardMsg::Signal { conv, from, signal };
    if hub.route(hub.owner_of(conv), msg).is_err() && !matches!(signal, Signal::Typing(_)) {
        s.push(&error(
            None,
            None,
            ErrorCode::Overloaded,
            "server busy; retry",
        ));
    }
}

fn start_sync(hub: &Hub, s: &Session, rid: protocol::RequestId, since: Vec<protocol::Position>) {
    let generation = s.generation.get().wrapping_add(1);
    s.generation.set(generation);
    s.sync.replace(Some(Sync {
        generation,
        machine: CatchUp::new(rid, since, CATCHUP_LIMITS),
        live: false,
    }));
    s.drive(hub);
}

fn direct_open(hub: &Hub, s: &Session, rid: protocol::RequestId, peer: UserId) {
    if peer == s.user {
        let text = "a direct conversation needs another user";
        s.push(&error(Some(rid), None, ErrorCode::BadRequest, text));
        return;
    }
    let conv = protocol::ConvId::direct(s.user, peer);
    let msg = ShardMsg::OpenDirect {
        conv,
        pair: (s.user, peer),
        requester: s.user,
        reply: Reply {
            shard: hub.me,
            conn: s.id,
            rid,
        },
    };
    if hub.route(hub.owner_of(conv), msg).is_err() {
        s.push(&error(
            Some(rid),
            None,
            ErrorCode::Overloaded,
            "server busy; retry",
        ));
    }
}

fn put_device(hub: &Hub, s: &Session, rid: protocol::RequestId, push: Option<storage::PushToken>) {
    if !hub.slots.try_reserve() {
        s.push(&error(
            Some(rid),
            None,
            ErrorCode::Overloaded,
            "server busy; retry",
        ));
        return;
    }
    super::notify::on_token(hub, s.user, s.device, push.as_ref());
    let op = storage::Op::PutDevice {
        user: s.user,
        device: s.device,
        record: storage::Device {
            push,
            registered: now_millis(),
        },
    };
    if !hub.write(vec![op], Ticket::Reply { conn: s.id, rid }) {
        hub.slots.release();
        s.push(&error(
            Some(rid),
            None,
            ErrorCode::Internal,
            "could not store the device",
        ));
    }
}
