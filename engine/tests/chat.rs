//! The chat endpoint (`/ws`) against docs/PROTOCOL.md: send, ack and
//! delivery; catch-up by `sync`; several devices per user; resends; who may
//! send and fetch; history pages; cursors, receipts and typing; both
//! encodings; refused upgrades; `conv_get` of a direct conversation;
//! `receipts_get`. Each test runs with one shard and with two
//! (`one_shard::…`, `two_shards::…`), where a connection may be handed to
//! its user's home shard.
#![allow(
    clippy::unwrap_used,
    reason = "test code: a failed unwrap is a failed test"
)]

mod support;

use std::time::Duration;

use client::{Auth, Client, ConnectOptions};
use protocol::{
    ClientMsg, Content, ConvId, ConvKind, DeviceId, Encoding, ErrorCode, MemberReceipts, Message,
    Page, ReceiptKind, Seq, ServerMsg, UnixMillis, UserId,
};
use support::chat::{Ack, Device};
use support::{Options, Server, WS_PATH};

const ALICE: u64 = 1;
const BOB: u64 = 2;
const CAROL: u64 = 3;

/// Sends one device keeps unacknowledged in the bulk tests.
const WINDOW: usize = 16;

/// How far the server's timestamps may be from the test's clock (same host).
const CLOCK_SLACK_MILLIS: u64 = 1_000;

with_one_and_two_shards!(
    send_is_acked_and_delivered,
    offline_recipient_catches_up_in_order,
    every_device_of_a_user_gets_the_message,
    resend_with_the_same_cmid_is_stored_once,
    non_members_are_refused,
    fetch_pages_through_history,
    recv_moves_the_cursor_and_receipts_and_typing_reach_the_sender,
    a_read_reaches_every_device_of_the_reader,
    binary_and_json_clients_talk,
    bad_tokens_are_refused_with_401,
    conv_get_answers_both_sides_like_direct_open,
    receipts_get_answers_each_members_stored_cursors,
);

fn start(shards: u16) -> Server {
    Options::new().shards(shards).start()
}

fn direct(a: u64, b: u64) -> ConvId {
    ConvId::direct(UserId(a), UserId(b))
}

/// The `msg` everyone but the sender gets for `ack`.
fn message(ack: &Ack, from: u64, device: u64, body: &str) -> Message {
    Message {
        conv: ack.conv,
        seq: ack.seq,
        id: ack.id,
        from: UserId(from),
        device: DeviceId(device),
        ts: ack.ts,
        content: Content::Text(body.to_owned()),
    }
}

fn bodies(prefix: &str, n: usize) -> Vec<String> {
    (1..=n).map(|i| format!("{prefix} {i}")).collect()
}

fn seqs(msgs: &[Message]) -> Vec<u64> {
    msgs.iter().map(|m| m.seq.0).collect()
}

/// The messages `acks` stand for (`bodies[i]` was acked by `acks[i]`), in
/// seq order; asserts the acked seqs are exactly `1..=n`.
fn acked(acks: &[Ack], bodies: &[String], from: u64, device: u64) -> Vec<Message> {
    assert_eq!(acks.len(), bodies.len());
    let mut msgs: Vec<Message> = acks
        .iter()
        .zip(bodies)
        .map(|(ack, body)| message(ack, from, device, body))
        .collect();
    msgs.sort_by_key(|m| m.seq);
    let want: Vec<u64> = (1..=msgs.len() as u64).collect();
    assert_eq!(seqs(&msgs), want, "acked seqs are not 1..=n");
    msgs
}

