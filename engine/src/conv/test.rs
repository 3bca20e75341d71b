//! The owner against a simulated store: storage results come back in random
//! order, resends race their originals, credit is scarce; every append must
//! be answered exactly once, seqs must be contiguous, per-sender order kept,
//! and a resend must get its original outcome. Direct opens must create a
//! conversation once however many race it, and signals must be checked,
//! clamped and deduped.

use std::collections::{BTreeMap, HashMap};

use protocol::{ConvKind, Role};
use storage::Conversation;

use super::*;
use crate::sim_rng::Rng;

const CONV: ConvId = ConvId(7);
const NOW: UnixMillis = UnixMillis(1_000);
/// Storage completions one `Sim::settle` may take.
const SETTLE_STEPS_MAX: usize = 100_000;

fn sender(user: u64, device: u64) -> Sender {
    Sender {
        user: UserId(user),
        device: DeviceId(device),
        shard: 0,
        conn: user * 10 + device,
    }
}

fn append(user: u64, device: u64, cmid: u64) -> Append {
    append_in(CONV, user, device, cmid)
}

fn append_in(conv: ConvId, user: u64, device: u64, cmid: u64) -> Append {
    Append {
        conv,
        sender: sender(user, device),
        cmid: ClientMsgId(cmid),
        body: Arc::from(format!("{user}/{device}/{cmid}").as_str()),
    }
}

fn reply(user: u64, rid: u32) -> Reply {
    Reply {
        shard: 1,
        conn: user,
        rid: RequestId(rid),
    }
}

fn direct_id(a: u64, b: u64) -> ConvId {
    ConvId::direct(UserId(a), UserId(b))
}

fn membership() -> Membership {
    Membership {
        role: Role::Member,
        joined: Seq(0),
    }
}

/// A stored group `CONV` with these members.
fn group(members: &[u64]) -> (Conversation, Vec<(UserId, Membership)>) {
    let meta = Conversation {
        id: CONV,
        kind: ConvKind::Group,
        title: "climbing".to_owned(),
        creator: UserId(members[0]),
        created: UnixMillis(0),
        members: u32::try_from(members.len()).unwrap(),
        history_visible: false,
        private: false,
        participants: None,
    };
    let members = members.iter().map(|&u| (UserId(u), membership())).collect();
    (meta, members)
}

/// A stored direct conversation at `id` between `pair` (which, to simulate
/// a `ConvId::direct` collision, need not be the users `id` is made of).
fn stored_direct(id: ConvId, pair: (u64, u64)) -> (Conversation, Vec<(UserId, Membership)>) {
    let meta = Conversation {
        id,
        kind: ConvKind::Direct,
        title: String::new(),
        creator: UserId(pair.0),
        created: UnixMillis(0),
        members: 2,
        history_visible: true,
        private: false,
        participants: Some((UserId(pair.0), UserId(pair.1))),
    };
    let members = vec![
        (UserId(pair.0), membership()),
        (UserId(pair.1), membership()),
    ];
    (meta, members)
}

/// Pending storage work the simulated store will complete later.
#[derive(Debug)]
enum Pending {
    Load,
    Lookup(SendKey),
    Write(Arc<Message>, ClientMsgId),
    Create(Conversation, Vec<(UserId, Membership)>),
}

type Stored = (Conversation, Vec<(UserId, Membership)>);

/// Drives an owner against a simulated store and records what it answered.
struct Sim {
    owner: Owner,
    conv: ConvId,
    pending: Vec<Pending>,
    credits: usize,
    /// The stored conversation, if it exists.
    stored: Option<Stored>,
    /// The committed dedupe table and messages.
    dedupe: HashMap<SendKey, SendOutcome>,
    committed: BTreeMap<Seq, Arc<Message>>,
    answers: Vec<(Sender, ClientMsgId, Result<SendOutcome, ErrorCode>)>,
    delivered: Vec<Seq>,
    last: u64,
    fail_writes: bool,
    fail_creates: bool,
    /// Every `Create` asked for, in order.
    creates: Vec<Stored>,
    opened: Vec<(Reply, Result<ConvInfo, ErrorCode>)>,
    cursors: Vec<(UserId, DeviceId, ReceiptKind, Seq)>,
    relays: Vec<(Vec<UserId>, Option<UserId>, ServerMsg)>,
    refused: Vec<(Sender, ErrorCode)>,
}

impl Sim {
    /// The group `CONV` with these members (none: it does not exist) and
    /// `last` messages.
    fn new(credits: usize, members: &[u64], last: u64) -> Sim {
        let stored = (!members.is_empty()).then(|| group(members));
        Sim::with(OwnerLimits::default(), credits, CONV, stored, last)
    }

    fn with(
        limits: OwnerLimits,
        credits: usize,
        conv: ConvId,
        stored: Option<Stored>,
        last: u64,
    ) -> Sim {
        Sim {
            owner: Owner::new(3, limits, credits),
            conv,
            pending: Vec::new(),
            credits,
            stored,
            dedupe: HashMap::new(),
            committed: BTreeMap::new(),
            answers: Vec::new(),
            delivered: Vec::new(),
            last,
            fail_writes: false,
            fail_creates: false,
            creates: Vec::new(),
            opened: Vec::new(),
            cursors: Vec::new(),
            relays: Vec::new(),
            refused: Vec::new(),
        }
    }

