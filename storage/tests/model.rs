//! The store against a `BTreeMap` model.
//!
//! Each case opens a `Store` in a fresh directory and runs a random sequence
//! of steps on it and on [`Model`]: single-op and multi-op atomic requests
//! (some with a refused append, which must leave nothing of the request
//! behind), writes to one key twice in one request, requests submitted
//! together so that they share one group commit, random reads, and reopens.
//! After every step the cheap reads are compared, every few steps all of
//! them. A case ends by reopening the store, comparing everything again and
//! checking that each conversation still takes last + 1 and refuses last + 2.
//!
//! Ids come from tiny sets so that steps collide, and every set holds the
//! edges of the key encoding (0 and `u64::MAX`); reads also ask about one id
//! of each kind that is never written. Steps name ids by index into those
//! sets, so a shrunk failure prints short, readable steps: paste them into a
//! named test like `refused_group_create_leaves_nothing`.

use std::collections::BTreeMap;
use std::path::Path;
use std::sync::Arc;
use std::sync::atomic::Ordering;
use std::time::Duration;

use crossbeam_channel::{Receiver, Sender};
use proptest::collection::vec;
use proptest::prelude::*;
use proptest::test_runner::TestCaseError;
use protocol::{
    ClientMsgId, Content, ConvId, ConvKind, DeviceId, GroupEvent, Message, MsgId, Platform, Role,
    Seq, UnixMillis, UserId,
};
use storage::{
    ChannelSink, Completion, CompletionSink, Config, Conversation, Cursor, Device, Durability,
    Error, Membership, Op, PushJob, PushToken, SendOutcome, Store, WriteRequest,
};

// ---- ids ----

/// Conversations written by steps; `conv(CONVS)` is only ever read.
const CONVS: u8 = 4;
/// Users written by steps; `user(USERS)` is only ever read.
const USERS: u8 = 5;
/// Devices per user written by steps; `device(DEVICES)` is only ever read.
const DEVICES: u8 = 3;
/// Client message ids used for dedupe; `cmid(CMIDS)` is only ever read.
const CMIDS: u8 = 3;
/// Outbox job ids written by steps.
const JOBS: u8 = 5;

fn conv(i: u8) -> ConvId {
    match i {
        0 => ConvId(0),
        1 => ConvId::group(1),
        2 => ConvId::direct(UserId(1), UserId(2)),
        3 => ConvId(u64::MAX),
        _ => ConvId::group(77),
    }
}

fn user(i: u8) -> UserId {
    UserId(match i {
        0 => 0,
        1 => 1,
        2 => 2,
        3 => 1 << 53,
        4 => u64::MAX,
        _ => 99,
    })
}

fn device(i: u8) -> DeviceId {
    DeviceId(match i {
        0 => 0,
        1 => 1,
        2 => u64::MAX,
        _ => 7,
    })
}

fn cmid(i: u8) -> ClientMsgId {
    ClientMsgId(match i {
        0 => 0,
        1 => 1,
        2 => u64::MAX,
        _ => 5,
    })
}

fn job(i: u8) -> u64 {
    match i {
        0 => 0,
        1 => 1,
        2 => 2,
        3 => 1 << 32,
        _ => u64::MAX,
    }
}

/// Where outbox reads start: every job id, and ids between and past them.
const OUTBOX_FROMS: [u64; 7] = [0, 1, 2, 3, 1 << 32, (1 << 32) + 1, u64::MAX];

fn outbox_froms() -> u8 {
    u8::try_from(OUTBOX_FROMS.len()).expect("a handful of read positions")
}

/// Message bodies, titles and previews: empty, short, multi-byte, long.
const BODIES: u8 = 4;

fn body(i: u8) -> String {
    match i % BODIES {
        0 => String::new(),
        1 => "hi".into(),
        2 => "héllo ✓ 👋".into(),
        _ => "long ".repeat(100),
    }
}

// ---- steps ----

/// Where an append goes, relative to the conversation's last seq at the time:
/// after earlier accepted requests, and after earlier appends of its own
/// request.
#[derive(Clone, Copy, Debug)]
enum At {
    /// last + 1: accepted.
    Next,
    /// last + 1 + k with k ≥ 1: refused with `SeqGap`.
    Gap(u8),
    /// last − k, at least 0: refused with `SeqReused`.
    Reuse(u8),
    /// `u64::MAX`: refused with `SeqGap`.
    Max,
}

/// One logical write; becomes one or more `Op`s. Fields are indices into the
/// id sets above.
#[derive(Clone, Debug)]
enum Action {
    Append {
        conv: u8,
        at: At,
        from: u8,
        device: u8,
        dedupe: Option<u8>,
        body: u8,
    },
    /// `PutConv`, `PutMember` for the creator (admin) and each member, and
    /// the `Created` event, whose seq is every member's `joined`.
    CreateGroup {
        conv: u8,
        at: At,
        creator: u8,
        members: Vec<u8>,
        history_visible: bool,
    },
    PutConv {
        conv: u8,
        title: u8,
        members: u32,
        history_visible: bool,
        participants: bool,
    },
    PutMember {
        conv: u8,
        user: u8,
        admin: bool,
        joined: u8,
    },
    RemoveMember {
        conv: u8,
        user: u8,
    },
    PutDevice {
        user: u8,
        device: u8,
        /// (APNs rather than FCM, token).
        push: Option<(bool, u8)>,
        registered: u8,
    },
    RemoveDevice {
        user: u8,
        device: u8,
    },
    PutCursor {
        user: u8,
        device: u8,
        conv: u8,
        delivered: u8,
        read: u8,
    },
    PutOutbox {
        id: u8,
        user: u8,
        device: u8,
        conv: u8,
        seq: u8,
        preview: Option<u8>,
    },
    RemoveOutbox {
        id: u8,
    },
}

/// One request of a [`Step::Together`] group.
#[derive(Clone, Debug)]
struct Submit {
    /// Which of two completion sinks gets the completion.
    sink: u8,
    /// Through `try_submit` rather than `submit`.
    nonblocking: bool,
    actions: Vec<Action>,
}

/// A seq argument of a read, relative to the conversation's last seq.
#[derive(Clone, Copy, Debug)]
enum SeqArg {
    Zero,
    /// last + k, at least 0.
    Last(i8),
    Max,
}

