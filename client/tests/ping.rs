//! Pings from the server are answered while the client reads.
#![allow(
    clippy::unwrap_used,
    reason = "test helpers: a failed unwrap is a failed test"
)]

mod support;

use client::Client;
use protocol::{Encoding, ServerMsg};
use support::{FakeServer, PING_PAYLOAD, PONG_RID, WAIT, command, token};

#[test]
fn ping_is_answered_during_recv() {
    let server = FakeServer::start(vec![]);
    let mut c = Client::connect(server.addr, &token(), Encoding::Binary).unwrap();
    c.recv(WAIT).unwrap();
    c.send(&command("ping")).unwrap();
    // The server sends `ok` with PONG_RID only once the pong reached it.
    let ok = c
        .recv_until(
            WAIT,
            |m| matches!(m, ServerMsg::Ok { rid } if *rid == PONG_RID),
        )
        .unwrap();
    assert_eq!(ok, ServerMsg::Ok { rid: PONG_RID });
    c.close().unwrap();
    assert_eq!(server.join().pong.as_deref(), Some(PING_PAYLOAD));
}