    fn member_count(&self) -> usize {
        self.stored.as_ref().map_or(0, |(_, m)| m.len())
    }

    fn drain(&mut self) {
        while let Some(a) = self.owner.poll_action() {
            self.record(a);
            assert!(
                self.pending.len() <= self.credits,
                "more storage work than credit"
            );
        }
    }

    fn record(&mut self, a: Action) {
        match a {
            Action::Load(c) => {
                assert_eq!(c, self.conv);
                self.pending.push(Pending::Load);
            }
            Action::Lookup {
                user, device, cmid, ..
            } => {
                self.pending.push(Pending::Lookup((user, device, cmid)));
            }
            Action::Write { msg, cmid } => self.pending.push(Pending::Write(msg, cmid)),
            Action::Create { meta, members } => {
                assert_eq!(meta.id, self.conv);
                self.creates.push((meta.clone(), members.clone()));
                self.pending.push(Pending::Create(meta, members));
            }
            Action::Ack { to, cmid, outcome } => self.answers.push((to, cmid, Ok(outcome))),
            Action::Refuse { to, cmid, code } => self.answers.push((to, cmid, Err(code))),
            Action::Deliver { msg, members, .. } => {
                assert_eq!(members.len(), self.member_count());
                self.delivered.push(msg.seq);
            }
            Action::Info { to, info } => self.opened.push((to, Ok(info))),
            Action::Fail { to, code } => self.opened.push((to, Err(code))),
            Action::Cursor {
                user,
                device,
                conv,
                kind,
                seq,
            } => {
                assert_eq!(conv, self.conv);
                self.cursors.push((user, device, kind, seq));
            }
            Action::Relay {
                members,
                except,
                msg,
            } => self.relays.push((members.to_vec(), except, msg)),
            Action::SignalRefused { to, conv, code } => {
                assert_eq!(conv, self.conv);
                self.refused.push((to, code));
            }
            Action::CountGroups { .. } | Action::WriteEvents { .. } | Action::Done { .. } => {
                panic!("no group operation in these simulations: {a:?}")
            }
        }
    }

    fn durable_last(&self) -> u64 {
        self.committed.keys().next_back().map_or(self.last, |s| s.0)
    }

    /// Completes the pending operation at `i`. Reads complete in any order;
    /// writes in submission order, as the storage writer commits them.
    fn complete(&mut self, mut i: usize) {
        if matches!(self.pending[i], Pending::Write(..)) {
            i = self
                .pending
                .iter()
                .position(|p| matches!(p, Pending::Write(..)))
                .unwrap();
        }
        match self.pending.remove(i) {
            Pending::Load => {
                let last_seq = Seq(self.durable_last());
                let l = self.stored.clone().map(|(meta, members)| Loaded {
                    meta,
                    members,
                    last_seq,
                });
                self.owner.on_loaded(self.conv, l);
            }
            Pending::Lookup(k) => {
                let found = self.dedupe.get(&k).copied();
                self.owner.on_lookup(self.conv, k, found);
            }
            Pending::Write(msg, cmid) => self.complete_write(&msg, cmid),
            Pending::Create(meta, members) => {
                let ok = !self.fail_creates;
                if ok {
                    assert!(self.stored.is_none(), "created twice");
                    self.stored = Some((meta, members));
                }
                self.owner.on_created(self.conv, ok);
            }
        }
        self.drain();
    }

    fn complete_write(&mut self, msg: &Arc<Message>, cmid: ClientMsgId) {
        let ok = !self.fail_writes;
        if ok {
            assert_eq!(msg.seq.0, self.durable_last() + 1, "the store refuses gaps");
            let outcome = SendOutcome {
                conv: msg.conv,
                seq: msg.seq,
                id: msg.id,
                ts: msg.ts,
            };
            self.dedupe.insert((msg.from, msg.device, cmid), outcome);
            self.committed.insert(msg.seq, msg.clone());
        }
        self.owner.on_written(msg.conv, msg.seq, ok);
    }

    /// Completes pending work until only writes are left.
    fn complete_reads(&mut self) {
        while let Some(i) = self
            .pending
            .iter()
            .position(|p| !matches!(p, Pending::Write(..)))
        {
            self.complete(i);
        }
    }

    fn send(&mut self, a: Append) {
        self.owner.on_append(a, NOW);
        self.drain();
    }

    /// `requester` opens its direct conversation with `other`.
    fn open(&mut self, requester: u64, other: u64, rid: u32) {
        let pair = (UserId(requester), UserId(other));
        let conv = direct_id(requester, other);
        let to = reply(requester, rid);
        self.owner
            .on_open_direct(conv, pair, UserId(requester), to, NOW);
        self.drain();
    }

    fn signal(&mut self, user: u64, device: u64, signal: Signal) {
        self.owner
            .on_signal(self.conv, sender(user, device), signal);
        self.drain();
    }