fn send_is_acked_and_delivered(shards: u16) {
    let server = start(shards);
    // The token from the documented dev endpoint this time.
    let token = server.dev_token(ALICE, 1);
    let client = Client::connect(server.addr(), &token, Encoding::Json).unwrap();
    let mut alice = Device::welcome(client, ALICE, 1);
    let synced = alice.sync();
    assert!(
        synced.msgs.is_empty(),
        "a new user has no messages: {synced:?}"
    );
    assert!(
        synced.convs.is_empty(),
        "a new user has no conversations: {synced:?}"
    );
    let mut bob = Device::online(&server, BOB, 1);

    let conv = direct(ALICE, BOB);
    let info = alice.direct_open(BOB);
    assert_eq!(info.conv, conv);
    assert!(!info.conv.is_group());
    assert_eq!(info.kind, ConvKind::Direct);
    assert_eq!(info.last_seq, Seq::ZERO);
    let mut members: Vec<UserId> = info.members.iter().map(|m| m.user).collect();
    members.sort();
    assert_eq!(members, [UserId(ALICE), UserId(BOB)]);

    let before = UnixMillis::now().0;
    let ack = alice.send_text(conv, "hello 👋");
    let after = UnixMillis::now().0;
    assert_eq!((ack.conv, ack.seq), (conv, Seq(1)));
    assert!(
        before - CLOCK_SLACK_MILLIS <= ack.ts.0 && ack.ts.0 <= after + CLOCK_SLACK_MILLIS,
        "ack ts {} outside [{before}, {after}]",
        ack.ts.0
    );
    assert_eq!(bob.expect_msg(), message(&ack, ALICE, 1, "hello 👋"));
    // The sender gets its own message only as the ack.
    alice.expect_quiet();

    let reply = bob.send_text(conv, "hi alice");
    assert_eq!(reply.seq, Seq(2));
    assert_ne!(reply.id, ack.id, "message ids are unique");
    assert_eq!(alice.expect_msg(), message(&reply, BOB, 1, "hi alice"));

    // Back and forth: each side gets only the other's messages, never its
    // own (which it has as its ack).
    for round in 0..3 {
        let body = format!("alice {round}");
        let ack = alice.send_text(conv, &body);
        assert_eq!(bob.expect_msg(), message(&ack, ALICE, 1, &body));
        let body = format!("bob {round}");
        let ack = bob.send_text(conv, &body);
        assert_eq!(alice.expect_msg(), message(&ack, BOB, 1, &body));
        assert_eq!(ack.seq, Seq(4 + 2 * round));
    }
    bob.expect_quiet();
    alice.expect_quiet();
}

fn offline_recipient_catches_up_in_order(shards: u16) {
    let server = start(shards);
    let mut alice = Device::online(&server, ALICE, 1);
    let conv = direct(ALICE, BOB);
    alice.direct_open(BOB);
    let sent = bodies("offline", 100);
    let mut acks = alice.send_many(conv, &sent[..99], WINDOW);

    // Connected but not synced: nothing live yet, not even the last one.
    let mut bob = Device::connect(&server, BOB, 1);
    acks.push(alice.send_text(conv, &sent[99]));
    bob.expect_quiet();

    let synced = bob.sync();
    let want = acked(&acks, &sent, ALICE, 1);
    assert_eq!(
        seqs(&synced.msgs),
        (1..=100).collect::<Vec<_>>(),
        "sync must stream seqs 1..=100 in order"
    );
    assert_eq!(synced.msgs, want);
    let summary = synced.summary(conv);
    assert_eq!(summary.kind, ConvKind::Direct);
    assert_eq!(summary.last_seq, Seq(100));
    assert_eq!(summary.delivered, Seq::ZERO, "bob sent no recv");
    assert_eq!(synced.convs.len(), 1, "{:?}", synced.convs);

    let live = alice.send_text(conv, "live");
    assert_eq!(live.seq, Seq(101));
    assert_eq!(bob.expect_msg(), message(&live, ALICE, 1, "live"));
    bob.expect_quiet();
    alice.expect_quiet();
}

