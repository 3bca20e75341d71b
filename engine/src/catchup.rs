//! One device's reconnect catch-up, sans-IO.
//!
//! A device sends `sync {rid, since}` to its user's home shard. [`CatchUp`]
//! decides what the shard streams back: for each of the user's conversations,
//! every message after the device's position, in seq order, read from storage
//! in bounded pages; then `synced`; then the live stream. Messages that arrive
//! live while the catch-up runs are neither lost, duplicated nor reordered.
//! It does no I/O and keeps no clock: inputs are method calls, outputs are
//! [`Action`]s taken from [`CatchUp::poll_action`] in order, and storage
//! results come back as more inputs. The machine stays in the connection's
//! path after `synced`: it keeps dropping duplicates and repairing gaps.
//!
//! What it is not: it reads nothing, encodes nothing and checks no
//! membership. The shard builds each [`ConvStart`] from the store (the
//! conversation list, the device's cursors, the user's `joined`) and serves
//! [`Action::ReadAfter`] with `Store::messages_after`.
//!
//! # What it relies on
//! - The shard registers the connection for live delivery *before* it carries
//!   out [`Action::LoadConvs`]. Then every message committed after the list
//!   was read reaches [`CatchUp::on_live`] (unless a full cross-shard queue
//!   dropped it), and everything committed earlier is at or below the list's
//!   `last_seq`.
//! - A message is committed before it is delivered, the store has no gaps,
//!   and one conversation's deliveries arrive in seq order. So a read that
//!   starts after seq `n` was seen (live, in a page or as `last_seq`) returns
//!   every seq up to `n`.
//! - A page shorter than its `limit` means the store had nothing more when
//!   the read ran.
//! - A failed read fails the sync: the shard closes the connection
//!   (`internal`) and the client reconnects; there is no input for it.
//!
//! # How it works
//! Per conversation the machine keeps `sent` (the highest seq the device
//! holds: its start position, then what was sent), `known` (the highest seq
//! known to exist: the list's `last_seq`, pages, live deliveries), a buffer
//! of live messages not yet sent, and the state of its one read. A
//! conversation is caught up when no read is queued or in flight and its
//! buffer continues `sent` without a gap up to `known`; in any other state it
//! queues a `ReadAfter { after: sent }`. So a dropped delivery, a buffer
//! overflow and a read that raced a commit are all repaired the same way: by
//! reading again from `sent`, with the read starting after the missing
//! messages were seen to exist.
//!
//! # Choices
//! - **Output.** An action queue ([`CatchUp::poll_action`]), as in
//!   `conv::Owner`: call it until `None` after every input.
//! - **Start position.** `since` for the conversation if the client gave one
//!   (the lowest if it gave several), else the stored `delivered` cursor;
//!   raised to `joined` (the member sees only messages after it) and lowered
//!   to `last_seq` (a device cannot hold messages that do not exist, and a
//!   higher start would swallow the next live ones as duplicates). `since`
//!   for a conversation not in the list is ignored.
//! - **A conversation not in the list** (the user joined it, or it was
//!   created, after the list was read) starts just before its first live
//!   message, not at 0: every message the user may see in it was committed
//!   after the list was read, so it is delivered live, while reading it from
//!   seq 1 would stream history from before the user joined. It is not in
//!   `synced` (its `read` cursor is unknown); its messages come as `msg`.
//! - **Pages.** A full page asks for the next. A short page ends the read;
//!   buffered live messages that continue it are sent then, as part of the
//!   catch-up (and so are those delivered while the list was loading, when
//!   the list arrives). If the page misses a message that was known to exist
//!   when the read was issued, the store contradicts the conversation's
//!   owner: rather than read forever, the machine sends what it has
//!   buffered, gap and all, and `synced` reports the list's `last_seq` so
//!   the client `fetch`es the rest.
//! - **Live messages before `synced`** for a conversation that is already
//!   caught up are held, and sent in order right after `synced`
//!   (PROTOCOL.md: catch-up, then `synced`, then live). So for a listed
//!   conversation every `msg` before `synced` has `seq <= last_seq` of its
//!   summary, and every one after it has `seq > last_seq`.
//! - **Buffer overflow.** At most `buffered_max` live messages are held in
//!   total. A message that does not fit empties its conversation's buffer;
//!   the conversation then reads again from `sent`, so nothing is lost.
//! - **Flow control.** The machine counts the `Send`s it emitted minus the
//!   frames the shard reports written ([`CatchUp::on_written`]) and issues a
//!   read only while that count is below `send_window`. Counting messages,
//!   not bytes, keeps the machine ignorant of encodings; the connection's own
//!   byte bound still closes a slow consumer.
//! - **`synced`** is emitted exactly once, when the list is loaded and no
//!   read is queued or in flight. Its `delivered` is the stored cursor, not
//!   what was sent: the device confirms with `recv`.

use std::collections::{BTreeMap, VecDeque};
use std::sync::Arc;

use protocol::{ConvId, ConvKind, ConvSummary, Message, Position, RequestId, Seq};

/// Bounds of one device's catch-up.
///
/// Worst-case memory, with messages at `BODY_BYTES_MAX` (16 KiB) plus their
/// envelope: `reads_in_flight_max * page_limit` messages in pages being read
/// (16 MiB with the defaults) and `buffered_max` held live messages (16 MiB;
/// live bodies are shared with the shard's other recipients). Until `synced`
/// the connection's send queue holds at most `send_window +
/// reads_in_flight_max * page_limit + buffered_max` messages from this
/// machine; after it, live messages pass straight through and only the
/// connection's own bound applies.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct CatchUpLimits {
    /// Messages asked for in one `ReadAfter`.
    pub page_limit: usize,
    /// `ReadAfter`s in flight at once, across conversations.
    pub reads_in_flight_max: usize,
    /// Live messages held at once, across conversations, while their
    /// conversation is being read or `synced` is not yet sent.
    pub buffered_max: usize,
    /// `Send`s not yet reported written above which no read is issued.
    pub send_window: usize,
}

impl Default for CatchUpLimits {
    fn default() -> CatchUpLimits {
        CatchUpLimits {
            page_limit: 256,
            reads_in_flight_max: 4,
            buffered_max: 1024,
            send_window: 1024,
        }
    }
}