    /// Completes all pending work in random order; a livelock (work that
    /// keeps asking for more) fails at the step cap instead of hanging.
    fn settle(&mut self, rng: &mut Rng) {
        for _ in 0..SETTLE_STEPS_MAX {
            if self.pending.is_empty() {
                return;
            }
            let i = rng.below(self.pending.len());
            self.complete(i);
        }
        panic!(
            "still {} pending after {SETTLE_STEPS_MAX} steps",
            self.pending.len()
        );
    }
}

#[test]
fn send_is_acked_after_the_write_and_delivered() {
    let mut sim = Sim::new(8, &[1, 2], 4);
    sim.send(append(1, 1, 100));
    let mut rng = Rng(1);
    sim.settle(&mut rng);
    assert_eq!(sim.answers.len(), 1);
    let (to, cmid, result) = &sim.answers[0];
    assert_eq!((*to, *cmid), (sender(1, 1), ClientMsgId(100)));
    assert_eq!(
        result.unwrap().seq,
        Seq(5),
        "seq continues after the stored last"
    );
    assert_eq!(sim.delivered, [Seq(5)]);
}

#[test]
fn non_members_are_forbidden() {
    let mut sim = Sim::new(8, &[1, 2], 0);
    sim.send(append(9, 1, 1));
    sim.settle(&mut Rng(2));
    assert_eq!(sim.answers.len(), 1);
    assert_eq!(sim.answers[0].2, Err(ErrorCode::Forbidden));
    assert!(sim.committed.is_empty());
}

#[test]
fn append_to_a_missing_conversation_is_not_found_without_a_lookup() {
    let mut sim = Sim::new(8, &[], 0);
    sim.send(append(1, 1, 1));
    sim.send(append(1, 1, 2));
    assert_eq!(sim.pending.len(), 1, "only the load");
    sim.complete(0);
    assert!(
        sim.pending.is_empty(),
        "no lookup for a missing conversation"
    );
    let codes: Vec<_> = sim.answers.iter().map(|a| (a.1, a.2)).collect();
    assert_eq!(
        codes,
        [
            (ClientMsgId(1), Err(ErrorCode::NotFound)),
            (ClientMsgId(2), Err(ErrorCode::NotFound)),
        ]
    );
    assert!(sim.committed.is_empty());
}

#[test]
fn append_while_the_create_is_in_flight_is_not_found() {
    let conv = direct_id(1, 2);
    let mut sim = Sim::with(OwnerLimits::default(), 8, conv, None, 0);
    sim.open(1, 2, 1);
    sim.complete(0);
    assert!(matches!(sim.pending[..], [Pending::Create(..)]));
    sim.send(append_in(conv, 1, 1, 5));
    assert_eq!(sim.answers.len(), 1);
    assert_eq!(sim.answers[0].2, Err(ErrorCode::NotFound));
    sim.settle(&mut Rng(3));
    // Once created, appends go through.
    sim.send(append_in(conv, 1, 1, 6));
    sim.settle(&mut Rng(4));
    assert_eq!(sim.answers.len(), 2);
    assert_eq!(sim.answers[1].2.unwrap().seq, Seq(1));
    assert_eq!(sim.delivered, [Seq(1)]);
}

#[test]
fn resend_after_commit_gets_the_original_ack_and_no_new_message() {
    let mut sim = Sim::new(8, &[1, 2], 0);
    sim.send(append(1, 1, 5));
    sim.settle(&mut Rng(4));
    // A new owner (as after a restart) only knows the store.
    sim.owner = Owner::new(3, OwnerLimits::default(), 8);
    sim.send(append(1, 1, 5));
    sim.settle(&mut Rng(5));
    assert_eq!(sim.answers.len(), 2);
    assert_eq!(sim.answers[0].2, sim.answers[1].2);
    assert_eq!(sim.committed.len(), 1);
    assert_eq!(
        sim.delivered,
        [Seq(1)],
        "a deduped resend is not delivered again"
    );
}

#[test]
fn resend_while_in_flight_waits_for_the_original() {
    let mut sim = Sim::new(8, &[1], 0);
    sim.send(append(1, 1, 5));
    sim.complete_reads();
    sim.send(append(1, 1, 5));
    sim.settle(&mut Rng(6));
    assert_eq!(sim.committed.len(), 1);
    assert_eq!(sim.answers.len(), 2);
    assert_eq!(sim.answers[0].2, sim.answers[1].2);
}

#[test]
fn failed_write_refuses_sender_and_waiters_with_internal() {
    let mut sim = Sim::new(8, &[1], 0);
    sim.fail_writes = true;
    sim.send(append(1, 1, 5));
    sim.settle(&mut Rng(7));
    assert_eq!(sim.answers[0].2, Err(ErrorCode::Internal));
    assert!(sim.delivered.is_empty());
}

#[test]
fn full_queue_refuses_with_overloaded() {
    let limits = OwnerLimits {
        queue_max: 2,
        recent_max: 8,
        signals_max: 8,
        convs_max: 1_000,
        ..OwnerLimits::default()
    };
    let mut owner = Owner::new(0, limits, 1);
    for cmid in 0..3 {
        owner.on_append(append(1, 1, cmid), UnixMillis(0));
    }
    let refused: Vec<_> = std::iter::from_fn(|| owner.poll_action())
        .filter(|a| {
            matches!(
                a,
                Action::Refuse {
                    code: ErrorCode::Overloaded,
                    ..
                }
            )
        })
        .collect();
    assert_eq!(refused.len(), 1);
}