/// One read, compared between the store and the model. Ids are indices as in
/// [`Action`], and may name the id of each kind that is never written.
#[derive(Clone, Copy, Debug)]
enum Query {
    After {
        conv: u8,
        from: SeqArg,
        limit: usize,
    },
    Before {
        conv: u8,
        from: SeqArg,
        limit: usize,
    },
    Latest {
        conv: u8,
        limit: usize,
    },
    Message {
        conv: u8,
        seq: SeqArg,
    },
    Member {
        conv: u8,
        user: u8,
    },
    Device {
        user: u8,
        device: u8,
    },
    Cursor {
        user: u8,
        device: u8,
        conv: u8,
    },
    Cursors {
        user: u8,
        device: u8,
    },
    ConvCursors {
        user: u8,
        conv: u8,
        devices_max: usize,
    },
    Dedupe {
        user: u8,
        device: u8,
        cmid: u8,
    },
    Outbox {
        from: u8,
        limit: usize,
    },
}

#[derive(Clone, Debug)]
enum Step {
    /// One atomic request through `Store::write`.
    Write(Vec<Action>),
    /// Requests queued while the writer is held, so that they land in one
    /// group commit; the model applies them in submission order.
    Together(Vec<Submit>),
    Read(Query),
    /// Drop the store and open it again at the same path.
    Reopen,
}

/// Per-case store configuration.
#[derive(Clone, Copy, Debug)]
struct Setup {
    durability: Durability,
    /// Small values make the writer forget and re-read last seqs.
    seq_cache_entries_max: usize,
    /// Small values split a `Together` group over several commits.
    batch_ops_max: usize,
}

// ---- strategies ----

// Ids that steps write: every one but the last of each set.

fn conv_w() -> impl Strategy<Value = u8> + Clone {
    0..CONVS
}

fn user_w() -> impl Strategy<Value = u8> + Clone {
    0..USERS
}

fn device_w() -> impl Strategy<Value = u8> + Clone {
    0..DEVICES
}

fn at() -> impl Strategy<Value = At> + Clone {
    prop_oneof![
        16 => Just(At::Next),
        1 => (1..4u8).prop_map(At::Gap),
        1 => (0..3u8).prop_map(At::Reuse),
        1 => Just(At::Max),
    ]
}

fn append() -> impl Strategy<Value = Action> + Clone {
    (
        conv_w(),
        at(),
        user_w(),
        device_w(),
        prop::option::weighted(0.4, 0..CMIDS),
        0..BODIES,
    )
        .prop_map(|(conv, at, from, device, dedupe, body)| Action::Append {
            conv,
            at,
            from,
            device,
            dedupe,
            body,
        })
}

fn create_group() -> impl Strategy<Value = Action> + Clone {
    (conv_w(), at(), user_w(), vec(user_w(), 0..4), any::<bool>()).prop_map(
        |(conv, at, creator, members, history_visible)| Action::CreateGroup {
            conv,
            at,
            creator,
            members,
            history_visible,
        },
    )
}

fn put_conv() -> impl Strategy<Value = Action> + Clone {
    (conv_w(), 0..8u8, 0..5u32, any::<bool>(), any::<bool>()).prop_map(
        |(conv, title, members, history_visible, participants)| Action::PutConv {
            conv,
            title,
            members,
            history_visible,
            participants,
        },
    )
}

fn put_member() -> impl Strategy<Value = Action> + Clone {
    (conv_w(), user_w(), any::<bool>(), 0..20u8).prop_map(|(conv, user, admin, joined)| {
        Action::PutMember {
            conv,
            user,
            admin,
            joined,
        }
    })
}

fn put_device() -> impl Strategy<Value = Action> + Clone {
    (
        user_w(),
        device_w(),
        prop::option::of((any::<bool>(), 0..4u8)),
        0..100u8,
    )
        .prop_map(|(user, device, push, registered)| Action::PutDevice {
            user,
            device,
            push,
            registered,
        })
}

fn put_cursor() -> impl Strategy<Value = Action> + Clone {
    (user_w(), device_w(), conv_w(), 0..20u8, 0..20u8).prop_map(
        |(user, device, conv, delivered, read)| Action::PutCursor {
            user,
            device,
            conv,
            delivered,
            read,
        },
    )
}

fn put_outbox() -> impl Strategy<Value = Action> + Clone {
    (
        0..JOBS,
        user_w(),
        device_w(),
        conv_w(),
        0..50u8,
        prop::option::of(0..BODIES),
    )
        .prop_map(|(id, user, device, conv, seq, preview)| Action::PutOutbox {
            id,
            user,
            device,
            conv,
            seq,
            preview,
        })
}

fn action() -> impl Strategy<Value = Action> + Clone {
    prop_oneof![
        8 => append(),
        2 => create_group(),
        1 => put_conv(),
        3 => put_member(),
        2 => (conv_w(), user_w()).prop_map(|(conv, user)| Action::RemoveMember { conv, user }),
        2 => put_device(),
        1 => (user_w(), device_w())
            .prop_map(|(user, device)| Action::RemoveDevice { user, device }),
        2 => put_cursor(),
        2 => put_outbox(),
        1 => (0..JOBS).prop_map(|id| Action::RemoveOutbox { id }),
    ]
}

/// Two writes to one key in one request: the second must win.
fn same_key_twice() -> impl Strategy<Value = Vec<Action>> {
    let how = || 0..3u8;
    prop_oneof![
        5 => prop_oneof![
            (put_conv(), put_conv(), how()),
            (put_member(), put_member(), how()),
            (put_device(), put_device(), how()),
            (put_cursor(), put_cursor(), how()),
            (put_outbox(), put_outbox(), how()),
        ]
        .prop_map(|(first, second, how)| twice(first, second, how)),
        1 => same_dedupe_twice(),
    ]
}

/// Two writes to `first`'s key: `first` then `second` rekeyed (how 0, or
/// where the key cannot be removed), `first` then its removal (how 1), or the
/// removal then `first` (how 2).
fn twice(first: Action, second: Action, how: u8) -> Vec<Action> {
    match (how, first.removal()) {
        (1, Some(remove)) => vec![first, remove],
        (2, Some(remove)) => vec![remove, first],
        _ => {
            let second = second.with_key_of(&first);
            vec![first, second]
        }
    }
}