/// One of the user's conversations, as the shard loaded it for this device.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct ConvStart {
    pub conv: ConvId,
    pub kind: ConvKind,
    /// The conversation's newest seq when the list was read.
    pub last_seq: Seq,
    /// This device's stored `recv` cursor (`Seq::ZERO` if it has none).
    pub delivered: Seq,
    /// The user's `read` cursor.
    pub read: Seq,
    /// The seq of the event that added the user (0 for a direct
    /// conversation): the device is owed only messages after it.
    pub joined: Seq,
}

/// What the shard must do, in order.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum Action {
    /// Read the user's conversations with this device's cursors and call
    /// [`CatchUp::on_convs`].
    LoadConvs,
    /// Read up to `limit` messages of `conv` with seq > `after`, ascending,
    /// and call [`CatchUp::on_page`]. At most one per conversation at a time.
    ReadAfter {
        conv: ConvId,
        after: Seq,
        limit: usize,
    },
    /// Write the message to the device as `msg`.
    Send(Arc<Message>),
    /// Write `synced`.
    Synced {
        rid: RequestId,
        convs: Vec<ConvSummary>,
    },
}

#[derive(Clone, Copy, Debug, PartialEq, Eq)]
enum Stage {
    /// Waiting for the conversation list.
    Loading,
    /// Reading; `synced` not yet sent.
    CatchingUp,
    /// `synced` sent: live messages go straight out.
    Live,
}

#[derive(Clone, Copy, Debug, PartialEq, Eq)]
enum Read {
    Idle,
    Queued,
    /// In flight; `known` is what was known to exist when it was issued, so
    /// the page must reach at least that far.
    InFlight {
        known: Seq,
    },
}

/// The list's entry for a conversation, kept for its `synced` summary.
#[derive(Clone, Copy, Debug)]
struct Listed {
    kind: ConvKind,
    last_seq: Seq,
    delivered: Seq,
    read: Seq,
}

#[derive(Debug)]
struct Conv {
    /// `None` for a conversation first seen live and not in the list.
    listed: Option<Listed>,
    /// The seq of the first live message seen (a new conversation starts
    /// just before it).
    first_live: Seq,
    /// The highest seq the device holds: its start, then what was sent.
    sent: Seq,
    /// The highest seq known to exist (list, pages, live deliveries).
    known: Seq,
    /// Live messages with seq > `sent`, not yet sent.
    buffer: BTreeMap<Seq, Arc<Message>>,
    read: Read,
}

/// The outputs and counters shared by every conversation.
#[derive(Debug)]
struct Out {
    actions: VecDeque<Action>,
    /// Conversations waiting for a read slot, in the order they asked.
    read_queue: VecDeque<ConvId>,
    reads_in_flight: usize,
    buffered: usize,
    unwritten: usize,
}

impl Out {
    fn send(&mut self, conv: &mut Conv, msg: Arc<Message>) {
        debug_assert!(msg.seq > conv.sent, "only new messages are sent");
        conv.sent = msg.seq;
        conv.known = conv.known.max(msg.seq);
        self.unwritten += 1;
        self.actions.push_back(Action::Send(msg));
    }

    /// Forgets buffered messages the device already has.
    fn drop_stale(&mut self, conv: &mut Conv) {
        let fresh = conv.buffer.split_off(&conv.sent.next());
        self.buffered -= conv.buffer.len();
        conv.buffer = fresh;
    }

    /// Sends the buffered messages that continue `sent`.
    fn release(&mut self, conv: &mut Conv) {
        while let Some(entry) = conv.buffer.first_entry() {
            if *entry.key() != conv.sent.next() {
                return;
            }
            let msg = entry.remove();
            self.buffered -= 1;
            self.send(conv, msg);
        }
    }

    /// Sends every buffered message in order, across gaps.
    fn release_all(&mut self, conv: &mut Conv) {
        while let Some((_, msg)) = conv.buffer.pop_first() {
            self.buffered -= 1;
            self.send(conv, msg);
        }
    }

    /// Buffers a live message, or on overflow empties the conversation's
    /// buffer: `known` already covers the message, so the conversation reads
    /// again from `sent` and nothing is lost.
    fn hold(&mut self, conv: &mut Conv, msg: Arc<Message>, buffered_max: usize) {
        if conv.buffer.contains_key(&msg.seq) {
            return;
        }
        if self.buffered < buffered_max {
            conv.buffer.insert(msg.seq, msg);
            self.buffered += 1;
        } else {
            self.buffered -= conv.buffer.len();
            conv.buffer.clear();
        }
    }

    fn queue_read(&mut self, id: ConvId, conv: &mut Conv) {
        if conv.read == Read::Idle {
            conv.read = Read::Queued;
            self.read_queue.push_back(id);
        }
    }

    /// After a change to an idle conversation: sends what may go out now and
    /// queues a read if anything is missing.
    fn settle(&mut self, id: ConvId, conv: &mut Conv, stage: Stage) {
        if conv.read != Read::Idle {
            return;
        }
        if stage == Stage::Live {
            self.release(conv);
        }
        if conv.contiguous_end() < conv.known {
            self.queue_read(id, conv);
        }
    }
}

impl Conv {
    fn first_seen(seq: Seq) -> Conv {
        let before = Seq(seq.0.saturating_sub(1));
        Conv {
            listed: None,
            first_live: seq,
            sent: before,
            known: before,
            buffer: BTreeMap::new(),
            read: Read::Idle,
        }
    }

    /// The highest seq the device will hold once the buffered messages that
    /// continue `sent` are sent.
    fn contiguous_end(&self) -> Seq {
        let mut end = self.sent;
        for &seq in self.buffer.range(self.sent.next()..).map(|(s, _)| s) {
            if seq != end.next() {
                break;
            }
            end = seq;
        }
        end
    }
}

/// One device's catch-up after `sync`, then its live filter.
#[derive(Debug)]
pub struct CatchUp {
    rid: RequestId,
    /// The client's positions, until the list arrives.
    since: BTreeMap<ConvId, Seq>,
    limits: CatchUpLimits,
    stage: Stage,
    convs: BTreeMap<ConvId, Conv>,
    /// The listed conversations, in the list's order.
    order: Vec<ConvId>,
    out: Out,
}

