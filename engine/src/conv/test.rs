//! The owner against a simulated store: storage results come back in random
//! order, resends race their originals, credit is scarce; every append must
//! be answered exactly once, seqs must be contiguous, per-sender order kept,
//! and a resend must get its original outcome.

use std::collections::{BTreeMap, HashMap};

use protocol::{ConvKind, Role};
use storage::Conversation;

use super::*;
use crate::sim_rng::Rng;

const CONV: ConvId = ConvId(7);

fn sender(user: u64, device: u64) -> Sender {
    Sender {
        user: UserId(user),
        device: DeviceId(device),
        shard: 0,
        conn: user * 10 + device,
    }
}

fn append(user: u64, device: u64, cmid: u64) -> Append {
    Append {
        conv: CONV,
        sender: sender(user, device),
        cmid: ClientMsgId(cmid),
        body: Rc::from(format!("{user}/{device}/{cmid}").as_str()),
    }
}

fn loaded(members: &[u64], last: u64) -> Loaded {
    Loaded {
        meta: Conversation {
            id: CONV,
            kind: ConvKind::Group,
            title: String::new(),
            creator: UserId(members[0]),
            created: UnixMillis(0),
            members: u32::try_from(members.len()).unwrap(),
            history_visible: false,
            participants: None,
        },
        members: members
            .iter()
            .map(|&u| {
                (
                    UserId(u),
                    Membership {
                        role: Role::Member,
                        joined: Seq(0),
                    },
                )
            })
            .collect(),
        last_seq: Seq(last),
    }
}

/// Pending storage work the simulated store will complete later.
#[derive(Debug)]
enum Pending {
    Load,
    Lookup(SendKey),
    Write(Rc<Message>, ClientMsgId),
}

/// Drives an owner against a simulated store and records what it answered.
struct Sim {
    owner: Owner,
    pending: Vec<Pending>,
    credits: usize,
    /// The committed dedupe table and messages.
    dedupe: HashMap<SendKey, SendOutcome>,
    committed: BTreeMap<Seq, Rc<Message>>,
    answers: Vec<(Sender, ClientMsgId, Result<SendOutcome, ErrorCode>)>,
    delivered: Vec<Seq>,
    members: Vec<u64>,
    last: u64,
    fail_writes: bool,
}

impl Sim {
    fn new(credits: usize, members: &[u64], last: u64) -> Sim {
        Sim {
            owner: Owner::new(3, OwnerLimits::default(), credits),
            pending: Vec::new(),
            credits,
            dedupe: HashMap::new(),
            committed: BTreeMap::new(),
            answers: Vec::new(),
            delivered: Vec::new(),
            members: members.to_vec(),
            last,
            fail_writes: false,
        }
    }

    fn drain(&mut self) {
        while let Some(a) = self.owner.poll_action() {
            match a {
                Action::Load(c) => {
                    assert_eq!(c, CONV);
                    self.pending.push(Pending::Load);
                }
                Action::Lookup {
                    user, device, cmid, ..
                } => {
                    self.pending.push(Pending::Lookup((user, device, cmid)));
                }
                Action::Write { msg, cmid } => self.pending.push(Pending::Write(msg, cmid)),
                Action::Ack { to, cmid, outcome } => self.answers.push((to, cmid, Ok(outcome))),
                Action::Refuse { to, cmid, code } => self.answers.push((to, cmid, Err(code))),
                Action::Deliver { msg, members } => {
                    assert_eq!(members.len(), self.members.len());
                    self.delivered.push(msg.seq);
                }
            }
            assert!(
                self.pending.len() <= self.credits,
                "more storage work than credit"
            );
        }
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
                let l = (!self.members.is_empty()).then(|| loaded(&self.members, self.last));
                self.owner.on_loaded(CONV, l);
            }
            Pending::Lookup(k) => {
                let found = self.dedupe.get(&k).copied();
                self.owner.on_lookup(CONV, k, found);
            }
            Pending::Write(msg, cmid) => {
                let ok = !self.fail_writes;
                if ok {
                    let expected = self
                        .committed
                        .keys()
                        .next_back()
                        .map_or(self.last + 1, |s| s.0 + 1);
                    assert_eq!(msg.seq.0, expected, "the store refuses gaps");
                    let outcome = SendOutcome {
                        conv: CONV,
                        seq: msg.seq,
                        id: msg.id,
                        ts: msg.ts,
                    };
                    self.dedupe.insert((msg.from, msg.device, cmid), outcome);
                    self.committed.insert(msg.seq, msg.clone());
                }
                self.owner.on_written(CONV, msg.seq, ok);
            }
        }
        self.drain();
    }

    fn send(&mut self, a: Append) {
        self.owner.on_append(a, UnixMillis(1_000));
        self.drain();
    }

    fn settle(&mut self, rng: &mut Rng) {
        while !self.pending.is_empty() {
            let i = rng.below(self.pending.len());
            self.complete(i);
        }
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
fn non_members_and_missing_conversations_are_forbidden() {
    let mut sim = Sim::new(8, &[1, 2], 0);
    sim.send(append(9, 1, 1));
    sim.settle(&mut Rng(2));
    assert_eq!(sim.answers[0].2, Err(ErrorCode::Forbidden));
    assert!(sim.committed.is_empty());

    let mut sim = Sim::new(8, &[], 0);
    sim.send(append(1, 1, 1));
    sim.settle(&mut Rng(3));
    assert_eq!(sim.answers[0].2, Err(ErrorCode::Forbidden));
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
    // Complete the load and lookup, leaving only the write pending.
    while sim.pending.iter().any(|p| !matches!(p, Pending::Write(..))) {
        let i = sim
            .pending
            .iter()
            .position(|p| !matches!(p, Pending::Write(..)))
            .unwrap();
        sim.complete(i);
    }
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