impl Action {
    /// This put with the key of `like`, a put of the same kind.
    fn with_key_of(mut self, like: &Action) -> Action {
        match (&mut self, like) {
            (Action::PutConv { conv, .. }, Action::PutConv { conv: c, .. }) => *conv = *c,
            (
                Action::PutMember { conv, user, .. },
                Action::PutMember {
                    conv: c, user: u, ..
                },
            ) => (*conv, *user) = (*c, *u),
            (
                Action::PutDevice { user, device, .. },
                Action::PutDevice {
                    user: u, device: d, ..
                },
            ) => (*user, *device) = (*u, *d),
            (
                Action::PutCursor {
                    user, device, conv, ..
                },
                Action::PutCursor {
                    user: u,
                    device: d,
                    conv: c,
                    ..
                },
            ) => (*user, *device, *conv) = (*u, *d, *c),
            (Action::PutOutbox { id, .. }, Action::PutOutbox { id: i, .. }) => *id = *i,
            _ => unreachable!("with_key_of takes two puts of one kind"),
        }
        self
    }

    /// The op that removes what this put writes, where the store has one.
    fn removal(&self) -> Option<Action> {
        match *self {
            Action::PutMember { conv, user, .. } => Some(Action::RemoveMember { conv, user }),
            Action::PutDevice { user, device, .. } => Some(Action::RemoveDevice { user, device }),
            Action::PutOutbox { id, .. } => Some(Action::RemoveOutbox { id }),
            _ => None,
        }
    }
}

/// Two accepted sends with one dedupe key (maybe to different
/// conversations): the record must point at the second.
fn same_dedupe_twice() -> impl Strategy<Value = Vec<Action>> {
    (
        conv_w(),
        conv_w(),
        user_w(),
        device_w(),
        0..CMIDS,
        0..BODIES,
    )
        .prop_map(|(c1, c2, from, device, k, body)| {
            let send = |conv: u8, body: u8| Action::Append {
                conv,
                at: At::Next,
                from,
                device,
                dedupe: Some(k),
                body,
            };
            vec![send(c1, body), send(c2, (body + 1) % BODIES)]
        })
}

fn submit() -> impl Strategy<Value = Submit> {
    (0..2u8, any::<bool>(), vec(action(), 0..4)).prop_map(|(sink, nonblocking, actions)| Submit {
        sink,
        nonblocking,
        actions,
    })
}

fn limit() -> impl Strategy<Value = usize> + Clone {
    prop_oneof![Just(0), Just(1), 2..6usize, Just(usize::MAX)]
}

fn seq_arg() -> impl Strategy<Value = SeqArg> + Clone {
    prop_oneof![
        1 => Just(SeqArg::Zero),
        6 => (-3..4i8).prop_map(SeqArg::Last),
        1 => Just(SeqArg::Max),
    ]
}

/// How many devices a `conv_cursors` read looks at.
const DEVICES_MAXES: [usize; 4] = [0, 1, 2, usize::MAX];

fn devices_max() -> impl Strategy<Value = usize> {
    proptest::sample::select(&DEVICES_MAXES[..])
}

fn query() -> impl Strategy<Value = Query> {
    // Reads may name the id of each kind that no step writes.
    let (c, u, d) = (0..=CONVS, 0..=USERS, 0..=DEVICES);
    prop_oneof![
        (c.clone(), seq_arg(), limit()).prop_map(|(conv, from, limit)| Query::After {
            conv,
            from,
            limit
        }),
        (c.clone(), seq_arg(), limit()).prop_map(|(conv, from, limit)| Query::Before {
            conv,
            from,
            limit
        }),
        (c.clone(), limit()).prop_map(|(conv, limit)| Query::Latest { conv, limit }),
        (c.clone(), seq_arg()).prop_map(|(conv, seq)| Query::Message { conv, seq }),
        (c.clone(), u.clone()).prop_map(|(conv, user)| Query::Member { conv, user }),
        (u.clone(), d.clone()).prop_map(|(user, device)| Query::Device { user, device }),
        (u.clone(), d.clone(), c.clone()).prop_map(|(user, device, conv)| Query::Cursor {
            user,
            device,
            conv
        }),
        (u.clone(), d.clone()).prop_map(|(user, device)| Query::Cursors { user, device }),
        (u.clone(), c, devices_max()).prop_map(|(user, conv, devices_max)| {
            Query::ConvCursors {
                user,
                conv,
                devices_max,
            }
        }),
        (u, d, 0..=CMIDS).prop_map(|(user, device, cmid)| Query::Dedupe { user, device, cmid }),
        (0..outbox_froms(), limit()).prop_map(|(from, limit)| Query::Outbox { from, limit }),
    ]
}

fn step() -> impl Strategy<Value = Step> {
    prop_oneof![
        30 => action().prop_map(|a| Step::Write(vec![a])),
        10 => vec(action(), 0..6).prop_map(Step::Write),
        6 => same_key_twice().prop_map(Step::Write),
        6 => vec(submit(), 2..7).prop_map(Step::Together),
        20 => query().prop_map(Step::Read),
        1 => Just(Step::Reopen),
    ]
}

fn setup() -> impl Strategy<Value = Setup> {
    (
        prop_oneof![Just(Durability::None), Just(Durability::Os)],
        prop_oneof![Just(1), Just(2), Just(1 << 20)],
        prop_oneof![1 => Just(2), 3 => Just(4096)],
    )
        .prop_map(|(durability, seq_cache_entries_max, batch_ops_max)| Setup {
            durability,
            seq_cache_entries_max,
            batch_ops_max,
        })
}

// ---- the model ----

/// Why the store must refuse a request, as comparable data.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
enum Refusal {
    Gap {
        conv: ConvId,
        expected: Seq,
        got: Seq,
    },
    Reused {
        conv: ConvId,
        last: Seq,
        got: Seq,
    },
}

fn refusal(e: Error) -> Result<Refusal, TestCaseError> {
    match e {
        Error::SeqGap {
            conv,
            expected,
            got,
        } => Ok(Refusal::Gap {
            conv,
            expected,
            got,
        }),
        Error::SeqReused { conv, last, got } => Ok(Refusal::Reused { conv, last, got }),
        other => Err(TestCaseError::fail(format!("unexpected error: {other}"))),
    }
}