impl CatchUp {
    /// Starts a catch-up for `sync {rid, since}`; the first action is
    /// [`Action::LoadConvs`].
    pub fn new(rid: RequestId, since: Vec<Position>, limits: CatchUpLimits) -> CatchUp {
        assert!(limits.page_limit > 0, "an empty page never ends a read");
        assert!(limits.reads_in_flight_max > 0, "no read could be issued");
        assert!(limits.send_window > 0, "no read could be issued");
        let mut positions = BTreeMap::new();
        for p in since {
            positions
                .entry(p.conv)
                .and_modify(|s: &mut Seq| *s = (*s).min(p.seq))
                .or_insert(p.seq);
        }
        let mut out = Out {
            actions: VecDeque::new(),
            read_queue: VecDeque::new(),
            reads_in_flight: 0,
            buffered: 0,
            unwritten: 0,
        };
        out.actions.push_back(Action::LoadConvs);
        CatchUp {
            rid,
            since: positions,
            limits,
            stage: Stage::Loading,
            convs: BTreeMap::new(),
            order: Vec::new(),
            out,
        }
    }

    /// The next action to carry out, in order.
    pub fn poll_action(&mut self) -> Option<Action> {
        self.out.actions.pop_front()
    }

    /// Whether `synced` has been emitted.
    pub fn is_synced(&self) -> bool {
        self.stage == Stage::Live
    }

    /// Live messages held now, across conversations.
    pub fn buffered(&self) -> usize {
        self.out.buffered
    }

    pub fn reads_in_flight(&self) -> usize {
        self.out.reads_in_flight
    }

    /// The conversation list arrived (the answer to [`Action::LoadConvs`]).
    pub fn on_convs(&mut self, list: Vec<ConvStart>) {
        if self.stage != Stage::Loading {
            debug_assert!(false, "on_convs without LoadConvs");
            return;
        }
        self.stage = Stage::CatchingUp;
        let since = std::mem::take(&mut self.since);
        for c in list {
            // `first_seen(ZERO)` only allocates: everything is set below.
            let conv = self
                .convs
                .entry(c.conv)
                .or_insert_with(|| Conv::first_seen(Seq::ZERO));
            if conv.listed.is_some() {
                continue;
            }
            let from = since.get(&c.conv).copied().unwrap_or(c.delivered);
            conv.sent = from.max(c.joined).min(c.last_seq);
            conv.known = conv.known.max(c.last_seq);
            conv.listed = Some(Listed {
                kind: c.kind,
                last_seq: c.last_seq,
                delivered: c.delivered,
                read: c.read,
            });
            self.order.push(c.conv);
        }
        // Seen live while loading but not listed: new to the user.
        for conv in self.convs.values_mut().filter(|c| c.listed.is_none()) {
            conv.sent = Seq(conv.first_live.0.saturating_sub(1));
        }
        let unlisted = self.convs.iter().filter(|(_, c)| c.listed.is_none());
        let unlisted: Vec<ConvId> = unlisted.map(|(id, _)| *id).collect();
        for id in self.order.clone().into_iter().chain(unlisted) {
            let conv = self.convs.get_mut(&id).expect("placed above");
            // Delivered while the list was loading: part of the catch-up.
            self.out.drop_stale(conv);
            self.out.release(conv);
            self.out.settle(id, conv, self.stage);
        }
        self.pump();
    }

    /// A page of `conv` arrived (the answer to [`Action::ReadAfter`]).
    pub fn on_page(&mut self, id: ConvId, msgs: Vec<Message>) {
        let Some(conv) = self.convs.get_mut(&id) else {
            debug_assert!(false, "a page for a conversation never read");
            return;
        };
        let Read::InFlight {
            known: known_at_issue,
        } = conv.read
        else {
            debug_assert!(false, "a page without a read in flight");
            return;
        };
        conv.read = Read::Idle;
        self.out.reads_in_flight -= 1;
        let full = msgs.len() >= self.limits.page_limit;
        for m in msgs {
            debug_assert_eq!(m.conv, id, "a page holds one conversation");
            if m.conv == id && m.seq > conv.sent {
                self.out.send(conv, Arc::new(m));
            }
        }
        self.out.drop_stale(conv);
        if full {
            self.out.queue_read(id, conv);
        } else {
            self.out.release(conv);
            if conv.sent < conv.known {
                if conv.sent >= known_at_issue {
                    // The read ran before the missing messages were seen.
                    self.out.queue_read(id, conv);
                } else {
                    // The store lacks what was known to exist: stop here.
                    self.out.release_all(conv);
                    conv.known = conv.sent;
                }
            }
        }
        self.pump();
    }

    /// A live message for this device arrived (committed already).
    pub fn on_live(&mut self, msg: Arc<Message>) {
        let (id, seq) = (msg.conv, msg.seq);
        if seq == Seq::ZERO {
            debug_assert!(false, "no message has seq 0");
            return;
        }
        let conv = self
            .convs
            .entry(id)
            .or_insert_with(|| Conv::first_seen(seq));
        let loading = self.stage == Stage::Loading;
        if !loading && seq <= conv.sent {
            return;
        }
        conv.known = conv.known.max(seq);
        if self.stage == Stage::Live
            && conv.read == Read::Idle
            && conv.buffer.is_empty()
            && seq == conv.sent.next()
        {
            self.out.send(conv, msg);
            return;
        }
        self.out.hold(conv, msg, self.limits.buffered_max);
        if !loading {
            self.out.settle(id, conv, self.stage);
            self.pump();
        }
    }

    /// The shard wrote `n` of the `Send`s to the connection (or dropped them
    /// with it); more reads may be issued.
    pub fn on_written(&mut self, n: usize) {
        self.out.unwritten = self.out.unwritten.saturating_sub(n);
        self.pump();
    }

    /// Issues queued reads as slots and the send window allow, then `synced`
    /// once nothing is left to read.
    fn pump(&mut self) {
        while self.out.reads_in_flight < self.limits.reads_in_flight_max
            && self.out.unwritten < self.limits.send_window
        {
            let Some(id) = self.out.read_queue.pop_front() else {
                break;
            };
            let conv = self.convs.get_mut(&id).expect("queued conversations exist");
            debug_assert_eq!(conv.read, Read::Queued);
            conv.read = Read::InFlight { known: conv.known };
            self.out.reads_in_flight += 1;
            self.out.actions.push_back(Action::ReadAfter {
                conv: id,
                after: conv.sent,
                limit: self.limits.page_limit,
            });
        }
        let idle = self.out.read_queue.is_empty() && self.out.reads_in_flight == 0;
        if self.stage == Stage::CatchingUp && idle {
            self.synced();
        }
    }