#[test]
fn message_ids_are_unique_and_increasing() {
    let mut clock = (0, 0);
    let mut last = MsgId(0);
    for i in 0..10_000u64 {
        let id = next_id(&mut clock, 5, UnixMillis(1_000 + i / 5_000));
        assert!(id > last, "{id:?} after {last:?}");
        last = id;
    }
}

/// What a `conv` reply for the direct conversation of users 1 and 2 says.
fn direct_info(last_seq: u64) -> ConvInfo {
    let member = |u| Member {
        user: UserId(u),
        role: Role::Member,
        joined: Seq(0),
    };
    ConvInfo {
        conv: direct_id(1, 2),
        kind: ConvKind::Direct,
        title: String::new(),
        members: vec![member(1), member(2)],
        last_seq: Seq(last_seq),
    }
}

#[test]
fn concurrent_opens_create_the_conversation_once() {
    let mut sim = Sim::with(OwnerLimits::default(), 8, direct_id(1, 2), None, 0);
    sim.open(2, 1, 1);
    sim.open(1, 2, 2);
    assert_eq!(sim.pending.len(), 1, "one load for both opens");
    sim.complete(0);
    // The create is in flight; this open waits for it.
    sim.open(1, 2, 3);
    assert_eq!(sim.creates.len(), 1);
    assert!(
        sim.opened.is_empty(),
        "nobody is answered before the create"
    );
    sim.settle(&mut Rng(8));
    let (meta, members) = &sim.creates[0];
    let want = Conversation {
        id: direct_id(1, 2),
        kind: ConvKind::Direct,
        title: String::new(),
        creator: UserId(2),
        created: NOW,
        members: 2,
        history_visible: true,
        private: false,
        participants: Some((UserId(1), UserId(2))),
    };
    assert_eq!(*meta, want, "the first requester creates it");
    assert_eq!(
        *members,
        [(UserId(1), membership()), (UserId(2), membership())]
    );
    let info = Ok(direct_info(0));
    let want = [
        (reply(2, 1), info.clone()),
        (reply(1, 2), info.clone()),
        (reply(1, 3), info.clone()),
    ];
    assert_eq!(sim.opened, want);
    // Now it exists: an open is answered at once, with no storage work.
    sim.open(2, 1, 4);
    assert!(sim.pending.is_empty());
    assert_eq!(sim.opened[3], (reply(2, 4), info));
    assert_eq!(sim.creates.len(), 1);
}

#[test]
fn open_of_an_existing_conversation_reports_the_last_durable_seq() {
    let conv = direct_id(1, 2);
    let stored = Some(stored_direct(conv, (1, 2)));
    let mut sim = Sim::with(OwnerLimits::default(), 8, conv, stored, 5);
    sim.send(append_in(conv, 1, 1, 1));
    sim.complete_reads();
    assert!(matches!(sim.pending[..], [Pending::Write(..)]));
    // Seq 6 is assigned but not durable yet.
    sim.open(2, 1, 1);
    sim.settle(&mut Rng(9));
    sim.open(1, 2, 2);
    assert!(sim.creates.is_empty());
    let want = [
        (reply(2, 1), Ok(direct_info(5))),
        (reply(1, 2), Ok(direct_info(6))),
    ];
    assert_eq!(sim.opened, want);
}

#[test]
fn failed_create_fails_every_waiter_and_a_later_open_retries() {
    let mut sim = Sim::with(OwnerLimits::default(), 8, direct_id(1, 2), None, 0);
    sim.fail_creates = true;
    sim.open(1, 2, 1);
    sim.complete(0);
    sim.open(2, 1, 2);
    sim.settle(&mut Rng(10));
    let failed = || Err(ErrorCode::Internal);
    assert_eq!(
        sim.opened,
        [(reply(1, 1), failed()), (reply(2, 2), failed())]
    );
    assert!(sim.stored.is_none());
    // An append still finds no conversation.
    sim.send(append_in(direct_id(1, 2), 1, 1, 1));
    assert_eq!(sim.answers[0].2, Err(ErrorCode::NotFound));

    sim.fail_creates = false;
    sim.open(2, 1, 3);
    assert_eq!(sim.creates.len(), 2, "the later open creates again");
    sim.settle(&mut Rng(11));
    assert_eq!(sim.opened[2], (reply(2, 3), Ok(direct_info(0))));
    assert_eq!(sim.creates[1].0.creator, UserId(2));
}

/// A non-member can only open a direct conversation's id through a
/// `ConvId::direct` collision, simulated here by storing other users at it.
#[test]
fn non_member_open_is_forbidden_and_a_collision_conflicts() {
    let conv = direct_id(3, 4);
    let stored = Some(stored_direct(conv, (1, 2)));
    let mut sim = Sim::with(OwnerLimits::default(), 8, conv, stored, 0);
    sim.open(3, 4, 1);
    sim.settle(&mut Rng(12));
    assert_eq!(sim.opened, [(reply(3, 1), Err(ErrorCode::Forbidden))]);

    // A member of the stored pair whose own pair differs.
    let conv = direct_id(1, 3);
    let stored = Some(stored_direct(conv, (1, 2)));
    let mut sim = Sim::with(OwnerLimits::default(), 8, conv, stored, 0);
    sim.open(1, 3, 2);
    sim.settle(&mut Rng(13));
    assert_eq!(sim.opened, [(reply(1, 2), Err(ErrorCode::Conflict))]);
    assert!(sim.creates.is_empty());
}