/// Everything the store keeps, in the simplest form that answers its reads.
/// `user_convs` is derived from `members`, so both index directions of the
/// store are checked against one truth.
#[derive(Clone, Debug, Default)]
struct Model {
    convs: BTreeMap<ConvId, Conversation>,
    messages: BTreeMap<(ConvId, Seq), Message>,
    members: BTreeMap<(ConvId, UserId), Membership>,
    devices: BTreeMap<(UserId, DeviceId), Device>,
    cursors: BTreeMap<(UserId, DeviceId, ConvId), Cursor>,
    dedupe: BTreeMap<(UserId, DeviceId, ClientMsgId), SendOutcome>,
    outbox: BTreeMap<u64, PushJob>,
}

impl Model {
    fn messages_of(&self, conv: ConvId) -> impl DoubleEndedIterator<Item = &Message> {
        self.messages
            .range((conv, Seq::ZERO)..=(conv, Seq(u64::MAX)))
            .map(|(_, m)| m)
    }

    fn last_seq(&self, conv: ConvId) -> Seq {
        self.messages_of(conv)
            .next_back()
            .map_or(Seq::ZERO, |m| m.seq)
    }

    fn after(&self, conv: ConvId, after: Seq, limit: usize) -> Vec<Message> {
        let newer = self.messages_of(conv).filter(|m| m.seq > after);
        newer.take(limit).cloned().collect()
    }

    fn before(&self, conv: ConvId, before: Seq, limit: usize) -> Vec<Message> {
        let older = self.messages_of(conv).rev().filter(|m| m.seq < before);
        let mut out: Vec<Message> = older.take(limit).cloned().collect();
        out.reverse();
        out
    }

    fn latest(&self, conv: ConvId, limit: usize) -> Vec<Message> {
        let mut out: Vec<Message> = self.messages_of(conv).rev().take(limit).cloned().collect();
        out.reverse();
        out
    }

    fn members_of(&self, conv: ConvId) -> Vec<(UserId, Membership)> {
        let all = self.members.iter().filter(|((c, _), _)| *c == conv);
        all.map(|(&(_, u), &m)| (u, m)).collect()
    }

    fn user_convs(&self, user: UserId) -> Vec<(ConvId, Membership, Seq)> {
        let all = self.members.iter().filter(|((_, u), _)| *u == user);
        all.map(|(&(c, _), &m)| (c, m, self.last_seq(c))).collect()
    }

    fn devices_of(&self, user: UserId) -> Vec<(DeviceId, Device)> {
        let all = self.devices.iter().filter(|((u, _), _)| *u == user);
        all.map(|(&(_, d), r)| (d, r.clone())).collect()
    }

    fn cursors_of(&self, user: UserId, device: DeviceId) -> Vec<(ConvId, Cursor)> {
        let all = self.cursors.iter();
        let mine = all.filter(|((u, d, _), _)| *u == user && *d == device);
        mine.map(|(&(_, _, c), &r)| (c, r)).collect()
    }

    /// The user's cursors in `conv`, from its `devices_max` lowest devices
    /// that have any cursor.
    fn conv_cursors(
        &self,
        user: UserId,
        conv: ConvId,
        devices_max: usize,
    ) -> Vec<(DeviceId, Cursor)> {
        let mut devices: Vec<DeviceId> = Vec::new();
        for &(u, d, _) in self.cursors.keys() {
            if u == user && devices.last() != Some(&d) {
                devices.push(d);
            }
        }
        devices.truncate(devices_max);
        let rows = devices.into_iter().filter_map(|d| {
            let cursor = self.cursors.get(&(user, d, conv))?;
            Some((d, *cursor))
        });
        rows.collect()
    }

    fn outbox_from(&self, from: u64, limit: usize) -> Vec<(u64, PushJob)> {
        let jobs = self.outbox.range(from..).take(limit);
        jobs.map(|(&id, j)| (id, j.clone())).collect()
    }

    /// Applies one request: all of it, or nothing if an append is refused.
    fn apply(&mut self, ops: &[Op]) -> Result<(), Refusal> {
        let mut lasts: BTreeMap<ConvId, Seq> = BTreeMap::new();
        for op in ops {
            if let Op::Append { msg, .. } = op {
                let conv = msg.conv;
                let last = *lasts.entry(conv).or_insert_with(|| self.last_seq(conv));
                let got = msg.seq;
                if got <= last {
                    return Err(Refusal::Reused { conv, last, got });
                }
                if got.0 != last.0 + 1 {
                    let expected = Seq(last.0 + 1);
                    return Err(Refusal::Gap {
                        conv,
                        expected,
                        got,
                    });
                }
                lasts.insert(conv, got);
            }
        }
        for op in ops {
            self.apply_op(op);
        }
        Ok(())
    }

    fn apply_op(&mut self, op: &Op) {
        match op {
            Op::PutConv(c) => {
                self.convs.insert(c.id, c.clone());
            }
            Op::Append { msg, dedupe } => {
                self.messages.insert((msg.conv, msg.seq), msg.clone());
                if let Some(k) = dedupe {
                    let outcome = SendOutcome {
                        conv: msg.conv,
                        seq: msg.seq,
                        id: msg.id,
                        ts: msg.ts,
                    };
                    self.dedupe.insert((msg.from, msg.device, *k), outcome);
                }
            }
            Op::PutMember {
                conv,
                user,
                membership,
            } => {
                self.members.insert((*conv, *user), *membership);
            }
            Op::RemoveMember { conv, user } => {
                self.members.remove(&(*conv, *user));
            }
            Op::PutDevice {
                user,
                device,
                record,
            } => {
                self.devices.insert((*user, *device), record.clone());
            }
            Op::RemoveDevice { user, device } => {
                self.devices.remove(&(*user, *device));
            }
            Op::PutCursor {
                user,
                device,
                conv,
                cursor,
            } => {
                self.cursors.insert((*user, *device, *conv), *cursor);
            }
            Op::PutOutbox { id, job } => {
                self.outbox.insert(*id, job.clone());
            }
            Op::RemoveOutbox { id } => {
                self.outbox.remove(id);
            }
        }
    }
}

// ---- turning actions into ops ----

/// Resolves actions against the model into the `Op`s that both sides get.
/// `lasts` tracks appends earlier in the same request.
struct Expander<'a> {
    model: &'a Model,
    lasts: BTreeMap<ConvId, Seq>,
    msg_ids: &'a mut u64,
    ops: Vec<Op>,
}