    fn synced(&mut self) {
        let convs = self
            .order
            .iter()
            .map(|id| {
                let conv = &self.convs[id];
                let listed = conv.listed.expect("ordered conversations are listed");
                ConvSummary {
                    conv: *id,
                    kind: listed.kind,
                    last_seq: conv.sent.max(listed.last_seq),
                    delivered: listed.delivered,
                    read: listed.read,
                }
            })
            .collect();
        self.out.actions.push_back(Action::Synced {
            rid: self.rid,
            convs,
        });
        self.stage = Stage::Live;
        for conv in self.convs.values_mut() {
            self.out.release(conv);
            debug_assert!(conv.buffer.is_empty(), "caught-up buffers have no gap");
        }
    }
}

#[cfg(test)]
mod tests {
    use crate::sim_rng::Rng;
    use std::collections::BTreeSet;
    use std::ops::RangeInclusive;

    use protocol::{Content, DeviceId, MsgId, UnixMillis, UserId};

    use super::*;

    const A: ConvId = ConvId(1);
    const B: ConvId = ConvId(2);
    const C: ConvId = ConvId(3);
    const D: ConvId = ConvId(4);

    fn msg(conv: ConvId, seq: u64) -> Message {
        Message {
            conv,
            seq: Seq(seq),
            id: MsgId(conv.0 << 32 | seq),
            from: UserId(1),
            device: DeviceId(1),
            ts: UnixMillis(seq),
            content: Content::Text(format!("{conv}/{seq}")),
        }
    }

    fn msgs(conv: ConvId, seqs: RangeInclusive<u64>) -> Vec<Message> {
        seqs.map(|s| msg(conv, s)).collect()
    }

    fn live(conv: ConvId, seq: u64) -> Arc<Message> {
        Arc::new(msg(conv, seq))
    }

    fn sends(conv: ConvId, seqs: RangeInclusive<u64>) -> Vec<Action> {
        seqs.map(|s| Action::Send(live(conv, s))).collect()
    }

    fn read(conv: ConvId, after: u64, limit: usize) -> Action {
        Action::ReadAfter {
            conv,
            after: Seq(after),
            limit,
        }
    }

    fn start(conv: ConvId, last: u64, delivered: u64) -> ConvStart {
        ConvStart {
            conv,
            kind: ConvKind::Direct,
            last_seq: Seq(last),
            delivered: Seq(delivered),
            read: Seq(delivered / 2),
            joined: Seq::ZERO,
        }
    }

    fn summary(c: &ConvStart, last: u64) -> ConvSummary {
        ConvSummary {
            conv: c.conv,
            kind: c.kind,
            last_seq: Seq(last),
            delivered: c.delivered,
            read: c.read,
        }
    }

    fn synced(convs: Vec<ConvSummary>) -> Action {
        Action::Synced {
            rid: RequestId(7),
            convs,
        }
    }

    fn limits(page: usize, reads: usize, buffered: usize, window: usize) -> CatchUpLimits {
        CatchUpLimits {
            page_limit: page,
            reads_in_flight_max: reads,
            buffered_max: buffered,
            send_window: window,
        }
    }

    /// A machine past `LoadConvs`, with the list not yet delivered.
    fn machine(since: &[(ConvId, u64)], limits: CatchUpLimits) -> CatchUp {
        let since = since
            .iter()
            .map(|&(conv, seq)| Position {
                conv,
                seq: Seq(seq),
            })
            .collect();
        let mut m = CatchUp::new(RequestId(7), since, limits);
        assert_eq!(drain(&mut m), vec![Action::LoadConvs]);
        m
    }

    fn drain(m: &mut CatchUp) -> Vec<Action> {
        std::iter::from_fn(|| m.poll_action()).collect()
    }

    fn cat(parts: impl IntoIterator<Item = Vec<Action>>) -> Vec<Action> {
        parts.into_iter().flatten().collect()
    }

    #[test]
    fn empty_sync_is_synced_at_once() {
        let mut m = machine(&[], CatchUpLimits::default());
        assert!(!m.is_synced());
        m.on_convs(Vec::new());
        assert_eq!(drain(&mut m), vec![synced(Vec::new())]);
        assert!(m.is_synced());
    }

    #[test]
    fn up_to_date_conversations_need_no_read() {
        let mut m = machine(&[], CatchUpLimits::default());
        let (a, b) = (start(A, 5, 5), start(B, 0, 0));
        m.on_convs(vec![a, b]);
        assert_eq!(
            drain(&mut m),
            vec![synced(vec![summary(&a, 5), summary(&b, 0)])]
        );
        m.on_live(live(B, 1));
        assert_eq!(drain(&mut m), sends(B, 1..=1));
    }

    #[test]
    fn since_overrides_the_stored_cursor_lower_and_higher() {
        let since = [(A, 2), (B, 8), (C, 99), (D, 0), (ConvId(50), 3)];
        let mut m = machine(&since, CatchUpLimits::default());
        let (lower, higher, ahead) = (start(A, 10, 5), start(B, 10, 3), start(C, 4, 1));
        // `since` below `joined` is raised to it: no history from before the join.
        let joined = ConvStart {
            joined: Seq(6),
            ..start(D, 7, 0)
        };
        m.on_convs(vec![lower, higher, ahead, joined]);
        // C's `since` is past its last message: clamped, nothing to read.
        assert_eq!(
            drain(&mut m),
            vec![read(A, 2, 256), read(B, 8, 256), read(D, 6, 256)]
        );
        m.on_page(A, msgs(A, 3..=10));
        m.on_page(D, msgs(D, 7..=7));
        m.on_page(B, msgs(B, 9..=10));
        let want = vec![
            summary(&lower, 10),
            summary(&higher, 10),
            summary(&ahead, 4),
            summary(&joined, 7),
        ];
        assert_eq!(
            drain(&mut m),
            cat([
                sends(A, 3..=10),
                sends(D, 7..=7),
                sends(B, 9..=10),
                vec![synced(want)]
            ])
        );
        // The clamp did not swallow C's next message as a duplicate.
        m.on_live(live(C, 4));
        m.on_live(live(C, 5));
        assert_eq!(drain(&mut m), sends(C, 5..=5));
    }