fn every_device_of_a_user_gets_the_message(shards: u16) {
    let server = start(shards);
    let mut bob1 = Device::online(&server, BOB, 1);
    let mut bob2 = Device::online(&server, BOB, 2);
    let mut alice = Device::online(&server, ALICE, 1);
    let conv = direct(ALICE, BOB);
    alice.direct_open(BOB);

    let ack = alice.send_text(conv, "to both of you");
    let want = message(&ack, ALICE, 1, "to both of you");
    assert_eq!(bob1.expect_msg(), want);
    assert_eq!(bob2.expect_msg(), want);

    // A sender's other device sees what it sent; the sender gets the ack only.
    let ack = bob1.send_text(conv, "from bob's phone");
    let want = message(&ack, BOB, 1, "from bob's phone");
    assert_eq!(ack.seq, Seq(2));
    assert_eq!(bob2.expect_msg(), want);
    assert_eq!(alice.expect_msg(), want);

    let ack = bob2.send_text(conv, "from bob's laptop");
    let want = message(&ack, BOB, 2, "from bob's laptop");
    assert_eq!(ack.seq, Seq(3));
    assert_eq!(bob1.expect_msg(), want);
    assert_eq!(alice.expect_msg(), want);

    bob1.expect_quiet();
    bob2.expect_quiet();
    alice.expect_quiet();
}

fn resend_with_the_same_cmid_is_stored_once(shards: u16) {
    let server = start(shards);
    let mut alice = Device::online(&server, ALICE, 1);
    let mut bob = Device::online(&server, BOB, 1);
    let conv = direct(ALICE, BOB);
    alice.direct_open(BOB);

    let cmid = support::chat::new_cmid();
    alice.post_with(conv, cmid, "only once");
    let first = alice.wait_ack(cmid);
    assert_eq!(first.seq, Seq(1));
    assert_eq!(bob.expect_msg(), message(&first, ALICE, 1, "only once"));

    // On the same connection: the original ack, nothing new for bob.
    alice.post_with(conv, cmid, "only once");
    assert_eq!(
        alice.wait_ack(cmid),
        first,
        "a resend gets the original ack"
    );
    bob.expect_quiet();

    // After a lost connection, as PROTOCOL.md "Reconnecting" has clients do.
    alice.abort();
    let mut alice = Device::connect(&server, ALICE, 1);
    alice.sync();
    alice.post_with(conv, cmid, "only once");
    assert_eq!(alice.wait_ack(cmid), first, "a resend after reconnecting");
    bob.expect_quiet();

    // The next message takes the next seq: the resends left no gap.
    let next = alice.send_text(conv, "a new one");
    assert_eq!(next.seq, Seq(2));
    assert_eq!(bob.expect_msg(), message(&next, ALICE, 1, "a new one"));
    bob.expect_quiet();

    let mut fresh = Device::connect(&server, BOB, 2);
    let synced = fresh.sync();
    assert_eq!(
        synced.in_conv(conv),
        [
            message(&first, ALICE, 1, "only once"),
            message(&next, ALICE, 1, "a new one")
        ]
    );
    assert_eq!(synced.summary(conv).last_seq, Seq(2));
    let (history, more) = fresh.fetch(conv, Page::Latest, 10);
    assert_eq!(seqs(&history), [1, 2]);
    assert!(!more);
}

