//! An ack means durable (PROTOCOL.md "Ordering and delivery"): with the
//! default durability (`fsync`), every message acknowledged before a SIGKILL
//! is there after a restart on the same data directory, at the same seq,
//! with no gap; a device that never received them gets them all in `sync`;
//! and new sends continue after them. Run with one shard and with two.
#![allow(
    clippy::unwrap_used,
    reason = "test code: a failed unwrap is a failed test"
)]

mod support;

use std::collections::BTreeMap;

use protocol::{Content, ConvId, DeviceId, Message, Seq, UserId};
use support::Options;
use support::chat::{Ack, Device};

/// The conversations, as `(user, user)` pairs: a chain, so that users 2, 3
/// and 4 are in two each.
const CONVS: [(u64, u64); 4] = [(1, 2), (2, 3), (3, 4), (4, 5)];

/// The users, `1..=USERS`.
const USERS: u64 = 5;

/// `(conversation index, user, device)`: both members of every
/// conversation send, each from its own connection, all at once.
const SENDERS: [(usize, u64, u64); 8] = [
    (0, 1, 1),
    (0, 2, 1),
    (1, 2, 2),
    (1, 3, 1),
    (2, 3, 2),
    (2, 4, 1),
    (3, 4, 2),
    (3, 5, 1),
];

/// Messages each sender sends: 200 in all.
const SENDS_PER_SENDER: usize = 25;

/// Sends each sender keeps unacknowledged.
const WINDOW: usize = 8;

/// A device id no sender used: it never received anything.
const FRESH_DEVICE: u64 = 9;

#[test]
fn acked_messages_survive_sigkill_with_one_shard() {
    acked_messages_survive_sigkill(1);
}

#[test]
fn acked_messages_survive_sigkill_with_two_shards() {
    acked_messages_survive_sigkill(2);
}

fn conv_id((a, b): (u64, u64)) -> ConvId {
    ConvId::direct(UserId(a), UserId(b))
}

/// Every acked message, by conversation and seq.
type Acked = BTreeMap<ConvId, BTreeMap<Seq, Message>>;

fn acked_messages_survive_sigkill(shards: u16) {
    let dir = tempfile::tempdir().unwrap();
    let data_dir = dir.path().join("data");
    let mut server = Options::new().shards(shards).data_dir(&data_dir).start();

    for (a, b) in CONVS {
        let mut opener = Device::online(&server, a, 1);
        let info = opener.direct_open(b);
        assert_eq!(info.conv, conv_id((a, b)));
        opener.close();
    }
    let mut devices: Vec<Device> = SENDERS
        .iter()
        .map(|&(_, user, device)| Device::online(&server, user, device))
        .collect();
    let acked = send_concurrently(&mut devices);
    for (conv, msgs) in &acked {
        let seqs: Vec<u64> = msgs.keys().map(|s| s.0).collect();
        let want: Vec<u64> = (1..=2 * SENDS_PER_SENDER as u64).collect();
        assert_eq!(seqs, want, "{conv}: acked seqs before the crash");
    }

    let status = server.sigkill();
    assert!(!status.success(), "SIGKILL ends the process: {status:?}");
    for device in devices {
        device.abort();
    }
    let server = Options::new().shards(shards).data_dir(&data_dir).start();

    // Fresh devices: their sync must stream everything, from seq 1.
    let mut fresh: BTreeMap<u64, Device> = BTreeMap::new();
    for user in 1..=USERS {
        let mut device = Device::connect(&server, user, FRESH_DEVICE);
        let synced = device.sync();
        for (conv, msgs) in &acked {
            let (a, b) = pair(*conv);
            if user != a && user != b {
                assert!(
                    synced.in_conv(*conv).is_empty(),
                    "user {user} synced {conv}"
                );
                continue;
            }
            let want: Vec<Message> = msgs.values().cloned().collect();
            assert_eq!(
                synced.in_conv(*conv),
                want,
                "user {user}: sync of {conv} after the restart"
            );
            assert_eq!(synced.summary(*conv).last_seq, Seq(want.len() as u64));
        }
        fresh.insert(user, device);
    }

    for (conv, msgs) in &acked {
        let (a, b) = pair(*conv);
        let reader = fresh.get_mut(&a).unwrap();
        let history = reader.fetch_all(*conv);
        let want: Vec<Message> = msgs.values().cloned().collect();
        assert_eq!(history, want, "{conv}: history after the restart");

        let n = msgs.len() as u64;
        let ack = reader.send_text(*conv, "after the restart");
        assert_eq!(
            ack.seq,
            Seq(n + 1),
            "{conv}: the first send after the restart"
        );
        let got = fresh.get_mut(&b).unwrap().expect_msg();
        assert_eq!(got.seq, Seq(n + 1));
        assert_eq!(got.id, ack.id);
        assert_eq!(got.content, Content::Text("after the restart".to_owned()));
    }
    for device in fresh.values_mut() {
        device.expect_quiet();
    }
}

/// The members of one of [`CONVS`].
fn pair(conv: ConvId) -> (u64, u64) {
    CONVS
        .into_iter()
        .find(|&p| conv_id(p) == conv)
        .unwrap_or_else(|| panic!("{conv} is not one of the test's conversations"))
}

/// Every sender sends [`SENDS_PER_SENDER`] messages to its conversation,
/// all senders at once, each from its own thread; returns what was acked.
fn send_concurrently(devices: &mut [Device]) -> Acked {
    let results: Vec<Vec<(Ack, String)>> = std::thread::scope(|scope| {
        let handles: Vec<_> = devices
            .iter_mut()
            .zip(SENDERS)
            .map(|(device, (conv, user, dev))| {
                scope.spawn(move || {
                    let conv = conv_id(CONVS[conv]);
                    let bodies: Vec<String> = (1..=SENDS_PER_SENDER)
                        .map(|i| format!("user {user} device {dev} message {i}"))
                        .collect();
                    let acks = device.send_many(conv, &bodies, WINDOW);
                    acks.into_iter().zip(bodies).collect()
                })
            })
            .collect();
        handles
            .into_iter()
            .map(|h| h.join().expect("a sender thread panicked"))
            .collect()
    });
    let mut acked = Acked::new();
    for ((_, user, device), sent) in SENDERS.into_iter().zip(results) {
        for (ack, body) in sent {
            let msg = Message {
                conv: ack.conv,
                seq: ack.seq,
                id: ack.id,
                from: UserId(user),
                device: DeviceId(device),
                ts: ack.ts,
                content: Content::Text(body),
            };
            let earlier = acked.entry(ack.conv).or_default().insert(ack.seq, msg);
            assert!(
                earlier.is_none(),
                "{} seq {} acked twice: {earlier:?}",
                ack.conv,
                ack.seq
            );
        }
    }
    acked
}