#[test]
fn open_with_oneself_is_a_bad_request() {
    let mut sim = Sim::with(OwnerLimits::default(), 8, direct_id(1, 1), None, 0);
    sim.open(1, 1, 1);
    assert_eq!(sim.opened, [(reply(1, 1), Err(ErrorCode::BadRequest))]);
    assert!(sim.pending.is_empty());
    assert_eq!(sim.owner.conv_count(), 0);
}

#[test]
fn waiting_opens_are_bounded() {
    let limits = OwnerLimits {
        queue_max: 2,
        ..OwnerLimits::default()
    };
    let mut sim = Sim::with(limits, 8, direct_id(1, 2), None, 0);
    for rid in 1..=3 {
        sim.open(1, 2, rid);
    }
    assert_eq!(sim.opened, [(reply(1, 3), Err(ErrorCode::Overloaded))]);
    sim.settle(&mut Rng(14));
    assert_eq!(sim.opened.len(), 3);
    assert_eq!(sim.opened[1], (reply(1, 1), Ok(direct_info(0))));
    assert_eq!(sim.opened[2], (reply(1, 2), Ok(direct_info(0))));
}

fn receipt(user: u64, kind: ReceiptKind, seq: u64) -> ServerMsg {
    ServerMsg::Receipt {
        conv: CONV,
        user: UserId(user),
        kind,
        seq: Seq(seq),
    }
}

fn members(users: &[u64]) -> Vec<UserId> {
    users.iter().map(|&u| UserId(u)).collect()
}

#[test]
fn signals_wait_for_the_load() {
    let mut sim = Sim::new(8, &[1, 2], 5);
    sim.signal(1, 1, Signal::Recv(Seq(3)));
    sim.signal(1, 2, Signal::Read(Seq(2)));
    sim.signal(2, 1, Signal::Typing(true));
    assert!(matches!(sim.pending[..], [Pending::Load]), "one load");
    assert!(sim.cursors.is_empty());
    assert!(sim.relays.is_empty());
    sim.complete(0);
    let delivered = ReceiptKind::Delivered;
    assert_eq!(
        sim.cursors,
        [
            (UserId(1), DeviceId(1), delivered, Seq(3)),
            (UserId(1), DeviceId(2), ReceiptKind::Read, Seq(2)),
        ]
    );
    let typing = ServerMsg::Typing {
        conv: CONV,
        user: UserId(2),
        active: true,
    };
    let all = members(&[1, 2]);
    assert_eq!(
        sim.relays,
        [
            (all.clone(), Some(UserId(1)), receipt(1, delivered, 3)),
            // A read also reaches the reader's own devices.
            (all.clone(), None, receipt(1, ReceiptKind::Read, 2)),
            (all, Some(UserId(2)), typing),
        ]
    );
    assert!(sim.pending.is_empty(), "signals take no storage credit");
}

#[test]
fn cursors_are_clamped_to_the_last_durable_seq() {
    let mut sim = Sim::new(8, &[1, 2], 5);
    sim.signal(1, 1, Signal::Recv(Seq(9)));
    sim.complete(0);
    assert_eq!(
        sim.cursors,
        [(UserId(1), DeviceId(1), ReceiptKind::Delivered, Seq(5))]
    );
    assert_eq!(sim.relays[0].2, receipt(1, ReceiptKind::Delivered, 5));
    // Seq 6 assigned but not durable: still clamped to 5, so no progress.
    sim.send(append(2, 1, 1));
    sim.complete_reads();
    sim.signal(1, 1, Signal::Recv(Seq(6)));
    assert_eq!(sim.cursors.len(), 1);
    sim.settle(&mut Rng(15));
    sim.signal(1, 1, Signal::Recv(Seq(6)));
    assert_eq!(sim.cursors.len(), 2);
    assert_eq!(sim.cursors[1].3, Seq(6));

    // In an empty conversation everything clamps to 0 and is ignored.
    let mut sim = Sim::new(8, &[1, 2], 0);
    sim.signal(1, 1, Signal::Recv(Seq(3)));
    sim.signal(1, 1, Signal::Read(Seq(3)));
    sim.settle(&mut Rng(16));
    assert!(sim.cursors.is_empty());
    assert!(sim.relays.is_empty());
    assert!(sim.refused.is_empty());
}