fn non_members_are_refused(shards: u16) {
    let server = start(shards);
    let mut alice = Device::online(&server, ALICE, 1);
    let mut bob = Device::online(&server, BOB, 1);
    let conv = direct(ALICE, BOB);
    alice.direct_open(BOB);
    let ack = alice.send_text(conv, "between us");
    assert_eq!(bob.expect_msg(), message(&ack, ALICE, 1, "between us"));

    let mut carol = Device::online(&server, CAROL, 1);
    assert_eq!(
        carol.send_refused(conv, "let me in"),
        ErrorCode::Forbidden,
        "a non-member's send"
    );
    assert_eq!(
        carol.try_fetch(conv, Page::Latest, 10),
        Err(ErrorCode::Forbidden),
        "a non-member's fetch"
    );
    // Nor do a non-member's typing and read reach the members.
    carol.send(&ClientMsg::Typing { conv, active: true });
    carol.send(&ClientMsg::Read { conv, seq: Seq(1) });

    for unknown in [ConvId::group(0x00ab_cdef), ConvId(12_345)] {
        assert_eq!(
            carol.try_fetch(unknown, Page::Latest, 10),
            Err(ErrorCode::NotFound),
            "fetch of the unknown conversation {unknown}"
        );
        assert_eq!(
            carol.send_refused(unknown, "anyone?"),
            ErrorCode::NotFound,
            "send to the unknown conversation {unknown}"
        );
    }
    let user = UserId(CAROL);
    match carol.request(|rid| ClientMsg::DirectOpen { rid, user }) {
        ServerMsg::Error { code, .. } => assert_eq!(code, ErrorCode::BadRequest),
        other => panic!("direct_open with oneself answered with {other:?}"),
    }

    alice.expect_quiet();
    bob.expect_quiet();
    let (history, more) = alice.fetch(conv, Page::Latest, 10);
    assert_eq!(history, [message(&ack, ALICE, 1, "between us")]);
    assert!(!more);
}

fn fetch_pages_through_history(shards: u16) {
    let server = start(shards);
    let mut alice = Device::online(&server, ALICE, 1);
    let conv = direct(ALICE, BOB);
    alice.direct_open(BOB);
    let sent = bodies("page", 25);
    let acks = alice.send_many(conv, &sent, WINDOW);
    let want = acked(&acks, &sent, ALICE, 1);
    let range = |lo: usize, hi: usize| want[lo - 1..hi].to_vec();

    let cases = [
        (Page::Latest, 10, range(16, 25), true),
        (Page::Before(Seq(16)), 10, range(6, 15), true),
        (Page::Before(Seq(6)), 10, range(1, 5), false),
        (Page::After(Seq(0)), 10, range(1, 10), true),
        (Page::After(Seq(10)), 10, range(11, 20), true),
        (Page::After(Seq(20)), 10, range(21, 25), false),
        (Page::Latest, 100, range(1, 25), false),
        (Page::Before(Seq(1)), 10, Vec::new(), false),
        (Page::After(Seq(25)), 10, Vec::new(), false),
        // A page that holds exactly the rest: nothing remains beyond it.
        (Page::After(Seq(15)), 10, range(16, 25), false),
        (Page::Latest, 25, range(1, 25), false),
        (Page::Before(Seq(11)), 10, range(1, 10), false),
    ];
    // Every case runs; the assertion lists all that went wrong.
    let mut wrong = Vec::new();
    for (from, limit, msgs, more) in cases {
        let (got, got_more) = alice.fetch(conv, from, limit);
        if (&got, got_more) != (&msgs, more) {
            wrong.push(format!(
                "fetch {from:?} limit {limit}: got seqs {:?} more {got_more}, want seqs {:?} \
                 more {more}{}",
                seqs(&got),
                seqs(&msgs),
                if seqs(&got) == seqs(&msgs) && got != msgs {
                    " (same seqs, different messages)"
                } else {
                    ""
                }
            ));
        }
    }
    assert!(wrong.is_empty(), "{}", wrong.join("\n"));

    for limit in [0, protocol::limits::FETCH_LIMIT_MAX + 1] {
        assert_eq!(
            alice.try_fetch(conv, Page::Latest, limit),
            Err(ErrorCode::BadRequest),
            "fetch with limit {limit}"
        );
    }
    let empty = direct(ALICE, CAROL);
    alice.direct_open(CAROL);
    assert_eq!(alice.fetch(empty, Page::Latest, 10), (Vec::new(), false));
}