impl Expander<'_> {
    fn seq(&mut self, conv: ConvId, at: At) -> Seq {
        let model = self.model;
        let last = *self
            .lasts
            .entry(conv)
            .or_insert_with(|| model.last_seq(conv));
        match at {
            At::Next => {
                self.lasts.insert(conv, Seq(last.0 + 1));
                Seq(last.0 + 1)
            }
            At::Gap(k) => Seq(last.0 + 1 + u64::from(k.max(1))),
            At::Reuse(k) => Seq(last.0.saturating_sub(u64::from(k))),
            At::Max => Seq(u64::MAX),
        }
    }

    fn append(
        &mut self,
        conv: ConvId,
        seq: Seq,
        (from, device, dedupe): (UserId, DeviceId, Option<ClientMsgId>),
        content: Content,
    ) {
        *self.msg_ids += 1;
        let id = *self.msg_ids;
        let msg = Message {
            conv,
            seq,
            id: MsgId(id.wrapping_mul(0x9e37_79b9_7f4a_7c15)),
            from,
            device,
            ts: UnixMillis(1_700_000_000_000 + id),
            content,
        };
        self.ops.push(Op::Append { msg, dedupe });
    }

    fn add(&mut self, action: &Action) {
        match action {
            Action::Append {
                conv: c,
                at,
                from,
                device: d,
                dedupe,
                body: b,
            } => {
                let seq = self.seq(conv(*c), *at);
                let sender = (user(*from), device(*d), dedupe.map(cmid));
                self.append(conv(*c), seq, sender, Content::Text(body(*b)));
            }
            Action::CreateGroup {
                conv: c,
                at,
                creator,
                members,
                history_visible,
            } => self.create_group(conv(*c), *at, *creator, members, *history_visible),
            Action::PutConv { .. } => self.ops.push(Op::PutConv(conversation(action))),
            _ => self.ops.push(simple_op(action)),
        }
    }

    fn create_group(&mut self, c: ConvId, at: At, creator: u8, members: &[u8], visible: bool) {
        let seq = self.seq(c, at);
        let title = format!("group {}", c.0 % 100);
        let mut everyone = vec![user(creator)];
        everyone.extend(members.iter().map(|&u| user(u)));
        self.ops.push(Op::PutConv(Conversation {
            id: c,
            kind: ConvKind::Group,
            title: title.clone(),
            creator: user(creator),
            created: UnixMillis(seq.0),
            members: u32::try_from(everyone.len()).expect("a handful of members"),
            history_visible: visible,
            private: !visible,
            participants: None,
        }));
        for (i, &u) in everyone.iter().enumerate() {
            let role = if i == 0 { Role::Admin } else { Role::Member };
            let membership = Membership { role, joined: seq };
            let (conv, user) = (c, u);
            self.ops.push(Op::PutMember {
                conv,
                user,
                membership,
            });
        }
        let event = GroupEvent::Created {
            title,
            members: everyone,
        };
        let sender = (user(creator), device(0), None);
        self.append(c, seq, sender, Content::Event(event));
    }
}

fn conversation(action: &Action) -> Conversation {
    let Action::PutConv {
        conv: c,
        title,
        members,
        history_visible,
        participants,
    } = *action
    else {
        unreachable!("called for PutConv only")
    };
    let id = conv(c);
    Conversation {
        id,
        kind: if id.is_group() {
            ConvKind::Group
        } else {
            ConvKind::Direct
        },
        title: body(title),
        creator: user(title % USERS),
        created: UnixMillis(u64::from(title)),
        members,
        history_visible,
        private: participants,
        participants: participants.then(|| (user(0), user(title % USERS))),
    }
}

/// The ops that map one to one onto an action.
fn simple_op(action: &Action) -> Op {
    match *action {
        Action::PutMember {
            conv: c,
            user: u,
            admin,
            joined,
        } => Op::PutMember {
            conv: conv(c),
            user: user(u),
            membership: Membership {
                role: if admin { Role::Admin } else { Role::Member },
                joined: Seq(u64::from(joined)),
            },
        },
        Action::RemoveMember { conv: c, user: u } => Op::RemoveMember {
            conv: conv(c),
            user: user(u),
        },
        Action::PutDevice {
            user: u,
            device: d,
            push,
            registered,
        } => Op::PutDevice {
            user: user(u),
            device: device(d),
            record: Device {
                push: push.map(|(apns, t)| PushToken {
                    platform: if apns { Platform::Apns } else { Platform::Fcm },
                    token: format!("token-{t}"),
                }),
                registered: UnixMillis(u64::from(registered)),
            },
        },
        Action::RemoveDevice { user: u, device: d } => Op::RemoveDevice {
            user: user(u),
            device: device(d),
        },
        Action::PutCursor {
            user: u,
            device: d,
            conv: c,
            delivered,
            read,
        } => Op::PutCursor {
            user: user(u),
            device: device(d),
            conv: conv(c),
            cursor: Cursor {
                delivered: Seq(u64::from(delivered)),
                read: Seq(u64::from(read)),
            },
        },
        Action::PutOutbox { .. } => put_outbox_op(action),
        Action::RemoveOutbox { id } => Op::RemoveOutbox { id: job(id) },
        Action::Append { .. } | Action::CreateGroup { .. } | Action::PutConv { .. } => {
            unreachable!("expanded by Expander::add")
        }
    }
}

fn put_outbox_op(action: &Action) -> Op {
    let Action::PutOutbox {
        id,
        user: u,
        device: d,
        conv: c,
        seq,
        preview,
    } = *action
    else {
        unreachable!("called for PutOutbox only")
    };
    Op::PutOutbox {
        id: job(id),
        job: PushJob {
            user: user(u),
            device: device(d),
            platform: if seq % 2 == 0 {
                Platform::Apns
            } else {
                Platform::Fcm
            },
            token: format!("token-{d}"),
            conv: conv(c),
            seq: Seq(u64::from(seq)),
            sender: user(seq % USERS),
            preview: preview.map(body),
            unread: u32::from(seq),
            count: u32::from(seq / 3 + 1),
            created: UnixMillis(u64::from(seq) * 1000),
        },
    }
}

// ---- running a case ----

/// Turns a store error into a test failure that says which call failed.
trait Ctx<T> {
    fn ctx(self, what: &str) -> Result<T, TestCaseError>;
}