#[test]
fn cursors_that_do_not_advance_are_dropped() {
    let mut sim = Sim::new(8, &[1, 2], 9);
    sim.signal(1, 1, Signal::Recv(Seq(3)));
    sim.complete(0);
    sim.signal(1, 1, Signal::Recv(Seq(3)));
    sim.signal(1, 1, Signal::Recv(Seq(2)));
    sim.signal(1, 1, Signal::Recv(Seq(0)));
    // Delivery is per device, so another device advances its own cursor.
    sim.signal(1, 2, Signal::Recv(Seq(2)));
    // Read is per user: the second device's lower read is dropped.
    sim.signal(1, 1, Signal::Read(Seq(4)));
    sim.signal(1, 2, Signal::Read(Seq(4)));
    sim.signal(1, 2, Signal::Read(Seq(1)));
    sim.signal(1, 2, Signal::Read(Seq(7)));
    let delivered = ReceiptKind::Delivered;
    let read = ReceiptKind::Read;
    assert_eq!(
        sim.cursors,
        [
            (UserId(1), DeviceId(1), delivered, Seq(3)),
            (UserId(1), DeviceId(2), delivered, Seq(2)),
            (UserId(1), DeviceId(1), read, Seq(4)),
            (UserId(1), DeviceId(2), read, Seq(7)),
        ]
    );
    let relayed: Vec<_> = sim.relays.iter().map(|r| r.2.clone()).collect();
    assert_eq!(
        relayed,
        [
            receipt(1, delivered, 3),
            receipt(1, delivered, 2),
            receipt(1, read, 4),
            receipt(1, read, 7),
        ]
    );
}

#[test]
fn typing_is_relayed_to_the_other_members_and_not_stored() {
    let mut sim = Sim::new(8, &[1, 2, 3], 0);
    sim.signal(1, 1, Signal::Typing(true));
    sim.settle(&mut Rng(17));
    sim.signal(1, 1, Signal::Typing(false));
    let typing = |active| ServerMsg::Typing {
        conv: CONV,
        user: UserId(1),
        active,
    };
    let all = members(&[1, 2, 3]);
    assert_eq!(
        sim.relays,
        [
            (all.clone(), Some(UserId(1)), typing(true)),
            (all, Some(UserId(1)), typing(false)),
        ]
    );
    assert!(sim.cursors.is_empty());
}

#[test]
fn signals_from_non_members_or_to_missing_conversations_are_refused() {
    let mut sim = Sim::new(8, &[1, 2], 5);
    for s in [
        Signal::Recv(Seq(1)),
        Signal::Read(Seq(1)),
        Signal::Typing(true),
    ] {
        sim.signal(9, 1, s);
    }
    sim.settle(&mut Rng(18));
    let forbidden = (sender(9, 1), ErrorCode::Forbidden);
    assert_eq!(sim.refused, [forbidden, forbidden, forbidden]);
    assert!(sim.cursors.is_empty());
    assert!(sim.relays.is_empty());

    let mut sim = Sim::new(8, &[], 5);
    sim.signal(1, 1, Signal::Read(Seq(1)));
    sim.settle(&mut Rng(19));
    sim.signal(1, 1, Signal::Typing(true));
    let missing = (sender(1, 1), ErrorCode::NotFound);
    assert_eq!(sim.refused, [missing, missing]);
    assert!(sim.relays.is_empty());
}

#[test]
fn signals_waiting_for_the_load_are_bounded() {
    let limits = OwnerLimits {
        signals_max: 2,
        ..OwnerLimits::default()
    };
    let stored = Some(group(&[1, 2]));
    let mut sim = Sim::with(limits, 8, CONV, stored, 9);
    for seq in 1..=4 {
        sim.signal(1, 1, Signal::Recv(Seq(seq)));
    }
    assert_eq!(sim.owner.signals_dropped(), 2);
    sim.complete(0);
    let seqs: Vec<_> = sim.cursors.iter().map(|c| c.3).collect();
    assert_eq!(
        seqs,
        [Seq(1), Seq(2)],
        "the first two waited, the rest dropped"
    );
    // Once loaded, signals no longer wait, so the bound does not apply.
    for seq in 3..=6 {
        sim.signal(1, 1, Signal::Recv(Seq(seq)));
    }
    assert_eq!(sim.owner.signals_dropped(), 2);
    assert_eq!(sim.cursors.len(), 6);
}

#[test]
fn everything_that_crosses_shards_is_send() {
    fn send<T: Send>() {}
    send::<Append>();
    send::<Action>();
    send::<Owner>();
    send::<crate::catchup::Action>();
    send::<crate::catchup::CatchUp>();
}

/// Random interleavings: several devices send (with resends) while storage
/// results arrive in random order and credit is scarce.
#[test]
fn random_interleavings_keep_every_invariant() {
    for seed in 0..300u64 {
        let mut rng = Rng(seed);
        let credits = 1 + rng.below(4);
        let last = rng.next() % 3;
        let mut sim = Sim::new(credits, &[1, 2, 3], last);
        let mut sent: Vec<Append> = Vec::new();
        for step in 0..60 {
            if rng.below(3) == 0 && !sent.is_empty() {
                let again = sent[rng.below(sent.len())].clone();
                sim.send(again.clone());
                sent.push(again);
            } else {
                // User 4 is not a member: its sends are refused.
                let a = append(1 + rng.next() % 4, 1 + rng.next() % 2, step);
                sim.send(a.clone());
                sent.push(a);
            }
            if !sim.pending.is_empty() && rng.below(2) == 0 {
                let i = rng.below(sim.pending.len());
                sim.complete(i);
            }
        }
        sim.settle(&mut rng);
        check(&sim, &sent, last, seed);
    }
}