fn recv_moves_the_cursor_and_receipts_and_typing_reach_the_sender(shards: u16) {
    let server = start(shards);
    let mut alice = Device::online(&server, ALICE, 1);
    let mut bob = Device::online(&server, BOB, 1);
    let conv = direct(ALICE, BOB);
    alice.direct_open(BOB);
    let sent = bodies("cursor", 10);
    let acks = alice.send_many(conv, &sent, WINDOW);
    let want = acked(&acks, &sent, ALICE, 1);
    for m in &want {
        assert_eq!(&bob.expect_msg(), m);
    }

    bob.send(&ClientMsg::Recv { conv, seq: Seq(5) });
    assert_eq!(
        alice.recv(),
        ServerMsg::Receipt {
            conv,
            user: UserId(BOB),
            kind: ReceiptKind::Delivered,
            seq: Seq(5)
        }
    );
    bob.send(&ClientMsg::Read { conv, seq: Seq(4) });
    let read = receipt(conv, BOB, ReceiptKind::Read, 4);
    assert_eq!(alice.recv(), read);
    assert_eq!(bob.recv(), read, "a read comes back to its devices");
    for active in [true, false] {
        bob.send(&ClientMsg::Typing { conv, active });
        assert_eq!(
            alice.recv(),
            ServerMsg::Typing {
                conv,
                user: UserId(BOB),
                active
            }
        );
    }
    alice.send(&ClientMsg::Typing { conv, active: true });
    assert_eq!(
        bob.recv(),
        ServerMsg::Typing {
            conv,
            user: UserId(ALICE),
            active: true
        }
    );
    // recv, read and typing get no reply.
    bob.expect_quiet();
    alice.expect_quiet();

    bob.close();
    let mut bob = Device::connect(&server, BOB, 1);
    let synced = bob.sync();
    assert_eq!(
        seqs(&synced.msgs),
        [6, 7, 8, 9, 10],
        "sync after recv 5 starts at 6"
    );
    assert_eq!(synced.msgs, want[5..]);
    let summary = synced.summary(conv);
    assert_eq!(
        (summary.last_seq, summary.delivered, summary.read),
        (Seq(10), Seq(5), Seq(4)),
        "(last_seq, delivered, read)"
    );
    // Another device of bob's has its own cursor.
    let mut other = Device::connect(&server, BOB, 2);
    assert_eq!(seqs(&other.sync().msgs), (1..=10).collect::<Vec<_>>());
}

fn receipt(conv: ConvId, user: u64, kind: ReceiptKind, seq: u64) -> ServerMsg {
    ServerMsg::Receipt {
        conv,
        user: UserId(user),
        kind,
        seq: Seq(seq),
    }
}

/// A `read` from one device reaches the user's other devices (so their unread
/// counts follow) and the reading device; a `recv` reaches the other members only.
fn a_read_reaches_every_device_of_the_reader(shards: u16) {
    let server = start(shards);
    let mut alice = Device::online(&server, ALICE, 1);
    let mut bob = Device::online(&server, BOB, 1);
    let mut bob_phone = Device::online(&server, BOB, 2);
    let conv = direct(ALICE, BOB);
    alice.direct_open(BOB);
    let ack = alice.send_text(conv, "read me");
    let m = message(&ack, ALICE, 1, "read me");
    assert_eq!(bob.expect_msg(), m);
    assert_eq!(bob_phone.expect_msg(), m);

    bob.send(&ClientMsg::Recv { conv, seq: ack.seq });
    let delivered = receipt(conv, BOB, ReceiptKind::Delivered, ack.seq.0);
    assert_eq!(alice.recv(), delivered);
    bob.send(&ClientMsg::Read { conv, seq: ack.seq });
    let read = receipt(conv, BOB, ReceiptKind::Read, ack.seq.0);
    assert_eq!(alice.recv(), read);
    assert_eq!(bob_phone.recv(), read);
    assert_eq!(bob.recv(), read);
    for d in [&mut alice, &mut bob, &mut bob_phone] {
        d.expect_quiet();
    }
}