    #[test]
    fn live_messages_before_the_list_are_held_and_deduped() {
        let mut m = machine(&[], CatchUpLimits::default());
        // 10 was committed before the list was read, 11 after.
        m.on_live(live(A, 10));
        m.on_live(live(A, 11));
        assert_eq!(drain(&mut m), Vec::new());
        assert_eq!(m.buffered(), 2);
        let a = start(A, 10, 8);
        m.on_convs(vec![a]);
        assert_eq!(drain(&mut m), vec![read(A, 8, 256)]);
        m.on_page(A, msgs(A, 9..=10));
        assert_eq!(
            drain(&mut m),
            cat([sends(A, 9..=11), vec![synced(vec![summary(&a, 11)])]])
        );
        assert_eq!(m.buffered(), 0);
    }

    /// Seed 3 of the simulation, shrunk: a conversation created after the
    /// device subscribed but before the list was read is in the list, and its
    /// messages arrived live while the list loaded. They are its catch-up:
    /// sent before `synced`, whose `last_seq` covers them, with no read.
    #[test]
    fn list_covered_by_live_messages_is_sent_before_synced() {
        let mut m = machine(&[], CatchUpLimits::default());
        m.on_live(live(A, 1));
        m.on_live(live(A, 2));
        let a = start(A, 2, 0);
        m.on_convs(vec![a]);
        assert_eq!(
            drain(&mut m),
            cat([sends(A, 1..=2), vec![synced(vec![summary(&a, 2)])]])
        );
    }

    #[test]
    fn live_message_continuing_a_short_page_is_sent_with_it() {
        let mut m = machine(&[], CatchUpLimits::default());
        let a = start(A, 10, 0);
        m.on_convs(vec![a]);
        assert_eq!(drain(&mut m), vec![read(A, 0, 256)]);
        // Committed after the read ran; delivered before its page is back.
        m.on_live(live(A, 11));
        m.on_live(live(A, 12));
        m.on_page(A, msgs(A, 1..=10));
        assert_eq!(
            drain(&mut m),
            cat([sends(A, 1..=12), vec![synced(vec![summary(&a, 12)])]])
        );
    }

    #[test]
    fn live_message_racing_a_short_page_reads_the_gap() {
        let mut m = machine(&[], CatchUpLimits::default());
        let a = start(A, 10, 0);
        m.on_convs(vec![a]);
        assert_eq!(drain(&mut m), vec![read(A, 0, 256)]);
        // The read saw 1..=10; 11 and 12 were committed after it started,
        // and 11's delivery was lost (a full cross-shard queue).
        m.on_live(live(A, 12));
        m.on_page(A, msgs(A, 1..=10));
        assert_eq!(
            drain(&mut m),
            cat([sends(A, 1..=10), vec![read(A, 10, 256)]])
        );
        m.on_page(A, msgs(A, 11..=12));
        assert_eq!(
            drain(&mut m),
            cat([sends(A, 11..=12), vec![synced(vec![summary(&a, 12)])]])
        );
        assert_eq!(m.buffered(), 0);
    }

    #[test]
    fn buffer_overflow_rereads_and_loses_nothing() {
        let mut m = machine(&[], limits(256, 4, 2, 1024));
        let a = start(A, 10, 0);
        m.on_convs(vec![a]);
        assert_eq!(drain(&mut m), vec![read(A, 0, 256)]);
        m.on_live(live(A, 11));
        m.on_live(live(A, 12));
        assert_eq!(m.buffered(), 2);
        m.on_live(live(A, 13));
        assert_eq!(m.buffered(), 0, "the overflow emptied A's buffer");
        m.on_page(A, msgs(A, 1..=10));
        assert_eq!(
            drain(&mut m),
            cat([sends(A, 1..=10), vec![read(A, 10, 256)]])
        );
        m.on_page(A, msgs(A, 11..=13));
        assert_eq!(
            drain(&mut m),
            cat([sends(A, 11..=13), vec![synced(vec![summary(&a, 13)])]])
        );
    }

    #[test]
    fn new_conversation_seen_only_live() {
        let mut m = machine(&[], CatchUpLimits::default());
        let a = start(A, 2, 0);
        m.on_convs(vec![a]);
        assert_eq!(drain(&mut m), vec![read(A, 0, 256)]);
        // Created after the list was read: held until `synced`, not in it.
        let x = ConvId::group(1);
        m.on_live(live(x, 1));
        assert_eq!(drain(&mut m), Vec::new());
        m.on_page(A, msgs(A, 1..=2));
        assert_eq!(
            drain(&mut m),
            cat([
                sends(A, 1..=2),
                vec![synced(vec![summary(&a, 2)])],
                sends(x, 1..=1)
            ])
        );
        m.on_live(live(x, 2));
        assert_eq!(drain(&mut m), sends(x, 2..=2));
        // A group the user was added to at seq 4: it starts there, without
        // reading the history from before the join.
        let y = ConvId::group(2);
        m.on_live(live(y, 5));
        m.on_live(live(y, 6));
        assert_eq!(drain(&mut m), sends(y, 5..=6));
    }

    #[test]
    fn multi_page_catch_up() {
        let mut m = machine(&[], limits(3, 4, 16, 1024));
        let (a, b) = (start(A, 7, 0), start(B, 6, 0));
        m.on_convs(vec![a, b]);
        assert_eq!(drain(&mut m), vec![read(A, 0, 3), read(B, 0, 3)]);
        for (after, last) in [(0, 3), (3, 6)] {
            m.on_page(A, msgs(A, after + 1..=last));
            m.on_page(B, msgs(B, after + 1..=last));
            assert_eq!(
                drain(&mut m),
                cat([
                    sends(A, after + 1..=last),
                    vec![read(A, last, 3)],
                    sends(B, after + 1..=last),
                    vec![read(B, last, 3)],
                ])
            );
        }
        // A ends on a short page; B, a multiple of the page, on an empty one.
        m.on_page(A, msgs(A, 7..=7));
        m.on_page(B, Vec::new());
        assert_eq!(
            drain(&mut m),
            cat([
                sends(A, 7..=7),
                vec![synced(vec![summary(&a, 7), summary(&b, 6)])]
            ])
        );
    }

