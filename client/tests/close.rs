//! How connections end: server close codes, client close, drop, abort.
#![allow(
    clippy::unwrap_used,
    reason = "test helpers: a failed unwrap is a failed test"
)]

mod support;

use std::time::{Duration, Instant};

use client::{ABNORMAL_CLOSURE, Client, Error};
use protocol::{Encoding, close};
use support::{FakeServer, WAIT, command, token};

#[test]
fn server_close_code_becomes_an_error_and_sticks() {
    for encoding in [Encoding::Json, Encoding::Binary] {
        let server = FakeServer::start(vec![]);
        let mut c = Client::connect(server.addr, &token(), encoding).unwrap();
        c.recv(WAIT).unwrap();
        c.send(&command("close 4001")).unwrap();
        let err = c.recv(WAIT).unwrap_err();
        assert!(
            matches!(&err, Error::Closed { code: close::TOKEN_EXPIRED, reason } if reason == "requested"),
            "{err:?}"
        );
        assert_eq!(err.close_code(), Some(4001));
        // Later calls fail the same way, at once.
        let err = c.recv(WAIT).unwrap_err();
        assert_eq!(err.close_code(), Some(4001), "{err:?}");
        let err = c.send(&command("a")).unwrap_err();
        assert_eq!(err.close_code(), Some(4001), "{err:?}");
        c.close().unwrap();
        // The client answered the close handshake with the same code.
        assert_eq!(server.join().client_close, Some(4001));
    }
}

#[test]
fn server_dropping_tcp_is_abnormal_closure() {
    let server = FakeServer::start(vec![]);
    let mut c = Client::connect(server.addr, &token(), Encoding::Json).unwrap();
    c.recv(WAIT).unwrap();
    c.send(&command("drop")).unwrap();
    let err = c.recv(WAIT).unwrap_err();
    assert_eq!(err.close_code(), Some(ABNORMAL_CLOSURE), "{err:?}");
    server.join();
}

#[test]
fn close_sends_normal_closure() {
    let server = FakeServer::start(vec![]);
    let mut c = Client::connect(server.addr, &token(), Encoding::Binary).unwrap();
    c.recv(WAIT).unwrap();
    c.close().unwrap();
    let report = server.join();
    assert_eq!(report.client_close, Some(close::NORMAL));
    assert!(!report.dropped);
}

#[test]
fn drop_sends_a_close_frame_without_waiting() {
    let server = FakeServer::start(vec![]);
    let mut c = Client::connect(server.addr, &token(), Encoding::Json).unwrap();
    c.recv(WAIT).unwrap();
    let started = Instant::now();
    drop(c);
    assert!(started.elapsed() < Duration::from_secs(1));
    assert_eq!(server.join().client_close, Some(close::NORMAL));
}

#[test]
fn abort_sends_no_close_frame() {
    let server = FakeServer::start(vec![]);
    let mut c = Client::connect(server.addr, &token(), Encoding::Json).unwrap();
    c.recv(WAIT).unwrap();
    c.abort();
    let report = server.join();
    assert_eq!(report.client_close, None);
    assert!(report.dropped);
}