fn binary_and_json_clients_talk(shards: u16) {
    let server = start(shards);
    let mut alice = Device::connect_with(&server, ALICE, 1, Encoding::Binary);
    alice.sync();
    // Bob as a browser: JSON, the token in the query.
    let client =
        Client::connect_with_query_token(server.addr(), &server.token(BOB, 1), Encoding::Json)
            .unwrap();
    let mut bob = Device::welcome(client, BOB, 1);
    bob.sync();

    let conv = direct(ALICE, BOB);
    let from_alice = alice.direct_open(BOB);
    let from_bob = bob.direct_open(ALICE);
    assert_eq!(from_alice.conv, conv);
    assert_eq!(from_bob, from_alice, "both sides see the same conversation");

    let ack = alice.send_text(conv, "binary → json ✓");
    assert_eq!(bob.expect_msg(), message(&ack, ALICE, 1, "binary → json ✓"));
    let ack = bob.send_text(conv, "json → binary ✓");
    assert_eq!(alice.expect_msg(), message(&ack, BOB, 1, "json → binary ✓"));

    // Either frame type for any message; replies in the connection's encoding.
    let cmid = support::chat::new_cmid();
    let send = ClientMsg::Send {
        conv,
        cmid,
        body: "a binary frame on a JSON connection".to_owned(),
    };
    bob.client().send_encoded(&send, Encoding::Binary).unwrap();
    let ack = bob.wait_ack(cmid);
    assert_eq!(ack.seq, Seq(3));
    assert_eq!(
        alice.expect_msg(),
        message(&ack, BOB, 1, "a binary frame on a JSON connection")
    );

    let (binary, more) = alice.fetch(conv, Page::Latest, 10);
    assert!(!more);
    assert_eq!(seqs(&binary), [1, 2, 3]);
    assert_eq!(bob.fetch(conv, Page::Latest, 10), (binary, false));
    alice.expect_quiet();
    bob.expect_quiet();
}

fn bad_tokens_are_refused_with_401(shards: u16) {
    let server = start(shards);
    let addr = server.addr();
    let refused = |options: &ConnectOptions| match Client::connect_with(addr, options) {
        Ok(c) => panic!("upgrade with {options:?} accepted: {c:?}"),
        Err(e) => e
            .refused_status()
            .unwrap_or_else(|| panic!("{options:?}: not an HTTP refusal: {e}")),
    };
    let with = |token: &str| ConnectOptions::new(token, Encoding::Json);
    let secret = server.dev_secret();

    let none = ConnectOptions {
        auth: Auth::None,
        ..with("")
    };
    assert_eq!(refused(&none), 401, "no token");
    assert_eq!(refused(&with("not.a.token")), 401, "a malformed token");
    let foreign = client::mint_token(
        b"another secret of at least thirty-two bytes",
        UserId(ALICE),
        DeviceId(1),
        Duration::from_secs(60),
    );
    assert_eq!(
        refused(&with(&foreign)),
        401,
        "a token signed with another secret"
    );
    let expired = client::mint_token(
        secret.as_bytes(),
        UserId(ALICE),
        DeviceId(1),
        Duration::ZERO,
    );
    assert_eq!(refused(&with(&expired)), 401, "an expired token");
    let device_zero = server.token(ALICE, 0);
    assert_eq!(refused(&with(&device_zero)), 401, "device 0");
    let mut query = with("");
    query.auth = Auth::Query("not.a.token".to_owned());
    assert_eq!(refused(&query), 401, "a malformed token in the query");
    let bad_encoding = ConnectOptions {
        path: format!("{WS_PATH}?encoding=xml"),
        ..with(&server.token(ALICE, 1))
    };
    assert_eq!(refused(&bad_encoding), 400, "an unknown encoding");

    // The header wins over the query.
    let mut both = with(&server.token(ALICE, 1));
    both.path = format!("{WS_PATH}?token=not.a.token");
    let mut alice = Device::welcome(Client::connect_with(addr, &both).unwrap(), ALICE, 1);
    alice.sync();
    alice.close();
}