    #[test]
    fn live_message_for_a_caught_up_conversation_waits_for_synced() {
        let mut m = machine(&[], CatchUpLimits::default());
        let (a, b) = (start(A, 1, 0), start(B, 1, 0));
        m.on_convs(vec![a, b]);
        assert_eq!(drain(&mut m), vec![read(A, 0, 256), read(B, 0, 256)]);
        m.on_page(A, msgs(A, 1..=1));
        assert_eq!(drain(&mut m), sends(A, 1..=1));
        m.on_live(live(A, 2));
        assert_eq!(drain(&mut m), Vec::new());
        m.on_page(B, msgs(B, 1..=1));
        assert_eq!(
            drain(&mut m),
            cat([
                sends(B, 1..=1),
                vec![synced(vec![summary(&a, 1), summary(&b, 1)])],
                sends(A, 2..=2),
            ])
        );
    }

    #[test]
    fn reads_wait_for_a_slot_and_the_send_window() {
        let mut m = machine(&[], limits(2, 1, 16, 3));
        let (a, b) = (start(A, 4, 0), start(B, 2, 0));
        m.on_convs(vec![a, b]);
        assert_eq!(drain(&mut m), vec![read(A, 0, 2)]);
        assert_eq!(m.reads_in_flight(), 1);
        m.on_page(A, msgs(A, 1..=2));
        assert_eq!(drain(&mut m), cat([sends(A, 1..=2), vec![read(B, 0, 2)]]));
        m.on_page(B, msgs(B, 1..=2));
        // Four sends unwritten, window 3: A's next page waits.
        assert_eq!(drain(&mut m), sends(B, 1..=2));
        m.on_written(1);
        assert_eq!(drain(&mut m), Vec::new());
        m.on_written(1);
        assert_eq!(drain(&mut m), vec![read(A, 2, 2)]);
        m.on_page(A, msgs(A, 3..=4));
        assert_eq!(drain(&mut m), sends(A, 3..=4));
        m.on_written(4);
        assert_eq!(drain(&mut m), vec![read(B, 2, 2)]);
        m.on_page(B, Vec::new());
        m.on_page(A, Vec::new());
        assert_eq!(
            drain(&mut m),
            vec![read(A, 4, 2), synced(vec![summary(&a, 4), summary(&b, 2)])]
        );
    }

    #[test]
    fn gap_after_synced_is_read() {
        let mut m = machine(&[], CatchUpLimits::default());
        let a = start(A, 0, 0);
        m.on_convs(vec![a]);
        assert_eq!(drain(&mut m), vec![synced(vec![summary(&a, 0)])]);
        m.on_live(live(A, 1));
        m.on_live(live(A, 3));
        m.on_live(live(A, 4));
        assert_eq!(drain(&mut m), cat([sends(A, 1..=1), vec![read(A, 1, 256)]]));
        m.on_live(live(A, 5));
        m.on_page(A, msgs(A, 2..=4));
        m.on_live(live(A, 6));
        assert_eq!(drain(&mut m), sends(A, 2..=6));
    }

    #[test]
    fn store_missing_known_messages_ends_the_read_instead_of_spinning() {
        let mut m = machine(&[], CatchUpLimits::default());
        // The list says 20, the store has only 15.
        let a = start(A, 20, 0);
        m.on_convs(vec![a]);
        assert_eq!(drain(&mut m), vec![read(A, 0, 256)]);
        m.on_page(A, msgs(A, 1..=15));
        assert_eq!(
            drain(&mut m),
            cat([sends(A, 1..=15), vec![synced(vec![summary(&a, 20)])]])
        );
        // One read for the gap, then the message goes out anyway.
        m.on_live(live(A, 21));
        assert_eq!(drain(&mut m), vec![read(A, 15, 256)]);
        m.on_page(A, Vec::new());
        assert_eq!(drain(&mut m), sends(A, 21..=21));
    }

    // ---- Simulation --------------------------------------------------------

    #[derive(Debug)]
    enum Load {
        Asked,
        Snapshot(Vec<ConvStart>),
        Done,
    }

    /// A read the machine asked for; `snapshot` is taken when it starts.
    struct PendingRead {
        conv: ConvId,
        after: Seq,
        limit: usize,
        snapshot: Option<Vec<Message>>,
    }

    /// How often the interesting paths ran, summed over seeds.
    #[derive(Debug, Default)]
    struct Coverage {
        dropped_deliveries: usize,
        overflows: usize,
        before_list: usize,
        unlisted: usize,
        /// Reads issued after a short page of the same conversation: a gap,
        /// an overflow or a read that raced a commit.
        rereads: usize,
        live_after_synced: usize,
    }

    /// One device's `sync` against a fake store, a fake router delivering
    /// committed messages (in order per conversation, sometimes dropping
    /// one) and a fake reader whose reads start and finish at random times.
    struct Sim {
        seed: u64,
        rng: Rng,
        limits: CatchUpLimits,
        m: CatchUp,
        store: BTreeMap<ConvId, Vec<Message>>,
        /// Stored (delivered, read, joined) per conversation.
        cursors: BTreeMap<ConvId, (Seq, Seq, Seq)>,
        since: BTreeMap<ConvId, Seq>,
        load: Load,
        reads: Vec<PendingRead>,
        deliveries: BTreeMap<ConvId, VecDeque<Message>>,
        /// Conversations whose latest delivery was dropped.
        dirty: BTreeSet<ConvId>,
        /// Conversations whose last page was short.
        short: BTreeSet<ConvId>,
        commits_left: usize,
        next_conv: u64,
        unwritten: usize,
        /// What the device expects: the list as read, with start positions.
        listed: Option<Vec<(ConvStart, Seq)>>,
        first_live: BTreeMap<ConvId, Seq>,
        got: BTreeMap<ConvId, Vec<Seq>>,
        summaries: Option<Vec<ConvSummary>>,
        cov: Coverage,
    }