/// Random interleavings of opens (some creates failing), appends and
/// signals on a direct conversation that does not exist yet.
#[test]
fn random_opens_create_once_and_answer_every_request() {
    let conv = direct_id(1, 2);
    for seed in 0..300u64 {
        let mut rng = Rng(seed);
        let credits = 1 + rng.below(3);
        let mut sim = Sim::with(OwnerLimits::default(), credits, conv, None, 0);
        let (mut opens, mut appends) = (0, 0);
        for step in 0..40u32 {
            sim.fail_creates = rng.one_in(3);
            match rng.below(3) {
                0 => {
                    let (a, b) = if rng.one_in(2) { (1, 2) } else { (2, 1) };
                    sim.open(a, b, step);
                    opens += 1;
                }
                1 => {
                    sim.send(append_in(conv, 1 + rng.next() % 2, 1, u64::from(step)));
                    appends += 1;
                }
                _ => sim.signal(1 + rng.next() % 2, 1, Signal::Recv(Seq(rng.upto(3)))),
            }
            if !sim.pending.is_empty() && rng.one_in(2) {
                let i = rng.below(sim.pending.len());
                sim.complete(i);
            }
        }
        sim.settle(&mut rng);
        assert_eq!(
            sim.opened.len(),
            opens,
            "seed {seed}: every open answered once"
        );
        assert_eq!(
            sim.answers.len(),
            appends,
            "seed {seed}: every append answered"
        );
        let created = sim.stored.is_some();
        let oks = sim.opened.iter().filter(|o| o.1.is_ok()).count();
        let fails = sim
            .opened
            .iter()
            .filter(|o| o.1 == Err(ErrorCode::Internal));
        assert_eq!(
            oks + fails.count(),
            opens,
            "seed {seed}: only info or internal"
        );
        assert!(created || oks == 0, "seed {seed}: info only once created");
        for (_, result) in &sim.opened {
            if let Ok(info) = result {
                assert_eq!(info.members, direct_info(0).members, "seed {seed}");
            }
        }
        // Everything sent while it did not exist was refused; nothing else was.
        for (_, _, result) in &sim.answers {
            assert!(
                matches!(result, Ok(_) | Err(ErrorCode::NotFound)),
                "seed {seed}: {result:?}"
            );
        }
    }
}

fn check(sim: &Sim, sent: &[Append], last: u64, seed: u64) {
    assert_eq!(
        sim.answers.len(),
        sent.len(),
        "seed {seed}: every append answered once"
    );
    let seqs: Vec<u64> = sim.committed.keys().map(|s| s.0).collect();
    let want: Vec<u64> = (last + 1..=last + seqs.len() as u64).collect();
    assert_eq!(seqs, want, "seed {seed}: contiguous seqs");
    assert_eq!(
        sim.delivered.iter().map(|s| s.0).collect::<Vec<_>>(),
        want,
        "seed {seed}"
    );
    // Per device, seq order is send order (cmids were drawn increasing).
    let mut last_cmid: HashMap<(UserId, DeviceId), u64> = HashMap::new();
    for m in sim.committed.values() {
        let Content::Text(body) = &m.content else {
            panic!("only text is sent")
        };
        let cmid: u64 = body.rsplit('/').next().unwrap().parse().unwrap();
        if let Some(prev) = last_cmid.insert((m.from, m.device), cmid) {
            assert!(
                prev < cmid,
                "seed {seed}: a device's messages were reordered"
            );
        }
    }
    let mut by_key: HashMap<SendKey, SendOutcome> = HashMap::new();
    for (to, cmid, result) in &sim.answers {
        let k = (to.user, to.device, *cmid);
        match result {
            Ok(o) => {
                if let Some(prev) = by_key.insert(k, *o) {
                    assert_eq!(prev, *o, "seed {seed}: a resend got a different ack");
                }
            }
            Err(code) => assert_eq!(*code, ErrorCode::Forbidden, "seed {seed}"),
        }
    }
}

#[test]
fn idle_conversations_are_forgotten_past_the_bound_and_busy_ones_kept() {
    let limits = OwnerLimits {
        convs_max: 8,
        ..OwnerLimits::default()
    };
    let mut owner = Owner::new(3, limits, 64);
    // A conversation with work in flight: its load is not answered yet.
    owner.on_append(append(1, 1, 1), NOW);
    assert_eq!(owner.poll_action(), Some(Action::Load(CONV)));
    assert_eq!(owner.poll_action(), None);
    for i in 0..100 {
        owner.on_append(append_in(ConvId(1_000 + i), 1, 1, 1), NOW);
        while let Some(a) = owner.poll_action() {
            match a {
                Action::Load(c) => owner.on_loaded(c, None),
                Action::Refuse { code, .. } => assert_eq!(code, ErrorCode::NotFound),
                other => panic!("unexpected {other:?}"),
            }
        }
        assert!(
            owner.conv_count() <= 9,
            "{} conversations held",
            owner.conv_count()
        );
    }
    // The busy one was kept: its load still completes the append.
    let (meta, members) = group(&[1, 2]);
    owner.on_loaded(
        CONV,
        Some(Loaded {
            meta,
            members,
            last_seq: Seq(0),
        }),
    );
    assert!(
        matches!(owner.poll_action(), Some(Action::Lookup { conv, .. }) if conv == CONV),
        "the waiting append goes on"
    );
}