fn conv_get_answers_both_sides_like_direct_open(shards: u16) {
    let server = start(shards);
    let mut alice = Device::online(&server, ALICE, 1);
    let mut bob = Device::online(&server, BOB, 1);
    let conv = direct(ALICE, BOB);
    // Before the first open it does not exist.
    assert_eq!(
        alice.conv_get(conv).unwrap_err().0,
        ErrorCode::NotFound,
        "before direct_open"
    );
    let opened = alice.direct_open(BOB);
    assert_eq!(alice.conv_get(conv).unwrap(), opened);
    assert_eq!(bob.conv_get(conv).unwrap(), opened);

    alice.send_text(conv, "hi");
    bob.expect_msg();
    // Both sides, and a device that knows nothing yet, see what a new
    // `direct_open` answers: the peer, no title, last_seq 1.
    let reopened = bob.direct_open(ALICE);
    assert_eq!(reopened.last_seq, Seq(1));
    assert_eq!(
        (reopened.kind, reopened.title.as_str()),
        (ConvKind::Direct, "")
    );
    let mut bob2 = Device::connect(&server, BOB, 2);
    for d in [&mut alice, &mut bob, &mut bob2] {
        assert_eq!(d.conv_get(conv).unwrap(), reopened, "{d}");
    }

    let mut carol = Device::online(&server, CAROL, 1);
    assert_eq!(
        carol.conv_get(conv).unwrap_err().0,
        ErrorCode::Forbidden,
        "a third user"
    );
}

fn receipts_get_answers_each_members_stored_cursors(shards: u16) {
    let server = start(shards);
    let mut alice = Device::online(&server, ALICE, 1);
    let mut bob = Device::online(&server, BOB, 1);
    let mut bob_phone = Device::online(&server, BOB, 2);
    let conv = direct(ALICE, BOB);
    assert_eq!(
        alice.receipts_get(conv).unwrap_err(),
        (ErrorCode::NotFound, "no such conversation".into()),
        "before direct_open"
    );
    alice.direct_open(BOB);
    let none = |user| MemberReceipts {
        user: UserId(user),
        delivered: Seq::ZERO,
        read: Seq::ZERO,
    };
    assert_eq!(alice.receipts_get(conv).unwrap(), [none(ALICE), none(BOB)]);

    let sent = bodies("receipts", 5);
    alice.send_many(conv, &sent, WINDOW);
    for d in [&mut bob, &mut bob_phone] {
        let got: Vec<Message> = (0..sent.len()).map(|_| d.expect_msg()).collect();
        assert_eq!(seqs(&got), [1, 2, 3, 4, 5], "{d}");
    }
    bob.send(&ClientMsg::Recv { conv, seq: Seq(5) });
    bob.send(&ClientMsg::Read { conv, seq: Seq(3) });
    bob_phone.send(&ClientMsg::Recv { conv, seq: Seq(4) });
    // The live receipts come first; the stored cursors follow.
    let bobs = MemberReceipts {
        user: UserId(BOB),
        delivered: Seq(5),
        read: Seq(3),
    };
    let want = [none(ALICE), bobs];
    let got = alice.receipts_when(conv, |got| got == want);
    assert_eq!(got, want, "delivered is bob's highest recv, on device 1");
    assert_eq!(bob_phone.receipts_get(conv).unwrap(), want, "bob asks too");

    let mut carol = Device::online(&server, CAROL, 1);
    assert_eq!(
        carol.receipts_get(conv).unwrap_err(),
        (
            ErrorCode::Forbidden,
            "not a member of this conversation".into()
        ),
        "a third user"
    );
    assert_eq!(
        carol.receipts_get(direct(CAROL, ALICE)).unwrap_err().0,
        ErrorCode::NotFound,
        "a conversation never opened"
    );
}