impl<T> Ctx<T> for storage::Result<T> {
    fn ctx(self, what: &str) -> Result<T, TestCaseError> {
        self.map_err(|e| TestCaseError::fail(format!("{what}: {e}")))
    }
}

/// How long a completion may take before the test calls the writer stuck.
const COMPLETION_WAIT: Duration = Duration::from_secs(30);
/// Every this many steps, compare every read rather than only the cheap ones
/// (a full comparison costs a few milliseconds, ten times a cheap one).
const FULL_CHECK_EVERY: usize = 16;

/// Holds the writer inside a completion until released, so that requests
/// queued meanwhile are collected into the next batch together.
struct Gate {
    entered: Sender<()>,
    release: Receiver<()>,
}

impl CompletionSink for Gate {
    fn complete(&self, _: Vec<Completion>) {
        // The test may have failed and gone; then nobody waits for us.
        let _ = self.entered.send(());
        let _ = self.release.recv_timeout(COMPLETION_WAIT);
    }
}

struct Runner {
    config: Config,
    store: Option<Store>,
    model: Model,
    msg_ids: u64,
    counts: Counts,
}

impl Runner {
    fn open(setup: &Setup, path: &Path) -> Result<Runner, TestCaseError> {
        let mut config = Config::new(path).durability(setup.durability);
        config.seq_cache_entries_max = setup.seq_cache_entries_max;
        config.batch_ops_max = setup.batch_ops_max;
        let store = Store::open(config.clone()).ctx("open")?;
        Ok(Runner {
            config,
            store: Some(store),
            model: Model::default(),
            msg_ids: 0,
            counts: Counts::default(),
        })
    }

    fn store(&self) -> &Store {
        self.store
            .as_ref()
            .expect("the store is open between steps")
    }

    fn reopen(&mut self) -> Result<(), TestCaseError> {
        // Dropping the last handle joins the writer, which persists.
        drop(self.store.take());
        self.store = Some(Store::open(self.config.clone()).ctx("reopen")?);
        self.counts = Counts::default();
        Ok(())
    }

    /// Resolves `actions` against the model, then applies them to it.
    fn plan(&mut self, actions: &[Action]) -> (Vec<Op>, Result<(), Refusal>) {
        let mut x = Expander {
            model: &self.model,
            lasts: BTreeMap::new(),
            msg_ids: &mut self.msg_ids,
            ops: Vec::new(),
        };
        for a in actions {
            x.add(a);
        }
        let ops = x.ops;
        let expected = self.model.apply(&ops);
        (ops, expected)
    }

    fn write(&mut self, actions: &[Action]) -> Result<(), TestCaseError> {
        let (ops, expected) = self.plan(actions);
        let n = ops.len();
        let got = match self.store().write(ops) {
            Ok(()) => Ok(()),
            Err(e) => Err(refusal(e)?),
        };
        prop_assert_eq!(got, expected, "result of the write");
        self.counts.batches += 1;
        self.counts.add(n, expected);
        Ok(())
    }

    fn step(&mut self, step: &Step) -> Result<(), TestCaseError> {
        match step {
            Step::Write(actions) => self.write(actions)?,
            Step::Together(submits) => self.together(submits)?,
            Step::Read(q) => self.read(*q)?,
            Step::Reopen => {
                self.reopen()?;
                self.check_all()?;
            }
        }
        prop_assert_eq!(Counts::of(self.store()), self.counts, "writer stats");
        Ok(())
    }

    /// Queues every request while the writer is held, then releases it and
    /// checks every completion; the model has applied them in this order.
    fn together(&mut self, submits: &[Submit]) -> Result<(), TestCaseError> {
        let planned: Vec<_> = submits.iter().map(|s| self.plan(&s.actions)).collect();
        let store = self.store().clone();
        let release = hold_writer(&store)?;
        self.counts.batches += 1;
        self.counts.requests += 1;
        let (tx0, rx0) = crossbeam_channel::unbounded();
        let (tx1, rx1) = crossbeam_channel::unbounded();
        let sinks: [Arc<dyn CompletionSink>; 2] =
            [Arc::new(ChannelSink(tx0)), Arc::new(ChannelSink(tx1))];
        for (ticket, (s, (ops, expected))) in (0u64..).zip(submits.iter().zip(&planned)) {
            self.counts.add(ops.len(), *expected);
            let sink = sinks[usize::from(s.sink)].clone();
            let req = WriteRequest::new(ops.clone(), ticket, sink);
            if s.nonblocking {
                store.try_submit(req).ctx("try_submit")?;
            } else {
                store.submit(req).ctx("submit")?;
            }
        }
        let sizes = planned.iter().map(|(ops, _)| ops.len());
        self.counts.batches += commits(sizes, self.config.batch_ops_max);
        release
            .send(())
            .map_err(|e| TestCaseError::fail(format!("gate gone: {e}")))?;
        for (i, rx) in [rx0, rx1].iter().enumerate() {
            let mine = (0u64..).zip(&planned);
            let mine = mine.zip(submits).filter(|(_, s)| usize::from(s.sink) == i);
            for ((ticket, (_, expected)), _) in mine {
                let done = rx.recv_timeout(COMPLETION_WAIT).map_err(|e| {
                    TestCaseError::fail(format!("no completion for ticket {ticket}: {e}"))
                })?;
                // Each sink sees its completions in submission order.
                prop_assert_eq!(done.ticket, ticket, "completion order of sink {}", i);
                let got = match done.result {
                    Ok(()) => Ok(()),
                    Err(e) => Err(refusal(e)?),
                };
                prop_assert_eq!(got, *expected, "result of request {}", ticket);
            }
        }
        Ok(())
    }
}

/// Submits an empty request whose completion blocks the writer thread, and
/// returns once the writer is blocked in it. Requests queued meanwhile are
/// collected together when the returned sender sends (or drops).
fn hold_writer(store: &Store) -> Result<Sender<()>, TestCaseError> {
    let (entered_tx, entered) = crossbeam_channel::bounded(1);
    let (release, release_rx) = crossbeam_channel::bounded(1);
    let gate = Arc::new(Gate {
        entered: entered_tx,
        release: release_rx,
    });
    store
        .submit(WriteRequest::new(Vec::new(), u64::MAX, gate))
        .ctx("submit gate")?;
    entered
        .recv_timeout(COMPLETION_WAIT)
        .map_err(|e| TestCaseError::fail(format!("gate never completed: {e}")))?;
    Ok(release)
}

