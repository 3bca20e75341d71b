//! Every receive is bounded: `None` on timeout, `recv_until`, `recv_all`.
#![allow(
    clippy::unwrap_used,
    reason = "test helpers: a failed unwrap is a failed test"
)]

mod support;

use std::time::{Duration, Instant};

use client::{Client, Error};
use protocol::{ConvId, Encoding, ServerMsg, UserId};
use support::{FakeServer, WAIT, token};

fn typing(user: u64) -> ServerMsg {
    ServerMsg::Typing {
        conv: ConvId(5),
        user: UserId(user),
        active: true,
    }
}

#[test]
fn recv_returns_none_after_its_timeout() {
    let server = FakeServer::start(vec![]);
    let mut c = Client::connect(server.addr, &token(), Encoding::Json).unwrap();
    c.recv(WAIT).unwrap();
    let started = Instant::now();
    assert_eq!(c.recv(Duration::from_millis(150)).unwrap(), None);
    let waited = started.elapsed();
    assert!(waited >= Duration::from_millis(150), "{waited:?}");
    assert!(waited < WAIT, "{waited:?}");
    // A zero timeout polls once.
    assert_eq!(c.recv(Duration::ZERO).unwrap(), None);
    c.close().unwrap();
    server.join();
}

#[test]
fn recv_until_discards_until_the_predicate_matches() {
    let server = FakeServer::start(vec![typing(2), typing(3), typing(4)]);
    let mut c = Client::connect(server.addr, &token(), Encoding::Binary).unwrap();
    let got = c
        .recv_until(WAIT, |m| {
            matches!(
                m,
                ServerMsg::Typing {
                    user: UserId(3),
                    ..
                }
            )
        })
        .unwrap();
    assert_eq!(got, typing(3));
    assert_eq!(c.recv(WAIT).unwrap(), Some(typing(4)));
    c.close().unwrap();
    server.join();
}

#[test]
fn recv_until_times_out_listing_what_it_discarded() {
    let server = FakeServer::start(vec![typing(2), typing(3)]);
    let mut c = Client::connect(server.addr, &token(), Encoding::Json).unwrap();
    let err = c
        .recv_until(Duration::from_millis(300), |m| {
            matches!(m, ServerMsg::Synced { .. })
        })
        .unwrap_err();
    match err {
        Error::Timeout {
            discarded, waited, ..
        } => {
            assert_eq!(discarded.len(), 3, "{discarded:?}");
            assert!(matches!(discarded[0], ServerMsg::Welcome { .. }));
            assert_eq!(discarded[1..], [typing(2), typing(3)]);
            assert!(waited >= Duration::from_millis(300), "{waited:?}");
        }
        other => panic!("want a timeout, got {other:?}"),
    }
    c.close().unwrap();
    server.join();
}

#[test]
fn recv_all_collects_until_the_server_falls_quiet() {
    let server = FakeServer::start(vec![typing(2), typing(3)]);
    let mut c = Client::connect(server.addr, &token(), Encoding::Binary).unwrap();
    let all = c.recv_all(Duration::from_millis(200)).unwrap();
    assert_eq!(all.len(), 3, "{all:?}");
    assert!(matches!(all[0], ServerMsg::Welcome { .. }));
    assert_eq!(all[1..], [typing(2), typing(3)]);
    assert!(c.recv_all(Duration::from_millis(50)).unwrap().is_empty());
    c.close().unwrap();
    server.join();
}