fn group_req(conv: ConvId, by: u64, rid: u32, op: GroupOp) -> GroupRequest {
    GroupRequest {
        conv,
        by: sender(by, 1),
        rid: RequestId(rid),
        op,
    }
}

/// Takes every action now waiting.
fn actions(owner: &mut Owner) -> Vec<Action> {
    std::iter::from_fn(|| owner.poll_action()).collect()
}

#[test]
fn a_group_is_created_with_its_event_at_seq_1_then_answered_and_delivered() {
    let mut owner = Owner::new(0, OwnerLimits::default(), 8);
    let conv = ConvId::group(99);
    let op = GroupOp::Create {
        title: "g".into(),
        members: vec![UserId(2)],
    };
    owner.on_group(group_req(conv, 1, 5, op), NOW);
    assert_eq!(actions(&mut owner), [Action::Load(conv)]);
    owner.on_loaded(conv, None);
    let a = actions(&mut owner);
    let [Action::CountGroups { order, users, .. }] = a.as_slice() else {
        panic!("want a count, got {a:?}")
    };
    assert_eq!(users, &[UserId(1), UserId(2)]);
    owner.on_counted(conv, *order, HashMap::new());
    let a = actions(&mut owner);
    let [
        Action::WriteEvents {
            msgs,
            meta,
            put,
            remove,
        },
    ] = a.as_slice()
    else {
        panic!("want a write, got {a:?}")
    };
    assert_eq!((msgs.len(), msgs[0].seq), (1, Seq(1)));
    assert_eq!(
        (meta.id, meta.kind, meta.members),
        (conv, ConvKind::Group, 2)
    );
    assert!(remove.is_empty());
    assert_eq!(
        put,
        &[
            (
                UserId(1),
                Membership {
                    role: Role::Admin,
                    joined: Seq(1)
                }
            ),
            (
                UserId(2),
                Membership {
                    role: Role::Member,
                    joined: Seq(1)
                }
            ),
        ]
    );
    owner.on_written(conv, Seq(1), true);
    let a = actions(&mut owner);
    assert!(
        matches!(&a[0], Action::Info { to, info } if to.rid == RequestId(5) && info.last_seq == Seq(1)),
        "{a:?}"
    );
    assert!(
        matches!(&a[1], Action::Deliver { msg, members, .. } if msg.seq == Seq(1) && members.len() == 2),
        "{a:?}"
    );
    assert!(owner.is_quiet());
}

#[test]
fn group_operations_and_messages_share_one_seq_order() {
    let mut owner = Owner::new(0, OwnerLimits::default(), 8);
    owner.on_append(append(1, 1, 1), NOW);
    owner.on_group(
        group_req(CONV, 1, 7, GroupOp::Rename { title: "r".into() }),
        NOW,
    );
    owner.on_append(append(2, 1, 2), NOW);
    // Serve everything by hand: the simulation does not know group writes.
    let mut written = Vec::new();
    for _ in 0..20 {
        for a in actions(&mut owner) {
            match a {
                Action::Load(_) => {
                    let (meta, mut members) = group(&[1, 2]);
                    members[0].1.role = Role::Admin;
                    owner.on_loaded(
                        CONV,
                        Some(Loaded {
                            meta,
                            members,
                            last_seq: Seq(0),
                        }),
                    );
                }
                Action::Lookup {
                    user, device, cmid, ..
                } => owner.on_lookup(CONV, (user, device, cmid), None),
                Action::Write { msg, .. } => written.push((msg.seq, "text")),
                Action::WriteEvents { msgs, .. } => {
                    written.extend(msgs.iter().map(|m| (m.seq, "event")));
                }
                _ => {}
            }
        }
    }
    assert_eq!(
        written,
        [(Seq(1), "text"), (Seq(2), "event"), (Seq(3), "text")]
    );
}

#[test]
fn large_groups_store_cursors_but_relay_no_receipts_or_typing() {
    let big: Vec<u64> = (1..=u64::try_from(RELAY_MEMBERS_MAX).unwrap() + 1).collect();
    let mut sim = Sim::new(8, &big, 5);
    sim.signal(1, 1, Signal::Recv(Seq(3)));
    sim.signal(1, 1, Signal::Read(Seq(2)));
    sim.signal(2, 1, Signal::Typing(true));
    sim.settle(&mut Rng(23));
    assert_eq!(sim.cursors.len(), 2, "cursors are still stored");
    assert!(sim.relays.is_empty(), "{:?}", sim.relays);
    // At the bound, receipts are relayed.
    let at: Vec<u64> = (1..=u64::try_from(RELAY_MEMBERS_MAX).unwrap()).collect();
    let mut sim = Sim::new(8, &at, 5);
    sim.signal(1, 1, Signal::Recv(Seq(3)));
    sim.settle(&mut Rng(24));
    assert_eq!(sim.relays.len(), 1);
}