/// How many commits the writer makes of queued requests with these op
/// counts: a commit takes requests until it holds `batch_ops_max` ops.
fn commits(sizes: impl Iterator<Item = usize>, batch_ops_max: usize) -> u64 {
    let (mut commits, mut ops) = (0, batch_ops_max);
    for n in sizes {
        if ops >= batch_ops_max {
            commits += 1;
            ops = 0;
        }
        ops += n;
    }
    commits
}

/// The writer's counters; the runner predicts them.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
struct Counts {
    batches: u64,
    requests: u64,
    refused: u64,
    ops: u64,
}

impl Counts {
    fn of(store: &Store) -> Counts {
        let s = store.stats();
        Counts {
            batches: s.batches.load(Ordering::Relaxed),
            requests: s.requests.load(Ordering::Relaxed),
            refused: s.refused.load(Ordering::Relaxed),
            ops: s.ops.load(Ordering::Relaxed),
        }
    }

    /// Counts one request of a commit.
    fn add(&mut self, ops: usize, result: Result<(), Refusal>) {
        self.requests += 1;
        self.ops += u64::try_from(ops).expect("a handful of ops");
        self.refused += u64::from(result.is_err());
    }
}

// ---- comparing reads ----

fn seq_of(last: Seq, arg: SeqArg) -> Seq {
    match arg {
        SeqArg::Zero => Seq::ZERO,
        SeqArg::Last(k) => Seq(last.0.saturating_add_signed(i64::from(k))),
        SeqArg::Max => Seq(u64::MAX),
    }
}

impl Runner {
    fn read(&self, q: Query) -> Result<(), TestCaseError> {
        let (s, m) = (self.store(), &self.model);
        let at = |c: u8, arg: SeqArg| seq_of(m.last_seq(conv(c)), arg);
        match q {
            Query::After {
                conv: c,
                from,
                limit,
            } => {
                let (c, from) = (conv(c), at(c, from));
                let got = s.messages_after(c, from, limit).ctx("messages_after")?;
                prop_assert_eq!(got, m.after(c, from, limit), "{:?} from {}", q, from);
            }
            Query::Before {
                conv: c,
                from,
                limit,
            } => {
                let (c, from) = (conv(c), at(c, from));
                let got = s.messages_before(c, from, limit).ctx("messages_before")?;
                prop_assert_eq!(got, m.before(c, from, limit), "{:?} from {}", q, from);
            }
            Query::Latest { conv: c, limit } => {
                let got = s.messages_latest(conv(c), limit).ctx("messages_latest")?;
                prop_assert_eq!(got, m.latest(conv(c), limit), "{:?}", q);
            }
            Query::Message { conv: c, seq } => {
                let (c, seq) = (conv(c), at(c, seq));
                let want = m.messages.get(&(c, seq)).cloned();
                prop_assert_eq!(s.message(c, seq).ctx("message")?, want, "{:?}", q);
            }
            _ => self.read_keyed(q)?,
        }
        Ok(())
    }

    fn read_keyed(&self, query: Query) -> Result<(), TestCaseError> {
        let (store, model) = (self.store(), &self.model);
        match query {
            Query::Member { conv: c, user: u } => {
                let (c, u) = (conv(c), user(u));
                let want = model.members.get(&(c, u)).copied();
                prop_assert_eq!(store.member(c, u).ctx("member")?, want, "{:?}", query);
            }
            Query::Device { user: u, device: d } => {
                let (u, d) = (user(u), device(d));
                let want = model.devices.get(&(u, d)).cloned();
                prop_assert_eq!(store.device(u, d).ctx("device")?, want, "{:?}", query);
            }
            Query::Cursor {
                user: u,
                device: d,
                conv: c,
            } => {
                let (u, d, c) = (user(u), device(d), conv(c));
                let want = model.cursors.get(&(u, d, c)).copied();
                prop_assert_eq!(store.cursor(u, d, c).ctx("cursor")?, want, "{:?}", query);
            }
            Query::Cursors { user: u, device: d } => {
                let (u, d) = (user(u), device(d));
                let got = store.cursors(u, d).ctx("cursors")?;
                prop_assert_eq!(got, model.cursors_of(u, d), "{:?}", query);
            }
            Query::ConvCursors {
                user: u,
                conv: c,
                devices_max,
            } => {
                let (u, c) = (user(u), conv(c));
                let got = store.conv_cursors(u, c, devices_max).ctx("conv_cursors")?;
                prop_assert_eq!(got, model.conv_cursors(u, c, devices_max), "{:?}", query);
            }
            Query::Dedupe {
                user: u,
                device: d,
                cmid: k,
            } => {
                let (u, d, k) = (user(u), device(d), cmid(k));
                let want = model.dedupe.get(&(u, d, k)).copied();
                prop_assert_eq!(store.dedupe(u, d, k).ctx("dedupe")?, want, "{:?}", query);
            }
            Query::Outbox { from, limit } => {
                let from = OUTBOX_FROMS[usize::from(from)];
                let got = store.outbox(from, limit).ctx("outbox")?;
                prop_assert_eq!(got, model.outbox_from(from, limit), "{:?}", query);
            }
            Query::After { .. }
            | Query::Before { .. }
            | Query::Latest { .. }
            | Query::Message { .. } => unreachable!("handled by read"),
        }
        Ok(())
    }

    /// The reads that cover every table and both membership indexes.
    fn check_cheap(&self) -> Result<(), TestCaseError> {
        let (s, m) = (self.store(), &self.model);
        for c in (0..=CONVS).map(conv) {
            prop_assert_eq!(s.last_seq(c).ctx("last_seq")?, m.last_seq(c), "{:?}", c);
            prop_assert_eq!(s.conv(c).ctx("conv")?, m.convs.get(&c).cloned(), "{:?}", c);
            prop_assert_eq!(s.members(c).ctx("members")?, m.members_of(c), "{:?}", c);
            let latest = s.messages_latest(c, 2).ctx("messages_latest")?;
            prop_assert_eq!(latest, m.latest(c, 2), "{:?}", c);
        }
        for u in (0..=USERS).map(user) {
            prop_assert_eq!(
                s.user_convs(u).ctx("user_convs")?,
                m.user_convs(u),
                "{:?}",
                u
            );
            prop_assert_eq!(s.devices(u).ctx("devices")?, m.devices_of(u), "{:?}", u);
        }
        let all = s.outbox(0, usize::MAX).ctx("outbox")?;
        prop_assert_eq!(all, m.outbox_from(0, usize::MAX));
        Ok(())
    }