    impl Sim {
        fn new(seed: u64) -> Sim {
            let mut rng = Rng(seed);
            let limits = if rng.one_in(8) {
                CatchUpLimits::default()
            } else {
                limits(
                    1 + rng.below(5),
                    1 + rng.below(3),
                    1 + rng.below(8),
                    1 + rng.below(8),
                )
            };
            let page = u64::try_from(limits.page_limit).unwrap();
            let mut sim = Sim {
                seed,
                limits,
                m: machine(&[], limits),
                store: BTreeMap::new(),
                cursors: BTreeMap::new(),
                since: BTreeMap::new(),
                load: Load::Asked,
                reads: Vec::new(),
                deliveries: BTreeMap::new(),
                dirty: BTreeSet::new(),
                short: BTreeSet::new(),
                commits_left: rng.below(60),
                next_conv: 100,
                unwritten: 0,
                listed: None,
                first_live: BTreeMap::new(),
                got: BTreeMap::new(),
                summaries: None,
                cov: Coverage::default(),
                rng,
            };
            for i in 0..sim.rng.below(6) {
                let conv = ConvId(10 + u64::try_from(i).unwrap());
                let last = sim.rng.upto(3 * page + 2);
                sim.store.insert(conv, msgs(conv, 1..=last));
                let joined = if sim.rng.one_in(4) {
                    sim.rng.upto(last)
                } else {
                    0
                };
                let delivered = sim.rng.upto(last);
                sim.cursors
                    .insert(conv, (Seq(delivered), Seq(delivered / 2), Seq(joined)));
                if sim.rng.one_in(2) {
                    sim.since.insert(conv, Seq(sim.rng.upto(last + 3)));
                }
                // Deliveries already on their way when the device subscribed.
                let from = last.saturating_sub(sim.rng.upto(3)).max(joined) + 1;
                let queue = sim.deliveries.entry(conv).or_default();
                queue.extend(msgs(conv, from..=last));
            }
            if sim.rng.one_in(4) {
                sim.since.insert(ConvId(99), Seq(3));
            }
            let since: Vec<(ConvId, u64)> = sim.since.iter().map(|(c, s)| (*c, s.0)).collect();
            sim.m = machine(&since, limits);
            sim
        }

        fn fail(&self, what: &str) -> String {
            format!("seed {}: {what}", self.seed)
        }

        /// The seq before the first one the device is owed.
        fn start_of(&self, conv: ConvId) -> Seq {
            let listed = self.listed.as_ref().expect("sends follow the list");
            match listed.iter().find(|(c, _)| c.conv == conv) {
                Some((_, start)) => *start,
                None => Seq(self.first_live[&conv].0 - 1),
            }
        }

        fn held(&self, conv: ConvId) -> Seq {
            self.got
                .get(&conv)
                .and_then(|g| g.last().copied())
                .unwrap_or_else(|| self.start_of(conv))
        }

        fn run(&mut self) {
            for _ in 0..200_000 {
                self.drain();
                assert!(
                    self.m.buffered() <= self.limits.buffered_max,
                    "{}",
                    self.fail("buffer bound")
                );
                if !self.step() {
                    if self.dirty.is_empty() {
                        self.check_end();
                        return;
                    }
                    // Repair what only a later delivery can reveal.
                    for conv in std::mem::take(&mut self.dirty) {
                        self.commit(conv);
                    }
                }
            }
            panic!("{}", self.fail("step cap reached"));
        }

        /// Runs one random enabled event; `false` if none is.
        fn step(&mut self) -> bool {
            let mut enabled = Vec::new();
            if self.commits_left > 0 {
                enabled.push(0);
            }
            if self.deliveries.values().any(|q| !q.is_empty()) {
                enabled.extend([1, 1]);
            }
            if self.reads.iter().any(|r| r.snapshot.is_none()) {
                enabled.push(2);
            }
            if self.reads.iter().any(|r| r.snapshot.is_some()) {
                enabled.push(3);
            }
            if !matches!(self.load, Load::Done) {
                enabled.push(4);
            }
            if self.unwritten > 0 {
                enabled.push(5);
            }
            if enabled.is_empty() {
                return false;
            }
            match enabled[self.rng.below(enabled.len())] {
                0 => self.random_commit(),
                1 => self.deliver(),
                2 => self.start_read(),
                3 => self.finish_read(),
                4 => self.advance_load(),
                _ => {
                    let n = 1 + self.rng.below(self.unwritten);
                    self.unwritten -= n;
                    self.m.on_written(n);
                }
            }
            true
        }

        fn random_commit(&mut self) {
            self.commits_left -= 1;
            let conv = if self.store.is_empty() || self.rng.one_in(15) {
                self.next_conv += 1;
                ConvId(self.next_conv)
            } else {
                let i = self.rng.below(self.store.len());
                *self.store.keys().nth(i).unwrap()
            };
            self.commit(conv);
        }

        /// Commits the conversation's next message and queues its delivery.
        fn commit(&mut self, conv: ConvId) {
            let stored = self.store.entry(conv).or_default();
            let seq = u64::try_from(stored.len()).unwrap() + 1;
            stored.push(msg(conv, seq));
            let queue = self.deliveries.entry(conv).or_default();
            queue.push_back(msg(conv, seq));
        }

        fn deliver(&mut self) {
            let ready: Vec<ConvId> = self
                .deliveries
                .iter()
                .filter(|(_, q)| !q.is_empty())
                .map(|(c, _)| *c)
                .collect();
            let conv = ready[self.rng.below(ready.len())];
            let m = self.deliveries.get_mut(&conv).unwrap().pop_front().unwrap();
            if self.commits_left > 0 && self.rng.one_in(12) {
                self.cov.dropped_deliveries += 1;
                self.dirty.insert(conv);
                return;
            }
            self.dirty.remove(&conv);
            self.first_live.entry(conv).or_insert(m.seq);
            if matches!(self.load, Load::Asked | Load::Snapshot(_)) {
                self.cov.before_list += 1;
            }
            let full_before = self.m.buffered() == self.limits.buffered_max;
            self.m.on_live(Arc::new(m));
            if full_before && self.m.buffered() < self.limits.buffered_max {
                self.cov.overflows += 1;
            }
        }

        fn start_read(&mut self) {
            let idle: Vec<usize> = (0..self.reads.len())
                .filter(|&i| self.reads[i].snapshot.is_none())
                .collect();
            let r = &mut self.reads[idle[self.rng.below(idle.len())]];
            let stored = &self.store[&r.conv];
            let from = usize::try_from(r.after.0).unwrap().min(stored.len());
            let to = (from + r.limit).min(stored.len());
            r.snapshot = Some(stored[from..to].to_vec());
        }

