//! Graceful shutdown with chat traffic in flight: sends the server had
//! taken are answered — acked once durable, or refused as retryable —
//! before the connection gets its 1001, so after a restart exactly the
//! acked messages are stored (none committed without its ack reaching the
//! client, none acked and lost). With one shard and with two.
#![allow(
    clippy::unwrap_used,
    reason = "test code: a failed unwrap is a failed test"
)]

mod support;

use std::collections::HashSet;
use std::time::Duration;

use protocol::{ErrorCode, Page, ServerMsg, close};
use support::Options;
use support::chat::Device;

/// Sends in flight when SIGTERM arrives.
const SENDS: usize = 300;

fn in_flight_sends_are_answered_before_going_away(shards: u16) {
    let dir = tempfile::tempdir().unwrap();
    let options = || {
        Options::new()
            .shards(shards)
            .data_dir(dir.path())
            // Send limits off: 300 sends go out at once on purpose.
            .config("shutdown_grace = \"20s\"\nsend_rate_per_connection = 0.0\nsend_rate_per_user = 0.0\n")
    };
    let mut server = options().start();
    let mut alice = Device::online(&server, 1, 1);
    let conv = alice.direct_open(2).conv;
    let cmids: Vec<_> = (0..SENDS)
        .map(|i| alice.post(conv, &format!("m{i}")))
        .collect();
    // The server is committing them: the first ack is back.
    let first = alice.answer(cmids[0]).expect("the first send is acked");
    server.sigterm();

    let mut acked = HashSet::from([first.seq]);
    let mut refused = 0;
    let code = loop {
        match alice.client().recv(Duration::from_secs(10)) {
            Ok(Some(ServerMsg::Ack { cmid, seq, .. })) => {
                assert!(cmids.contains(&cmid));
                assert!(acked.insert(seq), "seq {seq} acked twice");
            }
            Ok(Some(ServerMsg::Error {
                cmid: Some(cmid),
                code,
                ..
            })) => {
                assert!(cmids.contains(&cmid));
                assert_eq!(code, ErrorCode::Overloaded, "a retryable refusal");
                refused += 1;
            }
            Ok(Some(other)) => panic!("unexpected {other:?}"),
            Ok(None) => panic!("no close within 10 s of SIGTERM"),
            Err(e) => break e.close_code(),
        }
    };
    assert_eq!(code, Some(close::GOING_AWAY));
    // Sends still unread in the socket when the connection closed get no
    // answer (the client resends them); none is answered twice.
    assert!(acked.len() + refused <= SENDS);
    drop(alice);
    assert!(server.wait_exit(Duration::from_secs(20)).success());

    let server = options().start();
    let mut alice = Device::online(&server, 1, 1);
    let (stored, _) = alice.fetch(conv, Page::After(protocol::Seq::ZERO), 100);
    let mut all = stored;
    while all.len() < acked.len() {
        let last = all.last().map_or(protocol::Seq::ZERO, |m| m.seq);
        let (more, _) = alice.fetch(conv, Page::After(last), 100);
        if more.is_empty() {
            break;
        }
        all.extend(more);
    }
    let stored: HashSet<_> = all.iter().map(|m| m.seq).collect();
    assert!(acked.is_subset(&stored), "an acked message was lost");
    assert_eq!(
        stored.len(),
        acked.len(),
        "committed but its ack never reached the client ({refused} refused)"
    );
}

with_one_and_two_shards!(in_flight_sends_are_answered_before_going_away);