    /// Every read, over every id (and one never-written id of each kind).
    fn check_all(&self) -> Result<(), TestCaseError> {
        self.check_cheap()?;
        let seqs = [
            SeqArg::Zero,
            SeqArg::Last(-3),
            SeqArg::Last(-1),
            SeqArg::Last(0),
            SeqArg::Last(1),
            SeqArg::Last(2),
            SeqArg::Max,
        ];
        for c in 0..=CONVS {
            let all = self.store().messages_after(conv(c), Seq::ZERO, usize::MAX);
            prop_assert_eq!(
                all.ctx("messages_after")?,
                self.model.after(conv(c), Seq::ZERO, usize::MAX)
            );
            for from in seqs {
                self.read(Query::Message { conv: c, seq: from })?;
                for limit in [0, 1, 2, usize::MAX] {
                    self.read(Query::After {
                        conv: c,
                        from,
                        limit,
                    })?;
                    self.read(Query::Before {
                        conv: c,
                        from,
                        limit,
                    })?;
                }
            }
            for limit in [0, 1, 3, usize::MAX] {
                self.read(Query::Latest { conv: c, limit })?;
            }
        }
        self.check_all_keyed()
    }

    fn check_all_keyed(&self) -> Result<(), TestCaseError> {
        for u in 0..=USERS {
            for d in 0..=DEVICES {
                self.read(Query::Device { user: u, device: d })?;
                self.read(Query::Cursors { user: u, device: d })?;
                for c in 0..=CONVS {
                    self.read(Query::Cursor {
                        user: u,
                        device: d,
                        conv: c,
                    })?;
                }
                for k in 0..=CMIDS {
                    self.read(Query::Dedupe {
                        user: u,
                        device: d,
                        cmid: k,
                    })?;
                }
            }
            for c in 0..=CONVS {
                self.read(Query::Member { conv: c, user: u })?;
                for devices_max in DEVICES_MAXES {
                    self.read(Query::ConvCursors {
                        user: u,
                        conv: c,
                        devices_max,
                    })?;
                }
            }
        }
        for from in 0..outbox_froms() {
            for limit in [0, 1, 2, usize::MAX] {
                self.read(Query::Outbox { from, limit })?;
            }
        }
        Ok(())
    }

    /// After a reopen the writer must recover each conversation's last seq
    /// from disk: last + 2 is refused, last + 1 accepted.
    fn check_appends_continue(&mut self) -> Result<(), TestCaseError> {
        for c in 0..CONVS {
            for at in [At::Gap(1), At::Next] {
                self.write(&[Action::Append {
                    conv: c,
                    at,
                    from: 0,
                    device: 0,
                    dedupe: None,
                    body: 1,
                }])?;
            }
        }
        self.check_cheap()
    }
}

/// A fresh directory, on tmpfs where there is one: creating a database
/// fsyncs its directories, which takes most of a second on a busy disk, and
/// this test is about logic, not durability.
fn scratch_dir() -> std::io::Result<tempfile::TempDir> {
    let shm = Path::new("/dev/shm");
    match tempfile::tempdir_in(shm) {
        Ok(dir) => Ok(dir),
        Err(_) => tempfile::tempdir(),
    }
}

/// Runs one case: every step on a fresh store and the model, then a reopen.
fn replay(setup: &Setup, steps: &[Step]) -> Result<(), TestCaseError> {
    let dir = scratch_dir().map_err(|e| TestCaseError::fail(format!("tempdir: {e}")))?;
    let mut r = Runner::open(setup, dir.path())?;
    for (i, step) in steps.iter().enumerate() {
        let at_step = |e: TestCaseError| TestCaseError::fail(format!("step {i} {step:?}: {e}"));
        r.step(step).map_err(at_step)?;
        let check = if i % FULL_CHECK_EVERY == FULL_CHECK_EVERY - 1 {
            r.check_all()
        } else {
            r.check_cheap()
        };
        check.map_err(at_step)?;
    }
    let at_end = |e: TestCaseError| TestCaseError::fail(format!("after the last step: {e}"));
    r.check_all().map_err(at_end)?;
    let at_reopen = |e: TestCaseError| TestCaseError::fail(format!("after reopening: {e}"));
    r.reopen().map_err(at_reopen)?;
    r.check_all().map_err(at_reopen)?;
    r.check_appends_continue().map_err(at_reopen)?;
    Ok(())
}

proptest! {
    #![proptest_config(ProptestConfig {
        cases: 64,
        // A failure is reported with its shrunk input, which becomes a named
        // test below; no regression file is written into the source tree.
        failure_persistence: None,
        ..ProptestConfig::default()
    })]

    #[test]
    fn store_matches_model(setup in setup(), steps in vec(step(), 1..200)) {
        replay(&setup, &steps)?;
    }
}

/// Replays fixed steps; a shrunk failure of `store_matches_model` pasted
/// into a named test goes through here.
fn replay_or_panic(setup: &Setup, steps: &[Step]) {
    if let Err(e) = replay(setup, steps) {
        panic!("{e}");
    }
}

/// A group create whose event append is refused leaves none of its
/// conversation, members or event behind, also when it shares a commit with
/// an accepted create of the same conversation.
#[test]
fn refused_group_create_leaves_nothing() {
    let setup = Setup {
        durability: Durability::None,
        seq_cache_entries_max: 1 << 20,
        batch_ops_max: 4096,
    };
    let create = |at, creator| Action::CreateGroup {
        conv: 1,
        at,
        creator,
        members: vec![2, 3],
        history_visible: true,
    };
    let submit = |nonblocking, action| Submit {
        sink: 0,
        nonblocking,
        actions: vec![action],
    };
    let steps = [
        Step::Write(vec![create(At::Gap(1), 0)]),
        Step::Together(vec![
            submit(false, create(At::Next, 0)),
            submit(true, create(At::Reuse(0), 4)),
        ]),
        Step::Reopen,
    ];
    replay_or_panic(&setup, &steps);
}