        fn finish_read(&mut self) {
            let done: Vec<usize> = (0..self.reads.len())
                .filter(|&i| self.reads[i].snapshot.is_some())
                .collect();
            let r = self.reads.remove(done[self.rng.below(done.len())]);
            let page = r.snapshot.unwrap();
            if page.len() < r.limit {
                self.short.insert(r.conv);
            }
            self.m.on_page(r.conv, page);
        }

        fn advance_load(&mut self) {
            match std::mem::replace(&mut self.load, Load::Done) {
                Load::Asked => {
                    let list = self.read_list();
                    self.load = Load::Snapshot(list);
                }
                Load::Snapshot(list) => self.m.on_convs(list),
                Load::Done => unreachable!(),
            }
        }

        /// The list as the store has it now, and the starts it implies.
        fn read_list(&mut self) -> Vec<ConvStart> {
            let mut list = Vec::new();
            let mut listed = Vec::new();
            for (conv, stored) in &self.store {
                let (delivered, read, joined) = self.cursors.get(conv).copied().unwrap_or_default();
                let c = ConvStart {
                    conv: *conv,
                    kind: if conv.is_group() {
                        ConvKind::Group
                    } else {
                        ConvKind::Direct
                    },
                    last_seq: Seq(u64::try_from(stored.len()).unwrap()),
                    delivered,
                    read,
                    joined,
                };
                let from = self.since.get(conv).copied().unwrap_or(delivered);
                listed.push((c, from.max(joined).min(c.last_seq)));
                list.push(c);
            }
            // The list's order is the store's business; reverse it sometimes.
            if self.rng.one_in(2) {
                list.reverse();
                listed.reverse();
            }
            self.listed = Some(listed);
            list
        }

        fn drain(&mut self) {
            while let Some(action) = self.m.poll_action() {
                match action {
                    Action::LoadConvs => panic!("{}", self.fail("LoadConvs twice")),
                    Action::ReadAfter { conv, after, limit } => self.on_read(conv, after, limit),
                    Action::Send(msg) => self.on_send(&msg),
                    Action::Synced { rid, convs } => {
                        assert_eq!(rid, RequestId(7));
                        self.on_synced(convs);
                    }
                }
            }
        }

        fn on_read(&mut self, conv: ConvId, after: Seq, limit: usize) {
            assert_eq!(limit, self.limits.page_limit, "{}", self.fail("limit"));
            assert_eq!(after, self.held(conv), "{}", self.fail("read after held"));
            assert!(
                self.reads.iter().all(|r| r.conv != conv),
                "{}",
                self.fail("two reads of one conversation")
            );
            assert!(
                self.reads.len() < self.limits.reads_in_flight_max,
                "{}",
                self.fail("reads in flight")
            );
            assert!(
                self.unwritten < self.limits.send_window,
                "{}",
                self.fail("send window")
            );
            if self.short.remove(&conv) {
                self.cov.rereads += 1;
            }
            self.reads.push(PendingRead {
                conv,
                after,
                limit,
                snapshot: None,
            });
        }

        fn on_send(&mut self, msg: &Message) {
            let conv = msg.conv;
            let held = self.held(conv);
            assert_eq!(
                msg.seq,
                held.next(),
                "{}",
                self.fail(&format!("{conv}: in order, no gap, no duplicate"))
            );
            assert_eq!(*msg, self.store[&conv][usize::try_from(held.0).unwrap()]);
            if let Some(summaries) = &self.summaries
                && let Some(s) = summaries.iter().find(|s| s.conv == conv)
            {
                assert!(msg.seq > s.last_seq, "{}", self.fail("after synced"));
                self.cov.live_after_synced += 1;
            }
            self.got.entry(conv).or_default().push(msg.seq);
            self.unwritten += 1;
        }

        fn on_synced(&mut self, convs: Vec<ConvSummary>) {
            assert!(self.summaries.is_none(), "{}", self.fail("synced twice"));
            let listed = self.listed.as_ref().expect("synced follows the list");
            let want: Vec<ConvId> = listed.iter().map(|(c, _)| c.conv).collect();
            let got: Vec<ConvId> = convs.iter().map(|s| s.conv).collect();
            assert_eq!(got, want, "{}", self.fail("one summary per listed conv"));
            for (s, (c, _)) in convs.iter().zip(listed) {
                assert_eq!(s.kind, c.kind);
                assert_eq!(s.delivered, c.delivered, "{}", self.fail("stored cursor"));
                assert_eq!(s.read, c.read);
                assert!(s.last_seq >= c.last_seq, "{}", self.fail("caught up"));
                assert_eq!(
                    s.last_seq,
                    self.held(c.conv),
                    "{}",
                    self.fail("synced after exactly the catch-up")
                );
            }
            self.cov.unlisted += self.store.len() - listed.len();
            self.summaries = Some(convs);
        }

        fn check_end(&self) {
            assert!(self.summaries.is_some(), "{}", self.fail("never synced"));
            assert!(self.m.is_synced());
            assert_eq!(self.m.buffered(), 0, "{}", self.fail("nothing left held"));
            for (conv, stored) in &self.store {
                let last = Seq(u64::try_from(stored.len()).unwrap());
                assert_eq!(
                    self.held(*conv),
                    last,
                    "{}",
                    self.fail(&format!("{conv}: everything delivered"))
                );
            }
        }
    }

    #[test]
    fn random_interleavings_lose_and_reorder_nothing() {
        let mut cov = Coverage::default();
        for seed in 0..4000 {
            let mut sim = Sim::new(seed);

            sim.run();
            cov.dropped_deliveries += sim.cov.dropped_deliveries;
            cov.overflows += sim.cov.overflows;
            cov.before_list += sim.cov.before_list;
            cov.unlisted += sim.cov.unlisted;
            cov.rereads += sim.cov.rereads;
            cov.live_after_synced += sim.cov.live_after_synced;
        }
        eprintln!("{cov:?}");
        // The simulation must reach every path it claims to test.
        for (what, n) in [
            ("dropped deliveries", cov.dropped_deliveries),
            ("overflows", cov.overflows),
            ("live before the list", cov.before_list),
            ("unlisted conversations", cov.unlisted),
            ("re-reads", cov.rereads),
            ("sends after synced", cov.live_after_synced),
        ] {
            assert!(n >= 100, "{what}: only {n} ({cov:?})");
        }
    }
}
